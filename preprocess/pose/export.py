"""Skeletons out to the pyskl / mmaction2 skeleton annotation format, so our pose goes straight into their tools.

One pickle file (their format; we write it, we never read one)::

    {"split": {"train": [video ids], "val": [...], "test": [...]},
     "annotations": [{"frame_dir": video id, "label": class index, "img_shape": (h, w), "original_shape": (h, w),
                      "total_frames": T, "keypoint": float32 (M, T, 17, 2) pixels,
                      "keypoint_score": float32 (M, T, 17)}, ...]}

M is the number of person slots that hold someone in at least one frame (empty slots are left out; frames where a
kept slot is empty are zeros, as pyskl pads). Keypoints are COCO-17 in the video's own pixels, as pyskl's
``PoseDecode`` and ``PoseNormalize`` expect; T is the number of processed frames (every frame unless pose ran with
``--step``). Arrays are pickled as ``numpy.ndarray(shape, dtype, bytearray)``: loadable (and writable) with any
NumPy, 1.x or 2.x, and readable without NumPy (a restricted ``pickle.Unpickler`` that maps ``numpy.ndarray`` to a
record of shape, dtype and bytes: ``tests/test_pose_export.py`` reads it so).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ..batch import DataError, atomic_path
from ..records import VideoSet
from .storage import load_pose


class _PortablePickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            array = np.ascontiguousarray(obj)
            return np.ndarray, (array.shape, array.dtype.str, bytearray(array.tobytes()))
        return NotImplemented


def pyskl_annotation(manifest_video, class_index: int, pose: dict) -> dict:
    """One video's pyskl annotation from our stored pose arrays."""
    keypoints, mask = pose["keypoints"], pose["mask"]  # (T, P, 17, 3), (T, P)
    used = np.flatnonzero(mask.any(axis=0))
    people = keypoints[:, used].transpose(1, 0, 2, 3)  # (M, T, 17, 3)
    shape = (int(manifest_video.height), int(manifest_video.width))
    return {
        "frame_dir": manifest_video.video_id,
        "label": int(class_index),
        "img_shape": shape,
        "original_shape": shape,
        "total_frames": int(keypoints.shape[0]),
        "keypoint": np.ascontiguousarray(people[..., :2], dtype=np.float32),
        "keypoint_score": np.ascontiguousarray(people[..., 2], dtype=np.float32),
    }


def export_pyskl(manifest: VideoSet, work, out) -> tuple[int, list[str]]:
    """Write ``out`` (a .pkl) for every video of the manifest with pose in WORK; returns (exported, problems)."""
    annotations, split, problems = [], {}, []
    for video in manifest.videos:
        try:
            pose = load_pose(work, video.video_id)
        except DataError as err:
            problems.append(str(err))
            continue
        annotations.append(pyskl_annotation(video, manifest.classes.index(video.label), pose))
        split.setdefault(video.split or "unsplit", []).append(video.video_id)
    if not annotations:
        raise DataError(Path(work) / "pose", "no video has pose to export (run bin/preprocess pose first)")
    buffer = io.BytesIO()
    _PortablePickler(buffer, protocol=4).dump({"split": split, "annotations": annotations})
    with atomic_path(Path(out), suffix=".pkl") as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    return len(annotations), problems
