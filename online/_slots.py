"""The SquareCB slot loop of :class:`online.bandit.BanditReranker`, compiled with Numba.

Once VW's linear terms are known (see ``BanditReranker._linear_terms``), filling k slots is a
small sequential loop over the pool: each slot's costs, SquareCB's pmf, one draw, and the
updates that placing an item makes (similarity to what is placed, the artist cap). Written
with numpy it was some twenty array calls per slot, each costing more in dispatch than in
arithmetic on a hundred numbers, and it held the interpreter lock throughout; compiled, the
whole list takes tens of microseconds and releases the lock (``nogil``), so requests on
other threads go on meanwhile.

The kernel is compiled when this module is imported (an explicit signature) and cached on
disk next to it (or in Numba's user cache), so no request pays for compilation; where no
cache location is writable it is compiled at every import, a second or two.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["fill_squarecb"]

_SCALE = 1e4  # the served similarity is rounded to 4 decimals, as every served feature


_SIGNATURE = (
    "int64(float64[::1], float64[::1], float64, float64, float64[::1], float64[:, ::1], "
    "int64[::1], int64, float64, boolean, float64[::1], int64[::1], float64[::1], "
    "float64[::1], float64[::1], boolean[::1])"
)


def _fill_squarecb(
    a: np.ndarray,
    b: np.ndarray,
    c: float,
    d: float,
    positions: np.ndarray,
    units: np.ndarray,
    artists: np.ndarray,
    max_per_artist: int,
    gamma: float,
    explore: bool,
    uniforms: np.ndarray,
    out_rows: np.ndarray,
    out_propensity: np.ndarray,
    out_cost: np.ndarray,
    out_sim: np.ndarray,
    out_explored: np.ndarray,
) -> int:  # pragma: no cover - compiled; its oracle is the plain loop in the tests
    """Fill up to ``len(positions)`` slots; returns how many were filled.

    Row ``i`` of the pool costs ``a[i] + pos * b[i] + sim_i * (c + pos * d)`` at a slot with
    position feature ``pos``, where ``sim_i`` is its largest cosine to the rows placed so far
    (``units`` are unit vectors, or zero columns for none), rounded to 4 decimals. SquareCB:
    every eligible row but the first cheapest gets ``1 / (m + gamma * (cost - min))`` (``m``
    eligible rows), the cheapest the rest of the mass. With ``explore`` the row is the first
    whose running sum of the pmf passes ``uniforms[slot]`` (the last row with mass when
    round-off leaves the sum short of it); otherwise the cheapest, with propensity 1.
    ``artists`` are small integer codes; ``max_per_artist`` 0 means no cap. Slot ``s`` of
    the list is row ``out_rows[s]`` with its propensity, cost, served similarity and whether
    it was explored.
    """
    n = a.shape[0]
    dim = units.shape[1]
    sim = np.zeros(n)
    served = np.zeros(n)
    cost = np.empty(n)
    pmf = np.empty(n)
    blocked = np.zeros(n, dtype=np.bool_)
    placed = np.zeros(n, dtype=np.int64)  # per artist code
    remaining = n
    filled = 0
    for slot in range(positions.shape[0]):
        if remaining == 0:
            break
        pos = positions[slot]
        slope = c + pos * d
        best = -1
        low = np.inf
        for i in range(n):
            if blocked[i]:
                continue
            value = a[i] + pos * b[i] + served[i] * slope
            cost[i] = value
            if best < 0 or value < low:
                best = i
                low = value
        total = 0.0
        for i in range(n):
            if blocked[i] or i == best:
                pmf[i] = 0.0
            else:
                pmf[i] = 1.0 / ((cost[i] - low) * gamma + remaining)
                total += pmf[i]
        pmf[best] = max(0.0, 1.0 - total)
        if explore:
            u = uniforms[slot]
            j = n - 1
            running = 0.0
            for i in range(n):
                running += pmf[i]
                if running > u:
                    j = i
                    break
            while pmf[j] <= 0.0:
                j -= 1
            propensity = pmf[j]
        else:
            j = best
            propensity = 1.0
        out_rows[filled] = j
        out_propensity[filled] = min(1.0, propensity)
        out_cost[filled] = cost[j]
        out_sim[filled] = served[j]
        out_explored[filled] = j != best
        filled += 1
        blocked[j] = True
        remaining -= 1
        artist = artists[j]
        placed[artist] += 1
        if max_per_artist > 0 and placed[artist] >= max_per_artist:
            for i in range(n):
                if artists[i] == artist and not blocked[i]:
                    blocked[i] = True
                    remaining -= 1
        if dim:
            for i in range(n):
                dot = 0.0
                for f in range(dim):
                    dot += units[i, f] * units[j, f]
                if dot > sim[i]:
                    sim[i] = dot
                    served[i] = np.rint(dot * _SCALE) / _SCALE
    return filled


try:
    fill_squarecb = njit(_SIGNATURE, cache=True, nogil=True)(_fill_squarecb)
except RuntimeError:  # no writable place for Numba's cache (a read-only install): compile here
    fill_squarecb = njit(_SIGNATURE, nogil=True)(_fill_squarecb)
