"""At most ``cap`` items per identical vector in the CF index (online._duplicates)."""

from __future__ import annotations

import numpy as np
import pytest

from online._duplicates import DuplicateCap, vector_keys


def test_keys_are_equal_exactly_for_equal_vectors():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 17)).astype(np.float32)
    vectors[250:] = vectors[:250]
    nudged = vectors.copy()
    nudged[:, 3] = np.nextafter(nudged[:, 3], np.float32(np.inf))  # one ulp away
    keys = vector_keys(vectors)
    assert (keys[:250] == keys[250:]).all()
    assert len(np.unique(keys[:250])) == 250
    assert not np.isin(vector_keys(nudged), keys).any()
    assert (keys != 0).all()  # 0 is kept for "not indexed"


class Reference:
    """The cap written plainly: groups of rows by the vector's bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.group: dict[int, bytes] = {}  # row -> the vector it holds a place with

    def admit(self, rows: np.ndarray, vectors: np.ndarray) -> tuple[list[bool], list[int]]:
        admitted, lost = [], []
        for row, vector in zip(rows.tolist(), vectors, strict=True):
            key = np.asarray(vector, dtype=np.float32).tobytes()
            before = self.group.pop(row, None)
            if before == key:
                self.group[row] = key
                admitted.append(True)
                continue
            if sum(k == key for k in self.group.values()) < self.cap:
                self.group[row] = key
                admitted.append(True)
            else:
                admitted.append(False)
                if before is not None:
                    lost.append(row)
        return admitted, lost


def test_admissions_follow_the_plain_reference():
    """Random batches over 300 items and 12 distinct vectors, items moving between them:
    the same places are given and taken as by the plain reference, and no vector ever
    holds more than ``cap`` items."""
    rng = np.random.default_rng(1)
    palette = rng.normal(size=(12, 5)).astype(np.float32)
    cap, ours, reference = 3, DuplicateCap(3), Reference(3)
    for _ in range(200):
        rows = rng.choice(300, size=int(rng.integers(1, 40)), replace=False)
        vectors = palette[rng.integers(0, 12, size=rows.size)]
        admitted, lost = ours.admit(rows, vectors)
        want_admitted, want_lost = reference.admit(rows, vectors)
        assert admitted.tolist() == want_admitted
        assert sorted(lost.tolist()) == sorted(want_lost)
        held = list(reference.group.values())
        assert max(held.count(k) for k in set(held)) <= cap
        assert len(ours) == len(held)


def test_a_vector_that_moves_frees_its_place():
    cap = DuplicateCap(2)
    same = np.ones((3, 4), dtype=np.float32)
    admitted, lost = cap.admit(np.array([0, 1, 2]), same)
    assert admitted.tolist() == [True, True, False] and lost.size == 0
    # item 0 got plays of its own: its vector moved, so item 2 gets the place it left
    admitted, lost = cap.admit(np.array([0]), np.full((1, 4), 2.0, dtype=np.float32))
    assert admitted.tolist() == [True]
    assert cap.admit(np.array([2]), same[:1])[0].tolist() == [True]
    # item 2 is unchanged and keeps its place; item 5 joins a full group and gets none
    admitted, lost = cap.admit(np.array([2, 5]), same[:2])
    assert admitted.tolist() == [True, False]
    # item 1 moves into item 0's group; item 1 held a place, which is now taken by nothing
    admitted, lost = cap.admit(np.array([1]), np.full((1, 4), 2.0, dtype=np.float32))
    assert admitted.tolist() == [True] and lost.size == 0
    # a third item into that group loses the place it held in its old one
    admitted, lost = cap.admit(np.array([2]), np.full((1, 4), 2.0, dtype=np.float32))
    assert admitted.tolist() == [False] and lost.tolist() == [2]


def test_rebuild_keeps_the_lowest_rows_of_each_group_and_returns_the_rest():
    vectors = np.repeat(np.eye(3, dtype=np.float32), [5, 1, 3], axis=0)
    rows = np.array([40, 41, 42, 43, 44, 7, 12, 10, 11])
    cap = DuplicateCap(2)
    extra = cap.rebuild(rows, vectors)
    assert extra.tolist() == [12, 42, 43, 44]
    assert len(cap) == 5
    # the places are those the rebuild kept: 40 and 41 keep theirs, 43 cannot get one
    assert cap.admit(np.array([40, 43]), vectors[[0, 0]])[0].tolist() == [True, False]


def test_a_cap_below_one_is_refused():
    with pytest.raises(ValueError, match="cap must be >= 1"):
        DuplicateCap(0)
