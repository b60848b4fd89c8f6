"""Video in, arrays out: dataset ingest and splits, frame reading, optical flow, pose, the synthetic dataset.

Public API for users' own code and for the streams::

    import preprocess
    manifest = preprocess.load_manifest("work")          # videos, labels, splits
    flow = preprocess.load_flow("work", video_id)         # float32 (T, H, W, 2), pixels, x then y
    pose = preprocess.load_pose("work", video_id)         # keypoints, normalized, boxes, mask, frame_indices
    frames = preprocess.load_frames("work", video_id)     # uint8 (T, H, W, 3) RGB, memory-mapped
    for frame in preprocess.read_frames(manifest.videos[0].to_source(), preprocess.Sampling(step=2)):
        ...
"""

from .errors import DataError
from .flow import load_flow
from .frames import load_frames
from .manifest import Manifest, VideoRecord, load_manifest
from .pose import load_pose
from .video import Resize, Sampling, Source, probe, read_frames



def __getattr__(name):
    # Imported on first use: torch takes a second to load, which no command but the torch flow engine needs.
    if name == "farneback_torch":
        from .flow_torch import farneback_torch

        return farneback_torch
    raise AttributeError(f"module 'preprocess' has no attribute {name!r}")


__all__ = ["farneback_torch", "DataError", "Manifest", "VideoRecord", "load_manifest", "load_flow", "load_pose", "load_frames",
           "Resize", "Sampling", "Source", "probe", "read_frames"]
