"""Video in, arrays out: one sub-package per concern.

::

    dataset/  ingest, manifest, splits; synthetic/ generates a dataset
    video/    streaming frame reader, RGB frame cache
    flow/     Farneback optical flow (OpenCV and PyTorch engines), storage, pictures, export
    pose/     pose backends, tracking, normalisation, keypoint conventions, importers, evaluation
    batch/    the batch runner, worker pools, atomic storage, progress, named errors

Public API for users' own code and for the streams::

    import preprocess
    manifest = preprocess.load_manifest("work")          # videos, labels, splits
    flow = preprocess.load_flow("work", video_id)         # float32 (T, H, W, 2), pixels, x then y
    pose = preprocess.load_pose("work", video_id)         # keypoints, normalized, boxes, mask, frame_indices
    frames = preprocess.load_frames("work", video_id)     # uint8 (T, H, W, 3) RGB, memory-mapped
    for frame in preprocess.read_frames(manifest.videos[0].to_source(), preprocess.Sampling(step=2)):
        ...
"""

from .batch import DataError
from .dataset import Manifest, VideoRecord, load_manifest
from .flow import load_flow
from .pose import load_pose
from .video import Resize, Sampling, Source, load_frames, probe, read_frames


def __getattr__(name):
    # Imported on first use: torch takes seconds to load, which no command but the torch flow engine needs.
    if name == "farneback_torch":
        # From the module, not the flow package: once the module is imported, the package's attribute of that name
        # is the module itself.
        from .flow.farneback_torch import farneback_torch

        return farneback_torch
    raise AttributeError(f"module 'preprocess' has no attribute {name!r}")


__all__ = [
    "farneback_torch",
    "DataError",
    "Manifest",
    "VideoRecord",
    "load_manifest",
    "load_flow",
    "load_pose",
    "load_frames",
    "Resize",
    "Sampling",
    "Source",
    "probe",
    "read_frames",
]
