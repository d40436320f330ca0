"""The snapshot store: versioned, atomic, checksummed model state on a local file system.

Layout of the snapshot directory::

    <root>/CURRENT                     the pointer (see snapshots.pointer)
    <root>/<version>/manifest.json     one directory per version
    <root>/<version>/<state files>     written by the learner, any names, subdirectories allowed
    <root>/pins/<version>              an empty file per pinned version
    <root>/.verified/<version>.json    what the last hashing verification saw (a cache)
    <root>/.staging-<id>/ (+ .lock)    snapshots being written; never visible as a version
    <root>/.trash/                     versions being deleted
    <root>/.lock                       serialises pointer moves, renames and pruning

A snapshot is written into a staging directory, every file and directory is fsynced, the
manifest (with a sha256 and size per file) is written and fsynced, the directory is renamed
to its version name and the parent directory fsynced; only then may ``CURRENT`` move. A crash
at any point leaves ``CURRENT`` naming a complete snapshot; a staging directory left by a dead
writer is removed by the next :meth:`SnapshotStore.prune`.

How the learner uses it::

    store = SnapshotStore(root, keep=10, guard=PromotionGuard.from_settings(settings))
    loaded = store.load_current()          # None on a fresh store
    ...                                    # load state from loaded.snapshot.path,
    ...                                    # read the log from loaded.resume_offset
    with store.stage() as staging:         # every N events / T seconds / at shutdown
        save_models(staging.path)
        result = staging.commit(offset=next_offset, events=n, watermark=wm, metrics=m)
    if (pointer := store.poll()) is not None:   # CURRENT moved (e.g. an operator rollback)
        ...                                # load pointer.version, obey pointer.mode
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import time
import uuid
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from snapshots._fs import (
    atomic_write,
    fsync_dir,
    fsync_file,
    fsync_tree,
    locked,
    remove_tree,
    sha256_file,
    try_lock,
)
from snapshots.errors import (
    ArchiveError,
    CorruptSnapshotError,
    NoGoodSnapshotError,
    SnapshotError,
    UnknownVersionError,
    VersionConflictError,
)
from snapshots.guard import PromotionGuard
from snapshots.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    Promotion,
    is_version,
    iso_utc,
    make_version,
    version_key,
)
from snapshots.pointer import (
    MODES,
    POINTER_NAME,
    CurrentPointer,
    PointerWatch,
    read_pointer,
    write_pointer,
)

STAGING_PREFIX = ".staging-"
HASH_THREADS = min(4, os.cpu_count() or 1)
RECORDS_DIR = ".verified"
TRUST_S = 60.0  # how long a full verification vouches for files that have not changed since
SETTLED_NS = 1_000_000_000  # files changed this shortly before a verification: not vouched for
LIBRARIES = ("river", "vowpalwabbit", "hnswlib", "numpy", "pydantic", "segue")


def default_dir() -> Path:
    """``$SEGUE_SNAPSHOT_DIR``, else ``$SEGUE_DATA_DIR/snapshots``, else ``segue-data/...``."""
    explicit = os.environ.get("SEGUE_SNAPSHOT_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("SEGUE_DATA_DIR") or "segue-data") / "snapshots"


@cache
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose files a snapshot holds (not imported)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A verified snapshot: read state files from ``path``, resume from ``manifest.offset``."""

    path: Path
    manifest: Manifest

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass(frozen=True, slots=True)
class Loaded:
    """What :meth:`SnapshotStore.load_current` found.

    ``skipped`` lists ``(version, reason)`` for every snapshot refused before ``snapshot``;
    non-empty means the store fell back from what ``CURRENT`` names.
    """

    snapshot: Snapshot
    pointer: CurrentPointer | None
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def fell_back(self) -> bool:
        return bool(self.skipped)

    @property
    def resume_offset(self) -> int:
        """Where a (re)starting learner reads the event log from after loading ``snapshot``.

        The snapshot's own offset, except after a ``continue`` rollback to it, when the span
        the operator chose to skip is skipped on restart too (``CURRENT.resume_offset``).
        """
        offset = self.snapshot.manifest.offset
        if self.pointer is not None and self.pointer.version == self.snapshot.version:
            return max(offset, self.pointer.resume_offset)
        return offset


@dataclass(frozen=True, slots=True)
class CommitResult:
    """A written snapshot; ``promoted`` False means held back for ``reason``."""

    snapshot: Snapshot
    promoted: bool
    reason: str | None
    pointer: CurrentPointer | None

    @property
    def version(self) -> str:
        return self.snapshot.version


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A row of :meth:`SnapshotStore.list_versions`; ``error`` says why a manifest is unreadable."""

    version: str
    manifest: Manifest | None
    current: bool
    pinned: bool
    error: str | None = None

    @property
    def held_back(self) -> str | None:
        """The guard's reason if this snapshot was not promoted when written."""
        if self.manifest is None or self.manifest.promotion.promoted:
            return None
        return self.manifest.promotion.reason or "held back"


@dataclass(frozen=True, slots=True)
class Rollback:
    """The result of :meth:`SnapshotStore.rollback`, with what each process will do."""

    pointer: CurrentPointer
    snapshot: Snapshot
    previous: CurrentPointer | None

    def describe(self) -> list[str]:
        """Plain-language lines for the operator."""
        m, p = self.snapshot.manifest, self.pointer
        was = self.previous.version if self.previous else "nothing"
        lines = [
            f"CURRENT -> {p.version} (was {was}; mode {p.mode}; seq {p.seq})",
            f"service: reloads {p.version} on its next CURRENT check (within seconds) and "
            f"reports model_version={p.version}",
        ]
        if p.mode == "replay":
            lines.append(
                f"learner: loads {p.version} and re-learns the event log from offset "
                f"{m.offset} (watermark {_fmt_time(m.watermark)}) onwards"
            )
        else:
            skipped = max(p.resume_offset - m.offset, 0)
            lines.append(
                f"learner: loads {p.version} and continues with new events only; the "
                f"{skipped} log offsets learned after {p.version} ({m.offset}..{p.resume_offset})"
                " are not re-learned; a restarted learner resumes at offset "
                f"{p.resume_offset}"
            )
        if not m.promotion.promoted:
            lines.append(f"note: {p.version} was held back when written: {m.promotion.reason}")
        return lines


class Staging:
    """A staging directory for one snapshot; write state files into :attr:`path`.

    Use as a context manager: leaving the block without :meth:`commit` (or by an exception)
    removes the directory.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        name = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        self._lock_path = store.root / f"{name}.lock"
        fd = try_lock(self._lock_path)
        assert fd is not None  # a fresh name: nobody else holds it
        self._lock_fd: int | None = fd
        self.path = store.root / name
        self.path.mkdir()
        self.result: CommitResult | None = None

    def file(self, name: str) -> Path:
        """The path for state file ``name`` (``/`` makes subdirectories, created here)."""
        target = self.path / PurePosixPath(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def commit(
        self,
        *,
        offset: int,
        events: int,
        watermark: float | None = None,
        metrics: Mapping[str, float | None] | None = None,
        settings_hash: str | None = None,
        libraries: Mapping[str, str] | None = None,
        parent: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        """Seal the files into a new version and, unless the guard objects, make it current.

        ``offset`` is the log position of the next event to learn (the snapshot includes all
        before it); ``events`` counts events learned since the parent. ``parent`` defaults to
        the version this store last loaded or committed, else CURRENT's. ``libraries``
        defaults to the installed versions (read from package metadata, nothing imported).
        """
        if self.result is not None or self._lock_fd is None:
            raise SnapshotError("this staging directory was already committed or aborted")
        try:
            self.result = self._store._commit(
                self.path,
                offset=int(offset),
                events=int(events),
                watermark=None if watermark is None else float(watermark),
                metrics=dict(metrics or {}),
                settings_hash=settings_hash,
                libraries=dict(library_versions() if libraries is None else libraries),
                parent=parent,
                extra=dict(extra or {}),
            )
        except BaseException:
            self.abort()
            raise
        self._release()
        return self.result

    def abort(self) -> None:
        """Discard the staging directory (no-op after a commit)."""
        if self._lock_fd is None:
            return
        if self.result is None:
            shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._lock_path.unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class SnapshotStore:
    """Versioned snapshots in ``root``; one learner writes, any number of processes read.

    ``keep`` applies retention after every commit (``None``: only on :meth:`prune`);
    ``guard`` decides promotion; ``by`` is recorded in ``CURRENT`` when this store moves it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        keep: int | None = None,
        guard: PromotionGuard | None = None,
        by: str = "learner",
    ) -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.guard = guard or PromotionGuard()
        self.by = by
        self._head: str | None = None
        self._seen_seq: int | None = None
        self._pointer_sig: tuple[int, int, int] | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, by: str = "learner") -> SnapshotStore:
        """A store configured by :class:`~snapshots.settings.SnapshotSettings`."""
        return cls(
            settings.resolved_dir(),
            keep=settings.keep,
            guard=PromotionGuard.from_settings(settings),
            by=by,
        )

    # ----------------------------------------------------------------- reading

    def versions(self) -> list[str]:
        """All version names, oldest first."""
        names = [p.name for p in self.root.iterdir() if is_version(p.name) and p.is_dir()]
        return sorted(names, key=version_key)

    def pointer(self) -> CurrentPointer | None:
        """The parsed ``CURRENT`` (``None`` before the first promotion)."""
        return read_pointer(self.root)

    def poll(self) -> CurrentPointer | None:
        """The pointer if it changed since this store last read or wrote it, else ``None``.

        Costs one ``stat`` when nothing changed; call it every second or so. A learner acts
        on a change it did not make by loading ``pointer.version`` and obeying
        ``pointer.mode``; the service reloads ``pointer.version``.
        """
        try:
            st = os.stat(self.root / POINTER_NAME)
        except FileNotFoundError:
            return None
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig == self._pointer_sig:
            return None
        try:
            pointer = self.pointer()
        except ValueError:
            return None
        self._pointer_sig = sig
        if pointer is None or pointer.seq == self._seen_seq:
            return None
        self._seen_seq = pointer.seq
        return pointer

    def watch(self) -> PointerWatch:
        """A :class:`~snapshots.pointer.PointerWatch` on this store's ``CURRENT``.

        Wait on it, then :meth:`poll`: a move is noticed within milliseconds (inotify), or
        within the wait's timeout where file-system events are not delivered.
        """
        return PointerWatch(self.root)

    def manifest(self, version: str) -> Manifest:
        """The parsed manifest of ``version`` (files not verified)."""
        path = self._dir(version)
        return _read_manifest(path, version)

    def list_versions(self) -> list[VersionInfo]:
        """Every version with its manifest (or why it is unreadable), oldest first."""
        try:
            current = self.pointer()
        except ValueError:
            current = None
        pins = self.pinned()
        rows = []
        for version in self.versions():
            try:
                manifest, error = self.manifest(version), None
            except CorruptSnapshotError as exc:
                manifest, error = None, str(exc)
            rows.append(
                VersionInfo(
                    version,
                    manifest,
                    current=current is not None and current.version == version,
                    pinned=version in pins,
                    error=error,
                )
            )
        return rows

    def verify(self, version: str, *, full: bool = False) -> Snapshot:
        """Check every file's size and sha256 and that no unlisted file exists.

        Raises :class:`CorruptSnapshotError` naming the first offending file.

        Every verification that hashes leaves a record in ``<root>/.verified/<version>.json``:
        the manifest's sha256 and each file's size, mtime, ctime, inode and device. For
        ``TRUST_S`` seconds a later verification that finds the same manifest and every
        file's figures unchanged skips the hashing: this is what makes the loader's check of
        a rollback target, right after ``segue snapshots rollback`` hashed it, cost a few
        ``stat`` calls instead of a second pass over hundreds of megabytes. Any write to a
        file moves its ctime (which no program can set back), so a file changed since is
        hashed again and refused if damaged; files changed less than ``SETTLED_NS`` before
        a verification are never vouched for (clock granularity). ``full=True`` always
        hashes (``segue snapshots verify``, ``rollback`` and ``export`` do).
        """
        return _verify_dir(self._dir(version), version, self.root / RECORDS_DIR, trust=not full)

    def load(self, version: str) -> Snapshot:
        """Verify ``version`` and make it this store's head (the next commit's parent)."""
        snapshot = self.verify(version)
        self._head = version
        return snapshot

    def load_current(self) -> Loaded | None:
        """Verify and return what ``CURRENT`` names, falling back if it is bad.

        Fallback order: the parent chain of the current version, then older versions (newest
        first) that were not held back. Every refusal is reported in ``Loaded.skipped``.
        ``CURRENT`` itself is not moved: an operator decides (``segue snapshots rollback``).
        Returns ``None`` on a fresh store; raises :class:`NoGoodSnapshotError` when nothing
        verifies.
        """
        skipped: list[tuple[str, str]] = []
        versions = self.versions()
        try:
            pointer = self.pointer()
        except ValueError as exc:
            pointer = None
            skipped.append((POINTER_NAME, str(exc)))
        if pointer is None and not skipped:
            if not versions:
                return None
            skipped.append((POINTER_NAME, "missing"))
        candidates: list[str] = []
        ceiling = None
        if pointer is not None:
            ceiling = version_key(pointer.version) if is_version(pointer.version) else None
            candidates.append(pointer.version)
            name: str | None = pointer.version
            visited: set[str] = set()
            while name is not None and name not in visited:  # the parent chain...
                visited.add(name)
                try:
                    manifest = self.manifest(name)
                except SnapshotError:
                    break
                if manifest.promotion.promoted and name not in candidates:
                    candidates.append(name)  # ...skipping held-back ancestors
                name = manifest.parent
        for version in reversed(versions):
            if version in candidates or (ceiling is not None and version_key(version) > ceiling):
                continue
            with contextlib.suppress(SnapshotError):
                if self.manifest(version).promotion.promoted:
                    candidates.append(version)
        for version in candidates:
            try:
                snapshot = self.verify(version)
            except SnapshotError as exc:
                skipped.append((version, str(exc)))
                continue
            self._head = version
            if pointer is not None:
                self._seen_seq = pointer.seq
            return Loaded(snapshot, pointer, tuple(skipped))
        raise NoGoodSnapshotError(skipped)

    def pinned(self) -> set[str]:
        """Versions protected from pruning."""
        pins = self.root / "pins"
        return {p.name for p in pins.iterdir()} if pins.is_dir() else set()

    # ----------------------------------------------------------------- writing

    def stage(self) -> Staging:
        """A fresh staging directory for the next snapshot."""
        return Staging(self)

    def rollback(self, version: str, *, mode: str = "continue", by: str | None = None) -> Rollback:
        """Verify ``version`` and point ``CURRENT`` at it with ``mode`` (``continue``/``replay``).

        The guard does not apply: an operator may roll back to a held-back snapshot.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        snapshot = self.verify(version, full=True)
        with locked(self.root / ".lock"):
            try:
                previous = self.pointer()
            except ValueError:
                previous = None
            if mode == "replay":
                resume = snapshot.manifest.offset
            else:
                offsets = [snapshot.manifest.offset]
                if previous is not None:
                    offsets.append(previous.resume_offset)
                for name in self.versions():
                    with contextlib.suppress(SnapshotError):
                        offsets.append(self.manifest(name).offset)
                resume = max(offsets)
            pointer = self._move_pointer(
                previous, version, mode=mode, resume=resume, by=by or self.by, reason="rollback"
            )
        return Rollback(pointer, snapshot, previous)

    def pin(self, version: str) -> None:
        """Protect ``version`` from retention and ``prune``."""
        self._dir(version)
        pins = self.root / "pins"
        pins.mkdir(exist_ok=True)
        (pins / version).touch()
        fsync_dir(pins)

    def unpin(self, version: str) -> bool:
        """Remove a pin; False if ``version`` was not pinned."""
        try:
            (self.root / "pins" / version).unlink()
        except FileNotFoundError:
            self._dir(version)
            return False
        return True

    def prune(self, keep: int | None = None) -> list[str]:
        """Delete all but the newest ``keep`` versions, sparing pinned ones and CURRENT.

        Also clears staging directories left by dead writers. Returns the deleted versions.
        """
        keep = self.keep if keep is None else keep
        if keep is None or keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        removed = []
        with locked(self.root / ".lock"):
            self._clear_leftovers()
            versions = self.versions()
            spared = set(versions[-keep:]) | self.pinned()
            with contextlib.suppress(ValueError):
                if (pointer := self.pointer()) is not None:
                    spared.add(pointer.version)
            for version in versions:
                if version not in spared:
                    remove_tree(self.root / version, self.root / ".trash")
                    removed.append(version)
            for record in _records(self.root):
                if not (self.root / record.stem).is_dir():
                    record.unlink(missing_ok=True)
        return removed

    def export_archive(self, version: str, file: str | os.PathLike[str]) -> Snapshot:
        """Verify ``version`` and write it as a ``.tar.gz`` whose one top directory is it."""
        snapshot = self.verify(version, full=True)
        target = Path(file)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
                tar.add(snapshot.path / MANIFEST_NAME, f"{version}/{MANIFEST_NAME}")
                for rel in sorted(snapshot.manifest.files):
                    tar.add(snapshot.path / rel, f"{version}/{rel}", recursive=False)
            fsync_file(tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return snapshot

    def import_archive(self, file: str | os.PathLike[str]) -> tuple[Snapshot, bool]:
        """Unpack an exported snapshot, verify every checksum and add it (not made current).

        Refuses links, devices, absolute paths and ``..`` (:class:`ArchiveError`) and
        tampered files (:class:`CorruptSnapshotError`). Returns the snapshot and whether it
        was new (False: an identical copy was already here).
        """
        with self.stage() as staging:
            version = _safe_extract(Path(file), staging.path)
            unpacked = staging.path / version
            try:
                snapshot = _verify_dir(unpacked, version)
            except CorruptSnapshotError as exc:
                member = Path(exc.path).relative_to(staging.path).as_posix()
                raise CorruptSnapshotError(version, f"{file}:{member}", exc.reason) from None
            fsync_tree(unpacked)
            with locked(self.root / ".lock"):
                target = self.root / version
                if target.exists():
                    existing = _verify_dir(target, version)
                    if existing.manifest.to_dict() != snapshot.manifest.to_dict():
                        raise VersionConflictError(
                            f"{version} already exists here with different contents"
                        )
                    return existing, False
                os.rename(unpacked, target)
                fsync_dir(self.root)
        return Snapshot(target, snapshot.manifest), True

    # ----------------------------------------------------------------- internals

    def _dir(self, version: str) -> Path:
        path = self.root / version
        if not is_version(version) or not path.is_dir():
            raise UnknownVersionError(version)
        return path

    def _commit(
        self,
        staging: Path,
        *,
        offset: int,
        events: int,
        watermark: float | None,
        metrics: dict[str, float | None],
        settings_hash: str | None,
        libraries: dict[str, str],
        parent: str | None,
        extra: dict[str, Any],
    ) -> CommitResult:
        files = _seal_files(staging)
        with locked(self.root / ".lock"):
            try:
                pointer = self.pointer()
            except ValueError:
                pointer = None
            if parent is None:
                parent = self._head or (pointer.version if pointer else None)
            parent_manifest = None
            if parent is not None:
                with contextlib.suppress(SnapshotError):
                    parent_manifest = self.manifest(parent)
            existing = self.versions()
            seq = version_key(existing[-1]) + 1 if existing else 1
            now = time.time()
            version = make_version(seq, now)
            manifest = Manifest(
                version=version,
                parent=parent,
                created_at=iso_utc(now),
                offset=offset,
                watermark=watermark,
                events=events,
                events_total=events + (parent_manifest.events_total if parent_manifest else 0),
                metrics=metrics,
                libraries=libraries,
                settings_hash=settings_hash,
                files=files,
                extra=extra,
            )
            promotion = self._decide(manifest, parent_manifest, pointer)
            manifest = manifest.with_promotion(promotion)
            atomic_write(staging / MANIFEST_NAME, manifest.to_json())
            target = self.root / version
            os.rename(staging, target)
            fsync_dir(self.root)
            new_pointer = None
            if promotion.promoted:
                new_pointer = self._move_pointer(
                    pointer, version, mode="continue", resume=offset, by=self.by, reason="promote"
                )
            self._head = version
        if self.keep is not None:
            self.prune(self.keep)
        return CommitResult(
            Snapshot(target, manifest), promotion.promoted, promotion.reason, new_pointer
        )

    def _decide(
        self, manifest: Manifest, parent: Manifest | None, pointer: CurrentPointer | None
    ) -> Promotion:
        if pointer is not None and self._seen_seq is not None and pointer.seq != self._seen_seq:
            return Promotion(
                False,
                f"CURRENT was moved to {pointer.version} by {pointer.by} at "
                f"{pointer.changed_at} ({pointer.reason}, mode {pointer.mode}) after this "
                "learner last read it",
            )
        baseline = parent
        seen: set[str] = set()
        while baseline is not None and not baseline.promotion.promoted:
            seen.add(baseline.version)
            if baseline.parent is None or baseline.parent in seen:
                baseline = None
                break
            try:
                baseline = self.manifest(baseline.parent)
            except SnapshotError:
                baseline = None
        if baseline is None:
            return Promotion(True)
        reason = self.guard.check(manifest.metrics, baseline.metrics)
        return Promotion(reason is None, reason, baseline.version)

    def _move_pointer(
        self,
        previous: CurrentPointer | None,
        version: str,
        *,
        mode: str,
        resume: int,
        by: str,
        reason: str,
    ) -> CurrentPointer:
        pointer = CurrentPointer(
            seq=(previous.seq + 1) if previous else 1,
            version=version,
            mode=mode,
            resume_offset=resume,
            previous=previous.version if previous else None,
            changed_at=iso_utc(time.time()),
            by=by,
            reason=reason,
        )
        write_pointer(self.root, pointer)
        self._seen_seq = pointer.seq
        return pointer

    def _clear_leftovers(self) -> None:
        for path in self.root.iterdir():
            if path.name.startswith(STAGING_PREFIX) and path.is_dir():
                lock = path.with_name(path.name + ".lock")
                fd = try_lock(lock)
                if fd is None:
                    continue  # a live writer
                try:
                    shutil.rmtree(path, ignore_errors=True)
                    lock.unlink(missing_ok=True)
                finally:
                    os.close(fd)
            elif path.name.startswith(STAGING_PREFIX) and path.name.endswith(".lock"):
                if path.with_suffix("").exists():
                    continue  # handled with its directory
                fd = try_lock(path)
                if fd is not None:  # its writer committed or died before making the directory
                    path.unlink(missing_ok=True)
                    os.close(fd)
            elif path.name.startswith(f".{POINTER_NAME}.") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
        shutil.rmtree(self.root / ".trash", ignore_errors=True)


def _seal_files(staging: Path) -> dict[str, FileEntry]:
    """Hash and fsync every state file; refuse anything but regular files and directories."""
    files: dict[str, FileEntry] = {}
    for dirpath, dirnames, filenames in os.walk(staging):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                raise SnapshotError(f"{path}: symbolic links are not allowed in a snapshot")
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(staging).as_posix()
            if rel == MANIFEST_NAME:
                raise SnapshotError(f"{path}: {MANIFEST_NAME} is reserved for the store")
            if not path.is_file():
                raise SnapshotError(f"{path}: only regular files are allowed in a snapshot")
            files[rel] = FileEntry("", path.stat().st_size)
    for rel, (digest, size) in _hash_files(staging, files, sync=True).items():
        files[rel] = FileEntry(digest, size)
    for dirpath, _dirs, _files in os.walk(staging, topdown=False):
        fsync_dir(Path(dirpath))
    return files


def _read_manifest(path: Path, version: str) -> Manifest:
    return _load_manifest(path, version)[0]


def _load_manifest(path: Path, version: str) -> tuple[Manifest, bytes]:
    file = path / MANIFEST_NAME
    try:
        raw = file.read_bytes()
        manifest = Manifest.from_json(raw)
    except FileNotFoundError:
        raise CorruptSnapshotError(version, str(file), "missing") from None
    except ValueError as exc:
        raise CorruptSnapshotError(version, str(file), str(exc)) from None
    if manifest.version != version:
        raise CorruptSnapshotError(
            version, str(file), f"names version {manifest.version}, not {version}"
        )
    return manifest, raw


def _verify_dir(
    path: Path, version: str, records: Path | None = None, *, trust: bool = False
) -> Snapshot:
    """Verify a snapshot directory; with ``records``, leave a verification record there.

    With ``trust`` too, a record (``records/<version>.json``, see
    :meth:`SnapshotStore.verify`) that vouches for the files skips the hashing, never the
    other checks.
    """
    manifest, raw = _load_manifest(path, version)
    stat_ns = time.time_ns()
    stats: dict[str, list[int]] = {}
    for rel, entry in sorted(manifest.files.items()):  # sizes first: cheap, catches truncation
        file = path / rel
        try:
            st = file.stat()
        except FileNotFoundError:
            raise CorruptSnapshotError(version, str(file), "missing") from None
        if st.st_size != entry.size:
            raise CorruptSnapshotError(
                version, str(file), f"size {st.st_size} bytes, manifest says {entry.size}"
            )
        stats[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    for dirpath, _dirs, filenames in os.walk(path):
        for name in filenames:
            rel = Path(dirpath, name).relative_to(path).as_posix()
            if rel != MANIFEST_NAME and rel not in manifest.files:
                raise CorruptSnapshotError(version, str(path / rel), "not in the manifest")
    record = None if records is None else records / f"{version}.json"
    manifest_sha = hashlib.sha256(raw).hexdigest()
    if trust and record is not None and _vouched(record, version, manifest_sha, stats):
        return Snapshot(path, manifest)
    digests = _hash_files(path, manifest.files)
    for rel, entry in sorted(manifest.files.items()):
        if digests[rel][0] != entry.sha256:
            raise CorruptSnapshotError(version, str(path / rel), "sha256 mismatch")
    if record is not None:
        body = {
            "version": version,
            "manifest_sha256": manifest_sha,
            "verified_at_ns": stat_ns,
            "files": stats,
        }
        _write_record(record, json.dumps(body, sort_keys=True).encode())
    return Snapshot(path, manifest)


def _vouched(record: Path, version: str, manifest_sha: str, stats: Mapping[str, list[int]]) -> bool:
    """Whether a fresh record vouches for exactly these files, unchanged since it was made."""
    try:
        body = json.loads(record.read_bytes())
        at = int(body["verified_at_ns"])
        files = body["files"]
        ok = body["version"] == version and body["manifest_sha256"] == manifest_sha
    except (OSError, ValueError, KeyError, TypeError):
        return False
    age = time.time_ns() - at
    if not ok or not 0 <= age <= TRUST_S * 1e9 or not isinstance(files, dict):
        return False
    if set(files) != set(stats):
        return False
    for rel, sig in stats.items():
        if files[rel] != sig:  # size, mtime, ctime, inode or device moved: hash again
            return False
        if sig[2] > at - SETTLED_NS:  # changed just before that verification: not vouched
            return False
    return True


def _records(root: Path) -> list[Path]:
    records = root / RECORDS_DIR
    return list(records.glob("*.json")) if records.is_dir() else []


def _write_record(record: Path, data: bytes) -> None:
    """Replace a verification record (a cache: not fsynced; a lost one only costs a hash)."""
    with contextlib.suppress(OSError):  # a read-only snapshot directory: nothing recorded
        record.parent.mkdir(exist_ok=True)
        tmp = record.with_name(f".{record.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, record)
        finally:
            tmp.unlink(missing_ok=True)


def _hash_files(
    path: Path, files: Mapping[str, FileEntry], *, sync: bool = False
) -> dict[str, tuple[str, int]]:
    """The sha256 and size of every listed file (fsynced too if ``sync``), largest first, by
    ``HASH_THREADS`` threads.

    hashlib, file reads and fsync release the GIL, so this takes about the time of the
    largest file on two cores, and the service keeps answering meanwhile.
    """

    def one(rel: str) -> tuple[str, int]:
        digest = sha256_file(path / rel)
        if sync:
            fsync_file(path / rel)
        return digest

    order = sorted(files, key=lambda rel: (-files[rel].size, rel))
    if len(order) < 2 or HASH_THREADS < 2:
        return {rel: one(rel) for rel in order}
    with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="segue-hash") as pool:
        futures = {rel: pool.submit(one, rel) for rel in order}
        return {rel: future.result() for rel, future in futures.items()}


def _safe_extract(file: Path, dest: Path) -> str:
    """Extract a snapshot archive into ``dest``; the version it holds."""
    try:
        with tarfile.open(file, "r:gz") as tar:
            members = tar.getmembers()
            version = _check_members(members)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{file}: not a readable snapshot archive ({exc})") from None
    return version


def _check_members(members: list[tarfile.TarInfo]) -> str:
    tops = set()
    for member in members:
        name = member.name
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or not parts:
            raise ArchiveError(f"unsafe path in archive: {name!r}")
        if not (member.isfile() or member.isdir()):
            raise ArchiveError(f"archive member {name!r} is not a regular file or directory")
        tops.add(parts[0])
    if len(tops) != 1:
        raise ArchiveError(f"archive must hold exactly one snapshot directory, found {tops}")
    (version,) = tops
    if not is_version(version):
        raise ArchiveError(f"archive top directory {version!r} is not a snapshot version")
    return version


def _fmt_time(ts: float | None) -> str:
    return "unknown" if ts is None else iso_utc(ts)
