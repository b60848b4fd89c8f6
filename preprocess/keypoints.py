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
