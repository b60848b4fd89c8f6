"""Live preprocessing: a camera, a network stream or a file read as it plays, each frame preprocessed once, as the
batch stages would, and any recent stretch of it written out as a clip the stage readers take.

::

    LiveSource: a reader thread ──► frames (a short queue; behind, it drops the oldest and counts them)
    LiveStages.add(frame), once per frame that arrives ──► a short inbox per stage ──► that stage's own thread:
        pose    the run's backend on the frame (its resize, every step-th frame), cleaned, in the source's pixels
        frames  the RGB frame at the run's size (every step-th)
        flow    the field from the frame k before to this one, camera motion removed, quantised as stored
    LiveStages.write_clip(folder, first, end) ──► (waits until every stage has done frame end − 1)
        folder/{manifest.json, pose/, frames/, flow/}: frames first..end−1
        as one video, "live", exactly as the batch stages write a video of those frames (tracking starts at its first
        frame, the background is dimmed from its own pose), so every stream reads it as it reads a video.

Each stage works through the frames in order on its own thread, so that pose and flow overlap across frames, not
only within one (a stage that is behind fills its inbox, then ``add`` waits, and the source drops frames). The arrived
frames are numbered without gaps: a dropped frame is not in the stream at all, and the flow field over
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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .batch import DataError, atomic_path, write_sidecar
from .dataset.manifest import Manifest, VideoRecord
from .stages import STAGES
from .video import Resize
from .video.crop import crop_inputs, dancer_boxes, suppress_background
from .video.reader import convert_frame, frame_time, opencv_path

LIVE_ID = "live"


@dataclass
class LiveFrame:
    number: int  # the n-th frame that arrived (drops leave no gap)
    time: float  # seconds on the source's clock (a file's timestamps; a camera's or stream's since it opened)
    image: np.ndarray  # BGR, as decoded
    # the source frame right after this one, when frames are taken below the source's rate (the flow field of a
    # taken frame is the motion to it, as training's are: one source frame, rescaled to the sampling period)
    following: np.ndarray | None = None


STAMPS_FAILED = "arrival time after its timestamps stopped"


class LiveSource:
    """Frames of ``spec`` as they play: a camera index ("0"), a URL OpenCV opens (rtsp://, http://), or a video file,
    which plays at its own frame rate (``realtime``) or as fast as it decodes (every frame, none dropped: for tests
    and benchmarks). With ``sample_fps`` below the source's rate, only the frames on screen at instants that far
    apart come (``RateSampler``; ``rate`` says at what rate frames come). Read on a thread of its own; when the
    consumer falls behind, the oldest waiting frame is dropped (``dropped`` counts them), so that no backlog builds.
    A source that gives no frame for ``stall_seconds`` ends, as one that ends does (``ended`` says which)."""

    def __init__(
        self,
        spec: str,
        *,
        realtime: bool = True,
        stall_seconds: float = 10.0,
        queue_frames: int = 4,
        sample_fps: float | None = None,
    ):
        self.spec, self.stall_seconds = str(spec), stall_seconds
        self.is_file = not (self.spec.isdigit() or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", self.spec))
        if self.is_file:
            path = Path(self.spec)
            if path.is_dir():
                raise DataError(self.spec, "a folder, not a video (give one video file, a camera index or a URL)")
            if path.exists() and not path.is_file():  # a FIFO, a socket, a device: not a video file OpenCV can seek
                raise DataError(self.spec, "not a regular file (a pipe or device): give a video file, camera or URL")
            if not path.exists():
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
        # the rate frames come at: the source's, or ``sample_fps`` below it (``RateSampler``)
        self.rate = min(self.fps, float(sample_fps)) if sample_fps else self.fps
        self.height, self.width = first.shape[:2]
        self.first = first
        self.pace = realtime and self.is_file  # a camera or stream plays at its own pace already
        self.is_camera = self.spec.isdigit()
        # a stream's frames are timed by its container's timestamps where it gives them (a recorded file over HTTP,
        # a relay catching up after buffering delivers faster than real time: arrival time would squeeze seconds
        # into a moment), by arrival otherwise; ``clock`` says which was used
        self.clock = "file timestamps" if self.is_file else "arrival time"
        self.realtime = realtime
        self.drop = realtime or not self.is_file  # as fast as possible: a file's every frame, waited for
        self.dropped = 0
        self.ended: str | None = None
        self.decode_seconds = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._opened = time.monotonic()
        self._stop = threading.Event()
        self._release_lock, self._released = threading.Lock(), False
        self.stuck = False  # the reader was left blocked in a read when the frames ended

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
                stamp, image, following = item
                yield LiveFrame(number, stamp, image, following)
                number += 1
        finally:
            self._stop.set()
            reader.join(timeout=2)
            if reader.is_alive():
                # still inside a read that may never return (a network source that went silent): releasing the
                # capture under it crashes FFmpeg. The reader releases it if its read returns; the process must end
                # without tearing the capture down (``stuck``: bin/classify exits at once after its summary).
                self.stuck = True
            else:
                self._release()

    def _release(self) -> None:
        with self._release_lock:
            if not self._released:
                self._released = True
                self.cap.release()

    def _read(self):
        start, index, image, stamp = time.monotonic(), 0, self.first, -1.0
        # a file's frames are taken at instants as training takes a video's (index / fps), a stream's by its clock
        sampler = RateSampler(self.rate, self.fps, RateSampler.EXACT if self.is_file else RateSampler.SLACK)
        first_stamp = None
        try:
            while not self._stop.is_set():
                stamp = self._stamp(index, stamp)
                first_stamp = stamp if first_stamp is None else first_stamp
                if self.pace:  # a file at its own rate: frame i is due i / fps after the first
                    delay = start + index / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                elif self.realtime and self.clock == "container timestamps":
                    # a stream that delivers ahead of its own clock is played at it (a late frame is not waited for)
                    delay = start + (stamp - first_stamp) - time.monotonic()
                    if delay > 0:
                        time.sleep(min(delay, self.stall_seconds))
                for item in sampler.add(index / self.fps if self.is_file else stamp, image):
                    self._put(item)
                began = time.perf_counter()
                ok, image = self.cap.read()
                self.decode_seconds += time.perf_counter() - began
                if not ok or image is None:
                    break
                index += 1
            for item in sampler.end():
                self._put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put(err)
        self._put(None, keep=True)
        if self.stuck:  # (the consumer left this reader to release the capture once its read returned)
            self._release()

    def _stamp(self, index: int, last: float) -> float:
        if self.is_file:
            return frame_time(self.cap, index, self.fps, last)  # (as read_frames times a file's frames)
        if not self.is_camera and self.clock != STAMPS_FAILED:
            # a stream's own clock, while it gives one that goes forward (its first frame may say 0)
            position = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if math.isfinite(position) and position >= 0 and (index == 0 or position > last):
                if index > 0:
                    self.clock = "container timestamps"
                return position
            if self.clock == "container timestamps":  # they stopped: arrival from here on, going on from the last
                self.clock, self._opened = STAMPS_FAILED, time.monotonic() - last
        # a camera's or stream's arrival: seconds since it opened (its reported rate may be wrong)
        return time.monotonic() - self._opened

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


class RateSampler:
    """Frames at ``rate`` out of a source at ``fps``: at every instant first + i / rate, the frame on screen then
    (the last one that came at or before it, as ``streams.sampling.items_at`` takes items), each frame at most once;
    at or above the source's rate, every frame. A frame is known to be the last one before an instant when the next
    one comes after it, so frames leave one frame late. A frame counts as at an instant within half a millisecond
    (containers round timestamps to milliseconds), no more: a frame a little after the instant is not the one on
    screen at it, as ``items_at`` has it (a quarter-frame slack took it: 50 of 250 instants differed at 30 → 25)."""

    SLACK = 0.0005  # seconds: a stream's millisecond timestamps
    EXACT = 1e-6  # a file's frames, timed index / fps as training times them (streams.sampling)

    def __init__(self, rate: float, fps: float, slack: float = SLACK):
        self.every_frame = rate >= fps
        self.period, self.slack = 1.0 / rate, slack
        self.instant: float | None = None
        self.held = None  # (time, image): the last frame so far at or before the instant

    def add(self, stamp: float, image) -> list:
        """What leaves when a frame at ``stamp`` comes: [] or [(time, image, the source frame after it, or None
        when every frame is taken)]."""
        if self.every_frame:
            return [(stamp, image, None)]
        if self.instant is None:
            self.instant = stamp
        out = []
        if stamp > self.instant + self.slack:  # the held frame was the one on screen at the instant
            if self.held is not None:
                out.append((*self.held, image))  # (this frame is the source frame right after the held one)
                self.held = None
            # the next instant this frame could be on screen at (instants it skips had the held frame on screen)
            self.instant += self.period * max(1, math.ceil((stamp - self.slack - self.instant) / self.period))
        if stamp <= self.instant + self.slack:
            self.held = (stamp, image)
        return out

    def end(self) -> list:
        """The source ended: the frame held, if the next instant came while it was the last frame (instants go up
        to the last frame's time, as ``streams.sampling`` samples a clip)."""
        held, self.held = self.held, None
        return [(*held, None)] if held is not None and self.instant <= held[0] + self.slack else []


class LiveStages:
    """The per-frame work of the stages ``stages`` ({stage: parameters}, as the training work directory recorded
    them, sized for new videos) on a stream of ``width`` × ``height`` frames at ``fps``; the last ``keep`` frames'
    results are kept. Every stage has a thread and an inbox of ``inbox_frames`` frames of its own. ``seconds``
    adds up each stage's time."""

    def __init__(
        self,
        stages: dict[str, dict],
        *,
        fps: float,
        width: int,
        height: int,
        source: str,
        keep: int,
        inbox_frames: int = 2,
        source_fps: float | None = None,
    ):
        # frames taken below the source's rate carry the source frame after them: flow is computed to it and
        # rescaled from one source frame to one taken-frame period, as training rescales stored fields
        self.source_fps = float(source_fps or fps)
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
        for stage, params in stages.items():  # (a stage's model or state, made before the frames come)
            if STAGES[stage].live_start:
                getattr(self, STAGES[stage].live_start)(params)
        # results are appended by their stage's thread and read by others (an answer's clip, the overlay)
        self._lock = threading.Lock()
        self._progress = threading.Condition()
        self._done = dict.fromkeys(stages, 0)  # frames each stage has finished
        self._failure: BaseException | None = None
        self._inbox = {stage: queue.Queue(maxsize=max(1, inbox_frames)) for stage in stages}
        self._workers = [
            threading.Thread(target=self._work, args=(stage,), name=f"live-{stage}", daemon=True) for stage in stages
        ]
        for worker in self._workers:
            worker.start()

    def video(self, frames: int) -> VideoRecord:
        """The record of a clip of ``frames`` frames of this stream."""
        return VideoRecord(LIVE_ID, "", "test", None, self.source, frames, self.fps, self.width, self.height)

    def steps(self) -> int:
        """A clip starts at a multiple of this (every sampled stage's step), so that its sampled frames are the
        ones each stage sampled as the frames came."""
        return math.lcm(*(p.get("step", 1) for p in self.stages.values())) if self.stages else 1

    def add(self, frame: LiveFrame) -> None:
        """Hand this frame to every stage (each does its frames in order, on its own thread: OpenCV and MediaPipe
        release the GIL, so on 2 cores pose and flow run side by side); waits only while a stage's inbox is full."""
        if frame.number != self.count:
            raise ValueError(f"frame {frame.number} after {self.count - 1}: frames must come in order, without gaps")
        self.count += 1
        for stage in self.stages:
            _put_while(self._inbox[stage], frame, lambda: self._raise_failure() or True)

    def done(self) -> int:
        """Frames every stage has finished: 0 .. done() − 1."""
        with self._progress:
            return min(self._done.values(), default=self.count)

    def wait(self, end: int) -> None:
        """Until every stage has finished frames 0 .. ``end`` − 1 (a stage's failure is raised here)."""
        with self._progress:
            while min(self._done.values(), default=end) < end:
                self._raise_failure()
                self._progress.wait(0.1)
        self._raise_failure()

    def latest(self, stage: str, number: int):
        """The stage's result for the last frame ≤ ``number`` it has one for (it samples every step-th), or None."""
        with self._lock:
            for n, result in reversed(self.results[stage]):
                if n <= number:
                    return result
        return None

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _work(self, stage: str) -> None:
        inbox = self._inbox[stage]
        while (frame := inbox.get()) is not None:
            try:
                self._add_to(stage, frame)
            except BaseException as err:  # noqa: BLE001 - raised on the caller's thread (add, wait), by name
                if not isinstance(err, DataError):
                    reason = (str(err).strip().splitlines() or [type(err).__name__])[-1][:160]
                    err = DataError(self.source, f"the {stage} stage failed at frame {frame.number}: {reason}")
                with self._progress:
                    self._failure = self._failure or err
                    self._progress.notify_all()
                return
            with self._progress:
                self._done[stage] = frame.number + 1
                self._progress.notify_all()

    def _keep(self, stage: str, number: int, result) -> None:
        with self._lock:
            self.results[stage].append((number, result))

    def _add_to(self, stage: str, frame: LiveFrame) -> None:
        began = time.perf_counter()
        getattr(self, STAGES[stage].live_add)(frame, self.stages[stage])  # (the stage's per-frame step)
        self.seconds[stage] += time.perf_counter() - began

    def _start_pose(self, params: dict) -> None:
        from .pose.task import pose_model_for

        if "backend" not in params:
            raise DataError("pose stage", "its skeletons were imported (import-pose): no pose model to run live")
        self._pose_model = pose_model_for(params)
        self._pose = self._pose_model.video()
        self._detect = self._pose.__enter__()

    def _start_flow(self, params: dict) -> None:
        from .flow.farneback import FarnebackParams

        self._farneback = FarnebackParams(**params["farneback"])
        self._torch_engine = params.get("engine") == "torch"
        self._recent: deque = deque(maxlen=params["offset"] + 1)
        # taken below the source's rate: each taken frame's field is its motion to the next source frame
        self._to_following = self.source_fps > self.fps + 1e-9
        if self._to_following and params["offset"] != 1:
            raise DataError(self.source, "live flow of a source faster than the runs' rate takes --offset 1 only")

    def _add_pose(self, frame: LiveFrame, params: dict) -> None:
        if frame.number % params["step"] == 0:
            from .pose.task import in_video_pixels

            image = convert_frame(frame.image, self._resize["pose"], "rgb")
            people = self._detect(image, frame.time * 1000.0)
            self._keep("pose", frame.number, in_video_pixels(people, image, self.video(frame.number + 1), params))

    def _add_frames(self, frame: LiveFrame, params: dict) -> None:
        if frame.number % params["step"] == 0:
            self._keep("frames", frame.number, convert_frame(frame.image, self._resize["frames"], "rgb"))

    def _field(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self._torch_engine:
            from .flow.farneback_torch import farneback_torch

            f = self._farneback
            args = (f.pyr_scale, f.levels, f.winsize, f.iterations, f.poly_n, f.poly_sigma, f.flags)
            return farneback_torch(prev, nxt, *args).numpy()
        return self._farneback.compute(prev, nxt)

    def _add_flow(self, frame: LiveFrame, params: dict) -> None:
        from .flow.camera import compensate
        from .flow.task import stored_field

        gray = convert_frame(frame.image, self._resize["flow"], "gray")
        if self._to_following:
            if frame.following is None:
                return  # (the source's last frame: no pair, as offline)
            n, prev, nxt = frame.number, gray, convert_frame(frame.following, self._resize["flow"], "gray")
        else:
            self._recent.append(gray)
            if len(self._recent) <= params["offset"]:
                return
            n, prev, nxt = frame.number - params["offset"], self._recent[0], self._recent[-1]  # pair n → n + k
        field = compensate(self._field(prev, nxt), params.get("camera_motion", "none"))
        if self._to_following:  # one source frame's motion, rescaled to one taken-frame period, as training does
            field = field * np.float32(self.source_fps / self.fps)
        self._keep("flow", n, stored_field(field, params, self.source, n))

    def close(self) -> None:
        """Stop the stage threads (after the frames already handed to them) and the pose model."""
        for stage, worker in zip(self.stages, self._workers, strict=True):
            _put_while(self._inbox[stage], None, worker.is_alive)  # (a stage that failed takes nothing more)
        for worker in self._workers:
            worker.join()
        if self._pose is not None:
            self._pose.__exit__(None, None, None)
            self._pose = None

    def write_clip(self, folder: Path, first: int, end: int, classes: list[str]) -> VideoRecord:
        """Frames ``first`` .. ``end − 1`` as the video "live" of a work directory ``folder`` (manifest, and each
        stage's data file and sidecar, as its batch stage writes them); ``first`` a multiple of ``steps()``."""
        if first % self.steps() or not 0 <= first < end <= self.count:
            raise ValueError(f"clip {first}..{end} of {self.count} frames (starts at multiples of {self.steps()})")
        self.wait(end)
        with self._lock:  # (the stages go on meanwhile: what the clip holds is taken at once)
            clip = {s: [(n - first, r) for n, r in kept if first <= n < end] for s, kept in self.results.items()}
        video = self.video(end - first)
        Manifest(str(folder), classes, [video]).save(folder)
        for stage, params in self.stages.items():  # dependency order: the pose a background is dimmed from first
            out_dir = folder / stage
            out_dir.mkdir(parents=True, exist_ok=True)
            getattr(self, STAGES[stage].live_write)(out_dir, video, params, clip[stage])
        return video

    def _write_pose(self, out_dir: Path, video: VideoRecord, params: dict, kept: list) -> None:
        from .pose.task import pose_arrays, write_pose

        people = [r for _, r in kept]
        write_pose(out_dir, video, params, pose_arrays(people, [i for i, _ in kept], params, self.source))

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


def _put_while(inbox: queue.Queue, item, going) -> None:
    """Put ``item`` into the bounded ``inbox``, waiting for room as long as ``going()`` holds (it may raise)."""
    while going():
        try:
            inbox.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


__all__ = ["LiveFrame", "LiveSource", "LiveStages", "RateSampler", "LIVE_ID"]
