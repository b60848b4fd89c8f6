"""Issue 20: choices that survive few groups (group folds in fusion, the fallback rule), the MobileNetV2 preset."""

import json
import shutil

import numpy as np
import pytest
import torch

from fusion.methods import create_method
from fusion.report import run_ablation
from fusion.select import cross_validated_top1, fitting_support
from preprocess import DataError
from streams.checkpoints import IMAGENET_STATS, input_normalization, load_backbone, load_pretrained
from streams.stats import group_sign_flip_p, mcnemar_exact
from tests.conftest import run_bin, shared_asset
from tests.test_fusion import CLASSES, write_run


def _group_shortcut(seed=0, groups=12, per_group=8, classes=4):
    """Fitting scores where each group (a source video) holds one class; stream "flow" is weakly right about the
    class, stream "rgb" says nothing about the class but carries a signature of the group (a venue's look)."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(groups), per_group)
    labels = group % classes
    n = len(labels)
    weak = rng.dirichlet(np.ones(classes), n) * 0.7
    weak[np.arange(n), np.where(rng.random(n) < 0.45, labels, rng.integers(0, classes, n))] += 0.3
    signature = rng.dirichlet(np.ones(classes) * 0.5, groups)[group]
    venue = signature + 0.02 * rng.random((n, classes))
    return {"flow": weak, "rgb": venue / venue.sum(1, keepdims=True)}, labels, group.astype(str)


def test_group_folds_do_not_reward_a_group_shortcut_that_clip_level_folds_reward():
    probs, labels, groups = _group_shortcut()
    stacking = lambda: create_method("stacking")  # noqa: E731
    clip_level = cross_validated_top1(stacking, probs, labels, groups=None, seed=0)  # every clip its own group
    by_group = cross_validated_top1(stacking, probs, labels, groups=groups, seed=0)
    flow_alone = float((probs["flow"].argmax(1) == labels).mean())
    print(f"stacking CV: clip-level {clip_level:.2f}, by group {by_group:.2f}; flow alone {flow_alone:.2f}")
    assert clip_level > 0.75  # learns each venue's signature → its class: the flattering number KFold gave
    assert by_group < flow_alone + 0.1  # on unseen groups the signature is worthless
    assert clip_level - by_group > 0.3
    # too few groups to hold any out: no cross-validated figure at all
    assert cross_validated_top1(stacking, probs, labels, groups=np.zeros(len(labels), str)) is None


def test_fitting_support_counts_groups_and_their_purity():
    labels = np.repeat(np.arange(4), 6)
    confounded = fitting_support(labels, np.repeat(np.arange(8), 3))  # each source one style
    assert not confounded["reliable"] and confounded["purity"] == 1.0 and confounded["groups"] == 8
    assert "nearly determine the class" in confounded["reasons"][0]
    performers = fitting_support(labels, np.tile(np.arange(6), 4))  # each performer does every class
    assert performers["reliable"] and performers["purity"] == pytest.approx(0.25)
    few = fitting_support(labels, np.tile(np.arange(2), 12))
    assert not few["reliable"] and "2 groups" in few["reasons"][0]
    shared = fitting_support(labels, np.tile(np.arange(6), 4), shared_with_training=3)
    assert not shared["reliable"] and "share 3 groups" in shared["reasons"][0]


def _write_oof_runs(root, probs, labels, groups, test_seed=1):
    rng = np.random.default_rng(test_seed)
    runs = []
    test_labels = rng.integers(0, 4, 40)
    test_ids = [f"t{i:02d}" for i in range(40)]
    ids = [f"v{i:03d}" for i in range(len(labels))]
    for stream, p in probs.items():
        folder = root / stream
        write_run(folder, stream, "oof", p, labels, ids, classes=CLASSES[:4])
        side = json.loads((folder / "scores_oof.json").read_text())
        side["groups"] = dict(zip(ids, groups.tolist()))
        (folder / "scores_oof.json").write_text(json.dumps(side))
        test = rng.dirichlet(np.ones(4), 40)
        test[np.arange(40), test_labels] += 0.5 if stream == "flow" else 0.0
        write_run(folder, stream, "test", test / test.sum(1, keepdims=True), test_labels, test_ids, classes=CLASSES[:4])
        runs.append(folder)
    return runs


def test_confounded_fitting_groups_fall_back_to_the_mean_of_the_streams_out_of_group_scores_keep(tmp_path):
    probs, labels, groups = _group_shortcut()
    runs = _write_oof_runs(tmp_path / "runs", probs, labels, groups)
    report = run_ablation(runs, tmp_path / "report", resamples=200, fit_on="oof")
    assert report["default"]["rule"] == "fallback" and report["default"]["method"] == "mean"
    assert report["fitting_support"]["groups"] == 12 and report["fitting_support"]["purity"] == 1.0
    # rgb's venue signature says nothing about the class on groups it never saw: the mean goes better without it
    assert report["default"]["streams"] == ["flow"] and report["default"]["left_out"][0]["stream"] == "rgb"
    fusion = json.loads((tmp_path / "report" / "fusion.json").read_text())
    assert fusion["method"] == "mean" and sorted(fusion["runs"]) == ["flow"]
    md = (tmp_path / "report" / "ablation.md").read_text()
    assert "a rule that fits nothing" in md and "12 groups (group purity 1.00)" in md and "rgb is left out" in md
    defaults = [r for r in report["results"] if r.get("default")]
    assert len(defaults) == 1 and defaults[0]["streams"] == ["flow"]

    # the same scores with groups that cut across the classes (performers doing every style): a fitted choice
    mixed = np.array([str(i % 12) for i in range(len(labels))])  # consecutive clips, other groups
    runs = _write_oof_runs(tmp_path / "runs2", probs, labels, mixed)
    report = run_ablation(runs, tmp_path / "report2", resamples=200, fit_on="oof")
    assert report["default"]["rule"] == "fitted" and report["fitting_support"]["reliable"]
    fusion = json.loads((tmp_path / "report2" / "fusion.json").read_text())
    assert fusion["method"] == report["best_all_streams"]["method"]


def test_group_sign_flip_p_is_exact_and_agrees_with_few_groups():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 0, 0], bool)
    # 8 clips all favouring a: McNemar calls it significant; as 2 groups of 4 clips it cannot be
    assert mcnemar_exact(a, b) < 0.01
    assert group_sign_flip_p(a, b, np.repeat(["g1", "g2"], 4)) == pytest.approx(0.5)  # 2 of 4 sign patterns
    assert group_sign_flip_p(a, b, np.arange(8).astype(str)) == pytest.approx(2 / 256)
    assert group_sign_flip_p(a, a, np.arange(8).astype(str)) == 1.0


MOBILENET = "models/mobilenet_v2_imagenet_features.pth"


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_mobilenet_v2_preset_uses_every_tensor_of_the_shared_imagenet_file(stream):
    from streams.registry import create_model, resolve_config

    path = shared_asset(MOBILENET)
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = resolve_config({"stream": stream, "preset": "mobilenet_v2", "pretrained": str(path)}, given=("preset",))
    model = create_model(config, 4)
    line = load_pretrained(model, path)
    own = model.backbone.state_dict()
    assert f"loaded {len(own)} of {len(own)} backbone tensors" in line and len(own) == len(state) == 312
    for key, tensor in own.items():
        source = state[key]
        if key == "features.0.0.weight" and stream == "flow":  # TSN cross-modality: RGB filters averaged
            assert tensor.shape[1] == 2 * config["stack"] and "averaged over its 3 input channels" in line
            assert torch.allclose(tensor, source.mean(1, keepdim=True).expand_as(tensor))
        else:
            assert torch.equal(tensor, source), key
    norm = input_normalization(config)
    assert norm["mean"] == IMAGENET_STATS["mean"] and norm["std"] == IMAGENET_STATS["std"]
    x = torch.zeros(1, 3, *((3, 112, 112) if stream == "rgb" else (2 * config["stack"], 112, 112)))
    assert model(x).shape == (1, 4)


def test_a_file_of_another_architecture_is_refused_by_name(tmp_path):
    from torchvision.models import resnet18

    from streams.models import create_backbone_2d

    other = tmp_path / "resnet18-imagenet.pth"
    torch.save(resnet18().state_dict(), other)
    with pytest.raises(DataError, match=r"resnet18-imagenet.pth: does not fit this MobileNetV2 backbone"):
        load_backbone(
            create_backbone_2d(in_channels=3, preset="mobilenet_v2"), torch.load(other, weights_only=True), other
        )
    path = shared_asset(MOBILENET)
    with pytest.raises(DataError, match=r"mobilenet_v2_imagenet_features.pth: does not fit this ResNet backbone"):
        load_backbone(create_backbone_2d(in_channels=3, preset="resnet18"), torch.load(path, weights_only=True), path)


def _skeleton(person, cx, cy, height, phase):
    """Person ``person``'s COCO-17 skeleton standing at (cx, cy), arms and legs swung by ``phase`` (radians)."""
    rng = np.random.default_rng(person)
    base = rng.uniform(-0.25, 0.25, (17, 2)) * [0.5, 1.0]
    base[:, 1] = np.linspace(-0.5, 0.5, 17)
    swing = np.zeros((17, 2))
    swing[[7, 8, 9, 10, 13, 14, 15, 16], 0] = 0.3 * np.sin(phase) * np.array([1, -1, 1, -1, -1, 1, -1, 1])
    pts = (base + swing) * height + [cx, cy]
    return np.concatenate([pts, np.full((17, 1), 0.9)], 1).astype(np.float32)


def test_dancers_are_ranked_before_onlookers_whatever_the_camera_does():
    from preprocess.pose.tracking import rank_dancers, track_sequence

    frames = []
    for t in range(40):
        pan = 3.0 * t  # the camera pans: every body moves across the frame
        onlookers = [(_skeleton(1, 60 + pan, 200, 220, 0.0), 0.95), (_skeleton(2, 500 + pan, 200, 200, 0.0), 0.9)]
        dancer = (_skeleton(3, 280 + pan, 260, 120, 0.6 * t), 0.6)  # smaller, less confident, limbs moving
        frames.append(onlookers + [dancer])
    keypoints, mask = track_sequence(frames, 6)
    assert mask[:, :3].all()
    dancer_slot = int(np.argmin([abs(keypoints[0, p, :, 0].mean() - 280) for p in range(3)]))
    assert dancer_slot == 2  # tracking alone puts the dancer last (found last: least confident)
    ranked, ranked_mask, scores = rank_dancers(keypoints, mask, 2, 0.2)
    assert ranked.shape == (40, 2, 17, 3) and ranked_mask.all()
    assert abs(ranked[0, 0, :, 0].mean() - 280) < 30  # the dancer first
    assert scores[0] > 5 * scores[1]


def test_background_outside_the_tracked_persons_is_dimmed_or_blurred(tiny_work, tmp_path):
    import dataclasses

    from preprocess.batch import run_batch
    from preprocess.dataset import load_manifest
    from preprocess.pose import load_pose
    from preprocess.video import FramesInfo, frames_params, frames_task, load_frames

    manifest = load_manifest(tiny_work)
    manifest = dataclasses.replace(manifest, videos=manifest.videos[:6])
    changed_outside = kept_inside = 0
    for mode in ("keep", "dim", "blur"):
        out = tmp_path / mode
        out.mkdir()
        (out / "pose").symlink_to(tiny_work / "pose")
        params = frames_params(resize="none", crop_margin=0.0, background=mode)
        summary = run_batch(frames_task(params), manifest, out, workers=1)
        assert not summary.failed and len(summary.done) == 6
        if mode == "keep":
            continue
        for video in manifest.videos:
            vid = video.video_id
            info = FramesInfo.read(out, vid)
            assert info.params["background"] == mode and "pose" in info.inputs
            plain, faded = load_frames(tmp_path / "keep", vid, mmap=False), load_frames(out, vid, mmap=False)
            pose = load_pose(tiny_work, vid)
            for t, index in enumerate(pose["frame_indices"]):
                present = pose["mask"][t]
                if not present.any():
                    continue
                inside = np.zeros(plain.shape[1:3], bool)
                for x0, y0, x1, y1 in np.maximum(pose["boxes"][t][present], 0):
                    inside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
                kept_inside += np.array_equal(faded[index][inside], plain[index][inside])
                if mode == "dim":
                    assert (faded[index][~inside] == plain[index][~inside] // 4).all()
                changed_outside += not np.array_equal(faded[index][~inside], plain[index][~inside])
    assert kept_inside > 50 and changed_outside > 0.9 * kept_inside


def test_the_frame_cache_dims_the_background_by_default_and_needs_pose_first(tiny_synth, tiny_work, tmp_path):
    import dataclasses

    from preprocess.dataset import load_manifest
    from preprocess.video import FramesInfo

    work = tmp_path / "work"
    manifest = load_manifest(tiny_work)
    dataclasses.replace(manifest, videos=manifest.videos[:2]).save(work)
    first = manifest.videos[0].video_id
    missing = run_bin("preprocess", "frames", work, work, "--resize", "none", "--workers", "1")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert str(work / "pose" / f"{first}.npz") in missing.stderr
    assert "run bin/preprocess pose first, or pass --background keep" in missing.stderr
    (work / "pose").mkdir()
    for video in manifest.videos[:2]:
        for suffix in (".npz", ".json"):
            shutil.copy(tiny_work / "pose" / f"{video.video_id}{suffix}", work / "pose")
    run_bin("preprocess", "frames", work, work, "--resize", "none", "--workers", "1", check=True)
    info = FramesInfo.read(work, first)
    assert info.params["background"] == "dim" and "pose" in info.inputs
    # the library's default is the command's: the shared fixture's cache (frames_params defaults) is dimmed too
    assert FramesInfo.read(tiny_work, first).params == info.params


def test_flow_defaults_to_imagenet_mobilenet_v2_fine_tuned_with_its_recipe(tiny_work, tmp_path, monkeypatch):
    from streams.checkpoints import imagenet_weights
    from streams.registry import DEFAULTS, OptionError, resolve_config

    def start(**options):
        config = resolve_config({"stream": "flow", **options})
        return config["preset"], config["pretrained"], config["lr"], config["partial_bn"]

    assert start() == ("mobilenet_v2", "imagenet", 1e-4, True)
    assert start(**DEFAULTS) == start()  # an API caller passing every general default gets the same
    assert start(lr=3e-4, partial_bn=False) == ("mobilenet_v2", "imagenet", 3e-4, False)  # what is given is kept
    assert start(pretrained="none") == ("mobilenet_v2", "none", 1e-3, False)
    assert start(preset="small") == ("small", "none", 1e-3, False)
    assert resolve_config({"stream": "rgb"})["preset"] == "small"  # RGB keeps our small CNN
    ours = tmp_path / "ours"  # a run of ours (its folder or its best.pt) is fine-tuned as it was trained
    ours.mkdir()
    (ours / "config.json").write_text("{}")
    (ours / "best.pt").write_bytes(b"")
    foreign = tmp_path / "torchvision.pth"  # a foreign state dict counts as ImageNet's
    foreign.write_bytes(b"")
    assert start(pretrained=str(ours))[2:] == start(pretrained=str(ours / "best.pt"))[2:] == (1e-3, False)
    assert start(pretrained=str(foreign)) == ("mobilenet_v2", str(foreign), 1e-4, True)
    with pytest.raises(OptionError, match="--pretrained .*nothing-here: no such file or run folder"):
        start(pretrained=str(tmp_path / "nothing-here"))
    # offline with no file anywhere: one line naming the asset and the ways out
    monkeypatch.setenv("DANCE_SHARED", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DANCE_MOBILENET_V2", raising=False)
    with pytest.raises(DataError, match="mobilenet_v2_imagenet_features.pth: .*--pretrained none") as err:
        imagenet_weights("mobilenet_v2", download=False)
    assert "\n" not in str(err.value) and "$DANCE_MOBILENET_V2" in str(err.value)
    monkeypatch.undo()
    # the shared file is found, every tensor used, and the run says so
    shared_asset("models/mobilenet_v2_imagenet_features.pth")
    run = tmp_path / "flow"
    result = run_bin(
        "train", "flow", tiny_work, run, "--epochs", "1", "--size", "32", "--segments", "1", "--stack", "2",
        "--views", "1", "--min-epoch-clips", "1", check=True,
    )  # fmt: skip
    assert "loaded 312 of 312 backbone tensors" in result.stdout
    config = json.loads((run / "config.json").read_text())
    assert (config["preset"], config["pretrained"], config["lr"], config["partial_bn"]) == start()
