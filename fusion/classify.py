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

import os
import re
from pathlib import Path

import numpy as np

from preprocess import DataError, Manifest, Source, VideoRecord, probe
from preprocess.batch import atomic_path, read_json, run_batch
from preprocess.flow import stored_params, to_pixels
from preprocess.flow.visualize import flow_to_rgb, wheel_legend
from preprocess.stages import STAGE_ORDER, for_this_machine, stage_task
from preprocess.video import read_frames
from streams.run import Run

from .methods import FusionFileError, FusionMethod

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


def load_fusion(report: str | Path) -> tuple[FusionMethod, list[str], dict[str, Run]]:
    """(the fitted method, its class names, {stream: Run}) of ``REPORT/fusion.json``, each run checked against the
    stream it is named for and the classes."""
    fusion_file = Path(report) / "fusion.json"
    if not fusion_file.is_file():
        raise DataError(fusion_file, "no fitted fusion here (run bin/fuse first)")
    fitted = read_json(fusion_file)
    try:
        method = FusionMethod.from_json(fitted)
    except FusionFileError as err:
        raise DataError(fusion_file, str(err)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(fusion_file, f"not a fitted fusion of bin/fuse ({type(err).__name__}: {err})") from None
    classes, paths = fitted.get("classes"), fitted.get("runs")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(fusion_file, f"classes: {classes!r} is not a list of class names")
    if not isinstance(paths, dict) or set(paths) != set(method.streams_):
        raise DataError(fusion_file, f"runs: {paths!r} must name one run for each of streams {method.streams_}")
    runs = {}
    for stream, path in paths.items():
        run = Run.load(path)
        if run.name != stream:
            raise DataError(fusion_file, f"runs.{stream}: {run.path} is a run of the {run.name} stream")
        if run.classes != classes:
            raise DataError(fusion_file, f"classes: {run.path} predicts {', '.join(run.classes)}, in that order")
        runs[stream] = run
    return method, classes, runs


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

    device = str(pick_device({"device": device}, 0))  # (auto: CUDA where there is one)

    groups: list[tuple[dict, int | None]] = []  # (recorded stages, training videos' short side)
    key_of: dict[Path, str] = {}
    for run in runs:
        if any(s not in STAGE_ORDER for s in run.spec.stages):
            raise DataError(
                run.path / "config.json", f"bin/classify does not preprocess new videos for a {run.name} stream yet"
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
    runs: list[Run], manifest: Manifest, scratch: Path, workers: int | None, *, device: str = "auto", pose_models=()
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
            summary = run_batch(
                stage_task(stage, params, device=params.get("device", "cpu")), manifest, folder, workers=workers
            )
            for failure in summary.failed:
                failures.setdefault(failure["video_id"], failure["error"])
    return {path: folders[key] for path, key in key_of.items()}, failures


def overlay_names(videos: list[str]) -> dict[str, str]:
    """``<name>_overlay.mp4`` for each video path, unique: a stem that two videos share takes as many of its parent
    folders as tell them apart (``a/clip.mp4`` → ``a_clip_overlay.mp4``, ``b/clip.mp4`` → ``b_clip_overlay.mp4``)."""
    parts = {v: Path(os.path.abspath(v)).with_suffix("").parts for v in dict.fromkeys(videos)}
    names = {}
    for video, own in parts.items():
        depth = 1
        while depth < len(own):
            clash = [o for v, o in parts.items() if v != video and o[-depth:] == own[-depth:]]
            if not clash:
                break
            depth += 1
        names[video] = "_".join(p.strip(os.sep) or "root" for p in own[-depth:]) + "_overlay.mp4"
    return names


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
) -> tuple[list[dict], list[str]]:
    """Per video: {video (the path as given), prediction, probability, caution (why not to trust it, or None), fused
    {class: p}, streams {stream: {class: p}}, preprocessed {stage: its scratch work directory}}; and failures.
    The fused model is ``report``'s fusion.json and runs, or the model bundle ``model`` (``fusion.bundle``);
    ``runtime``: the stream networks in PyTorch or (a bundle's) ONNX exports in onnxruntime."""
    method, classes, runs, pose_models = load_fused(report, model)
    scratch = Path(scratch)

    records, failures, typed = [], [], {}
    for i, path in enumerate(videos):
        try:
            record = new_video_record(i, path)
        except DataError as err:
            failures.append(str(err))
            continue
        typed[record.video_id] = str(path)
        records.append(record)
    if not records:
        return [], failures
    manifest = Manifest(str(scratch), classes, records)
    folders, stage_failures = preprocess_like(
        list(runs.values()), manifest, scratch, workers, device=device, pose_models=pose_models
    )
    failures += list(stage_failures.values())
    failed_ids = set(stage_failures)

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
            return [], failures
        probs, dataset = run.score(folder, "test", video_ids=ok, device=device, runtime=runtime)
        for video, p in zip(dataset.videos, probs):
            if np.isfinite(p).all():
                probs_by_stream.setdefault(stream, {})[video.video_id] = p
            else:  # never a "ballet (nan%)": the video fails by name
                failed_ids.add(video.video_id)
                failures.append(
                    f"{video.source}: the {stream} stream gives non-finite scores (its input holds NaN or Inf)"
                )

    done = [
        r for r in records if r.video_id not in failed_ids and all(r.video_id in p for p in probs_by_stream.values())
    ]
    if not done:
        return [], failures
    stacked = {s: np.stack([p[r.video_id] for r in done]) for s, p in probs_by_stream.items()}
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


COCO_EDGES = (
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
)
SLOT_COLOURS = ((0, 215, 255), (255, 128, 0), (80, 220, 80), (220, 80, 220), (0, 128, 255), (255, 255, 0))


def write_overlay(result: dict, out: str | Path) -> Path:
    """The video with each person slot's skeleton, a flow colour inset and the fused prediction, at the source's
    frame rate (``result["fps"]``), so it plays in step with the original. Pose and flow come from the scratch work
    directories ``classify`` made (``result["preprocessed"]``)."""
    import cv2

    vid = result["video_id"]
    pose_work, flow_work = (Path(result["preprocessed"].get(s, "/nonexistent")) for s in ("pose", "flow"))
    pose_path = pose_work / "pose" / f"{vid}.npz"
    pose = np.load(pose_path, allow_pickle=False) if pose_path.is_file() else None
    flow_path = flow_work / "flow" / f"{vid}.npy"
    flow = np.load(flow_path, mmap_mode="r", allow_pickle=False) if flow_path.is_file() else None
    flow_params = stored_params(flow_work, vid) if flow is not None else None
    pose_row = {int(f): i for i, f in enumerate(pose["frame_indices"])} if pose is not None else {}
    caption, detail = overlay_caption(result)
    out = Path(out)
    writer = None
    with atomic_path(out, suffix=".mp4") as tmp:
        for frame in read_frames(result.get("source", result["video"])):
            skeletons = []
            if frame.index in pose_row:
                row = pose_row[frame.index]
                skeletons = [(slot, pose["keypoints"][row, slot]) for slot in np.nonzero(pose["mask"][row])[0]]
            field, bound = None, None
            if flow is not None and frame.index < len(flow):
                field, bound = to_pixels(flow[frame.index], flow_params), flow_params["bound"] or 20.0
            canvas = overlay_frame(frame.image, skeletons, field, bound, caption, detail)
            if writer is None:
                size = (canvas.shape[1], canvas.shape[0])
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), result["fps"], size)
            writer.write(canvas)
        if writer is not None:
            writer.release()
    return out


def overlay_caption(result: dict) -> tuple[str, str]:
    """(the prediction and its probability, the next two styles): the bar above an overlay."""
    ranked = sorted(result["fused"].items(), key=lambda kv: -kv[1])[:3]
    caption = f"{result['prediction']} {100 * result['probability']:.0f}%"
    return caption, "  ".join(f"{c} {100 * p:.0f}%" for c, p in ranked[1:])


def overlay_frame(image: np.ndarray, skeletons, field, bound, caption: str, detail: str) -> np.ndarray:
    """One overlay frame (BGR): the video frame with ``skeletons`` ((slot, keypoints (17, 3) in its pixels), one
    colour per slot) drawn on it, ``caption`` and ``detail`` in a bar above it and the flow ``field`` (pixels) as a
    colour-wheel picture (saturating at half of ``bound``) with its legend in a panel beside it: nothing but the
    skeletons is drawn over the video."""
    import cv2

    image = image.copy()
    h, w = image.shape[:2]
    scale = max(max(h, w) / 480, 0.45)  # legible on small videos too
    bar, panel = int(34 * scale), max(w // 4, 96)
    canvas = np.zeros((h + bar, w + panel, 3), np.uint8)
    for slot, kp in skeletons:
        colour = SLOT_COLOURS[int(slot) % len(SLOT_COLOURS)]  # a slot is one tracked dancer: one colour
        for a, b in COCO_EDGES:
            if kp[a, 2] > 0.2 and kp[b, 2] > 0.2:
                cv2.line(
                    image,
                    tuple(np.round(kp[a, :2]).astype(int)),
                    tuple(np.round(kp[b, :2]).astype(int)),
                    colour,
                    max(1, round(2 * scale)),
                    cv2.LINE_AA,
                )
    canvas[bar:, :w] = image
    if field is not None:
        inset = cv2.cvtColor(flow_to_rgb(field, bound / 2), cv2.COLOR_RGB2BGR)
        ih = min(h, max(1, round(inset.shape[0] * panel / inset.shape[1])))
        canvas[bar : bar + ih, w:] = cv2.resize(inset, (panel, ih))
        side = min(panel - 8, max(h - ih - 8, 0))
        if side >= 24:
            legend = cv2.cvtColor(wheel_legend(side), cv2.COLOR_RGB2BGR)
            y0, x0 = bar + ih + 4, w + (panel - side) // 2
            canvas[y0 : y0 + side, x0 : x0 + side] = legend
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(
        canvas, caption, (int(6 * scale), int(24 * scale)), font, 0.8 * scale, (255, 255, 255),
        max(1, round(2 * scale)), cv2.LINE_AA,
    )  # fmt: skip
    cv2.putText(
        canvas, detail, (int((w + panel) * 0.45), int(24 * scale)), font, 0.5 * scale, (200, 200, 200), 1, cv2.LINE_AA
    )
    return canvas
