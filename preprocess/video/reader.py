"""Streaming video reading: one frame in memory at a time, whatever the video's length or size.

A ``Source`` is a video file or an ordered list of frame images (Let's Dance ships frames, not videos). ``probe``
counts what actually decodes (container frame counts can be wrong) and reads the size from the decoded frames (so
rotation metadata, which OpenCV applies, gives portrait sizes). ``read_frames`` yields frames chosen by a
``Sampling`` policy (start, step, count, or a target frame rate by timestamps, which copes with variable frame rate)
and resized by a ``Resize`` policy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..batch import DataError
from ..records import Source, VideoInfo

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass(frozen=True)
class Resize:
    """How frames are resized: ``none``, ``short:N`` (short side to N, aspect kept), ``long:N``, or ``fixed:WxH``."""

    mode: str = "none"
    width: int = 0
    height: int = 0
    side: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Resize:
        text = (text or "none").strip().lower()
        if text == "none":
            return cls()
        m = re.fullmatch(r"(?:(short|long):)?(\d+)", text)
        if m:
            side = int(m.group(2))
            if side < 8:
                raise ValueError(f"resize {text!r}: side must be at least 8 pixels")
            return cls(mode=m.group(1) or "short", side=side)
        m = re.fullmatch(r"(?:fixed:)?(\d+)x(\d+)", text)
        if m:
            w, h = int(m.group(1)), int(m.group(2))
            if min(w, h) < 8:
                raise ValueError(f"resize {text!r}: sides must be at least 8 pixels")
            return cls(mode="fixed", width=w, height=h)
        raise ValueError(f"resize {text!r}: expected none, short:N, long:N or fixed:WxH")

    def __str__(self) -> str:
        if self.mode == "none":
            return "none"
        if self.mode == "fixed":
            return f"fixed:{self.width}x{self.height}"
        return f"{self.mode}:{self.side}"

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if self.mode == "none":
            return width, height
        if self.mode == "fixed":
            return self.width, self.height
        ref = min(width, height) if self.mode == "short" else max(width, height)
        scale = self.side / ref
        return max(1, round(width * scale)), max(1, round(height * scale))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        size = self.output_size(w, h)
        if size == (w, h):
            return frame
        # Area averaging when shrinking avoids aliasing (flow on aliased frames is noisy); linear when enlarging.
        shrinking = size[0] * size[1] < w * h
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Sampling:
    """Which frames to read: from ``start`` every ``step``-th, at most ``count``; or, with ``fps``, the frame at
    each tick of a ``fps`` clock from ``start`` on (by the frames' own timestamps; frames repeat if ``fps`` is above
    the video's rate)."""

    start: int = 0
    step: int = 1
    count: int | None = None
    fps: float | None = None

    def __post_init__(self):
        if self.start < 0 or self.step < 1 or (self.count is not None and self.count < 0):
            raise ValueError(f"bad sampling {self}: start >= 0, step >= 1, count >= 0")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"bad sampling {self}: fps must be positive")

    def expected_count(self, frame_count: int) -> int:
        """How many frames ``read_frames`` yields for a video of ``frame_count`` frames (constant frame rate)."""
        available = max(0, frame_count - self.start)
        n = math.ceil(available / self.step) if self.fps is None else available  # fps: an upper bound
        return n if self.count is None else min(n, self.count)


@dataclass
class Frame:
    index: int  # index in the source
    time: float  # seconds from the source's start
    image: np.ndarray


def printable(path: str | Path) -> str:
    """A path as text any terminal can print: bytes that are not UTF-8 shown as escapes."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def opencv_path(path: str | Path) -> str:
    """``path`` for OpenCV, which crashes the process (a segfault, not an exception) on a file name that is not
    valid UTF-8: such a name is a ``DataError`` instead."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(printable(text), "file name is not valid UTF-8 (OpenCV cannot open it): rename it") from None
    return text


class _Capture:
    """cv2.VideoCapture that always releases, with a named error when the file does not open."""

    def __init__(self, path: str):
        path = opencv_path(path)
        if not Path(path).is_file():
            raise DataError(path, "no such file")
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            self.cap.release()
            raise DataError(path, "cannot be opened as a video (corrupt, or a codec OpenCV lacks)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cap.release()


def _read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imread(opencv_path(path), flags)
    if image is None:
        raise DataError(path, "unreadable image (corrupt or not an image)")
    return image


def probe(source: Source) -> VideoInfo:
    """Frame count (what decodes), frame rate and decoded size; ``DataError`` if nothing decodes."""
    if source.is_sequence:
        paths = source.frame_paths()
        if not paths:
            raise DataError(source.path, "frame sequence has no frames")
        first = _read_image(paths[0])
        for p in paths[1:]:
            # Header check only: decoding every JPEG of a large frame dataset at ingest would cost as much as
            # reading it.
            if not p.is_file() or p.stat().st_size == 0 or not cv2.haveImageReader(opencv_path(p)):
                raise DataError(p, "unreadable frame image")
        h, w = first.shape[:2]
        return VideoInfo(len(paths), float(source.frames_fps), w, h)
    with _Capture(source.path) as cap:
        ok, frame = cap.cap.read()
        if not ok or frame is None:
            raise DataError(source.path, "no frames decode (empty or corrupt video)")
        h, w = frame.shape[:2]
        count = 1
        while cap.cap.grab():
            count += 1
        return VideoInfo(count, cap.fps or 25.0, w, h)


def convert_frame(image: np.ndarray, resize: Resize, colour: str) -> np.ndarray:
    """A decoded BGR frame as ``read_frames`` yields it: converted to ``colour``, then resized."""
    return resize(_convert(image, colour))


def _convert(image: np.ndarray, colour: str) -> np.ndarray:
    if colour == "bgr":
        return image
    if colour == "rgb":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if colour == "gray":
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    raise ValueError(f"colour must be bgr, rgb or gray, not {colour!r}")


def frame_time(cap, index: int, fps: float, last_time: float) -> float:
    """Seconds of the frame ``cap`` last grabbed: the container's timestamp, or index / fps where it gives no usable
    one (not finite, not after the frame before, zero past the first frame)."""
    stamp = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
    return stamp if math.isfinite(stamp) and stamp > last_time and (stamp > 0 or index == 0) else index / fps


def _decoded(source: Source) -> Iterator[tuple[int, float, float, object]]:
    """(index, time, nominal frame interval, fetch) for every frame; ``fetch()`` decodes only when a frame is wanted."""
    if source.is_sequence:
        for i, p in enumerate(source.frame_paths()):
            yield i, i / source.frames_fps, 1.0 / source.frames_fps, (lambda p=p: _read_image(p))
        return
    with _Capture(source.path) as cap:
        fps = cap.fps or 25.0
        index = 0
        last_time = -1.0
        while cap.cap.grab():
            time = last_time = frame_time(cap.cap, index, fps, last_time)

            def fetch(cap=cap, index=index):
                ok, image = cap.cap.retrieve()
                if not ok or image is None:
                    raise DataError(source.path, f"frame {index} does not decode")
                return image

            yield index, time, 1.0 / fps, fetch
            index += 1


def read_frames(
    source: Source | str, sampling: Sampling = Sampling(), resize: Resize = Resize(), colour: str = "bgr"
) -> Iterator[Frame]:
    """Yield the sampled frames of ``source`` one at a time (constant memory)."""
    if isinstance(source, (str, Path)):
        source = Source(str(source))
    emitted = 0
    start_time = None
    next_due = 0.0
    period = 1.0 / sampling.fps if sampling.fps else 0.0
    for index, time, interval, fetch in _decoded(source):
        if sampling.count is not None and emitted >= sampling.count:
            return
        if index < sampling.start:
            continue
        if sampling.fps is None:
            if (index - sampling.start) % sampling.step:
                continue
            yield Frame(index, time, convert_frame(fetch(), resize, colour))
            emitted += 1
            continue
        # Target rate: a clock tick takes the frame nearest to it (the earlier one on a tie), so this frame serves
        # every tick up to half a source frame interval after its own timestamp.
        if start_time is None:
            start_time = time
        rel = time - start_time
        image = None
        while next_due <= rel + 0.5 * interval + 1e-9 and (sampling.count is None or emitted < sampling.count):
            if image is None:
                image = convert_frame(fetch(), resize, colour)
            yield Frame(index, start_time + next_due, image)
            emitted += 1
            next_due += period
    if emitted == 0 and sampling.start == 0:
        raise DataError(source.path, "no frames decode (empty or corrupt video)")


def prefetch(frames: Iterator[Frame], depth: int = 4) -> Iterator[Frame]:
    """Decode ahead in a thread (OpenCV's decoder releases the GIL), holding at most ``depth`` frames, so decoding
    overlaps the consumer's work (flow, pose) instead of adding to it. Errors surface in the consumer."""
    import queue
    import threading

    if depth <= 0:
        yield from frames
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            buffer.put(err)
        finally:
            close = getattr(frames, "close", None)
            if close:
                close()

    worker = threading.Thread(target=produce, name="frame-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(0.05)
