"""The engine: one object that makes lists and learns from what happened to them.

The service, the learner and every simulation drive this same object, so what a researcher
measures offline is what ships. A list is made in three stages (each its own method, so the
serving path can time and guard them one by one):

1. :meth:`Engine.candidates` - a few hundred items from five channels: ANN over learned item
   vectors with the listener's vector, ANN over content embeddings with the session vector,
   items that followed the listener's last plays (co-visitation), trending, and fresh items;
   minus unavailable, excluded and just-played ones.
2. :meth:`Engine.score` - the River relevance model scores every candidate; the best
   ``rerank_pool`` go on.
3. :meth:`Engine.rerank` - the VW bandit fills the ``k`` slots one by one (or, as the
   baseline, greedy by relevance), respecting the per-artist limit; every placed item has its
   propensity, and the whole decision goes to the decision log for the reward join.

:meth:`Engine.learn` is the learning path: events in log order go through the reward join;
relevance samples train the River model, impressed slots train the bandit, each weighted by
``0.5 ** (age / half_life)`` against the event-time watermark; popularity, exposure,
co-visitation and sessions update alongside; the ANN index follows the moving item vectors
(:meth:`Engine.refresh_index`).

Concurrency: VW and hnswlib are not thread-safe, so every method that reads or writes model
state holds ``self.lock`` (an ``RLock`` that times each thread's waits for it,
:class:`online._gil.TimedRLock`). The learner holds it for small chunks of events, so a
request waits at most one chunk. The ANN indexes have their own readers-writer locks: a
request searches them, and the learner re-links moved vectors, outside ``self.lock``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from feedback.attribution import DecisionOutcome, JoinOutput, RewardJoiner
from feedback.decisions import DecisionLog, InMemoryDecisionLog
from feedback.events import Context, Decision, Event, SlateEntry
from feedback.rewards import RewardFunction
from online._duplicates import DuplicateCap
from online._gil import TimedRLock, write_parts, yielding
from online.bandit import BanditReranker, CandidateColumns
from online.catalog import Catalog, CatalogView
from online.decay import decay_weight
from online.items import Item
from online.quality import ProgressiveQuality
from online.recommendation import Recommendation, RecommendedItem
from online.redis_sessions import RedisSessions
from online.relevance import RelevanceModel
from online.retrieval import HNSWRetriever
from online.settings import EngineSettings, LearnerSettings
from online.state import Exposure, Popularity, Sessions, Transitions
from snapshots._fs import fsync_dir, fsync_tree, remove_tree, try_lock

__all__ = [
    "CandidatePool",
    "ChannelOffers",
    "ContentIndex",
    "Engine",
    "LearnReport",
    "ScoredPool",
    "as_recommendation",
]

_FORMAT = "segue.engine/1"
logger = logging.getLogger("segue.engine")
_DAY = 86_400.0
CHANNELS = ("cf", "content", "covisit", "trending", "fresh")
# A learned item vector that moved less than this (relative L2) since it was linked into the
# HNSW graph gets its exact vector updated (scores stay exact) but keeps its graph links:
# re-linking is hnswlib's most expensive write (see HNSWRetriever.refresh).
_RELINK_TOLERANCE = 0.2


@dataclass(frozen=True, slots=True, eq=False)
class ChannelOffers:
    """Which channels offered which candidates, kept as catalog rows until asked for.

    ``rows`` holds each offered row once, in the order first offered, and ``first`` the
    index in ``labels`` of the channel that offered it first; ``again_rows`` and ``again``
    list the later offers of rows already offered. ``ids`` is the catalog view's id column
    (rows never change their id), read only by :meth:`channels`: a list never needs it, so
    no id is converted per request.
    """

    labels: tuple[str, ...] = ()
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    first: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    again_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    again: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def channels(self) -> dict[str, set[str]]:
        """Per id, in first-offer order, the set of channels that offered it."""
        labels, ids = self.labels, self.ids
        out = {
            name: {labels[c]}
            for name, c in zip(ids[self.rows].tolist(), self.first.tolist(), strict=True)
        }
        for name, c in zip(ids[self.again_rows].tolist(), self.again.tolist(), strict=True):
            out[name].add(labels[c])
        return out


def _ranking_items(catalog: Catalog, ids: list[str]) -> list[Item]:
    """The items at ``ids`` as ranking reads them (no embedding or attributes), those the
    catalog knows."""
    return [i for i in catalog.get_many(ids, content=False) if i is not None]


@dataclass(slots=True)
class CandidatePool:
    """Stage 1's output: the candidates, as catalog rows, and the channels that proposed each.

    The ranking stages read the catalog's columns at ``rows``; :attr:`items` (the
    candidates as :class:`Item` objects) is built on first use, as is :attr:`channels`
    (every offered id, including one dropped as not released yet, with the channels that
    offered it) from ``offers``. Serving a list reads neither: an object per candidate cost
    about a sixth of a list's CPU at a million items.
    """

    user_id: str
    context: Context
    now: float
    catalog: Catalog = field(repr=False)
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Dense catalog indexes of the candidates, in first-offer order."""
    id_column: np.ndarray | None = field(default=None, repr=False)
    """The item id column of the catalog view the rows index (``None``: the catalog's
    current one); :attr:`ids` reads it at ``rows``."""
    offers: ChannelOffers = field(default_factory=ChannelOffers)
    exclude: frozenset[str] = frozenset()
    history: int | None = None  # the listener's session length when the pool was made
    _channels: dict[str, set[str]] | None = field(default=None, init=False, repr=False)
    _items: list[Item] | None = field(default=None, init=False, repr=False)
    _ids: list[str] | None = field(default=None, init=False, repr=False)

    @property
    def ids(self) -> list[str]:
        """The candidates' item ids (``ids[n]`` is the item at ``rows[n]``), built on first
        use: the ranking stages need the ids of the hundred they keep, not of all several
        hundred candidates (each id string touched in a million-item catalog is likely a
        cache miss)."""
        if self._ids is None:
            self._ids = self.ids_at(self.rows)
        return self._ids

    def ids_at(self, rows: np.ndarray) -> list[str]:
        """The item ids at catalog ``rows`` (rows of this pool's catalog view)."""
        column = self.id_column if self.id_column is not None else self.catalog.view().ids
        return column[rows].tolist()

    @property
    def items(self) -> list[Item]:
        """The candidates as items (without embeddings or attributes), as the catalog has
        them now."""
        if self._items is None:
            self._items = _ranking_items(self.catalog, self.ids)
        return self._items

    @property
    def channels(self) -> dict[str, set[str]]:
        """Per offered id, in first-offer order, the channels that offered it."""
        if self._channels is None:
            self._channels = self.offers.channels()
        return self._channels

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(CHANNELS, 0)
        for names in self.channels.values():
            for name in names:
                out[name] += 1
        return out


@dataclass(slots=True)
class ScoredPool:
    """Stage 2's output: the best candidates with their relevance, best first (as catalog
    ``rows`` and ``ids``; :attr:`items` is built on first use)."""

    pool: CandidatePool
    rows: np.ndarray
    ids: list[str]
    relevance: np.ndarray
    vectors: np.ndarray | None = None
    """The relevance model's item vectors of the candidates as scored (None: not kept)."""
    artists_read: list[str] | None = field(default=None, repr=False)
    """The artists at ``rows`` when the scoring stage read them already (``None``:
    :attr:`artists` reads them on first use)."""
    _items: list[Item] | None = field(default=None, init=False, repr=False)

    @property
    def items(self) -> list[Item]:
        if self._items is None:
            self._items = _ranking_items(self.pool.catalog, self.ids)
        return self._items

    @property
    def artists(self) -> list[str]:
        """The artist of each candidate, in order (``""`` when unknown)."""
        if self.artists_read is None:
            self.artists_read = self.pool.catalog.artists_at(self.rows.tolist())
        return self.artists_read


@dataclass(slots=True)
class LearnReport:
    """What one :meth:`Engine.learn` call did."""

    events: int = 0
    relevance_samples: int = 0
    bandit_samples: int = 0
    offset: int = 0


def as_recommendation(
    decision: Decision, *, fallback: str | None = None, took_ms: float = 0.0
) -> Recommendation:
    """The client's view of a decision."""
    return Recommendation(
        request_id=decision.request_id,
        model_version=decision.model_version,
        items=tuple(
            RecommendedItem(e.item_id, e.score, e.propensity, e.explored) for e in decision.slate
        ),
        fallback=fallback,
        took_ms=took_ms,
    )


_REFRESH_PART = 250  # items per piece of an index refresh's vector pass (a few ms each)


def _merge_offers(
    view: CatalogView, offers: Sequence[tuple[str, np.ndarray]], banned: np.ndarray
) -> tuple[np.ndarray, ChannelOffers]:
    """The candidate rows the channels offered, each once, in the order first offered.

    ``offers`` is ``(channel, dense indexes)`` per channel; unknown (negative or past the
    view), unavailable and ``banned`` rows are dropped. Returns the rows and which channels
    offered their ids. Filtering and de-duplication run on the index arrays (a few hundred
    rows per list).
    """
    available = view.available_mask
    kept: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    for number, (_, idx) in enumerate(offers):
        idx = np.asarray(idx, dtype=np.int64)
        idx = idx[(idx >= 0) & (idx < len(available))]
        idx = idx[available[idx]]
        kept.append(idx)
        codes.append(np.full(len(idx), number, dtype=np.int64))
    labels = tuple(channel for channel, _ in offers)
    if not kept:
        return np.zeros(0, dtype=np.int64), ChannelOffers(labels)
    rows, code = np.concatenate(kept), np.concatenate(codes)
    if banned.size:
        keep = ~np.isin(rows, banned)
        rows, code = rows[keep], code[keep]
    first = np.zeros(len(rows), dtype=bool)
    first[np.unique(rows, return_index=True)[1]] = True
    head = np.flatnonzero(first)  # first offers, in offer order
    again = np.flatnonzero(~first)
    out = rows[head]
    return out, ChannelOffers(labels, out, code[head], rows[again], code[again], view.ids)


class ContentIndex:
    """The HNSW index over the catalog's content embeddings, kept in step with the catalog.

    It is derived from the catalog, not learned, so engines share it (a rollback loads a new
    engine in milliseconds instead of re-indexing millions of vectors) and snapshots leave it
    out. :meth:`sync` brings in new, changed, withdrawn and returned items; it runs off the
    request path (at start-up and after each learner cycle).
    """

    def __init__(
        self,
        dim: int,
        *,
        m: int = 16,
        ef: int = 200,
        seed: int = 0,
        threads: int = 2,
        enabled: bool = True,
    ) -> None:
        self.index = HNSWRetriever(dim, M=m, ef=ef, num_threads=threads, seed=seed)
        # disabled: stays empty (``segue learn`` serves no lists; at 8.2M items the index
        # would cost it a quarter of an hour and gigabytes for nothing)
        self.enabled = enabled
        self.version = -1
        self._live = np.zeros(0, dtype=bool)
        self._vectors: np.ndarray | None = None
        self.build_s = 0.0
        self.restored = False  # started from a saved copy (see open)
        # the learner's cycle and the service's catalog follower both sync; one at a time
        self._sync_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        catalog: Catalog,
        dim: int,
        cache: Path | None,
        *,
        m: int = 16,
        ef: int = 200,
        seed: int = 0,
        threads: int = 2,
    ) -> ContentIndex:
        """The content index of ``catalog``, started from the copy saved in ``cache``.

        Building the graph is most of a large service's start-up (about half an hour at 8.2M
        items on two cores); reading a saved one takes seconds. The saved copy is keyed by
        dense index, which the catalog never reassigns, and holds the exact vectors it was
        built from, so :meth:`sync` then applies exactly what changed since it was written
        (new, moved, withdrawn and returned items, rows past the end of a smaller catalog).
        A copy built with another graph degree or dimension, or one that cannot be read, is
        ignored. The index is saved back when it was built here or much of it changed.
        """
        index = cls(dim, m=m, ef=ef, seed=seed, threads=threads)
        loaded = cache is not None and index._restore(cache)
        written = index.sync(catalog)
        if cache is not None and (not loaded or written > max(1000, len(index.index) // 20)):
            index.save(cache)
        return index

    def _restore(self, cache: Path) -> bool:
        if not (cache / "meta.json").exists():  # nothing saved yet (meta.json goes last)
            return False
        started = time.perf_counter()
        try:
            saved = HNSWRetriever.load(cache, ef=self.index.ef, num_threads=self.index.num_threads)
        except Exception:  # a torn or foreign copy costs a build, never the start-up
            logger.warning("ignoring the saved content index in %s", cache, exc_info=True)
            return False
        if saved.dim != self.index.dim or saved.M != self.index.M:
            logger.warning(
                "ignoring the saved content index in %s: built with dim %d, M %d (now %d, %d)",
                cache, saved.dim, saved.M, self.index.dim, self.index.M,
            )  # fmt: skip
            return False
        used = saved._table.used()
        self.index = saved
        self.restored = True
        # what the saved graph holds stands for what the catalog held: sync diffs from it
        self._live = saved._table.live[:used].copy()
        self._vectors = saved._table.vectors[:used].copy()
        self.build_s += time.perf_counter() - started
        logger.info(
            "content index: %d items read from %s in %.1f s",
            len(saved), cache, time.perf_counter() - started,
        )  # fmt: skip
        return True

    def save(self, cache: Path) -> bool:
        """Write the index to ``cache``, replacing any copy there in one rename.

        Several service processes may start together: the one holding the lock writes, the
        others skip. A failure (a full disk) is logged; the service runs on without a copy.
        """
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd = try_lock(cache.parent / f".{cache.name}.lock")
        if fd is None:
            return False
        started = time.perf_counter()
        staging = cache.parent / f".{cache.name}.{uuid.uuid4().hex[:8]}.new"
        try:
            with self._sync_lock:
                self.index.save(staging)
            fsync_tree(staging)
            if cache.exists():
                remove_tree(cache, cache.parent / f".{cache.name}.trash")
            os.rename(staging, cache)
            fsync_dir(cache.parent)
        except OSError:
            logger.warning("could not save the content index to %s", cache, exc_info=True)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        finally:
            os.close(fd)
        logger.info(
            "content index: %d items saved to %s in %.1f s",
            len(self.index), cache, time.perf_counter() - started,
        )  # fmt: skip
        return True

    def sync(self, catalog: Catalog) -> int:
        """Apply what changed in ``catalog`` since the last call; returns the rows written."""
        with self._sync_lock:
            return self._sync(catalog)

    def _sync(self, catalog: Catalog) -> int:
        view = catalog.view()
        if not self.enabled or view.version == self.version or view.embeddings is None:
            return 0
        started = time.perf_counter()
        live = view.has_embedding & view.available_mask
        if len(self._live) > len(live):  # a restored copy of a larger catalog than this one
            self.index.remove(np.flatnonzero(self._live[len(live) :]) + len(live))
            self._live = self._live[: len(live)]
            if self._vectors is not None:
                self._vectors = self._vectors[: len(live)]
        n_old = len(self._live)
        changed = np.zeros(len(live), dtype=bool)
        changed[n_old:] = live[n_old:]
        if n_old:
            old_live = self._live
            changed[:n_old] = live[:n_old] & ~old_live
            if self._vectors is not None:
                moved = np.any(view.embeddings[:n_old] != self._vectors[:n_old], axis=1)
                changed[:n_old] |= moved & live[:n_old]
            gone = np.flatnonzero(old_live & ~live[:n_old])
            if len(gone):
                self.index.remove(gone.astype(np.int64))
        rows = np.flatnonzero(changed)
        if len(rows):
            self.index.upsert(rows.astype(np.int64), view.embeddings[rows])
        self._live = live
        self._vectors = view.embeddings
        self.version = view.version
        self.build_s += time.perf_counter() - started
        return len(rows)


class Engine:
    """Makes lists and learns; see the module docstring.

    ``catalog`` is shared with the service (items come and go while it runs);
    ``decisions`` is the decision log (in process by default, Redis in the distributed mode).
    """

    def __init__(
        self,
        catalog: Catalog,
        settings: EngineSettings | None = None,
        learner: LearnerSettings | None = None,
        *,
        decisions: DecisionLog | None = None,
        base_version: str = "v0",
        content_index: ContentIndex | None = None,
        sessions: RedisSessions | None = None,
    ) -> None:
        self.catalog = catalog
        self.settings = settings or EngineSettings()
        self.learner_settings = learner or LearnerSettings()
        s, ls = self.settings, self.learner_settings
        self.lock = TimedRLock()  # an RLock that times each thread's waits for it
        self._now = 0.0  # latest time seen (event time or request time): the engine's clock
        self.decisions: DecisionLog = decisions or InMemoryDecisionLog(
            ttl_s=ls.decision_ttl_s, max_entries=500_000, clock=lambda: self._now
        )
        self._rng = np.random.default_rng(s.seed)
        self._relevance = RelevanceModel(
            n_factors=s.n_factors,
            learning_rate=s.learning_rate,
            weight_learning_rate=s.weight_learning_rate,
            init_std=s.init_std,
            seed=s.seed,
        )
        self._bandit = BanditReranker(
            exploration=s.exploration,
            epsilon=s.epsilon,
            gamma_scale=s.gamma_scale,
            gamma_exponent=s.gamma_exponent,
            learning_rate=s.bandit_learning_rate,
            seed=s.seed,
        )
        self._popularity = Popularity(half_life_s=s.popularity_half_life_s)
        self._exposure = Exposure(half_life_s=s.exposure_half_life_s)
        # listener sessions: in the engine, or shared in Redis by every serving process
        self._sessions: Sessions | RedisSessions = (
            sessions if sessions is not None else Sessions(max_len=s.session_length)
        )
        self._transitions = Transitions()
        self._joiner = RewardJoiner(
            self.decisions,
            RewardFunction(min_play_ms=ls.min_play_ms),
            window_s=ls.attribution_window_s,
        )
        self._cf_index = self._new_index(self._relevance.dim)
        # set while a snapshot's CF index is still loading in the background (see load)
        self._cf_ready = threading.Event()
        self._cf_ready.set()
        if content_index is None and catalog.embedding_dim is not None:
            content_index = ContentIndex(
                catalog.embedding_dim,
                m=s.hnsw_m,
                ef=s.hnsw_ef,
                seed=s.seed,
                threads=s.index_threads,
            )
            content_index.sync(catalog)
        self.content_index = content_index
        self._fresh_cache: tuple[int, np.ndarray] | None = None
        self._trending_cache: tuple[tuple[str, ...], int, np.ndarray] | None = None
        self._fresh_pool: tuple[int, int, np.ndarray] | None = None
        self._dirty: OrderedDict[int, None] = OrderedDict()  # dense indexes to re-index
        self._sweep_at = 0
        # places in the CF index per identical vector: derived from the index, rebuilt from
        # it at the first refresh (also after a load), the learning thread's alone
        self._duplicates: DuplicateCap | None = None
        self._sweep_started = time.monotonic()
        self.last_sweep_s: float | None = None
        self.base_version = base_version
        self.offset = 0  # the last log offset learned
        self.events_learned = 0
        self.learned_since_base = 0
        # closed lists (DecisionOutcome) for the learner to store, only while one asks for them
        self.keep_outcomes = False
        self._outcomes: list[DecisionOutcome] = []
        self._reset_quality()

    def _reset_quality(self) -> None:
        # progressive validation since the last snapshot: every relevance sample is scored
        # before it is learned; the bandit's on-policy reward over impressed slots
        self._pv = ProgressiveQuality()
        self._bandit_reward = 0.0
        self._bandit_n = 0

    def quality(self, *, reset: bool = False) -> dict[str, float]:
        """Metrics since the last reset: the relevance model's progressive log loss and AUC,
        and the bandit's mean reward per impressed slot (the snapshot manifest's metrics)."""
        with self.lock:
            out: dict[str, float] = {}
            if self._pv.n:
                out["relevance_logloss"] = self._pv.logloss()
                out["relevance_auc"] = self._pv.auc()
                out["relevance_samples"] = float(self._pv.n)
            if self._bandit_n:
                out["bandit_reward"] = self._bandit_reward / self._bandit_n
                out["bandit_samples"] = float(self._bandit_n)
            if reset:
                self._reset_quality()
            return out

    def _new_index(self, dim: int) -> HNSWRetriever:
        s = self.settings
        return HNSWRetriever(
            dim,
            M=s.hnsw_m,
            ef=s.hnsw_ef,
            num_threads=s.index_threads,
            seed=s.seed,
            space=s.cf_index_space,
        )

    # -- introspection ----------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """The snapshot this state grew from, plus the events learned since: ``v12+340``."""
        return f"{self.base_version}+{self.learned_since_base}"

    @property
    def watermark(self) -> float | None:
        return self._joiner.watermark

    @property
    def relevance(self) -> RelevanceModel:
        return self._relevance

    @property
    def bandit(self) -> BanditReranker:
        return self._bandit

    @property
    def popularity(self) -> Popularity:
        return self._popularity

    @property
    def cf_index(self) -> HNSWRetriever:
        """The ANN index over learned item vectors, to read (benchmarks, diagnostics): the
        learner alone writes it, through :meth:`refresh_index`."""
        return self._cf_index

    @property
    def join_stats(self) -> dict[str, int]:
        return self._joiner.stats

    def index_lag(self) -> dict[str, float]:
        """How far the ANN indexes trail: moved items waiting, last full sweep, sizes."""
        content = self.content_index
        return {
            "dirty_items": float(len(self._dirty)),
            "last_sweep_s": float("nan") if self.last_sweep_s is None else self.last_sweep_s,
            "indexed_items": float(len(self._cf_index)),
            # CF queries the graph could not fill (answered exactly, or with fewer items)
            "short_queries": float(self._cf_index.stats["exact_fallbacks"]),
            # CF items longer than its L2 graph's radius, which every query scores exactly
            "beyond_radius": float(self._cf_index.stats["beyond_radius"]),
            "content_items": float(len(content.index)) if content is not None else 0.0,
            "content_catalog_lag": float(
                content is not None and content.version != self.catalog.version
            ),
        }

    def _time(self, now: float | None) -> float:
        t = time.time() if now is None else float(now)
        wm = self._joiner.watermark
        if wm is not None and wm > t:
            t = wm
        self._now = max(self._now, t)
        return t

    # -- stage 1: candidates ----------------------------------------------------------------

    def candidates(
        self,
        user_id: str,
        context: Context | None = None,
        *,
        exclude: Collection[str] = (),
        now: float | None = None,
    ) -> CandidatePool:
        """The candidate pool for a listener (see the module docstring)."""
        context = dict(context or {})
        s = self.settings
        cf_index: HNSWRetriever | None = None
        uv: np.ndarray | None = None
        nexts: list[str] = []
        top_rows: np.ndarray | None = None
        fresh: np.ndarray | None = None
        shared = self.shared_sessions
        # a Redis session is read before the lock: a network round trip must not hold it
        recent_shared = shared.recent(user_id) if shared is not None else None
        with self.lock:
            # only the model and counter reads hold the engine lock: the ANN searches below
            # run under each index's own readers-writer lock and hnswlib releases the GIL
            # while it searches, so the learner goes on meanwhile
            t = self._time(now)
            view = self.catalog.view()
            recent = recent_shared if recent_shared is not None else self._sessions.recent(user_id)
            banned = set(exclude)
            banned.update(item for item, _ in recent[-s.recent_exclude :] if s.recent_exclude)
            if s.cf_candidates and len(self._cf_index):
                cf_index = self._cf_index
                uv = self._relevance.user_vector(user_id, context)
            if s.covisit_candidates and recent:
                per_play = max(1, s.covisit_candidates // min(3, len(recent)))
                for item_id, _ in reversed(recent[-3:]):
                    nexts.extend(n for n, _ in self._transitions.next_items(item_id, per_play))
            if s.trending_candidates:
                n_top = s.trending_candidates + len(banned)
                top_rows = self._trending_rows(self._popularity.ranking(n_top, t), view)[:n_top]
            if s.fresh_candidates:
                fresh = self._fresh_sample(view, t, s.fresh_candidates)
        # each channel's dense indexes, in channel order (the pool keeps first-offer order)
        offers: list[tuple[str, np.ndarray]] = []
        if cf_index is not None and uv is not None:
            offers.append(("cf", cf_index.query(uv, s.cf_candidates + len(banned))[0]))
        if s.content_candidates and recent:
            sv = self._session_vector(recent, t, view)
            index = self.content_index.index if self.content_index is not None else None
            if sv is not None and index is not None and len(index):
                offers.append(("content", index.query(sv, s.content_candidates + len(banned))[0]))
        if nexts:
            offers.append(("covisit", self.catalog.indexes_of(nexts)))
        if top_rows is not None and len(top_rows):
            offers.append(("trending", top_rows))
        if fresh is not None:
            offers.append(("fresh", fresh))
        rows, offered = _merge_offers(view, offers, self.catalog.indexes_of(banned))
        # an item not released yet is never served (catalogs announce releases ahead)
        keep = ~(view.release_times[rows] > t)  # NaN (unknown release) is kept
        rows = rows[keep]
        return CandidatePool(
            user_id=user_id,
            context=context,
            now=t,
            catalog=self.catalog,
            rows=rows,
            id_column=view.ids,
            offers=offered,
            exclude=frozenset(banned),
            history=len(recent),
        )

    def _session_vector(self, recent: Sequence[tuple[str, float]], now: float, view: Any) -> Any:
        """Decayed mean of the content embeddings of the listener's recent plays.

        Weights are relative to the newest play (a mean does not change when every weight is
        scaled), so a listener back after weeks still gets their session's direction instead
        of 0/0; the sum is kept in float64.
        """
        if view.embeddings is None or not recent:
            return None
        newest = max(t for _, t in recent)
        acc = np.zeros(view.embeddings.shape[1], dtype=np.float64)
        total = 0.0
        for item_id, t in recent:
            try:
                i = self.catalog.index_of(item_id)
            except KeyError:
                continue
            if i >= len(view.has_embedding) or not view.has_embedding[i]:
                continue
            w = 0.5 ** ((newest - t) / self.settings.session_half_life_s)
            acc += view.embeddings[i] * w
            total += w
        if total <= 0:
            return None
        return (acc / total).astype(np.float32)

    def _trending_rows(self, ranking: tuple[str, ...], view: Any) -> np.ndarray:
        """Catalog rows of the popularity ranking's ids (-1 for ids the catalog lacks),
        mapped once per ranking and catalog version instead of on every list."""
        cached = self._trending_cache
        if cached is None or cached[0] is not ranking or cached[1] != view.version:
            rows = self.catalog.indexes_of(ranking)
            cached = self._trending_cache = (ranking, view.version, rows)
        return cached[2]

    def _fresh_sample(self, view: Any, now: float, n: int) -> np.ndarray:
        if self._fresh_cache is None or self._fresh_cache[0] != view.version:
            rt = np.nan_to_num(view.release_times, nan=-np.inf)
            self._fresh_cache = (view.version, np.argsort(-rt, kind="stable"))
        order = self._fresh_cache[1]
        rt = view.release_times
        cutoff = now - self.settings.fresh_days * _DAY
        # the newest items come first in `order`; count those inside the window
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            value = rt[order[mid]]
            if not math.isnan(value) and value >= cutoff:
                lo = mid + 1
            else:
                hi = mid
        # the available ones among them, kept while neither the catalog nor the window's
        # edge moves (filtering some 20k rows per request showed in profiles)
        cached = self._fresh_pool
        if cached is not None and cached[0] == view.version and cached[1] == lo:
            pool = cached[2]
        else:
            pool = order[:lo]
            pool = pool[view.available_mask[pool]]
            self._fresh_pool = (view.version, lo, pool)
        if len(pool) <= n:
            return pool
        return self._rng.choice(pool, size=n, replace=False)

    # -- stage 2: relevance -----------------------------------------------------------------

    def score(self, pool: CandidatePool, k: int | None = None) -> ScoredPool:
        """Score every candidate with the relevance model; keep the best ``rerank_pool``.

        With ``k`` (the list size), the pool is widened past ``rerank_pool`` when it could not
        fill ``k`` slots under ``max_per_artist``: learned item vectors put an artist's tracks
        together, so the best hundred candidates may come from a handful of artists, which
        left lists of about ten items where thirty were asked for. The next best candidates of
        artists still below the cap are added until ``k`` can be placed.
        """
        if not len(pool.rows):
            return ScoredPool(pool, pool.rows, [], np.zeros(0))
        catalog = pool.catalog
        revisions = catalog.revisions_at(pool.rows)
        with self.lock:
            # by catalog row and revision: an item's columns are read only when its
            # features are not cached
            scores, vectors = self._relevance.predict_at_with_vectors(
                pool.user_id, pool.context, pool.rows, revisions, catalog.feature_columns
            )
        order = np.argsort(-scores, kind="stable")
        n = min(self.settings.rerank_pool, len(scores))
        top = order[:n]
        artists: list[str] | None = None
        if k is not None and n < len(scores):
            cap = self.settings.max_per_artist
            artists = catalog.artists_at(pool.rows[top].tolist())
            per_artist = Counter(artists)
            placeable = sum(min(c, cap) for c in per_artist.values())
            if placeable < k:
                extra = []
                rest = order[n:]
                # looked up one by one: the loop usually stops long before the pool's end
                rest_artists = catalog.iter_artists_at(pool.rows[rest].tolist())
                for i, artist in zip(rest.tolist(), rest_artists, strict=True):
                    if per_artist[artist] < cap:
                        per_artist[artist] += 1
                        extra.append(i)
                        artists.append(artist)
                        placeable += 1
                        if placeable >= k:
                            break
                top = np.concatenate([top, np.asarray(extra, dtype=top.dtype)])
        rows = pool.rows[top]
        return ScoredPool(
            pool, rows, pool.ids_at(rows), scores[top], vectors[top], artists_read=artists
        )

    # -- stage 3: rerank --------------------------------------------------------------------

    def shared_features(
        self, user_id: str, context: Context, history: int | None = None
    ) -> dict[str, Any]:
        """The listener/context features the bandit sees for a whole list (``history``: the
        session length, read from the sessions when not given)."""
        if history is None:
            history = len(self._sessions.recent(user_id))
        return {**{str(k): v for k, v in context.items()}, "history": history}

    def make_slate(
        self,
        scored: ScoredPool,
        k: int,
        *,
        explore: bool = True,
        request_id: str | None = None,
    ) -> Decision:
        """Fill ``k`` slots from the scored pool; the decision is not logged (see rerank)."""
        pool = scored.pool
        with self.lock:
            shared = self.shared_features(pool.user_id, pool.context, pool.history)
            if self.settings.reranker == "bandit":
                slate = self._bandit.rank(
                    shared,
                    self._bandit_candidates(scored),
                    k,
                    explore=explore,
                    max_per_artist=self.settings.max_per_artist,
                    exclude=pool.exclude,
                )
            else:
                slate = self._greedy(scored, k)
            version = self.model_version
        return Decision(
            request_id=request_id or uuid.uuid4().hex,
            user_id=pool.user_id,
            timestamp=pool.now,
            model_version=version,
            slate=tuple(slate),
            context=dict(pool.context),
            shared={k_: v for k_, v in shared.items() if isinstance(v, float | int | str)},
        )

    def rerank(
        self,
        scored: ScoredPool,
        k: int,
        *,
        explore: bool = True,
        request_id: str | None = None,
    ) -> Recommendation:
        """Fill ``k`` slots from the scored pool and log the decision for the reward join."""
        decision = self.make_slate(scored, k, explore=explore, request_id=request_id)
        if decision.slate:
            self.decisions.put(decision)
        return as_recommendation(decision)

    def _bandit_candidates(self, scored: ScoredPool) -> CandidateColumns:
        """The bandit's view of the scored pool, as columns (no object per candidate)."""
        pool = scored.pool
        ids = scored.ids
        artists = scored.artists
        if not ids:
            empty = np.zeros(0)
            return CandidateColumns(ids, artists, None, empty, empty, empty, empty, empty, empty)
        now = pool.now
        vectors = scored.vectors
        if vectors is None:
            vectors = self._relevance.item_vectors(scored.items)
        released = pool.catalog.view().release_times[scored.rows]
        with np.errstate(invalid="ignore"):
            ages = np.where(np.isnan(released), 365.0, (now - released) / _DAY)
        popularity, trend = self._popularity.scores_and_trends(ids, now)
        return CandidateColumns(
            item_ids=ids,
            artists=artists,
            # the latent part of the item vectors: similarity of tastes
            vectors=vectors[:, :-1],
            relevance=scored.relevance,
            popularity=popularity,
            trend=trend,
            age_days=ages,  # the bandit counts a negative age as 0
            exposure_item=self._exposure.items(pool.user_id, ids, now),
            exposure_artist=self._exposure.artists(pool.user_id, artists, now),
        )

    def _greedy(self, scored: ScoredPool, k: int) -> list[SlateEntry]:
        per_artist: dict[str, int] = {}
        slate: list[SlateEntry] = []
        artists = scored.artists
        for item_id, artist, rel in zip(scored.ids, artists, scored.relevance, strict=True):
            if len(slate) == k:
                break
            if item_id in scored.pool.exclude:
                continue
            if per_artist.get(artist, 0) >= self.settings.max_per_artist:
                continue
            per_artist[artist] = per_artist.get(artist, 0) + 1
            slate.append(SlateEntry(item_id, len(slate), float(rel), 1.0, False, {}))
        return slate

    # -- the whole request ------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int = 30,
        context: Context | None = None,
        *,
        exclude: Collection[str] = (),
        explore: bool = True,
        now: float | None = None,
        request_id: str | None = None,
    ) -> Recommendation:
        """All three stages for one listener (the serving path runs them one by one)."""
        started = time.perf_counter()
        pool = self.candidates(user_id, context, exclude=exclude, now=now)
        rec = self.rerank(self.score(pool, k), k, explore=explore, request_id=request_id)
        took = (time.perf_counter() - started) * 1000
        return Recommendation(rec.request_id, rec.model_version, rec.items, None, took)

    def popular_now(
        self, k: int, *, exclude: Collection[str] = (), now: float | None = None
    ) -> list[str]:
        """The fallback list: trending, then the newest available items; no model involved."""
        banned = set(exclude)
        with self.lock:
            t = self._time(now)
            top = [i for i, _ in self._popularity.top(k + len(banned) + 10, t)]
        out = [i for i in self.catalog.available_ids(top) if i not in banned][:k]
        if len(out) < k:
            view = self.catalog.view()
            if self._fresh_cache is None or self._fresh_cache[0] != view.version:
                self._fresh_sample(view, t, 0)
            assert self._fresh_cache is not None
            for i in self._fresh_cache[1]:
                if len(out) >= k:
                    break
                item_id = str(view.ids[i])
                if view.available_mask[i] and item_id not in banned and item_id not in out:
                    out.append(item_id)
        return out

    # -- learning ---------------------------------------------------------------------------

    @property
    def shared_sessions(self) -> RedisSessions | None:
        """The Redis session store this engine shares with others, if any."""
        return self._sessions if isinstance(self._sessions, RedisSessions) else None

    def observe_sessions(self, events: Iterable[Event]) -> None:
        """Record plays in the listeners' sessions at once (the intake calls this), so the next
        request reflects them before any model update."""
        shared = self.shared_sessions
        if shared is not None:  # one round trip to Redis, not under the engine lock
            shared.add_events(events)
            return
        with self.lock:
            for ev in events:
                if ev.type == "play":
                    self._sessions.learn_one(ev)

    def learn(
        self, events: Sequence[Event], *, offset: int | None = None, sessions: bool = True
    ) -> LearnReport:
        """Learn events read in log order; ``offset`` is the log offset of the last one.

        ``sessions=False`` when the intake already recorded the plays (the service does).
        """
        report = LearnReport(events=len(events))
        if not events:
            return report
        shared = self.shared_sessions
        if sessions and shared is not None:
            shared.add_events(events)  # its own round trip, outside the engine lock
        with self.lock:
            out = self._joiner.process_many(events)
            for ev in events:
                self._popularity.learn_one(ev)
                self._transitions.learn_one(ev)
                if sessions and shared is None:
                    self._sessions.learn_one(ev)
                if ev.type == "impression":
                    self._exposure.learn_one(ev, self.catalog.artist_of(ev.item_id) or None)
            self._learn_samples(out, report)
            if self.keep_outcomes:
                self._outcomes.extend(out.outcomes)
            self._time(events[-1].timestamp)
            self.events_learned += len(events)
            self.learned_since_base += len(events)
            if offset is not None:
                self.offset = offset
            report.offset = self.offset
        return report

    def flush(self) -> LearnReport:
        """Close every open attribution window (end of a replay)."""
        report = LearnReport()
        with self.lock:
            out = self._joiner.flush()
            self._learn_samples(out, report)
            if self.keep_outcomes:
                self._outcomes.extend(out.outcomes)
        return report

    def outcomes(self) -> list[DecisionOutcome]:
        """The lists whose windows closed since :meth:`clear_outcomes` (with ``keep_outcomes``)."""
        with self.lock:
            return list(self._outcomes)

    def clear_outcomes(self, n: int) -> None:
        """Forget the first ``n`` of :meth:`outcomes` (once they are stored)."""
        with self.lock:
            del self._outcomes[:n]

    def _learn_samples(self, out: JoinOutput, report: LearnReport) -> None:
        wm = self._joiner.watermark
        half_life = self.learner_settings.half_life_s
        # the relevance model reads ids, artists and genres: no embedding built under the lock
        items = self.catalog.get_many([s.item_id for s in out.relevance], content=False)
        learn = self._relevance.learn_one
        pv_y: list[bool] = []
        pv_p: list[float] = []
        for sample, item in zip(out.relevance, items, strict=True):
            if item is None:
                continue  # an item the catalog never had: nothing to attach features to
            w = decay_weight(sample.event_time, wm if wm is not None else 0.0, half_life)
            # progressive validation: the served prediction before learning this sample
            pv_p.append(learn(sample.user_id, item, sample.reward, sample.context, w))
            pv_y.append(sample.reward >= 0.5)
            report.relevance_samples += 1
        self._pv.update(pv_y, pv_p)
        for bs in out.bandit:
            if not bs.features:
                continue  # a slot placed without the bandit (the relevance-only baseline)
            w = decay_weight(bs.event_time, wm if wm is not None else 0.0, half_life)
            self._bandit.learn_one(bs.shared, bs.features, bs.propensity, bs.reward, w)
            self._bandit_reward += bs.reward
            self._bandit_n += 1
            report.bandit_samples += 1
        # which items moved is collected once per index refresh (and at save), not per chunk:
        # an artist touched by many chunks expands to its items once

    # -- keeping the ANN index on the moving item vectors -----------------------------------

    def _mark_dirty(self, keys: Iterable[str], *, pause: bool = False) -> None:
        """Queue the items whose vectors the touched ``keys`` moved.

        ``pause``: offer the interpreter lock to requests between pieces of the work (see
        :func:`yielding`); one popular artist alone expands to tens of thousands of items.
        """
        rows: list[int] = []
        for key in keys:
            kind, _, value = key.partition(":")
            if kind == "i":
                rows.extend(int(i) for i in self.catalog.indexes_of([value]) if i >= 0)
            elif kind == "a":
                rows.extend(self.catalog.indexes_by_artist(value))
            # a genre's latents move thousands of items a little: the sweep bounds those
        step = _REFRESH_PART * 4
        starts = range(0, len(rows), step)
        for start in yielding(starts) if pause else starts:
            # a row already waiting keeps its place in the queue
            self._dirty.update(dict.fromkeys(rows[start : start + step]))

    def refresh_index(self) -> int:
        """Re-index the items whose vectors moved, then the next slice of the sweep.

        Returns how many vectors were written. The lag is bounded: a moved item waits at most
        ``len(dirty) / index_refresh_batch`` cycles; every catalog item is revisited once per
        full sweep (``index_lag()['last_sweep_s']``), which also brings in new items whose
        artist or genre latents give them a vector before their first play. Items with no
        learned signal yet (a zero latent part) are left out of the index, and so are items
        beyond ``cf_max_identical`` sharing one identical vector (see
        :mod:`online._duplicates`).

        Call it from the thread that calls :meth:`learn` (the learner's): it reads the
        relevance model outside the engine lock, which is safe only beside no other writer.
        """
        if not self._cf_ready.is_set():
            return 0  # the CF index is still loading: moved items stay queued until it is in
        s = self.settings
        if self.content_index is not None:
            self.content_index.sync(self.catalog)
        with self.lock:
            touched = self._relevance.pop_touched()
            index = self._cf_index
            relevance = self._relevance
        # the queue of moved items and the sweep belong to the learning thread alone, so they
        # are kept outside the engine lock: expanding thousands of touched artists into their
        # items took 60-200 ms per refresh at 1M items, and every request waited for it
        self._mark_dirty(sorted(touched), pause=True)
        n_items = len(self.catalog)
        take = min(len(self._dirty), s.index_refresh_batch)
        chosen = [self._dirty.popitem(last=False)[0] for _ in range(take)]
        if s.index_sweep_batch and n_items:
            start = self._sweep_at
            stop = min(n_items, start + s.index_sweep_batch)
            chosen.extend(range(start, stop))
            self._sweep_at = 0 if stop >= n_items else stop
            if self._sweep_at == 0:
                now = time.monotonic()
                self.last_sweep_s = now - self._sweep_started
                self._sweep_started = now
        if not chosen:
            return 0
        idx = np.unique(np.asarray(chosen, dtype=np.int64))
        idx = idx[idx < len(self.catalog.view().ids)]
        if not len(idx):
            return 0
        # the vectors of thousands of items (tens of milliseconds) are computed outside the
        # engine lock, which requests wait for: only the learning thread, this one, changes
        # the relevance model, so nothing moves meanwhile; requests only read it. The model
        # reads only ids, artists and genres: no full items needed.
        vectors = np.concatenate(
            [
                relevance.item_vectors_of(self.catalog.feature_columns(part.tolist()))
                for part in yielding(np.array_split(idx, -(-len(idx) // _REFRESH_PART)))
            ]
        )
        keep = np.abs(vectors[:, :-1]).sum(axis=1) > 0  # no learned signal yet: not indexed
        ids = idx[keep]
        vectors = vectors[keep]
        # a few items per identical vector (see online._duplicates): the others leave
        admitted, lost = self._duplicate_cap(index).admit(ids, vectors)
        if lost.size:
            index.remove(lost)
        ids, vectors = ids[admitted], vectors[admitted]
        if not len(ids):
            return 0
        # only vectors that moved are written (the sweep revisits mostly unchanged ones), and
        # outside the engine lock: the index has its own readers-writer lock, so requests go
        # on while hnswlib links the new vectors
        old, live = index.stored(ids)
        moved = ~live | np.any(old != vectors, axis=1)
        if not moved.any():
            return 0
        if isinstance(index, HNSWRetriever):
            index.refresh(
                ids[moved],
                vectors[moved],
                tolerance=_RELINK_TOLERANCE,
                budget_s=s.index_relink_budget_s,
            )
            # new items the budget left out wait for the next refresh, first in the queue
            _, live = index.stored(ids[moved])
            waiting = ids[moved][~live].tolist()
            if waiting:
                self._dirty.update(dict.fromkeys(waiting))
                for row in reversed(waiting):
                    self._dirty.move_to_end(row, last=False)
        else:
            index.upsert(ids[moved], vectors[moved])
        return int(moved.sum())

    def _duplicate_cap(self, index: HNSWRetriever) -> DuplicateCap:
        """The places per identical vector, rebuilt from ``index`` when there is none yet
        (a new engine, or one just loaded); the items of an older index beyond the cap leave
        it then."""
        cap = self._duplicates
        if cap is None:
            cap = DuplicateCap(self.settings.cf_max_identical)
            vectors, live = index.stored(np.arange(len(self.catalog.view().ids)))
            rows = np.flatnonzero(live)
            extra = cap.rebuild(rows, vectors[rows])
            if extra.size:
                index.remove(extra)
                logger.info("%d items beyond %d per identical vector left the CF index",
                            extra.size, cap.cap)  # fmt: skip
            self._duplicates = cap
        return cap

    # -- snapshots --------------------------------------------------------------------------

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until a CF index whose loading was deferred (``Engine.load(...,
        defer_cf_index=True)``) is installed; False if ``timeout`` passed first. Call it
        without holding :attr:`lock`: the index is installed on another thread."""
        return self._cf_ready.wait(timeout)

    def save(self, directory: Path) -> None:
        """Write every learned state into ``directory`` (a snapshot's staging directory).

        Call it from the thread that learns (or with learning stopped), without holding
        :attr:`lock`: it takes the lock only for what requests change or cannot read beside
        a writer (the bandit's VW workspace, the sessions, the random stream), and writes the
        rest outside it, so lists go on being served meanwhile: the counters and the join
        (only learning changes them; requests read them), the relevance model's River state
        (requests read its numpy mirror, only learning writes it) and the CF index (its save
        lets queries run), the largest parts at a million items. A deferred CF index is part
        of the state, so this waits for it (see :meth:`wait_loaded`).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.wait_loaded()
        with self.lock:
            touched = self._relevance.pop_touched()
        # the moved items, all of them; expanding popular artists into their items takes
        # tens to hundreds of milliseconds at 1M items, and the queue is this thread's alone
        self._mark_dirty(sorted(touched), pause=True)
        with self.lock:
            # what requests change or use unsafely beside a reader: VW's workspace, the
            # sessions the intake records, the random stream of the fresh channel
            self._bandit.dump(directory / "bandit.bin")
            (directory / "sessions.json").write_bytes(self._sessions.dump())
            rng = self._rng.bit_generator.state
        # only the learning thread (this one) changes the counters and the join, and
        # requests only read them: they are written outside the lock. A cut at 1M items
        # held it for up to a second, and every list in flight waited.
        # Each is written in small pieces with the interpreter handed to request threads
        # between two: encoded whole, the join alone held it for 150 ms at 1M items.
        write_parts(directory / "popularity.json", self._popularity.dump_parts())
        write_parts(directory / "exposure.json", self._exposure.dump_parts())
        write_parts(directory / "transitions.json", self._transitions.dump_parts())
        write_parts(directory / "joiner.bin", self._joiner.dump_parts())
        # the queue of moved items can hold most of the catalog: an array, not a JSON list
        queue = iter(self._dirty)
        step = 8192  # about a millisecond each
        dirty = np.concatenate(
            [
                np.fromiter(islice(queue, step), dtype=np.int64)
                for _ in yielding(range(0, len(self._dirty), step))
            ]
            or [np.zeros(0, dtype=np.int64)]
        )
        np.save(directory / "dirty.npy", dirty)
        meta = {
            "format": _FORMAT,
            "offset": self.offset,
            "events_learned": self.events_learned,
            "watermark": self._joiner.watermark,
            "sweep_at": self._sweep_at,
            "rng": rng,
            "settings": self.settings.model_dump(mode="json"),
        }
        self._relevance.dump(directory / "relevance.bin")
        self._cf_index.save(directory / "cf_index")
        (directory / "engine.json").write_text(json.dumps(meta, default=int))

    @classmethod
    def load(
        cls,
        directory: Path,
        catalog: Catalog,
        settings: EngineSettings | None = None,
        learner: LearnerSettings | None = None,
        *,
        decisions: DecisionLog | None = None,
        version: str = "v0",
        content_index: ContentIndex | None = None,
        timings: dict[str, float] | None = None,
        defer_cf_index: bool = False,
        sessions: RedisSessions | None = None,
    ) -> Engine:
        """An engine with the state of a snapshot directory, at ``version``.

        ``content_index`` (derived from the catalog) is shared with the engine it replaces.
        ``timings``, if given, receives the seconds spent on each part of the state.
        ``defer_cf_index``: return as soon as the models are in, while the CF ANN graph (most
        of a large snapshot's bytes) finishes loading in the background; until it is in, the
        candidates come from the other channels, index refreshes wait, and ``save`` waits.
        A rollback is then answered by the restored models within about a second.

        The cyclic garbage collector is paused meanwhile: loading builds a few hundred
        thousand containers, and a service holding a large catalog would otherwise spend
        about as long again in collections that find nothing to free.
        """
        import gc
        from concurrent.futures import ThreadPoolExecutor

        directory = Path(directory)
        clock = time.perf_counter
        spent = timings if timings is not None else {}
        collecting = gc.isenabled()
        gc.disable()
        pool = ThreadPoolExecutor(1, thread_name_prefix="segue-load")
        try:
            started = clock()
            meta = json.loads((directory / "engine.json").read_text())
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{directory / 'engine.json'}: not a {_FORMAT} snapshot")
            settings = settings or EngineSettings(**meta["settings"])
            space = settings.cf_index_space

            def cf_index() -> HNSWRetriever:
                begun = clock()
                # a graph saved in another space is rebuilt in this one (see HNSWRetriever.load)
                index = HNSWRetriever.load(directory / "cf_index", space=space)
                spent["cf_index"] = clock() - begun
                return index

            # the ANN index is mostly file reads and copies in C: it loads beside the Python
            # parts below (models, counters), which need the GIL
            cf = pool.submit(cf_index)
            engine = cls(
                catalog,
                settings,
                learner,
                decisions=decisions,
                base_version=version,
                content_index=content_index,
                sessions=sessions,
            )
            spent["engine"] = clock() - started

            mark = clock()

            def lap(name: str) -> None:
                nonlocal mark
                now = clock()
                spent[name], mark = now - mark, now

            engine._relevance = RelevanceModel.load(directory / "relevance.bin")
            lap("relevance")
            engine._bandit = BanditReranker.load(directory / "bandit.bin")
            lap("bandit")
            engine._popularity.load((directory / "popularity.json").read_bytes())
            lap("popularity")
            engine._exposure.load((directory / "exposure.json").read_bytes())
            lap("exposure")
            engine._sessions.load((directory / "sessions.json").read_bytes())
            lap("sessions")
            engine._transitions.load((directory / "transitions.json").read_bytes())
            lap("transitions")
            engine._joiner.load((directory / "joiner.bin").read_bytes())
            lap("joiner")
            engine._rng.bit_generator.state = meta["rng"]
            engine.offset = int(meta["offset"])
            engine.events_learned = int(meta["events_learned"])
            # snapshots cut by earlier releases kept the queue in engine.json
            dirty = meta["dirty"] if "dirty" in meta else np.load(directory / "dirty.npy")
            engine._dirty = OrderedDict.fromkeys(map(int, dirty))
            engine._sweep_at = int(meta["sweep_at"])
            wm = meta.get("watermark")
            if wm is not None:
                engine._now = float(wm)
            lap("meta")
            if defer_cf_index and not cf.done():
                engine._cf_ready.clear()

                def install(done: Any) -> None:
                    try:
                        # one reference assignment, atomic on its own: readers take the index
                        # once under the engine lock and query it outside. Taking that lock here
                        # deadlocked a snapshot cut that held it while waiting for this index.
                        engine._cf_index = done.result()
                    except Exception:  # the engine keeps serving from its other channels
                        logger.exception("could not load the CF index of %s", version)
                    finally:
                        engine._cf_ready.set()

                cf.add_done_callback(install)
            else:
                engine._cf_index = cf.result()
            lap("cf_index_wait")
            spent["load"] = clock() - started
        finally:
            pool.shutdown(wait=not defer_cf_index, cancel_futures=False)
            if collecting:
                gc.enable()
        return engine

    def stats(self) -> Mapping[str, Any]:
        # under the lock: the join counters move mid-chunk, the offset and event count at its
        # end, and a reader must not see one without the other
        with self.lock:
            return {
                "model_version": self.model_version,
                "offset": self.offset,
                "events_learned": self.events_learned,
                "watermark": self.watermark,
                "join": self.join_stats,
                "index": self.index_lag(),
            }
