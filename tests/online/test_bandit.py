"""BanditReranker: hard rules, propensities, learning, weights and VW as the oracle."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import vowpalwabbit

from online.bandit import ACTION_FEATURES, EXPLORATIONS, BanditReranker, Candidate

SHARED = {"user": "tom", "device": "ios", "hour": 21, "history": 40}


def candidates(n: int = 40, n_artists: int = 8, seed: int = 0) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(n_artists, 8))
    return [
        Candidate(
            item_id=f"t{i}",
            artist=f"ar{i % n_artists}",
            vector=centroids[i % n_artists] + 0.3 * rng.normal(size=8),
            relevance=float(rng.random()),
            popularity=float(rng.integers(1_000)),
            trend=float(rng.normal()),
            age_days=float(rng.integers(400)),
            exposure_item=float(rng.integers(3)),
            exposure_artist=float(rng.integers(6)),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_hard_rules_are_respected(exploration):
    bandit = BanditReranker(exploration=exploration, seed=1)
    cands = candidates()
    excluded = {"t0", "t1", "t9"}
    for explore in (True, False):
        slate = bandit.rank(SHARED, cands, 20, explore=explore, max_per_artist=2, exclude=excluded)
        ids = [e.item_id for e in slate]
        assert len(ids) == len(set(ids)) == 16  # 8 artists x 2: fewer than k, all eligible used
        assert not excluded & set(ids)
        by_id = {c.item_id: c for c in cands}
        assert max(Counter(by_id[i].artist for i in ids).values()) <= 2
        assert [e.position for e in slate] == list(range(16))
    # Without the artist cap every slot is filled.
    assert len(bandit.rank(SHARED, cands, 30, exclude=excluded)) == 30


def test_duplicates_and_empty_inputs():
    bandit = BanditReranker(seed=0)
    cands = candidates(5)
    slate = bandit.rank(SHARED, cands + cands, 10)
    assert sorted(e.item_id for e in slate) == sorted(c.item_id for c in cands)
    assert bandit.rank(SHARED, [], 10) == []
    assert bandit.rank(SHARED, cands, 0) == []
    assert bandit.rank(SHARED, cands, 3, exclude={c.item_id for c in cands}) == []


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_greedy_lists_are_deterministic_with_propensity_one(exploration):
    bandit = BanditReranker(exploration=exploration, seed=2)
    cands = candidates()
    for e in bandit.rank(SHARED, cands, 10):
        bandit.learn_one(SHARED, e.features, e.propensity, e.features["rel"])
    first = bandit.rank(SHARED, cands, 15, explore=False)
    bandit.rank(SHARED, cands, 15)  # advances the RNG; the greedy list must not care
    second = bandit.rank(SHARED, cands, 15, explore=False)
    assert first == second
    assert all(e.propensity == 1.0 and not e.explored for e in first)


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_propensities_are_valid_and_explored_flags_consistent(exploration):
    bandit = BanditReranker(exploration=exploration, epsilon=0.2, seed=3)
    cands = candidates()
    for e in bandit.rank(SHARED, cands, 10):  # untrained, all estimates tie
        bandit.learn_one(SHARED, e.features, e.propensity, e.features["fresh"])
    slates = [bandit.rank(SHARED, cands, 10) for _ in range(10)]
    entries = [e for s in slates for e in s]
    assert all(0.0 < e.propensity <= 1.0 for e in entries)
    assert any(e.explored for e in entries)
    if exploration == "epsilon":
        # Greedy actions carry 1 - eps + eps/K, the others eps/K (K >= 31 here).
        for e in entries:
            assert e.explored == (e.propensity < 0.5)
    # The features are exactly what VW saw: re-scoring them reproduces the served score.
    for e in entries[:12]:
        assert set(e.features) == set(ACTION_FEATURES)
        assert bandit.predict_one(SHARED, e.features) == pytest.approx(e.score, abs=1e-6)


def test_similarity_feature_reflects_what_is_already_placed():
    bandit = BanditReranker(seed=4)
    v = np.ones(4)
    cands = [
        Candidate("a", "x", v, 0.9),
        Candidate("b", "y", v * 2, 0.8),  # same direction as "a": cosine 1
        Candidate("c", "z", None, 0.7),
    ]
    slate = bandit.rank(SHARED, cands, 3, explore=False)
    sims = {e.item_id: e.features["sim"] for e in slate}
    assert slate[0].features["sim"] == 0.0 and slate[0].features["pos"] == 0.0
    assert sims["c"] == 0.0
    if slate[0].item_id in {"a", "b"} and slate[1].item_id in {"a", "b"}:
        assert slate[1].features["sim"] == 1.0


def test_the_bandit_learns_which_feature_carries_reward():
    """Listeners reward fresh items; relevance is noise. The greedy list must turn fresh."""
    bandit = BanditReranker(exploration="epsilon", epsilon=0.3, seed=5)
    rng = np.random.default_rng(5)
    cands = candidates(30, n_artists=30)
    fresh = {c.item_id: 1.0 / (1.0 + c.age_days / 7.0) for c in cands}
    for _ in range(150):
        for e in bandit.rank(SHARED, cands, 3):
            bandit.learn_one(
                SHARED, e.features, e.propensity, float(rng.random() < fresh[e.item_id])
            )
    top = bandit.rank(SHARED, cands, 5, explore=False)
    top_fresh = np.mean([fresh[e.item_id] for e in top])
    assert top_fresh > 2 * np.mean(list(fresh.values()))
    assert fresh[top[0].item_id] >= sorted(fresh.values())[-3]  # one of the three freshest


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_zero_weight_is_a_no_op_and_smaller_weights_move_less(exploration):
    features = {"rel": 0.5, "pop": 2.0, "fresh": 0.3, "sim": 0.1, "pos": 0.0}
    moves = []
    for w in (0.0, 0.05, 0.3, 1.0):
        bandit = BanditReranker(exploration=exploration, seed=6)
        bandit.learn_one(SHARED, features, 0.5, 0.0)
        before = bandit.predict_one(SHARED, features)
        bandit.learn_one(SHARED, features, 0.5, 1.0, w=w)
        moves.append(abs(bandit.predict_one(SHARED, features) - before))
    assert moves[0] == 0.0
    assert moves[1] < moves[2] < moves[3]


def test_importance_is_w_over_propensity_under_mtr():
    """Under MTR only the importance w / p matters: (0.8, 0.5) and (0.4, 0.25) coincide."""
    features = {"rel": 0.5, "pop": 2.0, "fresh": 0.3}
    a, b = BanditReranker(seed=0), BanditReranker(seed=0)
    a.learn_one(SHARED, features, 0.8, 1.0, w=0.5)
    b.learn_one(SHARED, features, 0.4, 1.0, w=0.25)
    assert a.predict_one(SHARED, features) == b.predict_one(SHARED, features)
    c = BanditReranker(seed=0)
    c.learn_one(SHARED, features, 0.8, 1.0, w=1.0)
    assert c.predict_one(SHARED, features) > a.predict_one(SHARED, features)  # w/p 1.25 > 0.625


def test_squarecb_matches_vws_own_squarecb_when_unweighted():
    """VW's --squarecb is the oracle for segue's SquareCB rule (with w = 1 they coincide)."""
    bandit = BanditReranker(exploration="squarecb", seed=7)
    oracle = vowpalwabbit.Workspace(bandit._vw_args().replace("--epsilon 0", "--squarecb"))
    rng = np.random.default_rng(7)
    cands = candidates(12)
    for _ in range(20):
        for e in bandit.rank(SHARED, cands, 3):
            reward = float(rng.random() < e.features["rel"])
            bandit.learn_one(SHARED, e.features, e.propensity, reward)
            oracle.learn(bandit._example(SHARED, e.features, {"Cost": -reward, "Probability": 1.0}))
    doc = {
        "s": bandit._shared_namespace(SHARED),
        "p": {"pos": 0.0},
        "_multi": [{"a": e_features(c), "d": {"sim": 0.0}} for c in cands],
    }
    exs = bandit._ws.parse(json.dumps(doc))
    ours, _ = bandit._predict(exs)
    bandit._ws.finish_example(exs)
    theirs = oracle.predict(json.dumps(doc))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    oracle.finish()


def e_features(c: Candidate) -> dict[str, float]:
    from online.bandit import _static_features

    return _static_features(c)


@pytest.mark.parametrize(
    ("propensity", "reward", "w", "features", "match"),
    [
        (0.0, 1.0, 1.0, {}, "propensity"),
        (1.5, 1.0, 1.0, {}, "propensity"),
        (0.5, float("nan"), 1.0, {}, "reward"),
        (0.5, 1.0, -1.0, {}, "w must"),
        (0.5, 1.0, 1.0, {"colour": 1.0}, "unknown action features"),
    ],
)
def test_invalid_learning_inputs_are_rejected(propensity, reward, w, features, match):
    with pytest.raises(ValueError, match=match):
        BanditReranker().learn_one(SHARED, features, propensity, reward, w)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"exploration": "ucb"}, "exploration"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"bits": 40}, "bits"),
    ],
)
def test_invalid_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BanditReranker(**kwargs)


def test_bad_max_per_artist_is_rejected():
    with pytest.raises(ValueError, match="max_per_artist"):
        BanditReranker().rank(SHARED, candidates(3), 2, max_per_artist=0)
