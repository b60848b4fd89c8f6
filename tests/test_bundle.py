"""A trained model that travels: runs record their preprocessing, a model bundle classifies without the training
folders (PyTorch or ONNX Runtime), and the bad bundles are refused by name (issue 32)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from preprocess import DataError
from tests.conftest import run_bin
from tests.test_streams import run_config

ONE_EPOCH = {"epochs": 1, "batch_size": 5, "views": 1, "min_epoch_clips": 1}


@pytest.fixture(scope="module")
def flow_report(tiny_work, tmp_path_factory):
    """A flow run on a copy of tiny_work whose flow says it ran on a CUDA device (as on a GPU machine), fused alone:
    (work, run, report)."""
    from streams.train import train

    root = tmp_path_factory.mktemp("flow_report")
    work = root / "work"
    shutil.copytree(tiny_work, work, ignore=shutil.ignore_patterns("features"))
    for side in [work / "flow" / "summary.json", *sorted((work / "flow").glob("*.json"))]:
        data = json.loads(side.read_text())
        if isinstance(data.get("params"), dict):  # the torch engine on a GPU machine
            data["params"].update(engine="torch", device="cuda", batch=32)
            side.write_text(json.dumps(data))
    run = root / "flow"
    train(run_config("flow", work, run, **ONE_EPOCH), log=lambda *_: None)
    assert run_bin("fuse", run, "--out", root / "report").returncode == 0
    return work, run, root / "report"


def classified(*args) -> dict:
    result = run_bin("classify", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def test_a_run_records_its_preprocessing_and_classifies_without_its_work(flow_report, tiny_synth, tmp_path):
    work, run, report = flow_report
    record = json.loads((run / "preprocessing.json").read_text())
    # the data parameters only: the GPU machine's device and batch are chosen where the run is used
    assert record["stages"]["flow"]["engine"] == "torch" and "device" not in record["stages"]["flow"]
    assert record["inputs"][0]["shape"][-2:] == [48, 48]
    video = next((tiny_synth / "videos" / "waltz").glob("*.mp4"))
    before = classified(video, "--report", report)  # a run whose flow said cuda classifies on this CPU machine
    # WORK preprocessed again with another size after training: new videos are still prepared as in training
    assert run_bin("preprocess", "flow", work, work, "--resize", "short:64", "--force").returncode == 0
    again = classified(video, "--report", report)
    assert again["streams"]["flow"] == pytest.approx(before["streams"]["flow"], abs=1e-6)
    shutil.rmtree(work)  # and gone
    gone = classified(video, "--report", report)
    assert gone["streams"]["flow"] == pytest.approx(before["streams"]["flow"], abs=1e-6)


# every family of network the registry has: 2D (TSN), 3D, CNN sequence, MobileNetV2, pose TCN / LSTM / ST-GCN,
# feature sequences
FAMILIES = [
    ("rgb", {}),
    ("rgb", {"arch": "3d", "clip_len": 4, "frame_stride": 2}),
    ("rgb", {"arch": "sequence", "head": "lstm", "frames": 4}),
    ("flow", {"preset": "mobilenet_v2", "pretrained": "none", "size": 32}),
    ("pose", {}),
    ("pose", {"head": "lstm"}),
    ("pose", {"head": "stgcn", "frames": 8}),
    ("features-pose", {"features": "small", "head": "lstm", "frames": 8}),
]


def _family_id(value):
    return value if isinstance(value, str) else "-".join(map(str, value.values())) or "default"


@pytest.mark.parametrize("stream, extra", FAMILIES, ids=_family_id)
def test_each_family_scores_the_same_from_its_bundle_folder_in_torch_and_onnx(tiny_features, tmp_path, stream, extra):
    from fusion.bundle import export_stream
    from streams.run import Run
    from streams.train import train

    train(run_config(stream, tiny_features, tmp_path / "run", **{**ONE_EPOCH, "vote": False, **extra}), log=print)
    run = Run.load(tmp_path / "run")
    reference, _ = run.score(tiny_features, "test", device="cpu")
    saved = np.load(tmp_path / "run" / "scores_test.npz")["probs"]
    assert np.abs(reference - saved).max() < 1e-5  # (the run's own scores)
    info = export_stream(run, tmp_path / "bundle", run.classes)
    assert info["onnx"]
    carried = Run.load(tmp_path / "bundle")
    assert "work" not in carried.config and carried.classes == run.classes
    torch_probs, _ = carried.score(tiny_features, "test", device="cpu", runtime="torch")
    onnx_probs, _ = carried.score(tiny_features, "test", device="cpu", runtime="onnx")
    assert np.abs(torch_probs - reference).max() <= 1e-6
    assert np.abs(onnx_probs - reference).max() <= 1e-4
    assert (onnx_probs.argmax(1) == reference.argmax(1)).all()


def test_an_unexportable_network_is_named():
    from streams.inference import export_onnx

    class Eig(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x).real

    with pytest.raises(DataError, match="Eig cannot be exported to ONNX"):
        export_onnx(Eig(), torch.eye(3)[None], "/tmp/never.onnx")
