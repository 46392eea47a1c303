"""Gram, style, content and total-variation losses on NHWC tensors, from resty.losses.

Every normalisation constant is read from :mod:`resty.losses`; nothing is re-derived here.
Losses are computed in float32 (or float64 when the features are float64), never in half
precision: a raw Gram of ReLU features grows like H·W·|F|² and overflows float16 at moderate
sizes.  ``F`` is divided by ``sqrt(gram_divisor)`` *before* the product, and the squared Gram
difference is scaled by ``sqrt(style_scale)`` before squaring, so intermediate values stay
near the final loss's magnitude.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf

from resty import losses as conv
from resty.losses import LOSS_TERMS, weighted_terms
from resty.specs import LossSpec

__all__ = ["loss_dtype", "gram", "style_loss", "content_loss", "tv_loss", "total_loss", "LOSS_TERMS"]


def loss_dtype(x) -> tf.DType:
    """float64 stays float64; everything else (float32, bf16, fp16) is computed in float32."""
    return tf.float64 if x.dtype == tf.float64 else tf.float32


def _hw_c(f):
    s = f.shape
    if s[1] is not None and s[2] is not None and s[3] is not None:
        return int(s[1]), int(s[2]), int(s[3])
    d = tf.shape(f)
    return d[1], d[2], d[3]


def _factor(fn, convention, c, h, w, dtype):
    """A resty.losses factor as a tensor; static shapes give a Python constant."""
    if all(isinstance(v, int) for v in (c, h, w)):
        return tf.constant(fn(convention, c, h, w), dtype)
    # Dynamic shapes (unknown at trace time): evaluate the same formula on tensors.
    return tf.numpy_function(lambda cc, hh, ww: fn(convention, int(cc), int(hh), int(ww)),
                             [c, h, w], tf.float64, stateful=False)


def gram(f, convention: str):
    """(B, H, W, C) features -> (B, C, C) Gram matrices ``F Fᵀ / gram_divisor`` in float32+."""
    dt = loss_dtype(f)
    f = tf.cast(f, dt)
    h, w, c = _hw_c(f)
    div = tf.cast(_factor(conv.gram_divisor, convention, c, h, w, tf.float64), dt)
    m = tf.reshape(f, [tf.shape(f)[0], -1, tf.shape(f)[3]]) / tf.sqrt(div)   # (B, HW, C)
    return _gram(m)


@tf.custom_gradient
def _gram(m):
    """``mᵀ m`` per batch item; its gradient ``m (dG + dGᵀ)`` is one product where autodiff of
    ``matmul(m, m)`` makes two (one per operand) and adds them."""
    g = tf.matmul(m, m, transpose_a=True)

    def grad(dg):
        return tf.matmul(m, dg + tf.linalg.matrix_transpose(dg))
    return g, grad


def style_loss(f, target_gram, convention: str):
    """One layer's style loss, averaged over the batch; target (C, C) or (B, C, C)."""
    dt = loss_dtype(f)
    h, w, c = _hw_c(f)
    s = tf.cast(_factor(conv.style_scale, convention, c, h, w, tf.float64), dt)
    d = (gram(f, convention) - tf.cast(target_gram, dt)) * tf.sqrt(s)
    return tf.reduce_mean(tf.reduce_sum(tf.square(d), axis=[1, 2]))


def content_loss(f, target, convention: str):
    """One layer's content loss, averaged over the batch."""
    dt = loss_dtype(f)
    h, w, c = _hw_c(f)
    s = tf.cast(_factor(conv.content_scale, convention, c, h, w, tf.float64), dt)
    d = tf.cast(f, dt) - tf.cast(target, dt)
    return tf.reduce_mean(tf.reduce_sum(tf.square(d), axis=[1, 2, 3]) * s)


def tv_loss(x, convention: str):
    """Total variation of an NHWC image batch (RGB [0, 1]), averaged over the batch."""
    p, red = conv.tv_form(convention)
    x = tf.cast(x, loss_dtype(x))
    dh = x[:, 1:, :, :] - x[:, :-1, :, :]
    dw = x[:, :, 1:, :] - x[:, :, :-1, :]
    r = tf.reduce_sum if red == "sum" else tf.reduce_mean
    f = tf.square if p == 2 else tf.abs
    return tf.reduce_mean(r(f(dh), axis=[1, 2, 3]) + r(f(dw), axis=[1, 2, 3]))


def total_loss(features: Mapping[str, tf.Tensor], image, loss: LossSpec,
               content_targets: Mapping[str, tf.Tensor], style_grams: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """resty.losses.weighted_terms as one tensor ``[total, content, style, tv]`` (LOSS_TERMS), in
    float64 for float64 features, else float32.  ``features`` must hold every loss layer."""
    dt = loss_dtype(next(iter(features.values())))
    return tf.stack(weighted_terms(loss, features, image, content_targets, style_grams, content_loss=content_loss,
                                   style_loss=style_loss, tv_loss=lambda x, c: tv_loss(tf.cast(x, dt), c),
                                   zero=tf.zeros([], dt)))
