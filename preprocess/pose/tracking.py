"""Person identities across frames: per-frame detections cleaned of duplicates, then kept in fixed slots.

Slot p is the same dancer over time: detections are matched to the slots' last boxes by IoU (Hungarian
assignment); a new person takes the lowest free slot; a slot unseen for ``max_age`` frames is freed.

Box IoU is ten lines of numpy here rather than ``torchvision.ops.box_iou``: the pose workers never load torch
otherwise, and importing torchvision costs each worker process about 3 s and 1 GiB of resident memory.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .keypoints import OKS_SIGMAS


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes a (N, 4) and b (M, 4), x0 y0 x1 y1."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _tracking_box(kp: np.ndarray) -> np.ndarray:
    """Box around every keypoint the model placed (confidence > 0), padded 10 %: robust for matching."""
    pts = kp[kp[:, 2] > 0, :2] if (kp[:, 2] > 0).any() else kp[:, :2]
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    pad = 0.1 * max(x1 - x0, y1 - y0, 1.0)
    return np.array([x0 - pad, y0 - pad, x1 + pad, y1 + pad], dtype=np.float64)


class SlotTracker:
    """Keeps person identities in fixed slots across frames (deterministic)."""

    def __init__(self, max_persons: int, min_iou: float = 0.1, max_age: int = 15):
        self.max_persons = max_persons
        self.min_iou = min_iou
        self.max_age = max_age
        self.last_box: list[np.ndarray | None] = [None] * max_persons
        self.last_seen = [-(10**9)] * max_persons
        self.t = -1

    def update(self, people: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
        """One frame's detections → (keypoints (P, 17, 3), mask (P,)) in slot order."""
        self.t += 1
        people = sorted(people, key=lambda p: -p[1])
        keypoints = np.zeros((self.max_persons, 17, 3), np.float32)
        mask = np.zeros(self.max_persons, bool)
        if not people:
            return keypoints, mask
        boxes = np.stack([_tracking_box(kp) for kp, _ in people])
        alive = [
            p
            for p in range(self.max_persons)
            if self.last_box[p] is not None and self.t - self.last_seen[p] <= self.max_age
        ]
        placed: dict[int, int] = {}
        if alive:
            iou = box_iou(np.stack([self.last_box[p] for p in alive]), boxes)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.min_iou:
                    placed[c] = alive[r]
        taken = set(placed.values())
        for c in range(len(people)):
            if c in placed:
                continue
            free = [p for p in range(self.max_persons) if p not in taken and p not in alive]
            if not free:
                # Every slot still waits for its person. A person seen now outranks one unseen in this frame (a
                # camera cut): take the slot unseen longest. Only with more people than slots is anyone dropped
                # (the least confident).
                unseen = [p for p in alive if p not in taken]
                if not unseen:
                    continue
                free = [min(unseen, key=lambda p: (self.last_seen[p], p))]
            placed[c] = free[0]
            taken.add(free[0])
        for c, slot in placed.items():
            keypoints[slot] = people[c][0]
            mask[slot] = True
            self.last_box[slot] = boxes[c]
            self.last_seen[slot] = self.t
        return keypoints, mask


def pose_similarity(a: np.ndarray, b: np.ndarray, min_confidence: float) -> float:
    """OKS between two predicted skeletons (17, 3), over the keypoints both place with confidence, scaled by the
    area of their union box: 1 for the same pose, near 0 for different people even when their boxes overlap."""
    both = (a[:, 2] >= min_confidence) & (b[:, 2] >= min_confidence)
    if both.sum() < 3:
        return 0.0
    pts = np.concatenate([a[both, :2], b[both, :2]])
    area = max(float(np.ptp(pts[:, 0]) * np.ptp(pts[:, 1])), 1.0)
    d2 = ((a[both, :2] - b[both, :2]) ** 2).sum(-1)
    return float(np.exp(-d2 / (2 * area * (2 * OKS_SIGMAS[both]) ** 2)).mean())


def clean_detections(
    people: list[tuple[np.ndarray, float]],
    width: int,
    height: int,
    *,
    min_confidence: float,
    min_keypoints: int = 3,
    max_similarity: float = 0.7,
) -> list[tuple[np.ndarray, float]]:
    """Drop a model's spurious people: fewer than ``min_keypoints`` confident keypoints, a body centred outside the
    frame, or a near-copy (OKS > ``max_similarity``) of a more confident person — MediaPipe returns two or three
    copies of one dancer on small frames."""
    kept: list[tuple[np.ndarray, float]] = []
    for kp, score in sorted(people, key=lambda p: -p[1]):
        valid = kp[:, 2] >= min_confidence
        if valid.sum() < min_keypoints:
            continue
        cx, cy = kp[valid, 0].mean(), kp[valid, 1].mean()
        if not (0 <= cx < width and 0 <= cy < height):
            continue
        if any(pose_similarity(kp, other, min_confidence) > max_similarity for other, _ in kept):
            continue
        kept.append((kp, score))
    return kept


def dancing_scores(keypoints: np.ndarray, mask: np.ndarray, min_confidence: float) -> np.ndarray:
    """How much each tracked slot dances, (P,): its skeleton's own articulation change per frame of the video.

    Each skeleton is taken relative to its box (centred, scaled by the box's longer side), so a pan, a zoom or a
    person's size does not count, only limbs moving against the body; the mean absolute change of the keypoints
    valid in consecutive frames is summed over the frames where the slot is seen twice in a row and divided by the
    video's length, so an onlooker standing still and a passer-by seen for a second both score low, and a dancer
    spinning on the floor in a ring of spectators scores high."""
    from .normalize import normalize_to_box

    normalized, _ = normalize_to_box(keypoints, min_confidence)  # (T, P, 17, 2)
    valid = (keypoints[..., 2] >= min_confidence) & mask[..., None]
    both = valid[1:] & valid[:-1]  # (T-1, P, 17)
    change = np.abs(normalized[1:] - normalized[:-1]).sum(-1)  # (T-1, P, 17)
    per_frame = np.where(both.sum(-1) >= 5, (change * both).sum(-1) / np.maximum(both.sum(-1), 1), 0.0)
    return per_frame.sum(0) / max(len(keypoints), 1)


def rank_dancers(
    keypoints: np.ndarray, mask: np.ndarray, keep: int, min_confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``keep`` slots that dance most, first (``dancing_scores``; ties: more frames seen, then the earlier
    slot): (keypoints (T, keep, 17, 3), mask (T, keep), the scores in the new order)."""
    scores = dancing_scores(keypoints, mask, min_confidence)
    seen = mask.sum(0)
    order = sorted(range(mask.shape[1]), key=lambda p: (-scores[p], -seen[p], p))[:keep]
    return keypoints[:, order], mask[:, order], scores[order]


def track_sequence(
    frames_people: list[list[tuple[np.ndarray, float]]], max_persons: int, max_age: int = 15
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame detections → tracked (T, P, 17, 3) keypoints and (T, P) mask."""
    tracker = SlotTracker(max_persons, max_age=max_age)
    out = [tracker.update(people) for people in frames_people]
    if not out:
        return np.zeros((0, max_persons, 17, 3), np.float32), np.zeros((0, max_persons), bool)
    kps, masks = zip(*out)
    return np.stack(kps), np.stack(masks)
