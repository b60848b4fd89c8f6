"""Training a stream (streams.train): resume, schedules, checkpoints; faults named, inputs checked before epoch 1."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal

import numpy as np
import pytest
import torch

from preprocess import DataError
from preprocess.dataset import load_manifest
from tests.conftest import FAST_FLOW, TINY, run_bin, work_copy


def test_resuming_with_more_epochs_continues_the_longer_schedule(tiny_work, tmp_path):
    from streams.train import train

    def lrs(run):
        return [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    base = {"stream": "pose", "work": str(tiny_work), "frames": 8, "patience": 10, **TINY}
    train({**base, "epochs": 2, "run": str(tmp_path / "a")}, log=lambda *_: None)
    train({**base, "epochs": 4, "run": str(tmp_path / "a")}, log=lambda *_: None)  # resumed, longer
    train({**base, "epochs": 4, "run": str(tmp_path / "b")}, log=lambda *_: None)  # uninterrupted
    # the added epochs follow the 4-epoch schedule (a restored 2-epoch cosine climbs back: 0.0005, 0.001)
    assert lrs(tmp_path / "a")[2:] == pytest.approx(lrs(tmp_path / "b")[2:], rel=1e-12)
    assert lrs(tmp_path / "a")[3] < lrs(tmp_path / "a")[2]


def test_a_checkpoint_that_cannot_be_written_is_a_named_error_and_the_old_one_stays(tmp_path):
    # a file-size limit stands in for a full disk (both fail the write with an errno: EFBIG, ENOSPC)

    import torch

    from streams.train import save_checkpoint

    path = tmp_path / "last.pt"
    path.write_bytes(b"the previous checkpoint")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(DataError) as caught:
            save_checkpoint(path, model={"w": torch.zeros(1 << 16)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert str(caught.value) == f"{path}: cannot write: file too large"
    assert path.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no partial file left


def test_a_second_training_of_one_run_is_refused_while_the_first_holds_it(tiny_work, tmp_path):
    from preprocess.batch import folder_lock

    run = tmp_path / "run"
    with folder_lock(run, "bin/train"):
        with (
            pytest.raises(DataError, match=r"bin/train \(pid \d+\) is writing this folder"),
            folder_lock(run, "bin/train"),
        ):
            pass
        with folder_lock(run, "bin/crossval"):  # another command's lock: crossval writes other files of RUN
            pass
        from streams.train import train

        config = {"stream": "pose", "work": str(tiny_work), "run": str(run), "epochs": 1, "min_epoch_clips": 1}
        with pytest.raises(DataError, match=rf"{run}: bin/train \(pid {os.getpid()}\) is writing this folder"):
            train(config, log=lambda *_: None)
        assert not (run / "config.json").exists()
    with folder_lock(run, "bin/train"):  # released with the block (and with the process, whatever ends it)
        pass


def flow_work_copy(tiny_work, root):
    """The tiny work directory's manifest and flow, copied where a test may change them."""
    shutil.copytree(tiny_work, root, ignore=shutil.ignore_patterns("frames", "pose", "gt_coco.json"))
    return root


def test_resume_survives_moving_the_run_and_work_folders_and_saves_every_generator(tiny_work, tmp_path):

    from streams.checkpoints import load_checkpoint
    from streams.train import train

    quiet = lambda *_: None  # noqa: E731
    whole = {**FAST_FLOW, "epochs": 3, "work": str(tiny_work), "run": str(tmp_path / "whole")}
    train(whole, log=quiet)
    train({**whole, "epochs": 2, "run": str(tmp_path / "first")}, log=quiet)
    state = load_checkpoint(tmp_path / "first" / "last.pt")["rng"]
    assert set(state) == {"torch", "cuda", "numpy", "python"}  # not the CPU generator alone
    # Both folders move (a new disk, a cluster's scratch): the data is the same, so the run resumes.
    (tmp_path / "first").rename(tmp_path / "moved")
    moved_work = flow_work_copy(tiny_work, tmp_path / "moved_work")
    lines = []
    train({**whole, "work": str(moved_work), "run": str(tmp_path / "moved")}, log=lines.append)
    assert any("resuming" in line and "after epoch 2" in line for line in lines)
    with np.load(tmp_path / "whole" / "scores_test.npz") as a, np.load(tmp_path / "moved" / "scores_test.npz") as b:
        assert np.array_equal(a["probs"], b["probs"])
    assert torch.is_tensor(state["torch"])


def test_a_nan_in_a_flow_file_stops_training_and_names_the_video(tiny_work, tmp_path):
    work = flow_work_copy(tiny_work, tmp_path / "work")
    video = load_manifest(work).by_split("train")[0].video_id
    side = work / "flow" / f"{video}.json"
    meta = json.loads(side.read_text())
    flow = np.full(meta["shape"], np.nan, np.float16)  # a float16 flow file gone bad
    np.save(work / "flow" / f"{video}.npy", flow)
    meta.update(dtype="float16", params={**meta["params"], "storage": "float16", "bound": None})
    side.write_text(json.dumps(meta))
    args = [f"--{k.replace('_', '-')}={v}" for k, v in FAST_FLOW.items() if k != "stream"]
    result = run_bin("train", "flow", work, tmp_path / "run", *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "training loss is nan" in result.stderr and video in result.stderr
    assert not (tmp_path / "run" / "scores_test.npz").exists()  # no result made of NaN


def test_checkpoint_faults_are_named_one_line_errors(tiny_work, tmp_path):

    from streams.train import train

    run = tmp_path / "run"
    train({**FAST_FLOW, "epochs": 1, "work": str(tiny_work), "run": str(run)}, log=lambda *_: None)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in FAST_FLOW.items() if k != "stream"]
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[:5000])  # a copy cut short
    result = run_bin("train", "flow", tiny_work, run, *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{last}: truncated or not a PyTorch checkpoint" in result.stderr

    class Payload:  # what a malicious or foreign checkpoint carries: code to run at load time
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "x": Payload()}, evil)
    result = run_bin("train", "flow", tiny_work, tmp_path / "run2", *args, "--init", evil)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{evil}: not a weights-only checkpoint" in result.stderr and "weights_only=False" not in result.stderr
    assert not (tmp_path / "ran").exists()


# issue 33, case 19
# 19. The logged learning rate is the one the epoch trained at
def test_the_logged_learning_rate_is_the_epochs_own(tiny_work, tmp_path):
    from streams.train import train

    config = {**FAST_FLOW, "epochs": 2, "patience": 5, "work": str(tiny_work), "run": str(tmp_path / "run")}
    train(config, log=lambda *_: None)
    rates = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    start = json.loads((tmp_path / "run" / "config.json").read_text())["lr"]
    assert rates[0] == pytest.approx(start) and rates[-1] > 0  # cosine over 2 epochs: start, then half of it
    assert rates[1] == pytest.approx(start / 2)


# issue 33, case 10
# 10. A truncated flow file: named before the first epoch, not after the whole training
def test_a_truncated_input_is_named_before_training(tiny_work, tmp_path):
    from preprocess import load_manifest

    work = work_copy(tiny_work, tmp_path, "flow")
    video = load_manifest(work).by_split("train")[0].video_id
    path = work / "flow" / f"{video}.npy"
    path.write_bytes(path.read_bytes()[:-100])
    args = ["--preset", "small", "--size", "48", "--stack", "3", "--epochs", "1", "--min-epoch-clips", "1"]
    result = run_bin("train", "flow", work, tmp_path / "run", *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{video}.npy: truncated or padded" in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no epoch ran
