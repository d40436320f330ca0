"""The relevance model's fused update is River's update, bit for bit."""

from __future__ import annotations

import numpy as np

from online.items import Item
from online.relevance import RelevanceModel, _VectorFM


def test_fused_learn_one_leaves_exactly_rivers_state():
    fast, river = RelevanceModel(n_factors=8, seed=3), RelevanceModel(n_factors=8, seed=3)
    plain = river._fm
    plain._learn_one = lambda x, y, w=1.0: super(_VectorFM, plain)._learn_one(x, y, w=w)  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    for _ in range(500):
        item = Item(f"t{rng.integers(50)}", artist=f"a{rng.integers(10)}", genres=("g1", "g2"))
        args = (f"u{rng.integers(20)}", item, float(rng.random()), {"hour": int(rng.integers(3))})
        w = float(rng.random())
        fast.learn_one(*args, w)
        river.learn_one(*args, w)
    assert fast._fm.latents.keys() == plain.latents.keys()
    for key in plain.latents:
        np.testing.assert_array_equal(fast._fm.latents[key], plain.latents[key])
    assert dict(fast._fm.weights) == dict(plain.weights)
    assert fast._fm.intercept == plain.intercept
    assert fast._fm.latent_optimizer.n_iterations == plain.latent_optimizer.n_iterations
    items = [Item(f"t{i}", artist=f"a{i % 10}", genres=("g1",)) for i in range(50)]
    probe = {"hour": 1}
    np.testing.assert_array_equal(
        fast.predict_many("u1", items, probe), river.predict_many("u1", items, probe)
    )
