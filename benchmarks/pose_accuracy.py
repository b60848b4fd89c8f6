"""Pose accuracy of both backends: people found and OKS on the shared COCO ground truth, PCK@0.2 on synthetic
ground truth (solo dancers vs couples and groups)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from preprocess.batch import read_npz
from preprocess.dataset.synthetic import generate
from preprocess.pose import load_pose
from preprocess.pose.backends import (
    MediaPipePose,
    MoveNetMultiPose,
    OnnxYoloPose,
    resolve_mediapipe_model,
    resolve_movenet_model,
)
from preprocess.pose.evaluate import coco_oks_matches, pck

from .common import preprocess, shared


def pose_accuracy(*, preset: str = "tiny", onnx_model: str | None = None, workers: int = 1, log=print) -> None:
    """Every pose backend on the shared COCO ground truth (people found, OKS, seconds an image) and on synthetic
    ground truth (PCK, frames/s)."""
    task = resolve_mediapipe_model(None, download=False)
    onnx = Path(onnx_model or shared() / "models/yolo11n-pose.onnx")
    movenet = resolve_movenet_model(None)
    coco = shared() / "data/coco_pose_gt"
    data = json.loads((coco / "test_coco.json").read_text())
    for name, model in (
        ("mediapipe", MediaPipePose(task, max_persons=20)),
        ("onnx", OnnxYoloPose(onnx, max_persons=20)),
        ("movenet", MoveNetMultiPose(movenet)),
        ("movenet at 512", MoveNetMultiPose(movenet, input_size=512)),
    ):
        scores = []
        started = time.perf_counter()
        for image in data["images"]:
            rgb = cv2.cvtColor(cv2.imread(str(coco / image["file_name"])), cv2.COLOR_BGR2RGB)
            with model.video() as detect:
                people = [kp for kp, _ in detect(rgb, 0)]
            scores += coco_oks_matches(people, [a for a in data["annotations"] if a["image_id"] == image["id"]])
        per_image = (time.perf_counter() - started) / len(data["images"])
        scores = np.array(scores)
        found = scores >= 0.5
        log(
            f"COCO {name}: found {found.sum()}/{len(scores)} people (OKS >= 0.5, people with >= 5 keypoints), "
            f"OKS of found {scores[found].min():.2f}-{scores[found].max():.2f} (mean {scores[found].mean():.2f}); "
            f"{1000 * per_image:.0f} ms an image"
        )
    solo = {"ballet", "break", "flamenco"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = generate(tmp / "synth", preset=preset, seed=0, workers=workers)
        for name, extra in (
            ("mediapipe", ["--model", task]),
            ("onnx", ["--backend", "onnx", "--model", onnx]),
            ("movenet", ["--backend", "movenet", "--model", movenet]),
        ):
            work = tmp / name
            start = time.perf_counter()
            preprocess("pose", tmp / "synth" / "dataset.csv", work, "--workers", workers, *extra)
            seconds = time.perf_counter() - start
            totals = {"solo": [0, 0], "couples and group": [0, 0]}
            for clip in info["clips"]:
                truth = read_npz(tmp / "synth" / clip["groundtruth"])["keypoints"]
                pose = load_pose(work, clip["id"])
                c, t = pck(pose["keypoints"], pose["mask"], truth)
                bucket = totals["solo" if clip["style"] in solo else "couples and group"]
                bucket[0] += c
                bucket[1] += t
            every = [sum(v[0] for v in totals.values()), sum(v[1] for v in totals.values())]
            frames = sum(c["frames"] for c in info["clips"])
            log(
                f"synthetic {preset} {name}: PCK@0.2 solo {totals['solo'][0] / totals['solo'][1]:.2f}, "
                f"couples and group {totals['couples and group'][0] / totals['couples and group'][1]:.2f}, "
                f"all {every[0] / every[1]:.2f}; {frames / seconds:.0f} frames/s with {workers} workers"
            )
