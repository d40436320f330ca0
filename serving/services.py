"""The objects a running app works with, built once per app by :func:`serving.app.create_app`.

Routes get them through the :func:`get_services` dependency, never from module globals.

Two modes (DESIGN: "embedded by default, distributed when outgrown"):

* embedded (``segue serve``): the learner runs in a background thread on the very engine the
  requests read, so a model update is served the moment it is learned;
* without an embedded learner (``segue serve --no-learner`` beside ``segue learn``): the
  service loads ``CURRENT``'s snapshot and reloads it whenever the pointer moves.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fastapi import Request

from feedback.db import create_db_engine
from feedback.decisions import DecisionLog, InMemoryDecisionLog, RedisDecisionLog
from feedback.events import Event
from feedback.log import SQLEventLog
from online.catalog import Catalog
from online.demo import generate_demo_catalog
from online.engine import ContentIndex, Engine
from online.heap import refreeze_later
from online.learner import Learner, StepReport, open_engine
from online.redis_sessions import RedisSessions
from serving.metrics import Metrics
from serving.recommender import Recommender
from serving.settings import Settings
from snapshots import CutSchedule, PointerWatch, SnapshotStore
from snapshots.guard import PromotionGuard

logger = logging.getLogger("segue.serving")


@dataclass
class Services:
    settings: Settings
    log: SQLEventLog
    metrics: Metrics
    catalog: Catalog
    store: SnapshotStore
    engine: Engine
    decisions: DecisionLog
    clock: Callable[[], float] = time.time
    new_events: threading.Event = field(default_factory=threading.Event)
    learner: Learner | None = None
    recommender: Recommender = field(init=False)
    popular: tuple[str, ...] = ()
    _popular_version: int = -1
    _stop: threading.Event = field(default_factory=threading.Event)
    _watch: PointerWatch | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.recommender = Recommender(self.settings.serving, self.metrics)

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        demo: bool = False,
    ) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = create_db_engine(
            settings.resolved_database_url(),
            timeout_s=settings.db_timeout_s,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        log = SQLEventLog(db, batch_memory_s=settings.feedback.batch_memory_s)
        catalog = Catalog(db, embedding_dim=settings.embedding_dim, load=False)
        try:
            catalog.load()
        except Exception:  # a database that is down: start anyway, /health/ready says so
            logger.exception("could not load the catalog")
        if demo and len(catalog) == 0:
            n = settings.serving.demo_items
            logger.info("generating a demo catalog of %d items", n)
            catalog.upsert(
                generate_demo_catalog(
                    n, dim=settings.embedding_dim, seed=settings.engine.seed, now=clock()
                )
            )
        sessions: RedisSessions | None = None
        if settings.redis_url:
            decisions: DecisionLog = RedisDecisionLog(
                settings.redis_url,
                prefix=settings.redis_prefix,
                ttl_s=settings.learner.decision_ttl_s,
            )
            # every serving process sees the plays posted to any of them, across engine swaps
            sessions = RedisSessions(
                settings.redis_url,
                prefix=settings.redis_prefix,
                max_len=settings.engine.session_length,
                ttl_s=settings.engine.session_ttl_s,
            )
        else:
            decisions = InMemoryDecisionLog(ttl_s=settings.learner.decision_ttl_s, clock=clock)
        store = SnapshotStore(
            settings.snapshot_dir(),
            keep=settings.snapshot.keep,
            guard=PromotionGuard.from_settings(settings.snapshot),
        )
        content_index = None
        if settings.embedding_dim is not None:
            es = settings.engine
            content_index = ContentIndex.open(
                catalog,
                settings.embedding_dim,
                settings.content_index_path(),
                m=es.hnsw_m,
                ef=es.hnsw_ef,
                seed=es.seed,
                threads=es.index_threads,
            )
        engine = open_engine(
            catalog,
            store,
            settings.engine,
            settings.learner,
            decisions=decisions,
            content_index=content_index,
            sessions=sessions,
        )
        services = cls(
            settings=settings,
            log=log,
            metrics=Metrics(),
            catalog=catalog,
            store=store,
            engine=engine,
            decisions=decisions,
            clock=clock,
        )
        services.refresh_popular()
        services.metrics.set_model_version(engine.base_version)
        services.metrics.gc_pauses.watch()
        return services

    # -- running ----------------------------------------------------------------------------

    def start_learner(self) -> Learner:
        """Run the learner in a background thread on the served engine (embedded mode)."""
        learner = Learner(
            self.engine,
            self.log,
            store=self.store,
            schedule=CutSchedule.from_settings(self.settings.snapshot),
            sessions=False,  # the intake records plays in sessions itself (observe_sessions)
            on_swap=lambda engine: self.swap_engine(engine, timings=learner.swap_timings),
            on_step=self._after_step,
            defer_index_on_swap=True,
        )
        self.learner = learner
        self._threads.append(learner.start(self._stop, self.new_events))
        return learner

    def start_catalog_follower(self) -> None:
        """Follow catalog rows other processes write (another worker's ``POST /v1/items``,
        ``segue catalog import``): new and changed items are read every ``catalog_sync_s``,
        then the content index and the popular-now fallback follow."""
        every = self.settings.serving.catalog_sync_s

        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    changed = self.catalog.sync()
                except Exception:  # the database may be down for a while: keep serving
                    logger.warning("could not read catalog changes", exc_info=True)
                    continue
                if not changed:
                    continue
                try:
                    index = self.engine.content_index
                    if index is not None:
                        index.sync(self.catalog)
                    self.refresh_popular()
                except Exception:
                    logger.exception("could not apply %d catalog changes", changed)

        thread = threading.Thread(target=loop, name="segue-catalog", daemon=True)
        thread.start()
        self._threads.append(thread)

    def start_reloader(self) -> None:
        """Without an embedded learner: serve each new ``CURRENT`` as soon as it moves.

        A :class:`~snapshots.PointerWatch` wakes the reloader when the snapshot directory
        changes (inotify), and ``reload_poll_s`` bounds the wait where file-system events are
        not delivered (a shared file system written from another host) and between retries.
        """
        watch = self.store.watch()
        self._watch = watch

        def loop() -> None:
            retry = False  # a move whose snapshot could not be loaded is tried again
            while not self._stop.is_set():
                watch.wait(self.settings.serving.reload_poll_s)
                if self._stop.is_set():
                    break
                try:
                    pointer = self.store.poll()
                    if pointer is None and not retry:
                        continue
                    retry = True
                    timings: dict[str, float] = {}
                    changed = pointer.changed_ts if pointer is not None else None
                    if changed is not None:  # from the move to noticing it
                        timings["detect"] = max(0.0, time.time() - changed)
                    fresh = open_engine(
                        self.catalog,
                        self.store,
                        self.settings.engine,
                        self.settings.learner,
                        decisions=self.decisions,
                        content_index=self.engine.content_index,
                        timings=timings,
                        defer_cf_index=True,
                        sessions=self.engine.shared_sessions,
                    )
                    self.swap_engine(fresh, timings=timings)
                    retry = False
                except Exception:
                    logger.exception("could not load the new CURRENT snapshot; keeping the old")

        self.store.poll()  # remember the pointer this engine was loaded from
        thread = threading.Thread(target=loop, name="segue-reloader", daemon=True)
        thread.start()
        self._threads.append(thread)

    def swap_engine(self, engine: Engine, timings: Mapping[str, float] | None = None) -> None:
        """Serve ``engine`` from now on (requests in flight finish on the old one).

        ``timings`` (seconds per phase of loading it) are logged with the swap.
        """
        started = time.perf_counter()
        previous = self.engine
        # the newest-items order is derived from the shared catalog alone (keyed by its
        # version): reuse it rather than sort a million release times on the first request
        cache = getattr(previous, "_fresh_cache", None)
        shared = engine.catalog is previous.catalog
        if cache is not None and shared and getattr(engine, "_fresh_cache", cache) is None:
            engine._fresh_cache = cache
        self.engine = engine
        self.metrics.set_model_version(engine.base_version)
        self.refresh_popular()
        if gc.get_freeze_count():
            refreeze_later()
        phases = dict(timings or {})
        phases["popular"] = time.perf_counter() - started
        detail = " ".join(f"{name}={seconds:.3f}" for name, seconds in phases.items())
        logger.warning(
            "now serving %s (was %s); seconds: %s; swapped at %.3f",
            engine.model_version,
            previous.model_version,
            detail,
            time.time(),
        )

    def _after_step(self, learner: Learner, report: StepReport) -> None:
        if report.events:
            self.metrics.learner_events.inc(report.events)
        if report.cut is not None:
            self.metrics.snapshot_cut.observe(report.cut_s)
            self.metrics.set_model_version(learner.engine.base_version)  # the state, relabelled
        if report.events or self._popular_version != self.catalog.version:
            self.refresh_popular()
        try:
            self.metrics.learner_lag_events.set(
                max(0, self.log.last_offset() - learner.engine.offset)
            )
        except Exception:  # metrics must never stop learning
            logger.debug("could not read the log's last offset", exc_info=True)

    def refresh_popular(self) -> None:
        """Recompute the precomputed popular-now list the fallback serves."""
        try:
            version = self.catalog.version
            self.popular = tuple(self.engine.popular_now(200, now=self.clock()))
            self._popular_version = version
        except Exception:
            logger.exception("could not refresh the popular-now list; keeping the old one")

    def observe(self, events: Iterable[Event]) -> None:
        """After a batch is stored: record its plays in sessions and wake the learner."""
        events = list(events)
        if events:
            self.engine.observe_sessions(events)
            self.new_events.set()

    def close(self) -> None:
        self._stop.set()
        self.new_events.set()
        self.metrics.gc_pauses.unwatch()
        if self._watch is not None:
            self._watch.interrupt()
        for thread in self._threads:
            thread.join(timeout=30)
        if self._watch is not None and not any(t.is_alive() for t in self._threads):
            self._watch.close()
        close_decisions = getattr(self.decisions, "close", None)
        if close_decisions is not None:
            close_decisions()
        if self.engine.shared_sessions is not None:
            self.engine.shared_sessions.close()
        self.log.close()


async def get_services(request: Request) -> Services:
    """The app's services (a coroutine: FastAPI runs a plain function dependency on its
    thread pool, a thread hop per request for one attribute read)."""
    services: Services = request.app.state.services
    return services
