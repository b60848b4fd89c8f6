"""Skeleton augmentation for real footage (pyskl-style): a random affine map of the normalised skeleton (rotation,
scale, shear), random person dropping, and the skeleton presets of ``--skeleton-augment``.

Coordinates are the box-normalised keypoints of ``preprocess.pose.normalize`` ([-1, 1] about the person's box
centre, y down), so the transforms act about the person's own centre.
"""

from __future__ import annotations

import numpy as np

SKELETON_AUGMENTS = {
    # the augmentation of earlier releases: scale jitter of coordinates and position, horizontal flip
    "light": {"rotate": 0.0, "scale": 0.1, "shear": 0.0, "drop_person": 0.0},
    # for real footage: camera angles, body proportions, crowds where a dancer is missed
    "strong": {"rotate": 15.0, "scale": 0.15, "shear": 0.15, "drop_person": 0.15},
}


def affine_matrix(rotate_deg: float = 0.0, scale: float = 1.0, shear: float = 0.0) -> np.ndarray:
    """2×2 map of (x, y): rotation by ``rotate_deg`` degrees (counter-clockwise as seen on screen, where y points
    down), then a horizontal shear (x += shear · y), times ``scale``."""
    a = np.deg2rad(rotate_deg)
    # on screen y points down, so a counter-clockwise turn is the clockwise matrix of y-up coordinates
    rotation = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    shearing = np.array([[1.0, shear], [0.0, 1.0]])
    return (scale * shearing @ rotation).astype(np.float32)


def transform_skeleton(features: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×2 map to the normalised (x, y) of every keypoint of (..., 54) pose features; confidences and the
    person's place in the frame are unchanged. Absent keypoints (all zero) stay zero."""
    out = features.copy()
    joints = out[..., :51].reshape(*out.shape[:-1], 17, 3)
    joints[..., :2] = joints[..., :2] @ matrix.T
    out[..., :51] = joints.reshape(*out.shape[:-1], 51)
    return out


def drop_persons(mask: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """(T, P) mask with each person slot that holds someone dropped for the whole clip with probability ``p``;
    never the last one left."""
    present = np.flatnonzero(mask.any(0))
    if p <= 0 or len(present) < 2:
        return mask
    drop = present[rng.random(len(present)) < p]
    if len(drop) == len(present):
        drop = drop[1:]
    out = mask.copy()
    out[:, drop] = False
    return out


def random_skeleton_augment(
    features: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, rotate, scale, shear, drop_person
):
    """One clip's random augmentation: (features, mask). Draws, in order: angle, scale, shear, dropped persons."""
    matrix = affine_matrix(
        rng.uniform(-rotate, rotate) if rotate else 0.0,
        rng.uniform(1 - scale, 1 + scale) if scale else 1.0,
        rng.uniform(-shear, shear) if shear else 0.0,
    )
    features = transform_skeleton(features, matrix)
    mask = drop_persons(mask, rng, drop_person)
    return features * mask[..., None], mask
