"""Bad input and faults: each gets one line naming the file and the problem, never a traceback; a batch goes on
past a bad video and exits non-zero; nothing is written outside WORK; what is marked done is whole."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from preprocess.batch import DataError, Task, run_batch, write_sidecar
from preprocess.dataset import Manifest, ingest, load_manifest
from tests.conftest import REPO, run_bin

KEEP = ["--background", "keep"]  # frames as decoded: these work folders have no pose (the default dims)


def small_dataset(tiny_synth, root, styles=("ballet", "tango")):
    """Three clips of each of two styles of the tiny preset, as a folder per class."""
    for style in styles:
        (root / style).mkdir(parents=True)
        for video in sorted((tiny_synth / "videos" / style).glob("*.mp4")):
            shutil.copy(video, root / style / video.name)
    return root


def test_a_file_name_that_is_not_utf8_is_skipped_by_name_not_a_segfault(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    shutil.copy(data / "ballet" / "ballet_0000.mp4", os.fsencode(data / "ballet") + b"/bad\xff.mp4")
    result = run_bin("ingest", data, tmp_path / "work")  # OpenCV segfaulted on this name (exit -11)
    assert result.returncode == 0, result.stderr
    named = [line for line in result.stderr.splitlines() if "bad\\udcff.mp4" in line]
    assert len(named) == 1 and "not valid UTF-8" in named[0]
    assert "6 videos, 2 classes" in result.stdout


def test_unsafe_video_ids_are_refused_at_ingest_and_at_load(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    hidden = data / "tango" / ".tango_9.mp4"
    shutil.copy(data / "tango" / "tango_0000.mp4", hidden)
    rows = [f"{p.relative_to(data)},{p.parent.name}" for p in sorted(data.rglob("*.mp4")) if p != hidden]
    rows.append(f"{hidden.relative_to(data)},tango")
    (data / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    manifest = ingest(data / "list.csv")
    assert ".tango_9" not in {v.video_id for v in manifest.videos}
    assert any(".tango_9" in s["problem"] and "not a safe file name" in s["problem"] for s in manifest.skipped)
    # A crafted manifest: its id would make every stage write (and the runner delete) files outside WORK.
    work = tmp_path / "work"
    manifest.save(work)
    crafted = json.loads((work / "manifest.json").read_text())
    crafted["videos"][0]["video_id"] = "../../escape"
    (work / "manifest.json").write_text(json.dumps(crafted))
    with pytest.raises(DataError, match="not a safe file name"):
        load_manifest(work)
    result = run_bin("preprocess", "frames", work, work, *KEEP)
    assert result.returncode == 1 and "not a safe file name" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "escape.npy").exists() and not (work.parent / "escape.json").exists()


def test_invalid_group_regex_and_one_class_datasets_are_named_errors(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    result = run_bin("ingest", data, tmp_path / "work", "--group-regex", "(p\\d+")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--group-regex '(p\\\\d+'" in result.stderr and "not a valid regular expression" in result.stderr
    one = small_dataset(tiny_synth, tmp_path / "one", styles=("waltz",))
    result = run_bin("ingest", one, tmp_path / "work1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "only one usable class (waltz): a classifier needs at least two" in result.stderr


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


def test_importers_refuse_non_finite_and_absurd_skeletons_by_file(tiny_synth, tmp_path):
    work = tmp_path / "work"
    ingest(tiny_synth / "dataset.csv").save(work)
    video = "ballet_0000"
    folder = tmp_path / "openpose" / video
    folder.mkdir(parents=True)

    def write(frame, x=10.0, conf=0.9, raw=None):
        flat = [x, 20.0, conf] * 25
        text = raw if raw is not None else json.dumps({"people": [{"pose_keypoints_2d": flat}]})
        (folder / f"{video}_{frame:012d}_keypoints.json").write_text(text)

    write(0)
    write(1, x=float("nan"))  # written by json.dumps as NaN, which Python's json reads back
    write(2, raw='{"people": [{"pose_keypoints_2d": [' + ", ".join(["1e308", "5", "0.5"] * 25) + "]}]}")
    write(3, conf=-0.5)
    write(4, raw='{"people": [{"pose_keypoints_2d": [' + ", ".join(['"NaN"', "5", "0.5"] * 25) + "]}]}")
    result = run_bin("preprocess", "import-pose", "openpose", tmp_path / "openpose", work / "manifest.json", work)
    assert result.returncode == 1 and "Traceback" not in result.stderr  # the good frames imported, the bad listed
    for frame, why in ((1, "not finite"), (2, "not finite"), (3, "negative confidence"), (4, "not finite")):
        line = next(x for x in result.stderr.splitlines() if f"{frame:012d}_keypoints.json" in x)
        assert why in line, line
    from preprocess.pose import load_pose

    pose = load_pose(work, video)
    assert np.isfinite(pose["keypoints"]).all() and pose["mask"][0].any() and not pose["mask"][1:5].any()


def test_coco_schema_errors_are_named_problems_not_tracebacks(tiny_synth, tmp_path):
    work = tmp_path / "work"
    ingest(tiny_synth / "dataset.csv").save(work)
    coco = {
        "images": [{"id": 1, "file_name": "ballet_0000/00000.jpg"}, {"file_name": "no id"}, "not a record"],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "keypoints": [1, 2, 2] * 17},
            {"id": 8, "image_id": 1, "category_id": 1},  # no keypoints
            {"id": 9, "image_id": 1, "category_id": 1, "keypoints": [1, 2]},  # wrong length
            {"id": 10, "image_id": 1, "category_id": 1, "keypoints": [1, 2, 5] * 17},  # visibility 5
            17,
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    result = run_bin("preprocess", "import-pose", "coco", tmp_path / "coco.json", work / "manifest.json", work)
    assert result.returncode == 1 and "Traceback" not in result.stderr  # what could be imported is; problems fail it
    for what in (
        "image 1 is not a COCO image record",
        "image 2 is not",
        "annotation 8",
        "annotation 9",
        "annotation 10",
        "annotation 4",
    ):
        assert what in result.stderr, what
    (tmp_path / "bad.json").write_text(json.dumps({"images": [], "annotations": {"not": "a list"}}))
    result = run_bin("preprocess", "import-pose", "coco", tmp_path / "bad.json", work / "manifest.json", work)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "not a COCO keypoint file" in result.stderr


FAST_FLOW = {
    "stream": "flow",
    "preset": "small",
    "epochs": 2,
    "batch_size": 8,
    "size": 48,
    "segments": 2,
    "stack": 3,
    "views": 1,
    "min_epoch_clips": 1,
}


def flow_work_copy(tiny_work, root):
    """The tiny work directory's manifest and flow, copied where a test may change them."""
    shutil.copytree(tiny_work, root, ignore=shutil.ignore_patterns("frames", "pose", "gt_coco.json"))
    return root


def test_resume_survives_moving_the_run_and_work_folders_and_saves_every_generator(tiny_work, tmp_path):
    import torch

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
    import torch

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


def test_fusion_of_one_run_classify_and_broken_or_non_finite_scores(tiny_synth, tiny_work, tmp_path):
    import torch

    from streams.train import train

    run = tmp_path / "flow"
    train({**FAST_FLOW, "work": str(tiny_work), "run": str(run)}, log=lambda *_: None)
    result = run_bin("fuse", run, "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    assert "nothing was fused: one run given (flow)" in result.stdout
    assert "One stream given (flow): nothing was fused" in (tmp_path / "report" / "ablation.md").read_text()
    video = next((tiny_synth / "videos" / "waltz").glob("*.mp4"))
    answer = run_bin("classify", video, "--report", tmp_path / "report", "--json")
    assert answer.returncode == 0, answer.stderr  # classify works from a one-stream report
    flow_probs = json.loads(answer.stdout)[0]["streams"]["flow"]
    assert json.loads(answer.stdout)[0]["fused"] == pytest.approx(flow_probs)  # passed through unchanged

    # A diverged model gives NaN scores: classify names the video instead of printing "ballet (nan%)".
    best = torch.load(run / "best.pt", weights_only=True)
    best["model"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in best["model"].items()}
    torch.save(best, run / "best.pt")
    answer = run_bin("classify", video, "--report", tmp_path / "report")
    assert answer.returncode == 1 and "Traceback" not in answer.stderr and "nan%" not in answer.stdout
    assert f"{video}: the flow stream gives non-finite scores" in answer.stderr

    # Scores on disk: NaN, a truncated file, a broken fusion.json.
    scores = dict(np.load(run / "scores_val.npz"))
    scores["probs"][0] = np.nan
    np.savez(run / "scores_val.npz", **scores)
    result = run_bin("fuse", run, "--out", tmp_path / "report2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{run / 'scores_val.npz'}: non-finite scores for 1 videos ({scores['video_ids'][0]})" in result.stderr
    test_scores = run / "scores_test.npz"
    test_scores.write_bytes(test_scores.read_bytes()[:300])
    scores["probs"][0] = 0.1
    np.savez(run / "scores_val.npz", **scores)
    result = run_bin("fuse", run, "--out", tmp_path / "report2")
    assert result.returncode == 1 and f"{test_scores}: not a whole score file" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "report" / "fusion.json").write_text('{"method": "mean", "clas')
    answer = run_bin("classify", video, "--report", tmp_path / "report")
    assert answer.returncode == 1 and "Traceback" not in answer.stderr
    assert f"{tmp_path / 'report' / 'fusion.json'}: not valid JSON" in answer.stderr
