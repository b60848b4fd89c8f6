"""Batch behaviour shared by every preprocessor: a bad video fails by name, the rest completes, the summary says so."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from preprocess.batch import DataError, Task, default_workers, parse_shard, run_batch, shard_videos, write_sidecar
from preprocess.dataset import Manifest, ingest
from tests.conftest import KEEP, REPO, run_bin, shared_asset, small_dataset, work_copy


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


def test_outputs_honour_the_umask_and_a_killed_runs_temp_files_are_cleared(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    work = tmp_path / "work"
    ingest(data).save(work)
    (work / "frames").mkdir()
    leftover = work / "frames" / ".partial.ballet_0000.npy.k1ll3d0.npy"  # what a run killed mid-write leaves
    leftover.write_bytes(b"half a file")
    other = work / "frames" / "notes.txt"  # not ours: stays
    other.write_text("keep")
    result = subprocess.run(
        [sys.executable, str(REPO / "bin" / "preprocess"), "frames", work, work, "--resize", "short:48", *KEEP],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert result.returncode == 0, result.stderr
    assert not leftover.exists() and other.exists()
    for path in [work / "frames" / "ballet_0000.npy", work / "frames" / "ballet_0000.json", work / "manifest.json"]:
        assert oct(path.stat().st_mode & 0o777) == "0o644", path  # mkstemp's 0600 hid them from collaborators
    assert oct((work / "frames" / "summary.json").stat().st_mode & 0o777) == "0o644"


def _limit_file_size():
    os.umask(0o022)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


def test_a_full_disk_names_the_file_and_the_batch_goes_on(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    work = tmp_path / "work"
    ingest(data).save(work)
    result = subprocess.run(
        [sys.executable, str(REPO / "bin" / "preprocess"), "frames", work, work, "--resize", "none", *KEEP],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 6 and all("cannot write: file too large" in line for line in failed)
    assert str(work / "frames" / "ballet_0000.npy") in result.stderr
    assert json.loads((work / "frames" / "summary.json").read_text())["counts"]["failed"] == 6


def crash_on_tango_0001(video, out_dir, params):
    """A task whose native code dies on one video, as a decoder's segfault does."""
    if video.video_id == "tango_0001":
        os.kill(os.getpid(), signal.SIGSEGV)
    write_sidecar(out_dir, video, params)
    (out_dir / f"{video.video_id}.txt").write_text("done")
    return 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_that_dies_fails_its_video_not_the_batch(tiny_synth, tmp_path, workers):
    data = small_dataset(tiny_synth, tmp_path / "data")
    manifest = ingest(data)
    task = Task(name="crashy", params={"v": 1}, run=crash_on_tango_0001, data_suffix=".txt")
    summary = run_batch(task, manifest, tmp_path / "work", workers=workers)
    assert sorted(summary.done) == sorted(v.video_id for v in manifest.videos if v.video_id != "tango_0001")
    assert [f["video_id"] for f in summary.failed] == ["tango_0001"]
    assert "worker process died" in summary.failed[0]["error"]


def test_truncated_or_corrupt_outputs_are_not_done_and_verify_lists_them(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    work = tmp_path / "work"
    manifest = ingest(data)
    manifest.save(work)
    two = Manifest(manifest.root, manifest.classes, manifest.videos[:2])
    two.save(work)
    from preprocess.dataset.synthetic import groundtruth_as_coco
    from preprocess.flow import FarnebackParams, flow_params, flow_task
    from preprocess.pose.importers import import_pose

    flow = flow_task(flow_params(FarnebackParams(), resize="short:48"))
    run_batch(flow, two, work)
    coco = groundtruth_as_coco(tiny_synth, tmp_path / "gt.json")
    import_pose("coco", str(coco), two, str(work), max_persons=4)
    assert run_bin("preprocess", "verify", work).returncode == 0
    first, second = (v.video_id for v in two.videos)
    npy = work / "flow" / f"{first}.npy"
    npy.write_bytes(npy.read_bytes()[:-100])  # a copy cut short
    npz = work / "pose" / f"{second}.npz"
    raw = bytearray(npz.read_bytes())
    with zipfile.ZipFile(npz) as archive:
        info = archive.getinfo("keypoints.npy")
    raw[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # one flipped byte inside keypoints
    npz.write_bytes(bytes(raw))
    sidecar = work / "pose" / f"{first}.json"
    sidecar.write_text(sidecar.read_text()[:40])  # a sidecar cut short
    result = run_bin("preprocess", "verify", work)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    bad = [line for line in result.stderr.splitlines() if line.startswith("bad ")]
    assert len(bad) == 3  # (stage by stage, in the registry's dependency order: pose first)
    assert any(str(npy) in line and "truncated" in line for line in bad)
    assert any(str(sidecar) in line and "not valid JSON" in line for line in bad)
    assert any(str(npz) in line and "CRC" in line for line in bad)
    summary = run_batch(flow, two, work)  # a rerun redoes the truncated file instead of trusting its sidecar
    assert summary.done == [first] and summary.skipped == [second]


def test_preprocess_on_a_dataset_reports_skipped_inputs_and_fails_unless_allowed(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    (data / "tango" / "broken.mp4").write_bytes(b"not a video")
    result = run_bin("preprocess", "frames", data, tmp_path / "work", "--resize", "short:48", *KEEP)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"skipped {data / 'tango' / 'broken.mp4'}" in result.stderr and "6 done" in result.stdout
    assert "--allow-skipped" in result.stderr
    again = run_bin("preprocess", "frames", data, tmp_path / "work", "--resize", "short:48", *KEEP, "--allow-skipped")
    assert again.returncode == 0 and "broken.mp4" in again.stderr and "6 already done" in again.stdout
    on_work = run_bin("preprocess", "frames", tmp_path / "work", tmp_path / "work", "--resize", "short:48", *KEEP)
    assert on_work.returncode == 0  # a work directory's manifest was already accepted: nothing newly skipped


def test_broken_and_deeply_nested_json_is_a_named_error(tmp_path):
    from preprocess.batch import read_json

    (tmp_path / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply") as caught:
        read_json(tmp_path / "nested.json")
    assert str(tmp_path / "nested.json") in str(caught.value)
    (tmp_path / "cut.json").write_text('{"params": {"version": 2, "bou')
    with pytest.raises(DataError, match="not valid JSON"):
        read_json(tmp_path / "cut.json")
    work = tmp_path / "work"
    (work / "flow").mkdir(parents=True)
    (work / "manifest.json").write_text("[" * 100_000)
    result = run_bin("preprocess", "verify", work)
    assert result.returncode == 1 and "manifest.json: not a valid manifest" in result.stderr
    assert "Traceback" not in result.stderr


# issue 33, case 14
# 14. Two preprocessing runs of one stage folder at once: the second is refused by name
def test_one_writer_per_stage_folder(tiny_work, tmp_path):
    from preprocess import load_manifest
    from preprocess.batch import folder_lock, run_batch
    from preprocess.flow import FarnebackParams, flow_params, flow_task

    work = work_copy(tiny_work, tmp_path)
    task = flow_task(flow_params(FarnebackParams(), resize="none"))
    held = folder_lock(work / "flow", "preprocess flow shard 0 of 1")  # (as a first run holds it)
    with held, pytest.raises(DataError, match="is writing this folder"):
        run_batch(task, load_manifest(work), work, workers=1)
    first = [load_manifest(work).videos[0].video_id]
    summary = run_batch(task, load_manifest(work), work, workers=1, video_ids=first)
    assert len(summary.done) == 1  # once it is free


# issue 33, case 16
# 16. Preprocessing a manifest into another work directory: the manifest goes with it
def test_a_manifest_preprocessed_elsewhere_is_copied_into_work(tiny_work, tmp_path):
    work = work_copy(tiny_work, tmp_path)
    result = run_bin(
        "preprocess", "frames", work / "manifest.json", tmp_path / "out", "--resize", "short:32", "--background", "keep"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").is_file()
    status = run_bin("preprocess", "status", tmp_path / "out")
    assert status.returncode == 0 and "frames: 30 done" in status.stdout, status.stdout + status.stderr


ORPHANED_WORKER = """
import sys
import time

if __name__ == "__mp_main__":
    time.sleep(1.0)  # a worker importing its command's modules, as every pool worker does before it unpickles its job

from preprocess.batch.pool import worker_context


def refuse():
    raise ValueError("a job that cannot be unpickled")


class Unpicklable:
    def __reduce__(self):
        return refuse, ()


if __name__ == "__main__":
    context = worker_context()
    lock = context.Lock()
    context.Process(target=print, args=(lock,)).start()
    context.Process(target=print, args=(Unpicklable(),)).start()  # any other start-up failure is still printed
    # The command ends (SIGTERM while its pool starts): leaving, it unlinks the lock the worker has yet to unpickle.
    sys.exit(143)
"""


# issue 33, case 9
def test_a_worker_whose_command_ended_before_it_started_prints_no_traceback(tmp_path):
    script = tmp_path / "orphan.py"
    script.write_text(ORPHANED_WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 143
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert "ValueError: a job that cannot be unpickled" in result.stderr
    assert "FileNotFoundError" not in result.stderr
