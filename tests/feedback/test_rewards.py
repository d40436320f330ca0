"""The reward function: the default mapping, its configuration and new event types."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.events import Event
from feedback.rewards import RewardFunction, UnknownEventType


def play(played_ms: int | None, duration_ms: int | None = None) -> Event:
    return Event("e", "play", "u", "i", 0.0, played_ms=played_ms, duration_ms=duration_ms)


@pytest.mark.parametrize(
    ("played_ms", "duration_ms", "expected"),
    [
        (30_000, 200_000, 1.0),  # the 30 s threshold
        (29_999, 200_000, 29_999 / 200_000),  # just short: the fraction played
        (20_000, 40_000, 1.0),  # half of a short track is enough
        (19_000, 40_000, 19_000 / 40_000),
        (15_000, None, 0.5),  # unknown duration: a fraction of 30 s
        (45_000, None, 1.0),
        (0, 200_000, 0.0),
        (None, 200_000, 1.0),  # no played_ms reported: counted as a full play
        (10_000, 0, 10_000 / 30_000),  # a zero duration is treated as unknown
    ],
)
def test_play_reward(played_ms: int | None, duration_ms: int | None, expected: float) -> None:
    assert RewardFunction()(play(played_ms, duration_ms)) == pytest.approx(expected)


def test_skip_is_zero_and_impression_is_no_outcome() -> None:
    reward = RewardFunction()
    skip = Event("e", "skip", "u", "i", 0.0, played_ms=60_000, duration_ms=100_000)
    assert reward(skip) == 0.0
    assert reward(Event("e", "impression", "u", "i", 0.0, position=3)) is None
    assert reward.default_reward == 0.0


def test_thresholds_are_configurable() -> None:
    reward = RewardFunction(min_play_ms=10_000, completion_fraction=1.0)
    assert reward(play(10_000, 200_000)) == 1.0
    assert reward(play(5_000, 8_000)) == 5_000 / 8_000
    assert reward(play(8_000, 8_000)) == 1.0


def test_new_event_types_and_overrides() -> None:
    reward = RewardFunction(extra={"like": lambda e: 1.0, "skip": lambda e: 0.25})
    assert reward.knows("like") and reward.knows("play") and not reward.knows("share")
    assert reward(Event("e", "like", "u", "i", 0.0)) == 1.0
    assert reward(Event("e", "skip", "u", "i", 0.0)) == 0.25
    assert set(reward.mappings) == {"impression", "play", "skip", "like"}
    with pytest.raises(UnknownEventType, match="share"):
        reward(Event("e", "share", "u", "i", 0.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_play_ms": 0}, "min_play_ms must be positive"),
        ({"completion_fraction": 0.0}, "completion_fraction must be in"),
        ({"completion_fraction": 1.5}, "completion_fraction must be in"),
    ],
)
def test_invalid_configuration(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RewardFunction(**kwargs)


@settings(derandomize=True, max_examples=300)
@given(
    st.one_of(st.none(), st.integers(-1000, 10_000_000)),
    st.one_of(st.none(), st.integers(0, 10_000_000)),
)
def test_play_reward_is_in_unit_interval_and_monotone(
    played_ms: int | None, duration_ms: int | None
) -> None:
    reward = RewardFunction()
    value = reward(play(played_ms, duration_ms))
    assert value is not None and 0.0 <= value <= 1.0
    if played_ms is not None:
        assert reward(play(played_ms + 1000, duration_ms)) >= value
