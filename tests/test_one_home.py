"""One home per concept (issue 19): the stream registry, ``Run``, typed stage outputs, and the defects the old shape
caused, each with a test that fails on 4cb95d1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import run_bin, shared_asset
from test_fusion import CLASSES, write_run

from fusion.report import run_ablation
from preprocess.batch import run_batch
from preprocess.dataset import load_manifest
from streams.registry import OptionError, create_dataset, resolve_config

TINY = {"epochs": 1, "batch_size": 8, "views": 1, "min_epoch_clips": 1}


def test_a_variant_takes_its_own_options_refuses_others_by_name_and_changes_no_value(tiny_work, tmp_path):
    pose = resolve_config({"stream": "pose", "head": "lstm", "dropout": 0.5})
    assert pose["variant"] == "pose-lstm" and pose["dropout"] == 0.5  # not capped at 0.3 behind the user's back
    assert resolve_config({"stream": "pose", "head": "stgcn", "pose_input": "bone"})["dropout"] == 0.1  # its default
    assert resolve_config({"stream": "rgb"})["dropout"] == 0.5 and "clip_len" not in resolve_config({"stream": "rgb"})
    with pytest.raises(OptionError, match=r"--clip-len 8: the pose-tcn stream does not take it"):
        resolve_config({"stream": "pose", "clip_len": 8}, given={"clip_len"})
    with pytest.raises(OptionError, match=r"--dropout 1.5: must be below 1"):
        resolve_config({"stream": "pose", "dropout": 1.5})
    result = run_bin("train", "pose", tiny_work, tmp_path / "r", "--arch", "3d")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--arch 3d: the pose-tcn stream does not take it" in result.stderr
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_crossval_and_train_name_a_stream_alike_and_a_mismatch_is_one_line(tiny_work, tmp_path):
    from streams.crossval import crossval

    config = {"stream": "pose", "head": "lstm", "frames": 8, "work": str(tiny_work), "run": str(tmp_path / "p"), **TINY}
    crossval(config, folds=3, seeds=[0], pool="all", log=lambda *_: None)
    assert json.loads((tmp_path / "p" / "scores_oof.json").read_text())["stream"] == "pose-lstm"  # was "pose"
    # score files of two names in one run (an older crossval, or other options): bin/fuse names the run
    rng = np.random.default_rng(0)
    for split, name in (("oof", "pose"), ("test", "pose-lstm")):
        write_run(tmp_path / "mixed", name, split, rng.dirichlet(np.ones(4), 8), rng.integers(0, 4, 8),
                  [f"{split}{i}" for i in range(8)], classes=CLASSES[:4])  # fmt: skip
    result = run_bin("fuse", tmp_path / "mixed", "--out", tmp_path / "report")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'mixed'}: its oof scores are of stream 'pose' and its test scores of 'pose-lstm'" in (
        result.stderr
    )


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


def _score_runs(root, names=("rgb", "flow"), splits=(("val", 40), ("oof", 60), ("test", 40)), seed=0):
    rng = np.random.default_rng(seed)
    for split, n in splits:
        labels = rng.integers(0, 4, n)
        for name in names:
            p = rng.dirichlet(np.ones(4), n)
            p[np.arange(n), labels] += 0.5
            write_run(root / name, name, split, p / p.sum(1, keepdims=True), labels, [f"{split}{i:03d}" for i in
                      range(n)], classes=CLASSES[:4])  # fmt: skip
    return [root / name for name in names]


@pytest.mark.parametrize("fit_on", ["val", "oof"])
def test_every_fitted_method_carries_the_class_names_and_paths_absolute(tmp_path, fit_on):
    from fusion.methods import METHODS, FusionMethod

    _score_runs(tmp_path / "runs")
    os.chdir(tmp_path)  # (pytest's monkeypatch would do; a relative path as a user types it is the point)
    try:
        for name in METHODS:
            run_ablation(["runs/rgb", "runs/flow"], f"r-{name}", methods=(name,), resamples=50, fit_on=fit_on)
            fitted = json.loads((tmp_path / f"r-{name}" / "fusion.json").read_text())
            assert fitted["classes"] == CLASSES[:4], name  # stacking stored [0, 1, 2, 3] with --fit-on oof
            assert fitted["runs"] == {s: str(tmp_path / "runs" / s) for s in ("rgb", "flow")}  # absolute
            method = FusionMethod.from_json(fitted)
            probs = {s: np.full((2, 4), 0.25) for s in ("rgb", "flow")}
            assert method.predict_proba(probs).shape == (2, 4)
    finally:
        os.chdir(os.path.dirname(__file__))


def test_the_table_lists_each_row_once_and_fuse_prints_the_holm_p(tmp_path):
    runs = _score_runs(tmp_path / "runs", names=("rgb", "flow", "pose"))
    for fit_on in ("oof", "val"):
        report = run_ablation(runs, tmp_path / fit_on, resamples=50, fit_on=fit_on)
        text = (tmp_path / fit_on / "ablation.md").read_text()
        table = text.split("| streams | method |")[1].split("\n\n")[0].splitlines()[2:]
        keys = [tuple(c.strip().replace(" **◀**", "") for c in line.split("|")[1:3]) for line in table]
        assert len(keys) == len(set(keys)) == len(report["results"]), fit_on
    result = run_bin("fuse", *runs, "--out", tmp_path / "printed", "--bootstrap", "50", check=True)
    report = json.loads((tmp_path / "printed" / "ablation.json").read_text())
    chosen = next(r for r in report["results"] if r.get("chosen") and len(r["streams"]) == 3)
    assert f"(p={chosen['p_holm']:.2g})" in result.stdout  # the Holm-adjusted p, as ablation.md gives it
    if chosen["p_holm"] != chosen["p_vs_best_single"]:
        assert f"(p={chosen['p_vs_best_single']:.2g})" not in result.stdout


def test_overlay_names_are_unique_for_videos_that_share_a_name():
    from fusion.overlay import overlay_names

    names = overlay_names(["a/clip.mp4", "b/clip.mp4", "c/other.mp4"])
    assert names["c/other.mp4"] == "other_overlay.mp4"
    assert names["a/clip.mp4"] == "a_clip_overlay.mp4" and names["b/clip.mp4"] == "b_clip_overlay.mp4"


def test_rgb_input_statistics_follow_the_weights(tiny_work, tmp_path):
    import torchvision

    from streams.checkpoints import IMAGENET_STATS, OUR_STATS
    from streams.train import prepare_config

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    base = {"stream": "rgb", "work": str(tiny_work), "size": 32, "segments": 1}
    imagenet = prepare_config({**base, "preset": "resnet18", "pretrained": str(weights)})
    ours = prepare_config(base)
    assert imagenet["normalize"]["mean"] == IMAGENET_STATS["mean"] and ours["normalize"]["std"] == OUR_STATS["std"]
    a = create_dataset(imagenet, tiny_work, "test", train=False)
    b = create_dataset(ours, tiny_work, "test", train=False)
    x, y = a[0][0].numpy()[0], b[0][0].numpy()[0]  # one frame, normalised both ways
    pixels = y * np.array(OUR_STATS["std"])[:, None, None] + np.array(OUR_STATS["mean"])[:, None, None]
    expected = (pixels - np.array(IMAGENET_STATS["mean"])[:, None, None]) / np.array(IMAGENET_STATS["std"])[
        :, None, None
    ]
    assert np.allclose(x, expected, atol=1e-4)


def _crop_work(tiny_work, folder, videos=None):
    manifest = load_manifest(tiny_work)
    manifest.save(folder)
    shutil.copytree(tiny_work / "pose", folder / "pose")
    return manifest


def test_a_crop_is_redone_when_the_pose_it_was_cut_from_changes_or_goes(tiny_work, tmp_path):
    from preprocess.video import FramesInfo, frames_params, frames_task

    work = tmp_path / "w"
    manifest = _crop_work(tiny_work, work)
    ids = [v.video_id for v in manifest.videos[:2]]
    task = frames_task(frames_params(resize="none", crop="dancers", crop_size=32))
    assert run_batch(task, manifest, work, video_ids=ids).done == ids
    assert run_batch(task, manifest, work, video_ids=ids).skipped == ids  # nothing changed: already done
    digest = hashlib.sha256((work / "pose" / f"{ids[0]}.npz").read_bytes()).hexdigest()
    assert FramesInfo.read(work, ids[0]).inputs == {"pose": digest}
    # pose redone (here: another video's skeletons in its place): that crop is stale, the other is not
    shutil.copy(work / "pose" / f"{ids[1]}.npz", work / "pose" / f"{ids[0]}.npz")
    again = run_batch(task, manifest, work, video_ids=ids)
    assert again.done == [ids[0]] and again.skipped == [ids[1]]
    shutil.rmtree(work / "pose")  # moved away: every crop fails by name instead of being "already done"
    gone = run_batch(task, manifest, work, video_ids=ids)
    assert (
        not gone.skipped
        and len(gone.failed) == 2
        and "--crop dancers needs the video's pose" in (gone.failed[0]["error"])
    )


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
