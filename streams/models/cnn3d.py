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


def create_rgb3d_model(*, num_classes: int, widths=(16, 32, 64, 128), dropout: float = 0.5) -> nn.Module:
    """RGB stream as a 3D CNN over one short clip of consecutive frames.

    ::

        (N, T, 3, H, W) ─ [3×3×3 conv ×2, stride 2] × 4 ─ global avg pool ─ dropout ─ linear ─ (N, C)
    """
    return Conv3dNet(widths, num_classes, dropout)
