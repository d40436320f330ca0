"""Fixtures for the snapshot store tests: a store on ``tmp_path`` and a way to cut snapshots."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from snapshots import CommitResult, GuardRule, PromotionGuard, SnapshotStore

Cut = Callable[..., CommitResult]


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    """A store guarding AUC (max drop 0.05) and log loss (max rise 0.1), no auto retention."""
    guard = PromotionGuard(
        (GuardRule("relevance_auc", True, 0.05), GuardRule("relevance_logloss", False, 0.1))
    )
    return SnapshotStore(tmp_path / "snapshots", guard=guard)


@pytest.fixture
def cut() -> Cut:
    """``cut(store, offset, auc=0.8, logloss=0.4, size=2048)`` writes a snapshot of 3 files."""

    def _cut(
        store: SnapshotStore,
        offset: int,
        *,
        auc: float | None = 0.8,
        logloss: float | None = 0.4,
        size: int = 2048,
        events: int = 100,
    ) -> CommitResult:
        with store.stage() as staging:
            staging.file("relevance.pkl").write_bytes(os.urandom(size))
            staging.file("bandit/vw.model").write_bytes(os.urandom(size // 2))
            staging.file("counters.json").write_text(f'{{"offset": {offset}}}')
            return staging.commit(
                offset=offset,
                events=events,
                watermark=1_700_000_000.0 + offset,
                metrics={"relevance_auc": auc, "relevance_logloss": logloss},
                settings_hash="abc123",
                libraries={"river": "0.26.1"},
            )

    return _cut


def flip_byte(path: Path, at: int | None = None) -> None:
    """Corrupt one byte of ``path`` in place (the middle by default)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def corrupt() -> Callable[..., None]:
    """``corrupt(path)`` flips one byte of a file."""
    return flip_byte
