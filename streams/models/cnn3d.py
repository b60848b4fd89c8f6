"""3D CNN stream: spatio-temporal convolutions over one short clip of consecutive RGB frames."""

from __future__ import annotations

from torch import nn


class Conv3dNet(nn.Module):
    def __init__(self, widths, num_classes, dropout):
        super().__init__()
        layers, cin = [], 3
        for i, width in enumerate(widths):
            stride = (1, 2, 2) if i == 0 else 2
            layers += [
                nn.Conv3d(cin, width, 3, stride, 1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
                nn.Conv3d(width, width, 3, 1, 1, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
            ]
            cin = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x):  # (N, T, 3, H, W)
        return self.head(self.features(x.transpose(1, 2)))


# torchvision's video models, so that an official Kinetics-400 checkpoint loads as it is (``--pretrained``).
TORCHVISION_3D = ("r3d_18", "r2plus1d_18", "mc3_18", "s3d")
PRESETS_3D = ("small", *TORCHVISION_3D)


class ClipClassifier(nn.Module):
    """A video backbone (N, 3, T, H, W) → (N, F) and a dropout + linear head."""

    def __init__(self, backbone: nn.Module, features: int, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    def forward(self, x):  # (N, T, 3, H, W)
        return self.head(self.backbone(x.transpose(1, 2)))


def create_rgb3d_model(
    *, num_classes: int, preset: str = "small", widths=(16, 32, 64, 128), dropout: float = 0.5
) -> nn.Module:
    """RGB stream as a 3D CNN over one short clip of consecutive frames: our small one (CPU), or torchvision's
    ``r3d_18``, ``r2plus1d_18``, ``mc3_18`` or ``s3d`` with its classifier replaced by ours (the two-stream I3D recipe
    of the seed papers is ``r2plus1d_18``/``s3d`` with a Kinetics checkpoint).

    ::

        (N, T, 3, H, W) ─ small: [3×3×3 conv ×2, stride 2] × 4 ─ global avg pool ─┬ dropout ─ linear ─ (N, C)
                         torchvision: stem ─ 4 stages ─ global avg pool ───────────┘
    """
    if preset == "small":
        return Conv3dNet(widths, num_classes, dropout)
    if preset not in TORCHVISION_3D:
        raise ValueError(f"unknown 3D preset {preset!r}: {', '.join(PRESETS_3D)}")
    from torchvision.models import video

    net = getattr(video, preset)(weights=None)
    if preset == "s3d":  # features, pool, then a 1×1×1 convolution as classifier, averaged over what is left
        features = net.classifier[-1].in_channels
        net.classifier = nn.Identity()
    else:
        features = net.fc.in_features
        net.fc = nn.Identity()
    return ClipClassifier(net, features, num_classes, dropout)
