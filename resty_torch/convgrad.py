"""A stride-1 convolution whose backward pass is made of forward convolutions (CPU training).

Why: on the CPU, torch's (oneDNN's) convolution backward is slow for few channels (the
transformer's 9x9 output conv, 32 -> 3 channels), several times slower than the same sums as
forward convolutions (benchmarks/ measures it).  The same sums in another order: gradients agree
with autograd's to float rounding (tests/test_torch_conv_grads.py).

    dx = conv2d(pad(dy, k-1), W rotated by 180 degrees, in/out channels swapped)
    dW = conv2d with the batch and channel axes swapped: x as the image and dy as the kernel,
         or (fewer output than input channels: the wider matrix product) dy, zero-padded by
         k-1, as the image and x as the kernel, the result rotated by 180 degrees.

Used by resty_torch.transformer.ConvLayer on the CPU (``conv_grads="auto"``); cuDNN's backward
kernels are the right choice on a GPU, and autocast keeps the native path.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["conv2d_forward_grads"]


class _Conv2dForwardGrads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return F.conv2d(x, w, b)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        co, ci, kh, kw = w.shape
        full = (kw - 1, kw - 1, kh - 1, kh - 1)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = F.conv2d(F.pad(dy, full), w.flip(2, 3).transpose(0, 1))
        if ctx.needs_input_grad[1]:
            if co < ci:
                dw = F.conv2d(F.pad(dy.transpose(0, 1), full), x.transpose(0, 1)).flip(2, 3)
            else:
                dw = F.conv2d(x.transpose(0, 1), dy.transpose(0, 1)).transpose(0, 1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum((0, 2, 3))
        return dx, dw, db


def conv2d_forward_grads(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.conv2d(x, w, b)`` (stride 1, no padding, no groups) with forward-convolution gradients."""
    return _Conv2dForwardGrads.apply(x, w, b)
