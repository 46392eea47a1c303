"""NumPy float64 oracle of the arbitrary-image stylization networks (:mod:`resty.arbitrary`).

Both backends are tested against these functions.  Arrays are NCHW inside; images come in as
(B, H, W, 3) or (H, W, 3) RGB in [0, 1].  Tensors are the canonical ones (the full prefixed
dict of an ``"arbitrary"`` weight set, or the predictor's / transfer's own unprefixed dict).
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .arbitrary import (QDQ, PredictorSpec, TransferSpec, fake_quantize, predictor_blocks, same_padding,
                        split_tensors, transfer_layers)
from .reference import as_batch, conv2d, pad, relu, upsample_nearest2x

__all__ = ["depthwise_conv2d", "relu6", "predictor_forward", "embedding_norm_params", "embedding_instance_norm",
           "quantized_embedding_instance_norm", "transfer_forward", "calibrate_quantization"]

Array = np.ndarray


def relu6(x: Array) -> Array:
    return np.minimum(np.maximum(x, 0.0), 6.0)


def depthwise_conv2d(x: Array, w: Array, b=None, stride: int = 1) -> Array:
    """Per-channel cross-correlation of (already padded) NCHW ``x`` with a (C, 1, k, k) kernel."""
    c, one, kh, kw = w.shape
    if one != 1 or x.shape[1] != c:
        raise ValueError(f"depthwise_conv2d: input has {x.shape[1]} channels, kernel {w.shape}")
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]   # B,C,Ho,Wo,kh,kw
    out = np.einsum("bchwij,cij->bchw", win, w[:, 0])
    if b is not None:
        out = out + b[None, :, None, None]
    return np.ascontiguousarray(out)


def _same(x: Array, k: int, s: int) -> Array:
    t, bt = same_padding(x.shape[2], k, s)
    l, r = same_padding(x.shape[3], k, s)
    return pad(x, t, bt, l, r, "zeros")


def _tensors(weights: Mapping[str, Array], which: str):
    if any(k.startswith(which + ".") for k in weights):
        weights = split_tensors(weights)[0 if which == "predictor" else 1]
    return {k: np.asarray(v, np.float64) for k, v in weights.items()}


def _quantizer(quant: Optional[Mapping[str, QDQ]], trace: Optional[dict] = None):
    """``q(position, x)``: fake-quantize where ``quant`` names the position, else identity;
    ``trace`` (a dict) records every position's value (after its quantization)."""
    quant = dict(quant or {})

    def q(name, x):
        y = fake_quantize(x, quant[name]) if name in quant else x
        if trace is not None:
            trace[name] = y
        return y
    return q


def predictor_forward(img01: Array, weights: Mapping[str, Array], spec: PredictorSpec,
                      quant: Optional[Mapping[str, QDQ]] = None, trace: Optional[dict] = None) -> Array:
    """Style images (B, H, W, 3) in [0, 1] -> style embeddings (B, style_dim).  The caller
    resizes to ``spec.image_size`` (resty.images / the stylizer); any size runs.  ``quant``:
    the predictor's activation quantization ({position: QDQ},
    :func:`resty.arbitrary.predictor_quant_positions`), None for the float network; ``trace``: a
    dict receiving each position's value (NCHW)."""
    W = _tensors(weights, "predictor")
    q = _quantizer(quant, trace)
    act = relu6 if spec.activation == "relu6" else relu
    k = spec.kernel
    x = q("input", as_batch(img01).transpose(0, 3, 1, 2))
    h = q("stem", act(conv2d(_same(x, k, 2), W["stem.weight"], W["stem.bias"], 2)))
    for b in predictor_blocks(spec):
        y = h
        if b.expand:
            y = q(f"{b.name}.expand", act(conv2d(y, W[f"{b.name}.expand.weight"], W[f"{b.name}.expand.bias"])))
        y = q(f"{b.name}.depthwise", act(depthwise_conv2d(_same(y, k, b.stride), W[f"{b.name}.depthwise.weight"],
                                                          W[f"{b.name}.depthwise.bias"], b.stride)))
        y = q(f"{b.name}.project", conv2d(y, W[f"{b.name}.project.weight"], W[f"{b.name}.project.bias"]))
        h = q(f"{b.name}.add", h + y) if b.residual else y
    h = q("head", act(conv2d(h, W["head.weight"], W["head.bias"])))
    pooled = q("pool", h.mean(axis=(2, 3)))                         # (B, head)
    return q("embed", pooled @ W["embed.weight"].T + W["embed.bias"])


def embedding_norm_params(W: Mapping[str, Array], layer: str, embedding: Array):
    """(gamma, beta), each (B, C): the norm's linear maps of the (B, style_dim) embeddings."""
    e = np.asarray(embedding, np.float64)
    gamma = e @ W[f"{layer}.norm.gamma.weight"].T + W[f"{layer}.norm.gamma.bias"]
    beta = e @ W[f"{layer}.norm.beta.weight"].T + W[f"{layer}.norm.beta.bias"]
    return gamma, beta


def embedding_instance_norm(x: Array, gamma: Array, beta: Array, eps: float) -> Array:
    """Instance norm (biased variance) with per-image affine parameters (B, C)."""
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma[:, :, None, None] + beta[:, :, None, None]


def quantized_embedding_instance_norm(x: Array, gamma: Array, beta: Array, eps: float, q, layer: str) -> Array:
    """The norm as the int8 originals compute it (TF's batch_normalization, every step
    quantized where ``q`` says): ``s = gamma * rsqrt(var + eps)``, ``y = x * s + (beta - mean * s)``
    with ``var`` the mean of the quantized squared deviations from the quantized mean."""
    n = f"{layer}.norm."
    mean = q(n + "mean", x.mean(axis=(2, 3), keepdims=True))
    d = x - mean
    var = q(n + "var", q(n + "sqdiff", d * d).mean(axis=(2, 3), keepdims=True))
    r = q(n + "rsqrt", 1.0 / np.sqrt(q(n + "var_eps", var + eps)))
    s = q(n + "scale", r * gamma[:, :, None, None])
    shift = q(n + "shift", beta[:, :, None, None] - q(n + "mean_scale", mean * s))
    return q(n + "x_scale", x * s) + shift


def _embeddings(embedding, batch: int, dim: int) -> Array:
    e = np.asarray(embedding, np.float64)
    if e.ndim == 1:
        e = e[None]
    e = e.reshape(e.shape[0], -1)
    if e.shape[1] != dim or e.shape[0] not in (1, batch):
        raise ValueError(f"embedding: expected ({dim},) or ({batch}, {dim}), got shape {np.shape(embedding)}")
    return np.broadcast_to(e, (batch, dim))


def transfer_forward(img01: Array, embedding: Array, weights: Mapping[str, Array], spec: TransferSpec,
                     quant: Optional[Mapping[str, QDQ]] = None, trace: Optional[dict] = None) -> Array:
    """Content images (B, H, W, 3) in [0, 1] and style embeddings ((style_dim,) for all, or
    (B, style_dim)) -> stylized (B, H, W, 3) in [0, 1].  Reflect-pad bottom/right to a multiple
    of 4, the layers of :func:`resty.arbitrary.transfer_layers`, crop, sigmoid.  ``quant``: the
    transfer network's activation quantization (:func:`resty.arbitrary.transfer_quant_positions`);
    with it (or a ``trace``) the norms run as :func:`quantized_embedding_instance_norm`."""
    W = _tensors(weights, "transfer")
    q = _quantizer(quant, trace)
    x = as_batch(img01).transpose(0, 3, 1, 2)
    bsz, _, h0, w0 = x.shape
    if min(h0, w0) < spec.kernel_in // 2 + 1:
        raise ValueError(f"transfer input: sides must be >= {spec.kernel_in // 2 + 1} px, got {h0}x{w0}")
    e = q("embedding", _embeddings(embedding, bsz, spec.style_dim))
    m = spec.size_multiple
    h = pad(x, 0, (-h0) % m, 0, (-w0) % m, "reflect")
    defs = {l.name: l for l in transfer_layers(spec)}

    def apply(h, l):
        if l.upsample:
            h = upsample_nearest2x(h)
        p = l.kernel // 2
        h = q(f"{l.name}.pad", pad(h, p, p, p, p, "reflect"))
        h = conv2d(h, W[f"{l.name}.weight"], W[f"{l.name}.bias"], l.stride)
        if l.norm:
            g, b = embedding_norm_params(W, l.name, e)
            if quant or trace is not None:
                h = quantized_embedding_instance_norm(q(f"{l.name}.conv", h), q(f"{l.name}.norm.gamma", g),
                                                      q(f"{l.name}.norm.beta", b), spec.norm_eps, q, l.name)
            else:
                h = embedding_instance_norm(h, g, b, spec.norm_eps)
        return q(f"{l.name}.out", relu(h) if l.relu else h)

    for name in ("conv_in", "down1", "down2"):
        h = apply(h, defs[name])
    for i in range(1, spec.residual_blocks + 1):
        h = q(f"res{i}.add", h + apply(apply(h, defs[f"res{i}.conv1"]), defs[f"res{i}.conv2"]))
    for name in ("up1", "up2", "conv_out"):
        h = apply(h, defs[name])
    y = q("output", 1.0 / (1.0 + np.exp(-h[:, :, :h0, :w0])))
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1))


def calibrate_quantization(style01: Array, content01: Array, weights: Mapping[str, Array], spec,
                           kind: str = "int8"):
    """An :class:`~resty.arbitrary.ActivationQuantization` for any (e.g. random) networks: each
    position's scale and zero point from the range the float network reaches on one style and
    one content batch (min(0, lo)..max(0, hi) over the type's 256 levels), as a post-training
    quantizer calibrates.  For tests and parity rows; the int8 originals bring their own."""
    from .arbitrary import QUANT_TYPES, ActivationQuantization
    qmin, qmax = QUANT_TYPES[kind]
    table = {}
    for which, run in (("predictor", lambda tr: predictor_forward(style01, weights, spec.predictor, trace=tr)),
                       ("transfer", lambda tr: transfer_forward(
                           content01, predictor_forward(style01, weights, spec.predictor)[:1], weights,
                           spec.transfer, trace=tr))):
        trace: dict = {}
        run(trace)
        for name, v in trace.items():
            lo, hi = min(0.0, float(np.min(v))), max(0.0, float(np.max(v)))
            scale = float(np.float32(max(hi - lo, 1e-6) / (qmax - qmin)))
            zp = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
            table[f"{which}.{name}"] = [scale, zp, qmin, qmax]
    return ActivationQuantization.from_dict(table, spec)
