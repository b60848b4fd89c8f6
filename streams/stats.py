"""Every statistic the reports use, in one place. With ~100 test videos one video is one point of accuracy, so
every figure is given with an interval and every gain with a paired test.

The bootstrap over videos, the Wilson interval and the binomial test are SciPy's; the cluster bootstrap (whole
groups resampled: clips of one performer or source video are not independent) and Holm's adjustment are ours.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, bootstrap


def _percentile_bootstrap(samples: tuple, statistic, *, resamples: int, seed: int, level: float, paired: bool):
    result = bootstrap(
        samples,
        statistic,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        paired=paired,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    # A sample with no spread (every video right) has a one-point bootstrap distribution: the interval is the point.
    point = float(statistic(*samples, axis=-1))
    return (point if np.isnan(low) else float(low)), (point if np.isnan(high) else float(high))


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_difference(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def bootstrap_ci(
    correct: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the accuracy of per-video hits ``correct`` (bool), resampling videos."""
    correct = np.asarray(correct, float)
    return _percentile_bootstrap((correct,), _mean, resamples=resamples, seed=seed, level=level, paired=False)


def wilson_interval(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: unlike the percentile bootstrap it does not collapse to a point when
    every (or no) video is right, which matters on small test sets."""
    if n == 0:
        return 0.0, 1.0
    interval = binomtest(hits, n).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def paired_bootstrap_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Accuracy of a minus accuracy of b, and its percentile interval, resampling the same videos for both."""
    a, b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    low, high = _percentile_bootstrap(
        (a, b), _mean_difference, resamples=resamples, seed=seed, level=level, paired=True
    )
    return float(a.mean() - b.mean()), low, high


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the videos exactly one of the two gets right."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _group_resamples(groups: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(per-group index of each video, group picks (resamples, groups)): whole groups drawn with replacement."""
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    picks = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    return inverse, picks


def _per_group(values, inverse: np.ndarray) -> np.ndarray:
    return np.bincount(inverse, weights=np.asarray(values, np.float64), minlength=int(inverse.max()) + 1)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    return float(np.quantile(samples, tail)), float(np.quantile(samples, 1 - tail))


def group_bootstrap_ci(
    hits: np.ndarray, groups: np.ndarray, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of accuracy when whole groups are resampled with replacement (a cluster bootstrap):
    clips of one performer or source video are not independent, so resampling clips understates the spread."""
    inverse, picks = _group_resamples(groups, resamples, seed)
    right, total = _per_group(hits, inverse), _per_group(np.ones(len(inverse)), inverse)
    return _percentiles(right[picks].sum(1) / total[picks].sum(1), level)


def group_bootstrap_difference(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    groups: np.ndarray,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of accuracy(a) − accuracy(b) resampling whole groups (performers, source videos) with
    replacement, the same groups for both: clips of one group are not independent."""
    inverse, picks = _group_resamples(groups, resamples, seed)
    a, b = _per_group(correct_a, inverse), _per_group(correct_b, inverse)
    total = _per_group(np.ones(len(inverse)), inverse)
    return _percentiles((a[picks].sum(1) - b[picks].sum(1)) / total[picks].sum(1), level)


def group_sign_flip_p(
    correct_a: np.ndarray, correct_b: np.ndarray, groups: np.ndarray, *, resamples: int = 20000, seed: int = 0
) -> float:
    """Two-sided p-value of "a and b are equally accurate" when clips come in groups: McNemar's idea one level up.
    Each group's difference in hits (a − b) is its unit; under the null hypothesis the sign of each is a coin flip,
    so the p-value is the share of sign patterns whose total is at least as far from zero as the one observed
    (every pattern when there are at most 16 groups, else ``resamples`` random ones, counted with the observed one
    as (k + 1) / (n + 1) so that a sampled p-value is never 0). With few groups it cannot be small (4 groups: at least
    0.125), as the group-level intervals are wide: the two agree."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    d = _per_group(np.asarray(correct_a, float) - np.asarray(correct_b, float), inverse)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum()) - 1e-9
    if d.size <= 16:  # every pattern, the observed one among them: exact
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        return float((np.abs(signs @ d) >= observed).mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(resamples, d.size))
    return float(((np.abs(signs @ d) >= observed).sum() + 1) / (resamples + 1))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for many comparisons (family-wise error), in the input order."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
