"""Stream models and their fusion on real footage, by group folds: ``bin/benchmark crossval WORK OUT``.

Every model is cross-validated over the same folds of whole groups (source videos, performers) of WORK's whole
manifest (``bin/crossval --pool all``), from WORK's cached preprocessing; then the streams are fused by
cross-fitting on their out-of-fold scores (``fusion.crossfit``). Prints one table (mean ± sd over folds, pooled
out-of-fold top-1 with a group-bootstrap interval, wall time per model) and writes OUT/summary.{md,json}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from preprocess.batch import write_json, write_text


def models(synthetic_runs: str | None) -> dict[str, dict]:
    """Model name → training options (on top of streams.train.DEFAULTS)."""
    table = {
        "rgb": {"stream": "rgb"},
        "flow": {"stream": "flow"},  # the default: ImageNet MobileNetV2 (found as bin/train finds it)
        "flow-small": {"stream": "flow", "preset": "small"},  # our small CNN from scratch (the default until issue 20)
        "pose": {"stream": "pose"},
        "pose-lstm": {"stream": "pose", "head": "lstm"},
        "pose-lstm-attention": {"stream": "pose", "head": "lstm_attention"},
        "pose-strong": {"stream": "pose", "skeleton_augment": "strong"},
        "pose-uniform": {"stream": "pose", "pose_sampling": "uniform"},
        "pose-stgcn": {"stream": "pose", "head": "stgcn"},
        "pose-stgcn-bone": {"stream": "pose", "head": "stgcn", "pose_input": "bone"},
        "pose-stgcn-motion": {"stream": "pose", "head": "stgcn", "pose_input": "motion"},
        "pose-stgcn-strong": {
            "stream": "pose",
            "head": "stgcn",
            "skeleton_augment": "strong",
            "pose_sampling": "uniform",
        },
        "rgb-cnn-lstm": {"stream": "rgb", "arch": "sequence", "head": "lstm", "frames": 8},
        "features": {"stream": "features", "head": "lstm", "frames": 16},
        "features-pose": {"stream": "features-pose", "head": "lstm", "frames": 16},
        # the ImageNet MobileNetV2 (--pretrained imagenet, as bin/train finds it): fine-tuned with partial BN, or frozen
        # (bin/extract-features --preset mobilenet_v2 --pretrained FILE --name mobilenet_v2 first) under a head
        # (lr 1e-4: at the default 1e-3 AdamW wrecks the pretrained features in the first epochs: train top-1 stays
        # at chance, 2026-12-02)
        "rgb-mobilenet": {
            "stream": "rgb",
            "preset": "mobilenet_v2",
            "pretrained": "imagenet",
            "partial_bn": True,
            "lr": 1e-4,
        },
        "rgb-mobilenet-frozen": {"stream": "features", "features": "mobilenet_v2", "head": "lstm", "frames": 16},
        # issue 31: training that does not reward the venue (the human-mask confusion loss, background erasing)
        "rgb-confusion": {"stream": "rgb", "human_mask_confusion": 1.0},
        "rgb-erasing": {"stream": "rgb", "background_erasing": 0.5},
        "rgb-confusion-erasing": {"stream": "rgb", "human_mask_confusion": 1.0, "background_erasing": 0.5},
        "flow-confusion": {"stream": "flow", "human_mask_confusion": 1.0},
        "flow-mobilenet": {
            "stream": "flow",
            "preset": "mobilenet_v2",
            "pretrained": "imagenet",
            "partial_bn": True,
            "lr": 1e-4,
        },
    }
    if synthetic_runs:
        for stream in ("rgb", "flow", "pose"):
            table[f"{stream}-synth"] = {"stream": stream, "pretrained": str(Path(synthetic_runs) / stream)}
    return table


def crossval_real(
    work: str,
    out: str,
    *,
    models_wanted: str,
    fuse: str,
    folds: int,
    seed: int,
    synthetic_runs: str | None,
    epochs: int | None,
    protocol: str = "groups",
    pose_work: str | None = None,
    log=print,
) -> dict:
    from fusion.crossfit import crossfit
    from streams.crossval import crossval

    out_dir = Path(out)
    table = models(synthetic_runs)
    wanted = [m.strip() for m in models_wanted.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in table]
    if unknown:
        raise ValueError(f"unknown models {', '.join(unknown)}: {', '.join(table)}")
    results = {}
    for name in wanted:
        options = dict(table[name])
        if epochs:
            options["epochs"] = epochs
        start = time.perf_counter()
        source = pose_work if pose_work and options["stream"] == "pose" else work  # another pose backend's WORK
        summary = crossval(
            {**_defaults(), **options, "work": str(Path(source).resolve()), "run": str(out_dir / name), "seed": seed},
            folds=folds,
            seeds=[seed],
            pool="all",
            protocol=protocol,
            log=lambda line: None,
        )
        summary["wall_s"] = time.perf_counter() - start
        summary["options"] = options
        results[name] = summary
        log(
            f"{name:<14} top-1 {100 * summary['top1_mean']:5.1f} ± {100 * summary['top1_sd']:4.1f} %  out-of-fold "
            f"{100 * summary['oof_top1']:5.1f} % [{100 * summary['oof_top1_group_ci95'][0]:.1f}, "
            f"{100 * summary['oof_top1_group_ci95'][1]:.1f}]  macro-F1 {100 * summary['oof_macro_f1']:5.1f} %  "
            f"{summary['wall_s'] / 60:.1f} min{_hidden_text(summary)}"
        )
    fused = None
    fuse_names = [m.strip() for m in fuse.split(",") if m.strip() and m.strip() in results]
    if len(fuse_names) >= 2 and protocol == "main-source":
        fused = default_path_fusion(out_dir, fuse_names, seed, log)
    elif len(fuse_names) >= 2:
        fused = crossfit({m: out_dir / m for m in fuse_names}, seed=seed)
        s = fused["selected"]
        log(
            f"fusion of {', '.join(fuse_names)}, subset and method chosen inside each fold: top-1 "
            f"{100 * s['top1']:.1f} % [{100 * s['top1_group_ci95'][0]:.1f}, {100 * s['top1_group_ci95'][1]:.1f}], "
            f"macro-F1 {100 * s['macro_f1']:.1f} %; picks {json.dumps(s['picks'])}"
        )
    report = {
        "work": str(work),
        "protocol": protocol,
        "folds": folds,
        "seed": seed,
        "models": results,
        "fusion": fused,
    }
    write_json(out_dir / "summary.json", report)
    write_text(out_dir / "summary.md", _markdown(report))
    return report


def default_path_fusion(out_dir: Path, names: list[str], seed: int, log=print) -> dict:
    """The default path's fusion under the main-source protocol: ``bin/fuse`` of the one fold's runs (fitted on
    their validation scores, which share sources with training here), against every fixed rule."""
    from fusion.report import run_ablation

    runs = [out_dir / name / "crossval" / "fold0" / f"seed{seed}" for name in names]
    report = run_ablation(runs, out_dir / "fusion", resamples=2000, seed=seed, fit_on="val")
    rows = report["results"]
    default = next((r for r in rows if r.get("default")), None)
    best = next(r for r in rows if r["method"] == "single" and r["streams"] == [report["best_single"]])
    singles = {r["streams"][0]: r["top1"] for r in rows if r["method"] == "single"}
    log(
        f"default fusion ({report['default']['rule']}: {report['default']['method']} of "
        f"{'+'.join(report['streams'])}): {100 * default['top1']:.1f} % [{100 * default['top1_ci95'][0]:.1f}, "
        f"{100 * default['top1_ci95'][1]:.1f}]; best single on validation {report['best_single']} "
        f"{100 * best['top1']:.1f} %; on test: " + ", ".join(f"{s} {100 * t:.1f} %" for s, t in singles.items())
        if default
        else "no default fusion row"
    )
    nested = nested_default_fusion(out_dir, names, seed)
    log(
        f"the fallback's stream choice made without each test group in turn (on the others' out-of-group scores): "
        f"{100 * nested['top1']:.1f} % [{100 * nested['top1_group_ci95'][0]:.1f}, "
        f"{100 * nested['top1_group_ci95'][1]:.1f}]; kept per group: "
        + "; ".join(f"{g} {'+'.join(k)}" for g, k in nested["kept"].items())
    )
    return {
        "kind": "default path",
        "nested": nested,
        "default": report["default"],
        "support": report["fitting_support"],
        "rows": [
            {
                "streams": r["streams"],
                "method": r["method"],
                "top1": r["top1"],
                "macro_f1": r["macro_f1"],
                "top1_group_ci95": r["top1_ci95"],
                "default": bool(r.get("default")),
                "chosen": bool(r.get("chosen")),
            }
            for r in rows
        ],
        "report": str(out_dir / "fusion" / "ablation.md"),
    }


def nested_default_fusion(out_dir: Path, names: list[str], seed: int) -> dict:
    """The fallback's choice of streams (``fusion.select.streams_to_fuse``) judged honestly on the main-source
    protocol, where the only out-of-group scores are the tested clips: each test group in turn is fused by the mean
    of the streams chosen on the other test groups' out-of-group scores (and the fold runs' scene reliance), never
    on its own. Returns the pooled top-1 with its group-bootstrap interval and the streams kept for each group."""
    import numpy as np

    from fusion.scores import align, load_scores
    from fusion.select import streams_to_fuse
    from preprocess.batch import read_json
    from streams import scene
    from streams.stats import group_bootstrap_ci

    scores = [load_scores(out_dir / name, "oof") for name in names]
    probs, labels, ids, _ = align(scores)
    recorded = read_json(out_dir / names[0] / "scores_oof.json")["groups"]
    groups = np.array([str(recorded[v]) for v in ids])
    reliance = {
        s.stream: scene.retained(scene.read(out_dir / name / "crossval" / "fold0" / f"seed{seed}"))
        for s, name in zip(scores, names)
    }
    hits = np.zeros(len(ids), bool)
    kept = {}
    for g in sorted(set(groups.tolist())):
        here = groups == g
        others = {s: p[~here] for s, p in probs.items()}
        chosen = streams_to_fuse(sorted(probs), {"probs": others, "labels": labels[~here], "reliance": reliance})
        kept[g] = chosen["streams"]
        mean = np.mean([probs[s][here] for s in chosen["streams"]], axis=0)
        hits[here] = mean.argmax(1) == labels[here]
    ci = group_bootstrap_ci(hits, groups, seed=seed)
    return {"top1": float(hits.mean()), "top1_group_ci95": list(ci), "kept": kept, "videos": int(len(ids))}


def _hidden_cells(summary: dict) -> str:
    reliance = summary.get("scene_reliance") or {}
    return " / ".join(
        f"{100 * reliance[key]:.1f}" if key in reliance else "–"
        for key in ("hidden_val_top1_mean", "hidden_test_top1_mean")
    )


def _hidden_text(summary: dict) -> str:
    """The hidden-dancer top-1 (mean over folds) of a cross-validated model, as the log shows it."""
    from streams.crossval import hidden_phrases

    parts = hidden_phrases(summary)
    return f"  persons hidden: {', '.join(parts)}" if parts else ""


def _defaults() -> dict:
    from streams.registry import DEFAULTS

    return dict(DEFAULTS)


def _markdown(report) -> str:
    any_model = next(iter(report["models"].values()))
    how = (
        "main source of each class in training, its other sources tested: " + "; ".join(any_model["protocol_notes"])
        if report.get("protocol") == "main-source"
        else f"{report['folds']} folds by group"
    )
    lines = [
        f"{any_model['videos']} videos scored, {any_model['groups']} groups, {how} (seed "
        f"{report['seed']}); intervals: 95 % bootstrap resampling whole groups.",
        "",
        "| model | options | top-1 % mean ± sd over folds | out-of-fold top-1 % [95 % CI] | out-of-fold macro-F1 % | "
        "persons hidden: val / held-out top-1 % | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in report["models"].items():
        opts = ", ".join(f"{k} {v}" for k, v in s["options"].items() if k != "stream") or "defaults"
        lines.append(
            f"| {name} | {opts} | {100 * s['top1_mean']:.1f} ± {100 * s['top1_sd']:.1f} | {100 * s['oof_top1']:.1f} "
            f"[{100 * s['oof_top1_group_ci95'][0]:.1f}, {100 * s['oof_top1_group_ci95'][1]:.1f}] | "
            f"{100 * s['oof_macro_f1']:.1f} | {_hidden_cells(s)} | {s['wall_s'] / 60:.1f} min |"
        )
    fused = report["fusion"]
    if fused and fused.get("nested"):
        nested = fused["nested"]
        lines += [
            "",
            f"The fallback's choice of streams, made for each test group on the other test groups' out-of-group "
            f"scores: **{100 * nested['top1']:.1f} %** [{100 * nested['top1_group_ci95'][0]:.1f}, "
            f"{100 * nested['top1_group_ci95'][1]:.1f}] over {nested['videos']} clips; kept: "
            + "; ".join(f"{g} {'+'.join(k)}" for g, k in nested["kept"].items()),
        ]
    if fused and fused.get("kind") == "default path":
        lines += [
            "",
            f"Fusion as the default path makes it (bin/fuse on the runs' validation scores; "
            f"rule: {fused['default']['rule']}, {fused['default']['method']}):",
            "",
        ]
        lines += ["| streams | method | test top-1 % [95 % CI] | macro-F1 % | |", "|---|---|---|---|---|"]
        for r in fused["rows"]:
            mark = "default" if r["default"] else ("fitted choice" if r["chosen"] else "")
            lines.append(
                f"| {'+'.join(r['streams'])} | {r['method']} | {100 * r['top1']:.1f} "
                f"[{100 * r['top1_group_ci95'][0]:.1f}, {100 * r['top1_group_ci95'][1]:.1f}] | "
                f"{100 * r['macro_f1']:.1f} | {mark} |"
            )
    elif fused:
        lines += ["", "Fusion by cross-fitting (each fold fused by weights fitted on the other folds):", ""]
        lines += ["| streams | method | top-1 % [95 % CI] | macro-F1 % |", "|---|---|---|---|"]
        for r in fused["rows"]:
            lines.append(
                f"| {'+'.join(r['streams'])} | {r['method']} | {100 * r['top1']:.1f} "
                f"[{100 * r['top1_group_ci95'][0]:.1f}, {100 * r['top1_group_ci95'][1]:.1f}] | "
                f"{100 * r['macro_f1']:.1f} |"
            )
        s = fused["selected"]
        lines += [
            "",
            f"**Selected inside each fold (nested, the honest figure): {100 * s['top1']:.1f} % "
            f"[{100 * s['top1_group_ci95'][0]:.1f}, {100 * s['top1_group_ci95'][1]:.1f}]**, macro-F1 "
            f"{100 * s['macro_f1']:.1f} %; picks: "
            + "; ".join(f"fold {p['fold']} {'+'.join(p['streams'])} {p['method']}" for p in s["picks"]),
        ]
    return "\n".join(lines) + "\n"
