"""PointerWatch: a waiter notices a move of CURRENT at once, and can be interrupted."""

from __future__ import annotations

import threading

import pytest

from snapshots import SnapshotStore


def test_a_rollback_wakes_the_watch_at_once(store, cut):
    v1 = cut(store, 100).version
    cut(store, 200)
    watch = store.watch()
    store.poll()
    try:
        if not watch.native:
            pytest.skip("no inotify here: the watch only times out")
        mover = threading.Timer(0.1, lambda: SnapshotStore(store.root).rollback(v1))
        mover.start()
        # woken by the move itself (True), not by the 30 s timeout running out (False)
        assert watch.wait(30) is True, "the move was never noticed"
        mover.join()
        pointer = store.poll()
        assert pointer is not None and pointer.version == v1
    finally:
        watch.close()


def test_wait_times_out_and_interrupt_ends_it(store):
    watch = store.watch()
    try:
        assert watch.wait(0.05) is False  # nothing happened: it timed out
        threading.Timer(0.05, watch.interrupt).start()
        assert watch.wait(30) is True  # interrupted, not timed out
    finally:
        watch.close()
    with pytest.raises(ValueError, match="closed"):
        watch.wait(0.01)
