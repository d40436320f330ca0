"""The circuit breaker's states, on an injected clock."""

from __future__ import annotations

import pytest

from serving.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def make(**kw: object) -> tuple[CircuitBreaker, list[float]]:
    t = [0.0]
    return CircuitBreaker("s", clock=lambda: t[0], **kw), t  # type: ignore[arg-type]


def test_no_verdict_before_min_calls_then_trips_at_the_failure_rate():
    b, _ = make(window=10, min_calls=4, failure_rate=0.5)
    for _ in range(3):
        b.record_failure()
    assert b.state == CLOSED  # three calls: too few to judge
    b.record_failure()
    assert b.state == OPEN and not b.allow() and b.trips == 1


def test_a_burst_of_slow_calls_among_good_ones_does_not_open_it():
    # requests in flight together stall together: five in a row, among forty good calls,
    # is a blip (a streak of five opened the old breaker for ten seconds)
    b, _ = make(window=50, min_calls=20, failure_rate=0.5)
    for _ in range(20):
        b.record_success()
    for _ in range(5):
        b.record_failure()
    for _ in range(20):
        b.record_success()
    for _ in range(5):
        b.record_failure()
    assert b.state == CLOSED and b.trips == 0
    assert b.recent_failure_rate == pytest.approx(10 / 50)


def test_the_window_slides_old_failures_out():
    # the window, oldest first (F: failed, S: succeeded)
    b, _ = make(window=4, min_calls=4, failure_rate=0.75)
    for failed in [True, True, False, False]:
        b._record(failed)
    assert b.recent_failure_rate == 0.5  # F F S S
    b.record_success()
    assert b.recent_failure_rate == 0.25  # F S S S: the oldest failure slid out
    b.record_failure()
    b.record_failure()
    assert b.recent_failure_rate == 0.5 and b.state == CLOSED  # S S F F
    b.record_failure()
    assert b.state == OPEN  # S F F F: three of four


def test_a_stage_failing_every_call_trips_after_min_calls():
    b, _ = make(window=50, min_calls=20, failure_rate=0.5)
    for _ in range(19):
        b.record_failure()
    assert b.state == CLOSED
    b.record_failure()
    assert b.state == OPEN


def test_half_open_lets_probes_through_and_closes_on_a_majority_of_successes():
    b, t = make(window=2, min_calls=1, open_s=5, half_open_probes=3)
    b.record_failure()
    t[0] = 4.9
    assert not b.allow()
    t[0] = 5.0
    assert b.state == HALF_OPEN
    assert b.allow() and b.allow() and b.allow() and not b.allow()  # only the probes
    b.record_success()
    b.record_failure()
    assert b.state == HALF_OPEN  # one of each: undecided
    b.record_success()
    assert b.state == CLOSED and b.allow()
    assert b.recent_failure_rate == 0.0  # it starts over with an empty window


def test_failed_probes_open_it_again_as_soon_as_closing_is_out_of_reach():
    b, t = make(window=2, min_calls=1, open_s=5, half_open_probes=3)
    b.record_failure()
    t[0] = 6
    assert b.allow() and b.allow()
    b.record_failure()
    assert b.state == HALF_OPEN
    b.record_failure()  # two of three probes failed: the rate is past 0.5 whatever comes
    assert b.state == OPEN and b.trips == 2
    t[0] = 10.9
    assert not b.allow()
    t[0] = 11
    assert b.allow()


def test_a_late_call_finishing_while_open_changes_nothing():
    b, t = make(window=2, min_calls=1, open_s=5)
    b.record_failure()
    b.record_success()  # let in before it opened
    assert b.state == OPEN
    t[0] = 5
    assert b.allow()
    b.record_success()
    assert b.state == CLOSED


@pytest.mark.parametrize(
    "kw",
    [
        {"window": 0},
        {"open_s": 0},
        {"half_open_probes": 0},
        {"window": 5, "min_calls": 6},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
    ],
)
def test_bad_settings_are_refused(kw: dict[str, float]):
    with pytest.raises(ValueError, match="must be"):
        make(**kw)


def test_every_change_of_state_is_reported_in_order():
    t = [0.0]
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(
        "rerank",
        window=2,
        min_calls=1,
        open_s=5,
        half_open_probes=1,
        clock=lambda: t[0],
        on_change=lambda old, new: changes.append((old, new)),
    )
    b.record_success()
    assert changes == []  # no change, no report
    b.record_failure()
    t[0] = 5.0
    assert b.allow()
    b.record_failure()  # the probe fails: open again
    t[0] = 10.0
    assert b.allow()
    b.record_success()
    assert changes == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
