"""Background work that hands the interpreter lock to request threads as it goes.

The learning thread runs Python for tens to hundreds of milliseconds at a time (a learning
batch, an index refresh, a snapshot cut). A request thread waiting for the interpreter lock
meanwhile gets it only after the switch interval (5 ms), at every one of its many releases
(each ANN search, each lock), or not at all while one C call (a ``pickle.dump``, an
``orjson.dumps`` of a whole state) runs. ``time.sleep(0)`` between two pieces of the work
hands it over at once.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from feedback.jsonparts import Part

__all__ = ["TimedRLock", "YieldingFile", "dump_pickle", "write_parts", "yielding"]

_SLICE_S = 0.002  # longest stretch a writer runs before it offers the interpreter lock


def yielding(parts: Iterable[Any]) -> Iterator[Any]:
    """``parts``, offering the interpreter lock to other threads between two of them."""
    for n, part in enumerate(parts):
        if n:
            time.sleep(0)
        yield part


def write_parts(path: Path, parts: Iterable[Part]) -> None:
    """Write ``parts`` (e.g. :func:`feedback.jsonparts.json_parts`) into ``path``, offering the
    interpreter lock whenever ``_SLICE_S`` passed since the last offer (making the parts is
    most of the work: it is done as they are taken)."""
    with Path(path).open("wb") as f:
        out = YieldingFile(f)
        for part in parts:
            out.write(part)


class YieldingFile:
    """A binary file whose ``write`` offers the interpreter lock once ``_SLICE_S`` passed.

    ``pickle.dump`` into it hands over the lock between its frames (the C pickler writes every
    64 KiB frame as soon as it is full), where a pickle of the whole relevance model in one
    call held it for 100-300 ms at a million items.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._since = time.perf_counter()

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        now = time.perf_counter()
        if now - self._since >= _SLICE_S:
            time.sleep(0)
            self._since = time.perf_counter()
        return n


def dump_pickle(obj: Any, path: Path, *, offer: bool = True) -> None:
    """``pickle.dump(obj)`` into ``path``; ``offer``: offering the interpreter lock as it goes
    (not while holding a lock request threads wait for: that only holds it longer)."""
    with Path(path).open("wb") as f:
        pickle.dump(obj, YieldingFile(f) if offer else f, protocol=pickle.HIGHEST_PROTOCOL)


class TimedRLock:
    """A re-entrant lock that adds up, per thread, how long the thread waited to take it.

    The engine's lock: a request's stage that waited 100 ms behind other lists (while a
    snapshot cut took half the interpreter) is slow because the process is busy, not because
    the stage is broken. The circuit breakers judge a stage's own time, its elapsed time less
    :meth:`waited` (see ``serving.recommender``); the list's budget still counts it all.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._local = threading.local()

    def waited(self) -> float:
        """Seconds this thread has waited for the lock so far (compare two readings)."""
        return getattr(self._local, "waited", 0.0)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):  # free (or ours already): no clock read
            return True
        if not blocking:
            return False
        started = time.perf_counter()
        got = self._lock.acquire(timeout=timeout)
        self._local.waited = self.waited() + time.perf_counter() - started
        return got

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
