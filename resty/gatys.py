"""Gatys et al. 2015, written once for both backends: :class:`GatysStylizerBase` resolves the
arguments, plans the run (output size, coarse-to-fine scales, iteration schedule, initial
image, style resizing and blending) and keeps its books (history, callbacks, progress,
non-finite checks, stopping, colour preservation).  A backend subclasses it and supplies the
framework operations only: the targets (content features, blended style Grams), one loss
evaluation, and the optimiser loops (docs/ARCHITECTURE.md)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ArgumentError, ImageError, RestyError
from .images import preserve_color as _preserve_color, resize_longest, resize_to
from .inputs import ImageLike, blend_grams, integer_arg, load_rgb, prepare_styles
from .losses import LOSS_TERMS
from .presets import Preset, resolve
from .runtime import Progress, check_finite
from .specs import vgg_truncate

__all__ = ["GatysStylizerBase", "GatysRun", "StepRecorder", "run_deferred", "output_size", "prepare_content",
           "style_size_for", "resize_style", "sized_hw", "init_image", "split_iterations", "scale_plan", "check_feature_size",
           "check_history_memory", "OPTIMIZERS", "SYNC_EVERY", "ClampPoints", "clamp_points"]

OPTIMIZERS = ("adam", "lbfgs")

#: Loops that run on a device read their losses back (and check them for NaN/inf) every this many
#: steps rather than after each one, so the host does not wait for the device every step; with a
#: callback they read back every step.
SYNC_EVERY = 25


def output_size(content_hw: Tuple[int, int], image_size: Optional[int], sizing: str = "longest") -> Tuple[int, int]:
    """(H, W) of the result: the content's size, or ``image_size`` applied as ``sizing`` says
    (resty.specs.SIZINGS; ``longest``: longest side ``image_size`` keeping the aspect ratio,
    the same integer rounding as resty.images.resize_longest)."""
    h, w = int(content_hw[0]), int(content_hw[1])
    if image_size is None:
        return h, w
    return sized_hw((h, w), image_size, sizing)


def sized_hw(hw: Tuple[int, int], size: int, sizing: str) -> Tuple[int, int]:
    """(H, W) of an image of size ``hw`` sized to ``size`` as each source does it:

    * ``longest``: longest side ``size``, the other ``round(side · size / longest)`` (halves up,
      exact integers);
    * ``shorter``: torchvision's ``transforms.Resize(size)`` (the PyTorch tutorial's loader):
      shorter side ``size``, the longer ``int(size · long / short)`` in Python floats;
    * ``longest_trunc``: the TF tutorial's ``load_img``: ``scale = size / long`` and
      ``int(side · scale)``, both in float32 (``tf.cast(shape * scale, tf.int32)`` truncates)."""
    h, w = int(hw[0]), int(hw[1])
    if sizing == "longest":
        longest = max(h, w)
        return _scale_round(h, size, longest), _scale_round(w, size, longest)
    if sizing == "shorter":
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = int(size), int(size * long / short)
        return (new_long, new_short) if w <= h else (new_short, new_long)
    if sizing == "longest_trunc":
        shape = np.array([h, w], np.float32)
        scale = np.float32(size) / shape.max()
        new = (shape * scale).astype(np.int32)
        return max(1, int(new[0])), max(1, int(new[1]))
    raise ArgumentError(f"sizing: got {sizing!r}; allowed: 'longest', 'shorter', 'longest_trunc'")


def _scale_round(n: int, num: int, den: int) -> int:
    # Same exact-integer rounding as resty.images (halves up), so sizes never depend on floats.
    return max(1, (2 * n * num + den) // (2 * den))


def prepare_content(content: ImageLike, image_size: Optional[int], sizing: str = "longest",
                    dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """``(original, resized)``: the content decoded (to ``dtype``, once), and resized to
    ``image_size`` as ``sizing`` says (unchanged when None or already that size)."""
    original = load_rgb(content, name=None, dtype=dtype)
    hw = output_size(original.shape[:2], image_size, sizing)
    resized = original if hw == original.shape[:2] else resize_to(original, hw)
    return original, resized


def style_size_for(target_hw: Tuple[int, int], style_scale: float, sizing: str = "longest",
                   nominal: Optional[int] = None) -> int:
    """The size (as ``sizing`` measures it) of the style image(s) used against an output of
    size ``target_hw``: ``style_scale ×`` the output's longest side (``shorter``: its shorter
    side), Gatys/jcjohnson's ``style_scale``.  ``nominal`` (the run's ``image_size`` at the
    final scale) replaces the output's side for ``shorter``/``longest_trunc``: those sources
    size every image to the same number on its own."""
    side = min(target_hw) if sizing == "shorter" else max(target_hw)
    if nominal is not None and sizing != "longest":
        side = nominal
    return max(1, int(round(style_scale * side)))


def resize_style(style: np.ndarray, target_hw: Tuple[int, int], style_scale: float, sizing: str = "longest",
                 nominal: Optional[int] = None) -> np.ndarray:
    """The style image at the size used against an output of ``target_hw``."""
    size = style_size_for(target_hw, style_scale, sizing, nominal)
    if sizing == "longest":
        return resize_longest(style, size)
    return resize_to(style, sized_hw(style.shape[:2], size, sizing))



# =========================================================================== Gatys
def init_image(mode: str, content: np.ndarray, style: Optional[np.ndarray], seed: int,
               noise_std: float) -> np.ndarray:
    """The starting image of a Gatys run, H×W×3 in [0, 1] at the content's size, in the
    content's dtype (float32, or float64 for a float64 run).

    * ``content``: a copy of the content;
    * ``noise``: ``clip(0.5 + noise_std · N(0, 1), 0, 1)`` drawn with
      ``np.random.default_rng(seed).standard_normal((H, W, 3))`` (float64, then float32), so
      both backends start from the same pixels;
    * ``style``: the (first) style image resized to exactly H×W.
    """
    h, w = content.shape[:2]
    dtype = np.float64 if content.dtype == np.float64 else np.float32
    if mode == "content":
        return np.array(content, dtype=dtype, copy=True)
    if mode == "noise":
        rng = np.random.default_rng(seed)
        x = 0.5 + float(noise_std) * rng.standard_normal((h, w, 3))
        return np.clip(x, 0.0, 1.0).astype(dtype)
    if mode == "style":
        if style is None:
            raise RestyError("init='style' needs a style image")
        return resize_to(style, (h, w)).astype(dtype)
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


def check_feature_size(hw: Tuple[int, int], what: str, arch: str, layers: Sequence[str]) -> None:
    """The deepest loss layer needs at least one pixel after the pooling stages before it."""
    table = vgg_truncate(arch, layers)
    need = 2 ** sum(1 for layer in table[:-1] if layer.kind == "pool")
    if min(hw) < need:
        raise ImageError(f"<{what}>: {hw[0]}×{hw[1]} px at this scale is too small for layer {table[-1].name} "
                         f"(needs sides >= {need} px); use a larger image_size or fewer coarse scales")


def check_history_memory(history: int, pixels3: int, hw, free_bytes: int) -> None:
    """DeviceLBFGS preallocates its history (2·history float32 vectors of the image's size).
    Refuse up front, with the fix, when that would take more than half the free GPU memory,
    rather than failing with an out-of-memory error inside the run."""
    need = 2 * history * pixels3 * 4
    if need > 0.5 * free_bytes:
        raise ArgumentError(f"L-BFGS history of {history} pairs at {hw[0]}x{hw[1]} px needs {need / 2**30:.1f} GiB "
                         f"of GPU memory ({free_bytes / 2**30:.1f} GiB free): pass history_size=10 (or smaller "
                         f"images, or cuda_graph=False)")


@dataclass(frozen=True)
class ClampPoints:
    """Where an optimiser loop projects the image onto [0, 1] (from ``GatysConfig.clamp``):
    ``before_eval`` at the start of every loss evaluation (in place, on the optimised
    variable), ``after_update`` after every Adam update, ``between_steps`` after every L-BFGS
    outer step (``optimizer.step`` call: every ``max_iter`` updates and after the last)."""
    before_eval: bool
    after_update: bool
    between_steps: bool


def clamp_points(mode: str, optimizer: str) -> ClampPoints:
    """The projection points of clamp ``mode`` (resty.specs.CLAMP_MODES) for ``optimizer``, as
    both backends, the device loops and the oracle apply them.

    L-BFGS's inner updates happen inside the optimiser (torch.optim.LBFGS's ``step``), so
    ``update`` is applied as ``evaluation``: before every evaluation, and between outer steps
    for the last update of each (which is applied unevaluated) -- the same points.  Adam's
    ``evaluation`` clamps before each evaluation; the result's final clip does the rest."""
    if mode in ("end", "never"):
        return ClampPoints(False, False, False)
    if optimizer == "adam":
        return ClampPoints(mode == "evaluation", mode in ("update", "step"), False)
    return ClampPoints(mode in ("evaluation", "update"), False, True)


# =========================================================================== the run's books
class StepRecorder:
    """The books of one ``stylize`` run: every loss evaluation becomes a history row
    ``{step, size, total, content, style, tv}``; a non-finite total raises TrainingError naming
    its step; the progress bar and the callback see the newest row.  Backends hand it rows of
    float64 ``[total, content, style, tv]`` read back from the device."""

    def __init__(self, history: List[Dict[str, Any]], callback: Optional[Callable], bar: Progress):
        self.history, self.callback, self.bar = history, callback, bar
        self.step = 0
        self.size: Tuple[int, int] = (0, 0)
        self.stopped = False

    def record(self, rows: np.ndarray, image: Callable[[], np.ndarray]) -> bool:
        """Book ``rows`` (k×4, the k evaluations since the last call); ``image()`` gives the
        current image (only called for the callback).  Returns True when the callback asked
        to stop (then :attr:`stopped` is set)."""
        rows = np.asarray(rows, np.float64).reshape(-1, len(LOSS_TERMS))
        last: Dict[str, float] = {}
        for row in rows:
            self.step += 1
            check_finite(float(row[0]), self.step)
            last = dict(zip(LOSS_TERMS, (float(v) for v in row)))
            self.history.append({"step": self.step, "size": list(self.size), **last})
        if not len(rows):
            return False
        self.bar.update(len(rows), last)
        if self.callback is not None and self.callback(self.step, dict(last),
                                                       np.clip(image(), 0.0, 1.0).astype(np.float32)):
            self.stopped = True
        return self.stopped


def run_deferred(n: int, step: Callable[[int], Any], fetch: Callable[[List[Any]], np.ndarray],
                 recorder: StepRecorder, image: Callable[[], np.ndarray], every: int = SYNC_EVERY) -> int:
    """Run ``step(i)`` for i < n, each returning its loss terms as a device handle; every
    ``every`` steps, at the end, and after every step when there is a callback, ``fetch`` the
    pending handles (one host sync) into the recorder.  Returns the number of steps done."""
    pending: List[Any] = []
    for i in range(n):
        pending.append(step(i))
        if recorder.callback is None and (i + 1) % every and i + 1 != n:
            continue
        stop = recorder.record(fetch(pending), image)
        pending = []
        if stop:
            return i + 1
    return n


# =========================================================================== the stylizer
@dataclass(frozen=True)
class GatysRun:
    """One ``stylize`` call's settings: the preset's, overridden by its keyword arguments."""
    iterations: int
    seed: int
    image_size: Optional[int]
    init: str
    optimizer: str
    scales: Tuple[float, ...]
    style_scale: float


class GatysStylizerBase:
    """What both backends' ``GatysStylizer`` share (the public API is here).  A subclass sets
    ``self.preset`` and ``self.history`` and supplies:

    * ``_content_features(image)``: the content layers' features of one image (H×W×3);
    * ``_grams_of(image)``: the style layers' Gram matrices of one image;
    * ``_evaluate(image, targets)``: ``[total, content, style, tv]`` of one image as floats;
    * ``_optimize(optimizer, image, targets, n, recorder)``: ``n`` evaluations of the named
      optimiser from ``image`` (H×W×3), every evaluation booked with ``recorder``; returns the
      optimised image (H×W×3 NumPy);
    * optionally ``_check_optimizer(name)`` (refuse what the framework cannot run) and
      ``_device_scope()`` (a context every framework call runs in)."""

    preset: Preset
    history: List[Dict[str, Any]]

    @staticmethod
    def _resolve_preset(preset: Any, history_size: Optional[int]) -> Preset:
        """The preset, with the L-BFGS history overridden by ``history_size`` when given."""
        p = resolve(preset)
        if history_size is not None:
            n = integer_arg(history_size, "history_size", 1)
            g = p.gatys
            p = p.replace(gatys=g.replace(lbfgs=g.lbfgs.replace(history_size=n)))
        return p

    def _device_scope(self):
        return contextlib.nullcontext()

    def _image_dtype(self):
        """NumPy dtype of the run's images: float64 for a float64 stylizer (its inputs are
        converted once, to float64, and never rounded through float32), else float32."""
        return np.float64 if str(getattr(self, "dtype", "float32")).endswith("float64") else np.float32

    def _check_optimizer(self, name: str) -> None:
        """Refuse an optimiser setting this backend cannot run (default: all can)."""

    # ------------------------------------------------------------------ arguments
    def _run_settings(self, iterations=None, seed=None, image_size=None, init=None, optimizer=None, scales=None,
                      style_scale=None) -> GatysRun:
        cfg = self.preset.gatys
        iterations = integer_arg(cfg.iterations if iterations is None else iterations, "iterations", 0)
        optimizer = cfg.optimizer if optimizer is None else optimizer
        if optimizer not in OPTIMIZERS:
            raise ArgumentError(f"optimizer: got {optimizer!r}; allowed: {', '.join(map(repr, OPTIMIZERS))}")
        self._check_optimizer(optimizer)
        # None: the preset's size; 0: the content's own size.
        size = cfg.image_size if image_size is None else integer_arg(image_size, "image_size", 0) or None
        scales = tuple(cfg.scales if scales is None else scales)
        cfg.replace(scales=scales)          # validates the scales
        return GatysRun(iterations=iterations, seed=cfg.init_seed if seed is None else integer_arg(seed, "seed", 0),
                        image_size=size, init=cfg.init if init is None else init, optimizer=optimizer,
                        scales=scales, style_scale=cfg.style_scale if style_scale is None else float(style_scale))

    def _targets(self, content: np.ndarray, styles: Sequence[np.ndarray], blend: Sequence[float]):
        """Content features and the blend ``Σ w_i G_i`` of the styles' Grams, once per scale."""
        loss = self.preset.loss
        return (self._content_features(content) if loss.content_layers else {},
                blend_grams(styles if loss.style_layers else [], blend, self._grams_of))

    def _check_sizes(self, content_hw, styles) -> None:
        """Every image goes through VGG up to the deepest loss layer."""
        p = self.preset
        check_feature_size(content_hw, "content", p.vgg.arch, p.loss.all_layers)
        for s in styles:
            check_feature_size(s.shape[:2], "style", p.vgg.arch, p.loss.all_layers)

    # ------------------------------------------------------------------ public
    def loss_terms(self, image, content, style, style_weights=None) -> Dict[str, float]:
        """The loss terms of ``image`` against ``content`` and ``style`` at their own sizes (no
        resizing): ``{'total', 'content', 'style', 'tv'}`` as floats."""
        dt = self._image_dtype()
        img = load_rgb(image, dtype=dt)
        c = load_rgb(content, dtype=dt)
        styles, blend = prepare_styles(style, style_weights, dtype=dt)
        self._check_sizes(c.shape[:2], styles)
        with self._device_scope():
            values = self._evaluate(img, self._targets(c, styles, blend))
        return dict(zip(LOSS_TERMS, (float(v) for v in values)))

    def stylize(self, content, style, *, iterations=None, seed=None, style_weights=None, image_size=None, init=None,
                preserve_color=False, callback=None, progress=False, optimizer=None, scales=None,
                style_scale=None, output_dtype="float32") -> np.ndarray:
        """Stylise ``content`` with ``style`` (one image, or a list blended by ``style_weights``).
        Returns H×W×3 float32 in [0, 1] at the content's size, or with longest side
        ``image_size`` (None: the preset's size; 0: the content's own size).

        ``iterations`` counts loss/gradient evaluations, split over the coarse-to-fine
        ``scales`` (0 returns the initial image).  ``callback(step, losses, image)`` is called
        after every evaluation and stops the run by returning True.  A non-finite loss raises
        TrainingError naming the step; :attr:`history` holds one row per evaluation.
        ``output_dtype='float64'`` returns a float64 run's result without rounding it to float32."""
        if output_dtype not in ("float32", "float64"):
            raise ArgumentError(f"output_dtype: got {output_dtype!r}; allowed: 'float32', 'float64'")
        cfg = self.preset.gatys
        dt = self._image_dtype()
        run = self._run_settings(iterations, seed, image_size, init, optimizer, scales, style_scale)
        _, content_img = prepare_content(content, run.image_size, cfg.sizing, dtype=dt)
        styles, blend = prepare_styles(style, style_weights, dtype=dt)
        plan = scale_plan(content_img.shape[:2], run.scales, run.iterations)
        self.history = []
        x: Optional[np.ndarray] = None
        with Progress(run.iterations, progress, desc=f"gatys {run.optimizer}") as bar, self._device_scope():
            recorder = StepRecorder(self.history, callback, bar)
            for hw, n in plan:
                content_s = content_img if hw == content_img.shape[:2] else resize_to(content_img, hw)
                nominal = run.image_size if hw == content_img.shape[:2] else None
                styles_s = [resize_style(s, hw, run.style_scale, cfg.sizing, nominal) for s in styles]
                if x is None:
                    x = init_image(run.init, content_s, styles[0], run.seed, cfg.noise_std)
                else:       # clamp "never": not even before upsampling (resize_to clips its output)
                    x = resize_to(x if cfg.clamp == "never" else np.clip(x, 0.0, 1.0), hw).astype(dt)
                if n == 0:
                    continue
                self._check_sizes(hw, styles_s)
                recorder.size = tuple(hw)
                x = self._optimize(run.optimizer, x, self._targets(content_s, styles_s, blend), n, recorder)
                if recorder.stopped:
                    break
        out = np.clip(x, 0.0, 1.0)
        if out.shape[:2] != content_img.shape[:2]:      # stopped at a coarse scale
            out = resize_to(out, content_img.shape[:2])
        if preserve_color:
            out = _preserve_color(out, content_img)
        return out.astype(np.float64 if output_dtype == "float64" else np.float32)
