"""Arguments as both backends take them: an image (a path, a PIL image or an array) as
H×W×3 float32 RGB in [0, 1], one style or several with their blend weights, and the weighted
blend of per-style Gram matrices (resty.images conventions)."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ArgumentError, ImageError, RestyError
from .images import load_image

ImageLike = Any  # a path, a PIL image, or an array (see resty.images.load_image)


def load_rgb(src: ImageLike, name: Optional[str] = None, dtype=np.float32) -> np.ndarray:
    """Any accepted image form -> float32 H×W×3 RGB in [0, 1] (always through load_image, so
    both backends decode identically); ``dtype=np.float64`` for a float64 run (converted once,
    a float64 array kept as it is)."""
    return load_image(src, name=name, dtype=dtype)


def is_single_image(x: Any) -> bool:
    """True for one image (path, PIL image, H×W[×C] array); False for a list/tuple or a 4-D
    batch array.  Used to decide whether ``stylize`` returns one array or a list."""
    if isinstance(x, (list, tuple)):
        return False
    if isinstance(x, np.ndarray) and x.ndim == 4:
        return False
    return True


def as_image_list(images: Any) -> Tuple[List[np.ndarray], bool]:
    """Normalise one image or a batch to ``([H×W×3 float32], single)``."""
    single = is_single_image(images)
    items = [images] if single else list(images)
    if not items:
        raise ImageError("<input>: no images given")
    return [load_rgb(x) for x in items], single


def blend_weights(weights: Optional[Sequence[float]], n: int) -> Tuple[float, ...]:
    """Blend weights of ``n`` style images, normalised to sum 1 (None: equal weights).

    The style target Gram of a layer is ``Σ_i w_i G_i``; normalising keeps β meaning the same
    whatever the number of styles."""
    if weights is None:
        return tuple(1.0 / n for _ in range(n))
    w = [float(x) for x in (weights if isinstance(weights, (list, tuple, np.ndarray)) else [weights])]
    if len(w) != n:
        raise RestyError(f"style_weights: got {len(w)} weight(s) for {n} style image(s)")
    # math.fsum of weights near the float maximum overflows to inf (and every ratio to 0):
    # scale by the largest first.
    top = max(w) if w else 0.0
    if any(not math.isfinite(x) or x < 0 for x in w) or top <= 0:
        raise RestyError(f"style_weights: got {w}; need finite numbers >= 0 with a positive sum")
    scaled = [x / top for x in w]
    total = math.fsum(scaled)
    return tuple(x / total for x in scaled)



def prepare_styles(style: Union[ImageLike, Sequence[ImageLike]],
                   style_weights: Optional[Sequence[float]] = None,
                   dtype=np.float32) -> Tuple[List[np.ndarray], Tuple[float, ...]]:
    """One style or a list -> ``([decoded styles], normalised blend weights)``.  Resizing to
    the working size happens per scale with :func:`resize_style`."""
    items = list(style) if isinstance(style, (list, tuple)) else [style]
    if not items:
        raise ImageError("<style>: no style image given")
    styles = [load_rgb(s, dtype=dtype) for s in items]
    return styles, blend_weights(style_weights, len(styles))


def blend_grams(styles: Sequence[Any], weights: Sequence[float],
                grams_of: Callable[[Any], Mapping[str, Any]]) -> Dict[str, Any]:
    """``Σ_i w_i · G_i``: the style target of several styles, layer by layer.  ``grams_of(style)``
    returns one style's Gram matrices by layer name, as framework tensors; they are only
    scaled and added here, so the blend is the same arithmetic in every backend."""
    out: Dict[str, Any] = {}
    for style, w in zip(styles, weights):
        for name, g in grams_of(style).items():
            out[name] = g * w if name not in out else out[name] + g * w
    return out


def integer_arg(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int, or a one-line ArgumentError naming the argument (a bool, a float
    with a fraction, text or a number below ``minimum`` is refused)."""
    try:
        ok = float(value) == int(value)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or isinstance(value, bool) or int(value) < minimum:
        raise ArgumentError(f"{name}: got {value!r}; need an integer >= {minimum}")
    return int(value)


def style_vector(style: Any, num_styles: int) -> np.ndarray:
    """The style weights of a conditional-norm network (``FastStylizer.stylize(style=...)``):
    an index (``19``), a mapping ``{3: 0.5, 12: 0.5}``, a string ``"19"`` / ``"3:0.5,12:0.5"``
    or a sequence of ``num_styles`` weights -> a float64 vector of ``num_styles`` weights,
    non-negative, normalised to sum 1 (as the blends of ``style_weights`` elsewhere)."""
    w = np.zeros(num_styles, np.float64)

    def put(idx, weight, text=None):
        try:
            i, v = int(idx), float(weight)
        except (TypeError, ValueError):
            raise ArgumentError(f"style: bad entry {text if text is not None else idx!r}; "
                                "use an index, e.g. 19, or index:weight pairs, e.g. 3:0.5,12:0.5") from None
        if isinstance(idx, (bool, float)) or not 0 <= i < num_styles:
            raise ArgumentError(f"style: index {idx!r} out of range; this network has styles 0 to {num_styles - 1}")
        w[i] += v

    if isinstance(style, str):
        parts = [p.strip() for p in style.split(",") if p.strip()]
        if not parts:
            raise ArgumentError("style: empty; use an index, e.g. 19, or index:weight pairs, e.g. 3:0.5,12:0.5")
        for part in parts:
            idx, sep, wt = part.partition(":")
            put(idx.strip(), wt.strip() if sep else 1.0, part)
    elif isinstance(style, Mapping):
        for idx, wt in style.items():
            put(idx, wt)
    elif isinstance(style, (int, np.integer)) and not isinstance(style, bool):
        put(int(style), 1.0)
    else:
        try:
            arr = np.asarray(style, np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != (num_styles,):
            raise ArgumentError(f"style: expected an index, a mapping, 'i:w,...' or {num_styles} weights, "
                                f"got {style!r:.60}")
        w = arr.copy()
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ArgumentError("style: weights must be finite, non-negative and not all zero")
    return w / w.sum()
