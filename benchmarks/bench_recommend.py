"""Latency of POST /v1/recommend at a fixed open-loop rate, on a large catalog, over HTTP.

1. Writes a catalog of --items tracks with 64-dimensional content vectors (clustered around
   artist centroids, as real embeddings are) into a fresh SQLite database, with arrays and
   ``Catalog.upsert`` in chunks.
2. Starts ``segue serve`` (embedded learner) on it; the time to ready includes loading the
   catalog and building the HNSW content index.
3. Warms the models over HTTP: --warm-lists lists are asked for, and their impressions, plays
   and skips (with the lists' request ids) plus organic plays are posted to /v1/feedback; it
   waits until the learner has caught up and has indexed the items the warm-up moved, so the
   relevance model, the bandit and the CF index hold learned state.
4. Each run, a separate client process sends POST /v1/recommend (k=--k) at --rate requests/s
   for --seconds, open loop: a request's latency is measured from its scheduled send time, so
   a slow server cannot hide its queue (no coordinated omission). The baseline in the same run
   is GET /v1/model at the same rate (the HTTP floor: uvicorn, FastAPI, the client).
5. Per-stage times (candidates, relevance, rerank) are the service's own Prometheus histogram
   ``segue_stage_seconds`` over the timed window: exact means, and the bucket bound under
   which 99% fell.
6. The server's CPU time per list: user + system time of the service process over the
   recommend window, divided by the lists asked for (Linux ``/proc``). Stage means are wall
   times, which include waits for the GIL; this is what a list costs.
7. After the service stops: recall@500 of the content index against brute force (the same
   ContentIndex code, rebuilt in this process on the same catalog, which also times the
   build), and the resident memory the service had (VmRSS). Then recall of the CF index
   (learned item vectors) against brute force, queried with warm-up listeners' vectors:
   the newest snapshot's graph as served, and a fresh build over every learned item
   (``cf_recall``; the fresh build only up to ``--cf-rebuild-max`` catalog items).
8. The machine's speed in each window: ``speed_probe`` (benchmarks/_common.py) times a fixed
   pure-Python loop in CPU time once a second from its own process; its median is printed
   with the window, so a window that fell in a slow phase of the machine shows as one.

``--workers N`` (N > 1) runs the distributed layout on this one machine instead: ``segue serve
--workers N --no-learner`` (N processes on one port) with ``segue learn`` as its own process,
lists and sessions in Redis (127.0.0.1:6379, database 14, a key prefix of its own, removed
afterwards). The warm-up then waits until every worker serves a snapshot that includes all
warm-up events; CPU and memory are summed over the service's processes; stage times are
every worker's (the service sums its workers' histograms).

``--feedback-share F`` makes the client post the impressions and outcomes of a share F of the
lists it is served during each timed window (the learner then works while lists are
measured, and each run reports the events learned and the snapshot cuts made meanwhile);
``--reuse DIR`` keeps the written catalog and the saved content index between runs.

    python benchmarks/bench_recommend.py --items 1000000 --rate 200 --seconds 20 --runs 3
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson

from benchmarks._common import machine, median, percentiles, rss_mb, serve, speed_probe

if TYPE_CHECKING:
    from online.settings import EngineSettings

DIM = 64
_DAY = 86_400.0


# -- the catalog ---------------------------------------------------------------------------


def build_catalog(url: str, n: int, seed: int = 0, chunk: int = 50_000) -> float:
    """Write ``n`` demo tracks into the catalog at ``url``; returns seconds taken."""
    from online.catalog import Catalog
    from online.items import Item

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_artists = max(1, n // 12)
    n_genres = 32
    artist_genre = rng.integers(0, n_genres, size=n_artists)
    genre_c = rng.standard_normal((n_genres, DIM)).astype(np.float32)
    genre_c /= np.linalg.norm(genre_c, axis=1, keepdims=True)
    centroids = genre_c[artist_genre] + 0.6 * rng.standard_normal((n_artists, DIM)).astype(
        np.float32
    ) / np.sqrt(DIM)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, n_artists + 1) ** 0.8
    rng.shuffle(weights)
    now = time.time()
    catalog = Catalog(url, embedding_dim=DIM, load=False)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        artist = rng.choice(n_artists, size=m, p=weights / weights.sum())
        vec = centroids[artist] + 0.35 * rng.standard_normal((m, DIM)).astype(np.float32) / np.sqrt(
            DIM
        )
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        age = 30 * 365 * rng.beta(1.0, 3.0, size=m)
        fresh = rng.random(m) < 0.02
        age[fresh] = 7 * rng.random(int(fresh.sum()))
        release = np.round(now - age * _DAY).tolist()
        available = (rng.random(m) >= 0.01).tolist()
        rows = vec.tolist()
        items = [
            Item(
                item_id=f"t{start + j:08d}",
                title=f"Track {start + j}",
                artist=f"artist-{a}",
                genres=(f"genre-{artist_genre[a]}",),
                release_time=release[j],
                duration_ms=210_000,
                available=available[j],
                embedding=tuple(rows[j]),
            )
            for j, a in enumerate(artist.tolist())
        ]
        catalog.upsert(items)
    catalog.close()
    return time.perf_counter() - started


# -- HTTP helpers ----------------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection to the service (http.client: a light client)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"content-type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            try:
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of ``segue serve --workers``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process and its descendants have used so far."""
    total = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tree_rss_mb(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        try:
            total += rss_mb(p)
        except OSError:
            continue
    return total


def metrics(conn: Conn) -> str:
    return conn.call("GET", "/metrics")[1].decode()


def metric_value(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def stage_stats(before: str, after: str) -> dict[str, dict[str, float]]:
    """Mean and the 99% bucket bound of each stage over the window between two scrapes."""
    out = {}
    for stage in ("candidates", "relevance", "rerank", "total"):
        lab = f'{{stage="{stage}"}}'
        n = metric_value(after, "segue_stage_seconds_count", lab) - metric_value(
            before, "segue_stage_seconds_count", lab
        )
        s = metric_value(after, "segue_stage_seconds_sum", lab) - metric_value(
            before, "segue_stage_seconds_sum", lab
        )
        buckets = []
        for m in re.finditer(
            rf'^segue_stage_seconds_bucket{{le="([^"]+)",stage="{stage}"}} (\S+)$', after, re.M
        ):
            le = m.group(1)
            prev = metric_value(
                before, "segue_stage_seconds_bucket", f'{{le="{le}",stage="{stage}"}}'
            )
            buckets.append((float(le), float(m.group(2)) - prev))
        p99 = float("nan")
        for le, count in sorted(buckets):
            if n and count >= 0.99 * n:
                p99 = le
                break
        out[stage] = {
            "n": n,
            "mean_ms": 1000 * s / n if n else float("nan"),
            "p99_le_ms": p99 * 1000,
        }
    return out


def warm(port: int, n_lists: int, n_users: int, n_items: int, seed: int) -> dict[str, int]:
    """Ask for lists and post their feedback (see the module doc); returns event counts."""
    rng = np.random.default_rng(seed)
    conn = Conn(port)
    tag = uuid.uuid4().hex[:8]
    counts = {"impression": 0, "play": 0, "skip": 0, "organic": 0}
    batch: list[dict] = []
    for n in range(n_lists):
        user = f"u{int(rng.integers(n_users))}"
        ctx = {"device": ("ios", "android", "web")[n % 3]}
        status, body = conn.call(
            "POST", "/v1/recommend", orjson.dumps({"user_id": user, "k": 30, "context": ctx})
        )
        if status != 200:
            continue
        shown = feedback_events(user, ctx, orjson.loads(body), rng, tag)
        for event in shown:
            counts[event["type"]] += 1
        batch.extend(shown)
        now_ms = shown[0]["timestamp"] if shown else int(time.time() * 1000)
        batch.append(
            {"event_id": f"{tag}g{n}", "type": "play", "user_id": user,
             "item_id": f"t{int(rng.integers(n_items)):08d}", "timestamp": now_ms + 2,
             "context": ctx, "played_ms": 150_000, "duration_ms": 210_000}
        )  # fmt: skip
        counts["organic"] += 1
        if len(batch) >= 500 or n == n_lists - 1:
            conn.call("POST", "/v1/feedback", orjson.dumps({"events": batch}))
            batch = []
    return counts


def wait_workers_current(port: int, timeout_s: float = 900) -> float:
    """Until every worker (asked over fresh connections) serves a snapshot that includes the
    whole event log."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        lags = []
        for _ in range(8):
            status, body = Conn(port).call("GET", "/v1/model")
            lags.append(orjson.loads(body)["lag_events"] if status == 200 else -1)
        if all(lag == 0 for lag in lags):
            return time.monotonic() - started
        time.sleep(1.0)
    return float("nan")


def wait_caught_up(port: int, timeout_s: float = 900) -> tuple[float, float]:
    """Seconds until the learner has learned every accepted event, and until, after that,
    the learner has also indexed every item the warm-up moved (the queue of moved items
    drains about a minute at 1M items): the windows then measure a settled service."""
    conn = Conn(port)
    started = time.monotonic()
    learned_s: float | None = None
    while time.monotonic() - started < timeout_s:
        if learned_s is None:
            text = metrics(conn)
            accepted = metric_value(text, "segue_feedback_events_accepted_total")
            learned = metric_value(text, "segue_learner_events_total")
            if metric_value(text, "segue_learner_lag_events") == 0 and learned >= accepted:
                learned_s = time.monotonic() - started
        if learned_s is not None and cf_index(conn)["dirty_items"] == 0:
            return learned_s, time.monotonic() - started
        time.sleep(0.5)
    return float("nan") if learned_s is None else learned_s, float("nan")


def cf_index(conn: Conn) -> dict[str, float]:
    """The CF index's figures from ``/v1/model``: items queued, indexed, short queries."""
    _, body = conn.call("GET", "/v1/model")
    return orjson.loads(body)["index"]  # type: ignore[no-any-return]


# -- the open-loop client ----------------------------------------------------------------------


def feedback_events(
    user: str, ctx: dict, answer: dict, rng: np.random.Generator, tag: str
) -> list[dict]:
    """What a client reports for a list it showed: every impression, and for the first ten
    slots a play (30%) or a skip (30%); the warm-up and ``--feedback-share`` both use it."""
    rid = answer["request_id"]
    now_ms = int(time.time() * 1000)
    out: list[dict] = []
    for pos, item in enumerate(answer["items"]):
        out.append(
            {"event_id": f"{tag}{rid}-{pos}", "type": "impression", "user_id": user,
             "item_id": item["item_id"], "timestamp": now_ms, "context": ctx,
             "request_id": rid, "position": pos}
        )  # fmt: skip
        u = rng.random()
        if pos < 10 and u < 0.6:
            out.append(
                {"event_id": f"{tag}{rid}-{pos}o", "type": "play" if u < 0.3 else "skip",
                 "user_id": user, "item_id": item["item_id"], "timestamp": now_ms + 1,
                 "context": ctx, "request_id": rid,
                 "played_ms": 150_000 if u < 0.3 else 4_000, "duration_ms": 210_000}
            )  # fmt: skip
    return out


def client(
    port: int,
    path: str,
    bodies: list[bytes] | None,
    rate: float,
    seconds: float,
    out: mp.Queue,
    feedback_share: float = 0.0,
) -> None:
    """Send at ``rate``/s for ``seconds`` from a pool of keep-alive connections (open loop).

    With ``feedback_share`` > 0, that share of the lists served has its impressions and
    outcomes posted to /v1/feedback meanwhile, in batches every half second (a streaming
    app's clients reporting what they showed), so the learner works during the window.
    """
    n = int(rate * seconds)
    latencies = [float("nan")] * n
    fallbacks = [None] * n
    status = [0] * n
    lock = threading.Lock()
    nxt = iter(range(n))
    start = time.perf_counter() + 0.2
    pending: list[dict] = []
    posted = {"events": 0, "errors": 0}
    done = threading.Event()
    rng = np.random.default_rng(11)
    tag = uuid.uuid4().hex[:6]

    def reporter() -> None:
        conn = Conn(port)
        while True:
            finished = done.wait(0.5)
            with lock:
                batch = pending[:]
                pending.clear()
            for k in range(0, len(batch), 1000):  # the intake's default batch limit
                part = batch[k : k + 1000]
                code, _ = conn.call("POST", "/v1/feedback", orjson.dumps({"events": part}))
                posted["events" if code == 200 else "errors"] += len(part)
            if finished:
                return

    def worker() -> None:
        conn = Conn(port)
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            body = None if bodies is None else bodies[i % len(bodies)]
            code, data = conn.call("GET" if body is None else "POST", path, body)
            latencies[i] = time.perf_counter() - due
            status[i] = code
            if body is not None and code == 200:
                answer = orjson.loads(data)
                fallbacks[i] = answer["fallback"]
                if feedback_share > 0 and answer["fallback"] is None:
                    with lock:
                        if rng.random() < feedback_share:
                            req = orjson.loads(body)
                            shown = feedback_events(
                                req["user_id"], req.get("context", {}), answer, rng, tag
                            )
                            pending.extend(shown)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(48)]
    report = threading.Thread(target=reporter, daemon=True)
    if feedback_share > 0:
        report.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    done.set()
    if feedback_share > 0:
        report.join()
    out.put((latencies, fallbacks, status, elapsed, posted))


def timed(
    port: int, path: str, bodies: list[bytes] | None, rate: float, args: argparse.Namespace
) -> dict:
    q: mp.Queue = mp.Queue()
    share = args.feedback_share if bodies is not None else 0.0
    p = mp.Process(target=client, args=(port, path, bodies, rate, args.seconds, q, share))
    p.start()
    latencies, fallbacks, status, elapsed, posted = q.get()
    p.join()
    ok = [lat for lat, s in zip(latencies, status, strict=True) if s == 200]
    pc = percentiles(ok, (50, 99, 99.9))
    served = [f for f, s in zip(fallbacks, status, strict=True) if s == 200]
    return {
        "p50": pc["p50"] * 1000,
        "p99": pc["p99"] * 1000,
        "p99.9": pc["p99.9"] * 1000,
        "errors": sum(s != 200 for s in status),
        "fallback_ratio": sum(f is not None for f in served) / max(1, len(served)),
        "fallbacks": sorted({f for f in served if f is not None}),
        "achieved_rate": len(status) / elapsed,
        "feedback_events": posted["events"],
        "feedback_errors": posted["errors"],
    }


def recall_at(url: str, queries: int, ks: tuple[int, ...], ef: int) -> tuple[float, dict]:
    """Build seconds of the engine's ContentIndex, and per ``k`` its recall@k against brute
    force and its query p99 in ms."""
    from online.catalog import Catalog
    from online.engine import ContentIndex
    from online.retrieval import BruteForceRetriever

    catalog = Catalog(url, embedding_dim=DIM)
    index = ContentIndex(DIM, ef=ef)
    started = time.perf_counter()
    index.sync(catalog)
    build_s = time.perf_counter() - started
    view = catalog.view()
    live = np.flatnonzero(view.has_embedding & view.available_mask)
    exact = BruteForceRetriever(DIM)
    exact.upsert(live, view.embeddings[live])
    out = {}
    for k in ks:
        rng = np.random.default_rng(7)
        hits, times = 0, []
        for _ in range(queries):
            # a session-like query: the mean of three tracks by one artist (a listener's
            # recent plays), so the query sits where real session vectors do
            first = int(rng.choice(live))
            artist = catalog.artist_of(str(view.ids[first])) or ""
            rows = np.asarray(catalog.indexes_by_artist(artist) or [first])
            q = view.embeddings[rng.choice(rows, size=3)].mean(axis=0)
            t = time.perf_counter()
            got, _ = index.index.query(q, k)
            times.append(time.perf_counter() - t)
            want, _ = exact.query(q, k)
            hits += len(np.intersect1d(got, want))
        out[k] = (hits / (queries * k), percentiles(times, (99,))["p99"] * 1000)
    catalog.close()
    return build_s, out


def cf_recall(
    data: Path,
    url: str,
    n_users: int,
    queries: int,
    ks: tuple[int, ...],
    rebuild_max: int = 2_000_000,
) -> dict[str, dict]:
    """Recall@k of the CF index against brute force, from the newest snapshot the service
    cut, queried with the vectors of warm-up listeners (the relevance model's own).

    Two graphs: ``served``, the snapshot's CF index as the learner left it (linked
    incrementally, some links older than the vectors), and ``rebuilt``, a fresh graph with the
    engine's settings over every catalog item with a learned vector (what the index holds
    once the learner has swept the whole catalog; the served index's parameters and space),
    which also times the build. Each is checked against exact MIPS over the very vectors it
    holds. Per graph: the items it holds, and per ``k`` (recall, query p99 in ms);
    ``rebuilt`` also has ``build_s``.

    ``rebuilt`` needs every catalog item's vector (the relevance model's, computed in Python
    per item) and the duplicate cap over them: minutes at 1M, hours at 8.2M. Above
    ``rebuild_max`` catalog items it is left out (``{"skipped": reason}``); ``served`` reads
    only the vectors its index holds, so it costs about the same at any catalog size.
    """
    from online._duplicates import DuplicateCap
    from online.catalog import Catalog
    from online.engine import ContentIndex, Engine
    from online.retrieval import BruteForceRetriever
    from snapshots import SnapshotStore

    loaded = SnapshotStore(data / "snapshots").load_current()
    if loaded is None:
        return {}
    catalog = Catalog(url, embedding_dim=DIM)
    # no content index: this reads the CF one only (building the other takes 40 min at 8.2M)
    off = ContentIndex(DIM, enabled=False)
    engine = Engine.load(loaded.snapshot.path, catalog, content_index=off)
    s, relevance = engine.settings, engine.relevance
    n_rows = len(catalog.view().ids)
    graphs = {"served": engine.cf_index}
    build_s = None
    if n_rows <= rebuild_max:
        rows = np.arange(n_rows)
        vectors = np.concatenate(
            [
                relevance.item_vectors_of(catalog.feature_columns(part.tolist()))
                for part in np.array_split(rows, max(1, rows.size // 50_000))
            ]
        )
        learned = np.abs(vectors[:, :-1]).sum(axis=1) > 0  # as refresh_index: signal only
        rows, vectors = rows[learned], vectors[learned]
        admitted, _ = DuplicateCap(s.cf_max_identical).admit(rows, vectors)
        rows, vectors = rows[admitted], vectors[admitted]
        rebuilt = engine.cf_index.clone()  # empty, with the served index's parameters, space
        started = time.perf_counter()
        rebuilt.upsert(rows, vectors)
        build_s = time.perf_counter() - started
        graphs["rebuilt"] = rebuilt
    rng = np.random.default_rng(11)
    users = [f"u{int(u)}" for u in rng.choice(n_users, size=queries, replace=False)]
    contexts = [{"device": ("ios", "android", "web")[i % 3]} for i in range(queries)]
    qs = [relevance.user_vector(u, c) for u, c in zip(users, contexts, strict=True)]
    out: dict[str, dict] = {}
    for name, index in graphs.items():
        held = np.flatnonzero(index.stored(np.arange(n_rows))[1])
        exact = BruteForceRetriever(index.dim)
        exact.upsert(held, index.stored(held)[0])
        out[name] = {"items": int(held.size)}
        for k in ks:
            hits, wanted, times = 0, 0, []
            for q in qs:
                t = time.perf_counter()
                got, _ = index.query(q, k)
                times.append(time.perf_counter() - t)
                want, _ = exact.query(q, k)
                hits += len(np.intersect1d(got, want))
                wanted += len(want)
            out[name][k] = (hits / max(1, wanted), percentiles(times, (99,))["p99"] * 1000)
    if build_s is None:
        out["rebuilt"] = {"skipped": f"{n_rows:,} catalog items > --cf-rebuild-max {rebuild_max:,}"}
    else:
        out["rebuilt"]["build_s"] = build_s
    catalog.close()
    return out


REDIS_URL = "redis://127.0.0.1:6379/14"


def start_learner(data: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``segue learn`` as its own process, as in the distributed layout."""
    return subprocess.Popen(
        [sys.executable, "-c", "from serving.cli import main; main()", "learn",
         "--log-level", "warning"],
        env={**os.environ, "SEGUE_DATA_DIR": str(data), **env},
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip


def _drop_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


def snapshot_count(data: Path) -> int:
    """The sequence number of the newest snapshot version (``v<seq>-<stamp>``): old versions
    are pruned, so the difference of two readings counts the cuts between them."""
    root = data / "snapshots"
    seqs = [int(p.name[1:7]) for p in root.glob("v*") if p.is_dir() and p.name[1:7].isdigit()]
    return max(seqs, default=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument(
        "--rate", default="200", help="requests per second; a comma list runs each in turn"
    )
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--warm-lists", type=int, default=3000)
    ap.add_argument(
        "--recall-queries", type=int, default=50, help="content index; 0 skips its recall"
    )
    ap.add_argument(
        "--cf-recall-queries", type=int, default=50, help="CF index; 0 skips its recall"
    )
    ap.add_argument(
        "--cf-rebuild-max",
        type=int,
        default=2_000_000,
        help="largest catalog for which the CF recall also builds a fresh graph over every "
        "learned item (its vectors are computed per item: hours at 8.2M)",
    )
    ap.add_argument("--recall-ef", type=int, default=None, help="default: the engine's hnsw_ef")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serving processes; more than 1 runs segue learn apart and Redis (module doc)",
    )
    ap.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="keep the written catalog and the saved content index under this directory and "
        "start from them next time (the catalog is copied into each run's fresh data "
        "directory; the index is read, not built): repeat runs at 8.2M start in minutes",
    )
    ap.add_argument(
        "--feedback-share",
        type=float,
        default=0.0,
        help="share of the lists served in a timed window whose impressions and outcomes are "
        "posted to /v1/feedback meanwhile (0: none), so the learner works during the window",
    )
    ap.add_argument(
        "--snapshot-every",
        type=float,
        default=None,
        help="seconds between snapshot cuts (SEGUE_SNAPSHOT_EVERY_SECONDS; default the "
        "service's own): with --feedback-share, cuts fall inside the timed windows",
    )
    args = ap.parse_args()
    print(f"machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        url = f"sqlite:///{data / 'segue.db'}"
        kept = args.reuse / f"catalog-{args.items}" if args.reuse is not None else None
        if kept is not None and (kept / "segue.db").exists():
            shutil.copy(kept / "segue.db", data / "segue.db")
            print(f"catalog: {args.items:,} items copied from {kept}")
        else:
            print(
                f"catalog: {args.items:,} items written in {build_catalog(url, args.items):.0f} s"
            )
            if kept is not None:
                kept.mkdir(parents=True, exist_ok=True)
                shutil.copy(data / "segue.db", kept / "segue.db")
        port = free_port()
        env = {"SEGUE_EMBEDDING_DIM": str(DIM)}
        index_read = False
        if kept is not None:
            env["SEGUE_SERVING_CONTENT_INDEX_DIR"] = str(kept / "content-index")
            index_read = (kept / "content-index" / "meta.json").exists()
        serve_args: list[str] = []
        learn_proc = None
        prefix = f"segue-bench:{uuid.uuid4().hex[:8]}:"
        if args.workers > 1:
            env |= {
                "SEGUE_REDIS_URL": REDIS_URL,
                "SEGUE_REDIS_PREFIX": prefix,
                "SEGUE_SNAPSHOT_EVERY_SECONDS": "10",
            }
            serve_args = ["--workers", str(args.workers), "--no-learner"]
        if args.snapshot_every is not None:
            env["SEGUE_SNAPSHOT_EVERY_SECONDS"] = str(args.snapshot_every)
        started = time.monotonic()
        rows: list[dict] = []
        with serve(data, port, env=env, args=serve_args, timeout_s=3600) as proc:
            ready_s = time.monotonic() - started
            how = "read" if index_read else "build"
            print(f"service ready in {ready_s:.0f} s (catalog load + content index {how})")
            if args.workers > 1:
                learn_proc = start_learner(data, env)
            counts = warm(port, args.warm_lists, args.users, args.items, seed=1)
            conn = Conn(port)
            if learn_proc is None:
                lag_s, indexed_s = wait_caught_up(port)
                learned = metric_value(metrics(conn), "segue_learner_events_total")
                cf = cf_index(conn)
                print(f"warm-up: posted {counts}; learner caught up {lag_s:.0f} s later "
                      f"({learned:,.0f} events learned), the items it moved indexed "
                      f"{indexed_s:.0f} s later; CF index {cf['indexed_items']:,.0f} items, "
                      f"{cf['short_queries']:,.0f} queries it could not fill")  # fmt: skip
            else:
                lag_s = wait_workers_current(port)
                print(f"warm-up: posted {counts}; every worker served a snapshot with all of "
                      f"them {lag_s:.0f} s later")  # fmt: skip
            rss = tree_rss_mb(proc.pid)
            rng = np.random.default_rng(3)
            for rate in [float(r) for r in str(args.rate).split(",")]:
                for run in range(args.runs):
                    bodies = [
                        orjson.dumps(
                            {
                                "user_id": f"u{int(rng.integers(args.users))}",
                                "k": args.k,
                                "context": {"device": ("ios", "android", "web")[i % 3]},
                            }
                        )
                        for i in range(int(rate * args.seconds))
                    ]
                    load = os.getloadavg()[0]
                    before = metrics(conn)
                    cuts_before = snapshot_count(data)
                    cpu_before = cpu_seconds(proc.pid)
                    with speed_probe() as probe:
                        rec = timed(port, "/v1/recommend", bodies, rate, args)
                    rec["probe_ms"] = median(probe)
                    rec["cpu_ms"] = 1000 * (cpu_seconds(proc.pid) - cpu_before) / len(bodies)
                    after = metrics(conn)
                    stages = stage_stats(before, after)
                    rec["learned"] = metric_value(after, "segue_learner_events_total") - (
                        metric_value(before, "segue_learner_events_total")
                    )
                    rec["cuts"] = snapshot_count(data) - cuts_before
                    cut_n = metric_value(after, "segue_snapshot_cut_seconds_count") - (
                        metric_value(before, "segue_snapshot_cut_seconds_count")
                    )
                    cut_s = metric_value(after, "segue_snapshot_cut_seconds_sum") - (
                        metric_value(before, "segue_snapshot_cut_seconds_sum")
                    )
                    rec["cut_mean_s"] = cut_s / cut_n if cut_n else 0.0
                    base = timed(port, "/v1/model", None, rate, args)
                    rss = max(rss, tree_rss_mb(proc.pid))
                    rows.append(
                        {"rate": rate, "rec": rec, "base": base, "stages": stages, "load": load}
                    )
                    print(
                        f"  {rate:.0f}/s run {run + 1} (load {load:.2f}): recommend p50 "
                        f"{rec['p50']:.1f} ms, "
                        f"p99 {rec['p99']:.1f}, p99.9 {rec['p99.9']:.1f}, server CPU "
                        f"{rec['cpu_ms']:.2f} ms/list (machine probe {rec['probe_ms']:.1f} ms), "
                        "fallback "
                        f"{rec['fallback_ratio']:.1%} {rec['fallbacks']}, errors {rec['errors']}, "
                        f"{rec['achieved_rate']:.0f}/s | GET /v1/model p50 {base['p50']:.1f} ms, "
                        f"p99 {base['p99']:.1f} | stage means "
                        + ", ".join(f"{s} {v['mean_ms']:.2f} ms" for s, v in stages.items())
                        + (
                            f" | feedback: {rec['feedback_events']} events posted "
                            f"({rec['feedback_errors']} refused), {rec['learned']:.0f} learned, "
                            f"{rec['cuts']} snapshot cuts (mean {rec['cut_mean_s']:.2f} s)"
                            if args.feedback_share > 0
                            else ""
                        ),
                        flush=True,
                    )
                time.sleep(15)  # let open breakers close and queues drain before the next rate
        if learn_proc is not None:
            learn_proc.terminate()
            learn_proc.wait(120)
            _drop_redis_keys(prefix)
        ef = args.recall_ef or _engine_ef()
        recalls = None
        cf_k = (_engine_settings().cf_candidates, 500)
        cf_recalls: dict[str, dict] = {}
        if args.recall_queries > 0:  # 0: skip (at 8.2M the rebuild takes a quarter hour)
            build_s, recalls = recall_at(url, args.recall_queries, (500, 100), ef)
        if args.cf_recall_queries > 0:
            cf_recalls = cf_recall(
                data, url, args.users, args.cf_recall_queries, cf_k, args.cf_rebuild_max
            )

    print()
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")
    print(
        "| items | k | rate | p50 | p99 | p99.9 | fallback | GET /v1/model p50 / p99 | "
        "candidates | relevance | rerank | server CPU / list | machine probe | server RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in dict.fromkeys(r["rate"] for r in rows):
        at = [r for r in rows if r["rate"] == rate]

        def med(key: str, sub: str, at: list[dict] = at) -> float:
            return median([r[key][sub] for r in at])

        stages = ("candidates", "relevance", "rerank")
        st = {s: median([r["stages"][s]["mean_ms"] for r in at]) for s in stages}
        st99 = {s: median([r["stages"][s]["p99_le_ms"] for r in at]) for s in stages}
        print(
            f"| {args.items:,} | {args.k} | {rate:.0f}/s | {med('rec', 'p50'):.1f} ms | "
            f"{med('rec', 'p99'):.1f} ms | {med('rec', 'p99.9'):.1f} ms | "
            f"{median([r['rec']['fallback_ratio'] for r in at]):.1%} | "
            f"{med('base', 'p50'):.1f} / {med('base', 'p99'):.1f} ms | "
            + " | ".join(f"{st[s]:.2f} ms (p99 <= {st99[s]:.0f})" for s in stages)
            + f" | {med('rec', 'cpu_ms'):.2f} ms | {med('rec', 'probe_ms'):.1f} ms | "
            f"{rss / 1024:.1f} GiB |"
        )
    if recalls is not None:
        (recall, q99), (recall_100, q99_100) = recalls[500], recalls[100]
        print()
        print(
            "| content index | build | recall@500 (ef=max(ef,500)) | recall@100 (ef) | query p99 |"
        )
        print("|---|---|---|---|---|")
        print(
            f"| HNSW M=16, ef={ef}, {args.items:,} x {DIM} | {build_s:.0f} s | {recall:.3f} | "
            f"{recall_100:.3f} | {q99:.1f} ms (k=500), {q99_100:.1f} ms (k=100) |"
        )
    if cf_recalls:
        print()
        print(f"| CF index (newest snapshot) | items | build | recall@{cf_k[0]} (what a list "
              f"asks) | recall@{cf_k[1]} | query p99 |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for name, got in cf_recalls.items():
            if "skipped" in got:
                print(f"| {name} | not built: {got['skipped']} | | | | |")
                continue
            (r0, q0), (r1, q1) = got[cf_k[0]], got[cf_k[1]]
            build = f"{got['build_s']:.1f} s" if "build_s" in got else "-"
            print(f"| {name} | {got['items']:,} | {build} | {r0:.3f} | {r1:.3f} | "
                  f"{q0:.1f} ms (k={cf_k[0]}), {q1:.1f} ms (k={cf_k[1]}) |")  # fmt: skip
    layout = (
        "one process, embedded learner"
        if args.workers == 1
        else f"{args.workers} serving workers + segue learn, Redis"
    )
    print(
        f"service start to ready: {ready_s:.0f} s (content index {how}); "
        f"medians of {args.runs} runs; {layout}"
    )


def _engine_settings() -> EngineSettings:
    from online.settings import EngineSettings

    return EngineSettings()


def _engine_ef() -> int:
    return _engine_settings().hnsw_ef


if __name__ == "__main__":
    main()
