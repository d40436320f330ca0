"""Prometheus metrics of one app instance (its own registry: no import-time globals).

``segue serve --workers N`` runs N processes behind one port, and a scrape reaches one of
them. There the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, each
worker's values go to files in it (prometheus_client's multiprocess mode), and ``/metrics``
from any worker sums the counters and histograms of all of them; gauges are per worker
(a ``pid`` label), and a worker that starts forgets the gauges of workers that died.
"""

from __future__ import annotations

import bisect
import gc
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The operator's view: intake, per-stage latency, fallbacks, learner lag."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # set by `segue serve --workers N` before the workers start (see the module doc)
        self.shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self._version: str | None = None
        self.events_accepted = Counter(
            "segue_feedback_events_accepted",
            "Events newly stored in the event log",
            registry=r,
        )
        self.events_duplicate = Counter(
            "segue_feedback_events_duplicate", "Events already in the log (retries)", registry=r
        )
        self.dead_letters = Counter(
            "segue_feedback_dead_letters",
            "Rejected events and bodies kept as dead letters",
            ["code"],
            registry=r,
        )
        self.feedback_unavailable = Counter(
            "segue_feedback_unavailable",
            "Batches answered 503 (event log down or slow)",
            registry=r,
        )
        self.request_latency = Histogram(
            "segue_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "segue_stage_seconds",
            "Latency of each recommendation stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_lock_wait = Histogram(
            "segue_stage_lock_wait_seconds",
            "Time each recommendation stage waited for the engine lock (other lists, the "
            "learner): part of segue_stage_seconds, not judged by the circuit breakers",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker_state = Gauge(
            "segue_breaker_state",
            "Circuit breaker of each stage: 0 closed, 1 half-open (probing), 2 open (fallback)",
            ["stage"],
            multiprocess_mode="liveall",
            registry=r,
        )
        self.breaker_transitions = Counter(
            "segue_breaker_transitions",
            "Changes of state of each stage's circuit breaker, by the state entered",
            ["stage", "state"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "segue_queue_wait_seconds",
            "How long a list waited for a worker thread (past SEGUE_SERVING_MAX_QUEUE_MS: shed)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.recommendations = Counter(
            "segue_recommendations",
            "Lists served, by fallback reason ('none' when the models answered)",
            ["fallback"],
            registry=r,
        )
        self.learner_events = Counter(
            "segue_learner_events", "Events the learner has learned", registry=r
        )
        self.learner_lag_events = Gauge(
            "segue_learner_lag_events",
            "Events in the log the learner has not learned yet",
            multiprocess_mode="liveall",
            registry=r,
        )
        self.learner_lag_seconds = Gauge(
            "segue_learner_lag_seconds",
            "Age (wall clock) of the oldest event in the log the learner has not learned",
            multiprocess_mode="liveall",
            registry=r,
        )
        self.snapshot_cut = Histogram(
            "segue_snapshot_cut_seconds",
            "How long each snapshot cut took the learner (writing, hashing, fsync, commit)",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=r,
        )
        self.model_info = Gauge(
            "segue_model_version_info",
            "The model version being served",
            ["version"],
            multiprocess_mode="liveall",
            registry=r,
        )

        self.gc_pauses = GCPauses()
        r.register(self.gc_pauses)

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        # every worker's counters, histograms and live gauges, and this process's GC pauses
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.shared_dir)
        registry.register(self.gc_pauses)
        return generate_latest(registry)

    def forget_dead_workers(self) -> list[int]:
        """In a worker of ``--workers N``: drop the live gauges of workers that are gone
        (uvicorn replaces a worker that dies, and has no hook for its death)."""
        if self.shared_dir is None:
            return []
        pids = set()
        for entry in os.scandir(self.shared_dir):  # gauge_<live mode>_<pid>.db
            kind, _, owner = entry.name.removesuffix(".db").rpartition("_")
            if kind.startswith("gauge_live") and owner.isdigit():
                pids.add(int(owner))
        dead = sorted(pid for pid in pids if not _alive(pid))
        for pid in dead:
            multiprocess.mark_process_dead(pid, self.shared_dir)
        return dead

    def set_model_version(self, version: str) -> None:
        """Say which snapshot version this process serves (the one gauge series at 1); the
        events learned since (``+N`` in answers) are left out: a label per event would be a
        new series each time."""
        if version == self._version:
            return
        if self._version is not None:
            # zeroed first: in multiprocess mode a cleared series keeps its last value
            self.model_info.labels(self._version).set(0)
        self.model_info.clear()
        self.model_info.labels(version).set(1)
        self._version = version


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


GC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GCPauses(Collector):
    """``segue_gc_pause_seconds{generation}``: how long each garbage collection held the
    process (every thread waits for it). Long full-collection pauses are what a frozen heap
    (online.heap) prevents; this is where an operator sees whether it does.

    Counted in plain lists from a ``gc.callbacks`` hook rather than a prometheus Histogram:
    the hook runs inside whatever allocation set the collector off, which may be inside the
    metrics library's own locked section, and a lock taken there could deadlock.
    """

    def __init__(self) -> None:
        self._counts = [[0] * (len(GC_BUCKETS) + 1) for _ in range(3)]
        self._sums = [0.0, 0.0, 0.0]
        self._started = 0.0
        self._watching = False

    def watch(self) -> None:
        if not self._watching:
            gc.callbacks.append(self._hook)
            self._watching = True

    def unwatch(self) -> None:
        if self._watching:
            gc.callbacks.remove(self._hook)
            self._watching = False

    def _hook(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = min(2, int(info.get("generation", 2)))
        self._counts[generation][bisect.bisect_left(GC_BUCKETS, took)] += 1
        self._sums[generation] += took

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "segue_gc_pause_seconds",
            "Garbage-collection pauses of this process, by generation",
            labels=["generation"],
        )
        for generation in range(3):
            counts, cumulative, buckets = self._counts[generation], 0, []
            for bound, n in zip((*GC_BUCKETS, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family
