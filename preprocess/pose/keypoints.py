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


# The lines drawn between keypoints in a picture of a skeleton (COCO's skeleton without the ear-shoulder lines).
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
)  # fmt: skip

# The skeleton as a tree rooted at the nose, (child, parent): what a bone is (child minus parent) and the graph
# ST-GCN convolves over. A tree, unlike the picture's lines: every keypoint but the nose has one parent.
COCO_TREE = (
    (1, 0), (2, 0), (3, 1), (4, 2), (5, 0), (6, 0), (7, 5), (8, 6), (9, 7), (10, 8),
    (11, 5), (12, 6), (13, 11), (14, 12), (15, 13), (16, 14),
)  # fmt: skip


def flip_permutation() -> np.ndarray:
    """Index array p such that ``keypoints[..., p, :]`` swaps every left/right pair."""
    perm = np.arange(len(COCO_KEYPOINTS))
    for a, b in COCO_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


# BlazePose's 33 landmarks -> COCO-17.
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
# OpenPose BODY_25 and the older COCO-18 (BODY_25 without mid-hip 8 and the feet 19-24) -> COCO-17.
OPENPOSE_BODY25_TO_COCO = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
OPENPOSE_COCO18_TO_COCO = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)

# COCO's per-keypoint OKS constants.
OKS_SIGMAS = np.array(
    [
        0.026,
        0.025,
        0.025,
        0.035,
        0.035,
        0.079,
        0.079,
        0.072,
        0.072,
        0.062,
        0.062,
        0.107,
        0.107,
        0.087,
        0.087,
        0.089,
        0.089,
    ]
)
