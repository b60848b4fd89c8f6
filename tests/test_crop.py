"""Dancer-centred crops (bin/preprocess frames|flow --crop dancers)."""

from __future__ import annotations

import json

import cv2
import numpy as np

from preprocess import load_flow, load_frames, load_manifest
from preprocess.video.crop import dancer_windows
from tests.conftest import run_bin

W, H, FRAMES, SIZE = 192, 128, 24, 48


def _dancer_box(t: int, direction: int) -> tuple[int, int, int, int]:
    """A 16 × 40 px "dancer" crossing the frame (left to right, or back) over the clip."""
    x = 12 + (W - 40) * t / (FRAMES - 1)
    if direction < 0:
        x = W - 28 - (x - 12)
    return int(x), 60, int(x) + 16, 100


def _write_clips(data, coco):
    rng = np.random.default_rng(0)
    background = (rng.random((H, W, 3)) * 60).astype(np.uint8)  # dark texture: the venue
    images, annotations = [], []
    for label, direction in (("right", 1), ("left", -1)):
        (data / label).mkdir(parents=True)
        for k in range(2):
            vid = f"{label}{k}"
            writer = cv2.VideoWriter(str(data / label / f"{vid}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
            for t in range(FRAMES):
                x0, y0, x1, y1 = _dancer_box(t, direction)
                frame = background.copy()
                frame[y0:y1, x0:x1] = 255
                writer.write(frame)
                images.append({"id": len(images) + 1, "file_name": f"{vid}/{t:05d}.jpg"})
                # 17 keypoints on the dancer's outline: the box the pose stage would find
                xs = np.linspace(x0, x1, 17)
                ys = np.linspace(y0, y1, 17)[::-1]
                keypoints = np.stack([xs, ys, np.full(17, 2.0)], -1).ravel().tolist()
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": len(images), "category_id": 1, "keypoints": keypoints}
                )
            writer.release()
    coco.write_text(json.dumps({"images": images, "annotations": annotations}))


def test_the_dancer_crop_follows_a_dancer_across_the_frame(tmp_path):
    data, work, coco = tmp_path / "data", tmp_path / "work", tmp_path / "pose.json"
    _write_clips(data, coco)
    crop = ["--crop", "dancers", "--crop-size", str(SIZE), "--workers", "1"]
    missing = run_bin("preprocess", "frames", data, work, "--resize", "none", *crop)
    assert missing.returncode != 0 and "run bin/preprocess pose first" in missing.stderr
    run_bin("preprocess", "import-pose", "coco", coco, data, work, check=True)
    run_bin("preprocess", "frames", data, work, "--resize", "none", *crop, "--force", check=True)
    run_bin("preprocess", "flow", data, work, "--resize", "none", "--storage", "float16", *crop, check=True)
    for video in load_manifest(work).videos:
        frames = load_frames(work, video.video_id)
        assert frames.shape == (FRAMES, SIZE, SIZE, 3)
        side = json.loads((work / "frames" / f"{video.video_id}.json").read_text())
        assert side["params"]["crop"] == "dancers" and side["params"]["crop_size"] == SIZE
        centres = []
        for t in range(FRAMES):
            bright = frames[t].mean(-1) > 200
            ys, xs = np.nonzero(bright)
            centres.append((xs.mean(), ys.mean()))
        centres = np.array(centres)
        # the dancer stays near the middle of every crop while it crosses 150 px of the full frame
        assert np.abs(centres - SIZE / 2).max() < 0.2 * SIZE, centres
        flow = load_flow(work, video.video_id)
        assert flow.shape == (FRAMES - 1, SIZE, SIZE, 2)
        assert json.loads((work / "flow" / f"{video.video_id}.json").read_text())["params"]["crop"] == "dancers"


def test_windows_fall_back_to_the_previous_box_then_to_the_whole_frame():
    boxes = np.zeros((6, 1, 4), np.float32)
    mask = np.zeros((6, 1), bool)
    boxes[2, 0] = [100, 40, 120, 80]
    mask[2, 0] = True
    windows = dancer_windows(boxes, mask, np.arange(6), 6, 200, 100, margin=0.0, smooth=1)
    assert np.allclose(windows[0], [50, 0, 150, 100]) and np.allclose(windows[1], windows[0])  # nobody yet: whole
    assert np.allclose(windows[2], [90, 40, 130, 80])  # a 20 × 40 box made square: 40 × 40 about its centre
    assert np.allclose(windows[3:], windows[2])  # nobody since: the previous window
    edge = boxes.copy()
    edge[2, 0] = [0, 0, 30, 10]
    inside = dancer_windows(edge, mask, np.arange(6), 6, 200, 100, margin=0.5, smooth=1)[2]
    assert inside[0] >= 0 and inside[1] >= 0 and np.isclose(inside[2] - inside[0], 60)  # shifted into the frame
