"""A resized RGB frame cache per video (``WORK/frames/<video_id>.npy``, uint8 (T, H, W, 3), memory-mappable).

Decoding an mp4 and resizing each frame on every training epoch costs more than the RGB network's data loader can
spare on a CPU; a cache decoded once at training size is read by memory map at disk speed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..batch import (
    DataError,
    NpyStreamWriter,
    StageOutput,
    Task,
    atomic_path,
    check_npy,
    sidecar_whole_numbers,
    write_sidecar,
)
from ..records import VideoRecord
from .crop import crop_inputs, crop_params, crop_to_window, dancer_boxes, read_dancer_windows, suppress_background
from .reader import Resize, Sampling, prefetch, read_frames

FRAMES_VERSION = 1


@dataclass(frozen=True)
class FramesInfo(StageOutput):
    """What a frame cache's sidecar holds: the stored shape (T, H, W, 3), the source frame of each stored frame,
    the parameters and the other stages' outputs it was made from."""

    stage: ClassVar[str] = "frames"
    how: ClassVar[str] = "run bin/preprocess frames"

    video_id: str
    params: dict
    shape: tuple[int, ...]
    frame_indices: np.ndarray
    inputs: dict

    @classmethod
    def from_sidecar(cls, data: dict, side) -> FramesInfo:
        if "shape" not in data:
            raise DataError(side, "not a frame-cache sidecar (no shape)")
        shape = sidecar_whole_numbers(data, "shape", side, length=4)
        indices = data.get("frame_indices")
        if indices is None:  # (an early release's sidecar: every step-th frame)
            indices = np.arange(shape[0]) * data["params"].get("step", 1)
        else:
            indices = sidecar_whole_numbers(data, "frame_indices", side, length=shape[0])
        return cls(
            str(data.get("video_id", "")), data["params"], shape, np.asarray(indices, np.int64), data.get("inputs", {})
        )


def frames_params(
    *,
    resize: str = "short:128",
    step: int = 1,
    crop: str = "none",
    crop_size: int = 128,
    crop_margin: float = 0.15,
    background: str = "dim",
) -> dict:
    """With ``crop="dancers"`` every frame is the dancers' window (``crop.py``, from WORK/pose) resized to
    crop_size × crop_size, taken from the frame resized by ``resize``; with ``background`` dim or blur, the pixels
    outside the tracked persons' boxes (widened by ``crop_margin``) are dimmed (the default: it reads WORK/pose, so
    the pose stage runs first) or blurred first; ``keep`` leaves the frame as decoded."""
    if step < 1:
        raise ValueError(f"step must be at least 1, not {step}")
    return {
        "version": FRAMES_VERSION,
        "resize": str(Resize.parse(resize)),
        "step": step,
        **crop_params(crop, crop_size, crop_margin, background),
    }


def cache_video_frames(video: VideoRecord, out_dir: Path, params: dict) -> int:
    resize = Resize.parse(params["resize"])
    width, height = resize.output_size(video.width, video.height)
    windows, boxes, inputs = None, None, {}
    scale = (width / video.width, height / video.height)
    background = params.get("background", "keep")
    if params.get("crop") == "dancers" or background != "keep":
        inputs = crop_inputs(out_dir, video.video_id)  # the pose file the windows and boxes come from
    if params.get("crop") == "dancers":  # (first: a missing pose is named for the option the user typed)
        windows = read_dancer_windows(out_dir.parent / "pose", video, margin=params["crop_margin"])
        width = height = params["crop_size"]
    if background != "keep":
        boxes = dancer_boxes(out_dir.parent / "pose", video, margin=params["crop_margin"], mode=background)
    sampling = Sampling(step=params["step"])
    count = sampling.expected_count(video.frame_count)
    indices = []
    path = out_dir / f"{video.video_id}.npy"
    with atomic_path(path, suffix=".npy") as tmp, NpyStreamWriter(tmp, (count, height, width, 3), np.uint8) as out:
        for frame in prefetch(read_frames(video.to_source(), sampling, resize, colour="rgb")):
            if len(indices) >= count:
                raise DataError(video.source, f"more frames decode than the manifest's {video.frame_count}")
            image = frame.image
            if boxes is not None:
                image = suppress_background(image, boxes[min(frame.index, len(boxes) - 1)], scale, background)
            if windows is not None:
                image = crop_to_window(image, windows[min(frame.index, len(windows) - 1)], scale, width)
            out.write(image)
            indices.append(frame.index)
        if len(indices) != count:
            raise DataError(video.source, f"{len(indices)} frames decode, expected {count} (re-run ingest)")
    write_sidecar(
        out_dir,
        video,
        params,
        shape=[count, height, width, 3],
        frame_indices=indices,
        **({"inputs": inputs} if inputs else {}),
    )
    return len(indices)


def verify_frames(data: Path, sidecar: dict) -> str | None:
    """A finished frame cache is whole: the shape its sidecar records, uint8, every byte there."""
    if "shape" not in sidecar:
        return "its sidecar records no shape"
    return check_npy(data, sidecar["shape"], np.uint8)


def frames_task(params: dict) -> Task:
    inputs = crop_inputs if params.get("crop") == "dancers" or params.get("background", "keep") != "keep" else None
    return Task(
        name="frames",
        params=params,
        run=cache_video_frames,
        data_suffix=".npy",
        verify=verify_frames,
        inputs=inputs,
        info=FramesInfo,
    )


def load_frames(work: str | os.PathLike, video_id: str, *, mmap: bool = True) -> np.ndarray:
    """The cached RGB frames of one video, (T, H, W, 3) uint8, memory-mapped by default."""
    out_dir = Path(work) / "frames"
    if not (out_dir / f"{video_id}.json").is_file():
        raise DataError(
            out_dir / f"{video_id}.json", f"no frame cache for video {video_id!r} (run bin/preprocess frames)"
        )
    return np.load(out_dir / f"{video_id}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
