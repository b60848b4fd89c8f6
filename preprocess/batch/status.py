"""Where a work folder stands, stage by stage, merged over every shard: ``bin/preprocess status WORK``.

A video is done when its sidecar and data file are there (the sidecar is written last); failed when a summary (of
any shard) lists it as failed and it is not done since; missing otherwise (never run, or its shard never ran).
"""

from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .storage import read_json


def stage_status(out_dir: Path, video_ids: list[str], data_suffix: str) -> dict:
    """{done, failed (video_id, error), missing, summaries, parameter_sets} of one stage folder."""
    summaries = sorted(out_dir.glob("summary*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    errors = {}
    for path in summaries:  # later summaries win: a video failed once and retried is judged by its last run
        try:
            summary = read_json(path)
        except DataError:
            continue
        for failure in summary.get("failed", []):
            errors[failure["video_id"]] = failure.get("error", "failed")
        for video_id in summary.get("done", []):
            errors.pop(video_id, None)
    done, failed, missing, parameter_sets = [], [], [], []
    for video_id in video_ids:
        sidecar = out_dir / f"{video_id}.json"
        if sidecar.is_file() and (out_dir / f"{video_id}{data_suffix}").is_file():
            done.append(video_id)
            try:
                params = read_json(sidecar).get("params")
            except (DataError, AttributeError):
                params = None
            if params not in parameter_sets:
                parameter_sets.append(params)
        elif video_id in errors:
            failed.append({"video_id": video_id, "error": errors[video_id]})
        else:
            missing.append(video_id)
    return {
        "done": done,
        "failed": failed,
        "missing": missing,
        "summaries": [p.name for p in summaries],
        "parameter_sets": len(parameter_sets),
    }


def status_lines(stages: dict[str, dict]) -> tuple[list[str], bool]:
    """``work_status``'s stages as the lines ``bin/preprocess status`` prints, and whether every stage is complete
    (nothing failed, nothing missing)."""
    lines, complete = [], True
    for stage, state in stages.items():
        done, failed, missing = state["done"], state["failed"], state["missing"]
        complete &= not failed and not missing
        sets = state["parameter_sets"]
        lines.append(
            f"{stage}: {len(done)} done, {len(failed)} failed, {len(missing)} missing"
            f" (summaries: {', '.join(state['summaries']) or 'none'})"
            + (f"; made with {sets} different parameter sets" if sets > 1 else "")
        )
        lines += [f"  failed {failure['error']}" for failure in failed]
        if missing:
            lines.append(f"  missing {', '.join(missing)}")
    return lines, complete
