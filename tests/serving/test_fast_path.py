"""Lists served ahead of the framework's layers answer exactly as the app's own route does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.recommend_api import RECOMMEND_PATH, RecommendFastPath
from tests.serving.test_recommend_api import items

JSON = "application/json"

# (content type, body): what clients send, good and bad
GOOD = [
    (JSON, {"user_id": "u1", "k": 5, "explore": False}),
    (
        JSON,
        {
            "user_id": "u2",
            "k": 7,
            "explore": False,
            "context": {"device": "ios", "hour": 3, "premium": True, "volume": 0.5},
            "exclude": ["t1", "t2", "t3"],
        },
    ),
    ("application/json; charset=utf-8", {"user_id": "u3", "k": 4, "explore": False}),
    (JSON, {"user_id": "u4", "k": "6", "explore": False}),  # coerced by both
    (JSON, {"user_id": "u6", "k": True, "explore": False}),  # k = 1, by both
    (JSON, {"user_id": "u5", "k": 3, "explore": False, "context": {"x": "y" * 70_000}}),
]
BAD: list[tuple[str, Any]] = [
    (JSON, {"user_id": "u", "k": 0}),
    (JSON, {"user_id": "u", "k": 101}),
    (JSON, {"user_id": ""}),
    (JSON, {"user_id": 12}),
    (JSON, {"k": 3}),
    (JSON, {"user_id": "u\u0001"}),
    (JSON, {"user_id": "u", "context": {"a": [1]}}),
    (JSON, {"user_id": "u", "surprise": 1}),
    (JSON, {"user_id": "u", "exclude": [f"t{i}" for i in range(1001)]}),
    (JSON, b'{"user_id": "u", "context": {"x": NaN}}'),
    (JSON, b'{"user_id": '),
    (JSON, b""),
    (JSON, [1]),
    ("text/plain", {"user_id": "u"}),
    ("application/x-www-form-urlencoded", b"user_id=u"),
]


class WithoutFastPath:
    """The app's own stack, as it was before lists were served ahead of it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        stack = app.build_middleware_stack()
        assert isinstance(stack, RecommendFastPath)
        self.inner = stack.app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app
        await self.inner(scope, receive, send)


class Tripwire:
    """Counts the requests that reach the app's stack behind the fast path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
def both(make_client: Callable[..., TestClient]) -> tuple[TestClient, TestClient]:
    """The service, and the same service without the fast path (no second learner)."""
    client = make_client(embedding_dim=8)
    assert client.post("/v1/items", json={"items": items(300)}).status_code == 200
    return client, TestClient(WithoutFastPath(client.app))


def post(client: TestClient, content_type: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(RECOMMEND_PATH, content=data, headers={"content-type": content_type})


def comparable(r: Any) -> tuple[int, str, Any]:
    body = r.json()
    if r.status_code == 200:  # each list has its own id and time
        body = {k: v for k, v in body.items() if k not in ("request_id", "took_ms")}
    return r.status_code, r.headers["content-type"], body


@pytest.mark.parametrize(("content_type", "body"), GOOD + BAD)
def test_every_answer_is_the_apps_own(
    both: tuple[TestClient, TestClient], content_type: str, body: Any
):
    fast, app = both
    got = comparable(post(fast, content_type, body))
    want = comparable(post(app, content_type, body))
    assert got == want
    if (content_type, body) in GOOD:
        assert got[0] == 200 and got[2]["fallback"] is None
        assert 0 < len(got[2]["items"]) <= int(body["k"])
    else:
        assert got[0] == 422


def test_lists_skip_the_stack_and_are_timed_and_everything_else_takes_it(
    both: tuple[TestClient, TestClient],
):
    client, _ = both
    client.get("/health/live")  # builds the stack
    stack = client.app.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(stack, RecommendFastPath)
    wire = stack.app = Tripwire(stack.app)

    def served() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("segue_request_seconds_count") and f'"{RECOMMEND_PATH}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = served()
    for content_type, body in GOOD:
        assert post(client, content_type, body).status_code == 200
    assert wire.paths.count(RECOMMEND_PATH) == 0
    for content_type, body in BAD:
        assert post(client, content_type, body).status_code == 422
    assert wire.paths.count(RECOMMEND_PATH) == len(BAD)
    assert client.get(RECOMMEND_PATH).status_code == 405
    # every list and every rejected request is timed, under the route's name
    assert served() - before == len(GOOD) + len(BAD) + 1


def test_a_body_in_pieces_is_read_whole_and_a_long_one_reaches_the_app_intact(
    both: tuple[TestClient, TestClient],
):
    client, _ = both
    client.get("/health/live")  # builds the stack
    app = client.app
    stack = app.middleware_stack  # type: ignore[attr-defined]
    wire = stack.app = Tripwire(stack.app)

    def send_in_pieces(body: dict[str, Any], piece: int) -> tuple[int, dict[str, Any]]:
        data = orjson.dumps(body)
        messages = [
            {"type": "http.request", "body": data[i : i + piece], "more_body": True}
            for i in range(0, len(data), piece)
        ]
        messages[-1]["more_body"] = False
        answer: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            else:
                answer["body"] += message.get("body", b"")

        headers = [(b"content-type", b"application/json")]
        scope = {"type": "http", "method": "POST", "path": RECOMMEND_PATH, "headers": headers}
        scope |= {"query_string": b"", "root_path": ""}
        asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
        return answer["status"], orjson.loads(answer["body"])

    status, body = send_in_pieces({"user_id": "u1", "k": 4, "explore": False}, piece=7)
    assert status == 200 and len(body["items"]) == 4
    assert wire.paths == []
    # past max_body_bytes while still arriving: the app reads what was read, then the rest
    big = {"user_id": "u2", "k": 3, "explore": False, "context": {"note": "x" * 100_000}}
    status, body = send_in_pieces(big, piece=RecommendFastPath.max_body_bytes // 2)
    assert status == 200 and len(body["items"]) == 3
    assert wire.paths == [RECOMMEND_PATH]
    status, body = send_in_pieces({**big, "k": 0}, piece=RecommendFastPath.max_body_bytes // 2)
    assert status == 422 and body["detail"][0]["loc"] == ["body", "k"]
