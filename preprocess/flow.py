"""Farneback dense optical flow per video, stored compact and memory-mappable.

Flow ``t`` is computed from grayscale frame ``t`` (prev) to frame ``t + k`` (next) with
``cv2.calcOpticalFlowFarneback``, so a video of T frames gives T - k fields and ``flow[t][y, x] = (dx, dy)`` with
``next(x + dx, y + dy) ≈ prev(x, y)`` in pixels of the resized frames.

Storage (``WORK/flow/<video_id>.npy`` + ``<video_id>.json``):

* ``uint8`` (default): each component clipped to ±bound (default 20 px, as mmaction2) and mapped linearly to 0..255;
  the sidecar records the bound, and ``load_flow`` maps back with the exact inverse of the same affine map (error at
  most bound / 255 px inside the bound);
* ``float16``: unclipped, half precision.

The array is appended to disk as frames decode, so memory does not grow with the video's length.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .batch import Task, write_sidecar
from .errors import DataError
from .manifest import VideoRecord
from .storage import NpyStreamWriter, atomic_path, read_json
from .video import Resize, Sampling, prefetch, read_frames

FLOW_VERSION = 1


@dataclass(frozen=True)
class FarnebackParams:
    """``cv2.calcOpticalFlowFarneback``'s parameters with OpenCV's usual values."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    gaussian: bool = False  # OPTFLOW_FARNEBACK_GAUSSIAN: Gaussian instead of box window

    def __post_init__(self):
        if not 0 < self.pyr_scale < 1:
            raise ValueError(f"pyr_scale must be in (0, 1), not {self.pyr_scale}")
        if self.levels < 1 or self.winsize < 1 or self.iterations < 1:
            raise ValueError("levels, winsize and iterations must be at least 1")
        if self.poly_n not in (5, 7):
            raise ValueError(f"poly_n must be 5 or 7, not {self.poly_n}")

    @property
    def flags(self) -> int:
        return cv2.OPTFLOW_FARNEBACK_GAUSSIAN if self.gaussian else 0

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """(H, W, 2) float32 flow from ``prev`` to ``nxt`` (grayscale uint8)."""
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, self.pyr_scale, self.levels, self.winsize,
                                            self.iterations, self.poly_n, self.poly_sigma, self.flags)


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Clip to ±bound and map linearly to uint8 0..255 (mmaction2/denseflow convention)."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """The inverse affine map of ``quantize``: float32 pixels."""
    return (q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)).astype(np.float32)


def flow_params(farneback: FarnebackParams, *, offset: int = 1, resize: str = "short:256", storage: str = "uint8",
                bound: float = 20.0, engine: str = "opencv", device: str = "cpu", batch: int = 32) -> dict:
    """The JSON parameters of a flow run (what the sidecar records and resume compares). ``engine="torch"`` runs
    ``farneback_torch`` on ``device`` over ``batch`` frame pairs at a time."""
    if engine not in ("opencv", "torch"):
        raise ValueError(f"engine must be opencv or torch, not {engine!r}")
    if offset < 1:
        raise ValueError(f"offset k must be at least 1, not {offset}")
    if storage not in ("uint8", "float16"):
        raise ValueError(f"storage must be uint8 or float16, not {storage!r}")
    if not bound > 0:
        raise ValueError(f"bound must be positive, not {bound}")
    params = {"version": FLOW_VERSION, "farneback": asdict(farneback), "offset": offset,
              "resize": str(Resize.parse(resize)), "storage": storage, "bound": float(bound) if storage == "uint8" else None}
    if engine == "torch":  # only then in the parameters, so existing OpenCV outputs stay valid
        params.update(engine="torch", device=device, batch=int(batch))
    return params


def compute_video_flow(video: VideoRecord, out_dir: Path, params: dict) -> int:
    """Write ``out_dir/<id>.npy`` (T - k, H, W, 2) and the sidecar; returns the number of frames decoded."""
    farneback = FarnebackParams(**params["farneback"])
    k = params["offset"]
    resize = Resize.parse(params["resize"])
    width, height = resize.output_size(video.width, video.height)
    pairs = video.frame_count - k
    if pairs < 1:
        raise DataError(video.source, f"{video.frame_count} frames: too short for flow with offset k={k}")
    dtype = np.uint8 if params["storage"] == "uint8" else np.float16
    path = out_dir / f"{video.video_id}.npy"
    decoded = 0
    with atomic_path(path, suffix=".npy") as tmp, NpyStreamWriter(tmp, (pairs, height, width, 2), dtype) as out:
        def store(flow: np.ndarray) -> None:
            out.write(quantize(flow, params["bound"]) if dtype == np.uint8 else flow.astype(np.float16))

        engine = _TorchEngine(farneback, params) if params.get("engine") == "torch" else None
        recent: deque[np.ndarray] = deque(maxlen=k + 1)
        for frame in prefetch(read_frames(video.to_source(), Sampling(), resize, colour="gray")):
            if frame.image.shape != (height, width):
                raise DataError(video.source, f"frame {frame.index} is {frame.image.shape[1]}x{frame.image.shape[0]}, "
                                              f"expected {width}x{height} (size changes mid-video)")
            recent.append(frame.image)
            decoded += 1
            if len(recent) == k + 1:
                if decoded - k - 1 >= pairs:
                    raise DataError(video.source, f"more frames decode than the manifest's {video.frame_count}")
                if engine is None:
                    store(farneback.compute(recent[0], recent[-1]))
                else:
                    for flow in engine.add(recent[0], recent[-1]):
                        store(flow)
        if engine is not None:
            for flow in engine.flush():
                store(flow)
        if decoded != video.frame_count:
            raise DataError(video.source, f"{decoded} frames decode, the manifest says {video.frame_count} (re-run ingest)")
    write_sidecar(out_dir, video, params, shape=[pairs, height, width, 2], dtype=np.dtype(dtype).name)
    return decoded


class _TorchEngine:
    """Collects frame pairs and runs ``farneback_torch`` on a batch of them at a time."""

    def __init__(self, farneback: FarnebackParams, params: dict):
        import torch

        from .flow_torch import farneback_torch

        self.torch, self.run = torch, farneback_torch
        self.device = torch.device(params["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DataError("--device cuda", "no CUDA device is available to this process")
        self.kwargs = dict(pyr_scale=farneback.pyr_scale, levels=farneback.levels, winsize=farneback.winsize,
                           iterations=farneback.iterations, poly_n=farneback.poly_n, poly_sigma=farneback.poly_sigma,
                           flags=farneback.flags)
        self.batch = max(1, params["batch"])
        self.prev: list[np.ndarray] = []
        self.next: list[np.ndarray] = []

    def add(self, prev: np.ndarray, nxt: np.ndarray) -> list[np.ndarray]:
        self.prev.append(prev)
        self.next.append(nxt)
        return self.flush() if len(self.prev) >= self.batch else []

    def flush(self) -> list[np.ndarray]:
        if not self.prev:
            return []
        to = dict(device=self.device, non_blocking=True)
        prev = self.torch.from_numpy(np.stack(self.prev)).to(**to)
        nxt = self.torch.from_numpy(np.stack(self.next)).to(**to)
        self.prev, self.next = [], []
        with self.torch.no_grad():
            flow = self.run(prev, nxt, **self.kwargs).cpu().numpy()
        return list(flow)


def flow_task(params: dict) -> Task:
    return Task(name="flow", params=params, run=compute_video_flow, data_suffix=".npy")


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
