"""Bounding-box normalisation of skeletons into [-1, 1], the form the pose stream learns from."""

from __future__ import annotations

import numpy as np


def boxes_from_keypoints(keypoints: np.ndarray, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(…, 4) boxes x0, y0, x1, y1 around keypoints (…, 17, 3) with confidence >= ``min_confidence``, and the
    (…, 17) validity mask; a skeleton with no valid keypoint gets a zero box."""
    valid = keypoints[..., 2] >= min_confidence
    big = np.float32(3e38)
    x, y = keypoints[..., 0], keypoints[..., 1]
    boxes = np.stack(
        [
            np.where(valid, x, big).min(-1),
            np.where(valid, y, big).min(-1),
            np.where(valid, x, -big).max(-1),
            np.where(valid, y, -big).max(-1),
        ],
        axis=-1,
    )
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
