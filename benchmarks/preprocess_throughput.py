"""Preprocessing throughput: frames/s of bin/preprocess flow and pose against bare loops over the same decoded,
resized frames, and 1 vs 2 workers."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2

from preprocess.dataset import ingest
from preprocess.flow import FarnebackParams
from preprocess.pose.backends import MediaPipePose, resolve_mediapipe_model
from preprocess.video import Resize, read_frames

from .common import copies_dataset, preprocess, shared


def preprocess_throughput(
    *, video: str | None = None, copies: int = 8, resize: str = "none", skip_pose: bool = False, log=print
) -> None:
    """Flow pairs/s and pose frames/s: bare loops, bin/preprocess with 1 worker on 1 core, unpinned, 2 workers."""
    if copies < 4:
        raise ValueError(f"copies {copies}: at least 4 (two classes of two clips, or ingest drops them)")
    video = Path(video or shared() / "data/clips/arm_wrestling_kinetics_340x256.mp4")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = copies_dataset(video, copies, tmp / "data")
        work = tmp / "work"
        manifest = ingest(data)
        manifest.save(work)
        frames_total = sum(v.frame_count for v in manifest.videos)
        policy = Resize.parse(resize)
        gray = [f.image for f in read_frames(str(video), resize=policy, colour="gray")]
        rgb = [f.image for f in read_frames(str(video), resize=policy, colour="rgb")]
        h, w = gray[0].shape
        log(
            f"dataset: {copies} x {video.name} ({len(gray)} frames, {w}x{h} after resize {resize}); "
            f"{cv2.getNumberOfCPUs()} cores"
        )

        cv2.setNumThreads(1)
        farneback = FarnebackParams()
        start = time.perf_counter()
        for _ in range(copies):
            for a, b in zip(gray, gray[1:]):
                farneback.compute(a, b)
        bare = copies * (len(gray) - 1) / (time.perf_counter() - start)
        pairs = frames_total - copies
        common = ("--resize", resize, "--force")
        pinned = pairs / preprocess("flow", work, work, *common, "--workers", 1, one_core=True)
        one = pairs / preprocess("flow", work, work, *common, "--workers", 1)
        two = pairs / preprocess("flow", work, work, *common, "--workers", 2)
        log(
            f"flow: bare cv2.calcOpticalFlowFarneback loop (1 thread, frames pre-decoded) {bare:.1f} pairs/s; "
            f"bin/preprocess flow (decode+resize+flow+quantise+write): 1 worker on 1 core {pinned:.1f} pairs/s "
            f"({pinned / bare:.2f}x bare), 1 worker unpinned (decoding ahead on the spare core) {one:.1f} "
            f"({one / bare:.2f}x bare), 2 workers {two:.1f} ({two / pinned:.2f}x 1 worker on 1 core)"
        )
        if skip_pose:
            return
        model = resolve_mediapipe_model(None, download=False)
        import mediapipe  # noqa: F401

        estimator = MediaPipePose(model, max_persons=4)
        start = time.perf_counter()
        for _ in range(copies):
            with estimator.video() as detect:
                for i, image in enumerate(rgb):
                    detect(image, i * 1000 / 30)
        bare = copies * len(rgb) / (time.perf_counter() - start)
        common = ("--model", model, "--resize", resize, "--force")
        pinned = frames_total / preprocess("pose", work, work, *common, "--workers", 1, one_core=True)
        one = frames_total / preprocess("pose", work, work, *common, "--workers", 1)
        two = frames_total / preprocess("pose", work, work, *common, "--workers", 2)
        log(
            f"pose: bare PoseLandmarker loop (VIDEO mode, 4 poses, frames pre-decoded) {bare:.1f} frames/s; "
            f"bin/preprocess pose: 1 worker on 1 core {pinned:.1f} frames/s ({pinned / bare:.2f}x bare), "
            f"1 worker unpinned {one:.1f} ({one / bare:.2f}x bare), 2 workers {two:.1f} "
            f"({two / pinned:.2f}x 1 worker on 1 core)"
        )
