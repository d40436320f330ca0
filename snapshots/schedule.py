"""When the learner should cut the next snapshot: every N events or T seconds.

>>> s = CutSchedule(every_events=3, every_seconds=60.0, now=0.0)
>>> s.record(2); s.due(now=10.0)
False
>>> s.record(1); s.due(now=10.0)
True
>>> s.reset(now=10.0); s.record(1); s.due(now=75.0)
True
"""

from __future__ import annotations

import time


class CutSchedule:
    """Counts learned events and elapsed time since the last cut.

    Time alone never makes a cut due: with no new event there is nothing new to save. Pass
    ``now`` (epoch seconds) to drive it from a simulated clock; it defaults to the wall clock.
    """

    def __init__(self, every_events: int, every_seconds: float, *, now: float | None = None):
        if every_events < 1 or every_seconds <= 0:
            raise ValueError("every_events must be >= 1 and every_seconds > 0")
        self.every_events = every_events
        self.every_seconds = every_seconds
        self._events = 0
        self._since = time.time() if now is None else now

    @classmethod
    def from_settings(cls, settings: object) -> CutSchedule:
        """The schedule of a :class:`~snapshots.settings.SnapshotSettings`."""
        return cls(settings.every_events, settings.every_seconds)  # type: ignore[attr-defined]

    @property
    def events(self) -> int:
        """Events learned since the last cut."""
        return self._events

    def record(self, n: int = 1) -> None:
        """Count ``n`` newly learned events."""
        self._events += n

    def due(self, now: float | None = None) -> bool:
        """Whether a snapshot should be cut now."""
        if self._events == 0:
            return False
        now = time.time() if now is None else now
        return self._events >= self.every_events or now - self._since >= self.every_seconds

    def reset(self, now: float | None = None) -> None:
        """Start counting afresh after a cut."""
        self._events = 0
        self._since = time.time() if now is None else now
