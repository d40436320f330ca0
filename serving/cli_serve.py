"""``segue serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

import os
import tempfile
from typing import Annotated, Any

import typer

from serving.settings import SettingsError, load_settings

serve_app = typer.Typer(add_completion=False)


@serve_app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (SEGUE_SERVING_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (SEGUE_SERVING_PORT).")] = None,
    demo: Annotated[
        bool, typer.Option(help="Generate a demo catalog when the catalog is empty.")
    ] = False,
    learner: Annotated[
        bool,
        typer.Option(
            help="Run the learner in this process (embedded mode). Use --no-learner when "
            "'segue learn' runs as its own process."
        ),
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Serving processes sharing the port, one interpreter lock each. More than "
            "one needs --no-learner (with 'segue learn' running) and SEGUE_REDIS_URL, so every "
            "worker's lists reach the learner and every play shapes the next list anywhere.",
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="Log level of uvicorn and segue.")] = "info",
) -> None:
    """Run the HTTP service. Example: segue serve --port 8000 --demo"""
    import uvicorn

    from online.heap import HeapGuard, freeze_heap
    from serving.app import apply_switch_interval, create_app
    from serving.logs import configure_logging

    configure_logging(log_level)
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    listen: dict[str, Any] = {
        "host": host or settings.serving.host,
        "port": port or settings.serving.port,
        "log_level": log_level,
        "access_log": False,
    }
    if workers > 1:
        problem = (
            "--workers needs --no-learner: run 'segue learn' as its own process"
            if learner
            else "--workers needs SEGUE_REDIS_URL: lists and sessions must be shared"
            if not settings.redis_url
            else "--demo needs one worker: generate the catalog first"
            if demo
            else None
        )
        if problem:
            typer.echo(problem, err=True)
            raise typer.Exit(2)
        # each worker builds its own app (catalog, models, index) in its own process; their
        # metrics meet in files of a directory of this run (serving.metrics), set before the
        # workers start and removed when the service stops
        with tempfile.TemporaryDirectory(prefix="segue-metrics-") as shared:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
            uvicorn.run("serving.app:worker_app", factory=True, workers=workers, **listen)
        return
    app = create_app(settings, demo=demo, embedded_learner=learner)
    apply_switch_interval(settings)
    freeze_heap()
    with HeapGuard(settings.gc_reclaim_s):
        uvicorn.run(app, **listen)
