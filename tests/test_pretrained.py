"""Pretrained backbones: torchvision's own architectures, whose official checkpoints load as they are. No weights
can be downloaded here, so the files are state dicts saved from torchvision's model builders (random weights): the
loading code is the real one."""

import pytest
import torch
from torchvision import models
from torchvision.models import video

from preprocess import DataError
from streams.checkpoints import load_pretrained
from streams.models import create_flow_model, create_rgb3d_model, create_rgb_model, freeze_batchnorm_but_first
from streams.train import train
from tests.conftest import run_bin


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
        {
            "stream": "flow",
            "preset": "small",
            "work": str(tiny_work),
            "run": str(first),
            "epochs": 1,
            "batch_size": 8,
            "size": 48,
            "segments": 2,
            "stack": 3,
            "views": 1,
            "min_epoch_clips": 1,
        },
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
    import hashlib
    import shutil

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
