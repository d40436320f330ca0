"""The policy protocol every simulation drives, and the baseline policies.

A :class:`Policy` is anything that answers a list for a listener at a (simulated) time and
learns from the events that followed. The engine satisfies it; so do the baselines here:

- :class:`RandomPolicy`: a uniform random list over the released catalog, with the exact
  propensity of every placed item;
- :class:`PopularPolicy`: the most played items, by an exponentially decayed play count on
  event time (trending now);
- ``OraclePolicy`` lives in :mod:`simulations.world`: it reads the synthetic world's hidden
  tastes, so it only exists there.

:func:`make_policies` builds policies by name; names it does not know go to an
``engine_factory`` so engine-based policies plug in without touching this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from feedback.events import Context, Event
from online.items import Item
from online.recommendation import Recommendation, RecommendedItem

__all__ = [
    "BUILTIN_POLICIES",
    "EngineFactory",
    "Policy",
    "PopularPolicy",
    "RandomPolicy",
    "make_policies",
]


@runtime_checkable
class Policy(Protocol):
    """What every simulation drives: answer a list, learn from what followed.

    ``now`` and every event's ``timestamp`` are simulated (event) time in epoch seconds, so a
    replay is exact and does not depend on the wall clock. ``learn`` receives events in time
    order; impressions of a served list carry its ``request_id`` and their ``position``.
    """

    name: str

    def recommend(
        self, user_id: str, k: int, context: Context, now: float, *, explore: bool = True
    ) -> Recommendation: ...

    def learn(self, events: Sequence[Event]) -> None: ...


def _catalog_arrays(items: Iterable[str | Item]) -> tuple[list[str], np.ndarray]:
    """Item ids in the given order and their release times (``-inf`` when unknown)."""
    ids: list[str] = []
    release: list[float] = []
    for it in items:
        if isinstance(it, Item):
            if not it.available:
                continue
            ids.append(it.item_id)
            release.append(-math.inf if it.release_time is None else float(it.release_time))
        else:
            ids.append(str(it))
            release.append(-math.inf)
    if len(set(ids)) != len(ids):
        raise ValueError("the catalog has duplicate item ids")
    return ids, np.asarray(release, dtype=float)


class RandomPolicy:
    """A uniformly random list of distinct items among those released by ``now``.

    Every placed item gets ``propensity = 1 / n``, ``n`` the number of released items: the
    exact marginal probability that this item is shown at this position, which is what the
    position-wise estimators of :mod:`simulations.ope` need. ``explore`` is ignored (the
    policy is all exploration). Items may be ids or :class:`~online.items.Item` objects; an
    item with a ``release_time`` after ``now`` is never placed.

    >>> policy = RandomPolicy(["a", "b", "c", "d"], seed=7)
    >>> rec = policy.recommend("u1", 2, {}, now=0.0)
    >>> len(rec.items), rec.items[0].propensity
    (2, 0.25)
    >>> again = RandomPolicy(["a", "b", "c", "d"], seed=7)
    >>> rec.item_ids == again.recommend("u1", 2, {}, now=0.0).item_ids
    True
    """

    def __init__(self, items: Iterable[str | Item], seed: int = 0, *, name: str = "random"):
        self.name = name
        self.seed = seed
        ids, release = _catalog_arrays(items)
        order = np.argsort(release, kind="stable")
        self._ids = [ids[i] for i in order]
        self._release = release[order]
        self._rng = np.random.default_rng(seed)
        self._requests = 0

    def clone(self) -> RandomPolicy:
        """A fresh copy with the same catalog and seed."""
        return RandomPolicy(self._items(), self.seed, name=self.name)

    def _items(self) -> list[Item]:
        return [
            Item(i, release_time=None if math.isinf(t) else float(t))
            for i, t in zip(self._ids, self._release, strict=True)
        ]

    def recommend(
        self, user_id: str, k: int, context: Context, now: float, *, explore: bool = True
    ) -> Recommendation:
        n = int(np.searchsorted(self._release, now, side="right"))
        m = min(k, n)
        picks = self._sample(n, m)
        p = 1.0 / n if n else 0.0
        self._requests += 1
        return Recommendation(
            request_id=f"{self.name}-{self._requests}",
            model_version=self.name,
            items=tuple(
                RecommendedItem(self._ids[j], score=0.0, propensity=p, explored=True) for j in picks
            ),
        )

    def _sample(self, n: int, m: int) -> list[int]:
        """``m`` distinct indices of ``range(n)``, uniformly at random, in random order."""
        if m == 0:
            return []
        if 4 * m < n:
            # sequential draws, repeats rejected: each new index is uniform over the unused
            draws = self._rng.integers(0, n, 2 * m).tolist()
            picks = list(dict.fromkeys(draws))[:m]
            if len(picks) == m:
                return picks
        return self._rng.choice(n, size=m, replace=False).tolist()

    def learn(self, events: Sequence[Event]) -> None:
        """Random learns nothing."""


class PopularPolicy:
    """The most played items now: an exponentially decayed play count on event time.

    A play at time ``t`` counts ``0.5 ** ((now - t) / half_life)`` at time ``now``. Because
    every count decays by the same factor, the ranking only changes when a play arrives, so the
    top ``cache_size`` items are kept sorted and updated per play (exact, not approximate).
    Items already played by the listener are left out when ``exclude_played`` (as the engine
    leaves out recently played items); items released after ``now`` are never placed. Ties
    (including items never played) are broken by catalog order. Only ``play`` events count.
    Every placed item gets ``propensity = 1.0`` (the policy is deterministic).

    >>> policy = PopularPolicy(["a", "b", "c"])
    >>> policy.learn([Event("e1", "play", "u1", "c", 10.0), Event("e2", "play", "u2", "b", 20.0)])
    >>> policy.recommend("u3", 3, {}, now=30.0).item_ids
    ['b', 'c', 'a']
    >>> policy.recommend("u1", 3, {}, now=30.0).item_ids
    ['b', 'a']
    """

    def __init__(
        self,
        items: Iterable[str | Item] = (),
        *,
        half_life: float = 7 * 86400.0,
        exclude_played: bool = True,
        cache_size: int = 256,
        name: str = "popular",
    ):
        if half_life <= 0:
            raise ValueError(f"half_life must be positive, got {half_life}")
        self.name = name
        self.half_life = half_life
        self.exclude_played = exclude_played
        self.cache_size = cache_size
        ids, release = _catalog_arrays(items)
        self._catalog = list(zip(ids, release.tolist(), strict=True))
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._release = np.empty(0, dtype=float)
        self._release_list: list[float] = []  # the same, for fast scalar reads
        self._score = np.empty(0, dtype=float)
        self._t_ref: float | None = None
        self._played: dict[str, set[int]] = {}
        self._top: list[int] = []  # indices of the best items, best first (exact)
        self._requests = 0
        for item_id, t in self._catalog:
            self._add(item_id, t)

    def clone(self) -> PopularPolicy:
        """A fresh, untrained copy with the same hyperparameters and catalog."""
        return PopularPolicy(
            [Item(i, release_time=None if math.isinf(t) else t) for i, t in self._catalog],
            half_life=self.half_life,
            exclude_played=self.exclude_played,
            cache_size=self.cache_size,
            name=self.name,
        )

    def _add(self, item_id: str, release_time: float = -math.inf) -> int:
        j = len(self._ids)
        self._index[item_id] = j
        self._ids.append(item_id)
        if j >= len(self._score):
            cap = max(16, 2 * len(self._score))
            self._score = np.concatenate([self._score, np.zeros(cap - len(self._score))])
            grown = np.full(cap - len(self._release), math.inf)
            self._release = np.concatenate([self._release, grown])
        self._release[j] = release_time
        self._release_list.append(release_time)
        self._promote(j)
        return j

    def _key(self, j: int) -> tuple[float, int]:
        return (-self._score[j], j)

    def _promote(self, j: int) -> None:
        """Keep ``self._top`` the exact best ``cache_size`` items after ``j``'s score rose."""
        top = self._top
        if j in top:
            top.remove(j)
        elif len(top) >= self.cache_size:
            if self._key(j) >= self._key(top[-1]):
                return
            top.pop()
        key = self._key(j)
        lo, hi = 0, len(top)
        while lo < hi:  # binary insertion by (-score, index)
            mid = (lo + hi) // 2
            if self._key(top[mid]) < key:
                lo = mid + 1
            else:
                hi = mid
        top.insert(lo, j)

    def learn(self, events: Sequence[Event]) -> None:
        for ev in events:
            if ev.type != "play":
                continue
            j = self._index.get(ev.item_id)
            if j is None:
                j = self._add(ev.item_id)
            if self._t_ref is None:
                self._t_ref = ev.timestamp
            exponent = (ev.timestamp - self._t_ref) / self.half_life
            if exponent > 500.0:  # rescale: a uniform factor keeps the ranking
                self._score *= 0.5**exponent
                self._t_ref = ev.timestamp
                exponent = 0.0
            self._score[j] += 2.0**exponent
            self._promote(j)
            if self.exclude_played:
                self._played.setdefault(ev.user_id, set()).add(j)

    def scores(self, now: float) -> dict[str, float]:
        """The decayed play count of every known item at ``now``."""
        if self._t_ref is None:
            return dict.fromkeys(self._ids, 0.0)
        factor = 0.5 ** ((now - self._t_ref) / self.half_life)
        return {i: float(self._score[j] * factor) for i, j in self._index.items()}

    def recommend(
        self, user_id: str, k: int, context: Context, now: float, *, explore: bool = True
    ) -> Recommendation:
        played = self._played.get(user_id, set()) if self.exclude_played else set()
        chosen: list[int] = []
        release = self._release_list
        for j in self._top:  # best first: stop as soon as the list is full
            if j in played or release[j] > now:
                continue
            chosen.append(j)
            if len(chosen) == k:
                break
        n = len(self._ids)
        if len(chosen) < k and len(self._top) < n:
            # the cache ran dry (a heavy listener, or many unreleased items): exact full pass
            mask = self._release[:n] <= now
            if played:
                mask[list(played)] = False
            candidates = np.flatnonzero(mask)
            order = np.lexsort((candidates, -self._score[candidates]))
            chosen = candidates[order[:k]].tolist()
        factor = 1.0 if self._t_ref is None else 0.5 ** ((now - self._t_ref) / self.half_life)
        self._requests += 1
        return Recommendation(
            request_id=f"{self.name}-{self._requests}",
            model_version=self.name,
            items=tuple(
                RecommendedItem(self._ids[j], score=float(self._score[j] * factor), propensity=1.0)
                for j in chosen
            ),
        )


EngineFactory = Callable[[str, Sequence[Item], int], Policy]
"""Builds an engine-based policy: ``(name, catalog, seed) -> Policy``."""

BUILTIN_POLICIES: tuple[str, ...] = ("random", "popular", "oracle")


def make_policies(
    names: Iterable[str],
    catalog: Sequence[Item],
    seed: int,
    engine_factory: EngineFactory | None = None,
    *,
    world: object | None = None,
    options: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, Policy]:
    """Build policies by name, in the given order.

    ``random`` and ``popular`` are the baselines; ``oracle`` needs the synthetic ``world``
    (a :class:`simulations.world.World`). Any other name is passed to ``engine_factory``
    as ``engine_factory(name, catalog, seed)``. ``options`` maps a name to keyword arguments
    for that policy (e.g. ``{"popular": {"half_life": 3600}}``).

    >>> sorted(make_policies(["popular", "random"], [Item("a"), Item("b")], seed=1))
    ['popular', 'random']
    """
    options = options or {}
    out: dict[str, Policy] = {}
    for name in names:
        kwargs = dict(options.get(name, {}))
        if name in out:
            raise ValueError(f"policy {name!r} is listed twice")
        if name == "random":
            out[name] = RandomPolicy(catalog, seed, **kwargs)  # type: ignore[arg-type]
        elif name == "popular":
            out[name] = PopularPolicy(catalog, **kwargs)  # type: ignore[arg-type]
        elif name == "oracle":
            if world is None:
                raise ValueError("the 'oracle' policy needs the synthetic world (world=...)")
            from simulations.world import OraclePolicy

            out[name] = OraclePolicy(world)  # type: ignore[arg-type]
        elif engine_factory is not None:
            out[name] = engine_factory(name, catalog, seed)
        else:
            raise ValueError(
                f"unknown policy {name!r}: built-in policies are {', '.join(BUILTIN_POLICIES)}; "
                "others need an engine_factory"
            )
    return out
