"""Off-policy evaluation of logged bandit feedback: Replay, IPS, SNIPS and doubly robust.

A log row is ``(context x_i, action a_i, reward r_i, propensity p_i)``, where ``p_i`` is the
probability the logging policy had of taking ``a_i`` (segue's decision log stores it for every
placed item; the Open Bandit Dataset ships it as ``propensity_score``). A slate is evaluated
position-wise, as is standard on that data set: each (list, position) row is its own context,
and ``p_i`` is the probability of placing ``a_i`` at that position.

A target policy is given, per row, in one of two forms:

- an integer array of shape ``(n,)``: the action a deterministic target takes on each row
  (``-1``: an action outside the logged action set). This is the memory-light one-hot;
- a float array of shape ``(n, n_actions)`` (or ``(1, n_actions)``, shared by every row):
  the target's action probabilities.

With ``pi_i`` the target's probability of the logged action and ``w_i = pi_i / p_i``:

- Replay (Li et al. 2011): ``sum(pi_i r_i) / sum(pi_i)``: the mean reward over rows where the
  target agrees with the log. Unbiased only when the log is uniformly random;
- IPS: ``mean(w_i r_i)``; SNIPS: ``sum(w_i r_i) / sum(w_i)``;
- DR: ``mean(sum_a pi(a|x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)))`` with a reward model ``q``
  fitted on the log (:class:`MeanRewardModel` by default; any :class:`RewardModel` plugs in).

Confidence intervals are percentile bootstraps over log rows (the reward model is fitted once,
not per resample, as is usual). All estimators share the same resamples, so the intervals of
one run are comparable. Everything is vectorized: a million rows evaluate in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "LoggedBanditData",
    "MeanRewardModel",
    "RewardModel",
    "RidgeRewardModel",
    "dr",
    "estimate",
    "evaluate",
    "greedy_target",
    "ips",
    "policy_target",
    "replay",
    "snips",
    "softmax_target",
]

ESTIMATORS: tuple[str, ...] = ("replay", "ips", "snips", "dr")


@dataclass(frozen=True, eq=False)
class LoggedBanditData:
    """Logged bandit feedback as numpy arrays, one entry per (list, position) row.

    ``actions`` index ``action_ids`` (or ``range(n_actions)``); ``positions`` are 0-based
    (all 0 when omitted); ``contexts`` is ``(n, d)``; ``action_features`` is
    ``(n_actions, f)``. ``user_ids``, ``timestamps`` and ``raw_contexts`` (one mapping per row)
    are optional and only used to ask a policy for its list (:func:`policy_target`).
    Construction validates shapes and propensities and raises ``ValueError`` naming the field.
    """

    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    positions: np.ndarray | None = None
    contexts: np.ndarray | None = None
    action_features: np.ndarray | None = None
    n_actions: int = 0
    action_ids: tuple[str, ...] | None = None
    context_names: tuple[str, ...] = ()
    user_ids: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    raw_contexts: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        actions = np.asarray(self.actions)
        if actions.ndim != 1 or (actions.size and actions.dtype.kind not in "iu"):
            raise ValueError("actions must be a 1-D array of integer action indices")
        n = len(actions)
        put("actions", actions.astype(np.int64))
        rewards = np.asarray(self.rewards, dtype=float)
        props = np.asarray(self.propensities, dtype=float)
        for name, arr in (("rewards", rewards), ("propensities", props)):
            if arr.shape != (n,):
                raise ValueError(f"{name} has length {len(arr)}, expected {n} (one per action)")
        if not np.isfinite(rewards).all():
            raise ValueError("rewards must be finite")
        bad = ~((props > 0.0) & (props <= 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"propensities must be in (0, 1]: row {i} has {float(props[i])} "
                f"({int(bad.sum())} bad rows)"
            )
        put("rewards", rewards)
        put("propensities", props)
        positions = np.zeros(n, np.int64) if self.positions is None else np.asarray(self.positions)
        if positions.shape != (n,):
            raise ValueError(f"positions has length {len(positions)}, expected {n}")
        if n and (positions.dtype.kind not in "iu" or positions.min() < 0):
            raise ValueError("positions must be non-negative integers (0-based)")
        put("positions", positions.astype(np.int64))
        n_actions = self.n_actions
        if self.action_ids is not None:
            put("action_ids", tuple(str(a) for a in self.action_ids))
            n_actions = n_actions or len(self.action_ids)
            if len(self.action_ids) != n_actions:
                raise ValueError("action_ids must have n_actions entries")
        n_actions = n_actions or (int(actions.max()) + 1 if n else 0)
        if n and (actions.min() < 0 or actions.max() >= n_actions):
            raise ValueError(f"actions must be in [0, {n_actions}), the logged action set")
        put("n_actions", int(n_actions))
        if self.contexts is not None:
            contexts = np.asarray(self.contexts, dtype=float)
            if contexts.ndim != 2 or len(contexts) != n:
                raise ValueError(f"contexts must be (n_rows, d) = ({n}, d), got {contexts.shape}")
            if self.context_names and len(self.context_names) != contexts.shape[1]:
                raise ValueError("context_names must name every context column")
            put("contexts", contexts)
        if self.action_features is not None:
            feats = np.asarray(self.action_features, dtype=float)
            if feats.ndim != 2 or len(feats) != n_actions:
                raise ValueError(
                    f"action_features must be (n_actions, f) = ({n_actions}, f), got {feats.shape}"
                )
            put("action_features", feats)
        put("context_names", tuple(self.context_names))
        for name in ("user_ids", "timestamps", "raw_contexts"):
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(value, dtype=float if name == "timestamps" else object)
                if len(arr) != n:
                    raise ValueError(f"{name} has length {len(arr)}, expected {n}")
                put(name, arr)

    @property
    def n_rows(self) -> int:
        return len(self.actions)

    @property
    def n_positions(self) -> int:
        return int(self.positions.max()) + 1 if self.n_rows else 0  # type: ignore[union-attr]

    @property
    def uniform_logging(self) -> bool:
        """Whether every propensity is ``1 / n_actions`` (where Replay is unbiased)."""
        return bool(np.allclose(self.propensities, 1.0 / max(self.n_actions, 1)))

    def take(self, rows: np.ndarray) -> LoggedBanditData:
        """The log restricted to ``rows`` (indices or a boolean mask); actions keep their ids."""
        per_row = {"actions", "rewards", "propensities", "positions", "contexts", "user_ids",
                   "timestamps", "raw_contexts"}  # fmt: skip
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in per_row and value is not None:
                changes[f.name] = value[rows]
        return replace(self, **changes)


# --------------------------------------------------------------------------- reward models


class RewardModel(Protocol):
    """The direct model of DR: an estimate of the expected reward ``q(x_i, a)``."""

    def fit(self, data: LoggedBanditData) -> RewardModel: ...

    def predict(self, data: LoggedBanditData, actions: np.ndarray) -> np.ndarray:
        """``q(x_i, actions[i])`` for every row ``i`` of ``data`` (``-1``: unknown action)."""
        ...


class MeanRewardModel:
    """Mean logged reward per (position, action), shrunk toward the position's mean.

    ``q(pos, a) = (sum of rewards + prior * m_pos) / (count + prior)``, ``m_pos`` the mean
    reward at that position (the overall mean when ``by_position=False``). An action never
    logged (or ``-1``) gets ``m_pos``. Contexts are ignored.

    >>> data = LoggedBanditData(np.array([0, 0, 1]), np.array([1.0, 0.0, 1.0]), np.full(3, 0.5))
    >>> MeanRewardModel(prior=0.0).fit(data).predict(data, np.array([0, 1, -1])).tolist()
    [0.5, 1.0, 0.6666666666666666]
    """

    def __init__(self, *, by_position: bool = True, prior: float = 1.0):
        if prior < 0:
            raise ValueError(f"prior must be non-negative, got {prior}")
        self.by_position = by_position
        self.prior = prior
        self._table = np.zeros((1, 1))
        self._base = np.zeros(1)

    def fit(self, data: LoggedBanditData) -> MeanRewardModel:
        n_pos = data.n_positions if self.by_position else 1
        pos = data.positions if self.by_position else np.zeros(data.n_rows, np.int64)
        assert pos is not None
        n_a = max(data.n_actions, 1)
        key = pos * n_a + data.actions
        total = np.bincount(key, weights=data.rewards, minlength=n_pos * n_a).reshape(n_pos, n_a)
        count = np.bincount(key, minlength=n_pos * n_a).reshape(n_pos, n_a).astype(float)
        base = total.sum(axis=1) / np.maximum(count.sum(axis=1), 1.0)
        prior = self.prior
        with np.errstate(invalid="ignore", divide="ignore"):
            table = (total + prior * base[:, None]) / (count + prior)
        self._table = np.where(count + prior > 0, table, base[:, None])
        self._base = base
        return self

    def predict(self, data: LoggedBanditData, actions: np.ndarray) -> np.ndarray:
        n_pos = len(self._base)
        positions = np.asarray(data.positions)
        pos = np.minimum(positions, n_pos - 1) if self.by_position else np.zeros_like(positions)
        pos = np.broadcast_to(pos, actions.shape)
        known = (actions >= 0) & (actions < self._table.shape[1])
        out = self._base[pos].copy()
        out[known] = self._table[pos[known], actions[known]]
        return out

    def expected_under(self, data: LoggedBanditData, probabilities: np.ndarray) -> np.ndarray:
        """``sum_a probabilities[i, a] q(x_i, a)`` per row, without a per-action pass."""
        n_a = self._table.shape[1]
        probs = probabilities[:, :n_a]
        pos = data.positions if self.by_position else np.zeros(data.n_rows, np.int64)
        assert pos is not None
        pos = np.minimum(pos, len(self._base) - 1)
        missing = probabilities.sum(axis=1) - probs.sum(axis=1)  # mass on unseen actions
        if probs.shape[0] == 1:
            return (self._table @ probs[0])[pos] + missing[0] * self._base[pos]
        out = np.empty(data.n_rows)
        for start in range(0, data.n_rows, 50_000):
            rows = slice(start, start + 50_000)
            out[rows] = np.einsum("ij,ij->i", probs[rows], self._table[pos[rows]])
        return out + missing * self._base[pos]


class RidgeRewardModel:
    """Ridge regression on ``[1, context, action features, one-hot position]``.

    Action identity only enters through ``action_features`` (an unknown action, ``-1``, gets
    zeros there), so use :class:`MeanRewardModel` for logs without item features. The normal
    equations are accumulated in chunks, so memory stays flat on large logs.
    """

    def __init__(self, *, alpha: float = 1.0, chunk: int = 200_000):
        self.alpha = alpha
        self.chunk = chunk
        self._coef = np.zeros(1)
        self._n_pos = 1

    def _design(self, data: LoggedBanditData, actions: np.ndarray, rows: slice) -> np.ndarray:
        a = actions[rows]
        n = len(a)
        parts = [np.ones((n, 1))]
        if data.contexts is not None:
            parts.append(data.contexts[rows])
        if data.action_features is not None:
            feats = np.zeros((n, data.action_features.shape[1]))
            ok = a >= 0
            feats[ok] = data.action_features[a[ok]]
            parts.append(feats)
        onehot = np.zeros((n, self._n_pos))
        onehot[np.arange(n), np.minimum(data.positions[rows], self._n_pos - 1)] = 1.0  # type: ignore[index]
        parts.append(onehot[:, 1:])
        return np.hstack(parts)

    def fit(self, data: LoggedBanditData) -> RidgeRewardModel:
        self._n_pos = max(data.n_positions, 1)
        xtx: np.ndarray | None = None
        xty: np.ndarray | None = None
        for start in range(0, data.n_rows, self.chunk):
            rows = slice(start, start + self.chunk)
            x = self._design(data, data.actions, rows)
            xtx = x.T @ x if xtx is None else xtx + x.T @ x
            xty = x.T @ data.rewards[rows] if xty is None else xty + x.T @ data.rewards[rows]
        if xtx is None or xty is None:
            raise ValueError("cannot fit a reward model on an empty log")
        penalty = self.alpha * np.eye(len(xtx))
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        self._coef = np.linalg.solve(xtx + penalty, xty)
        return self

    def predict(self, data: LoggedBanditData, actions: np.ndarray) -> np.ndarray:
        out = np.empty(data.n_rows)
        for start in range(0, data.n_rows, self.chunk):
            rows = slice(start, start + self.chunk)
            out[rows] = self._design(data, actions, rows) @ self._coef
        return out


# --------------------------------------------------------------------------- targets


def _check_target(data: LoggedBanditData, target: np.ndarray) -> np.ndarray:
    target = np.asarray(target)
    n = data.n_rows
    if target.ndim == 1:
        if target.dtype.kind not in "iu":
            raise ValueError(
                "a 1-D target must hold the action index the target takes on each row "
                "(integers); pass probabilities as a 2-D (n_rows, n_actions) array"
            )
        if len(target) != n:
            raise ValueError(f"target has length {len(target)}, expected {n} (one per log row)")
        if len(target) and (target.min() < -1 or target.max() >= data.n_actions):
            raise ValueError(f"target actions must be in [-1, {data.n_actions})")
        return target.astype(np.int64)
    if target.ndim == 2:
        if target.shape[0] not in (1, n) or target.shape[1] != data.n_actions:
            raise ValueError(
                f"target probabilities have shape {target.shape}, expected "
                f"({n}, {data.n_actions}) or (1, {data.n_actions})"
            )
        target = target.astype(float)
        if (target < 0).any() or (target.sum(axis=1) > 1.0 + 1e-6).any():
            raise ValueError("target probabilities must be non-negative with rows summing to <= 1")
        return target
    raise ValueError(f"target must be 1-D actions or 2-D probabilities, got {target.ndim}-D")


def _pi_logged(data: LoggedBanditData, target: np.ndarray) -> np.ndarray:
    """The target's probability of the logged action on each row."""
    if target.ndim == 1:
        return (target == data.actions).astype(float)
    if target.shape[0] == 1:
        return target[0, data.actions]
    return target[np.arange(data.n_rows), data.actions]


def _direct(data: LoggedBanditData, target: np.ndarray, model: RewardModel) -> np.ndarray:
    """``sum_a pi(a | x_i) q(x_i, a)`` on every row."""
    if target.ndim == 1:
        return model.predict(data, target)
    expected_under = getattr(model, "expected_under", None)
    if expected_under is not None:
        return np.asarray(expected_under(data, target), dtype=float)
    out = np.zeros(data.n_rows)
    for a in np.flatnonzero(target.max(axis=0) > 0):
        out += target[:, a] * model.predict(data, np.full(data.n_rows, a, dtype=np.int64))
    return out


def greedy_target(scores: np.ndarray) -> np.ndarray:
    """The deterministic target that takes the best-scored action on each row.

    >>> greedy_target(np.array([[0.1, 0.9], [0.7, 0.2]])).tolist()
    [1, 0]
    """
    return np.asarray(scores).argmax(axis=1).astype(np.int64)


def softmax_target(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Action probabilities ``softmax(scores / temperature)`` on each row."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = np.asarray(scores, dtype=float) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def policy_target(data: LoggedBanditData, policy: Any, *, k: int | None = None) -> np.ndarray:
    """The action a policy object takes on each logged row, as a deterministic target.

    Rows sharing ``(user_id, timestamp)`` are one served list: the object is asked once per
    list and the item at each row's position is its action (``-1`` when it is not in the logged
    action set, or the list is shorter). Two shapes are understood:

    - ``recommend(user_id, k, context, now, *, explore=False) -> Recommendation`` (a
      :class:`~simulations.policy.Policy`, e.g. the engine restored from a snapshot), asked
      without exploration so its answer is deterministic;
    - ``rank(user_id, items, context) -> ordered item ids`` over the logged action set (a
      reranker).

    The target's probability of the logged action is then 1 where they agree, 0 elsewhere.
    """
    if data.action_ids is None:
        ids = tuple(str(a) for a in range(data.n_actions))
    else:
        ids = data.action_ids
    index = {a: j for j, a in enumerate(ids)}
    n = data.n_rows
    users = data.user_ids if data.user_ids is not None else np.array([""] * n, dtype=object)
    times = data.timestamps if data.timestamps is not None else np.arange(n, dtype=float)
    group = pd.DataFrame({"u": users, "t": times}).groupby(["u", "t"], sort=False).ngroup()
    group_arr = group.to_numpy()
    order = np.argsort(group_arr, kind="stable")
    bounds = np.flatnonzero(np.diff(group_arr[order])) + 1
    positions = data.positions
    assert positions is not None
    out = np.full(n, -1, dtype=np.int64)
    has_recommend = hasattr(policy, "recommend")
    if not has_recommend and not hasattr(policy, "rank"):
        raise TypeError("the policy needs a recommend(...) or a rank(...) method")
    for rows in np.split(order, bounds):
        if not len(rows):
            continue
        first = int(rows[0])
        user = str(users[first])
        context = _row_context(data, first)
        depth = int(positions[rows].max()) + 1 if k is None else k
        if has_recommend:
            rec = policy.recommend(user, depth, context, float(times[first]), explore=False)
            chosen = rec.item_ids
        else:
            chosen = list(policy.rank(user, list(ids), context))
        for r in rows.tolist():
            p = int(positions[r])
            if p < len(chosen):
                out[r] = index.get(str(chosen[p]), -1)
    return out


def _row_context(data: LoggedBanditData, row: int) -> dict[str, Any]:
    if data.raw_contexts is not None:
        return dict(data.raw_contexts[row] or {})
    if data.contexts is not None and data.context_names:
        return dict(zip(data.context_names, data.contexts[row].tolist(), strict=True))
    return {}


# --------------------------------------------------------------------------- estimators


def _weights(pi: np.ndarray, data: LoggedBanditData, max_weight: float | None) -> np.ndarray:
    w = pi / data.propensities
    return w if max_weight is None else np.minimum(w, max_weight)


def replay(data: LoggedBanditData, target: np.ndarray) -> float:
    """Replay (Li et al. 2011): mean reward on rows where the target agrees with the log.

    ``nan`` when the target never agrees. Unbiased for uniformly random logging only.
    """
    pi = _pi_logged(data, _check_target(data, target))
    total = pi.sum()
    return float((pi * data.rewards).sum() / total) if total > 0 else float("nan")


def ips(data: LoggedBanditData, target: np.ndarray, *, max_weight: float | None = None) -> float:
    """Inverse propensity scoring: ``mean(pi_i / p_i * r_i)``, weights clipped at ``max_weight``."""
    w = _weights(_pi_logged(data, _check_target(data, target)), data, max_weight)
    return float(np.mean(w * data.rewards))


def snips(data: LoggedBanditData, target: np.ndarray, *, max_weight: float | None = None) -> float:
    """Self-normalized IPS: ``sum(w_i r_i) / sum(w_i)``; ``nan`` when every weight is 0."""
    w = _weights(_pi_logged(data, _check_target(data, target)), data, max_weight)
    total = w.sum()
    return float((w * data.rewards).sum() / total) if total > 0 else float("nan")


def dr(
    data: LoggedBanditData,
    target: np.ndarray,
    reward_model: RewardModel | None = None,
    *,
    max_weight: float | None = None,
) -> float:
    """Doubly robust: the reward model's value of the target plus an IPS correction.

    ``reward_model`` (default :class:`MeanRewardModel`) is fitted on ``data`` here; to use a
    model trained elsewhere, pass one whose ``fit`` returns it unchanged.
    """
    target = _check_target(data, target)
    model = (reward_model or MeanRewardModel()).fit(data)
    w = _weights(_pi_logged(data, target), data, max_weight)
    q_logged = model.predict(data, data.actions)
    return float(np.mean(_direct(data, target, model) + w * (data.rewards - q_logged)))


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with its percentile bootstrap confidence interval.

    ``effective_n``: matched rows for Replay (``sum pi_i``), Kish's effective sample size
    ``(sum w)^2 / sum w^2`` for the importance-weighted estimators.
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n_rows: int
    effective_n: float


def estimate(
    data: LoggedBanditData,
    target: np.ndarray,
    estimators: Sequence[str] = ESTIMATORS,
    *,
    reward_model: RewardModel | None = None,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    max_weight: float | None = None,
) -> dict[str, Estimate]:
    """Point estimates and ``1 - alpha`` percentile bootstrap intervals, resamples shared.

    ``n_boot=0`` skips the bootstrap (intervals are ``nan``). The same ``seed`` gives the same
    intervals.

    >>> rng = np.random.default_rng(0)
    >>> log = LoggedBanditData(rng.integers(0, 4, 1000), rng.random(1000), np.full(1000, 0.25))
    >>> out = estimate(log, np.zeros(1000, dtype=int), n_boot=50, seed=1)
    >>> sorted(out), out["ips"].ci_low < out["ips"].value < out["ips"].ci_high
    (['dr', 'ips', 'replay', 'snips'], True)
    """
    results = _estimate_many(
        data, {"": target}, estimators, reward_model=reward_model, n_boot=n_boot,
        alpha=alpha, seed=seed, max_weight=max_weight, on_policy=False,
    )  # fmt: skip
    return {est.estimator: est for _, est in results}


def _estimate_many(
    data: LoggedBanditData,
    targets: Mapping[str, np.ndarray],
    estimators: Sequence[str],
    *,
    reward_model: RewardModel | None,
    n_boot: int,
    alpha: float,
    seed: int,
    max_weight: float | None,
    on_policy: bool,
) -> list[tuple[str, Estimate]]:
    """Every (target, estimator) pair on one log: one reward model fit, one bootstrap."""
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimators {unknown}: choose from {', '.join(ESTIMATORS)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be non-negative, got {n_boot}")
    n = data.n_rows
    if n == 0:
        raise ValueError("the log is empty")
    checked = {name: _check_target(data, t) for name, t in targets.items()}
    r = data.rewards
    ones = np.ones(n)
    model: RewardModel | None = None
    q_logged = np.zeros(n)
    if "dr" in estimators and checked:
        model = (reward_model or MeanRewardModel()).fit(data)
        q_logged = model.predict(data, data.actions)
    # each estimate is sum(numerator) / sum(denominator) over rows, so resamples are cheap
    keys: list[tuple[str, str, float]] = []  # (target, estimator, effective_n)
    columns: list[np.ndarray] = []
    if on_policy:
        keys.append(("logged", "on_policy", float(n)))
        columns += [r, ones]
    for name, target in checked.items():
        pi = _pi_logged(data, target)
        w = _weights(pi, data, max_weight)
        ess = float(w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0
        for est in estimators:
            if est == "replay":
                keys.append((name, est, float(pi.sum())))
                columns += [pi * r, pi]
            elif est == "ips":
                keys.append((name, est, ess))
                columns += [w * r, ones]
            elif est == "snips":
                keys.append((name, est, ess))
                columns += [w * r, w]
            else:
                assert model is not None
                keys.append((name, est, ess))
                columns += [_direct(data, target, model) + w * (r - q_logged), ones]
    matrix = np.column_stack(columns)
    sums = matrix.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = sums[0::2] / sums[1::2]
        boot = _bootstrap_sums(matrix, n_boot, seed)
        boot = boot[:, 0::2] / boot[:, 1::2]
    out: list[tuple[str, Estimate]] = []
    for j, (name, est, effective_n) in enumerate(keys):
        col = boot[:, j]
        col = col[np.isfinite(col)]
        lo, hi = np.quantile(col, [alpha / 2, 1 - alpha / 2]) if len(col) else (np.nan, np.nan)
        out.append((name, Estimate(est, float(values[j]), float(lo), float(hi), n, effective_n)))
    return out


def evaluate(
    data: LoggedBanditData,
    targets: Mapping[str, np.ndarray],
    estimators: Sequence[str] = ESTIMATORS,
    *,
    reward_model: RewardModel | None = None,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    max_weight: float | None = None,
    by_position: bool = False,
) -> pd.DataFrame:
    """Every target under every estimator: a tidy table with CIs.

    Columns: ``target, estimator, position, value, ci_low, ci_high, n_rows, effective_n``;
    ``position`` is ``"all"`` for the whole log, and with ``by_position`` each position is
    also evaluated on its own rows (its own reward model fit and resamples). A row
    ``estimator="on_policy"`` under target ``"logged"`` gives the log's own mean reward.
    All rows of one position share the same bootstrap resamples.
    """
    rows: list[dict[str, Any]] = []
    slices: list[tuple[str, LoggedBanditData, dict[str, np.ndarray]]] = [
        ("all", data, {name: np.asarray(t) for name, t in targets.items()})
    ]
    if by_position and data.n_positions > 1:
        for p in range(data.n_positions):
            mask = np.asarray(data.positions) == p
            sub_targets = {
                name: (t if (t.ndim == 2 and t.shape[0] == 1) else t[mask])
                for name, t in slices[0][2].items()
            }
            slices.append((str(p), data.take(mask), sub_targets))
    for position, sub, sub_targets in slices:
        results = _estimate_many(
            sub, sub_targets, estimators, reward_model=reward_model, n_boot=n_boot,
            alpha=alpha, seed=seed, max_weight=max_weight, on_policy=True,
        )  # fmt: skip
        for name, est in results:
            rows.append({"target": name, "position": position, **asdict(est)})
    columns = ["target", "estimator", "position", "value", "ci_low", "ci_high", "n_rows",
               "effective_n"]  # fmt: skip
    return pd.DataFrame(rows)[columns]


def _bootstrap_sums(matrix: np.ndarray, n_boot: int, seed: int, batch: int = 8) -> np.ndarray:
    """Column sums of ``n_boot`` row resamples of ``matrix``, as resample counts @ matrix."""
    n = len(matrix)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, matrix.shape[1]))
    counts = np.empty((min(batch, max(n_boot, 1)), n))
    for start in range(0, n_boot, batch):
        size = min(batch, n_boot - start)
        for b in range(size):
            counts[b] = np.bincount(rng.integers(0, n, n), minlength=n)
        out[start : start + size] = counts[:size] @ matrix
    return out
