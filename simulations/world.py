"""A synthetic world of listeners whose tastes are known, so every list's value is exact.

Each listener ``u`` has hidden tastes over genres (drifting over time) and over artists, a
taste for novelty, and a memory of what it was recently shown (fatigue). An item ``i`` shown at
0-based position ``p`` is examined with probability ``exam(p) = (p + 1) ** -position_bias``
(a position-based model) and, once examined, played with probability ``sigmoid(logit)``::

    logit(u, i, t) = base_logit
                     + genre_weight  * genre_taste[u, genre(i)](t)     # drifts (OU process)
                     + artist_weight * artist_taste[u, artist(i)]
                     + quality[i]
                     + novelty_taste[u] * exp(-age(i, t) / novelty_scale)
                     - item_fatigue   * exposure[u, i](t)              # decays by half-life
                     - artist_fatigue * exposure[u, artist(i)](t)

An item released after ``t`` has play probability 0. Besides answering lists, a listener
plays an item of their own choosing (``organic_rate`` per request, drawn in proportion to the
play probabilities): an organic play with no ``request_id``, as the service sees from search or
library plays; it is learned from but earns no reward. The expected reward (plays) of a list is
therefore exact: ``sum_p exam(p) * P(play | examined, u, item_p, state)``. Examination and play
are independent across positions, so the best list puts the ``k`` most playable items in
decreasing order (rearrangement inequality): the per-step regret against it is exact. It is the
myopic (one-step) optimum: it ignores how today's list changes tomorrow's fatigue. Each
policy's regret is measured in the state its own history produced (an oracle that keeps serving
favourites fatigues them, which lowers its own best list), so compare policies on
``expected_reward`` and use ``regret`` to see how far each is from its own attainable best.

Randomness comes from independent streams derived from the seed: the world's structure, the
arrivals (who asks, when) and taste drift, and the outcomes. Arrivals and drift do not depend on
what a policy served, so every policy meets the same listeners at the same times; outcomes use
common random numbers (``3 x k`` uniforms per step), which makes policy comparisons sharper.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from feedback.events import Context, Event
from online.items import Item
from online.recommendation import Recommendation, RecommendedItem
from simulations.policy import Policy
from simulations.report import RunResult, progress_bar

__all__ = ["OraclePolicy", "World", "WorldConfig", "summarize_world", "synthetic_interactions"]

DAY = 86400.0


@dataclass(frozen=True)
class WorldConfig:
    """The world's knobs. Times are seconds; weights are on the logit scale."""

    n_users: int = 200
    n_items: int = 1000
    n_artists: int = 0  # 0: n_items // 10
    n_genres: int = 12
    embedding_dim: int = 16
    new_release_fraction: float = 0.2
    release_horizon: float = 2 * DAY
    step_seconds: float = 60.0
    position_bias: float = 1.0
    base_logit: float = -3.0
    genre_weight: float = 1.0
    genre_taste_sd: float = 1.2
    drift_timescale: float = 5 * DAY
    artist_weight: float = 0.8
    quality_sd: float = 0.8
    novelty_mean: float = 0.3
    novelty_sd: float = 0.8
    novelty_scale: float = 3 * DAY
    item_fatigue: float = 0.3
    artist_fatigue: float = 0.1
    fatigue_half_life: float = DAY / 4
    skip_rate: float = 0.5
    organic_rate: float = 0.5
    start_time: float = 1_700_000_000.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_genres", "embedding_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.new_release_fraction < 1.0:
            raise ValueError("new_release_fraction must be in [0, 1)")
        for name in ("step_seconds", "drift_timescale", "novelty_scale", "fatigue_half_life"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class _State:
    """Everything that changes during a run; rebuilt by :meth:`World.reset`."""

    def __init__(self, world: World):
        cfg = world.config
        seeds = np.random.SeedSequence(cfg.seed).spawn(4)[1:]
        self.arrival_rng = np.random.default_rng(seeds[0])
        self.drift_rng = np.random.default_rng(seeds[1])
        self.outcome_rng = np.random.default_rng(seeds[2])
        self.t = cfg.start_time
        self.step = 0
        self.genre_taste = world._genre_taste0.copy()
        self.user_t = np.full(cfg.n_users, cfg.start_time)
        self.item_exposure = np.zeros((cfg.n_users, cfg.n_items))
        self.artist_exposure = np.zeros((cfg.n_users, world.n_artists))
        self.plays = np.zeros(cfg.n_items)
        self.shown = np.zeros(cfg.n_items, dtype=bool)
        self.cumulative_regret = 0.0


class World:
    """Synthetic listeners with hidden tastes; runs any :class:`Policy` and scores it exactly.

    ``World(**config)`` takes the fields of :class:`WorldConfig`. :meth:`catalog` lists every
    item, including those released later (their ``release_time`` is in the future: a policy
    must not place them before, and gets no reward if it does). :meth:`run` resets the world and
    drives one policy; :meth:`compare` runs several, each from the same initial state.

    >>> world = World(n_users=20, n_items=60, seed=3)
    >>> steps = world.run(OraclePolicy(world), n_steps=50, k=5)
    >>> float(steps["regret"].abs().max())
    0.0
    >>> again = World(n_users=20, n_items=60, seed=3)
    >>> steps.equals(again.run(OraclePolicy(again), n_steps=50, k=5))
    True
    """

    def __init__(self, config: WorldConfig | None = None, **overrides: Any):
        if config is None:
            config = WorldConfig(**overrides)
        elif overrides:
            config = WorldConfig(**{**asdict(config), **overrides})
        self.config = cfg = config
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(4)[0])
        self.n_artists = n_artists = cfg.n_artists or max(1, cfg.n_items // 10)
        n_items, n_users, n_genres = cfg.n_items, cfg.n_users, cfg.n_genres

        # items: artists have a main genre; most tracks are in it
        artist_genre = rng.integers(0, n_genres, n_artists)
        self._artist = rng.integers(0, n_artists, n_items)
        own = rng.random(n_items) < 0.8
        self._genre = np.where(own, artist_genre[self._artist], rng.integers(0, n_genres, n_items))
        self._quality = rng.normal(0.0, cfg.quality_sd, n_items)
        n_new = round(cfg.new_release_fraction * n_items)
        release = cfg.start_time - rng.uniform(0.0, 365 * DAY, n_items)
        new = rng.choice(n_items, n_new, replace=False)
        release[new] = cfg.start_time + rng.uniform(0.0, cfg.release_horizon, n_new)
        self._release = release
        self._duration = rng.integers(120_000, 360_000, n_items)
        centroids = _unit(rng.normal(size=(n_genres, cfg.embedding_dim)))
        artist_offset = rng.normal(
            0.0, 0.5 / math.sqrt(cfg.embedding_dim), (n_artists, cfg.embedding_dim)
        )
        noise = rng.normal(0.0, 0.2 / math.sqrt(cfg.embedding_dim), (n_items, cfg.embedding_dim))
        self._embedding = _unit(centroids[self._genre] + artist_offset[self._artist] + noise)

        # listeners
        self._genre_taste0 = rng.normal(0.0, cfg.genre_taste_sd, (n_users, n_genres))
        self._artist_taste = rng.normal(0.0, 1.0, (n_users, n_artists))
        self._novelty_taste = rng.normal(cfg.novelty_mean, cfg.novelty_sd, n_users)
        activity = rng.lognormal(0.0, 1.0, n_users)
        self._user_cdf = np.cumsum(activity / activity.sum())

        self.user_ids = [f"u{u:05d}" for u in range(n_users)]
        self.item_ids = [f"t{i:06d}" for i in range(n_items)]
        self._item_index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self._user_index = {user_id: u for u, user_id in enumerate(self.user_ids)}
        self._state = _State(self)

    # ---------------------------------------------------------------- catalog and state

    def catalog(self) -> list[Item]:
        """Every item, with artist, genre, release time, duration and content embedding."""
        return [
            Item(
                item_id=self.item_ids[i],
                title=f"track {i}",
                artist=f"artist-{self._artist[i]:04d}",
                genres=(f"genre-{self._genre[i]:02d}",),
                release_time=float(self._release[i]),
                duration_ms=int(self._duration[i]),
                embedding=tuple(round(float(x), 6) for x in self._embedding[i]),
            )
            for i in range(self.config.n_items)
        ]

    @property
    def now(self) -> float:
        """The world's current (simulated) time."""
        return self._state.t

    def reset(self) -> None:
        """Back to the initial state (time, tastes, fatigue, popularity, random streams)."""
        self._state = _State(self)

    def examination(self, k: int) -> np.ndarray:
        """Probability that each of the first ``k`` positions is examined."""
        return (np.arange(k) + 1.0) ** -self.config.position_bias

    def _advance_user(self, u: int, t: float) -> None:
        """Drift the listener's genre tastes and decay their fatigue up to ``t``."""
        s, cfg = self._state, self.config
        dt = t - s.user_t[u]
        if dt <= 0:
            return
        rho = math.exp(-dt / cfg.drift_timescale)
        shock = s.drift_rng.normal(0.0, cfg.genre_taste_sd, cfg.n_genres)
        s.genre_taste[u] = rho * s.genre_taste[u] + math.sqrt(1.0 - rho * rho) * shock
        decay = 0.5 ** (dt / cfg.fatigue_half_life)
        s.item_exposure[u] *= decay
        s.artist_exposure[u] *= decay
        s.user_t[u] = t

    def play_probabilities(self, user_id: str, now: float | None = None) -> np.ndarray:
        """``P(play | examined)`` of every item for this listener in the current state."""
        s, cfg = self._state, self.config
        u = self._user_index[user_id]
        t = s.t if now is None else now
        age = np.maximum(t - self._release, 0.0)
        logit = (
            cfg.base_logit
            + cfg.genre_weight * s.genre_taste[u, self._genre]
            + cfg.artist_weight * self._artist_taste[u, self._artist]
            + self._quality
            + self._novelty_taste[u] * np.exp(-age / cfg.novelty_scale)
            - cfg.item_fatigue * s.item_exposure[u]
            - cfg.artist_fatigue * s.artist_exposure[u, self._artist]
        )
        p = 1.0 / (1.0 + np.exp(-logit))
        p[self._release > t] = 0.0
        return p

    def _list_probabilities(self, probs: np.ndarray, item_ids: Sequence[str]) -> np.ndarray:
        """Play probability per position; unknown items and repeats in a list get 0."""
        out = np.zeros(len(item_ids))
        seen: set[int] = set()
        for pos, item_id in enumerate(item_ids):
            i = self._item_index.get(item_id)
            if i is not None and i not in seen:
                out[pos] = probs[i]
                seen.add(i)
        return out

    def expected_reward(self, user_id: str, item_ids: Sequence[str]) -> float:
        """Exact expected plays of this list for this listener now."""
        p = self._list_probabilities(self.play_probabilities(user_id), item_ids)
        return float(self.examination(len(p)) @ p)

    def best_list(self, user_id: str, k: int, now: float | None = None) -> list[str]:
        """The list of ``k`` items with the highest expected reward now (ties by item order)."""
        p = self.play_probabilities(user_id, now)
        top = np.argsort(-p, kind="stable")[:k]
        return [self.item_ids[i] for i in top]

    def sample_rewards(
        self, user_id: str, item_ids: Sequence[str], n: int, seed: int = 0
    ) -> np.ndarray:
        """``n`` independent realized rewards of this list now, without changing the world."""
        p = self._list_probabilities(self.play_probabilities(user_id), item_ids)
        rng = np.random.default_rng(seed)
        exam = self.examination(len(p))
        u = rng.random((2, n, len(p)))
        return ((u[0] < exam) & (u[1] < p)).sum(axis=1).astype(float)

    # ---------------------------------------------------------------- running a policy

    def step(self, policy: Policy, k: int, *, explore: bool = True) -> dict[str, Any]:
        """One request: a listener arrives, ``policy`` answers, outcomes are drawn and learned.

        Returns the step's metrics; the generated events are passed to ``policy.learn``.
        """
        s, cfg = self._state, self.config
        t = s.t + max(1.0, float(s.arrival_rng.exponential(cfg.step_seconds)))
        u = min(
            int(np.searchsorted(self._user_cdf, s.arrival_rng.random(), side="right")),
            cfg.n_users - 1,
        )
        self._advance_user(u, t)
        s.t = t
        user_id = self.user_ids[u]
        context: Context = {"hour": int((t % DAY) // 3600)}
        probs = self.play_probabilities(user_id, t)

        rec = policy.recommend(user_id, k, context, t, explore=explore)
        item_ids = rec.item_ids[:k]
        p = self._list_probabilities(probs, item_ids)
        n = len(item_ids)
        exam = self.examination(k)
        expected = float(exam[:n] @ p)
        top = probs[np.argsort(-probs, kind="stable")[:k]]
        best = float(exam[: len(top)] @ top)
        regret = best - expected
        s.cumulative_regret += regret

        uniforms = s.outcome_rng.random((3, k))
        organic_u = s.outcome_rng.random(2)
        examined = uniforms[0, :n] < exam[:n]
        played = examined & (uniforms[1, :n] < p)
        skipped = examined & ~played & (uniforms[2, :n] < cfg.skip_rate)
        events = self._events(rec, user_id, context, t, item_ids, played, skipped, uniforms)
        organic = self._organic(probs, organic_u, user_id, context, t, s.step)
        if organic is not None:
            events.append(organic)

        idx = np.array([self._item_index.get(i, -1) for i in item_ids], dtype=int)
        known = idx >= 0
        seen_idx = idx[known & examined]
        np.add.at(s.item_exposure[u], seen_idx, 1.0)
        np.add.at(s.artist_exposure[u], self._artist[seen_idx], 1.0)
        n_released = int((self._release <= t).sum())
        pop = (s.plays[idx[known]] + 1.0) / (s.plays.sum() + n_released)
        novelty = float(np.mean(-np.log2(pop))) if known.any() else float("nan")
        age = float(np.mean((t - self._release[idx[known]]) / DAY)) if known.any() else math.nan
        np.add.at(s.plays, idx[known & played], 1.0)
        if organic is not None:
            i = self._item_index[organic.item_id]
            s.plays[i] += 1.0
            s.item_exposure[u, i] += 1.0
            s.artist_exposure[u, self._artist[i]] += 1.0
        s.shown[idx[known]] = True
        s.step += 1
        policy.learn(events)
        return {
            "step": s.step,
            "timestamp": t,
            "user_id": user_id,
            "n_items": n,
            "reward": float(played.sum()),
            "expected_reward": expected,
            "best_expected_reward": best,
            "regret": regret,
            "cumulative_regret": s.cumulative_regret,
            "coverage": float(s.shown.sum() / max(n_released, 1)),
            "ild": self._intra_list_diversity(idx[known]),
            "novelty": novelty,
            "mean_age_days": age,
            "fallback": rec.fallback is not None,
        }

    def _events(
        self,
        rec: Recommendation,
        user_id: str,
        context: Context,
        t: float,
        item_ids: Sequence[str],
        played: np.ndarray,
        skipped: np.ndarray,
        uniforms: np.ndarray,
    ) -> list[Event]:
        rid = rec.request_id
        ctx = dict(context)
        events = [
            Event(f"{rid}:imp:{pos}", "impression", user_id, item, t, rid, pos, context=ctx)
            for pos, item in enumerate(item_ids)
        ]
        for pos, item in enumerate(item_ids):
            if not (played[pos] or skipped[pos]):
                continue
            i = self._item_index.get(item)
            duration = int(self._duration[i]) if i is not None else 180_000
            if played[pos]:
                kind, ms = "play", int(duration * (0.7 + 0.3 * uniforms[2, pos]))
            else:
                kind, ms = "skip", int(5_000 + 25_000 * uniforms[1, pos])
            events.append(
                Event(
                    f"{rid}:{kind}:{pos}",
                    kind,
                    user_id,
                    item,
                    t + 0.5 + 0.01 * pos,
                    rid,
                    pos,
                    played_ms=ms,
                    duration_ms=duration,
                    context=ctx,
                )
            )
        return events

    def _organic(
        self,
        probs: np.ndarray,
        uniforms: np.ndarray,
        user_id: str,
        context: Context,
        t: float,
        step: int,
    ) -> Event | None:
        """A play outside any list (search, library), item drawn in proportion to taste."""
        total = probs.sum()
        if uniforms[0] >= self.config.organic_rate or total <= 0:
            return None
        cdf = np.cumsum(probs / total)
        i = min(int(np.searchsorted(cdf, uniforms[1], side="right")), len(cdf) - 1)
        duration = int(self._duration[i])
        return Event(
            f"organic-{step}",
            "play",
            user_id,
            self.item_ids[i],
            t + 0.9,
            played_ms=duration,
            duration_ms=duration,
            context=dict(context),
        )

    def _intra_list_diversity(self, idx: np.ndarray) -> float:
        """``1 -`` mean pairwise similarity; similarity = half same genre + half same artist."""
        if len(idx) < 2:
            return math.nan
        g, a = self._genre[idx], self._artist[idx]
        sim = 0.5 * (g[:, None] == g[None, :]) + 0.5 * (a[:, None] == a[None, :])
        iu = np.triu_indices(len(idx), 1)
        return float(1.0 - sim[iu].mean())

    def run(
        self,
        policy: Policy,
        n_steps: int,
        k: int = 10,
        *,
        explore: bool = True,
        progress: bool = False,
    ) -> pd.DataFrame:
        """Reset the world and drive ``policy`` for ``n_steps`` requests; one row per step."""
        self.reset()
        rows = [
            self.step(policy, k, explore=explore)
            for _ in progress_bar(range(n_steps), progress, desc=f"simulate {policy.name}")
        ]
        df = pd.DataFrame(rows)
        df.insert(0, "policy", policy.name)
        return df

    def compare(
        self,
        policies: Mapping[str, Policy] | Iterable[Policy],
        n_steps: int,
        k: int = 10,
        *,
        explore: bool = True,
        progress: bool = False,
    ) -> RunResult:
        """Run each policy from the same initial world; per-step rows and a summary table."""
        items = policies.values() if isinstance(policies, Mapping) else policies
        steps = pd.concat(
            [self.run(p, n_steps, k, explore=explore, progress=progress) for p in items],
            ignore_index=True,
        )
        return RunResult(steps=steps, summary=summarize_world(steps))


def summarize_world(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per policy: mean reward, total regret, final coverage, diversity, novelty."""
    g = steps.groupby("policy", sort=False)
    summary = pd.DataFrame(
        {
            "steps": g["step"].count(),
            "mean_reward": g["reward"].mean(),
            "mean_expected_reward": g["expected_reward"].mean(),
            "mean_best_reward": g["best_expected_reward"].mean(),
            "total_regret": g["regret"].sum(),
            "final_coverage": g["coverage"].last(),
            "mean_ild": g["ild"].mean(),
            "mean_novelty": g["novelty"].mean(),
            "mean_age_days": g["mean_age_days"].mean(),
        }
    )
    return summary.reset_index()


class OraclePolicy:
    """Knows the world's hidden state: serves the best list of every step (zero regret).

    ``explore`` is ignored. Placed items get ``propensity = 1.0``.
    """

    def __init__(self, world: World, *, name: str = "oracle"):
        self.name = name
        self._world = world
        self._requests = 0

    def recommend(
        self, user_id: str, k: int, context: Context, now: float, *, explore: bool = True
    ) -> Recommendation:
        probs = self._world.play_probabilities(user_id, now)
        ids = self._world.best_list(user_id, k, now)
        self._requests += 1
        return Recommendation(
            request_id=f"{self.name}-{self._requests}",
            model_version=self.name,
            items=tuple(
                RecommendedItem(i, score=float(probs[self._world._item_index[i]]), propensity=1.0)
                for i in ids
            ),
        )

    def learn(self, events: Sequence[Event]) -> None:
        """The oracle needs no learning."""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic_interactions(
    n_events: int,
    *,
    n_users: int = 1000,
    n_items: int = 5000,
    zipf: float = 1.1,
    session_repeat: float = 0.3,
    start_time: float = 1_700_000_000.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A play log shaped like real ones, for replay tests and benchmarks.

    Item popularity follows a Zipf law (exponent ``zipf``); listener activity is lognormal;
    with probability ``session_repeat`` a listener's play is the item that followed their
    previous play last time anyone played it (so sequence-aware policies have a signal).
    Columns as :data:`simulations.loaders.INTERACTION_COLUMNS`, in time order.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** zipf
    items = rng.choice(n_items, n_events, p=weights / weights.sum())
    activity = rng.lognormal(0.0, 1.0, n_users)
    users = rng.choice(n_users, n_events, p=activity / activity.sum())
    repeat = rng.random(n_events) < session_repeat
    last: dict[int, int] = {}
    follower: dict[int, int] = {}
    for t in range(n_events):
        u = int(users[t])
        prev = last.get(u)
        if repeat[t] and prev is not None and prev in follower:
            items[t] = follower[prev]
        if prev is not None:
            follower[prev] = int(items[t])
        last[u] = int(items[t])
    times = start_time + np.cumsum(rng.exponential(10.0, n_events))
    return pd.DataFrame(
        {
            "user_id": [f"u{u:05d}" for u in users],
            "item_id": [f"t{i:06d}" for i in items],
            "timestamp": times,
            "type": "play",
            "rating": np.nan,
            "played_ms": np.nan,
            "duration_ms": np.nan,
        }
    )
