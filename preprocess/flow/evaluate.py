"""Flow accuracy against ground truth: Middlebury ``.flo`` files and the end-point error."""

from __future__ import annotations

import os

import numpy as np

from ..batch import DataError


def read_middlebury_flo(path: str | os.PathLike) -> np.ndarray:
    """A Middlebury ``.flo`` file (magic 202021.25, width, height, then row-major float32 x, y) as (H, W, 2)."""
    with open(path, "rb") as handle:
        magic = np.fromfile(handle, np.float32, 1)
        if magic.size != 1 or magic[0] != np.float32(202021.25):
            raise DataError(path, "not a Middlebury .flo file (bad magic number)")
        width, height = (int(v) for v in np.fromfile(handle, np.int32, 2))
        data = np.fromfile(handle, np.float32, width * height * 2)
    if data.size != width * height * 2:
        raise DataError(path, f"truncated .flo file: expected {width}x{height}x2 values")
    return data.reshape(height, width, 2)


def end_point_error(flow: np.ndarray, truth: np.ndarray) -> float:
    """Mean Euclidean distance between two flow fields."""
    return float(np.linalg.norm(flow.astype(np.float64) - truth, axis=-1).mean())
