"""Checks every online learner must pass, parametrized over the relevance model and the bandit.

Each learner is wrapped in a small :class:`Subject` that knows how to build it, feed it a
sample and read a vector of outputs, so the checks themselves are written once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online.bandit import BanditReranker, Candidate
from online.decay import decay_weight
from online.items import Item
from online.relevance import RelevanceModel

HOUR = 3_600.0

ROCK = Item("rock-1", artist="Rockers", genres=("rock",))
JAZZ = Item("jazz-1", artist="Jazzers", genres=("jazz",))
# Tom loves popular hits, Anna loves fresh releases.
HIT = Candidate("hit", "Big", None, relevance=0.5, popularity=5_000, age_days=800)
NEW = Candidate("new", "Small", None, relevance=0.5, popularity=2, age_days=0)


@dataclass(frozen=True)
class Subject:
    name: str
    make: Callable[[int], Any]
    samples: Callable[[int], list[tuple[Any, ...]]]
    learn: Callable[[Any, tuple[Any, ...], float], None]
    output: Callable[[Any], np.ndarray]
    tom_and_anna: Callable[[Any], None]


# ---------------------------------------------------------------- relevance model


def _relevance_samples(seed: int) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    items = [Item(f"t{i}", artist=f"ar{i % 4}", genres=(f"g{i % 3}",)) for i in range(12)]
    return [
        (
            f"u{int(rng.integers(5))}",
            items[int(rng.integers(12))],
            float(rng.choice([0.0, 0.4, 1.0])),
            {"device": "ios", "hour": int(rng.integers(24))},
        )
        for _ in range(200)
    ]


def _relevance_output(model: RelevanceModel) -> np.ndarray:
    items = [Item(f"t{i}", artist=f"ar{i % 4}", genres=(f"g{i % 3}",)) for i in range(12)]
    return np.concatenate(
        [model.predict_many(f"u{u}", [*items, ROCK, JAZZ], {"device": "ios"}) for u in range(5)]
        + [model.item_vectors(items).ravel()]
    )


def _relevance_tom_and_anna(model: RelevanceModel) -> None:
    for _ in range(300):
        model.learn_one("tom", ROCK, 1.0, {})
        model.learn_one("tom", JAZZ, 0.0, {})
        model.learn_one("anna", ROCK, 0.0, {})
        model.learn_one("anna", JAZZ, 1.0, {})
    tom_rock, tom_jazz = model.predict_many("tom", [ROCK, JAZZ], {})
    anna_rock, anna_jazz = model.predict_many("anna", [ROCK, JAZZ], {})
    assert tom_rock > 0.8 > 0.2 > tom_jazz
    assert anna_jazz > 0.8 > 0.2 > anna_rock


RELEVANCE = Subject(
    name="relevance",
    make=lambda seed: RelevanceModel(n_factors=6, seed=seed),
    samples=_relevance_samples,
    learn=lambda m, s, w: m.learn_one(*s, w=w),
    output=_relevance_output,
    tom_and_anna=_relevance_tom_and_anna,
)


# ---------------------------------------------------------------- bandit


def _bandit_samples(seed: int) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(120):
        features = {
            "rel": round(float(rng.random()), 4),
            "pop": round(float(rng.random() * 8), 4),
            "fresh": round(float(rng.random()), 4),
            "sim": round(float(rng.random()), 4),
            "pos": round(float(np.log1p(rng.integers(10))), 4),
        }
        shared = {"user": f"u{int(rng.integers(3))}", "device": "ios"}
        out.append((shared, features, float(rng.uniform(0.05, 1.0)), float(rng.random() < 0.3)))
    return out


def _bandit_output(bandit: BanditReranker) -> np.ndarray:
    probes = _bandit_samples(99)[:20]
    scores = [bandit.predict_one(shared, features) for shared, features, _, _ in probes]
    slate = bandit.rank({"user": "u1", "device": "ios"}, [HIT, NEW], 2)
    served = [e.propensity for e in slate] + [float(e.item_id == "hit") for e in slate]
    return np.array(scores + served)


def _bandit_tom_and_anna(bandit: BanditReranker) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        for user, liked in (("tom", "hit"), ("anna", "new")):
            shared = {"user": user, "hour": 20}
            (entry,) = bandit.rank(shared, [HIT, NEW], 1)
            reward = float(entry.item_id == liked and rng.random() < 0.9)
            bandit.learn_one(shared, entry.features, entry.propensity, reward)
    assert (
        bandit.rank({"user": "tom", "hour": 20}, [HIT, NEW], 1, explore=False)[0].item_id == "hit"
    )
    assert (
        bandit.rank({"user": "anna", "hour": 20}, [HIT, NEW], 1, explore=False)[0].item_id == "new"
    )


BANDIT_SUBJECTS = [
    Subject(
        name=f"bandit-{exploration}",
        make=lambda seed, exploration=exploration: BanditReranker(exploration, seed=seed),
        samples=_bandit_samples,
        learn=lambda m, s, w: m.learn_one(*s, w=w),
        output=_bandit_output,
        tom_and_anna=_bandit_tom_and_anna,
    )
    for exploration in ("epsilon", "softmax", "squarecb")
]

SUBJECTS = [RELEVANCE, *BANDIT_SUBJECTS]


@pytest.fixture(params=SUBJECTS, ids=lambda s: s.name)
def subject(request: pytest.FixtureRequest) -> Subject:
    return request.param


def trained(subject: Subject, seed: int = 0, n: int | None = None) -> Any:
    model = subject.make(seed)
    for sample in subject.samples(seed)[:n]:
        subject.learn(model, sample, 1.0)
    return model


# ---------------------------------------------------------------- the checks


def test_dump_load_gives_identical_predictions(subject: Subject, tmp_path: Path):
    model = trained(subject)
    path = tmp_path / "model.bin"
    model.dump(path)
    loaded = type(model).load(path)
    assert loaded.n_learned == model.n_learned
    np.testing.assert_array_equal(subject.output(loaded), subject.output(model))


def test_learning_continues_identically_after_dump_load(subject: Subject, tmp_path: Path):
    samples = subject.samples(1)
    a, b = samples[:60], samples[60:120]
    straight = subject.make(0)
    resumed = subject.make(0)
    for s in a:
        subject.learn(straight, s, 1.0)
        subject.learn(resumed, s, 1.0)
    resumed.dump(tmp_path / "m.bin")
    resumed = type(resumed).load(tmp_path / "m.bin")
    for s in b:
        subject.learn(straight, s, 0.7)
        subject.learn(resumed, s, 0.7)
    np.testing.assert_array_equal(subject.output(resumed), subject.output(straight))


def test_same_seed_same_output(subject: Subject):
    np.testing.assert_array_equal(
        subject.output(trained(subject, 3)), subject.output(trained(subject, 3))
    )


def test_clone_is_fresh_and_untrained(subject: Subject):
    model = trained(subject, 4)
    clone = model.clone()
    assert clone.n_learned == 0
    np.testing.assert_array_equal(subject.output(clone), subject.output(subject.make(4)))


def test_learning_does_not_mutate_its_inputs(subject: Subject):
    model = subject.make(0)
    for sample in subject.samples(5)[:30]:
        before = copy.deepcopy(sample)
        subject.learn(model, sample, 0.5)
        assert sample == before


def test_tom_and_anna(subject: Subject):
    subject.tom_and_anna(subject.make(0))


def test_zero_weight_changes_nothing(subject: Subject):
    model = trained(subject, 6, n=50)
    # Outputs that sample (the bandit's rank) consume randomness: compare with a fresh twin.
    twin = trained(subject, 6, n=50)
    for sample in subject.samples(7)[:20]:
        subject.learn(model, sample, 0.0)
    assert model.n_learned == twin.n_learned
    np.testing.assert_array_equal(subject.output(model), subject.output(twin))


def test_older_events_move_the_model_less(subject: Subject):
    watermark = 10 * HOUR
    moves = []
    for event_time in (watermark - 6 * HOUR, watermark - HOUR, watermark):
        w = decay_weight(event_time, watermark, half_life_s=HOUR)
        model = trained(subject, 8, n=40)
        before = subject.output(trained(subject, 8, n=40))
        for sample in subject.samples(9)[:5]:
            subject.learn(model, sample, w)
        moves.append(float(np.abs(subject.output(model) - before).max()))
    assert 0.0 < moves[0] < moves[1] < moves[2]
