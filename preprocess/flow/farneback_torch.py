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

import functools
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


def _border_weight(height: int, width: int, **opts) -> torch.Tensor:
    """OpenCV's down-weighting of the outer 5 pixels: the product of the factors of both edges a pixel is near."""

    def axis(size):
        i = np.arange(size)
        near_start = np.where(i < 5, np.take(BORDER_WEIGHTS, np.minimum(i, 4)), 1.0)
        near_end = np.where(i >= size - 5, np.take(BORDER_WEIGHTS, np.minimum(size - 1 - i, 4)), 1.0)
        return near_start * near_end

    return torch.tensor(axis(height)[:, None] * axis(width)[None, :], **opts)


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


def _separable_valid(x: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
    """Correlate every channel of an already padded x (N, C, H, W) with ky along y then kx along x (no padding)."""
    c = x.shape[1]
    x = F.conv2d(x, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


class FarnebackTorch:
    """OpenCV's Farneback on a device, for batches of pairs and for whole frame sequences.

    ::

        frames (F, H, W) ──expand──► per level (coarsest first): blur → resize → polynomial expansion (F, 5, h, w)
                                      (once per frame: a video's frame t is "next" of pair t-1 and "prev" of pair t)
        prev/next expansions ──flow_between──► per level: upsample the flow, then `iterations` times
                                      [update matrix (R1 sampled by grid_sample) → window blur → 2×2 solve]

    Everything a call needs besides the frames (kernels, border weights, pixel grids, index tensors) is built once
    per frame size and kept on the device, so a call makes no host-to-device copy and no host sync; the expansion's
    Gaussian-weighted least squares is two convolutions with the inverse Gram matrix folded into the weights; the box
    window is two 1D average poolings; the update and the solve work on whole groups of channels at once (about 40
    operations per iteration, each a kernel launch on a GPU). ``compile=True`` runs the per-level iteration through
    ``torch.compile`` (fused kernels; on a GPU add ``mode="reduce-overhead"`` for CUDA graphs).
    """

    def __init__(
        self,
        pyr_scale: float = 0.5,
        levels: int = 3,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
        flags: int = 0,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        compile: bool | str = False,
    ):
        if poly_n not in (5, 7):
            raise ValueError(f"poly_n must be 5 or 7, not {poly_n}")
        if not 0 < pyr_scale < 1:
            raise ValueError(f"pyr_scale must be in (0, 1), not {pyr_scale}")
        if winsize < 1 or iterations < 1 or levels < 0:
            raise ValueError(
                f"winsize and iterations must be >= 1 and levels >= 0, not {winsize}, {iterations}, {levels}"
            )
        self.pyr_scale, self.levels, self.winsize, self.iterations = pyr_scale, levels, winsize, iterations
        self.poly_n, self.poly_sigma, self.flags = poly_n, poly_sigma, flags
        self.device, self.dtype = torch.device(device), dtype
        self._plans: dict[tuple[int, int], list[dict]] = {}
        self._opts = dict(dtype=dtype, device=self.device)
        self._shared = self._shared_constants()
        self._iterate = self._iterate_eager
        if compile:
            mode = compile if isinstance(compile, str) else None
            self._iterate = torch.compile(self._iterate_eager, mode=mode, dynamic=None)

    # ---- constants, built once ----------------------------------------------------------------------------------

    def _shared_constants(self) -> dict:
        opts = self._opts
        g, xg, xxg, (ig11, ig03, ig33, ig55) = _poly_constants(self.poly_n, self.poly_sigma)
        size = 2 * self.poly_n + 1
        vertical = np.stack([g, xg, xxg]).reshape(3, 1, size, 1)
        # rows (r0, r1, r2) = the image correlated along y with g, x·g, x²·g; the five coefficients are each a sum of
        # rows correlated along x, with OpenCV's inverse-Gram factors folded into the weights (channel order as hers)
        horizontal = np.zeros((5, 3, 1, size))
        horizontal[0, 1, 0] = g * ig11
        horizontal[1, 0, 0] = xg * ig11
        horizontal[2, 0, 0], horizontal[2, 2, 0] = g * ig03, g * ig33
        horizontal[3, 0, 0] = g * ig03 + xxg * ig33
        horizontal[4, 1, 0] = xg * ig55
        half = self.winsize // 2
        if self.flags & OPTFLOW_FARNEBACK_GAUSSIAN:
            sig = half * 0.3
            t = (
                np.exp(-(np.arange(-half, half + 1) ** 2) / (2 * sig * sig))
                if sig > 0
                else np.eye(1, 2 * half + 1, half)[0]
            )
            window = torch.tensor(t / t.sum(), **opts)
        else:
            window = None  # box: average pooling
        return {
            "poly_vertical": torch.tensor(vertical, **opts),
            "poly_horizontal": torch.tensor(horizontal, **opts),
            # the update reads R0 and R1 pre-scaled (powers of two: exact) so that one `where` gives all five values
            "r0_inside": torch.tensor([0.5, 0.5, 0.5, 0.5, 0.25], **opts).view(1, 5, 1, 1),
            "r0_outside": torch.tensor([0.5, 0.5, 1.0, 1.0, 0.5], **opts).view(1, 5, 1, 1),
            "r1_sampled": torch.tensor([-0.5, -0.5, 0.5, 0.5, 0.25], **opts).view(1, 5, 1, 1),
            "window": window,
            # the update's matrix [[r6, r4], [r5, r6]] over w = (r2, r3, r4, r5, r6)
            "flow_terms": torch.tensor([4, 2, 3, 4], device=self.device),
            # M = w[i1]·w[i2] + w[i3]·w[i4]: the five products of OpenCV's update, as (term, factor, product)
            "products": torch.tensor([2, 2, 3, 2, 4, 2, 4, 3, 0, 0, 4, 4, 4, 4, 3, 4, 3, 4, 1, 1], device=self.device),
            # det, and the flow's two numerators: x1·y1 − x2·y2 over m = (g11, g12, g22, h1, h2), as (term, factor)
            "solve_terms": torch.tensor([0, 0, 2, 2, 4, 3, 1, 1, 1, 1, 3, 4], device=self.device),
            "minus_second": torch.tensor([1.0, -1.0], **opts).view(1, 2, 1, 1, 1),
            "det_offset": torch.tensor(1e-3, **opts),  # (a tensor: a Python number would be copied in every call)
        }

    def _plan(self, height: int, width: int) -> list[dict]:
        """Per pyramid level (coarsest first): its size and the constants that depend on it, on the device."""
        key = (height, width)
        if key in self._plans:
            return self._plans[key]
        opts, plan = self._opts, []
        zero = torch.zeros((), **opts)
        for k in range(usable_levels(width, height, self.pyr_scale, self.levels), -1, -1):
            scale = self.pyr_scale**k
            sigma = (1.0 / scale - 1) * 0.5
            size = max(_cv_round(sigma * 5) | 1, 3)
            w, h = _cv_round(width * scale), _cv_round(height * scale)
            grid = np.stack(np.meshgrid(np.arange(w), np.arange(h), indexing="xy"))[None]  # (1, 2, h, w): x, y
            to_unit = np.array([2 / (w - 1), 2 / (h - 1)]).reshape(1, 2, 1, 1)
            plan.append(
                {
                    "size": (h, w),
                    "scale": scale,
                    "blur": torch.tensor(cv2.getGaussianKernel(size, sigma, cv2.CV_64F).ravel(), **opts),
                    # OpenCV multiplies R0..R6 by the border weight s before the products: s² on the products
                    "weight2": _border_weight(h, w, **opts).pow(2).view(1, 1, h, w),
                    "grid": torch.tensor(grid, **opts),
                    "lowest": torch.zeros(1, 2, 1, 1, **opts),
                    "below_upper": torch.tensor([w - 1, h - 1], **opts).view(1, 2, 1, 1).nextafter(zero),
                    # pixel x → grid_sample's unit coordinate 2x / (size − 1) − 1
                    "unit_grid": torch.tensor(grid * to_unit - 1, **opts),
                    "to_unit": torch.tensor(to_unit, **opts),
                }
            )
        self._plans[key] = plan
        return plan

    # ---- the algorithm ------------------------------------------------------------------------------------------

    def expand(self, frames) -> list[torch.Tensor]:
        """(F, H, W) grayscale frames → per level, coarsest first, their (F, 5, h, w) polynomial coefficients."""
        with full_float32():
            return self._expand(torch.as_tensor(frames).to(**self._opts))

    def _expand(self, frames: torch.Tensor) -> list[torch.Tensor]:
        if frames.dim() != 3:
            raise ValueError(f"frames must be (F, H, W), got {tuple(frames.shape)}")
        count, height, width = frames.shape
        frames = frames.reshape(count, 1, height, width)
        shared, n = self._shared, self.poly_n
        out = []
        for level in self._plan(height, width):
            r = (level["blur"].numel() - 1) // 2
            blurred = _separable_valid(F.pad(frames, (r, r, r, r), mode="reflect"), level["blur"], level["blur"])
            image = (
                blurred
                if level["size"] == (height, width)
                else F.interpolate(blurred, size=level["size"], mode="bilinear", align_corners=False)
            )
            rows = F.conv2d(F.pad(image, (n, n, n, n), mode="replicate"), shared["poly_vertical"])
            out.append(F.conv2d(rows, shared["poly_horizontal"]))
        return out

    def flow_between(self, prev: list[torch.Tensor], nxt: list[torch.Tensor], init=None) -> torch.Tensor:
        """Flow from expansions ``prev`` to ``nxt`` (``expand``'s output, N frames each) → (N, H, W, 2) float32."""
        with full_float32():
            return self._flow_between(prev, nxt, init)

    def _flow_between(self, prev, nxt, init):
        shared = self._shared
        current = None
        plan = self._plan(*prev[-1].shape[-2:])  # the finest level has the frames' size
        for level, r0, r1 in zip(plan, prev, nxt, strict=True):
            n = r0.shape[0]
            if current is None:
                if init is not None:
                    height, width = plan[-1]["size"]
                    first = torch.as_tensor(init).to(**self._opts).reshape(n, height, width, 2).permute(0, 3, 1, 2)
                    current = (
                        F.interpolate(first, size=level["size"], mode="bilinear", align_corners=False) * level["scale"]
                    )
                else:
                    current = torch.zeros(n, 2, *level["size"], **self._opts)
            else:
                current = (
                    F.interpolate(current, size=level["size"], mode="bilinear", align_corners=False) / self.pyr_scale
                )
            current = self._iterate(
                r0 * shared["r0_inside"], r0 * shared["r0_outside"], r1 * shared["r1_sampled"], current, level
            )
        return current.permute(0, 2, 3, 1).to(torch.float32).contiguous()

    def _iterate_eager(self, r0_in, r0_out, r1_sampled, flow, level):
        # OpenCV rebuilds the matrix after every iteration but the last: the same as building it before each one
        for _ in range(self.iterations):
            flow = self._solve(self._blur(self._update(r0_in, r0_out, r1_sampled, flow, level)))
        return flow

    def _update(self, r0_in, r0_out, r1_sampled, flow, level):
        """OpenCV's update matrix (N, 5, H, W) at the current flow: R1 sampled bilinearly at x + flow (R0 alone
        outside the frame), the five products, the border weight. Whole channel groups per operation: on a GPU each
        operation is a kernel launch, and at video sizes launches, not arithmetic, set the rate."""
        n, _, h, w = r0_in.shape
        where = level["grid"] + flow
        # OpenCV samples where both taps lie in the frame: 0 <= floor(x) < size - 1, i.e. x in [0, size - 1), i.e.
        # x unchanged by clamping to [0, the float below size - 1] (NaN is not: outside, as OpenCV's compare says)
        inside = (torch.clamp(where, level["lowest"], level["below_upper"]) == where).all(1, keepdim=True)
        # grid_sample's unit coordinates (align_corners: -1 and 1 are the centres of the first and last pixels)
        unit = torch.addcmul(level["unit_grid"], flow, level["to_unit"]).permute(0, 2, 3, 1)
        sampled = F.grid_sample(r1_sampled, unit, mode="bilinear", padding_mode="zeros", align_corners=True)
        v = torch.where(inside, r0_in + sampled, r0_out)  # (r2, r3, r4, r5, r6) of OpenCV
        # r2 += r6·dx + r4·dy, r3 += r5·dx + r6·dy: (r2, r3) plus the 2×2 matrix [[r6, r4], [r5, r6]] times the flow
        shared = self._shared
        moved = (v.index_select(1, shared["flow_terms"]).view(n, 2, 2, h, w) * flow.unsqueeze(1)).sum(2)
        v[:, 0:2] += moved  # (v is this call's own tensor)
        # M = w[i1]·w[i2] + w[i3]·w[i4] over w = (r2, r3, r4, r5, r6): the five products, (term, factor) grouped
        products = v.index_select(1, shared["products"]).view(n, 2, 2, 5, h, w).prod(2).sum(1)
        return products * level["weight2"]

    def _blur(self, m):
        half = self.winsize // 2
        padded = F.pad(m, (half, half, half, half), mode="replicate")
        window = self._shared["window"]
        if window is None:
            return F.avg_pool2d(F.avg_pool2d(padded, (self.winsize, 1), stride=1), (1, self.winsize), stride=1)
        return _separable_valid(padded, window, window)

    def _solve(self, m):
        """The 2×2 system per pixel with OpenCV's idet = 1 / (det + 1e-3) → (N, 2, H, W) flow."""
        n, _, h, w = m.shape
        # (det, g11·h2 − g12·h1, g22·h1 − g12·h2) = x1·y1 − x2·y2, all three from one gather of m's channels
        terms = m.index_select(1, self._shared["solve_terms"]).view(n, 2, 2, 3, h, w).prod(2)
        det_and_numerators = (terms * self._shared["minus_second"]).sum(1)
        idet = (det_and_numerators[:, 0:1] + self._shared["det_offset"]).reciprocal()
        return det_and_numerators[:, 1:3] * idet

    # ---- entry points -------------------------------------------------------------------------------------------

    def pairs(self, prev, nxt, flow=None) -> torch.Tensor:
        """Flow of each pair ``prev[i] → nxt[i]``: (N, H, W) (or (H, W)) → (N, H, W, 2) float32."""
        prev, nxt = torch.as_tensor(prev), torch.as_tensor(nxt)
        single = prev.dim() == 2
        if single:
            prev, nxt = prev[None], nxt[None]
        if prev.shape != nxt.shape or prev.dim() != 3:
            raise ValueError(
                f"prev and next must be (N, H, W) of one shape, got {tuple(prev.shape)} and {tuple(nxt.shape)}"
            )
        init = flow if self.flags & OPTFLOW_USE_INITIAL_FLOW else None
        n = prev.shape[0]
        levels = self.expand(torch.cat([prev, nxt.to(prev.device)]))
        out = self.flow_between([x[:n] for x in levels], [x[n:] for x in levels], init)
        return out[0] if single else out

    def sequence(self, frames, offset: int = 1) -> torch.Tensor:
        """Flow of a frame sequence: ``frames[t] → frames[t + offset]`` for every t, (F, H, W) → (F − offset, H, W, 2),
        each frame expanded once."""
        levels = self.expand(frames)
        return self.flow_between([x[:-offset] for x in levels], [x[offset:] for x in levels])


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
    A thin wrapper over ``FarnebackTorch.pairs``; engines (and their constants on the device) are kept per setting.
    """
    prev, nxt = torch.as_tensor(prev), torch.as_tensor(next)
    engine = cached_engine(
        pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags, device=prev.device, dtype=dtype
    )
    return engine.pairs(prev, nxt, flow=flow)


@functools.lru_cache(maxsize=8)
def cached_engine(*params, device, dtype: torch.dtype = torch.float32, compile: bool | str = False) -> FarnebackTorch:
    """One ``FarnebackTorch`` per setting and process: its constants (and compiled kernels) outlive a call or a
    video. ``params`` are OpenCV's, in her order."""
    return FarnebackTorch(*params, device=torch.device(device), dtype=dtype, compile=compile)


def usable_levels(width: int, height: int, pyr_scale: float, levels: int) -> int:
    """How many coarser levels OpenCV actually uses for a frame of this size (none below 32 pixels)."""
    scale = 1.0
    for k in range(levels):
        scale *= pyr_scale
        if width * scale < MIN_SIZE or height * scale < MIN_SIZE:
            return k
    return levels


__all__ = [
    "FarnebackTorch",
    "farneback_torch",
    "OPTFLOW_FARNEBACK_GAUSSIAN",
    "OPTFLOW_USE_INITIAL_FLOW",
    "usable_levels",
]
