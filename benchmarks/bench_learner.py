"""Learner throughput on a mixed event stream read from a real SQL event log (SQLite).

Builds a demo catalog (--items) and an engine, warms it on a first stream so both models have
learned state, then serves --lists real lists with that engine and writes their feedback to an
SQLite event log: impressions of every placed item (with the list's request id, so the reward
join fires), plays and skips of some of them, and one organic play per list (no request id:
relevance only). Event time advances --gap seconds per list, so attribution windows close
during the run and the defaulted slots are learned too.

Each run loads the warm engine from a snapshot directory, fills a fresh decision log with the
served decisions and times ``Learner.run_until_caught_up`` over the whole log. Three variants
run on the same log in every round, so the reader sees where the time goes:

* ``log read``: reading the log in ``read_batch`` pages alone (SQLite + JSON decoding);
* ``join + counters``: the full learner with the two models' updates replaced by no-ops
  (reward join, popularity, exposure, sessions, transitions, index refresh);
* ``full``: the learner as it runs in the service (River relevance model + VW bandit).

Like ``segue learn``, each run freezes the heap once the engine is loaded (``online.heap``);
``--no-freeze-heap`` measures without that.

    python benchmarks/bench_learner.py --items 50000 --lists 3000 --runs 3
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._common import machine, median
from feedback.db import create_db_engine
from feedback.decisions import InMemoryDecisionLog
from feedback.events import Decision, Event
from feedback.log import SQLEventLog
from online.catalog import Catalog
from online.demo import generate_demo_catalog
from online.engine import Engine
from online.heap import freeze_heap
from online.learner import Learner
from online.settings import EngineSettings, LearnerSettings


def stream(
    engine: Engine, n_lists: int, t0: float, gap: float, n_users: int, tag: str, seed: int
) -> tuple[list[Event], list[Decision], float]:
    """Serve ``n_lists`` lists with ``engine`` and make their feedback (see the module doc)."""
    rng = np.random.default_rng(seed)
    ids = engine.catalog.ids
    events: list[Event] = []
    decisions: list[Decision] = []
    t = t0
    for n in range(n_lists):
        t += gap
        user = f"u{int(rng.integers(n_users))}"
        ctx = {"device": ("ios", "android", "web")[n % 3], "hour": int(t // 3600) % 24}
        rec = engine.recommend(user, 30, ctx, now=t)
        decision = engine.decisions.get(rec.request_id)
        if decision is not None:
            decisions.append(decision)
        for pos, item in enumerate(rec.items):
            events.append(
                Event(f"{tag}i{n}-{pos}", "impression", user, item.item_id, t + 0.5,
                      request_id=rec.request_id, position=pos, context=ctx)
            )  # fmt: skip
        for pos, item in enumerate(rec.items[:10]):
            u = rng.random()
            if u < 0.3:
                played = int(rng.integers(40_000, 200_000))
            elif u < 0.6:
                played = int(rng.integers(1_000, 20_000))
            else:
                continue
            kind = "play" if played >= 30_000 else "skip"
            events.append(
                Event(f"{tag}o{n}-{pos}", kind, user, item.item_id, t + 1.0 + pos,
                      request_id=rec.request_id, played_ms=played, duration_ms=200_000,
                      context=ctx)
            )  # fmt: skip
        organic = str(ids[int(rng.integers(len(ids)))])
        events.append(
            Event(f"{tag}g{n}", "play", user, organic, t + 1.5, played_ms=150_000,
                  duration_ms=200_000, context=ctx)
        )  # fmt: skip
    return events, decisions, t


class _NoModels:
    """Replaces the two models' updates with no-ops (the ``join + counters`` variant)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        rel, bandit = self.engine.relevance, self.engine.bandit
        rel.learn_one = lambda *a, **k: 0.5  # type: ignore[method-assign]
        bandit.learn_one = lambda *a, **k: None  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--lists", type=int, default=3000, help="served lists in the timed stream")
    ap.add_argument("--warm-lists", type=int, default=1000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--gap", type=float, default=2.0, help="event-time seconds between lists")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--no-freeze-heap",
        action="store_true",
        help="leave the loaded engine in the garbage collector's sight (segue learn freezes it)",
    )
    args = ap.parse_args()
    print(f"machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        db = create_db_engine(f"sqlite:///{Path(tmp) / 'segue.db'}")
        catalog = Catalog(db, embedding_dim=64)
        t0 = time.time() - 5 * 86_400
        catalog.upsert(generate_demo_catalog(args.items, dim=64, seed=0, now=t0))
        settings, learner_settings = EngineSettings(), LearnerSettings()
        engine = Engine(catalog, settings, learner_settings)
        warm, _, t = stream(engine, args.warm_lists, t0, args.gap, args.users, "w", 1)
        for start in range(0, len(warm), learner_settings.lock_chunk):
            engine.learn(warm[start : start + learner_settings.lock_chunk])
        # one full sweep, so every item with a learned vector is in the index (steady state)
        engine.refresh_index()
        while engine.index_lag()["dirty_items"] or engine.last_sweep_s is None:
            engine.refresh_index()
        snapshot = Path(tmp) / "warm"
        engine.save(snapshot)
        started = time.perf_counter()
        events, decisions, _ = stream(engine, args.lists, t, args.gap, args.users, "m", 2)
        serve_s = time.perf_counter() - started
        log = SQLEventLog(db)
        for start in range(0, len(events), 1000):
            log.ingest(events[start : start + 1000])
        kinds = {k: sum(e.type == k for e in events) for k in ("impression", "play", "skip")}
        organic = sum(e.request_id is None for e in events)
        print(
            f"stream: {len(events):,} events from {len(decisions):,} served lists "
            f"({serve_s / max(1, args.lists) * 1000:.1f} ms a list to serve); {kinds}, "
            f"{organic:,} organic plays; catalog {args.items:,} items",
            flush=True,
        )

        rates: dict[str, list[float]] = {"log read": [], "join + counters": [], "full": []}
        samples: dict[str, tuple[int, int]] = {}
        for run in range(args.runs):
            load = os.getloadavg()[0]
            started = time.perf_counter()
            after, n = 0, 0
            while batch := log.read(after, learner_settings.read_batch):
                after, n = batch[-1].offset, n + len(batch)
            rates["log read"].append(n / (time.perf_counter() - started))
            for variant in ("join + counters", "full"):
                decision_log = InMemoryDecisionLog(ttl_s=learner_settings.decision_ttl_s)
                for d in decisions:
                    decision_log.put(d)
                gc.unfreeze()  # the previous variant's engine may go now
                fresh = Engine.load(
                    snapshot, catalog, settings, learner_settings, decisions=decision_log
                )
                fresh.offset = 0
                if not args.no_freeze_heap:
                    freeze_heap()  # as `segue learn` does once its engine is loaded
                learner = Learner(fresh, log)
                if variant == "join + counters":
                    _NoModels(fresh).__enter__()
                rel0, ban0 = fresh.relevance.n_learned, fresh.bandit.n_learned
                started = time.perf_counter()
                learned = learner.run_until_caught_up()
                elapsed = time.perf_counter() - started
                rates[variant].append(learned / elapsed)
                samples[variant] = (
                    fresh.relevance.n_learned - rel0,
                    fresh.bandit.n_learned - ban0,
                )
                stats = fresh.join_stats
            print(
                f"  run {run + 1} (load {load:.2f}): "
                + ", ".join(f"{k} {v[-1]:,.0f} events/s" for k, v in rates.items())
                + f"; joined {stats['joined']:,}, defaulted {stats['defaulted']:,}, "
                f"organic {stats['organic']:,}",
                flush=True,
            )
        rel, ban = samples["full"]
        print(
            f"\nfull learner per run: {rel:,} relevance updates, {ban:,} bandit updates "
            f"({rel / len(events):.2f} and {ban / len(events):.2f} per event); load average "
            f"{os.getloadavg()[0]:.2f} at the end\n"
        )
        print("| variant | events/s (median) | slowest run | us/event |")
        print("|---|---|---|---|")
        for name, values in rates.items():
            print(
                f"| {name} | {median(values):,.0f} | {min(values):,.0f} | "
                f"{1e6 / median(values):.0f} |"
            )
        log.close()


if __name__ == "__main__":
    main()
