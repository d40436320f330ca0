"""Progressive-validation metrics of the relevance model, updated a learned chunk at a time.

The learner scores every relevance sample before learning it (``RelevanceModel.learn_one``
returns the served prediction) and feeds the predictions here once per chunk. segue keeps its
own two small accumulators instead of River's ``metrics.LogLoss`` / ``metrics.ROCAUC`` because
River updates one sample at a time (its ROC AUC walks ten confusion matrices per sample, about
5 us, a twentieth of the learner's whole budget per event) and approximates the curve with ten
thresholds; here a chunk is one numpy call and the AUC uses 4096 score bins, so it equals the
exact (Mann-Whitney) AUC up to pairs whose scores fall in the same bin, counted as ties.

>>> q = ProgressiveQuality()
>>> q.update([True, False, True, False], [0.9, 0.2, 0.6, 0.7])
>>> round(q.auc(), 4), q.n
(0.75, 4)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ProgressiveQuality"]

_EPS = 1e-15  # probabilities are clamped to [eps, 1 - eps] for the log loss, as River does


class ProgressiveQuality:
    """Running log loss and ROC AUC of binary outcomes against predicted probabilities."""

    def __init__(self, bins: int = 4096) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.bins = bins
        self.n = 0
        self._loss_sum = 0.0
        self._pos = np.zeros(bins, dtype=np.int64)
        self._neg = np.zeros(bins, dtype=np.int64)

    def update(
        self, positive: Sequence[bool] | np.ndarray, p: Sequence[float] | np.ndarray
    ) -> None:
        """Add outcomes ``positive`` with their predicted probabilities ``p``."""
        y = np.asarray(positive, dtype=bool)
        q = np.clip(np.asarray(p, dtype=float), _EPS, 1.0 - _EPS)
        if y.shape != q.shape or y.ndim != 1:
            raise ValueError("positive and p must be 1-d and of the same length")
        if not len(y):
            return
        self.n += len(y)
        self._loss_sum += float(-np.where(y, np.log(q), np.log1p(-q)).sum())
        b = np.minimum((q * self.bins).astype(np.intp), self.bins - 1)
        self._pos += np.bincount(b[y], minlength=self.bins)
        self._neg += np.bincount(b[~y], minlength=self.bins)

    def logloss(self) -> float:
        """Mean binary cross-entropy (``nan`` before any sample)."""
        return self._loss_sum / self.n if self.n else float("nan")

    def auc(self) -> float:
        """Probability that a positive outranks a negative, ties counting half (``nan`` while
        one class is missing)."""
        n_pos, n_neg = int(self._pos.sum()), int(self._neg.sum())
        if not n_pos or not n_neg:
            return float("nan")
        neg_below = np.cumsum(self._neg) - self._neg
        wins = float((self._pos * neg_below).sum()) + 0.5 * float((self._pos * self._neg).sum())
        return wins / (n_pos * n_neg)
