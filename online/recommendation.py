"""What the engine answers: a ranked, scored list with the propensities it was drawn with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    """One placed item. ``propensity`` is the probability the policy had of placing it there."""

    item_id: str
    score: float
    propensity: float
    explored: bool = False


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A served list. ``fallback`` is ``None`` or the reason the list came from a fallback."""

    request_id: str
    model_version: str
    items: tuple[RecommendedItem, ...]
    fallback: str | None = None
    took_ms: float = 0.0

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]
