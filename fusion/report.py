"""The fusion ablation: every non-empty subset of streams × every method, fitted on validation, scored on test.

Writes ``REPORT/ablation.{md,json,csv}``, confusion matrices (each stream and the best fusion), a chart comparing the
subsets, and ``fusion.json`` (the chosen three-stream fusion, fitted, for ``bin/classify``).

Choices made without looking at test: the *best single stream* has the best validation top-1; the *chosen fusion*
of a subset is the method with the best cross-validated top-1 on validation (k-fold within validation, so methods
that fit parameters are not flattered by scoring on their own fitting data).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import date
from pathlib import Path

import numpy as np

from preprocess import DataError
from preprocess.batch import atomic_path, write_json, write_text
from preprocess.dataset import load_manifest
from streams.crossval import group_bootstrap_ci
from streams.metrics import classification_metrics, confusion_matrix, per_class_prf

from .methods import METHODS, create_method
from .scores import align, load_scores
from .stats import (
    bootstrap_ci,
    cross_validated_top1,
    group_bootstrap_difference,
    holm,
    mcnemar_exact,
    paired_bootstrap_difference,
    wilson_interval,
)

REFERENCE = (
    "Reference, **from another dataset** (Castro et al., *Let's Dance*, 2018; 10 styles, 1,000 real YouTube clips), "
    "for orientation only, not comparable with these figures: frame-level RGB 56.4 %, RGB + flow 68.89 %, "
    "RGB + flow + pose 69.20 %, temporal three-stream 71.6 % top-1."
)
DEFAULT_METHODS = ("mean", "weighted", "product", "max", "stacking")
STREAM_ORDER = {"rgb": 0, "flow": 1, "pose": 2}  # the field's usual order; other stream names follow


def stream_key(name: str):
    return (STREAM_ORDER.get(name, len(STREAM_ORDER)), name)


def label(streams) -> str:
    """Display name of a subset in the field's order: rgb+flow+pose."""
    return "+".join(sorted(streams, key=stream_key))


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
    except Exception:  # noqa: BLE001 - the report still stands on the score files alone
        pass
    return info


def carrying_streams(row: dict, threshold: float = 0.05) -> list[str]:
    """The streams of a fusion that carry weight: all of them, unless fitted weights leave some below
    ``threshold`` of the total (then the fusion is, in effect, of the others)."""
    weights = row.get("params", {}).get("weights")
    if not weights:
        return sorted(row["streams"], key=stream_key)
    total = sum(abs(w) for w in weights.values()) or 1.0
    return sorted((s for s, w in weights.items() if abs(w) / total >= threshold), key=stream_key)


def _entry(
    streams,
    method,
    probs,
    labels,
    classes,
    best_single_hits,
    resamples,
    seed,
    params=None,
    cv_top1=None,
    val_top1=None,
    groups=None,
):
    metrics = classification_metrics(labels, probs)
    hits = probs.argmax(1) == labels
    if groups is not None:  # clips of one performer / source video are not independent: resample whole groups
        lo, hi = group_bootstrap_ci(hits, groups, resamples=resamples, seed=seed)
        diff = float(hits.mean() - best_single_hits.mean())
        dlo, dhi = group_bootstrap_difference(hits, best_single_hits, groups, resamples=resamples, seed=seed)
    else:
        lo, hi = bootstrap_ci(hits, resamples=resamples, seed=seed)
        diff, dlo, dhi = paired_bootstrap_difference(hits, best_single_hits, resamples=resamples, seed=seed)
    precision, recall, f1 = per_class_prf(labels, probs.argmax(1), len(classes))
    return {
        # streams sorted by name: the contract other tools rely on
        "streams": sorted(streams),
        "method": method,
        **metrics,
        "top1_ci95": [lo, hi],
        "top1_wilson95": list(wilson_interval(int(hits.sum()), len(hits))),
        "diff_vs_best_single": diff,
        "diff_vs_best_single_ci95": [dlo, dhi],
        "p_vs_best_single": mcnemar_exact(hits, best_single_hits),
        "val_top1": val_top1,
        "val_cv_top1": cv_top1,
        "params": params or {},
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f)}
            for c, p, r, f in zip(classes, precision, recall, f1)
        },
    }


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    size = 1.0 + 0.55 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_subsets(results: list[dict], best_single: dict, path: Path, intervals: dict | None = None) -> None:
    """Test top-1 (%) of every subset × method, subsets in the canonical order (by size, then rgb, flow, pose), the
    fusions chosen on validation marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = sorted(
        {tuple(sorted(r["streams"], key=stream_key)) for r in results},
        key=lambda s: (len(s), [stream_key(n) for n in s]),
    )
    methods = [m for m in ("single", *METHODS) if any(r["method"] == m for r in results)]
    colours = dict(zip(methods, plt.cm.tab10.colors))
    fig, ax = plt.subplots(figsize=(3.2 + 1.3 * len(subsets), 4.4))
    width = 0.8 / max(len(methods) - 1, 1)
    for x, subset in enumerate(subsets):
        rows = [r for r in results if tuple(sorted(r["streams"], key=stream_key)) == subset]
        rows.sort(key=lambda r: methods.index(r["method"]))
        for k, r in enumerate(rows):
            offset = 0 if r["method"] == "single" else (k - (len(rows) - 1) / 2) * width
            lo, hi = r["top1_ci95"]
            top1 = 100 * r["top1"]
            ax.bar(
                x + offset,
                top1,
                width * 0.95,
                color=colours[r["method"]],
                edgecolor="black" if r.get("chosen") else "none",
                linewidth=1.6 if r.get("chosen") else 0,
                label=r["method"],
            )
            ax.errorbar(
                x + offset, top1, yerr=[[top1 - 100 * lo], [100 * hi - top1]], color="black", capsize=2, linewidth=0.8
            )
            if r.get("chosen"):
                ax.annotate(
                    "chosen",
                    (x + offset, 100 * hi),
                    xytext=(0, 4),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                    fontweight="bold",
                )
    ax.axhline(
        100 * best_single["top1"],
        color="grey",
        linestyle="--",
        linewidth=1,
        label=f"best single on validation ({label(best_single['streams'])})",
    )
    ax.set_xticks(range(len(subsets)), [label(s) for s in subsets])
    what = (
        f"resampling {intervals['test_groups']} test groups"
        if intervals and intervals.get("resample") == "groups"
        else "resampling test videos"
    )
    ax.set_ylabel(f"test top-1 % (95 % interval, {what})", fontsize=9)
    ax.set_ylim(0, 110)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Fusion ablation: stream subsets × methods (outlined: chosen on validation)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


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
    runs = [Path(r) for r in runs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fit_on == "auto":
        fit_on = "oof" if all((r / "scores_oof.npz").is_file() for r in runs) else "val"
    if fit_on not in ("oof", "val"):
        raise ValueError(f"unknown fit_on {fit_on!r}: auto, oof or val")
    val_scores = [load_scores(r, fit_on) for r in runs]
    run_of = {v.stream: str(r) for v, r in zip(val_scores, runs)}
    val_probs, val_labels, val_ids, classes = align(val_scores)
    test_probs, test_labels, test_ids, test_classes = align([load_scores(r, "test") for r in runs])
    if test_classes != classes:
        raise ValueError(f"{fit_on} and test score files have different classes")
    overlap = set(val_ids) & set(test_ids)
    if overlap:
        raise DataError(
            runs[0] / f"scores_{fit_on}.npz",
            f"{len(overlap)} of its videos are test videos (e.g. {sorted(overlap)[0]}): fitting on them would score "
            "fusion on its own training data (bin/crossval --pool trainval keeps test out)",
        )
    names = sorted(val_probs, key=stream_key)
    if (test_labels < 0).any():
        raise ValueError("test labels are unknown (-1): an ablation needs labelled test videos")

    info = _dataset_info(runs)
    group_of = info.pop("group_of")
    test_groups = None
    if group_of is not None and all(v in group_of for v in test_ids):
        test_groups = np.array([group_of[v] for v in test_ids])
        if len(set(test_groups)) < 2 or len(set(test_groups)) == len(test_groups):
            test_groups = None  # one group (no spread to resample) or every clip its own group (the clip bootstrap)
    shared = None
    if fit_on == "val" and "split_groups" in info:
        train_groups = set(info["split_groups"]["train"])
        val_groups = {group_of[v] for v in val_ids if v in group_of}
        shared = {"shared": len(val_groups & train_groups), "val_groups": len(val_groups)}

    # Best single stream, chosen on validation.
    val_top1 = {s: float((val_probs[s].argmax(1) == val_labels).mean()) for s in names}
    val_f1 = {s: classification_metrics(val_labels, val_probs[s])["macro_f1"] for s in names}
    best_name = max(names, key=lambda s: (val_top1[s], val_f1[s], s))
    best_hits = test_probs[best_name].argmax(1) == test_labels

    results, fitted = [], {}
    for s in names:
        results.append(
            _entry(
                [s],
                "single",
                test_probs[s],
                test_labels,
                classes,
                best_hits,
                resamples,
                seed,
                val_top1=val_top1[s],
                cv_top1=val_top1[s],
                groups=test_groups,
            )
        )
    for size in range(2, len(names) + 1):
        for subset in itertools.combinations(names, size):
            v = {s: val_probs[s] for s in subset}
            t = {s: test_probs[s] for s in subset}
            for name in methods:
                method = create_method(name, calibrate=calibrate).fit(v, val_labels)
                cv = cross_validated_top1(
                    lambda name=name: create_method(name, calibrate=calibrate), v, val_labels, seed=seed
                )
                fitted[(subset, name)] = method
                results.append(
                    _entry(
                        subset,
                        name,
                        method.predict_proba(t),
                        test_labels,
                        classes,
                        best_hits,
                        resamples,
                        seed,
                        params=method.params(),
                        cv_top1=cv,
                        val_top1=float((method.predict(v) == val_labels).mean()),
                        groups=test_groups,
                    )
                )

    for r in results:  # a run trained with several seeds (bin/train --seeds): its spread over seeds
        if r["method"] == "single":
            side = Path(run_of[r["streams"][0]]) / "scores_test.json"
            per_seed = json.loads(side.read_text()).get("per_seed") if side.is_file() else None
            if per_seed:
                top1 = [m["top1"] for m in per_seed.values()]
                r["seeds"] = {"n": len(top1), "top1_mean": float(np.mean(top1)), "top1_sd": float(np.std(top1, ddof=1))}
    best_single = next(r for r in results if r["method"] == "single" and r["streams"] == [best_name])
    results.sort(key=lambda r: (len(r["streams"]), [stream_key(n) for n in sorted(r["streams"], key=stream_key)]))
    fusions = [r for r in results if r["method"] != "single"]

    def chosen(rows):
        order = {m: i for i, m in enumerate(methods)}
        return max(rows, key=lambda r: (r["val_cv_top1"], len(r["streams"]), -order[r["method"]])) if rows else None

    best_fusion = chosen(fusions)
    best_three = chosen([r for r in fusions if len(r["streams"]) == len(names)])
    for r in results:
        r["chosen"] = r is best_fusion or r is best_three
    # many comparisons against the best single stream: Holm's adjustment of their McNemar p-values
    compared = [r for r in results if r is not best_single]
    for r, adjusted in zip(compared, holm([r["p_vs_best_single"] for r in compared])):
        r["p_holm"] = adjusted
    best_single["p_holm"] = 1.0
    ties = {}
    for key, row in (("best_fusion", best_fusion), ("best_all_streams", best_three)):
        if row is not None:
            pool = fusions if key == "best_fusion" else [r for r in fusions if len(r["streams"]) == len(names)]
            tied = [r for r in pool if abs(r["val_cv_top1"] - row["val_cv_top1"]) < 1e-12]
            ties[key] = [f"{label(r['streams'])} {r['method']}" for r in tied]
    single_ties = [s for s in names if val_top1[s] == val_top1[best_name]]

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
        "best_fusion": _choice(best_fusion, ties.get("best_fusion")),
        "best_all_streams": _choice(best_three, ties.get("best_all_streams")),
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
    _write_csv(out / "ablation.csv", results)

    # Pictures: each stream and the chosen fusions.
    pictures = {}
    for s in names:
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
    plot_subsets(results, best_single, out / "subsets.png", report["intervals"])
    if best_three is not None:
        method = fitted[(tuple(sorted(best_three["streams"], key=stream_key)), best_three["method"])]
        write_json(
            out / "fusion.json",
            {"classes": classes, "runs": {s: run_of[s] for s in best_three["streams"]}, **method.to_json()},
        )
    elif len(names) == 1:
        # Nothing to fuse: the one stream's scores pass through unchanged (the mean of one), so bin/classify
        # still works from this report.
        passthrough = create_method("mean").fit(val_probs, val_labels)
        write_json(out / "fusion.json", {"classes": classes, "runs": run_of, **passthrough.to_json()})
    write_text(out / "ablation.md", _markdown(report, best_single, best_fusion, best_three, pictures))
    return report


def _choice(row: dict | None, ties: list[str] | None) -> dict | None:
    """A chosen fusion as the report's JSON records it: streams, method, the streams carrying weight, ties."""
    if row is None:
        return None
    return {"streams": row["streams"], "method": row["method"], "carrying": carrying_streams(row), "ties": ties}


def _write_csv(path: Path, results: list[dict]) -> None:
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    columns = [
        "streams",
        "method",
        "top1",
        "top1_ci_low",
        "top1_ci_high",
        "top5",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "diff_vs_best_single",
        "diff_ci_low",
        "diff_ci_high",
        "p_vs_best_single",
        "p_holm",
        "val_top1",
        "val_cv_top1",
        "params",
    ]
    writer.writerow(columns)
    for r in results:
        writer.writerow(
            [
                label(r["streams"]),
                r["method"],
                r["top1"],
                *r["top1_ci95"],
                r["top5"],
                r["macro_precision"],
                r["macro_recall"],
                r["macro_f1"],
                r["diff_vs_best_single"],
                *r["diff_vs_best_single_ci95"],
                r["p_vs_best_single"],
                r["p_holm"],
                r["val_top1"],
                r["val_cv_top1"],
                json.dumps(r["params"]),
            ]
        )
    write_text(path, table.getvalue())


def _markdown(report, best_single, best_fusion, best_three, pictures) -> str:
    d = report["dataset"]
    lines = [f"# Fusion ablation ({report['date']})", ""]
    if "root" in d:
        sp = d["splits"]
        lines.append(
            f"Dataset `{d['root']}`: {d['classes']} classes, {d['groups']} groups; split train {sp['train']} / "
            f"val {sp['val']} / test {sp['test']} videos (work directory `{d['work']}`)."
        )
    intervals = report.get("intervals", {"resample": "videos"})
    over = (
        f"resampling whole groups ({intervals['test_groups']} test groups: clips of one performer or source video "
        "are not independent)"
        if intervals["resample"] == "groups"
        else "over test videos"
    )
    lines += [
        f"Streams: {', '.join(report['streams'])} (runs: {', '.join(f'`{r}`' for r in report['runs'])}). "
        f"Every method is fitted on {_fit_description(report)} and scored on the "
        f"{report['test_videos']} test videos. Intervals: 95 % bootstrap {over} "
        f"({report['bootstrap_resamples']} resamples); p: exact McNemar test against the best single stream, "
        "Holm-adjusted over every comparison in the table.",
        "",
    ]
    headline = []
    shared = report.get("validation_shares_groups")
    if shared and shared["shared"]:
        headline.append(
            f"**Caution: validation shares {shared['shared']} of its {shared['val_groups']} groups (performers, "
            "source videos) with training.** Every choice below was made on those validation scores — the best "
            "single stream (validation top-1), each fusion's method and its fitted weights — and they flatter "
            "whatever training and validation groups have in common (a scene, a camera, a performer), not the "
            "dance. Fit on out-of-fold scores instead (`bin/crossval` per stream, then `bin/fuse --fit-on oof`)."
        )
    if len(report.get("best_single_ties", [])) > 1:
        headline.append(
            f"Validation top-1 ties between single streams {', '.join(report['best_single_ties'])}: the best single "
            f"stream ({report['best_single']}) is the tie-break (validation macro-F1, then name)."
        )
    if len(report["streams"]) == 1:
        headline.append(
            f"**One stream given ({report['streams'][0]}): nothing was fused.** Its test top-1 is "
            f"{_pct(best_single['top1'])} % [{_pct(best_single['top1_ci95'][0])}, "
            f"{_pct(best_single['top1_ci95'][1])}]; `fusion.json` passes its scores through unchanged, so "
            "`bin/classify` works from this report."
        )
    if best_three:
        meta = report["best_all_streams"]
        given = f"All {len(best_three['streams'])} streams"
        if meta["carrying"] != sorted(best_three["streams"], key=stream_key):
            weights = best_three["params"].get("weights", {})
            idle = [s for s in best_three["streams"] if s not in meta["carrying"]]
            given = (
                f"All {len(best_three['streams'])} streams given, in effect {label(meta['carrying'])} "
                f"({', '.join(f'{s} weight {weights.get(s, 0):.2f}' for s in idle)})"
            )
        sign = (
            "excludes"
            if best_three["diff_vs_best_single_ci95"][0] > 0 or best_three["diff_vs_best_single_ci95"][1] < 0
            else "includes"
        )
        headline.append(
            f"**{given} ({best_three['method']} fusion, chosen by cross-validated "
            f"validation top-1): {_pct(best_three['top1'])} % test top-1 "
            f"[{_pct(best_three['top1_ci95'][0])}, {_pct(best_three['top1_ci95'][1])}]** "
            f"against the best single stream, "
            f"{best_single['streams'][0]}, {_pct(best_single['top1'])} % "
            f"[{_pct(best_single['top1_ci95'][0])}, {_pct(best_single['top1_ci95'][1])}]: a difference of "
            f"{100 * best_three['diff_vs_best_single']:+.1f} points "
            f"[{100 * best_three['diff_vs_best_single_ci95'][0]:+.1f}, "
            f"{100 * best_three['diff_vs_best_single_ci95'][1]:+.1f}] (its interval {sign} zero), McNemar p = "
            f"{best_three['p_vs_best_single']:.3g} (Holm-adjusted {best_three['p_holm']:.3g})."
        )
        if len(meta["ties"]) > 1:
            headline.append(
                f"Validation could not tell {len(meta['ties'])} fusions of all streams apart (cross-validated top-1 "
                f"{_pct(best_three['val_cv_top1'])} % each: {', '.join(meta['ties'])}); the chosen one is the "
                "tie-break (the method order mean, weighted, product, max, stacking), not a finding."
            )
    if report["test_videos"] < 50 and best_three:
        wl, wh = best_three["top1_wilson95"]
        sl, sh = best_single["top1_wilson95"]
        headline.append(
            f"With only {report['test_videos']} test videos the bootstrap understates uncertainty (it "
            f"collapses to a point at 0 or 100 %); Wilson 95 % intervals: all streams [{_pct(wl)}, {_pct(wh)}], "
            f"best single [{_pct(sl)}, {_pct(sh)}]."
        )
    if best_fusion and best_fusion is not best_three:
        headline.append(
            f"Best fusion of any subset: {label(best_fusion['streams'])} with {best_fusion['method']}, "
            f"{_pct(best_fusion['top1'])} % test top-1."
        )
    for paragraph in headline:
        lines += [paragraph, ""]
    lines += [
        "| streams | method | top-1 % [95 % CI] | top-5 % | macro P | macro R | macro F1 | "
        "Δ vs best single, points [95 % CI] | p (Holm) | val CV top-1 % | fitted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        mark = " **◀**" if r.get("chosen") else ""
        lines.append(
            f"| {label(r['streams'])} | {r['method']}{mark} | {_pct(r['top1'])} [{_pct(r['top1_ci95'][0])}, "
            f"{_pct(r['top1_ci95'][1])}] | {_pct(r['top5'])} | {_pct(r['macro_precision'])} | "
            f"{_pct(r['macro_recall'])} | {_pct(r['macro_f1'])} | {100 * r['diff_vs_best_single']:+.1f} "
            f"[{100 * r['diff_vs_best_single_ci95'][0]:+.1f}, {100 * r['diff_vs_best_single_ci95'][1]:+.1f}] | "
            f"{r['p_holm']:.3g} | {_pct(r['val_cv_top1'])} | "
            f"{_fmt_params(r['params'])} |"
        )
    lines += ["", "◀ marks the fusions chosen on validation (best of all subsets, and best with every stream).", ""]
    seeded = [r for r in report["results"] if r.get("seeds")]
    if seeded:
        lines += [
            "Seeds: "
            + "; ".join(
                f"{r['streams'][0]} trained with {r['seeds']['n']} seeds, test top-1 {_pct(r['seeds']['top1_mean'])} ± "
                f"{_pct(r['seeds']['top1_sd'])} % per seed"
                for r in seeded
            )
            + ". Its row above (and every fusion) uses the seeds' mean probabilities (a seed ensemble).",
            "",
        ]
    focus = [best_single] + [r for r in (best_three,) if r]
    classes = report["classes"]
    lines += [
        "## Per class (test F1 %)",
        "",
        "| class | " + " | ".join(f"{label(r['streams'])} {r['method']}" for r in focus) + " |",
        "|---|" + "---|" * len(focus),
    ]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(_pct(r["per_class"][c]["f1"]) for r in focus) + " |")
    lines += ["", "## Pictures", "", "![stream subsets](subsets.png)", ""]
    lines += [f"![{k}]({v})" for k, v in pictures.items()]
    lines += ["", report["reference"], ""]
    return "\n".join(lines)


def _fit_description(report) -> str:
    if report.get("fit_on") == "oof":
        return (
            f"the out-of-fold scores of the {report['val_videos']} training and validation videos (bin/crossval: "
            "each scored by a model that never saw its group)"
        )
    return f"the {report['val_videos']} validation videos only"


def _fmt_params(params: dict) -> str:
    parts = []
    if "weights" in params:
        parts.append("w " + ", ".join(f"{k} {v:.2f}" for k, v in params["weights"].items()))
    if "temperatures" in params:
        parts.append("T " + ", ".join(f"{k} {v:.2f}" for k, v in params["temperatures"].items()))
    return "; ".join(parts) or "–"
