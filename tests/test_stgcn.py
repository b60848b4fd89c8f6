"""The graph-convolution pose stream (joint, bone and motion inputs) and skeleton augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusion.report import run_ablation
from preprocess.pose.keypoints import COCO_TREE
from streams.augment import affine_matrix, drop_persons, random_skeleton_augment, transform_skeleton
from streams.data import PoseSequences
from streams.models.stgcn import PARENT, create_stgcn_model, skeleton_inputs, spatial_partitions
from streams.train import train


def test_the_coco_graph_is_a_tree_and_each_partition_is_normalised():
    assert len(COCO_TREE) == 16 and PARENT[9] == 7 and PARENT[7] == 5 and PARENT[5] == 0 and PARENT[0] == 0
    a = spatial_partitions()
    assert a.shape == (3, 17, 17) and np.array_equal(a[0], np.eye(17))
    for part in a[1:]:
        sums = part.sum(0)
        assert np.allclose(sums[sums > 0], 1.0)
    assert a[1][5, 7] > 0 and a[1][7, 5] == 0  # inward: the elbow (7) feeds the shoulder (5), not back
    assert a[2][7, 5] > 0


def test_bone_and_motion_inputs_are_exact():
    rng = np.random.default_rng(0)
    joints = torch.from_numpy(rng.standard_normal((2, 5, 17, 3)).astype(np.float32))  # (P, T, V, 3)
    bone = skeleton_inputs(joints, "bone")
    assert torch.allclose(bone[..., 9, :2], joints[..., 9, :2] - joints[..., 7, :2])  # left wrist − left elbow
    assert torch.equal(bone[..., 0, :2], torch.zeros(2, 5, 2)) and torch.equal(bone[..., 2], joints[..., 2])
    motion = skeleton_inputs(joints, "motion")
    assert torch.allclose(motion[:, 2, :, :2], joints[:, 3, :, :2] - joints[:, 2, :, :2])
    assert torch.equal(motion[:, -1, :, :2], torch.zeros(2, 17, 2))
    assert torch.equal(skeleton_inputs(joints, "joint"), joints)


def test_stgcn_ignores_empty_person_slots_and_is_deterministic():
    torch.manual_seed(0)
    model = create_stgcn_model(num_classes=4, inputs="bone").eval()
    x = torch.randn(1, 16, 3, 54)
    mask = torch.zeros(1, 16, 3, dtype=torch.bool)
    mask[..., 0] = True
    noisy = x.clone()
    noisy[:, :, 1:] = torch.randn(1, 16, 2, 54) * 50  # garbage in slots nobody holds
    assert torch.allclose(model(x, mask), model(noisy, mask), atol=1e-5)


def test_a_rotation_by_a_known_angle_moves_a_known_keypoint_where_it_should():
    features = np.zeros((1, 1, 54), np.float32)
    joints = features[..., :51].reshape(1, 1, 17, 3)
    joints[..., 9, :] = [0.5, 0.0, 0.9]  # left wrist: right of the box centre, confidence 0.9
    joints[..., 0, :] = [0.0, -0.8, 0.8]  # nose: above the centre (y points down)
    features[..., :51] = joints.reshape(1, 1, 51)
    features[..., 51:] = [0.1, 0.2, 0.3]
    turned = transform_skeleton(features, affine_matrix(rotate_deg=90))
    out = turned[..., :51].reshape(17, 3)
    # a quarter turn counter-clockwise on screen: right → up (y = −0.5), up → left (x = −0.8)
    assert np.allclose(out[9], [0.0, -0.5, 0.9], atol=1e-6) and np.allclose(out[0], [-0.8, 0.0, 0.8], atol=1e-6)
    assert np.array_equal(turned[..., 51:], features[..., 51:])  # the person's place is not moved
    assert np.allclose(out[1:9], 0) and np.allclose(out[10:], 0)  # absent keypoints stay absent
    scaled = transform_skeleton(features, affine_matrix(scale=2.0))[..., :51].reshape(17, 3)
    assert np.allclose(scaled[9], [1.0, 0.0, 0.9])
    sheared = transform_skeleton(features, affine_matrix(shear=0.5))[..., :51].reshape(17, 3)
    assert np.allclose(sheared[0], [-0.4, -0.8, 0.8])  # x += 0.5 · y


def test_random_augmentation_is_fixed_by_its_seed_and_drops_persons_but_never_all():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((12, 4, 54)).astype(np.float32)
    mask = np.ones((12, 4), bool)
    mask[:, 3] = False
    options = {"rotate": 15.0, "scale": 0.15, "shear": 0.15, "drop_person": 0.5}
    a = random_skeleton_augment(features, mask, np.random.default_rng(5), **options)
    b = random_skeleton_augment(features, mask, np.random.default_rng(5), **options)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # the draws are angle, scale, shear: the same matrix rebuilt by hand gives the same keypoints
    draw = np.random.default_rng(5)
    matrix = affine_matrix(draw.uniform(-15, 15), draw.uniform(0.85, 1.15), draw.uniform(-0.15, 0.15))
    expected = transform_skeleton(features, matrix) * a[1][..., None]
    assert np.allclose(a[0], expected, atol=1e-6)
    for seed in range(30):
        dropped = drop_persons(mask, np.random.default_rng(seed), 1.0)
        assert dropped.any(0).sum() == 1 and not dropped[:, 3].any()  # p = 1 still keeps one dancer


def test_uniform_pose_sampling_spreads_over_the_whole_clip(tiny_work):
    window = PoseSequences(tiny_work, "test", train=False, frames=4)
    uniform = PoseSequences(tiny_work, "test", train=False, frames=4, sampling="uniform")
    times = uniform.times(0)
    spread = uniform.sample_times(0)
    assert np.ptp(spread) > np.ptp(window.sample_times(0)) and spread[-1] >= times[len(times) * 3 // 4 - 1]
    strong = PoseSequences(tiny_work, "train", train=True, frames=8, augment="strong", seed=3)
    (x, m), *_ = strong[0]
    (y, n), *_ = PoseSequences(tiny_work, "train", train=True, frames=8, augment="strong", seed=3)[0]
    assert torch.equal(x, y) and torch.equal(m, n)


FAST = {"epochs": 6, "batch_size": 5, "frames": 8, "views": 1, "min_epoch_clips": 1, "patience": 30, "lr": 3e-3}


@pytest.fixture(scope="module")
def stgcn_runs(tiny_work, tmp_path_factory):
    root = tmp_path_factory.mktemp("stgcn")
    runs = {}
    for inputs in ("joint", "bone", "motion"):
        run = root / inputs
        config = {"stream": "pose", "work": str(tiny_work), "run": str(run), "head": "stgcn", "pose_input": inputs}
        train({**config, **FAST, "label_smoothing": 0.0, "dropout": 0.0}, log=lambda *_: None)
        runs[inputs] = run
    return runs


def test_stgcn_learns_from_every_input_and_its_scores_carry_the_variant(stgcn_runs):
    for inputs, run in stgcn_runs.items():
        losses = [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), (inputs, losses)
        name = json.loads((run / "scores_test.json").read_text())["stream"]
        assert name == ("pose-stgcn" if inputs == "joint" else f"pose-stgcn-{inputs}")


def test_the_joint_bone_ensemble_appears_in_the_ablation(stgcn_runs, tmp_path):
    report = run_ablation([stgcn_runs["joint"], stgcn_runs["bone"]], tmp_path / "report", resamples=100)
    subsets = {tuple(r["streams"]) for r in report["results"]}
    assert ("pose-stgcn", "pose-stgcn-bone") in subsets
    assert "pose-stgcn+pose-stgcn-bone" in (tmp_path / "report" / "ablation.md").read_text()
