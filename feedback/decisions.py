"""The decision log: every served list, written by ``/v1/recommend`` and read by the reward join.

A :class:`~feedback.events.Decision` holds the slate with the exact features and propensities
the bandit served; the join (:mod:`feedback.attribution`) looks it up by ``request_id`` when
the list's impressions and plays come back, so the bandit learns from what was served rather
than from what it would serve now.

Two backends share the small :class:`DecisionLog` protocol:

- :class:`InMemoryDecisionLog` (embedded mode): a bounded, thread-safe dict in the serving
  process. Decisions live only in that process: after a crash or restart the lists served
  before it are unknown to the join, so their feedback teaches the relevance model only (it
  is counted as ``unknown_request``) and the bandit loses those samples. Nothing else is
  lost: the events themselves are in the durable event log.
- :class:`RedisDecisionLog` (distributed mode): one key per request,
  ``{prefix}decision:{request_id}``, holding compact JSON with an expiry, so any serving
  worker can write and the learner can read, and keys spread over a Redis Cluster's slots.

Either way the time to live must exceed the attribution window plus the learner's lag, or
feedback arriving near the end of its window finds no decision.

>>> from feedback.events import Decision, SlateEntry
>>> log = InMemoryDecisionLog(ttl_s=3600, max_entries=1000)
>>> log.put(Decision("r1", "u1", 0.0, "v1", (SlateEntry("i1", 0, 0.9, 0.5, False),)))
>>> log.get("r1").slate[0].item_id
'i1'
>>> log.get("r2") is None
True
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import orjson

from feedback.events import Decision

DEFAULT_TTL_S = 6 * 3600.0


@runtime_checkable
class DecisionLog(Protocol):
    """Where served lists are kept until their feedback has been joined."""

    def put(self, decision: Decision, encoded: bytes | None = None) -> None:
        """Store ``decision`` under its ``request_id`` (replacing an earlier one).

        ``encoded`` is ``decision.to_json()`` when the caller has it already: the serving
        path encodes on its worker thread, off the event loop every request passes through.
        """
        ...

    def get(self, request_id: str) -> Decision | None:
        """The decision for ``request_id``, or ``None`` when unknown or expired."""
        ...

    def get_many(self, request_ids: Iterable[str]) -> dict[str, Decision]:
        """The known decisions among ``request_ids``; unknown ids are left out."""
        ...


class InMemoryDecisionLog:
    """A bounded, thread-safe, in-process decision log.

    Entries expire ``ttl_s`` seconds after they were put, measured on ``clock`` (wall time by
    default; a simulation passes its own clock), and the oldest entries are evicted once more
    than ``max_entries`` are held. Lost on a process crash: see the module docstring.

    Decisions are held as compact JSON bytes, as in Redis, not as objects: a hundred thousand
    served lists are millions of small objects (entries, feature dicts) that the garbage
    collector would walk on every full pass, stalling requests for a tenth of a second; bytes
    are invisible to it. A lookup decodes (the join does one per list).
    """

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        if max_entries <= 0:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def put(self, decision: Decision, encoded: bytes | None = None) -> None:
        now = self._clock()
        raw = decision.to_json() if encoded is None else encoded
        with self._lock:
            self._entries.pop(decision.request_id, None)
            self._entries[decision.request_id] = (now, raw)
            self._expire(now)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, request_id: str) -> Decision | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None or now - entry[0] >= self.ttl_s:
                return None
        return _decode(entry[1])

    def get_many(self, request_ids: Iterable[str]) -> dict[str, Decision]:
        out: dict[str, Decision] = {}
        for request_id in request_ids:
            decision = self.get(request_id)
            if decision is not None:
                out[request_id] = decision
        return out

    def _expire(self, now: float) -> None:
        # Entries are kept in insertion order, so the expired ones are at the front.
        while self._entries:
            request_id, (put_at, _) = next(iter(self._entries.items()))
            if now - put_at < self.ttl_s:
                break
            del self._entries[request_id]


class RedisDecisionLog:
    """A decision log in Redis: one key per request with a time to live.

    ``client_or_url`` is a ``redis.Redis`` (or ``redis.RedisCluster``) client or a URL; a
    client built here from a URL is closed by :meth:`close`. Keys are
    ``{prefix}decision:{request_id}``; values are compact JSON of
    :meth:`~feedback.events.Decision.to_dict`; ``get_many`` uses a non-transactional
    pipeline of ``GET`` rather than ``MGET``, so it also works across cluster slots.
    """

    def __init__(
        self, client_or_url: Any, prefix: str = "segue:", ttl_s: float = DEFAULT_TTL_S
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        if isinstance(client_or_url, str):
            import redis

            self._client = redis.Redis.from_url(client_or_url)
            self._owns_client = True
        else:
            self._client = client_or_url
            self._owns_client = False
        self.prefix = prefix
        self.ttl_s = float(ttl_s)

    def key(self, request_id: str) -> str:
        """The Redis key holding ``request_id``'s decision."""
        return f"{self.prefix}decision:{request_id}"

    def put(self, decision: Decision, encoded: bytes | None = None) -> None:
        self._client.set(
            self.key(decision.request_id),
            decision.to_json() if encoded is None else encoded,
            px=max(1, round(self.ttl_s * 1000)),
        )

    def get(self, request_id: str) -> Decision | None:
        return _decode(self._client.get(self.key(request_id)))

    def get_many(self, request_ids: Iterable[str]) -> dict[str, Decision]:
        ids = list(dict.fromkeys(request_ids))
        if not ids:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for request_id in ids:
            pipe.get(self.key(request_id))
        out: dict[str, Decision] = {}
        for request_id, raw in zip(ids, pipe.execute(), strict=True):
            decision = _decode(raw)
            if decision is not None:
                out[request_id] = decision
        return out

    def close(self) -> None:
        """Close the client if this log created it from a URL."""
        if self._owns_client:
            self._client.close()


def _decode(raw: bytes | str | None) -> Decision | None:
    if raw is None:
        return None
    return Decision.from_dict(orjson.loads(raw))
