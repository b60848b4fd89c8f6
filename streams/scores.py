"""The score-file contract, written and read here only: ``RUN/scores_<split>.npz`` (split val, test or oof) with its
JSON sidecar ``RUN/scores_<split>.json``.

::

    scores_<split>.npz   video_ids (N,) str · labels (N,) int64 (−1: unlabelled) · probs (N, C) float32
                         · classes (C,) str
    scores_<split>.json  stream (its name in fusion), split, metrics, and what made it (config, checkpoint, seeds,
                         folds)

bin/train, bin/train --seeds and bin/crossval write them (``write_score_file``); fusion, inspection and the mmaction2
export read them (``read_score_file``; ``fusion.scores.load_scores`` adds the checks fusion needs).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from preprocess import DataError
from preprocess.batch import atomic_path, write_json

ARRAYS = ("video_ids", "labels", "probs", "classes")


def score_path(run: str | Path, split: str) -> Path:
    return Path(run) / f"scores_{split}.npz"


def write_score_file(run: str | Path, split: str, *, video_ids, labels, probs, classes, sidecar: dict) -> Path:
    """Write both files atomically (the arrays in the contract's dtypes; ``sidecar`` with ``split`` set)."""
    path = score_path(run, split)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            video_ids=np.asarray(video_ids).astype(np.str_),
            labels=np.asarray(labels).astype(np.int64),
            probs=np.asarray(probs).astype(np.float32),
            classes=np.asarray(classes).astype(np.str_),
        )
    write_json(Path(run) / f"scores_{split}.json", {**sidecar, "split": split})
    return path


def read_score_file(run: str | Path, split: str) -> dict[str, np.ndarray]:
    """{video_ids (str), labels, probs (float64), classes (list of str)} of RUN's ``split``; a named error when the
    file is missing, torn or off the contract's shapes."""
    path = score_path(run, split)
    if not path.is_file():
        how = (
            "cross-validate the stream with bin/crossval into this run" if split == "oof" else "train it with bin/train"
        )
        raise DataError(path, f"no {split} scores in this run ({how} first)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ARRAYS}
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(path, f"not a whole score file ({type(err).__name__}: {err})") from None
    probs = arrays["probs"].astype(np.float64)
    if probs.ndim != 2 or probs.shape != (len(arrays["video_ids"]), len(arrays["classes"])):
        raise DataError(
            path,
            f"probs shape {probs.shape} does not match {len(arrays['video_ids'])} videos x "
            f"{len(arrays['classes'])} classes",
        )
    return {
        "video_ids": arrays["video_ids"].astype(str),
        "labels": arrays["labels"].astype(np.int64),
        "probs": probs,
        "classes": [str(c) for c in arrays["classes"]],
    }
