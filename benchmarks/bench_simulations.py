"""Throughput of the simulations: progressive replay and off-policy evaluation.

- replay: 100,000 synthetic plays (5,000 items, 1,000 listeners) through the random and
  popularity baselines, every play scored at k=10;
- OPE: 1,000,000 logged rows (80 actions, 3 positions, uniform logging), a deterministic
  target, all four estimators with a 200-resample bootstrap (one ``estimate`` call), and the
  uniform target with per-position tables (``evaluate``).

Run: ``.venv/bin/python benchmarks/bench_simulations.py [--repeats 3]``. Prints medians and
writes ``benchmarks/out/bench_simulations.json``.
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()

    log = synthetic_interactions(args.replay_events, n_users=1000, n_items=5000, seed=0)
    replay_s, replay_all = _time(lambda: progressive_replay(log, k=10, seed=0), args.repeats)

    engine_s = None
    if args.engine_eval_every:
        from simulations.engine_policy import EnginePolicy
        from simulations.loaders import catalog_from_interactions

        items = catalog_from_interactions(log)

        def with_engine() -> None:
            policies = {name: EnginePolicy(name, items, seed=0) for name in ("relevance", "segue")}
            progressive_replay(
                log, policies, k=10, seed=0, eval_every=args.engine_eval_every, progress=False
            )

        engine_s, _ = _time(with_engine, 1)

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

    results = {
        "replay_events": args.replay_events,
        "replay_seconds_median": replay_s,
        "replay_events_per_second": args.replay_events / replay_s,
        "ope_rows": n,
        "n_boot": args.n_boot,
        "ope_estimate_4_estimators_seconds_median": ope_s,
        "ope_evaluate_by_position_seconds_median": eval_s,
        "all_times": {"replay": replay_all, "estimate": ope_all, "evaluate": eval_all},
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_simulations.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"replay   {args.replay_events:>9,} plays x 2 baselines: median {replay_s:6.2f} s "
          f"({args.replay_events / replay_s:,.0f} plays/s)")  # fmt: skip
    if engine_s is not None:
        print(f"replay   {args.replay_events:>9,} plays x random, popular, relevance, segue "
              f"(scored every {args.engine_eval_every}th): {engine_s:6.2f} s")  # fmt: skip
    print(f"estimate {n:>9,} rows, 4 estimators, {args.n_boot} boots: median {ope_s:6.2f} s")
    print(f"evaluate {n:>9,} rows, all + 3 positions, on-policy row: median {eval_s:6.2f} s")


if __name__ == "__main__":
    main()
