"""Dancer-centred crops (bin/preprocess frames|flow --crop dancers)."""

from __future__ import annotations

import hashlib
import json
import shutil

import cv2
import numpy as np

from preprocess import load_flow, load_frames, load_manifest
from preprocess.batch import run_batch
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


def _crop_work(tiny_work, folder, videos=None):
    manifest = load_manifest(tiny_work)
    manifest.save(folder)
    shutil.copytree(tiny_work / "pose", folder / "pose")
    return manifest


def test_a_crop_is_redone_when_the_pose_it_was_cut_from_changes_or_goes(tiny_work, tmp_path):
    from preprocess.video import FramesInfo, frames_params, frames_task

    work = tmp_path / "w"
    manifest = _crop_work(tiny_work, work)
    ids = [v.video_id for v in manifest.videos[:2]]
    task = frames_task(frames_params(resize="none", crop="dancers", crop_size=32))
    assert run_batch(task, manifest, work, video_ids=ids).done == ids
    assert run_batch(task, manifest, work, video_ids=ids).skipped == ids  # nothing changed: already done
    digest = hashlib.sha256((work / "pose" / f"{ids[0]}.npz").read_bytes()).hexdigest()
    assert FramesInfo.read(work, ids[0]).inputs == {"pose": digest}
    # pose redone (here: another video's skeletons in its place): that crop is stale, the other is not
    shutil.copy(work / "pose" / f"{ids[1]}.npz", work / "pose" / f"{ids[0]}.npz")
    again = run_batch(task, manifest, work, video_ids=ids)
    assert again.done == [ids[0]] and again.skipped == [ids[1]]
    shutil.rmtree(work / "pose")  # moved away: every crop fails by name instead of being "already done"
    gone = run_batch(task, manifest, work, video_ids=ids)
    assert (
        not gone.skipped
        and len(gone.failed) == 2
        and "--crop dancers needs the video's pose" in (gone.failed[0]["error"])
    )


def test_background_outside_the_tracked_persons_is_dimmed_or_blurred(tiny_work, tmp_path):
    import dataclasses

    from preprocess.batch import run_batch
    from preprocess.dataset import load_manifest
    from preprocess.pose import load_pose
    from preprocess.video import FramesInfo, frames_params, frames_task, load_frames

    manifest = load_manifest(tiny_work)
    manifest = dataclasses.replace(manifest, videos=manifest.videos[:6])
    changed_outside = kept_inside = 0
    for mode in ("keep", "dim", "blur"):
        out = tmp_path / mode
        out.mkdir()
        (out / "pose").symlink_to(tiny_work / "pose")
        params = frames_params(resize="none", crop_margin=0.0, background=mode)
        summary = run_batch(frames_task(params), manifest, out, workers=1)
        assert not summary.failed and len(summary.done) == 6
        if mode == "keep":
            continue
        for video in manifest.videos:
            vid = video.video_id
            info = FramesInfo.read(out, vid)
            assert info.params["background"] == mode and "pose" in info.inputs
            plain, faded = load_frames(tmp_path / "keep", vid, mmap=False), load_frames(out, vid, mmap=False)
            pose = load_pose(tiny_work, vid)
            for t, index in enumerate(pose["frame_indices"]):
                present = pose["mask"][t]
                if not present.any():
                    continue
                inside = np.zeros(plain.shape[1:3], bool)
                for x0, y0, x1, y1 in np.maximum(pose["boxes"][t][present], 0):
                    inside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
                kept_inside += np.array_equal(faded[index][inside], plain[index][inside])
                if mode == "dim":
                    assert (faded[index][~inside] == plain[index][~inside] // 4).all()
                changed_outside += not np.array_equal(faded[index][~inside], plain[index][~inside])
    assert kept_inside > 50 and changed_outside > 0.9 * kept_inside


def test_the_frame_cache_dims_the_background_by_default_and_needs_pose_first(tiny_synth, tiny_work, tmp_path):
    import dataclasses

    from preprocess.dataset import load_manifest
    from preprocess.video import FramesInfo

    work = tmp_path / "work"
    manifest = load_manifest(tiny_work)
    dataclasses.replace(manifest, videos=manifest.videos[:2]).save(work)
    first = manifest.videos[0].video_id
    missing = run_bin("preprocess", "frames", work, work, "--resize", "none", "--workers", "1")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert str(work / "pose" / f"{first}.npz") in missing.stderr
    assert "run bin/preprocess pose first, or pass --background keep" in missing.stderr
    (work / "pose").mkdir()
    for video in manifest.videos[:2]:
        for suffix in (".npz", ".json"):
            shutil.copy(tiny_work / "pose" / f"{video.video_id}{suffix}", work / "pose")
    run_bin("preprocess", "frames", work, work, "--resize", "none", "--workers", "1", check=True)
    info = FramesInfo.read(work, first)
    assert info.params["background"] == "dim" and "pose" in info.inputs
    # the library's default is the command's: the shared fixture's cache (frames_params defaults) is dimmed too
    assert FramesInfo.read(tiny_work, first).params == info.params
