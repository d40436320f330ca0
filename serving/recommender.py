"""The guarded request path: stages under circuit breakers and a time budget, with a fallback.

Each stage (candidates, relevance, rerank) runs on a worker thread and is timed. A stage that
raises, or is slower than its timeout (not counting its wait for the engine lock), counts as
a failure for its breaker; an open breaker skips the models altogether. Whatever goes wrong -
a failure, an open breaker, or the whole list taking longer than the budget - the client gets
the precomputed popular-now list with
``fallback`` naming the reason, never an error. The decision is logged only for the list that
was actually served, so the reward join never credits a list nobody saw.

Under overload the work is shed, not queued. A list that found every worker thread busy
and waited longer than ``max_queue_ms`` for one is not computed (``fallback: "overloaded"``),
and one whose budget ran out between two stages stops there (its client already has the
fallback).
Without this, more lists per second than the process could compute built a queue in which
every list waited out the whole budget: at twice its capacity the service answered 99% of
lists with the fallback, each after 150 ms, while it went on computing lists nobody would see.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from feedback.events import Context, Decision, SlateEntry
from online.engine import Engine, as_recommendation
from online.recommendation import Recommendation
from serving.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from serving.metrics import Metrics
from serving.settings import ServingSettings

logger = logging.getLogger("segue.recommend")

STAGES = ("candidates", "relevance", "rerank")


class StageFailed(Exception):
    """A stage raised or its breaker is open, or the list was shed; ``reason`` is what
    ``fallback`` says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Ticket:
    """Who logs one list's decision: the worker thread that computed it in time, or the
    event loop that served the fallback instead. The first to claim it does; a worker that
    finishes after its list timed out logs nothing, so the log holds the list served."""

    __slots__ = ("_lock", "_owner")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: str | None = None

    def claim(self, who: str) -> bool:
        with self._lock:
            if self._owner is None:
                self._owner = who
            return self._owner == who


@dataclass(slots=True)
class Request:
    user_id: str
    k: int
    context: Context
    exclude: Collection[str] = ()
    explore: bool = True
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Recommender:
    """Runs :class:`~online.engine.Engine` stages for the HTTP path (see the module doc)."""

    def __init__(
        self,
        settings: ServingSettings,
        metrics: Metrics,
        *,
        clock_monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        timeouts = {
            "candidates": settings.candidates_timeout_ms,
            "relevance": settings.relevance_timeout_ms,
            "rerank": settings.rerank_timeout_ms,
        }
        self.timeouts_s = {k: v / 1000 for k, v in timeouts.items()}
        self.max_queue_s = settings.max_queue_ms / 1000
        self._in_flight = 0  # lists handed to the pool and not finished
        self._in_flight_lock = threading.Lock()
        self.breakers = {
            stage: CircuitBreaker(
                stage,
                window=settings.breaker_window,
                min_calls=settings.breaker_min_calls,
                failure_rate=settings.breaker_failure_rate,
                open_s=settings.breaker_open_s,
                half_open_probes=settings.breaker_probes,
                clock=clock_monotonic,
                on_change=self._breaker_changed(stage),
            )
            for stage in STAGES
        }
        for stage in STAGES:
            metrics.breaker_state.labels(stage).set(0)
        # each list observes these several times: the labelled children are looked up once
        # (``labels`` builds a key and takes a lock per call, 2% of a busy process in py-spy)
        self._stage_seconds = {s: metrics.stage_latency.labels(s) for s in (*STAGES, "total")}
        self._lock_wait = {s: metrics.stage_lock_wait.labels(s) for s in STAGES}
        self._served: dict[str, Any] = {}
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="segue-recommend")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _breaker_changed(self, stage: str) -> Callable[[str, str], None]:
        """Metrics and a log line for each change of ``stage``'s breaker."""
        codes = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
        timeout_ms = self.timeouts_s[stage] * 1000

        def changed(old: str, new: str) -> None:
            self.metrics.breaker_state.labels(stage).set(codes[new])
            self.metrics.breaker_transitions.labels(stage, new).inc()
            if new == OPEN:
                logger.warning(
                    "%s breaker open (from %s): too many of its calls failed or took over "
                    "%.0f ms; lists are the popular-now fallback for %.0f s",
                    stage,
                    old,
                    timeout_ms,
                    self.settings.breaker_open_s,
                )
            else:
                logger.info("%s breaker %s (from %s)", stage, new, old)

        return changed

    def _stage(
        self, name: str, engine: Engine, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        breaker = self.breakers[name]
        if not breaker.allow():
            raise StageFailed(f"{name}_breaker_open")
        waited = engine.lock.waited()
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            breaker.record_failure()
            logger.exception("stage %s failed", name)
            raise StageFailed(f"{name}_failed") from exc
        finally:
            elapsed = time.perf_counter() - started
            self._stage_seconds[name].observe(elapsed)
            waited = engine.lock.waited() - waited
            self._lock_wait[name].observe(waited)
        # the breaker judges the stage's own time: waiting for the engine lock behind other
        # lists is the process being busy (a snapshot cut, a burst), which the budget and
        # load shedding answer; counted, it opened the breaker at every cut at 1M items
        if elapsed - waited > self.timeouts_s[name]:
            breaker.record_failure()
        else:
            breaker.record_success()
        return result

    def _run(
        self,
        engine: Engine,
        req: Request,
        now: float,
        enqueued: float,
        queued: bool,
        ticket: _Ticket,
    ) -> tuple[Decision, bool]:
        """The decision, and whether it was logged. A computed list is encoded and logged
        here, on the worker thread: neither is work for the event loop, which every request
        passes through (at 150 lists/s the encoding alone was a sixth of that thread's time;
        with Redis the log is a network round trip)."""
        try:
            decision = self._run_stages(engine, req, now, enqueued, queued)
            logged = bool(decision.slate) and ticket.claim("worker")
            if logged:
                self._log(engine, decision, decision.to_json())
            return decision, logged
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    @staticmethod
    def _log(engine: Engine, decision: Decision, encoded: bytes | None = None) -> None:
        try:
            engine.decisions.put(decision, encoded)
        except Exception:  # the list is still served; its feedback teaches relevance only
            logger.exception("could not log the decision %s", decision.request_id)

    def _run_stages(
        self, engine: Engine, req: Request, now: float, enqueued: float, queued: bool
    ) -> Decision:
        began = time.perf_counter()
        self.metrics.queue_wait.observe(began - enqueued)
        # only a list that found every worker busy is shed: one that waited because the
        # process stalled (a collection, the learner holding the interpreter) is computed
        if queued and began - enqueued > self.max_queue_s:
            raise StageFailed("overloaded")
        deadline = enqueued + self.settings.budget_ms / 1000
        pool = self._stage(
            "candidates",
            engine,
            engine.candidates,
            req.user_id,
            req.context,
            exclude=req.exclude,
            now=now,
        )
        self._check(deadline)
        scored = self._stage("relevance", engine, engine.score, pool, req.k)
        self._check(deadline)
        return self._stage(
            "rerank",
            engine,
            engine.make_slate,
            scored,
            req.k,
            explore=req.explore,
            request_id=req.request_id,
        )

    @staticmethod
    def _check(deadline: float) -> None:
        """Stop a list whose budget ran out: its client has had the fallback already."""
        if time.perf_counter() > deadline:
            raise StageFailed("timeout")

    async def recommend(
        self, engine: Engine, req: Request, *, now: float, popular: tuple[str, ...]
    ) -> Recommendation:
        """The list for ``req`` as the client sees it (see :meth:`decide`)."""
        decision, fallback, took_ms = await self.decide(engine, req, now=now, popular=popular)
        return as_recommendation(decision, fallback=fallback, took_ms=took_ms)

    async def decide(
        self, engine: Engine, req: Request, *, now: float, popular: tuple[str, ...]
    ) -> tuple[Decision, str | None, float]:
        """The decision served for ``req`` (already logged), the fallback reason or ``None``,
        and the milliseconds it took. The HTTP handler writes its JSON from the slate
        directly, without building a :class:`Recommendation` of 30 frozen items first."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        with self._in_flight_lock:
            queued = self._in_flight >= self.settings.workers
            self._in_flight += 1
        ticket = _Ticket()
        future = loop.run_in_executor(
            self._pool, self._run, engine, req, now, started, queued, ticket
        )
        reason: str | None = None
        decision: Decision | None = None
        logged = False
        try:
            try:
                decision, logged = await asyncio.wait_for(
                    asyncio.shield(future), timeout=self.settings.budget_ms / 1000
                )
            except TimeoutError:
                if ticket.claim("loop"):
                    raise
                # the list was computed in time and its thread is logging it: serve it
                decision, logged = await future
        except TimeoutError:
            reason = "timeout"
            # the stages keep running on their thread; its result is dropped, not served
            future.add_done_callback(lambda f: f.exception())
        except StageFailed as exc:
            reason = exc.reason
        except Exception:  # a bug must still not become a 5xx
            logger.exception("recommendation failed")
            reason = "internal_error"
        if decision is not None and len(decision.slate) == 0 and len(engine.catalog) > 0:
            reason = "no_candidates"
            decision = None
        if decision is None:
            decision = self.fallback(engine, req, now=now, popular=popular, reason=reason)
            logged = False
        if decision.slate and not logged:
            self._log(engine, decision)
        took = (time.perf_counter() - started) * 1000
        self._stage_seconds["total"].observe(took / 1000)
        self._served_counter(reason or "none").inc()
        return decision, reason, round(took, 3)

    def _served_counter(self, reason: str) -> Any:
        counter = self._served.get(reason)
        if counter is None:  # reasons are a short fixed set: the dict stays small
            counter = self._served[reason] = self.metrics.recommendations.labels(reason)
        return counter

    @staticmethod
    def fallback(
        engine: Engine,
        req: Request,
        *,
        now: float,
        popular: tuple[str, ...],
        reason: str | None,
    ) -> Decision:
        """The popular-now list, without touching the models (their lock may be held)."""
        banned = set(req.exclude)
        slate: list[SlateEntry] = []
        for item_id in engine.catalog.available_ids(popular):
            if len(slate) >= req.k:
                break
            if item_id not in banned:
                slate.append(SlateEntry(item_id, len(slate), 0.0, 1.0, False, {}))
        return Decision(
            request_id=req.request_id,
            user_id=req.user_id,
            timestamp=now,
            model_version=engine.model_version,
            slate=tuple(slate),
            context=dict(req.context),
        )
