"""The README's main command end to end on the tiny preset, then bin/classify with the fitted fusion."""

import json
import os
import shutil
import subprocess

import pytest

from preprocess.video import Source, probe, read_frames
from tests.conftest import REPO, SHARED, run_bin, shared_asset, write_lossless

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
    # each stage resumes: run again as bin/demo runs it on the synthetic set, nothing is recomputed
    for stage, options in (("flow", ["--resize", "none"]), ("pose", []), ("frames", ["--resize", "none"])):
        again = run_bin("preprocess", stage, out / "work", out / "work", *options)
        assert again.returncode == 0 and "0 done, 30 already done, 0 failed" in again.stdout, again.stderr


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


def test_the_demo_model_travels_without_its_training_folders(demo, tmp_path):
    """bin/demo's bundle (MediaPipe's model inside it) copied elsewhere classifies as the report does, offline and
    live; and the report still does with WORK gone (issue 32)."""
    out, result = demo
    assert "model bundle" in result.stdout and result.stdout.count("at 12 fps") >= 2  # both runtimes, one video
    bundle = tmp_path / "bundle"
    shutil.copytree(out / "model", bundle)
    assert (bundle / "pose" / "pose_landmarker_full.task").is_file()  # Apache-2.0: it travels
    synth = json.loads((out / "synthetic" / "synth.json").read_text())
    video = out / "synthetic" / synth["clips"][5]["video"]
    live = ["--live", video, "--as-fast-as-possible", "--window", "1", "--every", "1"]

    def answer(*args):
        done = run_bin("classify", *args, *(() if "--live" in args else ("--json",)))
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.splitlines() if "--live" in args else [json.dumps(a) for a in json.loads(done.stdout)]
        return [json.loads(line)["streams"] for line in lines]

    before = answer(video, "--report", out / "report"), answer(*live, "--report", out / "report")
    away = {name: out / f"{name}.away" for name in ("work", "runs")}
    os.replace(out / "work", away["work"])  # the training work directory gone
    try:
        after = answer(video, "--report", out / "report"), answer(*live, "--report", out / "report")
        os.replace(out / "runs", away["runs"])  # and the runs: only the bundle is left
        try:
            bundled = answer(video, "--model", bundle), answer(*live, "--model", bundle)
        finally:
            os.replace(away["runs"], out / "runs")
    finally:
        os.replace(away["work"], out / "work")
    # (ONNX Runtime against the report: tests/test_bundle.py, and bin/demo classifies with it above)
    for expected, got, tolerance in ((before, after, 1e-6), (before, bundled, 1e-6)):
        for mode_expected, mode_got in zip(expected, got, strict=True):
            for a, b in zip(mode_expected, mode_got, strict=True):
                for stream in a:
                    assert b[stream] == pytest.approx(a[stream], abs=tolerance), stream


def test_live_windows_are_scored_as_offline_classify_scores_the_same_stretch(demo, tmp_path):
    out, _ = demo
    synth = json.loads((out / "synthetic" / "synth.json").read_text())
    clips = [out / "synthetic" / c["video"] for c in synth["clips"][:3]]
    frames = [f.image for clip in clips for f in read_frames(str(clip))]  # three dancers, one after another
    fps = probe(Source(str(clips[0]))).fps
    stream = write_lossless(frames, tmp_path / "stream.mkv", fps)
    window, every = 15 / fps, 12 / fps
    live = run_bin(
        "classify", "--live", stream, "--report", out / "report", "--as-fast-as-possible",
        "--window", f"{window:.6f}", "--every", f"{every:.6f}", "--overlay", tmp_path / "overlays",
    )  # fmt: skip
    assert live.returncode == 0, live.stderr[-2000:]
    answers = [json.loads(line) for line in live.stdout.splitlines()]
    # a whole window every 12 frames once 15 have come, then what the stream left: a final, shorter-lived window
    assert [a["frames"] for a in answers] == [[0, 15], [12, 27], [24, 39], [33, 48]]
    assert [a["final"] for a in answers] == [False, False, False, True] and answers[0]["dropped"] == 0
    assert "per answer: flow stream" in live.stderr and "ended" in live.stderr  # the latencies, how it ended
    overlay = tmp_path / "overlays" / "stream_overlay.mp4"  # every frame, at the stream's rate, a bar and a panel
    drawn = [f.image for f in read_frames(str(overlay))]
    assert len(drawn) == len(frames) and probe(Source(str(overlay))).fps == pytest.approx(fps)
    assert drawn[0].shape[0] > frames[0].shape[0] and drawn[0].shape[1] > frames[0].shape[1]
    # the stream at twice the rate, each frame shown twice: taken at the runs' rate (the tiny preset's 12 fps),
    # the same frames come, so the same windows; the flow of each taken frame is its motion to the next source frame
    # (issue 33: as training sees a video at that rate), here its own repeat: still, so the answers may differ
    doubled = write_lossless([f for f in frames for _ in range(2)], tmp_path / "doubled.mkv", 2 * fps)
    again = run_bin(
        "classify", "--live", doubled, "--report", out / "report", "--as-fast-as-possible",
        "--window", f"{window:.6f}", "--every", f"{every:.6f}",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"taken at {fps:g} fps of the source's {2 * fps:g}" in again.stderr
    for answer, same in zip(answers, map(json.loads, again.stdout.splitlines()), strict=True):
        assert same["frames"] == answer["frames"]
        # the streams that read no flow answer the same
        for stream in (s for s in answer["streams"] if s != "flow"):
            assert max(abs(p - answer["streams"][stream][c]) for c, p in same["streams"][stream].items()) <= 1e-6
    # offline: each window's stretch as a video of its own, through bin/classify
    stretches = [
        write_lossless(frames[a:b], tmp_path / f"stretch{a}.mkv", fps) for a, b in (x["frames"] for x in answers)
    ]
    offline = run_bin("classify", *stretches, "--report", out / "report", "--json")
    assert offline.returncode == 0, offline.stderr[-2000:]
    for answer, alone in zip(answers, json.loads(offline.stdout), strict=True):
        for stream_name, probs in answer["streams"].items():
            # flow looks at pairs of frames only: the same to float rounding in every window; pose (and the RGB
            # frames dimmed outside the dancers' boxes) too from the stream's start, where MediaPipe's tracking
            # starts in both; later, live MediaPipe has tracked the dancers since the stream began
            exact = stream_name == "flow" or answer["frames"][0] == 0
            tolerance = 1e-4 if exact else 0.15
            differences = [abs(p - alone["streams"][stream_name][c]) for c, p in probs.items()]
            assert max(differences) <= tolerance, (answer["frames"], stream_name, max(differences))
        # fused: within the same tolerance (measured: the same to float rounding in every window)
        from_start = answer["frames"][0] == 0
        assert max(abs(p - alone["fused"][c]) for c, p in answer["fused"].items()) <= (1e-4 if from_start else 0.15)
        if from_start:
            assert answer["prediction"] == alone["prediction"]


def test_live_sources_that_cannot_be_read_are_named(demo, tmp_path):
    out, _ = demo
    result = run_bin("classify", "--live", tmp_path / "missing.mp4", "--report", out / "report")
    assert result.returncode != 0 and "missing.mp4: no such file, camera index or stream URL" in result.stderr
    assert "Traceback" not in result.stderr
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    result = run_bin("classify", "--live", broken, "--report", out / "report")
    assert result.returncode != 0 and "broken.mp4: cannot be opened" in result.stderr
    result = run_bin("classify", "--live", broken, "--report", out / "report", "--json")
    assert result.returncode != 0 and "--json: not with --live" in result.stderr
    result = run_bin("classify", broken, "--report", out / "report", "--window", "2")
    assert result.returncode != 0 and "--window: only with --live SOURCE" in result.stderr
    result = run_bin("classify", "--live", broken, "--report", out / "report", "--sample-fps", "0")
    assert result.returncode != 0 and "--sample-fps 0: must be a positive" in result.stderr
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):  # (as on the CI machine)
        video = out / "synthetic" / json.loads((out / "synthetic" / "synth.json").read_text())["clips"][0]["video"]
        result = run_bin("classify", "--live", video, "--report", out / "report", "--preview")
        assert result.returncode != 0 and "--preview: no display here" in result.stderr and not result.stdout
