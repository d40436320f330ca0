"""``segue learn``: the learner as its own process (the distributed mode)."""

from __future__ import annotations

import fcntl
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from serving.logs import configure_logging
from serving.settings import SettingsError, load_settings

learn_app = typer.Typer(add_completion=False)
logger = logging.getLogger("segue.learner")


@learn_app.command()
def learn(
    catalog_reload_s: Annotated[
        float,
        typer.Option(
            help="Read catalog changes (items the services or 'segue catalog import' wrote) "
            "this often."
        ),
    ] = 1.0,
    once: Annotated[
        bool, typer.Option(help="Learn what the log holds, cut a snapshot, exit.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "info",
) -> None:
    """Run the learner: read the event log, learn, cut snapshots. Example: segue learn

    Services started with 'segue serve --no-learner' serve each snapshot it cuts. Only one
    learner runs per snapshot directory (a lock file there); a second one exits. Set
    SEGUE_REDIS_URL on both sides so the learner sees the lists the services served.
    """
    from feedback.db import create_db_engine
    from feedback.decisions import DecisionLog, InMemoryDecisionLog, RedisDecisionLog
    from feedback.log import SQLEventLog
    from online.catalog import Catalog
    from online.engine import ContentIndex
    from online.heap import HeapGuard, freeze_heap, refreeze_later
    from online.learner import Learner, open_engine
    from snapshots import CutSchedule, SnapshotStore
    from snapshots.guard import PromotionGuard

    configure_logging(log_level)
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    snapshot_dir = settings.snapshot_dir()
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    lock_file = (snapshot_dir / "learner.lock").open("a")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        typer.echo(f"another learner holds {Path(lock_file.name)}; exiting", err=True)
        raise typer.Exit(1) from None

    db = create_db_engine(settings.resolved_database_url(), timeout_s=settings.db_timeout_s)
    log = SQLEventLog(db)
    catalog = Catalog(db, embedding_dim=settings.embedding_dim)
    if settings.redis_url:
        decisions: DecisionLog = RedisDecisionLog(
            settings.redis_url,
            prefix=settings.redis_prefix,
            ttl_s=settings.learner.decision_ttl_s,
        )
    else:
        logger.warning(
            "SEGUE_REDIS_URL is not set: this process cannot see the lists a separate service "
            "served, so impressions teach the relevance model only"
        )
        decisions = InMemoryDecisionLog(ttl_s=settings.learner.decision_ttl_s)
    store = SnapshotStore(
        snapshot_dir,
        keep=settings.snapshot.keep,
        guard=PromotionGuard.from_settings(settings.snapshot),
    )
    engine = open_engine(
        catalog,
        store,
        settings.engine,
        settings.learner,
        decisions=decisions,
        # the serving processes index the content vectors; a learner serves nothing
        content_index=ContentIndex(settings.embedding_dim, enabled=False)
        if settings.embedding_dim
        else None,
    )
    freeze_heap()
    learner = Learner(
        engine,
        log,
        store=store,
        schedule=CutSchedule.from_settings(settings.snapshot),
        on_swap=lambda _engine: refreeze_later(),
    )
    typer.echo(f"learning from offset {engine.offset} as {engine.model_version}")
    if once:
        n = learner.run_until_caught_up()
        result = learner.cut() if n else None
        typer.echo(f"learned {n} events" + (f"; snapshot {result.version}" if result else ""))
        return

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def reload_catalog() -> None:
        while not stop.wait(catalog_reload_s):
            try:
                catalog.sync()  # only the rows written since: a reload would empty it a while
            except Exception:
                logger.exception("could not read catalog changes")

    threading.Thread(target=reload_catalog, daemon=True).start()
    with HeapGuard(settings.gc_reclaim_s):
        learner.run(stop)  # cuts a snapshot on a clean stop
    typer.echo("learner stopped")
