"""Keeping the garbage collector off the long-lived model state.

A warm engine is millions of Python objects (River's latent and weight dicts, counters, the
join's pending window of served lists). CPython's full collections walk every one of them
whenever the oldest generation has grown by a quarter; they find nothing to free and hold the
interpreter lock meanwhile. At 1M items that was a 50-200 ms stall several times a minute in
``segue serve``: the whole p99 of ``/v1/recommend`` at 50 lists/s.

``gc.freeze()`` moves everything alive into a generation the collector never scans (objects
still die by reference counting as usual). Three pieces use it:

- :func:`freeze_heap` collects once and freezes, when an engine has been built or loaded.
- :class:`HeapGuard` keeps it that way while the process runs: after each full collection
  the collector makes on its own, it freezes the survivors, so the next full pass walks only
  what was created since (a few milliseconds) instead of everything learned since start-up.
  Freezing has one cost: an object alive at a freeze that later becomes garbage *through a
  reference cycle only* is not freed until the next deep pass. Model state is acyclic (dicts
  of floats, numpy arrays), so what can wait is a few in-flight requests' frames per freeze;
  the guard's deep pass (unfreeze, collect everything, freeze; one long pause, logged, every
  ``reclaim_every_s``) bounds it.
- :func:`refreeze_later` after an engine swap unfreezes, so the replaced engine's cycles are
  freed once nothing refers to it, and freezes again a few seconds later; the guard does not
  freeze in between.

Written here rather than taken from a library: no maintained package manages ``gc.freeze``;
it is a few lines over the standard library's ``gc.callbacks``.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

__all__ = ["HeapGuard", "freeze_heap", "refreeze_later"]

logger = logging.getLogger("segue.heap")

_hold_lock = threading.Lock()
_hold_until = 0.0  # time.monotonic() before which the guard does not freeze (after a swap)


def freeze_heap() -> None:
    """Collect once, then hide everything alive from future collections."""
    gc.collect()
    gc.freeze()


def refreeze_later(delay_s: float = 5.0) -> None:
    """After a swap: unfreeze so the replaced engine can be freed once nothing refers to it
    (requests in flight and the swapping thread still do), then collect and freeze again."""
    global _hold_until
    with _hold_lock:
        _hold_until = max(_hold_until, time.monotonic() + delay_s + 1.0)
    gc.unfreeze()
    timer = threading.Timer(delay_s, freeze_heap)
    timer.daemon = True
    timer.start()


class HeapGuard:
    """Freeze the survivors of every full collection; every ``reclaim_every_s`` (None or 0:
    never) make one deep pass over the whole heap (see the module doc).

    One guard per process is enough; ``close()`` stops it (tests start and stop several).
    """

    def __init__(self, reclaim_every_s: float | None = 3600.0) -> None:
        self.reclaim_every_s = reclaim_every_s or None
        self.freezes = 0
        self.reclaims = 0
        self.last_reclaim_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._installed = False

    def start(self) -> HeapGuard:
        if not self._installed:
            gc.callbacks.append(self._after_collection)
            self._installed = True
        if self.reclaim_every_s is not None and self._thread is None:
            self._thread = threading.Thread(
                target=self._reclaim_loop, name="segue-heap-reclaim", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._installed:
            gc.callbacks.remove(self._after_collection)
            self._installed = False
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HeapGuard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Runs on whichever thread the collector ran, holding the interpreter lock, right
        # after a full pass: the younger generations are empty, so this freezes exactly the
        # pass's survivors. gc.freeze() only splices lists; it allocates nothing.
        if phase != "stop" or info.get("generation") != 2:
            return
        if time.monotonic() < _hold_until:
            return
        gc.freeze()
        self.freezes += 1

    def reclaim(self) -> float:
        """Unfreeze, collect the whole heap, freeze again; returns the seconds it took."""
        if time.monotonic() < _hold_until:
            return 0.0  # a swap's own unfreeze-collect-freeze is under way
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        took = time.perf_counter() - started
        self.reclaims += 1
        self.last_reclaim_s = took
        logger.info("deep garbage collection: %d objects freed in %.3f s", found, took)
        return took

    def _reclaim_loop(self) -> None:
        assert self.reclaim_every_s is not None
        while not self._stop.wait(self.reclaim_every_s):
            try:
                self.reclaim()
            except Exception:  # a maintenance pass must never take the process down
                logger.exception("deep garbage collection failed")
