"""Typed events: what clients post, what the log stores and what the learner reads.

Inside segue an event is a frozen dataclass, never a dict; pydantic models exist only at the
HTTP edge (``serving``) and are converted with :func:`Event.from_dict` after validation in
:mod:`feedback.contract`.

Event time is always epoch **seconds** as a float (``timestamp``); the wire format also accepts
RFC 3339 strings and epoch milliseconds, and the contract normalises both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

ContextValue = str | int | float | bool
Context = Mapping[str, ContextValue]

EventType = Literal["impression", "play", "skip"]
EVENT_TYPES: tuple[str, ...] = ("impression", "play", "skip")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a listener saw or did.

    ``request_id`` names the list (a :class:`Decision`) an event came from; it is ``None`` for
    organic plays. ``position`` is the 0-based slot of an impression.
    """

    event_id: str
    type: str
    user_id: str
    item_id: str
    timestamp: float
    request_id: str | None = None
    position: int | None = None
    played_ms: int | None = None
    duration_ms: int | None = None
    context: Context = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict without ``None`` fields (the log's stored form)."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "timestamp": self.timestamp,
        }
        for name in ("request_id", "position", "played_ms", "duration_ms"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.context:
            out["context"] = dict(self.context)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Build an event from an already validated mapping (see :mod:`feedback.contract`)."""
        return cls(
            event_id=data["event_id"],
            type=data["type"],
            user_id=data["user_id"],
            item_id=data["item_id"],
            timestamp=float(data["timestamp"]),
            request_id=data.get("request_id"),
            position=data.get("position"),
            played_ms=data.get("played_ms"),
            duration_ms=data.get("duration_ms"),
            context=dict(data.get("context") or {}),
        )


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as stored in the event log: its offset orders the learner's reading."""

    offset: int
    event: Event
    received_at: float


@dataclass(frozen=True, slots=True)
class SlateEntry:
    """One placed item of a served list, with the exact features the bandit saw."""

    item_id: str
    position: int
    score: float
    propensity: float
    explored: bool
    features: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """A served list: written by ``/v1/recommend``, read by the reward join.

    ``shared`` holds the listener/context features the bandit saw for the whole list; each
    :class:`SlateEntry` holds the per-slot action features, so the bandit learns from exactly
    what was served.
    """

    request_id: str
    user_id: str
    timestamp: float
    model_version: str
    slate: tuple[SlateEntry, ...]
    context: Context = field(default_factory=dict)
    shared: Mapping[str, float | str] = field(default_factory=dict)

    def entry(self, item_id: str) -> SlateEntry | None:
        """The slate entry for ``item_id``, or ``None`` when it was not placed."""
        for e in self.slate:
            if e.item_id == item_id:
                return e
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "user_id": self.user_id,
            "timestamp": self.timestamp,
            "model_version": self.model_version,
            "context": dict(self.context),
            "shared": dict(self.shared),
            "slate": [
                {
                    "item_id": e.item_id,
                    "position": e.position,
                    "score": e.score,
                    "propensity": e.propensity,
                    "explored": e.explored,
                    "features": dict(e.features),
                }
                for e in self.slate
            ],
        }

    def to_json(self) -> bytes:
        """:meth:`to_dict` as JSON bytes (the decision logs' stored form).

        orjson writes the dataclasses itself, in C, when every mapping is a plain dict (as the
        engine makes them): building the dicts first was most of a logged list's cost. The
        keys come in field order; readers look them up by name.
        """
        if (
            type(self.context) is dict
            and type(self.shared) is dict
            and all(type(e.features) is dict for e in self.slate)
        ):
            return orjson.dumps(self)
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        return cls(
            request_id=data["request_id"],
            user_id=data["user_id"],
            timestamp=float(data["timestamp"]),
            model_version=data["model_version"],
            context=dict(data.get("context") or {}),
            shared=dict(data.get("shared") or {}),
            slate=tuple(
                SlateEntry(
                    item_id=e["item_id"],
                    position=int(e["position"]),
                    score=float(e["score"]),
                    propensity=float(e["propensity"]),
                    explored=bool(e["explored"]),
                    features=dict(e.get("features") or {}),
                )
                for e in data["slate"]
            ),
        )
