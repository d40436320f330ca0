"""The event contract: every way an event can be wrong has its own code and reason."""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedback.contract import CONTRACT_CODES, ContractLimits, validate_events
from feedback.events import Event

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z
NOW_MS = int(NOW * 1000)


def play(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "e1",
        "type": "play",
        "user_id": "u1",
        "item_id": "t1",
        "timestamp": NOW_MS,
        "played_ms": 40_000,
        "duration_ms": 200_000,
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


INVALID = [
    (play(event_id=...), "missing_field", "missing field 'event_id'"),
    (play(user_id=...), "missing_field", "missing field 'user_id'"),
    (play(colour="red"), "unknown_field", "unknown field 'colour'"),
    (play(type="like"), "unknown_type", "type 'like' is not one of impression, play, skip"),
    (play(user_id=42), "wrong_type", "user_id: Input should be a valid string"),
    (play(position="3"), "wrong_type", "position: Input should be a valid integer"),
    (play(played_ms=math.nan), "invalid_number", "played_ms: NaN and infinite numbers"),
    (play(duration_ms=math.inf), "invalid_number", "duration_ms: NaN and infinite numbers"),
    (play(timestamp=math.nan), "invalid_number", "timestamp: NaN and infinite numbers"),
    (play(context={"x": math.inf}), "invalid_number", "x: NaN and infinite numbers"),
    (play(played_ms=-5), "out_of_range", "played_ms: Input should be greater than or equal to 0"),
    (play(duration_ms=-1), "out_of_range", "duration_ms: Input should be greater than or equal"),
    (
        play(played_ms=205_000),
        "played_exceeds_duration",
        "played_ms 205000 exceeds duration_ms 200000 by more than 2000 ms",
    ),
    (play(timestamp=1000), "timestamp_out_of_range", "timestamp is before 2000-01-01"),
    (
        play(timestamp="1999-12-31T23:59:59Z"),
        "timestamp_out_of_range",
        "timestamp is before 2000-01-01",
    ),
    (
        play(timestamp=NOW_MS + 301_000),
        "timestamp_out_of_range",
        "timestamp is 301 s in the future; at most 300 s is allowed",
    ),
    (play(timestamp="2026-11-19T10:00:00"), "invalid_timestamp", "has no UTC offset"),
    (play(timestamp="yesterday"), "invalid_timestamp", "is not an RFC 3339 date-time"),
    (play(timestamp=True), "invalid_timestamp", "must be an RFC 3339 string or epoch millis"),
    (play(event_id=""), "invalid_id", "event_id: must not be empty"),
    (play(item_id="x" * 129), "invalid_id", "item_id: is longer than 128 characters"),
    (play(user_id="a\nb"), "invalid_id", "user_id: contains control characters"),
    (play(request_id="r\x00"), "invalid_id", "request_id: contains control characters"),
    (
        play(context={f"k{i}": i for i in range(33)}),
        "too_many_context_keys",
        "has 33 keys; the limit is 32",
    ),
    (play(context={"k": [1, 2]}), "invalid_context", "value of 'k' is a list"),
    (play(context={"k": {"nested": 1}}), "invalid_context", "value of 'k' is a dict"),
    (play(context="ios"), "wrong_type", "context: must be an object"),
    (play(played_ms=...), "missing_field", "a play event needs played_ms"),
    (
        play(type="impression", played_ms=..., duration_ms=...),
        "missing_field",
        "an impression event needs position",
    ),
    (
        play(type="impression", position=0),
        "field_not_allowed",
        "an impression event does not take duration_ms, played_ms",
    ),
    ("not an object", "not_an_object", "Input should be a valid dictionary"),
    (None, "not_an_object", "Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("raw", "code", "reason"), INVALID)
def test_each_invalid_event_is_rejected_with_its_reason(raw: object, code: str, reason: str):
    good, bad = validate_events([raw], now=NOW)
    assert good == []
    assert len(bad) == 1
    assert bad[0].index == 0
    assert bad[0].code == code
    assert reason in bad[0].reason


def test_every_code_a_rejection_uses_is_documented():
    for raw, code, _ in INVALID:
        _, bad = validate_events([raw], now=NOW)
        assert bad[0].code in CONTRACT_CODES, code


def test_a_partial_batch_keeps_its_good_events_in_order():
    batch = [play(event_id="a"), play(event_id="b", played_ms=-1), play(event_id="c")]
    good, bad = validate_events(batch, now=NOW)
    assert [e.event_id for e in good] == ["a", "c"]
    assert [(r.index, r.event_id, r.code) for r in bad] == [(1, "b", "out_of_range")]


def test_rfc3339_and_epoch_milliseconds_name_the_same_instant():
    good, bad = validate_events(
        [play(event_id="a", timestamp="2026-11-18T12:06:40+01:00"), play(event_id="b")],
        now=NOW,
    )
    assert bad == []
    assert good[0].timestamp == good[1].timestamp == NOW


def test_limits_are_configurable():
    _, bad = validate_events(
        [play(context={"a": 1, "b": 2})], now=NOW, limits=ContractLimits(max_context_keys=1)
    )
    assert bad[0].code == "too_many_context_keys"
    good, _ = validate_events(
        [play(played_ms=205_000)], now=NOW, limits=ContractLimits(played_tolerance_ms=10_000)
    )
    assert len(good) == 1


ids = st.text(alphabet=string.ascii_letters + string.digits + "-_:.", min_size=1, max_size=40)
context_values = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(["impression", "play", "skip"]))
    event: dict[str, object] = {
        "event_id": draw(ids),
        "type": kind,
        "user_id": draw(ids),
        "item_id": draw(ids),
        "timestamp": draw(st.integers(min_value=946_684_800_000, max_value=NOW_MS)),
        "context": draw(st.dictionaries(ids, context_values, max_size=5)),
    }
    if kind == "impression":
        event["position"] = draw(st.integers(0, 99))
        if draw(st.booleans()):
            event["request_id"] = draw(ids)
    else:
        duration = draw(st.integers(1, 600_000))
        if kind == "play" or draw(st.booleans()):
            event["played_ms"] = draw(st.integers(0, duration))
        event["duration_ms"] = duration
        if draw(st.booleans()):
            event["request_id"] = draw(ids)
    return event


@given(st.lists(valid_events(), max_size=20))
def test_valid_events_round_trip_through_the_stored_form(raws: list[dict[str, object]]):
    good, bad = validate_events(raws, now=NOW)
    assert bad == []
    assert len(good) == len(raws)
    for raw, event in zip(raws, good, strict=True):
        assert event.timestamp == pytest.approx(int(raw["timestamp"]) / 1000)  # type: ignore[call-overload]
        stored = event.to_dict()
        stored["timestamp"] = round(event.timestamp * 1000)
        again, rejected = validate_events([stored], now=NOW)
        assert rejected == []
        assert again[0] == event
        assert Event.from_dict(event.to_dict()) == event
