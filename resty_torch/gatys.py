"""Gatys et al. 2015: optimise the pixels of an image against VGG content and style losses."""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from resty import gatys, inputs, runtime
from resty.errors import RestyError, TrainingError
from resty.images import preserve_color as _preserve_color, resize_to
from resty.presets import Preset, resolve

from . import losses as L
from ._util import to_hwc, to_nchw
from .device import autocast, autocast_dtype, resolve_device, resolve_dtype
from .optim import DeviceAdam, DeviceLBFGS, lbfgs_outer_steps, make_adam, make_lbfgs
from .vgg import VGGFeatures, loss_network_weights

__all__ = ["GatysStylizer"]

# Adam runs without host syncs; the loss history lives on the device and is checked for
# NaN/inf every this many steps (and at the end), so a divergence stops within a few steps
# and is reported with the exact first bad step.
_CHECK_EVERY = 25


def check_history_memory(history: int, pixels3: int, hw, free_bytes: int) -> None:
    """DeviceLBFGS preallocates its history (2·history float32 vectors of the image's size).
    Refuse up front, with the fix, when that would take more than half the free GPU memory,
    rather than failing with an out-of-memory error inside the run."""
    need = 2 * history * pixels3 * 4
    if need > 0.5 * free_bytes:
        raise RestyError(f"L-BFGS history of {history} pairs at {hw[0]}x{hw[1]} px needs {need / 2**30:.1f} GiB "
                         f"of GPU memory ({free_bytes / 2**30:.1f} GiB free): pass history_size=10 (or smaller "
                         f"images, or cuda_graph=False)")


class _Stop(Exception):
    """Raised inside an L-BFGS closure when the callback asks to stop."""


_MAX_LS = 25      # torch.optim.LBFGS's strong-Wolfe line search: at most 25 evaluations


class GatysStylizer:
    """Neural style transfer by optimisation (Gatys, Ecker, Bethge 2015).

    Everything (layers, loss conventions, optimiser, init, sizes) comes from the preset;
    keyword arguments of :meth:`stylize` override single settings for one call."""

    def __init__(self, preset="gatys2015", weights="imagenet", device=None, dtype="float32",
                 precision=None, compile=False, channels_last=False, cuda_graph=False,
                 checkpoint=False, history_size=None, fast=False):
        """``precision`` 'bf16'/'fp16' runs VGG in mixed precision (Grams and losses stay float32).

        Speed and memory options (same results up to float rounding):

        * ``cuda_graph=True``: the optimiser state lives on the device (:class:`DeviceAdam`,
          :class:`DeviceLBFGS`: no host round trip per iteration) and, on CUDA, one whole
          iteration (VGG forward, backward, update) is captured in a CUDA graph and replayed.
          On the CPU the same device optimisers run eagerly.
          With ``compile=True`` too, the torch.compile'd loss is what gets captured (checked on
          the CPU to equal the eager path; not yet timed on a GPU).
        * ``checkpoint=True``: activation checkpointing per VGG block; peak memory of about one
          block's activations for ~1 extra forward per iteration (large images).
        * ``history_size``: L-BFGS history (default: the preset's).  With ``cuda_graph`` it is
          preallocated, 2·history·pixels·3 floats (100 pairs at 2048 px: 10 GB).
        * ``fast=True``: ``cuda_graph`` plus, on CUDA, ``channels_last`` (what measured fastest
          on an H200: 500 iterations at 512 px in 1.8-2.5 s against the PyTorch tutorial's
          7.9 s).  Precision is left to the caller: bf16 with Adam at lr 1e-3 does not descend
          (its rounding noise is larger than the steps); L-BFGS is fine in bf16.
        """
        if fast:
            cuda_graph = True
            channels_last = channels_last or resolve_device(device).type == "cuda"
        self.preset: Preset = resolve(preset)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.precision = autocast_dtype(precision)
        if self.device.type == "cpu":
            runtime.warn_cpu_half_precision(precision)
        self.channels_last = bool(channels_last)
        self.cuda_graph = bool(cuda_graph)
        self.history_size = None if history_size is None else int(history_size)
        if self.history_size is not None and self.history_size < 1:
            raise ValueError(f"history_size: got {history_size!r}; must be >= 1")
        ws = loss_network_weights(weights, self.preset)
        self.vgg = VGGFeatures(self.preset.vgg.arch, ws, self.preset.vgg.pooling,
                               layers=self.preset.loss.all_layers, dtype=self.dtype, device=self.device)
        self.vgg.checkpoint = bool(checkpoint)
        if self.channels_last:
            self.vgg.to(memory_format=torch.channels_last)
        self._loss_fn = torch.compile(self._loss_eager) if compile else self._loss_eager
        self.history: List[Dict] = []

    # ------------------------------------------------------------------ pieces
    def _tensor(self, img: np.ndarray) -> torch.Tensor:
        return to_nchw(img, self.device, self.dtype, self.channels_last)

    @torch.no_grad()
    def _targets(self, content: np.ndarray, styles: Sequence[np.ndarray], blend: Sequence[float]):
        """Content features and blended style Grams, computed once per scale (no grad)."""
        loss = self.preset.loss
        content_t: Dict[str, torch.Tensor] = {}
        if loss.content_layers:
            with autocast(self.device, self.precision):
                f = self.vgg(self._tensor(content), layers=loss.content_layers)
            content_t = {k: v.to(L.loss_dtype(v)) for k, v in f.items()}
        grams: Dict[str, torch.Tensor] = {}
        if loss.style_layers:
            for s, w in zip(styles, blend):
                with autocast(self.device, self.precision):
                    f = self.vgg(self._tensor(s), layers=loss.style_layers)
                for l in loss.style_layers:
                    g = L.gram(f[l], loss.gram)[0] * w
                    grams[l] = g if l not in grams else grams[l] + g
        return content_t, grams

    def _loss_eager(self, img: torch.Tensor, content_t, grams, cache: bool = True) -> torch.Tensor:
        with autocast(self.device, self.precision, cache=cache):
            feats = self.vgg(img)
        return L.total_loss(feats, img, self.preset.loss, content_t, grams)

    # ------------------------------------------------------------------ public
    def loss_terms(self, image, content, style, style_weights=None) -> Dict[str, float]:
        """The loss terms of ``image`` against ``content`` and ``style`` at their own sizes
        (no resizing): ``{'total', 'content', 'style', 'tv'}`` as floats (for parity tests)."""
        img = inputs.load_rgb(image)
        c = inputs.load_rgb(content)
        styles, blend = inputs.prepare_styles(style, style_weights)
        ct, sg = self._targets(c, styles, blend)
        with torch.no_grad():
            terms = self._loss_fn(self._tensor(img), ct, sg)
        return dict(zip(L.TERMS, (float(v) for v in terms.cpu())))

    def stylize(self, content, style, *, iterations=None, seed=None, style_weights=None,
                image_size=None, init=None, preserve_color=False, callback=None, progress=False,
                optimizer=None, scales=None, style_scale=None) -> np.ndarray:
        """Stylise ``content`` with ``style`` (one image or a list blended by
        ``style_weights``).  Returns H×W×3 float32 in [0, 1] at the content's size, or with
        longest side ``image_size`` (default: the preset's; 0 or a preset size of None keeps the
        content's size).

        ``iterations`` counts loss/gradient evaluations, split over the coarse-to-fine
        ``scales``.  ``callback(step, losses, image)`` is called after every evaluation and
        stops the run by returning True.  A non-finite loss raises TrainingError naming the
        step."""
        cfg = self.preset.gatys
        iterations = int(cfg.iterations if iterations is None else iterations)
        seed = cfg.init_seed if seed is None else int(seed)
        # None: the preset's size; 0: keep the content's size (same rule in resty_tf)
        image_size = cfg.image_size if image_size is None else (None if int(image_size) == 0 else int(image_size))
        init = cfg.init if init is None else init
        optimizer = cfg.optimizer if optimizer is None else optimizer
        scales = tuple(cfg.scales if scales is None else scales)
        style_scale = cfg.style_scale if style_scale is None else float(style_scale)
        if optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"optimizer: got {optimizer!r}; allowed: 'adam', 'lbfgs'")
        cfg = cfg.replace(scales=scales, iterations=max(1, iterations))   # validates scales

        _, content_img = gatys.prepare_content(content, image_size)
        styles, blend = inputs.prepare_styles(style, style_weights)
        plan = gatys.scale_plan(content_img.shape[:2], scales, iterations)
        self.history = []
        state = {"step": 0, "stop": False}
        x: Optional[np.ndarray] = None
        result: Optional[torch.Tensor] = None
        with runtime.Progress(iterations, progress, desc=f"gatys {optimizer}") as bar:
            for hw, n in plan:
                content_s = content_img if hw == content_img.shape[:2] else resize_to(content_img, hw)
                styles_s = [gatys.resize_style(s, hw, style_scale) for s in styles]
                if result is None:
                    x = gatys.init_image(init, content_s, styles[0], seed, cfg.noise_std)
                else:
                    x = resize_to(np.clip(to_hwc(result)[0], 0.0, 1.0), hw)
                if n == 0:
                    result = self._tensor(x)
                    continue
                ct, sg = self._targets(content_s, styles_s, blend)
                if self.cuda_graph and not (optimizer == "lbfgs" and self._lbfgs_spec().line_search):
                    # (DeviceLBFGS has no line search: a line-search L-BFGS runs torch's on the host)
                    run = functools.partial(self._run_device, optimizer)
                else:
                    run = self._run_adam if optimizer == "adam" else self._run_lbfgs
                result = run(self._tensor(x), ct, sg, n, state, callback, bar)
                if state["stop"]:
                    break
        out = np.clip(to_hwc(result)[0], 0.0, 1.0)
        if out.shape[:2] != content_img.shape[:2]:    # stopped early at a coarse scale
            out = resize_to(out, content_img.shape[:2])
        if preserve_color:
            out = _preserve_color(out, content_img)
        return out.astype(np.float32)

    # ------------------------------------------------------------------ optimisers
    def _lbfgs_spec(self):
        spec = self.preset.gatys.lbfgs
        return spec if self.history_size is None else spec.replace(history_size=self.history_size)

    def _record(self, hist: torch.Tensor, n: int, offset: int, hw) -> None:
        rows = hist[:n].detach().to("cpu", torch.float64).numpy()
        for i, r in enumerate(rows):
            self.history.append({"step": offset + i + 1, "size": list(hw),
                                 **{k: float(v) for k, v in zip(L.TERMS, r)}})

    def _progress(self, hist, i, n, last_checked, offset, bar, callback, img, state):
        """After step i (0-based) of n, every _CHECK_EVERY steps, at the end, or every step when
        there is a callback: the non-finite check, the progress bar and the callback (the only
        host reads of a device loop).  Returns (last_checked, stop)."""
        if callback is None and (i + 1) % _CHECK_EVERY and i + 1 != n:
            return last_checked, False
        self._check(hist, last_checked, i + 1, offset)
        if bar.bar is not None:
            bar.update(i + 1 - last_checked, dict(zip(L.TERMS, hist[i].tolist())))
        if callback is not None and callback(offset + i + 1, dict(zip(L.TERMS, hist[i].tolist())),
                                             np.clip(to_hwc(img.detach())[0], 0.0, 1.0)):
            state["stop"] = True
            return i + 1, True
        return i + 1, False

    @staticmethod
    def _check(hist: torch.Tensor, lo: int, hi: int, offset: int) -> None:
        """Raise for the first non-finite total in hist[lo:hi] (one host sync)."""
        bad = ~torch.isfinite(hist[lo:hi, 0])
        if bool(bad.any()):
            i = lo + int(bad.nonzero()[0, 0])
            raise TrainingError(runtime.nonfinite_message(float(hist[i, 0]), offset + i + 1))

    def _run_adam(self, img0, ct, sg, n, state, callback, bar) -> torch.Tensor:
        spec = self.preset.gatys.adam
        clamp = self.preset.gatys.clamp
        img = img0.detach().clone().requires_grad_(True)
        opt = make_adam([img], spec, foreach=False)
        hist = torch.empty((n, 4), dtype=L.loss_dtype(img), device=self.device)
        offset, hw = state["step"], tuple(img.shape[-2:])
        last_checked = 0
        done = n
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            terms = self._loss_fn(img, ct, sg)
            terms[0].backward()
            opt.step()
            if clamp:
                with torch.no_grad():
                    img.clamp_(0.0, 1.0)
            hist[i] = terms.detach()
            last_checked, stop = self._progress(hist, i, n, last_checked, offset, bar, callback, img, state)
            if stop:
                done = i + 1
                break
        self._record(hist, done, offset, hw)
        state["step"] = offset + done
        return img.detach()

    def _run_lbfgs(self, img0, ct, sg, n, state, callback, bar) -> torch.Tensor:
        spec = self._lbfgs_spec()
        clamp = self.preset.gatys.clamp
        img = img0.detach().clone().requires_grad_(True)
        opt = make_lbfgs(img, spec)
        # A strong-Wolfe line search can finish its last search past the budget (torch checks
        # max_eval after each search, and a search makes up to 25 evaluations).
        hist = torch.empty((n + (_MAX_LS if spec.line_search else 0), 4), dtype=L.loss_dtype(img), device=self.device)
        offset, hw = state["step"], tuple(img.shape[-2:])
        count = [0]

        def closure():
            opt.zero_grad(set_to_none=True)
            terms = self._loss_fn(img, ct, sg)
            terms[0].backward()
            k = count[0]
            hist[k] = terms.detach()
            count[0] = k + 1
            total = float(terms[0].detach())   # L-BFGS reads the loss on the host anyway
            runtime.check_finite(total, offset + k + 1)
            if bar.bar is not None:
                bar.update(1, dict(zip(L.TERMS, hist[k].tolist())))
            if callback is not None and callback(offset + k + 1, dict(zip(L.TERMS, hist[k].tolist())),
                                                 np.clip(to_hwc(img)[0], 0.0, 1.0)):
                raise _Stop
            return terms[0]

        def project():
            with torch.no_grad():
                img.clamp_(0.0, 1.0)

        try:
            lbfgs_outer_steps(opt, closure, spec, n, lambda: count[0], project if clamp else None)
        except _Stop:
            state["stop"] = True
        self._record(hist, count[0], offset, hw)
        state["step"] = offset + count[0]
        return img.detach()

    # ------------------------------------------------------------------ device-resident loop
    # Iterations run eagerly before the capture (on a side stream, as CUDA graphs require:
    # cuDNN/cuBLAS pick their algorithms and workspaces there).  They are real iterations.
    _WARMUP = 3

    def _run_device(self, optimizer, img0, ct, sg, n, state, callback, bar) -> torch.Tensor:
        """``n`` evaluations with DeviceAdam/DeviceLBFGS; on CUDA one iteration is a replayed
        CUDA graph.  Same schedule as the host loops: Adam clamps after every step, L-BFGS
        between torch's outer steps (every ``max_iter`` updates and after the last)."""
        cfg = self.preset.gatys
        clamp = cfg.clamp
        img = img0.detach().clone().requires_grad_(True)
        if optimizer == "adam":
            opt = DeviceAdam([img], cfg.adam)
        else:
            spec = self._lbfgs_spec()
            if self.device.type == "cuda":
                check_history_memory(spec.history_size, img.numel(), tuple(img.shape[-2:]),
                                     torch.cuda.mem_get_info(self.device)[0])
            opt = DeviceLBFGS(img, spec)
        hist = torch.full((n, 4), float("nan"), dtype=L.loss_dtype(img), device=self.device)
        counter = torch.zeros(1, dtype=torch.long, device=self.device)
        offset, hw = state["step"], tuple(img.shape[-2:])
        use_graph = self.device.type == "cuda"

        def iteration():
            # With compile=True the compiled loss runs here: its kernels are compiled during the
            # eager warm-up iterations and then captured with the rest of the iteration.
            terms = self._loss_fn(img, ct, sg, cache=not use_graph)
            (grad,) = torch.autograd.grad(terms[0], img)
            with torch.no_grad():
                hist.index_copy_(0, counter, terms.detach()[None].to(hist.dtype))
                counter.add_(1)
                if optimizer == "adam":
                    opt.step([grad])
                    if clamp:
                        img.clamp_(0.0, 1.0)
                else:
                    opt.step(grad)

        def after(i: int) -> None:
            """Host-side work after iteration i (0-based): L-BFGS projection, checks, callback."""
            if optimizer == "lbfgs" and clamp and ((i + 1) % cfg.lbfgs.max_iter == 0 or i + 1 == n):
                with torch.no_grad():
                    img.clamp_(0.0, 1.0)

        graph = None
        last_checked = 0
        done = n
        cur = torch.cuda.current_stream(self.device) if use_graph else None
        side = torch.cuda.Stream(self.device) if use_graph else None
        for i in range(n):
            if use_graph and graph is None and i >= self._WARMUP and n - i > 1:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    iteration()        # recorded, not run: the replay below runs it
            if graph is not None:
                graph.replay()
                after(i)
            elif use_graph:
                side.wait_stream(cur)
                with torch.cuda.stream(side):
                    iteration()
                    after(i)
                cur.wait_stream(side)
            else:
                iteration()
                after(i)
            last_checked, stop = self._progress(hist, i, n, last_checked, offset, bar, callback, img, state)
            if stop:
                done = i + 1
                break
        del graph
        self._record(hist, done, offset, hw)
        state["step"] = offset + done
        return img.detach()
