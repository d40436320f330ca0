"""Settings of the engine and the learner (prefixes ``SEGUE_ENGINE_``, ``SEGUE_LEARNER_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """How a list is made: candidate channels and quotas, models, business rules."""

    model_config = SettingsConfigDict(
        env_prefix="SEGUE_ENGINE_", extra="forbid", use_attribute_docstrings=True
    )

    seed: int = 0
    """Seed of every random choice (exploration, fresh-item sampling, model initialization)."""

    n_factors: int = Field(16, ge=1, le=256)
    """Latent dimension of the relevance model (the retrieval vectors have one more)."""

    learning_rate: float = Field(0.05, gt=0)
    """SGD step of the relevance model's latents."""

    weight_learning_rate: float = Field(0.05, gt=0)
    """SGD step of the relevance model's per-feature (linear) weights."""

    init_std: float = Field(0.1, gt=0)
    """Standard deviation of the relevance model's initial latents."""

    cf_candidates: int = Field(300, ge=0)
    """Candidates from the ANN search over learned item vectors with the listener's vector."""

    content_candidates: int = Field(100, ge=0)
    """Candidates from the ANN search over content embeddings with the session vector."""

    covisit_candidates: int = Field(60, ge=0)
    """Candidates that followed the listener's last plays (item-to-next-item counts)."""

    trending_candidates: int = Field(100, ge=0)
    """Candidates from the popular-now list."""

    fresh_candidates: int = Field(40, ge=0)
    """Candidates sampled from the fresh-item exploration pool."""

    fresh_days: float = Field(14.0, gt=0)
    """An item released within this many days is fresh (novelty exploration pool)."""

    recent_exclude: int = Field(10, ge=0)
    """The listener's last N plays are not recommended again."""

    rerank_pool: int = Field(100, ge=1)
    """How many of the best-scored candidates the bandit chooses from."""

    max_per_artist: int = Field(2, ge=1)
    """At most this many items by one artist in a list."""

    reranker: Literal["bandit", "relevance"] = "bandit"
    """``bandit``: the VW contextual bandit fills the slots; ``relevance``: greedy by the
    relevance model (no exploration), the baseline."""

    exploration: Literal["epsilon", "softmax", "squarecb"] = "squarecb"
    """The bandit's exploration rule."""

    epsilon: float = Field(0.05, ge=0, le=1)
    """Exploration probability of ``epsilon`` exploration."""

    gamma_scale: float = Field(300.0, gt=0)
    """SquareCB's greediness: ``gamma = gamma_scale * n_learned ** gamma_exponent``; a
    non-greedy action gets ``1 / (K + gamma * cost gap)``, so larger means less exploration."""

    gamma_exponent: float = Field(0.5, ge=0)
    """How fast SquareCB's greediness grows with the bandit's samples."""

    bandit_learning_rate: float = Field(0.02, gt=0)
    """VW's learning rate (``-l``) of the bandit's cost regression. Rewards per slot are sparse
    (a few percent), so a small step averages over many slots instead of chasing the last."""

    hnsw_ef: int = Field(200, ge=1)
    """Search breadth of the HNSW indexes."""

    hnsw_m: int = Field(16, ge=2)
    """Graph degree of the HNSW indexes."""

    index_threads: int = Field(2, ge=1)
    """Threads hnswlib inserts with. More build faster, but the graph then depends on thread
    timing, so searches (and lists) are reproducible run to run only with 1; simulations use 1."""

    index_refresh_batch: int = Field(5000, ge=1)
    """Most item vectors re-indexed per learner cycle from the items the last updates moved."""

    index_relink_budget_s: float | None = Field(0.2, gt=0)
    """Most seconds one index refresh spends writing the HNSW graph: linking new items and
    re-linking moved ones (hnswlib's costliest write, about half a millisecond each at a
    million items). New items go first, then the farthest-moved; moved items left out are
    scored with their new vectors at once and re-linked later, new ones wait first in the
    queue. Unset: write everything every refresh (a filling index then took most of a core
    beside the requests)."""

    cf_index_space: Literal["ip", "l2"] = "l2"
    """The CF index's graph space (``online.retrieval``): ``l2``, the norm-augmentation
    reduction, found all of the true top 300 on the relevance model's item vectors where
    ``ip`` found 13-35% (``benchmarks/bench_ann.py``, ``bench_recommend.py``), because their
    bias column dominates. A snapshot saved in the other space is rebuilt in this one when
    loaded."""

    cf_max_identical: int = Field(4, ge=1)
    """Most items with the very same learned vector in the CF index (items known only by
    their artist and genres share one): an HNSW graph cannot hold large groups of identical
    points, and the channel needs only a few of them (see ``online._duplicates``)."""

    index_sweep_batch: int = Field(2000, ge=0)
    """Item vectors re-indexed per learner cycle by the round-robin sweep (bounds staleness
    from shared latents such as genres)."""

    popularity_half_life_s: float = Field(6 * 3600.0, gt=0)
    """Half-life of the trending counts (event time)."""

    exposure_half_life_s: float = Field(24 * 3600.0, gt=0)
    """Half-life of the listener's exposure to an item or artist (fatigue)."""

    session_length: int = Field(20, ge=1)
    """Plays kept per listener for the session vector and co-visitation."""

    session_half_life_s: float = Field(1800.0, gt=0)
    """Half-life of a play's weight in the session vector."""

    session_ttl_s: float = Field(86_400.0, gt=0)
    """With sessions in Redis (``SEGUE_REDIS_URL`` set): a listener's session key expires this
    long after their last play."""


class LearnerSettings(BaseSettings):
    """How the learner reads the log and weighs what it learns."""

    model_config = SettingsConfigDict(
        env_prefix="SEGUE_LEARNER_", extra="forbid", use_attribute_docstrings=True
    )

    half_life_s: float = Field(7 * 86400.0, gt=0)
    """Half-life of sample weights: w = 0.5 ** (age / half_life), age against the watermark."""

    attribution_window_s: float = Field(1800.0, gt=0)
    """How long (event time) after a list its impressions can earn a reward."""

    read_batch: int = Field(2000, ge=1)
    """Events read from the log per query."""

    lock_chunk: int = Field(64, ge=1)
    """Events learned per hold of the engine lock (small: requests wait at most one chunk)."""

    poll_interval_s: float = Field(0.05, gt=0)
    """How long the learner sleeps when the log has nothing new (it is also woken by ingest)."""

    index_refresh_interval_s: float = Field(1.0, ge=0)
    """At most one ANN index refresh per this many seconds (re-linking moved vectors is most
    of a learner cycle's cost; 0 refreshes after every batch)."""

    decision_ttl_s: float = Field(7200.0, gt=0)
    """How long served lists are kept for the reward join (must exceed the window)."""

    min_play_ms: int = Field(30_000, ge=0)
    """A play at least this long (or half the track) earns reward 1."""
