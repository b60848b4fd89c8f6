"""Live preprocessing: a camera, a network stream or a file read as it plays, each frame preprocessed once, as the
batch stages would, and any recent stretch of it written out as a clip the stage readers take.

::

    LiveSource: a reader thread ──► frames (a short queue; behind, it drops the oldest and counts them)
    LiveStages.add(frame), once per frame that arrives, for each stage a run needs:
        pose    the run's backend on the frame (its resize, every step-th frame), cleaned, in the source's pixels
        frames  the RGB frame at the run's size (every step-th)
        flow    the field from the frame k before to this one, camera motion removed, quantised as stored
    LiveStages.write_clip(folder, first, end) ──► folder/{manifest.json, pose/, frames/, flow/}: frames first..end−1
        as one video, "live", exactly as the batch stages write a video of those frames (tracking starts at its first
        frame, the background is dimmed from its own pose), so every stream reads it as it reads a video.

The arrived frames are numbered without gaps: a dropped frame is not in the stream at all, and the flow field over
it goes from the frame before to the frame after, as it would in a video made of the frames that arrived. One
difference from a clip preprocessed offline stays: MediaPipe's VIDEO mode tracks people from frame to frame over
the whole stream, where offline it starts afresh with each video (MoveNet and YOLO-pose look at each frame alone).
"""

from __future__ import annotations

import math
import queue
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .batch import DataError, atomic_path, write_sidecar
from .dataset.manifest import Manifest, VideoRecord
from .video import Resize
from .video.crop import crop_inputs, dancer_boxes, suppress_background
from .video.reader import convert_frame, frame_time, opencv_path

LIVE_ID = "live"


@dataclass
class LiveFrame:
    number: int  # the n-th frame that arrived (drops leave no gap)
    time: float  # seconds on the source's clock (a file's timestamps; a camera's or stream's since it opened)
    image: np.ndarray  # BGR, as decoded


class LiveSource:
    """Frames of ``spec`` as they play: a camera index ("0"), a URL OpenCV opens (rtsp://, http://), or a video file,
    which plays at its own frame rate (``realtime``) or as fast as it decodes (every frame, none dropped: for tests
    and benchmarks). Read on a thread of its own; when the consumer falls behind, the oldest waiting frame is
    dropped (``dropped`` counts them), so that no backlog builds. A source that gives no frame for
    ``stall_seconds`` ends, as one that ends does (``ended`` says which)."""

    def __init__(self, spec: str, *, realtime: bool = True, stall_seconds: float = 10.0, queue_frames: int = 4):
        self.spec, self.stall_seconds = str(spec), stall_seconds
        self.is_file = not (self.spec.isdigit() or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.spec))
        if self.is_file and not Path(self.spec).is_file():
            raise DataError(self.spec, "no such file, camera index or stream URL")
        target = int(self.spec) if self.spec.isdigit() else opencv_path(self.spec)
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.cap.release()
            raise DataError(self.spec, "cannot be opened as a video source (no such camera, stream or codec)")
        ok, first = self.cap.read()
        if not ok or first is None:
            self.cap.release()
            raise DataError(self.spec, "opens, but gives no frame")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        # (no usable rate: 25 for a file, as read_frames and probe take it; a camera's is often 30)
        self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else (25.0 if self.is_file else 30.0)
        self.height, self.width = first.shape[:2]
        self.first = first
        self.pace = realtime and self.is_file  # a camera or stream plays at its own pace already
        self.drop = realtime or not self.is_file  # as fast as possible: a file's every frame, waited for
        self.dropped = 0
        self.ended: str | None = None
        self.decode_seconds = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._opened = time.monotonic()
        self._stop = threading.Event()

    def frames(self):
        """LiveFrame after LiveFrame until the source ends, stalls or the consumer stops iterating."""
        reader = threading.Thread(target=self._read, name="live-reader", daemon=True)
        reader.start()
        number = 0
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self.stall_seconds)
                except queue.Empty:
                    self.ended = f"stalled: no frame for {self.stall_seconds:g} s"
                    return
                if item is None:
                    self.ended = self.ended or "ended"
                    return
                if isinstance(item, BaseException):
                    raise item
                stamp, image = item
                yield LiveFrame(number, stamp, image)
                number += 1
        finally:
            self._stop.set()
            reader.join(timeout=2)
            self.cap.release()

    def _read(self):
        start, index, image, stamp = time.monotonic(), 0, self.first, -1.0
        try:
            while not self._stop.is_set():
                stamp = self._stamp(index, stamp)
                if self.pace:  # a file at its own rate: frame i is due i / fps after the first
                    delay = start + index / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                self._put((stamp, image))
                began = time.perf_counter()
                ok, image = self.cap.read()
                self.decode_seconds += time.perf_counter() - began
                if not ok or image is None:
                    break
                index += 1
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put(err)
        self._put(None, keep=True)

    def _stamp(self, index: int, last: float) -> float:
        if not self.is_file:  # a camera's or stream's clock: seconds since it opened (its reported rate may be wrong)
            return time.monotonic() - self._opened
        return frame_time(self.cap, index, self.fps, last)  # (as read_frames times a file's frames)

    def _put(self, item, keep: bool = False):
        while not self._stop.is_set():
            if self.drop and not keep:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:  # behind: the oldest waiting frame goes, the newest is kept (never a wait here)
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
                continue
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class LiveStages:
    """The per-frame work of the stages ``stages`` ({stage: parameters}, as the training work directory recorded
    them, sized for new videos) on a stream of ``width`` × ``height`` frames at ``fps``; the last ``keep`` frames'
    results are kept. ``seconds`` adds up each stage's time."""

    def __init__(self, stages: dict[str, dict], *, fps: float, width: int, height: int, source: str, keep: int):
        for stage, params in stages.items():
            if params.get("crop", "none") != "none":
                raise DataError(
                    f"{stage} stage", "live classification does not crop to the dancers yet (a run with --crop dancers)"
                )
        self.stages, self.fps, self.width, self.height, self.source = stages, fps, width, height, source
        self.results: dict[str, deque] = {stage: deque(maxlen=keep) for stage in stages}
        self.seconds = dict.fromkeys(stages, 0.0)
        self.count = 0
        self._resize = {stage: Resize.parse(params["resize"]) for stage, params in stages.items()}
        self._pose = None
        self._threads = ThreadPoolExecutor(max_workers=max(1, len(stages)), thread_name_prefix="live-stage")
        if "pose" in stages:
            from .pose.task import pose_model_for

            if "backend" not in stages["pose"]:
                raise DataError("pose stage", "its skeletons were imported (import-pose): no pose model to run live")

            self._pose_model = pose_model_for(stages["pose"])
            self._pose = self._pose_model.video()
            self._detect = self._pose.__enter__()
        if "flow" in stages:
            from .flow.farneback import FarnebackParams

            params = stages["flow"]
            self._farneback = FarnebackParams(**params["farneback"])
            self._torch_engine = params.get("engine") == "torch"
            self._recent: deque = deque(maxlen=params["offset"] + 1)

    def video(self, frames: int) -> VideoRecord:
        """The record of a clip of ``frames`` frames of this stream."""
        return VideoRecord(LIVE_ID, "", "test", None, self.source, frames, self.fps, self.width, self.height)

    def steps(self) -> int:
        """A clip starts at a multiple of this (every sampled stage's step), so that its sampled frames are the
        ones each stage sampled as the frames came."""
        return math.lcm(*(p.get("step", 1) for p in self.stages.values())) if self.stages else 1

    def add(self, frame: LiveFrame) -> None:
        """This frame's work for every stage, the stages side by side on threads (OpenCV and MediaPipe release the
        GIL: on 2 cores pose and flow take the longer of the two, not the sum); each stage's frames in order."""
        if frame.number != self.count:
            raise ValueError(f"frame {frame.number} after {self.count - 1}: frames must come in order, without gaps")
        self.count += 1
        jobs = [self._threads.submit(self._add_to, stage, frame) for stage in self.stages]
        for job in jobs:
            job.result()

    def _add_to(self, stage: str, frame: LiveFrame) -> None:
        n, params = frame.number, self.stages[stage]
        began = time.perf_counter()
        if stage == "pose" and n % params["step"] == 0:
            from .pose.task import in_video_pixels

            image = convert_frame(frame.image, self._resize[stage], "rgb")
            people = self._detect(image, frame.time * 1000.0)
            self.results[stage].append((n, in_video_pixels(people, image, self.video(n + 1), params)))
        elif stage == "frames" and n % params["step"] == 0:
            self.results[stage].append((n, convert_frame(frame.image, self._resize[stage], "rgb")))
        elif stage == "flow":
            self._add_flow(n, frame.image, params)
        self.seconds[stage] += time.perf_counter() - began

    def _add_flow(self, n: int, image: np.ndarray, params: dict) -> None:
        from .flow.camera import compensate
        from .flow.task import stored_field

        self._recent.append(convert_frame(image, self._resize["flow"], "gray"))
        k = params["offset"]
        if len(self._recent) <= k:
            return
        prev, nxt = self._recent[0], self._recent[-1]
        if self._torch_engine:
            from .flow.farneback_torch import farneback_torch

            f = self._farneback
            args = (f.pyr_scale, f.levels, f.winsize, f.iterations, f.poly_n, f.poly_sigma, f.flags)
            field = farneback_torch(prev, nxt, *args).numpy()
        else:
            field = self._farneback.compute(prev, nxt)
        field = compensate(field, params.get("camera_motion", "none"))
        self.results["flow"].append((n - k, stored_field(field, params, self.source, n - k)))  # pair n−k → n

    def close(self) -> None:
        self._threads.shutdown()
        if self._pose is not None:
            self._pose.__exit__(None, None, None)
            self._pose = None

    def write_clip(self, folder: Path, first: int, end: int, classes: list[str]) -> VideoRecord:
        """Frames ``first`` .. ``end − 1`` as the video "live" of a work directory ``folder`` (manifest, and each
        stage's data file and sidecar, as its batch stage writes them); ``first`` a multiple of ``steps()``."""
        if first % self.steps() or not 0 <= first < end <= self.count:
            raise ValueError(f"clip {first}..{end} of {self.count} frames (starts at multiples of {self.steps()})")
        video = self.video(end - first)
        Manifest(str(folder), classes, [video]).save(folder)
        for stage, params in self.stages.items():  # dependency order: the pose a background is dimmed from first
            out_dir = folder / stage
            out_dir.mkdir(parents=True, exist_ok=True)
            kept = [(n - first, r) for n, r in self.results[stage] if first <= n < end]
            if stage == "pose":
                from .pose.task import pose_arrays, write_pose

                people = [r for _, r in kept]
                write_pose(out_dir, video, params, pose_arrays(people, [i for i, _ in kept], params, self.source))
            elif stage == "frames":
                self._write_frames(out_dir, video, params, kept)
            else:
                self._write_flow(out_dir, video, params, kept)
        return video

    def _write_frames(self, out_dir: Path, video: VideoRecord, params: dict, kept: list) -> None:
        background, inputs = params.get("background", "keep"), {}
        images = [image for _, image in kept]
        if background != "keep":
            inputs = crop_inputs(out_dir, video.video_id)
            boxes = dancer_boxes(out_dir.parent / "pose", video, margin=params["crop_margin"], mode=background)
            h, w = images[0].shape[:2]
            scale = (w / video.width, h / video.height)
            images = [
                suppress_background(image, boxes[min(i, len(boxes) - 1)], scale, background)
                for (i, _), image in zip(kept, images, strict=True)
            ]
        stack = np.stack(images)
        _save_npy(out_dir / f"{video.video_id}.npy", stack)
        write_sidecar(
            out_dir,
            video,
            params,
            shape=list(stack.shape),
            frame_indices=[i for i, _ in kept],
            **({"inputs": inputs} if inputs else {}),
        )

    def _write_flow(self, out_dir: Path, video: VideoRecord, params: dict, kept: list) -> None:
        pairs = video.frame_count - params["offset"]  # pair i: frame i → i + k, both in the clip
        if pairs < 1:
            raise DataError(self.source, f"a clip of {video.frame_count} frames is too short for flow")
        stack = np.stack([field for i, field in kept if i < pairs])
        _save_npy(out_dir / f"{video.video_id}.npy", stack)
        write_sidecar(out_dir, video, params, shape=list(stack.shape), dtype=stack.dtype.name)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


__all__ = ["LiveFrame", "LiveSource", "LiveStages", "LIVE_ID"]
