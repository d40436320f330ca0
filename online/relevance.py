"""The relevance model: a two-tower factorization machine learned online with River.

:class:`RelevanceModel` predicts the probability that a listener responds positively to an
item in a context. It is River's :class:`river.facto.FMClassifier` over two groups of one-hot
features, every feature with value 1:

* user side: ``u:<user id>`` and one feature per context entry (see :func:`encode_context`);
* item side: ``i:<item id>``, ``a:<artist>`` and ``g:<genre>`` for the first ``max_genres``
  genres.

A factorization machine's score is ``w0 + sum_j w_j + sum_{j<l} <v_j, v_l>``. Split into the
two sides it is ``const(user, context) + b(item) + <sum_user v, sum_item v>``, where ``b(item)``
folds the item-side linear weights and the item-item pair terms. So

* :meth:`RelevanceModel.user_vector` is ``[sum_user v, 1]`` and
* :meth:`RelevanceModel.item_vector` is ``[sum_item v, b(item)]``,

and for a fixed listener and context the ranking of items by the model equals the ranking by
the inner product of these ``n_factors + 1`` dimensional vectors: the retrieval index is a
maximum-inner-product search over item vectors. A new item by a known artist has no ``i:``
latent yet, but its artist and genre latents give it a useful vector at once.

Learning is River's (``FMClassifier.learn_one(x, y, w)``); segue adds only what River lacks:

* a soft-label log loss (:class:`_SoftLog`): River's ``Log`` loss truncates a fractional label
  to an integer. A play fraction ``r`` in [0, 1] is a soft label, whose cross-entropy gradient
  ``sigmoid(z) - r`` equals ``r`` times the positive gradient plus ``1 - r`` times the negative
  one: the weighted positive + negative split, done in one step;
* vectorized scoring (``predict_many``): River scores one dict at a time and creates random
  latents for unseen features while *predicting* (a ``defaultdict``), which would make
  predictions mutate the model. segue mirrors the latents into numpy arrays after each update;
  unseen features score as zero vectors;
* ``pop_touched``: the item-side feature keys whose latents moved, for index refresh.

``w = 0`` returns before touching River, so it leaves the model exactly unchanged; otherwise
River multiplies the loss gradient by ``w``. River does *not* scale the L1/L2 regularization
terms by ``w``, which is why both default to 0 here.

Example (seeded, tiny):

>>> from online.items import Item
>>> model = RelevanceModel(n_factors=4, seed=1)
>>> rock, jazz = Item("t1", artist="Rockers"), Item("t2", artist="Jazzers")
>>> for _ in range(200):
...     _ = model.learn_one("tom", rock, 1.0, {"device": "ios"})  # the prediction before
...     _ = model.learn_one("tom", jazz, 0.0, {"device": "ios"})
>>> model.predict_one("tom", rock, {"device": "ios"}) > 0.8
True
>>> model.predict_one("tom", jazz, {"device": "ios"}) < 0.2
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from river import facto, optim, utils

from feedback.events import Context
from online._statefile import read_state, write_state
from online.items import Item

__all__ = ["FeatureColumns", "RelevanceModel", "encode_context"]

# items as columns: ids, artists, genres (what the model's item features read)
FeatureColumns = tuple[Sequence[str], Sequence[str], Sequence[Sequence[str]]]

_FORMAT = "segue.relevance/1"
# Small non-negative integers in a context are enumerations (hour, weekday, month), so each
# value gets its own one-hot feature; larger numbers are bucketed on a log2 scale.
_MAX_CATEGORICAL_INT = 64


def encode_context(context: Mapping[str, Any], keys: Iterable[str] | None = None) -> list[str]:
    """One-hot feature names for a context mapping, sorted for determinism.

    * ``str`` -> ``"key=value"``; ``bool`` -> ``"key=true"`` / ``"key=false"``;
    * ``int`` in ``[0, 64)`` -> ``"key=value"`` (``hour=21``: enumerations stay categorical);
    * any other number -> ``"key~b"`` with ``b = sign(x) * floor(log2(1 + |x|))``, a log-scale
      bucket (``history=300`` -> ``history~8``); NaN and infinities are dropped;
    * ``None`` values are dropped.

    ``keys`` restricts the encoding to those context keys (``None``: all of them).

    >>> encode_context({"device": "ios", "hour": 21, "history": 300, "premium": True})
    ['device=ios', 'history~8', 'hour=21', 'premium=true']
    """
    wanted = None if keys is None else set(keys)
    out: list[str] = []
    for key, value in context.items():
        if wanted is not None and key not in wanted:
            continue
        if value is None:
            continue
        if isinstance(value, bool):
            out.append(f"{key}={'true' if value else 'false'}")
        elif isinstance(value, str) or (
            isinstance(value, int) and 0 <= value < _MAX_CATEGORICAL_INT
        ):
            out.append(f"{key}={value}")
        elif isinstance(value, int | float):
            x = float(value)
            if not math.isfinite(x):
                continue
            bucket = math.floor(math.log2(1.0 + abs(x)))
            out.append(f"{key}~{-bucket if x < 0 else bucket}")
    out.sort()
    return out


class _SoftLog(optim.losses.BinaryLoss):
    """Log loss on a logit that accepts a soft label ``y`` in [0, 1].

    River's ``optim.losses.Log`` maps a label through ``int(y)``, so ``y = 0.7`` would train as
    a negative with zero gradient. The cross-entropy gradient with respect to the logit is
    ``sigmoid(z) - y`` for any ``y`` in [0, 1].
    """

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        y = float(y_true)
        z = float(y_pred)
        # log(1 + exp(-z)) and log(1 + exp(z)), computed without overflow.
        return y * _softplus(-z) + (1.0 - y) * _softplus(z)

    def gradient(self, y_true: Any, y_pred: Any) -> Any:
        return _sigmoid(float(y_pred)) - float(y_true)

    def mean_func(self, y_pred: Any) -> Any:
        return _sigmoid(float(y_pred))


class _VectorFM(facto.FMClassifier):
    """``FMClassifier`` with River's own update rule, done on whole latent vectors.

    River passes each latent gradient to the optimizer as a ``{factor: value}`` dict and sums
    the pair interactions one ``np.dot`` at a time, which costs most of a ``learn_one``. The
    arithmetic here is the same (SGD's vector step is ``v -= lr * g`` in place), computed with
    numpy on whole vectors, and the pair sum uses the identity
    ``sum_{j<l} <v_j, v_l> x_j x_l = (|sum_j v_j x_j|^2 - sum_j |v_j x_j|^2) / 2``.
    """

    served_logit: float | None = None
    """The logit :class:`RelevanceModel` served for the last learned sample, before the step."""

    def _learn_one(self, x: dict, y: Any, w: float = 1.0) -> None:
        """River's ``_learn_one`` step for step, without its per-call dispatch.

        Same order of operations, same arithmetic, same optimizer counters; used when both
        optimizers are plain SGD (segue's), otherwise River's own code runs.
        """
        wopt, lopt = self.weight_optimizer, self.latent_optimizer
        if type(wopt) is not optim.SGD or type(lopt) is not optim.SGD:
            known = {j: xj for j, xj in x.items() if j in self.latents}
            self.served_logit = float(
                self.intercept
                + utils.math.dot(x, self.weights)
                + (self._calculate_interactions(known) if known else 0.0)
            )
            super()._learn_one(x, y, w=w)
            return
        # River's _raw_dot, with the latent matrix stacked once for the update below too
        latents, keys = self.latents, list(x)
        unseen = [j for j in keys if j not in latents]
        V = np.stack([latents[j] for j in keys])  # creates unseen latents, as River does
        X = np.fromiter(x.values(), dtype=float, count=len(x))
        VX = V * X[:, None]
        t = VX.sum(axis=0)
        y_pred = self.intercept
        y_pred += utils.math.dot(x, self.weights)
        base = y_pred
        y_pred += 0.5 * float(t @ t - np.einsum("ij,ij->", VX, VX))
        # The logit serving gives before this step, for progressive validation without a second
        # prediction: serving scores unseen features as zero vectors, not as the random latents
        # River just drew for them (their weights are still 0 in both).
        if unseen:
            seen = np.array([j not in unseen for j in keys])
            tk = VX[seen].sum(axis=0)
            self.served_logit = float(
                base + 0.5 * float(tk @ tk - np.einsum("ij,ij->", VX[seen], VX[seen]))
            )
        else:
            self.served_logit = float(y_pred)
        g_loss = self.loss.gradient(y_true=y, y_pred=y_pred)
        g_loss = min(max(g_loss, -self.clip_gradient), self.clip_gradient)
        g_loss *= w
        self.intercept -= self.intercept_lr.get(wopt.n_iterations) * g_loss
        # weights: River's gradient dict and SGD's dict step, fused
        weights, l1, l2 = self.weights, self.l1_weight, self.l2_weight
        lr = wopt.learning_rate
        grads = [g_loss * xj + l1 * _sign(weights[j]) + l2 * weights[j] for j, xj in x.items()]
        for j, gj in zip(x, grads, strict=True):
            weights[j] -= lr * gj
        wopt.n_iterations += 1
        # latents: SGD's vector step (``w -= lr * g`` in place), one optimizer step per key
        G = self._latent_gradients(V, X, g_loss)
        for i, j in enumerate(keys):
            latents[j] -= lopt.learning_rate * G[i]
            lopt.n_iterations += 1

    def _calculate_interactions(self, x: dict) -> float:
        V = np.stack([self.latents[j] for j in x])  # creates unseen latents, as River does
        X = np.fromiter(x.values(), dtype=float, count=len(x))
        VX = V * X[:, None]
        s = VX.sum(axis=0)
        return 0.5 * float(s @ s - np.einsum("ij,ij->", VX, VX))

    def _latent_gradients(self, V: np.ndarray, X: np.ndarray, g_loss: float) -> np.ndarray:
        """River's latent gradient of every key at once: row ``i`` for key ``i``."""
        s = X @ V
        G = g_loss * (X[:, None] * s - V * (X * X)[:, None])
        if self.l1_latent:
            G += self.l1_latent * np.sign(V)
        if self.l2_latent:
            G += self.l2_latent * V
        return G

    def _update_latents(self, x: dict, g_loss: float) -> None:
        latents, keys = self.latents, list(x)
        V = np.stack([latents[j] for j in keys])
        X = np.fromiter(x.values(), dtype=float, count=len(x))
        G = self._latent_gradients(V, X, g_loss)
        for i, j in enumerate(keys):
            latents[j] = self.latent_optimizer.step(w=latents[j], g=G[i])


def _sign(x: float) -> int:
    return -1 if x < 0 else (1 if x > 0 else 0)


def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


class RelevanceModel:
    """Probability of a positive outcome for (user, item, context); a two-tower FM.

    See the module docstring for the feature encoding and the vector augmentation. Learned
    state lives in ``_underscored`` attributes; the hyperparameters are the constructor's
    arguments. Not thread-safe for concurrent ``learn_one``: the learner is the single writer.
    """

    def __init__(
        self,
        n_factors: int = 16,
        learning_rate: float = 0.05,
        weight_learning_rate: float = 0.05,
        intercept_learning_rate: float = 0.01,
        init_std: float = 0.1,
        l2_latent: float = 0.0,
        l2_weight: float = 0.0,
        max_genres: int = 2,
        context_keys: Sequence[str] | None = None,
        item_cache_size: int = 200_000,
        seed: int = 0,
    ) -> None:
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        if max_genres < 0:
            raise ValueError(f"max_genres must be >= 0, got {max_genres}")
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.weight_learning_rate = weight_learning_rate
        self.intercept_learning_rate = intercept_learning_rate
        self.init_std = init_std
        self.l2_latent = l2_latent
        self.l2_weight = l2_weight
        self.max_genres = max_genres
        self.context_keys = None if context_keys is None else tuple(context_keys)
        self.item_cache_size = item_cache_size
        self.seed = seed

        self._fm = _VectorFM(
            n_factors=n_factors,
            weight_optimizer=optim.SGD(weight_learning_rate),
            latent_optimizer=optim.SGD(learning_rate),
            loss=_SoftLog(),
            l2_weight=l2_weight,
            l2_latent=l2_latent,
            intercept_lr=intercept_learning_rate,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=init_std, seed=seed),
            seed=seed,
        )
        self.n_learned = 0
        self._touched: set[str] = set()
        self._reset_mirror()

    # ------------------------------------------------------------------ hyperparameters

    def _params(self) -> dict[str, Any]:
        return {
            "n_factors": self.n_factors,
            "learning_rate": self.learning_rate,
            "weight_learning_rate": self.weight_learning_rate,
            "intercept_learning_rate": self.intercept_learning_rate,
            "init_std": self.init_std,
            "l2_latent": self.l2_latent,
            "l2_weight": self.l2_weight,
            "max_genres": self.max_genres,
            "context_keys": self.context_keys,
            "item_cache_size": self.item_cache_size,
            "seed": self.seed,
        }

    def clone(self) -> RelevanceModel:
        """A fresh, untrained model with the same hyperparameters."""
        return type(self)(**self._params())

    @property
    def dim(self) -> int:
        """Length of :meth:`user_vector` and :meth:`item_vector`: ``n_factors + 1``."""
        return self.n_factors + 1

    # ------------------------------------------------------------------ features

    def user_features(self, user: str, context: Context) -> list[str]:
        """The user-side feature keys: ``u:<user>`` and ``c:<encoded context>``."""
        return [f"u:{user}", *("c:" + f for f in encode_context(context, self.context_keys))]

    def item_features(self, item: Item) -> list[str]:
        """The item-side feature keys: ``i:<id>``, ``a:<artist>``, ``g:<genre>`` (deduplicated)."""
        return self._item_keys(item.item_id, item.artist, item.genres)

    def _item_keys(self, item_id: str, artist: str, genres: Sequence[str]) -> list[str]:
        keys = [f"i:{item_id}"]
        if artist:
            keys.append(f"a:{artist}")
        for genre in genres[: self.max_genres]:
            key = f"g:{genre}"
            if key not in keys:
                keys.append(key)
        return keys

    # ------------------------------------------------------------------ learning

    def learn_one(
        self, user: str, item: Item, reward: float, context: Context, w: float = 1.0
    ) -> float:
        """One SGD step towards ``reward`` (a soft label in [0, 1]) with sample weight ``w``.

        Returns :meth:`predict_one` as it was *before* the step (up to float round-off), for
        progressive validation at no extra cost. ``w = 0`` is a no-op. The inputs are never
        mutated.
        """
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {reward!r}")
        if not (w >= 0.0 and math.isfinite(w)):
            raise ValueError(f"w must be finite and >= 0, got {w!r}")
        if w == 0.0:
            return self.predict_one(user, item, context)
        item_keys = self.item_features(item)
        keys = self.user_features(user, context) + item_keys
        fm = self._fm
        fm.served_logit = None
        # All features are one-hot with value 1; numeric values keep River from re-encoding.
        fm.learn_one(dict.fromkeys(keys, 1), float(reward), w=float(w))
        self.n_learned += 1
        self._touched.update(item_keys)
        self._sync(keys)
        return _sigmoid(fm.served_logit or 0.0)

    def pop_touched(self) -> set[str]:
        """Item-side keys (``i:<id>``, ``a:<artist>``, ``g:<genre>``) changed since the last call.

        An item's vector must be recomputed when any of its :meth:`item_features` is in the set.
        """
        touched, self._touched = self._touched, set()
        return touched

    # ------------------------------------------------------------------ numpy mirror

    def _reset_mirror(self) -> None:
        # Row 0 is the zero vector for features never learned (River's defaultdict would draw
        # random latents for them, and only while learning may the model change).
        self._rows: dict[str, int] = {}
        self._V = np.zeros((1024, self.n_factors))
        self._w = np.zeros(1024)
        self._intercept = 0.0
        self._item_cache: dict[str, tuple[str, tuple[str, ...], tuple[int, ...], int]] = {}
        # the serving path's cache (see item_rows_at): direct-mapped, by key modulo its size
        size = 1 << max(1, (self.item_cache_size - 1).bit_length())
        self._at_key = np.full(size, -1, dtype=np.int64)
        self._at_rev = np.zeros(size, dtype=np.int64)
        self._at_stamp = np.zeros(size, dtype=np.int64)
        self._at_rows = np.zeros((size, 2 + self.max_genres), dtype=np.intp)

    def _row(self, key: str) -> int:
        row = self._rows.get(key)
        if row is None:
            row = len(self._rows) + 1
            if row >= len(self._w):
                self._V = np.concatenate([self._V, np.zeros_like(self._V)])
                self._w = np.concatenate([self._w, np.zeros_like(self._w)])
            self._rows[key] = row
        return row

    def _sync(self, keys: Iterable[str]) -> None:
        latents, weights = self._fm.latents, self._fm.weights
        for key in keys:
            row = self._row(key)
            self._V[row] = latents[key]
            self._w[row] = weights[key]
        self._intercept = float(self._fm.intercept)

    def _item_rows(self, items: Sequence[Item]) -> np.ndarray:
        """(n, 2 + max_genres) row indices into the mirror, 0 for absent or unseen features."""
        width = 2 + self.max_genres
        cache = self._item_cache
        n_rows = len(self._rows)
        out: list[tuple[int, ...]] = []
        append = out.append
        for item in items:
            hit = cache.get(item.item_id)
            if (
                hit is not None
                and hit[0] == item.artist
                and hit[1] == item.genres
                and (hit[3] < 0 or hit[3] == n_rows)
            ):
                append(hit[2])
                continue
            rows = [self._rows.get(key, 0) for key in self.item_features(item)]
            complete = all(rows)
            rows += [0] * (width - len(rows))
            if len(cache) >= self.item_cache_size:
                cache.clear()
            # Rows of known keys never change; rows of unseen keys are rechecked whenever a new
            # key has been learned since (recorded as the key count at caching time).
            cache[item.item_id] = (
                item.artist,
                item.genres,
                tuple(rows),
                -1 if complete else n_rows,
            )
            append(tuple(rows))
        flat = np.fromiter(chain.from_iterable(out), dtype=np.intp, count=len(out) * width)
        return flat.reshape(len(out), width)

    def item_rows_at(
        self,
        keys: np.ndarray,
        revisions: np.ndarray,
        columns: Callable[[list[int]], FeatureColumns],
    ) -> np.ndarray:
        """:meth:`_item_rows` of the items under ``keys`` (non-negative ints, such as catalog
        rows), cached by key while its ``revision`` stays the same: the look-up and the
        check are array operations, and only missing or changed keys read the items'
        ``columns(keys)`` (ids, artists, genres). A dict of item ids did the same per item in
        Python, and at a million items its misses in the processor's caches cost about a
        tenth of a list.

        Not thread-safe (a slot is several array writes): the serving path calls it under
        the engine lock, and index refreshes use :meth:`item_vectors` instead.
        """
        keys = np.asarray(keys, dtype=np.int64)
        revisions = np.asarray(revisions, dtype=np.int64)
        slots = keys & (self._at_key.size - 1)
        n_rows = len(self._rows)
        stamp = self._at_stamp[slots]
        hit = (
            (self._at_key[slots] == keys)
            & (self._at_rev[slots] == revisions)
            & ((stamp < 0) | (stamp == n_rows))
        )
        if hit.all():
            return self._at_rows[slots]
        out = self._at_rows[slots]
        miss = np.flatnonzero(~hit)
        built, complete = self._feature_rows(*columns(keys[miss].tolist()))
        out[miss] = built
        # two keys in one slot: the later one stays (a cache, so either is right)
        self._at_key[slots[miss]] = keys[miss]
        self._at_rev[slots[miss]] = revisions[miss]
        self._at_stamp[slots[miss]] = np.where(complete, -1, n_rows)
        self._at_rows[slots[miss]] = built
        return out

    def _feature_rows(
        self, ids: Sequence[str], artists: Sequence[str], genres: Sequence[Sequence[str]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, 2 + max_genres) mirror rows of the features of the items given as columns,
        uncached (0: absent or not learned yet), and whether each item's features are all
        learned (its rows then never change)."""
        width = 2 + self.max_genres
        get, keys_of = self._rows.get, self._item_keys
        flat: list[int] = []
        complete: list[bool] = []
        for item_id, artist, gs in zip(ids, artists, genres, strict=True):
            rows = [get(key, 0) for key in keys_of(item_id, artist, gs)]
            complete.append(all(rows))
            flat.extend(rows)
            flat.extend([0] * (width - len(rows)))
        return (
            np.array(flat, dtype=np.intp).reshape(-1, width),
            np.array(complete, dtype=bool),
        )

    def _user_parts(self, user: str, context: Context) -> tuple[np.ndarray, float]:
        rows = [self._rows.get(k, 0) for k in self.user_features(user, context)]
        V = self._V[rows]
        s = V.sum(axis=0)
        pairs = 0.5 * (s @ s - float(np.einsum("ij,ij->", V, V)))
        const = self._intercept + float(self._w[rows].sum()) + pairs
        return s, const

    def _item_parts(self, items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
        return self._parts_of(self._item_rows(items))

    def _parts_of(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        V = self._V[idx]  # (n, F, k)
        s = V.sum(axis=1)
        sq = np.einsum("nfk,nfk->n", V, V)
        bias = self._w[idx].sum(axis=1) + 0.5 * (np.einsum("nk,nk->n", s, s) - sq)
        return s, bias

    # ------------------------------------------------------------------ prediction

    def _scored(
        self, user: str, items: Sequence[Item], context: Context
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities of ``items`` and their item-side parts (latent sums, biases)."""
        s, bias = self._item_parts(items)
        return self._probabilities(user, context, s, bias), s, bias

    def _probabilities(
        self, user: str, context: Context, s: np.ndarray, bias: np.ndarray
    ) -> np.ndarray:
        """Probabilities from the items' parts (latent sums, biases) and the user's."""
        u, const = self._user_parts(user, context)
        logits = const + bias + s @ u
        return 1.0 / (1.0 + np.exp(-logits))

    @staticmethod
    def _vectors(s: np.ndarray, bias: np.ndarray) -> np.ndarray:
        return np.hstack([s, bias[:, None]]).astype(np.float32)

    def predict_many(self, user: str, items: Sequence[Item], context: Context) -> np.ndarray:
        """Probabilities for every item, vectorized; equal to :meth:`predict_one` per item."""
        return self._scored(user, items, context)[0]

    def predict_many_with_vectors(
        self, user: str, items: Sequence[Item], context: Context
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_many` and :meth:`item_vectors` of the same items in one pass (the
        serving path needs both)."""
        probabilities, s, bias = self._scored(user, items, context)
        return probabilities, self._vectors(s, bias)

    def predict_at_with_vectors(
        self,
        user: str,
        context: Context,
        keys: np.ndarray,
        revisions: np.ndarray,
        columns: Callable[[list[int]], FeatureColumns],
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_many_with_vectors` of the items under ``keys`` (see
        :meth:`item_rows_at`): the serving path passes catalog rows, so nothing about an
        item is read unless its features are not cached."""
        s, bias = self._parts_of(self.item_rows_at(keys, revisions, columns))
        return self._probabilities(user, context, s, bias), self._vectors(s, bias)

    def predict_one(self, user: str, item: Item, context: Context) -> float:
        """Probability of a positive outcome for ``item`` (equal to :meth:`predict_many`'s up to
        float round-off; one item is scored as one FM over all its features, which is cheaper
        than the two-tower split)."""
        get = self._rows.get
        rows = [get(k, 0) for k in self.user_features(user, context)]
        rows.extend(get(k, 0) for k in self.item_features(item))
        V = self._V[rows]
        s = V.sum(axis=0)
        pairs = 0.5 * (float(s @ s) - float(np.einsum("ij,ij->", V, V)))
        return _sigmoid(self._intercept + float(self._w[rows].sum()) + pairs)

    def user_vector(self, user: str, context: Context) -> np.ndarray:
        """``[sum of user-side latents, 1]`` as float32, length :attr:`dim`."""
        u, _ = self._user_parts(user, context)
        return np.append(u, 1.0).astype(np.float32)

    def item_vectors(self, items: Sequence[Item]) -> np.ndarray:
        """``(n, dim)`` float32: ``[sum of item-side latents, item bias]`` per item."""
        return self._vectors(*self._item_parts(items))

    def item_vectors_of(self, columns: FeatureColumns) -> np.ndarray:
        """:meth:`item_vectors` of items given as columns (ids, artists, genres), uncached:
        index refreshes compute thousands per second, mostly of items seen once per sweep,
        and an ``Item`` per row cost them more than the vectors did."""
        return self._vectors(*self._parts_of(self._feature_rows(*columns)[0]))

    def item_vector(self, item: Item) -> np.ndarray:
        """One row of :meth:`item_vectors`."""
        return self.item_vectors([item])[0]

    # ------------------------------------------------------------------ persistence

    def dump(self, path: Path) -> None:
        """Write the model to ``path`` (a pickle: load only files segue wrote)."""
        state = {
            "params": self._params(),
            "fm": self._fm,
            "n_learned": self.n_learned,
            "touched": sorted(self._touched),
        }
        write_state(path, _FORMAT, state)

    @classmethod
    def load(cls, path: Path) -> RelevanceModel:
        """Read a model written by :meth:`dump`; it predicts and learns exactly as before."""
        state = read_state(path, _FORMAT, "relevance model")
        model = cls(**state["params"])
        model._fm = state["fm"]
        model.n_learned = state["n_learned"]
        model._touched = set(state["touched"])
        model._sync(list(model._fm.latents))
        return model
