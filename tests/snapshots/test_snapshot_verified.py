"""Verification records: a rollback's target is hashed once, and a changed file never passes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import snapshots.store as store_module
from snapshots import CorruptSnapshotError, SnapshotStore
from snapshots.manifest import is_version


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Versions hashed so far; files count as settled at once (no clock-granularity margin)."""
    seen: list[str] = []
    real = store_module._hash_files

    def counting(path: Path, files, **kwargs):  # type: ignore[no-untyped-def]
        if is_version(path.name):  # a verification, not a commit sealing its files
            seen.append(path.name)
        return real(path, files, **kwargs)

    monkeypatch.setattr(store_module, "_hash_files", counting)
    monkeypatch.setattr(store_module, "SETTLED_NS", 0)
    return seen


def test_the_loader_trusts_the_rollbacks_fresh_verification(store, cut, hashes):
    v1 = cut(store, 100).version
    cut(store, 200)
    SnapshotStore(store.root, by="operator:test").rollback(v1)
    assert hashes == [v1]  # the operator's command always hashes
    loaded = SnapshotStore(store.root).load_current()
    assert loaded is not None and loaded.snapshot.version == v1
    assert hashes == [v1], "the loader hashed again what the rollback had just verified"
    assert (store.root / ".verified" / f"{v1}.json").is_file()


def test_a_file_rewritten_after_the_verification_is_hashed_again_and_refused(
    store, cut, hashes, corrupt
):
    v1 = cut(store, 100).version
    cut(store, 200)
    SnapshotStore(store.root, by="operator:test").rollback(v1)
    corrupt(store.root / v1 / "bandit" / "vw.model")  # same size, new ctime
    with pytest.raises(CorruptSnapshotError, match=r"bandit/vw\.model: sha256 mismatch"):
        SnapshotStore(store.root).load(v1)
    assert hashes == [v1, v1]


def test_an_added_file_is_refused_even_with_a_fresh_record(store, cut, hashes):
    v1 = cut(store, 100).version
    store.verify(v1)
    (store.root / v1 / "extra.bin").write_bytes(b"x")
    with pytest.raises(CorruptSnapshotError, match=r"extra\.bin: not in the manifest"):
        store.verify(v1)


def test_a_stale_record_vouches_for_nothing(store, cut, hashes, monkeypatch):
    v1 = cut(store, 100).version
    store.verify(v1)
    store.verify(v1)
    assert hashes == [v1]
    monkeypatch.setattr(store_module, "TRUST_S", 0.0)
    store.verify(v1)
    assert hashes == [v1, v1]


def test_files_changed_just_before_a_verification_are_not_vouched_for(store, cut, monkeypatch):
    v1 = cut(store, 100).version  # written a moment ago: inside the default margin
    calls: list[str] = []
    real = store_module._hash_files

    def counting(path: Path, files, **kwargs):  # type: ignore[no-untyped-def]
        if is_version(path.name):
            calls.append(path.name)
        return real(path, files, **kwargs)

    monkeypatch.setattr(store_module, "_hash_files", counting)
    store.verify(v1)
    store.verify(v1)
    assert calls == [v1, v1]


def test_full_verification_always_hashes_and_a_forged_record_is_ignored(store, cut, hashes):
    v1 = cut(store, 100).version
    store.verify(v1)
    store.verify(v1, full=True)
    assert hashes == [v1, v1]
    record = store.root / ".verified" / f"{v1}.json"
    record.write_text(record.read_text().replace('"manifest_sha256": "', '"manifest_sha256": "0'))
    store.verify(v1)
    assert hashes == [v1, v1, v1]
    record.write_bytes(os.urandom(64))
    store.verify(v1)
    assert len(hashes) == 4


def test_prune_drops_the_records_of_removed_versions(store, cut, hashes):
    versions = [cut(store, 100 * i).version for i in range(1, 4)]
    for version in versions:
        store.verify(version)
    assert store.prune(keep=1) == versions[:2]
    left = sorted(p.stem for p in (store.root / ".verified").glob("*.json"))
    assert left == versions[2:]
