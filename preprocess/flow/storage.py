"""How flow is stored (``WORK/flow/<video_id>.npy`` + ``<video_id>.json``) and read back.

* ``uint8`` (default): each component clipped to ±bound (default 20 px, as mmaction2) and mapped linearly onto
  1..255 with 128 for exactly zero; the sidecar records the bound and the format version, and ``load_flow`` maps
  back with the inverse map (error at most bound / 254 px inside the bound, none at zero);
* ``float16``: unclipped, half precision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..batch import DataError, StageOutput, sidecar_whole_numbers

# 2: uint8 with an exact zero level (128 decodes to 0). Version 1 mapped [-bound, bound] onto 0..255, so zero flow
# read back as +bound/255 px (+0.078 px at bound 20): every static pixel moved, and a mirrored clip carried a
# constant x offset. Outputs of another version are redone by the batch runner and refused by the readers.
FLOW_VERSION = 2
LEVELS = 127  # uint8 steps on each side of zero


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Clip to ±bound and map to uint8 with 128 = exactly 0, 1 = -bound and 255 = +bound (steps of bound/127)."""
    return (np.rint(np.clip(flow, -bound, bound) * (LEVELS / bound)) + 128).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """The inverse map of ``quantize``: float32 pixels, 128 → 0 exactly, error at most bound / 254 inside the bound."""
    return (q.astype(np.float32) - np.float32(128)) * np.float32(bound / LEVELS)


def checked_params(sidecar: dict, side: str | os.PathLike) -> dict:
    """The parameters in a flow sidecar already read (from ``side``), or a named error when its format is not this
    version's."""
    params = sidecar.get("params", {}) if isinstance(sidecar, dict) else {}
    if params.get("version") != FLOW_VERSION:
        raise DataError(
            side,
            f"flow format {params.get('version')} of an older release, not {FLOW_VERSION}: "
            "rerun bin/preprocess flow on this work directory (it redoes such videos)",
        )
    return params


@dataclass(frozen=True)
class FlowInfo(StageOutput):
    """What a flow sidecar holds: the stored shape (T − k, H, W, 2) and dtype, the parameters (format version, bound,
    offset, Farneback's, crops) and the other stages' outputs it was made from. Field n is the motion from source
    frame n to n + offset. Reading refuses another format version by name."""

    stage: ClassVar[str] = "flow"
    how: ClassVar[str] = "run bin/preprocess flow"

    video_id: str
    params: dict
    shape: tuple[int, ...]
    dtype: str
    inputs: dict

    @property
    def bound(self) -> float:
        return float(self.params.get("bound") or 20.0)

    @classmethod
    def from_sidecar(cls, data: dict, side) -> FlowInfo:
        params = checked_params(data, side)
        if "shape" not in data:
            raise DataError(side, "not a flow sidecar (no shape)")
        shape = sidecar_whole_numbers(data, "shape", side, length=4)
        dtype = data.get("dtype", "uint8")
        if dtype not in ("uint8", "float16"):
            raise DataError(side, f"dtype: {str(dtype)[:40]!r} is not uint8 or float16")
        return cls(str(data.get("video_id", "")), params, shape, dtype, data.get("inputs", {}))


def stored_params(work: str | os.PathLike, video_id: str) -> dict:
    """The parameters one video's flow was made with (see ``FlowInfo``)."""
    return FlowInfo.read(work, video_id).params


def to_pixels(stored: np.ndarray, params: dict) -> np.ndarray:
    """Stored flow (uint8 or float16, as ``params`` say) as float32 pixels."""
    if stored.dtype == np.uint8:
        return dequantize(np.asarray(stored), params["bound"])
    return np.asarray(stored, dtype=np.float32)


def load_flow(work: str | os.PathLike, video_id: str, *, mmap: bool = False) -> np.ndarray:
    """Flow of one video as float32 (T, H, W, 2) in pixels, x then y (``mmap`` leaves the raw array on disk:
    then the result is the stored uint8/float16 array, for ``to_pixels`` a slice at a time)."""
    params = stored_params(work, video_id)
    raw = np.load(Path(work) / "flow" / f"{video_id}.npy", mmap_mode="r", allow_pickle=False)
    return raw if mmap else to_pixels(raw, params)
