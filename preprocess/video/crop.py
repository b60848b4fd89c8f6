"""Dancer-centred crops: a square window per frame around the people the pose stage found, so that the RGB and
flow streams see the dancers rather than the venue (as pose-guided action models do).

The window is the union of the tracked persons' boxes (``WORK/pose/<id>.npz``, in source pixels), widened by a
margin, made square, smoothed over time (a centred moving average of its centre and size, so it does not jitter with
the detector) and kept inside the frame. A frame where nobody is found keeps the previous frame's window; frames
before anybody is found use the whole frame (its centred square).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from ..batch import DataError, read_npz

CROPS = ("none", "dancers")
BACKGROUNDS = ("keep", "dim", "blur")  # what becomes of the pixels outside the tracked persons' boxes


def crop_params(crop: str, size: int, margin: float, background: str = "keep") -> dict:
    """The parameters a crop (and a background suppression) adds to a stage's sidecar (nothing for ``none`` and
    ``keep``, so existing outputs stay valid)."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, not {crop!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, not {background!r}")
    extra = {}
    if background != "keep":
        if not 0 <= margin <= 2:
            raise ValueError(f"crop margin {margin} (0 to 2) out of range")
        extra = {"background": background, "crop_margin": float(margin)}
    if crop == "none":
        return extra
    if size < 8 or not 0 <= margin <= 2:
        raise ValueError(f"crop size {size} (at least 8) or margin {margin} (0 to 2) out of range")
    return {"crop": crop, "crop_size": int(size), "crop_margin": float(margin), **extra}


def dancer_windows(
    boxes: np.ndarray,
    mask: np.ndarray,
    frame_indices: np.ndarray,
    frame_count: int,
    width: int,
    height: int,
    *,
    margin: float = 0.15,
    smooth: int = 9,
) -> np.ndarray:
    """(frame_count, 4) float windows x0, y0, x1, y1 (square, inside the frame, source pixels) from per-pose-frame
    person boxes (T, P, 4) with a (T, P) mask at source frames ``frame_indices``."""
    side_max = float(min(width, height))
    full = np.array([width / 2, height / 2, side_max / 2])  # centre x, centre y, half side
    found = np.full((frame_count, 3), np.nan)
    for t, index in enumerate(np.asarray(frame_indices)):
        present = mask[t].astype(bool)
        if not present.any() or not 0 <= index < frame_count:
            continue
        b = boxes[t][present]
        x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
        half = max(x1 - x0, y1 - y0) * (1 + 2 * margin) / 2
        found[index] = [(x0 + x1) / 2, (y0 + y1) / 2, half]
    # every frame: the last window found so far (pose may run on every n-th frame), the whole frame before any
    filled = np.empty_like(found)
    last = full
    for t in range(frame_count):
        if not np.isnan(found[t]).any():
            last = found[t]
        filled[t] = last
    if smooth > 1 and frame_count > 1:
        pad = smooth // 2
        padded = np.pad(filled, ((pad, pad), (0, 0)), mode="edge")
        kernel = np.ones(smooth) / smooth
        filled = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(3)], -1)
    half = np.clip(filled[:, 2], 4.0, side_max / 2)
    cx = np.clip(filled[:, 0], half, width - half)
    cy = np.clip(filled[:, 1], half, height - half)
    return np.stack([cx - half, cy - half, cx + half, cy + half], -1)


def crop_inputs(out_dir: Path, video_id: str) -> dict:
    """What a dancer-cropped output of ``video_id`` is made from: the SHA-256 of its pose file (None when there is
    none), so that pose redone with another backend, or moved away, makes the crop stale."""
    path = Path(out_dir).parent / "pose" / f"{video_id}.npz"
    return {"pose": hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None}


def read_dancer_windows(pose_dir: Path, video, *, margin: float) -> np.ndarray:
    """``dancer_windows`` of one manifest video from its pose output, or a named error when there is none."""
    path = pose_dir / f"{video.video_id}.npz"
    if not path.is_file():
        raise DataError(
            path, f"--crop dancers needs the video's pose (run bin/preprocess pose first): {video.video_id}"
        )
    pose = read_npz(path)
    return dancer_windows(
        pose["boxes"],
        pose["mask"],
        pose["frame_indices"],
        video.frame_count,
        video.width,
        video.height,
        margin=margin,
    )


def dancer_boxes(pose_dir: Path, video, *, margin: float, mode: str = "dim") -> list[np.ndarray]:
    """Per source frame, the tracked persons' boxes (N, 4) widened by ``margin`` per side (source pixels): those
    of the latest pose frame at or before it (pose may run on every n-th frame); none before anybody is found."""
    path = pose_dir / f"{video.video_id}.npz"
    if not path.is_file():
        raise DataError(
            path,
            f"--background {mode} needs the video's pose (run bin/preprocess pose first, or pass --background keep): "
            f"{video.video_id}",
        )
    pose = read_npz(path)
    at = {}
    for t, index in enumerate(np.asarray(pose["frame_indices"]).tolist()):
        b = pose["boxes"][t][pose["mask"][t].astype(bool)].astype(np.float64)
        pad = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])[:, None] * margin
        at[index] = b + np.concatenate([-pad, -pad, pad, pad], 1)
    out, last = [], np.zeros((0, 4))
    for t in range(video.frame_count):
        last = at.get(t, last)
        out.append(last)
    return out


def hidden_person_boxes(work: Path, video, *, margin: float) -> list[np.ndarray]:
    """Per source frame, every person to hide (scene reliance, streams.data): the pose stage's boxes, and where the
    persons stage (a multi-person model, WORK/persons) found more people in that frame, its boxes as well: a pose
    stage tracking a few dancers (MediaPipe finds one) leaves a crew's other dancers and the crowd visible. Either
    stage alone is used when the other is absent."""
    found = [
        dancer_boxes(work / stage, video, margin=margin, mode="hide")
        for stage in ("pose", "persons")
        if (work / stage / f"{video.video_id}.npz").is_file()
    ]
    if not found:
        raise DataError(
            work / "pose" / f"{video.video_id}.npz",
            f"hiding the persons needs the video's pose (run bin/preprocess pose or persons): {video.video_id}",
        )
    if len(found) == 1:
        return found[0]
    pose, persons = found
    return [np.concatenate([a, b]) if len(b) > len(a) else a for a, b in zip(pose, persons)]


def box_mask(boxes: np.ndarray, height: int, width: int, scale: tuple[float, float]) -> np.ndarray:
    """(height, width) bool: True inside any of ``boxes`` (x0, y0, x1, y1 in source pixels; the image is the source
    resized by ``scale`` (x, y)): what background suppression keeps, and what streams.data hides."""
    inside = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([*scale, *scale]):
        inside[max(int(y0), 0) : max(int(np.ceil(y1)), 0), max(int(x0), 0) : max(int(np.ceil(x1)), 0)] = True
    return inside


def suppress_background(image: np.ndarray, boxes: np.ndarray, scale: tuple[float, float], mode: str) -> np.ndarray:
    """``image`` with the pixels outside ``boxes`` (source pixels; the image is the source resized by ``scale``)
    dimmed to a quarter of their brightness or blurred beyond recognition (a Gaussian of a sixth of the shorter
    side): the venue, the crowd and the lighting rig, which RGB networks learn instead of the dance, fade. With
    nobody found the whole frame is kept."""
    if mode == "keep" or not len(boxes):
        return image
    h, w = image.shape[:2]
    inside = box_mask(boxes, h, w, scale)
    if mode == "dim":
        faded = (image.astype(np.uint16) // 4).astype(np.uint8)
    else:
        sigma = max(min(h, w) / 6, 1.0)
        faded = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.where(inside[..., None], image, faded)


def crop_to_window(image: np.ndarray, window: np.ndarray, scale: tuple[float, float], size: int) -> np.ndarray:
    """The ``window`` (source pixels) of an image resized by ``scale`` (x, y) from the source, resized to
    size × size (area interpolation when shrinking)."""
    x0, y0, x1, y1 = window * np.array([scale[0], scale[1], scale[0], scale[1]])
    h, w = image.shape[:2]
    x0, y0 = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.floor(y0), 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(x1), x0 + 1, w)), int(np.clip(np.ceil(y1), y0 + 1, h))
    patch = image[y0:y1, x0:x1]
    shrink = patch.shape[0] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
