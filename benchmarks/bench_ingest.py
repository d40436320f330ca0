"""HTTP ingest throughput of POST /v1/feedback, from a separate client process on loopback.

Starts ``segue serve`` (SQLite, then PostgreSQL when --postgres-url is given), then a client
process posts batches of --batch valid events over --connections keep-alive connections for
--seconds, several --runs. Reports acknowledged events/s and per-batch latency p50/p99, and as
the baseline in the same run the event log's own append rate without HTTP.

    python benchmarks/bench_ingest.py --postgres-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2 as httpx
import orjson

from benchmarks._common import machine, median, percentiles, serve


def make_bodies(n_batches: int, batch: int, tag: str) -> list[bytes]:
    now_ms = int(time.time() * 1000)
    bodies = []
    for b in range(n_batches):
        events = []
        for i in range(batch):
            kind = ("impression", "play", "skip")[i % 3]
            e: dict[str, object] = {
                "event_id": f"{tag}-{b}-{i}",
                "type": kind,
                "user_id": f"u{(b * 7 + i) % 5000}",
                "item_id": f"t{(b * 13 + i) % 100000}",
                "timestamp": now_ms,
                "context": {"device": "ios", "hour": 21},
            }
            if kind == "impression":
                e.update(request_id=f"r{b}-{i // 30}", position=i % 30)
            elif kind == "play":
                e.update(request_id=f"r{b}-{i // 30}", played_ms=95_000, duration_ms=200_000)
            else:
                e.update(played_ms=4000, duration_ms=200_000)
            events.append(e)
        bodies.append(orjson.dumps({"events": events}))
    return bodies


def client(url: str, bodies: list[bytes], seconds: float, connections: int, out: mp.Queue) -> None:
    latencies: list[float] = []
    acked = 0
    lock = threading.Lock()
    next_body = iter(range(len(bodies)))
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal acked
        with httpx.Client(timeout=30) as c:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(next_body, None)
                if i is None:
                    return
                t = time.perf_counter()
                r = c.post(url, content=bodies[i], headers={"content-type": "application/json"})
                dt = time.perf_counter() - t
                if r.status_code == 200:
                    with lock:
                        acked += r.json()["accepted"]
                        latencies.append(dt)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((acked, time.perf_counter() - started, latencies))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline(url: str, batch: int, n: int) -> float:
    """Events/s of SQLEventLog.ingest alone (no HTTP, no validation)."""
    from feedback.contract import validate_events
    from feedback.db import create_db_engine
    from feedback.log import SQLEventLog

    log = SQLEventLog(create_db_engine(url))
    bodies = make_bodies(n, batch, uuid.uuid4().hex[:8])
    events = [validate_events(orjson.loads(b)["events"], now=time.time())[0] for b in bodies]
    started = time.perf_counter()
    for evs in events:
        log.ingest(evs)
    rate = n * batch / (time.perf_counter() - started)
    log.close()
    return rate


def run_backend(name: str, env: dict[str, str], db_url: str, args: argparse.Namespace) -> dict:
    rates, p50s, p99s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**env}
        if not db_url.startswith("postgresql"):
            db_url = f"sqlite:///{Path(tmp) / 'data' / 'segue.db'}"
        with serve(Path(tmp) / "data", port, env=env, args=("--no-learner",)):
            for run in range(args.runs):
                n_batches = int(args.seconds * 120) + 10
                bodies = make_bodies(n_batches, args.batch, f"{name}{run}{uuid.uuid4().hex[:6]}")
                q: mp.Queue = mp.Queue()
                p = mp.Process(
                    target=client,
                    args=(
                        f"http://127.0.0.1:{port}/v1/feedback",
                        bodies,
                        args.seconds,
                        args.connections,
                        q,
                    ),
                )
                p.start()
                acked, elapsed, lat = q.get()
                p.join()
                rates.append(acked / elapsed)
                pc = percentiles(lat)
                p50s.append(pc["p50"] * 1000)
                p99s.append(pc["p99"] * 1000)
                print(
                    f"  {name} run {run + 1}: {acked / elapsed:,.0f} events/s, batch p50 "
                    f"{pc['p50'] * 1000:.1f} ms, p99 {pc['p99'] * 1000:.1f} ms",
                    flush=True,
                )
        base = baseline(db_url, args.batch, 30)
    return {
        "backend": name,
        "events_per_s_median": median(rates),
        "events_per_s_min": min(rates),
        "batch_p50_ms": median(p50s),
        "batch_p99_ms": median(p99s),
        "baseline_log_only_events_per_s": base,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--postgres-url", default=None)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    results = [run_backend("sqlite", {}, "sqlite", args)]
    if args.postgres_url:
        results.append(
            run_backend(
                "postgres", {"SEGUE_DATABASE_URL": args.postgres_url}, args.postgres_url, args
            )
        )
    print()
    print(
        "| backend | events/s (median of runs) | slowest run | batch p50 | batch p99 | log alone |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['backend']} | {r['events_per_s_median']:,.0f} | {r['events_per_s_min']:,.0f} | "
            f"{r['batch_p50_ms']:.1f} ms | {r['batch_p99_ms']:.1f} ms | "
            f"{r['baseline_log_only_events_per_s']:,.0f} |"
        )


if __name__ == "__main__":
    main()
