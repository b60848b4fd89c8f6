"""Choices made on the fitting scores, never on test: the best single stream, each subset's method (by
cross-validated accuracy on the fitting videos), ties said, and Holm's adjustment of the comparisons."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from streams.metrics import classification_metrics
from streams.stats import holm

from .scores import label, stream_key


def cross_validated_top1(
    make_method, probs_by_stream: dict, labels: np.ndarray, *, folds: int = 5, seed: int = 0
) -> float:
    """Accuracy of a fusion method on validation videos it was not fitted on (k-fold within validation), used to
    choose between methods without looking at test."""
    labels = np.asarray(labels)
    hits = np.zeros(len(labels), bool)
    splitter = KFold(n_splits=min(folds, len(labels)), shuffle=True, random_state=seed)
    for keep, held in splitter.split(labels):
        method = make_method().fit({s: p[keep] for s, p in probs_by_stream.items()}, labels[keep])
        hits[held] = method.predict({s: p[held] for s, p in probs_by_stream.items()}) == labels[held]
    return float(hits.mean())


def carrying_streams(row: dict, threshold: float = 0.05) -> list[str]:
    """The streams of a fusion that carry weight: all of them, unless fitted weights leave some below
    ``threshold`` of the total (then the fusion is, in effect, of the others)."""
    weights = row.get("params", {}).get("weights")
    if not weights:
        return sorted(row["streams"], key=stream_key)
    total = sum(abs(w) for w in weights.values()) or 1.0
    return sorted((s for s, w in weights.items() if abs(w) / total >= threshold), key=stream_key)


def best_single_stream(fit_probs: dict, fit_labels: np.ndarray) -> tuple[str, list[str]]:
    """(the single stream with the best fitting top-1 — macro-F1, then the name, break ties —, the streams tied
    with it on top-1)."""
    names = sorted(fit_probs)
    top1 = {s: float((fit_probs[s].argmax(1) == fit_labels).mean()) for s in names}
    f1 = {s: classification_metrics(fit_labels, fit_probs[s])["macro_f1"] for s in names}
    best = max(names, key=lambda s: (top1[s], f1[s], s))
    return best, [s for s in names if top1[s] == top1[best]]


def choose(results: list[dict], methods, names: list[str], best_name: str) -> dict:
    """Mark the chosen fusions in ``results`` (``chosen``, ``p_holm``) and return {best_single, best_fusion,
    best_all_streams (rows or None), ties {key: [labels]}}: the fusion with the best cross-validated fitting top-1
    (then more streams, then the method order) of any subset, and of all the streams."""
    best_single = next(r for r in results if r["method"] == "single" and r["streams"] == [best_name])
    fusions = [r for r in results if r["method"] != "single"]
    order = {m: i for i, m in enumerate(methods)}

    def chosen(rows):
        return max(rows, key=lambda r: (r["val_cv_top1"], len(r["streams"]), -order[r["method"]])) if rows else None

    best_fusion = chosen(fusions)
    best_three = chosen([r for r in fusions if len(r["streams"]) == len(names)])
    for r in results:
        r["chosen"] = r is best_fusion or r is best_three
    # many comparisons against the best single stream: Holm's adjustment of their McNemar p-values
    compared = [r for r in results if r is not best_single]
    for r, adjusted in zip(compared, holm([r["p_vs_best_single"] for r in compared])):
        r["p_holm"] = adjusted
    best_single["p_holm"] = 1.0
    ties = {}
    for key, row in (("best_fusion", best_fusion), ("best_all_streams", best_three)):
        if row is not None:
            pool = fusions if key == "best_fusion" else [r for r in fusions if len(r["streams"]) == len(names)]
            tied = [r for r in pool if abs(r["val_cv_top1"] - row["val_cv_top1"]) < 1e-12]
            ties[key] = [f"{label(r['streams'])} {r['method']}" for r in tied]
    return {"best_single": best_single, "best_fusion": best_fusion, "best_all_streams": best_three, "ties": ties}


def choice_record(row: dict | None, ties: list[str] | None) -> dict | None:
    """A chosen fusion as the report's JSON records it: streams, method, the streams carrying weight, ties."""
    if row is None:
        return None
    return {"streams": row["streams"], "method": row["method"], "carrying": carrying_streams(row), "ties": ties}
