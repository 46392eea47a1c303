"""Exact rewrites of convolutions, as weight transforms (NumPy, float64): the same sums in a
shape the hardware runs faster.  Used by resty.onnx_runtime's graph and by resty_torch's
``TransformerNet.configure(io_convs="s2d")``; each is checked against a direct convolution in
tests/test_onnx_runtime.py and the networks built from them against the plain ones.

Channel orders: DCR (``phase * C + c``, ONNX DepthToSpace/SpaceToDepth's default) is what these
functions return; torch's pixel_shuffle/pixel_unshuffle (and ONNX's CRD mode) use
``c * 4 + phase``: :func:`dcr_to_crd` / :func:`dcr_to_crd_inputs` convert.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .errors import RestyError

__all__ = ["subpixel_weights", "space_to_depth_weights", "transposed_subpixel_weights", "dcr_to_crd",
           "dcr_to_crd_inputs"]

# 3x3 conv after nearest x2 upsampling, as a 2x2 conv on the (edge-padded) low-resolution map.
# Output slot 0 of position r is upsampled row 2r-1 (it reads low rows r-1, r-1, r: taps {0,1},{2});
# slot 1 is upsampled row 2r (low rows r-1, r, r: taps {0},{1,2}).  DepthToSpace then puts slot s of
# position r at row 2r+s, i.e. upsampled row 2r+s-1: a uniform shift of one row, cropped away.
_SUBPIXEL_TAPS = (((0, 1), (2,)), ((0,), (1, 2)))


def subpixel_weights(w: np.ndarray) -> np.ndarray:
    """(O, I, 3, 3) kernel of a conv that follows nearest x2 upsampling -> (4*O, I, 2, 2) kernel of
    the equivalent conv on the edge-padded low-resolution map (output groups in DepthToSpace DCR
    order, see ``_SUBPIXEL_TAPS``).  Sums are taken in float64."""
    w = np.asarray(w, np.float64)
    o, i, kh, kw = w.shape
    if (kh, kw) != (3, 3):
        raise RestyError(f"sub-pixel rewrite needs a 3x3 kernel, got {kh}x{kw}")
    out = np.zeros((2, 2, o, i, 2, 2))
    for sy in range(2):
        for ty in range(2):
            for sx in range(2):
                for tx in range(2):
                    out[sy, sx, :, :, ty, tx] = sum(w[:, :, ky, kx] for ky in _SUBPIXEL_TAPS[sy][ty]
                                                    for kx in _SUBPIXEL_TAPS[sx][tx])
    return out.reshape(4 * o, i, 2, 2)


def space_to_depth_weights(w: np.ndarray, block: int = 2) -> np.ndarray:
    """(O, I, k, k) stride-1 kernel -> (b²O, b²I, K, K) kernel, K = ceil((k + b - 1) / b), of the
    same conv computed on SpaceToDepth(b) of its (padded) input, output in DepthToSpace DCR order.
    Output phase (a, c) at block (u, v) reads input phase (p, q) of block (u + m, v + n) with the
    original tap (b m + p - a, b n + q - c); taps outside the k x k window are zero."""
    w = np.asarray(w, np.float64)
    o, i, k, k2 = w.shape
    b = int(block)
    kk = -(-(k + b - 1) // b)
    out = np.zeros((b, b, o, b, b, i, kk, kk))
    for a in range(b):
        for c in range(b):
            for p in range(b):
                for q in range(b):
                    for m in range(kk):
                        dy = b * m + p - a
                        if not 0 <= dy < k:
                            continue
                        for n in range(kk):
                            dx = b * n + q - c
                            if 0 <= dx < k2:
                                out[a, c, :, p, q, :, m, n] = w[:, :, dy, dx]
    return out.reshape(b * b * o, b * b * i, kk, kk)


def transposed_subpixel_weights(w: np.ndarray, crop_top: int) -> Tuple[np.ndarray, int, int]:
    """A stride-2 transposed conv (IOHW kernel ``w``, k x k), its full output cropped by
    ``crop_top`` rows/cols at the top/left and cropped to 2H, as a conv over the input.

    Output row Y = 2r + py is full row F = Y + crop_top = 2*yi + p: input row yi = r + d with
    d = (py + crop_top - p) / 2 for the taps p of matching parity.  Returns (W, lo, hi): W in
    OIHW with output channels ordered (phase, o) with phase = 2*py + px (DCR, as DepthToSpace),
    its taps over input offsets d = -lo .. hi, to be run with zero pads lo (top/left) and hi
    (bottom/right) so that the output keeps the input's size."""
    i, o, kh, kw = w.shape
    if kh != kw:
        raise RestyError("transposed_subpixel_weights: square kernels only")
    k = kh
    offs = sorted({(py + crop_top - p) // 2 for py in (0, 1) for p in range(k) if (py + crop_top - p) % 2 == 0})
    lo, hi = -offs[0], offs[-1]
    n = hi + lo + 1
    out = np.zeros((4, o, i, n, n))
    for py in (0, 1):
        for px in (0, 1):
            for p in range(k):
                if (py + crop_top - p) % 2:
                    continue
                dy = (py + crop_top - p) // 2 + lo
                for q in range(k):
                    if (px + crop_top - q) % 2:
                        continue
                    dx = (px + crop_top - q) // 2 + lo
                    out[2 * py + px, :, :, dy, dx] += w[:, :, p, q].T
    return out.reshape(4 * o, i, n, n), lo, hi


def _phase_stride_weights(w: np.ndarray) -> np.ndarray:
    """(O, I, k, k) stride-1 kernel -> (4*O, I, k+1, k+1) stride-2 kernel computing output phase
    (a, c) (DCR order) at every second pixel: the same taps shifted by (a, c)."""
    w = np.asarray(w, np.float64)
    o, i, k, _ = w.shape
    out = np.zeros((2, 2, o, i, k + 1, k + 1))
    for a in range(2):
        for c in range(2):
            out[a, c, :, :, a:a + k, c:c + k] = w
    return out.reshape(4 * o, i, k + 1, k + 1)


def _dcr_to_crd(w: np.ndarray, blocks: int) -> np.ndarray:
    """Reorder output channels from DCR (phase*O + o) to CRD (o*blocks + phase)."""
    n = w.shape[0] // blocks
    return w.reshape(blocks, n, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)


def dcr_to_crd(w: np.ndarray, blocks: int = 4) -> np.ndarray:
    """Output channels from DCR (phase*O + o) to CRD (o*blocks + phase)."""
    return _dcr_to_crd(w, blocks)


def dcr_to_crd_inputs(w: np.ndarray, blocks: int = 4) -> np.ndarray:
    """Input channels from DCR (phase*I + i) to CRD (i*blocks + phase)."""
    o, n = w.shape[0], w.shape[1] // blocks
    return w.reshape(o, blocks, n, *w.shape[2:]).swapaxes(1, 2).reshape(w.shape)
