"""The ReReVST temporal term in TensorFlow: the core's warp plans (resty.temporal) applied to
NHWC tensors as a batched gather and a weighted sum (differentiable), and the loss of
resty.temporal.temporal_loss."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from resty.temporal import WarpPlan, plan_arrays

__all__ = ["WarpBatch", "apply_warp", "temporal_loss"]


class WarpBatch:
    """A batch of warp plans as tensors."""

    def __init__(self, plans: Sequence[WarpPlan], dtype):
        idx, wts, valid = plan_arrays(plans)
        self.index = tf.constant(idx)
        self.weights = tf.constant(wts, dtype=dtype)
        self.valid = tf.constant(valid, dtype=dtype)
        self.shape = plans[0].shape


def apply_warp(y, wb: WarpBatch):
    """``y`` (B, H, W, C) warped by each item's plan."""
    shape = tf.shape(y)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    flat = tf.reshape(y, (b, h * w, c))
    out = 0
    for k in range(4):
        g = tf.gather(flat, wb.index[:, k], batch_dims=1)
        out = out + g * tf.cast(wb.weights[:, k][:, :, None], y.dtype)
    return tf.reshape(out, shape)


def temporal_loss(net_fn: Callable, x, plans: Sequence[WarpPlan], noise: np.ndarray, y=None):
    """``Σ valid·(S(W(x) + n) − W(S(x)))² / (3 Σ valid)``; ``y``: ``S(x)`` when already computed."""
    idx, wts, valid = plan_arrays(plans)
    return temporal_loss_tensors(net_fn, x, idx, wts, valid, noise, y)


def temporal_loss_tensors(net_fn: Callable, x, index, weights, valid, noise, y=None):
    """:func:`temporal_loss` on the plans as tensors (resty.temporal.plan_arrays), for a traced step."""
    wb = WarpBatch.__new__(WarpBatch)
    wb.index = tf.convert_to_tensor(index, tf.int64)
    wb.weights = tf.convert_to_tensor(weights)
    wb.valid = tf.cast(tf.convert_to_tensor(valid), x.dtype)
    n = tf.cast(tf.convert_to_tensor(noise), x.dtype)
    y = net_fn(x) if y is None else y
    s_wx = net_fn(apply_warp(x, wb) + n)
    d = (s_wx - apply_warp(y, wb)) ** 2
    v = tf.reshape(wb.valid, (tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2], 1))
    return tf.reduce_sum(d * v) / (3.0 * tf.maximum(tf.reduce_sum(v), 1.0))
