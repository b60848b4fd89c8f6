"""The batch framework every preprocessor runs in: sharding, resume, workers, progress, summary.

A ``Task`` turns one manifest video into files under ``WORK/<task.name>/``. For each video the task's data file is
written atomically first, then a JSON sidecar ``<video_id>.json`` recording the parameters it was made with; the
sidecar is the completion mark. A rerun skips videos whose sidecar matches the current parameters, redoes those made
with other parameters (or left without a sidecar by a killed run), and ``force`` redoes all. So killing a run at any
moment and rerunning gives exactly the outputs of an uninterrupted run, as long as each video's computation is
deterministic (every task here is: no state is carried from one video to the next).

``shard=(i, n)`` takes every n-th video of the id-sorted manifest starting at i: n machines with i = 0..n-1 cover
every video exactly once with no coordination. Each shard writes its own summary file.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..records import VideoRecord, VideoSet
from .errors import DataError
from .pool import available_cores, map_surviving_crashes
from .progress import Progress
from .storage import folder_lock, read_json, remove_partials, write_json


@dataclass(frozen=True)
class Task:
    """What to do to one video. ``run(video, out_dir, params)`` writes the data files, returns frames processed."""

    name: str
    params: dict
    run: Callable[[VideoRecord, Path, dict], int]
    data_suffix: str  # the main data file: out_dir / f"{video_id}{data_suffix}"
    worker_init: Callable | None = None
    # verify(data file, sidecar) → what is wrong with a finished output, or None when it is whole
    verify: Callable[[Path, dict], str | None] | None = None
    gpu: bool = False  # runs on a GPU: on Ray, each worker asks for a fraction of one
    # inputs(out_dir, video_id) → digests of the other stages' outputs a video's output is made from (dancer crops:
    # the pose file), recorded in its sidecar: an output whose inputs changed, or went away, is redone
    inputs: Callable[[Path, str], dict] | None = None
    # the typed reader of its sidecars (FramesInfo, FlowInfo, PoseInfo): every finished output's fields are checked
    # by it, so is-done, verify and the readers agree on what a whole output is
    info: type[StageOutput] | None = None


@dataclass
class Summary:
    task: str
    shard: tuple[int, int]
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "shard": list(self.shard),
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "counts": {"done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed)},
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "videos_per_second": round(len(self.done) / self.seconds, 3) if self.seconds else None,
            "frames_per_second": round(self.frames / self.seconds, 1) if self.seconds else None,
        }

    def line(self) -> str:
        return f"{self.task}: {len(self.done)} done, {len(self.skipped)} already done, {len(self.failed)} failed" + (
            f"; {self.frames / self.seconds:.0f} frames/s" if self.seconds and self.frames else ""
        )


def parse_shard(text: str | None, environ=None) -> tuple[int, int]:
    """``"i/N"`` with 0 <= i < N; ``"auto"``: this job's place in a SLURM job array (``SLURM_ARRAY_TASK_ID`` minus
    ``SLURM_ARRAY_TASK_MIN``, of ``SLURM_ARRAY_TASK_COUNT``) or a torchrun/MPI-style launch (``RANK`` of
    ``WORLD_SIZE``), else the whole manifest (0/1)."""
    if not text:
        return (0, 1)
    if text.strip().lower() == "auto":
        env = os.environ if environ is None else environ
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            text = f"{index}/{env['SLURM_ARRAY_TASK_COUNT']}"
        elif "RANK" in env and "WORLD_SIZE" in env:
            text = f"{env['RANK']}/{env['WORLD_SIZE']}"
        else:
            return (0, 1)
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r}: expected i/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {text!r}: need 0 <= i < N")
    return (i, n)


def shard_videos(videos: list[VideoRecord], shard: tuple[int, int]) -> list[VideoRecord]:
    i, n = shard
    return [v for k, v in enumerate(sorted(videos, key=lambda v: v.video_id)) if k % n == i]


def sidecar_path(out_dir: Path, video_id: str) -> Path:
    return out_dir / f"{video_id}.json"


def _checked_output(task: Task, out_dir: Path, video_id: str) -> tuple[str | None, dict | None]:
    """(what is wrong with one video's finished output — sidecar, data file, its shape and size — or None; the
    sidecar when it could be read)."""
    side = sidecar_path(out_dir, video_id)
    data = out_dir / f"{video_id}{task.data_suffix}"
    if not side.is_file():
        return f"{side}: no sidecar (never finished)", None
    if not data.is_file():
        return f"{data}: missing (its sidecar says it was written)", None
    try:
        meta = read_json(side)
    except DataError as err:
        return str(err), None
    if not isinstance(meta, dict) or "params" not in meta:
        return f"{side}: not a sidecar (no params)", None
    if task.info is not None:  # its fields' types, as the typed reader checks them
        try:
            task.info.from_sidecar(meta, side)
        except DataError as err:
            return str(err), None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            return f"{side}: not a whole {task.name} sidecar ({type(err).__name__}: {err})", None
    problem = task.verify(data, meta) if task.verify else None
    return (f"{data}: {problem}" if problem else None), meta


def output_problem(task: Task, out_dir: Path, video_id: str) -> str | None:
    """What is wrong with one video's finished output, or None when it is whole."""
    return _checked_output(task, out_dir, video_id)[0]


def is_done(task: Task, out_dir: Path, video_id: str) -> bool:
    """Finished with these parameters and whole: a truncated or broken output is redone, not trusted."""
    problem, meta = _checked_output(task, out_dir, video_id)
    if problem is not None or meta["params"] != task.params:
        return False
    return task.inputs is None or meta.get("inputs", {}) == task.inputs(out_dir, video_id)


def verify_outputs(task: Task, manifest: VideoSet, work: str | os.PathLike) -> tuple[int, list[str]]:
    """Check every finished output of ``task`` in WORK: (outputs checked, problems). Videos never started are not
    problems; an output whose sidecar or data file is missing, broken or of the wrong shape is."""
    out_dir = Path(work) / task.name
    checked, problems = 0, []
    for video in manifest.videos:
        side, data = sidecar_path(out_dir, video.video_id), out_dir / f"{video.video_id}{task.data_suffix}"
        if not side.exists() and not data.exists():
            continue
        checked += 1
        problem = output_problem(task, out_dir, video.video_id)
        if problem:
            problems.append(problem)
    return checked, problems


def _run_one(task: Task, video: VideoRecord, out_dir: Path):
    """In a worker: (video_id, frames, error line or None). Never raises, so one bad video cannot stop the batch."""
    try:
        side = sidecar_path(out_dir, video.video_id)
        side.unlink(missing_ok=True)  # the old mark goes first: a kill from here on leaves the video "not done"
        frames = task.run(video, out_dir, task.params)
        return video.video_id, frames, None
    except DataError as err:
        return video.video_id, 0, str(err)
    except Exception as err:  # noqa: BLE001 - reported per video, the batch goes on
        where = traceback.extract_tb(err.__traceback__)[-1]
        return (
            video.video_id,
            0,
            f"{video.source}: {type(err).__name__}: {err} (at {Path(where.filename).name}:{where.lineno})",
        )


def _run_job(args):
    return _run_one(*args)


def _crashed(args):
    _, video, _ = args
    return video.video_id, 0, f"{video.source}: the worker process died on it (a crash in native code, or killed)"


# Decoding workers per GPU of a GPU stage: enough to keep it fed, few enough that CUDA contexts (and torch.compile
# runs) do not multiply by the core count; Ray's default --gpus-per-worker (0.25) fits as many on one GPU.
GPU_WORKERS_PER_DEVICE = 4


def default_workers(task: Task, executor: str = "pool", gpus_per_worker: float = 0.25) -> int:
    """The ``--workers`` of a batch left unset: one process per core; a GPU stage a few per GPU it runs on (the
    pool's workers share the one device they name; Ray's actors spread over this machine's GPUs)."""
    cores = available_cores()
    if not task.gpu:
        return cores
    if executor == "ray":
        import torch

        per_gpu = max(1, round(1 / gpus_per_worker)) if gpus_per_worker > 0 else GPU_WORKERS_PER_DEVICE
        return max(1, min(cores, per_gpu * max(1, torch.cuda.device_count())))
    return max(1, min(cores, GPU_WORKERS_PER_DEVICE))


def run_batch(
    task: Task,
    manifest: VideoSet,
    work: str | os.PathLike,
    *,
    workers: int | None = 1,
    shard: tuple[int, int] = (0, 1),
    force: bool = False,
    video_ids: list[str] | None = None,
    executor: str = "pool",
    ray_address: str | None = None,
    gpus_per_worker: float = 0.25,
) -> Summary:
    """Run ``task`` over the (sharded) manifest; writes ``WORK/<task>/summary[-i-of-N].json`` and returns it.

    ``executor="pool"`` runs videos in ``workers`` local processes (None: ``default_workers``); ``"ray"`` on
    ``workers`` actors of a Ray cluster (``ray_address``: None starts a local one; GPU tasks take
    ``gpus_per_worker`` of a GPU each)."""
    if executor not in ("pool", "ray"):
        raise ValueError(f"executor must be pool or ray, not {executor!r}")
    if workers is None:
        workers = default_workers(task, executor, gpus_per_worker)
    out_dir = Path(work) / task.name
    out_dir.mkdir(parents=True, exist_ok=True)
    # one writer per stage folder and shard (shards of a cluster write their own videos side by side): a second run
    # is refused by name at once, instead of the two deleting each other's temp files and mixing parameters
    with folder_lock(out_dir, f"preprocess {task.name} shard {shard[0]} of {shard[1]}"):
        return _run_batch_locked(
            task, manifest, out_dir, workers, shard, force, video_ids, executor, ray_address, gpus_per_worker
        )


def _run_batch_locked(
    task, manifest, out_dir, workers, shard, force, video_ids, executor, ray_address, gpus_per_worker
):
    videos = shard_videos(manifest.videos, shard)
    if video_ids is not None:
        wanted = set(video_ids)
        videos = [v for v in videos if v.video_id in wanted]
    summary = Summary(task.name, shard)
    # Temp files a killed run left behind for these videos (never another shard's, which may be running).
    remove_partials(out_dir, {f"{v.video_id}{suffix}" for v in videos for suffix in (task.data_suffix, ".json")})
    todo = []
    for v in videos:
        if not force and is_done(task, out_dir, v.video_id):
            summary.skipped.append(v.video_id)
        else:
            todo.append(v)
    start = time.monotonic()
    by_id = {v.video_id: v for v in todo}
    with Progress(len(todo), "videos", desc=task.name) as progress:

        def collect(results):
            for video_id, frames, error in results:
                if error:
                    summary.failed.append({"video_id": video_id, "source": by_id[video_id].source, "error": error})
                else:
                    summary.done.append(video_id)
                    summary.frames += frames
                progress.advance(frames=frames)

        # Always in worker processes, even one: a native crash (a decoder's segfault) then fails its video only.
        jobs = [(task, v, out_dir) for v in todo]
        if executor == "ray":
            from .ray_pool import map_on_ray

            gpus = gpus_per_worker if task.gpu else 0.0
            collect(
                map_on_ray(
                    _run_job,
                    jobs,
                    workers,
                    crashed=_crashed,
                    initializer=task.worker_init,
                    address=ray_address,
                    gpus_per_worker=gpus,
                )
            )
        else:
            collect(map_surviving_crashes(_run_job, jobs, workers, crashed=_crashed, initializer=task.worker_init))
    summary.seconds = time.monotonic() - start
    name = "summary.json" if shard == (0, 1) else f"summary-{shard[0]}-of-{shard[1]}.json"
    write_json(out_dir / name, {"params": task.params, **summary.to_json()})
    return summary


def read_sidecar(out_dir: Path, video_id: str, how: str) -> tuple[dict, Path]:
    """(one video's sidecar in a stage folder, its path), or a named error saying ``how`` to make it."""
    side = sidecar_path(out_dir, video_id)
    if not side.is_file():
        raise DataError(side, f"missing {out_dir.name} output for video {video_id!r} ({how})")
    data = read_json(side)
    if not isinstance(data, dict) or "params" not in data:
        raise DataError(side, f"not a {out_dir.name} sidecar (no params)")
    return data, side


class StageOutput:
    """Base of a stage's typed sidecar (``FramesInfo``, ``FlowInfo``, ``PoseInfo``): ``read(work, video_id)`` is its
    one reader; a subclass says its stage folder, how to make a missing output, and ``from_sidecar``."""

    stage: ClassVar[str] = ""
    how: ClassVar[str] = ""

    @classmethod
    def read(cls, work: str | os.PathLike, video_id: str):
        data, side = read_sidecar(Path(work) / cls.stage, video_id, cls.how)
        return cls.from_sidecar(data, side)

    @classmethod
    def from_sidecar(cls, data: dict, side: Path):
        raise NotImplementedError


def sidecar_whole_numbers(data: dict, key: str, side, *, length: int | None = None) -> tuple[int, ...]:
    """A sidecar's list of whole numbers (a shape), or a named error naming the field: the one check the typed
    readers, ``verify`` and is-done all go through."""
    value = data.get(key)
    ok = isinstance(value, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)
    if not ok or (length is not None and len(value) != length):
        what = f"a list of {length} whole numbers" if length is not None else "a list of whole numbers"
        raise DataError(side, f"{key}: {str(value)[:40]!r} is not {what}")
    return tuple(value)


def sidecar_whole_number(data: dict, key: str, side, *, default: int | None = None) -> int:
    """A sidecar's whole number (frames, width, height), or a named error naming the field."""
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DataError(side, f"{key}: {str(value)[:40]!r} is not a whole number")
    return value


def write_sidecar(out_dir: Path, video: VideoRecord, params: dict, **info) -> None:
    """The completion mark of one video: written last, after its data files."""
    write_json(
        sidecar_path(out_dir, video.video_id),
        {"video_id": video.video_id, "source": video.source, "params": params, **info},
    )
