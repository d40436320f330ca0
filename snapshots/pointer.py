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
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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
