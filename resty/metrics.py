"""How much of the photo a stylized image keeps, in NumPy (no framework).

:func:`edge_correlation`: the Pearson correlation of the Sobel gradient magnitudes of two images'
luminance.  A stylized image whose edges follow the photo's scores well above 0.35; a texture
pasted over the photo, or a network that has not learnt to keep the content yet, scores near 0.
``resty demo`` shows only images that reach :data:`EDGE_THRESHOLD` and prints the value in its
timing table; ``resty sheet`` records it per style.

The definitions are scikit-image's, written out so the core needs neither SciPy nor skimage at
run time: luminance ``0.2125 R + 0.7154 G + 0.0721 B`` (``skimage.color.rgb2gray``), and the
Sobel magnitude ``sqrt((gx² + gy²) / 2)`` with the kernels ``[1, 0, -1] ⊗ [1, 2, 1] / 4`` and
half-sample reflection at the border (``skimage.filters.sobel``, ``mode='reflect'``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ArgumentError

__all__ = ["luminance", "sobel_magnitude", "edge_correlation", "EDGE_THRESHOLD"]

#: ``resty demo`` writes only stylized images whose edge correlation with the photo reaches this.
EDGE_THRESHOLD = 0.35

_LUMA = np.array([0.2125, 0.7154, 0.0721])


def _as_array(img: Any, name: str) -> np.ndarray:
    if isinstance(img, np.ndarray):
        a = img
        if a.dtype == np.uint8:
            a = a.astype(np.float64) / 255.0
    else:   # a path or a PIL image: decoded the one way Resty decodes
        from .images import load_image
        a = load_image(img, name=name)
    a = np.asarray(a, np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ArgumentError(f"{name}: expected an H×W or H×W×3 image, got shape {a.shape}")
    return a


def luminance(img: Any) -> np.ndarray:
    """H×W float64 luminance of an RGB image (an H×W image is returned as float64)."""
    a = _as_array(img, "image")
    return a if a.ndim == 2 else a[..., :3] @ _LUMA


def sobel_magnitude(gray: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of an H×W image (skimage.filters.sobel's values)."""
    g = np.asarray(gray, np.float64)
    if g.ndim != 2:
        raise ArgumentError(f"sobel_magnitude: expected an H×W image, got shape {g.shape}")
    p = np.pad(g, 1, mode="symmetric")      # scipy.ndimage's 'reflect': d c b a | a b c d | d c ...
    # Smooth [1, 2, 1] / 4 along one axis, difference [1, 0, -1] along the other (convolution:
    # the kernel flipped, so the difference is next minus previous).
    sm_cols = (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4          # smoothed along x
    sm_rows = (p[:-2, :] + 2 * p[1:-1, :] + p[2:, :]) / 4          # smoothed along y
    gy = sm_cols[2:, :] - sm_cols[:-2, :]
    gx = sm_rows[:, 2:] - sm_rows[:, :-2]
    return np.sqrt((gx * gx + gy * gy) / 2)


def edge_correlation(a: Any, b: Any) -> float:
    """Pearson correlation of the Sobel gradient magnitudes of ``a``'s and ``b``'s luminance.

    ``a`` and ``b``: images of the same height and width (arrays: float in [0, 1] or uint8; or
    a path or PIL image).  1 for the same image (or one brightened/contrast-scaled), about 0
    for independent noise.  An image without any edge (flat) correlates with nothing: 0.0.
    Symmetric in ``a`` and ``b``."""
    la, lb = luminance(a), luminance(b)
    if la.shape != lb.shape:
        raise ArgumentError(f"edge_correlation: the images differ in size ({la.shape[1]}×{la.shape[0]} and "
                            f"{lb.shape[1]}×{lb.shape[0]}); resize one first")
    ea, eb = sobel_magnitude(la).ravel(), sobel_magnitude(lb).ravel()
    ea, eb = ea - ea.mean(), eb - eb.mean()
    den = np.sqrt((ea @ ea) * (eb @ eb))
    if not np.isfinite(den) or den <= 1e-24:
        return 0.0
    return float(np.clip((ea @ eb) / den, -1.0, 1.0))
