"""The promotion guard: a snapshot whose quality fell too far is written but not made current.

Each rule names a metric, whether higher is better, and the largest worsening tolerated
(absolute). Metric names the learner should report in a manifest:

- ``relevance_auc``: progressive-validation AUC of the relevance model since the parent
  (higher is better);
- ``relevance_logloss``: its log loss over the same span (lower is better);
- ``bandit_reward``: the bandit's estimated reward per slot since the parent (higher is
  better).

A rule is skipped when either side lacks the metric (say, AUC is undefined on a window without
a play), so a missing metric never blocks a snapshot.

>>> guard = PromotionGuard((GuardRule("relevance_auc", True, 0.05),))
>>> guard.check({"relevance_auc": 0.70}, {"relevance_auc": 0.78})
'relevance_auc fell 0.0800 (0.7800 -> 0.7000; max drop 0.05)'
>>> guard.check({"relevance_auc": 0.75}, {"relevance_auc": 0.78}) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HIGHER_IS_BETTER: dict[str, bool] = {
    "relevance_auc": True,
    "relevance_logloss": False,
    "bandit_reward": True,
}


@dataclass(frozen=True, slots=True)
class GuardRule:
    """Hold back when ``metric`` worsens by more than ``max_worsening`` against the baseline."""

    metric: str
    higher_is_better: bool
    max_worsening: float

    def check(self, new: Mapping[str, Any], baseline: Mapping[str, Any]) -> str | None:
        """The reason to hold back, or ``None`` if this rule passes."""
        a, b = _number(baseline.get(self.metric)), _number(new.get(self.metric))
        if a is None or b is None:
            return None
        worsening = (a - b) if self.higher_is_better else (b - a)
        if worsening <= self.max_worsening:
            return None
        verb, limit = ("fell", "max drop") if self.higher_is_better else ("rose", "max rise")
        return (
            f"{self.metric} {verb} {worsening:.4f} ({a:.4f} -> {b:.4f}; "
            f"{limit} {self.max_worsening:g})"
        )


@dataclass(frozen=True, slots=True)
class PromotionGuard:
    """A set of :class:`GuardRule`; an empty guard promotes everything."""

    rules: tuple[GuardRule, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any) -> PromotionGuard:
        """Rules from a :class:`~snapshots.settings.SnapshotSettings` (``None`` disables one)."""
        limits = {
            "relevance_auc": settings.max_auc_drop,
            "relevance_logloss": settings.max_logloss_rise,
            "bandit_reward": settings.max_reward_drop,
        }
        return cls(
            tuple(
                GuardRule(name, HIGHER_IS_BETTER[name], float(limit))
                for name, limit in limits.items()
                if limit is not None
            )
        )

    def check(self, new: Mapping[str, Any], baseline: Mapping[str, Any]) -> str | None:
        """Every failing rule's reason joined by ``"; "``, or ``None`` if all pass."""
        reasons = [r for rule in self.rules if (r := rule.check(new, baseline)) is not None]
        return "; ".join(reasons) or None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
