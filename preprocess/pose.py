"""Per-frame multi-person COCO-17 skeletons per video, with identities kept across frames.

Stored per video (``WORK/pose/<video_id>.npz`` + ``<video_id>.json``), P = ``max_persons`` slots, T frames:

* ``keypoints`` (T, P, 17, 3) float32: x, y in the video's pixels and a confidence in [0, 1];
* ``boxes`` (T, P, 4) float32: x0, y0, x1, y1 around the person's valid keypoints;
* ``normalized`` (T, P, 17, 2) float32: keypoints mapped into [-1, 1] by their box (square about its centre);
* ``mask`` (T, P) bool: slot p holds a person at frame t; empty slots are all zeros, never NaN;
* ``frame_indices`` (T,) int64: which source frames were processed (all of them unless ``step`` > 1).

Slot p is the same dancer over time: detections are matched to the slots' last boxes by IoU (Hungarian
assignment); a new person takes the lowest free slot; a slot unseen for ``max_age`` frames is freed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from .batch import Task, write_sidecar
from .errors import DataError
from .keypoints import normalize_to_box
from .manifest import VideoRecord
from .storage import read_json, read_npz, write_npz
from .video import Resize, Sampling, prefetch, read_frames

POSE_VERSION = 2  # 2: duplicate and off-frame detections are removed before tracking


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
        alive = [p for p in range(self.max_persons)
                 if self.last_box[p] is not None and self.t - self.last_seen[p] <= self.max_age]
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
                continue  # more people than slots: the least confident are dropped
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
    from .keypoints import OKS_SIGMAS

    both = (a[:, 2] >= min_confidence) & (b[:, 2] >= min_confidence)
    if both.sum() < 3:
        return 0.0
    pts = np.concatenate([a[both, :2], b[both, :2]])
    area = max(float(np.ptp(pts[:, 0]) * np.ptp(pts[:, 1])), 1.0)
    d2 = ((a[both, :2] - b[both, :2]) ** 2).sum(-1)
    return float(np.exp(-d2 / (2 * area * (2 * OKS_SIGMAS[both]) ** 2)).mean())


def clean_detections(people: list[tuple[np.ndarray, float]], width: int, height: int, *, min_confidence: float,
                     min_keypoints: int = 3, max_similarity: float = 0.7) -> list[tuple[np.ndarray, float]]:
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


def assemble(keypoints: np.ndarray, mask: np.ndarray, frame_indices: np.ndarray, min_confidence: float) -> dict:
    """The stored arrays from tracked keypoints (T, P, 17, 3) and mask (T, P)."""
    keypoints = np.where(mask[..., None, None], np.nan_to_num(keypoints), 0).astype(np.float32)
    normalized, boxes = normalize_to_box(keypoints, min_confidence)
    normalized[~mask] = 0
    boxes[~mask] = 0
    return {"keypoints": keypoints, "boxes": boxes.astype(np.float32), "normalized": normalized, "mask": mask,
            "frame_indices": frame_indices.astype(np.int64)}


def track_sequence(frames_people: list[list[tuple[np.ndarray, float]]], max_persons: int,
                   max_age: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame detections → tracked (T, P, 17, 3) keypoints and (T, P) mask."""
    tracker = SlotTracker(max_persons, max_age=max_age)
    out = [tracker.update(people) for people in frames_people]
    if not out:
        return np.zeros((0, max_persons, 17, 3), np.float32), np.zeros((0, max_persons), bool)
    kps, masks = zip(*out)
    return np.stack(kps), np.stack(masks)


def pose_params(*, backend: str, model: str, model_sha256: str, max_persons: int = 4, step: int = 1,
                resize: str = "none", min_keypoint_confidence: float = 0.2) -> dict:
    if max_persons < 1:
        raise ValueError(f"max-persons must be at least 1, not {max_persons}")
    if step < 1:
        raise ValueError(f"step must be at least 1, not {step}")
    return {"version": POSE_VERSION, "backend": backend, "model": str(model), "model_sha256": model_sha256,
            "max_persons": max_persons, "step": step, "resize": str(Resize.parse(resize)),
            "min_keypoint_confidence": min_keypoint_confidence}


_MODEL = None  # one pose model per worker process


def _model_for(params: dict):
    global _MODEL
    from .pose_models import create_pose_model

    key = (params["backend"], params["model"], params["max_persons"])
    if _MODEL is None or _MODEL[0] != key:
        _MODEL = (key, create_pose_model(params))
    return _MODEL[1]


def estimate_video_pose(video: VideoRecord, out_dir: Path, params: dict) -> int:
    """Run the pose model over one video, track, normalise, write npz + sidecar; returns frames processed."""
    model = _model_for(params)
    resize = Resize.parse(params["resize"])
    frames_people, indices = [], []
    with model.video() as detect:
        for frame in prefetch(read_frames(video.to_source(), Sampling(step=params["step"]), resize, colour="rgb")):
            people = detect(frame.image, frame.time * 1000.0)
            h, w = frame.image.shape[:2]
            if (w, h) != (video.width, video.height):  # back to the video's own pixels
                for kp, _ in people:
                    kp[:, 0] *= video.width / w
                    kp[:, 1] *= video.height / h
            frames_people.append(clean_detections(people, video.width, video.height,
                                                  min_confidence=params["min_keypoint_confidence"]))
            indices.append(frame.index)
    if not indices:
        raise DataError(video.source, "no frames decode")
    keypoints, mask = track_sequence(frames_people, params["max_persons"])
    arrays = assemble(keypoints, mask, np.asarray(indices), params["min_keypoint_confidence"])
    write_npz(out_dir / f"{video.video_id}.npz", **arrays)
    write_sidecar(out_dir, video, params, frames=len(indices), width=video.width, height=video.height,
                  persons_per_frame=round(float(mask.sum(1).mean()), 3))
    return len(indices)


def pose_task(params: dict) -> Task:
    return Task(name="pose", params=params, run=estimate_video_pose, data_suffix=".npz")


def load_pose(work: str | os.PathLike, video_id: str) -> dict[str, np.ndarray]:
    """``keypoints`` (T, P, 17, 3), ``normalized`` (T, P, 17, 2), ``boxes`` (T, P, 4), ``mask`` (T, P),
    ``frame_indices`` (T,) of one video."""
    out_dir = Path(work) / "pose"
    side = out_dir / f"{video_id}.json"
    if not side.is_file():
        raise DataError(side, f"no pose for video {video_id!r} (run bin/preprocess pose or import-pose)")
    return read_npz(out_dir / f"{video_id}.npz")


def pose_info(work: str | os.PathLike, video_id: str) -> dict:
    return read_json(Path(work) / "pose" / f"{video_id}.json")
