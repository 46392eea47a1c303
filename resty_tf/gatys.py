"""Gatys et al. 2015 on TensorFlow: optimise the pixels of an image (RGB [0, 1], NHWC).

Every decision about *what* is computed (sizes, init image, coarse-to-fine schedule, style
blend weights, error messages) comes from :mod:`resty.common`; this module only says *how*
in TensorFlow: VGG features, the loss from :mod:`resty_tf.losses`, the torch-formula Adam or
the L-BFGS port, as ``tf.function`` (optionally XLA-compiled).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from resty import gatys, inputs, runtime
from resty import images as _images
from resty.errors import ImageError, RestyError, TrainingError
from resty.presets import resolve as resolve_preset

from . import losses as L
from .device import dtype_policy, resolve_device
from .optim import TorchAdam, lbfgs_minimize, lbfgs_workspace
from .vgg import VGGFeatures

__all__ = ["GatysStylizer"]

# Without a callback, Adam losses are read back (and checked for NaN) every this many steps,
# so the host does not wait for the device after every step.
_SYNC_EVERY = 20


class GatysStylizer:
    """``GatysStylizer(preset, weights, device, dtype, precision, compile)``; see
    docs/BACKEND_API.md.  ``compile=True`` runs the loss/step functions with XLA
    (``tf.function(jit_compile=True)``)."""

    def __init__(self, preset="gatys2015", weights="imagenet", device=None, dtype: str = "float32",
                 precision=None, compile: bool = False, checkpoint: bool = False, history_size=None,
                 fast: bool = False):
        """Options shared with resty_torch: ``checkpoint=True`` recomputes VGG activations per
        block in backward (tf.recompute_grad; large images), ``history_size`` overrides the
        preset's L-BFGS history, ``fast=True`` compiles the steps with XLA on a GPU (on the CPU
        TensorFlow's own kernels are kept; nothing changes).  ``compile=True`` forces XLA."""
        self.preset = resolve_preset(preset)
        self.device = resolve_device(device)
        self.dtype = dtype
        self.precision = precision
        self.policy = dtype_policy(dtype, precision)
        if "CPU" in str(self.device).upper():
            runtime.warn_cpu_half_precision(precision)
        if history_size is not None:
            if int(history_size) < 1:
                raise ValueError(f"history_size: got {history_size!r}; must be >= 1")
            g = self.preset.gatys
            self.preset = self.preset.replace(gatys=g.replace(lbfgs=g.lbfgs.replace(history_size=int(history_size))))
        self.history_size = None if history_size is None else int(history_size)
        self.jit_compile = bool(compile) or (bool(fast) and "GPU" in str(self.device).upper())
        p = self.preset
        self.vgg = VGGFeatures(p.vgg.arch, weights, p.vgg.pooling, layers=p.loss.all_layers, dtype=dtype,
                               device=self.device, preprocessing=p.preprocessing_name, precision=precision)
        self.vgg.checkpoint = bool(checkpoint)
        # The optimised image and the losses live in float64 for dtype float64, else float32.
        self.tf_dtype = tf.float64 if dtype == "float64" else tf.float32
        self.history: List[Dict[str, float]] = []
        self._fns: Dict[Any, Callable] = {}
        # (image shape, AdamSpec) -> (image variable, optimizer, traced step): repeated stylize()
        # calls at one size reuse the traced Adam step instead of tracing it again.
        self._adam_cache: Dict[Any, Any] = {}
        # (pixels, dtype, history capacity) -> L-BFGS workspace (device buffers + traced iteration).
        self._lbfgs_cache: Dict[Any, Any] = {}

    # ------------------------------------------------------------------ pieces
    def _tensor(self, img_hwc: np.ndarray) -> tf.Tensor:
        return tf.convert_to_tensor(np.asarray(img_hwc, dtype=self.tf_dtype.as_numpy_dtype)[None])

    def _targets(self, content_img: np.ndarray, styles: Sequence[np.ndarray], blend: Sequence[float]):
        """Content features and blended style Grams ``Σ w_i G_i`` (float32 or float64)."""
        loss = self.preset.loss
        self._check_size(content_img.shape[:2], "content")
        for s_img in styles:
            self._check_size(s_img.shape[:2], "style")
        targets = self._function("targets")
        content_t, _ = targets(self._tensor(content_img))
        content_t = dict(content_t)
        grams: Dict[str, tf.Tensor] = {}
        for s_img, w in zip(styles, blend):
            _, sg = targets(self._tensor(s_img))
            for l in loss.style_layers:
                g = sg[l][0] * tf.constant(w, self.tf_dtype)
                grams[l] = grams[l] + g if l in grams else g
        return content_t, grams

    def _check_size(self, hw, what: str) -> None:
        """VGG's deepest requested layer needs at least one pixel after its pooling stages."""
        pools = sum(1 for l in self.vgg.table if l.kind == "pool" and l is not self.vgg.table[-1])
        need = 2 ** pools
        if min(hw) < need:
            raise ImageError(f"<{what}>: {hw[0]}×{hw[1]} px at this scale is too small for layer "
                             f"{self.vgg.table[-1].name} (needs sides >= {need} px); use a larger image_size "
                             f"or fewer coarse scales")

    def _terms(self, x, content_t, grams):
        feats = self.vgg(x)
        return L.total_loss(feats, x, self.preset.loss, content_t, grams)

    def _function(self, kind: str):
        """The tf.functions, created once per stylizer.  They retrace per image size on purpose
        (no ``reduce_retracing``): static shapes make the loss factors constants, which XLA needs."""
        if kind in self._fns:
            return self._fns[kind]
        jit = self.jit_compile

        if kind == "loss_grad":
            @tf.function(jit_compile=jit, autograph=False)
            def fn(x, content_t, grams):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    terms = self._terms(x, content_t, grams)
                return terms, tape.gradient(terms["total"], x)
        elif kind == "targets":
            # Content features and (unweighted) style Grams of one image, traced per image size
            # (eager VGG costs about twice the traced forward pass).
            loss = self.preset.loss

            @tf.function(jit_compile=jit, autograph=False)
            def fn(x):
                feats = self.vgg(x)
                return ({l: tf.cast(feats[l], self.tf_dtype) for l in loss.content_layers},
                        {l: L.gram(feats[l], loss.gram) for l in loss.style_layers})
        else:
            raise KeyError(kind)
        self._fns[kind] = fn
        return fn

    def _adam_step_fn(self, opt):
        """A traced Adam step bound to ``opt`` (and so to one image variable)."""
        @tf.function(jit_compile=self.jit_compile, autograph=False)
        def fn(xvar, content_t, grams, clamp):
            with tf.GradientTape() as tape:
                terms = self._terms(xvar, content_t, grams)
            g = tape.gradient(terms["total"], xvar)
            opt.apply([g])
            if clamp:
                xvar.assign(tf.clip_by_value(xvar, 0.0, 1.0))
            return terms
        return fn

    # ------------------------------------------------------------------ public
    def loss_terms(self, image, content, style, style_weights=None) -> Dict[str, float]:
        """Loss terms of ``image`` against ``content`` and ``style`` as given (no resizing),
        as floats: total, content, style, tv (for parity checks)."""
        with tf.device(self.device):
            img = inputs.load_rgb(image)
            c = inputs.load_rgb(content)
            styles, blend = inputs.prepare_styles(style, style_weights)
            content_t, grams = self._targets(c, styles, blend)
            terms = self._terms(self._tensor(img), content_t, grams)
            return {k: float(v) for k, v in terms.items()}

    def stylize(self, content, style, *, iterations=None, seed=None, style_weights=None,
                image_size=None, init=None, preserve_color=False, callback=None, progress=False,
                optimizer=None, scales=None, style_scale=None) -> np.ndarray:
        """Stylise ``content`` with ``style`` (one image or a list blended by ``style_weights``).

        ``image_size``: longest side of the output; None uses the preset's (which may itself be
        None: the content's size); 0 keeps the content's size.  ``iterations`` counts
        loss/gradient evaluations over all scales.  Returns H×W×3 float32 in [0, 1].
        """
        cfg = self.preset.gatys
        iterations = cfg.iterations if iterations is None else int(iterations)
        if iterations < 1:
            raise RestyError(f"iterations: got {iterations}; need an integer >= 1")
        seed = cfg.init_seed if seed is None else int(seed)
        size = cfg.image_size if image_size is None else (None if image_size == 0 else int(image_size))
        mode = cfg.init if init is None else init
        opt_name = cfg.optimizer if optimizer is None else optimizer
        if opt_name not in ("adam", "lbfgs"):
            raise RestyError(f"optimizer: got {opt_name!r}; allowed: 'adam', 'lbfgs'")
        if opt_name == "lbfgs" and cfg.lbfgs.line_search is not None:
            raise RestyError(f"L-BFGS line_search={cfg.lbfgs.line_search!r} runs in the torch backend only "
                             "(torch.optim.LBFGS's own search); TensorFlow runs torch's L-BFGS without one: "
                             "use line_search=None or the torch backend")
        scales = tuple(cfg.scales if scales is None else scales)
        sscale = cfg.style_scale if style_scale is None else float(style_scale)

        _, content_img = gatys.prepare_content(content, size)
        styles, blend = inputs.prepare_styles(style, style_weights)
        plan = gatys.scale_plan(content_img.shape[:2], scales, iterations)
        self.history = []
        x_np: Optional[np.ndarray] = None
        step0 = 0
        bar = runtime.Progress(iterations, enabled=progress, desc="gatys")
        try:
            with tf.device(self.device):
                for hw, n_evals in plan:
                    c_img = content_img if hw == content_img.shape[:2] else _images.resize_to(content_img, hw)
                    s_imgs = [gatys.resize_style(s, hw, sscale) for s in styles]
                    if x_np is None:
                        # The original first style, as resty_torch does (init='style' resizes it to H×W).
                        x_np = gatys.init_image(mode, c_img, styles[0], seed, cfg.noise_std)
                    else:
                        x_np = _images.resize_to(np.clip(x_np, 0.0, 1.0), hw)
                    if n_evals <= 0:
                        continue
                    content_t, grams = self._targets(c_img, s_imgs, blend)
                    run = self._run_adam if opt_name == "adam" else self._run_lbfgs
                    x_np, step0, stopped = run(x_np, content_t, grams, n_evals, step0, callback, bar)
                    if stopped:
                        break
        finally:
            bar.close()
        out = np.clip(x_np, 0.0, 1.0).astype(np.float32)
        if preserve_color:
            out = _images.preserve_color(out, content_img)
        return out

    # ------------------------------------------------------------------ optimisers
    def _record(self, step: int, terms: Dict[str, float]) -> None:
        runtime.check_finite(terms["total"], step)
        self.history.append({"step": step, **terms})

    def _run_adam(self, x_np, content_t, grams, n_evals, step0, callback, bar):
        cfg = self.preset.gatys
        x0 = self._tensor(x_np)
        key = (tuple(x0.shape), cfg.adam)
        entry = self._adam_cache.get(key)
        if entry is None:
            xvar = tf.Variable(x0, trainable=True, name="image")
            opt = TorchAdam(cfg.adam, [xvar])
            entry = (xvar, opt, self._adam_step_fn(opt))
            if len(self._adam_cache) >= 4:            # a few sizes (coarse-to-fine scales) at most
                self._adam_cache.pop(next(iter(self._adam_cache)))
            self._adam_cache[key] = entry
        else:
            entry[0].assign(x0)
            entry[1].reset()                          # a fresh Adam state for every run
        xvar, self._opt, fn = entry
        pending = []
        stopped = False
        for i in range(n_evals):
            step = step0 + i + 1
            terms = fn(xvar, content_t, grams, cfg.clamp)
            pending.append((step, terms))
            if callback is not None or len(pending) >= _SYNC_EVERY or i == n_evals - 1:
                for s, t in pending:
                    self._record(s, {k: float(v) for k, v in t.items()})
                bar.update(len(pending), self.history[-1])
                pending = []
                if callback is not None and callback(step, dict(self.history[-1]), xvar.numpy()[0].astype(np.float32)):
                    stopped = True
                    break
        return xvar.numpy()[0], step, stopped

    def _run_lbfgs(self, x_np, content_t, grams, n_evals, step0, callback, bar):
        cfg = self.preset.gatys
        fn = self._function("loss_grad")
        counter = [step0]
        stop_flag = [False]

        def fun(x):
            terms, g = fn(x, content_t, grams)
            counter[0] += 1
            vals = {k: float(v) for k, v in terms.items()}
            self._record(counter[0], vals)
            bar.update(1, vals)
            if callback is not None and callback(counter[0], dict(vals), np.asarray(x.numpy()[0], np.float32)):
                stop_flag[0] = True
            return terms["total"], g

        def cb(n, f):
            return stop_flag[0]

        project = (lambda x: tf.clip_by_value(x, 0.0, 1.0)) if cfg.clamp else None
        x0 = self._tensor(x_np)
        spec = cfg.lbfgs
        n = int(np.prod(x0.shape))
        key = (n, x0.dtype)
        ws = self._lbfgs_cache.get(key)
        if ws is None or not ws.fits(n, x0.dtype, spec, n_evals):
            # Rows for at least one full outer step, so that a short run (a warm-up) and a
            # longer one at the same size share the workspace and its traces.
            ws = lbfgs_workspace(n, x0.dtype, spec, max(n_evals, spec.max_iter))
            self._lbfgs_cache.pop(key, None)
            if len(self._lbfgs_cache) >= 2:              # its history buffers are large: keep few
                self._lbfgs_cache.pop(next(iter(self._lbfgs_cache)))
            self._lbfgs_cache[key] = ws
        x, _ = lbfgs_minimize(fun, x0, spec, n_evals, callback=cb, project=project, workspace=ws)
        return x.numpy()[0], counter[0], stop_flag[0]
