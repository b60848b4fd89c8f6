"""The synthetic dance dataset: 3D kinematic humanoids of 10 styles rendered to mp4 with COCO-17 ground truth.

::

    body.py     body shape and forward kinematics
    styles.py   the styles as motion signatures
    render.py   scenes, cameras, depth-ordered drawing, ground truth
    dataset.py  presets and generate(): the dataset on disk
"""

from .dataset import PRESETS, generate, groundtruth_as_coco

__all__ = ["PRESETS", "generate", "groundtruth_as_coco"]
