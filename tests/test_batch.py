"""Batch behaviour shared by every preprocessor: a bad video fails by name, the rest completes, the summary says so."""

import json
import shutil

import pytest

from preprocess.batch import default_workers, parse_shard, shard_videos
from preprocess.dataset import ingest
from tests.conftest import run_bin, shared_asset


def test_parse_shard():
    assert parse_shard(None) == (0, 1) and parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "a/b", "3"):
        with pytest.raises(ValueError):
            parse_shard(bad)


@pytest.mark.parametrize("cores", [2, 16])
def test_a_gpu_stage_defaults_to_a_few_workers_per_gpu_not_one_per_core(monkeypatch, cores):
    import torch

    from preprocess.batch import runner
    from preprocess.flow.task import flow_task

    monkeypatch.setattr(runner, "available_cores", lambda: cores)  # the machine, not the code under test
    on_cpu = flow_task({"engine": "torch", "device": "cpu"})
    on_gpu = flow_task({"engine": "torch", "device": "cuda:1"})
    assert not on_cpu.gpu and on_gpu.gpu
    assert default_workers(on_cpu) == cores
    # the pool's workers all use the one device named: 4 of them, never more than there are cores
    assert default_workers(on_gpu) == min(cores, 4)
    # Ray's actors each take --gpus-per-worker of a GPU: 1/0.5 = 2 per GPU of this machine (at least one GPU)
    assert default_workers(on_gpu, "ray", 0.5) == min(cores, 2 * max(1, torch.cuda.device_count()))


def test_shards_partition_any_manifest(tiny_synth):
    videos = ingest(tiny_synth / "videos").videos
    for n in (1, 2, 4, 7, 40):
        parts = [shard_videos(videos, (i, n)) for i in range(n)]
        ids = [v.video_id for part in parts for v in part]
        assert sorted(ids) == sorted(v.video_id for v in videos) and len(ids) == len(set(ids))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize(
    "stage, extra",
    [
        ("flow", ["--resize", "short:48"]),
        ("frames", ["--resize", "short:48", "--background", "keep"]),
        ("pose", ["--model", "models/pose_landmarker_full.task"]),
    ],
)
def test_a_bad_video_fails_by_name_and_the_rest_completes(tiny_synth, tmp_path, stage, extra):
    if stage == "pose":
        pytest.importorskip("mediapipe", reason="mediapipe is not installed")
        extra = ["--model", str(shared_asset(extra[1]))]
    data = tmp_path / "data"
    for style in ("ballet", "tango"):
        (data / style).mkdir(parents=True)
        for video in sorted((tiny_synth / "videos" / style).glob("*.mp4")):
            shutil.copy(video, data / style / video.name)
    work = tmp_path / "work"
    ingest(data).save(work)
    broken = data / "tango" / "tango_0001.mp4"
    broken.write_bytes(b"garbage" * 100)  # breaks after ingest, as a disk or a copy might
    result = run_bin("preprocess", stage, work, work, "--workers", "2", *extra)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "5 done" in result.stdout and "1 failed" in result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1 and str(broken) in failed[0] and "cannot be opened" in failed[0]
    summary = json.loads((work / stage / "summary.json").read_text())
    assert summary["counts"] == {"done": 5, "skipped": 0, "failed": 1}
    assert summary["failed"][0]["video_id"] == "tango_0001" and str(broken) in summary["failed"][0]["error"]
    assert len(list((work / stage).glob("*_0*.json"))) == 5  # a sidecar for each finished video, none for the bad one
    rerun = run_bin("preprocess", stage, work, work, "--workers", "2", *extra)
    assert "0 done, 5 already done, 1 failed" in rerun.stdout  # nothing already done is lost or redone
