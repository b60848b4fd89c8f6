"""Group cross-validation (bin/crossval) and fusion fitted on its out-of-fold scores (bin/fuse --fit-on oof)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fusion.methods import create_method
from fusion.report import run_ablation
from fusion.scores import load_scores
from fusion.select import cross_validated_top1
from preprocess import load_manifest
from preprocess.dataset import ingest
from streams.crossval import group_folds
from streams.stats import group_bootstrap_ci
from tests.conftest import TINY, group_shortcut, run_bin
from tests.test_fusion import CLASSES, write_run


def test_group_folds_never_split_a_group_and_cover_every_video_once():
    rng = np.random.default_rng(0)
    groups = [f"g{g}" for g in rng.integers(0, 9, 120)]
    labels = [CLASSES[i] for i in rng.integers(0, 4, 120)]
    folds = group_folds(labels, groups, 4, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(120))
    for a in range(4):
        for b in range(a + 1, 4):
            assert not {groups[i] for i in folds[a]} & {groups[i] for i in folds[b]}
    assert [f.tolist() for f in folds] == [f.tolist() for f in group_folds(labels, groups, 4, seed=1)]
    with pytest.raises(ValueError, match="between 2 and 9 groups"):
        group_folds(labels, groups, 10, seed=1)


def test_group_bootstrap_is_wider_than_clip_bootstrap_when_groups_differ():
    # 8 groups of 20 clips: four groups all right, four all wrong. Resampling clips pretends 160 independent
    # trials; resampling groups sees 8.
    groups = np.repeat(np.arange(8), 20)
    hits = np.repeat([1, 1, 1, 1, 0, 0, 0, 0], 20).astype(bool)
    lo, hi = group_bootstrap_ci(hits, groups, resamples=4000, seed=0)
    clip = np.random.default_rng(0).choice(hits, size=(4000, hits.size)).mean(1)
    assert lo < 0.3 and hi > 0.7  # 8 coin-like groups
    assert hi - lo > 3 * (np.quantile(clip, 0.975) - np.quantile(clip, 0.025))


@pytest.fixture(scope="module")
def clip_grouped_work(tiny_synth, tiny_work, tmp_path_factory):
    """The tiny synthetic set split by clip (each clip its own group: three performers alone are too few groups to
    fold the training part), its preprocessing linked from tiny_work."""
    work = tmp_path_factory.mktemp("cv_work")
    rows = (tiny_synth / "dataset.csv").read_text().splitlines()
    csv = work / "clips.csv"
    csv.write_text("path,label\n" + "".join(f"{tiny_synth / r.split(',')[0]},{r.split(',')[1]}\n" for r in rows[1:]))
    manifest = ingest(csv, ratios=(0.6, 0.2, 0.2), seed=0)
    assert {v.video_id for v in manifest.videos} == {v.video_id for v in load_manifest(tiny_work).videos}
    manifest.save(work)
    for stage in ("flow", "pose", "frames"):
        os.symlink(tiny_work / stage, work / stage)
    return work


CV_OPTIONS = ["--epochs", "2", "--batch-size", "8", "--min-epoch-clips", "1", "--views", "1"]


def test_crossval_writes_out_of_fold_scores_that_fuse_fits_on(clip_grouped_work, tmp_path):
    work = clip_grouped_work
    manifest = load_manifest(work)
    pooled = {v.video_id for v in manifest.videos if v.split in ("train", "val")}
    tests = {v.video_id for v in manifest.videos if v.split == "test"}
    runs = {}
    for stream, extra in (
        ("pose", ["--frames", "12"]),
        ("flow", ["--preset", "small", "--size", "32", "--segments", "2", "--stack", "2"]),
    ):
        run = tmp_path / stream
        run_bin("crossval", stream, work, run, "--folds", "3", *CV_OPTIONS, *extra, check=True)
        run_bin("train", stream, work, run, *CV_OPTIONS, *extra, check=True)
        oof = load_scores(run, "oof")
        # every training and validation video scored once, by the fold that held it out; test untouched
        assert set(oof.video_ids) == pooled and not set(oof.video_ids) & tests
        assert np.allclose(oof.probs.sum(1), 1, atol=1e-4)
        side = json.loads((run / "scores_oof.json").read_text())
        for k in range(3):
            fold = json.loads((run / "crossval" / f"fold{k}" / "seed0" / "scores_test.json").read_text())
            held = load_scores(run / "crossval" / f"fold{k}" / "seed0", "test")
            assert {side["folds"][v] for v in held.video_ids} == {k} and fold["stream"] == stream
            trained_on = {v.video_id for v in load_manifest(run / "crossval" / f"fold{k}" / "work").by_split("train")}
            assert not trained_on & set(held.video_ids)
            rows = {v: i for i, v in enumerate(oof.video_ids)}
            assert np.allclose(oof.probs[[rows[v] for v in held.video_ids]], held.probs, atol=1e-6)
        summary = json.loads((run / "crossval.json").read_text())
        assert summary["folds"] == 3 and len(summary["per_fold"]) == 3 and summary["videos"] == len(pooled)
        assert summary["oof_top1"] == pytest.approx(float((oof.probs.argmax(1) == oof.labels).mean()))
        assert "± " in (run / "crossval.md").read_text()
        runs[stream] = run
    result = run_bin("fuse", runs["pose"], runs["flow"], "--out", tmp_path / "report", check=True)
    report = json.loads((tmp_path / "report" / "ablation.json").read_text())
    assert report["fit_on"] == "oof" and report["val_videos"] == len(pooled), result.stdout
    assert "out-of-fold scores" in (tmp_path / "report" / "ablation.md").read_text()
    run_bin("fuse", runs["pose"], runs["flow"], "--out", tmp_path / "val", "--fit-on", "val", check=True)
    assert json.loads((tmp_path / "val" / "ablation.json").read_text())["fit_on"] == "val"


def test_crossval_refuses_too_few_groups_by_name(tiny_work, tmp_path):
    result = run_bin("crossval", "pose", tiny_work, tmp_path / "run", "--folds", "3")
    assert result.returncode != 0 and "manifest.json" in result.stderr and "groups" in result.stderr
    assert "Traceback" not in result.stderr


def _shortcut_runs(root, seed=0):
    """Two streams on 8 groups. rgb has learned the scenes of its training groups: near perfect on validation
    clips of those groups, at chance on groups it never saw (out-of-fold and test). pose has learned the dance: 70 %
    everywhere."""
    rng = np.random.default_rng(seed)
    n_classes = 4

    def probs_for(labels, skill):
        right = rng.random(len(labels)) < skill
        guess = np.where(right, labels, rng.integers(0, n_classes, len(labels)))
        p = rng.dirichlet(np.ones(n_classes), len(labels)) * 0.4
        p[np.arange(len(labels)), guess] += 0.6
        return p

    splits = {"val": 60, "oof": 240, "test": 120}
    for split, n in splits.items():
        labels = rng.integers(0, n_classes, n)
        ids = [f"{split}{i:03d}" for i in range(n)]
        for stream, skill in (("rgb", 0.97 if split == "val" else 0.25), ("pose", 0.7)):
            write_run(root / stream, stream, split, probs_for(labels, skill), labels, ids, classes=CLASSES[:n_classes])
    return [root / "rgb", root / "pose"]


def test_fitting_on_out_of_fold_scores_does_not_pick_the_scene_shortcut(tmp_path):
    runs = _shortcut_runs(tmp_path / "runs")
    on_val = run_ablation(runs, tmp_path / "val", resamples=200, fit_on="val")
    on_oof = run_ablation(runs, tmp_path / "oof", resamples=200, fit_on="oof")
    assert on_val["best_single"] == "rgb" and on_oof["best_single"] == "pose"

    def weighted(report):
        return next(r for r in report["results"] if r["method"] == "weighted" and len(r["streams"]) == 2)

    assert weighted(on_val)["params"]["weights"]["rgb"] > 0.5  # validation trusts the shortcut
    assert weighted(on_oof)["params"]["weights"]["pose"] > 0.5  # out-of-fold scores do not
    assert weighted(on_oof)["top1"] > weighted(on_val)["top1"] + 0.1
    chosen = {
        name: next(r for r in rep["results"] if r.get("chosen")) for name, rep in (("val", on_val), ("oof", on_oof))
    }
    assert chosen["oof"]["top1"] > chosen["val"]["top1"]


def test_crossfit_fuses_each_fold_with_weights_fitted_on_the_others(tmp_path):
    from fusion.crossfit import crossfit

    rng = np.random.default_rng(1)
    n, n_classes = 160, 4
    labels = rng.integers(0, n_classes, n)
    ids = [f"v{i:03d}" for i in range(n)]
    groups = {v: f"g{i % 8}" for i, v in enumerate(ids)}
    folds = {v: int(groups[v][1:]) % 4 for v in ids}
    runs = {}
    for stream, skill in (("good", 0.85), ("noise", 0.25)):
        right = rng.random(n) < skill
        guess = np.where(right, labels, rng.integers(0, n_classes, n))
        probs = rng.dirichlet(np.ones(n_classes), n) * 0.4
        probs[np.arange(n), guess] += 0.6
        write_run(tmp_path / stream, stream, "oof", probs, labels, ids, classes=CLASSES[:n_classes])
        (tmp_path / stream / "scores_oof.json").write_text(
            json.dumps({"stream": stream, "split": "oof", "folds": folds, "groups": groups})
        )
        runs[stream] = tmp_path / stream
    result = crossfit(runs)
    assert result["videos"] == n and result["groups"] == 8 and result["folds"] == 4
    rows = {(tuple(r["streams"]), r["method"]): r for r in result["rows"]}
    good = rows[(("good",), "single")]["top1"]
    assert good == pytest.approx(float(np.mean(load_scores(runs["good"], "oof").probs.argmax(1) == labels)))
    # the noise stream earns no weight: the selected fusion is as good as the good stream alone, give or take
    assert result["selected"]["top1"] > good - 0.05 and len(result["selected"]["picks"]) == 4
    assert rows[(("good", "noise"), "weighted")]["top1"] > rows[(("good", "noise"), "mean")]["top1"] - 0.02


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


def test_group_folds_do_not_reward_a_group_shortcut_that_clip_level_folds_reward():
    probs, labels, groups = group_shortcut()
    stacking = lambda: create_method("stacking")  # noqa: E731
    clip_level = cross_validated_top1(stacking, probs, labels, groups=None, seed=0)  # every clip its own group
    by_group = cross_validated_top1(stacking, probs, labels, groups=groups, seed=0)
    flow_alone = float((probs["flow"].argmax(1) == labels).mean())
    print(f"stacking CV: clip-level {clip_level:.2f}, by group {by_group:.2f}; flow alone {flow_alone:.2f}")
    assert clip_level > 0.75  # learns each venue's signature → its class: the flattering number KFold gave
    assert by_group < flow_alone + 0.1  # on unseen groups the signature is worthless
    assert clip_level - by_group > 0.3
    # too few groups to hold any out: no cross-validated figure at all
    assert cross_validated_top1(stacking, probs, labels, groups=np.zeros(len(labels), str)) is None


# issue 33, case 18
# 18. Too many folds for the pool: said before any training, with how many it allows
def test_too_many_folds_are_refused_before_training(tiny_work, tmp_path):
    result = run_bin("crossval", "pose", tiny_work, tmp_path / "run", "--folds", "2", "--pool", "all")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "is too small for 2 folds" in result.stderr and not (tmp_path / "run" / "crossval").exists()
