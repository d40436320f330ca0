"""Counters the learner keeps alongside its models: popularity, exposure, sessions, transitions.

Every class here learns on **event time** (the ``timestamp`` of the events it is given, and a
``now`` passed by the caller, normally the learner's watermark), never on the wall clock, so a
replay reproduces the service's state exactly. Each has ``learn_one(event)`` (it picks the
event types it cares about), ``clone()`` (a fresh, empty copy with the same
hyperparameters), and ``dump() -> bytes`` / ``load(bytes)``: JSON, no pickle, so a snapshot
can be read without trusting it; ``load`` raises ``ValueError`` when the dump was made with
different hyperparameters. Reads used on the serving path have vectorised forms returning
numpy arrays.

Decayed counts use the exact exponential form ``sum_i 0.5 ** ((now - t_i) / half_life)``,
kept as ``sum_i 2 ** ((t_i - origin) / half_life)`` against a per-object ``origin``: an event
is one addition, events may arrive out of order, and a read at ``now`` is one multiplication.
The origin moves forward (rescaling what is stored) before the numbers could overflow.

Plays of any length count as plays here; the reward join (:mod:`feedback.attribution`)
decides what a play was worth.

>>> pop = Popularity(half_life_s=10.0)
>>> pop.add("a", 0.0)
>>> pop.add("a", 10.0)
>>> pop.score("a", 10.0), pop.score("a", 20.0), pop.count("a")
(1.5, 0.75, 2)
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from feedback.events import Event
from feedback.jsonparts import Part, Rows, json_parts

_FORMAT = 1
_REBASE_AT = 512.0  # half-lives past the origin before the origin moves (2**512 < 1e155)


def _check_positive(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _dump_parts(kind: str, params: dict[str, Any], state: dict[str, Any]) -> Iterator[Part]:
    """The envelope every dump is in, in parts (:class:`~feedback.jsonparts.Rows` in
    ``state`` are encoded a few rows at a time)."""
    return json_parts({"kind": kind, "format": _FORMAT, "params": params, "state": state})


def _load(kind: str, params: dict[str, Any], data: bytes) -> dict[str, Any]:
    blob = orjson.loads(data)
    if blob.get("kind") != kind or blob.get("format") != _FORMAT:
        raise ValueError(f"not a {kind} dump (kind={blob.get('kind')!r})")
    for name, value in params.items():
        if blob["params"].get(name) != value:
            raise ValueError(
                f"{kind} dump was made with {name}={blob['params'].get(name)!r}, "
                f"this instance has {name}={value!r}"
            )
    return blob["state"]


class Popularity:
    """Play counts per item: decayed (trending) and all-time.

    ``score`` is the decayed play count with ``half_life_s``; ``trend`` compares the play
    rate over the short ``trend_half_life_s`` with the rate over ``half_life_s`` (above 1:
    accelerating; 0 for an item never played). ``top`` is the "popular now" fallback list:
    its order is recomputed at most once per ``top_refresh_s`` of event time (scores are
    always current), so calling it on every request stays cheap. Reads take ``now`` as the
    learner's watermark: a play later than ``now`` would weigh more than 1.
    """

    def __init__(
        self,
        half_life_s: float = 6 * 3600.0,
        trend_half_life_s: float = 1800.0,
        top_refresh_s: float = 60.0,
        top_size: int = 500,
    ) -> None:
        _check_positive("half_life_s", half_life_s)
        _check_positive("trend_half_life_s", trend_half_life_s)
        _check_positive("top_size", top_size)
        if top_refresh_s < 0:
            raise ValueError(f"top_refresh_s must be >= 0, got {top_refresh_s}")
        self.half_life_s = float(half_life_s)
        self.trend_half_life_s = float(trend_half_life_s)
        self.top_refresh_s = float(top_refresh_s)
        self.top_size = int(top_size)
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._long = np.zeros(16)
        self._short = np.zeros(16)
        self._count = np.zeros(16, dtype=np.int64)
        self._origin: float | None = None
        self._top: tuple[float, np.ndarray, int] | None = None  # (computed at, order, size asked)
        self._top_ids: tuple[tuple, tuple[str, ...]] | None = None  # (_top, its ids)

    def _params(self) -> dict[str, Any]:
        return {
            "half_life_s": self.half_life_s,
            "trend_half_life_s": self.trend_half_life_s,
            "top_refresh_s": self.top_refresh_s,
            "top_size": self.top_size,
        }

    def clone(self) -> Popularity:
        """A fresh, empty copy with the same hyperparameters."""
        return Popularity(**self._params())

    def __len__(self) -> int:
        return len(self._ids)

    def learn_one(self, event: Event) -> None:
        """Count ``event`` if it is a play."""
        if event.type == "play":
            self.add(event.item_id, event.timestamp)

    def add(self, item_id: str, t: float, weight: float = 1.0) -> None:
        """Count one play (or ``weight`` plays) of ``item_id`` at event time ``t``."""
        if self._origin is None:
            self._origin = t
        shortest = min(self.half_life_s, self.trend_half_life_s)
        if (t - self._origin) / shortest > _REBASE_AT:
            self._long *= 2.0 ** ((self._origin - t) / self.half_life_s)
            self._short *= 2.0 ** ((self._origin - t) / self.trend_half_life_s)
            self._origin = t
        i = self._index.get(item_id)
        if i is None:
            i = self._index[item_id] = len(self._ids)
            self._ids.append(item_id)
            if i == len(self._long):
                self._long = np.concatenate([self._long, np.zeros(i)])
                self._short = np.concatenate([self._short, np.zeros(i)])
                self._count = np.concatenate([self._count, np.zeros(i, dtype=np.int64)])
        self._long[i] += weight * 2.0 ** ((t - self._origin) / self.half_life_s)
        self._short[i] += weight * 2.0 ** ((t - self._origin) / self.trend_half_life_s)
        self._count[i] += 1

    def _factor(self, now: float, half_life_s: float) -> float:
        return 0.0 if self._origin is None else 2.0 ** ((self._origin - now) / half_life_s)

    def _rows(self, item_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.fromiter((self._index.get(i, -1) for i in item_ids), dtype=np.int64)
        return rows, rows >= 0

    def score(self, item_id: str, now: float) -> float:
        """The decayed play count of ``item_id`` at event time ``now``."""
        i = self._index.get(item_id)
        return 0.0 if i is None else float(self._long[i] * self._factor(now, self.half_life_s))

    def scores(self, item_ids: Sequence[str], now: float) -> np.ndarray:
        """:meth:`score` for many items at once (0 for unknown items)."""
        return self.scores_and_trends(item_ids, now)[0]

    def count(self, item_id: str) -> int:
        """How many plays of ``item_id`` were ever counted."""
        i = self._index.get(item_id)
        return 0 if i is None else int(self._count[i])

    def trend(self, item_id: str, now: float) -> float:
        """Short-half-life play rate over long-half-life play rate (0 if never played)."""
        return float(self.trends([item_id], now)[0])

    def trends(self, item_ids: Sequence[str], now: float) -> np.ndarray:
        """:meth:`trend` for many items at once."""
        return self.scores_and_trends(item_ids, now)[1]

    def scores_and_trends(
        self, item_ids: Sequence[str], now: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`scores` and :meth:`trends` of the same items, looked up once (each list's
        candidates need both)."""
        rows, known = self._rows(item_ids)
        long = np.zeros(len(rows))
        short = np.zeros(len(rows))
        long[known] = self._long[rows[known]] * self._factor(now, self.half_life_s)
        short[known] = self._short[rows[known]] * self._factor(now, self.trend_half_life_s)
        out = np.zeros(len(rows))
        positive = long > 0
        out[positive] = (short[positive] / self.trend_half_life_s) / (
            long[positive] / self.half_life_s
        )
        return long, out

    def top(self, n: int, now: float) -> list[tuple[str, float]]:
        """The ``n`` most played items now, best first, with their scores at ``now``.

        Ties keep the order in which items were first seen. Only played items appear.
        """
        order = self._ranked(n, now)[1][:n]
        factor = self._factor(now, self.half_life_s)
        return [(self._ids[i], float(self._long[i] * factor)) for i in order]

    def ranking(self, n: int, now: float) -> tuple[str, ...]:
        """The ids of :meth:`top` without scores: at least the ``n`` best (fewer if fewer
        items were played), best first. It is the same tuple object for as long as the
        order is (up to ``top_refresh_s``), so a caller can key a cache on it; a list asks
        for the trending items on every request.

        >>> p = Popularity(top_refresh_s=60)
        >>> for item in ("a", "b", "b"):
        ...     p.add(item, 0.0)
        >>> p.ranking(2, 1.0)
        ('b', 'a')
        >>> p.ranking(1, 2.0) is p.ranking(2, 3.0)
        True
        """
        top = self._ranked(n, now)
        cached = self._top_ids
        if cached is None or cached[0] is not top:
            cached = self._top_ids = (top, tuple(self._ids[i] for i in top[1]))
        return cached[1]

    def _ranked(self, n: int, now: float) -> tuple[float, np.ndarray, int]:
        """``(computed at, order, size asked)``: the cached order of the most played items,
        recomputed when older than ``top_refresh_s`` or shorter than ``n`` asks."""
        size = len(self._ids)
        stale = (
            self._top is None or abs(now - self._top[0]) >= self.top_refresh_s or n > self._top[2]
        )
        if stale:
            wanted = max(n, self.top_size)
            k = min(wanted, size)
            values = self._long[:size]
            if k < size:
                part = np.argpartition(-values, k - 1)[:k]
                order = part[np.lexsort((part, -values[part]))]
            else:
                order = np.argsort(-values, kind="stable")
            self._top = (now, order[values[order] > 0], wanted)
        assert self._top is not None
        return self._top

    def dump(self) -> bytes:
        """The learned state as JSON bytes (see the module docstring)."""
        return b"".join(self.dump_parts())

    def dump_parts(self) -> Iterator[Part]:
        """:meth:`dump`'s bytes in small pieces (a writer hands the interpreter over between
        two; see :mod:`feedback.jsonparts`). The state must not change meanwhile."""
        size = len(self._ids)
        top = None if self._top is None else [self._top[0], Rows(self._top[1], 4096), self._top[2]]
        state = {
            "origin": self._origin,
            "ids": Rows(self._ids, 4096),
            "long": Rows(self._long[:size], 4096),
            "short": Rows(self._short[:size], 4096),
            "count": Rows(self._count[:size], 4096),
            "top": top,
        }
        return _dump_parts("Popularity", self._params(), state)

    def load(self, data: bytes) -> None:
        """Replace the learned state with one from :meth:`dump`."""
        state = _load("Popularity", self._params(), data)
        self._ids = list(state["ids"])
        self._index = {item: i for i, item in enumerate(self._ids)}
        capacity = max(16, len(self._ids))
        self._long = np.zeros(capacity)
        self._short = np.zeros(capacity)
        self._count = np.zeros(capacity, dtype=np.int64)
        size = len(self._ids)
        self._long[:size] = state["long"]
        self._short[:size] = state["short"]
        self._count[:size] = state["count"]
        self._origin = state["origin"]
        top = state["top"]
        self._top = None if top is None else (top[0], np.asarray(top[1], dtype=np.int64), top[2])


class Exposure:
    """How much each listener has been shown each item and each artist, decayed.

    Counts impressions with ``half_life_s`` (fatigue features for the reranker). Memory is
    bounded per listener: the ``max_items_per_user`` items and ``max_artists_per_user``
    artists updated most recently (in arrival order) are kept, older entries read as 0;
    with ``max_users`` set, the listeners updated least recently are forgotten as well.
    """

    def __init__(
        self,
        half_life_s: float = 24 * 3600.0,
        max_items_per_user: int = 200,
        max_artists_per_user: int = 50,
        max_users: int | None = None,
    ) -> None:
        _check_positive("half_life_s", half_life_s)
        _check_positive("max_items_per_user", max_items_per_user)
        _check_positive("max_artists_per_user", max_artists_per_user)
        _check_positive("max_users", max_users, allow_none=True)
        self.half_life_s = float(half_life_s)
        self.max_items_per_user = int(max_items_per_user)
        self.max_artists_per_user = int(max_artists_per_user)
        self.max_users = max_users
        self._origin: float | None = None
        self._users: OrderedDict[str, tuple[OrderedDict[str, float], OrderedDict[str, float]]] = (
            OrderedDict()
        )

    def _params(self) -> dict[str, Any]:
        return {
            "half_life_s": self.half_life_s,
            "max_items_per_user": self.max_items_per_user,
            "max_artists_per_user": self.max_artists_per_user,
            "max_users": self.max_users,
        }

    def clone(self) -> Exposure:
        """A fresh, empty copy with the same hyperparameters."""
        return Exposure(**self._params())

    def __len__(self) -> int:
        return len(self._users)

    def learn_one(self, event: Event, artist: str | None = None) -> None:
        """Count ``event`` if it is an impression; ``artist`` is the item's artist, if known."""
        if event.type == "impression":
            self.add(event.user_id, event.item_id, event.timestamp, artist)

    def add(
        self, user: str, item_id: str, t: float, artist: str | None = None, weight: float = 1.0
    ) -> None:
        """Count one impression of ``item_id`` (by ``artist``) to ``user`` at event time ``t``."""
        if self._origin is None:
            self._origin = t
        if (t - self._origin) / self.half_life_s > _REBASE_AT:
            factor = 2.0 ** ((self._origin - t) / self.half_life_s)
            for items, artists in self._users.values():
                for table in (items, artists):
                    for key in table:
                        table[key] *= factor
            self._origin = t
        value = weight * 2.0 ** ((t - self._origin) / self.half_life_s)
        entry = self._users.get(user)
        if entry is None:
            entry = self._users[user] = (OrderedDict(), OrderedDict())
            if self.max_users is not None and len(self._users) > self.max_users:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(user)
        items, artists = entry
        _bump(items, item_id, value, self.max_items_per_user)
        if artist:
            _bump(artists, artist, value, self.max_artists_per_user)

    def _factor(self, now: float) -> float:
        return 0.0 if self._origin is None else 2.0 ** ((self._origin - now) / self.half_life_s)

    def item(self, user: str, item_id: str, now: float) -> float:
        """``user``'s decayed exposure to ``item_id`` at event time ``now``."""
        entry = self._users.get(user)
        return 0.0 if entry is None else entry[0].get(item_id, 0.0) * self._factor(now)

    def artist(self, user: str, artist: str, now: float) -> float:
        """``user``'s decayed exposure to ``artist`` at event time ``now``."""
        entry = self._users.get(user)
        return 0.0 if entry is None else entry[1].get(artist, 0.0) * self._factor(now)

    def items(self, user: str, item_ids: Sequence[str], now: float) -> np.ndarray:
        """:meth:`item` for many items at once."""
        return self._many(user, 0, item_ids, now)

    def artists(self, user: str, artists: Sequence[str], now: float) -> np.ndarray:
        """:meth:`artist` for many artists at once."""
        return self._many(user, 1, artists, now)

    def _many(self, user: str, which: int, keys: Sequence[str], now: float) -> np.ndarray:
        entry = self._users.get(user)
        if entry is None:
            return np.zeros(len(keys))
        table = entry[which]
        raw = np.fromiter((table.get(k, 0.0) for k in keys), dtype=np.float64, count=len(keys))
        return raw * self._factor(now)

    def dump(self) -> bytes:
        """The learned state as JSON bytes (see the module docstring)."""
        return b"".join(self.dump_parts())

    def dump_parts(self) -> Iterator[Part]:
        """:meth:`dump`'s bytes in small pieces (see :meth:`Popularity.dump_parts`)."""
        users = (
            [user, list(items.items()), list(artists.items())]
            for user, (items, artists) in self._users.items()
        )
        state = {"origin": self._origin, "users": Rows(users, 128)}
        return _dump_parts("Exposure", self._params(), state)

    def load(self, data: bytes) -> None:
        """Replace the learned state with one from :meth:`dump`."""
        state = _load("Exposure", self._params(), data)
        self._origin = state["origin"]
        self._users = OrderedDict(
            (user, (OrderedDict(items), OrderedDict(artists)))
            for user, items, artists in state["users"]
        )


def _bump(table: OrderedDict[str, float], key: str, value: float, limit: int) -> None:
    table[key] = table.get(key, 0.0) + value
    table.move_to_end(key)
    if len(table) > limit:
        table.popitem(last=False)


class Sessions:
    """Each listener's last ``max_len`` plays with their event times, oldest first.

    Plays are kept in event-time order (a late play is inserted where it belongs; equal
    times keep arrival order). With ``max_users`` set, the listeners who played least
    recently (in arrival order) are forgotten.
    """

    def __init__(self, max_len: int = 50, max_users: int | None = None) -> None:
        _check_positive("max_len", max_len)
        _check_positive("max_users", max_users, allow_none=True)
        self.max_len = int(max_len)
        self.max_users = max_users
        self._users: OrderedDict[str, list[tuple[float, str]]] = OrderedDict()

    def _params(self) -> dict[str, Any]:
        return {"max_len": self.max_len, "max_users": self.max_users}

    def clone(self) -> Sessions:
        """A fresh, empty copy with the same hyperparameters."""
        return Sessions(**self._params())

    def __len__(self) -> int:
        return len(self._users)

    def learn_one(self, event: Event) -> None:
        """Record ``event`` if it is a play."""
        if event.type == "play":
            self.add(event.user_id, event.item_id, event.timestamp)

    def add(self, user: str, item_id: str, t: float) -> None:
        """Record that ``user`` played ``item_id`` at event time ``t``."""
        plays = self._users.get(user)
        if plays is None:
            plays = self._users[user] = []
            if self.max_users is not None and len(self._users) > self.max_users:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(user)
        bisect.insort_right(plays, (t, item_id), key=lambda p: p[0])
        if len(plays) > self.max_len:
            del plays[: len(plays) - self.max_len]

    def recent(self, user: str) -> list[tuple[str, float]]:
        """``user``'s last plays as ``(item_id, t)``, oldest first (empty if unknown)."""
        return [(item, t) for t, item in self._users.get(user, ())]

    def dump(self) -> bytes:
        """The learned state as JSON bytes (see the module docstring)."""
        users = [[user, plays] for user, plays in self._users.items()]
        return b"".join(_dump_parts("Sessions", self._params(), {"users": users}))

    def load(self, data: bytes) -> None:
        """Replace the learned state with one from :meth:`dump`."""
        state = _load("Sessions", self._params(), data)
        self._users = OrderedDict(
            (user, [(t, item) for t, item in plays]) for user, plays in state["users"]
        )


class Transitions:
    """Item-to-next-item co-visitation counts, updated on every play.

    When a listener plays ``b`` within ``max_gap_s`` of event time after playing ``a``
    (``a != b``), the count ``a -> b`` grows by one: the "what follows what" signal that
    doubles next-item hit rate on replayed logs (see the design brief). A play older than the
    listener's last one (out of order) is not used. Each item keeps at most ``max_next``
    successors: past that, the weakest (the oldest among equals) is dropped. With
    ``max_users`` set, the last play is remembered only for that many listeners.

    >>> tr = Transitions()
    >>> for item, t in [("a", 0), ("b", 10), ("a", 20), ("b", 30), ("a", 40), ("c", 50)]:
    ...     tr.add("u1", item, t)
    >>> tr.next_items("a", 2)
    [('b', 2.0), ('c', 1.0)]
    """

    def __init__(
        self, max_next: int = 100, max_gap_s: float = 1800.0, max_users: int | None = None
    ) -> None:
        _check_positive("max_next", max_next)
        _check_positive("max_gap_s", max_gap_s)
        _check_positive("max_users", max_users, allow_none=True)
        self.max_next = int(max_next)
        self.max_gap_s = float(max_gap_s)
        self.max_users = max_users
        self._last: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._next: dict[str, dict[str, float]] = {}

    def _params(self) -> dict[str, Any]:
        return {"max_next": self.max_next, "max_gap_s": self.max_gap_s, "max_users": self.max_users}

    def clone(self) -> Transitions:
        """A fresh, empty copy with the same hyperparameters."""
        return Transitions(**self._params())

    def __len__(self) -> int:
        return len(self._next)

    def learn_one(self, event: Event) -> None:
        """Use ``event`` if it is a play."""
        if event.type == "play":
            self.add(event.user_id, event.item_id, event.timestamp)

    def add(self, user: str, item_id: str, t: float) -> None:
        """Record ``user``'s play of ``item_id`` at event time ``t``."""
        last = self._last.get(user)
        if last is not None:
            prev, prev_t = last
            if t < prev_t:
                return
            if prev != item_id and t - prev_t <= self.max_gap_s:
                self.count(prev, item_id)
            self._last.move_to_end(user)
        self._last[user] = (item_id, t)
        if self.max_users is not None and len(self._last) > self.max_users:
            self._last.popitem(last=False)

    def count(self, item_id: str, next_item: str, weight: float = 1.0) -> None:
        """Add ``weight`` to the count ``item_id -> next_item`` directly."""
        table = self._next.get(item_id)
        if table is None:
            table = self._next[item_id] = {}
        table[next_item] = table.get(next_item, 0.0) + weight
        if len(table) > self.max_next:
            weakest = min((k for k in table if k != next_item), key=table.__getitem__)
            del table[weakest]

    def next_items(self, item_id: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` items most often played next after ``item_id``, with their counts."""
        table = self._next.get(item_id, {})
        return sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def scores(self, item_id: str, next_items: Sequence[str]) -> np.ndarray:
        """The counts ``item_id -> x`` for each ``x`` in ``next_items`` (0 when unseen)."""
        table = self._next.get(item_id, {})
        return np.fromiter(
            (table.get(x, 0.0) for x in next_items), dtype=np.float64, count=len(next_items)
        )

    def dump(self) -> bytes:
        """The learned state as JSON bytes (see the module docstring)."""
        return b"".join(self.dump_parts())

    def dump_parts(self) -> Iterator[Part]:
        """:meth:`dump`'s bytes in small pieces (see :meth:`Popularity.dump_parts`)."""
        state = {
            "last": Rows(([user, item, t] for user, (item, t) in self._last.items()), 1024),
            "next": Rows(([item, list(table.items())] for item, table in self._next.items()), 256),
        }
        return _dump_parts("Transitions", self._params(), state)

    def load(self, data: bytes) -> None:
        """Replace the learned state with one from :meth:`dump`."""
        state = _load("Transitions", self._params(), data)
        self._last = OrderedDict((user, (item, t)) for user, item, t in state["last"])
        self._next = {item: dict(table) for item, table in state["next"]}
