"""GPU smoke check: the CUDA paths no CPU test can reach, each with PASS or FAIL, in a few minutes.

* each stream trains one epoch under ``torchrun`` with one process per GPU on the NCCL backend (NCCL refuses CPU
  tensors, so a single GPU already exercises every collective);
* a run stopped after epoch 2 and resumed to epoch 3 gives the scores of an uninterrupted 3-epoch run (within what
  cuDNN's nondeterministic kernels allow: the same comparison between two uninterrupted runs is printed beside it);
* the PyTorch Farneback engine on the GPU against OpenCV on the shared real frame pairs (mean EPE < 0.002 px,
  p99 < 0.02 px: full float32, no TF32).

Without a CUDA device it says the check is pending and exits 0.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import REPO, shared

TRAIN_OPTIONS = ["--batch-size", "8", "--views", "1", "--min-epoch-clips", "1", "--device", "cuda"]
# each stream's own (a stream refuses the options it does not take, by name)
STREAM_OPTIONS = {
    "rgb": ["--size", "64", "--segments", "2"],
    "flow": ["--size", "64", "--segments", "2", "--stack", "3"],
    "pose": ["--frames", "16"],
}


def tiny_work(root: Path) -> Path:
    """The tiny synthetic preset, preprocessed: flow and frames by OpenCV, pose imported from its ground truth."""
    from preprocess.batch import run_batch
    from preprocess.dataset import ingest
    from preprocess.dataset.synthetic import generate, groundtruth_as_coco
    from preprocess.flow import FarnebackParams, flow_params, flow_task
    from preprocess.pose.importers import import_pose
    from preprocess.video import frames_params, frames_task

    synth, work = root / "synth", root / "work"
    generate(synth, preset="tiny", seed=7)
    manifest = ingest(synth / "dataset.csv", ratios=(0.34, 0.33, 0.33))
    manifest.save(work)
    run_batch(flow_task(flow_params(FarnebackParams(), resize="none")), manifest, work, workers=4)
    import_pose("coco", str(groundtruth_as_coco(synth, root / "gt.json")), manifest, str(work), max_persons=4)
    run_batch(frames_task(frames_params(resize="none")), manifest, work, workers=4)  # after pose: it dims by its boxes
    return work


def _flow_preset() -> list[str]:
    """Flow's default (ImageNet MobileNetV2) where its file is found without the network, else our small CNN (a
    device machine may not carry ../shared)."""
    from preprocess import DataError
    from streams.checkpoints import imagenet_weights

    try:
        imagenet_weights("mobilenet_v2", download=False)
        return []
    except DataError:
        return ["--preset", "small"]


def _train(stream: str, work: Path, run: Path, epochs: int, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [
        *launcher,
        str(REPO / "bin" / "train"),
        stream,
        str(work),
        str(run),
        "--epochs",
        str(epochs),
        *TRAIN_OPTIONS,
        *STREAM_OPTIONS[stream],
        *(_flow_preset() if stream == "flow" else []),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _probs(run: Path) -> np.ndarray:
    with np.load(run / "scores_test.npz", allow_pickle=False) as scores:
        return scores["probs"]


def _flow_parity(log) -> bool:
    import cv2
    import torch

    from preprocess.flow.farneback_torch import farneback_torch
    from preprocess.video import read_frames

    pairs = [
        (cv2.imread(str(shared() / f"data/flow_gt/sintel_pair/frame_000{i}.png"), cv2.IMREAD_GRAYSCALE) for i in (1, 2))
    ]
    clip = [
        f.image for f in read_frames(str(shared() / "data/clips/arm_wrestling_kinetics_340x256.mp4"), colour="gray")
    ]
    pairs = [tuple(pairs)] + [(clip[t], clip[t + 1]) for t in (10, 100, 200)]
    ok = True
    for gaussian in (False, True):
        errors = []
        for prev, nxt in pairs:
            flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if gaussian else 0
            reference = cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, flags)
            with torch.no_grad():
                ours = farneback_torch(torch.from_numpy(prev).cuda(), torch.from_numpy(nxt).cuda(), flags=flags)
            errors.append(np.linalg.norm(ours.cpu().numpy() - reference, axis=-1).ravel())
        epe = np.concatenate(errors)
        passed = epe.mean() < 0.002 and np.percentile(epe, 99) < 0.02
        ok &= passed
        log(
            f"{'PASS' if passed else 'FAIL'}  flow parity, {'Gaussian' if gaussian else 'box'} window, CUDA vs "
            f"OpenCV on {len(pairs)} real pairs: mean EPE {epe.mean():.6f} px, p99 {np.percentile(epe, 99):.6f} px"
        )
    return ok


def gpu_smoke(*, log=print) -> bool:
    """Run every check; True when all pass (or there is no GPU, which is reported as pending)."""
    import torch

    if not torch.cuda.is_available():
        log(
            "PENDING  gpu-smoke needs a CUDA device; this machine has none (torch "
            f"{torch.__version__}). Run it where there is a GPU."
        )
        return True
    gpus = torch.cuda.device_count()
    log(f"gpu-smoke on {gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = tiny_work(root)
        for stream in ("rgb", "flow", "pose"):
            run = root / f"ddp_{stream}"
            done = _train(stream, work, run, epochs=1, processes=gpus)
            passed = done.returncode == 0 and (run / "scores_test.npz").is_file()
            detail = "" if passed else " | " + (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            log(f"{'PASS' if passed else 'FAIL'}  {stream}: torchrun, {gpus} process(es), NCCL, 1 epoch{detail}")
            results.append(passed)
        runs = {name: root / f"resume_{name}" for name in ("a", "b", "resumed")}
        steps = [
            _train("flow", work, runs["a"], 3),
            _train("flow", work, runs["b"], 3),
            _train("flow", work, runs["resumed"], 2),
            _train("flow", work, runs["resumed"], 3),
        ]
        if all(step.returncode == 0 for step in steps) and "resuming" in steps[-1].stdout:
            noise = float(np.abs(_probs(runs["a"]) - _probs(runs["b"])).max())
            gap = float(np.abs(_probs(runs["a"]) - _probs(runs["resumed"])).max())
            passed = gap <= max(2 * noise, 1e-4)
            log(
                f"{'PASS' if passed else 'FAIL'}  stop after epoch 2 and resume to 3 = uninterrupted: max |dp| "
                f"{gap:.2e} (two uninterrupted runs differ by {noise:.2e})"
            )
        else:
            passed = False
            log("FAIL  stop-and-resume: " + next((s.stderr.strip()[-200:] for s in steps if s.returncode), "no resume"))
        results.append(passed)
        results.append(_flow_parity(log))
    log(f"gpu-smoke: {sum(results)}/{len(results)} checks passed in {time.perf_counter() - start:.0f} s")
    return all(results)
