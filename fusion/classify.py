"""Classify new videos with trained streams and a fitted fusion: the whole path, from video to style.

The videos are preprocessed into a scratch work directory with exactly the parameters the training work directory
recorded (resize, Farneback, pose model, ...), each stream scores them with its best checkpoint and its evaluation
views, and the fitted fusion (``REPORT/fusion.json`` from ``bin/fuse``) combines the scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess import DataError, Manifest, Source, VideoRecord, probe
from preprocess.batch import atomic_path, read_json, run_batch
from preprocess.flow import flow_task, stored_params, to_pixels
from preprocess.flow.visualize import flow_to_rgb, wheel_legend
from preprocess.pose import pose_task
from preprocess.video import frames_task, read_frames
from streams.checkpoints import checkpoint_entry, load_checkpoint
from streams.data import create_dataset
from streams.train import build_model, evaluate, pick_device

from .methods import FusionMethod

STAGE_OF = {"rgb": ("frames", frames_task), "flow": ("flow", flow_task), "pose": ("pose", pose_task)}


def stage_params(work: Path, stage: str) -> dict:
    """The parameters a training work directory's stage ran with (its summary, else any video's sidecar)."""
    summary = work / stage / "summary.json"
    if summary.is_file():
        return read_json(summary)["params"]
    for side in sorted((work / stage).glob("*.json")):
        data = read_json(side)
        if "params" in data and "video_id" in data:
            return data["params"]
    raise DataError(work / stage, f"no {stage} parameters recorded in the training work directory")


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


def scratch_params(params: dict, training_short_side: int | None, ratio: float = 1.5) -> dict:
    """A stage's parameters for new videos: the training run's, except that a training resize of ``none`` becomes
    ``short:N`` at the training videos' median short side N, so that a 1080p video is not processed at native size
    when the training videos were 160 × 120 (flow magnitudes, pose input and frame caches all follow the size)."""
    if params.get("resize") == "none" and training_short_side:
        return {**params, "resize": f"short:{int(training_short_side)}"}
    return params


def _training_short_side(work: Path) -> int | None:
    """The training videos' median short side."""
    from preprocess import load_manifest

    try:
        videos = load_manifest(work).videos
    except DataError:
        return None
    return int(np.median([min(v.width, v.height) for v in videos])) if videos else None


def model_runs(run: Path) -> list[Path]:
    """The run folders whose models score for RUN: RUN itself, or each seed's folder of a ``bin/train --seeds`` run
    (whose scores are the seeds' mean)."""
    if (run / "best.pt").is_file():
        return [run]
    side = run / "scores_test.json"
    seeds = read_json(side).get("seed_runs") if side.is_file() else None
    if not seeds:
        raise DataError(run, "neither a trained run (no best.pt) nor a --seeds run (no seed_runs in scores_test.json)")
    return [Path(folder) for folder in seeds.values()]


def classify(
    videos: list[str], report: str | Path, scratch: str | Path, *, device: str = "auto", workers: int = 1
) -> tuple[list[dict], list[str]]:
    """Per video: {video (the path as given), prediction, probability, caution (why not to trust it, or None), fused
    {class: p}, streams {stream: {class: p}}}; and failures."""
    report = Path(report)
    fusion_file = report / "fusion.json"
    if not fusion_file.is_file():
        raise DataError(fusion_file, "no fitted fusion here (run bin/fuse first)")
    fitted = read_json(fusion_file)
    try:
        method = FusionMethod.from_json(fitted)
        classes = list(fitted["classes"])
        runs = dict(fitted["runs"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(fusion_file, f"not a fitted fusion of bin/fuse ({type(err).__name__}: {err})") from None
    scratch = Path(scratch)

    records, failures, typed = [], [], {}
    for i, path in enumerate(videos):
        try:
            info = probe(Source(str(Path(path).resolve())))
        except DataError as err:
            failures.append(str(err))
            continue
        typed[f"v{i:04d}_{Path(path).stem}"] = str(path)
        records.append(
            VideoRecord(
                f"v{i:04d}_{Path(path).stem}",
                "",
                "test",
                None,
                str(Path(path).resolve()),
                info.frame_count,
                info.fps,
                info.width,
                info.height,
            )
        )
    if not records:
        return [], failures
    manifest = Manifest(str(scratch), classes, records)
    manifest.save(scratch)

    probs_by_stream = {}
    failed_ids = set()
    short_sides: dict[Path, int | None] = {}
    for stream, run in runs.items():
        members = model_runs(Path(run))
        config = read_json(members[0] / "config.json")
        kind = config["stream"]  # the run's stream (its fusion name may say more: pose-stgcn-bone)
        if kind not in STAGE_OF:
            raise DataError(
                members[0] / "config.json", f"bin/classify does not preprocess new videos for a {kind} stream yet"
            )
        stage, make_task = STAGE_OF[kind]
        params = stage_params(Path(config["work"]), stage)
        if stage in ("flow", "frames"):  # (pose keypoints are stored in each video's own pixels either way)
            work = Path(config["work"])
            if work not in short_sides:  # read once per work directory, whatever the number of streams
                short_sides[work] = _training_short_side(work)
            params = scratch_params(params, short_sides[work])
        summary = run_batch(make_task(params), manifest, scratch, workers=workers)
        for failure in summary.failed:
            failed_ids.add(failure["video_id"])
            failures.append(failure["error"])
        dev = pick_device({**config, "device": device}, 0)
        ok = [r.video_id for r in records if r.video_id not in failed_ids]
        if not ok:
            return [], failures
        dataset = create_dataset(
            kind, scratch, "test", train=False, options=config, views=config["views"], video_ids=ok
        )
        member_probs = []
        for member in members:  # one model, or every seed of a --seeds run: their mean, as the run's scores are
            model = build_model(config, len(classes))
            model.load_state_dict(checkpoint_entry(load_checkpoint(member / "best.pt"), "model", member / "best.pt"))
            model.to(dev)
            member_probs.append(evaluate(model, dataset, dev, batch_size=config["batch_size"], vote=config["vote"])[0])
        probs = np.mean(member_probs, axis=0)
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


def write_overlay(result: dict, scratch: str | Path, out: str | Path) -> Path:
    """The video with each person slot's skeleton, a flow colour inset and the fused prediction, at the source's
    frame rate (``result["fps"]``), so it plays in step with the original."""
    import cv2

    scratch, vid = Path(scratch), result["video_id"]
    pose = (
        np.load(scratch / "pose" / f"{vid}.npz", allow_pickle=False)
        if (scratch / "pose" / f"{vid}.npz").is_file()
        else None
    )
    flow_path = scratch / "flow" / f"{vid}.npy"
    flow = np.load(flow_path, mmap_mode="r", allow_pickle=False) if flow_path.is_file() else None
    flow_params = stored_params(scratch, vid) if flow is not None else None
    pose_row = {int(f): i for i, f in enumerate(pose["frame_indices"])} if pose is not None else {}
    ranked = sorted(result["fused"].items(), key=lambda kv: -kv[1])[:3]
    caption = f"{result['prediction']} {100 * result['probability']:.0f}%"
    detail = "  ".join(f"{c} {100 * p:.0f}%" for c, p in ranked[1:])
    out = Path(out)
    writer = None
    with atomic_path(out, suffix=".mp4") as tmp:
        for frame in read_frames(result.get("source", result["video"])):
            image = frame.image
            h, w = image.shape[:2]
            scale = max(max(h, w) / 480, 0.45)  # legible on small videos too
            # nothing is drawn over the video but the skeletons: the caption goes in a bar above it, the flow
            # picture and its colour-wheel legend in a panel beside it
            bar, panel = int(34 * scale), max(w // 4, 96)
            if writer is None:
                size = (w + panel, h + bar)
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), result["fps"], size)
            canvas = np.zeros((h + bar, w + panel, 3), np.uint8)
            if frame.index in pose_row:
                row = pose_row[frame.index]
                for slot in np.nonzero(pose["mask"][row])[0]:
                    kp = pose["keypoints"][row, slot]
                    colour = SLOT_COLOURS[slot % len(SLOT_COLOURS)]  # a slot is one tracked dancer: one colour
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
            if flow is not None and frame.index < len(flow):
                field = to_pixels(flow[frame.index], flow_params)
                inset = cv2.cvtColor(flow_to_rgb(field, (flow_params["bound"] or 20.0) / 2), cv2.COLOR_RGB2BGR)
                ih = min(h, max(1, round(inset.shape[0] * panel / inset.shape[1])))
                canvas[bar : bar + ih, w:] = cv2.resize(inset, (panel, ih))
                side = min(panel - 8, max(h - ih - 8, 0))
                if side >= 24:
                    legend = cv2.cvtColor(wheel_legend(side), cv2.COLOR_RGB2BGR)
                    y0, x0 = bar + ih + 4, w + (panel - side) // 2
                    canvas[y0 : y0 + side, x0 : x0 + side] = legend
            cv2.putText(
                canvas,
                caption,
                (int(6 * scale), int(24 * scale)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.8 * scale,
                (255, 255, 255),
                max(1, round(2 * scale)),
                cv2.LINE_AA,
            )
            cv2.putText(
                canvas,
                detail,
                (int((w + panel) * 0.45), int(24 * scale)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5 * scale,
                (200, 200, 200),
                1,
                cv2.LINE_AA,
            )
            writer.write(canvas)
        if writer is not None:
            writer.release()
    return out
