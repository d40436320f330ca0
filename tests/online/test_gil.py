"""Writers that hand the interpreter lock over as they go write the same bytes."""

from __future__ import annotations

import pickle
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
