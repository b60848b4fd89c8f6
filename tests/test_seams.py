"""Hardening the seams (issue 21, the cases done so far): options checked when a command starts, a hand-edited
fusion file checked field by field, a CSV with a byte-order mark, outputs that are not regular files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import REPO, run_bin
from test_fusion import CLASSES, write_run

from fusion.report import load_fusion, run_ablation
from preprocess.batch import DataError
from streams.registry import OptionError, resolve_config


@pytest.mark.parametrize(
    "stream, options, message",
    [
        ("pose", {"arch": "3d"}, "--arch 3d: the pose-tcn stream does not take it"),  # 11
        ("pose", {"dropout": 1.5}, "--dropout 1.5: must be below 1"),
        ("pose", {"sample_fps": 0.0}, "--sample-fps 0.0: must be at least"),  # 12
        ("pose", {"sample_fps": -3.0}, "--sample-fps -3.0: must be at least"),
        ("pose", {"sample_fps": float("nan")}, "--sample-fps nan: not a finite number"),
        ("pose", {"epochs": 0}, "--epochs 0: must be at least 1"),  # 13
        ("pose", {"epochs": -1}, "--epochs -1: must be at least 1"),
        ("pose", {"frames": 0}, "--frames 0: must be at least 1"),  # 14
        ("rgb", {"arch": "3d", "clip_len": 0}, "--clip-len 0: must be at least 1"),
        ("flow", {"views": 0}, "--views 0: must be at least 1"),
    ],
)
def test_options_are_checked_by_name_before_anything_is_written(tiny_work, tmp_path, stream, options, message):
    from streams.train import train

    run = tmp_path / "run"
    with pytest.raises(OptionError) as err:
        train({"stream": stream, "work": str(tiny_work), "run": str(run), **options}, given=set(options))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not run.exists()  # no config.json left behind


@pytest.fixture(scope="module")
def fused_once(tiny_work, tmp_path_factory):
    """Two run folders as bin/train leaves them (config, best.pt, score files) and a weighted fusion of them."""
    tmp_path = tmp_path_factory.mktemp("fused")
    rng = np.random.default_rng(0)
    classes = CLASSES[:4]
    for split, n in (("val", 40), ("test", 30)):
        labels = rng.integers(0, 4, n)  # the same videos and labels in every stream
        for stream in ("flow", "pose"):
            p = rng.dirichlet(np.ones(4), n)
            p[np.arange(n), labels] += 0.6
            ids = [f"{split}{i}" for i in range(n)]
            write_run(tmp_path / stream, stream, split, p / p.sum(1, keepdims=True), labels, ids, classes, tiny_work)
    for stream in ("flow", "pose"):
        config = resolve_config({"stream": stream, "work": str(tiny_work), "run": str(tmp_path / stream)})
        (tmp_path / stream / "config.json").write_text(json.dumps(config))
        (tmp_path / stream / "best.pt").write_bytes(b"")
    run_ablation([tmp_path / "flow", tmp_path / "pose"], tmp_path / "report", methods=("weighted",), resamples=20)
    return tmp_path / "report"


@pytest.fixture()
def fused(fused_once):
    """The fusion report, its fusion.json as bin/fuse wrote it again after each test."""
    path = fused_once / "fusion.json"
    original = path.read_text()
    yield fused_once
    path.write_text(original)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.update(weights=[float("nan"), 0.5]), "weights: [nan, 0.5] must be finite"),  # 7
        (lambda f: f.update(calibrate=True, temperatures={"flow": 0.0, "pose": 1.0}), "temperatures.flow: 0.0"),
        (lambda f: f.update(calibrate=True, temperatures={}), "temperatures: one per stream"),  # 10
        (lambda f: f.update(weights=[1.5, -0.5]), "weights: [1.5, -0.5] must be finite, not negative"),  # 8
        (lambda f: f.update(weights=[0.2, 0.3, 0.5]), "weights: [0.2, 0.3, 0.5] is not one weight per stream"),
        (lambda f: f["runs"].update(flow=f["runs"]["pose"]), "runs.flow: "),  # 9
        (lambda f: f.update(classes=f["classes"][::-1]), "classes: "),  # 10
        (lambda f: f.update(classes=f["classes"][:2]), "classes: "),
        (lambda f: f.update(method="median"), "method: 'median' is not one of"),
    ],
)
def test_a_hand_edited_fusion_file_is_checked_field_by_field(fused, edit, message):
    path = fused / "fusion.json"
    load_fusion(fused)  # as bin/fuse wrote it: fine
    fitted = json.loads(path.read_text())
    edit(fitted)
    path.write_text(json.dumps(fitted))
    with pytest.raises(DataError) as err:
        load_fusion(fused)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_a_csv_with_a_byte_order_mark_is_read(tiny_synth, tmp_path):
    from preprocess.dataset import ingest

    text = (tiny_synth / "dataset.csv").read_text(encoding="utf-8")
    rows = [line.split(",") for line in text.splitlines()]
    absolute = [",".join([str((tiny_synth / r[0]).resolve()), *r[1:]]) for r in rows if r[0] != "path"]
    csv = tmp_path / "b.csv"
    csv.write_text("\ufeffpath,label,group\n" + "\n".join(absolute) + "\n", encoding="utf-8")  # Excel's CSV
    assert len(ingest(csv, seed=0).videos) == len(absolute)


def test_outputs_that_are_not_regular_files_are_refused_and_fit_on_oof_names_crossval(fused, tmp_path):
    runs = fused.parent
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    result = run_bin("export-scores", runs / "flow", pipe)
    assert result.returncode == 1 and f"{pipe}: exists and is not a regular file" in result.stderr
    assert pipe.exists() and not pipe.is_file()  # left as it was
    result = run_bin("fuse", runs / "flow", runs / "pose", "--out", tmp_path / "r2", "--fit-on", "oof")
    assert result.returncode == 1 and "bin/crossval" in result.stderr and "Traceback" not in result.stderr


def test_the_best_command_line_keeps_every_digit():
    from streams.tune import command_line

    line = command_line("pose", "W", "R", {"lr": 0.0027895123456789, "head": "lstm"})
    assert "--lr 0.0027895123456789" in line and "--head lstm" in line


def test_labels_that_differ_only_in_case_are_refused_by_name(tiny_synth, tmp_path):
    from preprocess.dataset import ingest

    rows = [line.split(",") for line in (tiny_synth / "dataset.csv").read_text().splitlines() if line][1:]
    # ballet clips labelled "Ballet" and "ballet", half each
    lines = [f"{(tiny_synth / r[0]).resolve()},{'Ballet' if r[1] == 'ballet' and k % 2 else r[1]}" for k, r in
             enumerate(rows)]  # fmt: skip
    csv = tmp_path / "cased.csv"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels that differ only in case: 'Ballet' and 'ballet'"):
        ingest(csv, seed=0)


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


def test_a_checkpoint_that_cannot_be_written_is_a_named_error_and_the_old_one_stays(tmp_path):
    # a file-size limit stands in for a full disk (both fail the write with an errno: EFBIG, ENOSPC)
    import resource
    import signal

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


def test_a_fuse_killed_halfway_leaves_the_previous_report_whole(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from test_fusion import make_runs

    runs = make_runs(tmp_path / "runs")
    report = tmp_path / "report"
    (report).mkdir()
    (report / "notes.txt").write_text("mine")
    run_ablation([runs[0]], report, resamples=200)
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    assert json.loads((report / "ablation.json").read_text())["streams"] == ["rgb"] and "notes.txt" in before
    assert "confusion_rgb.png" in before
    errors = tmp_path / "fuse.err"
    with open(errors, "w") as err:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "bin" / "fuse"), *map(str, runs), "--out", str(report), "--bootstrap", "20000"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + 600  # a busy machine takes its time to import
    while not list(tmp_path.glob(".partial.report.*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # midway through the three-stream report (20,000 resamples per row take far longer)
    assert process.poll() is None, f"bin/fuse ended before it could be killed: {errors.read_text()[-2000:]}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".partial.report.*"))
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before  # untouched, whole
    # the next run clears what the killed one left and swaps its report in whole, the user's file kept
    run_ablation(runs[1:], report, resamples=200, methods=("mean", "weighted"))
    assert not list(tmp_path.glob(".partial.report.*"))
    assert json.loads((report / "ablation.json").read_text())["streams"] == ["flow", "pose"]
    assert sorted(json.loads((report / "fusion.json").read_text())["runs"]) == ["flow", "pose"]
    assert not (report / "confusion_rgb.png").exists()  # nothing of the previous report left in the new one
    assert (report / "notes.txt").read_text() == "mine"


def test_classify_takes_any_file_name_and_names_folders_and_urls(tiny_synth, tmp_path):
    import shutil

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
