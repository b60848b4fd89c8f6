"""A trained model that travels: runs record their preprocessing, a model bundle classifies without the training
folders (PyTorch or ONNX Runtime), and the bad bundles are refused by name (issue 32)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from preprocess import DataError
from tests.conftest import assert_bundle_scores_as_the_run, onnxruntime_missing, run_bin
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


# Every family of network the registry has goes through assert_bundle_scores_as_the_run after it trains: 2D (TSN),
# 3D, CNN sequence, pose TCN and LSTM, feature sequences in tests/test_streams.py; ST-GCN and MobileNetV2 here.
@pytest.mark.parametrize(
    "stream, extra",
    [("flow", {"preset": "mobilenet_v2", "pretrained": "none", "size": 32}), ("pose", {"head": "stgcn", "frames": 8})],
    ids=["mobilenet_v2", "stgcn"],
)
def test_mobilenet_and_stgcn_score_the_same_from_their_bundle_folder(tiny_work, tmp_path, stream, extra):
    from streams.train import train

    train(run_config(stream, tiny_work, tmp_path / "run", **{**ONE_EPOCH, **extra}), log=lambda *_: None)
    assert_bundle_scores_as_the_run(tmp_path / "run", tiny_work, tmp_path / "bundle")
    if onnxruntime_missing():  # (the PyTorch half above ran)
        pytest.skip(onnxruntime_missing())


def test_an_unexportable_network_is_named():
    from streams.inference import export_onnx

    class Eig(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x).real

    with pytest.raises(DataError, match="Eig cannot be exported to ONNX"):
        export_onnx(Eig(), torch.eye(3)[None], "/tmp/never.onnx")


@pytest.fixture(scope="module")
def flow_bundle(flow_report, tmp_path_factory):
    """flow_report's model exported, then copied to another folder: (bundle copy, report)."""
    _, _, report = flow_report
    root = tmp_path_factory.mktemp("flow_bundle")
    made = run_bin("export-model", report, root / "made")
    assert made.returncode == 0, made.stderr
    shutil.copytree(root / "made", root / "elsewhere")
    return root / "elsewhere", report


def test_a_copied_bundle_classifies_as_the_report_does_in_torch_and_onnx(flow_bundle, flow_report, tiny_synth):
    bundle, report = flow_bundle
    _, run, _ = flow_report
    card = (bundle / "README.md").read_text()
    assert "## Test figures" in card and "flow (this bundle) | single" in card
    assert "no test group is in training" in card  # (one performer per split in the tiny set)
    assert not [p for p in bundle.rglob("*.json") if str(run.parent) in p.read_text()]  # no training paths
    video = next((tiny_synth / "videos" / "tango").glob("*.mp4"))
    reference = classified(video, "--report", report)
    runtime_torch = classified(video, "--model", bundle)
    for stream, probs in reference["streams"].items():
        assert runtime_torch["streams"][stream] == pytest.approx(probs, abs=1e-6)
    assert runtime_torch["prediction"] == reference["prediction"]
    if onnxruntime_missing():  # (the PyTorch half above still ran)
        pytest.skip(onnxruntime_missing())
    runtime_onnx = classified(video, "--model", bundle, "--runtime", "onnx")
    for stream, probs in reference["streams"].items():
        assert runtime_onnx["streams"][stream] == pytest.approx(probs, abs=1e-4)
    assert runtime_onnx["prediction"] == reference["prediction"]


def test_bad_bundles_and_bad_options_are_refused_by_name(flow_bundle, flow_report, tiny_synth, tmp_path):
    from fusion.bundle import export_bundle, load_bundle
    from fusion.classify import classify

    bundle, report = flow_bundle
    video = next((tiny_synth / "videos" / "tango").glob("*.mp4"))
    altered = tmp_path / "altered"
    shutil.copytree(bundle, altered)
    weights = altered / "streams" / "flow" / "members" / "0" / "best.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    weights.write_bytes(bytes(data))
    result = run_bin("classify", video, "--model", altered)  # as a user meets it: one line, no traceback
    assert result.returncode != 0 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "best.pt: altered: its SHA-256 differs from the bundle's manifest" in result.stderr
    missing = tmp_path / "missing"
    shutil.copytree(bundle, missing)
    (missing / "streams" / "flow" / "config.json").unlink()
    with pytest.raises(DataError, match="config.json: missing from the bundle"):
        load_bundle(missing)
    newer = tmp_path / "newer"
    shutil.copytree(bundle, newer)
    info = json.loads((newer / "bundle.json").read_text())
    (newer / "bundle.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(DataError, match=r"made by a newer release \(bundle format 99"):
        load_bundle(newer)
    both = run_bin("classify", video, "--model", bundle, "--report", report)
    assert both.returncode == 2 and "one of them, not both" in both.stderr
    onnx_alone = run_bin("classify", video, "--report", report, "--runtime", "onnx")
    assert onnx_alone.returncode == 2 and "--runtime onnx: only with --model" in onnx_alone.stderr
    # export into a folder that holds something: refused, and with --force replaced whole
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not empty \\(--force replaces it\\)"):
        export_bundle(report, taken, log=lambda *_: None)
    export_bundle(report, taken, force=True, log=lambda *_: None)
    assert not (taken / "notes.txt").exists() and (taken / "manifest.json").is_file()
    # one archive file: classifies as the folder does
    archive = export_bundle(report, tmp_path / "model.tar", archive="tar", log=lambda *_: None)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from_archive, _ = classify([str(video)], None, tmp_path / "a", model=archive, device="cpu")
    from_folder, _ = classify([str(video)], None, tmp_path / "b", model=bundle, device="cpu")
    assert from_archive[0]["fused"] == pytest.approx(from_folder[0]["fused"], abs=1e-6)


def test_a_pose_model_is_found_by_its_sha256_and_another_is_refused(tmp_path, monkeypatch):
    from preprocess.model_files import file_sha256
    from preprocess.pose.backends import recorded_model

    model = tmp_path / "a" / "pose_model.task"
    model.parent.mkdir()
    model.write_bytes(b"the model the run was trained with")
    params = {"backend": "mediapipe", "model": str(model), "model_sha256": file_sha256(model)}
    moved = tmp_path / "b" / "pose_model.task"
    moved.parent.mkdir()
    model.rename(moved)
    monkeypatch.setenv("DANCE_POSE_MODEL", str(moved))  # found elsewhere, by its SHA-256
    assert recorded_model(params)["model"] == str(moved.resolve())
    moved.write_bytes(b"another model of the same name")
    with pytest.raises(DataError, match="pose model SHA-256 differs from the one the run was trained with"):
        recorded_model(params)
    moved.unlink()
    monkeypatch.setenv("DANCE_SHARED", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="pose model not found"):
        recorded_model(params)


def test_fused_runs_must_agree_on_the_stages_they_share(tiny_work, tmp_path):
    from streams.train import train

    for stream in ("rgb", "pose"):
        train(run_config(stream, tiny_work, tmp_path / stream, **ONE_EPOCH), log=lambda *_: None)
    record = json.loads((tmp_path / "pose" / "preprocessing.json").read_text())
    record["stages"]["pose"]["step"] = 2  # as if its pose had been made every second frame
    (tmp_path / "pose" / "preprocessing.json").write_text(json.dumps(record))
    result = run_bin("fuse", tmp_path / "rgb", tmp_path / "pose", "--out", tmp_path / "report")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "read other preprocessing than" in result.stderr and "pose.step: 1 ≠ 2" in result.stderr


def test_each_stage_prepares_new_videos_its_own_way():
    from preprocess.stages import for_new_videos

    imported = {"backend": "import:coco", "resize": "none", "step": 1}  # (no model file to find)
    assert for_new_videos("pose", imported, 120) == imported  # pose sizes its own input: its resize is kept
    for stage in ("frames", "flow"):  # sized as the training videos were
        assert for_new_videos(stage, {"resize": "none"}, 120) == {"resize": "short:120"}
        assert for_new_videos(stage, {"resize": "short:64"}, 120) == {"resize": "short:64"}
