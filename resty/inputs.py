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
    if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise RestyError(f"style_weights: got {w}; need finite numbers >= 0 with a positive sum")
    s = sum(w)
    return tuple(x / s for x in w)



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
