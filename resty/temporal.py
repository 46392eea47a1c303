"""Frame-to-frame stability, written once in NumPy (no framework): the bilinear backward warp,
the forward-backward occlusion check, optical flow (a known synthetic camera motion, or
Farnebäck from OpenCV for real clips), the warping error of Lai et al. (ECCV 2018), and the
random smooth flows of the ReReVST temporal loss (Wang et al., AAAI 2020).

Conventions
-----------
* A flow is H×W×2 float, ``flow[..., 0]`` the x (column) and ``flow[..., 1]`` the y (row)
  displacement in pixels, as OpenCV's.  ``F_{a->b}(p)`` is where pixel ``p`` of frame ``a``
  is in frame ``b``.
* :func:`warp` is a *backward* warp: ``out(p) = img(p + flow(p))`` with bilinear
  interpolation; samples outside the image are clamped to the border and marked invalid.
  Warping frame ``t+1`` with ``F_{t->t+1}`` brings it into frame ``t``'s pixel grid.
* The warp is also a :class:`WarpPlan`: four source indices and four weights per output pixel
  (a fixed sparse linear map).  Both backends apply the same plan to their tensors (a gather
  and a weighted sum, differentiable), so the temporal loss warps identically in torch and TF;
  ``resty.reference_temporal`` is the float64 oracle it is checked against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ArgumentError

__all__ = ["WarpPlan", "warp_plan", "apply_plan", "warp", "occlusion_mask", "warping_error",
           "clip_warping_error", "farneback_flow", "CameraPath", "synthetic_clip",
           "random_smooth_flow", "gaussian_smooth", "temporal_pair"]


# =========================================================================== the warp
@dataclass(frozen=True)
class WarpPlan:
    """A bilinear backward warp as a sparse linear map on an H×W grid: output pixel ``i``
    (row-major) is ``Σ_k weights[k, i] · src[index[k, i]]``; ``valid`` marks outputs whose
    sample fell inside the source."""
    index: np.ndarray     # (4, H*W) int64, row-major source pixel indices
    weights: np.ndarray   # (4, H*W) float64, summing to 1 per pixel
    valid: np.ndarray     # (H, W) bool
    shape: Tuple[int, int]


def warp_plan(flow: np.ndarray, mode: str = "bilinear") -> WarpPlan:
    """The :class:`WarpPlan` of ``out(p) = src(p + flow(p))`` (border-clamped).  ``mode``:
    ``"bilinear"`` (the warping-error metric's warp) or ``"nearest"`` (the sample rounded to the
    nearest pixel, half up: one weight 1, three 0; the temporal loss's warp, as ReReVST's
    ``grid_sample(mode='nearest')``: it copies pixels, so it does not low-pass what it warps)."""
    if mode not in ("bilinear", "nearest"):
        raise ArgumentError(f"warp mode: expected 'bilinear' or 'nearest', got {mode!r}")
    flow = np.asarray(flow, np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ArgumentError(f"flow: expected H×W×2, got shape {flow.shape}")
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x = xx + flow[..., 0]
    y = yy + flow[..., 1]
    eps = 1e-6
    valid = (x >= -eps) & (x <= w - 1 + eps) & (y >= -eps) & (y <= h - 1 + eps) & np.isfinite(x) & np.isfinite(y)
    x = np.clip(np.nan_to_num(x), 0, w - 1)
    y = np.clip(np.nan_to_num(y), 0, h - 1)
    if mode == "nearest":
        n = (np.floor(y + 0.5).astype(np.int64) * w + np.floor(x + 0.5).astype(np.int64)).reshape(-1)
        index = np.stack([n, n, n, n])
        weights = np.zeros((4, h * w))
        weights[0] = 1.0
        return WarpPlan(index, weights, valid, (h, w))
    x0 = np.minimum(np.floor(x), max(w - 2, 0)).astype(np.int64)
    y0 = np.minimum(np.floor(y), max(h - 2, 0)).astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    index = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1]).reshape(4, -1)
    weights = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]).reshape(4, -1)
    return WarpPlan(index, weights, valid, (h, w))


def apply_plan(img: np.ndarray, plan: WarpPlan) -> np.ndarray:
    """``plan`` applied to an H×W×C (or B×H×W×C) array; keeps the float dtype."""
    a = np.asarray(img)
    batched = a.ndim == 4
    if not batched:
        a = a[None]
    b, h, w, c = a.shape
    if (h, w) != plan.shape:
        raise ArgumentError(f"warp: image is {h}×{w}, the flow {plan.shape[0]}×{plan.shape[1]}")
    flat = a.reshape(b, h * w, c)
    wt = plan.weights.astype(a.dtype if a.dtype.kind == "f" else np.float64)
    out = sum(flat[:, plan.index[k], :] * wt[k][None, :, None] for k in range(4))
    out = out.reshape(b, h, w, c)
    return out if batched else out[0]


def warp(img: np.ndarray, flow: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(warped, valid)``: ``img`` backward-warped by ``flow`` (see the module's conventions)."""
    plan = warp_plan(flow)
    return apply_plan(img, plan), plan.valid


def occlusion_mask(flow_fw: np.ndarray, flow_bw: np.ndarray, *, alpha: float = 0.01,
                   beta: float = 0.5) -> np.ndarray:
    """Non-occluded pixels of frame ``t`` (True), by forward-backward consistency (Sundaram et
    al. 2010, as in Ruder et al. 2016 and Lai et al. 2018): ``p`` is kept when its forward flow
    lands inside frame ``t+1`` and ``|F_fw(p) + F_bw(p + F_fw(p))|² < alpha (|F_fw|² + |F_bw(.)|²)
    + beta``."""
    bw_at, valid = warp(np.asarray(flow_bw, np.float64), flow_fw)
    fw = np.asarray(flow_fw, np.float64)
    err = np.sum((fw + bw_at) ** 2, axis=-1)
    bound = alpha * (np.sum(fw ** 2, axis=-1) + np.sum(bw_at ** 2, axis=-1)) + beta
    return valid & (err < bound)


# =========================================================================== the metric
def warping_error(out_t: np.ndarray, out_next: np.ndarray, flow_fw: np.ndarray,
                  mask: Optional[np.ndarray] = None) -> float:
    """Lai et al.'s warping error of one pair: ``out_next`` warped back to frame ``t`` with the
    (input frames') flow ``F_{t->t+1}``, the mean over non-occluded pixels of the squared RGB
    distance (values in [0, 1]).  ``mask``: the non-occluded pixels (default: those whose flow
    lands inside the frame)."""
    warped, valid = warp(np.asarray(out_next, np.float64), flow_fw)
    m = valid if mask is None else (valid & np.asarray(mask, bool))
    n = int(m.sum())
    if n == 0:
        return float("nan")
    d = np.sum((np.asarray(out_t, np.float64) - warped) ** 2, axis=-1)
    return float(d[m].sum() / n)


def clip_warping_error(frames: Iterable[np.ndarray], flows: Iterable[Tuple[np.ndarray, np.ndarray]]) -> Dict:
    """The warping error of a stylized clip: ``frames`` (H×W×3 in [0, 1], streamed) and, per
    consecutive pair, ``(F_{t->t+1}, F_{t+1->t})`` computed on the *input* frames.  Returns
    ``{"mean": E_warp, "per_pair": [...], "pairs": n}`` (E_warp: the mean over pairs)."""
    per: List[float] = []
    it = iter(frames)
    prev = next(it, None)
    for (fw, bw), cur in zip(flows, it):
        per.append(warping_error(prev, cur, fw, occlusion_mask(fw, bw)))
        prev = cur
    vals = [v for v in per if math.isfinite(v)]
    return {"mean": float(np.mean(vals)) if vals else float("nan"), "per_pair": per, "pairs": len(per)}


def farneback_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``F_{a->b}`` (H×W×2 float64) by Farnebäck's method (OpenCV, ``opencv-python-headless``
    in the ``video`` extra) on the frames' luminance."""
    try:
        import cv2
    except ImportError:
        from .errors import RestyError
        raise RestyError("optical flow on real clips needs OpenCV: pip install 'resty[video]'") from None

    def gray(x):
        x = np.asarray(x, np.float64)
        y = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
        return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)
    f = cv2.calcOpticalFlowFarneback(gray(a), gray(b), None, 0.5, 4, 15, 5, 7, 1.5, 0)
    return f.astype(np.float64)


def flows_farneback(frames: Iterable[np.ndarray]) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``(F_{t->t+1}, F_{t+1->t})`` of consecutive input frames (streamed)."""
    it = iter(frames)
    prev = next(it, None)
    for cur in it:
        yield farneback_flow(prev, cur), farneback_flow(cur, prev)
        prev = cur


# =========================================================================== a clip of known motion
@dataclass(frozen=True)
class CameraPath:
    """A camera panning and zooming over a photo: frame ``t``'s pixel ``p`` (x, y) shows the
    photo's point ``c_t + z_t · (p − centre) · scale`` (photo pixels), with a smooth centre
    ``c_t`` and zoom ``z_t``.  The motion is affine, so the true flow is known exactly."""
    n_frames: int = 60
    size: Tuple[int, int] = (256, 256)      # (H, W) of the frames
    pan: float = 0.18                        # centre travel, as a fraction of the photo's side
    zoom: float = 0.15                       # zoom range (1 ± zoom/2)

    def camera(self, t: float, photo_hw: Tuple[int, int]) -> Tuple[float, float, float]:
        """``(cx, cy, s)``: photo point at the frame's centre, photo pixels per frame pixel."""
        ph, pw = photo_hw
        h, w = self.size
        u = t / max(self.n_frames - 1, 1)
        z = 1.0 + self.zoom * (0.5 - 0.5 * math.cos(math.pi * u)) - self.zoom / 2
        base = 0.55 * min(ph / h, pw / w)      # the frame covers 55% of the photo at zoom 1
        s = base / z
        cx = pw / 2 + self.pan * pw * (u - 0.5)
        cy = ph / 2 + 0.5 * self.pan * ph * math.sin(math.pi * u)
        return cx, cy, s

    def coords(self, t: float, photo_hw) -> Tuple[np.ndarray, np.ndarray]:
        h, w = self.size
        cx, cy, s = self.camera(t, photo_hw)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        return cx + s * (xx - (w - 1) / 2), cy + s * (yy - (h - 1) / 2)

    def flow(self, a: int, b: int, photo_hw) -> np.ndarray:
        """The true ``F_{a->b}``: where each pixel of frame ``a`` is in frame ``b``."""
        h, w = self.size
        xa, ya = self.coords(a, photo_hw)
        cx, cy, s = self.camera(b, photo_hw)
        xb = (xa - cx) / s + (w - 1) / 2
        yb = (ya - cy) / s + (h - 1) / 2
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        return np.stack([xb - xx, yb - yy], axis=-1)


def _sample_photo(photo: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of an H×W×3 photo at float coordinates (clamped)."""
    ph, pw = photo.shape[:2]
    x = np.clip(x, 0, pw - 1)
    y = np.clip(y, 0, ph - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), pw - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), ph - 2)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    p = photo
    return ((1 - fy) * ((1 - fx) * p[y0, x0] + fx * p[y0, x0 + 1])
            + fy * ((1 - fx) * p[y0 + 1, x0] + fx * p[y0 + 1, x0 + 1]))


def synthetic_photo(name: str = "astronaut") -> np.ndarray:
    """A sample photo (scikit-image's data) as H×W×3 float64 in [0, 1]."""
    from skimage import data
    img = getattr(data, name)()
    img = np.asarray(img, np.float64) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3]


class SyntheticClip:
    """A photo filmed by :class:`CameraPath`: ``frames()`` streams H×W×3 float32 frames and
    ``flows()`` the true ``(F_{t->t+1}, F_{t+1->t})`` of each consecutive pair."""

    def __init__(self, photo: str = "astronaut", n_frames: int = 60, size: int | Tuple[int, int] = 256,
                 pan: float = 0.18, zoom: float = 0.15):
        hw = (size, size) if isinstance(size, int) else tuple(size)
        self.photo_name = photo
        self.path = CameraPath(n_frames, hw, pan, zoom)
        # About one photo pixel per frame pixel (resized with Lanczos): a coarser sampling of a
        # larger photo would alias, and the input clip itself would shimmer.
        img = synthetic_photo(photo)
        k = (1.0 / 0.55) * max(hw[0] / img.shape[0], hw[1] / img.shape[1])
        from .images import resize_to
        self.photo = np.asarray(resize_to(img.astype(np.float32), (round(img.shape[0] * k), round(img.shape[1] * k))),
                                np.float64)

    @property
    def n_frames(self) -> int:
        return self.path.n_frames

    def frame(self, t: int) -> np.ndarray:
        x, y = self.path.coords(t, self.photo.shape[:2])
        return _sample_photo(self.photo, x, y).astype(np.float32)

    def frames(self) -> Iterator[np.ndarray]:
        for t in range(self.n_frames):
            yield self.frame(t)

    def flows(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        hw = self.photo.shape[:2]
        for t in range(self.n_frames - 1):
            yield self.path.flow(t, t + 1, hw), self.path.flow(t + 1, t, hw)


def synthetic_clip(photo: str = "astronaut", n_frames: int = 60, size=256, **kw) -> SyntheticClip:
    return SyntheticClip(photo, n_frames, size, **kw)


# =========================================================================== the temporal loss's warp
def _gauss_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur of an H×W(×C) array (reflected borders), float64."""
    a = np.asarray(a, np.float64)
    k = _gauss_kernel(sigma)
    r = len(k) // 2
    for axis in (0, 1):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (r, r)
        p = np.pad(a, pad, mode="reflect" if a.shape[axis] > r else "edge")
        n = a.shape[axis]
        a = sum(k[j] * np.take(p, np.arange(j, j + n), axis=axis) for j in range(len(k)))
    return a


def random_smooth_flow(rng: np.random.Generator, h: int, w: int, *, magnitude: float = 4.0,
                       sigma: Optional[float] = None) -> np.ndarray:
    """A random smooth flow (ReReVST): Gaussian-smoothed random displacements, scaled so the
    largest is ``magnitude`` px, plus a random global shift of up to ``magnitude``/2 px."""
    sigma = float(sigma if sigma is not None else max(h, w) / 8)
    f = gaussian_smooth(rng.standard_normal((h, w, 2)), sigma)
    peak = float(np.abs(f).max())
    if peak > 0:
        f *= magnitude / peak
    f += rng.uniform(-magnitude / 2, magnitude / 2, size=2)
    return f


#: The temporal loss's warp (``warp_plan`` mode).  ``"nearest"``, as ReReVST's training code
#: (``warp`` in train/loss_networks.py: ``grid_sample(..., mode='nearest')`` on both the input and
#: the stylized frame).  A bilinear warp of the stylized frame ``W(S(x))`` is a low-pass of its
#: texture (a half-pixel shift averages neighbours), so matching it teaches the network to blur its
#: strokes: measured in docs/VIDEO.md.  ``"bilinear"`` is kept for that ablation only.
TRAINING_WARP = "nearest"


def temporal_pair(seed: int, step: int, h: int, w: int, batch: int, *, magnitude: float = 4.0,
                  noise_std: float = 0.01, mode: Optional[str] = None) -> Tuple[List[WarpPlan], np.ndarray]:
    """The ReReVST perturbation of one training batch, a pure function of ``(seed, step)``: a
    :class:`WarpPlan` per batch item (``mode``: default :data:`TRAINING_WARP`) and the additive
    noise (B×H×W×3 float32).  The loss is ``mean ‖S(W(x) + n) − W(S(x))‖²`` over valid pixels."""
    rng = np.random.default_rng([int(seed), int(step), 0x7E4D])
    mode = TRAINING_WARP if mode is None else mode
    plans = [warp_plan(random_smooth_flow(rng, h, w, magnitude=magnitude), mode) for _ in range(batch)]
    noise = (rng.standard_normal((batch, h, w, 3)) * noise_std).astype(np.float32)
    return plans, noise


def plan_arrays(plans: Sequence[WarpPlan]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch of plans as arrays a backend takes: ``index`` (B, 4, H·W) int64, ``weights``
    (B, 4, H·W) float64, ``valid`` (B, H·W) float64 (1 inside, 0 where the sample left the image)."""
    return (np.stack([p.index for p in plans]), np.stack([p.weights for p in plans]),
            np.stack([p.valid.reshape(-1).astype(np.float64) for p in plans]))


def temporal_loss(forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, plans: Sequence[WarpPlan],
                  noise: np.ndarray) -> float:
    """The ReReVST temporal term, defined once (NumPy, float64 for the oracle):
    ``Σ valid·(S(W(x) + n) − W(S(x)))² / (3 Σ valid)`` over the batch, ``S`` = ``forward``
    (B×H×W×3 -> B×H×W×3), ``W`` the batch item's warp, ``n`` the noise.  Both backends compute
    the same expression on their tensors (resty_torch.temporal / resty_tf.temporal)."""
    x = np.asarray(x, np.float64)
    wx = np.stack([apply_plan(x[b], p) for b, p in enumerate(plans)]) + np.asarray(noise, np.float64)
    s_wx = np.asarray(forward(wx), np.float64)
    sx = np.asarray(forward(x), np.float64)
    w_sx = np.stack([apply_plan(sx[b], p) for b, p in enumerate(plans)])
    valid = np.stack([p.valid for p in plans]).astype(np.float64)[..., None]
    return float(np.sum(valid * (s_wx - w_sx) ** 2) / (3.0 * max(valid.sum(), 1.0)))


def training_perturbation(training, seed: int, step: int, batch: int, h: int, w: int):
    """The temporal loss's perturbation of training step ``step`` (the driver's step number, the
    same in both backends) under ``training`` (a TrainConfig: ``temporal_flow`` px,
    ``temporal_noise``); None when its ``temporal_weight`` is 0."""
    if not getattr(training, "temporal_weight", 0.0):
        return None
    return temporal_pair(seed, step, h, w, batch, magnitude=training.temporal_flow, noise_std=training.temporal_noise)
