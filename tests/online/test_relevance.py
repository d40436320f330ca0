"""RelevanceModel: River's FM as the oracle, two-tower vectors, cold items, weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from online.items import Item
from online.relevance import RelevanceModel, encode_context

CTX = {"device": "ios", "hour": 21}


def catalog(n: int = 60) -> list[Item]:
    return [
        Item(f"t{i}", artist=f"ar{i % 6}", genres=(f"g{i % 3}", f"g{3 + i % 4}")) for i in range(n)
    ]


@pytest.fixture(scope="module")
def trained() -> tuple[RelevanceModel, list[Item]]:
    """Listeners u0..u9 each like the artists whose index matches their parity."""
    items = catalog()
    model = RelevanceModel(n_factors=8, seed=7)
    rng = np.random.default_rng(7)
    for _ in range(4_000):
        u = int(rng.integers(10))
        item = items[int(rng.integers(len(items)))]
        likes = int(item.artist[2:]) % 2 == u % 2
        model.learn_one(f"u{u}", item, float(likes), {"device": ("ios", "web")[u % 2], "hour": 20})
    return model, items


def test_predict_many_equals_predict_one_and_rivers_own_score(trained):
    model, items = trained
    many = model.predict_many("u3", items, CTX)
    one = np.array([model.predict_one("u3", it, CTX) for it in items])
    np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-12)
    both, vectors = model.predict_many_with_vectors("u3", items, CTX)
    np.testing.assert_array_equal(both, many)
    np.testing.assert_array_equal(vectors, model.item_vectors(items))
    # River's FMClassifier is the oracle wherever every feature has been learned (River would
    # draw random latents for unseen ones, "hour=21" here, so the oracle uses hour 20).
    seen_ctx = {"device": "web", "hour": 20}
    many = model.predict_many("u3", items, seen_ctx)
    for i, it in enumerate(items):
        x = dict.fromkeys(model.user_features("u3", seen_ctx) + model.item_features(it), 1)
        assert many[i] == pytest.approx(model._fm.predict_proba_one(x)[True], abs=1e-9)


def test_inner_product_ranking_equals_model_ranking(trained):
    model, items = trained
    for user in ("u0", "u1", "never-seen"):
        probs = model.predict_many(user, items, CTX)
        u = model.user_vector(user, CTX)
        V = model.item_vectors(items)
        assert u.dtype == V.dtype == np.float32
        assert u.shape == (model.dim,) and V.shape == (len(items), model.dim)
        ips = V.astype(np.float64) @ u.astype(np.float64)
        # Same order: the logit is the inner product plus a per-(user, context) constant.
        logits = np.log(probs / (1 - probs))
        np.testing.assert_allclose(logits - ips, (logits - ips)[0], atol=1e-4)
        assert list(np.argsort(-ips, kind="stable")[:10]) == list(
            np.argsort(-logits, kind="stable")[:10]
        )
        np.testing.assert_allclose(model.item_vector(items[4]), V[4], rtol=1e-6)


def test_listeners_prefer_the_artists_they_play(trained):
    model, items = trained
    even = [it for it in items if int(it.artist[2:]) % 2 == 0]
    odd = [it for it in items if int(it.artist[2:]) % 2 == 1]
    ctx0 = {"device": "ios", "hour": 20}
    assert model.predict_many("u0", even, ctx0).mean() > 0.7
    assert model.predict_many("u0", odd, ctx0).mean() < 0.3


def test_new_track_by_a_loved_artist_outranks_one_by_a_disliked_artist(trained):
    model, _ = trained
    loved = Item("brand-new-1", artist="ar2", genres=("g9",))  # u0 loves even artists
    disliked = Item("brand-new-2", artist="ar3", genres=("g9",))
    ctx0 = {"device": "ios", "hour": 20}
    u = model.user_vector("u0", ctx0)
    V = model.item_vectors([loved, disliked])
    assert V[0] @ u > V[1] @ u
    p_loved, p_disliked = model.predict_many("u0", [loved, disliked], ctx0)
    assert p_loved > 0.6 > 0.4 > p_disliked


def test_predicting_does_not_change_the_model(trained):
    model, items = trained
    n_latents = len(model._fm.latents)
    before = model.predict_many("u1", items, CTX)
    model.predict_many("stranger", [Item("x", artist="nobody", genres=("none",))], {"k": "v"})
    assert len(model._fm.latents) == n_latents
    np.testing.assert_array_equal(model.predict_many("u1", items, CTX), before)


def test_fractional_reward_is_a_soft_label():
    model = RelevanceModel(n_factors=4, seed=0)
    item = Item("t1", artist="a")
    for _ in range(3_000):
        model.learn_one("tom", item, 0.7, {})
    assert model.predict_one("tom", item, {}) == pytest.approx(0.7, abs=0.03)


def test_zero_weight_is_an_exact_no_op_and_small_weights_move_less():
    items = catalog(12)
    base = RelevanceModel(n_factors=4, seed=3)
    for i, it in enumerate(items):
        base.learn_one("tom", it, float(i % 2), CTX)
    ref = base.predict_many("tom", items, CTX)
    target = Item("t5", artist="ar5", genres=("g2", "g4"))

    moves = []
    for w in (0.0, 0.1, 1.0):
        model = copy.deepcopy(base)
        model.learn_one("tom", target, 1.0, CTX, w=w)
        moves.append(np.abs(model.predict_many("tom", items, CTX) - ref).max())
        if w == 0.0:
            np.testing.assert_array_equal(model.predict_many("tom", items, CTX), ref)
            assert model.n_learned == base.n_learned
    assert moves[0] == 0.0 < moves[1] < moves[2]


def test_pop_touched_names_the_item_side_keys_learned_since_last_call():
    model = RelevanceModel(n_factors=4, seed=0)
    model.learn_one("tom", Item("t1", artist="Muse", genres=("rock", "alt")), 1.0, CTX)
    assert model.pop_touched() == {"i:t1", "a:Muse", "g:rock", "g:alt"}
    assert model.pop_touched() == set()
    model.learn_one("tom", Item("t2", artist="Muse"), 0.0, CTX, w=0.0)
    assert model.pop_touched() == set()  # w = 0 moves nothing


def test_vectors_refresh_when_an_unseen_feature_is_learned():
    model = RelevanceModel(n_factors=4, seed=0)
    cold = Item("t9", artist="Newcomer")
    before = model.item_vector(cold).copy()  # cached while "a:Newcomer" is unknown
    model.learn_one("tom", Item("t1", artist="Newcomer"), 1.0, {})
    assert not np.array_equal(model.item_vector(cold), before)


def test_catalog_changes_are_picked_up():
    model = RelevanceModel(n_factors=4, seed=0)
    for _ in range(50):
        model.learn_one("tom", Item("t1", artist="A"), 1.0, {})
        model.learn_one("tom", Item("t2", artist="B"), 0.0, {})
    p_a = model.predict_one("tom", Item("t3", artist="A"), {})
    p_b = model.predict_one("tom", Item("t3", artist="B"), {})  # same id, new artist
    assert p_a > p_b


def test_scoring_by_key_equals_scoring_items_also_through_collisions_and_changes(trained):
    model, items = trained
    model = copy.deepcopy(model)
    size = 8  # a cache of 8 slots for 60 keys: most keys share a slot with others
    model._at_key = np.full(size, -1, dtype=np.int64)
    model._at_rev = np.zeros(size, dtype=np.int64)
    model._at_stamp = np.zeros(size, dtype=np.int64)
    model._at_rows = np.zeros((size, 2 + model.max_genres), dtype=np.intp)
    table = list(items)
    revisions = np.ones(len(table), dtype=np.int64)
    built: list[int] = []

    def build(keys: list[int]) -> tuple[list[str], list[str], list[tuple[str, ...]]]:
        built.extend(keys)
        return (
            [table[k].item_id for k in keys],
            [table[k].artist for k in keys],
            [table[k].genres for k in keys],
        )

    rng = np.random.default_rng(3)
    for step in range(30):
        keys = rng.choice(len(table), size=20, replace=False)
        got, vectors = model.predict_at_with_vectors("u3", CTX, keys, revisions[keys], build)
        want, want_vectors = model.predict_many_with_vectors("u3", [table[k] for k in keys], CTX)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(vectors, want_vectors)
        if step == 10:
            # an item's artist changes in the catalog, and so does its revision
            table[int(keys[0])] = Item(table[int(keys[0])].item_id, artist="ar1", genres=("g0",))
            revisions[int(keys[0])] = 2
    # the same keys again: answered from the cache, nothing built
    keys = np.arange(4)
    model.predict_at_with_vectors("u3", CTX, keys, revisions[keys], build)
    built.clear()
    model.predict_at_with_vectors("u3", CTX, keys, revisions[keys], build)
    assert built == []


def test_scoring_by_key_sees_a_feature_learned_after_it_was_cached():
    model = RelevanceModel(n_factors=4, seed=0)
    cold = Item("t9", artist="Newcomer")
    keys, revisions = np.array([5]), np.array([1])

    def columns(_: list[int]) -> tuple[list[str], list[str], list[tuple[str, ...]]]:
        return [cold.item_id], [cold.artist], [cold.genres]

    before = model.predict_at_with_vectors("tom", {}, keys, revisions, columns)[1]
    model.learn_one("tom", Item("t1", artist="Newcomer"), 1.0, {})
    after = model.predict_at_with_vectors("tom", {}, keys, revisions, columns)[1]
    np.testing.assert_array_equal(model.item_vectors_of(columns([5])), after)
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, model.item_vectors([cold]))


@pytest.mark.parametrize(
    ("reward", "w", "match"),
    [(1.5, 1.0, "reward"), (-0.1, 1.0, "reward"), (1.0, -1.0, "w must"), (1.0, np.nan, "w must")],
)
def test_invalid_inputs_are_rejected(reward, w, match):
    with pytest.raises(ValueError, match=match):
        RelevanceModel().learn_one("tom", Item("t1"), reward, {}, w=w)


def test_encode_context_rules():
    assert encode_context({"hour": 21, "weekday": 6}) == ["hour=21", "weekday=6"]
    assert encode_context({"history": 300, "balance": -3.0}) == ["balance~-2", "history~8"]
    assert encode_context({"premium": False, "x": float("nan"), "y": None}) == ["premium=false"]
    assert encode_context({"device": "ios", "hour": 3}, keys=["device"]) == ["device=ios"]


@pytest.mark.parametrize("sgd", [True, False])
def test_learn_one_returns_the_prediction_served_before_the_step(sgd):
    """Progressive validation reads learn_one's answer; it must be what predict_one said before
    learning, also when the sample brings features never seen (new listener, item, artist)."""
    from river import optim

    model = RelevanceModel(n_factors=6, seed=3)
    if not sgd:  # River's own update path (any other optimizer) keeps the contract too
        model._fm.weight_optimizer = optim.Adam(0.01)
    items = catalog(40)
    rng = np.random.default_rng(3)
    for step in range(400):
        user = f"u{int(rng.integers(30))}"
        item = items[int(rng.integers(len(items)))]
        ctx = {"device": ("ios", "web")[step % 2], "hour": int(rng.integers(24))}
        before = model.predict_one(user, item, ctx)
        w = float(rng.choice([0.0, 0.5, 1.0]))
        got = model.learn_one(user, item, float(rng.random()), ctx, w=w)
        assert got == pytest.approx(before, abs=1e-12)
