"""2D CNN streams: a ResNet-style image encoder with TSN segment consensus, for RGB frames and stacked flow."""

from __future__ import annotations

import torch
from torch import nn

# Width and depth presets of our own small 2D backbone: "small" trains on a CPU in tests and demos.
BACKBONES = {
    "small": {"widths": (16, 32, 64, 96), "blocks": (1, 1, 1, 1), "stem_stride": 2},
    "medium": {"widths": (32, 64, 128, 256), "blocks": (1, 1, 2, 1), "stem_stride": 2},
}
# torchvision's own models, so that an official ImageNet checkpoint loads as it is (``--pretrained``).
TORCHVISION_2D = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
PRESETS_2D = (*BACKBONES, *TORCHVISION_2D)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convolutions with batch norm and an identity (or 1×1) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


def create_backbone_2d(*, in_channels: int, preset: str = "small") -> nn.Module:
    """A ResNet-style image encoder → (N, width) features.

    ::

        image ─ conv stem (stride 2 or 4) ─ stage 1 ─ stage 2 (/2) ─ stage 3 (/2) ─ stage 4 (/2) ─ global avg pool
    """
    if preset == "mobilenet_v2":
        return create_torchvision_mobilenet_v2(in_channels=in_channels)
    if preset in TORCHVISION_2D:
        return create_torchvision_resnet(name=preset, in_channels=in_channels)
    if preset not in BACKBONES:
        raise ValueError(f"unknown 2D preset {preset!r}: {', '.join(PRESETS_2D)}")
    spec = BACKBONES[preset]
    widths, blocks = spec["widths"], spec["blocks"]
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            widths[0],
            5 if spec["stem_stride"] == 2 else 7,
            2,
            2 if spec["stem_stride"] == 2 else 3,
            bias=False,
        ),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    if spec["stem_stride"] == 4:
        layers.append(nn.MaxPool2d(3, 2, 1))
    cin = widths[0]
    for i, (width, count) in enumerate(zip(widths, blocks)):
        for b in range(count):
            layers.append(BasicBlock(cin, width, 2 if (b == 0 and i > 0) else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    backbone = nn.Sequential(*layers)
    backbone.out_features = cin
    backbone.architecture = f"{preset} (ours)"
    return backbone


def create_torchvision_resnet(*, name: str, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet (``torchvision.models.<name>``, random weights) as an encoder → (N, width) features:
    its classifier replaced by the identity, its first convolution widened to ``in_channels`` (stacked flow). Its
    tensor names are torchvision's, so an official checkpoint loads with ``streams.checkpoints.load_pretrained``.

    ::

        image ─ conv1 7×7/2 ─ max pool ─ layer1 … layer4 ─ global avg pool ─ (fc = identity)
    """
    from torchvision import models

    net = getattr(models, name)(weights=None)
    if in_channels != net.conv1.in_channels:
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    net.out_features = net.fc.in_features
    net.fc = nn.Identity()
    return net


class MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 ``features`` (the inverted residual stages, tensor names ``features.*`` as
    torchvision's and the shared ImageNet file's) followed by a global average pool → (N, 1280)."""

    architecture = "MobileNetV2"  # what errors call it

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features
        self.out_features = 1280

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


def create_torchvision_mobilenet_v2(*, in_channels: int = 3) -> nn.Module:
    """torchvision's MobileNetV2 (width 1.0, random weights) as an encoder → (N, 1280) features, its first
    convolution widened to ``in_channels`` for stacked flow (an ImageNet file then loads into it by TSN's
    cross-modality initialisation). Light enough to fine-tune on a CPU: 2.2 M parameters, 0.3 GFLOPs at 224².

    ::

        image ─ conv 3×3/2 ─ 17 inverted residual blocks ─ conv 1×1 → 1280 ─ global avg pool
    """
    from torchvision import models

    features = models.mobilenet_v2(weights=None).features
    if in_channels != 3:
        old = features[0][0]
        features[0][0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    return MobileNetV2Encoder(features)


class SegmentConsensus(nn.Module):
    """TSN: one backbone applied to each of K segments, logits averaged over segments."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_features, num_classes)

    def segment_logits(self, x):
        """(N, K, C): each segment's (frame's, stack's) own logits, before the consensus."""
        n, k = x.shape[:2]
        return self.fc(self.dropout(self.backbone(x.flatten(0, 1)))).view(n, k, -1)

    def forward(self, x):
        return self.segment_logits(x).mean(1)


def create_rgb_model(*, num_classes: int, preset: str = "small", dropout: float = 0.5) -> nn.Module:
    """RGB stream, TSN-style.

    ::

        (N, K, 3, H, W) ─ 2D ResNet per segment ─ dropout ─ linear ─ mean over K ─ (N, C)
    """
    return SegmentConsensus(create_backbone_2d(in_channels=3, preset=preset), num_classes, dropout)


def create_flow_model(*, num_classes: int, stack: int = 5, preset: str = "small", dropout: float = 0.5) -> nn.Module:
    """Flow stream (Simonyan & Zisserman): L stacked flow fields as 2L input channels, TSN consensus.

    ::

        (N, K, 2L, H, W) ─ 2D ResNet per segment ─ dropout ─ linear ─ mean over K ─ (N, C)
    """
    return SegmentConsensus(create_backbone_2d(in_channels=2 * stack, preset=preset), num_classes, dropout)
