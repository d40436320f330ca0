from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from feedback.events import Event
from online.catalog import Catalog
from online.demo import generate_demo_catalog
from online.engine import Engine
from online.items import Item
from online.settings import EngineSettings, LearnerSettings

T0 = 1_790_000_000.0


@pytest.fixture
def small_catalog() -> Catalog:
    """400 clustered items over 40 artists and 8 genres, all released 100+ days before T0."""
    catalog = Catalog("sqlite://", embedding_dim=16)
    items = generate_demo_catalog(400, n_artists=40, n_genres=8, dim=16, seed=7, now=T0)
    catalog.upsert(items)
    return catalog


def make_engine(catalog: Catalog, **overrides: object) -> Engine:
    settings = EngineSettings(**{"seed": 3, "n_factors": 8, **overrides})  # type: ignore[arg-type]
    return Engine(catalog, settings, LearnerSettings(attribution_window_s=600))


class World:
    """Listeners who play exactly the items of their favourite genre, and skip the rest."""

    def __init__(self, catalog: Catalog, seed: int = 0) -> None:
        self.catalog = catalog
        self.rng = np.random.default_rng(seed)
        self.n = 0
        self.t = T0

    @staticmethod
    def favourite(user: str) -> str:
        return ("genre-5", "genre-3")[int(user[1:]) % 2]  # two taste groups, ~1/6 of items each

    def likes(self, user: str, item: Item) -> bool:
        return bool(item.genres) and item.genres[0] == self.favourite(user)

    def respond(self, user: str, rec_id: str, item_ids: list[str]) -> list[Event]:
        events = []
        for pos, item_id in enumerate(item_ids):
            self.n += 1
            events.append(Event(f"e{self.n}", "impression", user, item_id, self.t, rec_id, pos))
            item = self.catalog.get(item_id)
            assert item is not None
            self.n += 1
            if self.likes(user, item):
                events.append(
                    Event(
                        f"e{self.n}",
                        "play",
                        user,
                        item_id,
                        self.t + 1,
                        rec_id,
                        pos,
                        120_000,
                        200_000,
                    )
                )
            else:
                events.append(
                    Event(
                        f"e{self.n}", "skip", user, item_id, self.t + 1, rec_id, pos, 2_000, 200_000
                    )
                )
        self.t += 5
        return events


@pytest.fixture
def world(small_catalog: Catalog) -> World:
    return World(small_catalog)


def run_world(
    engine: Engine, world: World, steps: int, k: int = 10, users: int = 8
) -> Iterator[float]:
    """Serve, respond, learn; yields the share of liked items in each list."""
    for step in range(steps):
        user = f"u{step % users}"
        rec = engine.recommend(user, k, {"device": "ios"}, now=world.t)
        events = world.respond(user, rec.request_id, rec.item_ids)
        engine.learn(events)
        if step % 10 == 0:
            engine.refresh_index()
        liked = [world.likes(user, engine.catalog.get(i)) for i in rec.item_ids]  # type: ignore[arg-type]
        yield float(np.mean(liked)) if liked else 0.0


EngineFactory = Callable[..., Engine]
