"""Errors raised by the snapshot store.

::

    SnapshotError                 anything the store refuses to do
     ├── UnknownVersionError      no snapshot by that name
     ├── CorruptSnapshotError     a file is missing, has the wrong size or checksum,
     │                            or the manifest is unreadable; names the file
     ├── NoGoodSnapshotError      CURRENT and every fallback failed verification
     ├── VersionConflictError     an imported version exists here with other contents
     └── ArchiveError             an archive is unsafe (path traversal, links) or malformed

The CLI maps them to exit codes (see :mod:`snapshots.cli`).
"""

from __future__ import annotations


class SnapshotError(Exception):
    """Base class: the store refused an operation."""


class UnknownVersionError(SnapshotError, LookupError):
    """No snapshot directory carries this version."""

    def __init__(self, version: str) -> None:
        super().__init__(f"unknown snapshot version {version!r}")
        self.version = version


class CorruptSnapshotError(SnapshotError):
    """A snapshot failed verification; ``path`` names the offending file."""

    def __init__(self, version: str, path: str, reason: str) -> None:
        super().__init__(f"snapshot {version} is corrupt: {path}: {reason}")
        self.version = version
        self.path = path
        self.reason = reason


class NoGoodSnapshotError(SnapshotError):
    """Neither CURRENT nor any fallback verified; ``skipped`` says why for each."""

    def __init__(self, skipped: list[tuple[str, str]]) -> None:
        lines = "; ".join(f"{v}: {why}" for v, why in skipped) or "no snapshots"
        super().__init__(f"no snapshot verified ({lines})")
        self.skipped = skipped


class VersionConflictError(SnapshotError):
    """A version of this name exists with different contents."""


class ArchiveError(SnapshotError):
    """An archive is unsafe or malformed and was not imported."""
