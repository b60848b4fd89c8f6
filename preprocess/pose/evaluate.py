"""Pose accuracy against ground truth: PCK on videos (synthetic ground truth), OKS on COCO images."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .keypoints import OKS_SIGMAS


def match_people(pred: np.ndarray, pred_mask: np.ndarray, truth: np.ndarray) -> list[tuple[int, int | None]]:
    """Pair each ground-truth person (P_gt, 17, 3: x, y, visibility) with a predicted slot (P, 17, 3) by the
    smallest mean distance over the ground truth's labelled keypoints; unmatched people get None."""
    slots = np.nonzero(pred_mask)[0]
    if len(slots) == 0:
        return [(g, None) for g in range(len(truth))]
    cost = np.zeros((len(truth), len(slots)))
    for g, person in enumerate(truth):
        labelled = person[:, 2] > 0
        if not labelled.any():
            cost[g] = 1e9
            continue
        d = np.linalg.norm(pred[slots][:, labelled, :2] - person[None, labelled, :2], axis=-1)
        cost[g] = d.mean(-1)
    rows, cols = linear_sum_assignment(cost)
    matched = {r: slots[c] for r, c in zip(rows, cols)}
    return [(g, int(matched[g]) if g in matched else None) for g in range(len(truth))]


def pck(pred: np.ndarray, pred_mask: np.ndarray, truth: np.ndarray, alpha: float = 0.2) -> tuple[int, int]:
    """(correct, total) visible ground-truth keypoints (v = 2) over a clip: a keypoint is correct within
    ``alpha`` × the longer side of its person's ground-truth box; a person no slot matches scores zero."""
    correct = total = 0
    for t in range(len(truth)):
        for g, slot in match_people(pred[t], pred_mask[t], truth[t]):
            person = truth[t, g]
            visible = person[:, 2] == 2
            if not visible.any():
                continue
            labelled = person[person[:, 2] > 0, :2]
            size = max(np.ptp(labelled[:, 0]), np.ptp(labelled[:, 1]), 1.0)
            total += int(visible.sum())
            if slot is None:
                continue
            d = np.linalg.norm(pred[t, slot, visible, :2] - person[visible, :2], axis=-1)
            correct += int((d <= alpha * size).sum())
    return correct, total


def coco_oks_matches(people: list[np.ndarray], truth: list[dict], min_keypoints: int = 5) -> list[float]:
    """Best OKS of each ground-truth annotation (with >= ``min_keypoints`` labelled) over the predictions of one
    image, each prediction used once (greedy by OKS)."""
    targets = [a for a in truth if a.get("num_keypoints", 0) >= min_keypoints and not a.get("iscrowd", 0)]
    if not targets:
        return []
    scores = np.zeros((len(targets), max(len(people), 1)))
    for i, ann in enumerate(targets):
        gt = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        for j, kp in enumerate(people):
            scores[i, j] = object_keypoint_similarity(kp, gt, ann["area"])
    if not people:
        return [0.0] * len(targets)
    rows, cols = linear_sum_assignment(-scores)
    best = {r: scores[r, c] for r, c in zip(rows, cols)}
    return [float(best.get(i, 0.0)) for i in range(len(targets))]


def object_keypoint_similarity(pred: np.ndarray, truth: np.ndarray, area: float) -> float:
    """COCO OKS between a predicted skeleton (17, >=2) and a ground-truth one (17, 3 with COCO visibility), for a
    ground-truth object of ``area`` pixels²; only labelled (v > 0) ground-truth keypoints count."""
    labelled = truth[:, 2] > 0
    if not labelled.any():
        return 0.0
    d2 = ((pred[:, :2] - truth[:, :2]) ** 2).sum(-1)
    k2 = (2 * OKS_SIGMAS) ** 2
    e = d2 / (k2 * (area + np.spacing(1)) * 2)
    return float(np.exp(-e)[labelled].mean())
