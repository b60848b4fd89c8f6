"""TSN's partial batch normalisation: on a small training set, every BatchNorm layer but the first keeps the
statistics it came with (a pretrained backbone's), since a few dozen clips estimate them badly."""

from __future__ import annotations

from torch import nn


def freeze_batchnorm_but_first(model: nn.Module) -> int:
    """Put every BatchNorm layer of ``model`` except the first in eval mode (running mean and variance frozen; its
    scale and shift still learn). Call after ``model.train()``. Returns how many layers were frozen."""
    layers = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    for layer in layers[1:]:
        layer.eval()
    return max(len(layers) - 1, 0)
