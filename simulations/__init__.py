"""Research machinery: progressive replay, off-policy evaluation and a synthetic world.

All three drive objects satisfying :class:`Policy` (the engine, or the baselines here) at
simulated event time, and return pandas DataFrames; :mod:`simulations.cli` puts them on the
command line and :mod:`simulations.report` writes CSV/Parquet tables, PNG plots and the config.
"""

from simulations.loaders import (
    INTERACTION_COLUMNS,
    catalog_from_interactions,
    iter_events,
    load_decision_log,
    load_event_log,
    load_interactions,
    load_movielens,
    load_open_bandit,
    load_table,
)
from simulations.ope import (
    ESTIMATORS,
    Estimate,
    LoggedBanditData,
    MeanRewardModel,
    RewardModel,
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
from simulations.policy import (
    BUILTIN_POLICIES,
    EngineFactory,
    Policy,
    PopularPolicy,
    RandomPolicy,
    make_policies,
)
from simulations.replay import progressive_replay, summarize_replay
from simulations.report import RunResult, write_report
from simulations.runs import load_config, run_ope, run_replay, run_simulation
from simulations.world import (
    OraclePolicy,
    World,
    WorldConfig,
    summarize_world,
    synthetic_interactions,
)

__all__ = [
    "BUILTIN_POLICIES",
    "ESTIMATORS",
    "INTERACTION_COLUMNS",
    "EngineFactory",
    "Estimate",
    "LoggedBanditData",
    "MeanRewardModel",
    "OraclePolicy",
    "Policy",
    "PopularPolicy",
    "RandomPolicy",
    "RewardModel",
    "RidgeRewardModel",
    "RunResult",
    "World",
    "WorldConfig",
    "catalog_from_interactions",
    "dr",
    "estimate",
    "evaluate",
    "greedy_target",
    "ips",
    "iter_events",
    "load_config",
    "load_decision_log",
    "load_event_log",
    "load_interactions",
    "load_movielens",
    "load_open_bandit",
    "load_table",
    "make_policies",
    "policy_target",
    "progressive_replay",
    "replay",
    "run_ope",
    "run_replay",
    "run_simulation",
    "snips",
    "softmax_target",
    "summarize_replay",
    "summarize_world",
    "synthetic_interactions",
    "write_report",
]
