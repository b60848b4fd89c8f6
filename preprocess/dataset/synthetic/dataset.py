"""Write the synthetic dance dataset: videos in a folder per class, ground truth, metadata.

Layout of ``OUT``::

    synth.json                      preset, seed, classes, clip list with per-clip metadata
    dataset.csv                     path,label,group   (group = performer, for group-aware splits)
    videos/<style>/<clip>.mp4       the clips (mp4v), folder-per-class layout
    groundtruth/<clip>.npz          keypoints (T, P, 17, 3): x, y in pixels, COCO visibility 0/1/2;
                                    boxes (T, P, 4): x0, y0, x1, y1 around the in-frame keypoints

Every clip has its own seed derived from (dataset seed, style, index), so the output does not depend on the number
of worker processes or the order they finish in. Performer p has the same body and skin in every style, so a
performer-grouped split keeps a person's clips on one side.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ...batch import Progress, atomic_path, process_pool, read_json, read_npz, write_json, write_npz, write_text
from .render import make_scene, render_clip
from .styles import SIGNATURES, STYLES

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Preset:
    clips_per_style: int
    frames: int
    fps: float
    width: int
    height: int
    performers: int


PRESETS = {
    # Tests: seconds to make, every style present.
    "tiny": Preset(clips_per_style=3, frames=16, fps=12, width=128, height=96, performers=3),
    # The demo: the whole pipeline runs in minutes on 2 CPU cores.
    # 400 clips and 12 performers: a performer-grouped 50/25/25 split leaves 100 test videos, enough to tell a
    # fusion gain from noise.
    "default": Preset(clips_per_style=40, frames=48, fps=12, width=160, height=120, performers=12),
    # GPU machines: Let's Dance-like 10 s clips at a larger size.
    "large": Preset(clips_per_style=200, frames=150, fps=15, width=320, height=240, performers=40),
}


def clip_seed(seed: int, style_index: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, style_index, index])


def performer_seed(seed: int, performer: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, 1_000_003, performer])


def build_scene(style: str, index: int, preset: Preset, seed: int):
    """The scene of clip ``index`` of ``style``: a pure function of its arguments."""
    style_index = STYLES.index(style)
    performer = (index + style_index) % preset.performers  # every performer dances every style
    return make_scene(
        style,
        np.random.default_rng(clip_seed(seed, style_index, index)),
        width=preset.width,
        height=preset.height,
        fps=preset.fps,
        frames=preset.frames,
        performer_rng=np.random.default_rng(performer_seed(seed, performer)),
        performer=performer,
    )


def clip_id(style: str, index: int) -> str:
    return f"{style}_{index:04d}"


def _bounding_boxes(keypoints: np.ndarray) -> np.ndarray:
    """(T, P, 4) boxes around keypoints with visibility > 0 (zeros when none are in the frame)."""
    valid = keypoints[..., 2] > 0
    big = np.float32(1e9)
    x, y = keypoints[..., 0], keypoints[..., 1]
    x0 = np.where(valid, x, big).min(-1)
    y0 = np.where(valid, y, big).min(-1)
    x1 = np.where(valid, x, -big).max(-1)
    y1 = np.where(valid, y, -big).max(-1)
    boxes = np.stack([x0, y0, x1, y1], -1)
    boxes[~valid.any(-1)] = 0
    return boxes.astype(np.float32)


def write_clip(out: Path, style: str, index: int, preset: Preset, seed: int) -> dict:
    """Render one clip to its video and ground-truth files (each written atomically); return its metadata."""
    scene = build_scene(style, index, preset, seed)
    cid = clip_id(style, index)
    video_path = out / "videos" / style / f"{cid}.mp4"
    keypoints = []
    with atomic_path(video_path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), preset.fps, (preset.width, preset.height))
        if not writer.isOpened():
            raise RuntimeError(f"{video_path}: OpenCV cannot open an mp4v video writer")
        for frame, kp in render_clip(scene):
            writer.write(frame)
            keypoints.append(kp)
        writer.release()
    keypoints = np.stack(keypoints)
    write_npz(out / "groundtruth" / f"{cid}.npz", keypoints=keypoints, boxes=_bounding_boxes(keypoints))
    return {
        "id": cid,
        "style": style,
        "label": STYLES.index(style),
        "performer": f"p{scene.performer:02d}",
        "video": f"videos/{style}/{cid}.mp4",
        "groundtruth": f"groundtruth/{cid}.npz",
        "frames": preset.frames,
        "fps": preset.fps,
        "width": preset.width,
        "height": preset.height,
        "mirrored": scene.mirrored,
        "occluder": scene.occluder is not None,
        **scene.meta,
    }


def _write_clip_job(args):
    return write_clip(*args)


def generate(
    out: str | os.PathLike,
    preset: str = "default",
    seed: int = 0,
    workers: int | None = None,
    styles: tuple[str, ...] = STYLES,
) -> dict:
    """Generate the dataset into ``out``; returns the ``synth.json`` content. Deterministic in (preset, seed)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, style, i, spec, seed) for style in styles for i in range(spec.clips_per_style)]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    clips: list[dict] = []
    with Progress(len(jobs), "clips", desc="synth") as progress:
        if workers <= 1:
            for job in jobs:
                clips.append(write_clip(*job))
                progress.advance(frames=spec.frames)
        else:
            with process_pool(workers) as pool:
                for meta in pool.map(_write_clip_job, jobs, chunksize=2):
                    clips.append(meta)
                    progress.advance(frames=spec.frames)

    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["path", "label", "group"])
    for clip in clips:
        writer.writerow([clip["video"], clip["style"], clip["performer"]])
    write_text(out / "dataset.csv", table.getvalue())
    info = {
        "generator": "dance-streams synthetic dancers",
        "generator_version": GENERATOR_VERSION,
        "preset": preset,
        "preset_spec": asdict(spec),
        "seed": seed,
        "classes": list(styles),
        "signatures": {s: SIGNATURES[s].notes for s in styles},
        "clips": clips,
    }
    write_json(out / "synth.json", info)  # written last: its presence means the dataset is complete
    return info


def groundtruth_as_coco(synth: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A COCO keypoint file of a generated dataset's ground truth (every clip, every frame, ``<clip>/<frame>.jpg``
    0-based), for ``bin/preprocess import-pose coco``: pose without a pose model, for tests and GPU smoke runs."""
    synth, out = Path(synth), Path(out)
    info = read_json(synth / "synth.json")
    images, annotations = [], []
    for clip in info["clips"]:
        kp = read_npz(synth / clip["groundtruth"])["keypoints"]
        for t in range(kp.shape[0]):
            images.append({"id": len(images) + 1, "file_name": f"{clip['id']}/{t:05d}.jpg"})
            for person in kp[t]:
                flat = np.where(person[:, 2:] > 0, person, 0)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": len(images),
                        "category_id": 1,
                        "keypoints": flat.ravel().tolist(),
                    }
                )
    write_json(out, {"images": images, "annotations": annotations})
    return out
