"""A circuit breaker per recommendation stage: closed -> open -> half-open probes -> closed.

Written here rather than taken from a library: the well-kept Python breakers (pybreaker,
circuitbreaker) count only exceptions, while a stage here also "fails" by being slow, and
tests need an injected clock.

It judges a failure *rate* over the stage's last calls (a count-based sliding window, as
Resilience4j does), not a streak. Requests run side by side, so one stall of the process (a
garbage collection, the learner holding the interpreter) makes every request in flight slow
at once: a streak of five opened the breaker on such a blip, and the listener then got the
popular-now list for ten seconds. A broken or overloaded stage fails most calls and still trips.

>>> t = [0.0]
>>> b = CircuitBreaker("rerank", window=4, min_calls=2, open_s=5.0, clock=lambda: t[0])
>>> b.record_success(); b.record_failure(); b.state  # 1 of 2 failed: the rate is 0.5
'open'
>>> b.allow()
False
>>> t[0] = 6.0; b.allow(), b.state
(True, 'half_open')
>>> b.record_success(); b.state
'closed'
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Trips when at least ``failure_rate`` of the last ``window`` calls failed, once it has
    seen ``min_calls``; stays open ``open_s`` seconds; then lets ``half_open_probes`` requests
    through, and closes when fewer than ``failure_rate`` of them fail (opens again as soon as
    that can no longer happen).

    ``on_change(old, new)`` is called on every change of state (after the breaker's own lock
    is released), for metrics and logs: an operator must see when lists stop being the
    models'."""

    def __init__(
        self,
        name: str,
        *,
        window: int = 50,
        min_calls: int = 20,
        failure_rate: float = 0.5,
        open_s: float = 10.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        if window < 1 or half_open_probes < 1 or open_s <= 0:
            raise ValueError("window and half_open_probes must be >= 1, open_s > 0")
        if not 1 <= min_calls <= window:
            raise ValueError(f"min_calls must be in [1, window={window}], got {min_calls}")
        if not 0 < failure_rate <= 1:
            raise ValueError(f"failure_rate must be in (0, 1], got {failure_rate}")
        self.name = name
        self.window = window
        self.min_calls = min_calls
        self.failure_rate = failure_rate
        self.open_s = open_s
        self.half_open_probes = half_open_probes
        # probe failures that reopen it: the smallest count whose rate reaches failure_rate
        self._probe_failures_to_open = max(1, math.ceil(failure_rate * half_open_probes - 1e-9))
        self._clock = clock
        self._on_change = on_change
        self._changes: list[tuple[str, str]] = []  # made under the lock, reported after it
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._state = CLOSED
        self._calls: deque[bool] = deque(maxlen=window)  # True: a failure
        self._failures = 0  # failures among _calls
        self._opened_at = 0.0
        self._probes_out = 0
        self._probe_failures = 0
        self._probe_successes = 0
        self.trips = 0

    @property
    def state(self) -> str:
        with self._lock:
            self._maybe_half_open()
            state = self._state
        self._report()
        return state

    def _set(self, state: str) -> None:
        """Change state (holding the lock); the change is reported by :meth:`_report`."""
        if state != self._state:
            self._changes.append((self._state, state))
            self._state = state

    def _report(self) -> None:
        if not self._changes:  # read without the lock: a change is reported by its maker
            return
        with self._report_lock:  # changes are reported in the order they were made
            with self._lock:
                changes, self._changes = self._changes, []
            if self._on_change is not None:
                for old, new in changes:
                    self._on_change(old, new)

    @property
    def recent_failure_rate(self) -> float:
        """Failures among the calls in the window (0 when it holds none)."""
        with self._lock:
            return self._failures / len(self._calls) if self._calls else 0.0

    def _maybe_half_open(self) -> None:
        if self._state == OPEN and self._clock() - self._opened_at >= self.open_s:
            self._set(HALF_OPEN)
            self._probes_out = 0
            self._probe_failures = 0
            self._probe_successes = 0

    def allow(self) -> bool:
        """May a request use this stage now? (In half-open, only the probes may.)"""
        with self._lock:
            self._maybe_half_open()
            allowed = self._state == CLOSED
            if self._state == HALF_OPEN and self._probes_out < self.half_open_probes:
                self._probes_out += 1
                allowed = True
        self._report()
        return allowed

    def record_success(self) -> None:
        self._record(False)

    def record_failure(self) -> None:
        self._record(True)

    def _record(self, failed: bool) -> None:
        with self._lock:
            self._record_locked(failed)
        self._report()

    def _record_locked(self, failed: bool) -> None:
        if self._state == HALF_OPEN:
            if failed:
                self._probe_failures += 1
                if self._probe_failures >= self._probe_failures_to_open:
                    self._trip()
            else:
                self._probe_successes += 1
                needed = self.half_open_probes - self._probe_failures_to_open + 1
                if self._probe_successes >= needed:
                    self._set(CLOSED)
                    self._calls.clear()
                    self._failures = 0
            return
        if self._state == OPEN:
            return  # a call let in before the breaker opened, finishing late
        if len(self._calls) == self.window and self._calls[0]:
            self._failures -= 1
        self._calls.append(failed)
        self._failures += failed
        if (
            len(self._calls) >= self.min_calls
            and self._failures >= self.failure_rate * len(self._calls) - 1e-9
        ):
            self._trip()

    def _trip(self) -> None:
        self._set(OPEN)
        self._opened_at = self._clock()
        self._calls.clear()
        self._failures = 0
        self.trips += 1
