"""One command for a GPU machine: ``bin/benchmark gpu`` (under 5 minutes on one H100/H200), one table.

* kernel pairs/s of the PyTorch Farneback engine (``FarnebackTorch.sequence``: each frame expanded once) at
  340×256, 640×360 and 1280×720, full float32, batches of 8, 32 and 128 frames; CUDA kernels launched per pair,
  eager and ``torch.compile``'d, and the compiled engine's rate and EPE against OpenCV;
* end to end: ``bin/preprocess flow --engine torch --device cuda`` on a dataset of real 640×360 clips, several
  decoding worker processes feeding the GPU, against the kernel-only rate (goal ≥ 0.7×);
* pose frames/s of the ONNX backends (MoveNet MultiPose, and the YOLO-pose model where its file is there) on
  onnxruntime's CUDA provider against its CPU provider (one thread, as each batch worker runs it), on real frames;
* training clips/s of each stream with ``--preset resnet18`` (data loader vs model, ``bin/benchmark train``'s
  measurement) on the tiny synthetic set.

Without a CUDA device it says so, prints the CPU rows of the kernel table (batch 8) and exits 0: the GPU figures
are pending.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .common import REPO, kinetics_gray, shared

SIZES = ((340, 256), (640, 360), (1280, 720))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(engine, frames: torch.Tensor, seconds: float, device: torch.device) -> float:
    """Frame pairs per second of ``engine.sequence`` on frames already on the device."""
    with torch.no_grad():
        engine.sequence(frames)  # warm-up: constants, cuDNN autotune, allocator
        _sync(device)
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < seconds:
            engine.sequence(frames)
            calls += 1
        _sync(device)
    return calls * (len(frames) - 1) / (time.perf_counter() - start)


def _kernels_per_pair(engine, frames: torch.Tensor) -> float:
    """CUDA kernels (and copies) launched by one warm call, per pair, from the torch profiler."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        engine.sequence(frames)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            engine.sequence(frames)
            torch.cuda.synchronize()
    launched = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(launched) / (len(frames) - 1)


def _epe_vs_opencv(flow: torch.Tensor, frames: np.ndarray) -> tuple[float, float]:
    import cv2

    ref = np.stack(
        [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0) for a, b in zip(frames[:4], frames[1:5])]
    )
    epe = np.linalg.norm(flow[:4].float().cpu().numpy() - ref, axis=-1)
    return float(epe.mean()), float(np.percentile(epe, 99))


def _kernel_rows(device: torch.device, sizes, batches, seconds: float, compile: bool, log) -> dict:
    from preprocess.flow.farneback_torch import FarnebackTorch

    engine, rates = FarnebackTorch(device=device), {}
    for width, height in sizes:
        for batch in batches:
            host = kinetics_gray(width, height, batch + 1)
            frames = torch.from_numpy(host).to(device)
            rates[(width, height, batch)] = rate = _rate(engine, frames, seconds, device)
            log(f"| kernel | {width}x{height} | {batch} | fp32 eager | {rate:.{0 if rate >= 100 else 2}f} pairs/s |")
            if (width, height) == sizes[len(sizes) // 2] and batch == batches[len(batches) // 2]:
                mean, p99 = _epe_vs_opencv(engine.sequence(frames), host)
                where = f"{width}x{height} | {batch} | fp32 eager"
                log(f"| parity | {where} | EPE vs OpenCV mean {mean:.5f}, p99 {p99:.5f} px |")
                if device.type == "cuda":
                    log(f"| launches | {where} | {_kernels_per_pair(engine, frames):.1f} CUDA kernels/pair |")
                if compile:
                    _compiled_row(frames, host, device, seconds, width, height, batch, log)
    return rates


def _compiled_row(frames, host, device, seconds, width, height, batch, log) -> None:
    from preprocess.flow.farneback_torch import FarnebackTorch

    try:
        start = time.perf_counter()
        compiled = FarnebackTorch(device=device, compile=True)
        flow = compiled.sequence(frames)
        _sync(device)
        took = time.perf_counter() - start
        rate = _rate(compiled, frames, seconds, device)
        mean, p99 = _epe_vs_opencv(flow, host)
        launches = f", {_kernels_per_pair(compiled, frames):.1f} CUDA kernels/pair" if device.type == "cuda" else ""
        log(
            f"| kernel | {width}x{height} | {batch} | fp32 compiled | {rate:.0f} pairs/s (compiled in {took:.0f} s; "
            f"EPE mean {mean:.5f}, p99 {p99:.5f} px{launches}) |"
        )
    except Exception as err:  # noqa: BLE001 - one row of a benchmark; the others go on
        log(f"| kernel | {width}x{height} | {batch} | fp32 compiled | FAILED: {type(err).__name__}: {err} |")


def _end_to_end(kernel_rate: float | None, workers: int, log) -> None:
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = kinetics_gray(640, 360, 300)
        for i in range(16):  # real footage re-encoded at 640x360, so decoding costs what it would
            folder = root / "data" / ("a" if i % 2 else "b")
            folder.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(folder / f"clip{i:02d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
            for frame in np.roll(frames, i * 7, axis=0):
                writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
            writer.release()
        work = root / "work"
        command = [sys.executable, str(REPO / "bin" / "preprocess"), "flow", str(root / "data"), str(work)]
        options = [
            "--engine",
            "torch",
            "--device",
            "cuda",
            "--resize",
            "none",
            "--batch",
            "32",
            "--workers",
            str(workers),
        ]
        start = time.perf_counter()
        result = subprocess.run([*command, *options], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            log(
                f"| end to end | 640x360 | 32 | {workers} workers | FAILED: {result.stderr.strip().splitlines()[-1:]} |"
            )
            return
        summary = json.loads((work / "flow" / "summary.json").read_text())
        pairs = summary["frames"] - 16  # T - 1 pairs per video
        batch_rate = pairs / summary["seconds"]
        log(
            f"| end to end | 640x360 | 32 | {workers} decoding workers | {batch_rate:.0f} pairs/s in the batch "
            + (f"({batch_rate / kernel_rate:.2f}x the kernel-only rate; " if kernel_rate else "(")
            + f"{pairs / wall:.0f} pairs/s with start-up) |"
        )


def _pose_rows(seconds: float, log) -> None:
    """Frames/s of each ONNX pose backend, CPU provider against CUDA provider, on the shared Kinetics clip's
    frames (RGB, 340×256): what ``bin/preprocess pose --backend movenet|onnx --device cuda`` gains per worker."""
    from preprocess.pose.backends import MoveNetMultiPose, OnnxYoloPose, onnx_providers

    from .common import kinetics_rgb

    onnx_providers("cuda")  # no CUDA provider: this section fails by name (pip install 'dance-streams[onnx-gpu]')
    frames = kinetics_rgb(340, 256, 32)
    for name, make, file in (
        ("movenet", MoveNetMultiPose, "models/movenet_multipose_lightning_256.onnx"),
        ("onnx (YOLO-pose)", OnnxYoloPose, "models/yolo11n-pose.onnx"),
    ):
        path = shared() / file
        if not path.is_file():
            log(f"| pose | 340x256 | | {name} | SKIPPED: {path} is not there |")
            continue
        rates = {}
        for device in ("cpu", "cuda"):
            model = make(path, device=device)
            model.detect_batch(frames[:4])  # warm-up (CUDA context, cuDNN autotune)
            done, start = 0, time.perf_counter()
            while done == 0 or time.perf_counter() - start < seconds:
                model.detect_batch(frames)
                done += len(frames)
            rates[device] = done / (time.perf_counter() - start)
        batches = "batches" if model.takes_batches else "one frame a call (its export fixes batch 1)"
        log(
            f"| pose | 340x256 | 32 | {name}, {batches} | {rates['cuda']:.0f} frames/s on CUDA, "
            f"{rates['cpu']:.0f} on 1 CPU thread ({rates['cuda'] / rates['cpu']:.1f}x) |"
        )


def _training_rows(log) -> None:
    from .gpu_smoke import tiny_work
    from .training import training

    with tempfile.TemporaryDirectory() as tmp:
        work = tiny_work(Path(tmp))
        training(
            str(work),
            device="cuda",
            preset="resnet18",
            batch_size=32,
            batches=12,
            # (workers: bin/train's default for the machine, the cores per GPU)
            log=lambda line: log(f"| training | {line} |"),
        )


def gpu(
    *, seconds: float = 3.0, compile: bool = True, workers: int | None = None, sizes: str | None = None, log=print
) -> bool:
    start = time.perf_counter()
    sizes = tuple(tuple(int(v) for v in size.split("x")) for size in sizes.split(",")) if sizes else SIZES
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    log(
        f"torch {torch.__version__}; "
        + (f"GPU: {torch.cuda.get_device_name(device)}" if cuda else "no GPU: CUDA is not available to this process")
        + f"; {os.cpu_count()} CPU cores"
    )
    log("| what | size | batch | setting | figure |")
    log("|---|---|---|---|---|")
    if not cuda:
        torch.set_num_threads(os.cpu_count() or 1)
        _kernel_rows(device, sizes, (8,), 0.0, False, log)
        log("GPU figures pending: run bin/benchmark gpu on a machine with a CUDA device.")
        return True
    rates = _kernel_rows(device, sizes, (8, 32, 128), seconds, compile, log)
    for section, run in (
        ("end to end", lambda: _end_to_end(rates.get((640, 360, 32)), workers or min(8, os.cpu_count() or 1), log)),
        ("pose", lambda: _pose_rows(seconds, log)),
        ("training", lambda: _training_rows(log)),
    ):
        try:
            run()
        except Exception as err:  # noqa: BLE001 - one section of a benchmark; the others go on
            log(f"| {section} | | | | FAILED: {type(err).__name__}: {err} |")
    log(f"bin/benchmark gpu: {time.perf_counter() - start:.0f} s")
    return True
