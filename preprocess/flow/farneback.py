"""The OpenCV Farneback engine: ``cv2.calcOpticalFlowFarneback`` with its parameters as one value.

Flow is computed from grayscale frame ``prev`` to ``next``: ``flow[y, x] = (dx, dy)`` with
``next(x + dx, y + dy) ≈ prev(x, y)``, in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FarnebackParams:
    """``cv2.calcOpticalFlowFarneback``'s parameters with OpenCV's usual values."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    gaussian: bool = False  # OPTFLOW_FARNEBACK_GAUSSIAN: Gaussian instead of box window

    def __post_init__(self):
        if not 0 < self.pyr_scale < 1:
            raise ValueError(f"pyr_scale must be in (0, 1), not {self.pyr_scale}")
        if self.levels < 1 or self.winsize < 1 or self.iterations < 1:
            raise ValueError("levels, winsize and iterations must be at least 1")
        if self.poly_n not in (5, 7):
            raise ValueError(f"poly_n must be 5 or 7, not {self.poly_n}")

    @property
    def flags(self) -> int:
        return cv2.OPTFLOW_FARNEBACK_GAUSSIAN if self.gaussian else 0

    def compute(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """(H, W, 2) float32 flow from ``prev`` to ``nxt`` (grayscale uint8)."""
        return cv2.calcOpticalFlowFarneback(
            prev,
            nxt,
            None,
            self.pyr_scale,
            self.levels,
            self.winsize,
            self.iterations,
            self.poly_n,
            self.poly_sigma,
            self.flags,
        )
