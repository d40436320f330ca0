"""The distributed mode: PostgreSQL holds the log and catalog, Redis the served lists."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient

from tests.serving.conftest import NOW
from tests.serving.test_recommend_api import items

NOW_MS = int(NOW * 1000)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_a_list_served_with_postgres_and_redis_is_attributed_and_learned(
    make_client: Callable[..., TestClient], postgres_url: str, redis_url: str, redis_prefix: str
):
    client = make_client(
        database_url=postgres_url, redis_url=redis_url, redis_prefix=redis_prefix, embedding_dim=8
    )
    assert client.post("/v1/items", json={"items": items(120)}).json()["upserted"] == 120
    rec = client.post("/v1/recommend", json={"user_id": "ana", "k": 4}).json()
    assert rec["fallback"] is None
    # the decision is in Redis under the deployment's prefix, with an expiry
    r = redis.Redis.from_url(redis_url)
    key = f"{redis_prefix}decision:{rec['request_id']}"
    assert r.exists(key) and r.ttl(key) > 0
    first = rec["items"][0]["item_id"]
    events = [
        {
            "event_id": f"imp{p}",
            "type": "impression",
            "user_id": "ana",
            "item_id": i["item_id"],
            "timestamp": NOW_MS,
            "request_id": rec["request_id"],
            "position": p,
        }
        for p, i in enumerate(rec["items"])
    ] + [
        {
            "event_id": "play",
            "type": "play",
            "user_id": "ana",
            "item_id": first,
            "timestamp": NOW_MS + 500,
            "request_id": rec["request_id"],
            "played_ms": 180_000,
            "duration_ms": 200_000,
        }
    ]
    assert client.post("/v1/feedback", json={"events": events}).json()["accepted"] == 5
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        model = client.get("/v1/model").json()
        if model["join"]["joined"] >= 1:
            break
        time.sleep(0.05)
    assert model["join"]["joined"] >= 1
    assert model["join"]["unknown_request"] == 0
    assert model["events_learned"] == 5
    # a second app on the same PostgreSQL sees the catalog the first one wrote
    other = make_client(
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        embedding_dim=8,
        data_dir=None,
    )
    assert other.get("/health/ready").json()["checks"]["catalog"] == "ok"
    r.close()


def test_a_play_posted_to_one_process_shapes_the_next_list_from_another(
    make_client: Callable[..., TestClient], postgres_url: str, redis_url: str, redis_prefix: str
):
    """Two serving processes behind one address: the session lives in Redis, so the list that
    process B serves right after plays were posted to process A leaves the just-played out."""
    common = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "embedding_dim": 8,
    }
    a = make_client(**common)
    a.post("/v1/items", json={"items": items(120)})
    b = make_client(**common, data_dir=None)  # reads the catalog A wrote
    ask = {"user_id": "ana", "k": 10, "explore": False}
    before = [i["item_id"] for i in b.post("/v1/recommend", json=ask).json()["items"]]
    played = before[:3]
    plays = [
        {
            "event_id": f"p{n}",
            "type": "play",
            "user_id": "ana",
            "item_id": item,
            "timestamp": NOW_MS + n * 1000,
            "played_ms": 180_000,
            "duration_ms": 200_000,
        }
        for n, item in enumerate(played)
    ]
    assert a.post("/v1/feedback", json={"events": plays}).json()["accepted"] == 3
    after = [i["item_id"] for i in b.post("/v1/recommend", json=ask).json()["items"]]
    assert len(after) == 10
    assert not set(played) & set(after)
    session = redis.Redis.from_url(redis_url).zrange(f"{redis_prefix}session:ana", 0, -1)
    assert [m.decode().split("\x1f")[0] for m in session] == played
