"""Train/val/test splits at the video level: stratified by class, group-aware, seeded.

* No groups (every clip its own group): each class is shuffled and cut by the ratios with largest-remainder
  rounding, so every split gets its exact share of every class (and at least one clip of a class that has at least
  as many clips as there are splits).
* Groups (a source video, a performer): whole groups are assigned, largest first, each to the split where it most
  reduces the squared gap between per-class counts and their targets, so a group never straddles splits and the
  class balance is as close as the group sizes allow. Every split with a positive ratio gets a group when there are
  enough groups.

The result depends only on (ids, labels, groups, ratios, seed), not on the order the inputs come in.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

SPLITS = ("train", "val", "test")


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` or ``"80/10/10"`` → fractions summing to 1."""
    parts = [float(p) for p in text.replace("/", ",").split(",") if p.strip()]
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ValueError(f"split ratios {text!r}: expected three non-negative numbers train,val,test")
    total = sum(parts)
    return tuple(p / total for p in parts)  # type: ignore[return-value]


def _largest_remainder(n: int, ratios: tuple[float, ...], minimum_one: bool) -> list[int]:
    raw = [n * r for r in ratios]
    counts = [int(np.floor(x)) for x in raw]
    order = sorted(range(len(ratios)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if minimum_one:
        # A split with a positive ratio and no clip of this class takes one from the largest split.
        for i, r in enumerate(ratios):
            if r > 0 and counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                if counts[donor] > 1:
                    counts[donor] -= 1
                    counts[i] += 1
    return counts


def stratified_split(ids: list[str], labels: list[str], ratios=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, str]:
    """Exact per-class stratification of independent clips: {video id: split name}."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for vid, label in zip(ids, labels):
        by_class[label].append(vid)
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for label in sorted(by_class):
        members = sorted(by_class[label])
        rng.shuffle(members)
        counts = _largest_remainder(len(members), ratios, minimum_one=len(members) >= sum(r > 0 for r in ratios))
        pos = 0
        for split, count in zip(SPLITS, counts):
            for vid in members[pos : pos + count]:
                out[vid] = split
            pos += count
    return out


def grouped_split(
    ids: list[str], labels: list[str], groups: list[str], ratios=(0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, str]:
    """Stratified assignment of whole groups: {video id: split name}; no group is in two splits."""
    classes = sorted(set(labels))
    class_index = {c: i for i, c in enumerate(classes)}
    members: dict[str, list[str]] = defaultdict(list)
    for vid, group in zip(ids, groups):
        members[group].append(vid)
    label_of = dict(zip(ids, labels))
    group_names = sorted(members)
    counts = np.zeros((len(group_names), len(classes)))
    for g, name in enumerate(group_names):
        for vid in members[name]:
            counts[g, class_index[label_of[vid]]] += 1

    ratio = np.asarray(ratios, dtype=float)
    targets = ratio[:, None] * counts.sum(0)[None, :]  # (split, class)
    # Largest groups first; ties in a seeded random order.
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(group_names))
    order = sorted(range(len(group_names)), key=lambda g: (-counts[g].sum(), tiebreak[g]))

    assigned = np.zeros_like(targets)
    empty_splits = [s for s in range(len(SPLITS)) if ratio[s] > 0]
    remaining_groups = len(order)
    split_of_group: dict[int, int] = {}
    for g in order:
        # Keep enough groups in hand that every split with a positive ratio gets one.
        must_fill = len(empty_splits) >= remaining_groups
        candidates = empty_splits if must_fill else [s for s in range(len(SPLITS)) if ratio[s] > 0]
        best, best_cost = None, None
        for s in candidates:
            trial = assigned.copy()
            trial[s] += counts[g]
            # Relative squared error, so a small split's shortfall counts as much as a big split's.
            cost = float((((trial - targets) ** 2) / (targets + 1.0)).sum())
            if best_cost is None or cost < best_cost - 1e-12:
                best, best_cost = s, cost
        assigned[best] += counts[g]
        split_of_group[g] = best
        if best in empty_splits:
            empty_splits.remove(best)
        remaining_groups -= 1
    return {vid: SPLITS[split_of_group[g]] for g, name in enumerate(group_names) for vid in members[name]}


def make_split(
    ids: list[str], labels: list[str], groups: list[str] | None, ratios=(0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, str]:
    """Grouped split when any group holds more than one clip, else exact stratification."""
    if groups is None or len(set(groups)) == len(groups):
        return stratified_split(ids, labels, ratios, seed)
    return grouped_split(ids, labels, groups, ratios, seed)
