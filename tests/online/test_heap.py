"""The heap guard: full collections stop walking what survived the previous one, and what
that keeps back is freed by the deep pass."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from online import heap
from online.heap import HeapGuard, refreeze_later


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeapGuard]:
    monkeypatch.setattr(heap, "_hold_until", 0.0)
    gc.collect()
    gc.unfreeze()
    g = HeapGuard(reclaim_every_s=None).start()
    try:
        yield g
    finally:
        g.close()
        gc.unfreeze()
        gc.collect()


def test_survivors_of_a_full_collection_are_not_walked_again(guard: HeapGuard):
    model = [{"w": float(i)} for i in range(50_000)]  # learned state: containers
    frozen_before = gc.get_freeze_count()
    gc.collect()
    assert guard.freezes == 1
    assert gc.get_freeze_count() >= frozen_before + len(model)
    # the next full pass walks only what came after: nothing of the model is in a generation
    walked = {id(o) for g in range(3) for o in gc.get_objects(generation=g)}
    assert not walked & {id(d) for d in model}
    # frozen objects still die by reference counting
    probe = Node()
    ref = weakref.ref(probe)
    gc.collect()
    del probe
    assert ref() is None


def test_frozen_cycles_wait_for_the_deep_pass_then_are_freed(guard: HeapGuard):
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    gc.collect()  # both survive (referenced) and are frozen
    del a, b
    gc.collect()
    assert ref() is not None  # the cost the module documents: a frozen cycle waits...
    took = guard.reclaim()
    assert ref() is None  # ...for the deep pass
    assert took >= 0 and guard.reclaims == 1
    assert gc.get_freeze_count() > 0  # and the heap is frozen again afterwards


def test_cycles_never_frozen_are_collected_as_usual(guard: HeapGuard):
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    gc.collect()
    assert ref() is None


def test_no_freezing_while_a_swapped_out_engine_may_still_be_freed(guard: HeapGuard):
    refreeze_later(delay_s=60)  # a swap: the old engine's cycles must stay collectable
    try:
        old = Node()
        old.other = Node()
        old.other.other = old
        ref = weakref.ref(old)
        gc.collect()
        assert guard.freezes == 0
        assert gc.get_freeze_count() == 0
        del old
        gc.collect()
        assert ref() is None
    finally:
        heap._hold_until = 0.0


def test_the_deep_pass_runs_on_its_interval():
    gc.unfreeze()
    g = HeapGuard(reclaim_every_s=0.05).start()
    try:
        deadline = 200
        while g.reclaims == 0 and deadline:
            time.sleep(0.01)
            deadline -= 1
        assert g.reclaims >= 1
    finally:
        g.close()
        gc.unfreeze()
        gc.collect()
