"""``POST /v1/feedback``: read, check and durably store what clients post.

The body is read by hand rather than by FastAPI's body parsing so that every way a body can be
wrong gets its own clear 4xx *and* is kept in the dead-letter store: wrong content type (415),
too large (413), not JSON (400), not ``{"events": [...]}`` (422), too many events (413).
A well-formed batch is answered 200 with per-event rejections; the answer is sent only after
the batch is committed, and a slow or broken event log is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from feedback.contract import EventIn, validate_events
from feedback.log import MAX_DEAD_LETTER_PAYLOAD, IngestResult
from serving.services import Services, get_services

router = APIRouter()
logger = logging.getLogger("segue.feedback")


class FeedbackIn(BaseModel):
    """A batch of feedback events."""

    events: list[EventIn]


class RejectedOut(BaseModel):
    index: int
    event_id: str | None
    code: str
    reason: str


class FeedbackOut(BaseModel):
    """``accepted``: newly stored; ``duplicates``: already stored (by ``event_id``);
    ``rejected``: each bad event with its index in the batch and the reason."""

    accepted: int
    duplicates: int
    rejected: list[RejectedOut]


class ProblemOut(BaseModel):
    """An error: what was wrong with the request as a whole."""

    error: str
    detail: str


def openapi_schemas() -> dict[str, Any]:
    """The schemas the hand-read request body refers to, for the OpenAPI document."""
    schema = FeedbackIn.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"FeedbackIn": schema, **defs}


def _problem(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps({"error": error, "detail": detail}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def _read_body(request: Request, limit: int) -> tuple[bytes, bool]:
    """The body and whether it exceeds ``limit`` bytes (then only its start is returned,
    enough for the dead-letter record)."""
    length = request.headers.get("content-length")
    declared_too_large = length is not None and length.isdigit() and int(length) > limit
    keep = MAX_DEAD_LETTER_PAYLOAD if declared_too_large else limit
    chunks = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > keep:
            break
    body = b"".join(chunks)
    if declared_too_large or size > limit:
        return body[:MAX_DEAD_LETTER_PAYLOAD], True
    return body, False


def _parse(body: bytes) -> Any:
    """JSON, with NaN/Infinity tolerated so that such events get a per-event reason."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)  # raises ValueError for what is not JSON at all


@router.post(
    "/v1/feedback",
    response_model=FeedbackOut,
    responses={
        400: {"model": ProblemOut, "description": "The body is not JSON"},
        413: {"model": ProblemOut, "description": "Body or batch too large"},
        415: {"model": ProblemOut, "description": "Content type is not application/json"},
        422: {"model": ProblemOut, "description": 'The body is not {"events": [...]}'},
        503: {"model": ProblemOut, "description": "The event log is unavailable; retry later"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackIn"}}
            },
        }
    },
    summary="Post impressions, plays and skips",
)
async def post_feedback(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Response:
    """Store a batch of events. Retrying the same body is safe: it is answered with the same
    counts and nothing is stored twice; events are also deduplicated by ``event_id``."""
    settings = services.settings.feedback
    log = services.log
    source = f"api:{request.client.host if request.client else '?'}"
    metrics = services.metrics

    async def dead_letter(body: bytes, code: str, reason: str) -> None:
        metrics.dead_letters.labels(code).inc()
        try:
            await run_in_threadpool(
                log.dead_letter_body, body, code=code, reason=reason, source=source
            )
        except SQLAlchemyError as exc:  # the client still gets its 4xx; say what was not kept
            logger.error("could not keep a dead letter (%s: %s): %s", code, reason, exc)

    body, too_large = await _read_body(request, settings.max_body_bytes)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        reason = f"expected Content-Type application/json, got {content_type or 'none'!r}"
        await dead_letter(body, "unsupported_media_type", reason)
        return _problem(415, "unsupported_media_type", reason)
    if too_large:
        reason = (
            f"the body is larger than {settings.max_body_bytes} bytes "
            "(SEGUE_FEEDBACK_MAX_BODY_BYTES)"
        )
        await dead_letter(body, "body_too_large", reason)
        return _problem(413, "body_too_large", reason)
    try:
        parsed = _parse(body)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = f"the body is not valid JSON: {exc}"
        await dead_letter(body, "malformed_json", reason)
        return _problem(400, "malformed_json", reason)
    if not isinstance(parsed, dict) or not isinstance(parsed.get("events"), list):
        reason = 'the body must be an object {"events": [...]}'
        await dead_letter(body, "bad_body", reason)
        return _problem(422, "bad_body", reason)
    if extra := sorted(set(parsed) - {"events"}):
        reason = f"unknown top-level field(s): {', '.join(map(str, extra))}"
        await dead_letter(body, "bad_body", reason)
        return _problem(422, "bad_body", reason)
    raw_events = parsed["events"]
    if len(raw_events) > settings.max_batch_events:
        reason = (
            f"the batch has {len(raw_events)} events; the limit is {settings.max_batch_events} "
            "(SEGUE_FEEDBACK_MAX_BATCH_EVENTS)"
        )
        await dead_letter(body, "batch_too_large", reason)
        return _problem(413, "batch_too_large", reason)

    now = services.clock()
    good, bad = validate_events(raw_events, now=now, limits=settings.limits())
    batch_key = hashlib.sha256(body).hexdigest()
    try:
        result: IngestResult = await asyncio.wait_for(
            run_in_threadpool(
                log.ingest, good, bad, raw=raw_events, batch_key=batch_key, source=source
            ),
            timeout=settings.write_timeout_s,
        )
    except (TimeoutError, SQLAlchemyError) as exc:
        # Not acknowledged: the client retries, and event ids make a retry safe even if this
        # write commits after all.
        metrics.feedback_unavailable.inc()
        detail = (
            "the event log did not answer in time"
            if isinstance(exc, TimeoutError)
            else f"the event log is unavailable: {type(exc).__name__}"
        )
        return _problem(
            503, "log_unavailable", detail, headers={"Retry-After": str(settings.retry_after_s)}
        )
    if not result.replayed:
        metrics.events_accepted.inc(result.accepted)
        metrics.events_duplicate.inc(result.duplicates)
        for rej in bad:
            metrics.dead_letters.labels(rej.code).inc()
        if result.accepted:
            # off the event loop: it waits for the engine lock the learner may hold
            await run_in_threadpool(services.observe, good)
    return Response(orjson.dumps(result.to_json()), media_type="application/json")
