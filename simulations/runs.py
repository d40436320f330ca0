"""The three simulation runs as plain functions: a config in, DataFrames out.

The CLI (:mod:`simulations.cli`) is a thin layer over these; notebooks call them directly::

    result = run_simulation({"n_steps": 500, "world": {"n_users": 50}})
    result.summary            # one row per policy

A config is a plain mapping (from TOML or JSON, see :func:`load_config`); missing keys take
the defaults in :data:`REPLAY_DEFAULTS`, :data:`SIMULATE_DEFAULTS` and :data:`OPE_DEFAULTS`.
:func:`resolve_config` returns the complete config actually used, which the report saves.

A replay's ``jobs`` is the number of worker processes its policies are spread over (1, in this
process, by default; :func:`default_replay_jobs` is what ``segue replay`` uses). It changes how
long a replay takes, never its result.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulations.loaders import (
    catalog_from_interactions,
    load_decision_log,
    load_interactions,
    load_open_bandit,
)
from simulations.ope import (
    LoggedBanditData,
    MeanRewardModel,
    RewardModel,
    RidgeRewardModel,
    evaluate,
)
from simulations.policy import EngineFactory, make_policies
from simulations.replay import BASELINES, progressive_replay
from simulations.report import RunResult
from simulations.world import World, WorldConfig

__all__ = [
    "OPE_DEFAULTS",
    "REPLAY_DEFAULTS",
    "SIMULATE_DEFAULTS",
    "default_replay_jobs",
    "load_config",
    "resolve_config",
    "run_ope",
    "run_replay",
    "run_simulation",
    "usable_cpus",
]

REPLAY_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "k": 10,
    "policies": ["random", "popular"],
    "policy_options": {},
    "eval_every": 1,
    "max_events": None,
    "rating_threshold": None,
    "columns": None,
    "jobs": 1,
}

SIMULATE_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "k": 10,
    "n_steps": 5000,
    "policies": ["random", "popular", "oracle"],
    "policy_options": {"popular": {"half_life": 3600.0}},
    "explore": True,
    "world": {},
}

OPE_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "format": "auto",
    "targets": ["uniform", "popular"],
    "estimators": ["replay", "ips", "snips", "dr"],
    "reward_model": "mean",
    "n_boot": 200,
    "alpha": 0.05,
    "train_fraction": 0.5,
    "by_position": True,
    "max_weight": None,
}


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if count is not None:
        n = count()
    elif hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
    else:
        n = os.cpu_count()
    return max(1, n or 1)


def default_replay_jobs(policies: Iterable[str]) -> int:
    """One worker process per usable CPU, but no more than the replay has policies (the
    named ones and the random and popular baselines): an extra worker would have nothing to do.

    >>> 1 <= default_replay_jobs(["random", "popular", "segue"]) <= 3
    True
    """
    return max(1, min(usable_cpus(), len({*BASELINES, *policies})))


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON config file; ``None`` gives ``{}``."""
    if path is None:
        return {}
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"config must be .toml or .json, got {path.name}")
    text = path.read_text()
    return tomllib.loads(text) if path.suffix == ".toml" else dict(json.loads(text))


def resolve_config(defaults: Mapping[str, Any], *layers: Mapping[str, Any] | None) -> dict:
    """``defaults`` overridden by each layer in turn (``None`` values do not override).

    >>> resolve_config({"k": 10, "seed": 0}, {"k": 5}, {"seed": None})
    {'k': 5, 'seed': 0}
    """
    out = dict(defaults)
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in defaults:
                raise ValueError(f"unknown config key {key!r}; known: {', '.join(defaults)}")
            if value is not None:
                out[key] = value
    return out


def run_replay(
    path: str | Path,
    config: Mapping[str, Any] | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    progress: bool = False,
) -> RunResult:
    """Progressive replay of an interaction file through the configured policies.

    Policies are built by name (in each worker process when ``jobs > 1``, so
    ``engine_factory`` must then be a module-level function).
    """
    cfg = resolve_config(REPLAY_DEFAULTS, config)
    df = load_interactions(path, cfg["columns"], rating_threshold=cfg["rating_threshold"])
    if cfg["max_events"] is not None:
        df = df.iloc[: int(cfg["max_events"])]
    return progressive_replay(
        df,
        list(cfg["policies"]),
        k=cfg["k"],
        eval_every=cfg["eval_every"],
        catalog=catalog_from_interactions(df),
        seed=cfg["seed"],
        progress=progress,
        engine_factory=engine_factory,
        policy_options=cfg["policy_options"],
        jobs=int(cfg["jobs"]),
    )


def run_simulation(
    config: Mapping[str, Any] | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    progress: bool = False,
) -> RunResult:
    """The synthetic world, every configured policy from the same start; exact regret.

    ``config["world"]`` holds :class:`~simulations.world.WorldConfig` fields; its ``seed``
    defaults to the run's ``seed``.
    """
    cfg = resolve_config(SIMULATE_DEFAULTS, config)
    world_cfg = WorldConfig(**{"seed": cfg["seed"], **cfg["world"]})
    world = World(world_cfg)
    policies = make_policies(
        cfg["policies"],
        world.catalog(),
        cfg["seed"],
        engine_factory,
        world=world,
        options=cfg["policy_options"],
    )
    return world.compare(
        policies, cfg["n_steps"], cfg["k"], explore=cfg["explore"], progress=progress
    )


def _load_bandit(path: Path, fmt: str) -> LoggedBanditData:
    if fmt == "auto":
        fmt = "decisions" if path.suffix in (".jsonl", ".ndjson") else "obd"
    if fmt == "obd":
        return load_open_bandit(path)
    if fmt == "decisions":
        return load_decision_log(path)
    raise ValueError(f"unknown OPE format {fmt!r}: expected auto, obd or decisions")


def _popular_target(train: LoggedBanditData, test: LoggedBanditData) -> np.ndarray:
    """Deterministic: at each position, the action with the most rewards in ``train``."""
    n_pos = max(train.n_positions, test.n_positions)
    key = train.positions * train.n_actions + train.actions  # type: ignore[operator]
    clicks = np.bincount(key, weights=train.rewards, minlength=n_pos * train.n_actions)
    best = clicks.reshape(n_pos, train.n_actions).argmax(axis=1)
    return best[test.positions].astype(np.int64)


def run_ope(
    path: str | Path,
    config: Mapping[str, Any] | None = None,
    *,
    extra_targets: Mapping[str, Any] | None = None,
) -> RunResult:
    """Off-policy estimates with bootstrap CIs for the configured target policies.

    The log is split in time: targets that learn (``popular``: the most rewarded action per
    position) learn on the first ``train_fraction``, and every estimate is computed on the
    rest. ``uniform`` is the uniformly random policy. ``extra_targets`` maps a name to a
    callable ``(train, test) -> target`` (see :mod:`simulations.ope` for target shapes), e.g.
    ``lambda train, test: policy_target(test, engine)``. ``steps`` holds every estimate
    (per position too, with ``by_position``); ``summary`` the whole-log estimates.
    """
    cfg = resolve_config(OPE_DEFAULTS, config)
    data = _load_bandit(Path(path), cfg["format"])
    cut = round(data.n_rows * float(cfg["train_fraction"]))
    train, test = data.take(np.arange(cut)), data.take(np.arange(cut, data.n_rows))
    if test.n_rows == 0:
        raise ValueError("nothing left to evaluate: lower train_fraction")
    targets: dict[str, Any] = {}
    for name in cfg["targets"]:
        if name == "uniform":
            targets[name] = np.full((1, data.n_actions), 1.0 / data.n_actions)
        elif name == "popular":
            if train.n_rows == 0:
                raise ValueError("the 'popular' target needs train_fraction > 0")
            targets[name] = _popular_target(train, test)
        else:
            raise ValueError(f"unknown OPE target {name!r}: built-in targets are uniform, popular")
    for name, build in (extra_targets or {}).items():
        targets[name] = build(train, test)
    models: dict[str, Callable[[], RewardModel]] = {
        "mean": MeanRewardModel,
        "ridge": RidgeRewardModel,
    }
    if cfg["reward_model"] not in models:
        raise ValueError(f"unknown reward_model {cfg['reward_model']!r}: expected mean or ridge")
    table = evaluate(
        test,
        targets,
        cfg["estimators"],
        reward_model=models[cfg["reward_model"]](),
        n_boot=int(cfg["n_boot"]),
        alpha=float(cfg["alpha"]),
        seed=int(cfg["seed"]),
        max_weight=cfg["max_weight"],
        by_position=bool(cfg["by_position"]),
    )
    summary = table[table["position"] == "all"].drop(columns="position").reset_index(drop=True)
    return RunResult(steps=table, summary=pd.DataFrame(summary))
