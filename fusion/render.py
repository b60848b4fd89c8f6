"""Writing an ablation for people: the markdown report, the CSV table, the confusion matrices and the subsets
chart (matplotlib PNGs). Nothing here computes or chooses."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from preprocess.batch import atomic_path

from .methods import METHODS
from .scores import label, stream_key

REFERENCE = (
    "Reference, **from another dataset** (Castro et al., *Let's Dance*, 2018; 10 styles, 1,000 real YouTube clips), "
    "for orientation only, not comparable with these figures: frame-level RGB 56.4 %, RGB + flow 68.89 %, "
    "RGB + flow + pose 69.20 %, temporal three-stream 71.6 % top-1."
)


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


def ablation_csv(results: list[dict]) -> str:
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
    return table.getvalue()


def _fallback_paragraph(report, best_single, best_three, default_row) -> str:
    support, default = report["fitting_support"], report["default"]
    counts = f"{support['videos']} fitting videos of {support['classes']} classes" + (
        (
            f", {support['groups']} groups (group purity {support['purity']:.2f})"
            if support.get("purity") is not None
            else f", {support['groups']} groups of one video each"
        )
        if support.get("groups")
        else ""
    )
    fused = default["streams"]
    every = len(fused) == len(report["streams"])
    what = f"the mean of all {len(fused)} streams" if every else f"the mean of {label(fused)}"
    if len(fused) == 1:
        what = f"{fused[0]} alone"
    text = (
        f"**Default fusion (`fusion.json`): {what}, a rule that fits nothing**, because the fitting data cannot "
        f"support a fitted choice: {'; '.join(support['reasons'])} ({counts})."
    )
    for gone in default.get("left_out") or []:
        text += f" **{gone['stream']} is left out**: {gone['reason']}."
    if default.get("basis"):
        text += f" Streams: {default['basis']}."
    if default_row is not None:
        singles = {r["streams"][0]: r for r in report["results"] if r["method"] == "single"}
        against = ", ".join(
            f"{s} {_pct(r['top1'])} % [{_pct(r['top1_ci95'][0])}, {_pct(r['top1_ci95'][1])}]"
            for s, r in sorted(singles.items(), key=lambda item: stream_key(item[0]))
        )
        text += (
            f" Its test top-1: {_pct(default_row['top1'])} % [{_pct(default_row['top1_ci95'][0])}, "
            f"{_pct(default_row['top1_ci95'][1])}]; each single stream on test: {against}. (The stream the fitting "
            f"scores rank first, {best_single['streams'][0]}, is no finding here: those scores could not support "
            "choices.)"
        )
    if best_three is not None:
        text += (
            f" The fitted choice ({best_three['method']}, {_pct(best_three['top1'])} % on test) is shown below for "
            "comparison, not used."
        )
    return text


def ablation_markdown(report, best_single, best_fusion, best_three, pictures, default_row=None) -> str:
    """The report for people: what was fused and how it was judged, the headline, the table of every subset and
    method, seeds, per-class F1 and the pictures."""
    lines = _method_lines(report)
    for paragraph in _headline(report, best_single, best_fusion, best_three, default_row):
        lines += [paragraph, ""]
    lines += _results_table(report)
    lines += _per_class_table(report, best_single, best_three)
    lines += ["", "## Pictures", "", "![stream subsets](subsets.png)", ""]
    lines += [f"![{k}]({v})" for k, v in pictures.items()]
    lines += ["", report["reference"], ""]
    return "\n".join(lines)


def _method_lines(report) -> list[str]:
    """The dataset, the streams and runs, what every method was fitted on, and what the intervals and p mean."""
    lines = [f"# Fusion ablation ({report['date']})", ""]
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
        f"({report['bootstrap_resamples']} resamples); p: against {_single_name(report)}, "
        + (
            "a sign-flip test over whole test groups (McNemar's test one level up)"
            if intervals["resample"] == "groups"
            else "exact McNemar test"
        )
        + ", Holm-adjusted over every comparison in the table. Methods are chosen by their top-1 in folds of "
        "whole fitting groups (never clip-level folds).",
        "",
    ]
    return lines


def _headline(report, best_single, best_fusion, best_three, default_row) -> list[str]:
    """The paragraphs above the table: the fallback's default, cautions (validation sharing groups, ties, one
    stream, few test videos), all streams against the best single one, the best fusion of any subset."""
    headline = []
    if report.get("default", {}).get("rule") == "fallback":
        headline.append(_fallback_paragraph(report, best_single, best_three, default_row))
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
    headline += _all_streams_paragraphs(report, best_single, best_three)
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
    return headline


def _all_streams_paragraphs(report, best_single, best_three) -> list[str]:
    """All streams fused against the best single stream, with the difference's interval and p; ties said."""
    headline = []
    if not best_three:
        return headline
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
        f"against {_single_name(report)}, "
        f"{best_single['streams'][0]}, {_pct(best_single['top1'])} % "
        f"[{_pct(best_single['top1_ci95'][0])}, {_pct(best_single['top1_ci95'][1])}]: a difference of "
        f"{100 * best_three['diff_vs_best_single']:+.1f} points "
        f"[{100 * best_three['diff_vs_best_single_ci95'][0]:+.1f}, "
        f"{100 * best_three['diff_vs_best_single_ci95'][1]:+.1f}] (its interval {sign} zero), p = "
        f"{best_three['p_vs_best_single']:.3g} (Holm-adjusted {best_three['p_holm']:.3g})."
    )
    if len(meta["ties"]) > 1:
        headline.append(
            f"Validation could not tell {len(meta['ties'])} fusions of all streams apart (cross-validated top-1 "
            f"{_pct(best_three['val_cv_top1'])} % each: {', '.join(meta['ties'])}); the chosen one is the "
            "tie-break (the method order mean, weighted, product, max, stacking), not a finding."
        )
    return headline


def _results_table(report) -> list[str]:
    """Every subset and method, one row each; the seeds' line where a stream was trained with several."""
    lines = [
        "| streams | method | top-1 % [95 % CI] | top-5 % | macro P | macro R | macro F1 | "
        "Δ vs best single, points [95 % CI] | p (Holm) | val CV top-1 % | fitted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        mark = (" **◀**" if r.get("chosen") else "") + (" **default**" if r.get("default") else "")
        lines.append(
            f"| {label(r['streams'])} | {r['method']}{mark} | {_pct(r['top1'])} [{_pct(r['top1_ci95'][0])}, "
            f"{_pct(r['top1_ci95'][1])}] | {_pct(r['top5'])} | {_pct(r['macro_precision'])} | "
            f"{_pct(r['macro_recall'])} | {_pct(r['macro_f1'])} | {100 * r['diff_vs_best_single']:+.1f} "
            f"[{100 * r['diff_vs_best_single_ci95'][0]:+.1f}, {100 * r['diff_vs_best_single_ci95'][1]:+.1f}] | "
            f"{r['p_holm']:.3g} | {_pct(r['val_cv_top1'])} | "
            f"{_fmt_params(r['params'])} |"
        )
    lines += [
        "",
        "◀ marks the fusions chosen on the fitting scores (best of all subsets, and best with every stream); "
        "**default** the one `fusion.json` holds.",
        "",
    ]
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
    return lines


def _per_class_table(report, best_single, best_three) -> list[str]:
    """Test F1 per class of the best single stream and of all streams fused."""
    focus = [best_single] + [r for r in (best_three,) if r]
    classes = report["classes"]
    lines = [
        "## Per class (test F1 %)",
        "",
        "| class | " + " | ".join(f"{label(r['streams'])} {r['method']}" for r in focus) + " |",
        "|---|" + "---|" * len(focus),
    ]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(_pct(r["per_class"][c]["f1"]) for r in focus) + " |")
    return lines


def _single_name(report) -> str:
    """How the single stream every row is compared with is named: the best one only where the fitting scores can
    support that choice."""
    if report.get("default", {}).get("rule") == "fallback":
        return "the single stream the fitting scores rank first (a ranking they cannot support)"
    return "the best single stream"


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
