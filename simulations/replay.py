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

Policies are independent of one another: each sees the same events in the same order, learns
only from them and is scored on the same plays. ``jobs=n`` therefore runs them in ``n`` worker
processes (the engine policies learn one event at a time, so a replay is bound by one core per
policy). Each worker receives the log and the *recipe* of its policies (their names, the
``engine_factory``, ``policy_options`` and the seed), builds them itself, replays and sends back
only the ranks; the steps table is then assembled in the order the sequential run produces, so
the result is identical for every ``jobs``.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from feedback.events import Event
from online.items import Item
from simulations.loaders import catalog_from_interactions, iter_events
from simulations.policy import EngineFactory, Policy, make_policies
from simulations.report import RunResult, progress_bar

__all__ = ["progressive_replay", "summarize_replay"]

BASELINES: tuple[str, ...] = ("random", "popular")

# Workers never fork the caller: it may hold threads (a web server, a learner, a notebook
# kernel), and a fork copies their locks in whatever state they are. "forkserver" forks them
# from a clean single-threaded server process, which already imported the caller's main
# module; measured, it starts two workers 0.2-0.8 s sooner than "spawn", which re-imports
# everything in each. "spawn" is the fallback where there is no forkserver (Windows).
_START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"

# Relative cost of replaying one policy over a log: an engine policy learns every event through
# River and VW (an order of magnitude more than a baseline), and the bandit reranker costs
# about a third more than the greedy relevance ranking. Used only to spread policies over the
# workers; a name not listed is taken to be an engine policy.
_COST: dict[str, float] = {"random": 1.0, "popular": 1.0, "relevance": 15.0}
_ENGINE_COST = 20.0

# A worker reports its progress (and checks whether the run was abandoned) every this many
# events: often enough for a smooth bar, rarely enough to cost nothing.
_REPORT_EVERY = 1000


def progressive_replay(
    interactions: pd.DataFrame | Sequence[Event],
    policies: Mapping[str, Policy] | Sequence[Policy | str] = (),
    *,
    k: int = 10,
    eval_every: int = 1,
    max_events: int | None = None,
    catalog: Sequence[Item] | None = None,
    seed: int = 0,
    baselines: bool = True,
    progress: bool = False,
    engine_factory: EngineFactory | None = None,
    policy_options: Mapping[str, Mapping[str, object]] | None = None,
    jobs: int = 1,
) -> RunResult:
    """Replay ``interactions`` through every policy; per-step scores and a summary.

    ``interactions`` is a DataFrame from :mod:`simulations.loaders` (or events in time order).
    ``policies`` are policy objects, which learn as they go (pass fresh ones), or policy
    names, built over ``catalog`` with ``seed`` by :func:`~simulations.policy.make_policies`
    (names other than ``random`` and ``popular`` go to ``engine_factory``; ``policy_options``
    maps a name to its keyword arguments). Unless ``baselines=False``, the ``random`` and
    ``popular`` baselines are added, first, when no policy has those names. ``catalog``
    defaults to every item of the log, released at its first interaction.

    ``jobs`` (default 1) is the number of processes the policies are spread over; the result
    does not depend on it. With ``jobs > 1`` every policy must be given by name: each worker
    builds its own policies, so ``engine_factory`` must be importable by the worker (a
    module-level function) and the options plain data. Policy objects are refused with a
    ``ValueError`` rather than copied into a worker: they would be trained there, and the
    objects the caller holds would come back untrained. More jobs than policies are not used.
    As with any use of :mod:`multiprocessing`, a script calling this with ``jobs > 1`` must do
    so under ``if __name__ == "__main__":``, since each worker imports the script.

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
    if isinstance(jobs, bool) or not isinstance(jobs, int | np.integer) or jobs < 1:
        raise ValueError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    events: list[Event] | None = None
    if isinstance(interactions, pd.DataFrame):
        df = interactions.iloc[:max_events] if max_events is not None else interactions
        if not df["timestamp"].is_monotonic_increasing:
            df = df.sort_values("timestamp", kind="stable")
    else:
        events = list(interactions)[:max_events]
        df = pd.DataFrame({"item_id": [e.item_id for e in events],
                           "timestamp": [e.timestamp for e in events]})  # fmt: skip
    given = _named(policies)
    if baselines:
        given = {**{b: None for b in BASELINES if b not in given}, **given}
    names = list(given)
    items: list[Item] = []
    if any(p is None for p in given.values()):
        items = list(catalog) if catalog is not None else catalog_from_interactions(df)
    recipe = _Recipe(items, seed, engine_factory, dict(policy_options or {}), k, eval_every)

    groups = _groups(names, jobs)
    if jobs > 1:
        built = [name for name, p in given.items() if p is not None]
        if built:
            raise ValueError(
                f"jobs > 1 builds every policy in its worker process, so policies must be "
                f"given by name (with engine_factory and policy_options), not as objects: "
                f"{', '.join(map(repr, built))}; or replay them with jobs=1"
            )
    if len(groups) > 1:
        ranks = _replay_in_processes(recipe, df if events is None else events, groups, progress)
        log = _columns(df) if events is None else _columns_of(events)
    else:
        if events is None:
            events = list(iter_events(df))
        pols = [p if p is not None else recipe.build(name) for name, p in given.items()]
        scored = _replay(
            progress_bar(events, progress, desc="replay", total=len(events)), pols, k, eval_every
        )
        ranks = dict(zip(names, scored, strict=True))
        log = _columns_of(events)
    steps = _steps_table(log, names, [ranks[name] for name in names], eval_every)
    rank = steps["rank"].to_numpy()
    hit = rank >= 0
    steps["hit"] = hit.astype(float)
    steps["ndcg"] = np.where(hit, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
    steps["mrr"] = np.where(hit, 1.0 / (np.maximum(rank, 0) + 1.0), 0.0)
    return RunResult(steps=steps, summary=summarize_replay(steps, k))


def _named(policies: Mapping[str, Policy] | Sequence[Policy | str]) -> dict[str, Policy | None]:
    """Policies by name, in the given order; ``None`` for one to be built from its name."""
    if isinstance(policies, Mapping):
        return dict(policies)
    out: dict[str, Policy | None] = {}
    for p in policies:
        name = p if isinstance(p, str) else p.name
        if name in out:
            raise ValueError(f"policy {name!r} is listed twice")
        out[name] = None if isinstance(p, str) else p
    return out


@dataclass(frozen=True)
class _Recipe:
    """Everything a process needs to build policies by name and replay them."""

    catalog: list[Item]
    seed: int
    engine_factory: EngineFactory | None
    options: dict[str, Mapping[str, object]]
    k: int
    eval_every: int

    def build(self, name: str) -> Policy:
        return make_policies(
            [name], self.catalog, self.seed, self.engine_factory, options=self.options
        )[name]


def _replay(
    events: Iterable[Event],
    policies: Sequence[Policy],
    k: int,
    eval_every: int,
    report: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Score, then learn, every event; per policy the rank of each scored play (-1: missed).

    ``report(n)`` is called after every ``_REPORT_EVERY`` events with the number done.
    """
    ranks: list[list[int]] = [[] for _ in policies]
    pairs = list(zip(policies, ranks, strict=True))
    n_plays = 0
    for i, ev in enumerate(events):
        if ev.type == "play":
            if n_plays % eval_every == 0:
                for policy, out in pairs:
                    rec = policy.recommend(ev.user_id, k, ev.context, ev.timestamp, explore=False)
                    ids = rec.item_ids[:k]
                    out.append(ids.index(ev.item_id) if ev.item_id in ids else -1)
            n_plays += 1
        batch = [ev]
        for policy in policies:
            policy.learn(batch)
        if report is not None and (i + 1) % _REPORT_EVERY == 0:
            report(i + 1)
    return ranks


@dataclass(frozen=True)
class _Columns:
    """The columns of the replayed log that the steps table repeats."""

    types: np.ndarray
    users: np.ndarray
    items: np.ndarray
    times: np.ndarray


def _columns(df: pd.DataFrame) -> _Columns:
    """The log's columns, converted as :func:`~simulations.loaders.iter_events` does."""
    return _Columns(
        types=df["type"].astype(str).to_numpy(),
        users=df["user_id"].to_numpy(),
        items=df["item_id"].to_numpy(),
        times=df["timestamp"].to_numpy(dtype=float),
    )


def _columns_of(events: Sequence[Event]) -> _Columns:
    return _Columns(
        types=np.array([e.type for e in events], dtype=object),
        users=np.array([e.user_id for e in events], dtype=object),
        items=np.array([e.item_id for e in events], dtype=object),
        times=np.array([e.timestamp for e in events], dtype=float),
    )


def _steps_table(
    log: _Columns, names: Sequence[str], ranks: Sequence[Sequence[int]], eval_every: int
) -> pd.DataFrame:
    """One row per scored play and policy: plays in log order, policies in ``names`` order."""
    plays = np.flatnonzero(log.types == "play")
    scored = plays[::eval_every]
    n, p = len(scored), len(names)
    if any(len(r) != n for r in ranks):
        raise RuntimeError("a policy was scored on a different number of plays")
    rank = np.asarray(ranks, dtype=np.int64).reshape(p, n).T.ravel()
    return pd.DataFrame(
        {
            "step": np.repeat(np.arange(0, len(plays), eval_every, dtype=np.int64), p),
            "event": np.repeat(scored.astype(np.int64), p),
            "timestamp": np.repeat(log.times[scored], p),
            "user_id": np.repeat(np.array([str(u) for u in log.users[scored]], dtype=object), p),
            "item_id": np.repeat(np.array([str(i) for i in log.items[scored]], dtype=object), p),
            "policy": np.tile(np.array(names, dtype=object), n),
            "rank": rank,
        }
    )


def _groups(names: Sequence[str], jobs: int) -> list[list[str]]:
    """``names`` split into at most ``jobs`` groups of about equal cost, each in given order.

    Longest first, each to the lightest group: the engine policies go to different groups
    and the baselines join the lightest.
    """
    n = min(jobs, len(names))
    if n <= 1:
        return [list(names)]
    load = [0.0] * n
    members: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(names)), key=lambda i: -_COST.get(names[i], _ENGINE_COST)):
        g = min(range(n), key=load.__getitem__)
        load[g] += _COST.get(names[i], _ENGINE_COST)
        members[g].append(i)
    return [[names[i] for i in sorted(m)] for m in members if m]


# -------------------------------------------------------------------------- worker processes


class _Abandoned(Exception):
    """Raised in a worker when another worker failed: its result would be thrown away."""


_progress: Any = None  # the queue workers report progress on (None: nobody is watching)
_stop: Any = None  # set by the parent when the run is abandoned


def _init_worker(progress: Any, stop: Any) -> None:
    global _progress, _stop
    _progress, _stop = progress, stop


def _replay_group(payload: bytes, names: list[str], group: int) -> list[list[int]]:
    """In a worker: build the policies ``names`` from the recipe and replay the log."""
    recipe, log = pickle.loads(payload)
    events = list(iter_events(log)) if isinstance(log, pd.DataFrame) else log

    def report(done: int) -> None:
        if _stop is not None and _stop.is_set():
            raise _Abandoned
        if _progress is not None:
            _progress.put((group, done))

    policies = [recipe.build(name) for name in names]
    ranks = _replay(events, policies, recipe.k, recipe.eval_every, report)
    if _progress is not None:
        _progress.put((group, len(events)))
    return ranks


def _replay_in_processes(
    recipe: _Recipe,
    log: pd.DataFrame | list[Event],
    groups: list[list[str]],
    progress: bool,
) -> dict[str, list[int]]:
    """Replay each group of policies in its own worker process; ranks by policy name."""
    try:
        # pickled once here rather than once per worker by the pool: a list of events is slow
        payload = pickle.dumps((recipe, log), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ValueError(
            "jobs > 1 sends the log, the catalog, engine_factory and policy_options to worker "
            f"processes, so they must be picklable (engine_factory a module-level function): {exc}"
        ) from exc
    n_events = len(log)
    ctx = mp.get_context(_START_METHOD)
    stop = ctx.Event()
    queue = ctx.SimpleQueue() if progress else None
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_events, desc=f"replay ({len(groups)} jobs)", leave=False)
    done_by_group = [0] * len(groups)
    ranks: dict[str, list[int]] = {}
    try:
        with ProcessPoolExecutor(
            len(groups), mp_context=ctx, initializer=_init_worker, initargs=(queue, stop)
        ) as pool:
            futures: dict[Future[list[list[int]]], list[str]] = {
                pool.submit(_replay_group, payload, names, g): names
                for g, names in enumerate(groups)
            }
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(
                        pending, timeout=0.2 if bar is not None else None,
                        return_when=FIRST_EXCEPTION,
                    )  # fmt: skip
                    for future in done:
                        ranks.update(zip(futures[future], future.result(), strict=True))
                    if bar is not None and queue is not None:
                        while not queue.empty():
                            g, n = queue.get()
                            done_by_group[g] = n
                        if min(done_by_group) > bar.n:
                            bar.update(min(done_by_group) - bar.n)
            except BaseException:
                stop.set()  # the other workers stop at their next report instead of finishing
                raise
    finally:
        if bar is not None:
            bar.close()
        if queue is not None:
            queue.close()
    return ranks


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
