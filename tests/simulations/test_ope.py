"""Off-policy estimators against hand-computed values, a known truth, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from online.recommendation import Recommendation, RecommendedItem
from simulations.ope import (
    LoggedBanditData,
    MeanRewardModel,
    RidgeRewardModel,
    dr,
    estimate,
    evaluate,
    greedy_target,
    ips,
    policy_target,
    replay,
    snips,
    softmax_target,
)


class FixedRewardModel:
    """q(x, a) = table[a], whatever the log says (fit is a no-op)."""

    def __init__(self, table: list[float]):
        self.table = np.array(table)

    def fit(self, data: LoggedBanditData) -> FixedRewardModel:
        return self

    def predict(self, data: LoggedBanditData, actions: np.ndarray) -> np.ndarray:
        return self.table[actions]


@pytest.fixture(scope="module")
def hand_log() -> LoggedBanditData:
    return LoggedBanditData(
        actions=np.array([0, 1, 2, 0, 1, 2]),
        rewards=np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
        propensities=np.array([0.5, 0.25, 0.25, 0.5, 0.25, 0.25]),
    )


HAND_TARGET = np.array([0, 0, 2, 1, 1, 2])  # agrees with the log on rows 0, 2, 4, 5


def test_hand_table_deterministic_target(hand_log: LoggedBanditData) -> None:
    # weights pi/p on the agreeing rows: 1/0.5 = 2, then 1/0.25 = 4 three times
    # IPS   = (2*1 + 4*0 + 4*1 + 4*1) / 6 rows
    assert ips(hand_log, HAND_TARGET) == 10 / 6
    # SNIPS = 10 / (2 + 4 + 4 + 4)
    assert snips(hand_log, HAND_TARGET) == 10 / 14
    # Replay = mean reward on the 4 agreeing rows = (1 + 0 + 1 + 1) / 4
    assert replay(hand_log, HAND_TARGET) == 3 / 4
    # DR with q = [0.5, 0.25, 0.75]: direct part q[target] sums to
    # 0.5 + 0.5 + 0.75 + 0.25 + 0.25 + 0.75 = 3; corrections w * (r - q[a]) on agreeing rows:
    # 2*(1-0.5) + 4*(0-0.75) + 4*(1-0.25) + 4*(1-0.75) = 1 - 3 + 3 + 1 = 2
    assert dr(hand_log, HAND_TARGET, FixedRewardModel([0.5, 0.25, 0.75])) == 5 / 6


def test_hand_table_stochastic_target(hand_log: LoggedBanditData) -> None:
    # the same target for every row: action 0 with 1/2, action 2 with 1/2
    target = np.array([[0.5, 0.0, 0.5]])
    # pi of the logged action per row: 0.5, 0, 0.5, 0.5, 0, 0.5; w = 1, 0, 2, 1, 0, 2
    assert ips(hand_log, target) == (1 * 1 + 2 * 0 + 1 * 0 + 2 * 1) / 6
    assert snips(hand_log, target) == 3 / 6
    assert replay(hand_log, target) == (0.5 * 1 + 0.5 * 1) / 2.0
    # direct part = 0.5*0.5 + 0.5*0.75 = 0.625 per row; corrections w*(r - q[a]):
    # 1*(1-0.5) + 2*(0-0.75) + 1*(0-0.5) + 2*(1-0.75) = 0.5 - 1.5 - 0.5 + 0.5 = -1
    assert dr(hand_log, target, FixedRewardModel([0.5, 0.25, 0.75])) == (6 * 0.625 - 1) / 6


def test_one_hot_matrix_equals_action_vector(hand_log: LoggedBanditData) -> None:
    one_hot = np.eye(3)[HAND_TARGET]
    for f in (ips, snips, replay, dr):
        assert f(hand_log, one_hot) == pytest.approx(f(hand_log, HAND_TARGET), abs=1e-15)


def test_mean_reward_model_by_hand(hand_log: LoggedBanditData) -> None:
    # rewards per action: a0 -> [1, 0], a1 -> [0, 1], a2 -> [0, 1]; overall mean 1/2
    # with prior 2: (sum + 2 * 0.5) / (count + 2) = (1 + 1) / 4 = 0.5 for each
    model = MeanRewardModel(prior=2.0).fit(hand_log)
    assert model.predict(hand_log, np.array([0, 1, 2, -1, 0, 0])).tolist() == [0.5] * 6
    skewed = LoggedBanditData(np.array([0, 0, 0, 1]), np.array([1.0, 1.0, 1.0, 0.0]), np.ones(4))
    q = MeanRewardModel(prior=1.0).fit(skewed).predict(skewed, np.array([0, 1, -1, 0]))
    # mean 3/4; a0: (3 + 0.75) / 4; a1: (0 + 0.75) / 2; unknown: 0.75
    assert q.tolist() == [3.75 / 4, 0.75 / 2, 0.75, 3.75 / 4]


def _simulated_log(n: int, seed: int, *, uniform: bool) -> tuple[LoggedBanditData, np.ndarray]:
    """A contextual log with known expected rewards mu[x, a]; returns it and mu per row."""
    rng = np.random.default_rng(seed)
    n_actions, n_contexts = 4, 3
    mu = rng.uniform(0.05, 0.6, (n_contexts, n_actions))
    x = rng.integers(0, n_contexts, n)
    if uniform:
        logging = np.full((n_contexts, n_actions), 1 / n_actions)
    else:
        logging = rng.dirichlet(np.full(n_actions, 2.0), n_contexts)
    cum = logging.cumsum(axis=1)[x]
    a = (rng.random(n)[:, None] > cum).sum(axis=1)
    r = (rng.random(n) < mu[x, a]).astype(float)
    data = LoggedBanditData(a, r, logging[x, a], contexts=np.eye(n_contexts)[x])
    return data, mu[x]


def test_estimates_cover_the_true_value() -> None:
    data, mu_rows = _simulated_log(40_000, seed=3, uniform=False)
    rng = np.random.default_rng(4)
    target = softmax_target(rng.normal(size=(data.n_rows, data.n_actions)) + 3 * mu_rows, 0.5)
    truth = float((target * mu_rows).sum(axis=1).mean())
    # the expected value over contexts as sampled is the estimand; sampling noise of x is
    # part of what the bootstrap covers, so the interval must contain it
    out = estimate(data, target, ("ips", "snips", "dr"), n_boot=300, seed=0)
    for name, est in out.items():
        assert est.ci_low <= truth <= est.ci_high, (name, est, truth)
        assert abs(est.value - truth) < 0.02, (name, est.value, truth)
    ridge = estimate(data, target, ("dr",), reward_model=RidgeRewardModel(), n_boot=300)["dr"]
    assert ridge.ci_low <= truth <= ridge.ci_high


def test_replay_is_unbiased_for_uniform_logging() -> None:
    data, mu_rows = _simulated_log(40_000, seed=5, uniform=True)
    assert data.uniform_logging
    target = greedy_target(mu_rows)  # the best action in each context
    truth = float(mu_rows.max(axis=1).mean())
    est = estimate(data, target, ("replay",), n_boot=300, seed=1)["replay"]
    assert est.ci_low <= truth <= est.ci_high
    assert est.effective_n == pytest.approx(data.n_rows / 4, rel=0.05)


def test_same_seed_same_intervals_and_seed_matters(hand_log: LoggedBanditData) -> None:
    a = estimate(hand_log, HAND_TARGET, n_boot=100, seed=7)
    b = estimate(hand_log, HAND_TARGET, n_boot=100, seed=7)
    c = estimate(hand_log, HAND_TARGET, n_boot=100, seed=8)
    assert a == b
    assert a["ips"].ci_low != c["ips"].ci_low or a["ips"].ci_high != c["ips"].ci_high


def test_evaluate_by_position_table() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    positions = rng.integers(0, 3, n)
    data = LoggedBanditData(
        rng.integers(0, 5, n), (rng.random(n) < 0.1 + 0.05 * positions).astype(float),
        np.full(n, 0.2), positions=positions,
    )  # fmt: skip
    table = evaluate(data, {"uniform": np.full((1, 5), 0.2)}, n_boot=50, by_position=True)
    assert set(table["position"]) == {"all", "0", "1", "2"}
    uniform = table[(table["target"] == "uniform") & (table["estimator"] == "ips")]
    logged = table[table["estimator"] == "on_policy"]
    # the target is the logging policy: IPS equals the on-policy mean exactly, position by position
    assert uniform["value"].to_numpy() == pytest.approx(logged["value"].to_numpy(), rel=1e-12)
    per_pos = uniform.set_index("position")["n_rows"]
    assert per_pos["all"] == n == per_pos[["0", "1", "2"]].sum()


class ListPolicy:
    """Answers a fixed list per user: enough to check the adapter's bookkeeping."""

    name = "fixed"

    def __init__(self, lists: dict[str, list[str]]):
        self.lists = lists
        self.calls = 0

    def recommend(self, user_id, k, context, now, *, explore=True) -> Recommendation:
        assert explore is False
        self.calls += 1
        ids = self.lists[user_id][:k]
        return Recommendation("r", "v", tuple(RecommendedItem(i, 0.0, 1.0) for i in ids))

    def learn(self, events) -> None:
        pass


class Ranker:
    def rank(self, user_id, items, context):
        return sorted(items, reverse=True)


def test_policy_target_asks_once_per_list_and_maps_positions() -> None:
    data = LoggedBanditData(
        actions=np.array([0, 1, 2, 2]),
        rewards=np.array([1.0, 0.0, 1.0, 0.0]),
        propensities=np.full(4, 1 / 3),
        positions=np.array([0, 1, 0, 1]),
        action_ids=("a", "b", "c"),
        user_ids=np.array(["u1", "u1", "u2", "u2"], dtype=object),
        timestamps=np.array([1.0, 1.0, 2.0, 2.0]),
    )
    policy = ListPolicy({"u1": ["a", "c"], "u2": ["c", "zz"]})
    target = policy_target(data, policy)
    assert target.tolist() == [0, 2, 2, -1]  # "zz" is outside the logged action set
    assert policy.calls == 2
    # the policy agrees with the log on rows 0 and 2: IPS = (3*1 + 3*1) / 4
    assert ips(data, target) == 6 / 4
    assert policy_target(data, Ranker()).tolist() == [2, 1, 2, 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"propensities": [0.5, 0.0, 0.5]}, r"propensities must be in \(0, 1\]: row 1"),
        ({"propensities": [0.5, 1.5, 0.5]}, r"row 1 has 1.5"),
        ({"propensities": [0.5, np.nan, 0.5]}, r"propensities must be in \(0, 1\]"),
        ({"rewards": [1.0, 0.0]}, r"rewards has length 2, expected 3"),
        ({"propensities": [0.5, 0.5]}, r"propensities has length 2, expected 3"),
        ({"positions": [0, 1]}, r"positions has length 2, expected 3"),
        ({"positions": [0, -1, 0]}, r"non-negative"),
        ({"actions": [0.5, 1.0, 0.0]}, r"integer action indices"),
        ({"n_actions": 1}, r"actions must be in \[0, 1\)"),
        ({"contexts": np.zeros((2, 3))}, r"contexts must be \(n_rows, d\)"),
        ({"rewards": [1.0, np.inf, 0.0]}, r"rewards must be finite"),
    ],
)
def test_invalid_logs_raise(kwargs: dict, match: str) -> None:
    base = {"actions": [0, 1, 0], "rewards": [1.0, 0.0, 1.0], "propensities": [0.5, 0.5, 0.5]}
    base.update(kwargs)
    base = {k: np.asarray(v) if isinstance(v, list) else v for k, v in base.items()}
    with pytest.raises(ValueError, match=match):
        LoggedBanditData(**base)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (np.array([0, 1]), r"target has length 2, expected 6"),
        (np.array([0.0, 1, 0, 1, 0, 1]), r"must hold the action index"),
        (np.array([0, 1, 2, 3, 0, 1]), r"target actions must be in \[-1, 3\)"),
        (np.full((6, 2), 0.5), r"expected \(6, 3\) or \(1, 3\)"),
        (np.full((1, 3), 0.5), r"rows summing to <= 1"),
        (np.full((1, 3), -0.1), r"non-negative"),
        (np.zeros((1, 1, 3)), r"got 3-D"),
    ],
)
def test_invalid_targets_raise(hand_log: LoggedBanditData, target: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ips(hand_log, target)


def test_invalid_estimate_options(hand_log: LoggedBanditData) -> None:
    with pytest.raises(ValueError, match=r"unknown estimators \['switch'\]"):
        estimate(hand_log, HAND_TARGET, ("ips", "switch"))
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        estimate(hand_log, HAND_TARGET, alpha=1.5)
    with pytest.raises(ValueError, match="n_boot must be non-negative"):
        estimate(hand_log, HAND_TARGET, n_boot=-1)
    empty = LoggedBanditData(np.zeros(0, dtype=int), np.zeros(0), np.zeros(0), n_actions=2)
    with pytest.raises(ValueError, match="the log is empty"):
        estimate(empty, np.zeros(0, dtype=int))


def test_replay_without_agreement_is_nan(hand_log: LoggedBanditData) -> None:
    never = np.full(6, -1)
    assert np.isnan(replay(hand_log, never))
    assert np.isnan(snips(hand_log, never))
    assert ips(hand_log, never) == 0.0
