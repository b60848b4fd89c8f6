"""Video in, arrays out: dataset ingest, frame reading, the synthetic dataset, and (later) flow and pose.

Public API for users' own code and for the streams::

    from preprocess import load_manifest, read_frames
    manifest = load_manifest("work")
    for video in manifest.by_split("train"):
        for frame in read_frames(video.to_source(), Sampling(step=2), Resize.parse("short:128")):
            ...
"""

from .errors import DataError
from .manifest import Manifest, VideoRecord, load_manifest
from .video import Resize, Sampling, Source, probe, read_frames

__all__ = ["DataError", "Manifest", "VideoRecord", "load_manifest", "Resize", "Sampling", "Source", "probe", "read_frames"]
