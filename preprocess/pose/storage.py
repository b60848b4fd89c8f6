"""How skeletons are stored (``WORK/pose/<video_id>.npz`` + ``<video_id>.json``) and read back.

P = ``max_persons`` slots, T frames:

* ``keypoints`` (T, P, 17, 3) float32: x, y in the video's pixels and a confidence in [0, 1];
* ``boxes`` (T, P, 4) float32: x0, y0, x1, y1 around the person's valid keypoints;
* ``normalized`` (T, P, 17, 2) float32: keypoints mapped into [-1, 1] by their box (square about its centre);
* ``mask`` (T, P) bool: slot p holds a person at frame t; empty slots are all zeros, never NaN;
* ``frame_indices`` (T,) int64: which source frames were processed (all of them unless ``step`` > 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..batch import DataError, StageOutput, check_npz, read_npz, sidecar_whole_number
from .normalize import normalize_to_box


def assemble(keypoints: np.ndarray, mask: np.ndarray, frame_indices: np.ndarray, min_confidence: float) -> dict:
    """The stored arrays from tracked keypoints (T, P, 17, 3) and mask (T, P)."""
    keypoints = np.where(mask[..., None, None], np.nan_to_num(keypoints), 0).astype(np.float32)
    normalized, boxes = normalize_to_box(keypoints, min_confidence)
    normalized[~mask] = 0
    boxes[~mask] = 0
    return {
        "keypoints": keypoints,
        "boxes": boxes.astype(np.float32),
        "normalized": normalized,
        "mask": mask,
        "frame_indices": frame_indices.astype(np.int64),
    }


MEMBERS = ("keypoints", "normalized", "boxes", "mask", "frame_indices")


def verify_pose(data: Path, sidecar: dict) -> str | None:
    """A finished pose file is whole: every member present, every CRC right."""
    return check_npz(data, MEMBERS)


def load_pose(work: str | os.PathLike, video_id: str) -> dict[str, np.ndarray]:
    """``keypoints`` (T, P, 17, 3), ``normalized`` (T, P, 17, 2), ``boxes`` (T, P, 4), ``mask`` (T, P),
    ``frame_indices`` (T,) of one video."""
    out_dir = Path(work) / "pose"
    side = out_dir / f"{video_id}.json"
    if not side.is_file():
        raise DataError(side, f"no pose for video {video_id!r} (run bin/preprocess pose or import-pose)")
    return read_npz(out_dir / f"{video_id}.npz")


@dataclass(frozen=True)
class PoseInfo(StageOutput):
    """What a pose sidecar holds: the frames processed, the video's size (keypoints are in its pixels), the mean
    persons found per frame and the parameters (backend, model, step, persons)."""

    stage: ClassVar[str] = "pose"
    how: ClassVar[str] = "run bin/preprocess pose or import-pose"

    video_id: str
    params: dict
    frames: int
    width: int
    height: int
    persons_per_frame: float | None

    @classmethod
    def from_sidecar(cls, data: dict, side) -> PoseInfo:
        if "width" not in data or "height" not in data:
            raise DataError(side, "not a pose sidecar (no video width and height)")
        persons = data.get("persons_per_frame")
        if persons is not None and (isinstance(persons, bool) or not isinstance(persons, (int, float))):
            raise DataError(side, f"persons_per_frame: {str(persons)[:40]!r} is not a number")
        return cls(
            str(data.get("video_id", "")),
            data["params"],
            sidecar_whole_number(data, "frames", side, default=0),
            sidecar_whole_number(data, "width", side),
            sidecar_whole_number(data, "height", side),
            persons,
        )


@dataclass(frozen=True)
class PersonsInfo(PoseInfo):
    """The persons stage's sidecar (``bin/preprocess persons``: the pose task's output, in WORK/persons)."""

    stage: ClassVar[str] = "persons"
    how: ClassVar[str] = "run bin/preprocess persons"
