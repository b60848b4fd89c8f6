"""Choices made on the fitting scores, never on test: the best single stream, each subset's method (by
cross-validated accuracy on the fitting videos), ties said, and Holm's adjustment of the comparisons."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from streams.crossval import group_folds
from streams.metrics import classification_metrics
from streams.stats import holm

from .scores import label, stream_key


def cross_validated_top1(
    make_method, probs_by_stream: dict, labels: np.ndarray, *, groups=None, folds: int = 5, seed: int = 0
) -> float | None:
    """Accuracy of a fusion method on fitting videos it was not fitted on, used to choose between methods without
    looking at test. Folds hold out whole ``groups`` (performers, source videos: ``StratifiedGroupKFold``, as
    bin/crossval), so a method that learns what the clips of one group share (the class mix of a source, a
    venue's look in the scores) is not rewarded for it, as it would be by clip-level folds. Without groups every
    video is its own. None when there are fewer than 2 groups (nothing to hold out)."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)).astype(str) if groups is None else np.asarray(groups).astype(str)
    count = len(set(groups))
    if count < 2:
        return None
    hits = np.zeros(len(labels), bool)
    for held in _folds(tuple(labels.tolist()), tuple(groups.tolist()), min(folds, count), seed):
        keep = np.setdiff1d(np.arange(len(labels)), held)
        method = make_method().fit({s: p[keep] for s, p in probs_by_stream.items()}, labels[keep])
        hits[held] = method.predict({s: p[held] for s, p in probs_by_stream.items()}) == labels[held]
    return float(hits.mean())


@lru_cache(maxsize=8)
def _folds(labels: tuple, groups: tuple, folds: int, seed: int) -> list[np.ndarray]:
    # every subset x method of an ablation folds the same fitting videos: StratifiedGroupKFold once, not 130 times
    return group_folds(list(labels), list(groups), folds, seed)


# Below these, the fitting videos cannot tell fusions apart on groups they were not fitted on (the fallback rule).
MIN_FITTING_GROUPS = 3
MAX_GROUP_PURITY = 0.75


def fitting_support(labels: np.ndarray, groups, *, shared_with_training: int = 0, groups_unknown=None) -> dict:
    """Can the fitting videos support a fitted choice (method, weights, stacking, the best single stream)?

    Not when (a) they share groups with the streams' training (``shared_with_training`` groups: validation
    clips of the training sources flatter what a stream learnt of those sources: a venue, a camera), (b) they
    come from fewer than ``MIN_FITTING_GROUPS`` groups, (c) their groups nearly determine their class (group
    purity: the mean share, over the videos of groups of two or more, of its group's videos having its class, at
    least ``MAX_GROUP_PURITY``; 1.0 when each source video holds one style, as in street-dance
    collections; about 1/classes when every performer does every class, as in Weizmann), or (d) nothing says which
    videos belong together: no manifest to read groups from (``groups_unknown``: why), or every video its own group
    (a dataset ingested without groups: singletons say nothing about confounding, so they are not counted as
    pure). Then a rule that fits nothing is the honest default. Returns the counts and ``reasons`` (empty when the
    fitting data can support a choice)."""
    labels = np.asarray(labels)
    out = {"videos": int(len(labels)), "classes": int(len(set(labels.tolist()))), "groups": None, "purity": None}
    reasons = []
    if shared_with_training:
        reasons.append(f"the fitting videos share {shared_with_training} groups with the streams' training")
    if groups is None and groups_unknown:
        reasons.append(f"the videos' groups are unknown ({groups_unknown}): no choice can be checked on groups")
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        shared = counts[inverse] >= 2  # videos whose group holds another video
        same = np.array([np.mean(labels[inverse == inverse[i]] == labels[i]) for i in np.flatnonzero(shared)])
        out["groups"] = int(len(names))
        out["purity"] = float(same.mean()) if len(same) else None
        if not shared.any():
            reasons.append(
                f"every one of the {len(labels)} fitting videos is its own group: no group information (ingest with "
                "a group column or --group-regex), so a choice cannot be checked on groups it was not fitted on"
            )
        elif len(names) < MIN_FITTING_GROUPS:
            reasons.append(
                f"{len(names)} groups among the {len(labels)} fitting videos (fewer than {MIN_FITTING_GROUPS})"
            )
        elif out["purity"] >= MAX_GROUP_PURITY:
            reasons.append(
                f"their {len(names)} groups nearly determine the class (purity {out['purity']:.2f}: a group's "
                f"videos share one class), so a fold that holds a group out takes its class away"
            )
    out["reasons"] = reasons
    out["reliable"] = not reasons
    return out


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

    def cv(r):  # None: too few groups to cross-validate (the fallback rule decides then)
        return -1.0 if r["val_cv_top1"] is None else r["val_cv_top1"]

    def chosen(rows):
        return max(rows, key=lambda r: (cv(r), len(r["streams"]), -order[r["method"]])) if rows else None

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
            tied = [r for r in pool if abs(cv(r) - cv(row)) < 1e-12]
            ties[key] = [f"{label(r['streams'])} {r['method']}" for r in tied]
    return {"best_single": best_single, "best_fusion": best_fusion, "best_all_streams": best_three, "ties": ties}


FALLBACK_METHOD = "mean"  # the rule that fits nothing: every stream's probabilities, averaged

# Which streams the fallback's mean takes, decided on evidence from groups the streams never saw (issue 31): a stream
# is left out when leaving it out raises the mean's out-of-group top-1 by MIN_GAIN and at least MIN_GAIN_VIDEOS
# videos; or, when its scene reliance is high (it keeps HIGH_RELIANCE of its gain over chance with every person
# hidden: it names the style from the venue), when leaving it out does not lower it.
MIN_GAIN = 0.05
MIN_GAIN_VIDEOS = 2
HIGH_RELIANCE = 0.5


def _mean_top1(probs_by_stream: dict, labels: np.ndarray, streams) -> tuple[float, int]:
    mean = np.mean([probs_by_stream[s] for s in streams], axis=0)
    hits = int((mean.argmax(1) == labels).sum())
    return hits / max(len(labels), 1), hits


def streams_to_fuse(names: list[str], evidence: dict | None) -> dict:
    """The streams the fallback's mean fuses, and why any is left out.

    ``evidence``: {"probs": {stream: out-of-group probabilities (N, C)}, "labels" (N,), "groups": how many groups
    they span, "source": what they are, "reliance": {stream: retained share or None}} (``scene`` of each run), or None.
    Backward elimination on the out-of-group scores: while more than one stream is left, the stream whose removal
    helps the mean most is removed if (a) its removal raises the mean's top-1 by at least ``MIN_GAIN`` and
    ``MIN_GAIN_VIDEOS`` videos, or (b) its scene reliance is at least ``HIGH_RELIANCE`` and its removal does not
    lower it (ties: the higher reliance first). Without out-of-group scores every stream stays (as before).
    Returns {"streams", "left_out": [{"stream", "reason"}], "basis": a line saying what decided}."""
    names = sorted(names, key=stream_key)
    if not evidence or not evidence.get("probs") or len(names) < 2:
        why = (evidence or {}).get("source") or "no out-of-group scores"
        return {"streams": names, "left_out": [], "basis": f"{why}: every stream is fused"}
    probs, labels = evidence["probs"], np.asarray(evidence["labels"])
    reliance = evidence.get("reliance") or {}
    kept, left_out = list(names), []
    while len(kept) > 1:
        base, base_hits = _mean_top1(probs, labels, kept)
        candidates = []
        for s in kept:
            top1, hits = _mean_top1(probs, labels, [k for k in kept if k != s])
            gain, more = top1 - base, hits - base_hits
            high = reliance.get(s) is not None and reliance[s] >= HIGH_RELIANCE
            if (gain >= MIN_GAIN - 1e-12 and more >= MIN_GAIN_VIDEOS) or (high and more >= 0):
                candidates.append((more, reliance.get(s) or 0.0, s, base, top1))
        if not candidates:
            break
        more, share, s, before, after = max(candidates, key=lambda c: (c[0], c[1], stream_key(c[2])))
        own = float((probs[s].argmax(1) == labels).mean())
        why = (
            f"out-of-group, the mean of {label(kept)} is right on {100 * before:.1f} % of {len(labels)} videos and "
            f"without {s} on {100 * after:.1f} % ({s} alone {100 * own:.1f} %, chance {100 / probs[s].shape[1]:.1f} %)"
        )
        if reliance.get(s) is not None:
            why += f"; with every person hidden it keeps {100 * reliance[s]:.0f} % of its validation gain over chance"
        left_out.append({"stream": s, "reason": why})
        kept.remove(s)
    groups = evidence.get("groups")
    basis = f"decided on {evidence.get('source') or 'out-of-group scores'} of {len(labels)} videos" + (
        f" in {groups} groups" if groups else ""
    )
    return {"streams": kept, "left_out": left_out, "basis": basis}


def default_fusion(picked: dict, results: list[dict], names: list[str], support: dict, evidence=None) -> dict:
    """The fusion the report hands to bin/classify (``fusion.json``): the fitted choice of all streams when the
    fitting videos can support it, else the mean of the streams that out-of-group evidence keeps
    (``streams_to_fuse``: all of them when there is none), which fits nothing. {"rule": "fitted" or "fallback",
    "row": its row (None when its method was not among those tabled), "reasons", "support", "streams",
    "left_out", "basis"}."""
    if support["reliable"] or len(names) < 2:
        row = picked["best_all_streams"]
        return {
            "rule": "fitted",
            "row": row,
            "reasons": [],
            "support": support,
            "streams": sorted(names, key=stream_key),
            "left_out": [],
            "basis": None,
        }
    chosen = streams_to_fuse(names, evidence)
    wanted = set(chosen["streams"])
    row = next((r for r in results if r["method"] == FALLBACK_METHOD and set(r["streams"]) == wanted), None)
    if row is None and len(wanted) == 1:
        row = next((r for r in results if r["method"] == "single" and set(r["streams"]) == wanted), None)
    return {"rule": "fallback", "row": row, "reasons": support["reasons"], "support": support, **chosen}


def choice_record(row: dict | None, ties: list[str] | None) -> dict | None:
    """A chosen fusion as the report's JSON records it: streams, method, the streams carrying weight, ties."""
    if row is None:
        return None
    return {"streams": row["streams"], "method": row["method"], "carrying": carrying_streams(row), "ties": ties}
