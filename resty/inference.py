"""The stylize loop both backends' feed-forward networks share: one image or many, batches of
equal sizes, large images in overlapping tiles blended with linear ramps, colour preservation."""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from .errors import RestyError
from .inputs import as_image_list

# =========================================================================== tiling
def _starts(n: int, tile: int, overlap: int) -> List[int]:
    if n <= tile:
        return [0]
    stride = tile - overlap
    count = int(math.ceil((n - tile) / stride)) + 1
    # Spread the tiles evenly so the last one ends exactly at the border (no tiny last tile).
    return [int(round(i * (n - tile) / (count - 1))) for i in range(count)]


def tile_plan(h: int, w: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """Tiles ``(y0, y1, x0, x1)`` of side ``tile`` (smaller only when the image is) covering
    H×W, neighbours overlapping by at least ``overlap`` pixels."""
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise RestyError(f"tiling: need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    return [(y, min(y + tile, h), x, min(x + tile, w))
            for y in _starts(h, tile, overlap) for x in _starts(w, tile, overlap)]


def _ramp(n: int, lo_inner: bool, hi_inner: bool, overlap: int) -> np.ndarray:
    r = np.ones(n, dtype=np.float64)
    if overlap > 0:
        ramp = (np.arange(min(overlap, n)) + 1.0) / (overlap + 1.0)
        if lo_inner:
            r[:len(ramp)] = np.minimum(r[:len(ramp)], ramp)
        if hi_inner:
            r[n - len(ramp):] = np.minimum(r[n - len(ramp):], ramp[::-1])
    return r


def tile_window(box: Tuple[int, int, int, int], h: int, w: int, overlap: int) -> np.ndarray:
    """Blend weights (th, tw) of one tile: a linear ramp over ``overlap`` px on sides that
    touch another tile, 1 elsewhere (so image borders keep full weight)."""
    y0, y1, x0, x1 = box
    wy = _ramp(y1 - y0, y0 > 0, y1 < h, overlap)
    wx = _ramp(x1 - x0, x0 > 0, x1 < w, overlap)
    return np.outer(wy, wx)


def tiled_apply(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], tile: int,
                overlap: int = 32) -> np.ndarray:
    """Apply ``fn`` (H×W×3 -> H×W×3, same size) tile by tile and blend the overlaps with linear
    ramps, so an image too large for memory is processed in pieces without visible seams.
    Returns float32 H×W×3."""
    h, w = image.shape[:2]
    acc = np.zeros((h, w, image.shape[2]), dtype=np.float64)
    wsum = np.zeros((h, w, 1), dtype=np.float64)
    for box in tile_plan(h, w, tile, overlap):
        y0, y1, x0, x1 = box
        out = np.asarray(fn(np.ascontiguousarray(image[y0:y1, x0:x1])), dtype=np.float64)
        if out.shape[:2] != (y1 - y0, x1 - x0):
            raise RestyError(f"tiling: tile function returned shape {out.shape}, expected {(y1 - y0, x1 - x0)}")
        win = tile_window(box, h, w, overlap)[:, :, None]
        acc[y0:y1, x0:x1] += out * win
        wsum[y0:y1, x0:x1] += win
    return (acc / wsum).astype(np.float32)


# =========================================================================== fast stylization
def stylize_images(images: Any, run_batch: Callable[[np.ndarray], np.ndarray], *, preserve_color: bool = False,
                   tile: Optional[int] = None, overlap: int = 32, batch_size: Optional[int] = None):
    """The one definition of ``FastStylizer.stylize`` around a backend's forward pass.

    ``run_batch`` maps a B×H×W×3 float32 batch to B×H×W×3 in [0, 1].  One image in gives one
    H×W×3 float32 array out; a list gives a list; a B×H×W×3 array gives an array.  Consecutive
    same-size images are grouped into batches of up to ``batch_size``; ``tile`` (px) runs each
    image in overlapping tiles blended with linear ramps (instance norm then sees per-tile
    statistics; a larger ``overlap`` hides the seams better); ``preserve_color`` keeps each
    input's colours (luminance transfer)."""
    from .images import preserve_color as _preserve

    arrays, single = as_image_list(images)
    bs = max(1, int(batch_size or 1))
    outs: List[Optional[np.ndarray]] = [None] * len(arrays)
    if tile:
        for k, a in enumerate(arrays):
            outs[k] = tiled_apply(a, lambda t: run_batch(t[None])[0], int(tile), int(overlap))
    else:
        k = 0
        while k < len(arrays):
            j = k + 1   # group consecutive same-size images into one batch
            while j < len(arrays) and j - k < bs and arrays[j].shape == arrays[k].shape:
                j += 1
            res = run_batch(np.stack(arrays[k:j]))
            for m in range(k, j):
                outs[m] = res[m - k]
            k = j
    if preserve_color:
        outs = [_preserve(o, a) for o, a in zip(outs, arrays)]
    outs = [np.ascontiguousarray(o, dtype=np.float32) for o in outs]
    if single:
        return outs[0]
    if isinstance(images, np.ndarray):
        return np.stack(outs)
    return outs
