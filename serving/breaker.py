"""A circuit breaker per recommendation stage: closed -> open -> half-open probes -> closed.

Written here rather than taken from a library: the well-kept Python breakers (pybreaker,
circuitbreaker) count only exceptions, while a stage here also "fails" by being slow, and
tests need an injected clock.

>>> t = [0.0]
>>> b = CircuitBreaker("rerank", failure_threshold=2, open_s=5.0, clock=lambda: t[0])
>>> b.record_failure(); b.record_failure(); b.state
'open'
>>> b.allow()
False
>>> t[0] = 6.0; b.allow(), b.state
(True, 'half_open')
>>> b.record_success(); b.state
'closed'
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Trips after ``failure_threshold`` consecutive failures; stays open ``open_s`` seconds;
    then lets ``half_open_probes`` requests through, and closes after that many successes."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        open_s: float = 10.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or half_open_probes < 1 or open_s <= 0:
            raise ValueError("failure_threshold and half_open_probes must be >= 1, open_s > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes_out = 0
        self._probe_successes = 0
        self.trips = 0

    @property
    def state(self) -> str:
        with self._lock:
            self._maybe_half_open()
            return self._state

    def _maybe_half_open(self) -> None:
        if self._state == OPEN and self._clock() - self._opened_at >= self.open_s:
            self._state = HALF_OPEN
            self._probes_out = 0
            self._probe_successes = 0

    def allow(self) -> bool:
        """May a request use this stage now? (In half-open, only the probes may.)"""
        with self._lock:
            self._maybe_half_open()
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and self._probes_out < self.half_open_probes:
                self._probes_out += 1
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            if self._state == HALF_OPEN:
                self._probe_successes += 1
                if self._probe_successes >= self.half_open_probes:
                    self._state = CLOSED
                    self._failures = 0
            else:
                self._failures = 0

    def record_failure(self) -> None:
        with self._lock:
            if self._state == HALF_OPEN:
                self._trip()
                return
            self._failures += 1
            if self._state == CLOSED and self._failures >= self.failure_threshold:
                self._trip()

    def _trip(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self.trips += 1
