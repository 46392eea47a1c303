"""Framework-free logic both backends share (NumPy only).

Everything here decides *what* a backend computes on (which pixels, in which order, at which
size, from which seed), never *how*.  Keeping these decisions in one place is what makes the
two backends agree bit for bit on their inputs, lets a resumed training run see exactly the
batches an uninterrupted one would, and lets a checkpoint written by one backend be read by
the other.

Contents
--------
* Argument normalisation: :func:`load_rgb`, :func:`prepare_content`, :func:`prepare_styles`,
  :func:`blend_weights`, :func:`as_image_list`.
* Gatys: :func:`init_image`, :func:`scale_plan` (coarse-to-fine), :func:`split_iterations`,
  :func:`style_size_for`.
* Errors and progress: :func:`nonfinite_message`, :func:`check_finite`, :class:`Progress`.
* Training data: :func:`list_training_images`, :class:`BatchSchedule` (data order as a pure
  function of ``(seed, epoch)``), :func:`crop_rng` / :func:`load_training_item` (crops as a pure
  function of ``(seed, step, slot)``).
* Checkpoints: :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`latest_checkpoint`,
  :func:`adam_state_to_tensors` / :func:`adam_state_from_tensors`.
* Tiling: :func:`tile_plan`, :func:`tile_window`, :func:`tiled_apply`.

All images are H×W×3 float32 RGB in [0, 1] (``resty.images`` conventions).
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ImageError, RestyError, TrainingError
from .images import atomic_path, load_image, resize_longest, resize_short_then_crop, resize_to

__all__ = [
    "IMAGE_EXTENSIONS", "load_rgb", "is_single_image", "as_image_list", "blend_weights",
    "output_size", "prepare_content", "style_size_for", "prepare_styles", "resize_style", "init_image",
    "split_iterations", "scale_plan", "nonfinite_message", "check_finite", "Progress",
    "list_training_images", "item_name", "BatchSchedule", "crop_rng", "load_training_item",
    "CHECKPOINT_FORMAT", "checkpoint_stem", "save_checkpoint", "load_checkpoint",
    "latest_checkpoint", "list_checkpoints", "adam_state_to_tensors", "adam_state_from_tensors",
    "tile_plan", "tile_window", "tiled_apply", "stylize_images", "SigtermFlag",
]

ImageLike = Any  # a path, a PIL image, or an array (see resty.images.load_image)

#: Extensions listed as training images when a folder is given (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


# =========================================================================== arguments
def load_rgb(src: ImageLike, name: Optional[str] = None) -> np.ndarray:
    """Any accepted image form -> float32 H×W×3 RGB in [0, 1] (always through load_image, so
    both backends decode identically)."""
    return load_image(src, name=name)


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


def prepare_styles(style: Union[ImageLike, Sequence[ImageLike]],
                   style_weights: Optional[Sequence[float]] = None) -> Tuple[List[np.ndarray], Tuple[float, ...]]:
    """One style or a list -> ``([decoded styles], normalised blend weights)``.  Resizing to
    the working size happens per scale with :func:`resize_style`."""
    items = list(style) if isinstance(style, (list, tuple)) else [style]
    if not items:
        raise ImageError("<style>: no style image given")
    styles = [load_rgb(s) for s in items]
    return styles, blend_weights(style_weights, len(styles))


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


# =========================================================================== errors, progress
# CPU features that give a half precision native arithmetic (x86 Linux /proc/cpuinfo names).
_NATIVE_HALF_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def cpu_flags() -> Optional[frozenset]:
    """The CPU feature flags of this machine (Linux), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_half_precision_warning(precision: Optional[str], flags: Optional[frozenset] = None) -> Optional[str]:
    """A one-line warning for a half precision asked for on a CPU without native support for
    it (x86 without AVX512-BF16/AMX): the frameworks then emulate it, measured ~200x slower than
    float32 for the fast network on a 2-core AVX2 machine.  None when fine or unknown."""
    if precision not in _NATIVE_HALF_FLAGS:
        return None
    flags = cpu_flags() if flags is None else flags
    if flags is None or "avx2" not in flags and "avx" not in flags:   # not an x86 we can judge
        return None
    if any(f in flags for f in _NATIVE_HALF_FLAGS[precision]):
        return None
    return (f"precision={precision!r} on this CPU (no {'/'.join(_NATIVE_HALF_FLAGS[precision])}) is emulated and "
            f"much slower than float32; use precision=None on the CPU")


def warn_cpu_half_precision(precision, stacklevel: int = 3) -> None:
    """Issue :func:`cpu_half_precision_warning` as a RuntimeWarning (the stylizers call this
    when they are built for the CPU)."""
    msg = cpu_half_precision_warning(precision if isinstance(precision, str) else None)
    if msg:
        import warnings
        warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel)


def nonfinite_message(value: float, step: int) -> str:
    """The one message both backends raise when a loss stops being finite."""
    return (f"loss became {value} at step {step} (non-finite: the optimisation diverged); "
            f"lower the learning rate or use precision=None")


def check_finite(value: float, step: int) -> None:
    """Raise :class:`TrainingError` when ``value`` is NaN or infinite."""
    if not math.isfinite(value):
        raise TrainingError(nonfinite_message(value, step))


class Progress:
    """A tqdm bar that shows the loss terms; a no-op when disabled (or tqdm is missing).

    ``update(n_steps, losses)`` advances the bar; loss terms are formatted compactly.  Call it
    only with losses already on the host (a backend updates every few steps to avoid syncs).
    """

    def __init__(self, total: int, enabled: bool = False, desc: str = "", unit: str = "it"):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:   # progress is a convenience, never a reason to fail
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, losses: Optional[Mapping[str, float]] = None) -> None:
        if self.bar is None:
            return
        if losses:
            self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in losses.items()}, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


# =========================================================================== checkpoints
#: Version of the checkpoint layout (bumped on incompatible changes).
CHECKPOINT_FORMAT = 1
_STEM_RE = re.compile(r"^step-(\d{8,})$")


def checkpoint_stem(step: int) -> str:
    return f"step-{int(step):08d}"


def list_checkpoints(directory: Union[str, os.PathLike]) -> List[Tuple[int, Path]]:
    """Complete checkpoints in ``directory`` as ``[(step, json_path)]``, oldest first.  A
    checkpoint is complete when its JSON (written last) and its safetensors file both exist."""
    d = Path(os.fspath(directory))
    if not d.is_dir():
        return []
    out = []
    for p in d.glob("step-*.json"):
        m = _STEM_RE.match(p.stem)
        if m and p.with_suffix(".safetensors").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(directory: Union[str, os.PathLike]) -> Optional[Path]:
    """The JSON path of the newest complete checkpoint in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(directory: Union[str, os.PathLike], step: int, tensors: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any], keep: int = 2) -> Path:
    """Write ``step-{N:08d}.safetensors`` (``tensors``: names prefixed ``net.`` for the network's
    canonical parameters and ``opt.`` for optimizer state) then ``step-{N:08d}.json`` (``meta``:
    step, epoch, position, RNG states, history, preset JSON, ... — JSON-able), each atomically;
    the JSON goes last so a crash in between leaves no half checkpoint.  Keeps the newest
    ``keep`` checkpoints.  Returns the JSON path."""
    from safetensors.numpy import save_file

    d = Path(os.fspath(directory))
    d.mkdir(parents=True, exist_ok=True)
    stem = checkpoint_stem(step)
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    with atomic_path(d / f"{stem}.safetensors", overwrite=True) as tmp:
        save_file(arrays, str(tmp), metadata={"format": "resty-checkpoint", "version": str(CHECKPOINT_FORMAT)})
    record = dict(meta)
    record.setdefault("step", int(step))
    record["format"] = CHECKPOINT_FORMAT
    with atomic_path(d / f"{stem}.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, sort_keys=True, default=_json_default), encoding="utf-8")
    for _, old in list_checkpoints(d)[:-max(1, int(keep))]:
        for p in (old, old.with_suffix(".safetensors")):
            try:
                p.unlink()
            except OSError:
                pass
    return d / f"{stem}.json"


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def load_checkpoint(path: Union[str, os.PathLike]) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint given by its JSON or safetensors path, its stem, or a
    directory (the newest checkpoint in it)."""
    from safetensors.numpy import load_file

    p = Path(os.fspath(path))
    if p.is_dir():
        latest = latest_checkpoint(p)
        if latest is None:
            raise RestyError(f"{p}: no checkpoint in this folder")
        p = latest
    p = p.with_suffix(".json") if p.suffix in (".safetensors", "") else p
    st = p.with_suffix(".safetensors")
    if not p.is_file() or not st.is_file():
        raise RestyError(f"{p}: checkpoint is missing or incomplete (need {p.name} and {st.name})")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
        tensors = load_file(str(st))
    except (OSError, ValueError) as exc:
        raise RestyError(f"{p}: cannot read checkpoint ({' '.join(str(exc).split())})") from None
    return tensors, meta


def adam_state_to_tensors(step: int, exp_avg: Mapping[str, np.ndarray],
                          exp_avg_sq: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Adam state in the backend-neutral checkpoint layout: ``opt.step`` (int64, shape (1,)),
    ``opt.{param}.exp_avg`` and ``opt.{param}.exp_avg_sq`` keyed by canonical parameter names
    (so the moments move with the weights between backends)."""
    out = {"opt.step": np.asarray([int(step)], dtype=np.int64)}   # shape (1,): safetensors has no 0-d
    for name, m in exp_avg.items():
        out[f"opt.{name}.exp_avg"] = np.asarray(m)
        out[f"opt.{name}.exp_avg_sq"] = np.asarray(exp_avg_sq[name])
    return out


def adam_state_from_tensors(tensors: Mapping[str, np.ndarray]) -> Tuple[int, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Inverse of :func:`adam_state_to_tensors` (ignores non-``opt.`` entries)."""
    step = int(np.asarray(tensors["opt.step"]).reshape(-1)[0]) if "opt.step" in tensors else 0
    m, v = {}, {}
    for k, a in tensors.items():
        if k.startswith("opt.") and k.endswith(".exp_avg"):
            m[k[4:-len(".exp_avg")]] = a
        elif k.startswith("opt.") and k.endswith(".exp_avg_sq"):
            v[k[4:-len(".exp_avg_sq")]] = a
    return step, m, v


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


class SigtermFlag:
    """While active (main thread only, and only where SIGTERM has its default action), SIGTERM
    sets a flag instead of killing: a training loop stops at the next step boundary, writes a
    checkpoint, then calls :meth:`redeliver`, which says so on stderr and re-sends SIGTERM
    with the default action, so the process still dies of the signal, with nothing lost.
    Both backends' ``fit`` use it when given a checkpoint folder."""

    def __init__(self, enabled: bool):
        self.hit = False
        self.active = (enabled and threading.current_thread() is threading.main_thread()
                       and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)

    def __enter__(self) -> "SigtermFlag":
        if self.active:
            signal.signal(signal.SIGTERM, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def __exit__(self, *exc) -> None:
        if self.active:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def redeliver(self, step: Optional[int] = None, checkpoint_dir=None) -> None:
        if self.active and self.hit:
            where = f" to {checkpoint_dir}" if checkpoint_dir is not None else ""
            at = f" at step {step}" if step is not None else ""
            print(f"resty: terminated (SIGTERM){at}; checkpoint written{where}: run again with --resume "
                  "(fit(..., resume=True)) to continue", file=sys.stderr, flush=True)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
