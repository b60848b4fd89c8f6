"""Where in time a clip is sampled: instants in seconds, mapped to the stored items (frames, flow fields, pose
frames, feature rows) shown at those instants.

Frame rates differ between sources (23.98, 25, 30 fps, and a pose or frame cache may keep every n-th frame). A window
of "8 frames" or a stack of "5 flow fields" would cover a different stretch of time at each rate, and a model would
learn the frame rate instead of the tempo. So every dataset samples instants at one reference rate (``sample_fps``,
fixed per run from its training videos) and takes, for each instant, the stored item on screen at that moment
(the last one whose time is ≤ the instant). When a video's rate equals the reference rate this is exactly the
frame-index sampling of TSN / pyskl.
"""

from __future__ import annotations

import numpy as np

# Instants land on frame times up to float rounding (k * stride / fps): count an instant within this of a frame
# time as that frame's.
_EPS = 1e-6


def item_times(indices: np.ndarray, fps: float) -> np.ndarray:
    """Seconds of stored items that hold the source frames ``indices`` of a video at ``fps``."""
    return np.asarray(indices, np.float64) / float(fps)


def clip_duration(times: np.ndarray, fps: float) -> float:
    """Seconds covered by items at ``times``: up to the end of the last item's period (the items' spacing, which is
    one source frame at ``fps`` unless a cache kept every n-th frame)."""
    if not len(times):
        return 0.0
    period = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / float(fps)
    return float(times[-1]) + period


def window_starts(
    duration: float,
    segments: int,
    span: float,
    rng: np.random.Generator | None,
    view: int = 0,
    views: int = 1,
) -> np.ndarray:
    """Start instant (s) of each of ``segments`` windows of ``span`` seconds in a clip of ``duration`` seconds.

    Training (``rng``): a random start inside each equal segment (TSN's temporal jitter). Evaluation: view v of
    ``views`` takes the point (v + 0.5) / views of the way through each segment.
    """
    usable = max(duration - span, 0.0)
    edges = np.linspace(0.0, usable, segments + 1)
    if rng is not None:
        return edges[:-1] + rng.random(segments) * (edges[1:] - edges[:-1])
    return edges[:-1] + (view + 0.5) / views * (edges[1:] - edges[:-1])


def items_at(times: np.ndarray, instants: np.ndarray) -> np.ndarray:
    """Index of the item on screen at each instant: the last one whose time is ≤ the instant (the first item for
    instants before it, the last after the end)."""
    idx = np.searchsorted(times, np.asarray(instants, np.float64) + _EPS, side="right") - 1
    return np.clip(idx, 0, len(times) - 1)


def reference_fps(rates) -> float:
    """The sampling rate of a run: the median frame rate of its training videos (so a dataset at one rate is
    sampled frame by frame), rounded to 0.01 fps."""
    rates = [float(r) for r in rates if r and np.isfinite(r) and r > 0]
    if not rates:
        raise ValueError("no video with a known frame rate to fix the sampling rate")
    return round(float(np.median(rates)), 2)
