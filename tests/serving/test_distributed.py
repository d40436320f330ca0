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
