"""Frame cache, denseflow export and flow pictures, on a small preprocessed work directory."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from preprocess.dataset import ingest
from preprocess.flow import load_flow, quantize
from preprocess.flow.visualize import flow_to_rgb, wheel_legend
from preprocess.video import Resize, load_frames, read_frames
from tests.conftest import run_bin


@pytest.fixture(scope="module")
def work(tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("outputs")
    manifest = ingest(tiny_synth / "dataset.csv")
    manifest.videos = manifest.videos[:4]
    manifest.save(work)
    run_bin("preprocess", "flow", work, work, "--resize", "short:64", "--workers", "1", check=True)
    return work, manifest


def test_frame_cache_equals_decoded_frames(work):
    work, manifest = work
    run_bin(
        "preprocess", "frames", work, work, "--resize", "short:48", "--step", "3", "--background", "keep", check=True
    )
    video = manifest.videos[1]
    cached = load_frames(work, video.video_id)
    assert isinstance(cached, np.memmap) and cached.shape == (6, 48, 64, 3)
    decoded = [f.image for f in read_frames(video.to_source(), resize=Resize.parse("short:48"), colour="rgb")][::3]
    assert np.array_equal(np.asarray(cached), np.stack(decoded))


def test_export_to_the_denseflow_layout(work, tmp_path):
    work, manifest = work
    run_bin("preprocess", "export-flow", work, tmp_path, "--quality", "100", check=True)
    video_id = manifest.videos[0].video_id
    names = sorted(p.name for p in (tmp_path / video_id).iterdir())
    assert names[:2] == ["flow_x_00001.jpg", "flow_x_00002.jpg"] and len(names) == 2 * 15
    assert names[-1] == "flow_y_00015.jpg"
    flow = load_flow(work, video_id)
    x = cv2.imread(str(tmp_path / video_id / "flow_x_00004.jpg"), cv2.IMREAD_GRAYSCALE)
    y = cv2.imread(str(tmp_path / video_id / "flow_y_00004.jpg"), cv2.IMREAD_GRAYSCALE)
    q = quantize(flow[3], 20)
    assert x.shape == q.shape[:2]
    assert np.abs(x.astype(int) - q[..., 0]).mean() < 1.0 and np.abs(y.astype(int) - q[..., 1]).mean() < 1.0


def test_colour_wheel_mapping():
    assert (flow_to_rgb(np.zeros((4, 4, 2)), 1.0) == 255).all()  # no motion is white
    right = flow_to_rgb(np.array([[[1.0, 0.0]]]), 1.0)[0, 0]
    down = flow_to_rgb(np.array([[[0.0, 1.0]]]), 1.0)[0, 0]
    left = flow_to_rgb(np.array([[[-1.0, 0.0]]]), 1.0)[0, 0]
    assert right[0] == 255 and right[1] < 30 and right[2] < 30  # +x is red
    assert left[2] > 200 and left[0] < 30  # -x is cyan-blue
    assert down[1] > 150 and down[0] > 150 and down[2] < 60  # +y (down) is yellow
    half = flow_to_rgb(np.array([[[0.5, 0.0]]]), 1.0)[0, 0]
    assert half[0] == 255 and 100 < half[1] < 160  # slower is paler
    legend = wheel_legend(51)
    assert (legend[25, 25] == 255).all() and legend.shape == (51, 51, 3)


def test_show_flow_png_and_mp4(work, tmp_path):
    work, manifest = work
    video_id = manifest.videos[2].video_id
    run_bin("preprocess", "show-flow", work, video_id, tmp_path / "sheet.png", check=True)
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet is not None and sheet.shape[1] > sheet.shape[0] > 200
    run_bin("preprocess", "show-flow", work, video_id, tmp_path / "flow.mp4", check=True)
    frames = list(read_frames(str(tmp_path / "flow.mp4")))
    assert len(frames) == 15 and frames[0].image.shape[1] == 2 * 85
    bad = run_bin("preprocess", "show-flow", work, "nope", tmp_path / "x.png")
    assert bad.returncode != 0 and "no video 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_export_flow_replaces_a_linked_folder_and_writes_nothing_outside(tiny_work, tmp_path):
    from preprocess import load_manifest

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    video = load_manifest(tiny_work).videos[0].video_id
    (out / video).symlink_to(outside, target_is_directory=True)
    result = run_bin("preprocess", "export-flow", tiny_work, out)
    assert result.returncode == 0, result.stderr
    assert list(outside.iterdir()) == [] and (out / video).is_dir() and not (out / video).is_symlink()
    assert (out / video / "flow_x_00001.jpg").is_file()
