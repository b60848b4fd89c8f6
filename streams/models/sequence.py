"""Sequence models over per-frame feature vectors: the CNN-LSTM of the seed papers (Lin & Vo; Bendit-Shtull et
al.), and heads that train in seconds on cached features (``bin/extract-features``)."""

from __future__ import annotations

from torch import nn

from .cnn2d import create_backbone_2d
from .pose import TemporalBlock

SEQUENCE_HEADS = ("lstm", "lstm_attention", "tcn")


class SequenceHead(nn.Module):
    """(N, T, D) feature sequences → (N, C) logits: projection, then a BiLSTM (mean or attention over time) or a
    dilated TCN (mean over time)."""

    def __init__(self, features: int, num_classes: int, *, head: str, hidden: int, dropout: float):
        super().__init__()
        if head not in SEQUENCE_HEADS:
            raise ValueError(f"unknown sequence head {head!r}: {', '.join(SEQUENCE_HEADS)}")
        self.head_kind = head
        # the LSTM learns far faster on normalised inputs; the projection keeps big backbones' features cheap
        self.project = nn.Sequential(nn.LayerNorm(features), nn.Dropout(dropout), nn.Linear(features, hidden))
        if head == "tcn":
            self.temporal = nn.Sequential(*[TemporalBlock(hidden, 2**i, dropout) for i in range(3)])
            out = hidden
        else:
            self.temporal = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
            out = 2 * hidden
        self.attention = nn.Linear(out, 1) if head == "lstm_attention" else None
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(out, num_classes))

    def forward(self, x):
        h = self.project(x)
        if self.head_kind == "tcn":
            h = self.temporal(h.transpose(1, 2)).transpose(1, 2)
        else:
            h, _ = self.temporal(h)
        pooled = h.mean(1) if self.attention is None else (h * self.attention(h).softmax(1)).sum(1)
        return self.classifier(pooled)


def create_sequence_model(
    *, num_classes: int, features: int, head: str = "lstm", hidden: int = 128, dropout: float = 0.3
) -> nn.Module:
    """A classifier of feature sequences (cached CNN embeddings, with or without pooled pose features).

    ::

        (N, T, D) ─ layer norm ─ linear D→H ─ ┬ lstm: BiLSTM ─ mean over T ──────────┬ dropout ─ linear ─ (N, C)
                                              ├ lstm_attention: BiLSTM ─ attention ──┤
                                              └ tcn: dilated residual 1D convs ─ mean┘
    """
    return SequenceHead(features, num_classes, head=head, hidden=hidden, dropout=dropout)


class FrameSequenceModel(nn.Module):
    """A 2D CNN applied to every frame, its features modelled over time by a SequenceHead."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, head: str, hidden: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.sequence = SequenceHead(backbone.out_features, num_classes, head=head, hidden=hidden, dropout=dropout)

    def forward(self, x):  # (N, T, 3, H, W)
        n, t = x.shape[:2]
        return self.sequence(self.backbone(x.flatten(0, 1)).view(n, t, -1))


def create_cnn_lstm_model(
    *, num_classes: int, preset: str = "small", head: str = "lstm", hidden: int = 128, dropout: float = 0.3
) -> nn.Module:
    """RGB CNN-LSTM, trained end to end (``bin/train rgb --arch sequence --head lstm``).

    ::

        (N, T, 3, H, W) ─ 2D CNN per frame (ours or torchvision's ResNet) ─ (N, T, D) ─ SequenceHead ─ (N, C)
    """
    return FrameSequenceModel(
        create_backbone_2d(in_channels=3, preset=preset), num_classes, head=head, hidden=hidden, dropout=dropout
    )
