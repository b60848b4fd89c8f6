"""COCO-17 keypoint conventions shared by the synthetic ground truth, the pose preprocessor and the pose stream."""

from __future__ import annotations

import numpy as np

COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# Left/right pairs: a horizontal flip must swap these so that "left" keeps meaning the person's apparent left.
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def flip_permutation() -> np.ndarray:
    """Index array p such that ``keypoints[..., p, :]`` swaps every left/right pair."""
    perm = np.arange(len(COCO_KEYPOINTS))
    for a, b in COCO_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


def flip_keypoints_horizontally(xy: np.ndarray, width: int) -> np.ndarray:
    """Mirror pixel keypoints (..., 17, >=2) in an image of ``width`` pixels and swap left/right names.

    Pixel centres sit at integer coordinates, so column x maps to ``width - 1 - x``.
    """
    out = np.array(xy, copy=True)
    out[..., 0] = (width - 1) - out[..., 0]
    return out[..., flip_permutation(), :]


# BlazePose's 33 landmarks -> COCO-17.
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# OpenPose BODY_25 and the older COCO-18 (BODY_25 without mid-hip 8 and the feet 19-24) -> COCO-17.
OPENPOSE_BODY25_TO_COCO = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
OPENPOSE_COCO18_TO_COCO = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)

# COCO's per-keypoint OKS constants.
OKS_SIGMAS = np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087,
                       .089, .089])


def boxes_from_keypoints(keypoints: np.ndarray, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(…, 4) boxes x0, y0, x1, y1 around keypoints (…, 17, 3) with confidence >= ``min_confidence``, and the
    (…, 17) validity mask; a skeleton with no valid keypoint gets a zero box."""
    valid = keypoints[..., 2] >= min_confidence
    big = np.float32(3e38)
    x, y = keypoints[..., 0], keypoints[..., 1]
    boxes = np.stack([np.where(valid, x, big).min(-1), np.where(valid, y, big).min(-1),
                      np.where(valid, x, -big).max(-1), np.where(valid, y, -big).max(-1)], axis=-1)
    boxes[~valid.any(-1)] = 0
    return boxes.astype(np.float32), valid


def normalize_to_box(keypoints: np.ndarray, min_confidence: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Bounding-box normalisation of skeletons (…, 17, 3) → ((…, 17, 2) in [-1, 1], boxes (…, 4)).

    The box around a skeleton's valid keypoints is made square about its centre (aspect ratio preserved), so the
    longer side spans exactly [-1, 1]. Invalid keypoints, and skeletons with fewer than two distinct valid points,
    are zeros; the result is never NaN.
    """
    boxes, valid = boxes_from_keypoints(keypoints, min_confidence)
    centre = np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], axis=-1)
    half = np.maximum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]) / 2
    ok = half > 1e-6
    scale = np.where(ok, 1.0 / np.where(ok, half, 1.0), 0.0)
    normalized = (keypoints[..., :2] - centre[..., None, :]) * scale[..., None, None]
    normalized = np.where(valid[..., None] & ok[..., None, None], normalized, 0.0)
    return np.clip(normalized, -1.0, 1.0).astype(np.float32), boxes


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
