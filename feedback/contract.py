"""The event data contract: what a client may post to ``/v1/feedback``, and why not.

Validation is per event, so one bad event never costs its batch: :func:`validate_events` returns
the good events as :class:`~feedback.events.Event` objects and, for every bad one, a
:class:`Rejection` holding a stable machine-readable ``code`` and a sentence for people.

The wire model :class:`EventIn` is pydantic (it is also what the OpenAPI page shows). The whole
batch is validated in one call (fast when all is well); only when that fails are the events
validated one by one to find which are bad.

>>> good, bad = validate_events(
...     [
...         {"event_id": "e1", "type": "play", "user_id": "u1", "item_id": "t1",
...          "timestamp": "2026-11-01T12:00:00+00:00", "played_ms": 31000, "duration_ms": 200000},
...         {"event_id": "e2", "type": "play", "user_id": "u1", "item_id": "t1",
...          "timestamp": 1000},
...     ],
...     now=1_800_000_000.0,
... )
>>> [e.event_id for e in good], [(r.index, r.code) for r in bad]
(['e1'], [(1, 'timestamp_out_of_range')])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from feedback.events import Event

# Which fields each event type requires, and the ones it may carry. A new type is one line
# here plus a reward mapping in ``feedback.rewards``.
EVENT_TYPE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "impression": (frozenset({"position"}), frozenset({"position", "request_id"})),
    "play": (
        frozenset({"played_ms"}),
        frozenset({"played_ms", "duration_ms", "request_id", "position"}),
    ),
    "skip": (frozenset(), frozenset({"played_ms", "duration_ms", "request_id", "position"})),
}
_OPTIONAL_FIELDS = frozenset({"request_id", "position", "played_ms", "duration_ms"})

EARLIEST_TIMESTAMP = 946_684_800.0  # 2000-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class ContractLimits:
    """Bounds the contract enforces; the feedback settings carry the configured values."""

    max_context_keys: int = 32
    max_context_key_length: int = 64
    max_context_value_length: int = 256
    max_future_s: float = 300.0
    played_tolerance_ms: int = 2000


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the event at ``index`` of a batch was not accepted."""

    index: int
    event_id: str | None
    code: str
    reason: str


def _fail(code: str, message: str) -> PydanticCustomError:
    """A contract error whose message is final (no template fields left to fill)."""
    return PydanticCustomError(code, "{m}", {"m": message})


MAX_ID_LENGTH = 128
# Ids are checked in pydantic's core (fast): 1..128 printable characters.
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$"),
]


def _parse_timestamp(value: Any) -> float:
    """RFC 3339 with an offset, or epoch milliseconds, to epoch seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _fail("invalid_timestamp", "must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _fail(
                "invalid_timestamp", f"is not an RFC 3339 date-time: {value[:64]!r}"
            ) from None
        if parsed.tzinfo is None:
            raise _fail("invalid_timestamp", f"has no UTC offset (use Z or +hh:mm): {value[:64]!r}")
        return parsed.timestamp()
    if not math.isfinite(value):
        raise _fail("invalid_number", "NaN and infinite numbers are not allowed")
    return float(value) / 1000.0


def _check_context(value: Any, info: ValidationInfo) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail("wrong_type", "must be an object of strings, numbers and booleans")
    limits: ContractLimits = (info.context or {}).get("limits", _DEFAULT_LIMITS)
    if len(value) > limits.max_context_keys:
        raise _fail(
            "too_many_context_keys",
            f"has {len(value)} keys; the limit is {limits.max_context_keys}",
        )
    for key, item in value.items():
        if not key or len(key) > limits.max_context_key_length or not key.isprintable():
            raise _fail("invalid_context", f"key {key[:80]!r} is empty, too long or not printable")
        if isinstance(item, str):
            if len(item) > limits.max_context_value_length:
                raise _fail(
                    "invalid_context",
                    f"value of {key!r} is longer than {limits.max_context_value_length} characters",
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _fail("invalid_number", f"{key}: NaN and infinite numbers are not allowed")
        elif not isinstance(item, int):  # bool is an int
            raise _fail(
                "invalid_context",
                f"value of {key!r} is a {type(item).__name__}; "
                "only strings, numbers and booleans are allowed (a flat map)",
            )
    return value


_DEFAULT_LIMITS = ContractLimits()

CONTRACT_CODES = frozenset(
    {
        "invalid_timestamp",
        "invalid_number",
        "invalid_context",
        "too_many_context_keys",
        "unknown_type",
        "timestamp_out_of_range",
        "missing_field",
        "field_not_allowed",
        "played_exceeds_duration",
        "wrong_type",
        "unknown_field",
        "out_of_range",
        "not_an_object",
        "invalid_id",
    }
)
"""Every ``code`` a :class:`Rejection` can carry, besides pydantic's folded ones below."""


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class EventIn(BaseModel):
    """One feedback event as a client posts it.

    ``timestamp`` is RFC 3339 with an offset (``2026-11-22T08:00:00Z``) or epoch milliseconds.
    ``request_id`` names the list the event came from (omit it for organic plays); ``position``
    is the 0-based slot of an impression; ``played_ms``/``duration_ms`` go with plays and skips;
    ``context`` is a small flat map of strings, numbers and booleans.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    event_id: Id
    type: str = Field(description="impression, play or skip")
    user_id: Id
    item_id: Id
    timestamp: Annotated[float, BeforeValidator(_parse_timestamp)] = Field(
        json_schema_extra={"examples": ["2026-11-22T08:00:00Z", 1795334400000]}
    )
    request_id: Id | None = None
    position: Annotated[int, Field(ge=0, le=10_000)] | None = None
    played_ms: Annotated[int, Field(ge=0)] | None = None
    duration_ms: Annotated[int, Field(ge=0)] | None = None
    # typed as Any for pydantic: _check_context checks every value itself (one pass, not two)
    context: Annotated[dict[str, Any], BeforeValidator(_check_context)] = Field(
        default_factory=dict,
        json_schema_extra={"additionalProperties": {"type": ["string", "number", "boolean"]}},
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> EventIn:
        ctx = info.context or {}
        limits: ContractLimits = ctx.get("limits", _DEFAULT_LIMITS)
        fields = EVENT_TYPE_FIELDS.get(self.type)
        if fields is None:
            raise _fail(
                "unknown_type",
                f"type {self.type[:40]!r} is not one of {', '.join(sorted(EVENT_TYPE_FIELDS))}",
            )
        if self.timestamp < EARLIEST_TIMESTAMP:
            raise _fail("timestamp_out_of_range", "timestamp is before 2000-01-01")
        now = ctx.get("now")
        if now is not None and self.timestamp > now + limits.max_future_s:
            raise _fail(
                "timestamp_out_of_range",
                f"timestamp is {self.timestamp - now:.0f} s in the future; "
                f"at most {limits.max_future_s:.0f} s is allowed",
            )
        required, allowed = fields
        values = self.__dict__
        present = {name for name in _OPTIONAL_FIELDS if values[name] is not None}
        if missing := required - present:
            raise _fail(
                "missing_field",
                f"{_article(self.type)} {self.type} event needs {', '.join(sorted(missing))}",
            )
        if extra := present - allowed:
            raise _fail(
                "field_not_allowed",
                f"{_article(self.type)} {self.type} event does not take {', '.join(sorted(extra))}",
            )
        if (
            self.played_ms is not None
            and self.duration_ms is not None
            and self.played_ms > self.duration_ms + limits.played_tolerance_ms
        ):
            raise _fail(
                "played_exceeds_duration",
                f"played_ms {self.played_ms} exceeds duration_ms {self.duration_ms} "
                f"by more than {limits.played_tolerance_ms} ms",
            )
        return self

    def to_event(self) -> Event:
        return Event(**self.__dict__)


_ONE = TypeAdapter(EventIn)
_MANY = TypeAdapter(list[EventIn])

# pydantic's built-in error types, folded into the contract's codes.
_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "finite_number": "invalid_number",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "model_type": "not_an_object",
    "model_attributes_type": "not_an_object",
    "dict_type": "not_an_object",
    "string_too_short": "invalid_id",
    "string_too_long": "invalid_id",
    "string_pattern_mismatch": "invalid_id",
}


def _rejection(index: int, raw: Any, error: ValidationError) -> Rejection:
    first = error.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind in CONTRACT_CODES:
        code = kind
    else:
        code = _CODES.get(kind) or ("wrong_type" if kind.endswith(("_type", "_parsing")) else kind)
    message = first["msg"]
    if code == "missing_field" and kind == "missing":
        reason = f"missing field {loc!r}"
    elif code == "unknown_field":
        reason = f"unknown field {loc!r}"
    elif kind == "string_pattern_mismatch":
        reason = f"{loc}: contains control characters"
    elif kind == "string_too_short":
        reason = f"{loc}: must not be empty"
    elif kind == "string_too_long":
        reason = f"{loc}: is longer than {MAX_ID_LENGTH} characters"
    elif isinstance(first.get("input"), float) and not math.isfinite(first["input"]):
        code, reason = "invalid_number", f"{loc}: NaN and infinite numbers are not allowed"
    else:
        reason = f"{loc}: {message}" if loc else message
    event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
    if not isinstance(event_id, str):
        event_id = None
    elif len(event_id) > MAX_ID_LENGTH:
        event_id = event_id[:MAX_ID_LENGTH]
    return Rejection(index=index, event_id=event_id, code=code, reason=reason)


def validate_events(
    raw_events: Sequence[Any], *, now: float, limits: ContractLimits | None = None
) -> tuple[list[Event], list[Rejection]]:
    """Split a batch into valid :class:`Event` objects and :class:`Rejection` records.

    ``now`` (epoch seconds, the server's clock) bounds how far in the future a timestamp may be.
    """
    context = {"now": now, "limits": limits or _DEFAULT_LIMITS}
    try:
        return [e.to_event() for e in _MANY.validate_python(raw_events, context=context)], []
    except ValidationError:
        pass
    good: list[Event] = []
    bad: list[Rejection] = []
    for index, raw in enumerate(raw_events):
        try:
            good.append(_ONE.validate_python(raw, context=context).to_event())
        except ValidationError as exc:
            bad.append(_rejection(index, raw, exc))
    return good, bad
