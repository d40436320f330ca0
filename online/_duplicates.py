"""At most ``cap`` items per identical vector in the CF index.

An item the relevance model knows only through its artist and genres (no play of its own
yet) has exactly the vector of every other such item of that artist and genres: at a
million items, a few thousand distinct vectors stood for tens of thousands of items, one of
them for almost two thousand. HNSW cannot hold such groups. Links between identical points
are pruned as redundant, so most of a group is unreachable, and the search for a listener
whose best items lie in a few groups found fewer items than it asked for (hnswlib then
raises, and the index answered by scoring every vector: 20-40 ms per list at 100k items)
or, when it did not raise, a tenth of the true best. A graph over the distinct vectors
found all of them.

The CF channel needs only a few items per vector anyway: they score alike, and a list takes
at most ``max_per_artist`` per artist. So the engine indexes at most ``cap`` items per
identical vector and leaves the others to the content, fresh and trending channels until
their own plays give them vectors of their own.

A vector's identity is a 64-bit hash of its float32 bits (distinct vectors that collide
share one cap: harmless, and about ``2**-63`` per pair). The state is derived from the
index, so snapshots do not store it: :meth:`DuplicateCap.rebuild` recomputes it from the
index after a load, which also trims the groups of an index written before the cap.

Not thread-safe: only the learning thread, which refreshes the index, uses it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DuplicateCap", "vector_keys"]

_MULTIPLIERS = np.random.default_rng(20261123).integers(
    1, 2**63, size=4096, dtype=np.uint64
) | np.uint64(1)


def vector_keys(vectors: np.ndarray) -> np.ndarray:
    """A non-zero 64-bit key per row of ``vectors``: equal rows (as float32) get equal keys."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] > _MULTIPLIERS.size:
        raise ValueError(f"expected (n, <= {_MULTIPLIERS.size}) vectors, got {rows.shape}")
    bits = rows.view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):  # the products and the sum wrap around, as intended
        keys = (bits * _MULTIPLIERS[: rows.shape[1]]).sum(axis=1, dtype=np.uint64)
    return keys | np.uint64(1)  # 0 means "not indexed"


class DuplicateCap:
    """Which items hold one of the ``cap`` places of their vector in the CF index."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.cap = cap
        self._keys = np.zeros(0, dtype=np.uint64)  # per item row: its vector's key, 0 if out
        self._counts: dict[int, int] = {}  # per key: items holding a place

    def __len__(self) -> int:
        """Items holding a place."""
        return sum(self._counts.values())

    def _grow(self, rows: np.ndarray) -> None:
        if rows.size and int(rows.max()) >= self._keys.size:
            keys = np.zeros(max(int(rows.max()) + 1, 2 * self._keys.size), dtype=np.uint64)
            keys[: self._keys.size] = self._keys
            self._keys = keys

    def rebuild(self, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Start over from the items the index holds (``rows`` with their ``vectors``).

        Returns the rows beyond ``cap`` in their group (the highest rows of each), which the
        caller removes from the index.
        """
        rows = np.asarray(rows, dtype=np.int64)
        self._keys = np.zeros(0, dtype=np.uint64)
        self._counts = {}
        if not rows.size:
            return rows
        self._grow(rows)
        keys = vector_keys(vectors)
        order = np.lexsort((rows, keys))  # by key, then row
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        rank = np.arange(rows.size) - np.repeat(starts, np.diff(np.r_[starts, rows.size]))
        kept = order[rank < self.cap]
        self._keys[rows[kept]] = keys[kept]
        group_keys, group_counts = np.unique(keys[kept], return_counts=True)
        self._counts = dict(zip(group_keys.tolist(), group_counts.tolist(), strict=True))
        return np.sort(rows[order[rank >= self.cap]])

    def admit(self, rows: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Give places to the items at ``rows`` (distinct) with their new ``vectors``.

        An item keeps its place while its vector stays the same; one whose vector changed
        leaves its old group and gets a place in the new one if the group has room. Returns
        which of ``rows`` hold a place (index them) and the rows that held one before and
        lost it (remove them from the index).
        """
        rows = np.asarray(rows, dtype=np.int64)
        self._grow(rows)
        keys = vector_keys(vectors)
        old = self._keys[rows]
        admitted = old == keys
        lost: list[int] = []
        counts, cap, table = self._counts, self.cap, self._keys
        for i in np.flatnonzero(~admitted).tolist():  # the items whose vector changed
            before, key, row = int(old[i]), int(keys[i]), int(rows[i])
            if before:
                left = counts[before] - 1
                if left:
                    counts[before] = left
                else:
                    del counts[before]
            held = counts.get(key, 0)
            if held < cap:
                counts[key] = held + 1
                table[row] = key
                admitted[i] = True
            else:
                table[row] = 0
                if before:
                    lost.append(row)
        return admitted, np.asarray(lost, dtype=np.int64)
