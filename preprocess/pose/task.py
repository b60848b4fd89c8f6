"""The pose preprocessor: per-frame multi-person COCO-17 skeletons of every video of a manifest, in batch.

Each video: the backend's detections per frame (``backends.py``), cleaned and tracked into slots
(``tracking.py``), normalised and stored (``storage.py``).
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np

from ..batch import DataError, Task, write_npz, write_sidecar
from ..records import VideoRecord
from ..video import Resize, Sampling, prefetch, read_frames
from .storage import PoseInfo, assemble, verify_pose
from .tracking import clean_detections, rank_dancers, track_sequence

POSE_VERSION = 2  # 2: duplicate and off-frame detections are removed before tracking


def pose_params(
    *,
    backend: str,
    model: str,
    model_sha256: str,
    max_persons: int = 4,
    step: int = 1,
    resize: str = "none",
    min_keypoint_confidence: float = 0.2,
    rank: str = "detection",
) -> dict:
    if rank not in RANKINGS:
        raise ValueError(f"rank must be one of {', '.join(RANKINGS)}, not {rank!r}")
    if max_persons < 1:
        raise ValueError(f"max-persons must be at least 1, not {max_persons}")
    if step < 1:
        raise ValueError(f"step must be at least 1, not {step}")
    return {
        "version": POSE_VERSION,
        "backend": backend,
        "model": str(model),
        "model_sha256": model_sha256,
        "max_persons": max_persons,
        "step": step,
        "resize": str(Resize.parse(resize)),
        "min_keypoint_confidence": min_keypoint_confidence,
        # recorded only when not the default, so that outputs made before ranking existed stay valid
        **({"rank": rank} if rank != "detection" else {}),
    }


# Slot order: "detection" keeps the order people were first found in; "dancing" tracks TRACKED_PER_SLOT times as
# many people as are kept and keeps those who dance most, first (onlookers of a battle stand still). Detection is
# the default: on unseen street-dance sources MoveNet's pose stream scored 68.2 % with it, 54.5 % ranked (22 clips).
RANKINGS = ("detection", "dancing")
TRACKED_PER_SLOT = 2
ONNX_POSE_BATCH = 32  # frames per call of an ONNX pose model whose export takes batches

_MODEL = None  # one pose model per worker process


def pose_model_for(params: dict, device: str = "cpu"):
    """The pose model of these parameters on ``device``, made once per process (it tracks ``_tracked_slots``)."""
    global _MODEL
    from .backends import create_pose_model

    tracked = _tracked_slots(params)
    key = (params["backend"], params["model"], tracked, device)
    if _MODEL is None or _MODEL[0] != key:
        _MODEL = (key, create_pose_model({**params, "max_persons": tracked}, device))
    return _MODEL[1]


def _tracked_slots(params: dict) -> int:
    ranking = params.get("rank", "detection")  # (sidecars before ranking existed: detection order)
    return params["max_persons"] * (TRACKED_PER_SLOT if ranking == "dancing" else 1)


def _detections(model, frames, batch: int):
    """(frame, people) for every frame: an ONNX model is given ``batch`` frames a call (one run of the model for
    them all, where its export takes batches); MediaPipe's VIDEO mode sees them one at a time, in order."""
    with model.video() as detect:
        if batch <= 1:
            for frame in frames:
                yield frame, detect(frame.image, frame.time * 1000.0)
            return
        frames = iter(frames)
        while chunk := list(itertools.islice(frames, batch)):
            yield from zip(chunk, model.detect_batch([frame.image for frame in chunk]), strict=True)


def in_video_pixels(people: list, image: np.ndarray, video: VideoRecord, params: dict) -> list:
    """One frame's detections on the (resized) ``image`` → the video's own pixels, cleaned (``clean_detections``):
    what the pose stage keeps of a frame, offline and live alike."""
    h, w = image.shape[:2]
    if (w, h) != (video.width, video.height):  # back to the video's own pixels
        for kp, _ in people:
            kp[:, 0] *= video.width / w
            kp[:, 1] *= video.height / h
    return clean_detections(people, video.width, video.height, min_confidence=params["min_keypoint_confidence"])


def pose_arrays(frames_people: list, indices, params: dict, source: str) -> dict:
    """The stored arrays of a clip from its frames' cleaned detections: tracked into slots (from the clip's first
    frame on), ranked if asked, normalised."""
    if not len(indices):
        raise DataError(source, "no frames decode")
    keypoints, mask = track_sequence(frames_people, _tracked_slots(params))
    if params.get("rank", "detection") == "dancing":
        keypoints, mask, _ = rank_dancers(keypoints, mask, params["max_persons"], params["min_keypoint_confidence"])
    arrays = assemble(keypoints, mask, np.asarray(indices), params["min_keypoint_confidence"])
    if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
        raise DataError(source, "the pose model gave non-finite keypoints: nothing stored")
    return arrays


def write_pose(out_dir: Path, video: VideoRecord, params: dict, arrays: dict) -> None:
    write_npz(out_dir / f"{video.video_id}.npz", **arrays)
    write_sidecar(
        out_dir,
        video,
        params,
        frames=len(arrays["frame_indices"]),
        width=video.width,
        height=video.height,
        persons_per_frame=round(float(arrays["mask"].sum(1).mean()), 3),
    )


def estimate_video_pose(video: VideoRecord, out_dir: Path, params: dict, *, device: str = "cpu", batch: int = 1) -> int:
    """Run the pose model over one video, track, normalise, write npz + sidecar; returns frames processed.
    ``device`` and ``batch`` say how the model runs, not what it makes: they are not recorded."""
    model = pose_model_for(params, device)
    resize = Resize.parse(params["resize"])
    frames_people, indices = [], []
    frames = prefetch(read_frames(video.to_source(), Sampling(step=params["step"]), resize, colour="rgb"))
    # (a model whose export fixes its batch at 1 gains nothing from batches: its frames stream one at a time)
    for frame, people in _detections(model, frames, batch if getattr(model, "takes_batches", False) else 1):
        frames_people.append(in_video_pixels(people, frame.image, video, params))
        indices.append(frame.index)
    write_pose(out_dir, video, params, pose_arrays(frames_people, indices, params, video.source))
    return len(indices)


def pose_task(params: dict, *, device: str = "cpu", batch: int | None = None, name: str = "pose") -> Task:
    """The pose stage's batch task; the ONNX backends run on ``device`` (cpu, cuda, cuda:N) ``batch`` frames a
    call (default ``ONNX_POSE_BATCH``; MediaPipe's VIDEO mode takes one at a time). On a GPU it is a GPU task: Ray
    gives each worker a fraction of one, the pool a few workers per GPU. ``name`` is its folder in WORK: ``persons``
    for the persons stage, the same task run with a multi-person backend (see preprocess.stages)."""
    mediapipe = params.get("backend") == "mediapipe"
    batch = batch if batch is not None else 1 if mediapipe else ONNX_POSE_BATCH
    if mediapipe and (device != "cpu" or batch != 1):
        raise DataError(
            "--device" if device != "cpu" else "--batch",
            "the mediapipe backend runs on the CPU one frame at a time (--device and --batch: movenet or onnx)",
        )
    if batch < 1:
        raise DataError("--batch", f"must be at least 1, not {batch}")
    return Task(
        name=name,
        params=params,
        run=functools.partial(estimate_video_pose, device=device, batch=batch),
        data_suffix=".npz",
        verify=verify_pose,
        gpu=device != "cpu",
        info=PoseInfo,
    )
