"""Farneback dense optical flow in PyTorch, batched over frame pairs, with OpenCV's semantics.

``farneback_torch(prev, next, pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)``
takes (N, H, W) grayscale tensors (uint8 or float, any device) and returns (N, H, W, 2) float32 flow with
``next(x + dx, y + dy) ≈ prev(x, y)``, the same parameters meaning the same as in ``cv2.calcOpticalFlowFarneback``.

It follows OpenCV's CPU implementation step by step (our own code, written from its documented algorithm):

* pyramid level k (coarsest first): the full-size frame blurred by a Gaussian of σ = (1/scale − 1)/2 (kernel
  round(5σ)|1, at least 3; at level 0 OpenCV's fixed 3-tap kernel), reflect-101 borders, then resized bilinearly
  (half-pixel centres) to round(w·scale) × round(h·scale); levels below 32 pixels are dropped;
* polynomial expansion: separable Gaussian-weighted least squares (poly_n, poly_sigma), replicate borders,
  5 coefficients per pixel;
* update: the 5-channel matrix from R0 and R1 sampled bilinearly at x + flow (R0 alone where the sample falls
  outside), with the 5-pixel border down-weighting; each iteration blurs it (box of winsize or Gaussian with
  σ = 0.3·(winsize/2), replicate borders), solves the 2×2 system per pixel with idet = 1/(det + 1e-3), and rebuilds
  the matrix from the new flow except after the last iteration. OpenCV rebuilds it in stripes during its sweep, but
  only where the blur has finished, which equals this whole-image update.
"""

from __future__ import annotations

from contextlib import contextmanager

import cv2
import numpy as np
import torch
import torch.nn.functional as F

OPTFLOW_USE_INITIAL_FLOW = 4
OPTFLOW_FARNEBACK_GAUSSIAN = 256
MIN_SIZE = 32
BORDER_WEIGHTS = (0.14, 0.14, 0.4472, 0.4472, 0.4472)


def _cv_round(x: float) -> int:
    """OpenCV's cvRound: round half to even."""
    return int(np.rint(x))


def _separable(x: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of x (N, C, H, W) with ky along y then kx along x, with padding ``mode``."""
    c = x.shape[1]
    ry, rx = (ky.numel() - 1) // 2, (kx.numel() - 1) // 2
    x = F.pad(x, (0, 0, ry, ry), mode=mode)
    x = F.conv2d(x, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    x = F.pad(x, (rx, rx, 0, 0), mode=mode)
    return F.conv2d(x, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _poly_constants(n: int, sigma: float):
    """The expansion's 1D kernels g, x·g, x²·g and the inverse-Gram constants (ig11, ig03, ig33, ig55)."""
    if sigma < np.finfo(np.float32).eps:
        sigma = n * 0.3
    x = np.arange(-n, n + 1, dtype=np.float64)
    g = np.exp(-x * x / (2 * sigma * sigma)).astype(np.float32).astype(np.float64)
    g = (g / g.sum()).astype(np.float32).astype(np.float64)
    xg, xxg = (x * g).astype(np.float32).astype(np.float64), (x * x * g).astype(np.float32).astype(np.float64)
    gram = np.zeros((6, 6))
    gy, gx = np.meshgrid(g, g, indexing="ij")
    yy, xx = np.meshgrid(x, x, indexing="ij")
    gram[0, 0] = (gy * gx).sum()
    gram[1, 1] = (gy * gx * xx * xx).sum()
    gram[3, 3] = (gy * gx * xx**4).sum()
    gram[5, 5] = (gy * gx * xx * xx * yy * yy).sum()
    gram[2, 2] = gram[0, 3] = gram[0, 4] = gram[3, 0] = gram[4, 0] = gram[1, 1]
    gram[4, 4] = gram[3, 3]
    gram[3, 4] = gram[4, 3] = gram[5, 5]
    inv = np.linalg.inv(gram)
    return g, xg, xxg, (inv[1, 1], inv[0, 3], inv[3, 3], inv[5, 5])


def _poly_expansion(image: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """(N, 1, H, W) → (N, 5, H, W) coefficients in OpenCV's channel order."""
    g, xg, xxg, (ig11, ig03, ig33, ig55) = _poly_constants(n, sigma)
    opts = dict(dtype=image.dtype, device=image.device)
    g, xg, xxg = (torch.tensor(k, **opts) for k in (g, xg, xxg))
    rows = torch.cat([_separable(image, k, torch.ones(1, **opts), "replicate") for k in (g, xg, xxg)], 1)
    r0, r1, r2 = rows[:, 0:1], rows[:, 1:2], rows[:, 2:3]
    one = torch.ones(1, **opts)

    def horizontal(r, k):
        return _separable(r, one, k, "replicate")

    b1, b2, b4 = horizontal(r0, g), horizontal(r0, xg), horizontal(r0, xxg)
    b3, b6 = horizontal(r1, g), horizontal(r1, xg)
    b5 = horizontal(r2, g)
    return torch.cat([b3 * ig11, b2 * ig11, b1 * ig03 + b5 * ig33, b1 * ig03 + b4 * ig33, b6 * ig55], 1)


def _border_weight(height: int, width: int, **opts) -> torch.Tensor:
    """OpenCV's down-weighting of the outer 5 pixels: the product of the factors of both edges a pixel is near."""

    def axis(size):
        i = np.arange(size)
        near_start = np.where(i < 5, np.take(BORDER_WEIGHTS, np.minimum(i, 4)), 1.0)
        near_end = np.where(i >= size - 5, np.take(BORDER_WEIGHTS, np.minimum(size - 1 - i, 4)), 1.0)
        return near_start * near_end

    return torch.tensor(axis(height)[:, None] * axis(width)[None, :], **opts)


def _update_matrices(r0: torch.Tensor, r1: torch.Tensor, flow: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The (N, 5, H, W) matrix M from R0, R1 and the current flow (N, 2, H, W)."""
    n, _, h, w = r0.shape
    dx, dy = flow[:, 0], flow[:, 1]
    ys = torch.arange(h, device=r0.device, dtype=r0.dtype).view(1, h, 1)
    xs = torch.arange(w, device=r0.device, dtype=r0.dtype).view(1, 1, w)
    fx, fy = xs + dx, ys + dy
    x1, y1 = torch.floor(fx), torch.floor(fy)
    ax, ay = fx - x1, fy - y1
    inside = (x1 >= 0) & (x1 < w - 1) & (y1 >= 0) & (y1 < h - 1)
    xi = x1.clamp(0, w - 2).long()
    yi = y1.clamp(0, h - 2).long()
    flat = r1.reshape(n, 5, h * w)

    def tap(oy, ox):
        index = ((yi + oy) * w + (xi + ox)).view(n, 1, h * w).expand(n, 5, h * w)
        return flat.gather(2, index).view(n, 5, h, w)

    ax, ay = ax.unsqueeze(1), ay.unsqueeze(1)
    sampled = (
        (1 - ax) * (1 - ay) * tap(0, 0) + ax * (1 - ay) * tap(0, 1) + (1 - ax) * ay * tap(1, 0) + ax * ay * tap(1, 1)
    )
    inside = inside.unsqueeze(1)
    r2 = torch.where(inside, sampled[:, 0:1], torch.zeros_like(sampled[:, 0:1]))
    r3 = torch.where(inside, sampled[:, 1:2], torch.zeros_like(sampled[:, 1:2]))
    r4 = torch.where(inside, (r0[:, 2:3] + sampled[:, 2:3]) * 0.5, r0[:, 2:3])
    r5 = torch.where(inside, (r0[:, 3:4] + sampled[:, 3:4]) * 0.5, r0[:, 3:4])
    r6 = torch.where(inside, (r0[:, 4:5] + sampled[:, 4:5]) * 0.25, r0[:, 4:5] * 0.5)
    r2 = (r0[:, 0:1] - r2) * 0.5
    r3 = (r0[:, 1:2] - r3) * 0.5
    dx, dy = dx.unsqueeze(1), dy.unsqueeze(1)
    r2 = r2 + r4 * dy + r6 * dx
    r3 = r3 + r6 * dy + r5 * dx
    s = weight.view(1, 1, h, w)
    r2, r3, r4, r5, r6 = r2 * s, r3 * s, r4 * s, r5 * s, r6 * s
    return torch.cat([r4 * r4 + r6 * r6, (r4 + r5) * r6, r5 * r5 + r6 * r6, r4 * r2 + r6 * r3, r6 * r2 + r5 * r3], 1)


def _solve(m: torch.Tensor) -> torch.Tensor:
    g11, g12, g22, h1, h2 = m.unbind(1)
    idet = 1.0 / (g11 * g22 - g12 * g12 + 1e-3)
    return torch.stack([(g11 * h2 - g12 * h1) * idet, (g22 * h1 - g12 * h2) * idet], 1)


@contextmanager
def full_float32():
    """TF32 off for convolutions and matrix products inside the block, restored after. cuDNN runs float32
    convolutions in TF32 by default on Ampere and Hopper GPUs (10-bit mantissas), which would move this port from
    < 0.0001 px to about 0.03 px p99 from OpenCV; the CPU never uses TF32, so CPU parity says nothing about it."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    conv = getattr(cudnn, "conv", None)  # torch >= 2.9 also has per-operator precision settings
    saved = (cudnn.allow_tf32, matmul.allow_tf32, getattr(conv, "fp32_precision", None))
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    if saved[2] is not None:
        conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved[0], saved[1]
        if saved[2] is not None:
            conv.fp32_precision = saved[2]


def farneback_torch(
    prev,
    next,
    pyr_scale: float = 0.5,
    levels: int = 3,
    winsize: int = 15,
    iterations: int = 3,
    poly_n: int = 5,
    poly_sigma: float = 1.2,
    flags: int = 0,
    flow=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dense flow from each ``prev[i]`` to ``next[i]``: (N, H, W) (or (H, W)) grayscale → (N, H, W, 2) float32.

    ``flow`` (N, H, W, 2) is the initial flow with ``flags & OPTFLOW_USE_INITIAL_FLOW``, as in OpenCV. Runs in full
    float32 whatever the process's TF32 settings (``full_float32``); ``dtype`` picks a lower precision on purpose.
    """
    with full_float32():
        return _farneback(prev, next, pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags, flow, dtype)


def _farneback(prev, next, pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags, flow, dtype):
    prev, nxt = torch.as_tensor(prev), torch.as_tensor(next)
    single = prev.dim() == 2
    if single:
        prev, nxt = prev[None], nxt[None]
    if prev.shape != nxt.shape or prev.dim() != 3:
        raise ValueError(
            f"prev and next must be (N, H, W) of one shape, got {tuple(prev.shape)} and {tuple(nxt.shape)}"
        )
    if poly_n not in (5, 7):
        raise ValueError(f"poly_n must be 5 or 7, not {poly_n}")
    if not 0 < pyr_scale < 1:
        raise ValueError(f"pyr_scale must be in (0, 1), not {pyr_scale}")
    frames = torch.stack([prev, nxt]).to(dtype)  # (2, N, H, W): both images of every pair go through together
    two, n, height, width = frames.shape
    frames = frames.reshape(2 * n, 1, height, width)
    opts = dict(dtype=dtype, device=frames.device)

    levels = usable_levels(width, height, pyr_scale, levels)

    current = None
    for k in range(levels, -1, -1):
        scale = pyr_scale**k
        sigma = (1.0 / scale - 1) * 0.5
        size = max(_cv_round(sigma * 5) | 1, 3)
        w, h = _cv_round(width * scale), _cv_round(height * scale)
        kernel = torch.tensor(cv2.getGaussianKernel(size, sigma, cv2.CV_64F).ravel(), **opts)
        blurred = _separable(frames, kernel, kernel, "reflect")
        level = (
            blurred
            if (w, h) == (width, height)
            else F.interpolate(blurred, size=(h, w), mode="bilinear", align_corners=False)
        )
        poly = _poly_expansion(level, poly_n, poly_sigma)
        r0, r1 = poly[:n], poly[n:]
        if current is None:
            if flags & OPTFLOW_USE_INITIAL_FLOW and flow is not None:
                init = torch.as_tensor(flow, **opts).reshape(n, height, width, 2).permute(0, 3, 1, 2)
                current = F.interpolate(init, size=(h, w), mode="bilinear", align_corners=False) * scale
            else:
                current = torch.zeros(n, 2, h, w, **opts)
        else:
            current = F.interpolate(current, size=(h, w), mode="bilinear", align_corners=False) / pyr_scale
        weight = _border_weight(h, w, **opts)
        m = _update_matrices(r0, r1, current, weight)
        half = winsize // 2
        if flags & OPTFLOW_FARNEBACK_GAUSSIAN:
            sig = half * 0.3
            t = (
                np.exp(-(np.arange(-half, half + 1) ** 2) / (2 * sig * sig))
                if sig > 0
                else np.eye(1, 2 * half + 1, half)[0]
            )
            window, area = torch.tensor(t / t.sum(), **opts), 1.0
        else:
            window, area = torch.ones(2 * half + 1, **opts), 1.0 / (winsize * winsize)
        for i in range(iterations):
            current = _solve(_separable(m, window, window, "replicate") * area)
            if i < iterations - 1:
                m = _update_matrices(r0, r1, current, weight)
    out = current.permute(0, 2, 3, 1).to(torch.float32).contiguous()
    return out[0] if single else out


def usable_levels(width: int, height: int, pyr_scale: float, levels: int) -> int:
    """How many coarser levels OpenCV actually uses for a frame of this size (none below 32 pixels)."""
    scale = 1.0
    for k in range(levels):
        scale *= pyr_scale
        if width * scale < MIN_SIZE or height * scale < MIN_SIZE:
            return k
    return levels


__all__ = ["farneback_torch", "OPTFLOW_FARNEBACK_GAUSSIAN", "OPTFLOW_USE_INITIAL_FLOW", "usable_levels"]
