"""The preprocessing stages of a work directory (``WORK/<stage>/``): one spec per stage, in dependency order.

::

    StageSpec ─ name             pose, persons, frames, flow (a stage may read only stages before it)
              ├ task(params)     its batch task (preprocess.batch.run_batch runs it over a manifest)
              ├ info             the typed reader of one video's sidecar (PoseInfo, FramesInfo, FlowInfo)
              ├ data_suffix      its data file beside each sidecar
              ├ reads(params)    the stages whose outputs it reads (dancer crops and dimmed backgrounds read pose)
              ├ live_*           live classification's start (a model), per-frame step and window writer
              └ execution        the parameters that say how it ran, not what it made (device, batch, compile):
                                 a trained run records the rest (``data_params``); the machine that uses the run
                                 chooses these again (``for_this_machine``)

Adding a stage is one spec in ``STAGES``. A training run records the data parameters of every stage it reads
(``streams.run``, ``RUN/preprocessing.json``), so new videos are prepared exactly as its training videos were even
after WORK is gone or preprocessed again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .batch import DataError, Task, read_json
from .batch.status import stage_status


def _pose_task(params: dict, device: str = "cpu", *, name: str = "pose") -> Task:
    from .pose import pose_task

    # MediaPipe runs on the CPU only; the ONNX backends take the machine's device
    return pose_task(params, device="cpu" if params.get("backend") == "mediapipe" else device, name=name)


def _frames_task(params: dict, device: str = "cpu") -> Task:
    from .video import frames_task

    return frames_task(params)


def _flow_task(params: dict, device: str = "cpu") -> Task:
    from .flow import flow_task

    return flow_task(params)


def _flow_here(params: dict, device: str) -> dict:
    """The torch engine runs on this machine's device, at its default batch; OpenCV's needs nothing."""
    if params.get("engine") != "torch":
        return params
    from .flow.task import TORCH_BATCH

    return {**params, "device": device, "batch": TORCH_BATCH}


def scratch_params(params: dict, training_short_side: int | None) -> dict:
    """A sized stage's parameters for new videos: the training run's, except that a training resize of ``none``
    becomes ``short:N`` at the training videos' median short side N, so that a 1080p video is not processed at native
    size when the training videos were 160 × 120 (flow magnitudes, pose input and frame caches all follow the
    size)."""
    if params.get("resize") == "none" and training_short_side:
        return {**params, "resize": f"short:{int(training_short_side)}"}
    return params


def _pose_for_new_videos(params: dict, training_short_side, carried=()) -> dict:
    """The pose stage keeps its resize (its model sizes its own input) and finds its model file by SHA-256."""
    from .pose.backends import recorded_model

    return recorded_model(params, also=carried)


def _sized_for_new_videos(params: dict, training_short_side, carried=()) -> dict:
    return scratch_params(params, training_short_side)


def _info(module: str, name: str):
    def load():
        import importlib

        return getattr(importlib.import_module(module, __package__), name)

    return load


@dataclass(frozen=True)
class StageSpec:
    name: str
    make_task: Callable[..., Task]
    data_suffix: str
    info_class: Callable[[], type]  # (imported on use: the flow engine's module pulls torch in)
    execution: tuple[str, ...] = ()
    here: Callable[[dict, str], dict] = lambda params, device: params  # execution settings for this machine
    # recorded parameters made right for new videos of another size, on another machine
    new_videos: Callable[..., dict] = _sized_for_new_videos
    # live classification (preprocess.live.LiveStages): the method doing its work on one frame as it comes, and the
    # one writing a window of its results as its batch task writes a video
    live_start: str = ""
    live_add: str = ""
    live_write: str = ""

    @property
    def info(self) -> type:
        """The typed reader of this stage's sidecars (``.read(work, video_id)``)."""
        return self.info_class()

    def task(self, params: dict, device: str = "cpu") -> Task:
        return self.make_task(params, device)

    def reads(self, params: dict) -> tuple[str, ...]:
        """The stages its outputs made with ``params`` are made from: pose, when its task records the pose files
        it reads (``Task.inputs``: dancer crops, a dimmed background)."""
        return ("pose",) if self.task(params).inputs is not None else ()


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "pose",
            _pose_task,
            ".npz",
            _info(".pose", "PoseInfo"),
            new_videos=_pose_for_new_videos,
            live_start="_start_pose",
            live_add="_add_pose",
            live_write="_write_pose",
        ),
        # every person a multi-person detector finds (the pose format): what scene reliance hides where the pose
        # stage, tracking a few dancers, found fewer people (streams.data); no stream reads it
        StageSpec(
            "persons",
            functools.partial(_pose_task, name="persons"),
            ".npz",
            _info(".pose", "PersonsInfo"),
            new_videos=_pose_for_new_videos,
        ),
        StageSpec(
            "frames",
            _frames_task,
            ".npy",
            _info(".video", "FramesInfo"),
            live_add="_add_frames",
            live_write="_write_frames",
        ),
        # the torch engine's device, frames per batch and compilation change its speed, not its flow
        StageSpec(
            "flow",
            _flow_task,
            ".npy",
            _info(".flow", "FlowInfo"),
            execution=("device", "batch", "compile"),
            here=_flow_here,
            live_start="_start_flow",
            live_add="_add_flow",
            live_write="_write_flow",
        ),
    )
}
STAGE_ORDER = tuple(STAGES)  # dependency order


def stage_spec(stage: str) -> StageSpec:
    try:
        return STAGES[stage]
    except KeyError:
        raise DataError(stage, f"not a preprocessing stage of this toolkit ({', '.join(STAGE_ORDER)})") from None


def stage_task(stage: str, params: dict, device: str = "cpu") -> Task:
    """The batch task of one stage with these parameters (``device``: where a stage that can use one runs)."""
    return stage_spec(stage).task(params, device)


def stage_reads(stage: str, params: dict) -> tuple[str, ...]:
    """The stages a stage made with ``params`` reads the outputs of."""
    return stage_spec(stage).reads(params)


def data_params(stage: str, params: dict) -> dict:
    """``params`` without the stage's execution settings: what defines its data, the part a run records."""
    execution = stage_spec(stage).execution
    return {k: v for k, v in params.items() if k not in execution}


def for_new_videos(stage: str, params: dict, training_short_side: int | None, carried_models=()) -> dict:
    """A run's recorded parameters of ``stage`` for new videos (``StageSpec.new_videos``): frames and flow sized as
    the training videos were (``scratch_params``), pose with its model file found here by SHA-256."""
    return stage_spec(stage).new_videos(params, training_short_side, carried_models)


def for_this_machine(stage: str, params: dict, device: str = "cpu") -> dict:
    """Recorded data parameters made runnable here: the torch flow engine runs on ``device`` (cpu, cuda[:N]: the
    caller resolves "auto", as ``streams.inference.pick_device`` does), whatever device the training machine used."""
    return stage_spec(stage).here(data_params(stage, params), device)


def recorded_params(work: str | os.PathLike, stage: str) -> dict:
    """The parameters a work directory's stage ran with (its summary, else any video's sidecar)."""
    folder = Path(work) / stage
    summary = folder / "summary.json"
    if summary.is_file():
        data = read_json(summary)
        return checked_params(summary, data.get("params") if isinstance(data, dict) else None)
    for side in sorted(folder.glob("*.json")):
        data = read_json(side)
        if isinstance(data, dict) and "params" in data and "video_id" in data:
            return checked_params(side, data["params"])
    raise DataError(folder, f"no {stage} parameters recorded in the training work directory")


def checked_params(path, params) -> dict:
    """A stage's recorded parameters, or a named error for the file they came from (not an object, a resize that
    is not one), before anything runs with them."""
    from .video import Resize

    if not isinstance(params, dict):
        raise DataError(path, f"params: {str(params)[:60]!r} is not the parameters of a stage (a JSON object)")
    if "resize" in params:
        try:
            Resize.parse(params["resize"])
        except (ValueError, TypeError, AttributeError):
            raise DataError(path, f"params.resize: {params['resize']!r} is not a resize policy") from None
    return params


def stages_needed(work: str | os.PathLike, stages) -> dict[str, dict]:
    """{stage: its recorded data parameters} for ``stages`` of ``work`` and every stage they read, in dependency
    order (stages that are not preprocessing stages, such as cached features, are left out)."""
    wanted: dict[str, dict] = {}
    todo = [s for s in stages if s in STAGES]
    while todo:
        stage = todo.pop()
        if stage in wanted:
            continue
        wanted[stage] = data_params(stage, recorded_params(work, stage))
        todo += [s for s in stage_reads(stage, wanted[stage]) if s not in wanted]
    return {s: wanted[s] for s in STAGE_ORDER if s in wanted}


def verify_work(work: str | os.PathLike) -> dict[str, tuple[int, list[str]]]:
    """{stage: (finished outputs checked, what is wrong with the bad ones)} for every stage of ``work`` (a data file
    that does not match its sidecar's shape, dtype and size)."""
    from .batch import verify_outputs
    from .dataset import load_manifest

    manifest = load_manifest(work)
    return {stage: verify_outputs(stage_task(stage, {}), manifest, work) for stage in STAGES}


PREPROCESSING_FORMAT = 1


def preprocessing_record(work: str | os.PathLike, stages) -> dict:
    """What a trained run records of its preprocessing (``RUN/preprocessing.json``): the data parameters of every
    stage it reads (and those they read), and its training videos' median short side (new videos of another size
    are brought to it where the training resize was ``none``: ``scratch_params``) and length."""
    import numpy as np

    from .dataset import load_manifest

    manifest = load_manifest(work)
    videos = manifest.videos
    lengths = [v.frame_count / v.fps for v in manifest.by_split("train") if v.fps]
    return {
        "format": PREPROCESSING_FORMAT,
        "stages": stages_needed(work, stages),
        "video_short_side": int(np.median([min(v.width, v.height) for v in videos])) if videos else None,
        # how long its training videos are (median, seconds): how much of a video the run saw (a live window)
        "video_seconds": float(np.median(lengths)) if lengths else None,
        "work": str(Path(work).resolve()),  # (where it was read from: provenance only, never read again)
    }


def differences(a: dict[str, dict], b: dict[str, dict]) -> list[str]:
    """The parameters two runs' stages disagree on, for the stages both read: ``stage.key: a ≠ b``."""
    out = []
    for stage in (s for s in STAGE_ORDER if s in a and s in b):
        for key in sorted(set(a[stage]) | set(b[stage])):
            if key == "model" and a[stage].get("model_sha256") == b[stage].get("model_sha256"):
                continue  # the same pose model found at two paths
            if a[stage].get(key) != b[stage].get(key):
                out.append(f"{stage}.{key}: {a[stage].get(key)!r} ≠ {b[stage].get(key)!r}")
    return out


def work_status(work: str | Path, video_ids: list[str]) -> dict[str, dict]:
    """``stage_status`` of every stage folder WORK has (``preprocess.batch.status``)."""
    work = Path(work)
    return {
        stage: stage_status(work / stage, video_ids, spec.data_suffix)
        for stage, spec in STAGES.items()
        if (work / stage).is_dir()
    }
