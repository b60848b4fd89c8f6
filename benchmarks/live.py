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

import tempfile
import time
from pathlib import Path

from .common import run_bin, shared

CLIP = "data/streetdance4_train/locking/1001_10_10.mp4"
TRAIN = ["--epochs", "1", "--min-epoch-clips", "1", "--batch-size", "8", "--views", "1"]


def small_runs(root: Path, log=print, *, pose_step: int = 1, max_persons: int = 4) -> Path:
    """A fitted fusion of small rgb, flow and pose runs preprocessed at real-footage sizes (pose on every
    ``pose_step``-th frame, ``max_persons`` slots); returns its report."""
    work, runs = root / "work", root / "runs"
    log(
        f"making small runs (tiny synthetic set, real-footage sizes, pose every {pose_step}. frame with {max_persons} "
        "slots, one epoch each)"
    )
    run_bin("synth", root / "synthetic", "--preset", "tiny", "--seed", 0)
    run_bin("ingest", root / "synthetic" / "dataset.csv", work, "--split", "0.5,0.25,0.25")
    pose = ["--resize", "short:256", "--step", pose_step, "--max-persons", max_persons]
    run_bin("preprocess", "pose", work, work, *pose)
    run_bin("preprocess", "flow", work, work, "--resize", "short:256")
    run_bin("preprocess", "frames", work, work, "--resize", "short:128")
    for stream, own in (("rgb", ["--preset", "small"]), ("flow", ["--preset", "small"]), ("pose", [])):
        run_bin("train", stream, work, runs / stream, *TRAIN, *own)
    run_bin("fuse", runs / "rgb", runs / "flow", runs / "pose", "--out", root / "report")
    return root / "report"


def live(
    *,
    report: str | None = None,
    video: str | None = None,
    window: float = 4.0,
    every: float = 1.0,
    pose_step: int = 1,
    max_persons: int = 4,
    sample_fps: float | None = None,
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
        results = {"alone": stages_alone(video, report, log)}
        for name, realtime in (("as fast as possible", False), ("at its own rate", True)):
            summary = classify_live(
                video,
                report,
                window=window,
                every=every,
                realtime=realtime,
                sample_fps=sample_fps,
                emit=lambda _: None,
                log=lambda _: None,
            )
            results[name] = summary
            rate = summary["frames"] / summary["seconds"]
            answer = summary["per_answer_ms"].get("window to answer", float("nan"))
            speed = summary["source_seconds"] / summary["seconds"]  # (at its own rate: 1, dropping when behind)
            log(
                f"{name}, taken at {summary['sample_fps']:g} fps of the clip's {info.fps:g}: {summary['frames']} "
                f"frames in {summary['seconds']:.1f} s = {rate:.1f} frames/s, {speed:.2f}x real time, "
                f"{summary['dropped']} dropped, "
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


def stages_alone(video: str, report, log=print, frames: int = 150) -> dict:
    """Each live stage of the runs by itself on the clip's first ``frames`` frames, decoded beforehand, one frame
    after another (``LiveStages`` with that stage only): ms of wall and CPU time a frame, and so the most frames a
    second that stage can go, whatever the cores (a stage does its frames in order)."""
    from fusion.classify import new_video_stages
    from fusion.report import load_fusion
    from preprocess.live import LiveSource, LiveStages

    source = LiveSource(video, realtime=False)
    clip = []
    for frame in source.frames():
        clip.append(frame)
        if len(clip) == frames:
            break
    _, _, runs = load_fusion(report)
    out = {}
    for stages in new_video_stages(list(runs.values()))[0].values():
        for stage, params in stages.items():
            alone = LiveStages(
                {stage: params}, fps=source.fps, width=source.width, height=source.height, source=video, keep=4
            )
            try:
                alone.add(clip[0])
                alone.wait(1)  # (the first frame starts the model: not counted)
                wall, cpu = time.perf_counter(), time.process_time()
                for frame in clip[1:]:
                    alone.add(frame)
                alone.wait(len(clip))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            finally:
                alone.close()
            n = len(clip) - 1
            out[stage] = {"wall_ms": 1000 * wall / n, "cpu_ms": 1000 * cpu / n, "max_fps": n / wall}
            what = ", ".join(filter(None, [params.get("backend"), f"every {params.get('step', 1)}. frame"]))
            log(
                f"{stage} stage alone ({what}): {out[stage]['wall_ms']:.1f} ms a frame "
                f"({out[stage]['cpu_ms']:.1f} ms CPU), so at most {out[stage]['max_fps']:.1f} frames/s"
            )
    return out
