"""Looking at flow: the Middlebury colour wheel (hue = direction, saturation = speed), PNG sheets and videos."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ..batch import atomic_path
from .storage import stored_params, to_pixels


def _colour_wheel() -> np.ndarray:
    """The 55 hues of Baker et al.'s wheel (red-yellow-green-cyan-blue-magenta), RGB in [0, 1]."""
    segments = [
        (15, (1, 0, 0), (1, 1, 0)),
        (6, (1, 1, 0), (0, 1, 0)),
        (4, (0, 1, 0), (0, 1, 1)),
        (11, (0, 1, 1), (0, 0, 1)),
        (13, (0, 0, 1), (1, 0, 1)),
        (6, (1, 0, 1), (1, 0, 0)),
    ]
    rows = []
    for n, start, end in segments:
        f = np.arange(n)[:, None] / n
        rows.append((1 - f) * np.array(start) + f * np.array(end))
    return np.concatenate(rows)


WHEEL = _colour_wheel()


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(H, W, 2) flow → (H, W, 3) uint8 RGB. ``max_magnitude`` (default: this field's largest) maps to full
    saturation; faster motion is drawn darker."""
    u, v = flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64)
    magnitude = np.hypot(u, v)
    scale = max_magnitude if max_magnitude else max(float(magnitude.max()), 1e-6)
    radius = magnitude / scale
    angle = np.arctan2(-v, -u) / np.pi  # -1..1
    position = (angle + 1) / 2 * (len(WHEEL) - 1)
    k0 = np.floor(position).astype(int)
    k1 = (k0 + 1) % len(WHEEL)
    f = (position - k0)[..., None]
    colour = (1 - f) * WHEEL[k0] + f * WHEEL[k1]
    inside = (radius <= 1)[..., None]
    r = np.minimum(radius, 1)[..., None]
    colour = np.where(inside, 1 - r * (1 - colour), colour * 0.75)
    return np.clip(colour * 255, 0, 255).astype(np.uint8)


def wheel_legend(size: int = 101) -> np.ndarray:
    """A disc showing the mapping: the flow of each pixel is its offset from the centre."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    flow = np.stack([xx - c, yy - c], -1)
    rgb = flow_to_rgb(flow, c)
    rgb[np.hypot(xx - c, yy - c) > c] = 255
    return rgb


def _flow_fields(work: str | os.PathLike, video_id: str):
    """(count, field(t) → float32 (H, W, 2), colour scale): fields dequantised one at a time from the memory map,
    the scale (99.5th percentile of speed) from at most 16 of them, so memory stays flat for long videos."""
    params = stored_params(work, video_id)
    raw = np.load(Path(work) / "flow" / f"{video_id}.npy", mmap_mode="r", allow_pickle=False)

    def field(t: int) -> np.ndarray:
        return to_pixels(raw[t], params)

    sample = np.stack([field(t) for t in np.linspace(0, len(raw) - 1, min(len(raw), 16)).astype(int)])
    scale = float(np.percentile(np.hypot(sample[..., 0], sample[..., 1]), 99.5)) or 1.0
    return len(raw), field, scale


def flow_sheet(
    work: str | os.PathLike,
    video_id: str,
    out: str | os.PathLike,
    frames: Iterable[np.ndarray] | None = None,
    columns: int = 5,
) -> Path:
    """A PNG: ``columns`` evenly spaced flow fields (and their first frames, from the iterable ``frames``, of which
    only those shown are kept) with a colour-wheel key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count, field, scale = _flow_fields(work, video_id)
    picks = np.linspace(0, count - 1, min(columns, count)).round().astype(int)
    if frames is not None:
        wanted = set(picks.tolist())
        frames = {t: image for t, image in enumerate(frames) if t in wanted}
    rows = 2 if frames is not None else 1
    fig, axes = plt.subplots(rows, len(picks) + 1, figsize=(2.6 * (len(picks) + 1), 2.3 * rows + 0.5), squeeze=False)
    for j, t in enumerate(picks):
        if frames is not None:
            if t in frames:
                axes[0, j].imshow(frames[t])
            axes[0, j].set_title(f"frame {t}", fontsize=9)
        axes[-1, j].imshow(flow_to_rgb(field(t), scale))
        axes[-1, j].set_title(f"flow {t}", fontsize=9)
    axes[-1, -1].imshow(wheel_legend())
    axes[-1, -1].set_title(f"key: {scale:.1f} px", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    fig.suptitle(f"{video_id}: optical flow (hue = direction, saturation = speed)", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out


def flow_video(
    work: str | os.PathLike,
    video_id: str,
    out: str | os.PathLike,
    fps: float,
    frames: Iterable[np.ndarray] | None = None,
) -> Path:
    """An mp4 of the flow colours, beside the frames (an iterable, consumed in step) when given."""
    count, field, scale = _flow_fields(work, video_id)
    h, w = field(0).shape[:2]
    width = w * (2 if frames is not None else 1)
    out = Path(out)
    with atomic_path(out, suffix=".mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, h))
        frame_iter = iter(frames) if frames is not None else None
        for t in range(count):
            panel = cv2.cvtColor(flow_to_rgb(field(t), scale), cv2.COLOR_RGB2BGR)
            if frame_iter is not None:
                frame = next(frame_iter, None)
                frame = np.zeros((h, w, 3), np.uint8) if frame is None else cv2.resize(frame, (w, h))
                panel = np.hstack([cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), panel])
            writer.write(panel)
        writer.release()
    return out


def show_flow(work: str | os.PathLike, video_id: str, out: str) -> Path:
    """One video's flow beside its frames (at the flow's size): ``out`` .png a sheet, .mp4 a video at its rate."""
    from ..batch import DataError
    from ..dataset import load_manifest
    from ..video import Resize, read_frames
    from .storage import FlowInfo

    if not out.endswith((".png", ".mp4")):
        raise DataError(out, "OUT must end in .png or .mp4")
    try:
        video = load_manifest(work).get(video_id)
    except KeyError:
        raise DataError(work, f"no video {video_id!r} in the manifest") from None
    resize = Resize.parse(FlowInfo.read(work, video_id).params["resize"])
    rgb = (f.image for f in read_frames(video.to_source(), resize=resize, colour="rgb"))
    if out.endswith(".mp4"):
        return flow_video(work, video_id, out, fps=video.fps, frames=rgb)
    return flow_sheet(work, video_id, out, frames=rgb)
