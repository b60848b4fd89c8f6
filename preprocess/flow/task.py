"""The flow preprocessor: Farneback optical flow of every video of a manifest, in batch.

Flow ``t`` goes from frame ``t`` to frame ``t + k``, so a video of T frames gives T - k fields, computed on frames
resized by the run's resize policy, by the OpenCV engine (``farneback.py``) or the batched PyTorch port
(``farneback_torch.py``), and stored as ``storage.py`` describes. The array is appended to disk as frames decode, so
memory does not grow with the video's length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..batch import DataError, NpyStreamWriter, Task, atomic_path, check_npy, write_sidecar
from ..records import VideoRecord
from ..video import Resize, Sampling, prefetch, read_frames
from ..video.crop import crop_inputs, crop_params, crop_to_window, read_dancer_windows
from .camera import CAMERA_MOTIONS, compensate
from .farneback import FarnebackParams
from .storage import FLOW_VERSION, FlowInfo, quantize

# Frames per batch of the torch engine: an execution setting, chosen where flow is computed (not recorded with a run).
TORCH_BATCH = 32


def flow_params(
    farneback: FarnebackParams,
    *,
    offset: int = 1,
    resize: str = "short:256",
    storage: str = "uint8",
    bound: float = 20.0,
    engine: str = "opencv",
    device: str = "cpu",
    batch: int = TORCH_BATCH,
    camera_motion: str = "none",
    crop: str = "none",
    crop_size: int = 128,
    crop_margin: float = 0.15,
    compile: bool = False,
) -> dict:
    """The JSON parameters of a flow run (what the sidecar records and resume compares). ``engine="torch"`` runs
    ``FarnebackTorch`` on ``device`` over ``batch`` frames at a time (``compile``: its iterations through
    ``torch.compile``)."""
    if engine not in ("opencv", "torch"):
        raise ValueError(f"engine must be opencv or torch, not {engine!r}")
    if offset < 1:
        raise ValueError(f"offset k must be at least 1, not {offset}")
    if storage not in ("uint8", "float16"):
        raise ValueError(f"storage must be uint8 or float16, not {storage!r}")
    if not bound > 0:
        raise ValueError(f"bound must be positive, not {bound}")
    params = {
        "version": FLOW_VERSION,
        "farneback": asdict(farneback),
        "offset": offset,
        "resize": str(Resize.parse(resize)),
        "storage": storage,
        "bound": float(bound) if storage == "uint8" else None,
    }
    if camera_motion not in CAMERA_MOTIONS:
        raise ValueError(f"camera motion must be one of {', '.join(CAMERA_MOTIONS)}, not {camera_motion!r}")
    if camera_motion != "none":  # only then in the parameters, so existing outputs stay valid
        params["camera_motion"] = camera_motion
    params.update(crop_params(crop, crop_size, crop_margin))
    if engine == "torch":  # only then in the parameters, so existing OpenCV outputs stay valid
        params.update(engine="torch", device=device, batch=int(batch))
        if compile:
            params["compile"] = True
    return params


def stored_field(flow: np.ndarray, params: dict, source: str, pair: int) -> np.ndarray:
    """A field as the flow stage stores it: uint8 quantised to ±bound, or float16; NaN would quantise to a silent
    value, and float16 overflows to inf: such a field is refused, never stored."""
    stored = flow.astype(np.float16) if params["storage"] == "float16" else None
    if not np.isfinite(flow).all() or (stored is not None and not np.isfinite(stored).all()):
        raise DataError(source, f"flow of frame pair {pair} is not finite (NaN or beyond float16)")
    return quantize(flow, params["bound"]) if stored is None else stored


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
    windows, inputs = None, {}
    if params.get("crop") == "dancers":
        inputs = crop_inputs(out_dir, video.video_id)  # the pose file the windows come from
        # flow is computed on whole frames (a window that moves between two frames would add its own motion), then
        # each field is cut to its first frame's window; resizing the cut scales its displacements too
        windows = read_dancer_windows(out_dir.parent / "pose", video, margin=params["crop_margin"])
        scale = (width / video.width, height / video.height)
        stored_size = (params["crop_size"], params["crop_size"])
    else:
        stored_size = (height, width)
    path = out_dir / f"{video.video_id}.npy"
    decoded = 0
    with atomic_path(path, suffix=".npy") as tmp, NpyStreamWriter(tmp, (pairs, *stored_size, 2), dtype) as out:
        camera = params.get("camera_motion", "none")

        def store(flow: np.ndarray) -> None:
            flow = compensate(flow, camera)
            if windows is not None:
                x0, _, x1, _ = windows[out.count] * scale[0]
                flow = crop_to_window(flow, windows[out.count], scale, stored_size[0]) * (stored_size[0] / (x1 - x0))
            out.write(stored_field(flow, params, video.source, out.count))

        engine = StreamingFlowEngine(farneback, params) if params.get("engine") == "torch" else None
        recent: deque[np.ndarray] = deque(maxlen=k + 1)
        for frame in prefetch(read_frames(video.to_source(), Sampling(), resize, colour="gray")):
            if frame.image.shape != (height, width):
                raise DataError(
                    video.source,
                    f"frame {frame.index} is {frame.image.shape[1]}x{frame.image.shape[0]}, "
                    f"expected {width}x{height} (size changes mid-video)",
                )
            decoded += 1
            if decoded - k - 1 >= pairs:
                raise DataError(video.source, f"more frames decode than the manifest's {video.frame_count}")
            if engine is not None:
                for flow in engine.add(frame.image):
                    store(flow)
                continue
            recent.append(frame.image)
            if len(recent) == k + 1:
                store(farneback.compute(recent[0], recent[-1]))
        if engine is not None:
            for flow in engine.flush():
                store(flow)
        if decoded != video.frame_count:
            raise DataError(
                video.source, f"{decoded} frames decode, the manifest says {video.frame_count} (re-run ingest)"
            )
    write_sidecar(
        out_dir,
        video,
        params,
        shape=[pairs, *stored_size, 2],
        dtype=np.dtype(dtype).name,
        **({"inputs": inputs} if inputs else {}),
    )
    return decoded


class StreamingFlowEngine:
    """Runs ``FarnebackTorch`` over a video's frames ``batch`` at a time: each frame is moved to the device and
    expanded once (as the "next" of one pair and the "prev" of another), and the last ``offset`` expansions carry
    over to the next batch."""

    def __init__(self, farneback: FarnebackParams, params: dict):
        import torch

        from .farneback_torch import cached_engine

        self.torch = torch
        self.device = torch.device(params["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DataError("--device cuda", "no CUDA device is available to this process")
        f = farneback
        self.engine = cached_engine(
            f.pyr_scale,
            f.levels,
            f.winsize,
            f.iterations,
            f.poly_n,
            f.poly_sigma,
            f.flags,
            device=self.device,
            compile=params.get("compile", False),
        )
        self.offset, self.batch = params["offset"], max(1, params["batch"])
        self.frames: list[np.ndarray] = []
        self.carry = None  # expansions of the last `offset` frames already sent

    def add(self, frame: np.ndarray) -> list[np.ndarray]:
        self.frames.append(frame)
        return self.flush() if len(self.frames) >= self.batch else []

    def flush(self) -> list[np.ndarray]:
        if not self.frames:
            return []
        host = self.torch.from_numpy(np.stack(self.frames))
        self.frames = []
        if self.device.type == "cuda":  # page-locked, so the copy runs asynchronously beside decoding
            host = host.pin_memory()
        with self.torch.no_grad():
            levels = self.engine.expand(host.to(self.device, non_blocking=True))
            if self.carry is not None:
                levels = [self.torch.cat([old, new]) for old, new in zip(self.carry, levels, strict=True)]
            k = self.offset
            self.carry = [level[-k:] for level in levels]
            if levels[0].shape[0] <= k:
                return []
            flow = self.engine.flow_between([level[:-k] for level in levels], [level[k:] for level in levels])
        return list(flow.cpu().numpy())


def verify_flow(data: Path, sidecar: dict) -> str | None:
    """A finished flow file is whole: the shape and dtype its sidecar records, every byte there."""
    if "shape" not in sidecar or "dtype" not in sidecar:
        return "its sidecar records no shape and dtype"
    return check_npy(data, sidecar["shape"], sidecar["dtype"])


def flow_task(params: dict) -> Task:
    gpu = params.get("engine") == "torch" and str(params.get("device", "cpu")).startswith("cuda")
    inputs = crop_inputs if params.get("crop") == "dancers" else None
    return Task(
        name="flow",
        params=params,
        run=compute_video_flow,
        data_suffix=".npy",
        verify=verify_flow,
        gpu=gpu,
        inputs=inputs,
        info=FlowInfo,
    )
