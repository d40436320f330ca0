"""Export and import: a verified round trip, and tampered or unsafe archives refused."""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from snapshots import (
    ArchiveError,
    CorruptSnapshotError,
    Manifest,
    SnapshotStore,
    VersionConflictError,
)


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy a tar.gz, letting ``change(info, data)`` return a new (info, data) or None."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for info in tin.getmembers():
            data = tin.extractfile(info).read() if info.isfile() else None
            out = change(info, data)
            if out is None:
                continue
            info, data = out
            tout.addfile(info, io.BytesIO(data) if data is not None else None)


def _tar(dst: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(dst, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def test_round_trip_into_another_store(store, cut, tmp_path):
    cut(store, 100)
    v2 = cut(store, 200)
    archive = tmp_path / "v2.tar.gz"
    store.export_archive(v2.version, archive)

    other = SnapshotStore(tmp_path / "elsewhere")
    snapshot, new = other.import_archive(archive)
    assert new and snapshot.version == v2.version
    assert other.verify(v2.version).manifest == v2.snapshot.manifest
    assert other.pointer() is None  # importing never moves CURRENT
    other.rollback(v2.version)
    assert other.load_current().snapshot.version == v2.version

    again, new = other.import_archive(archive)
    assert not new and again.version == v2.version
    assert not any(p.name.startswith(".staging-") for p in other.root.iterdir())


def test_tampered_file_in_archive_is_refused_naming_it(store, cut, tmp_path):
    v1 = cut(store, 100)
    archive = tmp_path / "v1.tar.gz"
    store.export_archive(v1.version, archive)
    tampered = tmp_path / "tampered.tar.gz"

    def flip(info, data):
        if info.name.endswith("relevance.pkl"):
            data = bytes([data[0] ^ 1]) + data[1:]
        return info, data

    _rewrite(archive, tampered, flip)
    other = SnapshotStore(tmp_path / "elsewhere")
    with pytest.raises(CorruptSnapshotError, match=r"tampered\.tar\.gz:.*relevance\.pkl"):
        other.import_archive(tampered)
    assert other.versions() == []
    assert not any(p.name.startswith(".staging-") for p in other.root.iterdir())


def test_archive_with_a_file_missing_or_added_is_refused(store, cut, tmp_path):
    v1 = cut(store, 100)
    archive = tmp_path / "v1.tar.gz"
    store.export_archive(v1.version, archive)
    dropped = tmp_path / "dropped.tar.gz"
    _rewrite(archive, dropped, lambda i, d: None if i.name.endswith("vw.model") else (i, d))
    with pytest.raises(CorruptSnapshotError, match=r"vw\.model: missing"):
        SnapshotStore(tmp_path / "a").import_archive(dropped)


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


V = "v000001-20261122T073000Z"


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([(_member(f"{V}/../../evil.txt"), b"x")], "unsafe path"),
        ([(_member("/tmp/evil.txt"), b"x")], "unsafe path"),
        ([(_member(f"{V}/link", tarfile.SYMTYPE, "/etc/passwd"), None)], "not a regular file"),
        ([(_member(f"{V}/hard", tarfile.LNKTYPE, "/etc/passwd"), None)], "not a regular file"),
        ([(_member(f"{V}/a"), b"x"), (_member("v000002-20261122T073000Z/b"), b"y")], "exactly one"),
        ([(_member("not-a-version/a"), b"x")], "not a snapshot version"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path, members, match):
    archive = _tar(tmp_path / "bad.tar.gz", members)
    store = SnapshotStore(tmp_path / "store")
    with pytest.raises(ArchiveError, match=match):
        store.import_archive(archive)
    assert not (tmp_path / "evil.txt").exists()
    assert store.versions() == []


def test_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not gzip")
    with pytest.raises(ArchiveError, match="not a readable snapshot archive"):
        SnapshotStore(tmp_path / "store").import_archive(junk)


def test_same_version_with_other_contents_conflicts(store, cut, tmp_path):
    v1 = cut(store, 100)
    forged_root = tmp_path / "forged"
    shutil.copytree(v1.snapshot.path, forged_root / v1.version)
    manifest_path = forged_root / v1.version / "manifest.json"
    m = Manifest.from_json(manifest_path.read_bytes())
    manifest_path.write_bytes(replace(m, metrics={"relevance_auc": 0.99}).to_json())
    archive = tmp_path / "forged.tar.gz"
    SnapshotStore(forged_root).export_archive(v1.version, archive)
    with pytest.raises(VersionConflictError, match="different contents"):
        store.import_archive(archive)
    assert store.verify(v1.version).manifest.metrics["relevance_auc"] == 0.8
