"""Gatys et al. 2015 in TensorFlow: the framework operations behind
resty.gatys.GatysStylizerBase (VGG features, the loss and its gradient as ``tf.function``,
optionally XLA-compiled, the torch-formula Adam and the L-BFGS port).  Images are NHWC."""
from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np
import tensorflow as tf

from resty.errors import ArgumentError
from resty.gatys import GatysStylizerBase, StepRecorder, clamp_points, run_deferred
from resty.runtime import warn_cpu_half_precision

from . import losses as L
from .device import dtype_policy, resolve_device
from .optim import TorchAdam, lbfgs_minimize, lbfgs_workspace
from .vgg import VGGFeatures

__all__ = ["GatysStylizer"]


def _rows(handles) -> np.ndarray:
    """Pending ``[total, content, style, tv]`` tensors, read back in one host sync."""
    return tf.cast(tf.stack(list(handles)), tf.float64).numpy()


class GatysStylizer(GatysStylizerBase):
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
        self.preset = self._resolve_preset(preset, history_size)
        self.history_size = self.preset.gatys.lbfgs.history_size if history_size is not None else None
        self.device = resolve_device(device)
        self.dtype = dtype
        self.precision = precision
        self.policy = dtype_policy(dtype, precision)
        if "CPU" in str(self.device).upper():
            warn_cpu_half_precision(precision)
        self.jit_compile = bool(compile) or (bool(fast) and "GPU" in str(self.device).upper())
        p = self.preset
        self.vgg = VGGFeatures(p.vgg.arch, weights, p.vgg.pooling, layers=p.loss.all_layers, dtype=dtype,
                               device=self.device, preprocessing=p.preprocessing_name, precision=precision)
        self.vgg.checkpoint = bool(checkpoint)
        # The optimised image and the losses live in float64 for dtype float64, else float32.
        self.tf_dtype = tf.float64 if dtype == "float64" else tf.float32
        self.history = []
        self._fns: Dict[Any, Callable] = {}
        # (image shape, AdamSpec) -> (image variable, optimizer, traced step): repeated stylize()
        # calls at one size reuse the traced Adam step instead of tracing it again.
        self._adam_cache: Dict[Any, Any] = {}
        # (pixels, dtype) -> L-BFGS workspace (device buffers + traced iteration).
        self._lbfgs_cache: Dict[Any, Any] = {}

    def _device_scope(self):
        return tf.device(self.device)

    def _check_optimizer(self, name: str) -> None:
        if name == "lbfgs" and self.preset.gatys.lbfgs.line_search is not None:
            raise ArgumentError(f"L-BFGS line_search={self.preset.gatys.lbfgs.line_search!r} runs in the torch "
                                "backend only (torch.optim.LBFGS's own search); TensorFlow runs torch's L-BFGS "
                                "without one: use line_search=None or the torch backend")

    # ------------------------------------------------------------------ framework operations
    def _tensor(self, img_hwc: np.ndarray) -> tf.Tensor:
        return tf.convert_to_tensor(np.asarray(img_hwc, dtype=self.tf_dtype.as_numpy_dtype)[None])

    def _content_features(self, image: np.ndarray) -> Dict[str, tf.Tensor]:
        return dict(self._function("targets")(self._tensor(image))[0])

    def _grams_of(self, image: np.ndarray) -> Dict[str, tf.Tensor]:
        return {k: g[0] for k, g in self._function("targets")(self._tensor(image))[1].items()}

    def _terms(self, x, content_t, grams):
        return L.total_loss(self.vgg(x), x, self.preset.loss, content_t, grams)

    def _evaluate(self, image: np.ndarray, targets) -> np.ndarray:
        return _rows([self._terms(self._tensor(image), *targets)])[0]

    def _function(self, kind: str):
        """The tf.functions, created once per stylizer.  They retrace per image size on purpose
        (no ``reduce_retracing``): static shapes make the loss factors constants, which XLA needs."""
        if kind in self._fns:
            return self._fns[kind]
        jit = self.jit_compile
        loss = self.preset.loss
        if kind == "loss_grad":
            @tf.function(jit_compile=jit, autograph=False)
            def fn(x, content_t, grams):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    terms = self._terms(x, content_t, grams)
                    total = terms[0]         # sliced under the tape, so the slice is differentiated
                return terms, tape.gradient(total, x)
        else:
            # Content features and (unweighted) style Grams of one image, traced per image size
            # (eager VGG costs about twice the traced forward pass).
            @tf.function(jit_compile=jit, autograph=False)
            def fn(x):
                feats = self.vgg(x)
                return ({name: tf.cast(feats[name], self.tf_dtype) for name in loss.content_layers},
                        {name: L.gram(feats[name], loss.gram) for name in loss.style_layers})
        self._fns[kind] = fn
        return fn

    def _optimize(self, optimizer: str, image: np.ndarray, targets, n: int, recorder: StepRecorder) -> np.ndarray:
        run = self._run_adam if optimizer == "adam" else self._run_lbfgs
        return run(self._tensor(image), targets, n, recorder)

    def _run_adam(self, x0, targets, n, recorder) -> np.ndarray:
        cfg = self.preset.gatys
        key = (tuple(x0.shape), cfg.adam, cfg.clamp)
        entry = self._adam_cache.get(key)
        if entry is None:
            xvar = tf.Variable(x0, trainable=True, name="image")
            opt = TorchAdam(cfg.adam, [xvar])

            at = clamp_points(cfg.clamp, "adam")

            @tf.function(jit_compile=self.jit_compile, autograph=False)
            def step_fn(var, content_t, grams):
                if at.before_eval:
                    var.assign(tf.clip_by_value(var, 0.0, 1.0))
                with tf.GradientTape() as tape:
                    terms = self._terms(var, content_t, grams)
                    total = terms[0]
                opt.apply([tape.gradient(total, var)])
                if at.after_update:      # the TF tutorial's image.assign(clip_0_1(image))
                    var.assign(tf.clip_by_value(var, 0.0, 1.0))
                return terms
            entry = (xvar, opt, step_fn)
            if len(self._adam_cache) >= 4:            # a few sizes (coarse-to-fine scales) at most
                self._adam_cache.pop(next(iter(self._adam_cache)))
            self._adam_cache[key] = entry
        else:
            entry[0].assign(x0)
            entry[1].reset()                          # a fresh Adam state for every run
        xvar, _, step_fn = entry
        run_deferred(n, lambda i: step_fn(xvar, *targets), _rows, recorder, lambda: xvar.numpy()[0])
        return xvar.numpy()[0]

    def _run_lbfgs(self, x0, targets, n, recorder) -> np.ndarray:
        fn = self._function("loss_grad")

        def fun(x):
            terms, g = fn(x, *targets)
            recorder.record(_rows([terms]), lambda: x.numpy()[0])
            return terms[0], g

        spec = self.preset.gatys.lbfgs
        size = int(np.prod(x0.shape))
        key = (size, x0.dtype)
        ws = self._lbfgs_cache.get(key)
        if ws is None or not ws.fits(size, x0.dtype, spec, n):
            # Rows for at least one full outer step, so that a short run (a warm-up) and a
            # longer one at the same size share the workspace and its traces.
            ws = lbfgs_workspace(size, x0.dtype, spec, max(n, spec.max_iter))
            self._lbfgs_cache.pop(key, None)
            if len(self._lbfgs_cache) >= 2:              # its history buffers are large: keep few
                self._lbfgs_cache.pop(next(iter(self._lbfgs_cache)))
            self._lbfgs_cache[key] = ws
        at = clamp_points(self.preset.gatys.clamp, "lbfgs")
        project = (lambda x: tf.clip_by_value(x, 0.0, 1.0)) if at.between_steps else None
        x, _ = lbfgs_minimize(fun, x0, spec, n, callback=lambda k, f: recorder.stopped, project=project,
                              workspace=ws, project_at="evaluation" if at.before_eval else "step")
        return x.numpy()[0]
