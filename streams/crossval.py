"""Cross-validation of one stream by groups (source videos, performers), from cached preprocessing.

Each fold holds out whole groups: the stream is trained on the others (with its own validation groups, also unseen
in its training, for early stopping) and scores the held-out videos. Every pooled video so gets one out-of-fold
score from a model that never saw its group: ``RUN/scores_oof.npz``, the score-file contract, which ``bin/fuse``
fits its weights on (stacking as it is meant to be done). Fold by fold, a fold's work directory is the original's
preprocessing (linked, not copied) under a manifest whose splits say train / val / test for that fold, and the
training is ``streams.train.train`` unchanged, so a fold resumes like any run.

Outputs in RUN: ``crossval/fold<k>/seed<s>/`` (runs), ``crossval/fold<k>/work/`` (fold manifests),
``scores_oof.npz`` / ``.json``, ``crossval.json`` and ``crossval.md`` (per fold and seed, mean ± sd, and the pooled
out-of-fold accuracy with a bootstrap interval that resamples groups).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from preprocess import DataError, load_manifest
from preprocess.batch import folder_lock, write_json, write_text
from preprocess.records import group_of

from . import scene
from .metrics import classification_metrics
from .sampling import reference_fps
from .scores import read_score_file, write_score_file
from .stats import group_bootstrap_ci

if TYPE_CHECKING:
    from .registry import RunConfig

POOLS = ("trainval", "all")
PROTOCOLS = ("groups", "main-source")


def group_folds(labels: list[str], groups: list[str], folds: int, seed: int) -> list[np.ndarray]:
    """Test indices of each of ``folds`` folds: whole groups, classes balanced as far as groups allow
    (scikit-learn's ``StratifiedGroupKFold``, shuffled by ``seed``; its unstratified ``GroupKFold`` when every class
    has fewer videos than folds)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    count = len(set(groups))
    if folds < 2 or folds > count:
        raise ValueError(f"{folds} folds need between 2 and {count} groups (the data has {count})")
    _, per_class = np.unique(labels, return_counts=True)
    if per_class.max() >= folds:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]


def _fold_without_training(tests, labels, groups, seed: int) -> int | None:
    """The first fold whose training split would be empty once its validation videos are taken, or None."""
    for k, test in enumerate(tests):
        rest = np.setdiff1d(np.arange(len(labels)), test)
        picked, _ = validation_split([labels[i] for i in rest], [groups[i] for i in rest], seed + k)
        if len(rest) - len(rest[picked]) == 0:
            return k
    return None


def _clip_start(video_id: str) -> float | None:
    """The start (seconds) a clip id ``<source>_<start>_<duration>`` names, else None."""
    parts = video_id.rsplit("_", 2)
    try:
        return float(parts[1]) if len(parts) == 3 else None
    except ValueError:
        return None


def main_source_folds(
    labels: list[str], groups: list[str], video_ids: list[str], folds: int | None = None
) -> tuple[list[np.ndarray], list[str]]:
    """(test indices of each fold, one line per class saying what it tests) of the "main source in training"
    protocol.

    Leave-one-source-out on a collection where each style comes mostly from one source video measures "a style
    whose source was removed". Here every class keeps its main group (the one with most clips) in training in every
    fold, and its other groups are held out in turn: fold k tests the k-th largest other group of every class that
    has one (so each fold tests several classes, each on a venue its model never saw), and every such clip gets one
    out-of-group score. ``folds`` caps the number of folds (the groups are then dealt round-robin; 1: every other
    group at once); None: one fold per other group of the class that has most. A class with a single group is split
    into its recordings where the clip ids carry start times (``<source>_<start>_<duration>``: the clips after the
    largest gap between starts, if fewer, are tested); else it is not tested (said). No class with two groups: a
    ``ValueError`` (nothing here would be out-of-group)."""
    labels_a, groups_a = np.asarray(labels), np.asarray(groups)
    units, notes = [], []  # per class: its held-out units (index arrays), largest first
    for c in sorted(set(labels)):
        members = np.flatnonzero(labels_a == c)
        names, counts = np.unique(groups_a[members], return_counts=True)
        main = names[np.argmax(counts)]
        if len(names) > 1:
            others = sorted((n for n in names if n != main), key=lambda n: (-int((groups_a[members] == n).sum()), n))
            units.append([members[groups_a[members] == n] for n in others])
            notes.append(
                f"{c}: main source {main} ({counts.max()} clips) trains; tests "
                + ", ".join(f"{n} ({len(u)})" for n, u in zip(others, units[-1]))
            )
            continue
        starts = [_clip_start(video_ids[i]) for i in members]
        if len(members) < 2 or any(t is None for t in starts):
            notes.append(f"{c}: one source ({main}) and no recording times in its ids: not tested")
            units.append([])
            continue
        order = members[np.argsort(starts)]
        times = np.sort(starts)
        cut = int(np.argmax(np.diff(times))) + 1
        held = order[cut:] if len(order) - cut <= cut else order[:cut]
        notes.append(
            f"{c}: one source ({main}), two recordings split at the largest gap in clip starts "
            f"({times[cut - 1]:g} s → {times[cut]:g} s); tests {len(held)} clips of the smaller"
        )
        units.append([held])
    several = [c for c in sorted(set(labels)) if len(set(groups_a[labels_a == c].tolist())) > 1]
    if not several:
        raise ValueError("main-source protocol: no class has two groups (nothing would be tested on a group unseen)")
    count = max(len(u) for u in units)
    count = count if folds is None else max(1, min(folds, count))
    tests: list[list[np.ndarray]] = [[] for _ in range(count)]
    for per_class in units:
        for j, unit in enumerate(per_class):
            tests[j % count].append(unit)
    return [np.sort(np.concatenate(t)) for t in tests if t], notes


def validation_split(labels: list[str], groups: list[str], seed: int, fraction: float = 0.2) -> tuple[np.ndarray, str]:
    """(indices kept for validation, how they were chosen) within a fold's training part.

    Whole groups, so that early stopping is judged on groups the model does not train on: groups are taken in a
    seeded random order while the validation holds under ``fraction`` of the clips, skipping any group whose removal
    would leave its class with less than half of its training clips (real collections are lopsided: one source
    video can hold nearly all of a style). When no group can be spared, a stratified fifth of the clips is used
    instead, and the summary says that validation shares groups with training."""
    labels_a, groups_a = np.asarray(labels), np.asarray(groups)
    remaining = {c: int((labels_a == c).sum()) for c in set(labels)}
    total = dict(remaining)
    chosen: list[str] = []
    size = 0
    order = np.random.default_rng(seed).permutation(sorted(set(groups)))
    for g in order:
        members = groups_a == g
        lost = {c: int((labels_a[members] == c).sum()) for c in set(labels_a[members])}
        if size + members.sum() > fraction * len(labels):
            continue
        if any(remaining[c] - n < max(1, total[c] / 2) for c, n in lost.items()):
            continue
        chosen.append(str(g))
        size += int(members.sum())
        for c, n in lost.items():
            remaining[c] -= n
    if chosen:
        return np.flatnonzero(np.isin(groups_a, chosen)), f"{len(chosen)} groups"
    from sklearn.model_selection import StratifiedShuffleSplit

    count = max(len(set(labels)), int(round(fraction * len(labels))))
    try:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=count, random_state=seed)
        _, held = next(splitter.split(np.zeros(len(labels)), labels))
    except ValueError:  # a class with a single clip cannot be stratified
        held = np.random.default_rng(seed).permutation(len(labels))[:count]
    return np.sort(held), "clips (no group could be spared: validation shares groups with training)"


def fold_work(work: Path, folder: Path, splits: dict[str, str]) -> Path:
    """A work directory for one fold: WORK's preprocessing folders linked, and WORK's manifest with the splits
    given (video id → train / val / test; other videos dropped)."""
    manifest = load_manifest(work)
    videos = [dataclasses.replace(v, split=splits[v.video_id]) for v in manifest.videos if v.video_id in splits]
    fold = dataclasses.replace(manifest, videos=videos, split={**manifest.split, "source": "crossval fold"})
    folder.mkdir(parents=True, exist_ok=True)
    for entry in work.iterdir():
        link = folder / entry.name
        if entry.is_dir() and not link.exists():
            os.symlink(entry.resolve(), link, target_is_directory=True)
    fold.save(folder)
    return folder


def crossval(config: Mapping, **options) -> dict:
    """Cross-validate ``config['stream']`` over group folds of WORK (see ``_crossval`` and the module), one
    bin/crossval per RUN at a time."""
    with folder_lock(config["run"], "bin/crossval"):  # (the options as given: typed in _crossval)
        return _crossval(config, **options)


def _crossval(
    config: Mapping,
    *,
    folds: int,
    seeds: list[int],
    pool: str = "trainval",
    protocol: str = "groups",
    log=print,
    given=(),
) -> dict:
    """Cross-validate ``config['stream']`` (a ``streams.train`` config; ``given``: the options a user typed) over
    group folds of WORK; see the module. ``protocol="main-source"``: each class's main group in training in every
    fold, its other groups held out in turn (``main_source_folds``, at most ``folds`` folds); only
    those videos get out-of-fold scores."""
    from .registry import run_config

    config = run_config(config, given=given)
    work = Path(config.work)
    manifest = load_manifest(work)
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}: {', '.join(POOLS)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: {', '.join(PROTOCOLS)}")
    videos, labels, groups = _pool_videos(manifest, work, pool)
    if config.training.sample_fps is None:
        # one sampling rate for every fold (a fold's training videos alone might have another median rate)
        config = config.replace(sample_fps=reference_fps(v.fps for v in videos))
    tests, notes = _test_folds(labels, groups, videos, folds, protocol, config.training.seed, work, pool)
    for line in notes:
        log(line)
    oof, rows = _train_folds(config, videos, labels, groups, tests, seeds, len(manifest.classes), log, given)
    scored = np.sort(np.concatenate(tests))  # every video, but under main-source only the tested ones
    videos, labels, groups, oof = (
        [videos[i] for i in scored],
        [labels[i] for i in scored],
        [groups[i] for i in scored],
        oof[scored],
    )
    tests = [np.searchsorted(scored, t) for t in tests]
    return _write_crossval(
        config,
        manifest,
        videos,
        labels,
        groups,
        tests,
        oof,
        rows,
        seeds=seeds,
        pool=pool,
        protocol=protocol,
        notes=notes,
        log=log,
    )


def _pool_videos(manifest, work: Path, pool: str) -> tuple[list, list[str], list[str]]:
    """(videos, labels, groups) of the labelled videos the pool holds; three groups at least."""
    videos = [
        v for v in manifest.videos if v.label in manifest.classes and (pool == "all" or v.split in ("train", "val"))
    ]
    if not videos:
        raise DataError(work / "manifest.json", f"no labelled videos in the {pool} pool")
    groups = [group_of(v) for v in videos]
    if len(set(groups)) < 3:
        raise DataError(
            work / "manifest.json",
            f"{len(set(groups))} groups in the {pool} pool: group cross-validation needs 3 or more "
            "(give groups at ingest: a group column or --group-regex)",
        )
    return videos, [v.label for v in videos], groups


def _test_folds(labels, groups, videos, folds: int, protocol: str, seed: int, work: Path, pool: str):
    """(each fold's test indices, notes on the folds): main-source folds, or group folds the pool is large enough
    for (every fold keeps training videos once its validation groups are taken), else a named error saying how
    many folds it allows."""
    if protocol == "main-source":
        try:
            return main_source_folds(labels, groups, [v.video_id for v in videos], folds)
        except ValueError as error:
            raise DataError(work / "manifest.json", str(error)) from None
    tests = group_folds(labels, groups, folds, seed)
    if _fold_without_training(tests, labels, groups, seed) is None:
        return tests, []
    fewer = [
        k
        for k in range(2, len(tests))
        if _fold_without_training(group_folds(labels, groups, k, seed), labels, groups, seed) is None
    ]
    allowed = f"at most {max(fewer)} folds" if fewer else "no number of folds works: give it more groups"
    raise DataError(
        work / "manifest.json",
        f"the {pool} pool ({len(videos)} videos, {len(set(groups))} groups) is too small for {len(tests)} "
        f"folds: a fold would leave no training video once its validation groups are taken ({allowed})",
    )


def _train_folds(config: RunConfig, videos, labels, groups, tests, seeds, n_classes: int, log, given):
    """Train one run per fold and seed (``RUN/crossval/fold<k>/seed<s>``, its validation groups picked among the
    fold's training groups); (out-of-fold probabilities, the seeds' mean, one row per fold and seed)."""
    from .train import train  # (torch is loaded only when training starts)

    work, root = Path(config.work), Path(config.run) / "crossval"
    oof = np.zeros((len(videos), n_classes), np.float64)
    rows = []
    for k, test in enumerate(tests):
        rest = np.setdiff1d(np.arange(len(videos)), test)
        picked, how = validation_split([labels[i] for i in rest], [groups[i] for i in rest], config.training.seed + k)
        inner = rest[picked]
        splits = {videos[i].video_id: "train" for i in rest}
        splits.update({videos[i].video_id: "val" for i in inner})
        splits.update({videos[i].video_id: "test" for i in test})
        folder = fold_work(work, root / f"fold{k}" / "work", splits)
        held = sorted({groups[i] for i in test})
        log(
            f"fold {k + 1}/{len(tests)}: test groups {', '.join(held)} ({len(test)} videos); "
            f"validation by {how} ({len(inner)} videos); train {len(rest) - len(inner)}"
        )
        index = {videos[i].video_id: i for i in test}
        for seed in seeds:
            fold_run = root / f"fold{k}" / f"seed{seed}"
            result = train(
                config.replace(work=str(folder), run=str(fold_run), seed=seed),
                log=lambda line, k=k, seed=seed: log(f"  [fold {k} seed {seed}] {line}"),
                given=given,
            )
            fold_scores = read_score_file(fold_run, "test")
            for vid, p in zip(fold_scores["video_ids"], fold_scores["probs"]):
                oof[index[vid]] += p / len(seeds)
            rows.append(
                {
                    "fold": k,
                    "seed": seed,
                    "test_groups": held,
                    "test_videos": int(len(test)),
                    "validation": how,
                    "top1": result["test"]["top1"],
                    "macro_f1": result["test"]["macro_f1"],
                    **_hidden_figures(fold_run),
                }
            )
    return oof, rows


def _write_crossval(
    config: RunConfig, manifest, videos, labels, groups, tests, oof, rows, *, seeds, pool, protocol, notes, log
):
    """The cross-validation's summary (per fold, pooled out-of-fold with whole groups resampled, scene reliance),
    written as RUN/crossval.json and .md beside the out-of-fold score file; its line logged."""

    work, run = Path(config.work), Path(config.run)
    y = np.array([manifest.classes.index(label) for label in labels], np.int64)
    pooled = classification_metrics(y, oof)
    hits = oof.argmax(1) == y
    ci = group_bootstrap_ci(hits, np.array(groups), seed=config.training.seed)
    top1 = np.array([r["top1"] for r in rows])
    f1 = np.array([r["macro_f1"] for r in rows])
    name = config.spec.fusion_name  # the name bin/train gives the same stream's scores
    summary = {
        "stream": name,
        "work": str(work),
        "pool": pool,
        "protocol": protocol,
        "protocol_notes": notes,
        "folds": len(tests),
        "seeds": seeds,
        "videos": len(videos),
        "groups": len(set(groups)),
        "classes": manifest.classes,
        "per_fold": rows,
        "top1_mean": float(top1.mean()),
        "top1_sd": float(top1.std(ddof=1)) if len(top1) > 1 else 0.0,
        "macro_f1_mean": float(f1.mean()),
        "macro_f1_sd": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
        "oof_top1": pooled["top1"],
        "oof_macro_f1": pooled["macro_f1"],
        "oof_top1_group_ci95": list(ci),
        "scene_reliance": scene_summary(rows),
        "config": {k: v for k, v in config.as_dict().items() if k not in ("run", "work")},
    }
    write_score_file(
        run,
        "oof",
        video_ids=[v.video_id for v in videos],
        labels=y,
        probs=oof,
        classes=manifest.classes,
        sidecar={
            "stream": name,
            "groups": {v.video_id: g for v, g in zip(videos, groups)},
            "folds": {videos[i].video_id: k for k, test in enumerate(tests) for i in test},
            "metrics": pooled,
            "work": str(work),
        },
    )
    write_json(run / "crossval.json", summary)
    write_text(run / "crossval.md", crossval_markdown(summary))
    log(
        f"{name}: {len(tests)} {'main-source' if protocol == 'main-source' else 'group'} folds x {len(seeds)} seeds: "
        f"top-1 {100 * summary['top1_mean']:.1f} "
        f"± {100 * summary['top1_sd']:.1f} %, out-of-fold {100 * pooled['top1']:.1f} % "
        f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] (groups resampled){_hidden_line(summary)}; {run / 'crossval.md'}"
    )
    return summary


def _hidden_figures(run: Path) -> dict:
    """A fold run's scene reliance (streams.scene): top-1 on its validation and test clips with every person
    hidden, where measured."""
    record = scene.read(run)
    if not record or record.get("status") != "measured":
        return {}
    return {f"hidden_{split}_top1": figures["hidden_top1"] for split, figures in record["splits"].items()}


def hidden_phrases(summary: dict) -> list[str]:
    """A cross-validation summary's hidden-dancer top-1 (mean over folds), as logs say it: ["validation 75.8 %",
    "held-out groups 40.9 %"] (empty when not measured)."""
    reliance = summary.get("scene_reliance") or {}
    return [
        f"{what} {100 * reliance[key]:.1f} %"
        for what, key in (("validation", "hidden_val_top1_mean"), ("held-out groups", "hidden_test_top1_mean"))
        if key in reliance
    ]


def _hidden_line(summary: dict) -> str:
    parts = hidden_phrases(summary)
    return f"; with every person hidden (mean over folds): {', '.join(parts)}" if parts else ""


def scene_summary(rows: list[dict]) -> dict | None:
    """Mean over folds of the hidden-dancer top-1 on validation and on the held-out groups (None if unmeasured)."""
    out = {}
    for split in ("val", "test"):
        values = [r[f"hidden_{split}_top1"] for r in rows if f"hidden_{split}_top1" in r]
        if values:
            out[f"hidden_{split}_top1_mean"] = float(np.mean(values))
    return out or None


def crossval_markdown(s: dict) -> str:
    lines = [
        f"# Cross-validation of the {s['stream']} stream",
        "",
        f"{s['videos']} videos in {s['groups']} groups (pool: {s['pool']}), {s['folds']} folds by group, seeds "
        f"{', '.join(map(str, s['seeds']))}. Each fold's model never saw its test groups, and stopped early on "
        "validation groups it did not train on either.",
        "",
        f"**Top-1 {100 * s['top1_mean']:.1f} ± {100 * s['top1_sd']:.1f} %** (mean ± sd over folds and seeds), macro-F1 "
        f"{100 * s['macro_f1_mean']:.1f} ± {100 * s['macro_f1_sd']:.1f} %. Out-of-fold over all videos: top-1 "
        f"{100 * s['oof_top1']:.1f} % [{100 * s['oof_top1_group_ci95'][0]:.1f}, "
        f"{100 * s['oof_top1_group_ci95'][1]:.1f}] (95 % bootstrap resampling whole groups), macro-F1 "
        f"{100 * s['oof_macro_f1']:.1f} %."
        + (
            f" With {s['groups']} groups this is a smoke test, not a ranking: differences of a few points between "
            "models are within the interval."
            if s["groups"] < 10
            else ""
        ),
        "",
        "| fold | seed | test groups | videos | early stopping on | top-1 % | macro-F1 % | persons hidden: val / test "
        "top-1 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["per_fold"]:
        hidden = " / ".join(
            f"{100 * r[key]:.1f}" if key in r else "–" for key in ("hidden_val_top1", "hidden_test_top1")
        )
        lines.append(
            f"| {r['fold']} | {r['seed']} | {', '.join(r['test_groups'])} | {r['test_videos']} | {r['validation']} | "
            f"{100 * r['top1']:.1f} | {100 * r['macro_f1']:.1f} | {hidden} |"
        )
    reliance = s.get("scene_reliance")
    if reliance:
        lines += [
            "",
            "Scene reliance (streams.scene): mean over folds of the top-1 with every tracked person hidden, on "
            "validation "
            + (f"{100 * reliance['hidden_val_top1_mean']:.1f} %" if "hidden_val_top1_mean" in reliance else "–")
            + " and on the held-out groups "
            + (f"{100 * reliance['hidden_test_top1_mean']:.1f} %" if "hidden_test_top1_mean" in reliance else "–")
            + f" (chance {100 / len(s['classes']):.1f} %). Near chance: the stream reads the dancers; near its "
            "top-1: the scene.",
        ]
    return "\n".join(lines) + "\n"
