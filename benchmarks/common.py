"""What every benchmark needs: the shared assets, bin/preprocess run as a user runs it, datasets of copies."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from preprocess.model_files import shared_dir

REPO = Path(__file__).resolve().parent.parent


def shared() -> Path:
    """The shared assets folder ($DANCE_SHARED, else ``shared`` beside the checkout)."""
    return shared_dir()


def kinetics_gray(width: int, height: int, count: int | None = None):
    """Consecutive grayscale frames of the shared Kinetics clip (340 × 256) resized to width × height, (F, H, W)
    uint8: all of them, or ``count`` (repeating the clip when it is shorter) — the real frames every flow benchmark
    measures on."""
    return kinetics_frames(width, height, count, colour="gray")


def kinetics_rgb(width: int, height: int, count: int | None = None):
    """The same frames in RGB, (F, H, W, 3) uint8: what the pose benchmarks measure on."""
    return kinetics_frames(width, height, count, colour="rgb")


def kinetics_frames(width: int, height: int, count: int | None, *, colour: str):
    import cv2
    import numpy as np

    from preprocess.video import read_frames

    clip = shared() / "data/clips/arm_wrestling_kinetics_340x256.mp4"
    frames = [f.image for f, _ in zip(read_frames(str(clip), colour=colour), range(count or 10**9))]
    while count and len(frames) < count:
        frames += frames[: count - len(frames)]
    shrink = cv2.INTER_AREA if width <= 340 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (width, height), interpolation=shrink) for f in frames])


def run_bin(command: str, *args, one_core: bool = False) -> float:
    """Wall seconds of one ``bin/<command>`` run (a fresh process, as a user runs it; its output discarded, a failure
    raised); ``one_core`` pins it to CPU 0, so a single worker's decode-ahead thread cannot borrow a second core."""
    pin = ["taskset", "-c", "0"] if one_core and shutil.which("taskset") else []
    start = time.perf_counter()
    subprocess.run(
        [*pin, sys.executable, str(REPO / "bin" / command), *map(str, args)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def preprocess(*args, one_core: bool = False) -> float:
    """Wall seconds of one bin/preprocess run (``run_bin``)."""
    return run_bin("preprocess", *args, one_core=one_core)


def peak_rss_mib(*args) -> float:
    """Peak resident memory of one bin/preprocess run, by /usr/bin/time."""
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, str(REPO / "bin" / "preprocess"), *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(result.stderr.strip().splitlines()[-1]) / 1024


def copies_dataset(video: Path, copies: int, root: Path) -> Path:
    """A dataset of ``copies`` copies of one real clip (two classes, so ingest accepts it)."""
    for i in range(copies):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, folder / f"clip{i:02d}{video.suffix}")
    return root
