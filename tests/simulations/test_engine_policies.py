"""The engine's policies against the baselines, with fixed seeds.

The synthetic world scores every list exactly, so these are claims about the product: the
bandit reranker, learning from rewards, serves lists worth more than the same engine ranking
greedily by relevance, and far more than random lists. Progressive replay checks that both
engine policies beat random on next-item hit rate. Every number is seeded: the same seed gives
the same table.
"""

from __future__ import annotations

import pandas as pd
import pytest

from simulations.engine_policy import EnginePolicy
from simulations.policy import RandomPolicy
from simulations.replay import progressive_replay
from simulations.world import World, synthetic_interactions

# A world small enough to run in seconds and large enough that trends and fatigue matter.
WORLD = {"n_users": 200, "n_items": 500, "seed": 0}
STEPS = 800
K = 10
# What the test asserts, on the mean exact expected reward over the second half of the run.
MARGIN_OVER_RELEVANCE = 0.05
MARGIN_OVER_RANDOM = 0.15
REPLAY_MARGIN_OVER_RANDOM = 0.05  # hit@10


def _last_half(steps: pd.DataFrame) -> float:
    return float(steps["expected_reward"].iloc[len(steps) // 2 :].mean())


@pytest.fixture(scope="module")
def world_results() -> dict[str, float]:
    world = World(**WORLD)
    catalog = world.catalog()
    seed = WORLD["seed"]
    policies = {
        "random": RandomPolicy(catalog, seed),
        "relevance": EnginePolicy("relevance", catalog, seed),
        "segue": EnginePolicy("segue", catalog, seed),
    }
    return {name: _last_half(world.run(p, STEPS, K)) for name, p in policies.items()}


def test_segue_beats_relevance_only(world_results: dict[str, float]) -> None:
    assert world_results["segue"] >= world_results["relevance"] + MARGIN_OVER_RELEVANCE, (
        world_results
    )


def test_segue_beats_random(world_results: dict[str, float]) -> None:
    assert world_results["segue"] >= world_results["random"] + MARGIN_OVER_RANDOM, world_results


def test_same_seed_same_run() -> None:
    def run() -> pd.DataFrame:
        world = World(n_users=30, n_items=150, seed=4)
        return world.run(EnginePolicy("segue", world.catalog(), seed=4), 120, K)

    first, second = run(), run()
    pd.testing.assert_frame_equal(first, second)


def test_replay_engine_policies_beat_random() -> None:
    log = synthetic_interactions(1500, n_users=100, n_items=300, seed=2)

    def replay() -> pd.DataFrame:
        from simulations.loaders import catalog_from_interactions

        catalog = catalog_from_interactions(log)
        policies = [EnginePolicy(name, catalog, seed=2) for name in ("segue", "relevance")]
        return progressive_replay(log, policies, k=K, eval_every=3, seed=2).summary

    summary = replay().set_index("policy")
    for name in ("segue", "relevance"):
        assert summary.loc[name, "hit"] >= summary.loc["random", "hit"] + REPLAY_MARGIN_OVER_RANDOM
    pd.testing.assert_frame_equal(summary, replay().set_index("policy"))
