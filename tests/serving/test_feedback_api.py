"""POST /v1/feedback as a client sees it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from feedback.settings import FeedbackSettings
from tests.serving.conftest import NOW

NOW_MS = int(NOW * 1000)


def play(i: int, **kw: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": f"e{i}",
        "type": "play",
        "user_id": "u1",
        "item_id": f"t{i}",
        "timestamp": NOW_MS - i,
        "played_ms": 30_000,
        "duration_ms": 180_000,
        "context": {"device": "android", "hour": 8},
    }
    event.update(kw)
    return event


def test_a_partial_batch_stores_the_good_events_and_names_the_bad(
    make_client: Callable[..., TestClient],
):
    client = make_client()
    body = {"events": [play(1), play(2, played_ms=-1), play(3, type="like"), play(4)]}
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 200
    assert r.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [
            {
                "index": 1,
                "event_id": "e2",
                "code": "out_of_range",
                "reason": "played_ms: Input should be greater than or equal to 0",
            },
            {
                "index": 2,
                "event_id": "e3",
                "code": "unknown_type",
                "reason": "type 'like' is not one of impression, play, skip",
            },
        ],
    }
    log = client.app.state.services.log  # type: ignore[attr-defined]
    assert [x.event.event_id for x in log.read(0, 10)] == ["e1", "e4"]
    letters = log.dead_letters()
    assert sorted(d.event_id for d in letters) == ["e2", "e3"]
    assert orjson.loads(letters[-1].payload)["played_ms"] == -1


def test_retrying_the_same_body_is_answered_with_the_same_counts_across_restarts(
    make_client: Callable[..., TestClient], tmp_path: Path
):
    body = {"events": [play(1), play(2), play(3, user_id="")]}
    first = make_client(tmp_path / "d").post("/v1/feedback", json=body).json()
    second = make_client(tmp_path / "d").post("/v1/feedback", json=body).json()
    assert first == second
    assert first["accepted"] == 2
    # a different batch repeating an event id: stored once, reported as a duplicate
    third = make_client(tmp_path / "d").post("/v1/feedback", json={"events": [play(1), play(9)]})
    assert third.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    log = make_client(tmp_path / "d").app.state.services.log  # type: ignore[attr-defined]
    assert [x.event.event_id for x in log.read(0, 10)] == ["e1", "e2", "e9"]
    assert len(log.dead_letters()) == 1


def test_nan_and_infinity_in_the_body_are_per_event_reasons_not_a_broken_body(
    make_client: Callable[..., TestClient],
):
    client = make_client()
    raw = orjson.dumps({"events": [play(1), play(2)]}).replace(
        b'"played_ms":30000', b'"played_ms":NaN', 1
    )
    r = client.post("/v1/feedback", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["code"] == "invalid_number"


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code", "detail"),
    [
        (b"{not json", "application/json", 400, "malformed_json", "the body is not valid JSON"),
        (b'[{"event_id": "a"}]', "application/json", 422, "bad_body", '{"events": [...]}'),
        (b'{"events": {}}', "application/json", 422, "bad_body", '{"events": [...]}'),
        (b'{"events": [], "x": 1}', "application/json", 422, "bad_body", "unknown top-level"),
        (b'{"events": []}', "text/plain", 415, "unsupported_media_type", "application/json"),
        (b"x" * 5000, "application/json", 413, "body_too_large", "larger than 4096 bytes"),
        (
            orjson.dumps({"events": [play(i) for i in range(11)]}),
            "application/json",
            413,
            "batch_too_large",
            "the batch has 11 events; the limit is 10",
        ),
    ],
)
def test_a_bad_body_gets_a_clear_4xx_and_is_kept(
    make_client: Callable[..., TestClient],
    content: bytes,
    content_type: str,
    status: int,
    code: str,
    detail: str,
):
    client = make_client(feedback=FeedbackSettings(max_body_bytes=4096, max_batch_events=10))
    r = client.post("/v1/feedback", content=content, headers={"content-type": content_type})
    assert r.status_code == status
    assert r.json()["error"] == code
    assert detail in r.json()["detail"]
    (letter,) = client.app.state.services.log.dead_letters()  # type: ignore[attr-defined]
    assert (letter.kind, letter.code) == ("body", code)
    assert letter.payload.startswith(content[:100].decode())


def test_a_broken_event_log_is_a_503_with_retry_after_never_a_2xx(
    make_client: Callable[..., TestClient],
):
    client = make_client(
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none", db_timeout_s=1
    )
    r = client.post("/v1/feedback", json={"events": [play(1)]})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"] == "log_unavailable"
    assert client.get("/health/ready").status_code == 503
    assert client.get("/health/live").status_code == 200


def test_a_slow_event_log_is_a_503_and_the_retry_stores_once(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
):
    client = make_client(feedback=FeedbackSettings(write_timeout_s=0.2))
    log = client.app.state.services.log  # type: ignore[attr-defined]
    real_ingest = log.ingest

    def slow_ingest(*args: object, **kwargs: object):
        time.sleep(0.6)
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(log, "ingest", slow_ingest)
    body = {"events": [play(1), play(2)]}
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    monkeypatch.setattr(log, "ingest", real_ingest)
    time.sleep(0.6)  # the slow write finished after the 503 was sent
    retry = client.post("/v1/feedback", json=body)
    assert retry.status_code == 200
    assert [x.event.event_id for x in log.read(0, 10)] == ["e1", "e2"]


def test_the_openapi_page_documents_the_event_contract(make_client: Callable[..., TestClient]):
    client = make_client()
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/feedback"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/FeedbackIn"
    )
    event = spec["components"]["schemas"]["EventIn"]
    assert {"event_id", "type", "user_id", "item_id", "timestamp"} <= set(event["required"])
    assert client.get("/docs").status_code == 200


def test_metrics_count_what_the_intake_did(make_client: Callable[..., TestClient]):
    client = make_client()
    client.post("/v1/feedback", json={"events": [play(1), play(2, type="nope")]})
    client.post("/v1/feedback", json={"events": [play(1)]})
    text = client.get("/metrics").text
    assert "segue_feedback_events_accepted_total 1.0" in text
    assert "segue_feedback_events_duplicate_total 1.0" in text
    assert 'segue_feedback_dead_letters_total{code="unknown_type"} 1.0' in text
