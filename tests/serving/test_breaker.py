"""The circuit breaker's states, on an injected clock."""

from __future__ import annotations

import pytest

from serving.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def make(**kw: object) -> tuple[CircuitBreaker, list[float]]:
    t = [0.0]
    return CircuitBreaker("s", clock=lambda: t[0], **kw), t  # type: ignore[arg-type]


def test_trips_after_consecutive_failures_only():
    b, _ = make(failure_threshold=3)
    b.record_failure()
    b.record_failure()
    b.record_success()  # the streak is broken
    b.record_failure()
    b.record_failure()
    assert b.state == CLOSED
    b.record_failure()
    assert b.state == OPEN and not b.allow() and b.trips == 1


def test_half_open_lets_probes_through_and_closes_on_success():
    b, t = make(failure_threshold=1, open_s=5, half_open_probes=2)
    b.record_failure()
    t[0] = 4.9
    assert not b.allow()
    t[0] = 5.0
    assert b.state == HALF_OPEN
    assert b.allow() and b.allow() and not b.allow()  # only the probes
    b.record_success()
    assert b.state == HALF_OPEN
    b.record_success()
    assert b.state == CLOSED and b.allow()


def test_a_failed_probe_opens_it_again():
    b, t = make(failure_threshold=1, open_s=5)
    b.record_failure()
    t[0] = 6
    assert b.allow()
    b.record_failure()
    assert b.state == OPEN and b.trips == 2
    t[0] = 10.9
    assert not b.allow()
    t[0] = 11
    assert b.allow()


@pytest.mark.parametrize("kw", [{"failure_threshold": 0}, {"open_s": 0}, {"half_open_probes": 0}])
def test_bad_settings_are_refused(kw: dict[str, float]):
    with pytest.raises(ValueError, match="must be"):
        make(**kw)
