"""Gatys et al. 2015, the part both backends share: the run plan (output size, coarse-to-fine
scales, the iteration schedule, the initial image, style resizing)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import RestyError
from .images import resize_longest, resize_to

from .inputs import ImageLike, load_rgb

def output_size(content_hw: Tuple[int, int], image_size: Optional[int]) -> Tuple[int, int]:
    """(H, W) of the result: the content's size, or longest side ``image_size`` keeping the
    aspect ratio (the same integer rounding as resty.images.resize_longest)."""
    h, w = int(content_hw[0]), int(content_hw[1])
    if image_size is None:
        return h, w
    longest = max(h, w)
    return _scale_round(h, image_size, longest), _scale_round(w, image_size, longest)


def _scale_round(n: int, num: int, den: int) -> int:
    # Same exact-integer rounding as resty.images (halves up), so sizes never depend on floats.
    return max(1, (2 * n * num + den) // (2 * den))


def prepare_content(content: ImageLike, image_size: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """``(original, resized)``: the content decoded, and resized so its longest side is
    ``image_size`` (unchanged when None or already that size)."""
    original = load_rgb(content, name=None)
    hw = output_size(original.shape[:2], image_size)
    resized = original if hw == original.shape[:2] else resize_to(original, hw)
    return original, resized


def style_size_for(target_hw: Tuple[int, int], style_scale: float) -> int:
    """Longest side of the style image(s) used against an output of size ``target_hw``:
    ``style_scale ×`` the output's longest side (Gatys/jcjohnson's ``style_scale``)."""
    return max(1, int(round(style_scale * max(target_hw))))



def resize_style(style: np.ndarray, target_hw: Tuple[int, int], style_scale: float) -> np.ndarray:
    """The style image at the size used against an output of ``target_hw``."""
    return resize_longest(style, style_size_for(target_hw, style_scale))



# =========================================================================== Gatys
def init_image(mode: str, content: np.ndarray, style: Optional[np.ndarray], seed: int,
               noise_std: float) -> np.ndarray:
    """The starting image of a Gatys run, H×W×3 float32 in [0, 1] at the content's size.

    * ``content``: a copy of the content;
    * ``noise``: ``clip(0.5 + noise_std · N(0, 1), 0, 1)`` drawn with
      ``np.random.default_rng(seed).standard_normal((H, W, 3))`` (float64, then float32), so
      both backends start from the same pixels;
    * ``style``: the (first) style image resized to exactly H×W.
    """
    h, w = content.shape[:2]
    if mode == "content":
        return np.array(content, dtype=np.float32, copy=True)
    if mode == "noise":
        rng = np.random.default_rng(seed)
        x = 0.5 + float(noise_std) * rng.standard_normal((h, w, 3))
        return np.clip(x, 0.0, 1.0).astype(np.float32)
    if mode == "style":
        if style is None:
            raise RestyError("init='style' needs a style image")
        return resize_to(style, (h, w))
    raise RestyError(f"init: got {mode!r}; allowed: 'content', 'noise', 'style'")


def split_iterations(total: int, n: int) -> List[int]:
    """Split ``total`` evaluations over ``n`` scales: equal shares, the remainder going to the
    finest scales (they matter most for the result)."""
    base, rem = divmod(int(total), n)
    return [base + (1 if i >= n - rem else 0) for i in range(n)]


def scale_plan(output_hw: Tuple[int, int], scales: Sequence[float], iterations: int) -> List[Tuple[Tuple[int, int], int]]:
    """Coarse-to-fine schedule: ``[((H_s, W_s), iterations_s), ...]`` ending at ``output_hw``.

    Scale ``s`` has longest side ``round(s · longest)`` (exact integer rounding, aspect kept;
    at least 16 px so VGG's deeper layers keep a pixel).  The result of one scale, resized with
    ``resty.images.resize_to``, initialises the next."""
    h, w = output_hw
    longest = max(h, w)
    its = split_iterations(iterations, len(scales))
    plan = []
    for s, n in zip(scales, its):
        if s >= 1.0:
            hw = (h, w)
        else:
            side = max(16, min(longest, int(round(s * longest))))
            hw = (_scale_round(h, side, longest), _scale_round(w, side, longest))
        plan.append((hw, n))
    return plan
