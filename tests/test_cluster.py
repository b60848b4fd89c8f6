"""Running on a cluster: shards from SLURM/torchrun variables, the Ray executor equal to the process pool byte for
byte, and the status of a work folder merged over shards."""

import json
import shutil

import pytest

from preprocess.batch import parse_shard, run_batch, shard_videos
from preprocess.dataset import ingest
from preprocess.flow import FarnebackParams, flow_params, flow_task
from tests.conftest import run_bin


def test_shard_auto_reads_slurm_array_and_torchrun_variables(tiny_synth):
    slurm = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert parse_shard("auto", slurm) == (2, 3)  # arrays need not start at 0
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "5"}) == (0, 5)
    assert parse_shard("auto", {"RANK": "3", "WORLD_SIZE": "8"}) == (3, 8)
    assert parse_shard("auto", {"PATH": "/bin"}) == (0, 1)  # not launched as an array: the whole manifest
    with pytest.raises(ValueError):
        parse_shard("auto", {"RANK": "8", "WORLD_SIZE": "8"})
    videos = ingest(tiny_synth / "videos").videos
    array = [shard_videos(videos, parse_shard("auto", {"RANK": str(r), "WORLD_SIZE": "4"})) for r in range(4)]
    ids = [v.video_id for part in array for v in part]
    assert sorted(ids) == sorted(v.video_id for v in videos) and len(ids) == len(set(ids))


def _small_dataset(tiny_synth, tmp_path, per_style=2):
    data = tmp_path / "data"
    for style in ("ballet", "tango"):
        (data / style).mkdir(parents=True)
        for video in sorted((tiny_synth / "videos" / style).glob("*.mp4"))[:per_style]:
            shutil.copy(video, data / style / video.name)
    return data


def test_shard_auto_and_status_through_the_command(tiny_synth, tmp_path, monkeypatch):
    data = _small_dataset(tiny_synth, tmp_path)
    work = tmp_path / "work"
    manifest = ingest(data)
    manifest.save(work)
    (data / "tango" / "tango_0001.mp4").write_bytes(b"garbage")  # breaks after ingest
    for task_id in ("0", "1"):  # two of three array tasks ran; the third never started
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task_id)
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
        run_bin("preprocess", "flow", work, work, "--shard", "auto", "--resize", "short:48", "--workers", "1")
    assert {p.name for p in (work / "flow").glob("summary*.json")} == {"summary-0-of-3.json", "summary-1-of-3.json"}
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    result = run_bin("preprocess", "status", work)
    shards = [shard_videos(manifest.videos, (i, 3)) for i in range(3)]
    expected_missing = sorted(v.video_id for v in shards[2])
    failed = [v.video_id for part in shards[:2] for v in part if v.video_id == "tango_0001"]
    done = 4 - len(expected_missing) - len(failed)
    assert f"flow: {done} done, {len(failed)} failed, {len(expected_missing)} missing" in result.stdout, result.stdout
    for video_id in expected_missing:
        assert video_id in result.stdout
    assert result.returncode == 1  # not complete


def test_the_ray_executor_writes_what_the_process_pool_writes(tiny_synth, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'dance-streams[ray]')")
    data = _small_dataset(tiny_synth, tmp_path)
    manifest = ingest(data)
    (data / "ballet" / "ballet_0001.mp4").write_bytes(b"garbage")  # one video fails on both executors
    params = flow_params(FarnebackParams(), resize="short:48", storage="float16")
    pool = run_batch(flow_task(params), manifest, tmp_path / "pool", workers=2)
    ray = run_batch(flow_task(params), manifest, tmp_path / "ray", workers=2, executor="ray")
    assert sorted(pool.done) == sorted(ray.done) and len(ray.done) == 3
    assert [f["video_id"] for f in ray.failed] == ["ballet_0001"] == [f["video_id"] for f in pool.failed]
    assert ray.failed[0]["error"] == pool.failed[0]["error"]
    for video_id in ray.done:
        for suffix in (".npy", ".json"):
            a = (tmp_path / "pool" / "flow" / f"{video_id}{suffix}").read_bytes()
            assert a == (tmp_path / "ray" / "flow" / f"{video_id}{suffix}").read_bytes(), (video_id, suffix)
    again = run_batch(flow_task(params), manifest, tmp_path / "ray", workers=2, executor="ray")
    assert sorted(again.skipped) == sorted(ray.done) and not again.done  # resume is the same too
    summary = json.loads((tmp_path / "ray" / "flow" / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 3, "failed": 1}


def test_the_gpu_benchmark_says_when_there_is_no_gpu_and_still_gives_the_cpu_rows():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: bin/benchmark gpu takes minutes on it; run it by hand")
    result = run_bin("benchmark", "gpu", "--sizes", "96x64,128x96")
    assert result.returncode == 0, result.stderr
    assert "no GPU" in result.stdout and "pending" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| kernel |")]
    assert [row.split("|")[2].strip() for row in rows] == ["96x64", "128x96"]
    assert all(float(row.split("|")[5].split()[0]) > 0 for row in rows)  # a measured rate
    parity = [line for line in result.stdout.splitlines() if line.startswith("| parity |")]
    assert len(parity) == 1 and float(parity[0].split("mean")[1].split(",")[0]) < 0.002


def test_a_ray_worker_that_dies_fails_its_video_not_the_batch(tiny_synth, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'dance-streams[ray]')")
    from preprocess.batch import Task
    from tests.test_batch import crash_on_tango_0001

    manifest = ingest(_small_dataset(tiny_synth, tmp_path, per_style=3))
    task = Task(name="crashy", params={"v": 1}, run=crash_on_tango_0001, data_suffix=".txt")
    summary = run_batch(task, manifest, tmp_path / "work", workers=2, executor="ray")
    assert sorted(summary.done) == sorted(v.video_id for v in manifest.videos if v.video_id != "tango_0001")
    assert [f["video_id"] for f in summary.failed] == ["tango_0001"]
    assert "worker process died" in summary.failed[0]["error"]


def slow_and_watched(video, out_dir, params):
    """A task that marks which process took which video, then takes its time over it."""
    import os
    import time
    from pathlib import Path

    from preprocess.batch import write_sidecar

    (Path(params["marks"]) / f"{os.getpid()}.{video.video_id}").write_text("")
    time.sleep(params["seconds"])
    (out_dir / f"{video.video_id}.txt").write_text("done")
    write_sidecar(out_dir, video, params)
    return 1


def test_ray_workers_die_with_a_killed_driver_and_write_nothing_after(tiny_synth, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'dance-streams[ray]')")
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from preprocess.batch import Task
    from preprocess.dataset import load_manifest
    from tests.conftest import REPO

    work, marks = tmp_path / "work", tmp_path / "marks"
    marks.mkdir()
    ingest(_small_dataset(tiny_synth, tmp_path, per_style=3)).save(work)
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "from preprocess.batch import Task, run_batch\n"
            "from preprocess.dataset import load_manifest\n"
            "from tests.test_cluster import slow_and_watched\n"
            "task = Task(name='slow', params={'marks': sys.argv[3], 'seconds': 3.0}, run=slow_and_watched,"
            " data_suffix='.txt')\n"
            "run_batch(task, load_manifest(sys.argv[2]), sys.argv[2], workers=2, executor='ray')\n",
            str(REPO),
            str(work),
            str(marks),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while len(list(marks.iterdir())) < 4 and time.time() < deadline:  # both actors on their second video
        time.sleep(0.05)
    assert len(list(marks.iterdir())) >= 4, "the Ray batch did not start in 2 minutes"
    time.sleep(0.3)  # well inside both videos (3 s each): none is about to be written
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    killed = time.time()
    done_before = set((work / "slow").glob("*.txt"))
    workers = {int(mark.name.split(".")[0]) for mark in marks.iterdir()}

    def alive(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    while any(alive(pid) for pid in workers) and time.time() < killed + 5:
        time.sleep(0.05)
    gone_after = time.time() - killed
    assert gone_after < 1.2, f"Ray workers outlived their driver by {gone_after:.1f} s"
    time.sleep(max(0.0, killed + 3.5 - time.time()))  # past the in-flight videos' end
    assert set((work / "slow").glob("*.txt")) == done_before  # nothing written after the driver died
    # a rerun finishes the batch: what was done stays done, what the kill interrupted is redone
    task = Task(name="slow", params={"marks": str(marks), "seconds": 3.0}, run=slow_and_watched, data_suffix=".txt")
    rerun = run_batch(task, load_manifest(work), work, workers=2)
    assert not rerun.failed and len(rerun.skipped) == len(done_before) and len(rerun.done) == 6 - len(done_before)
