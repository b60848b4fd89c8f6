"""Classifying videos with a report against its model bundle: ``bin/benchmark classify``. Seconds per video, per
stage and per stream, for ``--report`` and for ``--model`` with each runtime (PyTorch, ONNX Runtime), on the same
videos in one run.

It runs bin/classify's own function (``fusion.classify.classify``), which adds each step's seconds to ``timings``:
the fused model loaded (``load_fused``: for a bundle, its manifest checked), each stage of the new videos'
preprocessing, each stream's networks loaded and its scores (``Run.score``), the fusion. Small runs as
``bin/benchmark live`` makes them (or ``--report``), exported with ``fusion.bundle.export_bundle``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .common import shared

CLIPS = ("data/streetdance4_train/locking/1001_10_10.mp4", "data/streetdance4_train/popping/2002_179_10.mp4")


def _timed_classify(videos: list[str], scratch: Path, *, report=None, model=None, runtime="torch", device="cpu"):
    """bin/classify's own function (``fusion.classify.classify``, one worker) with its per-step seconds; the fused
    and per-stream probabilities as arrays (videos × classes)."""
    import numpy as np

    from fusion.classify import classify

    seconds = {}
    results, failures = classify(
        videos, report, scratch, device=device, workers=1, model=model, runtime=runtime, timings=seconds
    )
    if failures or len(results) != len(videos):
        raise RuntimeError(f"bin/classify failed: {failures}")
    fused = np.array([list(r["fused"].values()) for r in results])
    probs = {s: np.array([list(r["streams"][s].values()) for r in results]) for s in results[0]["streams"]}
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
