"""The learner: the single writer that turns the event log into models, exactly once.

It reads the log after the engine's offset, in order and in batches, and feeds the events to
:meth:`Engine.learn` in small chunks (each chunk holds the engine lock briefly, so requests
served from the same engine wait at most one chunk). After each batch it refreshes the ANN
index, and every ``every_events`` events or ``every_seconds`` seconds (and on a clean stop) it
cuts a snapshot whose manifest records the log offset it includes.

Exactly once: the offset lives in the engine state and in every snapshot. A restart loads
``CURRENT`` and reads the log from the snapshot's offset, so the events after it are learned
again from the same state: none is lost, none counts twice.

Rollback: the learner polls ``CURRENT`` (one ``stat``) before every batch and between its
chunks; when an operator moves it, the learner loads that snapshot and, by the pointer's mode,
either continues from the pointer's ``resume_offset`` (``continue``: the span the operator
skipped is not learned, and the running learner ends up exactly where a restarted one would)
or re-learns the log from the snapshot's offset (``replay``). The new engine is handed to
``on_swap`` so that the service answers with it at once. A rollback that cannot be loaded yet
is retried, and until it is, nothing is learned or cut, so the learner never promotes over the
operator's choice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from feedback.attribution import DecisionOutcome
from feedback.decisions import DecisionLog
from feedback.log import EventLog
from online._gil import yielding
from online.catalog import Catalog
from online.engine import ContentIndex, Engine
from online.redis_sessions import RedisSessions
from online.settings import EngineSettings, LearnerSettings
from snapshots import CommitResult, CurrentPointer, CutSchedule, SnapshotStore, settings_hash

logger = logging.getLogger("segue.learner")

__all__ = ["Learner", "StepReport", "open_engine"]


@dataclass(slots=True)
class StepReport:
    events: int = 0
    relevance_samples: int = 0
    bandit_samples: int = 0
    indexed: int = 0
    cut: CommitResult | None = None
    cut_s: float = 0.0  # seconds the cut took, if one was made
    swapped_to: str | None = None


def open_engine(
    catalog: Catalog,
    store: SnapshotStore | None,
    settings: EngineSettings,
    learner_settings: LearnerSettings,
    *,
    decisions: DecisionLog | None = None,
    content_index: ContentIndex | None = None,
    timings: dict[str, float] | None = None,
    defer_cf_index: bool = False,
    sessions: RedisSessions | None = None,
) -> Engine:
    """The engine to start from: ``CURRENT``'s snapshot (verified), or a fresh one.

    ``timings``, if given, receives the seconds spent verifying (``verify``) and loading each
    part of the state (see :meth:`Engine.load`).
    """
    started = time.perf_counter()
    loaded = store.load_current() if store is not None else None
    if timings is not None:
        timings["verify"] = time.perf_counter() - started
    if loaded is None:
        return Engine(
            catalog,
            settings,
            learner_settings,
            decisions=decisions,
            content_index=content_index,
            sessions=sessions,
        )
    for version, reason in loaded.skipped:
        logger.error("snapshot %s refused: %s", version, reason)
    engine = Engine.load(
        loaded.snapshot.path,
        catalog,
        settings,
        learner_settings,
        decisions=decisions,
        version=loaded.snapshot.version,
        content_index=content_index,
        timings=timings,
        defer_cf_index=defer_cf_index,
        sessions=sessions,
    )
    engine.offset = loaded.resume_offset - 1  # read(after=offset) resumes at resume_offset
    return engine


class Learner:
    """Reads ``log`` into ``engine``; cuts snapshots into ``store`` (optional)."""

    def __init__(
        self,
        engine: Engine,
        log: EventLog,
        *,
        store: SnapshotStore | None = None,
        schedule: CutSchedule | None = None,
        sessions: bool = True,
        on_swap: Callable[[Engine], None] | None = None,
        on_step: Callable[[Learner, StepReport], None] | None = None,
        defer_index_on_swap: bool = False,
    ) -> None:
        self.engine = engine
        # a service answers with a rolled-back version as soon as its models are in, while its
        # CF graph finishes loading (Engine.load's defer_cf_index)
        self.defer_index_on_swap = defer_index_on_swap
        self.log = log
        self.store = store
        self.schedule = schedule
        self.sessions = sessions
        self._on_swap = on_swap
        # logs that keep closed lists for off-policy evaluation (SQLEventLog) get them
        self._record_outcomes: Callable[[Sequence[DecisionOutcome]], None] | None = getattr(
            log, "record_outcomes", None
        )
        self._on_step = on_step
        self._events_since_cut = 0
        self._pending: CurrentPointer | None = None
        self._last_refresh = float("-inf")
        self.last_error: str | None = None
        self.swap_timings: dict[str, float] = {}  # seconds per phase of the last swap

    @property
    def settings(self) -> LearnerSettings:
        return self.engine.learner_settings

    # -- one cycle --------------------------------------------------------------------------

    def step(self) -> StepReport:
        """Obey a moved ``CURRENT``, learn one batch, refresh the index, cut when due."""
        report = StepReport()
        if self.store is not None:
            # poll() reports only moves made by others (an operator's rollback); one that could
            # not be obeyed yet stays pending, and nothing is learned or cut until it is
            pointer = self.store.poll() or self._pending
            if pointer is not None:
                self._pending = pointer
                self._swap(pointer)
                self._pending = None
                report.swapped_to = pointer.version
        self._store_outcomes()  # any a failed write left behind, before more are made
        self.engine.keep_outcomes = self._record_outcomes is not None
        batch = self.log.read(self.engine.offset, self.settings.read_batch)
        chunk = self.settings.lock_chunk
        # learning is background work: between chunks the interpreter lock goes to a request
        # waiting for it (see online._gil)
        for start in yielding(range(0, len(batch), chunk)):
            if start and self._moved():
                # an operator moved CURRENT: obey it at the next step rather than after the
                # whole batch (the rest of the batch is read again from the new state's offset)
                self._store_outcomes()
                return self._report(report)
            part = batch[start : start + chunk]
            learned = self.engine.learn(
                [x.event for x in part], offset=part[-1].offset, sessions=self.sessions
            )
            report.events += learned.events
            report.relevance_samples += learned.relevance_samples
            report.bandit_samples += learned.bandit_samples
        self._store_outcomes()
        if batch:
            now = time.monotonic()
            if now - self._last_refresh >= self.settings.index_refresh_interval_s:
                report.indexed = self.engine.refresh_index()
                self._last_refresh = now
            self._events_since_cut += len(batch)
        if self.schedule is not None:
            self.schedule.record(len(batch))
            if self.schedule.due() and self._events_since_cut:
                started = time.perf_counter()
                report.cut = self.cut()
                report.cut_s = time.perf_counter() - started
        return self._report(report)

    def _store_outcomes(self) -> None:
        """Write the lists whose windows closed to the log's outcome table, if it has one.

        They leave the engine's buffer only once written: a failed write is retried at the
        next step. They are written before any snapshot that includes them is cut, and the
        table ignores a request id it holds, so a restart stores each list exactly once.
        """
        if self._record_outcomes is None:
            return
        outcomes = self.engine.outcomes()
        if outcomes:
            self._record_outcomes(outcomes)
            self.engine.clear_outcomes(len(outcomes))

    def _report(self, report: StepReport) -> StepReport:
        if self._on_step is not None:
            self._on_step(self, report)
        return report

    def _moved(self) -> bool:
        """Whether ``CURRENT`` was moved by someone else (kept pending for the next step)."""
        if self.store is None or self._pending is not None:
            return self._pending is not None
        self._pending = self.store.poll()
        return self._pending is not None

    def run_until_caught_up(self) -> int:
        """Learn until the log has nothing new; returns how many events were learned."""
        total = 0
        while True:
            n = self.step().events
            total += n
            if n == 0:
                return total

    def cut(self, *, note: str | None = None, relabel: bool = True) -> CommitResult | None:
        """Write a snapshot of the engine now (the learner is its only writer); ``note`` is
        kept in the manifest's ``extra``. ``relabel=False`` keeps serving the state under its
        present version (a bookkeeping snapshot of the same model)."""
        if self.store is None:
            return None
        engine = self.engine
        # a CF index still loading after a swap is part of the state: wait for it before taking
        # the engine lock, which every request needs meanwhile
        engine.wait_loaded()
        with self.store.stage() as staging:
            # save takes the engine lock only for what requests use too; hashing and fsyncing
            # the files (most of a cut) happen outside it, so requests served from this engine
            # do not wait for the disk. Only this thread learns, so nothing the files or the
            # manifest record can move in between.
            engine.save(staging.path)
            with engine.lock:
                offset, events = engine.offset + 1, engine.learned_since_base
                watermark, metrics = engine.watermark, engine.quality(reset=True)
                parent = engine.base_version if engine.base_version != "v0" else None
            result = staging.commit(
                offset=offset,
                events=events,
                watermark=watermark,
                metrics=metrics,
                settings_hash=settings_hash(
                    {
                        "engine": engine.settings.model_dump(mode="json"),
                        "learner": engine.learner_settings.model_dump(mode="json"),
                    }
                ),
                parent=parent,
                extra={"note": note} if note else None,
            )
            if relabel:
                with engine.lock:
                    engine.base_version = result.version
                    engine.learned_since_base -= events
        self._events_since_cut = 0
        if self.schedule is not None:
            self.schedule.reset()
        if result.promoted:
            logger.info("snapshot %s cut at offset %d", result.version, engine.offset)
        else:
            logger.warning("snapshot %s held back: %s", result.version, result.reason)
        return result

    def _swap(self, pointer: CurrentPointer) -> None:
        """Load ``pointer.version`` (an operator's rollback) and continue or replay as it says.

        ``continue``: V's state goes on with new events only. Everything this learner had
        learned after V (the span that is often why one rolls back) is skipped, and at once a
        snapshot of V at this log position is cut, so that a restart resumes exactly here too.
        (A learner that was not running at the rollback resumes at ``pointer.resume_offset``,
        the furthest position any snapshot had reached: events no snapshot held are new to it.)
        ``replay``: V's state re-learns the log from V's offset.
        """
        assert self.store is not None
        version, mode = pointer.version, pointer.mode
        timings: dict[str, float] = {}
        changed = pointer.changed_ts
        if changed is not None:  # from the move to noticing it
            timings["detect"] = max(0.0, time.time() - changed)
        started = time.perf_counter()
        snapshot = self.store.load(version)
        timings["verify"] = time.perf_counter() - started
        old = self.engine
        new = Engine.load(
            snapshot.path,
            old.catalog,
            old.settings,
            old.learner_settings,
            decisions=old.decisions,
            version=version,
            content_index=old.content_index,
            timings=timings,
            defer_cf_index=self.defer_index_on_swap,
            sessions=old.shared_sessions,
        )
        if mode == "replay":
            new.offset = snapshot.manifest.offset - 1
        else:
            new.offset = max(snapshot.manifest.offset - 1, pointer.resume_offset - 1, old.offset)
        self.engine = new
        self._events_since_cut = 0
        self.swap_timings = timings
        logger.warning(
            "CURRENT moved to %s (%s): now learning after offset %d", version, mode, new.offset
        )
        if self._on_swap is not None:
            self._on_swap(new)
        if mode != "replay" and new.offset > snapshot.manifest.offset - 1:
            # make the skip durable: V's state at this position, so a restart resumes here
            # (answers keep saying V: it is V's model, only the log position differs)
            self.cut(
                note=f"rollback to {version}: continuing after offset {new.offset}",
                relabel=False,
            )

    # -- the loop ---------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        wake: threading.Event | None = None,
        *,
        cut_on_stop: bool = True,
    ) -> None:
        """Learn until ``stop`` is set; sleeps between empty polls unless ``wake`` is set."""
        poll = self.settings.poll_interval_s
        while not stop.is_set():
            try:
                n = self.step().events
                self.last_error = None
            except Exception as exc:  # keep learning after a transient failure; say it
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("learner step failed; retrying")
                stop.wait(1.0)
                continue
            if n == 0:
                self._refresh_when_idle()
                if wake is not None:
                    wake.wait(poll)
                    wake.clear()
                else:
                    stop.wait(poll)
        if cut_on_stop and self._events_since_cut and self._pending is None:
            try:
                self.cut()
            except Exception:
                logger.exception("could not cut the snapshot on stop")

    def _refresh_when_idle(self) -> None:
        """Work through the queue of moved items while no events come. After a burst of
        feedback it held 280-330k of a 1M catalog, and the CF index stopped filling when the
        events stopped (a refresh ran only after a learned batch)."""
        now = time.monotonic()
        if now - self._last_refresh < self.settings.index_refresh_interval_s:
            return
        self._last_refresh = now
        if self.engine.index_lag()["dirty_items"]:
            try:
                self.engine.refresh_index()
            except Exception:  # the next batch's refresh retries; learning goes on
                logger.exception("index refresh failed")

    def start(self, stop: threading.Event, wake: threading.Event | None = None) -> threading.Thread:
        """Run in a daemon thread (the embedded mode of ``segue serve``)."""
        thread = threading.Thread(
            target=self.run, args=(stop, wake), name="segue-learner", daemon=True
        )
        thread.start()
        return thread


def lag(log: EventLog, engine: Engine) -> int:
    """How many log offsets the engine has not learned yet (offsets may have gaps)."""
    return max(0, log.last_offset() - engine.offset)


def wall_lag_s(received_at: float | None) -> float:
    return 0.0 if received_at is None else max(0.0, time.time() - received_at)
