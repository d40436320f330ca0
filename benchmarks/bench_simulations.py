"""Throughput of the simulations: progressive replay and off-policy evaluation.

- replay: 100,000 synthetic plays (5,000 items, 1,000 listeners) through the random and
  popularity baselines, every play scored at k=10; with ``--engine-eval-every n`` also through
  the engine policies (relevance, segue) beside them, every n-th play scored. Replays spread
  their policies over ``--jobs`` worker processes (default 2); ``--also-sequential`` times
  ``jobs=1`` too, alternating with the other runs so both see the same machine load;
- OPE: 1,000,000 logged rows (80 actions, 3 positions, uniform logging), a deterministic
  target, all four estimators with a 200-resample bootstrap (one ``estimate`` call), and the
  uniform target with per-position tables (``evaluate``).

Run: ``.venv/bin/python benchmarks/bench_simulations.py [--repeats 3] [--jobs 2]
[--also-sequential] [--engine-eval-every 50]``. Prints medians (and the load average before and
after, since other work on the machine shows in every figure) and writes
``benchmarks/out/bench_simulations.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulations.ope import LoggedBanditData, estimate, evaluate
from simulations.replay import progressive_replay
from simulations.world import synthetic_interactions


def _time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _time_jobs(fn, jobs: list[int], repeats: int) -> dict[int, list[float]]:
    """Times of ``fn(jobs=j)`` for every ``j``, alternating so all see the same load."""
    times: dict[int, list[float]] = {j: [] for j in jobs}
    for _ in range(repeats):
        for j in jobs:
            start = time.perf_counter()
            fn(j)
            times[j].append(time.perf_counter() - start)
    return times


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replay-events", type=int, default=100_000)
    parser.add_argument("--ope-rows", type=int, default=1_000_000)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument(
        "--engine-eval-every",
        type=int,
        default=0,
        help="also replay with the engine policies (relevance, segue) beside the baselines, "
        "scoring every n-th play (0: skip)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker processes of each replay (default 2)"
    )
    parser.add_argument(
        "--also-sequential",
        action="store_true",
        help="also time every replay with jobs=1, for comparison",
    )
    args = parser.parse_args()
    load_before = _load()
    jobs = [args.jobs, *([1] if args.also_sequential and args.jobs != 1 else [])]

    log = synthetic_interactions(args.replay_events, n_users=1000, n_items=5000, seed=0)
    replay_times = _time_jobs(
        lambda j: progressive_replay(log, k=10, seed=0, jobs=j), jobs, args.repeats
    )
    replay_s = statistics.median(replay_times[args.jobs])

    engine_times: dict[int, list[float]] = {}
    if args.engine_eval_every:
        from simulations.engine_policy import engine_factory
        from simulations.loaders import catalog_from_interactions

        items = catalog_from_interactions(log)

        def with_engine(j: int) -> None:
            # by name, so that with jobs > 1 each worker builds its own engine
            progressive_replay(
                log,
                ["relevance", "segue"],
                k=10,
                catalog=items,
                seed=0,
                eval_every=args.engine_eval_every,
                engine_factory=engine_factory,
                jobs=j,
            )

        engine_times = _time_jobs(with_engine, jobs, args.repeats)

    n, n_actions = args.ope_rows, 80
    rng = np.random.default_rng(0)
    data = LoggedBanditData(
        actions=rng.integers(0, n_actions, n),
        rewards=(rng.random(n) < 0.005).astype(float),
        propensities=np.full(n, 1 / n_actions),
        positions=rng.integers(0, 3, n),
    )
    target = rng.integers(0, n_actions, n)
    ope_s, ope_all = _time(lambda: estimate(data, target, n_boot=args.n_boot), args.repeats)
    uniform = {"uniform": np.full((1, n_actions), 1 / n_actions)}
    eval_s, eval_all = _time(
        lambda: evaluate(data, uniform, n_boot=args.n_boot, by_position=True), args.repeats
    )

    load_after = _load()

    def medians(times: dict[int, list[float]]) -> dict[str, float]:
        return {f"jobs={j}": statistics.median(t) for j, t in times.items()}

    results = {
        "replay_events": args.replay_events,
        "jobs": args.jobs,
        "replay_seconds_median": replay_s,
        "replay_events_per_second": args.replay_events / replay_s,
        "replay_seconds_median_by_jobs": medians(replay_times),
        "engine_eval_every": args.engine_eval_every,
        "replay_with_engine_seconds_median_by_jobs": medians(engine_times),
        "ope_rows": n,
        "n_boot": args.n_boot,
        "ope_estimate_4_estimators_seconds_median": ope_s,
        "ope_evaluate_by_position_seconds_median": eval_s,
        "all_times": {
            **{f"replay jobs={j}": t for j, t in replay_times.items()},
            **{f"replay with engine jobs={j}": t for j, t in engine_times.items()},
            "estimate": ope_all,
            "evaluate": eval_all,
        },
        "load_average_before": load_before,
        "load_average_after": load_after,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_simulations.json").write_text(json.dumps(results, indent=2) + "\n")
    for j, times in replay_times.items():
        s = statistics.median(times)
        print(f"replay   {args.replay_events:>9,} plays x 2 baselines, jobs={j}: "
              f"median {s:6.2f} s ({args.replay_events / s:,.0f} plays/s)")  # fmt: skip
    for j, times in engine_times.items():
        print(f"replay   {args.replay_events:>9,} plays x random, popular, relevance, segue "
              f"(scored every {args.engine_eval_every}th), jobs={j}: "
              f"median {statistics.median(times):6.2f} s")  # fmt: skip
    print(f"estimate {n:>9,} rows, 4 estimators, {args.n_boot} boots: median {ope_s:6.2f} s")
    print(f"evaluate {n:>9,} rows, all + 3 positions, on-policy row: median {eval_s:6.2f} s")
    print(f"load average (1, 5, 15 min) before: {load_before}; after: {load_after}")


if __name__ == "__main__":
    main()
