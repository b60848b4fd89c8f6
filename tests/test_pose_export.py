"""The pyskl / mmaction2 skeleton export, read back by a reader written with the standard library only."""

import pickle
import struct

import numpy as np

from preprocess.dataset import load_manifest
from preprocess.pose import load_pose
from tests.conftest import run_bin


class StandardLibraryReader(pickle.Unpickler):
    """Reads our export without NumPy: an array is a record of shape, dtype and bytes; nothing else is allowed."""

    def find_class(self, module, name):
        if (module, name) == ("numpy", "ndarray"):
            return lambda shape, dtype, buffer: {"shape": tuple(shape), "dtype": dtype, "data": bytes(buffer)}
        if (module, name) == ("builtins", "bytearray"):
            return bytearray
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")


def floats(record):
    assert record["dtype"] == "<f4"
    return struct.unpack(f"<{len(record['data']) // 4}f", record["data"])


def test_pyskl_export_round_trips_shapes_and_values(tiny_work, tmp_path):
    out = tmp_path / "tiny_pyskl.pkl"
    result = run_bin("preprocess", "export-pose", tiny_work, out)
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as f:
        data = StandardLibraryReader(f).load()
    manifest = load_manifest(tiny_work)
    assert sorted(data["split"]) == sorted({v.split for v in manifest.videos})
    assert sorted(i for ids in data["split"].values() for i in ids) == sorted(v.video_id for v in manifest.videos)
    by_id = {a["frame_dir"]: a for a in data["annotations"]}
    assert len(by_id) == len(manifest.videos)
    for video in manifest.videos[:6]:
        ann, pose = by_id[video.video_id], load_pose(tiny_work, video.video_id)
        used = np.flatnonzero(pose["mask"].any(axis=0))
        frames = pose["keypoints"].shape[0]
        assert ann["label"] == manifest.classes.index(video.label)
        assert ann["img_shape"] == ann["original_shape"] == (video.height, video.width)
        assert ann["total_frames"] == frames
        assert ann["keypoint"]["shape"] == (len(used), frames, 17, 2) and len(used) >= 1
        assert ann["keypoint_score"]["shape"] == (len(used), frames, 17)
        xy = np.array(floats(ann["keypoint"]), dtype=np.float32).reshape(ann["keypoint"]["shape"])
        score = np.array(floats(ann["keypoint_score"]), dtype=np.float32).reshape(ann["keypoint_score"]["shape"])
        expected = pose["keypoints"][:, used].transpose(1, 0, 2, 3)
        assert np.array_equal(xy, expected[..., :2]) and np.array_equal(score, expected[..., 2])
        assert xy.max() > 1.5  # pixels, not the [-1, 1] normalised skeleton
        # and the way NumPy rebuilds it gives a writable array (pyskl's pipelines change keypoints in place)
        array = np.ndarray(ann["keypoint"]["shape"], ann["keypoint"]["dtype"], bytearray(ann["keypoint"]["data"]))
        array[0, 0, 0, 0] += 1.0
