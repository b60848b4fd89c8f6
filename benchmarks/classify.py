"""Classifying videos with a report against its model bundle: ``bin/benchmark classify``. Seconds per video, per
stage and per stream, for ``--report`` and for ``--model`` with each runtime (PyTorch, ONNX Runtime), on the same
videos in one run.

It times the steps ``fusion.classify.classify`` takes, in its order and with its functions: the fused model loaded
(``load_fused``: for a bundle, its manifest checked), each stage of the new videos' preprocessing
(``new_video_stages`` → ``run_batch``), each stream's scores (``Run.score``), the fusion. Small runs as
``bin/benchmark live`` makes them (or ``--report``), exported with ``fusion.bundle.export_bundle``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import shared

CLIPS = ("data/streetdance4_train/locking/1001_10_10.mp4", "data/streetdance4_train/popping/2002_179_10.mp4")


def _timed_classify(videos: list[str], scratch: Path, *, report=None, model=None, runtime="torch", device="cpu"):
    from fusion.classify import load_fused, new_video_record, new_video_stages
    from preprocess import Manifest
    from preprocess.batch import run_batch
    from preprocess.stages import stage_task

    seconds = {}
    began = time.perf_counter()
    method, classes, runs, pose_models = load_fused(report, model)
    seconds["load (and check)"] = time.perf_counter() - began
    records = [new_video_record(i, v) for i, v in enumerate(videos)]
    manifest = Manifest(str(scratch), classes, records)
    folders = {}
    groups, key_of = new_video_stages(list(runs.values()), device=device, pose_models=pose_models)
    for key, stages in groups.items():
        folder = scratch / f"work{len(folders)}"
        manifest.save(folder)
        folders[key] = folder
        for stage, params in stages.items():
            began = time.perf_counter()
            summary = run_batch(stage_task(stage, params, params.get("device", "cpu")), manifest, folder, workers=1)
            seconds[f"stage {stage}"] = seconds.get(f"stage {stage}", 0.0) + time.perf_counter() - began
            if summary.failed:
                raise RuntimeError(f"{stage}: {summary.failed}")
    probs = {}
    for stream, run in runs.items():
        began = time.perf_counter()
        run.networks(run.device(device), runtime)
        seconds[f"{stream} networks loaded"] = time.perf_counter() - began
        began = time.perf_counter()
        probs[stream], _ = run.score(folders[key_of[run.path]], "test", device=device, runtime=runtime)
        seconds[f"stream {stream}"] = time.perf_counter() - began
    began = time.perf_counter()
    fused = method.predict_proba(probs)
    seconds["fusion"] = time.perf_counter() - began
    return seconds, fused, probs


def classify(*, report: str | None = None, videos: tuple = (), device: str = "cpu", log=print) -> dict:
    import numpy as np

    from fusion.bundle import export_bundle

    from .live import small_runs

    clips = [str(v) for v in videos] or [str(shared() / c) for c in CLIPS]
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        root = Path(tmp)
        report = Path(report) if report else small_runs(root / "small", log)
        bundle = export_bundle(report, root / "bundle", log=log)
        modes = {
            "--report (torch)": {"report": report},
            "--model, --runtime torch": {"model": bundle},
            "--model, --runtime onnx": {"model": bundle, "runtime": "onnx"},
        }
        results, answers = {}, {}
        for name, how in modes.items():
            scratch = root / f"scratch{len(results)}"
            scratch.mkdir()
            began = time.perf_counter()
            seconds, fused, probs = _timed_classify(clips, scratch, device=device, **how)
            seconds["whole"] = time.perf_counter() - began
            results[name] = {k: v / len(clips) for k, v in seconds.items()}
            answers[name] = (fused, probs)
        reference = answers["--report (torch)"]
        for name, (fused, probs) in answers.items():
            gap = max(float(np.abs(probs[s] - reference[1][s]).max()) for s in probs)
            same = bool((fused.argmax(1) == reference[0].argmax(1)).all())
            results[name]["largest probability gap to --report"] = gap
            results[name]["same predictions"] = same
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    log(f"{len(clips)} videos ({', '.join(Path(c).name for c in clips)}), device {device}; seconds per video")
    log("| step | " + " | ".join(results) + " |")
    log("|---|" + "---|" * len(results))
    for key in keys:
        cells = []
        for r in results.values():
            value = r.get(key)
            if isinstance(value, bool):
                cells.append("yes" if value else "no")
            elif key.startswith("largest"):
                cells.append(f"{value:.1e}")
            else:
                cells.append("" if value is None else f"{value:.3f}")
        log(f"| {key} | " + " | ".join(cells) + " |")
    return results
