"""Gatys et al. 2015 in PyTorch: the framework operations behind resty.gatys.GatysStylizerBase
(VGG features, the loss and its gradient, torch's Adam and L-BFGS on the host, and the
device-resident optimisers, optionally as one captured CUDA graph per iteration)."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from resty.gatys import GatysStylizerBase, StepRecorder, check_history_memory, clamp_points, run_deferred
from resty.runtime import warn_cpu_half_precision

from . import losses as L
from ._util import to_hwc, to_nchw
from .device import autocast, autocast_dtype, resolve_device, resolve_dtype
from .optim import DeviceAdam, DeviceLBFGS, lbfgs_outer_steps, make_adam, make_lbfgs
from .vgg import VGGFeatures, loss_network_weights

__all__ = ["GatysStylizer"]


class _Stop(Exception):
    """Raised inside an L-BFGS closure when the callback asks to stop."""


def _rows(handles) -> np.ndarray:
    """Pending ``[total, content, style, tv]`` tensors, read back in one host sync."""
    return torch.stack(list(handles)).to("cpu", torch.float64).numpy()


class GatysStylizer(GatysStylizerBase):
    """Neural style transfer by optimisation (Gatys, Ecker, Bethge 2015).

    Everything (layers, loss conventions, optimiser, init, sizes) comes from the preset;
    keyword arguments of :meth:`stylize` override single settings for one call."""

    def __init__(self, preset="gatys2015", weights="imagenet", device=None, dtype="float32",
                 precision=None, compile=False, channels_last=False, cuda_graph=False,
                 checkpoint=False, history_size=None, fast=False):
        """``precision`` 'bf16'/'fp16' runs VGG in mixed precision (Grams and losses stay
        float32); ``cuda_graph``, ``checkpoint``, ``history_size``, ``channels_last``, ``compile``
        and ``fast`` trade memory and speed (docs/BACKEND_API.md), not results."""
        if fast:
            cuda_graph = True
            channels_last = channels_last or resolve_device(device).type == "cuda"
        self.preset = self._resolve_preset(preset, history_size)
        self.history_size = self.preset.gatys.lbfgs.history_size if history_size is not None else None
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.precision = autocast_dtype(precision)
        if self.device.type == "cpu":
            warn_cpu_half_precision(precision)
        self.channels_last = bool(channels_last)
        self.cuda_graph = bool(cuda_graph)
        ws = loss_network_weights(weights, self.preset)
        self.vgg = VGGFeatures(self.preset.vgg.arch, ws, self.preset.vgg.pooling,
                               layers=self.preset.loss.all_layers, dtype=self.dtype, device=self.device)
        self.vgg.checkpoint = bool(checkpoint)
        if self.channels_last:
            self.vgg.to(memory_format=torch.channels_last)
        self._loss_fn = torch.compile(self._loss_eager) if compile else self._loss_eager
        self.history = []

    # ------------------------------------------------------------------ framework operations
    def _tensor(self, img: np.ndarray) -> torch.Tensor:
        return to_nchw(img, self.device, self.dtype, self.channels_last)

    @torch.no_grad()
    def _content_features(self, image: np.ndarray) -> Dict[str, torch.Tensor]:
        with autocast(self.device, self.precision):
            f = self.vgg(self._tensor(image), layers=self.preset.loss.content_layers)
        return {k: v.to(L.loss_dtype(v)) for k, v in f.items()}

    @torch.no_grad()
    def _grams_of(self, image: np.ndarray) -> Dict[str, torch.Tensor]:
        loss = self.preset.loss
        with autocast(self.device, self.precision):
            f = self.vgg(self._tensor(image), layers=loss.style_layers)
        return {name: L.gram(f[name], loss.gram)[0] for name in loss.style_layers}

    def _loss_eager(self, img: torch.Tensor, content_t, grams, cache: bool = True) -> torch.Tensor:
        with autocast(self.device, self.precision, cache=cache):
            feats = self.vgg(img)
        return L.total_loss(feats, img, self.preset.loss, content_t, grams)

    @torch.no_grad()
    def _evaluate(self, image: np.ndarray, targets) -> np.ndarray:
        return _rows([self._loss_fn(self._tensor(image), *targets)])[0]

    def _optimize(self, optimizer: str, image: np.ndarray, targets, n: int, recorder: StepRecorder) -> np.ndarray:
        img = self._tensor(image).detach().clone().requires_grad_(True)
        if self.cuda_graph and not (optimizer == "lbfgs" and self.preset.gatys.lbfgs.line_search):
            # DeviceLBFGS has no line search: a line-search L-BFGS runs torch's on the host.
            self._run_device(optimizer, img, targets, n, recorder)
        elif optimizer == "adam":
            self._run_adam(img, targets, n, recorder)
        else:
            self._run_lbfgs(img, targets, n, recorder)
        # The run's dtype (float64 stays float64); the core casts the result it returns.
        return img.detach().to("cpu").permute(0, 2, 3, 1).contiguous().numpy()[0]

    def _image_of(self, img: torch.Tensor):
        return lambda: to_hwc(img.detach())[0]

    def _run_adam(self, img, targets, n, recorder) -> None:
        at = clamp_points(self.preset.gatys.clamp, "adam")
        opt = make_adam([img], self.preset.gatys.adam, foreach=False)

        def step(i):
            if at.before_eval:
                with torch.no_grad():
                    img.clamp_(0.0, 1.0)
            opt.zero_grad(set_to_none=True)
            terms = self._loss_fn(img, *targets)
            terms[0].backward()
            opt.step()
            if at.after_update:
                with torch.no_grad():
                    img.clamp_(0.0, 1.0)
            return terms.detach()
        run_deferred(n, step, _rows, recorder, self._image_of(img))

    def _run_lbfgs(self, img, targets, n, recorder) -> None:
        spec = self.preset.gatys.lbfgs
        at = clamp_points(self.preset.gatys.clamp, "lbfgs")
        opt = make_lbfgs(img, spec)
        count = [0]

        def closure():
            if at.before_eval:      # the PyTorch tutorial's clamp_ inside the closure
                with torch.no_grad():
                    img.clamp_(0.0, 1.0)
            opt.zero_grad(set_to_none=True)
            terms = self._loss_fn(img, *targets)
            terms[0].backward()
            count[0] += 1
            # L-BFGS reads the loss on the host anyway: book every evaluation at once.
            if recorder.record(_rows([terms.detach()]), self._image_of(img)):
                raise _Stop
            return terms[0]

        def project():
            with torch.no_grad():
                img.clamp_(0.0, 1.0)

        try:
            lbfgs_outer_steps(opt, closure, spec, n, lambda: count[0], project if at.between_steps else None)
        except _Stop:
            pass

    # ------------------------------------------------------------------ device-resident loop
    # Iterations run eagerly before the capture (on a side stream, as CUDA graphs require:
    # cuDNN/cuBLAS pick their algorithms and workspaces there).  They are real iterations.
    _WARMUP = 3

    def _run_device(self, optimizer, img, targets, n, recorder) -> None:
        """``n`` evaluations with DeviceAdam/DeviceLBFGS; on CUDA one iteration is a replayed
        CUDA graph.  Same clamp points as the host loops (resty.gatys.clamp_points): before every
        evaluation, after every Adam update, between torch's outer L-BFGS steps (every
        ``max_iter`` updates and after the last)."""
        cfg = self.preset.gatys
        at = clamp_points(cfg.clamp, optimizer)
        ct, sg = targets
        if optimizer == "adam":
            opt = DeviceAdam([img], cfg.adam)
        else:
            if self.device.type == "cuda":
                check_history_memory(cfg.lbfgs.history_size, img.numel(), tuple(img.shape[-2:]),
                                     torch.cuda.mem_get_info(self.device)[0])
            opt = DeviceLBFGS(img, cfg.lbfgs)
        hist = torch.full((n, 4), float("nan"), dtype=L.loss_dtype(img), device=self.device)
        counter = torch.zeros(1, dtype=torch.long, device=self.device)
        use_graph = self.device.type == "cuda"

        def iteration():
            # With compile=True the compiled loss runs here: its kernels are compiled during the
            # eager warm-up iterations and then captured with the rest of the iteration.
            if at.before_eval:
                with torch.no_grad():
                    img.clamp_(0.0, 1.0)
            terms = self._loss_fn(img, ct, sg, cache=not use_graph)
            (grad,) = torch.autograd.grad(terms[0], img)
            with torch.no_grad():
                hist.index_copy_(0, counter, terms.detach()[None].to(hist.dtype))
                counter.add_(1)
                if optimizer == "adam":
                    opt.step([grad])
                    if at.after_update:
                        img.clamp_(0.0, 1.0)
                else:
                    opt.step(grad)

        def after(i: int) -> None:
            """Host-side work after iteration i (0-based): the L-BFGS projection."""
            if at.between_steps and ((i + 1) % cfg.lbfgs.max_iter == 0 or i + 1 == n):
                with torch.no_grad():
                    img.clamp_(0.0, 1.0)

        graph = [None]
        cur = torch.cuda.current_stream(self.device) if use_graph else None
        side = torch.cuda.Stream(self.device) if use_graph else None

        def step(i):
            if use_graph and graph[0] is None and i >= self._WARMUP and n - i > 1:
                graph[0] = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph[0]):
                    iteration()        # recorded, not run: the replay below runs it
            if graph[0] is not None:
                graph[0].replay()
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
            return hist[i]
        run_deferred(n, step, _rows, recorder, self._image_of(img))
