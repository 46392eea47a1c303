"""Arbitrary-image stylization (Ghiasi et al. 2017) in TensorFlow/Keras: the style predictor, the
transfer network and ``ArbitraryStylizer`` (twin of ``resty_torch.arbitrary``).  NHWC.  Built
from :mod:`resty.arbitrary`; must match :mod:`resty.reference_arbitrary`.

Padding is explicit everywhere (then VALID convs): the predictor's TF SAME zero padding via
``resty.arbitrary.same_padding``, the transfer net's reflection padding via ``tf.pad(REFLECT)``.
Nearest x2 is ``tf.repeat`` (bitwise equal to torch's).  Weights are kept in canonical layouts
converted once: conv kernels HWIO, depthwise kernels (k, k, C, 1), linear maps (in, out).
``quant`` ({position: QDQ}) switches on the int8 originals' activation fake-quantization
(:func:`fake_quantize`, the twin of ``resty_torch.arbitrary.fake_quantize``).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from resty.arbitrary import (QDQ, ArbitrarySpec, PredictorSpec, TransferSpec, predictor_param_shapes, same_padding,
                             split_tensors, transfer_layers, transfer_param_shapes_arbitrary, predictor_blocks)
from resty.arbitrary_stylizer import ArbitraryStylizerBase
from resty.errors import WeightsError

from .device import resolve_device
from .layers import reflection_pad, upsample_nearest2x

__all__ = ["StylePredictor", "ArbitraryTransferNet", "ArbitraryStylizer", "fake_quantize"]


def fake_quantize(x, q: QDQ):
    """ONNX QuantizeLinear -> DequantizeLinear (resty.arbitrary.fake_quantize): ``x / scale``,
    round half to even (tf.round), + zero point, saturate, - zero point, * scale."""
    s = tf.constant(q.scale, x.dtype)
    zp = tf.constant(q.zero_point, x.dtype)
    return (tf.clip_by_value(tf.round(x / s) + zp, float(q.qmin), float(q.qmax)) - zp) * s


class _Quant:
    def __init__(self, quant: Optional[Mapping[str, QDQ]]):
        self.table = {k: QDQ(*v) for k, v in (quant or {}).items()}

    def __call__(self, name: str, x):
        q = self.table.get(name)
        return x if q is None else fake_quantize(x, q)

    def __bool__(self):
        return bool(self.table)


def _to_tf(name: str, value: np.ndarray) -> np.ndarray:
    v = np.asarray(value)
    if v.ndim == 4 and ".depthwise." in name:
        return v.transpose(2, 3, 0, 1)             # (C, 1, k, k) -> (k, k, C, 1)
    if v.ndim == 4:
        return v.transpose(2, 3, 1, 0)             # OIHW -> HWIO
    if v.ndim == 2:
        return v.T                                 # (out, in) -> (in, out)
    return v


def _from_tf(name: str, value: np.ndarray) -> np.ndarray:
    v = np.asarray(value)
    if v.ndim == 4 and ".depthwise." in name:
        return v.transpose(2, 3, 0, 1)
    if v.ndim == 4:
        return v.transpose(3, 2, 0, 1)
    if v.ndim == 2:
        return v.T
    return v


class _Canonical(keras.Model):
    """One variable per canonical tensor (Keras layouts), keyed by canonical name."""

    _which = ""

    def _make(self, shapes: Dict[str, tuple], dtype: str, device: Optional[str]):
        self.device_name = resolve_device(device)
        self.var: Dict[str, tf.Variable] = {}
        with tf.device(self.device_name):
            for n, s in shapes.items():
                self.var[n] = tf.Variable(np.zeros(_to_tf(n, np.zeros(s)).shape), dtype=dtype, trainable=True,
                                          name=n.replace(".", "_"))
        self.shapes = shapes

    def state_dict_canonical(self) -> Dict[str, np.ndarray]:
        return {n: _from_tf(n, v.numpy()) for n, v in self.var.items()}

    def load_canonical(self, tensors) -> None:
        if hasattr(tensors, "tensors"):
            tensors = tensors.tensors
        if any(k.startswith(self._which + ".") for k in tensors):
            tensors = split_tensors(tensors)[0 if self._which == "predictor" else 1]
        missing = sorted(set(self.shapes) - set(tensors))
        if missing:
            raise WeightsError(f"{self._which} weights: missing {missing[:3]}")
        for n, s in self.shapes.items():
            t = np.asarray(tensors[n])
            if tuple(t.shape) != tuple(s):
                raise WeightsError(f"{self._which} weights: {n!r} has shape {t.shape}, expected {s}")
            self.var[n].assign(_to_tf(n, t).astype(self.var[n].dtype.as_numpy_dtype))


def _same_pad(x, k: int, s: int):
    t, b = same_padding(int(x.shape[1]), k, s)
    l, r = same_padding(int(x.shape[2]), k, s)
    return tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]]) if (t or b or l or r) else x


class StylePredictor(_Canonical):
    """NHWC RGB [0, 1] style images -> (B, style_dim) embeddings."""

    _which = "predictor"

    def __init__(self, spec: Optional[PredictorSpec] = None, tensors=None, dtype: str = "float32", device=None,
                 quant: Optional[Mapping[str, QDQ]] = None):
        super().__init__(dtype=dtype, name="style_predictor")
        self.spec = spec or PredictorSpec()
        self.quant = _Quant(quant)
        self._make(predictor_param_shapes(self.spec), dtype, device)
        self.blocks = predictor_blocks(self.spec)
        if tensors is not None:
            self.load_canonical(tensors)

    def _act(self, x):
        return tf.clip_by_value(x, 0.0, 6.0) if self.spec.activation == "relu6" else tf.nn.relu(x)

    def _conv(self, x, name, stride=1):
        return tf.nn.conv2d(x, self.var[f"{name}.weight"], stride, "VALID") + self.var[f"{name}.bias"]

    def call(self, x):
        V, k, q = self.var, self.spec.kernel, self.quant
        x = q("input", tf.cast(tf.convert_to_tensor(x), V["stem.bias"].dtype))
        h = q("stem", self._act(self._conv(_same_pad(x, k, 2), "stem", 2)))
        for b in self.blocks:
            y = q(f"{b.name}.expand", self._act(self._conv(h, f"{b.name}.expand"))) if b.expand else h
            y = tf.nn.depthwise_conv2d(_same_pad(y, k, b.stride), V[f"{b.name}.depthwise.weight"],
                                       [1, b.stride, b.stride, 1], "VALID") + V[f"{b.name}.depthwise.bias"]
            y = q(f"{b.name}.project", self._conv(q(f"{b.name}.depthwise", self._act(y)), f"{b.name}.project"))
            h = q(f"{b.name}.add", h + y) if b.residual else y
        h = q("head", self._act(self._conv(h, "head")))
        pooled = q("pool", tf.reduce_mean(h, axis=[1, 2]))
        return q("embed", tf.matmul(pooled, V["embed.weight"]) + V["embed.bias"])


class ArbitraryTransferNet(_Canonical):
    """``net(images01 NHWC, embedding (style_dim,) or (B, style_dim))`` -> NHWC in [0, 1]."""

    _which = "transfer"

    def __init__(self, spec: Optional[TransferSpec] = None, tensors=None, dtype: str = "float32", device=None,
                 quant: Optional[Mapping[str, QDQ]] = None):
        super().__init__(dtype=dtype, name="arbitrary_transfer")
        self.spec = spec or TransferSpec()
        self.quant = _Quant(quant)
        self._make(transfer_param_shapes_arbitrary(self.spec), dtype, device)
        self.defs = {d.name: d for d in transfer_layers(self.spec)}
        if tensors is not None:
            self.load_canonical(tensors)

    def _layer(self, h, name, e):
        d, V, q = self.defs[name], self.var, self.quant
        if d.upsample:
            h = upsample_nearest2x(h)
        p = d.kernel // 2
        h = q(f"{name}.pad", reflection_pad(h, p, p, p, p))
        h = tf.nn.conv2d(h, V[f"{name}.weight"], d.stride, "VALID") + V[f"{name}.bias"]
        if d.norm:
            g = tf.matmul(e, V[f"{name}.norm.gamma.weight"]) + V[f"{name}.norm.gamma.bias"]
            b = tf.matmul(e, V[f"{name}.norm.beta.weight"]) + V[f"{name}.norm.beta.bias"]
            eps = tf.constant(self.spec.norm_eps, h.dtype)
            if q:
                h = self._quantized_norm(q(f"{name}.conv", h), q(f"{name}.norm.gamma", g)[:, None, None, :],
                                         q(f"{name}.norm.beta", b)[:, None, None, :], eps, name)
            else:
                mean, var = tf.nn.moments(h, axes=[1, 2], keepdims=True)      # biased variance
                h = (h - mean) / tf.sqrt(var + eps)
                h = h * g[:, None, None, :] + b[:, None, None, :]
        return q(f"{name}.out", tf.nn.relu(h) if d.relu else h)

    def _quantized_norm(self, x, g, b, eps, layer):
        """The int8 originals' order (resty.reference_arbitrary.quantized_embedding_instance_norm)."""
        q, n = self.quant, f"{layer}.norm."
        mean = q(n + "mean", tf.reduce_mean(x, axis=[1, 2], keepdims=True))
        d = x - mean
        var = q(n + "var", tf.reduce_mean(q(n + "sqdiff", d * d), axis=[1, 2], keepdims=True))
        r = q(n + "rsqrt", 1.0 / tf.sqrt(q(n + "var_eps", var + eps)))
        s = q(n + "scale", r * g)
        shift = q(n + "shift", b - q(n + "mean_scale", mean * s))
        return q(n + "x_scale", x * s) + shift

    def call(self, x, embedding):
        spec = self.spec
        dt = self.var["conv_in.bias"].dtype
        x = tf.cast(tf.convert_to_tensor(x), dt)
        e = tf.reshape(tf.cast(tf.convert_to_tensor(embedding), dt), (-1, spec.style_dim))
        e = self.quant("embedding", tf.broadcast_to(e, (tf.shape(x)[0], spec.style_dim)))
        h0, w0 = tf.shape(x)[1], tf.shape(x)[2]
        m = spec.size_multiple
        h = tf.pad(x, [[0, 0], [0, (-h0) % m], [0, (-w0) % m], [0, 0]], mode="REFLECT")
        for n in ("conv_in", "down1", "down2"):
            h = self._layer(h, n, e)
        for i in range(1, spec.residual_blocks + 1):
            h = self.quant(f"res{i}.add", h + self._layer(self._layer(h, f"res{i}.conv1", e), f"res{i}.conv2", e))
        for n in ("up1", "up2", "conv_out"):
            h = self._layer(h, n, e)
        return self.quant("output", tf.sigmoid(h[:, :h0, :w0, :]))


class ArbitraryStylizer(ArbitraryStylizerBase):
    """Twin of ``resty_torch.ArbitraryStylizer``: any image as the style."""

    def __init__(self, model="arbitrary", *, device=None, dtype: str = "float32", spec: Optional[ArbitrarySpec] = None,
                 activation_quantization: bool = False):
        from resty.models_arbitrary import arbitrary_weights
        ws = arbitrary_weights(model, spec)
        self.weights, self.spec = ws, ws.spec
        self.device = resolve_device(device)
        self.dtype = dtype
        aq = self._quant_table(activation_quantization)
        p, t = split_tensors(ws.tensors)
        self.predictor = StylePredictor(self.spec.predictor, p, dtype=dtype, device=self.device,
                                        quant=aq and aq.of("predictor"))
        self.transfer = ArbitraryTransferNet(self.spec.transfer, t, dtype=dtype, device=self.device,
                                             quant=aq and aq.of("transfer"))

    def _embed(self, batch):
        with tf.device(self.device):
            return self.predictor(np.asarray(batch, self.dtype)).numpy().astype(np.float64)

    def _transfer(self, image, embedding):
        with tf.device(self.device):
            y = self.transfer(np.asarray(image, self.dtype)[None], np.asarray(embedding, self.dtype))
        return y[0].numpy().astype(np.float32)
