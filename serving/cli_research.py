"""``segue replay | ope | simulate``: the research commands, with segue's engine policies.

The commands themselves live in :mod:`simulations.cli`; here they get the engine factory, so
``--policies random,popular,relevance,segue`` compares the baselines with the very engine the
service runs, and ``segue ope FILE --snapshot V`` evaluates a model snapshot off-policy.
"""

from __future__ import annotations

from typing import Any

import typer

from feedback.events import Context
from online.engine import Engine
from online.recommendation import Recommendation
from simulations.cli import make_app
from simulations.engine_policy import engine_factory


class SnapshotPolicy:
    """An engine restored from a snapshot, answering as a research policy (no exploration
    unless asked, nothing learned: evaluation must not change what it evaluates)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.model_version

    def recommend(
        self, user_id: str, k: int, context: Context, now: float, *, explore: bool = False
    ) -> Recommendation:
        pool = self.engine.candidates(user_id, context, now=now)
        return self.engine.rerank(self.engine.score(pool, k), k, explore=explore)

    def learn(self, events: Any) -> None:  # evaluation only
        return None


def load_snapshot_policy(version: str) -> SnapshotPolicy:
    """The engine of snapshot ``version`` (checksums verified) over the configured catalog."""
    from feedback.db import create_db_engine
    from online.catalog import Catalog
    from serving.settings import load_settings
    from snapshots import SnapshotStore

    settings = load_settings()
    store = SnapshotStore(settings.snapshot_dir())
    snapshot = store.load(version)
    db = create_db_engine(settings.resolved_database_url(), timeout_s=settings.db_timeout_s)
    catalog = Catalog(db, embedding_dim=settings.embedding_dim)
    engine = Engine.load(
        snapshot.path, catalog, settings.engine, settings.learner, version=snapshot.version
    )
    return SnapshotPolicy(engine)


_research = make_app(engine_factory, load_snapshot_policy)


def _single(name: str) -> typer.Typer:
    app = typer.Typer(add_completion=False)
    for info in _research.registered_commands:
        if info.name == name:
            app.registered_commands.append(info)
    return app


replay_app = _single("replay")
ope_app = _single("ope")
simulate_app = _single("simulate")

__all__ = ["SnapshotPolicy", "load_snapshot_policy", "ope_app", "replay_app", "simulate_app"]
