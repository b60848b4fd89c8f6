"""Per-frame embeddings of a frozen 2D CNN, cached so that sequence heads train in seconds on a CPU.

``WORK/features/<name>/<video_id>.npy`` (T, D) float16, one row per sampled frame, with a JSON sidecar
(``frame_indices`` of the source frames, the backbone, where its weights came from and their SHA-256, the input size
and the sampling rate). Read from the RGB frame cache (``bin/preprocess frames``), ``sample_fps`` frames a second by
time (the frame on screen at each instant), the centre square of each frame resized to ``size``, normalised as the
RGB stream normalises.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from preprocess import DataError, load_manifest
from preprocess.batch import Progress, atomic_path, read_json, write_json
from preprocess.video import FramesInfo

from .sampling import item_times, items_at

FEATURES_VERSION = 1


def _backbone(preset: str, pretrained: str | None):
    """(frozen backbone, description of its weights, the input statistics those weights expect)."""
    from .checkpoints import input_normalization, load_backbone, load_state_dict_file
    from .models import create_backbone_2d

    if pretrained is None:
        weights = {"weights": "random (no --pretrained)"}
        return create_backbone_2d(in_channels=3, preset=preset).eval(), weights, input_normalization({})
    path = Path(pretrained)
    if path.is_dir():
        path = path / "best.pt"
    if (path.parent / "config.json").is_file() and path.name == "best.pt":  # a run of ours: its own backbone
        from .run import Run

        run = Run.load(path.parent)
        if not run.spec.frame_backbone:
            raise DataError(path, "features come from a 2D RGB run (bin/train rgb, --arch tsn or sequence)")
        backbone = run.models("cpu")[0].backbone
        note = f"run {path} (preset {run.run_config.options.preset})"
        stats = input_normalization({"pretrained": str(path.parent)})
    else:
        state = load_state_dict_file(path)
        if "model" in state and isinstance(state["model"], dict):
            raise DataError(path, "a checkpoint of bin/train outside its run folder: give the run folder")
        backbone = create_backbone_2d(in_channels=3, preset=preset)
        note = load_backbone(backbone, state, path)
        stats = input_normalization({"pretrained": str(path), "preset": preset})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return backbone.eval(), {"weights": str(path), "weights_sha256": digest, "loaded": note}, stats


def extract_features(
    work: str | Path,
    *,
    name: str | None = None,
    preset: str = "resnet18",
    pretrained: str | None = None,
    size: int = 112,
    sample_fps: float = 6.0,
    batch_size: int = 64,
    device: str = "auto",
    force: bool = False,
    log=print,
) -> dict:
    """Embed every video of WORK's manifest; returns {"done": n, "skipped": n, "failed": [lines]}. A video already
    embedded with the same settings is kept; each file is written atomically."""
    from .inference import pick_device  # (torch, imported when embedding starts)

    work = Path(work)
    manifest = load_manifest(work)
    name = name or preset
    folder = work / "features" / name
    backbone, weights, stats = _backbone(preset, pretrained)
    mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    dev = pick_device(device)
    backbone.to(dev)
    params = {
        "version": FEATURES_VERSION,
        "preset": preset,
        "size": size,
        "sample_fps": sample_fps,
        **weights,
        "normalize": {"mean": stats["mean"], "std": stats["std"]},
    }
    params.pop("loaded", None)
    log(f"features {name}: {weights.get('loaded', weights['weights'])}")
    done = skipped = 0
    failed = []
    progress = Progress(len(manifest.videos), "videos", desc=f"features {name}")
    started = time.perf_counter()
    rows_total = 0
    for video in manifest.videos:
        vid = video.video_id
        side = folder / f"{vid}.json"
        if not force and side.is_file() and read_json(side).get("params") == params:
            skipped += 1
            progress.advance()
            continue
        try:
            cache = FramesInfo.read(work, vid)
        except DataError as err:
            failed.append(str(err))
            progress.advance()
            continue
        frames = np.load(work / "frames" / f"{vid}.npy", mmap_mode="r", allow_pickle=False)
        times = item_times(cache.frame_indices, video.fps or 25.0)
        picks = items_at(times, np.arange(0.0, times[-1] + 1e-9, 1.0 / sample_fps))
        embedded = _embed(backbone, frames, picks, size=size, mean=mean, std=std, device=dev, batch_size=batch_size)
        if not np.isfinite(embedded).all():
            failed.append(f"{work / 'frames' / vid}.npy: non-finite features (check the frame cache)")
            progress.advance()
            continue
        with atomic_path(folder / f"{vid}.npy", suffix=".npy") as tmp:
            np.save(tmp, embedded)
        frame_indices = cache.frame_indices[picks]
        write_json(
            side,
            {"video_id": vid, "params": params, "shape": list(embedded.shape), "frame_indices": frame_indices.tolist()},
        )
        done += 1
        rows_total += len(embedded)
        progress.advance(frames=len(embedded))
    progress.close()
    seconds = time.perf_counter() - started
    log(
        f"features {name}: {done} embedded, {skipped} already done, {len(failed)} failed; "
        f"{rows_total / max(seconds, 1e-9):.0f} frames/s"
    )
    return {"done": done, "skipped": skipped, "failed": failed}


def _embed(backbone, frames, picks, *, size: int, mean, std, device, batch_size: int) -> np.ndarray:
    """(len(picks), D) float16 embeddings of the frames ``picks``: each frame's centred square, resized to ``size``
    and normalised by the weights' own statistics."""
    import cv2
    import torch

    h, w = frames.shape[1:3]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    rows = []
    with torch.no_grad():
        for start in range(0, len(picks), batch_size):
            batch = [
                cv2.resize(
                    np.asarray(frames[t, y0 : y0 + side, x0 : x0 + side]), (size, size), interpolation=cv2.INTER_AREA
                )
                for t in picks[start : start + batch_size]
            ]
            x = (np.stack(batch).astype(np.float32) / 255.0 - mean) / std
            x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
            rows.append(backbone(x).float().cpu().numpy())
    return np.concatenate(rows).astype(np.float16)
