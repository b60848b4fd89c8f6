"""Shared fixtures: the real assets in ../shared (override with DANCE_SHARED) and a tiny synthetic dataset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from preprocess.batch import run_batch
from preprocess.dataset import ingest
from preprocess.pose.keypoints import flip_permutation

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DANCE_SHARED", REPO.parent / "shared"))


def shared_asset(relative: str) -> Path:
    """Path of an asset under shared/, or skip the test naming the missing asset."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared asset {relative} not found under {SHARED} (set DANCE_SHARED)")
    return path


def run_bin(name: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run bin/<name> with this interpreter, as a user would from the repo."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bin" / name), *map(str, args)], capture_output=True, text=True, cwd=REPO
    )
    if check and result.returncode != 0:
        raise AssertionError(f"bin/{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """The tiny synthetic preset (30 clips), rendered once per test session."""
    from preprocess.dataset.synthetic.dataset import generate

    out = tmp_path_factory.mktemp("synth_tiny")
    generate(out, preset="tiny", seed=7, workers=1)
    return out


@pytest.fixture(scope="session")
def tiny_work(tiny_synth, tmp_path_factory) -> Path:
    """The tiny synthetic set ingested (one performer per split) and preprocessed: flow, pose imported from the
    ground truth (so training tests need no pose model), and frames (background dimmed, the default)."""
    from preprocess.dataset.synthetic import groundtruth_as_coco
    from preprocess.flow import FarnebackParams, flow_params, flow_task
    from preprocess.pose.importers import import_pose
    from preprocess.video import frames_params, frames_task

    work = tmp_path_factory.mktemp("tiny_work")
    manifest = ingest(tiny_synth / "dataset.csv", ratios=(0.34, 0.33, 0.33), seed=0)
    manifest.save(work)
    run_batch(flow_task(flow_params(FarnebackParams(), resize="none")), manifest, work, workers=2)
    import_pose("coco", str(groundtruth_as_coco(tiny_synth, work / "gt_coco.json")), manifest, str(work), max_persons=4)
    # after pose, as the demo does: the default frame cache dims the pixels outside the dancers' boxes
    run_batch(frames_task(frames_params(resize="none")), manifest, work, workers=2)
    return work


@pytest.fixture(scope="session")
def tiny_features(tiny_work):
    """tiny_work with per-frame embeddings of our small CNN (random weights) in features/small."""
    from streams.features import extract_features

    result = extract_features(tiny_work, preset="small", name="small", size=48, log=lambda *_: None)
    assert not result["failed"]
    return tiny_work


def onnxruntime_missing() -> str | None:
    """Why the ONNX Runtime half of a test cannot run here (the optional ``onnx`` extra), or None."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'dance-streams[onnx]'): ONNX Runtime not compared"
    return None


def assert_bundle_scores_as_the_run(run_folder, work, target) -> None:
    """The run exported as a bundle stream folder scores ``work``'s test videos as the run does: PyTorch within
    1e-6, and ONNX Runtime (where the ``onnx`` extra is installed) within 1e-4 with the same predictions. Tests of
    every family call this after training."""
    import numpy as np

    from fusion.bundle import export_stream
    from streams.run import Run

    run = Run.load(run_folder)
    reference, _ = run.score(work, "test", device="cpu")
    assert export_stream(run, target, run.classes)["onnx"]
    carried = Run.load(target)
    assert "work" not in carried.config and carried.classes == run.classes
    torch_probs, _ = carried.score(work, "test", device="cpu", runtime="torch")
    assert np.abs(torch_probs - reference).max() <= 1e-6
    if onnxruntime_missing():
        return  # (the training tests calling this keep their own assertions; test_bundle.py says what is missing)
    onnx_probs, _ = carried.score(work, "test", device="cpu", runtime="onnx")
    assert np.abs(onnx_probs - reference).max() <= 1e-4
    assert (onnx_probs.argmax(1) == reference.argmax(1)).all()


def write_lossless(frames, path, fps):
    """Frames as an FFV1 video: decoded again, they are these pixels exactly (an mp4 would re-encode them)."""
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (width, height))
    assert writer.isOpened(), "OpenCV's FFmpeg cannot write FFV1 here"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def flip_keypoints_horizontally(xy: np.ndarray, width: int) -> np.ndarray:
    """The reference mirror of pixel keypoints (..., 17, >=2) in an image of ``width`` pixels, left/right names
    swapped (what the synthetic set's mirrored scenes and the streams' flips must agree with).

    Pixel centres sit at integer coordinates, so column x maps to ``width - 1 - x``.
    """
    out = np.array(xy, copy=True)
    out[..., 0] = (width - 1) - out[..., 0]
    return out[..., flip_permutation(), :]


TINY = {"epochs": 1, "batch_size": 8, "views": 1, "min_epoch_clips": 1}


KEEP = ["--background", "keep"]  # frames as decoded: these work folders have no pose (the default dims)


def small_dataset(tiny_synth, root, styles=("ballet", "tango")):
    """Three clips of each of two styles of the tiny preset, as a folder per class."""
    for style in styles:
        (root / style).mkdir(parents=True)
        for video in sorted((tiny_synth / "videos" / style).glob("*.mp4")):
            shutil.copy(video, root / style / video.name)
    return root


FAST_FLOW = {
    "stream": "flow",
    "preset": "small",
    "epochs": 2,
    "batch_size": 8,
    "size": 48,
    "segments": 2,
    "stack": 3,
    "views": 1,
    "min_epoch_clips": 1,
}


def group_shortcut(seed=0, groups=12, per_group=8, classes=4):
    """Fitting scores where each group (a source video) holds one class; stream "flow" is weakly right about the
    class, stream "rgb" says nothing about the class but carries a signature of the group (a venue's look)."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(groups), per_group)
    labels = group % classes
    n = len(labels)
    weak = rng.dirichlet(np.ones(classes), n) * 0.7
    weak[np.arange(n), np.where(rng.random(n) < 0.45, labels, rng.integers(0, classes, n))] += 0.3
    signature = rng.dirichlet(np.ones(classes) * 0.5, groups)[group]
    venue = signature + 0.02 * rng.random((n, classes))
    return {"flow": weak, "rgb": venue / venue.sum(1, keepdims=True)}, labels, group.astype(str)


def work_copy(tiny_work, root, *stages):
    """tiny_work's manifest and ``stages``, copied where a test may damage them."""
    work = root / "work"
    work.mkdir()
    for name in ("manifest.json", "manifest.csv"):
        shutil.copy(tiny_work / name, work / name)
    for stage in stages:
        shutil.copytree(tiny_work / stage, work / stage)
    return work
