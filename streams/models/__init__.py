"""Stream networks, one module per family. Builders are plain ``create_*`` functions with keyword-only arguments.

All return a module mapping a batch of one modality's clips to class logits:

* RGB    (N, K, 3, H, W)   K segments of one frame each         → (N, C)   ``cnn2d.create_rgb_model``
* RGB 3D (N, T, 3, H, W)   one clip of T consecutive frames     → (N, C)   ``cnn3d.create_rgb3d_model``
* flow   (N, K, 2L, H, W)  K segments of L stacked flow fields  → (N, C)   ``cnn2d.create_flow_model``
* RGB sequence (N, T, 3, H, W) T frames, CNN per frame → LSTM/TCN → (N, C)  ``sequence.create_cnn_lstm_model``
* features (N, T, D)       cached per-frame embeddings (+ pose)  → (N, C)   ``sequence.create_sequence_model``
* pose ST-GCN (N, T, P, F) the same input, a graph network per person  → (N, C)  ``stgcn.create_stgcn_model``
* pose   (N, T, P, F)      T frames, P person slots, F features → (N, C), with a (N, T, P) person mask
                                                                           ``pose.create_pose_model``
"""

from .cnn2d import (
    BACKBONES,
    PRESETS_2D,
    create_backbone_2d,
    create_flow_model,
    create_rgb_model,
    create_torchvision_resnet,
)
from .cnn3d import PRESETS_3D, create_rgb3d_model
from .partial_bn import freeze_batchnorm_but_first
from .pose import create_pose_model
from .sequence import SEQUENCE_HEADS, create_cnn_lstm_model, create_sequence_model
from .stgcn import POSE_INPUTS, create_stgcn_model

__all__ = [
    "POSE_INPUTS",
    "create_stgcn_model",
    "SEQUENCE_HEADS",
    "create_cnn_lstm_model",
    "create_sequence_model",
    "BACKBONES",
    "PRESETS_2D",
    "PRESETS_3D",
    "create_torchvision_resnet",
    "freeze_batchnorm_but_first",
    "create_backbone_2d",
    "create_flow_model",
    "create_pose_model",
    "create_rgb3d_model",
    "create_rgb_model",
]
