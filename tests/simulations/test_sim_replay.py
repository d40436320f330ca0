"""Progressive replay: hand-scored metrics, learn-after-score order, baselines, seeds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from online.recommendation import Recommendation, RecommendedItem
from simulations.replay import progressive_replay
from simulations.world import synthetic_interactions


class Scripted:
    """Serves a fixed list and records the order of calls."""

    def __init__(self, name: str, items: list[str]):
        self.name = name
        self.items = items
        self.calls: list[tuple[str, str, float]] = []

    def recommend(self, user_id, k, context, now, *, explore=True):
        assert explore is False
        self.calls.append(("recommend", user_id, now))
        return Recommendation(
            f"{self.name}-{len(self.calls)}", "v",
            tuple(RecommendedItem(i, 0.0, 1.0) for i in self.items[:k]),
        )  # fmt: skip

    def learn(self, events):
        for e in events:
            self.calls.append(("learn", e.type, e.timestamp))


LOG = pd.DataFrame(
    {
        "user_id": ["a", "b", "a", "c", "b"],
        "item_id": ["x", "y", "z", "w", "x"],
        "timestamp": [1.0, 2.0, 3.0, 4.0, 5.0],
        "type": ["play", "play", "skip", "play", "play"],
    }
)


def test_metrics_by_hand() -> None:
    policy = Scripted("scripted", ["y", "x", "q"])
    result = progressive_replay(LOG, [policy], k=3, baselines=False)
    steps = result.steps
    # plays: x (rank 1), y (rank 0), w (absent), x (rank 1); the skip is not scored
    assert steps["rank"].tolist() == [1, 0, -1, 1]
    assert steps["hit"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert steps["ndcg"].tolist() == [1 / math.log2(3), 1.0, 0.0, 1 / math.log2(3)]
    assert steps["mrr"].tolist() == [0.5, 1.0, 0.0, 0.5]
    row = result.summary.iloc[0]
    assert row["hit"] == 0.75
    assert row["ndcg"] == pytest.approx((2 / math.log2(3) + 1) / 4)
    assert row["mrr"] == 0.5
    assert steps["event"].tolist() == [0, 1, 3, 4]


def test_score_before_learn_and_skips_are_learned() -> None:
    policy = Scripted("scripted", ["x"])
    progressive_replay(LOG, [policy], k=1, baselines=False)
    assert policy.calls == [
        ("recommend", "a", 1.0), ("learn", "play", 1.0),
        ("recommend", "b", 2.0), ("learn", "play", 2.0),
        ("learn", "skip", 3.0),
        ("recommend", "c", 4.0), ("learn", "play", 4.0),
        ("recommend", "b", 5.0), ("learn", "play", 5.0),
    ]  # fmt: skip


def test_eval_every_scores_a_sample_but_learns_everything() -> None:
    policy = Scripted("scripted", ["x"])
    result = progressive_replay(LOG, [policy], k=1, eval_every=2, baselines=False)
    assert result.steps["step"].tolist() == [0, 2]
    assert sum(c[0] == "learn" for c in policy.calls) == 5
    with pytest.raises(ValueError, match="eval_every must be at least 1"):
        progressive_replay(LOG, [policy], eval_every=0)
    with pytest.raises(ValueError, match="k must be at least 1"):
        progressive_replay(LOG, [policy], k=0)


def test_baselines_always_included_and_popular_beats_random() -> None:
    log = synthetic_interactions(5000, n_users=200, n_items=500, seed=1)
    result = progressive_replay(log, [Scripted("mine", ["t000000"])], k=10, seed=3)
    summary = result.summary.set_index("policy")
    assert list(summary.index) == ["random", "popular", "mine"]
    assert (summary["evaluated"] == 5000).all()
    assert summary.loc["popular", "hit"] > 3 * summary.loc["random", "hit"]


def test_same_seed_same_results() -> None:
    log = synthetic_interactions(2000, n_users=50, n_items=300, seed=2)
    a = progressive_replay(log, seed=5)
    b = progressive_replay(log, seed=5)
    c = progressive_replay(log, seed=6)
    assert a.steps.equals(b.steps) and a.summary.equals(b.summary)
    rnd = a.steps["policy"] == "random"
    assert not a.steps[rnd]["rank"].equals(c.steps[rnd]["rank"])


def test_events_input_and_max_events() -> None:
    from simulations.loaders import iter_events

    events = list(iter_events(LOG))
    result = progressive_replay(events, max_events=2, k=2)
    assert result.steps["step"].max() == 1
    assert set(result.summary["policy"]) == {"random", "popular"}


# ---------------------------------------------------------------- policies in worker processes


def test_jobs_give_the_same_table_as_one_process() -> None:
    from simulations.engine_policy import engine_factory

    log = synthetic_interactions(400, n_users=40, n_items=150, seed=4)
    names = ["random", "popular", "relevance", "segue"]

    def run(jobs: int):
        return progressive_replay(
            log, names, k=5, eval_every=2, seed=4, engine_factory=engine_factory, jobs=jobs
        )

    one, two = run(1), run(2)
    pd.testing.assert_frame_equal(one.steps, two.steps)
    pd.testing.assert_frame_equal(one.summary, two.summary)
    assert list(two.summary["policy"]) == names
    assert (two.summary["evaluated"] == 200).all()
    # the engine policies learned something: they are not the random baseline in disguise
    ranks = two.steps.groupby("policy")["rank"].apply(tuple)
    assert ranks["relevance"] != ranks["random"] and ranks["segue"] != ranks["random"]


def test_jobs_with_events_and_more_jobs_than_policies() -> None:
    from simulations.loaders import iter_events

    events = list(iter_events(synthetic_interactions(300, n_users=30, n_items=100, seed=5)))
    one = progressive_replay(events, k=3, seed=1)
    many = progressive_replay(events, k=3, seed=1, jobs=8, progress=True)
    pd.testing.assert_frame_equal(one.steps, many.steps)
    pd.testing.assert_frame_equal(one.summary, many.summary)


def test_names_build_the_same_policies_as_objects() -> None:
    from simulations.policy import PopularPolicy, RandomPolicy

    log = synthetic_interactions(500, n_users=30, n_items=100, seed=6)
    items = [f"t{i:06d}" for i in range(100)]
    options = {"popular": {"half_life": 60.0}}
    by_name = progressive_replay(
        log, ["popular", "random"], catalog=items, seed=2, policy_options=options
    )
    objects = [PopularPolicy(items, half_life=60.0), RandomPolicy(items, 2)]
    by_object = progressive_replay(log, objects, catalog=items, seed=2)
    pd.testing.assert_frame_equal(by_name.steps, by_object.steps)
    with pytest.raises(ValueError, match="'random' is listed twice"):
        progressive_replay(log, ["random", "random"])


@pytest.mark.parametrize("jobs", [0, -1])
def test_jobs_must_be_positive(jobs: int) -> None:
    with pytest.raises(ValueError, match="jobs must be a whole number of at least 1"):
        progressive_replay(LOG, jobs=jobs)


def test_jobs_need_policies_by_name_and_a_picklable_factory() -> None:
    with pytest.raises(ValueError, match="must be given by name"):
        progressive_replay(LOG, [Scripted("scripted", ["x"])], jobs=2)
    with pytest.raises(ValueError, match="must be picklable"):
        progressive_replay(
            LOG, ["mine"], engine_factory=lambda name, catalog, seed: Scripted(name, []), jobs=2
        )


def test_a_failing_worker_fails_the_replay() -> None:
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        progressive_replay(LOG, ["nope"], jobs=2)


def test_engine_policies_go_to_different_workers() -> None:
    from simulations.replay import _groups

    names = ["random", "popular", "relevance", "segue"]
    assert _groups(names, 2) == [["segue"], ["random", "popular", "relevance"]]
    assert _groups(["segue", "relevance", "random"], 2) == [["segue"], ["relevance", "random"]]
    assert sorted(map(len, _groups(names, 8))) == [1, 1, 1, 1]
    assert _groups(names, 1) == [names]
