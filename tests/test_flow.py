import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocess.batch import DataError, run_batch
from preprocess.dataset import Manifest, VideoRecord, ingest
from preprocess.flow import (
    FarnebackParams,
    dequantize,
    end_point_error,
    flow_params,
    flow_task,
    load_flow,
    quantize,
    read_middlebury_flo,
)
from preprocess.video import read_frames
from tests.conftest import REPO, run_bin, shared_asset


@pytest.fixture(scope="module")
def tiny_work(tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("flow_work")
    manifest = ingest(tiny_synth / "dataset.csv")
    manifest.save(work)
    return work, manifest


def test_quantisation_round_trip():
    rng = np.random.default_rng(0)
    flow = rng.uniform(-30, 30, (50, 40, 2)).astype(np.float32)
    for bound in (20.0, 15.0, 7.5):
        back = dequantize(quantize(flow, bound), bound)
        inside = np.abs(flow) <= bound
        assert np.abs(back - flow)[inside].max() <= bound / 254 + 1e-5  # half a step each side of the grid point
        assert np.allclose(back[~inside], np.sign(flow[~inside]) * bound, atol=1e-5)
        levels = np.arange(1, 256, dtype=np.uint8)
        assert np.array_equal(quantize(dequantize(levels, bound), bound), levels)  # the inverse is exact


def test_zero_flow_reads_back_as_exactly_zero_and_mirrors_exactly():
    # Version 1 read zero back as +bound/255 (+0.078 px at 20): static pixels moved and a mirrored clip, whose x
    # flow is negated, carried a constant offset that gave the flip away.
    flow = np.random.default_rng(1).uniform(-25, 25, (30, 20, 2)).astype(np.float32)
    flow[:10] = 0
    for bound in (20.0, 7.5):
        back = dequantize(quantize(flow, bound), bound)
        assert (back[:10] == 0).all()
        assert np.array_equal(dequantize(quantize(-flow, bound), bound), -back)


def test_flow_of_an_older_format_is_refused_by_name_and_redone(tiny_work, tmp_path):
    _, manifest = tiny_work
    two = Manifest(manifest.root, manifest.classes, manifest.videos[:2])
    task = flow_task(flow_params(FarnebackParams(), resize="none"))
    run_batch(task, two, tmp_path, workers=1)
    video = two.videos[0].video_id
    expected = load_flow(tmp_path, video)
    side = tmp_path / "flow" / f"{video}.json"
    meta = json.loads(side.read_text())
    meta["params"]["version"] = 1  # as an earlier release wrote it
    side.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="flow format 1") as caught:
        load_flow(tmp_path, video)
    assert str(side) in str(caught.value)
    summary = run_batch(task, two, tmp_path, workers=1)  # a rerun redoes exactly that video
    assert summary.done == [video] and summary.skipped == [two.videos[1].video_id]
    assert np.array_equal(load_flow(tmp_path, video), expected)


def test_stored_flow_equals_opencv_up_to_quantisation(tiny_work):
    work, manifest = tiny_work
    params = flow_params(FarnebackParams(), offset=2, resize="none", storage="uint8", bound=20)
    video = manifest.videos[4]
    summary = run_batch(flow_task(params), Manifest(manifest.root, manifest.classes, [video]), work)
    assert summary.done == [video.video_id]
    stored = load_flow(work, video.video_id)
    frames = [f.image for f in read_frames(video.to_source(), colour="gray")]
    direct = np.stack(
        [
            cv2.calcOpticalFlowFarneback(frames[t], frames[t + 2], None, 0.5, 3, 15, 3, 5, 1.2, 0)
            for t in range(len(frames) - 2)
        ]
    )
    assert stored.shape == direct.shape == (14, 96, 128, 2) and stored.dtype == np.float32
    inside = np.abs(direct) <= 20
    assert np.abs(stored - direct)[inside].max() <= 20 / 254 + 1e-4  # half a step of 20/127
    assert np.abs(direct).max() > 0.5  # the dancers do move


def test_float16_storage_and_gaussian_window(tiny_work):
    work, manifest = tiny_work
    params = flow_params(FarnebackParams(gaussian=True, winsize=9), resize="short:64", storage="float16")
    video = manifest.videos[0]
    run_batch(flow_task(params), Manifest(manifest.root, manifest.classes, [video]), work, force=True)
    stored = load_flow(work, video.video_id)
    frames = [
        cv2.resize(f.image, (85, 64), interpolation=cv2.INTER_AREA)
        for f in read_frames(video.to_source(), colour="gray")
    ]
    direct = cv2.calcOpticalFlowFarneback(
        frames[3], frames[4], None, 0.5, 3, 9, 3, 5, 1.2, cv2.OPTFLOW_FARNEBACK_GAUSSIAN
    )
    assert stored.shape == (15, 64, 85, 2)
    assert np.abs(stored[3] - direct).max() <= np.abs(direct).max() * 1e-3 + 1e-3  # float16 rounding only


def test_flying_chairs_epe_matches_a_direct_opencv_call(tmp_path):
    img1 = shared_asset("data/flow_gt/00001_img1.ppm")
    img2 = shared_asset("data/flow_gt/00001_img2.ppm")
    truth = read_middlebury_flo(shared_asset("data/flow_gt/00001_flow.flo"))
    clip = tmp_path / "chairs" / "chairs"
    clip.mkdir(parents=True)
    cv2.imwrite(str(clip / "frame_1.png"), cv2.imread(str(img1)))
    cv2.imwrite(str(clip / "frame_2.png"), cv2.imread(str(img2)))
    video = VideoRecord("chairs", "chairs", "test", None, str(clip), 2, 30.0, 50, 50, ["frame_1.png", "frame_2.png"])
    direct = cv2.calcOpticalFlowFarneback(
        cv2.imread(str(img1), 0), cv2.imread(str(img2), 0), None, 0.5, 3, 15, 3, 5, 1.2, 0
    )
    direct_epe = end_point_error(direct, truth)
    assert 1.0 < direct_epe < 1.5  # the shared README: about 1.26 px
    for storage in ("uint8", "float16"):
        work = tmp_path / storage
        params = flow_params(FarnebackParams(), resize="none", storage=storage)
        run_batch(flow_task(params), Manifest("", ["chairs"], [video]), work)
        ours = end_point_error(load_flow(work, "chairs")[0], truth)
        assert abs(ours - direct_epe) < 0.1, (storage, ours, direct_epe)
    zero_epe = end_point_error(np.zeros_like(truth), truth)
    assert abs(zero_epe - 1.78) < 0.05


def _snapshot(flow_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(flow_dir.glob("*.npy")) if not p.name.startswith(".")}


def test_resume_after_a_kill_gives_the_uninterrupted_outputs(tiny_synth, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    args = ["flow", tiny_synth / "dataset.csv", None, "--resize", "none", "--workers", "1"]
    run_bin("preprocess", *[a if a is not None else clean for a in args], check=True)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bin" / "preprocess"), *[str(a if a is not None else killed) for a in args]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(list((killed / "flow").glob("*.json"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    marks = len(list((killed / "flow").glob("*.json")))
    assert 5 <= marks < 30, "the kill should land mid-run"
    again = run_bin("preprocess", *[a if a is not None else killed for a in args], check=True)
    assert f"{30 - marks} done" in again.stdout or f"{31 - marks} done" in again.stdout
    assert _snapshot(killed / "flow") == _snapshot(clean / "flow")
    assert len(_snapshot(clean / "flow")) == 30


def test_changed_parameters_redo_and_force_redoes_all(tiny_work):
    work, manifest = tiny_work
    subset = Manifest(manifest.root, manifest.classes, manifest.videos[:3])
    p1 = flow_params(FarnebackParams(), resize="short:48")
    assert len(run_batch(flow_task(p1), subset, work).done) == 3
    assert len(run_batch(flow_task(p1), subset, work).skipped) == 3
    p2 = flow_params(FarnebackParams(), resize="short:48", bound=10)
    assert len(run_batch(flow_task(p2), subset, work).done) == 3
    assert len(run_batch(flow_task(p2), subset, work, force=True).done) == 3


def test_shards_cover_every_video_exactly_once(tiny_synth, tmp_path):
    seen = []
    for i in range(3):
        result = run_bin(
            "preprocess",
            "flow",
            tiny_synth / "dataset.csv",
            tmp_path,
            "--resize",
            "short:32",
            "--shard",
            f"{i}/3",
            "--workers",
            "2",
            check=True,
        )
        assert f"summary-{i}-of-3.json" in result.stdout
        import json

        seen += json.loads((tmp_path / "flow" / f"summary-{i}-of-3.json").read_text())["done"]
    assert len(seen) == len(set(seen)) == 30


def test_bad_videos_fail_by_name_and_the_rest_completes(tiny_synth, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_synth / "videos", data)
    work = tmp_path / "work"
    manifest = ingest(data)
    manifest.save(work)
    broken = Path(manifest.videos[0].source)
    broken.write_bytes(b"\x00" * 1000)  # corrupted after ingest
    result = run_bin("preprocess", "flow", work, work, "--resize", "short:32", "--offset", "20", "--workers", "2")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed ")]
    # offset 20 > 16 frames: every video fails as too short, each named by its file
    assert len(failures) == 30 and all("too short" in line for line in failures)
    assert any(str(broken) in line for line in failures)
    ok = run_bin("preprocess", "flow", work, work, "--resize", "short:32", "--workers", "2")
    assert ok.returncode == 1 and "29 done" in ok.stdout and "1 failed" in ok.stdout
    failures = [line for line in ok.stderr.splitlines() if line.startswith("failed ")]
    assert len(failures) == 1 and str(broken) in failures[0] and "cannot be opened" in failures[0]
    assert len(list((work / "flow").glob("*.npy"))) == 29
