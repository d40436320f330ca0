"""ProgressiveQuality against exact, hand-checkable computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from online.quality import ProgressiveQuality


def exact_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney: the share of (positive, negative) pairs ranked right, ties counting half."""
    pos, neg = p[y], p[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_a_hand_computed_table():
    q = ProgressiveQuality()
    # positives 0.9 and 0.6, negatives 0.2 and 0.7: 3 of 4 pairs in order
    q.update([True, False], [0.9, 0.2])
    q.update([True, False], [0.6, 0.7])
    assert q.auc() == 0.75
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.3)) / 4
    assert q.logloss() == pytest.approx(expected, rel=1e-12)
    assert q.n == 4


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_mann_whitney_when_scores_fall_in_distinct_bins(seed):
    rng = np.random.default_rng(seed)
    # scores on a grid of bin centres: no two distinct scores share a bin, ties are exact
    bins = 4096
    p = (rng.integers(0, bins, size=3000) + 0.5) / bins
    y = rng.random(3000) < p  # informative, so the AUC is far from 0.5
    q = ProgressiveQuality(bins=bins)
    for chunk in np.array_split(np.arange(3000), 7):  # chunking changes nothing
        q.update(y[chunk], p[chunk])
    assert q.auc() == pytest.approx(exact_auc(y, p), abs=1e-12)
    assert q.auc() > 0.7


def test_continuous_scores_are_close_to_exact():
    rng = np.random.default_rng(9)
    p = rng.random(5000)
    y = rng.random(5000) < p
    q = ProgressiveQuality()
    q.update(y, p)
    assert q.auc() == pytest.approx(exact_auc(y, p), abs=1e-3)


def test_undefined_until_both_classes_are_seen():
    q = ProgressiveQuality()
    assert math.isnan(q.logloss()) and math.isnan(q.auc())
    q.update([True, True], [0.4, 0.8])
    assert math.isnan(q.auc())
    q.update([], [])
    assert q.n == 2
    with pytest.raises(ValueError, match="same length"):
        q.update([True], [0.1, 0.2])
