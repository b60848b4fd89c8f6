"""The rows of a fusion ablation, computed (no I/O): every non-empty subset of streams × every method, fitted on
the fitting scores (out-of-fold or validation), scored on test, each with its intervals and its paired test against
the best single stream. Choosing among them is ``fusion.select``; writing them is ``fusion.render``."""

from __future__ import annotations

import itertools

import numpy as np

from streams.metrics import classification_metrics, per_class_prf
from streams.stats import (
    bootstrap_ci,
    group_bootstrap_ci,
    group_bootstrap_difference,
    group_sign_flip_p,
    mcnemar_exact,
    paired_bootstrap_difference,
    wilson_interval,
)

from .methods import create_method
from .scores import stream_key
from .select import cross_validated_top1

DEFAULT_METHODS = ("mean", "weighted", "product", "max", "stacking")


def evaluate_row(
    streams,
    method,
    probs,
    labels,
    classes,
    best_single_hits,
    resamples,
    seed,
    params=None,
    cv_top1=None,
    val_top1=None,
    groups=None,
):
    metrics = classification_metrics(labels, probs)
    hits = probs.argmax(1) == labels
    if groups is not None:  # clips of one performer / source video are not independent: resample whole groups
        lo, hi = group_bootstrap_ci(hits, groups, resamples=resamples, seed=seed)
        diff = float(hits.mean() - best_single_hits.mean())
        dlo, dhi = group_bootstrap_difference(hits, best_single_hits, groups, resamples=resamples, seed=seed)
        p = group_sign_flip_p(hits, best_single_hits, groups, seed=seed)  # the test at the intervals' level
    else:
        lo, hi = bootstrap_ci(hits, resamples=resamples, seed=seed)
        diff, dlo, dhi = paired_bootstrap_difference(hits, best_single_hits, resamples=resamples, seed=seed)
        p = mcnemar_exact(hits, best_single_hits)
    precision, recall, f1 = per_class_prf(labels, probs.argmax(1), len(classes))
    return {
        # streams sorted by name: the contract other tools rely on
        "streams": sorted(streams),
        "method": method,
        **metrics,
        "top1_ci95": [lo, hi],
        "top1_wilson95": list(wilson_interval(int(hits.sum()), len(hits))),
        "diff_vs_best_single": diff,
        "diff_vs_best_single_ci95": [dlo, dhi],
        "p_vs_best_single": p,
        "val_top1": val_top1,
        "val_cv_top1": cv_top1,
        "params": params or {},
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f)}
            for c, p, r, f in zip(classes, precision, recall, f1)
        },
    }


def ablation_rows(
    fit_probs: dict,
    fit_labels: np.ndarray,
    test_probs: dict,
    test_labels: np.ndarray,
    classes: list[str],
    best_name: str,
    *,
    methods=DEFAULT_METHODS,
    calibrate: bool = False,
    resamples: int = 2000,
    seed: int = 0,
    test_groups: np.ndarray | None = None,
    fit_groups: np.ndarray | None = None,
) -> tuple[list[dict], dict]:
    """(rows: each single stream, then every subset of two or more × every method; {(subset, method): fitted
    method}). ``best_name``: the best single stream, which every row is compared with; ``fit_groups``: the fitting
    videos' groups, which the methods' cross-validation holds out whole."""
    names = sorted(fit_probs, key=stream_key)
    best_hits = test_probs[best_name].argmax(1) == test_labels
    fit_top1 = {s: float((fit_probs[s].argmax(1) == fit_labels).mean()) for s in names}
    results, fitted = [], {}
    for s in names:
        results.append(
            evaluate_row(
                [s],
                "single",
                test_probs[s],
                test_labels,
                classes,
                best_hits,
                resamples,
                seed,
                val_top1=fit_top1[s],
                cv_top1=fit_top1[s],
                groups=test_groups,
            )
        )
    for size in range(2, len(names) + 1):
        for subset in itertools.combinations(names, size):
            v = {s: fit_probs[s] for s in subset}
            t = {s: test_probs[s] for s in subset}
            for name in methods:
                method = create_method(name, calibrate=calibrate).fit(v, fit_labels)
                cv = cross_validated_top1(
                    lambda name=name: create_method(name, calibrate=calibrate),
                    v,
                    fit_labels,
                    groups=fit_groups,
                    seed=seed,
                )
                fitted[(subset, name)] = method
                results.append(
                    evaluate_row(
                        subset,
                        name,
                        method.predict_proba(t),
                        test_labels,
                        classes,
                        best_hits,
                        resamples,
                        seed,
                        params=method.params(),
                        cv_top1=cv,
                        val_top1=float((method.predict(v) == fit_labels).mean()),
                        groups=test_groups,
                    )
                )
    results.sort(key=lambda r: (len(r["streams"]), [stream_key(n) for n in sorted(r["streams"], key=stream_key)]))
    return results, fitted
