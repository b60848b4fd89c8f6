"""Stream networks. Builders are plain ``create_*`` functions with keyword-only arguments.

All three return a module mapping a batch of one modality's clips to class logits:

* RGB    (N, K, 3, H, W)   K segments of one frame each         → (N, C)
* flow   (N, K, 2L, H, W)  K segments of L stacked flow fields  → (N, C)
* pose   (N, T, P, F)      T frames, P person slots, F features → (N, C), with a (N, T, P) person mask
"""

from __future__ import annotations

import torch
from torch import nn

# Width and depth presets of the 2D backbone: "small" trains on a CPU in tests and demos; "resnet18" is the
# ResNet-18 layout (basic blocks, 2-2-2-2, widths 64-512) for GPUs.
BACKBONES = {
    "small": {"widths": (16, 32, 64, 96), "blocks": (1, 1, 1, 1), "stem_stride": 2},
    "medium": {"widths": (32, 64, 128, 256), "blocks": (1, 1, 2, 1), "stem_stride": 2},
    "resnet18": {"widths": (64, 128, 256, 512), "blocks": (2, 2, 2, 2), "stem_stride": 4},
}


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convolutions with batch norm and an identity (or 1×1) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


def create_backbone_2d(*, in_channels: int, preset: str = "small") -> nn.Module:
    """A ResNet-style image encoder → (N, width) features.

    ::

        image ─ conv stem (stride 2 or 4) ─ stage 1 ─ stage 2 (/2) ─ stage 3 (/2) ─ stage 4 (/2) ─ global avg pool
    """
    spec = BACKBONES[preset]
    widths, blocks = spec["widths"], spec["blocks"]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 5 if spec["stem_stride"] == 2 else 7,
                                         2, 2 if spec["stem_stride"] == 2 else 3, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
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
    return backbone


class SegmentConsensus(nn.Module):
    """TSN: one backbone applied to each of K segments, logits averaged over segments."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_features, num_classes)

    def forward(self, x):
        n, k = x.shape[:2]
        features = self.backbone(x.flatten(0, 1))
        logits = self.fc(self.dropout(features))
        return logits.view(n, k, -1).mean(1)


def create_rgb_model(*, num_classes: int, preset: str = "small", dropout: float = 0.5) -> nn.Module:
    """RGB stream, TSN-style.

    ::

        (N, K, 3, H, W) ─ 2D ResNet per segment ─ dropout ─ linear ─ mean over K ─ (N, C)
    """
    return SegmentConsensus(create_backbone_2d(in_channels=3, preset=preset), num_classes, dropout)


def create_flow_model(*, num_classes: int, stack: int = 10, preset: str = "small", dropout: float = 0.5) -> nn.Module:
    """Flow stream (Simonyan & Zisserman): L stacked flow fields as 2L input channels, TSN consensus.

    ::

        (N, K, 2L, H, W) ─ 2D ResNet per segment ─ dropout ─ linear ─ mean over K ─ (N, C)
    """
    return SegmentConsensus(create_backbone_2d(in_channels=2 * stack, preset=preset), num_classes, dropout)


class Conv3dNet(nn.Module):
    def __init__(self, widths, num_classes, dropout):
        super().__init__()
        layers, cin = [], 3
        for i, width in enumerate(widths):
            stride = (1, 2, 2) if i == 0 else 2
            layers += [nn.Conv3d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm3d(width), nn.ReLU(inplace=True),
                       nn.Conv3d(width, width, 3, 1, 1, bias=False), nn.BatchNorm3d(width), nn.ReLU(inplace=True)]
            cin = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x):  # (N, T, 3, H, W)
        return self.head(self.features(x.transpose(1, 2)))


def create_rgb3d_model(*, num_classes: int, widths=(16, 32, 64, 128), dropout: float = 0.5) -> nn.Module:
    """RGB stream as a 3D CNN over one short clip of consecutive frames.

    ::

        (N, T, 3, H, W) ─ [3×3×3 conv ×2, stride 2] × 4 ─ global avg pool ─ dropout ─ linear ─ (N, C)
    """
    return Conv3dNet(widths, num_classes, dropout)


class PersonEncoder(nn.Module):
    """Per frame and person: keypoint features → embedding; then a masked mean over person slots."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True))

    def forward(self, x, mask):  # x (N, T, P, F), mask (N, T, P)
        embedded = self.mlp(x)
        weights = mask.unsqueeze(-1).to(embedded.dtype)
        pooled = (embedded * weights).sum(2) / weights.sum(2).clamp(min=1.0)
        present = (mask.sum(2, keepdim=True) > 0).to(embedded.dtype)
        return torch.cat([pooled, present], -1)  # (N, T, hidden + 1): "nobody seen" is itself a feature


class TemporalBlock(nn.Module):
    """Residual dilated 1D convolution over time."""

    def __init__(self, channels: int, dilation: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
                                 nn.BatchNorm1d(channels), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
                                 nn.BatchNorm1d(channels))

    def forward(self, x):
        return torch.relu(x + self.net(x))


class PoseTCN(nn.Module):
    def __init__(self, features, hidden, num_classes, levels, dropout):
        super().__init__()
        self.persons = PersonEncoder(features, hidden)
        self.proj = nn.Conv1d(hidden + 1, hidden, 1)
        self.blocks = nn.Sequential(*[TemporalBlock(hidden, 2 ** i, dropout) for i in range(levels)])
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x, mask):
        h = self.proj(self.persons(x, mask).transpose(1, 2))
        h = self.blocks(h)
        return self.head(h.mean(-1))


class PoseLSTM(nn.Module):
    def __init__(self, features, hidden, num_classes, dropout, attention):
        super().__init__()
        self.persons = PersonEncoder(features, hidden)
        self.norm = nn.LayerNorm(hidden + 1)  # the LSTM learns far faster on normalised inputs
        self.lstm = nn.LSTM(hidden + 1, hidden, batch_first=True, bidirectional=True)
        self.attention = nn.Linear(2 * hidden, 1) if attention else None
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, num_classes))

    def forward(self, x, mask):
        h, _ = self.lstm(self.norm(self.persons(x, mask)))
        if self.attention is None:
            pooled = h.mean(1)
        else:
            weights = torch.softmax(self.attention(h).squeeze(-1), dim=1)
            pooled = (h * weights.unsqueeze(-1)).sum(1)
        return self.head(pooled)


def create_pose_model(*, num_classes: int, features: int, head: str = "tcn", hidden: int = 96, levels: int = 4,
                      dropout: float = 0.3) -> nn.Module:
    """Pose stream over skeleton sequences with a person mask.

    ::

        (N, T, P, F) ─ per-person MLP ─ masked mean over P ─ ┬ tcn: dilated residual 1D convs ─ mean over T ─┬ linear
                                                            ├ lstm: BiLSTM ─ mean over T ───────────────────┤
                                                            └ lstm_attention: BiLSTM ─ attention over T ────┘
    """
    if head == "tcn":
        return PoseTCN(features, hidden, num_classes, levels, dropout)
    if head in ("lstm", "lstm_attention"):
        return PoseLSTM(features, hidden, num_classes, dropout, attention=head == "lstm_attention")
    raise ValueError(f"unknown pose head {head!r}: tcn, lstm or lstm_attention")
