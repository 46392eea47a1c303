"""Kernel layout conversions between the canonical (torch) layouts and Keras's.

The canonical format stores convolution kernels as (out, in, kh, kw) and transposed-convolution
kernels as (in, out, kh, kw); Keras uses (kh, kw, in, out) and (kh, kw, out, in).  These
conversions live here and nowhere else.
"""
from __future__ import annotations

import numpy as np

__all__ = ["to_keras_kernel", "from_keras_kernel", "iohw_to_keras_transposed", "keras_transposed_to_iohw"]


def _check_4d(w, what: str) -> np.ndarray:
    a = np.asarray(w)
    if a.ndim != 4:
        raise ValueError(f"{what}: expected a 4-D kernel, got shape {a.shape}")
    return a


def to_keras_kernel(w_oihw) -> np.ndarray:
    """Conv kernel, torch/canonical (out, in, kh, kw) -> Keras (kh, kw, in, out)."""
    return np.ascontiguousarray(_check_4d(w_oihw, "to_keras_kernel").transpose(2, 3, 1, 0))


def from_keras_kernel(w_hwio) -> np.ndarray:
    """Conv kernel, Keras (kh, kw, in, out) -> torch/canonical (out, in, kh, kw)."""
    return np.ascontiguousarray(_check_4d(w_hwio, "from_keras_kernel").transpose(3, 2, 0, 1))


def iohw_to_keras_transposed(w_iohw) -> np.ndarray:
    """Transposed-conv kernel, torch/canonical (in, out, kh, kw) -> Keras Conv2DTranspose
    (kh, kw, out, in).  (The same axis permutation as for convs: both frameworks swap in/out.)"""
    return np.ascontiguousarray(_check_4d(w_iohw, "iohw_to_keras_transposed").transpose(2, 3, 1, 0))


def keras_transposed_to_iohw(w_hwoi) -> np.ndarray:
    """Transposed-conv kernel, Keras Conv2DTranspose (kh, kw, out, in) -> canonical (in, out, kh, kw)."""
    return np.ascontiguousarray(_check_4d(w_hwoi, "keras_transposed_to_iohw").transpose(3, 2, 0, 1))
