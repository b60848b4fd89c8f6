"""bin/extract-features: cached per-frame embeddings of a frozen backbone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch

from preprocess import load_manifest
from streams.models import create_backbone_2d
from tests.conftest import run_bin


def test_features_are_one_row_per_sampled_instant_and_match_the_backbone(tiny_work, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_work, work, symlinks=True, ignore=shutil.ignore_patterns("features", "flow", "pose"))
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    net = __import__("torchvision").models.resnet18()
    torch.save(net.state_dict(), weights)  # random weights in torchvision's own layout
    args = ["--preset", "resnet18", "--pretrained", weights, "--size", "32", "--sample-fps", "4"]
    result = run_bin("extract-features", work, *args, check=True)
    manifest = load_manifest(work)
    assert f"{len(manifest.videos)} embedded" in result.stdout
    video = manifest.videos[0]
    side = json.loads((work / "features" / "resnet18" / f"{video.video_id}.json").read_text())
    rows = np.load(work / "features" / "resnet18" / f"{video.video_id}.npy", allow_pickle=False)
    seconds = video.frame_count / video.fps
    # one row per 1/4 s of the clip, each the frame on screen at that instant
    assert rows.shape == (int(np.ceil(seconds * 4 - 1e-9)), 512) and rows.dtype == np.float16
    assert side["frame_indices"] == [int(np.floor(k / 4 * video.fps + 1e-6)) for k in range(len(rows))]
    assert side["params"]["weights_sha256"] and side["params"]["preset"] == "resnet18"
    # the rows are the backbone's output on those frames (the loading code is the real one)
    backbone = create_backbone_2d(in_channels=3, preset="resnet18")
    backbone.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}, strict=False)
    frames = np.load(work / "frames" / f"{video.video_id}.npy", allow_pickle=False)
    import cv2

    from streams.checkpoints import IMAGENET_STATS

    # a torchvision ResNet file: its input statistics are ImageNet's, recorded with the features
    assert side["params"]["normalize"] == {"mean": IMAGENET_STATS["mean"], "std": IMAGENET_STATS["std"]}
    RGB_MEAN, RGB_STD = (np.array(IMAGENET_STATS[k], np.float32) for k in ("mean", "std"))

    h, w = frames.shape[1:3]
    s = min(h, w)
    image = frames[side["frame_indices"][1], (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    x = (cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255 - RGB_MEAN) / RGB_STD
    with torch.no_grad():
        expected = backbone.eval()(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])[0].numpy()
    assert np.allclose(rows[1].astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    # a second run keeps what is done; a video without its frame cache fails by name, and the run exits non-zero
    (work / "frames" / f"{manifest.videos[1].video_id}.json").unlink()
    again = run_bin("extract-features", work, *args, "--name", "other")
    assert again.returncode == 1 and f"missing frames output for video {manifest.videos[1].video_id!r}" in again.stderr
    assert f"0 embedded, {len(manifest.videos)} already done" in run_bin("extract-features", work, *args).stdout
