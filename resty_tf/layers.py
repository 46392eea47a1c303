"""Layers Keras lacks (or gets subtly different from torch), written from the core's spec.

All layers are NHWC.  Every convolution here is padded *explicitly* and then run with
``padding="valid"``: Keras's ``"same"`` pads (0, 1) for stride 2 where torch pads (1, 1),
which gives the same shapes and an O(1) error (docs/ARCHITECTURE.md, pitfalls).  The transposed
convolution computes the full ``2H+1`` VALID output and crops ``spec.transpose_crop``;
Keras's ``Conv2DTranspose("same")`` is shifted by one pixel against torch.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from resty.specs import ConvDef, TransformerSpec

__all__ = ["reflection_pad", "InstanceNormalization", "ConditionalInstanceNormalization", "TorchBatchNormalization", "SpecConv", "upsample_nearest2x",
           "conv2d_forward_grads", "HALF_DTYPES"]

HALF_DTYPES = (tf.float16, tf.bfloat16)


def reflection_pad(x, top: int, bottom: int, left: int, right: int):
    """Reflection padding of an NHWC tensor (edge not repeated), bitwise equal to
    torch's ``nn.ReflectionPad2d``."""
    if not (top or bottom or left or right):
        return x
    return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], mode="REFLECT")


def upsample_nearest2x(x):
    """Nearest-neighbour x2 (each pixel repeated): bitwise identical across frameworks."""
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


def _float32_if_half(x):
    """Statistics of a half-precision activation are taken in float32 (as torch autocast
    does for norms): a bf16 mean over 65k pixels loses most of its digits."""
    return tf.cast(x, tf.float32) if x.dtype in HALF_DTYPES else x


class InstanceNormalization(keras.layers.Layer):
    """Instance norm (Ulyanov et al.): per image and channel over H, W, with the *biased*
    variance and the spec's epsilon, then an affine ``gamma``/``beta`` per channel.

    Not ``GroupNormalization(groups=-1)``: its epsilon defaults to 1e-3 against torch's 1e-5
    (a 5e-3 error on the Johnson output).  gamma/beta are kept in the variable dtype and not
    autocast; the statistics are computed in float32 under mixed precision.
    """

    def __init__(self, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones", autocast=False)
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros", autocast=False)

    def call(self, x):
        out_dtype = x.dtype
        xf = _float32_if_half(x)
        mean, var = tf.nn.moments(xf, axes=[1, 2], keepdims=True)   # biased variance
        y = (xf - mean) / tf.sqrt(var + tf.constant(self.epsilon, xf.dtype))
        y = y * tf.cast(self.gamma, xf.dtype) + tf.cast(self.beta, xf.dtype)
        return tf.cast(y, out_dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


class ConditionalInstanceNormalization(keras.layers.Layer):
    """Dumoulin et al. 2017: instance norm (biased variance, the spec's epsilon) whose affine
    parameters are the style-weighted sum of the rows of ``gamma`` / ``beta`` (num_styles, C);
    ``call(x, style)`` with ``style`` the (num_styles,) weight vector.  Must match
    resty.reference.conditional_instance_norm."""

    def __init__(self, num_styles: int, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.num_styles = int(num_styles)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(self.num_styles, c), initializer="ones", autocast=False)
        self.beta = self.add_weight(name="beta", shape=(self.num_styles, c), initializer="zeros", autocast=False)

    def call(self, x, style):
        out_dtype = x.dtype
        xf = _float32_if_half(x)
        w = tf.cast(tf.reshape(style, (1, -1)), self.gamma.dtype)
        gamma = tf.cast(tf.matmul(w, self.gamma), xf.dtype)       # (1, C)
        beta = tf.cast(tf.matmul(w, self.beta), xf.dtype)
        mean, var = tf.nn.moments(xf, axes=[1, 2], keepdims=True)   # biased variance
        y = (xf - mean) / tf.sqrt(var + tf.constant(self.epsilon, xf.dtype))
        y = y * gamma + beta
        return tf.cast(y, out_dtype)

    def get_config(self):
        return {**super().get_config(), "num_styles": self.num_styles, "epsilon": self.epsilon}


class TorchBatchNormalization(keras.layers.Layer):
    """Batch norm with torch's semantics (for ``TransformerSpec.norm == "batch"``).

    Inference uses the running statistics (as ``resty.reference.batch_norm``); training uses
    the batch's biased variance to normalise and updates the running variance with the
    unbiased one, momentum 0.1 (torch's defaults, unlike Keras's 0.99 and biased update).
    """

    def __init__(self, epsilon: float, momentum: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones", autocast=False)
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros", autocast=False)
        self.running_mean = self.add_weight(name="running_mean", shape=(c,), initializer="zeros",
                                            trainable=False, autocast=False)
        self.running_var = self.add_weight(name="running_var", shape=(c,), initializer="ones",
                                           trainable=False, autocast=False)

    def call(self, x, training=False):
        out_dtype = x.dtype
        xf = _float32_if_half(x)
        dt = xf.dtype
        if training:
            mean, var = tf.nn.moments(xf, axes=[0, 1, 2])
            n = tf.cast(tf.reduce_prod(tf.shape(xf)[:3]), dt)
            unbiased = var * n / tf.maximum(n - 1, 1)
            m = self.momentum
            self.running_mean.assign((1 - m) * self.running_mean + m * tf.cast(mean, self.running_mean.dtype))
            self.running_var.assign((1 - m) * self.running_var + m * tf.cast(unbiased, self.running_var.dtype))
        else:
            mean, var = tf.cast(self.running_mean, dt), tf.cast(self.running_var, dt)
        y = (xf - mean) / tf.sqrt(var + tf.constant(self.epsilon, dt))
        y = y * tf.cast(self.gamma, dt) + tf.cast(self.beta, dt)
        return tf.cast(y, out_dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "momentum": self.momentum}


def _filter_grad(x, dy, kh: int, kw: int):
    """dW[i, j, ci, co] = sum over n, h, w of x[n, h+i, w+j, ci] * dy[n, h, w, co] (stride 1,
    VALID), computed by a *forward* convolution with the batch and channel axes swapped.

    Two equivalent forms: the one whose matrix product has the wider output (more columns for
    Eigen's GEMM) is used.  With more input than output channels (the 9x9 conv with 3 outputs)
    dy is the image (batch = output channels, zero-padded by k-1) and x the filter, and the
    result comes out rotated by 180 degrees; otherwise x is the image (batch = input channels)
    and dy the filter."""
    ci, co = int(x.shape[-1]), int(dy.shape[-1])
    if co < ci:
        img = tf.pad(tf.transpose(dy, [3, 1, 2, 0]), [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
        out = tf.nn.conv2d(img, tf.transpose(x, [1, 2, 0, 3]), 1, "VALID")     # (co, kh, kw, ci), rotated
        return tf.transpose(tf.reverse(out, [1, 2]), [1, 2, 3, 0])
    out = tf.nn.conv2d(tf.transpose(x, [3, 1, 2, 0]), tf.transpose(dy, [1, 2, 0, 3]), 1, "VALID")  # (ci, kh, kw, co)
    return tf.transpose(out, [1, 2, 0, 3])


def _input_grad(dy, kernel):
    """dx of a stride-1 VALID conv: the full correlation of dy with the kernel rotated by 180
    degrees, in/out channels swapped, as a forward convolution."""
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
    return tf.nn.conv2d(tf.pad(dy, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]]), flipped, 1, "VALID")


@tf.custom_gradient
def _conv_fg(x, kernel):
    y = tf.nn.conv2d(x, kernel, 1, "VALID")

    def grad(dy):
        return _input_grad(dy, kernel), _filter_grad(x, dy, int(kernel.shape[0]), int(kernel.shape[1]))
    return y, grad


@tf.custom_gradient
def _conv_bias_fg(x, kernel, bias):
    y = tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "VALID"), bias)

    def grad(dy):
        return (_input_grad(dy, kernel), _filter_grad(x, dy, int(kernel.shape[0]), int(kernel.shape[1])),
                tf.reduce_sum(dy, [0, 1, 2]))
    return y, grad


def conv2d_forward_grads(x, kernel, bias=None):
    """A stride-1 VALID NHWC convolution (+ bias) whose gradients are forward convolutions.

    Why: TensorFlow's CPU ``Conv2DBackpropFilter`` / ``Conv2DBackpropInput`` kernels are slow
    for few channels (the transformer's 9x9 output conv with 3 channels), enough for that one
    layer to dominate a CPU training step; forward convolutions computing the same sums,
    reordered, are much faster, and the gradients agree to float rounding
    (tests/test_tf_conv_grads.py).  Used on the CPU only; cuDNN's backward kernels are the
    right choice on a GPU."""
    if bias is None:
        return _conv_fg(x, kernel)
    return _conv_bias_fg(x, kernel, bias)


class SpecConv(keras.layers.Layer):
    """One convolution of the transformer as ``resty.specs.transformer_layers`` defines it:
    [nearest x2] -> reflection pad k//2 -> conv VALID (or transposed conv VALID + crop)
    -> [norm] -> [ReLU].  The layer's name is the canonical prefix (``down1``, ``res3.conv2``),
    with dots replaced by underscores (Keras names may not contain dots).
    """

    def __init__(self, conv: ConvDef, spec: TransformerSpec, *, forward_grads: bool = False, **kwargs):
        super().__init__(name=conv.name.replace(".", "_"), **kwargs)
        self.conv_def = conv
        self.spec = spec
        # Stride-1 convs differentiate through forward convolutions (conv2d_forward_grads):
        # TransformerNet turns this on when it runs on the CPU.
        self.forward_grads = bool(forward_grads) and not conv.transposed and conv.stride == 1
        policy = self.dtype_policy
        if conv.transposed:
            # Keras kernel layout (kh, kw, out, in); VALID gives (H-1)*s + k = 2H+1 rows.
            self.conv = keras.layers.Conv2DTranspose(conv.out_channels, conv.kernel, strides=conv.stride,
                                                     padding="valid", use_bias=conv.bias, dtype=policy,
                                                     name="conv")
        else:
            self.conv = keras.layers.Conv2D(conv.out_channels, conv.kernel, strides=conv.stride,
                                            padding="valid", use_bias=conv.bias, dtype=policy, name="conv")
        self.norm = None
        if conv.norm:
            if spec.conditional:
                self.norm = ConditionalInstanceNormalization(spec.num_styles, spec.norm_eps, dtype=policy,
                                                             name="norm")
            else:
                cls = InstanceNormalization if spec.norm == "instance" else TorchBatchNormalization
                self.norm = cls(spec.norm_eps, dtype=policy, name="norm")

    def build(self, input_shape=None):
        self.conv.build((None, None, None, self.conv_def.in_channels))
        if self.norm is not None:
            self.norm.build((None, None, None, self.conv_def.out_channels))

    def call(self, x, training=False, style=None):
        c = self.conv_def
        if c.upsample:
            x = upsample_nearest2x(x)
        if c.transposed:
            x = self.conv(x)
            a, z = self.spec.transpose_crop
            h, w = tf.shape(x)[1], tf.shape(x)[2]
            x = x[:, a:h - z, a:w - z, :]
        else:
            k = c.kernel // 2
            x = reflection_pad(x, k, k, k, k)
            if self.forward_grads:
                cv = self.conv
                kernel = tf.cast(cv.kernel, x.dtype)
                bias = tf.cast(cv.bias, x.dtype) if cv.use_bias else None
                x = conv2d_forward_grads(x, kernel, bias)
            else:
                x = self.conv(x)
        if self.norm is not None:
            if isinstance(self.norm, TorchBatchNormalization):
                x = self.norm(x, training=training)
            elif isinstance(self.norm, ConditionalInstanceNormalization):
                x = self.norm(x, style)
            else:
                x = self.norm(x)
        if c.relu:
            x = tf.nn.relu(x)
        return x
