"""The bandit reranker: a Vowpal Wabbit contextual bandit that fills a list slot by slot.

:class:`BanditReranker` places ``k`` items one slot at a time. For each slot every still
eligible candidate is an action of a ``--cb_explore_adf`` problem (action-dependent features);
VW estimates each action's cost (``-reward``), an exploration rule turns the estimates into a
probability mass function, and the action is sampled with ``self._rng`` (a seeded numpy
``Generator``), so the same seed gives the same lists. The placed entry records the exact
features served, its ``propensity`` (the probability of that action at that slot) and whether
it was ``explored`` (differs from the greedy choice). Candidates come as :class:`Candidate`
objects or, on the engine's request path, as :class:`CandidateColumns` (the same list, without
an object per item).

Namespaces (VW keys features by the first letter of a namespace):

* ``s`` shared: the listener/context mapping, one-hot via :func:`online.relevance.encode_context`
  (prefixed ``c:``);
* ``p`` shared, per slot: ``pos = log1p(position)``;
* ``a`` action: ``rel`` (relevance), ``pop`` and ``trend`` (``sign(x) * log1p(|x|)``),
  ``fresh = 1 / (1 + age_days / 7)`` (novelty), ``exp_item`` and ``exp_artist``
  (``log1p`` of the exposure counts: fatigue);
* ``d`` action, per slot: ``sim``, the largest cosine between the candidate's vector and the
  items already placed (0 on the first slot or without vectors): diversity.

Interactions ``-q sa -q sd -q pa -q pd`` let the trade-offs depend on the listener and on the
position. A :class:`~feedback.events.SlateEntry`'s ``features`` holds these values (rounded to
4 decimals, the values VW saw) under the names above, ``pos`` included.

Sample weights, and why they go through the propensity
------------------------------------------------------
VW's CB label parsers (text and JSON) always set the label weight to 1 and the Python binding
offers no way to set an example weight, so an importance weight cannot be passed directly.
With ``--cb_type mtr`` (the cb_adf default, used here) the placed action is regressed on its
cost with importance ``(1 / p) * (events / actions)``, where ``p`` is the label's probability;
the probability is used nowhere else when learning. So segue learns with ``p / w``: the
importance becomes exactly ``w / p``. The text parser clamps a probability above 1 to 1, the
JSON parser does not, so examples are sent as JSON. Learning examples hold only the placed
action, so ``events / actions`` stays 1.

``"squarecb"``: VW's ``--squarecb`` reduction overwrites the probability with 1 before
learning (SquareCB regresses without importance weighting), which would also erase ``w``. So
in that mode VW runs as the greedy cost regressor and segue applies the SquareCB rule of
Foster & Rakhlin (2020), as VW implements it, to VW's cost estimates:
``p_a = 1 / (K + gamma * (c_a - c_min))`` for every non-greedy action, the rest of the mass on
the greedy one, ``gamma = gamma_scale * n_learned ** gamma_exponent``; learning uses the
probability ``1 / w``, an importance of exactly ``w``. ``"epsilon"`` and ``"softmax"`` use
VW's own pmf (``--epsilon``, ``--softmax --lambda``).

How a slot is scored
--------------------
Only ``pos`` and ``sim`` change from slot to slot, and VW's cost estimate is linear in its
features (GD's raw prediction, before any clamping), so an action's cost at any slot is
``a + pos * b + sim * (c + pos * d)``, and ``a`` and ``b`` are themselves linear in the six
static features. Under SquareCB, whose rule is segue's, VW predicts eight probe actions at
two positions (:meth:`BanditReranker._linear_terms`), which gives every action's terms
without parsing the pool, and the 30 slots are a loop compiled with Numba
(:mod:`online._slots`) that releases the interpreter lock; the plain loop with a VW
prediction per slot is the test oracle (equal up to float32 rounding).
``"epsilon"`` and ``"softmax"`` read VW's own pmf, so they ask VW at every slot. Every rule
draws its uniforms before the loop, one per slot that can be filled, so a list takes the same
draws from the seeded stream whichever loop fills it.

``w = 0`` returns without calling VW, leaving the model exactly unchanged; VW's
importance-aware updates move a smaller ``w`` less.

Thread safety: a VW workspace is not thread-safe. Callers serialize every call on one
reranker (the engine holds a lock); never share one across threads unlocked.

>>> import numpy as np
>>> bandit = BanditReranker(exploration="epsilon", epsilon=0.2, seed=3)
>>> cands = [Candidate(f"t{i}", f"ar{i % 2}", None, relevance=i / 4) for i in range(4)]
>>> slate = bandit.rank({"user": "anna"}, cands, k=3, max_per_artist=1)
>>> len(slate), len({c.artist for c in cands if c.item_id in {e.item_id for e in slate}})
(2, 2)
>>> all(0.0 < e.propensity <= 1.0 for e in slate)
True
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pylibvw
import vowpalwabbit

from feedback.events import SlateEntry
from online._slots import fill_squarecb
from online._statefile import read_state, write_state
from online.relevance import encode_context

__all__ = ["ACTION_FEATURES", "BanditReranker", "Candidate", "CandidateColumns"]

_FORMAT = "segue.bandit/1"
Exploration = Literal["epsilon", "softmax", "squarecb"]
EXPLORATIONS: tuple[str, ...] = ("epsilon", "softmax", "squarecb")

# Static per-candidate features (namespace "a"), then the per-slot ones.
_STATIC = ("rel", "pop", "trend", "fresh", "exp_item", "exp_artist")
ACTION_FEATURES: tuple[str, ...] = (*_STATIC, "sim", "pos")
_DIGITS = 4
# A placeholder for the per-slot features at parse time: VW drops zero-valued features and
# then ignores a namespace that is absent, so the slot loop must find one feature to overwrite.
_PLACEHOLDER = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class Candidate:
    """One item the reranker may place, with the signals the bandit trades off.

    ``vector`` (any fixed dimension, e.g. the relevance model's item vector) is used for the
    similarity to already placed items; ``None`` means similarity 0. ``popularity`` and
    ``trend`` are the engine's scores (counts or rates; log-scaled here), ``age_days`` the
    item's age, ``exposure_*`` how often this listener was recently shown the item / artist.
    """

    item_id: str
    artist: str
    vector: np.ndarray | None
    relevance: float
    popularity: float = 0.0
    trend: float = 0.0
    age_days: float = 0.0
    exposure_item: float = 0.0
    exposure_artist: float = 0.0


def _slog(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


def _static_features(c: Candidate) -> dict[str, float]:
    """One candidate's features in namespace ``a``: the definition that :func:`_static_rows`
    computes for many candidates at once."""
    return {
        "rel": round(float(c.relevance), _DIGITS),
        "pop": round(_slog(float(c.popularity)), _DIGITS),
        "trend": round(_slog(float(c.trend)), _DIGITS),
        "fresh": round(1.0 / (1.0 + max(0.0, float(c.age_days)) / 7.0), _DIGITS),
        "exp_item": round(math.log1p(max(0.0, float(c.exposure_item))), _DIGITS),
        "exp_artist": round(math.log1p(max(0.0, float(c.exposure_artist))), _DIGITS),
    }


@dataclass(frozen=True, slots=True, eq=False)
class CandidateColumns:
    """Many candidates as columns, row ``i`` being one candidate: what :meth:`BanditReranker.rank`
    reads from a sequence of :class:`Candidate`, without an object per item.

    ``vectors`` is ``(n, dim)`` (a zero row means similarity 0, like ``vector=None``), or
    ``None`` when no candidate has one; the other columns hold ``n`` numbers each.
    """

    item_ids: Sequence[str]
    artists: Sequence[str]
    vectors: np.ndarray | None
    relevance: np.ndarray
    popularity: np.ndarray
    trend: np.ndarray
    age_days: np.ndarray
    exposure_item: np.ndarray
    exposure_artist: np.ndarray

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> CandidateColumns:
        """The columns of ``candidates``, in their order."""
        vectors = None
        if any(c.vector is not None for c in candidates):
            dim = next(len(c.vector) for c in candidates if c.vector is not None)
            vectors = np.zeros((len(candidates), dim))
            has = [i for i, c in enumerate(candidates) if c.vector is not None]
            vectors[has] = np.array([candidates[i].vector for i in has], dtype=float)

        def column(name: str) -> np.ndarray:
            return np.array([float(getattr(c, name)) for c in candidates], dtype=float)

        return cls(
            item_ids=[c.item_id for c in candidates],
            artists=[c.artist for c in candidates],
            vectors=vectors,
            relevance=column("relevance"),
            popularity=column("popularity"),
            trend=column("trend"),
            age_days=column("age_days"),
            exposure_item=column("exposure_item"),
            exposure_artist=column("exposure_artist"),
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def take(self, rows: Sequence[int]) -> CandidateColumns:
        """The candidates at ``rows``, in that order."""
        ids, artists = self.item_ids, self.artists
        return CandidateColumns(
            item_ids=[ids[i] for i in rows],
            artists=[artists[i] for i in rows],
            vectors=None if self.vectors is None else self.vectors[rows],
            relevance=np.asarray(self.relevance, dtype=float)[rows],
            popularity=np.asarray(self.popularity, dtype=float)[rows],
            trend=np.asarray(self.trend, dtype=float)[rows],
            age_days=np.asarray(self.age_days, dtype=float)[rows],
            exposure_item=np.asarray(self.exposure_item, dtype=float)[rows],
            exposure_artist=np.asarray(self.exposure_artist, dtype=float)[rows],
        )


_SCALE = 10.0**_DIGITS
# the position feature of the first slots, as the slot loop computes it
_POSITION_VALUES = tuple(round(math.log1p(p), _DIGITS) for p in range(128))


def _position_value(position: int) -> float:
    """The ``pos`` feature of a slot: ``log1p(position)`` rounded as every served feature."""
    if position < len(_POSITION_VALUES):
        return _POSITION_VALUES[position]
    return round(math.log1p(position), _DIGITS)


def _round(x: np.ndarray) -> np.ndarray:
    """``round(v, _DIGITS)`` of every value of ``x``, bit for bit as Python rounds a float.

    numpy's rounding scales, rounds to an integer and scales back; that agrees with Python's
    correctly rounded result unless the scaled value lies within its own rounding error of a
    half (or is huge, or not finite): Python rounds those few values itself.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # those values are Python's to round
        scaled = x * _SCALE
        out = np.rint(scaled) / _SCALE
        sure = (np.abs(scaled - np.floor(scaled) - 0.5) > 1e-6) & (np.abs(scaled) < 1e9)
    if not sure.all():
        flat, values = out.reshape(-1), x.reshape(-1)
        for i in np.flatnonzero(~sure).tolist():
            flat[i] = round(float(values[i]), _DIGITS)
    return out


def _static_table(columns: CandidateColumns) -> np.ndarray:
    """:func:`_static_features` of every candidate as a ``(n, 6)`` table (columns in
    ``_STATIC`` order), the same values computed column by column.

    The logarithms are Python's own (numpy's differ from them in the last bit for some
    inputs), the arithmetic is IEEE in both, and :func:`_round` rounds as ``round`` does.
    """
    log1p, copysign = math.log1p, math.copysign

    def slog(values: np.ndarray) -> list[float]:
        x = np.asarray(values, dtype=float).tolist()
        return list(map(copysign, map(log1p, map(abs, x)), x))

    def log1p_positive(values: np.ndarray) -> list[float]:
        x = np.asarray(values, dtype=float)
        return list(map(log1p, np.where(x > 0.0, x, 0.0).tolist()))  # max(0.0, x), NaN -> 0

    age = np.asarray(columns.age_days, dtype=float)
    return _round(
        np.array(
            [
                np.asarray(columns.relevance, dtype=float),
                slog(columns.popularity),
                slog(columns.trend),
                1.0 / (1.0 + np.where(age > 0.0, age, 0.0) / 7.0),
                log1p_positive(columns.exposure_item),
                log1p_positive(columns.exposure_artist),
            ],
            dtype=float,
        ).reshape(len(_STATIC), len(columns))
    ).T


def _static_rows(columns: CandidateColumns) -> list[dict[str, float]]:
    """:func:`_static_features` of every candidate, from :func:`_static_table`."""
    return [dict(zip(_STATIC, row, strict=True)) for row in _static_table(columns).tolist()]


def _squarecb_pmf(costs: np.ndarray, gamma: float) -> np.ndarray:
    """SquareCB's pmf: ``1 / (K + gamma * (c - c_min))`` for every action but the greedy one
    (the first minimum), which gets the rest of the mass."""
    best = int(costs.argmin())
    pmf = 1.0 / ((costs - costs[best]) * gamma + len(costs))
    pmf[best] = 0.0
    pmf[best] = max(0.0, 1.0 - float(pmf.sum()))
    return pmf


class BanditReranker:
    """Fills ``k`` slots one by one with a VW ``--cb_explore_adf`` contextual bandit.

    See the module docstring for features, exploration and how ``w`` reaches VW.
    """

    def __init__(
        self,
        exploration: Exploration = "epsilon",
        epsilon: float = 0.1,
        softmax_lambda: float = 10.0,
        gamma_scale: float = 10.0,
        gamma_exponent: float = 0.5,
        learning_rate: float = 0.5,
        bits: int = 20,
        seed: int = 0,
    ) -> None:
        if exploration not in EXPLORATIONS:
            raise ValueError(f"exploration must be one of {EXPLORATIONS}, got {exploration!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        if not 1 <= bits <= 30:
            raise ValueError(f"bits must be in [1, 30], got {bits!r}")
        self.exploration = exploration
        self.epsilon = epsilon
        self.softmax_lambda = softmax_lambda
        self.gamma_scale = gamma_scale
        self.gamma_exponent = gamma_exponent
        self.learning_rate = learning_rate
        self.bits = bits
        self.seed = seed

        self._rng = np.random.default_rng(seed)
        self.n_learned = 0
        self._ws = vowpalwabbit.Workspace(self._vw_args())
        self._sim_index, self._pos_index = self._slot_feature_indices()

    # ------------------------------------------------------------------ setup

    def _params(self) -> dict[str, Any]:
        return {
            "exploration": self.exploration,
            "epsilon": self.epsilon,
            "softmax_lambda": self.softmax_lambda,
            "gamma_scale": self.gamma_scale,
            "gamma_exponent": self.gamma_exponent,
            "learning_rate": self.learning_rate,
            "bits": self.bits,
            "seed": self.seed,
        }

    def _vw_args(self) -> str:
        args = [
            "--cb_explore_adf --cb_type mtr --json --quiet --save_resume",
            f"-b {self.bits} -l {self.learning_rate!r} --random_seed {self.seed}",
            "-q sa -q sd -q pa -q pd",
        ]
        if self.exploration == "epsilon":
            args.append(f"--epsilon {self.epsilon!r}")
        elif self.exploration == "softmax":
            args.append(f"--softmax --lambda {self.softmax_lambda!r}")
        else:  # squarecb: VW regresses greedily, segue applies the SquareCB rule.
            args.append("--epsilon 0")
        return " ".join(args)

    def _slot_feature_indices(self) -> tuple[int, int]:
        # The hashed (and strided) indices VW's parser gives "sim" in "d" and "pos" in "p", so
        # the slot loop can overwrite them in parsed examples instead of re-parsing.
        exs = self._ws.parse(
            json.dumps({"p": {"pos": _PLACEHOLDER}, "_multi": [{"d": {"sim": _PLACEHOLDER}}]})
        )
        try:
            return pylibvw.example.feature(exs[1], ord("d"), 0), pylibvw.example.feature(
                exs[0], ord("p"), 0
            )
        finally:
            self._ws.finish_example(exs)

    def clone(self) -> BanditReranker:
        """A fresh, untrained reranker with the same hyperparameters."""
        return type(self)(**self._params())

    def close(self) -> None:
        """Release the VW workspace (also done when the object is collected)."""
        if self._ws is not None:
            self._ws.finish()
            self._ws = None

    # ------------------------------------------------------------------ examples

    @staticmethod
    def _shared_namespace(shared: Mapping[str, Any]) -> dict[str, int]:
        return {"c:" + f: 1 for f in encode_context(shared)}

    def _set(self, ex: Any, ns: str, index: int, value: float) -> None:
        pylibvw.example.pop_feature(ex, ord(ns))
        pylibvw.example.push_hashed_feature(ex, ord(ns), index, value)

    def _predict(self, exs: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """The pmf over ``exs[1:]`` (VW's, or segue's SquareCB) and, for SquareCB, the costs.

        Calls the binding under ``Workspace.predict`` directly: the wrapper's type checks and
        enum look-ups cost more than VW's prediction itself over a slate's 30 calls.
        """
        pylibvw.vw.predict_multi(self._ws, exs)
        if self.exploration == "squarecb":
            costs = np.fromiter((e.get_partial_prediction() for e in exs[1:]), float, len(exs) - 1)
            return self._squarecb(costs), costs
        pmf = np.asarray(exs[0].get_action_scores(), dtype=float)
        return pmf / pmf.sum(), None

    @property
    def _gamma(self) -> float:
        """SquareCB's greediness now: ``gamma_scale * n_learned ** gamma_exponent``."""
        return self.gamma_scale * float(self.n_learned) ** self.gamma_exponent

    def _squarecb(self, costs: np.ndarray) -> np.ndarray:
        return _squarecb_pmf(np.asarray(costs, dtype=float), self._gamma)

    # ------------------------------------------------------------------ ranking

    def rank(
        self,
        shared: Mapping[str, Any],
        candidates: Sequence[Candidate] | CandidateColumns,
        k: int,
        *,
        explore: bool = True,
        max_per_artist: int | None = None,
        exclude: Collection[str] = (),
    ) -> list[SlateEntry]:
        """Fill up to ``k`` slots from ``candidates`` (objects, or the same as columns).

        Hard rules: no item in ``exclude`` is placed, no artist gets more than
        ``max_per_artist`` slots, an item id is placed at most once; fewer than ``k`` entries
        come back only when no eligible candidate is left. ``explore=False`` places the greedy
        choice at every slot with propensity 1.0 and ``explored=False``. ``score`` is VW's
        estimated reward of the placed item at its slot.
        """
        if max_per_artist is not None and max_per_artist < 1:
            raise ValueError(f"max_per_artist must be >= 1 or None, got {max_per_artist!r}")
        excluded = set(exclude)
        seen: set[str] = set()
        columns: CandidateColumns | None = None
        objects: list[Candidate] = []
        if isinstance(candidates, CandidateColumns):
            columns = candidates
            ids = columns.item_ids
        else:
            objects = list(candidates)
            ids = [c.item_id for c in objects]
        rows: list[int] = []
        for i, item_id in enumerate(ids):
            if item_id in excluded or item_id in seen:
                continue
            seen.add(item_id)
            rows.append(i)
        if k <= 0 or not rows:
            return []
        if columns is None:
            pool = CandidateColumns.of([objects[i] for i in rows])
        else:
            pool = columns if len(rows) == len(ids) else columns.take(rows)
        return self._fill(shared, pool, k, explore, max_per_artist)

    def _fill(
        self,
        shared: Mapping[str, Any],
        pool: CandidateColumns,
        k: int,
        explore: bool,
        max_per_artist: int | None,
    ) -> list[SlateEntry]:
        """The slot loop of :meth:`rank` over distinct, allowed candidates."""
        n = len(pool)
        ids, artists = pool.item_ids, pool.artists
        # Unit vectors for the cosine similarity; rows of candidates without a vector stay 0.
        units = None
        if pool.vectors is not None:
            units = np.array(pool.vectors, dtype=float)
            norms = np.sqrt(np.einsum("ij,ij->i", units, units))
            nonzero = norms > 0.0
            units[nonzero] /= norms[nonzero, None]
        # one uniform per slot that can be filled, drawn before the loop (the same stream for
        # every exploration rule; the greedy list draws none)
        uniforms = self._rng.random(min(k, n)) if explore else None
        if self.exploration == "squarecb":  # the rule is segue's: costs alone suffice
            table = _static_table(pool)
            terms = self._linear_terms(shared, table)
            return self._fill_linear(pool, table, units, terms, k, uniforms, max_per_artist)
        static = _static_rows(pool)
        doc = {
            "s": self._shared_namespace(shared),
            "p": {"pos": _PLACEHOLDER},
            "_multi": [{"a": f, "d": {"sim": _PLACEHOLDER}} for f in static],
        }
        # The bindings under Workspace.parse / predict / finish_example: the wrappers build a
        # Python Example per action and check types on every call, which costs several times
        # VW's own parse and predictions.
        ws = self._ws
        exs = pylibvw.vw._parse(ws, orjson.dumps(doc).decode())
        sim = np.zeros(n)
        served_sim = np.full(n, _PLACEHOLDER)  # the value currently in each parsed example
        rounded = np.empty(n)
        eligible_mask = np.ones(n, dtype=bool)  # not placed, artist below its cap
        by_artist: dict[str, list[int]] = {}
        for i, artist in enumerate(artists):
            by_artist.setdefault(artist, []).append(i)
        per_artist: Counter[str] = Counter()
        slate: list[SlateEntry] = []
        pop_feature, push_feature = pylibvw.example.pop_feature, pylibvw.example.push_hashed_feature
        partial = pylibvw.example.get_partial_prediction
        ns_p, ns_d = ord("p"), ord("d")
        sim_index, pos_index = self._sim_index, self._pos_index
        predict_multi = pylibvw.vw.predict_multi

        try:
            shared_ex, actions = exs[0], exs[1:]
            # the eligible rows and their examples, in row order, kept as lists: placing an
            # item removes one entry, an artist reaching its cap removes a few
            eligible = list(range(n))
            batch = [shared_ex, *actions]
            for position in range(k):
                m = len(eligible)
                if m == 0:
                    break
                pos_value = _position_value(position)
                pop_feature(shared_ex, ns_p)
                push_feature(shared_ex, ns_p, pos_index, pos_value)
                # np.round(sim, _DIGITS) step for step (scale, rint, unscale), in place
                np.multiply(sim, _SCALE, out=rounded)
                np.rint(rounded, out=rounded)
                np.divide(rounded, _SCALE, out=rounded)
                differs = rounded != served_sim
                differs &= eligible_mask
                changed = differs.nonzero()[0]
                if len(changed):
                    values = rounded[changed]
                    served_sim[changed] = values
                    for idx, value in zip(changed.tolist(), values.tolist(), strict=True):
                        ex = actions[idx]
                        pop_feature(ex, ns_d)
                        push_feature(ex, ns_d, sim_index, value)
                # VW's prediction for every eligible action of this slot in one call
                predict_multi(ws, batch)
                chosen_actions = batch[1:]
                pmf = np.asarray(shared_ex.get_action_scores(), dtype=float)
                probs = (pmf / pmf.sum()).tolist()
                # plain lists beat numpy's per-call cost here, with the same arithmetic
                # (argmax's first maximum, cumsum's running sum, searchsorted(side="right")
                # is bisect_right)
                greedy = probs.index(max(probs))
                if uniforms is not None:
                    j = min(bisect_right(list(accumulate(probs)), uniforms[position]), m - 1)
                    while probs[j] <= 0.0:  # float round-off at the top end of the cdf
                        j -= 1
                    propensity = probs[j]
                else:
                    j, propensity = greedy, 1.0
                cost = partial(chosen_actions[j])
                chosen = eligible[j]
                features = dict(static[chosen])
                features["sim"] = float(served_sim[chosen])
                features["pos"] = pos_value
                slate.append(
                    SlateEntry(
                        item_id=ids[chosen],
                        position=position,
                        score=-float(cost),
                        propensity=min(1.0, propensity),
                        explored=j != greedy,
                        features=features,
                    )
                )
                eligible_mask[chosen] = False
                del eligible[j]
                del batch[j + 1]
                artist = artists[chosen]
                per_artist[artist] += 1
                if max_per_artist is not None and per_artist[artist] >= max_per_artist:
                    capped = by_artist[artist]
                    eligible_mask[capped] = False
                    if len(capped) > 1:
                        keep = [t for t, row in enumerate(eligible) if eligible_mask[row]]
                        eligible = [eligible[t] for t in keep]
                        batch = [shared_ex, *(batch[t + 1] for t in keep)]
                if units is not None:
                    np.maximum(sim, units @ units[chosen], out=sim)
        finally:
            pylibvw.vw._finish_example_multi_ex(ws, exs)
        return slate

    def _linear_terms(
        self, shared: Mapping[str, Any], table: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, float]:
        """VW's cost estimate of every action as a function of the per-slot features.

        VW's prediction is linear in the features (``--cb_type mtr`` regresses with GD, whose
        raw prediction, the partial prediction read here, is not clamped). With the listener
        fixed, an action's cost at a slot is therefore ``alpha + sum_f beta_f * x_f + gamma *
        sim``, where ``x`` are its six static features and ``alpha``, ``beta``, ``gamma``
        depend only on ``pos``, linearly (``pos`` enters alone and through ``-q pa -q pd``).
        So the cost of row ``i`` at any slot is ``a_i + pos * b_i + sim * (c + pos * d)``.

        Eight probe actions give those coefficients whatever the pool's size: one without
        features (``alpha``), one per static feature at 1 (``alpha + beta_f``) and one with
        ``sim`` 1 (``alpha + gamma``), each predicted at ``pos`` 1 and 0; ``a`` and ``b`` are
        then one product with ``table`` (:func:`_static_table`, the values VW would have
        parsed). Parsing the pool as VW examples instead made ``rank`` of 30 from 100 take
        0.72 ms rather than 0.43 (``benchmarks/bench_models.py``). (Equal to a prediction
        per slot up to float32 rounding; the plain slot loop is the oracle in the tests.)
        """
        pop_feature, push_feature = pylibvw.example.pop_feature, pylibvw.example.push_hashed_feature
        partial = pylibvw.example.get_partial_prediction
        ws = self._ws
        exs = pylibvw.vw._parse(ws, self._probe_doc(shared))
        try:
            shared_ex, probes = exs[0], exs[1:]
            pylibvw.vw.predict_multi(ws, exs)
            at1 = np.fromiter(map(partial, probes), dtype=float, count=len(probes))
            pop_feature(shared_ex, ord("p"))
            push_feature(shared_ex, ord("p"), self._pos_index, 0.0)
            pylibvw.vw.predict_multi(ws, exs)
            at0 = np.fromiter(map(partial, probes), dtype=float, count=len(probes))
        finally:
            pylibvw.vw._finish_example_multi_ex(ws, exs)
        # probes: [none, rel, pop, trend, fresh, exp_item, exp_artist, sim]
        alpha0, beta0, gamma0 = at0[0], at0[1:-1] - at0[0], at0[-1] - at0[0]
        alpha1, beta1, gamma1 = at1[0], at1[1:-1] - at1[0], at1[-1] - at1[0]
        a = table @ beta0 + alpha0
        b = table @ (beta1 - beta0) + (alpha1 - alpha0)
        return a, b, float(gamma0), float(gamma1 - gamma0)

    def _probe_doc(self, shared: Mapping[str, Any]) -> str:
        """The JSON of :meth:`_linear_terms`' probe actions for this listener, at ``pos`` 1."""
        return orjson.dumps(
            {
                "s": self._shared_namespace(shared),
                "p": {"pos": 1.0},
                "_multi": [{}, *({"a": {name: 1.0}} for name in _STATIC), {"d": {"sim": 1.0}}],
            }
        ).decode()

    def _fill_linear(
        self,
        pool: CandidateColumns,
        table: np.ndarray,
        units: np.ndarray | None,
        terms: tuple[np.ndarray, np.ndarray, float, float],
        k: int,
        uniforms: np.ndarray | None,
        max_per_artist: int | None,
    ) -> list[SlateEntry]:
        """The slot loop of :meth:`_fill` for SquareCB, from :meth:`_linear_terms`, compiled
        (:func:`online._slots.fill_squarecb`; it releases the interpreter lock)."""
        n = len(pool)
        ids, artists = pool.item_ids, pool.artists
        a, b, c, d = terms
        slots = min(k, n)
        positions = np.array([_position_value(p) for p in range(slots)])
        codes: dict[str, int] = {}
        artist_codes = np.array([codes.setdefault(x, len(codes)) for x in artists], dtype=np.int64)
        gamma = self._gamma
        rows = np.empty(slots, dtype=np.int64)
        propensities, costs, sims = np.empty(slots), np.empty(slots), np.empty(slots)
        explored = np.empty(slots, dtype=bool)
        filled = fill_squarecb(
            np.ascontiguousarray(a, dtype=np.float64),
            np.ascontiguousarray(b, dtype=np.float64),
            float(c),
            float(d),
            positions,
            np.ascontiguousarray(units if units is not None else np.zeros((n, 0))),
            artist_codes,
            max_per_artist or 0,
            gamma,
            uniforms is not None,
            uniforms if uniforms is not None else np.zeros(0),
            rows,
            propensities,
            costs,
            sims,
            explored,
        )
        slate: list[SlateEntry] = []
        for slot, j, propensity, cost, sim, flag in zip(
            range(filled),
            rows[:filled].tolist(),
            propensities[:filled].tolist(),
            costs[:filled].tolist(),
            sims[:filled].tolist(),
            explored[:filled].tolist(),
            strict=True,
        ):
            features = dict(zip(_STATIC, table[j].tolist(), strict=True))
            features["sim"] = sim
            features["pos"] = float(positions[slot])
            slate.append(SlateEntry(ids[j], slot, -cost, propensity, flag, features))
        return slate

    # ------------------------------------------------------------------ learning

    def _example(
        self,
        shared: Mapping[str, Any],
        features: Mapping[str, float],
        label: dict[str, float] | None = None,
    ) -> str:
        unknown = set(features) - set(ACTION_FEATURES)
        if unknown:
            raise ValueError(
                f"unknown action features {sorted(unknown)}; expected {ACTION_FEATURES}"
            )
        action: dict[str, Any] = {
            "a": {k: float(features[k]) for k in _STATIC if k in features},
            "d": {"sim": float(features.get("sim", 0.0))},
        }
        if label is not None:
            action["_label"] = label
        return orjson.dumps(
            {
                "s": self._shared_namespace(shared),
                "p": {"pos": float(features.get("pos", 0.0))},
                "_multi": [action],
            }
        ).decode()

    def learn_one(
        self,
        shared: Mapping[str, Any],
        features: Mapping[str, float],
        propensity: float,
        reward: float,
        w: float = 1.0,
    ) -> None:
        """Learn from one placed action: its served ``features``, ``propensity`` and ``reward``.

        The cost is ``-reward``; ``w`` is the sample weight (decay x type), applied as described
        in the module docstring. ``w = 0`` is a no-op. The inputs are never mutated.
        """
        if not 0.0 < propensity <= 1.0:
            raise ValueError(f"propensity must be in (0, 1], got {propensity!r}")
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward!r}")
        if not (w >= 0.0 and math.isfinite(w)):
            raise ValueError(f"w must be finite and >= 0, got {w!r}")
        if w == 0.0:
            return
        # SquareCB regresses without 1/p, so its importance is w; MTR's is (1/p) * w.
        probability = 1.0 / w if self.exploration == "squarecb" else propensity / w
        label = {"Cost": -float(reward), "Probability": probability}
        # The binding under Workspace.learn: its wrapper builds a Python Example per line and
        # re-checks types, which costs as much as VW's parse and update of this one action.
        ws = self._ws
        exs = ws._parse(self._example(shared, features, label))
        try:
            pylibvw.vw.learn_multi(ws, exs)
        finally:
            pylibvw.vw._finish_example_multi_ex(ws, exs)
        self.n_learned += 1

    def predict_one(self, shared: Mapping[str, Any], features: Mapping[str, float]) -> float:
        """VW's estimated reward for one action with these (served) features."""
        exs = self._ws.parse(self._example(shared, features))
        try:
            self._ws.predict(exs)
            return -float(exs[1].get_partial_prediction())
        finally:
            self._ws.finish_example(exs)

    # ------------------------------------------------------------------ persistence

    def dump(self, path: Path) -> None:
        """Write the reranker to ``path``: VW's model with resume state, the RNG, counters.

        A pickle of plain data (load only files segue wrote).
        """
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model.vw"
            self._ws.save(str(model))
            vw_bytes = model.read_bytes()
        state = {
            "params": self._params(),
            "n_learned": self.n_learned,
            "rng_state": self._rng.bit_generator.state,
            "vw_model": vw_bytes,
            "vw_version": vowpalwabbit.__version__,
        }
        write_state(path, _FORMAT, state, offer=False)  # the engine saves it under its lock

    @classmethod
    def load(cls, path: Path) -> BanditReranker:
        """Read a reranker written by :meth:`dump`; learning continues exactly as before."""
        state = read_state(path, _FORMAT, "bandit model")
        bandit = cls(**state["params"])
        bandit._ws.finish()
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model.vw"
            model.write_bytes(state["vw_model"])
            bandit._ws = vowpalwabbit.Workspace(f"{bandit._vw_args()} -i {model}")
        bandit._sim_index, bandit._pos_index = bandit._slot_feature_indices()
        bandit.n_learned = state["n_learned"]
        bandit._rng.bit_generator.state = state["rng_state"]
        return bandit

    def __del__(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            with contextlib.suppress(Exception):  # interpreter shutdown: nothing to release
                ws.finish()
