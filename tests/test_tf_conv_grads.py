"""resty_tf's stride-1 convolution with forward-convolution gradients (layers.conv2d_forward_grads).

TransformerNet uses it on the CPU, where TensorFlow's own backprop kernels are slow for few
channels.  It must give the gradients TensorFlow's autodiff gives, to float rounding, for every
shape the transformer has (more input than output channels, the reverse, equal, non-square
kernels, with and without bias), and a whole network's parameter gradients must not change.
"""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from resty.specs import TransformerSpec  # noqa: E402
from resty_tf import TransformerNet  # noqa: E402
from resty_tf.layers import SpecConv, conv2d_forward_grads  # noqa: E402

from conv_grad_cases import CONV_GRAD_CASES  # noqa: E402  (tests/ is on sys.path)

rng = np.random.default_rng(3)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def grads(fn, x, k, b, dy):
    with tf.GradientTape() as tape:
        tape.watch([x, k] + ([b] if b is not None else []))
        y = fn(x, k, b)
        obj = tf.reduce_sum(y * dy)
    return [y] + tape.gradient(obj, [x, k] + ([b] if b is not None else []))


def reference(x, k, b):
    y = tf.nn.conv2d(x, k, 1, "VALID")
    return y if b is None else tf.nn.bias_add(y, b)


@pytest.mark.parametrize("n,h,w,ci,co,kh,kw,bias", CONV_GRAD_CASES)
def test_forward_grads_equal_tensorflow_autodiff_float64(n, h, w, ci, co, kh, kw, bias):
    x = tf.constant(rng.normal(size=(n, h, w, ci)))
    k = tf.constant(rng.normal(size=(kh, kw, ci, co)))
    b = tf.constant(rng.normal(size=(co,))) if bias else None
    dy = tf.constant(rng.normal(size=(n, h - kh + 1, w - kw + 1, co)))
    got = grads(conv2d_forward_grads, x, k, b, dy)
    want = grads(reference, x, k, b, dy)
    for name, g, r in zip(["y", "dx", "dW", "db"], got, want):
        assert g.shape == r.shape, name
        assert rel(g.numpy(), r.numpy()) < 1e-12, name


def test_forward_grads_float32_close_and_traceable():
    x = tf.constant(rng.normal(size=(2, 20, 20, 16)), tf.float32)
    k = tf.constant(rng.normal(size=(9, 9, 16, 3)), tf.float32)
    dy = tf.constant(rng.normal(size=(2, 12, 12, 3)), tf.float32)
    got = tf.function(lambda x, k: grads(conv2d_forward_grads, x, k, None, dy))(x, k)
    want = grads(reference, x, k, None, dy)
    for g, r in zip(got, want):
        assert g.dtype == tf.float32
        assert rel(g.numpy(), r.numpy()) < 1e-5


def _param_grads(net, x):
    with tf.GradientTape() as tape:
        y = net(x, training=True)
        obj = tf.reduce_sum(tf.sin(3.0 * y))
    variables = list(net.canonical_variables().values())
    return y, tape.gradient(obj, variables)


def test_transformer_parameter_gradients_unchanged_float64():
    spec = TransformerSpec(channels=(4, 8, 8), residual_blocks=1)
    net = TransformerNet(spec, "random:1", dtype="float64", device="cpu")
    fg = [b for b in net.blocks if b.forward_grads]
    # every stride-1 conv (input, residual, upsampling, output) takes the new path on the CPU
    assert {b.conv_def.name for b in fg} == {d.name for d in net.defs if d.stride == 1 and not d.transposed}
    assert "conv_out" in {b.conv_def.name for b in fg}
    x = tf.constant(rng.random((2, 20, 24, 3)))
    y1, g1 = _param_grads(net, x)
    for b in net.blocks:
        b.forward_grads = False
    y0, g0 = _param_grads(net, x)
    assert rel(y1.numpy(), y0.numpy()) == 0.0      # the forward pass is the same conv
    # Biases of convs followed by instance norm have zero gradient (the norm removes them), so
    # compare against the largest gradient, not each tensor's own (rounding-noise) scale.
    scale = max(float(np.abs(b.numpy()).max()) for b in g0)
    for a, b in zip(g1, g0):
        assert float(np.abs(a.numpy() - b.numpy()).max()) < 1e-10 * scale


def test_forward_grads_off_for_strided_and_transposed():
    spec = TransformerSpec(channels=(4, 8, 8), residual_blocks=1)
    net = TransformerNet(spec, "random:1", device="cpu")
    by = {b.conv_def.name: b for b in net.blocks}
    assert not by["down1"].forward_grads and not by["down2"].forward_grads
    from resty.specs import transformer_layers
    d = [d for d in transformer_layers(TransformerSpec(channels=(4, 8, 8), residual_blocks=1,
                                                       upsampling="transposed_conv")) if d.transposed][0]
    assert not SpecConv(d, spec, forward_grads=True).forward_grads
