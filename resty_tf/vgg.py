"""VGG16/VGG19 feature extractor built from the core's layer table (NHWC, Keras 3)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from resty.specs import VGGSpec, vgg_layer_names, vgg_truncate
from resty.weights import WeightSet, from_keras_kernel, resolve_loss_network, to_keras_kernel

from .device import assert_compute_dtype, dtype_policy, resolve_device

__all__ = ["VGGFeatures"]


class VGGFeatures(keras.Model):
    """VGG features by layer name, from canonical weights; frozen.

    ``VGGFeatures(arch, weights, pooling, layers, dtype, device)`` as in docs/BACKEND_API.md.
    ``layers`` are the names returned (None: every layer of the table); the network is cut
    after the deepest.  Each conv is 3x3 stride 1 SAME, which pads (1, 1) on both sides: the
    same numbers as torch's padding=1 (:func:`_conv3x3`).  Pooling is 2x2/2, max or average (floor mode, no padding,
    so torch's count_include_pad question does not arise).

    ``preprocessing`` (keyword, extension) picks the preprocessing that *random* weights get
    (a preset's ``preprocessing_name``); real weights always carry their own.
    ``precision`` ("bf16"/"fp16") computes the convolutions in half precision; callers compute
    Grams and losses in float32 (resty_tf.losses does).
    """

    def __init__(self, arch: str = "vgg19", weights="imagenet", pooling: str = "max",
                 layers: Optional[Sequence[str]] = None, dtype: str = "float32", device=None, *,
                 preprocessing=None, precision=None, name: Optional[str] = None):
        policy = dtype_policy(dtype, precision)
        super().__init__(dtype=policy, name=name or f"{arch}_features")
        self.spec = VGGSpec(arch, pooling)
        self.layer_names_out = tuple(layers) if layers is not None else vgg_layer_names(arch)
        self.table = vgg_truncate(arch, self.layer_names_out)
        self.device = resolve_device(device)
        self.resty_dtype = dtype
        ws = _resolve_vgg(weights, arch, preprocessing)
        self.weight_source = ws.source
        self.preprocessing = ws.preprocessing
        self.convs: Dict[str, keras.layers.Conv2D] = {}
        kflip: Dict[str, tf.Variable] = {}
        with tf.device(self.device):
            for layer in self.table:
                if layer.kind == "conv":
                    conv = keras.layers.Conv2D(layer.out_channels, 3, padding="valid", dtype=policy,
                                               name=layer.name)
                    conv.build((None, None, None, layer.in_channels))
                    conv.kernel.assign(to_keras_kernel(ws.tensors[f"{layer.name}.weight"]).astype(conv.kernel.dtype))
                    conv.bias.assign(np.asarray(ws.tensors[f"{layer.name}.bias"]).astype(conv.bias.dtype))
                    conv.trainable = False
                    self.convs[layer.name] = conv
                    # The kernel rotated by 180° with in/out swapped ((kh, kw, out, in)), for the
                    # input gradient as a forward conv (_conv3x3); made once here, since a
                    # transpose of a 3x3x512x512 kernel per step costs more than it saves.
                    w = np.asarray(ws.tensors[f"{layer.name}.weight"])            # OIHW
                    kflip[layer.name] = tf.Variable(
                        np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).astype(conv.kernel.dtype),
                        trainable=False, name=f"{layer.name}_kernel_flipped")
            # Python floats are turned into tensors with tf.constant(v, dtype), never tf.cast(v, dtype):
            # tf.cast of a Python float goes through float32 first (1e-8 relative error in float64).
            prep = self.preprocessing
            self._order = list(prep.channel_index)
            self._scale = float(prep.scale)
            self._mean = np.asarray(prep.mean, dtype=np.float64)
            self._std = np.asarray(prep.std, dtype=np.float64)
        # Not tracked by Keras (not weights of the model: derived, frozen copies).
        object.__setattr__(self, "_kflip", kflip)
        self.trainable = False
        self.built = True
        assert_compute_dtype(self, policy.compute_dtype)

    # The tracked list of conv layers, in order (so Keras sees them as sublayers).
    @property
    def conv_layers(self):
        return list(self.convs.values())

    def preprocess(self, images01):
        """NHWC RGB [0, 1] -> the network input the weight set expects (channel order, scale,
        mean, std)."""
        x = tf.convert_to_tensor(images01)
        if not x.dtype.is_floating:
            x = tf.cast(x, self.compute_dtype)
        dt = x.dtype
        if self._order != [0, 1, 2]:
            x = tf.gather(x, self._order, axis=-1)
        x = x * tf.constant(self._scale, dt)
        return (x - tf.constant(self._mean, dt)) / tf.constant(self._std, dt)

    # Activation checkpointing per block (the layers between pools), as resty_torch's
    # ``checkpoint``: only block inputs and requested features are kept for the gradient; the
    # rest is recomputed (tf.recompute_grad).  Set by GatysStylizer(checkpoint=True).
    checkpoint = False

    def _layer(self, layer, x):
        if layer.kind == "conv":
            conv = self.convs[layer.name]
            return _conv3x3(x, tf.cast(conv.kernel, x.dtype), tf.cast(self._kflip[layer.name], x.dtype),
                            tf.cast(conv.bias, x.dtype))
        if layer.kind == "relu":
            return tf.nn.relu(x)
        if self.spec.pooling == "max":
            return tf.nn.max_pool2d(x, 2, 2, "VALID")
        return tf.nn.avg_pool2d(x, 2, 2, "VALID")

    def _segments(self):
        segs, cur = [], []
        for layer in self.table:
            cur.append(layer)
            if layer.kind == "pool":
                segs.append(cur)
                cur = []
        return segs + ([cur] if cur else [])

    def call(self, images01, preprocess=True):
        x = self.preprocess(images01) if preprocess else tf.convert_to_tensor(images01)
        x = tf.cast(x, self.compute_dtype)
        out = {}
        wanted = set(self.layer_names_out)
        if self.checkpoint:
            for seg in self._segments():
                keep = [l.name for l in seg if l.name in wanted]

                def block(h, seg=seg, keep=keep):
                    got = []
                    for layer in seg:
                        h = self._layer(layer, h)
                        if layer.name in keep:
                            got.append(h)
                    return [h] + got
                res = tf.recompute_grad(block)(x)
                x = res[0]
                out.update(zip(keep, res[1:]))
            return out
        for layer in self.table:
            x = self._layer(layer, x)
            if layer.name in wanted:
                out[layer.name] = x
        return out

    def canonical_weights(self) -> Dict[str, np.ndarray]:
        """The weights back in canonical OIHW layout (for checks)."""
        out = {}
        for name, conv in self.convs.items():
            out[f"{name}.weight"] = from_keras_kernel(conv.kernel.numpy())
            out[f"{name}.bias"] = conv.bias.numpy()
        return out


@tf.custom_gradient
def _conv3x3(x, kernel, kernel_flipped, bias):
    """3x3 stride-1 convolution, zero padding 1 (torch's padding=1: SAME pads (1, 1) at stride 1)
    plus bias, whose input gradient is itself a forward convolution (the kernel rotated by 180°,
    in/out channels swapped).

    TensorFlow's CPU Conv2DBackpropInput is slower than Conv2D on the deep VGG layers; the
    forward kernels are its best-tuned path.
    ``kernel_flipped`` is ``kernel`` rotated by 180° with in/out channels swapped.  The loss
    network is frozen: no gradient flows to the kernels or the bias.
    """
    y = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias)

    def grad(dy):
        return tf.nn.conv2d(dy, kernel_flipped, 1, "SAME"), None, None, None
    return y, grad


def _resolve_vgg(weights, arch: str, preprocessing) -> WeightSet:
    """Resolve a weights argument; the preset's preprocessing applies to random weights and to
    a bare 'imagenet' (picking the source with that preprocessing), never overriding a file's."""
    return resolve_loss_network(weights, arch, preprocessing)
