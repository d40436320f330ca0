"""Prometheus metrics of one app instance (its own registry: no import-time globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The operator's view: intake, per-stage latency, fallbacks, learner lag."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
            registry=r,
        )
        self.learner_lag_seconds = Gauge(
            "segue_learner_lag_seconds",
            "Age (wall clock) of the oldest event in the log the learner has not learned",
            registry=r,
        )
        self.model_info = Gauge(
            "segue_model_version_info", "The model version being served", ["version"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
