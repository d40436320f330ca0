"""POST /v1/recommend and the catalog endpoints, as a client team sees them."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from online.engine import Engine
from serving.settings import ServingSettings
from snapshots.settings import SnapshotSettings
from tests.serving.conftest import NOW

NOW_MS = int(NOW * 1000)


def items(n: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {
            "id": f"t{i}",
            "title": f"Track {i}",
            "artist": f"a{i % 25}",
            "genres": [f"g{i % 5}"],
            "release_time": NOW - 86_400 * (1 + i % 400),
            "duration_ms": 200_000,
            "embedding": [float((i % 25) == d) for d in range(8)],
            "label": "indie" if i % 2 else "major",
        }
        for i in range(start, start + n)
    ]


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    c = make_client(embedding_dim=8)
    r = c.post("/v1/items", json={"items": items(300)})
    assert r.json() == {"upserted": 300, "rejected": []}
    return c


def impressions_of(rec: dict[str, Any], user: str) -> list[dict[str, Any]]:
    """The impression events of every item of the list ``rec`` shown to ``user``."""
    return [
        {
            "event_id": f"i{pos}",
            "type": "impression",
            "user_id": user,
            "item_id": item["item_id"],
            "timestamp": NOW_MS,
            "request_id": rec["request_id"],
            "position": pos,
        }
        for pos, item in enumerate(rec["items"])
    ]


def engine_of(client: TestClient) -> Engine:
    return client.app.state.services.engine  # type: ignore[attr-defined,no-any-return]


def served(make_client: Callable[..., TestClient], **settings: Any) -> tuple[TestClient, Engine]:
    """A service holding 100 items, and the engine behind it."""
    client = make_client(embedding_dim=8, **settings)
    client.post("/v1/items", json={"items": items(100)})
    return client, engine_of(client)


def broken(*args: object, **kwargs: object) -> None:
    """A stage that fails on every call."""
    raise RuntimeError("model file is corrupt")


def test_a_listener_never_seen_gets_a_list_and_a_request_id(client: TestClient):
    r = client.post(
        "/v1/recommend", json={"user_id": "newbie", "k": 12, "context": {"device": "tv"}}
    )
    assert r.status_code == 200
    body = r.json()
    assert len(body["items"]) == 12
    assert body["fallback"] is None
    assert body["request_id"] and body["model_version"].startswith("v")
    assert all(0 < i["propensity"] <= 1 for i in body["items"])
    assert len({i["item_id"] for i in body["items"]}) == 12
    # the answer is what the documented schema says, field for field
    from serving.recommend_api import RecommendOut

    assert RecommendOut.model_validate(body).model_dump() == body
    assert r.headers["content-type"] == "application/json"


def test_the_full_loop_impressions_and_plays_are_learned(client: TestClient):
    rec = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}).json()
    events = impressions_of(rec, "u1")
    events.append(
        {
            "event_id": "p0",
            "type": "play",
            "user_id": "u1",
            "item_id": rec["items"][0]["item_id"],
            "timestamp": NOW_MS + 1000,
            "request_id": rec["request_id"],
            "played_ms": 150_000,
            "duration_ms": 200_000,
        }
    )
    assert client.post("/v1/feedback", json={"events": events}).json()["accepted"] == 6
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        model = client.get("/v1/model").json()
        if model["events_learned"] >= 6 and model["join"]["joined"] >= 1:
            break
        time.sleep(0.05)
    assert model["events_learned"] >= 6
    assert model["join"]["joined"] >= 1  # the play was attributed to its list
    assert model["lag_events"] == 0
    # the played item is not recommended again right away (session)
    again = client.post("/v1/recommend", json={"user_id": "u1", "k": 20}).json()
    assert rec["items"][0]["item_id"] not in {i["item_id"] for i in again["items"]}


def test_the_service_cuts_snapshots_as_it_learns_and_times_them(
    make_client: Callable[..., TestClient],
):
    client, _ = served(make_client, snapshot=SnapshotSettings(every_events=1))
    rec = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}).json()
    events = impressions_of(rec, "u1")
    assert client.post("/v1/feedback", json={"events": events}).json()["accepted"] == 5
    deadline = time.monotonic() + 30
    cuts = 0.0
    while time.monotonic() < deadline and not cuts:
        metrics = client.get("/metrics").text
        cuts = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("segue_snapshot_cut_seconds_count")
        )
        time.sleep(0.05)
    assert cuts >= 1
    version = client.get("/v1/model").json()["model_version"]
    assert version.startswith("v000001-")  # the first cut is what is served now
    at_one = [
        line
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("segue_model_version_info{") and line.endswith(" 1.0")
    ]
    assert at_one == [f'segue_model_version_info{{version="{version.split("+")[0]}"}} 1.0']


def test_exclusions_per_artist_limit_and_explore_false(client: TestClient):
    excluded = [f"t{i}" for i in range(0, 300, 2)]
    body = client.post(
        "/v1/recommend", json={"user_id": "u2", "k": 30, "exclude": excluded, "explore": False}
    ).json()
    ids = [i["item_id"] for i in body["items"]]
    assert not set(ids) & set(excluded)
    artists = [int(i[1:]) % 25 for i in ids]
    assert max(artists.count(a) for a in set(artists)) <= 2
    assert all(i["propensity"] == 1.0 and not i["explored"] for i in body["items"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u", "k": 0}, "k"),
        ({"user_id": "u", "k": 101}, "k"),
        ({"user_id": ""}, "user_id"),
        ({"k": 3}, "user_id"),
        ({"user_id": "u", "context": {"a": [1]}}, "context"),
        ({"user_id": "u", "surprise": 1}, "surprise"),
    ],
)
def test_bad_requests_get_a_422_naming_the_field(client: TestClient, body: dict, field: str):
    r = client.post("/v1/recommend", json=body)
    assert r.status_code == 422
    assert field in str(r.json()["detail"])


def test_a_non_finite_number_is_a_422_not_a_500(client: TestClient):
    # Python's json module writes NaN unless told not to; the error echoes it back as null
    r = client.post(
        "/v1/recommend",
        content=b'{"user_id": "u", "context": {"volume": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "context"] and error["input"] == {"volume": None}
    assert "not finite" in error["msg"]


def test_a_failing_stage_is_a_fallback_and_then_the_breaker_opens_and_recovers(
    make_client: Callable[..., TestClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    client, engine = served(
        make_client,
        serving=ServingSettings(
            breaker_window=2, breaker_min_calls=2, breaker_open_s=0.5, breaker_probes=1
        ),
    )

    monkeypatch.setattr(engine, "score", broken)
    reasons = []
    for _ in range(4):
        r = client.post("/v1/recommend", json={"user_id": "u", "k": 10})
        assert r.status_code == 200
        assert len(r.json()["items"]) == 10  # the popular-now list, never an error
        reasons.append(r.json()["fallback"])
    assert reasons == [
        "relevance_failed",
        "relevance_failed",
        "relevance_breaker_open",
        "relevance_breaker_open",
    ]
    # an operator sees it: the breaker's state and its changes are metrics, the opening a
    # warning in the log
    metrics = client.get("/metrics").text
    assert 'segue_breaker_state{stage="relevance"} 2.0' in metrics
    assert 'segue_breaker_state{stage="candidates"} 0.0' in metrics
    assert 'segue_breaker_transitions_total{stage="relevance",state="open"} 1.0' in metrics
    assert any(
        r.levelname == "WARNING" and "relevance breaker open" in r.getMessage()
        for r in caplog.records
    )
    monkeypatch.undo()
    time.sleep(0.6)  # the breaker half-opens; the probe succeeds and it closes
    assert client.post("/v1/recommend", json={"user_id": "u", "k": 10}).json()["fallback"] is None
    assert client.post("/v1/recommend", json={"user_id": "u", "k": 10}).json()["fallback"] is None
    metrics = client.get("/metrics").text
    assert 'segue_recommendations_total{fallback="relevance_failed"} 2.0' in metrics


def test_the_fallback_is_popular_now_without_excluded_or_unavailable_items(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
):
    client, engine = served(make_client, serving=ServingSettings(breaker_min_calls=50))

    monkeypatch.setattr(engine, "score", broken)
    first = client.post("/v1/recommend", json={"user_id": "u", "k": 12}).json()
    assert first["fallback"] == "relevance_failed"
    popular = [x["item_id"] for x in first["items"]]
    assert len(popular) == 12
    assert client.delete(f"/v1/items/{popular[1]}").status_code == 204
    body = client.post(
        "/v1/recommend", json={"user_id": "u", "k": 10, "exclude": [popular[0]]}
    ).json()
    assert body["fallback"] == "relevance_failed"
    assert [x["item_id"] for x in body["items"]] == popular[2:12]
    assert [x["propensity"] for x in body["items"]] == [1.0] * 10


def test_a_slow_stage_answers_within_budget_with_a_fallback(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
):
    # the budget is well under the stalled stage's 1.5 s, and well over a warm list's cost
    # even on a busy machine: the recovery check below must see a computed list
    client, engine = served(
        make_client, serving=ServingSettings(budget_ms=250, breaker_min_calls=50)
    )
    # one list first, so the recovery check measures recovery, not the first list's
    # one-time costs (compiled code loaded, caches filled)
    assert client.post("/v1/recommend", json={"user_id": "w", "k": 10}).status_code == 200
    real = engine.candidates

    def slow(*args: object, **kwargs: object):
        time.sleep(1.5)
        return real(*args, **kwargs)

    scored: list[object] = []
    real_score = engine.score

    def score(*args: object, **kwargs: object):
        scored.append(args)
        return real_score(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "candidates", slow)
    monkeypatch.setattr(engine, "score", score)
    body = client.post("/v1/recommend", json={"user_id": "u", "k": 10}).json()
    # the budget ran out before the stalled stage finished: the fallback answered
    assert body["fallback"] == "timeout"
    assert len(body["items"]) == 10
    time.sleep(1.5)
    assert scored == []  # the late list stopped after its stage: no work for nobody
    monkeypatch.undo()
    assert client.post("/v1/recommend", json={"user_id": "u", "k": 10}).json()["fallback"] is None


def test_the_log_holds_the_list_served_when_the_computed_one_came_too_late(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
):
    """A list whose last stage finished after the budget is not logged: the fallback the
    client got is, so the reward join credits what was shown."""
    client, engine = served(
        make_client, serving=ServingSettings(budget_ms=100, breaker_min_calls=50)
    )
    real = engine.make_slate
    finished = threading.Event()

    def slow(*args: object, **kwargs: object):
        time.sleep(0.4)
        try:
            return real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            finished.set()

    monkeypatch.setattr(engine, "make_slate", slow)
    body = client.post("/v1/recommend", json={"user_id": "u", "k": 10}).json()
    assert body["fallback"] == "timeout"
    assert finished.wait(5)
    time.sleep(0.1)  # the late list's thread has claimed, or not, by now
    logged = engine.decisions.get(body["request_id"])
    assert logged is not None
    assert [e.item_id for e in logged.slate] == [x["item_id"] for x in body["items"]]
    assert all(e.features == {} for e in logged.slate)  # the fallback's entries, not the bandit's


def test_a_computed_list_is_logged_on_its_worker_thread_and_served_even_if_logging_is_slow(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
):
    """The event loop neither encodes nor writes a computed list's decision. A log slower
    than the budget (a Redis round trip that stalls) does not turn a list computed in time
    into a fallback whose decision would then be missing."""
    client, engine = served(
        make_client, serving=ServingSettings(budget_ms=100, breaker_min_calls=50)
    )
    real = engine.decisions.put
    threads: list[str] = []

    def put(decision: Any, encoded: bytes | None = None) -> None:
        threads.append(threading.current_thread().name)
        if decision.user_id == "slow-log":
            time.sleep(0.4)
        real(decision, encoded)

    monkeypatch.setattr(engine.decisions, "put", put)
    fine = client.post("/v1/recommend", json={"user_id": "u", "k": 10}).json()
    assert fine["fallback"] is None
    assert threads == [threads[0]] and threads[0].startswith("segue-recommend")
    slow = client.post("/v1/recommend", json={"user_id": "slow-log", "k": 10}).json()
    assert slow["fallback"] is None and len(slow["items"]) == 10
    for body in (fine, slow):
        logged = engine.decisions.get(body["request_id"])
        assert logged is not None
        assert [e.item_id for e in logged.slate] == [x["item_id"] for x in body["items"]]
        assert [e.propensity for e in logged.slate] == [x["propensity"] for x in body["items"]]


def test_waiting_for_the_engine_lock_is_not_a_stage_failure_but_own_slowness_is(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
):
    """A list that waited for the engine lock (other lists, a snapshot cut) past a stage's
    timeout is still served and does not open the breaker; a stage slow by itself does."""
    client, engine = served(
        make_client,
        serving=ServingSettings(
            budget_ms=5000, candidates_timeout_ms=50, breaker_window=1, breaker_min_calls=1
        ),
    )
    held = threading.Event()

    def hold() -> None:
        with engine.lock:
            held.set()
            time.sleep(0.3)  # six times the stage's timeout

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    body = client.post("/v1/recommend", json={"user_id": "u", "k": 10}).json()
    holder.join()
    assert body["fallback"] is None and len(body["items"]) == 10
    recommender = client.app.state.services.recommender  # type: ignore[attr-defined]
    assert recommender.breakers["candidates"].state == "closed"
    metrics = client.get("/metrics").text
    waited = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('segue_stage_lock_wait_seconds_sum{stage="candidates"}')
    )
    assert waited >= 0.2  # the wait was seen, and left out of the verdict

    real = engine.candidates

    def slow(*args: object, **kwargs: object):
        time.sleep(0.3)  # slow on its own, no lock involved
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "candidates", slow)
    client.post("/v1/recommend", json={"user_id": "u", "k": 10})
    assert recommender.breakers["candidates"].state == "open"


def test_lists_that_waited_too_long_for_a_worker_are_shed_not_computed(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
):
    # one worker thread, and a stage taking 0.4 s: of five lists asked for at once, the first
    # is computed and the others, having waited past max_queue_ms, get the fallback at once
    client, engine = served(
        make_client, serving=ServingSettings(workers=1, budget_ms=5000, max_queue_ms=100)
    )
    real = engine.candidates
    calls: list[float] = []

    def slow(*args: object, **kwargs: object):
        calls.append(time.perf_counter())
        time.sleep(0.4)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "candidates", slow)
    with ThreadPoolExecutor(5) as pool:
        bodies = list(
            pool.map(
                lambda n: client.post("/v1/recommend", json={"user_id": f"u{n}", "k": 10}).json(),
                range(5),
            )
        )
    reasons = sorted(str(b["fallback"]) for b in bodies)
    assert reasons == ["None", "overloaded", "overloaded", "overloaded", "overloaded"]
    assert len(calls) == 1
    assert all(len(b["items"]) == 10 for b in bodies)
    metrics = client.get("/metrics").text
    assert 'segue_recommendations_total{fallback="overloaded"} 4.0' in metrics
    assert "segue_queue_wait_seconds_count 5.0" in metrics


def test_items_api_rejects_bad_items_by_name_and_delete_hides_an_item(client: TestClient):
    r = client.post(
        "/v1/items",
        json={
            "items": [
                {"id": "ok1", "artist": "x"},
                {"title": "no id"},
                {"id": "e", "embedding": [1.0]},
            ]
        },
    )
    body = r.json()
    assert body["upserted"] == 1
    assert [(x["index"], x["id"]) for x in body["rejected"]] == [(1, None), (2, "e")]
    assert "id" in body["rejected"][0]["reason"]
    assert "dimension" in body["rejected"][1]["reason"] or "8" in body["rejected"][1]["reason"]
    first = client.post("/v1/recommend", json={"user_id": "z", "k": 30, "explore": False}).json()
    victim = first["items"][0]["item_id"]
    assert client.delete(f"/v1/items/{victim}").status_code == 204
    assert client.delete("/v1/items/nope").status_code == 404
    for _ in range(3):
        again = client.post("/v1/recommend", json={"user_id": "z", "k": 30}).json()
        assert victim not in {i["item_id"] for i in again["items"]}


def test_garbage_collection_pauses_are_a_metric(client: TestClient):
    def full_collections() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith('segue_gc_pause_seconds_count{generation="2"}'):
                return float(line.split()[-1])
        raise AssertionError("no segue_gc_pause_seconds metric")

    before = full_collections()
    gc.collect()
    gc.collect()
    assert full_collections() == before + 2


def test_a_restarted_service_reads_its_content_index_instead_of_building_it(
    make_client: Callable[..., TestClient], tmp_path
):
    data = tmp_path / "kept"
    first = make_client(data, embedding_dim=8)
    first.post("/v1/items", json={"items": items(300)})
    index = engine_of(first).content_index
    assert index is not None and not index.restored
    index.sync(engine_of(first).catalog)  # as the learner's next cycle does
    assert len(index.index) == 300
    assert index.save(data / "content-index")  # as a start-up with this catalog would
    first.delete("/v1/items/t7")  # after the copy was written

    second = make_client(data, embedding_dim=8)
    again = engine_of(second).content_index
    assert again is not None and again.restored
    assert len(again.index) == 299  # the copy, and the withdrawal since
    listed = second.post("/v1/recommend", json={"user_id": "z", "k": 30}).json()
    assert listed["items"] and listed["fallback"] is None
    t7 = engine_of(second).catalog.index_of("t7")
    assert not again.index.stored(np.array([t7]))[1][0]

    third = make_client(tmp_path / "other", embedding_dim=8, serving={"content_index_cache": False})
    assert not (tmp_path / "other" / "content-index").exists()
    assert engine_of(third).content_index.restored is False  # type: ignore[union-attr]


def test_the_service_sets_the_interpreters_switch_interval(tmp_path):
    """``segue serve`` (and each ``--workers`` process) shortens the interpreter's switch
    interval to the setting; unset, Python's own stays."""
    import sys

    from serving.app import apply_switch_interval
    from serving.settings import Settings

    before = sys.getswitchinterval()
    try:
        apply_switch_interval(Settings(data_dir=tmp_path))
        assert sys.getswitchinterval() == pytest.approx(0.001)
        sys.setswitchinterval(0.005)
        apply_switch_interval(Settings(data_dir=tmp_path, serving={"gil_switch_ms": None}))
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        sys.setswitchinterval(before)
