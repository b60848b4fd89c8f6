"""Camera-motion compensation of optical flow (bin/preprocess flow --camera-motion)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from preprocess import load_flow
from preprocess.flow import camera_motion, compensate
from tests.conftest import run_bin


def _homography_field(matrix: np.ndarray, h: int, w: int) -> np.ndarray:
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([gx, gy], -1)
    return cv2.perspectiveTransform(grid.reshape(-1, 1, 2), matrix).reshape(h, w, 2) - grid


def test_a_homography_fit_removes_a_zooming_pan_and_keeps_the_dancer():
    h, w = 120, 160
    zoom_pan = np.array([[1.03, 0.0, -2.4 + 1.5], [0.0, 1.03, -1.8 - 0.5], [0.0, 0.0, 1.0]])  # 3 % zoom + pan
    field = _homography_field(zoom_pan, h, w)
    dancer = (slice(40, 80), slice(60, 90))
    field[dancer] = [4.0, -1.0]  # a dancer moving against the scene
    flat = compensate(field, "homography")
    outside = np.ones((h, w), bool)
    outside[dancer] = False
    assert np.abs(flat[outside]).max() < 0.05
    expected = np.array([4.0, -1.0]) - _homography_field(zoom_pan, h, w)[dancer]
    assert np.abs(flat[dancer] - expected).max() < 0.05  # the dancer's own motion, the camera's removed
    # the median models a pan only: a zoom leaves most of itself behind
    assert np.abs(compensate(field, "median")[outside]).mean() > 10 * np.abs(flat[outside]).mean()
    pan = np.broadcast_to(np.float32([2.5, -1.0]), (h, w, 2)).copy()
    assert np.array_equal(compensate(pan, "median"), np.zeros_like(pan))
    assert np.array_equal(compensate(pan, "none"), pan)
    with pytest.raises(ValueError, match="unknown camera motion"):
        camera_motion(pan, "affine")


def _write_pan(path, texture: np.ndarray, step: tuple[float, float], frames: int = 8, size=(160, 120)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
    for t in range(frames):
        # the camera moves by `step` per frame over a static scene: the image content moves by -step
        shift = np.float32([[1, 0, -40 - step[0] * t], [0, 1, -40 - step[1] * t]])
        writer.write(cv2.warpAffine(texture, shift, size, flags=cv2.INTER_LINEAR))
    writer.release()


def test_a_synthetic_pan_gives_near_zero_compensated_flow_recorded_in_the_sidecar(tmp_path):
    # texture everywhere (Farneback sees no motion on flat areas): smoothed noise, contrast stretched
    noise = np.random.default_rng(0).random((400, 400, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    texture = cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    data = tmp_path / "data"
    for label, steps in (("left", [(2.0, 0.0), (3.0, 1.0)]), ("right", [(-2.0, 0.5), (-1.5, -1.0)])):
        (data / label).mkdir(parents=True)
        for k, step in enumerate(steps):
            _write_pan(data / label / f"{label}_pan{k}.avi", texture, step)
    speeds = {}
    for mode in ("none", "median", "homography"):
        work = tmp_path / mode
        run_bin(
            "preprocess", "flow", data, work, "--resize", "none", "--storage", "float16",
            "--camera-motion", mode, "--workers", "1", check=True,
        )  # fmt: skip
        side = json.loads((work / "flow" / "left_pan1.json").read_text())
        assert side["params"].get("camera_motion", "none") == mode
        flow = load_flow(work, "left_pan1")[:, 16:-16, 16:-16]  # (borders: the warp's edge)
        speeds[mode] = float(np.linalg.norm(flow, axis=-1).mean())
    assert speeds["none"] > 1.5  # the camera moves √10 ≈ 3.2 px a frame (Farneback sees most of it)
    assert speeds["median"] < 0.1 * speeds["none"] and speeds["homography"] < 0.1 * speeds["none"], speeds
