"""Baseline policies: the Policy protocol, seeds, propensities, and popularity's exactness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.events import Event
from online.items import Item
from simulations.policy import Policy, PopularPolicy, RandomPolicy, make_policies
from simulations.world import OraclePolicy, World

CATALOG = [Item(f"i{j}", release_time=float(j)) for j in range(20)]


def _builders():
    world = World(n_users=5, n_items=20, seed=0)
    return {
        "random": lambda: RandomPolicy(CATALOG, seed=3),
        "popular": lambda: PopularPolicy(CATALOG, half_life=10.0),
        "oracle": lambda: OraclePolicy(world),
    }


@pytest.mark.parametrize("name", ["random", "popular", "oracle"])
def test_conformance(name: str) -> None:
    build = _builders()[name]
    policy = build()
    assert isinstance(policy, Policy)
    users = ["u00000", "u00001"] if name == "oracle" else ["a", "b"]
    events = [Event(f"e{t}", "play", users[t % 2], f"i{t % 7}", 100.0 + t) for t in range(30)]
    frozen = list(events)
    outs = []
    for p in (policy, build()):
        p.learn(events)
        outs.append([p.recommend(u, 5, {}, now=200.0, explore=False) for u in users])
    assert events == frozen  # learning does not mutate its input
    for a, b in zip(*outs, strict=True):
        assert a.item_ids == b.item_ids  # same seed, same answers
        assert len(a.items) == 5 and len(set(a.item_ids)) == 5
        assert all(0 < i.propensity <= 1 for i in a.items)
    assert outs[0][0].request_id != outs[0][1].request_id


def test_random_is_uniform_over_released_items_with_exact_propensity() -> None:
    policy = RandomPolicy(CATALOG, seed=1)
    counts = np.zeros(20)
    for _ in range(3000):
        rec = policy.recommend("u", 2, {}, now=9.5)  # items i0..i9 are released
        assert all(i.propensity == 1 / 10 for i in rec.items)
        for i in rec.item_ids:
            counts[int(i[1:])] += 1
    assert counts[10:].sum() == 0
    expected = 3000 * 2 / 10
    assert np.abs(counts[:10] - expected).max() < 5 * math.sqrt(expected)
    assert RandomPolicy(CATALOG, seed=1).recommend("u", 50, {}, now=2.0).item_ids != []
    assert len(RandomPolicy(CATALOG, seed=1).recommend("u", 50, {}, now=2.0).items) == 3


@settings(max_examples=60, deadline=None)
@given(
    plays=st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 3), st.floats(0, 1000)), max_size=80
    ),
    k=st.integers(1, 12),
    cache=st.integers(1, 8),
)
def test_popular_matches_brute_force(plays, k, cache) -> None:
    """The incremental top list equals sorting the decayed counts from scratch."""
    items = [Item(f"i{j}") for j in range(25)]  # i25..i30 are discovered from plays
    policy = PopularPolicy(items, half_life=50.0, cache_size=cache)
    plays = sorted(plays, key=lambda p: p[2])
    events = [Event(f"e{n}", "play", f"u{u}", f"i{j}", t) for n, (j, u, t) in enumerate(plays)]
    policy.learn(events)
    now = 2000.0
    score: dict[str, float] = {f"i{j}": 0.0 for j in range(25)}
    for e in events:
        score[e.item_id] = score.get(e.item_id, 0.0) + 0.5 ** ((now - e.timestamp) / 50.0)
    order = list(score)  # catalog order, then discovery order
    for user in ("u0", "u9"):
        played = {e.item_id for e in events if e.user_id == user}
        ranked = sorted((i for i in order if i not in played), key=lambda i: -score[i])
        got = policy.recommend(user, k, {}, now=now)
        expected_scores = [score[i] for i in ranked[:k]]
        assert [it.score for it in got.items] == pytest.approx(expected_scores, rel=1e-9)
        assert got.item_ids == ranked[:k] or _ties_only(got.item_ids, ranked[:k], score)


def _ties_only(a: list[str], b: list[str], score: dict[str, float]) -> bool:
    return [round(score[i], 9) for i in a] == [round(score[i], 9) for i in b]


def test_popular_ignores_skips_and_unreleased_items() -> None:
    policy = PopularPolicy(CATALOG, exclude_played=False)
    policy.learn([Event("s", "skip", "u", "i3", 5.0), Event("p", "play", "u", "i19", 30.0)])
    assert policy.recommend("u", 3, {}, now=10.0).item_ids == ["i0", "i1", "i2"]
    assert policy.recommend("u", 1, {}, now=30.0).item_ids == ["i19"]


def test_clone_is_fresh() -> None:
    policy = PopularPolicy(CATALOG)
    policy.learn([Event("p", "play", "u", "i5", 30.0)])
    assert policy.recommend("v", 1, {}, now=30.0).item_ids == ["i5"]
    assert policy.clone().recommend("v", 1, {}, now=30.0).item_ids == ["i0"]
    rnd = RandomPolicy(CATALOG, seed=4)
    first = rnd.recommend("u", 3, {}, now=30.0).item_ids
    assert rnd.clone().recommend("u", 3, {}, now=30.0).item_ids == first


def test_make_policies() -> None:
    made = []

    def factory(name, catalog, seed):
        made.append((name, len(catalog), seed))
        return RandomPolicy(catalog, seed, name=name)

    world = World(n_users=3, n_items=10, seed=0)
    policies = make_policies(
        ["random", "popular", "oracle", "segue"], world.catalog(), 7, factory, world=world,
        options={"popular": {"half_life": 60.0}},
    )  # fmt: skip
    assert list(policies) == ["random", "popular", "oracle", "segue"]
    assert made == [("segue", 10, 7)]
    assert policies["popular"].half_life == 60.0
    with pytest.raises(ValueError, match=r"unknown policy 'segue'.*engine_factory"):
        make_policies(["segue"], CATALOG, 0)
    with pytest.raises(ValueError, match="'oracle' policy needs the synthetic world"):
        make_policies(["oracle"], CATALOG, 0)
    with pytest.raises(ValueError, match="listed twice"):
        make_policies(["random", "random"], CATALOG, 0)
    with pytest.raises(ValueError, match="half_life must be positive"):
        PopularPolicy(CATALOG, half_life=0)
