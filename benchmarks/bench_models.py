"""Throughput and latency of segue's two learned models.

Measures, on a seeded synthetic catalog (tracks around artist centroids):

* ``RelevanceModel.learn_one`` (events/s and per-call latency),
* ``RelevanceModel.predict_many`` over 500 items,
* ``BanditReranker.learn_one`` (events/s and per-call latency),
* ``BanditReranker.rank`` filling k=30 slots from 100 candidates, per exploration rule, from
  :class:`Candidate` objects and from :class:`CandidateColumns` (what the engine passes).

Each figure is measured ``--repeats`` times; the script prints the median and p99 of the
per-call latencies and the median throughput over repeats.

    .venv/bin/python benchmarks/bench_models.py --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from online.bandit import BanditReranker, Candidate, CandidateColumns
from online.items import Item
from online.relevance import RelevanceModel


def make_catalog(rng: np.random.Generator, n_items: int, n_artists: int) -> list[Item]:
    genres = [f"genre{g}" for g in range(30)]
    return [
        Item(
            f"t{i}",
            artist=f"artist{i % n_artists}",
            genres=(genres[int(rng.integers(30))], genres[int(rng.integers(30))]),
        )
        for i in range(n_items)
    ]


def make_events(
    rng: np.random.Generator, items: list[Item], n_users: int, n: int
) -> list[tuple[str, Item, float, dict[str, object], float]]:
    devices = ("ios", "android", "web")
    out = []
    for _ in range(n):
        reward = float(rng.choice([0.0, 0.0, 1.0, float(rng.random())]))
        out.append(
            (
                f"u{int(rng.integers(n_users))}",
                items[int(rng.integers(len(items)))],
                reward,
                {"device": devices[int(rng.integers(3))], "hour": int(rng.integers(24))},
                float(0.5 ** rng.random()),
            )
        )
    return out


def make_candidates(rng: np.random.Generator, n: int, dim: int) -> list[Candidate]:
    centroids = rng.normal(size=(max(1, n // 4), dim))
    return [
        Candidate(
            item_id=f"c{i}",
            artist=f"artist{i % len(centroids)}",
            vector=centroids[i % len(centroids)] + 0.3 * rng.normal(size=dim),
            relevance=float(rng.random()),
            popularity=float(rng.integers(10_000)),
            trend=float(rng.normal()),
            age_days=float(rng.integers(1_000)),
            exposure_item=float(rng.integers(4)),
            exposure_artist=float(rng.integers(10)),
        )
        for i in range(n)
    ]


def timed(calls: list[Callable[[], object]]) -> np.ndarray:
    """Per-call latencies in seconds."""
    out = np.empty(len(calls))
    clock = time.perf_counter
    for i, call in enumerate(calls):
        t0 = clock()
        call()
        out[i] = clock() - t0
    return out


def report(name: str, per_repeat: list[np.ndarray], unit_per_s: str | None = None) -> None:
    lat = np.concatenate(per_repeat) * 1e3
    line = f"{name:<44} median {np.median(lat):8.3f} ms   p99 {np.percentile(lat, 99):8.3f} ms"
    if unit_per_s:
        rates = [len(r) / r.sum() for r in per_repeat]
        line += f"   {np.median(rates):9,.0f} {unit_per_s}/s (median of {len(per_repeat)})"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--learn-events", type=int, default=20_000, help="per repeat")
    parser.add_argument("--items", type=int, default=500, help="predict_many batch size")
    parser.add_argument("--predict-calls", type=int, default=200, help="per repeat")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--rank-calls", type=int, default=50, help="per repeat")
    parser.add_argument("--n-factors", type=int, default=16)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    catalog = make_catalog(rng, 20_000, 2_000)
    print(
        f"seed={args.seed} repeats={args.repeats} n_factors={args.n_factors} "
        f"learn_events={args.learn_events} items={args.items} "
        f"k={args.k} of {args.candidates} candidates"
    )

    # ------------------------------------------------------------ relevance model
    model = RelevanceModel(n_factors=args.n_factors, seed=args.seed)
    for user, item, reward, ctx, w in make_events(rng, catalog, 5_000, 20_000):  # warm-up
        model.learn_one(user, item, reward, ctx, w)
    learn_runs = []
    for _ in range(args.repeats):
        events = make_events(rng, catalog, 5_000, args.learn_events)
        learn_runs.append(
            timed([(lambda e=e: model.learn_one(e[0], e[1], e[2], e[3], e[4])) for e in events])
        )
    report("RelevanceModel.learn_one", learn_runs, "events")

    predict_runs = []
    ctx = {"device": "ios", "hour": 21}
    model.item_vectors(catalog)  # serving keeps the catalog's feature rows cached
    for _ in range(args.repeats):
        batches = [
            [catalog[int(j)] for j in rng.choice(len(catalog), args.items, replace=False)]
            for _ in range(args.predict_calls)
        ]
        predict_runs.append(
            timed([(lambda b=b: model.predict_many("u1", b, ctx)) for b in batches])
        )
    report(f"RelevanceModel.predict_many({args.items} items)", predict_runs)

    # ------------------------------------------------------------ bandit
    shared = {"user": "u1", "device": "ios", "hour": 21, "history": 120}
    for exploration in ("epsilon", "softmax", "squarecb"):
        bandit = BanditReranker(exploration=exploration, seed=args.seed)
        cands = make_candidates(rng, args.candidates, args.n_factors + 1)
        served = []
        for _ in range(20):  # warm-up and a pool of realistic served features
            for e in bandit.rank(shared, cands, args.k, max_per_artist=2):
                bandit.learn_one(shared, e.features, e.propensity, float(rng.random() < 0.3))
                served.append(e)
        columns = CandidateColumns.of(cands)
        rank_runs, column_runs, learn_runs = [], [], []
        for _ in range(args.repeats):
            for runs, given in ((rank_runs, cands), (column_runs, columns)):
                runs.append(
                    timed(
                        [
                            (lambda b=bandit, c=given: b.rank(shared, c, args.k, max_per_artist=2))
                            for _ in range(args.rank_calls)
                        ]
                    )
                )
            picks = [served[int(j)] for j in rng.integers(len(served), size=2_000)]
            learn_runs.append(
                timed(
                    [
                        (
                            lambda e=e, b=bandit: b.learn_one(
                                shared, e.features, e.propensity, 1.0, 0.8
                            )
                        )
                        for e in picks
                    ]
                )
            )
        report(f"BanditReranker[{exploration}].rank(k={args.k} of {args.candidates})", rank_runs)
        report(f"BanditReranker[{exploration}].rank(columns)", column_runs)
        report(f"BanditReranker[{exploration}].learn_one", learn_runs, "events")
        bandit.close()


if __name__ == "__main__":
    main()
