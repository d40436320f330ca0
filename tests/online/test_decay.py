"""Time-decayed sample weights: hand-computed values and the rules around them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from online.decay import TypeWeights, decay_weight, sample_weight

HOUR = 3_600.0


@pytest.mark.parametrize(
    ("event_time", "watermark", "half_life", "expected"),
    [
        (100.0, 100.0, HOUR, 1.0),  # age 0
        (0.0, HOUR, HOUR, 0.5),  # one half-life
        (0.0, 2 * HOUR, HOUR, 0.25),  # two half-lives
        (0.0, 5_400.0, 1_800.0, 0.125),  # three half-lives
        (0.0, 1_800.0, HOUR, 1 / math.sqrt(2)),  # half a half-life
        (500.0, 100.0, HOUR, 1.0),  # newer than the watermark: age clamps to 0
    ],
)
def test_decay_weight_hand_computed(event_time, watermark, half_life, expected):
    assert decay_weight(event_time, watermark, half_life) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("half_life", [0.0, -1.0, math.inf, math.nan])
def test_decay_weight_rejects_bad_half_life(half_life):
    with pytest.raises(ValueError, match="half_life_s"):
        decay_weight(0.0, 1.0, half_life)


@given(
    t1=st.floats(0, 1e9),
    t2=st.floats(0, 1e9),
    watermark=st.floats(0, 1e9),
    half_life=st.floats(1.0, 1e7),
)
def test_older_events_never_weigh_more(t1, t2, watermark, half_life):
    older, newer = min(t1, t2), max(t1, t2)
    w_old = decay_weight(older, watermark, half_life)
    w_new = decay_weight(newer, watermark, half_life)
    assert 0.0 <= w_old <= w_new <= 1.0


def test_weight_depends_on_watermark_not_wall_clock():
    # A replay an hour later computes the same weight: only event times enter.
    assert decay_weight(1_000.0, 1_000.0 + HOUR, HOUR) == decay_weight(
        1_000.0, 1_000.0 + HOUR, HOUR
    )
    assert decay_weight(1_000.0, 1_000.0 + HOUR, HOUR) == 0.5


def test_default_type_weights_are_one():
    tw = TypeWeights()
    assert (tw["impression"], tw["play"], tw["skip"]) == (1.0, 1.0, 1.0)


def test_final_weight_is_decay_times_type_weight():
    tw = TypeWeights({"skip": 0.5})
    assert tw["play"] == 1.0  # unspecified types keep their default
    assert sample_weight("skip", 0.0, 2 * HOUR, HOUR, tw) == pytest.approx(0.5 * 0.25)
    assert sample_weight("play", 0.0, 2 * HOUR, HOUR, tw) == pytest.approx(0.25)
    assert tw.weight("skip", age_s=HOUR, half_life_s=HOUR) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("weights", "match"),
    [({"like": 1.0}, "unknown event type"), ({"play": -1.0}, "finite and >= 0")],
)
def test_type_weights_reject_bad_tables(weights, match):
    with pytest.raises(ValueError, match=match):
        TypeWeights(weights)


def test_type_weights_are_read_only():
    tw = TypeWeights({"play": 2.0})
    with pytest.raises(TypeError):
        tw.weights["play"] = 3.0  # type: ignore[index]
    with pytest.raises(KeyError, match="like"):
        tw["like"]
