"""Time-decayed sample weights for the online learners.

An event's weight is ``decay x type weight``. The decay halves every ``half_life_s`` seconds of
*event-time* age, measured against the learner's watermark (the latest event time it has
read), never against the wall clock: replaying a log gives exactly the weights the live
learner used.

>>> decay_weight(event_time=1_000.0, watermark=1_000.0 + 3_600.0, half_life_s=3_600.0)
0.5
>>> TypeWeights().weight("play", age_s=0.0, half_life_s=3_600.0)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from feedback.events import EVENT_TYPES

DEFAULT_TYPE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"impression": 1.0, "play": 1.0, "skip": 1.0}
)


def decay_weight(event_time: float, watermark: float, half_life_s: float) -> float:
    """``0.5 ** (age / half_life_s)`` with ``age = max(0, watermark - event_time)``.

    An event newer than the watermark (possible while the watermark lags a batch) has age 0,
    so its weight is 1, never above. ``half_life_s`` must be positive and finite.
    """
    if not (half_life_s > 0.0 and math.isfinite(half_life_s)):
        raise ValueError(f"half_life_s must be a positive finite number, got {half_life_s!r}")
    age = watermark - event_time
    if not age > 0.0:  # also catches NaN ages: they would poison every update
        return 1.0
    return 0.5 ** (age / half_life_s)


@dataclass(frozen=True, slots=True)
class TypeWeights:
    """Per event-type multipliers applied on top of the time decay.

    Unknown event types are an error rather than a silent weight: the event contract
    (:mod:`feedback.contract`) only admits :data:`feedback.events.EVENT_TYPES`.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS))

    def __post_init__(self) -> None:
        for name, value in self.weights.items():
            if name not in EVENT_TYPES:
                raise ValueError(f"unknown event type {name!r}; expected one of {EVENT_TYPES}")
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"type weight for {name!r} must be finite and >= 0, got {value!r}")
        # A frozen dataclass: store a read-only copy so callers cannot change it behind our back.
        object.__setattr__(
            self, "weights", MappingProxyType({**DEFAULT_TYPE_WEIGHTS, **self.weights})
        )

    def __getitem__(self, event_type: str) -> float:
        try:
            return self.weights[event_type]
        except KeyError:
            raise KeyError(f"no type weight for event type {event_type!r}") from None

    def weight(self, event_type: str, age_s: float, half_life_s: float) -> float:
        """The final sample weight of an event of ``event_type`` that is ``age_s`` old."""
        return self[event_type] * decay_weight(0.0, age_s, half_life_s)


def sample_weight(
    event_type: str,
    event_time: float,
    watermark: float,
    half_life_s: float,
    type_weights: TypeWeights | None = None,
) -> float:
    """Decay x type weight for one event: what the learner passes as ``w`` to a model."""
    tw = type_weights if type_weights is not None else TypeWeights()
    return tw[event_type] * decay_weight(event_time, watermark, half_life_s)
