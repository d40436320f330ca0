"""The reward function: what an outcome of an impressed slot is worth to the learners.

A :class:`RewardFunction` maps an :class:`~feedback.events.Event` to a reward in ``[0, 1]``
or to ``None``, which means "this event is not an outcome" (an impression). The built-in
mapping:

- ``play``: 1.0 when ``played_ms >= min(min_play_ms, completion_fraction * duration_ms)``;
  a shorter play earns the fraction played, ``played_ms / duration_ms`` (or
  ``played_ms / min_play_ms`` when the duration is unknown); a play that reports no
  ``played_ms`` at all counts as a full play (``unmeasured_play_reward``);
- ``skip``: 0.0, however long the listener stayed before skipping;
- ``impression``: ``None``;
- an impressed slot with no outcome by the end of its attribution window earns
  ``default_reward`` (0.0); the join in :mod:`feedback.attribution` applies it.

A new event type gets a reward by adding a mapping ``{type: callable(event) -> float | None}``
through ``extra``; it may also override a built-in type.

>>> from feedback.events import Event
>>> reward = RewardFunction()
>>> play = Event("e1", "play", "u1", "i1", 0.0, played_ms=12_000, duration_ms=200_000)
>>> round(reward(play), 3)
0.06
>>> reward(Event("e2", "play", "u1", "i1", 0.0, played_ms=45_000, duration_ms=200_000))
1.0
>>> like = RewardFunction(extra={"like": lambda event: 1.0})
>>> like(Event("e3", "like", "u1", "i1", 0.0))
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from feedback.events import Event

RewardMapping = Callable[[Event], float | None]


class UnknownEventType(KeyError):
    """The reward function has no mapping for an event's type."""


@dataclass(frozen=True)
class RewardFunction:
    """A configurable event -> reward mapping (see the module docstring for the defaults).

    ``max_reward`` is the best reward any outcome can earn: the join treats a slot that has
    reached it as final and emits its samples at once instead of waiting for the window to
    close.
    """

    min_play_ms: int = 30_000
    completion_fraction: float = 0.5
    default_reward: float = 0.0
    skip_reward: float = 0.0
    unmeasured_play_reward: float = 1.0
    max_reward: float = 1.0
    extra: Mapping[str, RewardMapping] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.min_play_ms <= 0:
            raise ValueError(f"min_play_ms must be positive, got {self.min_play_ms}")
        if not 0.0 < self.completion_fraction <= 1.0:
            raise ValueError(
                f"completion_fraction must be in (0, 1], got {self.completion_fraction}"
            )
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def mappings(self) -> Mapping[str, RewardMapping]:
        """Every event type this function knows, with its mapping."""
        built_in: dict[str, RewardMapping] = {
            "impression": _no_outcome,
            "play": self.play,
            "skip": self.skip,
        }
        built_in.update(self.extra)
        return built_in

    def knows(self, event_type: str) -> bool:
        """Whether ``event_type`` has a mapping (built in or through ``extra``)."""
        return event_type in self.extra or event_type in ("impression", "play", "skip")

    def __call__(self, event: Event) -> float | None:
        """The reward of ``event``, or ``None`` when it is not an outcome.

        Raises :class:`UnknownEventType` for a type with no mapping.
        """
        mapping = self.extra.get(event.type)
        if mapping is not None:
            return mapping(event)
        if event.type == "play":
            return self.play(event)
        if event.type == "skip":
            return self.skip(event)
        if event.type == "impression":
            return None
        raise UnknownEventType(event.type)

    def play(self, event: Event) -> float:
        """The reward of a play (see the module docstring)."""
        played = event.played_ms
        if played is None:
            return self.unmeasured_play_reward
        played = max(played, 0)
        duration = event.duration_ms if event.duration_ms and event.duration_ms > 0 else None
        threshold = float(self.min_play_ms)
        if duration is not None:
            threshold = min(threshold, self.completion_fraction * duration)
        if played >= threshold:
            return 1.0
        return min(played / (duration if duration is not None else self.min_play_ms), 1.0)

    def skip(self, event: Event) -> float:
        """The reward of a skip: ``skip_reward`` (0.0), whatever was played before it."""
        return self.skip_reward


def _no_outcome(event: Event) -> None:
    return None
