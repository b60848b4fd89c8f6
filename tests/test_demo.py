"""The README's main command end to end on the tiny preset, then bin/classify with the fitted fusion."""

import json
import os
import subprocess

import pytest

from preprocess.video import Source, probe, read_frames
from tests.conftest import REPO, SHARED, run_bin, shared_asset

TINY_TRAINING = "--epochs 3 --batch-size 8 --views 2 --min-epoch-clips 1"
TINY_STREAMS = {
    "DANCE_RGB_OPTIONS": "--size 48 --segments 2",
    "DANCE_FLOW_OPTIONS": "--size 48 --stack 3 --segments 2",
    "DANCE_POSE_OPTIONS": "--frames 12",
}


def tiny_streams() -> dict:
    """Each stream's small settings; flow on its default (ImageNet's MobileNetV2) where the shared file is, else on
    our small CNN, so that the demo's path is tested either way."""
    if (SHARED / "models" / "mobilenet_v2_imagenet_features.pth").is_file():
        return TINY_STREAMS
    return {**TINY_STREAMS, "DANCE_FLOW_OPTIONS": TINY_STREAMS["DANCE_FLOW_OPTIONS"] + " --preset small"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    shared_asset("models/pose_landmarker_full.task")  # the demo's pose stage uses the shared MediaPipe model
    out = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "DANCE_DEMO_DIR": str(out),
        "DANCE_PRESET": "tiny",
        "DANCE_TRAIN_OPTIONS": TINY_TRAINING,
        **tiny_streams(),
    }
    result = subprocess.run(
        ["bash", str(REPO / "bin" / "demo")], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out, result


def test_tiny_demo_runs_every_stage(demo):
    out, result = demo
    assert "demo: done" in result.stdout and "ablation.md" in result.stdout
    assert "rgb+flow+pose" in result.stdout  # the headline table
    for stage in ("flow", "pose", "frames"):
        summary = json.loads((out / "work" / stage / "summary.json").read_text())
        assert summary["counts"]["failed"] == 0 and summary["counts"]["done"] == 30
    for stream in ("rgb", "flow", "pose"):
        assert (out / "runs" / stream / "scores_test.npz").is_file()
    report = json.loads((out / "report" / "ablation.json").read_text())
    assert report["test_videos"] == 10 and len(report["results"]) == 3 + 4 * 5
    # a second run resumes: nothing is recomputed
    env = {
        **os.environ,
        "DANCE_DEMO_DIR": str(out),
        "DANCE_PRESET": "tiny",
        "DANCE_TRAIN_OPTIONS": TINY_TRAINING,
        **tiny_streams(),
    }
    again = subprocess.run(
        ["bash", str(REPO / "bin" / "demo")], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0 and again.stdout.count("0 done, 30 already done, 0 failed") == 3


def test_classify_new_videos_with_the_fitted_fusion(demo, tmp_path):
    out, _ = demo
    synth = json.loads((out / "synthetic" / "synth.json").read_text())
    videos = [out / "synthetic" / c["video"] for c in synth["clips"][:2]]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    result = run_bin(
        "classify", *videos, broken, "--report", out / "report", "--overlay", tmp_path / "overlays", "--json"
    )
    assert result.returncode == 1  # one input failed: named, and the others still classified
    assert "broken.mp4" in result.stderr and "Traceback" not in result.stderr
    answers = json.loads(result.stdout)
    assert [a["video"] for a in answers] == [str(v) for v in videos]
    classes = json.loads((out / "report" / "fusion.json").read_text())["classes"]
    for answer in answers:
        assert answer["prediction"] in classes and abs(sum(answer["fused"].values()) - 1) < 1e-4
        assert set(answer["streams"]) == {"rgb", "flow", "pose"}
        assert answer["probability"] == max(answer["fused"].values())
        assert answer["caution"] is None or "streams put" in answer["caution"] or "< 50 %" in answer["caution"]
        frames = list(read_frames(answer["overlay"]))
        # the video whole, a caption bar above it and a flow panel beside it: nothing but skeletons drawn over it
        height, width = frames[0].image.shape[:2]
        assert len(frames) == 16 and height > 96 and width >= 128 + 96
        # written at the source's rate (the tiny preset's 12 fps), not a fixed 25, so it plays in step
        assert probe(Source(answer["overlay"])).fps == pytest.approx(probe(Source(answer["video"])).fps) == 12
