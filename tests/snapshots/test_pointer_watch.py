"""PointerWatch: a waiter notices a move of CURRENT at once, and can be interrupted."""

from __future__ import annotations

import threading
import time

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
        started = time.monotonic()
        mover.start()
        while (pointer := store.poll()) is None:
            assert time.monotonic() - started < 5, "the move was never noticed"
            watch.wait(10)
        assert pointer.version == v1
        assert time.monotonic() - started < 5
        mover.join()
    finally:
        watch.close()


def test_wait_times_out_and_interrupt_ends_it(store):
    watch = store.watch()
    try:
        started = time.monotonic()
        assert watch.wait(0.05) is False
        assert time.monotonic() - started >= 0.04
        threading.Timer(0.05, watch.interrupt).start()
        started = time.monotonic()
        assert watch.wait(10) is True
        assert time.monotonic() - started < 5
    finally:
        watch.close()
    with pytest.raises(ValueError, match="closed"):
        watch.wait(0.01)
