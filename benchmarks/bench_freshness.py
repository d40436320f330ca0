"""Freshness: from an acknowledged POST /v1/feedback to the service answering with a model
that includes it, while a load of --rate events/s flows in from another process.

Starts ``segue serve --demo`` (embedded learner). A load process posts batches of --batch
events at --rate events/s (open loop). The probe posts one play at a time, reads its log
offset from the database, and polls GET /v1/model until the served model's offset includes
it. Reports p50/p99/max over --probes probes; the same probes without load are the baseline
in the same run.

    python benchmarks/bench_freshness.py --rate 1000 --probes 200
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2 as httpx
import orjson

from benchmarks._common import machine, percentiles, serve
from benchmarks.bench_ingest import free_port


def load(base: str, rate: float, batch: int, seconds: float, n_items: int) -> None:
    """Open-loop load: impressions, plays and skips of demo items for many listeners."""
    interval = batch / rate
    tag = uuid.uuid4().hex[:6]
    with httpx.Client(timeout=10) as client:
        next_at = time.perf_counter()
        b = 0
        end = next_at + seconds
        while time.perf_counter() < end:
            now_ms = int(time.time() * 1000)
            events = []
            for i in range(batch):
                kind = ("impression", "play", "skip")[i % 3]
                e: dict[str, object] = {
                    "event_id": f"L{tag}-{b}-{i}",
                    "type": kind,
                    "user_id": f"u{(b * 31 + i) % 2000}",
                    "item_id": f"t{(b * 7919 + i * 104729) % n_items:07d}",
                    "timestamp": now_ms,
                }
                if kind == "impression":
                    e["position"] = i % 30
                else:
                    e.update(played_ms=60_000 if kind == "play" else 3_000, duration_ms=200_000)
                events.append(e)
            client.post(f"{base}/v1/feedback", json={"events": events})
            b += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


def probe(base: str, db: Path, n: int, n_items: int) -> list[float]:
    out = []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            eid = f"probe-{uuid.uuid4().hex}"
            body = {
                "events": [
                    {
                        "event_id": eid,
                        "type": "play",
                        "user_id": f"probe{i % 50}",
                        "item_id": f"t{(i * 17) % n_items:07d}",
                        "timestamp": int(time.time() * 1000),
                        "played_ms": 60_000,
                        "duration_ms": 200_000,
                    }
                ]
            }
            r = client.post(
                f"{base}/v1/feedback",
                content=orjson.dumps(body),
                headers={"content-type": "application/json"},
            )
            acked = time.perf_counter()
            assert r.status_code == 200, r.text
            (offset,) = conn.execute(
                "select log_offset from segue_events where event_id = ?", (eid,)
            ).fetchone()
            while True:
                model = client.get(f"{base}/v1/model").json()
                if model["offset"] >= offset:
                    out.append(time.perf_counter() - acked)
                    break
                if time.perf_counter() - acked > 30:
                    out.append(float("inf"))
                    break
                time.sleep(0.002)
            time.sleep(0.05)
    conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rate", type=float, default=1000.0, help="background events/s")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--items", type=int, default=20_000)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        env = {"SEGUE_SERVING_DEMO_ITEMS": str(args.items)}
        with serve(data, port, env=env, args=("--demo",)):
            base = f"http://127.0.0.1:{port}"
            db = data / "segue.db"
            baseline = probe(base, db, max(20, args.probes // 4), args.items)
            rows.append(("idle (baseline)", baseline))
            seconds = args.probes * 0.06 + 20
            loader = mp.Process(
                target=load, args=(base, args.rate, args.batch, seconds, args.items)
            )
            loader.start()
            time.sleep(3)
            loaded = probe(base, db, args.probes, args.items)
            loader.terminate()
            loader.join()
            rows.append((f"{args.rate:.0f} events/s flowing in", loaded))
            model = httpx.get(f"{base}/v1/model").json()
    print()
    print("| condition | probes | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for name, values in rows:
        pc = percentiles(values, (50, 99))
        print(
            f"| {name} | {len(values)} | {pc['p50'] * 1000:.0f} ms | {pc['p99'] * 1000:.0f} ms | "
            f"{max(values) * 1000:.0f} ms |"
        )
    print(f"\nserved model at the end: {model['model_version']}, lag {model['lag_events']} events")


if __name__ == "__main__":
    main()
