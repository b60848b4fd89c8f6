"""The stream registry: each variant takes its own options and refuses others by name, before anything is written."""

from __future__ import annotations

import pytest

from streams.registry import OptionError, resolve_config
from tests.conftest import run_bin


def test_a_variant_takes_its_own_options_refuses_others_by_name_and_changes_no_value(tiny_work, tmp_path):
    pose = resolve_config({"stream": "pose", "head": "lstm", "dropout": 0.5})
    assert pose["variant"] == "pose-lstm" and pose["dropout"] == 0.5  # not capped at 0.3 behind the user's back
    assert resolve_config({"stream": "pose", "head": "stgcn", "pose_input": "bone"})["dropout"] == 0.1  # its default
    assert resolve_config({"stream": "rgb"})["dropout"] == 0.5 and "clip_len" not in resolve_config({"stream": "rgb"})
    with pytest.raises(OptionError, match=r"--clip-len 8: the pose-tcn stream does not take it"):
        resolve_config({"stream": "pose", "clip_len": 8}, given={"clip_len"})
    with pytest.raises(OptionError, match=r"--dropout 1.5: must be below 1"):
        resolve_config({"stream": "pose", "dropout": 1.5})
    result = run_bin("train", "pose", tiny_work, tmp_path / "r", "--arch", "3d")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--arch 3d: the pose-tcn stream does not take it" in result.stderr
    assert not (tmp_path / "r").exists()  # refused before anything is written


@pytest.mark.parametrize(
    "stream, options, message",
    [
        ("pose", {"arch": "3d"}, "--arch 3d: the pose-tcn stream does not take it"),  # 11
        ("pose", {"dropout": 1.5}, "--dropout 1.5: must be below 1"),
        ("pose", {"sample_fps": 0.0}, "--sample-fps 0.0: must be at least"),  # 12
        ("pose", {"sample_fps": -3.0}, "--sample-fps -3.0: must be at least"),
        ("pose", {"sample_fps": float("nan")}, "--sample-fps nan: not a finite number"),
        ("pose", {"epochs": 0}, "--epochs 0: must be at least 1"),  # 13
        ("pose", {"epochs": -1}, "--epochs -1: must be at least 1"),
        ("pose", {"frames": 0}, "--frames 0: must be at least 1"),  # 14
        ("rgb", {"arch": "3d", "clip_len": 0}, "--clip-len 0: must be at least 1"),
        ("flow", {"views": 0}, "--views 0: must be at least 1"),
    ],
)
def test_options_are_checked_by_name_before_anything_is_written(tiny_work, tmp_path, stream, options, message):
    from streams.train import train

    run = tmp_path / "run"
    with pytest.raises(OptionError) as err:
        train({"stream": stream, "work": str(tiny_work), "run": str(run), **options}, given=set(options))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not run.exists()  # no config.json left behind


def test_the_run_config_is_typed_and_config_json_is_its_serialisation(tmp_path):
    import dataclasses
    import json

    from preprocess import DataError
    from streams.registry import FlowOptions, RunConfig, TrainingOptions, run_config

    config = run_config({"stream": "flow", "work": str(tmp_path), "stack": 3, "exclude": ["a"]})
    assert isinstance(config.training, TrainingOptions) and isinstance(config.options, FlowOptions)
    assert (config.options.stack, config.options.preset, config.training.lr) == (3, "mobilenet_v2", 1e-4)
    assert config.variant == "flow" and config.spec.fusion_name == "flow" and config.work == str(tmp_path)
    saved = json.loads(json.dumps(config.as_dict()))  # what config.json holds
    assert dict(config) == config.as_dict() == saved and config["stack"] == 3 and config.get("clip_len") is None
    assert saved["exclude"] == ["a"] and "normalize" not in saved  # (unset: not recorded)
    back = RunConfig.from_saved({**saved, "an_option_of_an_older_release": 1, "classes": ["x", "y"]})
    assert back == config
    changed = config.replace(workers=2, stack=7, normalize={"mean": [0.5] * 3, "std": [0.2] * 3})
    assert (changed.training.workers, changed.options.stack, changed["normalize"]["mean"]) == (2, 7, [0.5] * 3)
    assert config.training.workers is None and config.options.stack == 3  # frozen: a copy changed, not it
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.work = "elsewhere"
    with pytest.raises(DataError, match=r"config.json: not a run config this release reads \(--stack 0"):
        RunConfig.from_saved({**saved, "stack": 0})
