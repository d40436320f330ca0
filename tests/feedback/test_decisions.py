"""The decision log: the in-process backend and the Redis backend behave alike."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
import redis

from feedback.decisions import DecisionLog, InMemoryDecisionLog, RedisDecisionLog
from feedback.events import Decision, SlateEntry


def decision(request_id: str, t: float = 100.0) -> Decision:
    slate = (
        SlateEntry("a", 0, 0.9, 0.7, False, {"relevance": 0.9, "novelty": 0.125}),
        SlateEntry("b", 1, 0.5, 0.05, True, {"relevance": 0.5}),
    )
    return Decision(
        request_id,
        "u1",
        t,
        "v3",
        slate,
        context={"device": "phone", "hour": 9, "premium": True, "lat": 1.5},
        shared={"hour": 9.0, "device": "phone"},
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def log(request: pytest.FixtureRequest) -> Iterator[DecisionLog]:
    if request.param == "memory":
        yield InMemoryDecisionLog(ttl_s=60, max_entries=100)
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    log = RedisDecisionLog(url, prefix=prefix, ttl_s=60)
    yield log
    log.close()


def test_put_then_get_round_trips_exactly(log: DecisionLog) -> None:
    d = decision("r1")
    log.put(d)
    assert log.get("r1") == d
    assert log.get("r2") is None
    assert isinstance(log, DecisionLog)


def test_a_decision_put_with_its_json_is_stored_as_that_json(log: DecisionLog) -> None:
    # the serving path encodes on its worker thread and hands the bytes over
    d = decision("r1")
    log.put(d, d.to_json())
    assert log.get("r1") == d
    other = decision("r1", t=7.0)
    log.put(d, other.to_json())  # the bytes are what is stored, not encoded again
    assert log.get("r1") == other


def test_stored_json_is_the_dict_form_whichever_way_it_is_written() -> None:
    from types import MappingProxyType

    import orjson

    d = decision("r1")
    assert orjson.loads(d.to_json()) == d.to_dict()  # the dataclasses written directly
    proxied = Decision("r2", "u1", 1.0, "v3", d.slate, context=MappingProxyType({"hour": 9}))
    assert orjson.loads(proxied.to_json()) == proxied.to_dict()  # through to_dict


def test_get_many_returns_only_known_ids(log: DecisionLog) -> None:
    for rid in ("r1", "r2", "r3"):
        log.put(decision(rid))
    got = log.get_many(["r3", "missing", "r1", "r1"])
    assert got == {"r3": decision("r3"), "r1": decision("r1")}
    assert log.get_many([]) == {}


def test_put_replaces_an_earlier_decision(log: DecisionLog) -> None:
    log.put(decision("r1", 1.0))
    log.put(decision("r1", 2.0))
    assert log.get("r1").timestamp == 2.0


def test_in_memory_entries_expire_by_age() -> None:
    clock = Clock()
    log = InMemoryDecisionLog(ttl_s=10, max_entries=100, clock=clock)
    log.put(decision("r1"))
    clock.now = 5.0
    log.put(decision("r2"))
    clock.now = 9.9
    assert log.get("r1") is not None
    clock.now = 10.0
    assert log.get("r1") is None and log.get("r2") is not None
    assert len(log) == 1
    clock.now = 15.0
    assert len(log) == 0


def test_in_memory_log_is_bounded_and_evicts_the_oldest() -> None:
    log = InMemoryDecisionLog(ttl_s=1e9, max_entries=3, clock=Clock())
    for i in range(5):
        log.put(decision(f"r{i}"))
    assert len(log) == 3
    assert log.get("r0") is None and log.get("r1") is None
    assert log.get_many(["r2", "r3", "r4"]).keys() == {"r2", "r3", "r4"}


def test_held_decisions_give_the_garbage_collector_nothing_to_walk() -> None:
    """A full collection walks every tracked object; served lists held as objects made those
    passes stall a busy service. Held as bytes they add (almost) nothing to walk."""
    log = InMemoryDecisionLog(ttl_s=1e9, max_entries=10_000)
    batch = [decision(f"w{i}") for i in range(2_000)]  # built before counting
    gc.collect()
    before = len(gc.get_objects())
    for d in batch:
        log.put(d)
    del d
    gc.collect()
    assert len(gc.get_objects()) - before < 50
    assert log.get("w1999") == batch[-1]


def test_in_memory_log_is_thread_safe() -> None:
    log = InMemoryDecisionLog(ttl_s=1e9, max_entries=500)

    def writer(k: int) -> None:
        for i in range(300):
            log.put(decision(f"r{k}-{i}"))
            log.get(f"r{k}-{i // 2}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 500


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"ttl_s": 0}, "ttl_s must be positive"), ({"max_entries": 0}, "max_entries must be")],
)
def test_in_memory_rejects_bad_bounds(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        InMemoryDecisionLog(**kwargs)


@pytest.mark.redis
def test_redis_key_design_and_expiry(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        log = RedisDecisionLog(client, prefix=redis_prefix, ttl_s=30)
        log.put(decision("r1"))
        key = f"{redis_prefix}decision:r1"
        assert log.key("r1") == key
        assert list(client.scan_iter(match=redis_prefix + "*")) == [key.encode()]
        assert 0 < client.pttl(key) <= 30_000
        assert client.get(key).startswith(b'{"request_id":"r1"')  # compact JSON
        log.close()  # a client passed in is not closed by the log
        assert client.ping()
    finally:
        client.close()


@pytest.mark.redis
def test_redis_rejects_bad_ttl(redis_url: str) -> None:
    with pytest.raises(ValueError, match="ttl_s must be positive"):
        RedisDecisionLog(redis_url, ttl_s=-1)
