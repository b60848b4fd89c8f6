"""Classify new videos with trained streams and a fitted fusion: the whole path, from video to style.

::

    REPORT/fusion.json ─┐
    or a model bundle  ─┴► runs (streams.run.Run) ──► the stages they recorded, dependencies first (pose before
                                                       dancer crops) ──► a scratch work directory per recorded
                                                       preprocessing ──► each run's scores ──► fused

The videos are preprocessed with exactly the data parameters each run recorded at training (resize, Farneback, pose
model found by its SHA-256, crops, ...; ``RUN/preprocessing.json``) and this machine's execution settings (device),
each stream scores them with its best checkpoint (every seed's, for a --seeds run; or its ONNX export) and its
evaluation views, and the fitted fusion (``REPORT/fusion.json`` from ``bin/fuse``) combines the scores.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import numpy as np

from preprocess import DataError, Manifest, Source, VideoRecord, probe
from preprocess.batch import run_batch
from preprocess.stages import STAGE_ORDER, for_this_machine, stage_task
from streams.run import Run

from .methods import FusionMethod
from .report import load_fusion

CAUTION_PROBABILITY = 0.5


def caution(fused: dict, streams: dict) -> str | None:
    """Why a prediction should not be trusted, or None. The rule: the fused top probability is below 50 %, or fewer
    than half of the streams put the fused prediction first (the video may be unlike anything in training: another
    style, camera or framing)."""
    top = max(fused, key=fused.get)
    reasons = []
    if fused[top] < CAUTION_PROBABILITY:
        reasons.append(f"fused top probability {100 * fused[top]:.0f} % < {100 * CAUTION_PROBABILITY:.0f} %")
    firsts = {s: max(p, key=p.get) for s, p in streams.items()}
    agree = sum(1 for c in firsts.values() if c == top)
    if len(firsts) > 1 and agree < len(firsts) / 2:
        reasons.append(
            f"only {agree} of {len(firsts)} streams put {top} first ("
            + ", ".join(f"{s}: {c}" for s, c in firsts.items())
            + ")"
        )
    return "; ".join(reasons) or None


def load_fused(report=None, model=None) -> tuple[FusionMethod, list[str], dict[str, Run], tuple[Path, ...]]:
    """(method, classes, {stream: Run}, pose model files it carries) of a report (``bin/fuse``'s REPORT) or of a
    model bundle (``bin/export-model``'s folder or archive, checked against its manifest first): one, not both."""
    if (report is None) == (model is None):
        raise DataError("--model" if model else "--report", "give a report (--report) or a model bundle (--model)")
    if model is not None:
        from .bundle import load_bundle

        return load_bundle(model)
    return (*load_fusion(report), ())


def new_video_stages(
    runs: list[Run], *, device: str = "auto", pose_models=()
) -> tuple[dict[str, dict[str, dict]], dict[Path, str]]:
    """({preprocessing key: {stage: the parameters new videos get}}, {run folder: its key}) for ``runs``: runs whose
    recorded stages agree where they share one (as runs of one work directory do) share a scratch work directory,
    its stages in dependency order (pose before the crops that read it), each one computed once. The parameters are
    the recorded data parameters made right for new videos (``preprocess.stages.for_new_videos``: sized as the training
    videos were, the pose model found on this machine by SHA-256, ``pose_models`` a bundle's copy first), with this
    machine's execution settings (``device``)."""
    from preprocess.stages import differences, for_new_videos
    from streams.inference import pick_device

    device = str(pick_device(device))  # (auto: CUDA where there is one)

    groups: list[tuple[dict, int | None]] = []  # (recorded stages, training videos' short side)
    key_of: dict[Path, str] = {}
    for run in runs:
        if any(s not in STAGE_ORDER for s in run.spec.stages):
            raise DataError(
                run.path / "config.json",
                f"bin/classify does not preprocess new videos for a {run.fusion_name} stream yet",
            )
        for k, (stages, side) in enumerate(groups):
            if side == run.video_short_side and not differences(stages, run.stages):
                stages.update(run.stages)
                key_of[run.path] = str(k)
                break
        else:
            groups.append((dict(run.stages), run.video_short_side))
            key_of[run.path] = str(len(groups) - 1)
    out: dict[str, dict[str, dict]] = {}
    for k, (recorded, side) in enumerate(groups):
        stages = {}
        for stage in (s for s in STAGE_ORDER if s in recorded):
            params = for_new_videos(stage, recorded[stage], side, pose_models)
            stages[stage] = for_this_machine(stage, params, device)
        out[str(k)] = stages
    return out, key_of


def preprocess_like(
    runs: list[Run],
    manifest: Manifest,
    scratch: Path,
    workers: int | None,
    *,
    device: str = "auto",
    pose_models=(),
    timings: dict | None = None,
) -> tuple[dict, dict]:
    """Preprocess ``manifest``'s videos for ``runs``: one scratch work directory per preprocessing the runs recorded,
    its stages run in dependency order with the training parameters. ({run folder: its scratch work}, {video id: the
    first failure's line})."""
    folders, failures = {}, {}
    groups, key_of = new_video_stages(runs, device=device, pose_models=pose_models)
    for key, stages in groups.items():
        folder = scratch / f"work{len(folders)}"
        manifest.save(folder)
        folders[key] = folder
        for stage, params in stages.items():
            with _timed(timings, f"stage {stage}"):
                summary = run_batch(
                    stage_task(stage, params, device=params.get("device", "cpu")), manifest, folder, workers=workers
                )
            for failure in summary.failed:
                failures.setdefault(failure["video_id"], failure["error"])
    return {path: folders[key] for path, key in key_of.items()}, failures


@contextlib.contextmanager
def _timed(timings: dict | None, step: str):
    """Add the seconds of the block to ``timings[step]`` (bin/benchmark classify's per-step figures; None: not
    timed)."""
    began = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[step] = timings.get(step, 0.0) + time.perf_counter() - began


def new_video_record(index: int, path: str) -> VideoRecord:
    """The scratch manifest's record of the ``index``-th video given: probed, with an id safe whatever its name
    holds (a newline, a control character, a leading dot: the file stays as it is, only its id is cleaned), or a
    one-line error naming it (a URL, a folder, a file that is not a video)."""
    text = str(path)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise DataError(text, "a URL: bin/classify reads local video files (download it first)")
    if Path(text).is_dir():
        raise DataError(text, "a folder, not a video file (give the videos in it)")
    source = str(Path(text).resolve())
    info = probe(Source(source))
    stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(text).stem).lstrip(".") or "video"
    return VideoRecord(
        f"v{index:04d}_{stem}", "", "test", None, source, info.frame_count, info.fps, info.width, info.height
    )


def classify(
    videos: list[str],
    report: str | Path | None,
    scratch: str | Path,
    *,
    device: str = "auto",
    workers: int | None = None,
    model: str | Path | None = None,
    runtime: str = "torch",
    timings: dict | None = None,
) -> tuple[list[dict], list[str]]:
    """Per video: {video (the path as given), prediction, probability, caution (why not to trust it, or None), fused
    {class: p}, streams {stream: {class: p}}, preprocessed {stage: its scratch work directory}}; and failures.
    The fused model is ``report``'s fusion.json and runs, or the model bundle ``model`` (``fusion.bundle``);
    ``runtime``: the stream networks in PyTorch or (a bundle's) ONNX exports in onnxruntime. ``timings``: a dict
    each step adds its seconds to (loading, each stage, each stream's networks and scoring, the fusion)."""
    with _timed(timings, "load (and check)"):
        method, classes, runs, pose_models = load_fused(report, model)
    scratch = Path(scratch)

    records, typed, failures = _new_video_records(videos)
    if not records:
        return [], failures
    manifest = Manifest(str(scratch), classes, records)
    folders, stage_failures = preprocess_like(
        list(runs.values()), manifest, scratch, workers, device=device, pose_models=pose_models, timings=timings
    )
    failures += list(stage_failures.values())
    failed_ids = set(stage_failures)

    probs_by_stream = _stream_scores(
        runs, folders, records, failed_ids, failures, device=device, runtime=runtime, timings=timings
    )
    done = [
        r for r in records if r.video_id not in failed_ids and all(r.video_id in p for p in probs_by_stream.values())
    ]
    if not done:
        return [], failures
    stacked = {s: np.stack([p[r.video_id] for r in done]) for s, p in probs_by_stream.items()}
    with _timed(timings, "fusion"):
        fused = method.predict_proba(stacked)
    preprocessed = {
        stage: str(folders[run.path]) for run in runs.values() for stage in run.stages if stage in ("pose", "flow")
    }
    results = []
    for k, r in enumerate(done):
        top = int(fused[k].argmax())
        per_class = {c: float(v) for c, v in zip(classes, fused[k])}
        per_stream = {s: {c: float(v) for c, v in zip(classes, stacked[s][k])} for s in stacked}
        results.append(
            {
                "video": typed[r.video_id],
                "source": r.source,
                "video_id": r.video_id,
                "fps": r.fps,
                "prediction": classes[top],
                "probability": float(fused[k, top]),
                "caution": caution(per_class, per_stream),
                "fused": per_class,
                "streams": per_stream,
                "preprocessed": preprocessed,
            }
        )
    return results, failures


def _new_video_records(videos: list[str]) -> tuple[list[VideoRecord], dict[str, str], list[str]]:
    """(a record of each video that opens, {video id: the path as given}, one line per video that does not)."""
    records, typed, failures = [], {}, []
    for i, path in enumerate(videos):
        try:
            record = new_video_record(i, path)
        except DataError as err:
            failures.append(str(err))
            continue
        typed[record.video_id] = str(path)
        records.append(record)
    return records, typed, failures


def _stream_scores(runs, folders, records, failed_ids: set, failures: list, *, device, runtime, timings=None) -> dict:
    """{stream: {video id: probabilities}} of every video each run's stages prepared; a video a stage failed on, or
    a stream gives non-finite scores for, joins ``failed_ids`` (and ``failures``, by name)."""
    probs_by_stream = {}
    for stream, run in runs.items():
        folder = folders[run.path]
        ok = [
            r.video_id
            for r in records
            if r.video_id not in failed_ids
            and all((folder / stage / f"{r.video_id}.json").is_file() for stage in run.spec.stages)
        ]
        failed_ids |= {r.video_id for r in records if r.video_id not in ok}
        if not ok:
            return {}
        with _timed(timings, f"{stream} networks loaded"):
            run.networks(run.device(device), runtime)  # (loaded once and kept: score uses them)
        with _timed(timings, f"stream {stream}"):
            probs, dataset = run.score(folder, "test", video_ids=ok, device=device, runtime=runtime)
        for video, p in zip(dataset.videos, probs):
            if np.isfinite(p).all():
                probs_by_stream.setdefault(stream, {})[video.video_id] = p
            else:  # never a "ballet (nan%)": the video fails by name
                failed_ids.add(video.video_id)
                failures.append(
                    f"{video.source}: the {stream} stream gives non-finite scores (its input holds NaN or Inf)"
                )
    return probs_by_stream


def result_lines(result: dict) -> list[str]:
    """One classified video as a person reads it: the prediction and its frame rate, the caution if any, the fused
    top three, each stream's top three, the overlay written."""
    top = sorted(result["fused"].items(), key=lambda kv: -kv[1])[:3]
    lines = [f"{result['video']}: {result['prediction']} ({100 * result['probability']:.1f}%) at {result['fps']:g} fps"]
    if result["caution"]:
        lines.append(f"  caution: {result['caution']}: it may be unlike the training videos")
    lines.append("  fused   " + "  ".join(f"{c} {100 * p:.1f}%" for c, p in top))
    for stream, probs in result["streams"].items():
        best = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"  {stream:<7} " + "  ".join(f"{c} {100 * p:.1f}%" for c, p in best))
    if "overlay" in result:
        lines.append(f"  overlay {result['overlay']}")
    return lines
