import csv
import json

import numpy as np
import pytest

from fusion.methods import (
    FusionMethod,
    MaxFusion,
    MeanFusion,
    ProductFusion,
    StackingFusion,
    WeightedMeanFusion,
    fit_temperature,
)
from fusion.report import run_ablation
from fusion.scores import align, load_scores
from preprocess.batch import DataError
from streams.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_difference, wilson_interval
from tests.conftest import run_bin

CLASSES = ["a", "b", "c", "d", "e", "f"]


def test_fixed_rules_against_hand_computed_values():
    a = {"rgb": np.array([[0.6, 0.4]]), "flow": np.array([[0.2, 0.8]])}
    y = np.array([1])
    assert np.allclose(MeanFusion().fit(a, y).predict_proba(a), [[0.4, 0.6]])
    # geometric mean: sqrt(0.12) = 0.34641, sqrt(0.32) = 0.56569, normalised
    assert np.allclose(ProductFusion().fit(a, y).predict_proba(a), [[0.34641 / 0.9121, 0.56569 / 0.9121]], atol=1e-4)
    assert np.allclose(MaxFusion().fit(a, y).predict_proba(a), [[0.6 / 1.4, 0.8 / 1.4]])
    # the product rule vetoes a class one stream rules out; the mean does not
    b = {"rgb": np.array([[0.5, 0.5, 0.0]]), "flow": np.array([[0.0, 0.45, 0.55]])}
    assert ProductFusion().fit(b, np.array([1])).predict(b)[0] == 1
    assert MeanFusion().fit(b, np.array([1])).predict(b)[0] == 1


def test_weighted_grid_finds_the_only_weights_that_fit():
    # Video 0 is right only if w_flow > 0.6; video 1 only if w_flow < 0.75 (hand-solved): the grid keeps
    # 0.65 or 0.7, and among equal accuracy prefers lower log-loss.
    val = {"flow": np.array([[0.9, 0.1], [0.9, 0.1]]), "rgb": np.array([[0.25, 0.75], [0.0, 1.0]])}
    # video 0 (label 0): 0.9w + 0.25(1-w) > 0.5  <=> w > 0.3846 ; video 1 (label 1): 0.9w < 0.5 <=> w < 0.5556
    labels = np.array([0, 1])
    method = WeightedMeanFusion(step=0.05).fit(val, labels)
    w_flow = method.params()["weights"]["flow"]
    assert 0.3846 < w_flow < 0.5556
    assert (method.predict(val) == labels).all()
    assert np.isclose(sum(method.params()["weights"].values()), 1.0)
    logloss = WeightedMeanFusion(search="logloss").fit(val, labels)
    assert np.isclose(sum(logloss.weights_), 1.0) and (logloss.weights_ >= 0).all()


def test_the_vectorised_weight_search_chooses_what_the_loop_chose():
    from benchmarks.fusion_search import grid_search_loop
    from fusion.methods import best_grid_weights, simplex_grid

    grid = simplex_grid(4, 20)
    assert grid.shape == (1771, 4) and np.allclose(grid.sum(1), 1) and (grid >= 0).all()
    rng = np.random.default_rng(3)
    for trial in range(20):
        s, videos, classes = int(rng.integers(2, 5)), int(rng.integers(6, 80)), int(rng.integers(2, 7))
        labels = rng.integers(0, classes, videos)
        # continuous scores of varied sharpness, some streams better than others (no exact ties between classes)
        logits = rng.normal(size=(s, videos, classes)) * rng.uniform(0.3, 3, (s, 1, 1))
        logits[:, np.arange(videos), labels] += rng.uniform(0, 2, (s, 1))
        stacked = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
        for n in (10, 20) if s < 4 else (10,):  # (the loop is slow: scikit-learn's log-loss per vector)
            expected = grid_search_loop(stacked, labels, n)
            assert np.array_equal(best_grid_weights(stacked, labels, n, chunk_bytes=4096), expected), (trial, n)
    # identical streams: every split of their weight fuses the same, so the one nearest equal weights is kept
    same = stacked[:1].repeat(2, 0)
    assert best_grid_weights(same, labels, 20).tolist() == [0.5, 0.5]


def test_stacking_learns_which_stream_to_trust_and_temperature_fixes_overconfidence():
    rng = np.random.default_rng(0)
    n, c = 200, 4
    labels = rng.integers(0, c, n)
    good = np.full((n, c), 0.1)
    good[np.arange(n), labels] = 0.7
    noise = rng.dirichlet(np.ones(c), n)
    streams = {"good": good, "noise": noise}
    stack = StackingFusion().fit(streams, labels)
    assert (stack.predict(streams) == labels).mean() > 0.95
    # an overconfident stream (right 60 % of the time but always 0.97 sure) gets T > 1
    right = rng.random(n) < 0.6
    guess = np.where(right, labels, (labels + 1) % c)
    over = np.full((n, c), 0.01)
    over[np.arange(n), guess] = 0.97
    assert fit_temperature(over, labels) > 1.5


def test_methods_round_trip_through_json():
    rng = np.random.default_rng(1)
    val = {s: rng.dirichlet(np.ones(5), 40) for s in ("rgb", "flow", "pose")}
    labels = rng.integers(0, 5, 40)
    test = {s: rng.dirichlet(np.ones(5), 10) for s in ("rgb", "flow", "pose")}
    for method in (MeanFusion(calibrate=True), WeightedMeanFusion(), ProductFusion(), MaxFusion(), StackingFusion()):
        method.fit(val, labels)
        again = FusionMethod.from_json(json.loads(json.dumps(method.to_json())))
        assert np.allclose(again.predict_proba(test), method.predict_proba(test))
    with pytest.raises(ValueError, match="fitted on streams"):
        MeanFusion().fit(val, labels).predict({"rgb": test["rgb"]})


def test_stacking_gives_a_class_absent_from_validation_no_probability():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 60)  # class 3 of 4 never occurs in validation
    val = {s: rng.dirichlet(np.ones(4), 60) for s in ("flow", "pose")}
    val["flow"][np.arange(60), labels] += 2.0
    val["flow"] /= val["flow"].sum(1, keepdims=True)
    stack = StackingFusion().fit(val, labels)
    test = {s: rng.dirichlet(np.ones(4), 8) for s in ("flow", "pose")}
    probs = stack.predict_proba(test)
    assert probs.shape == (8, 4) and np.allclose(probs.sum(1), 1) and (probs[:, 3] == 0).all()
    again = FusionMethod.from_json(json.loads(json.dumps(stack.to_json())))
    assert np.allclose(again.predict_proba(test), probs)
    with pytest.raises(ValueError, match="at least two classes"):
        StackingFusion().fit({"flow": val["flow"][labels == 0]}, labels[labels == 0])


def test_statistics_against_known_values():
    hits = np.array([1] * 80 + [0] * 20, bool)
    lo, hi = bootstrap_ci(hits, seed=0)
    assert lo < 0.8 < hi and 0.68 < lo < 0.75 and 0.85 < hi < 0.9  # binomial sd 0.04: about +-0.08
    a = np.array([1] * 10 + [1] * 50 + [0] * 40, bool)
    b = np.array([0] * 10 + [1] * 50 + [0] * 40, bool)
    assert mcnemar_exact(a, b) == pytest.approx(2 * 0.5**10)  # 10 discordant pairs, all one way
    assert mcnemar_exact(a, a) == 1.0
    assert wilson_interval(8, 8) == pytest.approx((0.6756, 1.0), abs=1e-4)  # all right: still a real interval
    assert wilson_interval(80, 100) == pytest.approx((0.7112, 0.8666), abs=1e-4)
    diff, dlo, dhi = paired_bootstrap_difference(a, b, seed=0)
    assert diff == pytest.approx(0.1) and dlo > 0 and dhi < 0.2


def write_run(folder, stream, split, probs, labels, ids, classes=CLASSES, work=None):
    """A run folder's score file and sidecar, as bin/train writes them (``work``: the manifest's directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / f"scores_{split}.npz",
        video_ids=np.array(ids, dtype=np.str_),
        labels=np.asarray(labels, np.int64),
        probs=np.asarray(probs, np.float32),
        classes=np.array(classes, dtype=np.str_),
    )
    (folder / f"scores_{split}.json").write_text(
        json.dumps({"stream": stream, "split": split, "work": None if work is None else str(work)})
    )


def make_runs(tmp_path, test_labels=None, seed=0):
    """Three streams whose errors are complementary: each is right on different videos."""
    rng = np.random.default_rng(seed)
    runs = []
    for split, n in (("val", 60), ("test", 90)):
        labels = rng.integers(0, len(CLASSES), n) if split == "val" or test_labels is None else test_labels
        ids = [f"{split}{i:03d}" for i in range(n)]
        for k, stream in enumerate(("rgb", "flow", "pose")):
            skill = (0.55, 0.8, 0.7)[k]
            right = rng.random(n) < skill
            guess = np.where(right, labels, rng.integers(0, len(CLASSES), n))
            probs = rng.dirichlet(np.ones(len(CLASSES)) * 0.6, n) * 0.5
            probs[np.arange(n), guess] += 0.5
            order = rng.permutation(n)  # each file lists the videos in its own order
            write_run(tmp_path / stream, stream, split, probs[order], labels[order], [ids[i] for i in order])
            if split == "val":
                runs.append(tmp_path / stream)
    return runs


def test_report_is_complete_and_consistent_with_the_score_files(tmp_path):
    runs = make_runs(tmp_path / "runs")
    report = run_ablation(runs, tmp_path / "report", resamples=500)
    out = tmp_path / "report"
    for name in (
        "ablation.md",
        "ablation.json",
        "ablation.csv",
        "subsets.png",
        "fusion.json",
        "confusion_rgb.png",
        "confusion_flow.png",
        "confusion_pose.png",
        "confusion_all_streams.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 100, name
    saved = json.loads((out / "ablation.json").read_text())
    subsets = {tuple(r["streams"]) for r in saved["results"]}
    assert subsets == {
        ("rgb",),
        ("flow",),
        ("pose",),
        ("flow", "rgb"),
        ("pose", "rgb"),
        ("flow", "pose"),
        ("flow", "pose", "rgb"),
    }
    assert len(saved["results"]) == 3 + 4 * 5
    for r in saved["results"]:
        assert r["streams"] == sorted(r["streams"])
        for key in ("method", "top1", "top5", "macro_f1", "top1_ci95", "p_vs_best_single"):
            assert key in r
        assert r["top1_ci95"][0] <= r["top1"] <= r["top1_ci95"][1]
    # recompute every single stream's top-1 from its score file
    for stream in ("rgb", "flow", "pose"):
        s = load_scores(tmp_path / "runs" / stream, "test")
        row = next(r for r in saved["results"] if r["streams"] == [stream])
        assert row["top1"] == pytest.approx(float((s.probs.argmax(1) == s.labels).mean()))
    # and the saved three-stream fusion, applied to the test files, gives the reported top-1
    fusion = json.loads((out / "fusion.json").read_text())
    method = FusionMethod.from_json(fusion)
    probs, labels, _, _ = align([load_scores(r, "test") for r in runs])
    chosen = next(
        r for r in saved["results"] if r["streams"] == ["flow", "pose", "rgb"] and r["method"] == fusion["method"]
    )
    assert chosen["top1"] == pytest.approx(float((method.predict(probs) == labels).mean()))
    rows = list(csv.DictReader((out / "ablation.csv").read_text().splitlines()))
    assert len(rows) == len(saved["results"]) and float(rows[0]["top1"]) == pytest.approx(saved["results"][0]["top1"])
    text = (out / "ablation.md").read_text()
    assert "from another dataset" in text and "56.4" in text and "71.6" in text
    assert report["best_single"] == "flow"


def test_fitted_parameters_never_see_test_labels(tmp_path):
    runs_a = make_runs(tmp_path / "a", seed=3)
    flipped = np.random.default_rng(9).integers(0, len(CLASSES), 90)
    runs_b = make_runs(tmp_path / "b", test_labels=flipped, seed=3)
    a = run_ablation(runs_a, tmp_path / "ra", resamples=200)
    b = run_ablation(runs_b, tmp_path / "rb", resamples=200)
    params_a = [(r["streams"], r["method"], r["params"], r["val_cv_top1"]) for r in a["results"]]
    params_b = [(r["streams"], r["method"], r["params"], r["val_cv_top1"]) for r in b["results"]]
    assert params_a == params_b  # weights, temperatures and method choice come from validation alone
    fa = json.loads((tmp_path / "ra" / "fusion.json").read_text())
    fb = json.loads((tmp_path / "rb" / "fusion.json").read_text())
    assert fa.pop("runs") != fb.pop("runs") and fa == fb  # only where the runs live differs
    assert [r["top1"] for r in a["results"]] != [r["top1"] for r in b["results"]]  # test labels did change


def test_mismatched_runs_give_named_errors(tmp_path):
    runs = make_runs(tmp_path / "runs")
    other = tmp_path / "other"
    write_run(other, "flow2", "val", np.full((3, 6), 1 / 6), [0, 1, 2], ["x", "y", "z"])
    write_run(other, "flow2", "test", np.full((3, 6), 1 / 6), [0, 1, 2], ["x", "y", "z"])
    result = run_bin("fuse", runs[0], other, "--out", tmp_path / "rep")
    assert result.returncode != 0 and "covers other videos" in result.stderr and "Traceback" not in result.stderr
    missing = run_bin("fuse", tmp_path / "runs", "--out", tmp_path / "rep")
    assert missing.returncode != 0 and "no val scores in this run" in missing.stderr
    with pytest.raises(DataError, match="same stream"):
        align([load_scores(runs[0], "val"), load_scores(runs[0], "val")])
