"""A trained run as one object: ``Run.load(RUN)``.

::

    RUN/config.json        ──► config, spec (streams.registry), sample rate, input statistics
    RUN/best.pt            ──► models(device)   (or every seed's, for a bin/train --seeds run; kept once loaded)
    RUN/model.onnx         ──► networks(device, "onnx"): the same networks in onnxruntime (a model bundle's)
    RUN/preprocessing.json ──► stages: {stage: data parameters} its inputs were preprocessed with (dependencies
                               first), recorded at training (older runs: read from its WORK, said once)
    dataset(work, split) / score(work) ──► the run's scores of any work directory preprocessed the same way

Every command that uses a trained run (classify, inspect, extract-features, export-scores) loads it here, so the
pipeline a run was trained with is rebuilt in one place. A run needs its training work directory only to train:
a model bundle's stream folder (``fusion.bundle``) is a run without one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from preprocess import DataError
from preprocess.batch import read_json, write_json

from .registry import RunConfig, StreamSpec, spec_of

PREPROCESSING_FILE = "preprocessing.json"
ONNX_FILE = "model.onnx"


def record_preprocessing(run: Path, config: dict, example=None) -> Path:
    """``RUN/preprocessing.json``: the data parameters of every stage the run reads, taken from its work directory
    now, so that new videos are prepared as its training videos were whatever becomes of WORK; and the shapes of
    one evaluation item's network inputs (``example``: what an ONNX export of the network takes)."""
    from preprocess.stages import preprocessing_record

    record = preprocessing_record(config["work"], spec_of(config).stages)
    if example is not None:
        from .inference import input_record

        record["inputs"] = input_record(example)
    path = Path(run) / PREPROCESSING_FILE
    write_json(path, record)
    return path


def member_runs(run: Path) -> list[Path]:
    """The run folders whose models score for RUN: RUN itself, each seed's folder of a ``bin/train --seeds`` run
    (whose scores are the seeds' mean), or a model bundle stream's ``members/*``."""
    if (run / "best.pt").is_file():
        return [run]
    if (run / "members").is_dir():
        return sorted(p for p in (run / "members").iterdir() if (p / "best.pt").is_file())
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


_NOTICED: set[Path] = set()  # runs whose missing record was said once


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict
    spec: StreamSpec
    _networks: dict = field(default_factory=dict, compare=False, repr=False)  # (runtime, device) → networks

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
    def run_config(self) -> RunConfig:
        """Its config, typed (``streams.registry.RunConfig``): the training options, the variant's, what it set."""
        return RunConfig.from_saved(self.config, self.path / "config.json")

    @cached_property
    def members(self) -> list[Path]:
        """The folders of its models: itself, or each seed's (``member_runs``)."""
        return member_runs(self.path)

    @property
    def fusion_name(self) -> str:
        """The stream's name in fusion (its score files carry it): ``spec.fusion_name``, not the variant
        (``spec.name``) nor bin/train's STREAM (``spec.stream``)."""
        return self.spec.fusion_name

    @property
    def work(self) -> Path:
        """Its training work directory (needed to train and to read an old run's preprocessing only)."""
        if not self.config.get("work"):
            raise DataError(self.path / "config.json", "no training work directory: a model bundle's stream")
        return Path(self.config["work"])

    @property
    def sample_fps(self) -> float | None:
        return self.run_config.training.sample_fps

    @cached_property
    def classes(self) -> list[str]:
        """The classes its models predict, in their order (a bundle's config, its score files, else its work's
        manifest)."""
        if isinstance(self.config.get("classes"), list):
            return [str(c) for c in self.config["classes"]]
        from .scores import read_score_file, score_path

        for split in ("test", "val", "oof"):
            if score_path(self.path, split).is_file():
                return read_score_file(self.path, split)["classes"]
        from preprocess import load_manifest

        return load_manifest(self.work).classes

    @cached_property
    def record(self) -> dict:
        """Its preprocessing record (``RUN/preprocessing.json``; a --seeds run's first seed's). A run trained before
        runs recorded it reads its work directory as it is now, said once on stderr."""
        from preprocess.stages import PREPROCESSING_FORMAT, checked_params, preprocessing_record

        for folder in (self.path, *self.members):
            path = folder / PREPROCESSING_FILE
            if path.is_file():
                record = read_json(path)
                if not isinstance(record, dict) or not isinstance(record.get("stages"), dict):
                    raise DataError(path, "not a preprocessing record (no stages)")
                if record.get("format", 0) > PREPROCESSING_FORMAT:
                    raise DataError(path, f"made by a newer release (format {record['format']})")
                for params in record["stages"].values():
                    checked_params(path, params)
                return record
        if self.path not in _NOTICED:
            _NOTICED.add(self.path)
            print(
                f"{self.path}: trained before runs recorded their preprocessing: its parameters are read from "
                f"{self.config.get('work')} as it is now",
                file=sys.stderr,
            )
        return preprocessing_record(self.work, self.spec.stages)

    @property
    def stages(self) -> dict[str, dict]:
        """{stage: the data parameters its training videos were preprocessed with} for every stage the run reads
        and every stage those read (dancer crops read pose), dependencies first."""
        return self.record["stages"]

    @property
    def video_short_side(self) -> int | None:
        """Its training videos' median short side (new videos are sized by it where training kept sizes)."""
        return self.record.get("video_short_side")

    def dataset(self, work, split: str = "test", *, video_ids=None, views: int | None = None, train: bool = False):
        """The run's evaluation dataset (its views, sampling rate and input statistics) over ``work``."""
        return self.spec.create_dataset(
            work,
            split,
            self.run_config,
            train=train,
            views=self.run_config.training.views if views is None else views,
            video_ids=video_ids,
        )

    def models(self, device="cpu") -> list:
        """The best checkpoint's model of each member (one, or every seed), on ``device``, in eval mode; loaded
        once per device and kept."""
        return self.networks(device, "torch")

    def networks(self, device="cpu", runtime: str = "torch") -> list:
        """Each member's network: its PyTorch model on ``device`` (``runtime`` torch), or its ONNX export in
        onnxruntime (``onnx``: a model bundle's ``model.onnx``). Loaded once and kept."""
        key = (runtime, str(device))
        if key in self._networks:
            return self._networks[key]
        if runtime == "onnx":
            from .inference import OnnxNetwork

            missing = [m / ONNX_FILE for m in self.members if not (m / ONNX_FILE).is_file()]
            if missing:
                raise DataError(missing[0], "no ONNX export (--runtime onnx reads a model bundle: bin/export-model)")
            out = [OnnxNetwork(m / ONNX_FILE, str(device)) for m in self.members]  # (device: cpu or cuda[:N])
        elif runtime == "torch":
            from .checkpoints import checkpoint_entry, load_checkpoint

            out = []
            for member in self.members:
                model = self.spec.create_model(self.run_config, len(self.classes))
                path = member / "best.pt"
                model.load_state_dict(checkpoint_entry(load_checkpoint(path), "model", path))
                out.append(model.to(device).eval())
        else:
            raise DataError(f"--runtime {runtime}", "choose torch or onnx")
        self._networks[key] = out
        return out

    def device(self, device: str = "auto"):
        from .inference import pick_device

        return pick_device(device)

    def score(self, work, split: str = "test", *, video_ids=None, device: str = "auto", runtime: str = "torch"):
        """(probabilities (N, C): the mean over the members' networks, as the run's own scores are; the dataset)."""
        from .inference import evaluate

        dev = self.device(device)
        dataset = self.dataset(work, split, video_ids=video_ids)
        training = self.run_config.training
        probs = [
            evaluate(net, dataset, dev, batch_size=training.batch_size, vote=training.vote)[0]
            for net in self.networks(dev, runtime)
        ]
        return np.mean(probs, axis=0), dataset
