"""Versioned, atomic, checksummed model snapshots and the ``CURRENT`` pointer.

Imports nothing else from segue and nothing heavy (no River, Vowpal Wabbit, hnswlib, FastAPI
or numpy), so the operator commands in :mod:`snapshots.cli` work when those are broken.
:class:`SnapshotSettings` (pydantic) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from snapshots.errors import (
    ArchiveError,
    CorruptSnapshotError,
    NoGoodSnapshotError,
    SnapshotError,
    UnknownVersionError,
    VersionConflictError,
)
from snapshots.guard import HIGHER_IS_BETTER, GuardRule, PromotionGuard
from snapshots.manifest import FileEntry, Manifest, Promotion, make_version, settings_hash
from snapshots.pointer import MODES, CurrentPointer, PointerWatch
from snapshots.schedule import CutSchedule
from snapshots.store import (
    CommitResult,
    Loaded,
    Rollback,
    Snapshot,
    SnapshotStore,
    Staging,
    VersionInfo,
    default_dir,
)

if TYPE_CHECKING:
    from snapshots.settings import SnapshotSettings

__all__ = [
    "HIGHER_IS_BETTER",
    "MODES",
    "ArchiveError",
    "CommitResult",
    "CorruptSnapshotError",
    "CurrentPointer",
    "CutSchedule",
    "FileEntry",
    "GuardRule",
    "Loaded",
    "Manifest",
    "NoGoodSnapshotError",
    "PointerWatch",
    "Promotion",
    "PromotionGuard",
    "Rollback",
    "Snapshot",
    "SnapshotError",
    "SnapshotSettings",
    "SnapshotStore",
    "Staging",
    "UnknownVersionError",
    "VersionConflictError",
    "VersionInfo",
    "default_dir",
    "make_version",
    "settings_hash",
]


def __getattr__(name: str) -> Any:
    if name == "SnapshotSettings":
        from snapshots.settings import SnapshotSettings

        return SnapshotSettings
    raise AttributeError(f"module 'snapshots' has no attribute {name!r}")
