"""The HTTP app factory: ``create_app(settings)`` builds one independent service instance."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from serving import feedback_api, recommend_api
from serving.logs import configure_logging
from serving.metrics import Metrics
from serving.services import Services, get_services
from serving.settings import Settings, load_settings

API_VERSION = "1"


class RequestTiming:
    """Records each request's latency by route template (a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware re-streams every body through a task, which costs on big batches)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.request_latency.labels(path).observe(time.perf_counter() - started)


class SegueApp(FastAPI):
    """FastAPI, with lists served ahead of its middleware stack (see
    :class:`~serving.recommend_api.RecommendFastPath`)."""

    _lists_direct: bool | None = None

    def build_middleware_stack(self) -> ASGIApp:
        return recommend_api.RecommendFastPath(super().build_middleware_stack())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A list goes straight to the stack, whose first layer serves it: FastAPI's own
        # __call__ asks three OpenTelemetry providers whether it should trace, for every
        # request (2% of a busy process in py-spy). The answer is read once, at the second
        # request (after the lifespan that configures providers, and the first request that
        # builds the stack); with a provider configured every request keeps FastAPI's way.
        if scope["type"] == "http" and scope["path"] == recommend_api.RECOMMEND_PATH:
            direct = self._lists_direct
            if direct is None and self.middleware_stack is not None:
                direct = self._lists_direct = not self._native_telemetry.enabled()
            if direct:
                if self.root_path:
                    scope["root_path"] = self.root_path
                scope["app"] = self
                await self.middleware_stack(scope, receive, send)  # type: ignore[misc]
                return
        await super().__call__(scope, receive, send)


async def validation_failed(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422, written by orjson: a non-finite number a client sent comes back as null
    in the error's ``input`` (the standard encoder refused it, and the 422 became a 500)."""
    return Response(
        orjson.dumps({"detail": jsonable_encoder(exc.errors())}),
        status_code=422,
        media_type="application/json",
    )


class HealthOut(BaseModel):
    status: str
    checks: dict[str, str] = {}


def apply_switch_interval(settings: Settings) -> None:
    """Set the interpreter's switch interval of a serving process (see
    ``ServingSettings.gil_switch_ms``)."""
    if settings.serving.gil_switch_ms is not None:
        sys.setswitchinterval(settings.serving.gil_switch_ms / 1000)


def worker_app() -> FastAPI:
    """One process of ``segue serve --workers N`` (uvicorn calls this in each worker):
    settings from the environment, snapshots followed from ``CURRENT`` (the learner runs as
    ``segue learn``), the heap frozen once built as in the single-process service."""
    from online.heap import HeapGuard, freeze_heap

    configure_logging()  # a fresh process: the parent's logging is not inherited
    settings = load_settings()
    app = create_app(settings, embedded_learner=False)
    app.state.services.metrics.forget_dead_workers()
    apply_switch_interval(settings)
    freeze_heap()
    HeapGuard(settings.gc_reclaim_s).start()
    return app


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    services: Services | None = None,
    demo: bool = False,
    embedded_learner: bool = True,
) -> FastAPI:
    """Build the segue HTTP app for ``settings`` (read from the environment when omitted).

    ``demo`` generates a demo catalog when the catalog is empty; ``embedded_learner`` runs the
    learner in a background thread of this process (the embedded mode of ``segue serve``).
    """
    settings = settings or load_settings()
    services = services or Services.build(settings, clock=clock, demo=demo)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if embedded_learner:
            services.start_learner()
        else:
            services.start_reloader()
        services.start_catalog_follower()
        try:
            yield
        finally:
            services.recommender.close()
            services.close()

    app = SegueApp(
        title="segue",
        version=API_VERSION,
        summary="Online-learning recommender with a contextual-bandit reranker",
        lifespan=lifespan,
    )
    app.state.services = services
    app.add_exception_handler(RequestValidationError, validation_failed)  # type: ignore[arg-type]

    app.add_middleware(RequestTiming, metrics=services.metrics)

    @app.get("/health/live", response_model=HealthOut, tags=["health"])
    def live() -> HealthOut:
        """The process is up."""
        return HealthOut(status="ok")

    @app.get(
        "/health/ready",
        response_model=HealthOut,
        responses={503: {"model": HealthOut}},
        tags=["health"],
    )
    def ready(
        response: Response, services: Annotated[Services, Depends(get_services)]
    ) -> HealthOut:
        """Ready to take traffic: the event log answers and the catalog has items."""
        checks: dict[str, str] = {}
        try:
            with services.log.engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            checks["event_log"] = "ok"
        except sa.exc.SQLAlchemyError as exc:
            checks["event_log"] = f"unavailable: {type(exc).__name__}"
        checks["catalog"] = "ok" if len(services.catalog) else "empty"
        if services.learner is not None and services.learner.last_error:
            checks["learner"] = f"failing: {services.learner.last_error}"
        ok = checks["event_log"] == "ok"
        if not ok:
            response.status_code = 503
        return HealthOut(status="ok" if ok else "unavailable", checks=checks)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics(services: Annotated[Services, Depends(get_services)]) -> Response:
        """Prometheus metrics."""
        return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")

    app.include_router(feedback_api.router, tags=["feedback"])
    app.include_router(recommend_api.router, tags=["recommendations"])

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(feedback_api.openapi_schemas())
            components["ItemIn"] = recommend_api.ItemIn.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
