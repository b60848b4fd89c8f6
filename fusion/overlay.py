"""Overlay videos: each tracked dancer's skeleton, the flow as colour and the predicted style, drawn over the video
(``bin/classify --overlay``, and ``--live``'s preview and overlay)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from preprocess.batch import atomic_path
from preprocess.flow import stored_params, to_pixels
from preprocess.flow.visualize import flow_to_rgb, wheel_legend
from preprocess.pose.keypoints import COCO_SKELETON
from preprocess.video import read_frames


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
        for a, b in COCO_SKELETON:
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
