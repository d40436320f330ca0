"""``POST /v1/recommend``, the catalog endpoints and ``GET /v1/model``."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedback.contract import MAX_ID_LENGTH
from online.catalog import parse_item
from serving.recommender import Request as RecommendRequest
from serving.services import Services, get_services

router = APIRouter()

Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$"),
]


class RecommendIn(BaseModel):
    """Ask for a list. ``exclude`` lists item ids never to show; ``explore: false`` gives the
    greedy list (propensity 1), e.g. for a screenshot test."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id
    k: int = Field(30, ge=1, le=100)
    context: dict[str, str | bool | int | float] = Field(default_factory=dict, max_length=32)
    exclude: list[Id] = Field(default_factory=list, max_length=1000)
    explore: bool = True

    @field_validator("context")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"context value of {key!r} is not finite")
        return value


class ItemOut(BaseModel):
    item_id: str
    score: float
    propensity: float
    explored: bool


class RecommendOut(BaseModel):
    """``request_id``: put it on the impressions and plays of this list. ``fallback``: null, or
    why the list is the popular-now fallback instead of the models' choice."""

    request_id: str
    model_version: str
    items: list[ItemOut]
    fallback: str | None
    took_ms: float


@router.post("/v1/recommend", response_model=RecommendOut, summary="A list for a listener")
async def recommend(
    body: RecommendIn, services: Annotated[Services, Depends(get_services)]
) -> Response:
    """Up to ``k`` items for ``user_id``; a listener never seen gets trending and fresh items,
    and the plays they just posted shape their next list at once."""
    return Response(await serve_list(services, body), media_type="application/json")


async def serve_list(services: Services, body: RecommendIn) -> bytes:
    """The list for a validated request, as the JSON of :class:`RecommendOut`."""
    decision, fallback, took_ms = await services.recommender.decide(
        services.engine,
        RecommendRequest(
            user_id=body.user_id,
            k=body.k,
            context=body.context,
            exclude=frozenset(body.exclude),
            explore=body.explore,
        ),
        now=services.clock(),
        popular=services.popular,
    )
    # RecommendOut's fields (the documented schema), written directly from the slate:
    # FastAPI would build the models and validate them again on the way out, for every list
    payload = {
        "request_id": decision.request_id,
        "model_version": decision.model_version,
        "items": [
            {
                "item_id": e.item_id,
                "score": float(e.score) + 0.0,  # no "-0.0" on the wire
                "propensity": float(e.propensity),
                "explored": bool(e.explored),
            }
            for e in decision.slate
        ],
        "fallback": fallback,
        "took_ms": float(took_ms),
    }
    return orjson.dumps(payload)


RECOMMEND_PATH = "/v1/recommend"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class RecommendFastPath:
    """``POST /v1/recommend`` straight to :func:`serve_list`, past the framework's layers.

    A list is the one request a client sends many times a second, and at 150 lists/s py-spy
    put about an eighth of the interpreter's time in the layers between uvicorn and the
    handler (eight middlewares, routing, the dependency solver, body parsing). Here a JSON
    body that validates as :class:`RecommendIn` is served directly. Everything else goes
    through the app unchanged, body included, so every error is the app's own answer (a 422
    names the field exactly as before) and the route stays the documented one. The request
    is timed for ``segue_request_seconds`` as :class:`~serving.app.RequestTiming` would.
    """

    max_body_bytes = 1 << 16
    """A body still arriving past this many bytes takes the app's way (a list request is
    well under 1 KiB)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._timer: tuple[object, Any] | None = None  # (metrics, its child for this route)

    def _timed(self, metrics: Any) -> Any:
        """``segue_request_seconds`` for this route, looked up once per metrics object."""
        timer = self._timer
        if timer is None or timer[0] is not metrics:
            timer = self._timer = (metrics, metrics.request_latency.labels(RECOMMEND_PATH))
        return timer[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != RECOMMEND_PATH
            or scope["method"] != "POST"
            or not _is_json(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        read: list[Message] = []
        size = 0
        more = True
        while more and size <= self.max_body_bytes:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body: RecommendIn | None = None
        if not more and read[-1]["type"] == "http.request":
            with contextlib.suppress(ValidationError):
                body = RecommendIn.model_validate_json(b"".join(m.get("body", b"") for m in read))
        if body is None:  # the app answers it, from the same bytes
            await self.app(scope, _replay(read, receive), send)
            return
        services: Services = scope["app"].state.services
        try:
            payload = await serve_list(services, body)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": payload})
        finally:  # a client gone mid-answer is timed too, as RequestTiming does
            self._timed(services.metrics).observe(time.perf_counter() - started)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(read: list[Message], receive: Receive) -> Receive:
    """``receive`` that first gives back the messages already read."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class ItemIn(BaseModel):
    """A catalog item; fields beyond these are kept as attributes."""

    model_config = ConfigDict(extra="allow")

    id: str
    title: str = ""
    artist: str = ""
    genres: list[str] = Field(default_factory=list)
    release_time: str | float | None = Field(None, description="RFC 3339 or epoch seconds")
    duration_ms: int | None = None
    available: bool = True
    embedding: list[float] | None = None


class ItemsIn(BaseModel):
    items: list[dict[str, Any]] = Field(max_length=10_000)


class ItemRejectedOut(BaseModel):
    index: int
    id: str | None
    reason: str


class ItemsOut(BaseModel):
    upserted: int
    rejected: list[ItemRejectedOut]


@router.post(
    "/v1/items",
    response_model=ItemsOut,
    summary="Add or update catalog items",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "items": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/ItemIn"},
                            }
                        },
                        "required": ["items"],
                    }
                }
            }
        }
    },
)
async def upsert_items(
    body: ItemsIn, services: Annotated[Services, Depends(get_services)]
) -> ItemsOut:
    """Batch upsert: good items are stored and served at once; each bad one is named."""
    good = []
    rejected = []
    dim = services.settings.embedding_dim
    for index, raw in enumerate(body.items):
        try:
            good.append(parse_item(raw, dim))
        except ValueError as exc:
            rid = raw.get("id") if isinstance(raw, dict) else None
            rejected.append(
                ItemRejectedOut(
                    index=index, id=rid if isinstance(rid, str) else None, reason=str(exc)
                )
            )
    n = await run_in_threadpool(services.catalog.upsert, good) if good else 0
    if n:
        await run_in_threadpool(services.refresh_popular)
    return ItemsOut(upserted=n, rejected=rejected)


@router.delete(
    "/v1/items/{item_id}",
    status_code=204,
    responses={404: {"description": "No such item"}},
    summary="Make an item unavailable",
)
async def delete_item(
    item_id: str, services: Annotated[Services, Depends(get_services)]
) -> Response:
    """The item stops appearing in lists at once (segue keeps its id: logs refer to it)."""
    if services.catalog.get(item_id) is None:
        raise HTTPException(404, f"no item {item_id!r}")
    await run_in_threadpool(services.catalog.set_available, item_id, False)
    await run_in_threadpool(services.refresh_popular)
    return Response(status_code=204)


class ModelOut(BaseModel):
    model_version: str
    offset: int
    events_learned: int
    watermark: float | None
    lag_events: int
    join: dict[str, int]
    index: dict[str, float]
    learner_error: str | None
    checked_at: float


@router.get("/v1/model", response_model=ModelOut, summary="What model is being served")
def model(services: Annotated[Services, Depends(get_services)]) -> ModelOut:
    """The served model: its version, the log offset it includes, learner lag, join counts."""
    engine = services.engine
    stats = engine.stats()
    try:
        lag = max(0, services.log.last_offset() - engine.offset)
    except Exception:
        lag = -1
    return ModelOut(
        model_version=stats["model_version"],
        offset=stats["offset"],
        events_learned=stats["events_learned"],
        watermark=stats["watermark"],
        lag_events=lag,
        join=stats["join"],
        index={k: (v if v == v else -1.0) for k, v in stats["index"].items()},
        learner_error=services.learner.last_error if services.learner else None,
        checked_at=time.time(),
    )
