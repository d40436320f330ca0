"""The ``CURRENT`` pointer: which snapshot the service serves and the learner builds on.

``CURRENT`` is a small JSON file in the snapshot directory, replaced atomically (temp file,
fsync, ``os.replace``, fsync of the directory), so a reader sees the old pointer or the new
one, never a torn write::

    {
      "format": 1,
      "seq": 17,                      # +1 on every move: compare it to notice a change
      "version": "v000042-20261122T073000Z",
      "mode": "continue",             # or "replay" (see below)
      "resume_offset": 1200000,       # where a learner that (re)starts now reads from
      "previous": "v000045-20261122T080000Z",
      "changed_at": "2026-11-22T08:03:11.000000Z",
      "by": "operator:ana@host1",     # "learner" for a promotion
      "reason": "rollback"            # "promote", "rollback" or "import"
    }

What a running process does when ``seq`` changes (``SnapshotStore.poll`` tells it):

- the **service** loads ``version`` (verified) and answers with it as ``model_version``;
- the **learner**, if it did not make the change itself, loads ``version``'s state and then
  - ``mode == "continue"``: keeps reading the log where it is: only new events are learned,
    the span since the snapshot's offset is *not* re-learned (it is often why one rolls back);
  - ``mode == "replay"``: seeks the log back to the snapshot's ``offset`` and re-learns.

``resume_offset`` serves a learner that starts while this pointer is in force: in ``replay``
mode it is the snapshot's own offset; in ``continue`` mode it is the furthest offset any
snapshot had reached when the pointer moved, so a restart does not quietly replay the span the
operator chose to skip. After it has cut a new snapshot the learner resumes from that one.

Noticing a move: :meth:`SnapshotStore.poll` costs one ``stat``; a process that waits for
moves uses a :class:`PointerWatch`, which wakes it as soon as anything in the directory is
renamed or written (inotify, on Linux) and otherwise after its timeout, so a move made on
another host of a shared file system is still seen within one poll interval.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from snapshots._fs import atomic_write

POINTER_NAME = "CURRENT"
POINTER_FORMAT = 1
Mode = Literal["continue", "replay"]
MODES: tuple[str, ...] = ("continue", "replay")


@dataclass(frozen=True, slots=True)
class CurrentPointer:
    """The parsed contents of ``CURRENT`` (see the module docstring for each field)."""

    seq: int
    version: str
    mode: str
    resume_offset: int
    previous: str | None
    changed_at: str
    by: str
    reason: str
    format: int = POINTER_FORMAT

    @property
    def changed_ts(self) -> float | None:
        """``changed_at`` as epoch seconds (None if unparsable)."""
        try:
            return datetime.fromisoformat(self.changed_at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None

    def to_json(self) -> bytes:
        """Serialized form, as written to disk."""
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> CurrentPointer:
        """Parse a pointer; ``ValueError`` says what is wrong."""
        try:
            body = json.loads(data)
            pointer = cls(**body)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"unreadable CURRENT pointer ({exc})") from None
        if pointer.mode not in MODES:
            raise ValueError(f"CURRENT has unknown mode {pointer.mode!r}")
        return pointer


def read_pointer(root: Path) -> CurrentPointer | None:
    """The pointer in ``root``, or ``None`` if none was ever written."""
    try:
        data = (root / POINTER_NAME).read_bytes()
    except FileNotFoundError:
        return None
    return CurrentPointer.from_json(data)


def write_pointer(root: Path, pointer: CurrentPointer) -> None:
    """Atomically replace ``CURRENT``."""
    atomic_write(root / POINTER_NAME, pointer.to_json())


# inotify(7): the events a replace of CURRENT (rename over it) or an in-place write raises
_IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x008, 0x080, 0x100
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


class PointerWatch:
    """Wait for ``CURRENT`` in ``root`` to change, without polling it in a tight loop.

    :meth:`wait` returns early when an entry of ``root`` is renamed, created or written
    (any entry: the caller then polls, one ``stat``), when :meth:`interrupt` is called, or
    after ``timeout`` seconds. Without inotify (not Linux, a watch limit reached) it waits
    for ``timeout`` or :meth:`interrupt`; callers poll after every wait either way.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake: tuple[int, int] | None = (wake_r, wake_w)
        self._fd = _inotify(self.root)
        self._poller = select.poll()  # not select(): descriptors past 1024 are fine
        for fd in (wake_r, self._fd):
            if fd is not None:
                self._poller.register(fd, select.POLLIN)

    @property
    def native(self) -> bool:
        """Whether file-system events wake :meth:`wait` (else only its timeout does)."""
        return self._fd is not None

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True if woken early (an event or :meth:`interrupt`)."""
        if self._wake is None:
            raise ValueError("wait on a closed PointerWatch")
        ready = [fd for fd, _ in self._poller.poll(max(0.0, timeout) * 1000.0)]
        for fd in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(fd, 65536):  # drain: one wake-up per burst of events
                    pass
        return bool(ready)

    def interrupt(self) -> None:
        """Make a current or the next :meth:`wait` return at once."""
        if self._wake is not None:
            with contextlib.suppress(OSError):  # a full pipe already wakes it
                os.write(self._wake[1], b"x")

    def close(self) -> None:
        """Release the descriptors; call it once no thread waits any more."""
        fds = [*(self._wake or ()), *([] if self._fd is None else [self._fd])]
        self._wake, self._fd = None, None
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _inotify(root: Path) -> int | None:
    """An inotify descriptor watching ``root``'s entries, or None where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # here, so that `segue snapshots ...` does not pay for it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    mask = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
    if libc.inotify_add_watch(fd, os.fsencode(root), mask) < 0:
        os.close(fd)
        return None
    return fd
