import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from preprocess.batch import DataError
from preprocess.pose import normalize_to_box
from streams.checkpoints import load_init
from streams.data import (
    FlowStacks,
    PoseSequences,
    RGBSegments,
    flip_flow_stack,
    flip_pose_features,
    flip_rgb,
    pose_features,
)
from streams.metrics import classification_metrics
from streams.models import create_flow_model, create_pose_model, create_rgb3d_model, create_rgb_model
from streams.sampling import clip_duration, item_times, items_at, reference_fps, window_starts
from streams.train import train
from tests.conftest import REPO, assert_bundle_scores_as_the_run, flip_keypoints_horizontally, run_bin

FAST = {
    "epochs": 3,
    "batch_size": 8,
    "preset": "small",  # (flow's default is ImageNet's MobileNetV2: tests/test_pretrained.py trains it)
    "size": 48,
    "segments": 2,
    "stack": 3,
    "frames": 12,
    "views": 2,
    "min_epoch_clips": 1,
    "patience": 10,
    "lr": 3e-3,
}


def run_config(stream, work, run, **extra):
    """FAST's options that the stream takes (another stream's are refused by name), then ``extra``."""
    from streams.registry import SPECS, variant_of

    taken = SPECS[variant_of(stream, extra)].option_names()
    return {
        "stream": stream,
        "work": str(work),
        "run": str(run),
        **{k: v for k, v in FAST.items() if k in taken},
        **extra,
    }


def scores(run, split="test"):
    with np.load(run / f"scores_{split}.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_model_shapes_and_builders_are_keyword_only():
    assert create_rgb_model(num_classes=10)(torch.zeros(2, 3, 3, 64, 64)).shape == (2, 10)
    assert create_flow_model(num_classes=7, stack=4)(torch.zeros(2, 3, 8, 64, 64)).shape == (2, 7)
    assert create_rgb3d_model(num_classes=5)(torch.zeros(2, 8, 3, 64, 64)).shape == (2, 5)
    for head in ("tcn", "lstm", "lstm_attention"):
        model = create_pose_model(num_classes=10, features=54, head=head)
        mask = torch.ones(2, 16, 4, dtype=torch.bool)
        mask[:, :, 2:] = False
        assert model(torch.randn(2, 16, 4, 54), mask).shape == (2, 10)
    with pytest.raises(TypeError):
        create_rgb_model(10)


def test_pose_model_ignores_empty_person_slots():
    torch.manual_seed(0)
    model = create_pose_model(num_classes=4, features=54).eval()
    x = torch.randn(1, 16, 4, 54)
    mask = torch.zeros(1, 16, 4, dtype=torch.bool)
    mask[..., 0] = True
    noisy = x.clone()
    noisy[..., 1:, :] = torch.randn(1, 16, 3, 54) * 100  # garbage in masked slots must not matter
    assert torch.allclose(model(x, mask), model(noisy, mask), atol=1e-5)


def test_windows_by_time_match_frame_indices_at_the_videos_own_rate():
    times = item_times(np.arange(30), 10.0)  # 30 frames at 10 fps: 3 s

    def starts(count, length, rng=None, view=0, views=1):
        duration = clip_duration(times, 10.0)
        return items_at(times, window_starts(duration, count, (length - 1) / 10.0, rng, view, views)).tolist()

    assert starts(3, 1) == [5, 15, 25]
    assert starts(3, 5, view=0, views=2) == [2, 10, 19]  # 26 usable starts, a quarter into each third
    rng = np.random.default_rng(0)
    for _ in range(50):
        first = np.array(starts(4, 3, rng))
        assert (first >= 0).all() and (first + 3 <= 30).all() and (np.diff(first) >= 0).all()
    short = item_times(np.arange(2), 10.0)  # shorter than a window: clamp, never fail
    assert items_at(short, window_starts(clip_duration(short, 10.0), 3, 0.4, None)).tolist() == [0, 0, 0]
    # an item is the one on screen: an instant between two frames takes the earlier one
    assert items_at(times, [0.0, 0.09, 0.1, 0.19, 99.0]).tolist() == [0, 0, 1, 1, 29]
    assert reference_fps([23.976, 30, 30]) == 30.0


def test_flip_semantics_per_modality():
    rng = np.random.default_rng(0)
    image = rng.random((3, 6, 8)).astype(np.float32)
    assert np.array_equal(flip_rgb(image)[:, :, 0], image[:, :, -1])
    stack = rng.standard_normal((6, 5, 7)).astype(np.float32)  # L = 3 fields: x0 y0 x1 y1 x2 y2
    flipped = flip_flow_stack(stack)
    assert np.array_equal(flipped[0::2], -stack[0::2, :, ::-1])  # x: mirrored and negated
    assert np.array_equal(flipped[1::2], stack[1::2, :, ::-1])  # y: mirrored only
    assert np.array_equal(flip_flow_stack(flipped), stack)
    # pose: flipping the features equals the features of the mirrored skeletons
    keypoints = np.zeros((5, 2, 17, 3), np.float32)
    keypoints[..., 0] = rng.uniform(10, 150, (5, 2, 17))
    keypoints[..., 1] = rng.uniform(10, 110, (5, 2, 17))
    keypoints[..., 2] = rng.uniform(0.3, 1, (5, 2, 17))
    mask = np.ones((5, 2), bool)

    def features(kp):
        normalized, boxes = normalize_to_box(kp, 0.2)
        return pose_features({"normalized": normalized, "keypoints": kp, "boxes": boxes, "mask": mask}, 160, 120)

    mirrored = flip_keypoints_horizontally(keypoints, 160)
    expected = features(mirrored)
    got = flip_pose_features(features(keypoints))
    assert np.allclose(got[..., :51], expected[..., :51], atol=1e-5)
    assert np.allclose(got[..., 51:], expected[..., 51:], atol=2 / 160)  # box centre: width-1 vs width convention


def test_flow_dataset_flip_matches_flow_of_mirrored_frames(tiny_work):
    import cv2

    from preprocess.dataset import load_manifest
    from preprocess.video import read_frames

    video = load_manifest(tiny_work).by_split("train")[0]
    frames = [f.image for f in read_frames(video.to_source(), colour="gray")]
    forward = cv2.calcOpticalFlowFarneback(frames[5], frames[6], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    mirrored = cv2.calcOpticalFlowFarneback(
        frames[5][:, ::-1].copy(), frames[6][:, ::-1].copy(), None, 0.5, 3, 15, 3, 5, 1.2, 0
    )
    flipped = flip_flow_stack(forward.transpose(2, 0, 1))
    moving = np.abs(forward).sum(-1) > 0.5
    # Farneback is not exactly mirror-symmetric, but the flipped field agrees with the mirrored frames' flow
    error = np.abs(flipped.transpose(1, 2, 0) - mirrored)[moving[:, ::-1]].mean()
    assert error < 0.15 * np.abs(forward)[moving].mean() + 0.05


def test_datasets_give_fixed_shapes_and_deterministic_augmentation(tiny_work):
    rgb = RGBSegments(tiny_work, "train", train=True, seed=1, segments=2, size=48)
    flow = FlowStacks(tiny_work, "train", train=True, seed=1, segments=2, stack=3, size=48)
    pose = PoseSequences(tiny_work, "train", train=True, seed=1, frames=12)
    x, label, video, view = rgb[0]
    assert x.shape == (2, 3, 48, 48) and 0 <= label < 10
    assert flow[0][0].shape == (2, 6, 48, 48)
    (features, mask), *_ = pose[0]
    assert features.shape == (12, 4, 54) and mask.shape == (12, 4) and mask.any()
    assert torch.equal(rgb[3][0], rgb[3][0])  # same (seed, epoch, index), same augmentation
    rgb.set_epoch(1)
    assert not torch.equal(rgb[3][0], RGBSegments(tiny_work, "train", train=True, seed=1, segments=2, size=48)[3][0])
    views = RGBSegments(tiny_work, "test", train=False, views=3, segments=2, size=48)
    assert len(views) == 3 * len(views.videos) and views[0][3] == 0 and views[2][3] == 2


@pytest.mark.parametrize(
    "stream, extra",
    [
        ("rgb", {}),
        ("flow", {}),
        ("pose", {}),
        ("rgb", {"arch": "3d", "clip_len": 4, "frame_stride": 2}),
        ("pose", {"head": "lstm_attention", "epochs": 24}),
        ("rgb", {"arch": "sequence", "head": "lstm", "frames": 4}),  # CNN-LSTM, end to end
        # (more epochs: the features of the dimmed frame cache separate the styles less at first)
        ("features", {"features": "small", "head": "lstm", "frames": 8, "epochs": 24}),
        ("features-pose", {"features": "small", "head": "tcn", "frames": 8}),  # two-stream sequence model
    ],
)
def test_each_stream_trains_and_its_loss_falls(tiny_features, tmp_path, stream, extra):
    tiny_work = tiny_features
    settings = {"epochs": 12, "batch_size": 5, "label_smoothing": 0.0, "dropout": 0.1, "patience": 30, **extra}
    train(run_config(stream, tiny_work, tmp_path, **settings), log=lambda *_: None)
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [h["train_loss"] for h in history]
    assert len(losses) == settings["epochs"]
    assert np.mean(losses[-2:]) < 0.75 * np.mean(losses[:2]), losses
    for split in ("val", "test"):
        s = scores(tmp_path, split)
        # the score-file contract
        assert s["video_ids"].dtype.kind == "U" and s["classes"].dtype.kind == "U" and len(s["classes"]) == 10
        assert s["labels"].dtype == np.int64 and s["probs"].dtype == np.float32 and s["probs"].shape == (10, 10)
        assert np.allclose(s["probs"].sum(1), 1, atol=1e-4) and (s["probs"] >= 0).all()
        side = json.loads((tmp_path / f"scores_{split}.json").read_text())
        # the name fusion reads: the stream, and for pose a head other than the default TCN
        head = extra.get("head", "tcn")
        assert side["stream"] == (f"pose-{head}" if stream == "pose" and head != "tcn" else stream)
        assert side["checkpoint"].endswith("best.pt")
        assert side["metrics"]["top1"] == pytest.approx(classification_metrics(s["labels"], s["probs"])["top1"])
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "config.json").read_text())["stream"] == stream
    # the trained network carried in a model bundle scores as the run does, in PyTorch and ONNX Runtime (issue 32)
    assert_bundle_scores_as_the_run(tmp_path, tiny_work, tmp_path / "bundle")


def test_same_seed_same_scores_and_resume_reproduces_an_uninterrupted_run(tiny_work, tmp_path):
    config = run_config("flow", tiny_work, tmp_path / "a", epochs=4)
    train(config, log=lambda *_: None)
    train({**config, "run": str(tmp_path / "b")}, log=lambda *_: None)
    a, b = scores(tmp_path / "a"), scores(tmp_path / "b")
    assert np.array_equal(a["probs"], b["probs"])

    class Interrupted(Exception):
        pass

    def stop_after_epoch_two(line):
        if "epoch 3/" in line:
            raise Interrupted  # killed after epoch 3's evaluation, before its checkpoint: resumes from epoch 2

    with pytest.raises(Interrupted):
        train({**config, "run": str(tmp_path / "c")}, log=stop_after_epoch_two)
    lines = []
    train({**config, "run": str(tmp_path / "c")}, log=lines.append)
    assert any("resuming" in line and "after epoch 2" in line for line in lines)
    c = scores(tmp_path / "c")
    assert np.array_equal(a["probs"], c["probs"])
    history_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    history_c = (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items() if k != "train_clips_per_s"} for r in rows]  # noqa: E731
    assert strip(history_a) == strip(history_c)


def test_small_training_sets_repeat_with_fresh_augmentation(tiny_work):
    data = RGBSegments(tiny_work, "train", train=True, seed=0, segments=2, size=48)
    n = len(data.videos)
    data.repeats = 3
    assert len(data) == 3 * n
    first, again = data[1], data[1 + n]
    assert first[1] == again[1] and first[2] == again[2]  # the same video and label...
    assert not torch.equal(first[0], again[0])  # ...seen with other augmentation


def test_init_loads_matching_weights(tiny_work, tmp_path):
    source = create_flow_model(num_classes=3, stack=3)  # other class count: the classifier must be left alone
    torch.save(source.state_dict(), tmp_path / "pretrained.pt")
    target = create_flow_model(num_classes=10, stack=3)
    message = load_init(target, str(tmp_path / "pretrained.pt"))
    assert "loaded" in message
    assert torch.equal(target.backbone[0].weight, source.backbone[0].weight)
    assert target.fc.weight.shape == (10, source.fc.in_features)
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="no tensor"):
        load_init(target, str(tmp_path / "other.pt"))
    result = run_bin(
        "train",
        "flow",
        tiny_work,
        tmp_path / "run",
        "--preset",
        "small",  # the state dict's architecture (create_flow_model's default)
        "--epochs",
        "1",
        "--size",
        "48",
        "--stack",
        "3",
        "--min-epoch-clips",
        "1",
        "--segments",
        "2",
        "--init",
        tmp_path / "pretrained.pt",
    )
    assert result.returncode == 0, result.stderr
    assert "--init" in result.stdout and "loaded" in result.stdout


def test_bad_work_directories_give_named_errors(tiny_work, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_bin("train", "pose", empty, tmp_path / "r1")
    assert result.returncode != 0 and "no manifest here" in result.stderr and "Traceback" not in result.stderr
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "manifest.json").write_text((tiny_work / "manifest.json").read_text())
    result = run_bin("train", "rgb", partial, tmp_path / "r2")
    assert (
        result.returncode != 0
        and "no frames preprocessing" in result.stderr
        and "bin/preprocess frames" in result.stderr
    )
    (partial / "pose").mkdir()
    result = run_bin("train", "pose", partial, tmp_path / "r3")
    assert result.returncode != 0 and "missing pose output for video" in result.stderr


def test_torchrun_two_processes_write_one_set_of_outputs(tiny_work, tmp_path):
    run = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29517",
            str(REPO / "bin" / "train"),
            "pose",
            str(tiny_work),
            str(run),
            "--epochs",
            "2",
            "--frames",
            "12",
            "--batch-size",
            "4",
            "--min-epoch-clips",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2
    # Loss and top-1 cover both processes' clips (10 training videos, 5 per rank, one full batch of 4 each), not
    # rank 0's share alone.
    assert [h["train_clips"] for h in history] == [8, 8]
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".lock-")) == sorted(
        [
            "best.pt",
            "config.json",
            "last.pt",
            "metrics.jsonl",
            "preprocessing.json",
            "scene_reliance.json",
            "scores_test.json",
            "scores_test.npz",
            "scores_val.json",
            "scores_val.npz",
            "training_curves.png",
        ]
    )
    assert result.stdout.count("pose epoch 1/2") == 1  # logged once, by rank 0
    # Evaluation was sharded (each rank scored every other item, the sums added up): the scores rank 0 wrote are
    # the ones one process gets from the same best.pt.
    from streams.run import Run

    for split in ("val", "test"):
        written = np.load(run / f"scores_{split}.npz", allow_pickle=False)
        alone, dataset = Run.load(run).score(tiny_work, split, device="cpu")
        assert written["video_ids"].tolist() == [v.video_id for v in dataset.videos]
        assert np.allclose(written["probs"], alone, atol=1e-6), split


def test_loaders_are_made_once_per_run_and_their_workers_see_each_epoch(tiny_work):
    """A persistent worker keeps its own copy of the dataset: the epoch reaches it with each index, so epoch 2's
    augmentation in a worker that lived through epoch 1 is what a fresh process computes."""
    from streams.registry import create_dataset
    from streams.train import evaluation_loader, prepare_config, set_loader_epoch, training_loader

    config = prepare_config({"stream": "flow", "work": str(tiny_work), "preset": "small", "workers": 1})
    assert config.training.workers == 1
    by_epoch = {}
    for workers in (0, 1):
        config = config.replace(workers=workers)
        train_set = create_dataset(config, tiny_work, "train", train=True, seed=3)
        loader = training_loader(train_set, config, 0, 1)
        pids = []
        for epoch in range(3):
            set_loader_epoch(loader, config, epoch)
            batches = list(loader)
            by_epoch[workers, epoch] = torch.cat([x for x, *_ in batches])
            if workers:
                pids.append(tuple(w.pid for w in loader._iterator._workers))
        if workers:
            assert loader.persistent_workers and len(set(pids)) == 1  # the same worker process all three epochs
    for epoch in range(3):
        assert torch.equal(by_epoch[0, epoch], by_epoch[1, epoch]), epoch
    assert not torch.equal(by_epoch[1, 1], by_epoch[1, 2])  # each epoch its own order and augmentation
    val = evaluation_loader(create_dataset(config, tiny_work, "val", train=False, views=2), config, 0, 1)
    assert [len(list(val)) for _ in range(2)] == [len(val)] * 2 and val._iterator is not None
    # a dataset is a sequence with an end: iterating it stops after its items
    assert len(list(val.dataset)) == len(val.dataset) and len(val.dataset) > 0


def test_macro_averages_count_a_predicted_class_absent_from_the_labels():
    # Classes 0 and 1 occur; class 2 is predicted once but never true. scikit-learn's macro average is over
    # labels ∪ predictions: F1 (2/3 + 1 + 0) / 3 = 5/9; an average over the labels' classes alone gave 5/6.
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(4)[[0, 2, 1, 1]]
    metrics = classification_metrics(labels, probs)
    assert metrics["macro_f1"] == pytest.approx(5 / 9)
    assert metrics["macro_precision"] == pytest.approx(2 / 3)  # 1, 1, 0
    assert metrics["macro_recall"] == pytest.approx(1 / 2)  # 1/2, 1, 0
    assert metrics["top1"] == pytest.approx(3 / 4) and metrics["top5"] is None


def test_vote_is_frame_by_frame_every_sampled_frame_votes(tiny_work):
    """--vote: each frame of each view is classified on its own (not the view's segment average) and votes."""
    from streams.train import evaluate

    torch.manual_seed(0)
    model = create_rgb_model(num_classes=10, preset="small").eval()
    dataset = RGBSegments(tiny_work, "test", train=False, views=2, segments=3, size=48)
    scores, _, _ = evaluate(model, dataset, torch.device("cpu"), vote=True)
    frames = 2 * 3
    for v in range(len(dataset.videos)):
        with torch.no_grad():
            per_frame = torch.cat([model.segment_logits(dataset[v * 2 + view][0][None])[0] for view in range(2)])
        expected = np.bincount(per_frame.argmax(1).numpy(), minlength=10) / frames
        assert np.allclose(scores[v], expected, atol=1e-4), (scores[v], expected)
    # votes are whole frames: fractions in sixths, unlike averaged probabilities
    assert np.allclose(scores * frames, np.round(scores * frames), atol=1e-3)
    averaged, _, _ = evaluate(model, dataset, torch.device("cpu"), vote=False)
    assert not np.allclose(averaged * frames, np.round(averaged * frames), atol=1e-3)
