"""Training data as a pure function of the seed: the items of a folder, the batch order
(:class:`BatchSchedule`, a function of ``(seed, epoch)``) and every crop (a function of
``(seed, step, slot)``), so both backends, any number of loader workers or processes, and a
resumed run see exactly the same batches."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from .errors import ImageError, RestyError
from .images import load_image, resize_short_then_crop

#: Extensions listed as training images when a folder is given (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")

ImageLike = Any  # a path, a PIL image, or an array (see resty.images.load_image)


# =========================================================================== training data
def list_training_images(source: Any) -> List[Any]:
    """Training items from a folder (recursively, files with :data:`IMAGE_EXTENSIONS`, sorted
    by relative path so the order is the same on every machine), a list of paths, or an
    iterable of arrays / PIL images (materialised into a list).  Items are returned as given
    (paths as ``str``); decoding happens lazily in :func:`load_training_item`."""
    if isinstance(source, (str, os.PathLike)):
        root = Path(os.fspath(source))
        if root.is_dir():
            found = sorted(str(p) for p in root.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ImageError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            return found
        if root.is_file():
            return [str(root)]
        raise ImageError(f"{root}: no such file or folder")
    if isinstance(source, np.ndarray) and source.ndim == 4:
        items = [source[i] for i in range(source.shape[0])]
    else:
        items = [os.fspath(x) if isinstance(x, os.PathLike) else x for x in source]
    if not items:
        raise ImageError("<training images>: no images given")
    return items


def item_name(item: Any, index: int) -> str:
    """How a training item is named in ``skipped`` lists: its path, or ``<array #i>``."""
    if isinstance(item, str):
        return item
    return f"<{type(item).__name__} #{index}>"


class BatchSchedule:
    """Which items make up the batch of each global step; a pure function of
    ``(seed, epoch, position)``.

    Epoch ``e`` visits the items in the order ``np.random.default_rng([seed, e]).permutation(n)``;
    an epoch has ``max(1, n // batch_size)`` steps (the last incomplete batch is dropped, as
    ``drop_last=True`` would, so every step has the same batch size).  Step ``s`` (0-based) is
    position ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``.  Because nothing here has
    state, a resumed run (and the other backend) sees exactly the same batches.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int):
        if n_items < 1:
            raise ImageError("<training images>: no images given")
        self.n = int(n_items)
        self.batch_size = int(min(batch_size, n_items))
        self.seed = int(seed)
        self.steps_per_epoch = max(1, self.n // self.batch_size)
        self._cache: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def order(self, epoch: int) -> np.ndarray:
        if self._cache[0] != epoch:
            self._cache = (epoch, np.random.default_rng([self.seed, int(epoch)]).permutation(self.n))
        return self._cache[1]

    def total_steps(self, steps: Optional[int], epochs: Optional[int]) -> int:
        """``steps`` when given, else ``epochs × steps_per_epoch``."""
        if steps is not None:
            return int(steps)
        if epochs is None:
            raise RestyError("fit: give steps or epochs")
        return int(epochs) * self.steps_per_epoch

    def epoch_position(self, step: int) -> Tuple[int, int]:
        return divmod(int(step), self.steps_per_epoch)

    def batch(self, step: int) -> List[int]:
        """Item indices of global step ``step`` (0-based)."""
        epoch, pos = self.epoch_position(step)
        return [int(i) for i in self.order(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]]


def crop_rng(seed: int, step: int, slot: int) -> np.random.Generator:
    """The generator of the random crop of slot ``slot`` of step ``step``: a pure function of
    its arguments, so crops repeat exactly after a resume and in the other backend."""
    return np.random.default_rng([int(seed), int(step), int(slot)])


def load_training_item(item: Any, image_size: int, seed: int, step: int, slot: int,
                       max_pixels: Optional[int] = None) -> Optional[np.ndarray]:
    """Decode one training item and take its random ``image_size`` square crop (short side
    resized to ``image_size`` first, see resty.images.resize_short_then_crop).

    Returns ``None`` when the item cannot be read (corrupt, truncated, not an image, missing):
    training skips it and counts it instead of dying on one bad file out of thousands."""
    try:
        kw = {} if max_pixels is None else {"max_pixels": max_pixels}
        img = load_image(item, **kw)
        return resize_short_then_crop(img, image_size, crop_rng(seed, step, slot))
    except (ImageError, OSError):
        return None


def load_step_slots(items: List[Any], schedule: "BatchSchedule", image_size: int, seed: int, step: int,
                    lo: int = 0, hi: Optional[int] = None) -> Tuple[List[np.ndarray], np.ndarray]:
    """The readable crops of slots ``lo .. hi-1`` of the global batch of ``step`` (0-based), and
    the mask (batch_size,) of its unreadable slots."""
    idx = schedule.batch(step)
    hi = len(idx) if hi is None else min(hi, len(idx))
    crops, bad = [], np.zeros(schedule.batch_size, np.bool_)
    for slot in range(lo, hi):
        crop = load_training_item(items[idx[slot]], image_size, seed, step, slot)
        if crop is None:
            bad[slot] = True
        else:
            crops.append(crop)
    return crops, bad
