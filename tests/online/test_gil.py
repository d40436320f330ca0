"""Writers that hand the interpreter lock over as they go write the same bytes."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import pytest

from online import _gil


def test_a_yielding_pickle_has_the_bytes_of_a_plain_one_and_offers_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {f"k{i}": {"w": float(i), "v": [i, i + 1]} for i in range(50_000)}
    sleeps: list[float] = []
    monkeypatch.setattr(_gil, "_SLICE_S", 0.0)  # offer it at every write
    monkeypatch.setattr(_gil.time, "sleep", sleeps.append)
    _gil.dump_pickle(state, tmp_path / "state.bin")
    data = (tmp_path / "state.bin").read_bytes()
    assert data == pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    # the pickler writes frame by frame (64 KiB each), each followed by an offer
    assert len(sleeps) >= len(data) // (128 * 1024) > 1


def test_parts_are_written_in_order_with_offers_between_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(_gil.time, "sleep", sleeps.append)
    _gil.write_parts(tmp_path / "f", iter([b"ab", b"", memoryview(b"xcdx")[1:-1], b"e"]))
    assert (tmp_path / "f").read_bytes() == b"abcde"
    assert sleeps == []  # all within one slice: no offer needed
    monkeypatch.setattr(_gil, "_SLICE_S", 0.0)
    _gil.write_parts(tmp_path / "f", iter([b"ab", b"cd"]))
    assert (tmp_path / "f").read_bytes() == b"abcd" and sleeps == [0, 0]


def test_the_timed_lock_adds_up_each_threads_waits_only() -> None:
    lock = _gil.TimedRLock()
    with lock, lock:  # free, then re-entered: no wait
        pass
    assert lock.waited() == 0.0
    held = threading.Event()
    waits: list[float] = []

    def hold() -> None:
        with lock:
            held.set()
            time.sleep(0.2)

    def wait() -> None:
        with lock:
            waits.append(lock.waited())

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    waiter = threading.Thread(target=wait)
    waiter.start()
    holder.join()
    waiter.join()
    assert waits[0] > 0.1  # it waited most of the holder's 0.2 s
    assert lock.waited() == 0.0  # this thread's own sum did not move
    assert lock.acquire(timeout=1) and lock.acquire(blocking=False)
    lock.release()
    lock.release()
