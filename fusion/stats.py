"""Uncertainty for small test sets: with ~100 test videos one video is one point of accuracy, so every gain is
reported with a bootstrap interval over videos and a paired test against the best single stream."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest


def bootstrap_ci(correct: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the accuracy of per-video hits ``correct`` (bool), resampling videos."""
    correct = np.asarray(correct, float)
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (resamples, len(correct)))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion: unlike the percentile bootstrap it does not collapse to a point when
    every (or no) video is right, which matters on small test sets."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def paired_bootstrap_difference(correct_a: np.ndarray, correct_b: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                                level: float = 0.95) -> tuple[float, float, float]:
    """Accuracy of a minus accuracy of b, and its percentile interval, resampling the same videos for both."""
    diff = np.asarray(correct_a, float) - np.asarray(correct_b, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(diff.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the videos exactly one of the two gets right."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def cross_validated_top1(make_method, probs_by_stream: dict, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Accuracy of a fusion method on validation videos it was not fitted on (k-fold within validation), used to
    choose between methods without looking at test."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    parts = np.array_split(order, min(folds, len(labels)))
    hits = np.zeros(len(labels), bool)
    for held in parts:
        keep = np.setdiff1d(order, held)
        method = make_method().fit({s: p[keep] for s, p in probs_by_stream.items()}, labels[keep])
        hits[held] = method.predict({s: p[held] for s, p in probs_by_stream.items()}) == labels[held]
    return float(hits.mean())
