"""Pretrained backbones: torchvision's own architectures, whose official checkpoints load as they are. No weights
can be downloaded here, so the files are state dicts saved from torchvision's model builders (random weights): the
loading code is the real one."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from torchvision import models
from torchvision.models import video

from preprocess import DataError
from streams.checkpoints import IMAGENET_STATS, input_normalization, load_backbone, load_pretrained
from streams.models import create_flow_model, create_rgb3d_model, create_rgb_model, freeze_batchnorm_but_first
from streams.registry import OptionError, create_dataset, resolve_config
from streams.train import train
from tests.conftest import FAST_FLOW, run_bin, shared_asset


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth"
    torch.save(models.resnet18().state_dict(), path)  # as torchvision publishes it: backbone + 1000-class fc
    return path


def test_a_torchvision_resnet18_checkpoint_fills_every_backbone_tensor(resnet18_file):
    source = torch.load(resnet18_file, weights_only=True)
    model = create_rgb_model(num_classes=4, preset="resnet18")
    head_before = model.fc.weight.clone()
    line = load_pretrained(model, resnet18_file)
    own = model.backbone.state_dict()
    assert f"loaded {len(own)} of {len(own)} backbone tensors" in line and "fc.weight" in line  # fc: not used
    for key, tensor in own.items():
        assert torch.equal(tensor, source[key]), key
    assert torch.equal(model.fc.weight, head_before)  # our 4-class classifier is left new
    assert model(torch.zeros(2, 3, 3, 64, 64)).shape == (2, 4)


def test_flow_takes_the_rgb_checkpoint_by_cross_modality_initialisation(resnet18_file):
    source = torch.load(resnet18_file, weights_only=True)
    model = create_flow_model(num_classes=4, stack=5, preset="resnet18")
    line = load_pretrained(model, resnet18_file)
    assert "conv1.weight averaged over its 3 input channels and replicated to 10" in line
    conv1 = model.backbone.conv1.weight
    assert conv1.shape == (64, 10, 7, 7)
    expected = source["conv1.weight"].mean(1, keepdim=True)
    assert all(torch.allclose(conv1[:, c : c + 1], expected) for c in range(10))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, source["layer4.1.conv2.weight"])


def test_a_torchvision_r2plus1d_checkpoint_fills_the_clip_backbone(tmp_path):
    torch.manual_seed(2)
    path = tmp_path / "r2plus1d_18-kinetics.pth"
    torch.save(video.r2plus1d_18().state_dict(), path)
    model = create_rgb3d_model(num_classes=3, preset="r2plus1d_18")
    line = load_pretrained(model, path)
    own = model.backbone.state_dict()
    assert f"loaded {len(own)} of {len(own)} backbone tensors" in line
    source = torch.load(path, weights_only=True)
    assert all(torch.equal(tensor, source[key]) for key, tensor in own.items())
    assert model(torch.zeros(1, 8, 3, 64, 64)).shape == (1, 3)


def test_a_checkpoint_of_another_architecture_is_refused_by_name(tmp_path, resnet18_file):
    path = tmp_path / "resnet34.pth"
    torch.save(models.resnet34().state_dict(), path)
    with pytest.raises(DataError, match="another architecture than this ResNet backbone") as caught:
        load_pretrained(create_rgb_model(num_classes=4, preset="resnet18"), path)  # every ResNet-18 tensor, and more
    assert str(path) in str(caught.value)
    with pytest.raises(DataError, match="does not fit"):  # a 2D checkpoint for a 3D backbone
        load_pretrained(create_rgb3d_model(num_classes=3, preset="r3d_18"), resnet18_file)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="truncated or not a PyTorch checkpoint"):
        load_pretrained(create_rgb_model(num_classes=4, preset="resnet18"), garbage)


def test_bin_train_fine_tunes_from_a_checkpoint_and_from_a_run_of_ours(tiny_work, tmp_path, resnet18_file):
    fast = [
        "--epochs",
        "1",
        "--size",
        "48",
        "--segments",
        "2",
        "--batch-size",
        "8",
        "--views",
        "1",
        "--min-epoch-clips",
        "1",
    ]
    result = run_bin(
        "train",
        "rgb",
        tiny_work,
        tmp_path / "tv",
        *fast,
        "--preset",
        "resnet18",
        "--pretrained",
        resnet18_file,
        "--partial-bn",
        check=True,
    )
    tensors = len(create_rgb_model(num_classes=4, preset="resnet18").backbone.state_dict())
    assert f"loaded {tensors} of {tensors} backbone tensors" in result.stdout
    # A run of ours as the starting point (synthetic-pretrained, then fine-tuned): matching tensors by name.
    first = tmp_path / "small"
    train(
        {**FAST_FLOW, "epochs": 1, "work": str(tiny_work), "run": str(first)},
        log=lambda *_: None,
    )
    result = run_bin(
        "train",
        "flow",
        tiny_work,
        tmp_path / "tuned",
        *fast,
        "--preset",
        "small",
        "--stack",
        "3",
        "--pretrained",
        first,
        check=True,
    )
    assert f"--pretrained {first / 'best.pt'}: loaded" in result.stdout
    refused = run_bin("train", "rgb", tiny_work, tmp_path / "bad", *fast, "--pretrained", resnet18_file)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr  # small preset: not a ResNet-18
    assert f"{resnet18_file}: does not fit" in refused.stderr


def test_partial_bn_freezes_every_batchnorm_statistic_but_the_first():
    torch.manual_seed(0)
    model = create_rgb_model(num_classes=4, preset="small")
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [layer.running_mean.clone() for layer in layers]
    model.train()
    assert freeze_batchnorm_but_first(model) == len(layers) - 1
    model(torch.randn(2, 3, 3, 48, 48) * 3 + 1)
    assert not torch.equal(layers[0].running_mean, before[0])  # the first still adapts to the new input
    assert all(torch.equal(layer.running_mean, old) for layer, old in zip(layers[1:], before[1:]))


def test_weights_by_name_are_cached_once_and_checked_against_their_published_checksum(resnet18_file, tmp_path):
    """--weights NAME: torchvision's address for the name, the file fetched once into a cache folder, and checked
    against the SHA-256 prefix in its name on every use. The "server" here is a local file:// address."""

    from streams.checkpoints import cached_download, torchvision_weights_url

    assert torchvision_weights_url("ResNet18_Weights.IMAGENET1K_V1").endswith("/resnet18-f37072fd.pth")
    assert torchvision_weights_url("R2Plus1D_18_Weights.KINETICS400_V1").endswith("/r2plus1d_18-91a641e6.pth")
    with pytest.raises(ValueError, match="not one of torchvision's weight names"):
        torchvision_weights_url("ResNet18_Weights.NOPE")
    prefix = hashlib.sha256(resnet18_file.read_bytes()).hexdigest()[:8]
    server = tmp_path / "server"
    server.mkdir()
    published = server / f"resnet18-{prefix}.pth"
    shutil.copy(resnet18_file, published)
    cache = tmp_path / "cache"
    path = cached_download(published.as_uri(), cache)
    assert path == cache / published.name and path.read_bytes() == published.read_bytes()
    published.unlink()  # the second use needs no server
    assert cached_download(published.as_uri(), cache) == path
    model = create_rgb_model(num_classes=4, preset="resnet18")
    own = len(model.backbone.state_dict())
    assert f"loaded {own} of {own} backbone tensors" in load_pretrained(model, path)
    path.write_bytes(path.read_bytes()[:-100])  # truncated in the cache
    with pytest.raises(DataError, match="does not match the published"):
        cached_download(published.as_uri(), cache)
    path.unlink()
    with pytest.raises(DataError, match="offline, pass the file with --pretrained PATH"):
        cached_download(published.as_uri(), cache)  # nothing to download from


def test_an_unknown_weights_name_is_a_one_line_error(tiny_work, tmp_path):
    result = run_bin(
        "train", "rgb", tiny_work, tmp_path / "run", "--preset", "resnet18", "--weights", "ResNet18_Weights.NOPE"
    )
    assert result.returncode != 0 and "not one of torchvision's weight names" in result.stderr
    assert "Traceback" not in result.stderr


def test_rgb_input_statistics_follow_the_weights(tiny_work, tmp_path):
    import torchvision

    from streams.checkpoints import IMAGENET_STATS, OUR_STATS
    from streams.train import prepare_config

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    base = {"stream": "rgb", "work": str(tiny_work), "size": 32, "segments": 1}
    imagenet = prepare_config({**base, "preset": "resnet18", "pretrained": str(weights)})
    ours = prepare_config(base)
    assert imagenet["normalize"]["mean"] == IMAGENET_STATS["mean"] and ours["normalize"]["std"] == OUR_STATS["std"]
    a = create_dataset(imagenet, tiny_work, "test", train=False)
    b = create_dataset(ours, tiny_work, "test", train=False)
    x, y = a[0][0].numpy()[0], b[0][0].numpy()[0]  # one frame, normalised both ways
    pixels = y * np.array(OUR_STATS["std"])[:, None, None] + np.array(OUR_STATS["mean"])[:, None, None]
    expected = (pixels - np.array(IMAGENET_STATS["mean"])[:, None, None]) / np.array(IMAGENET_STATS["std"])[
        :, None, None
    ]
    assert np.allclose(x, expected, atol=1e-4)


MOBILENET = "models/mobilenet_v2_imagenet_features.pth"


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_mobilenet_v2_preset_uses_every_tensor_of_the_shared_imagenet_file(stream):
    from streams.registry import create_model

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


def test_flow_defaults_to_imagenet_mobilenet_v2_fine_tuned_with_its_recipe(tiny_work, tmp_path, monkeypatch):
    from streams.checkpoints import imagenet_weights
    from streams.registry import DEFAULTS

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
