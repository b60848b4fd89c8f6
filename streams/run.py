"""A trained run as one object: ``Run.load(RUN)``.

::

    RUN/config.json ──► config, spec (streams.registry), sample rate, input statistics
    RUN/best.pt     ──► models()                 (or every seed's, for a bin/train --seeds run)
    RUN's WORK      ──► stages: {stage: parameters} the run's inputs were preprocessed with (dependencies first)
    dataset(work, split) / score(work) ──► the run's scores of any work directory preprocessed the same way

Every command that uses a trained run (classify, inspect, extract-features, export-scores) loads it here, so the
pipeline a run was trained with is rebuilt in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from preprocess import DataError
from preprocess.batch import read_json

from .registry import StreamSpec, spec_of


def member_runs(run: Path) -> list[Path]:
    """The run folders whose models score for RUN: RUN itself, or each seed's folder of a ``bin/train --seeds`` run
    (whose scores are the seeds' mean)."""
    if (run / "best.pt").is_file():
        return [run]
    side = run / "scores_test.json"
    seeds = read_json(side).get("seed_runs") if side.is_file() else None
    if not seeds:
        raise DataError(run, "neither a trained run (no best.pt) nor a --seeds run (no seed_runs in scores_test.json)")
    return [Path(folder) for folder in seeds.values()]


def _config_of(path: Path) -> tuple[dict, Path]:
    """(a run folder's config, the file it came from): bin/train's config.json, a --seeds run's first seed's, or
    bin/crossval's (a folder of out-of-fold scores only)."""
    if (path / "config.json").is_file():
        return read_json(path / "config.json"), path / "config.json"
    if (path / "crossval.json").is_file() and not (path / "scores_test.json").is_file():
        summary = read_json(path / "crossval.json")
        return {**summary["config"], "stream": summary["config"].get("stream", ""), "work": summary["work"]}, (
            path / "crossval.json"
        )
    side = member_runs(path)[0] / "config.json"
    if not side.is_file():
        raise DataError(side, "missing: not a bin/train run")
    return read_json(side), side


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict
    spec: StreamSpec

    @classmethod
    def load(cls, path: str | os.PathLike) -> Run:
        path = Path(os.path.abspath(path))
        if not path.is_dir():
            raise DataError(path, "no such run folder")
        config, side = _config_of(path)
        try:
            spec = spec_of(config)
        except (KeyError, ValueError) as err:
            raise DataError(side, f"not a run config this release knows ({err})") from None
        return cls(path, config, spec)

    @cached_property
    def members(self) -> list[Path]:
        """The folders of its models: itself, or each seed's (``member_runs``)."""
        return member_runs(self.path)

    @property
    def name(self) -> str:
        """The stream's name in fusion (its score files carry it)."""
        return self.spec.fusion_name

    @property
    def work(self) -> Path:
        return Path(self.config["work"])

    @property
    def sample_fps(self) -> float | None:
        return self.config.get("sample_fps")

    @cached_property
    def classes(self) -> list[str]:
        """The classes its models predict, in their order (from its score files, else its work's manifest)."""
        for split in ("test", "val", "oof"):
            path = self.path / f"scores_{split}.npz"
            if path.is_file():
                with np.load(path, allow_pickle=False) as data:
                    return [str(c) for c in data["classes"]]
        from preprocess import load_manifest

        return load_manifest(self.work).classes

    @cached_property
    def stages(self) -> dict[str, dict]:
        """{stage: the parameters it ran with in the training work directory} for every stage the run reads and
        every stage those read (dancer crops read pose), dependencies first."""
        from preprocess.stages import stages_needed

        return stages_needed(self.work, self.spec.stages)

    def dataset(self, work, split: str = "test", *, video_ids=None, views: int | None = None, train: bool = False):
        """The run's evaluation dataset (its views, sampling rate and input statistics) over ``work``."""
        return self.spec.create_dataset(
            work,
            split,
            self.config,
            train=train,
            views=self.config["views"] if views is None else views,
            video_ids=video_ids,
        )

    def models(self, device="cpu") -> list:
        """The best checkpoint's model of each member (one, or every seed), on ``device``, in eval mode."""
        from .checkpoints import checkpoint_entry, load_checkpoint

        out = []
        for member in self.members:
            model = self.spec.create_model(self.config, len(self.classes))
            model.load_state_dict(checkpoint_entry(load_checkpoint(member / "best.pt"), "model", member / "best.pt"))
            out.append(model.to(device).eval())
        return out

    def device(self, device: str = "auto"):
        from .train import pick_device

        return pick_device({**self.config, "device": device}, 0)

    def score(self, work, split: str = "test", *, video_ids=None, device: str = "auto"):
        """(probabilities (N, C): the mean over the members' models, as the run's own scores are; the dataset)."""
        from .train import evaluate

        dev = self.device(device)
        dataset = self.dataset(work, split, video_ids=video_ids)
        probs = [
            evaluate(model, dataset, dev, batch_size=self.config["batch_size"], vote=self.config["vote"])[0]
            for model in self.models(dev)
        ]
        return np.mean(probs, axis=0), dataset

    def score_file(self, split: str) -> Path:
        """``RUN/scores_<split>.npz``, or a named error when the run has none."""
        path = self.path / f"scores_{split}.npz"
        if not path.is_file():
            raise DataError(path, f"no {split} scores here (a bin/train or bin/crossval run)")
        return path
