"""Reading per-video score files (the streams' contract) and aligning several streams on the same videos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocess import DataError
from preprocess.batch import read_json

STREAM_ORDER = {"rgb": 0, "flow": 1, "pose": 2}  # the field's usual order; other stream names follow


def stream_key(name: str):
    return (STREAM_ORDER.get(name, len(STREAM_ORDER)), name)


def label(streams) -> str:
    """Display name of a subset in the field's order: rgb+flow+pose."""
    return "+".join(sorted(streams, key=stream_key))


@dataclass
class StreamScores:
    stream: str
    video_ids: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]
    source: str


def load_scores(run: str | Path, split: str) -> StreamScores:
    """``RUN/scores_<split>.npz`` with its sidecar; a named error when missing or off-contract."""
    from streams.scores import read_score_file, score_path

    run = Path(run)
    path = score_path(run, split)
    arrays = read_score_file(run, split)
    probs = arrays["probs"]
    bad = ~np.isfinite(probs).all(1)
    if bad.any():
        names = ", ".join(map(str, arrays["video_ids"][bad][:5])) + (" ..." if bad.sum() > 5 else "")
        raise DataError(
            path, f"non-finite scores for {int(bad.sum())} videos ({names}): retrain, after bin/preprocess verify"
        )
    side = run / f"scores_{split}.json"
    stream = read_json(side).get("stream", run.name) if side.is_file() else run.name
    return StreamScores(stream, arrays["video_ids"], arrays["labels"], probs, arrays["classes"], str(path))


def align(streams: list[StreamScores]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]:
    """Put every stream's scores in one video order: ({stream: probs (N, C)}, labels, video_ids, classes).

    Streams must share the class order and cover the same videos with the same labels; the names must differ.
    """
    if not streams:
        raise ValueError("no streams to fuse")
    first = streams[0]
    names = [s.stream for s in streams]
    if len(set(names)) != len(names):
        raise DataError(streams[1].source, f"two runs of the same stream ({', '.join(names)}): give one run per stream")
    order = np.argsort(first.video_ids)
    ids = first.video_ids[order]
    labels = first.labels[order]
    out = {}
    for s in streams:
        if s.classes != first.classes:
            raise DataError(s.source, f"class order differs from {first.source}: scores of different datasets")
        if len(s.video_ids) != len(ids) or set(s.video_ids) != set(ids):
            raise DataError(s.source, f"covers other videos than {first.source}")
        index = {v: i for i, v in enumerate(s.video_ids)}
        rows = np.array([index[v] for v in ids])
        if not np.array_equal(s.labels[rows], labels):
            raise DataError(s.source, f"labels differ from {first.source}")
        out[s.stream] = s.probs[rows]
    return out, labels, ids, list(first.classes)
