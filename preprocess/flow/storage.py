"""How flow is stored (``WORK/flow/<video_id>.npy`` + ``<video_id>.json``) and read back.

* ``uint8`` (default): each component clipped to ±bound (default 20 px, as mmaction2) and mapped linearly to 0..255;
  the sidecar records the bound, and ``load_flow`` maps back with the exact inverse of the same affine map (error at
  most bound / 255 px inside the bound);
* ``float16``: unclipped, half precision.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..batch import DataError, read_json


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Clip to ±bound and map linearly to uint8 0..255 (mmaction2/denseflow convention)."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """The inverse affine map of ``quantize``: float32 pixels."""
    return (q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)).astype(np.float32)


def load_flow(work: str | os.PathLike, video_id: str, *, mmap: bool = False) -> np.ndarray:
    """Flow of one video as float32 (T, H, W, 2) in pixels, x then y (``mmap`` leaves the raw array on disk:
    then the result is the stored uint8/float16 array, to dequantise with ``dequantize``)."""
    out_dir = Path(work) / "flow"
    side = out_dir / f"{video_id}.json"
    if not side.is_file():
        raise DataError(side, f"no flow for video {video_id!r} (run bin/preprocess flow)")
    meta = read_json(side)
    raw = np.load(out_dir / f"{video_id}.npy", mmap_mode="r", allow_pickle=False)
    if mmap:
        return raw
    if raw.dtype == np.uint8:
        return dequantize(np.asarray(raw), meta["params"]["bound"])
    return np.asarray(raw, dtype=np.float32)


def flow_info(work: str | os.PathLike, video_id: str) -> dict:
    """The sidecar of one video's flow (parameters, shape, dtype)."""
    return read_json(Path(work) / "flow" / f"{video_id}.json")
