"""Live classification: the dance style of a camera, a network stream or a file as it plays, from the trained
streams and the fitted fusion, a rolling window at a time.

::

    fusion.json or a model bundle ──► runs, their networks (loaded once) and the stages they recorded
    LiveSource ──► frames ──► LiveStages (per recorded preprocessing: pose, frames, flow, once per frame)
    every --every seconds: the last --window seconds ──write_clip──► a scratch work directory (one video, "live")
                           ──► each run's evaluation of it (its views, sampling, input statistics) ──► fused
                           ──► one JSON line: time, window, per-stream and fused probabilities, caution, drops
    (an answer is worked out on a thread of its own while the stages go on with the next frames; at most one at a
    time: when the next is due before the last is out, the frames wait for it)

A window is scored as ``bin/classify`` scores a video made of its frames (``fusion.classify``): the same stage
parameters, the same readers, the same evaluation; only MediaPipe's frame-to-frame tracking differs
(``preprocess.live``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from preprocess import DataError
from preprocess.batch import atomic_path
from preprocess.live import LIVE_ID, LiveSource, LiveStages

from .classify import caution, load_fused, new_video_stages


def remove_stale_scratch(place: Path) -> list[Path]:
    """Remove the scratch folders ``live-<pid>-*`` in ``place`` whose process is gone (a live run killed with
    SIGKILL cannot remove its own; in /dev/shm each holds memory). Returns what was removed."""
    import shutil

    removed = []
    for folder in place.glob("live-*-*"):
        pid = folder.name.split("-")[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another user's: not ours to remove)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def training_seconds(runs) -> float:
    """The median length of the runs' training videos (as each recorded it): how much a run saw of a video."""
    lengths = [run.record.get("video_seconds") for run in runs]
    lengths = [s for s in lengths if s]
    return float(np.median(lengths)) if lengths else 10.0


class _Latency:
    """Seconds per call of each named step, for the summary at the end."""

    def __init__(self):
        self.times: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def lines(self) -> list[str]:
        out = []
        for name, times in self.times.items():
            p95 = float(np.percentile(times, 95))
            out.append(f"{name}: {1000 * statistics.fmean(times):.1f} ms mean, {1000 * p95:.1f} ms p95 ({len(times)})")
        return out


class _WindowScorer:
    """Scores the window that ends at an arrived frame: each stage set writes the window as a clip, each run scores
    it, the fused answer is emitted (and kept as the latest, for the overlay); the time of each step is recorded."""

    def __init__(self, method, classes, runs, key_of, stages, folders, *, span, device, runtime, emit, live):
        self.method, self.classes, self.runs, self.key_of = method, classes, runs, key_of
        self.stages, self.folders, self.span, self.device, self.runtime = stages, folders, span, device, runtime
        self.emit, self.live = emit, live
        self.steps = int(np.lcm.reduce([s.steps() for s in stages.values()]))
        self.latency, self.times, self.updates = _Latency(), [], 0
        self.answers: deque = deque(maxlen=1)  # the latest answer, drawn on the overlay

    def __call__(self, end: int, final: bool, arrived: float) -> None:
        first = -(-max(0, end - self.span) // self.steps) * self.steps  # (a start every stage sampled from)
        with self._timed("stages catch up"):
            for stage_set in self.stages.values():
                stage_set.wait(end)
        with self._timed("write window"):
            for work, stage_set in self.stages.items():
                stage_set.write_clip(self.folders[work], first, end, self.classes)
        probs = {}
        for stream, run in self.runs.items():
            with self._timed(f"{stream} stream"):
                folder = self.folders[self.key_of[run.path]]
                scored = run.score(folder, "test", video_ids=[LIVE_ID], device=self.device, runtime=self.runtime)
                probs[stream] = scored[0]
        with self._timed("fusion"):
            fused = self.method.predict_proba(probs)[0]
        self.answers.append(self._answer(fused, probs, first, end, final))
        self.emit(self.answers[-1])
        self.latency.add("window to answer", time.perf_counter() - arrived)
        self.updates += 1

    @contextlib.contextmanager
    def _timed(self, name: str):
        began = time.perf_counter()
        yield
        self.latency.add(name, time.perf_counter() - began)

    def _answer(self, fused, probs, first: int, end: int, final: bool) -> dict:
        classes, times = self.classes, self.times
        per_class = {c: float(p) for c, p in zip(classes, fused)}
        per_stream = {s: {c: float(p) for c, p in zip(classes, probs[s][0])} for s in probs}
        top = int(np.argmax(fused))
        return {
            "time": round(times[end - 1], 4),
            "window": [round(times[first], 4), round(times[end - 1], 4)],
            "frames": [first, end],  # the arrived frames first .. end − 1
            "prediction": classes[top],
            "probability": float(fused[top]),
            "caution": caution(per_class, per_stream),
            "fused": per_class,
            "streams": per_stream,
            "dropped": self.live.dropped,
            "final": final,
        }


def _check_seconds(given: dict) -> None:
    for option, value in given.items():
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise DataError(f"{option} {value:g}", "must be a positive, finite number of seconds or frames a second")


def _scratch_folder() -> tempfile.TemporaryDirectory:
    """Where each answer rewrites its window's arrays: in memory (tmpfs) where the system has it, not on a disk;
    named by this process, so a later run removes it if this one is killed."""
    shm = Path("/dev/shm")
    place = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    remove_stale_scratch(place)
    return tempfile.TemporaryDirectory(prefix=f"live-{os.getpid()}-", dir=place)


def classify_live(
    source: str,
    report: str | Path | None,
    *,
    window: float | None = None,
    every: float = 1.0,
    realtime: bool = True,
    max_seconds: float | None = None,
    sample_fps: float | None = None,
    device: str = "auto",
    model: str | Path | None = None,
    runtime: str = "torch",
    overlay: str | Path | None = None,
    preview: bool = False,
    emit=None,
    log=None,
) -> dict:
    """Classify ``source`` as it plays: one result per window (``emit(dict)``; default a JSON line on stdout) and
    a summary (returned, and its lines to ``log``): updates, frames, dropped frames, how the source ended, the
    per-stage latencies. ``overlay``: a folder to write ``<source>_overlay.mp4`` to, at the source's rate (as
    ``bin/classify --overlay`` draws it: each frame's skeletons and flow, the latest answer above); ``preview``:
    the same in a window, as it plays. ``sample_fps``: the rate the source's frames are taken at (default the runs'
    sampling rate, ``bin/train --sample-fps``: a run reads its videos at that rate; a faster source gives only the
    frames on screen at its instants, a slower one every frame)."""
    emit = emit or (lambda result: print(json.dumps(result), flush=True))
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    _check_seconds({"--every": every, "--window": window, "--max-seconds": max_seconds, "--sample-fps": sample_fps})
    if preview:
        check_preview()
    method, classes, runs, pose_models = load_fused(report, model)
    by_work, key_of = new_video_stages(list(runs.values()), device=device, pose_models=pose_models)
    window = window or training_seconds(runs.values())
    for run in runs.values():  # (loaded before the source starts, kept by each run)
        run.networks(run.device(device), runtime)
    rates = [run.sample_fps for run in runs.values() if run.sample_fps]
    live = LiveSource(source, realtime=realtime, sample_fps=sample_fps or max(rates, default=None))
    span, stride = max(2, round(window * live.rate)), max(1, round(every * live.rate))
    size = dict(fps=live.rate, width=live.width, height=live.height, source=source, source_fps=live.fps)
    stages = {work: LiveStages(params, keep=span + stride + 64, **size) for work, params in by_work.items()}
    scratch = _scratch_folder()
    folders = {work: Path(scratch.name) / f"work{i}" for i, work in enumerate(stages)}
    score = _WindowScorer(
        method, classes, runs, key_of, stages, folders, span=span, device=device, runtime=runtime, emit=emit, live=live
    )
    drawn = overlay or preview
    drawing = _Overlay(overlay, source, live.fps, stages, preview=preview) if drawn else contextlib.nullcontext()
    try:
        started = time.perf_counter()
        with drawing:
            shown = drawing if drawn else None
            _answer_as_it_plays(live, stages, score, span=span, stride=stride, max_seconds=max_seconds, drawing=shown)
        wall = time.perf_counter() - started
    finally:
        for stage_set in stages.values():
            stage_set.close()
        scratch.cleanup()
    return _live_summary(live, stages, score, window, wall, log)


def _answer_as_it_plays(live, stages, score: _WindowScorer, *, span, stride, max_seconds, drawing) -> None:
    """Feed each frame of ``live`` to the stages and ask for an answer every ``stride`` frames once ``span`` have
    arrived (one at a time, on a thread of its own, so the frames keep coming); at the end, an answer for what the
    source left since the last one. ``drawing``: the overlay or preview, drawn each frame."""
    times, answers, last_update = score.times, score.answers, 0
    answering = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-answer")
    pending = None  # the answer being worked out
    try:
        try:
            for frame in live.frames():
                arrived = time.perf_counter()
                if max_seconds is not None and frame.time > max_seconds:
                    live.ended = f"--max-seconds {max_seconds:g}"
                    break
                for stage_set in stages.values():
                    stage_set.add(frame)
                times.append(frame.time)
                count = len(times)
                if count >= span and count - last_update >= stride:
                    if pending is not None:
                        pending.result()  # (at most one answer at a time)
                    pending, last_update = answering.submit(score, count, False, arrived), count
                if drawing is not None:
                    drawing.add(frame, answers[-1] if answers else None)
        except KeyboardInterrupt:  # a camera is stopped by hand: the last answer still comes
            live.ended = "interrupted"
        except PreviewClosed:
            live.ended = "the preview was closed"
        if pending is not None:
            pending.result()
        # what the source left since the last answer (all of it, when it ended before a whole window)
        if len(times) > last_update and len(times) >= 2:
            score(len(times), final=True, arrived=time.perf_counter())
        if drawing is not None:
            drawing.draw_done(answers[-1] if answers else None, until=len(times))
    finally:
        answering.shutdown(cancel_futures=True)


def _live_summary(live, stages, score: _WindowScorer, window: float, wall: float, log) -> dict:
    """The summary a live run returns, its lines logged: answers, frames, how the source ended and was timed, the
    time per frame of each stage and per answer of each step."""
    times, frames = score.times, len(score.times)
    summary = {
        "updates": score.updates,
        "frames": frames,
        "dropped": live.dropped,
        "ended": live.ended or "stopped",
        "seconds": round(wall, 3),
        "source_seconds": round(times[-1] - times[0], 3) if times else 0.0,
        "window_seconds": window,
        "fps": live.fps,
        "sample_fps": live.rate,
        "reader_stuck": live.stuck,
        "clock": live.clock,  # how its frames were timed (a stream without timestamps: by arrival)
    }
    per_frame = {"decode": live.decode_seconds}
    for stage_set in stages.values():
        for stage, seconds in stage_set.seconds.items():
            per_frame[stage] = per_frame.get(stage, 0.0) + seconds
    log(
        f"live: {score.updates} answers over {frames} frames in {wall:.1f} s ({frames / max(wall, 1e-9):.1f} "
        f"frames/s; taken at {live.rate:g} fps of the source's {live.fps:g}), {live.dropped} dropped; "
        f"{summary['ended']}; frames timed by {live.clock}"
    )
    log("per frame: " + ", ".join(f"{k} {1000 * v / max(frames, 1):.1f} ms" for k, v in per_frame.items()))
    for line in score.latency.lines():
        log(f"per answer: {line}")
    summary["per_frame_ms"] = {k: 1000 * v / max(frames, 1) for k, v in per_frame.items()}
    summary["per_answer_ms"] = {k: 1000 * statistics.fmean(v) for k, v in score.latency.times.items()}
    return summary


class PreviewClosed(Exception):
    """The preview window was closed by its key (q or Esc): the source ends there."""


def check_preview() -> None:
    """A named error, before anything starts, where no window can be shown (no display, or an OpenCV without GUI)."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DataError("--preview", "no display here (DISPLAY is not set): write the overlay with --overlay DIR")
    build = cv2.getBuildInformation()
    if "GUI:" in build and "NONE" in build.split("GUI:", 1)[1].splitlines()[0]:
        raise DataError("--preview", "this OpenCV has no GUI (a headless build): write the overlay with --overlay DIR")


class _Overlay:
    """The overlay as frames come: ``<source>_overlay.mp4`` in ``folder`` (a dropped frame is filled with the one
    before, so that the video plays at the source's rate), and/or a preview window (q or Esc closes it)."""

    def __init__(self, folder, source: str, fps: float, stages: dict, *, preview: bool = False):
        stem = Path(source).stem if Path(source).suffix else re.sub(r"[^A-Za-z0-9_.-]+", "_", source).strip("_")
        self.fps, self.writer, self.written, self.preview = fps, None, 0, preview
        self.stage_sets = list(stages.values())
        self.waiting: deque = deque()  # frames handed to the stages, drawn once every stage has done them
        self.path = Path(folder) / f"{stem or 'live'}_overlay.mp4" if folder else None
        self.pose = next((s for s in stages.values() if "pose" in s.stages), None)
        self.flow = next((s for s in stages.values() if "flow" in s.stages), None)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = atomic_path(self.path, suffix=".mp4") if self.path else contextlib.nullcontext()

    def __enter__(self):
        self.tmp = self._atomic.__enter__()
        return self

    def __exit__(self, *exc):
        if self.writer is not None:
            self.writer.release()
        if self.preview:
            import cv2

            cv2.destroyAllWindows()
        return self._atomic.__exit__(*exc)

    def add(self, frame, answer: dict | None) -> None:
        """Take this frame (handed to the stages), and draw the frames every stage has done."""
        self.waiting.append(frame)
        self.draw_done(answer)

    def draw_done(self, answer: dict | None, *, until: int | None = None) -> None:
        """Draw the frames every stage has done (with ``until``, first wait for frames up to it), each with its own
        skeletons and flow and the latest answer."""
        if until is not None:
            for stage_set in self.stage_sets:
                stage_set.wait(until)
        done = min(stage_set.done() for stage_set in self.stage_sets)
        while self.waiting and self.waiting[0].number < done:
            self._draw(self.waiting.popleft(), answer)

    def _draw(self, frame, answer: dict | None) -> None:
        import cv2

        from preprocess.flow import to_pixels

        from .overlay import overlay_caption, overlay_frame

        skeletons, field, bound = [], None, None
        people = self.pose.latest("pose", frame.number) if self.pose is not None else None
        if people is not None:
            skeletons = [(slot, kp) for slot, (kp, _) in enumerate(people)]
        motion = None  # the field that ends at this frame (pair n − k → n)
        if self.flow is not None:
            motion = self.flow.latest("flow", frame.number - self.flow.stages["flow"]["offset"])
        if motion is not None:
            params = self.flow.stages["flow"]
            field, bound = to_pixels(motion, params), params["bound"] or 20.0
        caption, detail = overlay_caption(answer) if answer else ("...", "")
        if answer:
            detail = "  ".join(f"{s}: {max(p, key=p.get)}" for s, p in answer["streams"].items())
        canvas = overlay_frame(frame.image, skeletons, field, bound, caption, detail)
        if self.preview:
            cv2.imshow("bin/classify --live (q: stop)", canvas)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                raise PreviewClosed
        if self.path is None:
            return
        if self.writer is None:
            size = (canvas.shape[1], canvas.shape[0])
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        while self.written <= round(frame.time * self.fps):  # (frames dropped before this one: repeated)
            self.writer.write(canvas)
            self.written += 1
