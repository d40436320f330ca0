"""Candidate retrieval: maximum-inner-product search (MIPS) over item vectors.

A listener's vector and an item's vector come from the two-tower relevance model, so the
candidates for a listener are the items with the largest inner product ``<query, item>``;
item vectors are *not* normalised. :class:`Retriever` is the stage's protocol;
:class:`BruteForceRetriever` is exact (the test oracle, and fine up to ~100k items);
:class:`HNSWRetriever` is approximate (hnswlib) and is the serving default.

Ids are non-negative integers, meant to be the catalog's dense indexes
(:meth:`online.catalog.Catalog.index_of`): both retrievers keep an exact copy of every vector in
an array indexed by id, so memory grows with the largest id, not with the number of ids.

Exceptions
----------
::

    ValueError                    bad ids, wrong shapes, non-finite values
    RetrieverFormatError(ValueError)   a saved directory of another kind or version

Design of :class:`HNSWRetriever`
--------------------------------
**MIPS.** Returned scores are always exact inner products recomputed from the stored
vectors; the graph only steers the search, in one of two spaces (``space``). Which one
finds more of the true top k depends on the vectors, so each index uses the one measured on
vectors like its own:

- ``'ip'``: hnswlib's inner-product space (distance ``1 - <q, x>``), a non-metric graph
  (Morozov and Babenko, NeurIPS 2018). On clustered 64-d vectors with log-normal norms
  (sigma 0.3), 50k items, recall@500 at ef=800 was 0.96. The content index uses it.
- ``'l2'``: the norm-augmentation reduction (Bachrach et al., RecSys 2014): the graph holds
  ``[x, sqrt(R^2 - ||x||^2)]`` in hnswlib's L2 space and is searched with ``[q, 0]``, whose
  squared distances are ``||q||^2 + R^2 - 2 <q, x>``, so the nearest are exactly the largest
  inner products. On the clustered vectors above it reached 0.37, because every query then
  sits far outside the data. On the relevance model's item vectors ``[latent sums, bias]``,
  where the bias column dominates, it is the other way round: recall@300 at ef=200 was 1.000
  against 0.127 for ``'ip'`` on a million of them (``bench_ann.py --vectors relevance``; the
  same query time, a build 2.3 times longer), and 1.000 against 0.348 on the learned index of
  ``bench_recommend.py``. The ``'ip'`` graph links every point to the few with the largest
  bias, and greedy search ends there. The CF index uses it. ``R`` is ``_RADIUS_HEADROOM``
  times the longest vector when the graph is built; a vector written later that is longer
  than ``R`` (the model grew) is linked with a zero last coordinate and, since the reduction
  cannot rank it, also scored exactly by every query until a rebuild re-derives ``R``, which
  a write does once more than ``_overflow_limit()`` vectors are beyond it.

Recall is asserted against :class:`BruteForceRetriever` in the tests and reported by
``benchmarks/bench_ann.py`` and ``benchmarks/bench_recommend.py``.

**Concurrency.** hnswlib's ``knn_query`` must never run during ``add_items``,
``resize_index`` or ``mark_deleted`` (hnswlib issues 562, 590). A readers-writer lock guards
the graph: any number of queries run together (``knn_query`` releases the GIL, so they use
several cores), every mutation takes the lock exclusively, writers are preferred so a stream
of queries cannot starve them, and large upserts are applied in slices sized to take about
``write_slice_s`` each (at most ``write_batch`` vectors), so a query waits at most one slice.
Between two slices the writer steps aside for the queries that queued meanwhile: writer
preference alone would hold them through every slice of a refresh, because the writer
re-takes the lock before they wake. Slices are timed, not counted, because hnswlib's write
costs vary widely: re-linking a moved vector (``updatePoint``) costs several times an insert,
and more in larger, higher-dimensional graphs. A second mutex serialises writers, so a
rebuild (minutes at a million items) holds it without blocking queries. hnswlib's ``ef`` is
global state of the index: queries asking for the same ``ef`` share the lock; a query with
another ``ef`` waits for the running ones to drain, sets it, and then lets its peers in.

**Filtering.** Unavailable items are :meth:`~HNSWRetriever.remove`\\ d, which calls
``mark_deleted``: the graph still routes through them but never returns them, at no cost per
query. Per-request exclusions (already played, ``exclude``) are few, so a query over-fetches
``k + len(exclude)`` and drops them. hnswlib's Python filter callback is never used: it takes
the GIL for every visited node.

**Capacity.** The graph starts with ``capacity`` slots and grows by ``growth`` with
``resize_index`` (exclusive, it copies the graph). A removed id keeps its slot and
re-upserting it reuses the slot (hnswlib unmarks and updates it), so the slot count is the
number of distinct ids ever indexed; :meth:`HNSWRetriever.rebuild` drops removed ids and
compacts, building beside the serving graph. ``add_items`` with an id already present replaces
its vector in place; an upsert larger than the graph builds a new graph the same way.

>>> import numpy as np
>>> from online.demo import demo_vectors
>>> vectors = demo_vectors(2_000, 16, seed=0, norm_spread=0.3)
>>> hnsw, exact = HNSWRetriever(16, ef=64, seed=0), BruteForceRetriever(16)
>>> for r in (hnsw, exact):
...     r.upsert(np.arange(2_000), vectors)
>>> ids, scores = hnsw.query(vectors[7], k=10)
>>> bool(np.array_equal(ids, exact.query(vectors[7], k=10)[0]))
True
>>> bool(np.all(np.diff(scores) <= 0))
True
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import hnswlib
import numpy as np

FORMAT_VERSION = 1


logger = logging.getLogger("segue.retrieval")


# a query hnswlib cannot fill is answered exactly up to this many searchable vectors
# (about a millisecond of scoring); past it, with what the graph reaches
_EXACT_ANSWER_MAX = 20_000

SPACES = ("ip", "l2")
"""The MIPS graphs :class:`HNSWRetriever` can build (see the module doc)."""

# space "l2": the radius of the reduction is this many times the longest vector when a graph
# is built, so vectors that grow later still fit: a longer radius only adds a near-constant
# coordinate, and exact search orders the same either way
_RADIUS_HEADROOM = 2.0


class RetrieverFormatError(ValueError):
    """A saved retriever directory is of another kind, version or dimension."""


@runtime_checkable
class Retriever(Protocol):
    """Maximum-inner-product search over item vectors that move, appear and disappear."""

    dim: int

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Index ``vectors[i]`` under ``ids[i]``: new ids are added, known ids replaced, removed
        ids come back."""

    def remove(self, ids: np.ndarray) -> int:
        """Stop returning ``ids``; returns how many were searchable."""

    def query(
        self, vector: np.ndarray, k: int, *, ef: int | None = None, exclude: object = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` ``(ids int64, inner-product scores float32)``, best first."""

    def __len__(self) -> int:
        """The number of searchable ids."""

    def save(self, path: str | Path) -> None:
        """Write the state to directory ``path``."""

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a retriever written by :meth:`save`."""

    def clone(self) -> Self:
        """An empty retriever with the same hyperparameters."""


class _ReadWriteLock:
    """Many readers or one writer; writers preferred; readers grouped by hnswlib ``ef``."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._waiting_switch = 0
        self._waiting_readers = 0
        self._ef: int | None = None

    @contextmanager
    def read(self, ef: int | None = None, set_ef: Callable[[int], None] | None = None) -> Iterator:
        with self._cond:
            self._waiting_readers += 1
            try:
                if ef is None or ef == self._ef:
                    while self._writer or self._waiting_writers or self._waiting_switch:
                        self._cond.wait()
                if ef is not None and ef != self._ef:
                    self._waiting_switch += 1
                    try:
                        while self._writer or (self._readers and ef != self._ef):
                            self._cond.wait()
                    finally:
                        self._waiting_switch -= 1
                    if ef != self._ef:
                        if set_ef is not None:
                            set_ef(ef)
                        self._ef = ef
                    self._cond.notify_all()
            finally:
                self._waiting_readers -= 1
            if not self._waiting_readers:
                self._cond.notify_all()  # a writer stepping aside (yield_to_readers) goes on
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator:
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()

    def yield_to_readers(self, timeout: float = 0.05) -> None:
        """Between two writes: let the readers waiting now in before the next write.

        Call it holding no write lock. Returns when none waits any more (they have the lock
        or are done) or after ``timeout`` seconds.
        """
        with self._cond:
            if self._waiting_readers:
                self._cond.wait_for(lambda: not self._waiting_readers, timeout)

    def forget_ef(self) -> None:
        """The index was replaced: the next reader sets its ``ef`` again (call while writing)."""
        self._ef = None


def _check_ids(ids: object) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and ids.min() < 0:
        raise ValueError(f"ids must be non-negative, got {int(ids.min())}")
    return ids


def _check_batch(ids: object, vectors: object, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(ids, vectors)``; of duplicate ids the last row wins."""
    ids = _check_ids(ids)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1 and ids.size == 1:
        vectors = vectors.reshape(1, -1)
    if vectors.shape != (ids.size, dim):
        raise ValueError(f"vectors must have shape ({ids.size}, {dim}), got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinite values")
    if ids.size != np.unique(ids).size:
        _, rev_first = np.unique(ids[::-1], return_index=True)
        keep = np.sort(ids.size - 1 - rev_first)
        ids, vectors = ids[keep], vectors[keep]
    return ids, np.ascontiguousarray(vectors)


def _check_query(vector: object, dim: int) -> np.ndarray:
    q = np.asarray(vector, dtype=np.float32).reshape(-1)
    if q.shape != (dim,):
        raise ValueError(f"query must have {dim} values, got {q.size}")
    if not np.isfinite(q).all():
        raise ValueError("query contains NaN or infinite values")
    return q


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best by score, ties broken by the smaller id (deterministic)."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if ids.size > k:
        part = np.argpartition(-scores, k - 1)[:k]
        # keep every candidate tied with the k-th score so the tie-break sees all of them
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order].astype(np.float32)


class _VectorTable:
    """Exact vectors by id plus a searchable mask; grows by doubling. Not locked itself."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.live = np.zeros(0, dtype=bool)

    def ensure(self, max_id: int) -> None:
        if max_id < self.live.size:
            return
        size = max(1024, self.live.size * 2, max_id + 1)
        vectors = np.zeros((size, self.dim), dtype=np.float32)
        vectors[: self.live.size] = self.vectors
        live = np.zeros(size, dtype=bool)
        live[: self.live.size] = self.live
        self.vectors, self.live = vectors, live

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the vectors and the searchable flags of ``ids`` (zeros/False past the end)."""
        inside = ids < self.live.size
        vectors = np.zeros((ids.size, self.dim), dtype=np.float32)
        live = np.zeros(ids.size, dtype=bool)
        vectors[inside] = self.vectors[ids[inside]]
        live[inside] = self.live[ids[inside]]
        return vectors, live

    def known(self, ids: np.ndarray) -> np.ndarray:
        """A copy of ``ids`` restricted to those inside the table."""
        return ids[ids < self.live.size]

    def used(self) -> int:
        """One past the largest id ever stored (rows worth saving)."""
        nz = np.flatnonzero(self.live | self.vectors.any(axis=1))
        return int(nz[-1]) + 1 if nz.size else 0


def _exclude_array(exclude: object) -> np.ndarray:
    if exclude is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(exclude, set | frozenset):
        exclude = list(exclude)
    return np.asarray(exclude, dtype=np.int64).reshape(-1)


def _read_meta(path: Path, kind: str) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError as exc:
        raise RetrieverFormatError(f"{path} holds no saved retriever (no meta.json)") from exc
    if meta.get("kind") != kind:
        raise RetrieverFormatError(f"{path} holds a {meta.get('kind')!r}, not a {kind!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RetrieverFormatError(
            f"{path} has format version {meta.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return meta


class _ExactVectors:
    """What both retrievers share: the exact vectors they keep beside any index."""

    _table: _VectorTable
    _lock: _ReadWriteLock

    def stored(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact vectors held for ``ids`` (zeros for unknown ids) and whether each is
        searchable: a caller can skip re-indexing vectors that did not move."""
        ids = _check_ids(ids)
        with self._lock.read():
            return self._table.lookup(ids)


class BruteForceRetriever(_ExactVectors):
    """Exact MIPS with numpy: the oracle for :class:`HNSWRetriever`.

    A query gathers and scores every searchable vector (k=500 over 300k 64-d vectors: about
    20 ms p50 on this machine, see ``benchmarks/bench_ann.py``).

    >>> r = BruteForceRetriever(2)
    >>> r.upsert(np.array([0, 1, 2]), np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]]))
    >>> r.query(np.array([1.0, 0.0]), k=2)
    (array([1, 0]), array([3., 1.], dtype=float32))
    >>> r.remove(np.array([1]))
    1
    >>> r.query(np.array([1.0, 0.0]), k=2, exclude=[0])[0]
    array([2])
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self._table = _VectorTable(dim)
        self._lock = _ReadWriteLock()
        self._n_live = 0

    def clone(self) -> BruteForceRetriever:
        return BruteForceRetriever(self.dim)

    def __len__(self) -> int:
        return self._n_live

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = _check_batch(ids, vectors, self.dim)
        if not ids.size:
            return
        with self._lock.write():
            self._table.ensure(int(ids.max()))
            self._table.vectors[ids] = vectors
            self._table.live[ids] = True
            self._n_live = int(self._table.live.sum())

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(self._table.known(_check_ids(ids)))
        with self._lock.write():
            hit = ids[self._table.live[ids]]
            self._table.live[hit] = False
            self._n_live -= hit.size
        return int(hit.size)

    def query(
        self, vector: np.ndarray, k: int, *, ef: int | None = None, exclude: object = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k``; ``ef`` is accepted for interface parity and ignored."""
        q = _check_query(vector, self.dim)
        excluded = _exclude_array(exclude)
        with self._lock.read():
            ids = np.flatnonzero(self._table.live)
            scores = self._table.vectors[ids] @ q
        if excluded.size:
            keep = ~np.isin(ids, excluded)
            ids, scores = ids[keep], scores[keep]
        return _top_k(ids.astype(np.int64), scores, max(0, k))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            used = self._table.used()
            np.save(path / "vectors.npy", self._table.vectors[:used])
            np.save(path / "live.npy", self._table.live[:used])
        meta = {"kind": "brute_force", "format_version": FORMAT_VERSION, "dim": self.dim}
        (path / "meta.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> BruteForceRetriever:
        path = Path(path)
        meta = _read_meta(path, "brute_force")
        r = cls(int(meta["dim"]))
        vectors = np.load(path / "vectors.npy")
        live = np.load(path / "live.npy")
        r._table.ensure(max(0, live.size - 1))
        r._table.vectors[: live.size] = vectors
        r._table.live[: live.size] = live
        r._n_live = int(live.sum())
        return r


class HNSWRetriever(_ExactVectors):
    """Approximate MIPS with an hnswlib graph in the ``'ip'`` space (see the module doc).

    Hyperparameters: ``M`` and ``ef_construction`` shape the graph; ``ef`` is the default
    search breadth (hnswlib uses ``max(ef, k)``: raise it for recall at large ``k``, e.g. 800
    for ``k=500``); ``num_threads`` is used by builds and ``add_items`` (a query always runs
    single-threaded in its caller's thread); ``capacity`` is the initial number of graph slots
    and ``growth`` the resize factor; ``write_batch`` bounds how many vectors one write adds
    while queries wait, and ``write_slice_s`` how long (the next slice is sized from the last
    one's cost per vector); ``seed`` seeds the graph's level generator (a build is reproducible
    only with ``num_threads=1``); ``space`` is the graph's MIPS space, ``'ip'`` or ``'l2'``
    (see the module doc).
    """

    def __init__(
        self,
        dim: int,
        *,
        M: int = 16,
        ef_construction: int = 100,
        ef: int = 200,
        num_threads: int = 1,
        capacity: int = 1024,
        growth: float = 1.5,
        write_batch: int = 1024,
        write_slice_s: float = 0.004,
        seed: int = 0,
        space: str = "ip",
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        if write_slice_s <= 0:
            raise ValueError(f"write_slice_s must be > 0, got {write_slice_s}")
        if growth <= 1.0:
            raise ValueError(f"growth must be > 1, got {growth}")
        if ef < 1 or M < 2 or ef_construction < 1 or num_threads < 1 or write_batch < 1:
            raise ValueError("need M >= 2 and ef, ef_construction, num_threads, write_batch >= 1")
        self.dim = dim
        self.M = M
        self.ef_construction = ef_construction
        self.ef = ef
        self.num_threads = num_threads
        self.capacity = capacity
        self.growth = growth
        self.write_batch = write_batch
        self.write_slice_s = write_slice_s
        self._per_write_s = 0.0  # seconds per vector of the last slice written (sizes the next)
        self.seed = seed
        self.space = space

        self._table = _VectorTable(dim)
        self._lock = _ReadWriteLock()
        self._writer = threading.Lock()
        self._index: hnswlib.Index | None = None
        self._in_graph = np.zeros(0, dtype=bool)  # has a slot; masked there when not live
        self._n_live = 0
        self._exact_fallbacks = 0
        self._rebuilds = 0
        # space "l2": the reduction's squared radius (0 until a first write), and the
        # searchable ids whose stored vector is longer, which every query scores exactly
        self._radius2 = 0.0
        self._overflow = np.zeros(0, dtype=np.int64)

    # -- introspection -------------------------------------------------------------------

    def clone(self) -> HNSWRetriever:
        return HNSWRetriever(self.dim, **self._params())

    def _params(self) -> dict:
        names = ["M", "ef_construction", "ef", "num_threads", "capacity", "growth"]
        more = ["write_batch", "write_slice_s", "seed", "space"]
        return {n: getattr(self, n) for n in [*names, *more]}

    def __len__(self) -> int:
        return self._n_live

    @property
    def stats(self) -> dict[str, int]:
        """Searchable ids, graph slots and elements, rebuilds and exact fallbacks so far,
        and (space ``'l2'``) the ids scored exactly for being longer than the radius."""
        index = self._index
        return {
            "searchable": self._n_live,
            "graph_slots": 0 if index is None else index.get_max_elements(),
            "graph_elements": 0 if index is None else index.get_current_count(),
            "rebuilds": self._rebuilds,
            "exact_fallbacks": self._exact_fallbacks,
            "beyond_radius": int(self._overflow.size),
        }

    # -- the space ------------------------------------------------------------------------

    def _graph_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """What the graph holds for ``vectors``: themselves (``'ip'``), or with the
        reduction's last coordinate (``'l2'``; zero for one longer than the radius)."""
        if self.space == "ip":
            return vectors
        n2 = np.einsum("ij,ij->i", vectors, vectors)
        extra = np.sqrt(np.maximum(self._radius2 - n2, 0.0)).astype(np.float32)
        return np.hstack([vectors, extra[:, None]])

    def _graph_query(self, q: np.ndarray) -> np.ndarray:
        return q if self.space == "ip" else np.append(q, np.float32(0.0))

    def _note_lengths(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Space ``'l2'``: after ``vectors`` were stored for searchable ``ids`` (unique),
        keep the set of ids longer than the radius current (under the write lock)."""
        if self.space == "ip" or not ids.size:
            return
        n2 = np.einsum("ij,ij->i", vectors, vectors)
        beyond = ids[n2 > self._radius2]
        if beyond.size or self._overflow.size:
            kept = self._overflow[~np.isin(self._overflow, ids)]
            self._overflow = np.union1d(kept, beyond).astype(np.int64)

    def _overflow_limit(self) -> int:
        """Ids beyond the radius a write tolerates before it rebuilds the graph with a new
        one: each costs every query a dot product."""
        return max(1024, self._n_live // 256)

    # -- writes --------------------------------------------------------------------------

    def _grow_in_graph(self) -> None:
        if self._in_graph.size < self._table.live.size:
            new = np.zeros(self._table.live.size, dtype=bool)
            new[: self._in_graph.size] = self._in_graph
            self._in_graph = new

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = _check_batch(ids, vectors, self.dim)
        if not ids.size:
            return
        with self._writer:
            self._upsert_locked(ids, vectors)
            self._rebuild_if_beyond_radius()

    def _rebuild_if_beyond_radius(self) -> None:
        """Space ``'l2'``: a new graph and radius once too many vectors outgrew the radius
        (holds ``_writer``). The model's vectors grow while it is young and small, so this
        happens a few times early and rarely once the index is large."""
        if self._overflow.size > self._overflow_limit():
            logger.info("%d vectors are longer than the L2 graph's radius: rebuilding",
                        self._overflow.size)  # fmt: skip
            self._rebuild()

    def _upsert_locked(
        self, ids: np.ndarray, vectors: np.ndarray, budget_s: float | None = None
    ) -> int:
        """Write ``ids`` in slices; with ``budget_s``, stop once it is spent. Returns how
        many were written (the first ones).

        Without a budget, a write larger than the graph builds a fresh graph beside the
        serving one (all of ``num_threads``, as long as it takes). With one, it never does:
        a budgeted refresh bringing more items than a young index held rebuilt the graph on
        both cores of a 2-core service for seconds, and every list slowed down meanwhile.
        """
        if budget_s is None and (
            self._index is None or ids.size > max(self._n_live, self.write_batch)
        ):
            self._rebuild(ids, vectors)
            return int(ids.size)
        if self._index is None:
            index = self._new_graph(self.capacity)
            with self._lock.write():
                self._radius2 = self._radius2_for(vectors)
                self._index = index
                self._lock.forget_ef()
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        start = 0
        while start < ids.size:
            if deadline is not None and time.perf_counter() >= deadline:
                return start
            size = min(self.write_batch, 32)  # until a slice has been timed
            if self._per_write_s > 0:
                size = max(1, min(self.write_batch, int(self.write_slice_s / self._per_write_s)))
            stop = min(ids.size, start + size)
            began = time.perf_counter()
            self._upsert_slice(ids[start:stop], vectors[start:stop])
            self._per_write_s = (time.perf_counter() - began) / (stop - start)
            start = stop
            if start < ids.size:
                self._lock.yield_to_readers()
        return int(ids.size)

    def refresh(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        tolerance: float = 0.0,
        budget_s: float | None = None,
    ) -> int:
        """Upsert vectors that moved, re-linking in the graph only those that moved far.

        The exact vectors (used to score every answer) take all of ``vectors``; the graph,
        which only steers the search, re-links an id when its vector is new, removed, or moved
        by more than ``tolerance`` relative to the vector it was linked with (L2). Updating a
        linked point is hnswlib's most expensive write, and learned item vectors drift a little
        on every update, so a small tolerance (a few percent) keeps index refreshes cheap
        without a measurable loss of recall. ``tolerance=0`` is :meth:`upsert`. Returns how many
        ids were re-linked.

        ``budget_s`` bounds the time spent re-linking: ids are re-linked farthest-moved first,
        and those the budget leaves out get their exact vectors only, keeping their old links
        until a later refresh (which still sees them as moved from the linked vector) reaches
        them. New ids go first, and those the budget leaves out are not searchable yet (a
        caller queues them again: they are the ids :meth:`stored` still reports as not
        live). A learner linking every new and moved item as it came spent most of a core
        on it at a million items, beside the requests it serves.
        """
        ids, vectors = _check_batch(ids, vectors, self.dim)
        if not ids.size:
            return 0
        with self._writer:
            index = self._index
            shift = np.full(ids.size, np.inf)  # how far each moved from its linked vector
            linked = np.zeros(ids.size, dtype=bool)
            if index is not None:
                inside = ids < self._in_graph.size
                linked[inside] = self._in_graph[ids[inside]] & self._table.live[ids[inside]]
            relink = ~linked
            if linked.any() and tolerance <= 0:
                relink[linked] = True  # every id, new ones first
                shift[linked] = 0.0
            elif linked.any() and index is not None:
                # only writers change the graph and this one holds `_writer`
                old = index.get_items(ids[linked], return_type="numpy").astype(np.float32)
                old = old[:, : self.dim]  # space "l2": without the reduction's coordinate
                moved = np.linalg.norm(vectors[linked] - old, axis=1)
                scale = np.maximum(np.linalg.norm(old, axis=1), 1e-12)
                shift[linked] = moved / scale
                relink[linked] = shift[linked] > tolerance
            near = ~relink
            if near.any():
                with self._lock.write():
                    self._table.vectors[ids[near]] = vectors[near]
                    self._note_lengths(ids[near], vectors[near])
            order = np.flatnonzero(relink)
            order = order[np.argsort(-shift[order], kind="stable")]  # new ids (inf) first
            done = 0
            if order.size:
                self._lock.yield_to_readers()
                done = self._upsert_locked(ids[order], vectors[order], budget_s)
                rest = order[done:]
                rest = rest[self._table.lookup(ids[rest])[1]]  # searchable; new ones wait
                if rest.size:  # over budget: exact vectors now, links later
                    with self._lock.write():
                        self._table.vectors[ids[rest]] = vectors[rest]
                        self._note_lengths(ids[rest], vectors[rest])
            self._rebuild_if_beyond_radius()
            return done

    def _upsert_slice(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        index = self._index
        assert index is not None
        with self._lock.write():
            self._table.ensure(int(ids.max()))
            self._grow_in_graph()
            new = int((~self._in_graph[ids]).sum())
            needed = index.get_current_count() + new
            if needed > index.get_max_elements():
                index.resize_index(max(needed, int(index.get_max_elements() * self.growth)))
            # a known label is updated in place; a masked (removed) one is also unmarked
            index.add_items(self._graph_vectors(vectors), ids, num_threads=self.num_threads)
            self._in_graph[ids] = True
            self._table.vectors[ids] = vectors
            self._note_lengths(ids, vectors)
            # counted, not summed: a sum over millions of ids would cost more than a small slice
            self._n_live += int(np.count_nonzero(~self._table.live[ids]))  # ids are unique
            self._table.live[ids] = True

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(self._table.known(_check_ids(ids)))
        with self._writer, self._lock.write():
            hit = ids[self._table.live[ids]]
            if self._index is not None:
                for label in hit.tolist():
                    self._index.mark_deleted(label)
            self._table.live[hit] = False
            self._n_live -= hit.size
            if self._overflow.size and hit.size:
                self._overflow = self._overflow[~np.isin(self._overflow, hit)]
        return int(hit.size)

    def rebuild(self) -> None:
        """Build a fresh graph over the searchable vectors (removed ids compacted away)."""
        with self._writer:
            self._rebuild()

    def _radius2_for(self, vectors: np.ndarray) -> float:
        """Space ``'l2'``: the squared radius for a graph built over ``vectors``."""
        if self.space == "ip" or not len(vectors):
            return 0.0
        longest = float(np.einsum("ij,ij->i", vectors, vectors).max())
        return _RADIUS_HEADROOM**2 * (longest if longest > 0 else 1.0)

    def _new_graph(self, slots: int) -> hnswlib.Index:
        """An empty graph of ``slots`` slots with this retriever's parameters."""
        index = hnswlib.Index(space=self.space, dim=self.dim + (self.space == "l2"))
        index.init_index(
            max_elements=max(slots, 1),
            M=self.M,
            ef_construction=self.ef_construction,
            random_seed=self.seed,
        )
        index.set_num_threads(self.num_threads)
        index.set_ef(self.ef)
        return index

    def _rebuild(
        self, new_ids: np.ndarray | None = None, new_vectors: np.ndarray | None = None
    ) -> None:
        """Build off-lock from the table plus ``new_*``, then swap in (holds ``_writer``).

        Only writers change the table and this one holds ``_writer``, so reading it here
        without the readers-writer lock is safe; queries keep using the old graph meanwhile.
        """
        ids = np.flatnonzero(self._table.live).astype(np.int64)
        vectors = self._table.vectors[ids]
        if new_ids is not None and new_vectors is not None:
            keep = ~np.isin(ids, new_ids)
            ids = np.concatenate([ids[keep], new_ids])
            vectors = np.concatenate([vectors[keep], new_vectors])
        began = time.perf_counter()
        index = self._new_graph(max(self.capacity, int(ids.size * self.growth)))
        old_radius2, self._radius2 = self._radius2, self._radius2_for(vectors)
        try:
            for start in range(0, ids.size, 65_536):
                stop = start + 65_536
                index.add_items(self._graph_vectors(vectors[start:stop]), ids[start:stop],
                                num_threads=self.num_threads)  # fmt: skip
        except BaseException:
            self._radius2 = old_radius2  # the serving graph stays, with its radius
            raise
        logger.info(
            "HNSW graph rebuilt: %d vectors in %.1f s on %d threads",
            ids.size,
            time.perf_counter() - began,
            self.num_threads,
        )
        with self._lock.write():
            if new_ids is not None and new_vectors is not None:
                self._table.ensure(int(new_ids.max()))
                self._table.vectors[new_ids] = new_vectors
                self._table.live[new_ids] = True
            self._grow_in_graph()
            self._in_graph[:] = False
            self._in_graph[ids] = True
            self._index = index
            self._n_live = int(self._table.live.sum())
            self._overflow = np.zeros(0, dtype=np.int64)  # the radius fits every vector
            self._lock.forget_ef()
            self._rebuilds += 1

    # -- reads ---------------------------------------------------------------------------

    def query(
        self, vector: np.ndarray, k: int, *, ef: int | None = None, exclude: object = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` ``(ids, exact inner products)``, best first, never an excluded id.

        ``ef`` overrides the constructor's search breadth for this query.
        """
        q = _check_query(vector, self.dim)
        excluded = _exclude_array(exclude)
        k = max(0, int(k))
        ef = self.ef if ef is None else int(ef)
        if ef < 1:
            raise ValueError(f"ef must be >= 1, got {ef}")
        with self._lock.read(ef, self._set_ef):
            index = self._index
            fetch = min(k + excluded.size, self._n_live)
            labels = np.zeros(0, dtype=np.int64)
            if index is not None and fetch > 0:
                gq = self._graph_query(q)
                try:
                    found, _ = index.knn_query(gq[None, :], k=fetch, num_threads=1)
                    labels = found[0].astype(np.int64)
                except RuntimeError:
                    # hnswlib reached fewer than `fetch` unmasked elements
                    self._exact_fallbacks += 1
                    labels = self._short_answer(index, gq, fetch)
                if self._overflow.size:  # longer than the L2 radius: scored exactly
                    labels = np.union1d(labels, self._overflow)
            scores = self._table.vectors[labels] @ q
        if excluded.size:
            keep = ~np.isin(labels, excluded)
            labels, scores = labels[keep], scores[keep]
        return _top_k(labels, scores, k)

    def _short_answer(self, index: hnswlib.Index, gq: np.ndarray, fetch: int) -> np.ndarray:
        """The labels to score when the graph reached fewer than ``fetch`` elements: every
        searchable one while that is cheap, else as many as the graph can reach (halving
        the request until hnswlib answers). Scoring every vector of a large index took
        20-40 ms per query at 100k items, and a graph that cannot reach ``fetch`` items from
        one query usually cannot from the next either."""
        if self._n_live <= _EXACT_ANSWER_MAX:
            return np.flatnonzero(self._table.live).astype(np.int64)
        k = fetch // 2
        while k >= 1:
            try:
                found, _ = index.knn_query(gq[None, :], k=k, num_threads=1)
                return found[0].astype(np.int64)
            except RuntimeError:
                k //= 2
        return np.zeros(0, dtype=np.int64)

    def _set_ef(self, ef: int) -> None:
        if self._index is not None:
            self._index.set_ef(ef)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write ``vectors.npy``, ``masks.npz``, the graph and ``meta.json`` into ``path``.

        The graph is hnswlib's own state as plain arrays (``graph_<name>.npy``, its scalars
        under ``meta.json``'s ``graph``): loading them is a copy, about four times faster
        than ``load_index`` on a million items, which re-reads the file element by element.
        Queries continue while saving (it only reads the graph); writes wait.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self._writer:
            used = self._table.used()
            graph: dict[str, object] | None = None
            if self._index is not None:
                graph = {}
                for name, value in self._index.__getstate__()[0].items():
                    if isinstance(value, np.ndarray):
                        np.save(path / f"graph_{name}.npy", value)
                        graph[name] = None  # an array, in its own file
                    else:
                        graph[name] = value
            np.save(path / "vectors.npy", self._table.vectors[:used])
            np.savez(
                path / "masks.npz", live=self._table.live[:used], in_graph=self._in_graph[:used]
            )
            meta = {
                "kind": "hnsw",
                "format_version": FORMAT_VERSION,
                "dim": self.dim,
                "params": self._params(),
                "graph_slots": 0 if self._index is None else self._index.get_max_elements(),
                "graph": graph,
                "radius2": self._radius2,
            }
        (path / "meta.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path, **overrides: object) -> HNSWRetriever:
        """Read a retriever from ``path``; ``overrides`` replace saved hyperparameters
        (``ef``, ``num_threads``, ...). A ``space`` other than the saved one rebuilds the
        graph in that space from the saved vectors (an index saved before spaces existed is
        in ``'ip'``)."""
        path = Path(path)
        meta = _read_meta(path, "hnsw")
        params = {**meta["params"], **overrides}
        saved_space = str(meta["params"].get("space", "ip"))
        r = cls(int(meta["dim"]), **{**params, "space": saved_space})
        vectors = np.load(path / "vectors.npy")
        with np.load(path / "masks.npz") as masks:
            live, in_graph = masks["live"], masks["in_graph"]
        if vectors.shape != (live.size, r.dim):
            raise RetrieverFormatError(f"{path}: vectors of shape {vectors.shape}, dim {r.dim}")
        if live.size >= 1024 and vectors.dtype == np.float32 and vectors.flags.writeable:
            # exactly the table ensure() would allocate: adopt the arrays just read rather
            # than copy them into fresh memory (a million rows: ~0.1 s of page faults)
            r._table.vectors, r._table.live = np.ascontiguousarray(vectors), live.copy()
        else:
            r._table.ensure(max(0, live.size - 1))
            r._table.vectors[: live.size] = vectors
            r._table.live[: live.size] = live
        r._grow_in_graph()
        r._in_graph[: live.size] = in_graph
        index = None
        graph = meta.get("graph")
        if graph is not None:
            # hnswlib's pickle state, the arrays memory-mapped: set_state copies them once
            state = {
                name: (np.load(path / f"graph_{name}.npy", mmap_mode="r") if v is None else v)
                for name, v in graph.items()
            }
            if state.get("dim") != r.dim + (r.space == "l2") or state.get("space") != r.space:
                raise RetrieverFormatError(
                    f"{path}: the graph does not match dim {r.dim}, space {r.space!r}"
                )
            index = hnswlib.Index.__new__(hnswlib.Index)
            index.__setstate__((state,))
            del state
        elif (path / "hnsw.bin").exists():  # written by segue before the array format
            index = hnswlib.Index(space="ip", dim=r.dim)
            index.load_index(str(path / "hnsw.bin"), max_elements=int(meta["graph_slots"]))
        if index is not None:
            index.set_num_threads(r.num_threads)
            index.set_ef(r.ef)
            r._index = index
        r._n_live = int(r._table.live.sum())
        r._radius2 = float(meta.get("radius2", 0.0))
        if r.space == "l2":  # in parts: a copy of every live vector at once is gigabytes
            for start in range(0, live.size, 65_536):
                rows = start + np.flatnonzero(r._table.live[start : start + 65_536])
                r._note_lengths(rows.astype(np.int64), r._table.vectors[rows])
        wanted = str(params.get("space", saved_space))
        if wanted != r.space:
            if wanted not in SPACES:
                raise ValueError(f"space must be one of {SPACES}, got {wanted!r}")
            logger.info("HNSW graph saved in space %r, wanted in %r: rebuilding", r.space, wanted)
            r.space = wanted
            r._overflow = np.zeros(0, dtype=np.int64)
            if r._index is not None:
                with r._writer:
                    r._rebuild()
        return r
