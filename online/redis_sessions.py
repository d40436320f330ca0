"""Listener sessions in Redis, shared by every serving process of the distributed mode.

The session (a listener's last plays) is what makes the next list reflect the plays just
posted, before any model update. In the embedded mode it lives in the engine
(:class:`online.state.Sessions`). With several serving processes, a play posted to one must
be seen by the next request whichever process answers it, and must survive the engine swaps
that follow each snapshot; so with ``SEGUE_REDIS_URL`` set, sessions live in Redis.

Layout: one sorted set per listener, ``{prefix}session:{user_id}``, scored by event time, with
members ``{item_id}\\x1f{event_id}``: a retried event is one member, not two, and a late play
takes its place in event-time order. Each write keeps the newest ``max_len`` plays and renews
the key's time to live (plays older than a few session half-lives weigh almost nothing).
Equal event times are ordered by member (arrival order in the in-process version).

Sessions are shared listener state, not model state: snapshots do not carry them
(:meth:`dump` writes an empty session state, :meth:`load` ignores what it is given), so a
rollback leaves them as they are.

Redis being unreachable never fails a request or an acknowledged batch: a failed write or read
is logged and counted in :attr:`errors`, and the listener is served as if the session were
empty (the event log still has the plays; the models learn them as usual).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from feedback.events import Event
from online.state import Sessions

__all__ = ["RedisSessions"]

logger = logging.getLogger(__name__)
_SEP = "\x1f"


class RedisSessions:
    """Each listener's last ``max_len`` plays, oldest first, in Redis (module docstring)."""

    def __init__(
        self,
        client_or_url: Any,
        *,
        prefix: str = "segue:",
        max_len: int = 20,
        ttl_s: float = 86_400.0,
    ) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        if isinstance(client_or_url, str):
            import redis

            self._client = redis.Redis.from_url(client_or_url, socket_timeout=1.0)
            self._owns_client = True
        else:
            self._client = client_or_url
            self._owns_client = False
        self.prefix = prefix
        self.max_len = int(max_len)
        self.ttl_s = float(ttl_s)
        self.errors = 0

    def key(self, user: str) -> str:
        """The Redis key holding ``user``'s session."""
        return f"{self.prefix}session:{user}"

    # -- writing ----------------------------------------------------------------------------

    def learn_one(self, event: Event) -> None:
        """Record ``event`` if it is a play."""
        self.add_events([event])

    def add(self, user: str, item_id: str, t: float, play_id: str | None = None) -> None:
        """Record that ``user`` played ``item_id`` at event time ``t`` (``play_id`` tells two
        plays of one item at one time apart; by default they are the same play)."""
        self._write([(user, item_id, float(t), play_id if play_id is not None else repr(t))])

    def add_events(self, events: Iterable[Event]) -> None:
        """Record the plays among ``events`` in one round trip."""
        plays = [
            (e.user_id, e.item_id, float(e.timestamp), e.event_id)
            for e in events
            if e.type == "play"
        ]
        self._write(plays)

    def _write(self, plays: list[tuple[str, str, float, str]]) -> None:
        if not plays:
            return
        ttl_ms = max(1, round(self.ttl_s * 1000))
        pipe = self._client.pipeline(transaction=False)
        for user in dict.fromkeys(user for user, _, _, _ in plays):
            key = self.key(user)
            pipe.zadd(key, {f"{item}{_SEP}{pid}": t for u, item, t, pid in plays if u == user})
            pipe.zremrangebyrank(key, 0, -self.max_len - 1)  # keep the newest max_len
            pipe.pexpire(key, ttl_ms)
        try:
            pipe.execute()
        except Exception:
            self.errors += 1
            logger.warning("could not record %d plays in Redis sessions", len(plays), exc_info=True)

    # -- reading ----------------------------------------------------------------------------

    def recent(self, user: str) -> list[tuple[str, float]]:
        """``user``'s last plays as ``(item_id, t)``, oldest first (empty if unknown)."""
        try:
            rows: Any = self._client.zrange(self.key(user), 0, -1, withscores=True)
        except Exception:
            self.errors += 1
            logger.warning("could not read %s's session from Redis", user, exc_info=True)
            return []
        out: list[tuple[str, float]] = []
        for member, t in rows:  # (member, score) pairs
            text = member.decode() if isinstance(member, bytes) else str(member)
            out.append((text.partition(_SEP)[0], float(t)))
        return out

    # -- the Sessions surface the engine uses ------------------------------------------------

    def clone(self) -> RedisSessions:
        """The same shared store: sessions are listener state, not per-engine state."""
        return self

    def dump(self) -> bytes:
        """An empty in-process session state: snapshots do not carry shared sessions (module
        docstring), and a snapshot cut here must still load where Redis is not used."""
        return Sessions(max_len=self.max_len).dump()

    def load(self, data: bytes) -> None:
        """Nothing to load: the sessions are in Redis."""

    def close(self) -> None:
        """Close the client if this store created it from a URL."""
        if self._owns_client:
            self._client.close()
