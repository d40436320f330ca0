"""BanditReranker: hard rules, propensities, learning, weights and VW as the oracle."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import vowpalwabbit

from feedback.events import SlateEntry
from online.bandit import (
    ACTION_FEATURES,
    EXPLORATIONS,
    BanditReranker,
    Candidate,
    CandidateColumns,
    _round,
    _static_features,
    _static_rows,
    _static_table,
)

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


# -- the vectorized slot loop against a plain one --------------------------------------------


def _reference_rank(
    bandit: BanditReranker,
    shared: dict,
    cands: list[Candidate],
    k: int,
    explore: bool,
    max_per_artist: int | None,
) -> list[SlateEntry]:
    """The slot loop written plainly, one candidate object at a time, through VW's Python
    wrappers: the oracle for :meth:`BanditReranker.rank` (same seed, same list)."""
    pool: list[Candidate] = []
    for c in cands:
        if c.item_id not in {p.item_id for p in pool}:
            pool.append(c)
    static = [_static_features(c) for c in pool]
    doc = {
        "s": bandit._shared_namespace(shared),
        "p": {"pos": 1.0},
        "_multi": [{"a": f, "d": {"sim": 1.0}} for f in static],
    }
    n = len(pool)
    units = np.zeros((n, len(pool[0].vector))) if pool[0].vector is not None else None
    if units is not None:
        for i, c in enumerate(pool):
            norm = np.sqrt(np.dot(c.vector, c.vector))
            units[i] = c.vector / norm if norm > 0 else 0.0
    sim, served = np.zeros(n), np.full(n, 1.0)
    placed: list[int] = []
    slate: list[SlateEntry] = []
    uniforms = bandit._rng.random(min(k, n)) if explore else None  # one per slot, up front
    exs = bandit._ws.parse(json.dumps(doc))
    try:
        for position in range(k):
            count = Counter(pool[i].artist for i in placed)
            eligible = [
                i
                for i in range(n)
                if i not in placed
                and (max_per_artist is None or count[pool[i].artist] < max_per_artist)
            ]
            if not eligible:
                break
            pos_value = round(math.log1p(position), 4)
            bandit._set(exs[0], "p", bandit._pos_index, pos_value)
            for i in eligible:
                value = float(np.round(sim[i], 4))
                if value != served[i]:
                    bandit._set(exs[1 + i], "d", bandit._sim_index, value)
                    served[i] = value
            pmf, costs = bandit._predict([exs[0], *(exs[1 + i] for i in eligible)])
            greedy = int(np.argmax(pmf))
            if uniforms is not None:
                j = int(np.searchsorted(np.cumsum(pmf), uniforms[position], side="right"))
                j = min(j, len(eligible) - 1)
                while pmf[j] <= 0.0:
                    j -= 1
                propensity = float(pmf[j])
            else:
                j, propensity = greedy, 1.0
            chosen = eligible[j]
            cost = (
                float(costs[j]) if costs is not None else exs[1 + chosen].get_partial_prediction()
            )
            features = {**static[chosen], "sim": float(served[chosen]), "pos": pos_value}
            slate.append(
                SlateEntry(pool[chosen].item_id, position, -cost, min(1.0, propensity),
                           j != greedy, features)
            )  # fmt: skip
            placed.append(chosen)
            if units is not None:
                sim = np.maximum(sim, units @ units[chosen])
    finally:
        bandit._ws.finish_example(exs)
    return slate


def _trained_pair(exploration: str, seed: int) -> tuple[BanditReranker, BanditReranker]:
    """Two rerankers in the same state: the same seed and the same learned samples."""
    pair = (
        BanditReranker(exploration=exploration, seed=seed),
        BanditReranker(exploration=exploration, seed=seed),
    )
    rng = np.random.default_rng(seed)
    for _ in range(300):
        features = {name: round(float(rng.random()), 4) for name in ACTION_FEATURES}
        propensity, reward = float(rng.uniform(0.1, 1.0)), float(rng.random() < 0.3)
        for bandit in pair:
            bandit.learn_one(SHARED, features, propensity, reward)
    return pair


def _assert_same_lists(got: list[SlateEntry], want: list[SlateEntry], exact: bool) -> None:
    """The same items, slots, flags and served features; scores and propensities equal, or,
    where costs come from VW's linear terms instead of a VW call per slot, equal up to
    float32 rounding."""
    if exact:
        assert [repr(e) for e in got] == [repr(e) for e in want]
        return
    assert [(e.item_id, e.position, e.explored, e.features) for e in got] == [
        (e.item_id, e.position, e.explored, e.features) for e in want
    ]
    scores = ([e.score for e in got], [e.score for e in want])
    np.testing.assert_allclose(*scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([e.propensity for e in got], [e.propensity for e in want], rtol=1e-5)


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_rank_places_what_the_plain_slot_loop_places(exploration):
    explored = 0
    for seed in range(4):
        ours, reference = _trained_pair(exploration, seed)
        cands = candidates(60, n_artists=12, seed=seed)
        cands[5] = Candidate("t5", "ar5", cands[5].vector * 0.0, 0.5)  # a zero vector
        for explore, cap in ((True, 2), (False, 2), (True, None)):
            got = ours.rank(SHARED, cands + cands[:7], 30, explore=explore, max_per_artist=cap)
            want = _reference_rank(reference, SHARED, cands + cands[:7], 30, explore, cap)
            _assert_same_lists(got, want, exact=exploration != "squarecb")
            explored += sum(e.explored for e in got)
    assert explored > 0  # the lists compared include explored slots, not only greedy ones


@pytest.mark.parametrize("shared", [SHARED, {"user": "someone-new", "device": "tv"}])
def test_squarecb_costs_at_any_slot_are_vws_predictions(shared):
    """The linear terms, read from probe actions, reproduce VW's prediction of each real
    action at any position and similarity, for a trained model, a known and a new listener."""
    bandit, _ = _trained_pair("squarecb", 3)
    cands = candidates(20, seed=3)
    cands[4] = Candidate("t4", "ar4", None, relevance=0.0)  # zero features: VW drops them
    static = [_static_features(c) for c in cands]
    doc = {
        "s": bandit._shared_namespace(shared),
        "p": {"pos": 1.0},
        "_multi": [{"a": f, "d": {"sim": 1.0}} for f in static],
    }
    a, b, c, d = bandit._linear_terms(shared, _static_table(CandidateColumns.of(cands)))
    for pos, sim in ((0.0, 0.0), (0.6931, 0.25), (3.4012, 0.9731), (2.0794, 0.0)):
        exs = bandit._ws.parse(json.dumps(doc))
        bandit._set(exs[0], "p", bandit._pos_index, pos)
        for ex in exs[1:]:
            bandit._set(ex, "d", bandit._sim_index, sim)
        bandit._ws.predict(exs)
        want = [ex.get_partial_prediction() for ex in exs[1:]]
        bandit._ws.finish_example(exs)
        np.testing.assert_allclose(a + pos * b + sim * (c + pos * d), want, rtol=1e-5, atol=1e-6)
        assert np.ptp(want) > 1e-3  # the actions' costs differ: the comparison has content


def test_columns_and_objects_give_the_same_list():
    a, b = _trained_pair("squarecb", 5)
    cands = candidates(50, seed=5)
    columns = CandidateColumns.of(cands)
    assert [repr(e) for e in a.rank(SHARED, columns, 20, max_per_artist=2, exclude={"t3"})] == [
        repr(e) for e in b.rank(SHARED, cands, 20, max_per_artist=2, exclude={"t3"})
    ]
    no_vectors = [Candidate(c.item_id, c.artist, None, c.relevance) for c in cands]
    assert [repr(e) for e in a.rank(SHARED, CandidateColumns.of(no_vectors), 10)] == [
        repr(e) for e in b.rank(SHARED, no_vectors, 10)
    ]


def test_static_features_by_column_equal_those_of_each_candidate():
    rng = np.random.default_rng(11)
    n = 4000
    values = {
        "relevance": rng.random(n),
        "popularity": rng.pareto(1.0, n) * rng.choice([1.0, -1.0, 0.0], n),
        "trend": rng.normal(0, 3, n),
        "age_days": rng.normal(30, 300, n),
        "exposure_item": rng.normal(0.5, 2, n),
        "exposure_artist": rng.exponential(3, n),
    }
    # values whose 4-decimal rounding is a tie or nearly one, zeros of both signs, NaN
    ties = np.array([0.00005, 0.00015, 1.23455, 0.03125, -0.00005, 2.5e-5, 0.0, -0.0, np.nan])
    for column in values.values():
        column[: len(ties)] = ties
    cands = [
        Candidate(f"t{i}", "a", None, **{k: float(v[i]) for k, v in values.items()})
        for i in range(n)
    ]
    got = _static_rows(CandidateColumns.of(cands))
    want = [_static_features(c) for c in cands]
    assert [repr(row) for row in got] == [repr(row) for row in want]


def test_rounding_is_pythons_to_the_bit():
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [
            rng.normal(0, 1, 20_000),
            rng.normal(0, 1e6, 1000),
            np.arange(-2000, 2000) / 20_000 + 0.5e-4,  # ties at the 4th decimal
            np.nextafter(np.arange(-500, 500) / 20_000, np.inf),
            np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e-300, 5e-5]),
        ]
    )
    assert [repr(v) for v in _round(x).tolist()] == [repr(round(v, 4)) for v in x.tolist()]
