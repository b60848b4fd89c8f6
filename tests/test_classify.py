"""Classifying new videos (fusion.classify and bin/classify): stages in order, names, cautions, signals."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from preprocess.batch import DataError, run_batch
from preprocess.dataset import load_manifest
from tests.conftest import REPO, TINY, run_bin, shared_asset


def test_classify_runs_pose_before_the_flow_cropped_to_its_dancers(tiny_synth, tiny_work, tmp_path):
    from preprocess.flow import FarnebackParams, flow_params, flow_task
    from preprocess.pose import pose_params, pose_task
    from streams.run import Run
    from streams.train import train

    model = shared_asset("models/pose_landmarker_full.task")
    work = tmp_path / "w"
    manifest = load_manifest(tiny_work)
    manifest.save(work)
    params = pose_params(
        backend="mediapipe", model=str(model), model_sha256=hashlib.sha256(model.read_bytes()).hexdigest()
    )
    run_batch(pose_task(params), manifest, work, workers=2)
    crop = flow_params(FarnebackParams(), resize="none", crop="dancers", crop_size=32)
    run_batch(flow_task(crop), manifest, work, workers=2)
    run = tmp_path / "flow"
    flow = {"stream": "flow", "preset": "small", "size": 32, "segments": 1, "stack": 2}
    train({**flow, "work": str(work), "run": str(run), **TINY}, log=lambda *_: None)
    assert list(Run.load(run).stages) == ["pose", "flow"]  # what the run reads, dependencies first
    run_bin("fuse", run, "--out", tmp_path / "report", "--bootstrap", "50", check=True)
    video = next((tiny_synth / "videos" / "ballet").glob("*.mp4"))
    answer = run_bin("classify", video, "--report", tmp_path / "report", "--json")
    assert answer.returncode == 0, answer.stderr  # was: "--crop dancers needs the video's pose" for every video
    assert json.loads(answer.stdout)[0]["prediction"] in manifest.classes
    # the same function with its per-step seconds (bin/benchmark classify's figures): every step, in its order
    from fusion.classify import classify

    timings = {}
    results, failures = classify([str(video)], tmp_path / "report", tmp_path / "scratch", workers=1, timings=timings)
    assert failures == [] and results[0]["prediction"] == json.loads(answer.stdout)[0]["prediction"]
    steps = ["load (and check)", "stage pose", "stage flow", "flow networks loaded", "stream flow", "fusion"]
    assert list(timings) == steps and all(t >= 0 for t in timings.values()) and timings["stage flow"] > 0


def test_sigterm_unwinds_the_scratch_folder_as_bin_classify_holds_it(tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    script = textwrap.dedent(f"""
        import sys, tempfile, time
        sys.path.insert(0, {str(REPO)!r})
        from preprocess.cli import exit_on_terminate
        exit_on_terminate()
        with tempfile.TemporaryDirectory(prefix="classify-", dir={str(tmp_path)!r}) as scratch:
            open(scratch + "/frames.npy", "wb").write(bytes(1000))
            print(scratch, flush=True)
            time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    scratch = process.stdout.readline().strip()
    assert os.path.isdir(scratch)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert process.wait(timeout=30) == 128 + signal.SIGTERM and time.monotonic() - started < 10
    assert not os.path.exists(scratch) and list(tmp_path.iterdir()) == []


def test_classify_takes_any_file_name_and_names_folders_and_urls(tiny_synth, tmp_path):

    from fusion.classify import new_video_record
    from preprocess import Manifest

    clip = next((tiny_synth / "videos" / "waltz").glob("*.mp4"))
    odd = tmp_path / "my\nclip\x07.mp4"  # a newline and a bell in a downloaded file's name
    shutil.copy(clip, odd)
    hidden = tmp_path / ".hidden.mp4"
    shutil.copy(clip, hidden)
    records = [new_video_record(0, str(odd)), new_video_record(1, str(hidden))]
    assert records[0].video_id == "v0000_my_clip_" and records[0].source == str(odd.resolve())
    assert records[1].video_id == "v0001_hidden" and records[0].frame_count > 0
    Manifest(str(tmp_path), ["waltz"], records).save(tmp_path / "scratch")  # ids a manifest accepts
    with pytest.raises(DataError, match=r"a folder, not a video file"):
        new_video_record(2, str(tmp_path))
    with pytest.raises(DataError, match=r"^https://example.com/v.mp4: a URL: bin/classify reads local video files"):
        new_video_record(3, "https://example.com/v.mp4")


def test_classify_caution_rule_and_resize_policy_for_new_videos():
    from fusion.classify import caution
    from preprocess.stages import scratch_params

    sure = {"ballet": 0.8, "tango": 0.2}
    agree = {"rgb": {"ballet": 0.6, "tango": 0.4}, "flow": {"ballet": 0.9, "tango": 0.1}}
    assert caution(sure, agree) is None
    unsure = {"ballet": 0.45, "tango": 0.35, "waltz": 0.2}
    assert "45 % < 50 %" in caution(unsure, agree)
    split = {"rgb": {"ballet": 0.1, "tango": 0.9}, "flow": {"ballet": 0.2, "tango": 0.8}, "pose": sure}
    assert "only 1 of 3 streams put ballet first" in caution(sure, split)
    # a training resize of none means "the training videos' size", not "any size"
    assert scratch_params({"resize": "none", "offset": 1}, 120) == {"resize": "short:120", "offset": 1}
    assert scratch_params({"resize": "short:256"}, 120) == {"resize": "short:256"}
