"""segue's engine as a research policy: the very objects the service runs, at event time.

``segue`` is the full engine (VW bandit reranking); ``relevance`` is the same engine with the
bandit replaced by a greedy relevance ranking, the baseline that shows what the bandit adds.

>>> from online.demo import generate_demo_catalog
>>> policy = EnginePolicy("segue", generate_demo_catalog(200, dim=8, seed=1), seed=0)
>>> rec = policy.recommend("ana", 5, {"device": "ios"}, now=1_750_000_000.0)
>>> len(rec.items), rec.request_id != ""
(5, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from feedback.events import Context, Event
from online.catalog import Catalog
from online.engine import Engine
from online.items import Item
from online.recommendation import Recommendation
from online.settings import EngineSettings, LearnerSettings

__all__ = ["ENGINE_POLICIES", "EnginePolicy", "engine_factory"]

ENGINE_POLICIES: tuple[str, ...] = ("segue", "relevance")


class EnginePolicy:
    """An :class:`~online.engine.Engine` over an in-memory copy of ``catalog``."""

    def __init__(
        self,
        name: str,
        catalog: Sequence[Item],
        seed: int = 0,
        *,
        engine: Mapping[str, Any] | None = None,
        learner: Mapping[str, Any] | None = None,
        refresh_every: int = 500,
    ) -> None:
        if name not in ENGINE_POLICIES:
            raise ValueError(f"engine policy must be one of {ENGINE_POLICIES}, not {name!r}")
        self.name = name
        dims = {len(i.embedding) for i in catalog if i.embedding is not None}
        if len(dims) > 1:
            raise ValueError(f"catalog embeddings have different dimensions: {sorted(dims)}")
        self._catalog = Catalog("sqlite://", embedding_dim=dims.pop() if dims else None)
        self._catalog.upsert(catalog)
        settings = EngineSettings(
            **{
                "seed": seed,
                "reranker": "bandit" if name == "segue" else "relevance",
                # one insert thread: a multi-threaded HNSW graph differs run to run
                "index_threads": 1,
                **(engine or {}),
            }
        )
        self.engine = Engine(self._catalog, settings, LearnerSettings(**(learner or {})))
        self.refresh_every = refresh_every
        self._since_refresh = 0

    def recommend(
        self, user_id: str, k: int, context: Context, now: float, *, explore: bool = True
    ) -> Recommendation:
        return self.engine.recommend(user_id, k, context, explore=explore, now=now)

    def learn(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self.engine.learn(events)
        self._since_refresh += len(events)
        if self._since_refresh >= self.refresh_every:
            self.engine.refresh_index()
            self._since_refresh = 0


def engine_factory(name: str, catalog: Sequence[Item], seed: int) -> EnginePolicy:
    """The :data:`~simulations.policy.EngineFactory` for ``segue`` and ``relevance``."""
    if name not in ENGINE_POLICIES:
        known = ", ".join(("random", "popular", "oracle", *ENGINE_POLICIES))
        raise ValueError(f"unknown policy {name!r}; known: {known}")
    return EnginePolicy(name, catalog, seed)
