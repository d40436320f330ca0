"""Benchmark snapshot cuts of a 1M-item engine and the time a rollback takes to be served.

What the engine state holds: a catalog of ``--items`` demo tracks (no content embeddings, so
no content index: snapshots leave it out anyway, and building it would only slow the start);
the models warmed by ``--events`` synthetic events (impressions, plays, skips of Zipf-popular
items by ``--users`` listeners: River latents, popularity, co-visitation, sessions, the
joiner's buffer); and the CF index filled by a full index sweep, as the learner does over
time: every item whose artist or genre latents moved gets its vector indexed, which here is
nearly the whole catalog.

1. **cut**: ``--runs`` snapshots cut by the learner (engine.save + the store's hash, fsync,
   rename, pointer move); median and max time, and the size.
2. **rollback to served**: a client asks ``/v1/recommend`` without pause while
   ``segue snapshots rollback V`` runs as a subprocess; the figure is the time from starting
   that subprocess to the first answer whose ``model_version`` starts with ``V`` (V is always
   the version CURRENT does not name, so every run is a real move). Measured for
   ``segue serve --no-learner`` (reloads ``CURRENT``, woken by inotify, at the latest every
   ``SEGUE_SERVING_RELOAD_POLL_S``, default 0.5) and for ``segue serve`` with its embedded
   learner. Goal: at most 2 s. Loopback only.
3. **phases** of each rollback, medians over the runs: ``cli`` (process start, verification
   and the pointer move: from starting the command to ``CURRENT``'s ``changed_at``) and, of
   it, ``cli.verify`` (``SnapshotStore.verify`` timed in this process); then, from the line the
   service logs with each swap, ``detect`` (pointer moved -> noticed), ``verify`` (the loader's
   checksums), one figure per state file (``cf_index``, ``relevance``, ``bandit``, counters,
   ``joiner``, ``meta``), ``load`` (all of :meth:`Engine.load`), ``popular`` (the swap and the
   popular-now refresh) and ``first_answer`` (swap -> the client's first answer from V).

    .venv/bin/python benchmarks/bench_rollback.py --items 1000000 --runs 5

``--dir D --reuse`` keeps the data in D and, when D already holds two snapshots, skips the
build and the cuts (for iterating on the rollback path; the snapshots must be in the current
format).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx2 as httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, machine, median, serve
from feedback.db import create_db_engine
from feedback.events import Event
from feedback.log import SQLEventLog
from online.catalog import Catalog
from online.demo import generate_demo_catalog
from online.engine import Engine
from online.learner import Learner
from online.settings import EngineSettings, LearnerSettings
from snapshots import SnapshotStore

NOW = 1_790_000_000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(catalog: Catalog, n: int, users: int, seed: int) -> list[Event]:
    """Lists of 10 Zipf-popular items; about a third of the slots played, the rest skipped."""
    rng = np.random.default_rng(seed)
    ids = catalog.ids
    ranks = np.minimum(rng.zipf(1.15, size=n), len(ids)) - 1
    order = rng.permutation(len(ids))
    out: list[Event] = []
    t = NOW - 3 * 86_400
    for j in range(0, n // 2, 10):
        user = f"u{rng.integers(users)}"
        rid = f"r{j}"
        for pos in range(10):
            item = str(ids[order[ranks[j + pos]]])
            out.append(Event(f"i{j}-{pos}", "impression", user, item, t, rid, pos))
            if rng.random() < 0.33:
                out.append(Event(f"p{j}-{pos}", "play", user, item, t + 1, rid, pos, 150_000))
            else:
                out.append(Event(f"s{j}-{pos}", "skip", user, item, t + 1, rid, pos, 3_000))
        t += 2.0
    return out[:n]


def build(data: Path, n_items: int, n_events: int, users: int) -> tuple[Engine, Catalog]:
    """The catalog in ``data``'s database and a warm engine over it."""
    data.mkdir(parents=True, exist_ok=True)
    db = create_db_engine(f"sqlite:///{(data / 'segue.db').resolve()}")
    SQLEventLog(db).close()  # the schema the services expect
    catalog = Catalog(db, embedding_dim=None)
    started = time.perf_counter()
    catalog.upsert(generate_demo_catalog(n_items, dim=None, seed=1, now=NOW))
    print(f"catalog: {len(catalog):,} items in {time.perf_counter() - started:.1f} s", flush=True)
    settings = EngineSettings(index_sweep_batch=0)  # the sweep runs once below, in full
    engine = Engine(catalog, settings, LearnerSettings())
    started = time.perf_counter()
    events = _events(catalog, n_events, users, seed=2)
    for i in range(0, len(events), 1000):
        engine.learn(events[i : i + 1000])
    print(f"warm-up: {len(events):,} events in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    engine.settings = settings.model_copy(update={"index_sweep_batch": n_items})
    indexed = engine.refresh_index()
    engine.settings = settings
    share = len(engine._cf_index) / n_items
    print(
        f"CF index: {indexed:,} vectors ({share:.0%} of the catalog) in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return engine, catalog


def bench_cuts(engine: Engine, store: SnapshotStore, runs: int) -> dict[str, float]:
    learner = Learner(engine, _NoLog(), store=store)
    times, sizes = [], []
    for _ in range(runs):
        engine.learned_since_base = 1  # something new to save
        started = time.perf_counter()
        result = learner.cut()
        times.append(time.perf_counter() - started)
        assert result is not None and result.promoted
        sizes.append(result.snapshot.manifest.size)
    return {
        "cut_median_s": median(times),
        "cut_max_s": max(times),
        "snapshot_mb": median(sizes) / 1e6,
    }


class _NoLog:
    """The learner only cuts here; it never reads."""

    def read(self, after: int, limit: int) -> list[object]:
        return []

    def last_offset(self) -> int:
        return 0


_SWAP = re.compile(r"now serving (\S+) \(was \S+\); seconds: (.*); swapped at ([0-9.]+)")


def _swap_line(log: Path, target: str, after: int) -> tuple[dict[str, float], float] | None:
    """The phases and wall time of the first swap to ``target`` logged past byte ``after``."""
    text = log.read_bytes()[after:].decode(errors="replace")
    for match in _SWAP.finditer(text):
        if match.group(1).startswith(target):
            phases = {
                name: float(value)
                for name, value in re.findall(r"([a-z_]+)=([0-9.]+)", match.group(2))
            }
            return phases, float(match.group(3))
    return None


def _rollback_to_served(base: str, data: Path, target: str, log: Path) -> dict[str, float]:
    """Seconds from starting ``segue snapshots rollback target`` to an answer from it, and
    the phases in between."""
    seen = threading.Event()
    stop = threading.Event()
    failures: list[str] = []
    served_at: list[tuple[float, float]] = []

    def ask() -> None:
        n = 0
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                n += 1
                r = client.post(base + "/v1/recommend", json={"user_id": f"u{n % 50}", "k": 10})
                body = r.json()
                if r.status_code != 200 or body.get("fallback"):
                    failures.append(f"{r.status_code} {body.get('fallback')}")
                if body.get("model_version", "").startswith(target) and not seen.is_set():
                    served_at.append((time.perf_counter(), time.time()))
                    seen.set()

    log_mark = log.stat().st_size
    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.5)
    started, started_wall = time.perf_counter(), time.time()
    cli = [sys.executable, "-c", "from serving.cli import main; main()", "snapshots"]
    proc = subprocess.run(
        [*cli, "--dir", str(data / "snapshots"), "rollback", target],
        cwd=ROOT,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    seen.wait(120)
    stop.set()
    thread.join(60)
    if failures:
        print(f"  {len(failures)} failed or fallback answers, e.g. {failures[:3]}")
    out: dict[str, float] = {"total": served_at[0][0] - started if served_at else float("nan")}
    pointer = SnapshotStore(data / "snapshots").pointer()
    if pointer is not None and pointer.version == target:
        moved = datetime.fromisoformat(pointer.changed_at.replace("Z", "+00:00")).timestamp()
        out["cli"] = moved - started_wall
    time.sleep(0.2)  # the swap line is written right after the swap
    swap = _swap_line(log, target, log_mark)
    if swap is not None:
        phases, swapped_at = swap
        out |= phases
        if served_at:
            out["first_answer"] = served_at[0][1] - swapped_at
    return out


def bench_rollbacks(data: Path, versions: list[str], runs: int) -> dict[str, object]:
    out: dict[str, object] = {}
    env = {"SEGUE_EMBEDDING_DIM": "64", "SEGUE_SERVING_BUDGET_MS": "2000"}
    store = SnapshotStore(data / "snapshots")
    verify = []
    for i in range(3):  # what the CLI spends verifying, timed here
        begun = time.perf_counter()
        store.verify(versions[i % 2])
        verify.append(time.perf_counter() - begun)
    out["cli_verify_s"] = median(verify)
    for mode, args in (("reloader", ("--no-learner",)), ("embedded", ())):
        port = _free_port()
        started = time.perf_counter()
        log = data / f"serve-{mode}.log"
        with serve(data, port, env=env, args=args, stderr=log):
            print(f"{mode}: service ready in {time.perf_counter() - started:.1f} s", flush=True)
            runs_out = []
            for _ in range(runs):
                current = store.pointer()
                target = versions[0] if current and current.version == versions[1] else versions[1]
                figures = _rollback_to_served(f"http://127.0.0.1:{port}", data, target, log)
                runs_out.append(figures)
                detail = " ".join(
                    f"{k}={v:.2f}" for k, v in figures.items() if k not in ("total", "load")
                )
                print(
                    f"  rollback to {target}: served after {figures['total']:.2f} s ({detail})",
                    flush=True,
                )
        totals = [r["total"] for r in runs_out]
        out[f"{mode}_median_s"] = median(totals)
        out[f"{mode}_max_s"] = max(totals)
        names = list(dict.fromkeys(k for r in runs_out for k in r))
        out[f"{mode}_phases"] = {
            k: median([r[k] for r in runs_out if k in r]) for k in names if k != "total"
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="catalog size (1M)")
    parser.add_argument("--events", type=int, default=100_000, help="warm-up events (100k)")
    parser.add_argument("--users", type=int, default=20_000, help="listeners (20k)")
    parser.add_argument("--runs", type=int, default=5, help="cuts and rollbacks per mode (5)")
    parser.add_argument("--dir", type=Path, help="data directory (default: a temp dir)")
    parser.add_argument(
        "--reuse", action="store_true", help="with --dir: reuse its snapshots, skip build and cuts"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    data = args.dir or Path(tempfile.mkdtemp(prefix="segue-bench-rollback-"))
    figures: dict[str, object] = {}
    try:
        store = SnapshotStore(data / "snapshots", keep=args.runs + 2)
        if not (args.reuse and len(store.versions()) >= 2):
            engine, catalog = build(data, args.items, args.events, args.users)
            figures |= bench_cuts(engine, store, args.runs)
            del engine
            catalog.close()
        versions = store.versions()[-2:]  # CURRENT's predecessor first
        figures |= bench_rollbacks(data, versions, args.runs)
    finally:
        if args.dir is None:
            shutil.rmtree(data, ignore_errors=True)
    print(f"machine: {machine()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        print(json.dumps(figures, indent=2))
        return figures
    print(f"catalog {args.items:,} items; warm-up {args.events:,} events; runs {args.runs}")
    if "cut_median_s" in figures:
        print(
            f"cut: median {figures['cut_median_s']:.2f} s, max {figures['cut_max_s']:.2f} s; "
            f"snapshot {figures['snapshot_mb']:.1f} MB"
        )
    for mode in ("reloader", "embedded"):
        print(
            f"rollback -> first answer from V ({mode}): median "
            f"{figures[f'{mode}_median_s']:.2f} s, max {figures[f'{mode}_max_s']:.2f} s "
            "(goal <= 2 s)"
        )
        phases = figures[f"{mode}_phases"]
        assert isinstance(phases, dict)
        if "cli" in phases:
            phases = {"cli": phases["cli"], "cli.verify": figures["cli_verify_s"], **phases}
        print("  phases (medians, s): " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()))
    return figures


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
