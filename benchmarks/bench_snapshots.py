"""Benchmark the snapshot store with state files of realistic size.

Writes ``--runs`` snapshots, each holding an ``n x dim`` float32 matrix (1M x 65 is about
260 MB, the size of a learned item-vector table) plus a VW model, counters and a joiner buffer,
and reports the median time to cut one (learner writing its files + the store's hash, fsync,
rename and pointer move), the store's share of it, the time to verify one, and the time to roll
back (verify + pointer move) and to move the pointer alone. Verification runs with the files in
the page cache, as right after a cut.

    .venv/bin/python benchmarks/bench_snapshots.py --n 1000000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from snapshots import SnapshotStore
from snapshots.manifest import iso_utc
from snapshots.pointer import CurrentPointer, write_pointer


def _payload(n: int, dim: int) -> bytes:
    """Random bytes the size of an n x dim float32 matrix (incompressible, like real weights)."""
    return os.urandom(n * dim * 4)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="matrix rows (default 1M)")
    parser.add_argument("--dim", type=int, default=65, help="matrix columns (default 65)")
    parser.add_argument("--runs", type=int, default=5, help="snapshots to cut (default 5)")
    parser.add_argument("--dir", type=Path, help="store directory (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    root = args.dir or Path(tempfile.mkdtemp(prefix="segue-bench-snapshots-"))
    store = SnapshotStore(root, keep=2)
    matrix = _payload(args.n, args.dim)
    small = {"bandit/vw.model": os.urandom(2 << 20), "joiner/pending.bin": os.urandom(512 << 10)}
    cut, commit, verify, rollback, pointer_move = [], [], [], [], []
    try:
        for i in range(args.runs):
            t0 = time.perf_counter()
            with store.stage() as staging:
                with open(staging.file("items.f32"), "wb") as fh:
                    fh.write(matrix)
                for name, data in small.items():
                    staging.file(name).write_bytes(data)
                staging.file("counters.json").write_text(json.dumps({"run": i}))
                t1 = time.perf_counter()
                result = staging.commit(
                    offset=(i + 1) * 50_000, events=50_000, metrics={"relevance_auc": 0.8}
                )
            t2 = time.perf_counter()
            cut.append(t2 - t0)
            commit.append(t2 - t1)

            t0 = time.perf_counter()
            store.verify(result.version)
            verify.append(time.perf_counter() - t0)

        versions = store.versions()
        for i in range(args.runs):
            target = versions[i % len(versions)]
            t0 = time.perf_counter()
            store.rollback(target, by="bench")
            rollback.append(time.perf_counter() - t0)
            pointer = store.pointer()
            assert pointer is not None
            moved = CurrentPointer(
                seq=pointer.seq + 1,
                version=target,
                mode="continue",
                resume_offset=pointer.resume_offset,
                previous=pointer.version,
                changed_at=iso_utc(time.time()),
                by="bench",
                reason="rollback",
            )
            t0 = time.perf_counter()
            write_pointer(root, moved)
            pointer_move.append(time.perf_counter() - t0)
        size = store.manifest(versions[-1]).size
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)

    figures = {
        "n": args.n,
        "dim": args.dim,
        "runs": args.runs,
        "snapshot_mb": size / 1e6,
        "cut_median_s": statistics.median(cut),
        "store_commit_median_s": statistics.median(commit),
        "verify_median_s": statistics.median(verify),
        "rollback_median_s": statistics.median(rollback),
        "pointer_move_median_ms": statistics.median(pointer_move) * 1e3,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"snapshot: {args.n:,} x {args.dim} float32 + 3 small files = {size / 1e6:.1f} MB")
        print(f"runs: {args.runs}")
        print(f"cut (learner writes + store commits), median: {figures['cut_median_s']:.2f} s")
        print(
            f"  of which store commit (sha256 + fsync + rename + CURRENT), median: "
            f"{figures['store_commit_median_s']:.2f} s"
        )
        print(
            f"verify (sha256 of every file, page cache warm), median: "
            f"{figures['verify_median_s']:.2f} s"
        )
        print(f"rollback (verify + pointer move), median: {figures['rollback_median_s']:.2f} s")
        print(f"pointer move alone, median: {figures['pointer_move_median_ms']:.2f} ms")
    return figures


if __name__ == "__main__":
    main()
