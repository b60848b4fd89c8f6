"""Live classification throughput: ``bin/benchmark live``. Does ``bin/classify --live`` keep up with a 30 fps
640×360 clip on this machine, and how long from a window's last frame to its answer?

Runs trained as a user would make them for real footage, but small (our own runs need no download): the tiny
synthetic set preprocessed with ``bin/demo``'s sizes for real videos (flow at short side 256, frames at 128,
MediaPipe pose on frames of short side 256), each stream trained one epoch with its small preset, fused. Then
``fusion.live.classify_live`` on a real street-dance clip (``shared/data/streetdance4_train``, 640×360, 30 fps):
as fast as it goes (every frame: frames/s against the clip's rate) and played at its own rate (frames dropped,
answer latency). ``--report`` and ``--video`` measure your own runs and clip instead.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from .common import REPO, shared

CLIP = "data/streetdance4_train/locking/1001_10_10.mp4"
TRAIN = ["--epochs", "1", "--min-epoch-clips", "1", "--batch-size", "8", "--views", "1"]


def _bin(*args, cwd=REPO) -> None:
    subprocess.run([sys.executable, str(REPO / "bin" / args[0]), *map(str, args[1:])], check=True, cwd=cwd,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def small_runs(root: Path, log=print, *, pose_step: int = 1, max_persons: int = 4) -> Path:
    """A fitted fusion of small rgb, flow and pose runs preprocessed at real-footage sizes (pose on every
    ``pose_step``-th frame, ``max_persons`` slots); returns its report."""
    work, runs = root / "work", root / "runs"
    log(
        f"making small runs (tiny synthetic set, real-footage sizes, pose every {pose_step}. frame with {max_persons} "
        "slots, one epoch each)"
    )
    _bin("synth", root / "synthetic", "--preset", "tiny", "--seed", 0)
    _bin("ingest", root / "synthetic" / "dataset.csv", work, "--split", "0.5,0.25,0.25")
    _bin("preprocess", "pose", work, work, "--resize", "short:256", "--step", pose_step, "--max-persons", max_persons)
    _bin("preprocess", "flow", work, work, "--resize", "short:256")
    _bin("preprocess", "frames", work, work, "--resize", "short:128")
    for stream, own in (("rgb", ["--preset", "small"]), ("flow", ["--preset", "small"]), ("pose", [])):
        _bin("train", stream, work, runs / stream, *TRAIN, *own)
    _bin("fuse", runs / "rgb", runs / "flow", runs / "pose", "--out", root / "report")
    return root / "report"


def live(
    *,
    report: str | None = None,
    video: str | None = None,
    window: float = 4.0,
    every: float = 1.0,
    pose_step: int = 1,
    max_persons: int = 4,
    log=print,
) -> dict:
    from fusion.live import classify_live
    from preprocess.video import Source, probe

    video = str(video or shared() / CLIP)
    if not Path(video).is_file():
        raise FileNotFoundError(f"{video}: the clip to play is not there (shared/{CLIP}, or give --video)")
    info = probe(Source(video))
    with tempfile.TemporaryDirectory() as tmp:
        report = report or small_runs(Path(tmp), log, pose_step=pose_step, max_persons=max_persons)
        results = {}
        for name, realtime in (("as fast as possible", False), ("at its own rate", True)):
            summary = classify_live(
                video, report, window=window, every=every, realtime=realtime, emit=lambda _: None, log=lambda _: None
            )
            results[name] = summary
            rate = summary["frames"] / summary["seconds"]
            answer = summary["per_answer_ms"].get("window to answer", float("nan"))
            log(
                f"{name}: {summary['frames']} frames in {summary['seconds']:.1f} s = {rate:.1f} frames/s "
                f"({rate / info.fps:.2f}x the clip's {info.fps:g} fps), {summary['dropped']} dropped, "
                f"{summary['updates']} answers, {answer:.0f} ms from a window's last frame to its answer"
            )
            log(
                "  per frame: "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in summary["per_frame_ms"].items())
                + "; per answer: "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in summary["per_answer_ms"].items())
            )
    size = f"{info.width}x{info.height}"
    log(f"clip: {video} ({size}, {info.fps:g} fps, {info.frame_count} frames), {window:g} s windows")
    return results
