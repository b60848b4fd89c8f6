"""The ablation report (fusion.report): what its numbers mean, fusion.json, the fallback, and faults named."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from fusion.methods import create_method
from fusion.report import load_fusion, run_ablation
from fusion.select import fitting_support
from preprocess import DataError
from preprocess.dataset import Manifest, load_manifest
from streams.registry import resolve_config
from tests.conftest import FAST_FLOW, REPO, group_shortcut, run_bin, work_copy
from tests.test_fusion import CLASSES, write_run


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


def test_outputs_that_are_not_regular_files_are_refused_and_fit_on_oof_names_crossval(fused, tmp_path):
    runs = fused.parent
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    result = run_bin("export-scores", runs / "flow", pipe)
    assert result.returncode == 1 and f"{pipe}: exists and is not a regular file" in result.stderr
    assert pipe.exists() and not pipe.is_file()  # left as it was
    result = run_bin("fuse", runs / "flow", runs / "pose", "--out", tmp_path / "r2", "--fit-on", "oof")
    assert result.returncode == 1 and "bin/crossval" in result.stderr and "Traceback" not in result.stderr


def test_a_fuse_killed_halfway_leaves_the_previous_report_whole(tmp_path):
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


def test_fusion_of_one_run_classify_and_broken_or_non_finite_scores(tiny_synth, tiny_work, tmp_path):

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


def test_fitting_support_counts_groups_and_their_purity():
    labels = np.repeat(np.arange(4), 6)
    confounded = fitting_support(labels, np.repeat(np.arange(8), 3))  # each source one style
    assert not confounded["reliable"] and confounded["purity"] == 1.0 and confounded["groups"] == 8
    assert "nearly determine the class" in confounded["reasons"][0]
    performers = fitting_support(labels, np.tile(np.arange(6), 4))  # each performer does every class
    assert performers["reliable"] and performers["purity"] == pytest.approx(0.25)
    few = fitting_support(labels, np.tile(np.arange(2), 12))
    assert not few["reliable"] and "2 groups" in few["reasons"][0]
    shared = fitting_support(labels, np.tile(np.arange(6), 4), shared_with_training=3)
    assert not shared["reliable"] and "share 3 groups" in shared["reasons"][0]


def _write_oof_runs(root, probs, labels, groups, test_seed=1):
    rng = np.random.default_rng(test_seed)
    runs = []
    test_labels = rng.integers(0, 4, 40)
    test_ids = [f"t{i:02d}" for i in range(40)]
    ids = [f"v{i:03d}" for i in range(len(labels))]
    for stream, p in probs.items():
        folder = root / stream
        write_run(folder, stream, "oof", p, labels, ids, classes=CLASSES[:4])
        side = json.loads((folder / "scores_oof.json").read_text())
        side["groups"] = dict(zip(ids, groups.tolist()))
        (folder / "scores_oof.json").write_text(json.dumps(side))
        test = rng.dirichlet(np.ones(4), 40)
        test[np.arange(40), test_labels] += 0.5 if stream == "flow" else 0.0
        write_run(folder, stream, "test", test / test.sum(1, keepdims=True), test_labels, test_ids, classes=CLASSES[:4])
        runs.append(folder)
    return runs


def test_confounded_fitting_groups_fall_back_to_the_mean_of_the_streams_out_of_group_scores_keep(tmp_path):
    probs, labels, groups = group_shortcut()
    runs = _write_oof_runs(tmp_path / "runs", probs, labels, groups)
    report = run_ablation(runs, tmp_path / "report", resamples=200, fit_on="oof")
    assert report["default"]["rule"] == "fallback" and report["default"]["method"] == "mean"
    assert report["fitting_support"]["groups"] == 12 and report["fitting_support"]["purity"] == 1.0
    # rgb's venue signature says nothing about the class on groups it never saw: the mean goes better without it
    assert report["default"]["streams"] == ["flow"] and report["default"]["left_out"][0]["stream"] == "rgb"
    fusion = json.loads((tmp_path / "report" / "fusion.json").read_text())
    assert fusion["method"] == "mean" and sorted(fusion["runs"]) == ["flow"]
    md = (tmp_path / "report" / "ablation.md").read_text()
    assert "a rule that fits nothing" in md and "12 groups (group purity 1.00)" in md and "rgb is left out" in md
    defaults = [r for r in report["results"] if r.get("default")]
    assert len(defaults) == 1 and defaults[0]["streams"] == ["flow"]

    # the same scores with groups that cut across the classes (performers doing every style): a fitted choice
    mixed = np.array([str(i % 12) for i in range(len(labels))])  # consecutive clips, other groups
    runs = _write_oof_runs(tmp_path / "runs2", probs, labels, mixed)
    report = run_ablation(runs, tmp_path / "report2", resamples=200, fit_on="oof")
    assert report["default"]["rule"] == "fitted" and report["fitting_support"]["reliable"]
    fusion = json.loads((tmp_path / "report2" / "fusion.json").read_text())
    assert fusion["method"] == report["best_all_streams"]["method"]


def grouped_work(tiny_work, tmp_path, *, val_from_train_groups: bool):
    """tiny_work's manifest (3 performers) regrouped into 6 groups of 5 clips; validation drawn from the training
    groups, or from groups of its own."""
    manifest = load_manifest(tiny_work)
    videos = sorted(manifest.videos, key=lambda v: v.video_id)
    records = []
    for i, v in enumerate(videos):
        group = f"g{i % 6}"
        if val_from_train_groups:
            split = "test" if i % 6 in (4, 5) else ("val" if (i // 6) % 3 == 0 else "train")
        else:
            split = {0: "train", 1: "train", 2: "val", 3: "val", 4: "test", 5: "test"}[i % 6]
        records.append(dataclasses.replace(v, group=group, split=split))
    work = tmp_path / "work"
    Manifest(manifest.root, manifest.classes, records).save(work)
    return work, records


def make_streams(tmp_path, work, records, classes, behaviour):
    """behaviour(stream, split, labels, groups, rng) → probs."""
    rng = np.random.default_rng(0)
    runs = {}
    for split in ("val", "test"):
        chosen = [r for r in records if r.split == split]
        ids = [r.video_id for r in chosen]
        labels = np.array([classes.index(r.label) for r in chosen])
        groups = np.array([r.group for r in chosen])
        for stream in ("rgb", "flow", "pose"):
            probs = behaviour(stream, split, labels, groups, rng)
            write_run(tmp_path / stream, stream, split, probs, labels, ids, classes, work=work)
            runs[stream] = tmp_path / stream
    return list(runs.values())


def one_hot(index, n):
    p = np.full((len(index), n), 0.02)
    p[np.arange(len(index)), index] = 1 - 0.02 * (n - 1)
    return p


def test_validation_sharing_groups_is_said_and_a_stream_without_weight_is_named(tiny_work, tmp_path):
    work, records = grouped_work(tiny_work, tmp_path, val_from_train_groups=True)
    classes = load_manifest(work).classes
    n = len(classes)

    def behaviour(stream, split, labels, groups, rng):
        if stream == "rgb":  # confidently wrong: any weight on it costs accuracy
            return one_hot((labels + 1) % n, n)
        right = rng.random(len(labels)) < (0.8 if stream == "flow" else 0.7)
        return one_hot(np.where(right, labels, (labels + 2) % n), n) * 0.5 + 0.5 / n

    runs = make_streams(tmp_path / "runs", work, records, classes, behaviour)
    report = run_ablation(runs, tmp_path / "report", methods=("weighted",), resamples=300)
    assert report["validation_shares_groups"]["shared"] == report["validation_shares_groups"]["val_groups"] == 4
    best = report["best_all_streams"]
    assert best["carrying"] == ["flow", "pose"]
    md = (tmp_path / "report" / "ablation.md").read_text()
    headline = md.split("| streams |")[0]
    assert "validation shares 4 of its 4 groups" in headline
    assert "All 3 streams given, in effect flow+pose (rgb weight 0.00)" in headline
    # test holds 2 groups: intervals resample groups, and say so
    assert report["intervals"] == {"resample": "groups", "test_groups": 2}
    assert "resampling whole groups (2 test groups" in md


def test_ties_on_validation_are_said_and_groups_widen_intervals(tiny_work, tmp_path):
    work, records = grouped_work(tiny_work, tmp_path, val_from_train_groups=False)
    classes = load_manifest(work).classes
    n = len(classes)
    right_groups = {"g4"}  # on test, every stream is right on one group and wrong on the other

    def behaviour(stream, split, labels, groups, rng):
        if split == "test":
            right = np.isin(groups, list(right_groups))
            return one_hot(np.where(right, labels, (labels + 1) % n), n)
        return one_hot(labels, n)  # all streams right on validation: every fusion method ties

    runs = make_streams(tmp_path / "runs", work, records, classes, behaviour)
    report = run_ablation(runs, tmp_path / "report", methods=("mean", "product"), resamples=500)
    assert report["validation_shares_groups"] == {"shared": 0, "val_groups": 2}
    assert len(report["best_all_streams"]["ties"]) == 2
    md = (tmp_path / "report" / "ablation.md").read_text()
    assert "Validation could not tell 2 fusions of all streams apart" in md
    assert "Caution: validation shares" not in md
    single = next(r for r in report["results"] if r["method"] == "single")
    lo, hi = single["top1_ci95"]
    assert single["top1"] == 0.5 and lo == 0.0 and hi == 1.0  # two groups, one right, one wrong: anything goes


# issue 33, case 2
# 2. bin/fuse without a readable manifest: the groups are unknown, so the choice is unsupported (never fitted)
def test_fuse_without_the_manifest_says_groups_are_unknown_and_falls_back(tiny_work, tmp_path):
    from streams.train import train

    work = work_copy(tiny_work, tmp_path, "flow", "pose")
    for stream, extra in (("flow", FAST_FLOW), ("pose", {"stream": "pose", "frames": 8, "views": 1})):
        config = {**extra, "stream": stream, "epochs": 1, "min_epoch_clips": 1, "batch_size": 8}
        train({**config, "work": str(work), "run": str(tmp_path / stream)}, log=lambda *_: None)
    (work / "manifest.json").unlink()
    result = run_bin("fuse", tmp_path / "flow", tmp_path / "pose", "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report" / "ablation.json").read_text())
    assert report["default"]["rule"] == "fallback" and not report["fitting_support"]["reliable"]
    assert any("groups are unknown" in r for r in report["fitting_support"]["reasons"])
    assert json.loads((tmp_path / "report" / "fusion.json").read_text())["method"] == "mean"


# issue 33, case 13
# 13. A stacking fusion.json whose coef has the wrong shape: refused when read, naming the field
def test_a_stacking_coef_of_the_wrong_shape_is_refused_when_read():
    from fusion.methods import FusionFileError, FusionMethod

    rng = np.random.default_rng(0)
    probs = {s: rng.dirichlet(np.ones(4), 40) for s in ("rgb", "flow")}
    labels = np.arange(40) % 4
    fitted = create_method("stacking").fit(probs, labels).to_json()
    assert FusionMethod.from_json(fitted).predict_proba(probs).shape == (40, 4)
    bad = {**fitted, "coef": np.zeros((4, 20)).tolist()}
    with pytest.raises(FusionFileError, match=r"coef: shape \(4, 20\), not \(4, 8\)"):
        FusionMethod.from_json(bad)


# issue 33, case 22
# 22. Singleton groups say nothing about confounding
def test_purity_leaves_out_singleton_groups_and_says_what_is_missing():
    from fusion.select import fitting_support

    labels = np.arange(40) % 4
    singletons = fitting_support(labels, np.arange(40).astype(str))
    assert singletons["purity"] is None and not singletons["reliable"]
    assert "is its own group: no group information" in singletons["reasons"][0]
    assert not any("purity" in r for r in singletons["reasons"])
    # performers who each do every class, plus a few singletons: the singletons do not make it look pure
    mixed = np.array([f"p{i % 5}" for i in range(36)] + ["a", "b", "c", "d"])
    support = fitting_support(labels, mixed)
    assert support["purity"] < 0.5 and support["reliable"]
