"""One stream trained with several seeds: ``bin/train STREAM WORK RUN --seeds 0,1,2``.

A single training run is one draw: on a few hundred clips two seeds differ by several points. Each seed trains its
own resumable run in ``RUN/seed-<s>``; RUN then holds the seeds' mean probabilities per video as its score files
(``scores_val.npz``, ``scores_test.npz``: a seed ensemble, which fusion reads like any run) with every seed's own
metrics in their sidecars (``per_seed``), and ``seeds.md``: each seed's validation and test top-1 and macro-F1, their
mean ± sd, and the ensemble's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess.batch import DataError, read_json, write_text

from .metrics import classification_metrics
from .registry import spec_of
from .scores import read_score_file, write_score_file
from .train import train


def train_seeds(config: dict, seeds: list[int], log=print, given=()) -> dict:
    """Train ``config`` once per seed and write the ensemble's score files and ``seeds.md`` into config["run"]."""
    if len(seeds) < 2:
        raise ValueError("--seeds needs at least two seeds (one seed is --seed)")
    run = Path(config["run"])
    runs = {}
    for seed in seeds:
        runs[seed] = run / f"seed-{seed}"
        log(f"seed {seed}: {runs[seed]}")
        train({**config, "seed": seed, "run": str(runs[seed])}, log=log, given=given)
    name = spec_of(config).fusion_name
    per_seed, ensemble = {}, {}
    for split in ("val", "test"):
        scores = {seed: read_score_file(folder, split) for seed, folder in runs.items()}
        first = scores[seeds[0]]
        for seed, s in scores.items():
            if not np.array_equal(s["video_ids"], first["video_ids"]):
                raise DataError(runs[seed] / f"scores_{split}.npz", "lists other videos than the first seed's run")
        probs = np.mean([s["probs"] for s in scores.values()], axis=0).astype(np.float32)
        metrics = classification_metrics(first["labels"], probs)
        ensemble[split] = metrics
        for seed, s in scores.items():
            per_seed.setdefault(str(seed), {})[split] = classification_metrics(s["labels"], s["probs"])
        side = read_json(runs[seeds[0]] / f"scores_{split}.json")
        write_score_file(
            run,
            split,
            video_ids=first["video_ids"],
            labels=first["labels"],
            probs=probs,
            classes=first["classes"],
            sidecar={
                **side,
                "stream": name,
                "checkpoint": None,
                "ensemble": f"mean of the probabilities of {len(seeds)} seeds",
                "seeds": seeds,
                "seed_runs": {str(seed): str(folder) for seed, folder in runs.items()},
                "metrics": metrics,
                "per_seed": {seed: m[split] for seed, m in per_seed.items()},
            },
        )
    write_text(run / "seeds.md", _markdown(name, seeds, per_seed, ensemble))
    summary = {split: _spread([per_seed[str(s)][split]["top1"] for s in seeds]) for split in ("val", "test")}
    log(
        f"{name} over {len(seeds)} seeds: test top-1 {100 * summary['test'][0]:.1f} ± "
        f"{100 * summary['test'][1]:.1f} %, the seeds' ensemble {100 * ensemble['test']['top1']:.1f} %; "
        f"{run / 'seeds.md'}"
    )
    return {"per_seed": per_seed, "ensemble": ensemble}


def _spread(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _markdown(stream: str, seeds: list[int], per_seed: dict, ensemble: dict) -> str:
    lines = [
        f"# {stream} stream over {len(seeds)} seeds",
        "",
        "| seed | val top-1 % | val macro-F1 % | test top-1 % | test macro-F1 % |",
        "|---|---|---|---|---|",
    ]
    for seed in seeds:
        m = per_seed[str(seed)]
        lines.append(
            f"| {seed} | {100 * m['val']['top1']:.1f} | {100 * m['val']['macro_f1']:.1f} | "
            f"{100 * m['test']['top1']:.1f} | {100 * m['test']['macro_f1']:.1f} |"
        )
    cells = []
    for split in ("val", "test"):
        for key in ("top1", "macro_f1"):
            mean, sd = _spread([per_seed[str(s)][split][key] for s in seeds])
            cells.append(f"{100 * mean:.1f} ± {100 * sd:.1f}")
    lines.append("| mean ± sd | " + " | ".join(cells) + " |")
    lines.append(
        "| ensemble (mean probabilities) | "
        + " | ".join(f"{100 * ensemble[s][k]:.1f}" for s in ("val", "test") for k in ("top1", "macro_f1"))
        + " |"
    )
    lines += ["", "The score files of this folder are the ensemble's; fusion reads them like any run's.", ""]
    return "\n".join(lines)
