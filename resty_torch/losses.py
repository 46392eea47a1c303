"""Loss conventions of :mod:`resty.losses`, in torch.

Every factor comes from ``resty.losses`` (gram_divisor, style_scale, content_scale, tv_form).
Grams and losses are always computed in float32 or float64, never in half precision: a raw
Gram of ReLU features grows like H·W·|F|² and overflows float16 (65504) at moderate sizes,
which is the classic "NaN in half precision" of style transfer.  So features are cast up,
and autocast is disabled inside these functions (autocast would cast ``bmm`` back down).
Scale factors are applied *before* squaring/multiplying (F / sqrt(divisor), (G−A)·sqrt(s))
so even float32 keeps a wide margin at large images.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from resty import losses as _conv
from resty.losses import LOSS_TERMS, weighted_terms
from resty.specs import LossSpec

__all__ = ["gram", "style_loss", "content_loss", "tv_loss", "total_loss", "loss_dtype", "LOSS_TERMS"]


def loss_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (float32, bf16, fp16) is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _no_autocast(t: torch.Tensor):
    return torch.autocast(device_type=t.device.type, enabled=False)


# Half-precision features are cast up to float32 this many elements at a time, so a Gram of
# a big bf16/fp16 layer never holds a float32 copy of the whole layer (at 2048 px relu1_1 is
# 1 GiB in float32).
_GRAM_CHUNK = 1 << 24


def _column_chunks(m: torch.Tensor):
    """Slices of the last axis of (B, C, N) holding about _GRAM_CHUNK elements each."""
    b, c, n = m.shape
    step = max(1, _GRAM_CHUNK // max(1, b * c))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


class _HalfGram(torch.autograd.Function):
    """``(a·M)(a·M)ᵀ`` in float32 for a half-precision (B, C, N) ``M``, saving only ``M`` itself
    (the layer's own activation, which autograd keeps anyway) instead of a float32 copy."""

    @staticmethod
    def forward(ctx, m: torch.Tensor, a: float) -> torch.Tensor:
        ctx.save_for_backward(m)
        ctx.a = a
        b, c, _ = m.shape
        g = torch.zeros((b, c, c), dtype=torch.float32, device=m.device)
        for sl in _column_chunks(m):
            part = m[:, :, sl].float() * a
            g.baddbmm_(part, part.transpose(1, 2))
        return g

    @staticmethod
    def backward(ctx, dg: torch.Tensor):
        (m,) = ctx.saved_tensors
        a = ctx.a
        sym = (dg + dg.transpose(1, 2)) * (a * a)          # d(M Mᵀ)/dM = (dG + dGᵀ) M
        dm = torch.empty_like(m)
        for sl in _column_chunks(m):
            dm[:, :, sl] = torch.bmm(sym, m[:, :, sl].float()).to(m.dtype)
        return dm, None


def gram(f: torch.Tensor, convention: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C): ``F Fᵀ / gram_divisor`` in float32 (float64 for float64 input)."""
    b, c, h, w = f.shape
    div = _conv.gram_divisor(convention, c, h, w)
    with _no_autocast(f):
        if f.dtype in (torch.float16, torch.bfloat16):
            return _HalfGram.apply(f.reshape(b, c, h * w), 1.0 / math.sqrt(div))
        m = f.to(loss_dtype(f)).reshape(b, c, h * w)
        if div != 1.0:
            m = m * (1.0 / math.sqrt(div))
        return torch.bmm(m, m.transpose(1, 2))


def style_loss(f: torch.Tensor, target_gram: torch.Tensor, convention: str) -> torch.Tensor:
    """One layer's style loss, averaged over the batch; ``target_gram`` (C, C) or (B, C, C)."""
    b, c, h, w = f.shape
    s = _conv.style_scale(convention, c, h, w)
    g = gram(f, convention)
    with _no_autocast(f):
        d = (g - target_gram.to(g.dtype)) * math.sqrt(s)
        return (d * d).sum(dim=(1, 2)).mean()


def content_loss(f: torch.Tensor, target: torch.Tensor, convention: str) -> torch.Tensor:
    """One layer's content loss, averaged over the batch."""
    b, c, h, w = f.shape
    s = _conv.content_scale(convention, c, h, w)
    with _no_autocast(f):
        dt = loss_dtype(f)
        d = (f.to(dt) - target.to(dt)) * math.sqrt(s)
        return (d * d).sum(dim=(1, 2, 3)).mean()


def tv_loss(x: torch.Tensor, convention: str) -> torch.Tensor:
    """Total variation of an NCHW batch, averaged over the batch."""
    p, red = _conv.tv_form(convention)
    with _no_autocast(x):
        x = x.to(loss_dtype(x))
        dh = x[:, :, 1:, :] - x[:, :, :-1, :]
        dw = x[:, :, :, 1:] - x[:, :, :, :-1]
        if p == 2:
            ah, aw = dh * dh, dw * dw
        else:
            ah, aw = dh.abs(), dw.abs()
        if red == "sum":
            return (ah.sum(dim=(1, 2, 3)) + aw.sum(dim=(1, 2, 3))).mean()
        return (ah.mean(dim=(1, 2, 3)) + aw.mean(dim=(1, 2, 3))).mean()


def total_loss(features: Mapping[str, torch.Tensor], image: torch.Tensor, loss: LossSpec,
               content_targets: Mapping[str, torch.Tensor], style_grams: Mapping[str, torch.Tensor]
               ) -> torch.Tensor:
    """resty.losses.weighted_terms as one tensor ``[total, content, style, tv]`` (LOSS_TERMS): one
    object to record per step, so an optimisation loop never reads four scalars back."""
    ref = next(iter(features.values()))
    zero = torch.zeros((), dtype=loss_dtype(ref), device=ref.device)
    return torch.stack(weighted_terms(loss, features, image, content_targets, style_grams, content_loss=content_loss,
                                      style_loss=style_loss, tv_loss=tv_loss, zero=zero))
