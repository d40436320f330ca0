"""Settings of the snapshot store (environment prefix ``SEGUE_SNAPSHOT_``).

>>> s = SnapshotSettings(keep=5)
>>> s.keep, s.max_auc_drop
(5, 0.05)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from snapshots.store import default_dir


class SnapshotSettings(BaseSettings):
    """How often snapshots are cut, how many are kept and when one is held back."""

    model_config = SettingsConfigDict(
        env_prefix="SEGUE_SNAPSHOT_", extra="forbid", use_attribute_docstrings=True
    )

    dir: Path | None = None
    """Snapshot directory; unset means ``$SEGUE_DATA_DIR/snapshots`` (``./segue-data``)."""

    every_events: int = Field(default=50_000, gt=0)
    """The learner cuts a snapshot after this many learned events..."""

    every_seconds: float = Field(default=300.0, gt=0)
    """...or after this many seconds with at least one new event, whichever comes first."""

    keep: int = Field(default=10, ge=1)
    """Retention: the newest ``keep`` versions stay, plus pinned ones and CURRENT."""

    max_auc_drop: float | None = Field(default=0.05, ge=0)
    """Hold back a snapshot whose ``relevance_auc`` is lower than the baseline's by more."""

    max_logloss_rise: float | None = Field(default=0.05, ge=0)
    """Hold back a snapshot whose ``relevance_logloss`` is higher than the baseline's by more."""

    max_reward_drop: float | None = Field(default=None, ge=0)
    """Hold back on a drop of ``bandit_reward`` larger than this; unset disables the rule."""

    def resolved_dir(self) -> Path:
        """The snapshot directory, applying the ``SEGUE_DATA_DIR`` default."""
        return self.dir if self.dir is not None else default_dir()
