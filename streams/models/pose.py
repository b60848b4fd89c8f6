"""Pose stream: a per-person keypoint encoder pooled over person slots, then a temporal model (TCN or BiLSTM)."""

from __future__ import annotations

import torch
from torch import nn


class PersonEncoder(nn.Module):
    """Per frame and person: keypoint features → embedding; then a masked mean over person slots."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True)
        )

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
        self.net = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm1d(channels),
        )

    def forward(self, x):
        return torch.relu(x + self.net(x))


class PoseTCN(nn.Module):
    def __init__(self, features, hidden, num_classes, levels, dropout):
        super().__init__()
        self.persons = PersonEncoder(features, hidden)
        self.proj = nn.Conv1d(hidden + 1, hidden, 1)
        self.blocks = nn.Sequential(*[TemporalBlock(hidden, 2**i, dropout) for i in range(levels)])
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


def create_pose_model(
    *, num_classes: int, features: int, head: str = "tcn", hidden: int = 96, levels: int = 4, dropout: float = 0.3
) -> nn.Module:
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
