"""Fusion measured across group folds, from the out-of-fold scores of several ``bin/crossval`` runs.

When a whole dataset is cross-validated (``bin/crossval --pool all``) there is no separate test split to fit on
validation and score on test. Each fold's videos are instead fused by a method fitted on the other folds'
out-of-fold scores (cross-fitting), so no fused prediction comes from weights that saw its group. The table gives
every subset of streams x method this way, and ``selected`` is the honest figure for "the best fusion": in each fold
the subset and method are chosen by their cross-fitted accuracy over the other folds alone (nested, by fold as
well), then applied.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from preprocess import DataError
from preprocess.batch import read_json
from streams.metrics import classification_metrics
from streams.stats import group_bootstrap_ci

from .methods import create_method
from .scores import align, load_scores


def _load(runs: dict[str, str | Path]):
    scores, folds, groups = [], None, None
    for name, run in runs.items():
        s = load_scores(run, "oof")
        s.stream = name
        scores.append(s)
        side = read_json(Path(run) / "scores_oof.json")
        if folds is None:
            folds, groups, first = side["folds"], side["groups"], run
        elif side["folds"] != folds:
            raise DataError(
                Path(run) / "scores_oof.json", f"other folds than {first}: cross-validate every stream with one seed"
            )
    probs, labels, ids, classes = align(scores)
    return probs, labels, ids, classes, np.array([folds[v] for v in ids]), np.array([groups[v] for v in ids])


def crossfit(runs: dict[str, str | Path], *, methods=("mean", "weighted", "stacking"), seed: int = 0) -> dict:
    """{"rows": [{streams, method, top1, macro_f1, top1_group_ci95}], "selected": {...}, ...}; see the module."""
    probs, labels, ids, classes, fold, groups = _load(runs)
    names = list(probs)
    candidates = [((s,), "single") for s in names]
    for size in range(2, len(names) + 1):
        candidates += [(subset, m) for subset in itertools.combinations(names, size) for m in methods]

    def fused(subset, method, keep, held):
        if method == "single":
            return probs[subset[0]][held]
        fitted = create_method(method).fit({s: probs[s][keep] for s in subset}, labels[keep])
        return fitted.predict_proba({s: probs[s][held] for s in subset})

    def row(out, **extra):
        hits = out.argmax(1) == labels
        metrics = classification_metrics(labels, out)
        lo, hi = group_bootstrap_ci(hits, groups, seed=seed)
        return {"top1": metrics["top1"], "macro_f1": metrics["macro_f1"], "top1_group_ci95": [lo, hi], **extra}

    rows = []
    for subset, method in candidates:
        out = np.zeros((len(labels), len(classes)))
        for k in np.unique(fold):
            keep, held = fold != k, fold == k
            out[held] = fused(subset, method, keep, held)
        rows.append(row(out, streams=list(subset), method=method))

    out = np.zeros((len(labels), len(classes)))
    picks = []
    for k in np.unique(fold):
        keep, held = fold != k, fold == k

        def inner(subset, method, keep=keep):
            # judged by groups as well: each of the other folds fused by weights fitted on the rest of them (a
            # random split would reward methods that learn the class mix of the groups they were fitted on)
            inner_folds = np.unique(fold[keep])
            hits = []
            for j in inner_folds:
                fit, judge = keep & (fold != j), keep & (fold == j)
                hits.append(fused(subset, method, fit, judge).argmax(1) == labels[judge])
            return float(np.concatenate(hits).mean())

        subset, method = max(candidates, key=lambda c: (inner(*c), len(c[0])))
        picks.append({"fold": int(k), "streams": list(subset), "method": method})
        out[held] = fused(subset, method, keep, held)
    return {
        "videos": len(labels),
        "groups": len(set(groups)),
        "folds": len(np.unique(fold)),
        "classes": classes,
        "rows": rows,
        "selected": row(out, picks=picks),
    }
