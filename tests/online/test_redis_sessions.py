"""RedisSessions against a real Redis, with the in-process Sessions as its oracle."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from feedback.events import Event
from online.redis_sessions import RedisSessions
from online.state import Sessions

pytestmark = pytest.mark.redis


def play(n: int, user: str, item: str, t: float) -> Event:
    return Event(f"e{n}", "play", user, item, t, played_ms=60_000)


@pytest.fixture
def store(redis_url: str, redis_prefix: str) -> RedisSessions:
    s = RedisSessions(redis_url, prefix=redis_prefix, max_len=5, ttl_s=600)
    yield s
    s.close()


@pytest.mark.parametrize("seed", range(4))
def test_same_plays_as_the_in_process_sessions(store: RedisSessions, seed: int):
    """Shuffled arrival, late plays, more plays than max_len, several listeners, batches."""
    rng = np.random.default_rng(seed)
    times = rng.permutation(200).astype(float)  # distinct event times, out of order
    events = [
        play(n, f"u{int(rng.integers(4))}", f"t{int(rng.integers(30))}", t)
        for n, t in enumerate(times)
    ]
    oracle = Sessions(max_len=5)
    for start in range(0, len(events), 7):
        batch = events[start : start + 7]
        store.add_events(batch)
        for e in batch:
            oracle.learn_one(e)
    for user in ("u0", "u1", "u2", "u3", "nobody"):
        assert store.recent(user) == oracle.recent(user)


def test_a_retried_event_is_one_play_and_the_key_expires(
    store: RedisSessions, redis_url: str, redis_prefix: str
):
    first = play(1, "ana", "t1", 10.0)
    store.add_events([first, Event("i1", "impression", "ana", "t9", 11.0)])
    store.add_events([first])  # the client retried the batch
    store.learn_one(play(2, "ana", "t1", 20.0))  # the same item played again: a second play
    assert store.recent("ana") == [("t1", 10.0), ("t1", 20.0)]
    ttl = redis.Redis.from_url(redis_url).pttl(f"{redis_prefix}session:ana")
    assert 0 < ttl <= 600_000
    assert store.errors == 0


def test_snapshots_do_not_carry_shared_sessions(store: RedisSessions):
    store.add("ana", "t1", 10.0)
    local = Sessions(max_len=5)
    local.load(store.dump())  # a valid, empty in-process state
    assert len(local) == 0
    store.load(b"anything")
    assert store.recent("ana") == [("t1", 10.0)]
    assert store.clone() is store


def test_redis_down_serves_an_empty_session_and_counts_it():
    dead = RedisSessions("redis://127.0.0.1:1/0", max_len=5)
    dead.add_events([play(1, "ana", "t1", 10.0)])  # no exception: the batch was acknowledged
    assert dead.recent("ana") == []
    assert dead.errors == 2
    with pytest.raises(ValueError, match="max_len"):
        RedisSessions("redis://127.0.0.1:1/0", max_len=0)
