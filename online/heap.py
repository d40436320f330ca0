"""Keeping the garbage collector off the long-lived model state.

A warm engine is millions of Python objects (River's latent and weight dicts, counters, the
join buffer). CPython's full collections walk all of them whenever the heap has grown by a
quarter: in the learner that cost about 7% of its time and in the service it stalls requests
for hundreds of milliseconds. ``gc.freeze()`` moves everything alive into a generation the
collector never scans; objects created later are collected as usual.

Both ``segue serve`` and ``segue learn`` freeze once built; after an engine swap the heap is
unfrozen so the replaced engine's reference cycles can be freed, then frozen again.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["freeze_heap", "refreeze_later"]


def freeze_heap() -> None:
    """Collect once, then hide everything alive from future collections."""
    gc.collect()
    gc.freeze()


def refreeze_later(delay_s: float = 5.0) -> None:
    """After a swap: unfreeze so the replaced engine can be freed once nothing refers to it
    (requests in flight and the swapping thread still do), then collect and freeze again."""
    gc.unfreeze()
    timer = threading.Timer(delay_s, freeze_heap)
    timer.daemon = True
    timer.start()
