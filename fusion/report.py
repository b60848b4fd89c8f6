"""The fusion ablation, from run folders to a report folder: reads the runs' score files, computes the rows
(``fusion.ablation``), makes the choices (``fusion.select``) and writes them (``fusion.render``).

Writes ``REPORT/ablation.{md,json,csv}``, confusion matrices (each stream and the chosen fusions), a chart comparing
the subsets, and ``fusion.json`` (the chosen fusion of every stream, fitted, for ``bin/classify``; run paths
absolute, class names with it).

Choices made without looking at test: the *best single stream* has the best top-1 on the fitting scores (out-of-fold
or validation); the *chosen fusion* of a subset is the method with the best cross-validated top-1 on them (k-fold
within the fitting videos, so methods that fit parameters are not flattered by scoring on their own fitting data).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from preprocess import DataError
from preprocess.batch import read_json, write_json, write_text
from preprocess.batch.storage import PARTIAL
from preprocess.dataset import load_manifest
from streams import scene
from streams.metrics import confusion_matrix
from streams.run import Run

from .ablation import DEFAULT_METHODS, ablation_rows
from .methods import FusionFileError, FusionMethod, create_method
from .render import REFERENCE, ablation_csv, ablation_markdown, plot_confusion, plot_subsets
from .scores import align, label, load_scores, stream_key
from .select import FALLBACK_METHOD, best_single_stream, choice_record, choose, default_fusion, fitting_support

__all__ = ["DEFAULT_METHODS", "label", "run_ablation"]


def _dataset_info(runs: list[Path]) -> dict:
    """What the manifest says about the data: sizes, and each video's group (performer, source video) when the
    manifest has groups (``group_of`` is None otherwise)."""
    side = json.loads((runs[0] / "scores_test.json").read_text())
    info = {"work": side.get("work"), "group_of": None}
    try:
        manifest = load_manifest(side["work"])
        info.update(
            root=manifest.root,
            classes=len(manifest.classes),
            splits={s: len(manifest.by_split(s)) for s in ("train", "val", "test")},
            groups=len({v.group for v in manifest.videos}),
        )
        if all(v.group not in (None, "") for v in manifest.videos):
            info["group_of"] = {v.video_id: v.group for v in manifest.videos}
            info["split_groups"] = {
                s: sorted({v.group for v in manifest.by_split(s)}) for s in ("train", "val", "test")
            }
    except (DataError, OSError, ValueError, KeyError, TypeError) as err:
        # the report still stands on the score files alone, but without groups no fitted choice can be checked
        info["manifest_error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
    return info


def _fit_and_test_scores(runs: list[Path], fit_on: str):
    """The runs' fitting and test scores, aligned; the names of a run's two score files must agree (a run of
    bin/crossval and bin/train with other options gives its scores other stream names)."""
    fit_scores = [load_scores(r, fit_on) for r in runs]
    test_scores = [load_scores(r, "test") for r in runs]
    for run, fit, test in zip(runs, fit_scores, test_scores):
        if fit.stream != test.stream:
            raise DataError(
                run,
                f"its {fit_on} scores are of stream {fit.stream!r} and its test scores of {test.stream!r}: "
                f"bin/crossval and bin/train were given other options (the same options name the same stream)",
            )
    return fit_scores, test_scores


def _fit_groups(run: Path, fit_on: str, fit_ids, group_of):
    """The fitting videos' groups: from the out-of-fold scores' own record, else the manifest; None when unknown."""
    if fit_on == "oof":
        side = run / "scores_oof.json"
        recorded = json.loads(side.read_text(encoding="utf-8")).get("groups") if side.is_file() else None
        if recorded and all(v in recorded for v in fit_ids):
            return np.array([str(recorded[v]) for v in fit_ids])
    if group_of is not None and all(v in group_of for v in fit_ids):
        return np.array([str(group_of[v]) for v in fit_ids])
    return None


def _out_of_group_evidence(runs: list[Path], records: dict, fit_on: str, fit_probs, fit_labels, fit_groups) -> dict:
    """What the fallback decides which streams to fuse on (``fusion.select.streams_to_fuse``): each stream's
    scores on groups it never saw (the out-of-fold scores of bin/crossval: the fitting scores themselves under
    ``--fit-on oof``, else the runs' own scores_oof.npz when every run has them) and each run's scene reliance
    (``records``: {stream: its ``streams.scene`` record}, validation). Never test."""
    reliance = {stream: scene.retained(record) for stream, record in records.items()}
    evidence = {"probs": None, "labels": None, "groups": None, "source": None, "reliance": reliance}
    if fit_on == "oof":
        groups = None if fit_groups is None else len(set(fit_groups.tolist()))
        evidence.update(probs=fit_probs, labels=fit_labels, groups=groups, source="the out-of-fold fitting scores")
    elif all((r / "scores_oof.npz").is_file() for r in runs):
        try:
            probs, labels, ids, _ = align([load_scores(r, "oof") for r in runs])
        except DataError as error:  # (runs cross-validated over other videos: no common evidence, said)
            evidence["source"] = f"no usable out-of-fold scores ({error})"
            return evidence
        groups = _fit_groups(runs[0], "oof", ids, None)
        evidence.update(
            probs=probs,
            labels=labels,
            groups=None if groups is None else len(set(groups.tolist())),
            source="the runs' out-of-fold scores (bin/crossval)",
        )
    return evidence


def _test_groups(group_of, test_ids):
    """Each test video's group when the manifest has groups and test holds several (else None: resample videos)."""
    if group_of is None or not all(v in group_of for v in test_ids):
        return None
    groups = np.array([group_of[v] for v in test_ids])
    if len(set(groups)) < 2 or len(set(groups)) == len(groups):
        return None  # one group (no spread to resample) or every clip its own group (the clip bootstrap)
    return groups


def _seed_spreads(results: list[dict], run_of: dict) -> None:
    """A run trained with several seeds (bin/train --seeds): its single row gets its spread over seeds."""
    for r in results:
        if r["method"] == "single":
            side = Path(run_of[r["streams"][0]]) / "scores_test.json"
            per_seed = json.loads(side.read_text()).get("per_seed") if side.is_file() else None
            if per_seed:
                top1 = [m["top1"] for m in per_seed.values()]
                r["seeds"] = {"n": len(top1), "top1_mean": float(np.mean(top1)), "top1_sd": float(np.std(top1, ddof=1))}


def run_ablation(
    runs: list[str | Path],
    out: str | Path,
    *,
    methods=DEFAULT_METHODS,
    calibrate: bool = False,
    resamples: int = 2000,
    seed: int = 0,
    fit_on: str = "auto",
) -> dict:
    """Every subset of streams x every method, fitted on ``fit_on`` scores and scored on test.

    ``fit_on``: ``oof`` fits on each run's out-of-fold scores (``bin/crossval``: every video scored by a model that
    never saw its group), ``val`` on the validation split's scores, ``auto`` on out-of-fold scores when every run has
    them. Validation that shares groups with training flatters whatever those groups have in common (a scene, a
    camera), and every choice made on it leans that way; out-of-fold scores do not."""
    runs = [Path(os.path.abspath(r)) for r in runs]  # fusion.json is read from anywhere: absolute paths
    check_same_preprocessing(runs)
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f"{PARTIAL}{final.name}.*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    # The report is built in a folder beside OUT and swapped in whole: a run killed halfway leaves the previous
    # report as it was (never ablation.json of one fusion beside fusion.json of another).
    out = Path(tempfile.mkdtemp(prefix=f"{PARTIAL}{final.name}.", dir=final.parent))
    try:
        report = _write_report(runs, out, methods, calibrate, resamples, seed, fit_on)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    swap_in(out, final)
    return report


def check_same_preprocessing(runs: list[Path]) -> None:
    """Runs fused together must have read the same preprocessing where they share a stage (the pose that dims the
    RGB frames is the pose stream's, the frames the same size, ...): else a named error with the first difference.
    Runs with no readable record (a crossval folder of scores only, an old run whose WORK is gone) are not compared."""
    from preprocess.stages import differences

    seen = []
    for path in runs:
        try:
            run = Run.load(path)
            stages = run.stages
        except DataError:
            continue
        for other, other_stages in seen:
            differ = differences(other_stages, stages)
            if differ:
                raise DataError(
                    path,
                    f"read other preprocessing than {other} where both read the same stage ({'; '.join(differ[:3])}): "
                    "fuse runs of one work directory's preprocessing",
                )
        seen.append((path, stages))


REPORT_FILES = ("ablation.md", "ablation.json", "ablation.csv", "fusion.json", "subsets.png", "confusion_*.png")


def swap_in(staged: Path, final: Path) -> None:
    """Put the staged report folder in place of ``final``. Files of ``final`` that a report does not write (a
    user's notes) move into the new one; the previous report's own files go with it (a pose-only report keeps no
    confusion matrix of an earlier three-stream one)."""
    if final.is_dir():
        for entry in final.iterdir():
            ours = any(entry.match(pattern) for pattern in REPORT_FILES)
            if not ours and not (staged / entry.name).exists():
                os.replace(entry, staged / entry.name)
        old = final.with_name(f"{PARTIAL}{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


def _write_report(runs, out, methods, calibrate, resamples, seed, fit_on) -> dict:
    fit_on, fit, test, run_of = _aligned_scores(runs, fit_on)
    val_probs, val_labels, val_ids, classes = fit
    test_probs, test_labels, test_ids = test
    names = sorted(val_probs, key=stream_key)
    info, test_groups, fit_groups, shared, support = _groups_and_support(runs, fit_on, val_ids, test_ids, val_labels)

    best_name, single_ties = best_single_stream(val_probs, val_labels)
    results, fitted = ablation_rows(
        val_probs,
        val_labels,
        test_probs,
        test_labels,
        classes,
        best_name,
        methods=methods,
        calibrate=calibrate,
        resamples=resamples,
        seed=seed,
        test_groups=test_groups,
        fit_groups=fit_groups,
    )
    _seed_spreads(results, run_of)
    picked = choose(results, methods, names, best_name)
    best_single, best_fusion, best_three = picked["best_single"], picked["best_fusion"], picked["best_all_streams"]
    ties = picked["ties"]
    reliance = {stream: scene.read(run) for stream, run in run_of.items()}
    evidence = _out_of_group_evidence(runs, reliance, fit_on, val_probs, val_labels, fit_groups)
    default = default_fusion(picked, results, names, support, evidence)
    if default["row"] is not None:
        default["row"]["default"] = True

    report = {
        "date": date.today().isoformat(),
        "runs": [str(r) for r in runs],
        "streams": names,
        "classes": classes,
        "dataset": info,
        "test_videos": len(test_ids),
        "val_videos": len(val_ids),
        "fit_on": fit_on,
        "calibrate": calibrate,
        "bootstrap_resamples": resamples,
        "seed": seed,
        "best_single": best_name,
        "best_single_ties": single_ties,
        "best_fusion": choice_record(best_fusion, ties.get("best_fusion")),
        "best_all_streams": choice_record(best_three, ties.get("best_all_streams")),
        "fitting_support": support,
        "default": {
            "rule": default["rule"],
            "streams": default["streams"],
            "method": FALLBACK_METHOD if default["rule"] == "fallback" else (best_three or {}).get("method"),
            "reasons": default["reasons"],
            "left_out": default["left_out"],
            "basis": default["basis"],
        },
        "scene_reliance": reliance,
        "intervals": (
            {"resample": "groups", "test_groups": int(len(set(test_groups)))}
            if test_groups is not None
            else {"resample": "videos"}
        ),
        "validation_shares_groups": shared,
        "reference": REFERENCE,
        "results": results,
    }
    write_json(out / "ablation.json", report)
    write_text(out / "ablation.csv", ablation_csv(results))

    chosen = (best_single, best_fusion, best_three)
    pictures = _pictures(out, results, fitted, chosen, classes, test_probs, test_labels, report["intervals"])
    _write_fusion_file(out, default, fitted, best_three, classes, run_of, val_probs, val_labels, calibrate)
    write_text(
        out / "ablation.md", ablation_markdown(report, best_single, best_fusion, best_three, pictures, default["row"])
    )
    return report


def _aligned_scores(runs, fit_on: str):
    """(fit_on resolved — out-of-fold where every run has them —, the fitting scores (probs, labels, ids, classes),
    the test scores (probs, labels, ids), {stream: run}); fitting and test videos must not overlap and test must be
    labelled."""
    if fit_on == "auto":
        fit_on = "oof" if all((r / "scores_oof.npz").is_file() for r in runs) else "val"
    if fit_on not in ("oof", "val"):
        raise ValueError(f"unknown fit_on {fit_on!r}: auto, oof or val")
    fit_scores, test_scores = _fit_and_test_scores(runs, fit_on)
    run_of = {v.stream: str(r) for v, r in zip(fit_scores, runs)}
    val_probs, val_labels, val_ids, classes = align(fit_scores)
    test_probs, test_labels, test_ids, test_classes = align(test_scores)
    if test_classes != classes:
        raise ValueError(f"{fit_on} and test score files have different classes")
    overlap = set(val_ids) & set(test_ids)
    if overlap:
        raise DataError(
            runs[0] / f"scores_{fit_on}.npz",
            f"{len(overlap)} of its videos are test videos (e.g. {sorted(overlap)[0]}): fitting on them would score "
            "fusion on its own training data (bin/crossval --pool trainval keeps test out)",
        )
    if (test_labels < 0).any():
        raise ValueError("test labels are unknown (-1): an ablation needs labelled test videos")

    return fit_on, (val_probs, val_labels, val_ids, classes), (test_probs, test_labels, test_ids), run_of


def _groups_and_support(runs, fit_on: str, val_ids, test_ids, val_labels):
    """(the dataset's description, the test videos' groups, the fitting videos' groups, how many validation groups
    training shares, whether the fitting data support a fitted choice)."""
    info = _dataset_info(runs)
    group_of = info.pop("group_of")
    test_groups = _test_groups(group_of, test_ids)
    shared = None
    if fit_on == "val" and "split_groups" in info:
        train_groups = set(info["split_groups"]["train"])
        val_groups = {group_of[v] for v in val_ids if v in group_of}
        shared = {"shared": len(val_groups & train_groups), "val_groups": len(val_groups)}

    fit_groups = _fit_groups(runs[0], fit_on, val_ids, group_of)
    support = fitting_support(
        val_labels,
        fit_groups,
        shared_with_training=shared["shared"] if shared else 0,
        groups_unknown=info.get("manifest_error") if fit_groups is None else None,
    )

    return info, test_groups, fit_groups, shared, support


def _pictures(out, results, fitted, chosen, classes, test_probs, test_labels, intervals) -> dict[str, str]:
    """The confusion matrix of each stream and of the chosen fusions (``chosen``: the best single stream, the best
    fusion, the best of all streams), and the subsets chart: {name: file}."""
    best_single, best_fusion, best_three = chosen
    pictures = {}
    for s in sorted(test_probs, key=stream_key):
        matrix = confusion_matrix(test_labels, test_probs[s].argmax(1), len(classes))
        top1 = 100 * float((test_probs[s].argmax(1) == test_labels).mean())
        plot_confusion(matrix, classes, f"{s} stream (test top-1 {top1:.1f} %)", out / f"confusion_{s}.png")
        pictures[s] = f"confusion_{s}.png"
    for name, row in (("best_fusion", best_fusion), ("all_streams", best_three)):
        if row is None:
            continue
        method = fitted[(tuple(sorted(row["streams"], key=stream_key)), row["method"])]
        matrix = confusion_matrix(test_labels, method.predict({s: test_probs[s] for s in row["streams"]}), len(classes))
        plot_confusion(
            matrix,
            classes,
            f"{label(row['streams'])}, {row['method']} fusion (test top-1 {100 * row['top1']:.1f} %)",
            out / f"confusion_{name}.png",
        )
        pictures[name] = f"confusion_{name}.png"
    plot_subsets(results, best_single, out / "subsets.png", intervals)
    return pictures


def _write_fusion_file(out, default, fitted, best_three, classes, run_of, val_probs, val_labels, calibrate) -> None:
    """fusion.json: the fallback's mean of the streams it kept, or the fusion of all streams chosen on the fitting
    scores, or one stream passed through; nothing when none of these is there."""
    names = sorted(val_probs, key=stream_key)
    if default["rule"] == "fallback":
        # fitting the mean fits nothing but the calibration asked for (temperatures), by --calibrate; of the streams
        # the out-of-group evidence kept (all of them without any)
        kept = default["streams"]
        method = fitted.get((tuple(kept), FALLBACK_METHOD)) or create_method(FALLBACK_METHOD, calibrate=calibrate).fit(
            {s: val_probs[s] for s in kept}, val_labels
        )
        record = fusion_record(method, classes, {s: run_of[s] for s in kept})
        write_json(out / "fusion.json", {**record, "left_out": default["left_out"]} if default["left_out"] else record)
    elif best_three is not None:
        method = fitted[(tuple(sorted(best_three["streams"], key=stream_key)), best_three["method"])]
        write_json(out / "fusion.json", fusion_record(method, classes, {s: run_of[s] for s in best_three["streams"]}))
    elif len(names) == 1:
        # Nothing to fuse: the one stream's scores pass through unchanged (the mean of one), so bin/classify
        # still works from this report.
        passthrough = create_method("mean").fit(val_probs, val_labels)
        write_json(out / "fusion.json", fusion_record(passthrough, classes, run_of))


def fusion_record(method, classes: list[str], runs: dict[str, str]) -> dict:
    """``fusion.json``: a fitted method with the class names it predicts and the (absolute) run of each stream."""
    return {**method.to_json(), "classes": list(classes), "runs": {s: os.path.abspath(r) for s, r in runs.items()}}


def load_fusion(report: str | Path) -> tuple[FusionMethod, list[str], dict[str, Run]]:
    """(the fitted method, its class names, {stream: Run}) of ``REPORT/fusion.json``, each run checked against the
    stream it is named for and the classes."""
    fusion_file = Path(report) / "fusion.json"
    if not fusion_file.is_file():
        raise DataError(fusion_file, "no fitted fusion here (run bin/fuse first)")
    fitted = read_json(fusion_file)
    try:
        method = FusionMethod.from_json(fitted)
    except FusionFileError as err:
        raise DataError(fusion_file, str(err)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(fusion_file, f"not a fitted fusion of bin/fuse ({type(err).__name__}: {err})") from None
    classes, paths = fitted.get("classes"), fitted.get("runs")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(fusion_file, f"classes: {classes!r} is not a list of class names")
    if not isinstance(paths, dict) or set(paths) != set(method.streams_):
        raise DataError(fusion_file, f"runs: {paths!r} must name one run for each of streams {method.streams_}")
    runs = {}
    for stream, path in paths.items():
        run = Run.load(path)
        if run.fusion_name != stream:
            raise DataError(fusion_file, f"runs.{stream}: {run.path} is a run of the {run.fusion_name} stream")
        if run.classes != classes:
            raise DataError(fusion_file, f"classes: {run.path} predicts {', '.join(run.classes)}, in that order")
        runs[stream] = run
    return method, classes, runs
