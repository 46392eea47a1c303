"""The float64 oracle of resty.temporal, written for clarity, not speed (pixel by pixel):
the bilinear backward warp (the warping-error metric's), the nearest-pixel backward warp (the
temporal loss's) and the forward-backward occlusion check.  The vectorised core
(resty.temporal) and both backends' warp of the temporal loss are checked against it."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["warp_bilinear", "warp_nearest", "occlusion"]


def _source_point(flow, y, x, h, w):
    """Where pixel (y, x) samples from, clamped to the image, and whether it lies inside."""
    sx = x + flow[y, x, 0]
    sy = y + flow[y, x, 1]
    inside = -1e-6 <= sx <= w - 1 + 1e-6 and -1e-6 <= sy <= h - 1 + 1e-6
    return min(max(sx, 0.0), w - 1.0), min(max(sy, 0.0), h - 1.0), inside


def _warp(img, flow, sample):
    """``(out, valid)``: ``out[y, x] = sample(img, sx, sy)`` at the clamped source point of each pixel."""
    img = np.asarray(img, np.float64)
    flow = np.asarray(flow, np.float64)
    h, w = img.shape[:2]
    out = np.zeros_like(img)
    valid = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            sx, sy, valid[y, x] = _source_point(flow, y, x, h, w)
            out[y, x] = sample(img, sx, sy)
    return out, valid


def _bilinear(img, sx, sy):
    h, w = img.shape[:2]
    x0, y0 = int(math.floor(sx)), int(math.floor(sy))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    ax, ay = sx - x0, sy - y0
    return ((1 - ay) * ((1 - ax) * img[y0, x0] + ax * img[y0, x1])
            + ay * ((1 - ax) * img[y1, x0] + ax * img[y1, x1]))


def warp_bilinear(img, flow):
    """``(out, valid)``: ``out[y, x] = img(y + flow[y, x, 1], x + flow[y, x, 0])``, bilinear;
    a sample outside the image takes the nearest border point and is not valid."""
    return _warp(img, flow, _bilinear)


def warp_nearest(img, flow):
    """``(out, valid)``: ``out[y, x] = img`` at the pixel nearest to ``(y + flow[y, x, 1],
    x + flow[y, x, 0])`` (halves round up), the temporal loss's warp (ReReVST's
    ``grid_sample(mode='nearest')``); a sample outside the image takes the nearest border pixel
    and is not valid."""
    return _warp(img, flow, lambda im, sx, sy: im[int(math.floor(sy + 0.5)), int(math.floor(sx + 0.5))])


def occlusion(flow_fw, flow_bw, alpha=0.01, beta=0.5):
    """Non-occluded pixels: the forward flow lands inside, and going there and back nearly
    returns (``|fw + bw(p + fw)|² < alpha (|fw|² + |bw(p + fw)|²) + beta``)."""
    fw = np.asarray(flow_fw, np.float64)
    bw_at, valid = warp_bilinear(flow_bw, fw)
    h, w = fw.shape[:2]
    keep = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            a, b = fw[y, x], bw_at[y, x]
            keep[y, x] = valid[y, x] and float(np.sum((a + b) ** 2)) < alpha * float(a @ a + b @ b) + beta
    return keep
