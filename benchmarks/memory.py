"""Memory on a long video: peak RSS of flow, pose and frames on a long 1080p video against one a quarter as long."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2

from preprocess.dataset import Manifest, VideoRecord
from preprocess.video import Source, probe, read_frames

from .common import peak_rss_mib, shared


def make_long_video(path: Path, minutes: float, fps: float) -> int:
    """A 1080p video of ``minutes`` at ``fps``, cycling the frames of the shared NTU 1080p clip."""
    source = [f.image for f in read_frames(str(shared() / "data/clips/ntu_two_person_1080p.mp4"))]
    count = int(minutes * 60 * fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1920, 1080))
    for i in range(count):
        cycle = (i // len(source)) % 2  # forwards then backwards, so motion stays continuous
        k = i % len(source)
        writer.write(source[k if cycle == 0 else len(source) - 1 - k])
    writer.release()
    return count


def memory(*, minutes: float = 10.0, fps: float = 6.0, log=print) -> None:
    """Peak RSS of flow, pose and frames on a long 1080p video, against a video a quarter as long."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, length in (("short", minutes / 4), ("long", minutes)):
            path = tmp / f"{label}.mp4"
            frames = make_long_video(path, length, fps)
            info = probe(Source(str(path)))
            work = tmp / f"work_{label}"
            Manifest(
                str(tmp),
                ["dance"],
                [
                    VideoRecord(
                        "long", "dance", "train", None, str(path), info.frame_count, info.fps, info.width, info.height
                    )
                ],
            ).save(work)
            flow = peak_rss_mib("flow", work, work, "--resize", "short:256", "--workers", 1)
            pose = peak_rss_mib("pose", work, work, "--resize", "long:640", "--workers", 1)
            # after pose: the frame cache's default (--background dim) reads its boxes
            frames_cache = peak_rss_mib("frames", work, work, "--resize", "short:128", "--workers", 1)
            log(
                f"{length:.1f} min 1080p video ({frames} frames): peak RSS flow {flow:.0f} MiB, "
                f"frames {frames_cache:.0f} MiB, pose {pose:.0f} MiB"
            )
