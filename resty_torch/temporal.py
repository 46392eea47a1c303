"""The ReReVST temporal term in torch: the core's warp plans (resty.temporal) applied to NCHW
tensors as a gather and a weighted sum (differentiable), and the loss of resty.temporal.temporal_loss."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from resty.temporal import WarpPlan, plan_arrays

__all__ = ["WarpBatch", "apply_warp", "temporal_loss"]


class WarpBatch:
    """A batch of warp plans as tensors on ``device``."""

    def __init__(self, plans: Sequence[WarpPlan], device, dtype):
        idx, wts, valid = plan_arrays(plans)
        self.index = torch.as_tensor(idx, device=device)
        self.weights = torch.as_tensor(wts, device=device, dtype=dtype)
        self.valid = torch.as_tensor(valid, device=device, dtype=dtype)
        self.shape = plans[0].shape


def apply_warp(y: torch.Tensor, wb: WarpBatch) -> torch.Tensor:
    """``y`` (B, C, H, W) warped by each item's plan."""
    b, c, h, w = y.shape
    flat = y.reshape(b, c, h * w)
    out = 0
    for k in range(4):
        g = torch.gather(flat, 2, wb.index[:, k][:, None, :].expand(b, c, h * w))
        out = out + g * wb.weights[:, k][:, None, :].to(y.dtype)
    return out.reshape(b, c, h, w)


def temporal_loss(net_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, plans: Sequence[WarpPlan],
                  noise: np.ndarray, y: torch.Tensor = None) -> torch.Tensor:
    """``Σ valid·(S(W(x) + n) − W(S(x)))² / (3 Σ valid)``; ``y``: ``S(x)`` when already computed."""
    wb = WarpBatch(plans, x.device, x.dtype)
    n = torch.as_tensor(np.asarray(noise).transpose(0, 3, 1, 2), device=x.device, dtype=x.dtype)
    y = net_fn(x) if y is None else y
    s_wx = net_fn(apply_warp(x, wb) + n)
    d = (s_wx - apply_warp(y, wb)) ** 2
    v = wb.valid.reshape(x.shape[0], 1, x.shape[2], x.shape[3])
    return (d * v).sum() / (3.0 * v.sum().clamp_min(1.0))
