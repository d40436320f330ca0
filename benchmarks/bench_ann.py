"""HNSW candidate retrieval against brute force: build time, memory, latency, recall.

Builds :class:`online.retrieval.HNSWRetriever` over ``--n`` vectors, then for each ``--ef``
measures single-query latency percentiles for ``k`` and recall@k against
:class:`online.retrieval.BruteForceRetriever` (also timed, as the baseline). ``--vectors
content``: clustered, normalised vectors (tracks around artist centroids, optionally with
varying norms), queried with others like them; ``--vectors relevance``: the relevance
model's item vectors ``[latent sums, bias]``, queried with listener vectors ``[latent sums,
1]`` (``online.demo.demo_relevance_vectors``), what the CF index holds. Each ``--space``
is built and measured in turn, so the spaces compare within one run. Seeded; the build is
repeated ``--repeats`` times.

Example::

    .venv/bin/python benchmarks/bench_ann.py --n 300000 --ef 500 800 1200
    .venv/bin/python benchmarks/bench_ann.py --vectors relevance --dim 17 --k 300 --ef 200 \
        --space ip l2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from online.demo import demo_relevance_vectors, demo_vectors
from online.retrieval import BruteForceRetriever, HNSWRetriever


def rss_mb() -> float:
    """Resident memory of this process in MB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300_000, help="number of item vectors")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--ef", type=int, nargs="+", default=[500, 800, 1200])
    p.add_argument("--queries", type=int, default=1000, help="queries timed per ef")
    p.add_argument("--recall-queries", type=int, default=200, help="queries checked for recall")
    p.add_argument("--repeats", type=int, default=2, help="builds (timed), and latency runs")
    p.add_argument("--norm-spread", type=float, default=0.0, help=">0: log-normal norms (MIPS)")
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="build threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vectors", choices=["content", "relevance"], default="content")
    p.add_argument("--space", nargs="+", choices=["ip", "l2"], default=["ip"])
    a = p.parse_args(argv)

    print(
        f"# n={a.n} dim={a.dim} k={a.k} M={a.M} ef_construction={a.ef_construction} "
        f"threads={a.threads} vectors={a.vectors} norm_spread={a.norm_spread} seed={a.seed}",
        flush=True,
    )
    base_rss = rss_mb()
    if a.vectors == "relevance":
        vectors = demo_relevance_vectors(a.n, a.dim, seed=a.seed)
        queries = demo_relevance_vectors(a.queries, a.dim, seed=a.seed + 1, listeners=True)
    else:
        vectors = demo_vectors(a.n, a.dim, seed=a.seed, norm_spread=a.norm_spread)
        queries = demo_vectors(a.queries, a.dim, seed=a.seed + 1, norm_spread=a.norm_spread)
    ids = np.arange(a.n)
    data_rss = rss_mb()
    print(f"rss: start {base_rss:.0f} MB, +vectors {data_rss - base_rss:.0f} MB")

    brute = BruteForceRetriever(a.dim)
    brute.upsert(ids, vectors)
    truth, brute_times = [], []
    for q in queries[: a.recall_queries]:
        t = time.perf_counter()
        truth.append(brute.query(q, a.k)[0])
        brute_times.append(time.perf_counter() - t)
    bt = np.array(brute_times) * 1000
    print(
        f"brute force k={a.k}: p50 {np.percentile(bt, 50):.1f} ms, "
        f"p99 {np.percentile(bt, 99):.1f} ms"
    )
    del brute
    for space in a.space:
        print(f"## space {space}", flush=True)
        measure(a, space, ids, vectors, queries, truth, data_rss)


def measure(
    a: argparse.Namespace,
    space: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: list[np.ndarray],
    data_rss: float,
) -> None:
    """Build the graph in ``space`` ``--repeats`` times, then time and check each ``--ef``."""
    builds: list[float] = []
    hnsw = None
    for r in range(a.repeats):
        del hnsw
        hnsw = HNSWRetriever(
            a.dim,
            M=a.M,
            ef_construction=a.ef_construction,
            num_threads=a.threads,
            seed=a.seed + r,
            space=space,
        )
        t = time.perf_counter()
        hnsw.upsert(ids, vectors)
        builds.append(time.perf_counter() - t)
        print(
            f"build {r + 1}/{a.repeats}: {builds[-1]:.1f} s ({a.n / builds[-1]:,.0f}/s)", flush=True
        )
    assert hnsw is not None
    index_rss = rss_mb()
    print(f"rss: +index {index_rss - data_rss:.0f} MB over the vectors (total {index_rss:.0f} MB)")

    print(f"{'ef':>6} {'p50 ms':>8} {'p99 ms':>8} {'recall@' + str(a.k):>11}")
    for ef in a.ef:
        hnsw.query(queries[0], a.k, ef=ef)  # warm up, set ef
        lat = []
        for _ in range(a.repeats):
            for q in queries:
                t = time.perf_counter()
                hnsw.query(q, a.k, ef=ef)
                lat.append(time.perf_counter() - t)
        lat_ms = np.array(lat) * 1000
        hits = sum(
            np.intersect1d(hnsw.query(q, a.k, ef=ef)[0], t).size
            for q, t in zip(queries, truth, strict=False)
        )
        rec = hits / (a.k * len(truth))
        print(
            f"{ef:>6} {np.percentile(lat_ms, 50):>8.2f} {np.percentile(lat_ms, 99):>8.2f} "
            f"{rec:>11.3f}",
            flush=True,
        )
    print(f"build mean {np.mean(builds):.1f} s over {a.repeats}; peak rss {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
