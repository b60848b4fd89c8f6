"""A scene adversary: a head that tells a clip's group (source video, performer) from the features the class head
reads, trained through gradient reversal (Ganin & Lempitsky, ICML 2015; the scene-adversarial loss of Choi et al.,
NeurIPS 2019), so that the backbone learns features that do not tell the venues apart. ::

    clip ─► backbone ─► features ─┬─► class head ─► class loss
                                  └─► reverse gradient (× λ) ─► group head ─► group loss, within the clip's class

Only where a class has clips of several groups, and only among that class's groups: with one source per style,
telling the groups apart is telling the styles apart, and reversing that gradient would remove the style itself.
The features are the input of the network's last ``nn.Linear`` (its class head; TSN's is per segment: they are
averaged over the clip's segments)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by −``weight``."""

    @staticmethod
    def forward(ctx, x, weight: float):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def class_head(model: nn.Module) -> nn.Linear:
    """The network's class head: its last ``nn.Linear``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear class head for a scene adversary")
    return linears[-1]


def group_targets(labels: np.ndarray, groups: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(per clip its group's index or −1 where its class has a single group, (classes, groups) bool: which groups
    each class has, where it has several, the group names)."""
    labels = np.asarray(labels)
    names = sorted(set(groups))
    index = np.array([names.index(g) for g in groups])
    classes = int(labels.max()) + 1 if len(labels) else 0
    allowed = np.zeros((classes, len(names)), bool)
    for c in range(classes):
        present = np.unique(index[labels == c])
        if len(present) > 1:
            allowed[c, present] = True
    targets = np.where(allowed[labels.clip(0), index] & (labels >= 0), index, -1)
    return targets, allowed, names


class SceneAdversary(nn.Module):
    """The group head and its hook on the class head's input; ``loss(labels, videos)`` after a forward pass."""

    def __init__(self, model: nn.Module, labels: np.ndarray, groups: list[str], weight: float):
        super().__init__()
        targets, allowed, self.names = group_targets(labels, groups)
        self.register_buffer("targets", torch.from_numpy(targets).long(), persistent=False)
        self.register_buffer("allowed", torch.from_numpy(allowed), persistent=False)
        self.weight = float(weight)
        self.head = nn.Linear(class_head(model).in_features, len(self.names))
        self.features = None
        class_head(model).register_forward_pre_hook(self._keep)

    @property
    def active(self) -> bool:
        """Whether any class has several groups (else there is nothing to learn without removing the style)."""
        return bool((self.targets >= 0).any())

    def _keep(self, module, inputs):
        self.features = inputs[0] if module.training else None  # (training steps only, not evaluation)

    def loss(self, labels: torch.Tensor, videos: torch.Tensor, seen: int) -> torch.Tensor:
        """The group loss of the last forward pass's first ``len(labels)`` clips (their class head's features,
        averaged over segments) of the ``seen`` clips that went through (the hidden copies of the confusion loss come
        after them), among each clip's class's groups; 0 when none of them counts."""
        features, self.features = self.features, None
        n = len(labels)
        targets = self.targets[videos.to(self.targets.device)]
        if features is None or not bool((targets >= 0).any()):
            return torch.zeros((), device=labels.device)
        per_clip = features.shape[0] // seen  # rows are clips, or clips x segments (TSN)
        rows = features[: n * per_clip].reshape(n, per_clip, -1).mean(1)
        keep = targets >= 0
        logits = self.head(GradientReversal.apply(rows[keep], self.weight))
        # only the groups of the clip's own class compete: the head must not read the class
        logits = logits.masked_fill(~self.allowed[labels[keep]], float("-inf"))
        return nn.functional.cross_entropy(logits.float(), targets[keep])
