"""Frames: the streaming reader (sampling, resizing, decode-ahead) and the RGB frame cache of the RGB stream.

::

    reader.py  Source, probe, read_frames, Sampling, Resize, prefetch: one frame in memory at a time
    frames.py  frames_params, frames_task: WORK/frames/<id>.npy; load_frames
"""

from .frames import FRAMES_VERSION, FramesInfo, cache_video_frames, frames_params, frames_task, load_frames
from .reader import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Frame,
    Resize,
    Sampling,
    Source,
    VideoInfo,
    prefetch,
    probe,
    read_frames,
)

__all__ = [
    "FRAMES_VERSION",
    "FramesInfo",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "Resize",
    "Sampling",
    "Source",
    "VideoInfo",
    "cache_video_frames",
    "frames_params",
    "frames_task",
    "load_frames",
    "prefetch",
    "probe",
    "read_frames",
]
