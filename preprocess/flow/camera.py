"""Camera-motion compensation of optical flow: the dominant (camera) motion of each field, removed.

Street, battle and stage footage pans, zooms and shakes, so raw flow measures the camera as much as the dancer.
``median``: the per-component median flow (a pan; the original two-stream network subtracted the mean flow for this
reason). ``homography``: a homography fitted with RANSAC to correspondences sampled from the flow itself, as
improved dense trajectories (Wang & Schmid, 2013) did with matched features: pans, zooms and rotations of a scene
far from the camera; the dancers, who move against it, fall out as outliers. A fit that fails (too little texture)
falls back to the median.
"""

from __future__ import annotations

import cv2
import numpy as np

CAMERA_MOTIONS = ("none", "median", "homography")
GRID_STEP = 8  # one correspondence per 8×8 pixels: thousands of points, a fraction of a millisecond of RANSAC
RANSAC_THRESHOLD = 1.0  # pixels


def camera_motion(flow: np.ndarray, mode: str) -> np.ndarray:
    """(H, W, 2) float32: the dominant motion of a (H, W, 2) flow field under ``mode``."""
    if mode == "median":
        return np.broadcast_to(np.median(flow.reshape(-1, 2), axis=0).astype(np.float32), flow.shape)
    if mode != "homography":
        raise ValueError(f"unknown camera motion model {mode!r}: {', '.join(CAMERA_MOTIONS)}")
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[GRID_STEP // 2 : h : GRID_STEP, GRID_STEP // 2 : w : GRID_STEP]
    src = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()]
    matrix = None
    if len(src) >= 8:
        matrix, _ = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_THRESHOLD, maxIters=500, confidence=0.99)
    if matrix is None or not np.isfinite(matrix).all():
        return camera_motion(flow, "median")
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([gx, gy], -1)
    moved = cv2.perspectiveTransform(grid.reshape(-1, 1, 2), matrix).reshape(h, w, 2)
    return (moved - grid).astype(np.float32)


def compensate(flow: np.ndarray, mode: str) -> np.ndarray:
    """``flow`` less its camera motion (unchanged for ``none``)."""
    if mode == "none":
        return flow
    return (flow - camera_motion(flow, mode)).astype(np.float32)
