"""Spatial-temporal graph convolution over the COCO-17 skeleton (ST-GCN, Yan et al. 2018; the input variants and
multi-person pooling follow pyskl's ST-GCN++ practice): joint, bone or motion inputs, one network per input, their
scores ensembled by late fusion."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from preprocess.pose.keypoints import COCO_TREE

PARENT = np.arange(17)
for _child, _parent in COCO_TREE:
    PARENT[_child] = _parent
POSE_INPUTS = ("joint", "bone", "motion")


def spatial_partitions(num_joints: int = 17, edges=COCO_TREE) -> np.ndarray:
    """(3, V, V) adjacency of ST-GCN's spatial partitioning: the joint itself, its neighbours nearer the root
    (inward), and those farther (outward); each partition normalised by in-degree (columns sum to 1)."""
    identity = np.eye(num_joints)
    inward = np.zeros((num_joints, num_joints))
    for child, parent in edges:
        inward[parent, child] = 1.0  # information flows child → parent: column = source, row = target
    outward = inward.T

    def normalise(a):
        degree = a.sum(0)
        return a / np.where(degree > 0, degree, 1.0)

    return np.stack([identity, normalise(inward), normalise(outward)]).astype(np.float32)


def skeleton_inputs(joints: torch.Tensor, kind: str) -> torch.Tensor:
    """(..., T, V, 3) x, y, confidence → the same shape for ``kind``: joint (as is), bone (x, y minus the parent's;
    the root's bone is zero) or motion (x, y at t+1 minus t; zero at the last frame). Confidence is kept."""
    if kind == "joint":
        return joints
    xy, conf = joints[..., :2], joints[..., 2:]
    if kind == "bone":
        moved = xy - xy[..., torch.as_tensor(PARENT, device=joints.device), :]
    elif kind == "motion":
        moved = torch.zeros_like(xy)
        moved[..., :-1, :, :] = xy[..., 1:, :, :] - xy[..., :-1, :, :]
    else:
        raise ValueError(f"unknown pose input {kind!r}: {', '.join(POSE_INPUTS)}")
    return torch.cat([moved, conf], -1)


class GraphConv(nn.Module):
    """Sum over partitions k of A_k-weighted neighbours of W_k x, with ST-GCN's learnable edge importance."""

    def __init__(self, cin: int, cout: int, adjacency: np.ndarray):
        super().__init__()
        self.register_buffer("adjacency", torch.from_numpy(adjacency))
        self.importance = nn.Parameter(torch.ones_like(self.adjacency))
        self.conv = nn.Conv2d(cin, cout * len(adjacency), 1)
        self.parts = len(adjacency)

    def forward(self, x):  # (N, C, T, V)
        n, _, t, v = x.shape
        y = self.conv(x).view(n, self.parts, -1, t, v)
        return torch.einsum("nkctv,kvw->nctw", y, self.adjacency * self.importance)


class STGCNBlock(nn.Module):
    """Graph convolution, then a 9×1 temporal convolution (stride over time), each with batch norm; residual."""

    def __init__(self, cin: int, cout: int, adjacency: np.ndarray, stride: int, dropout: float):
        super().__init__()
        self.gcn = nn.Sequential(GraphConv(cin, cout, adjacency), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.tcn = nn.Sequential(
            nn.Conv2d(cout, cout, (9, 1), (stride, 1), (4, 0)), nn.BatchNorm2d(cout), nn.Dropout(dropout)
        )
        self.residual = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, (stride, 1)), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        return torch.relu(self.tcn(self.gcn(x)) + self.residual(x))


class PoseSTGCN(nn.Module):
    """Pose features (N, T, P, 54) with a (N, T, P) mask → (N, C) logits: every person slot through the same graph
    network, then a mean over the slots that hold someone."""

    def __init__(self, num_classes: int, *, inputs: str, widths, strides, dropout: float):
        super().__init__()
        if inputs not in POSE_INPUTS:
            raise ValueError(f"unknown pose input {inputs!r}: {', '.join(POSE_INPUTS)}")
        self.inputs = inputs
        adjacency = spatial_partitions()
        channels = 3 + 3  # the input variant's x, y, confidence; the person's place in the frame (cx, cy, size)
        self.data_norm = nn.BatchNorm1d(channels * 17)
        blocks, cin = [], channels
        for width, stride in zip(widths, strides):
            blocks.append(STGCNBlock(cin, width, adjacency, stride, dropout))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x, mask):
        n, t, p, _ = x.shape
        joints = x[..., :51].reshape(n, t, p, 17, 3).permute(0, 2, 1, 3, 4)  # (N, P, T, V, 3)
        place = x[..., 51:54].permute(0, 2, 1, 3)[..., None, :].expand(n, p, t, 17, 3)
        features = torch.cat([skeleton_inputs(joints, self.inputs), place], -1)  # (N, P, T, V, 6)
        features = features * mask.permute(0, 2, 1)[..., None, None].to(features.dtype)
        h = features.reshape(n * p, t, 17 * 6).transpose(1, 2)  # (NP, V*C, T)
        h = self.data_norm(h).view(n * p, 17, 6, t).permute(0, 2, 3, 1)  # (NP, C, T, V)
        h = self.blocks(h).mean((2, 3)).view(n, p, -1)
        present = mask.any(1).to(h.dtype)[..., None]  # (N, P, 1): slots that hold someone at any time
        pooled = (h * present).sum(1) / present.sum(1).clamp(min=1.0)
        return self.head(pooled)


def create_stgcn_model(
    *,
    num_classes: int,
    inputs: str = "joint",
    widths=(32, 32, 64, 64, 128, 128),
    strides=(1, 1, 2, 1, 2, 1),
    dropout: float = 0.1,
) -> nn.Module:
    """ST-GCN pose stream (``bin/train pose --head stgcn --pose-input joint|bone|motion``).

    ::

        (N, T, P, 54) ─ joints (x, y, conf) → joint | bone | motion ⊕ place ─ data BN ─ per person:
            6 × [graph conv over the COCO-17 tree (self, inward, outward) ─ 9×1 temporal conv] ─ mean over T, V
        ─ mean over present persons ─ linear ─ (N, C)

    Widths are a CPU-sized ST-GCN (pyskl's is 64 … 256 over 10 blocks).
    """
    return PoseSTGCN(num_classes, inputs=inputs, widths=widths, strides=strides, dropout=dropout)
