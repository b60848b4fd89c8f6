"""Farneback engines: pairs/s of OpenCV on one core and on every core, and of the PyTorch port, at three sizes."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import torch

from preprocess.batch import process_pool
from preprocess.flow.evaluate import end_point_error, read_middlebury_flo
from preprocess.flow.farneback_torch import farneback_torch

from .common import kinetics_gray, shared


def _flow_pairs(width: int, height: int, count: int) -> list:
    """``count`` consecutive frame pairs of the shared Kinetics clip at width x height (cycling over the clip)."""
    frames = kinetics_gray(width, height)
    return [(frames[i % (len(frames) - 1)], frames[i % (len(frames) - 1) + 1]) for i in range(count)]


def _opencv_pairs(pairs):
    cv2.setNumThreads(1)
    for a, b in pairs:
        cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return len(pairs)


def flow_engines(
    *, device: str = "cpu", batch: int = 32, seconds: float = 6.0, dtype: str = "float32", log=print
) -> None:
    """Pairs/s of Farneback at 340x256, 640x360 and 1280x720: OpenCV on one core, OpenCV on every core (a process
    pool), and the PyTorch port batched on ``device``; the torch engine's EPE against OpenCV at each size."""
    dev = torch.device(device)
    torch_dtype = getattr(torch, dtype)
    cores = os.cpu_count() or 1
    log(
        f"machine: {cores} CPU cores; torch {torch.__version__} on {dev}"
        + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
    )
    for width, height in ((340, 256), (640, 360), (1280, 720)):
        probe_pairs = _flow_pairs(width, height, 2)
        start = time.perf_counter()
        _opencv_pairs(probe_pairs)
        per_pair = (time.perf_counter() - start) / 2
        n = max(4, int(seconds / per_pair))
        pairs = _flow_pairs(width, height, n)
        start = time.perf_counter()
        _opencv_pairs(pairs)
        one_core = n / (time.perf_counter() - start)
        chunks = [pairs[i::cores] for i in range(cores)]
        with process_pool(cores) as pool:
            list(pool.map(_opencv_pairs, [chunks[0][:1]] * cores))  # start the workers first
            start = time.perf_counter()
            list(pool.map(_opencv_pairs, chunks))
            all_cores = n / (time.perf_counter() - start)
        prev = torch.from_numpy(np.stack([a for a, _ in pairs[:batch]])).to(dev)
        nxt = torch.from_numpy(np.stack([b for _, b in pairs[:batch]])).to(dev)
        with torch.no_grad():
            out = farneback_torch(prev[:2], nxt[:2], dtype=torch_dtype)  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
            repeats, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds or repeats == 0:
                out = farneback_torch(prev, nxt, dtype=torch_dtype)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                repeats += 1
            torch_rate = repeats * len(prev) / (time.perf_counter() - start)
        ref = cv2.calcOpticalFlowFarneback(pairs[0][0], pairs[0][1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
        epe = end_point_error(out[0].float().cpu().numpy(), ref)
        log(
            f"{width}x{height}: OpenCV 1 core {one_core:.1f} pairs/s, OpenCV {cores} cores {all_cores:.1f} pairs/s, "
            f"torch {dtype} batch {len(prev)} on {dev} {torch_rate:.1f} pairs/s "
            f"({torch_rate / one_core:.2f}x one core); torch vs OpenCV mean EPE {epe:.5f} px"
        )
    chairs = shared() / "data" / "flow_gt"
    if (chairs / "00001_flow.flo").is_file():  # accuracy against ground truth, not only against OpenCV
        a, b = (cv2.imread(str(chairs / f"00001_img{i}.ppm"), cv2.IMREAD_GRAYSCALE) for i in (1, 2))
        truth = read_middlebury_flo(chairs / "00001_flow.flo")
        opencv = end_point_error(cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0), truth)
        with torch.no_grad():
            port = farneback_torch(torch.from_numpy(a)[None].to(dev), torch.from_numpy(b)[None].to(dev))
        ours = end_point_error(port[0].float().cpu().numpy(), truth)
        log(f"FlyingChairs 00001 EPE against ground truth: OpenCV {opencv:.7f} px, the port {ours:.7f} px")
