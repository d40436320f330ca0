"""Synthetic catalogs and vectors with the structure of a real streaming catalog.

Real embeddings are clustered: an artist's tracks sit close together, artists of a genre sit
near each other. Independent Gaussian vectors are unrealistically hard for an ANN index, so
segue's tests and benchmarks use these generators instead. Everything is deterministic per
``seed``.

>>> items = generate_demo_catalog(5, n_artists=2, dim=4, seed=1)
>>> [item.item_id for item in items]
['t0000000', 't0000001', 't0000002', 't0000003', 't0000004']
>>> items == generate_demo_catalog(5, n_artists=2, dim=4, seed=1)
True
>>> demo_vectors(3, 8, seed=0).shape
(3, 8)
"""

from __future__ import annotations

import numpy as np

from online.items import Item

DEFAULT_NOW = 1_750_000_000.0
"""The default "now" of a demo catalog (2025-06-15, epoch seconds)."""

_DAY = 86_400.0


def demo_vectors(
    n: int,
    dim: int,
    seed: int = 0,
    *,
    n_clusters: int | None = None,
    spread: float = 0.35,
    norm_spread: float = 0.0,
) -> np.ndarray:
    """``n`` clustered vectors of shape ``(n, dim)``, float32, fast enough for 10M rows.

    Points are scattered around ``n_clusters`` random unit centroids (default about one per 20
    points, like tracks around their artist) with relative noise ``spread``, then normalised.
    ``norm_spread > 0`` rescales each vector by ``exp(N(0, norm_spread))``, giving the varying
    norms of a relevance model's item vectors (maximum-inner-product search).

    >>> v = demo_vectors(1000, 16, seed=3)
    >>> bool(np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5))
    True
    >>> bool(np.array_equal(v, demo_vectors(1000, 16, seed=3)))
    True
    """
    if n < 0 or dim < 1:
        raise ValueError(f"need n >= 0 and dim >= 1, got n={n}, dim={dim}")
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n // 20) if n_clusters is None else max(1, n_clusters)
    centroids = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 262_144
    scale = np.float32(spread / np.sqrt(dim))
    for start in range(0, n, step):
        stop = min(n, start + step)
        member = rng.integers(0, n_clusters, size=stop - start)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= scale
        block += centroids[member]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    if norm_spread > 0:
        out *= np.exp(rng.normal(0.0, norm_spread, size=(n, 1))).astype(np.float32)
    return out


def demo_relevance_vectors(
    n: int, dim: int, seed: int = 0, *, listeners: bool = False
) -> np.ndarray:
    """``n`` vectors shaped like the relevance model's, float32 ``(n, dim)``.

    Items (the default): ``[latent sums, bias]``, small clustered latents and a bias with a
    wide log-normal spread, which dominates every inner product as the learned biases do.
    ``listeners=True``: ``[latent sums, 1]``, the queries of the CF index.

    >>> items = demo_relevance_vectors(100, 17, seed=1)
    >>> users = demo_relevance_vectors(3, 17, seed=2, listeners=True)
    >>> items.shape, bool((users[:, -1] == 1).all()), bool((items[:, -1] > 0).all())
    ((100, 17), True, True)
    """
    if listeners:
        latents = demo_vectors(n, dim - 1, seed=seed) * np.float32(0.9)
        return np.hstack([latents, np.ones((n, 1), dtype=np.float32)])
    latents = demo_vectors(n, dim - 1, seed=seed) * np.float32(0.4)
    bias = np.random.default_rng(seed).lognormal(-1.5, 0.7, n).astype(np.float32)
    return np.hstack([latents, bias[:, None]])


def generate_demo_catalog(
    n_items: int,
    *,
    n_artists: int | None = None,
    n_genres: int = 16,
    dim: int | None = 64,
    seed: int = 0,
    now: float = DEFAULT_NOW,
    fresh_fraction: float = 0.02,
    unavailable_fraction: float = 0.01,
) -> list[Item]:
    """A list of ``n_items`` tracks with artist, genre, time and embedding structure.

    - artists (default ``n_items // 12``, at least 1) have a Zipf-like catalogue size, one to
      three genres, and a unit centroid near their first genre's centroid; each track's
      ``embedding`` (unit norm, ``dim`` values, or ``None`` when ``dim`` is ``None``) lies near
      its artist's centroid;
    - release times span about 30 years before ``now``, skewed recent, and a
      ``fresh_fraction`` of tracks were released within the last 7 days (the new-item pool);
    - an ``unavailable_fraction`` of tracks is unavailable (licensing);
    - ``attributes`` carry ``{"popularity": float}``, a heavy-tailed prior.

    Item ids are ``t`` plus a zero-padded number, artist names ``artist-<n>``, genres
    ``genre-<n>``. Building Python objects costs about 2 KB per item with ``dim=64``: for
    million-item benchmarks use :func:`demo_vectors`.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    rng = np.random.default_rng(seed)
    n_artists = max(1, n_items // 12) if n_artists is None else max(1, n_artists)
    n_genres = max(1, n_genres)

    # artists: genres and embedding centroids
    artist_genres = [
        tuple(sorted({int(g) for g in rng.integers(0, n_genres, size=rng.integers(1, 4))}))
        for _ in range(n_artists)
    ]
    # Zipf-like popularity decides how many tracks each artist gets
    weights = 1.0 / np.arange(1, n_artists + 1) ** 0.8
    rng.shuffle(weights)
    artist_of = rng.choice(n_artists, size=n_items, p=weights / weights.sum())

    embeddings = None
    if dim is not None:
        genre_centroids = rng.standard_normal((n_genres, dim))
        genre_centroids /= np.linalg.norm(genre_centroids, axis=1, keepdims=True)
        first_genre = np.array([g[0] for g in artist_genres])
        centroids = genre_centroids[first_genre] + 0.6 * rng.standard_normal(
            (n_artists, dim)
        ) / np.sqrt(dim)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        embeddings = centroids[artist_of] + 0.35 * rng.standard_normal((n_items, dim)) / np.sqrt(
            dim
        )
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        embeddings = embeddings.astype(np.float32)

    age_days = 30 * 365 * rng.beta(1.0, 3.0, size=n_items)
    fresh = rng.random(n_items) < fresh_fraction
    age_days[fresh] = 7 * rng.random(int(fresh.sum()))
    release = np.round(now - age_days * _DAY)
    duration = rng.lognormal(np.log(210_000), 0.3, size=n_items).astype(np.int64)
    available = rng.random(n_items) >= unavailable_fraction
    popularity = rng.pareto(1.5, size=n_items)

    items = []
    for i in range(n_items):
        a = int(artist_of[i])
        items.append(
            Item(
                item_id=f"t{i:07d}",
                title=f"Track {i}",
                artist=f"artist-{a}",
                genres=tuple(f"genre-{g}" for g in artist_genres[a]),
                release_time=float(release[i]),
                duration_ms=int(duration[i]),
                available=bool(available[i]),
                embedding=None if embeddings is None else tuple(embeddings[i].tolist()),
                attributes={"popularity": round(float(popularity[i]), 4)},
            )
        )
    return items
