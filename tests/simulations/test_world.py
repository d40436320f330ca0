"""The synthetic world: exact expected rewards, exact regret, events, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.policy import PopularPolicy, RandomPolicy
from simulations.world import OraclePolicy, World, WorldConfig


@pytest.fixture
def world() -> World:
    return World(n_users=30, n_items=120, seed=11)


def test_expected_reward_matches_monte_carlo(world: World) -> None:
    # advance the world a little so fatigue, drift and popularity are not at their start
    world.run(RandomPolicy(world.catalog(), seed=1), n_steps=200, k=5)
    user = world.user_ids[0]
    for items in (world.best_list(user, 8), world.item_ids[:8], world.item_ids[40:43]):
        exact = world.expected_reward(user, items)
        draws = world.sample_rewards(user, items, n=200_000, seed=3)
        se = draws.std() / np.sqrt(len(draws))
        assert abs(draws.mean() - exact) < 4 * se + 1e-9


def test_realized_rewards_average_to_expected_rewards(world: World) -> None:
    steps = world.run(RandomPolicy(world.catalog(), seed=2), n_steps=4000, k=10)
    diff = steps["reward"] - steps["expected_reward"]
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(diff))


def test_oracle_has_zero_regret_and_random_positive(world: World) -> None:
    oracle = world.run(OraclePolicy(world), n_steps=300, k=10)
    assert oracle["regret"].abs().max() == 0.0
    assert (oracle["expected_reward"] == oracle["best_expected_reward"]).all()
    rand = world.run(RandomPolicy(world.catalog(), seed=0), n_steps=300, k=10)
    assert (rand["regret"] >= -1e-12).all()
    assert rand["regret"].sum() > 0.5 * rand["best_expected_reward"].sum()
    # both runs met the same listeners at the same times
    assert rand["user_id"].equals(oracle["user_id"])
    assert rand["timestamp"].equals(oracle["timestamp"])


def test_best_list_is_optimal_among_alternatives(world: World) -> None:
    user = world.user_ids[3]
    best = world.best_list(user, 5)
    value = world.expected_reward(user, best)
    rng = np.random.default_rng(0)
    for _ in range(200):
        other = list(rng.choice(world.item_ids, 5, replace=False))
        assert world.expected_reward(user, other) <= value + 1e-12
    assert world.expected_reward(user, best[::-1]) <= value  # order matters (position bias)


def test_same_seed_same_dataframe_and_different_seed_differs() -> None:
    def run(seed: int):
        w = World(n_users=20, n_items=80, seed=seed)
        return w.compare(
            [RandomPolicy(w.catalog(), seed), PopularPolicy(w.catalog())], n_steps=150, k=5
        )

    a, b, c = run(4), run(4), run(5)
    assert a.steps.equals(b.steps)
    assert a.summary.equals(b.summary)
    assert not a.steps.equals(c.steps)


def test_events_fed_to_learn_follow_the_contract(world: World) -> None:
    class Recorder(RandomPolicy):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.batches = []

        def learn(self, events):
            self.batches.append(list(events))

    policy = Recorder(world.catalog(), seed=0)
    steps = world.run(policy, n_steps=300, k=6)
    assert len(policy.batches) == 300
    total_listed_plays = 0
    for batch, (_, row) in zip(policy.batches, steps.iterrows(), strict=True):
        times = [e.timestamp for e in batch]
        assert times == sorted(times)
        impressions = [e for e in batch if e.type == "impression"]
        assert [e.position for e in impressions] == list(range(6))
        rid = impressions[0].request_id
        assert rid and all(e.request_id == rid for e in impressions)
        listed = [e for e in batch if e.type in ("play", "skip") and e.request_id is not None]
        for e in listed:
            assert e.request_id == rid
            assert impressions[e.position].item_id == e.item_id
            assert 0 < e.played_ms <= e.duration_ms
        organic = [e for e in batch if e.request_id is None]
        assert all(e.type == "play" for e in organic) and len(organic) <= 1
        plays = sum(e.type == "play" for e in listed)
        assert plays == row["reward"]
        total_listed_plays += plays
    assert total_listed_plays > 0


def test_new_releases_earn_nothing_before_release() -> None:
    world = World(n_users=10, n_items=100, new_release_fraction=0.3, seed=2)
    catalog = world.catalog()
    future = [i.item_id for i in catalog if i.release_time > world.now]
    assert len(future) == 30
    user = world.user_ids[0]
    assert world.expected_reward(user, future[:5]) == 0.0
    probs = world.play_probabilities(user, now=max(i.release_time for i in catalog) + 1)
    assert (probs > 0).all()


def test_fatigue_lowers_the_appeal_of_repeated_items() -> None:
    world = World(n_users=1, n_items=50, organic_rate=0.0, seed=5)

    fixed = RandomPolicy(world.catalog(), seed=0).recommend(world.user_ids[0], 3, {}, world.now)

    class Fixed(RandomPolicy):
        def recommend(self, user_id, k, context, now, *, explore=True):
            return fixed

    steps = world.run(Fixed(world.catalog(), seed=0), n_steps=60, k=3)
    # the same three items every minute: their expected reward must fall
    first, last = (
        steps["expected_reward"].iloc[:5].mean(),
        steps["expected_reward"].iloc[-5:].mean(),
    )
    assert last < 0.8 * first


def test_metrics_are_sane(world: World) -> None:
    steps = world.run(RandomPolicy(world.catalog(), seed=0), n_steps=500, k=10)
    assert steps["coverage"].is_monotonic_increasing or steps["coverage"].diff().min() > -0.05
    assert steps["ild"].between(0, 1).all()
    assert (steps["novelty"] > 0).all()
    assert steps["cumulative_regret"].iloc[-1] == pytest.approx(steps["regret"].sum())
    oracle = world.run(OraclePolicy(world), n_steps=500, k=10)
    # random spreads over the catalog; the oracle serves each listener's favourites
    assert steps["coverage"].iloc[-1] > oracle["coverage"].iloc[-1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_users": 0}, "n_users must be at least 1"),
        ({"new_release_fraction": 1.0}, r"new_release_fraction must be in \[0, 1\)"),
        ({"step_seconds": 0}, "step_seconds must be positive"),
    ],
)
def test_invalid_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WorldConfig(**kwargs)
