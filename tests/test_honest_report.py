"""The ablation report says what its numbers mean: validation that shares groups with training, the streams that
carry weight, ties on validation, intervals over groups, Holm-adjusted p-values; and the pictures follow."""

import dataclasses

import numpy as np

from fusion.report import run_ablation
from fusion.select import carrying_streams
from preprocess.dataset import Manifest, load_manifest
from streams.stats import holm
from tests.test_fusion import write_run

CLASSES = 4


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


def test_holm_and_carrying_streams():
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    assert carrying_streams({"streams": ["pose", "rgb", "flow"], "params": {}}) == ["rgb", "flow", "pose"]
    weights = {"rgb": 0.02, "flow": 0.5, "pose": 0.48}
    assert carrying_streams({"streams": list(weights), "params": {"weights": weights}}) == ["flow", "pose"]


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
