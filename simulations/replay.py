"""Progressive (prequential) replay: score each logged play before learning it.

Events are replayed in time order. Before a ``play`` is learned, every policy is asked for a
list of ``k`` items for that listener at that (event) time, and the played item is scored:

- ``hit``  = 1 when it is in the list (hit rate @ k);
- ``ndcg`` = ``1 / log2(rank + 2)`` when it is at 0-based ``rank < k``, else 0 (one relevant
  item, so the ideal DCG is 1);
- ``mrr``  = ``1 / (rank + 1)`` when in the list, else 0 (MRR @ k).

Then every policy learns the event (skips are learned but not scored). The logged play is
organic, not a reaction to any policy's list, so no impressions are generated and lists are
asked for without exploration (``explore=False``; it would only cost hits here).

``eval_every=n`` scores only every n-th play (all events are still learned), which keeps long
replays of a slow policy affordable; metrics are then averages over that systematic sample.
Random and popularity baselines are always included, so every table has its reference rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from feedback.events import Event
from online.items import Item
from simulations.loaders import catalog_from_interactions, iter_events
from simulations.policy import Policy, PopularPolicy, RandomPolicy
from simulations.report import RunResult, progress_bar

__all__ = ["progressive_replay", "summarize_replay"]


def progressive_replay(
    interactions: pd.DataFrame | Sequence[Event],
    policies: Mapping[str, Policy] | Sequence[Policy] = (),
    *,
    k: int = 10,
    eval_every: int = 1,
    max_events: int | None = None,
    catalog: Sequence[Item] | None = None,
    seed: int = 0,
    baselines: bool = True,
    progress: bool = False,
) -> RunResult:
    """Replay ``interactions`` through every policy; per-step scores and a summary.

    ``interactions`` is a DataFrame from :mod:`simulations.loaders` (or events in time order).
    ``policies`` learn as they go (pass fresh ones). Unless ``baselines=False``, a
    ``RandomPolicy`` and a ``PopularPolicy`` over ``catalog`` (default: every item of the log,
    released at its first interaction) are added when no policy has those names.

    >>> import pandas as pd
    >>> log = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "item_id": ["x", "x", "y", "x"],
    ...                     "timestamp": [1.0, 2.0, 3.0, 4.0], "type": "play"})
    >>> result = progressive_replay(log, k=1)
    >>> result.summary[["policy", "evaluated", "hit"]].values.tolist()
    [['random', 4, 0.75], ['popular', 4, 0.75]]
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be at least 1, got {eval_every}")
    if isinstance(interactions, pd.DataFrame):
        df = interactions.iloc[:max_events] if max_events is not None else interactions
        if not df["timestamp"].is_monotonic_increasing:
            df = df.sort_values("timestamp", kind="stable")
        events: Sequence[Event] = list(iter_events(df))
    else:
        events = list(interactions)[:max_events]
        df = pd.DataFrame({"item_id": [e.item_id for e in events],
                           "timestamp": [e.timestamp for e in events]})  # fmt: skip
    named: dict[str, Policy] = (
        dict(policies) if isinstance(policies, Mapping) else {p.name: p for p in policies}
    )
    if baselines:
        items = list(catalog) if catalog is not None else catalog_from_interactions(df)
        base: dict[str, Policy] = {}
        if "random" not in named:
            base["random"] = RandomPolicy(items, seed)
        if "popular" not in named:
            base["popular"] = PopularPolicy(items)
        named = {**base, **named}
    names = list(named)
    pols = list(named.values())

    cols: dict[str, list] = {c: [] for c in ("step", "event", "timestamp", "user_id", "item_id",
                                             "policy", "rank")}  # fmt: skip
    n_plays = 0
    for i, ev in enumerate(progress_bar(events, progress, desc="replay", total=len(events))):
        if ev.type == "play":
            if n_plays % eval_every == 0:
                for name, policy in zip(names, pols, strict=True):
                    rec = policy.recommend(ev.user_id, k, ev.context, ev.timestamp, explore=False)
                    ids = rec.item_ids[:k]
                    rank = ids.index(ev.item_id) if ev.item_id in ids else -1
                    cols["step"].append(n_plays)
                    cols["event"].append(i)
                    cols["timestamp"].append(ev.timestamp)
                    cols["user_id"].append(ev.user_id)
                    cols["item_id"].append(ev.item_id)
                    cols["policy"].append(name)
                    cols["rank"].append(rank)
            n_plays += 1
        batch = [ev]
        for policy in pols:
            policy.learn(batch)
    steps = pd.DataFrame(cols)
    rank = steps["rank"].to_numpy()
    hit = rank >= 0
    steps["hit"] = hit.astype(float)
    steps["ndcg"] = np.where(hit, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
    steps["mrr"] = np.where(hit, 1.0 / (np.maximum(rank, 0) + 1.0), 0.0)
    return RunResult(steps=steps, summary=summarize_replay(steps, k))


def summarize_replay(steps: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
    """One row per policy: scored plays, hit@k, NDCG@k, MRR@k and a 95% normal CI on hit."""
    g = steps.groupby("policy", sort=False)
    summary = pd.DataFrame(
        {
            "evaluated": g["hit"].count(),
            "hit": g["hit"].mean(),
            "ndcg": g["ndcg"].mean(),
            "mrr": g["mrr"].mean(),
        }
    )
    n = summary["evaluated"].clip(lower=1)
    summary["hit_ci95"] = 1.96 * np.sqrt(summary["hit"] * (1 - summary["hit"]) / n)
    summary = summary.reset_index()
    if k is not None:
        summary.insert(1, "k", k)
    return summary
