"""The preprocessing stages of a work directory (``WORK/<stage>/``), in dependency order, and what each reads of
another: a stage cropped to the dancers (``--crop dancers``) reads the pose stage's boxes, so pose comes first.

A training run records nothing of its preprocessing but its work directory; the parameters each stage ran with are
in that directory (its summary, else any video's sidecar), so ``bin/classify`` can repeat them on new videos.
"""

from __future__ import annotations

import os
from pathlib import Path

from .batch import DataError, Task, read_json

STAGE_ORDER = ("pose", "frames", "flow")  # a stage may read only stages before it


def stage_task(stage: str, params: dict) -> Task:
    """The batch task of one stage with these parameters."""
    if stage == "pose":
        from .pose import pose_task

        return pose_task(params)
    if stage == "frames":
        from .video import frames_task

        return frames_task(params)
    if stage == "flow":
        from .flow import flow_task

        return flow_task(params)
    raise DataError(stage, f"not a preprocessing stage of this toolkit ({', '.join(STAGE_ORDER)})")


def stage_reads(params: dict) -> tuple[str, ...]:
    """The stages a stage made with ``params`` reads the outputs of."""
    reads_pose = params.get("crop") == "dancers" or params.get("background", "keep") != "keep"
    return ("pose",) if reads_pose else ()


def recorded_params(work: str | os.PathLike, stage: str) -> dict:
    """The parameters a work directory's stage ran with (its summary, else any video's sidecar)."""
    folder = Path(work) / stage
    summary = folder / "summary.json"
    if summary.is_file():
        return read_json(summary)["params"]
    for side in sorted(folder.glob("*.json")):
        data = read_json(side)
        if isinstance(data, dict) and "params" in data and "video_id" in data:
            return data["params"]
    raise DataError(folder, f"no {stage} parameters recorded in the training work directory")


def stages_needed(work: str | os.PathLike, stages) -> dict[str, dict]:
    """{stage: its recorded parameters} for ``stages`` of ``work`` and every stage they read, in dependency order."""
    wanted: dict[str, dict] = {}
    todo = [s for s in stages if s in STAGE_ORDER]
    while todo:
        stage = todo.pop()
        if stage in wanted:
            continue
        wanted[stage] = recorded_params(work, stage)
        todo += [s for s in stage_reads(wanted[stage]) if s not in wanted]
    return {s: wanted[s] for s in STAGE_ORDER if s in wanted}


def verify_work(work: str | os.PathLike) -> dict[str, tuple[int, list[str]]]:
    """{stage: (finished outputs checked, what is wrong with the bad ones)} for every stage of ``work`` (a data file
    that does not match its sidecar's shape, dtype and size)."""
    from .batch import verify_outputs
    from .dataset import load_manifest

    manifest = load_manifest(work)
    return {stage: verify_outputs(stage_task(stage, {}), manifest, work) for stage in ("flow", "pose", "frames")}
