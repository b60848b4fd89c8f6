"""Export stored flow to the mmaction2/denseflow JPEG layout, for tools that read flow that way."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..batch import atomic_path
from .storage import load_flow


def export_denseflow(
    work: str | os.PathLike, video_id: str, out_dir: str | os.PathLike, *, bound: float = 20.0, quality: int = 95
) -> int:
    """Write ``out_dir/<video_id>/flow_x_00001.jpg``, ``flow_y_00001.jpg``, … (1-based), quantised with ``bound``
    as mmaction2/denseflow store flow; returns the number of pairs. A ``<video_id>`` that is a link to a folder is
    replaced by a folder of its own, as links to files are: nothing is written outside ``out_dir``."""
    flow = load_flow(work, video_id)
    folder = Path(out_dir) / video_id
    if folder.is_symlink():  # as a linked file is replaced, not written through: never write outside out_dir
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    for t in range(len(flow)):
        q = quantize_denseflow(flow[t], bound)
        for axis, name in ((0, "x"), (1, "y")):
            with atomic_path(folder / f"flow_{name}_{t + 1:05d}.jpg") as tmp:
                if not cv2.imwrite(str(tmp), q[..., axis], params):
                    raise OSError(f"{tmp}: could not write JPEG")
    return len(flow)


def quantize_denseflow(flow: np.ndarray, bound: float) -> np.ndarray:
    """denseflow's JPEG quantisation, which the tools reading this layout expect: [-bound, bound] onto 0..255."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def export_work_denseflow(work: str | os.PathLike, out: str | os.PathLike, *, bound: float, quality: int) -> int:
    """Every video of ``work`` whose flow is done, in denseflow's layout under ``out`` (progress shown); returns
    how many."""
    from ..batch import Progress
    from ..dataset import load_manifest

    done = [v for v in load_manifest(work).videos if os.path.isfile(os.path.join(work, "flow", f"{v.video_id}.json"))]
    with Progress(len(done), "videos", desc="export-flow") as progress:
        for video in done:
            progress.advance(frames=export_denseflow(work, video.video_id, out, bound=bound, quality=quality))
    return len(done)
