"""Honesty checks: inject a known wrong convention into ONE side and show the comparison fails.

Each mutation returns a list of ``(label, expect_pass, ItemResult)``: controls (the right
convention, expected to pass) and mutants (the pitfall, expected to fail), built from framework
primitives and the backends' layers, with random asymmetric inputs and non-square kernels.
The pitfalls are those measured in docs/ARCHITECTURE.md, pitfalls.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np

from . import tolerances as T
from . import tolerances as _T
from .compare import ItemResult, Missing, compare_arrays

Result = Tuple[str, bool, ItemResult]

# Exactly representable in float32: Keras keeps the learning rate in a float32 variable and
# rounds beta_1/beta_2 to float32 even for float64 variables (measured: with β2 = 0.999 its
# float64 step is off by 6.7e-6 relative, which would fail the float64 tier of the control).
LR = 2.0 ** -10
BETA1 = 1 - 2.0 ** -3
BETA2 = 1 - 2.0 ** -10


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([5, seed])


def _torch():
    import torch
    return torch


def _tf():
    import tensorflow as tf
    return tf


def _tt(a, dtype):
    torch = _torch()
    return torch.as_tensor(np.asarray(a, dtype=dtype))


def _cmp(label, expect, a, b, tol) -> Result:
    return (label, expect, compare_arrays(a, b, tol, label))


# --------------------------------------------------------------------------- instance norm eps
def instance_norm_eps(dtype: str) -> List[Result]:
    """Keras ``GroupNormalization(groups=-1)`` defaults to eps 1e-3; torch's InstanceNorm2d 1e-5."""
    import keras
    torch, tf = _torch(), _tf()
    rng = _rng(1)
    x = rng.standard_normal((2, 4, 9, 13))                      # NCHW
    x *= np.array([0.03, 0.1, 0.5, 2.0])[None, :, None, None]    # channels of different spread
    x += rng.standard_normal((1, 4, 1, 1))
    x = x.astype(dtype)
    gamma = (1 + 0.1 * rng.standard_normal(4)).astype(dtype)
    beta = (0.1 * rng.standard_normal(4)).astype(dtype)
    tol = T.get("features", dtype)
    ref_t = torch.nn.functional.instance_norm(_tt(x, dtype), weight=_tt(gamma, dtype), bias=_tt(beta, dtype),
                                              eps=1e-5).numpy()
    xh = tf.constant(x.transpose(0, 2, 3, 1))

    def keras_gn(**kw):
        layer = keras.layers.GroupNormalization(groups=-1, dtype=dtype, **kw)
        layer.build(xh.shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
        return layer(xh).numpy().transpose(0, 3, 1, 2)

    out: List[Result] = []
    try:
        from resty_tf.layers import InstanceNormalization
        ln = InstanceNormalization(1e-5, dtype=dtype)
        ln.build(xh.shape)
        ln.gamma.assign(gamma)
        ln.beta.assign(beta)
        out.append(_cmp("resty_tf InstanceNormalization(1e-5) vs torch", True,
                        ln(xh).numpy().transpose(0, 3, 1, 2), ref_t, tol))
    except ImportError:
        pass
    out.append(_cmp("keras GroupNormalization(groups=-1, epsilon=1e-5) vs torch", True, keras_gn(epsilon=1e-5), ref_t, tol))
    out.append(_cmp("keras GroupNormalization(groups=-1) default eps 1e-3 vs torch", False, keras_gn(), ref_t, tol))
    return out


# --------------------------------------------------------------------------- stride-2 'same'
def stride2_same_padding(dtype: str) -> List[Result]:
    """TF's ``padding="SAME"`` with stride 2 pads (0, 1) on even sizes; torch's padding=1 pads (1, 1)."""
    torch, tf = _torch(), _tf()
    rng = _rng(2)
    x = rng.standard_normal((2, 3, 10, 14)).astype(dtype)
    w = rng.standard_normal((5, 3, 3, 3)).astype(dtype)          # OIHW
    tol = T.get("features", dtype)
    ref_t = torch.nn.functional.conv2d(_tt(x, dtype), _tt(w, dtype), stride=2, padding=1).numpy()
    from resty.weights import to_keras_kernel
    k = tf.constant(to_keras_kernel(w))
    xh = tf.constant(x.transpose(0, 2, 3, 1))
    explicit = tf.nn.conv2d(tf.pad(xh, [[0, 0], [1, 1], [1, 1], [0, 0]]), k, strides=2, padding="VALID")
    same = tf.nn.conv2d(xh, k, strides=2, padding="SAME")
    return [
        _cmp("tf explicit pad (1,1) + VALID vs torch padding=1", True, explicit.numpy().transpose(0, 3, 1, 2), ref_t, tol),
        _cmp("tf padding='SAME' stride 2 vs torch padding=1", False, same.numpy().transpose(0, 3, 1, 2), ref_t, tol),
    ]


# --------------------------------------------------------------------------- kernel layouts
def kernel_layout(dtype: str) -> List[Result]:
    """OIHW -> HWIO must be transpose(2, 3, 1, 0); swapping kh/kw, flipping the kernel or
    swapping in/out loads silently on a square kernel and fails on a non-square one."""
    torch, tf = _torch(), _tf()
    from resty.weights import iohw_to_keras_transposed, to_keras_kernel
    rng = _rng(3)
    tol = T.get("features", dtype)
    out: List[Result] = []
    x = rng.standard_normal((2, 4, 11, 17)).astype(dtype)
    xh = tf.constant(x.transpose(0, 2, 3, 1))

    def tf_conv(k_hwio):
        try:
            return tf.nn.conv2d(xh, tf.constant(np.ascontiguousarray(k_hwio)), 1, "VALID").numpy().transpose(0, 3, 1, 2)
        except Exception as exc:   # noqa: BLE001 - a shape error is a caught mismatch too
            return np.full((1,), np.nan) if "nan" in str(exc) else np.zeros((0,))

    # Non-square asymmetric kernel 3x5, 4 -> 4 channels (so an in/out swap keeps the shape).
    w = rng.standard_normal((4, 4, 3, 5)).astype(dtype)
    ref_t = torch.nn.functional.conv2d(_tt(x, dtype), _tt(w, dtype)).numpy()
    out.append(_cmp("3x5 kernel, to_keras_kernel (2,3,1,0)", True, tf_conv(to_keras_kernel(w)), ref_t, tol))
    out.append(_cmp("3x5 kernel, kh/kw swapped (3,2,1,0)", False, tf_conv(w.transpose(3, 2, 1, 0)), ref_t, tol))
    out.append(_cmp("3x5 kernel, in/out swapped (2,3,0,1)", False, tf_conv(w.transpose(2, 3, 0, 1)), ref_t, tol))
    out.append(_cmp("3x5 kernel, flipped (convolution, not correlation)", False,
                    tf_conv(to_keras_kernel(w[:, :, ::-1, ::-1])), ref_t, tol))
    # Square asymmetric 3x3: a kh/kw swap has the right shape and loads silently.
    w3 = rng.standard_normal((6, 4, 3, 3)).astype(dtype)
    ref3 = torch.nn.functional.conv2d(_tt(x, dtype), _tt(w3, dtype)).numpy()
    out.append(_cmp("3x3 kernel, to_keras_kernel", True, tf_conv(to_keras_kernel(w3)), ref3, tol))
    out.append(_cmp("3x3 kernel, kh/kw swapped (loads silently)", False, tf_conv(w3.transpose(3, 2, 1, 0)), ref3, tol))
    # Transposed conv (IOHW), 4 -> 4 channels, full VALID output.
    wt = rng.standard_normal((4, 4, 3, 3)).astype(dtype)
    xs = x[:, :, :5, :7]
    ref_tr = torch.nn.functional.conv_transpose2d(_tt(xs, dtype), _tt(wt, dtype), stride=2).numpy()

    def tf_convT(k):
        y = tf.nn.conv2d_transpose(tf.constant(xs.transpose(0, 2, 3, 1)), tf.constant(np.ascontiguousarray(k)),
                                   output_shape=[2, 11, 15, 4], strides=2, padding="VALID")
        return y.numpy().transpose(0, 3, 1, 2)

    out.append(_cmp("transposed 3x3, iohw_to_keras_transposed (2,3,1,0)", True, tf_convT(iohw_to_keras_transposed(wt)), ref_tr, tol))
    out.append(_cmp("transposed 3x3, in/out swapped (2,3,0,1)", False, tf_convT(wt.transpose(2, 3, 0, 1)), ref_tr, tol))
    return out


# --------------------------------------------------------------------------- ConvTranspose 'same'
def conv_transpose_same(dtype: str) -> List[Result]:
    """torch ConvTranspose2d(k3, s2, p1, output_padding=1) vs Keras Conv2DTranspose('same'):
    same shape, one-pixel shift.  The backends compute the full output and crop (1, 0)."""
    import keras
    torch, tf = _torch(), _tf()
    from resty.weights import iohw_to_keras_transposed
    rng = _rng(4)
    x = rng.standard_normal((2, 4, 5, 7)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)          # IOHW: 4 in, 3 out
    tol = T.get("features", dtype)
    ref_t = torch.nn.functional.conv_transpose2d(_tt(x, dtype), _tt(w, dtype), stride=2, padding=1,
                                                 output_padding=1).numpy()
    xh = tf.constant(x.transpose(0, 2, 3, 1))
    kk = iohw_to_keras_transposed(w)

    def keras_ct(padding):
        layer = keras.layers.Conv2DTranspose(3, 3, strides=2, padding=padding, use_bias=False, dtype=dtype)
        layer.build(xh.shape)
        layer.kernel.assign(kk)
        return layer(xh).numpy().transpose(0, 3, 1, 2)

    full = keras_ct("valid")                       # (2H+1, 2W+1)
    return [
        _cmp("keras Conv2DTranspose('valid') cropped (1,0) vs torch p1 op1", True, full[:, :, 1:, 1:], ref_t, tol),
        _cmp("keras Conv2DTranspose('same') vs torch p1 op1", False, keras_ct("same"), ref_t, tol),
    ]


# --------------------------------------------------------------------------- Adam epsilon-hat
def keras_adam(dtype: str) -> List[Result]:
    """Keras's Adam adds epsilon before the bias correction ("epsilon hat"): after ONE step
    from identical gradients its update differs from torch's (ARCHITECTURE.md, pitfalls: 1.8e-3)."""
    import keras
    torch = _torch()
    from resty import reference
    from resty.specs import AdamSpec
    rng = _rng(5)
    shape = (3, 5, 7)
    x0 = (1e-3 * rng.random(shape)).astype(dtype)   # O(step): x1 − x0 keeps the step's digits
    g = (np.exp(rng.uniform(np.log(1e-5), np.log(1e-1), shape)) * rng.choice([-1, 1], shape)).astype(dtype)
    tol = T.get("step", dtype)
    # torch
    p = torch.nn.Parameter(_tt(x0, dtype).clone())
    opt = torch.optim.Adam([p], lr=LR, betas=(BETA1, BETA2), eps=1e-8, foreach=False)
    p.grad = _tt(g, dtype).clone()
    opt.step()
    d_torch = p.detach().numpy().astype(np.float64) - x0
    # oracle, both formulas
    d_ref = reference.adam_step(x0.astype(np.float64), g.astype(np.float64), reference.AdamState(shape),
                                AdamSpec(lr=LR, beta1=BETA1, beta2=BETA2, eps=1e-8)) - x0
    d_ref_hat = reference.adam_step(x0.astype(np.float64), g.astype(np.float64), reference.AdamState(shape),
                                    AdamSpec(lr=LR, beta1=BETA1, beta2=BETA2, eps=1e-8, epsilon_hat=True)) - x0
    # keras
    v = keras.Variable(x0, dtype=dtype)
    kopt = keras.optimizers.Adam(learning_rate=LR, beta_1=BETA1, beta_2=BETA2, epsilon=1e-8)
    kopt.apply_gradients([(keras.ops.convert_to_tensor(g, dtype=dtype), v)])
    d_keras = np.asarray(v.numpy(), dtype=np.float64) - x0
    return [
        _cmp("torch.optim.Adam vs reference.adam_step (torch formula)", True, d_torch, d_ref, tol),
        _cmp("keras Adam vs reference.adam_step(epsilon_hat=True)", True, d_keras, d_ref_hat, tol),
        _cmp("keras.optimizers.Adam (epsilon hat) vs torch.optim.Adam, one step", False, d_keras, d_torch, tol),
    ]


MUTATIONS: Dict[str, Callable[[str], List[Result]]] = {
    "instance_norm_eps": instance_norm_eps,
    "stride2_same_padding": stride2_same_padding,
    "kernel_layout": kernel_layout,
    "conv_transpose_same": conv_transpose_same,
    "keras_adam_epsilon_hat": keras_adam,
}


# --------------------------------------------------------------------------- through the backends
def _backend(name):
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise Missing(f"{name} not importable ({exc})") from None


def transformer_eps_via_backends(dtype: str) -> List[Result]:
    """The whole Johnson net (small spec): resty_torch.TransformerNet with eps 1e-5 against the
    oracle run with the spec's eps replaced by Keras's 1e-3 (control: the same eps)."""
    from resty import reference
    from resty.specs import TransformerSpec
    from resty.weights import random_transformer
    torch = _torch()
    Net = _backend("resty_torch").TransformerNet
    spec = TransformerSpec(channels=(4, 6, 8), residual_blocks=2)
    ws = random_transformer(spec, 11)
    x = _rng(6).random((2, 21, 30, 3)).astype(np.float32).astype(np.float64)
    with torch.no_grad():
        y = Net(spec, ws, dtype=dtype, device="cpu")(_tt(x.transpose(0, 3, 1, 2), dtype)).numpy().transpose(0, 2, 3, 1)
    t = {k: np.asarray(v, np.float64) for k, v in ws.tensors.items()}
    tol = _T.get("output", dtype)
    return [
        _cmp("resty_torch TransformerNet vs oracle, eps 1e-5 both", True, y, reference.transformer_forward(x, t, spec), tol),
        _cmp("resty_torch TransformerNet (1e-5) vs oracle with Keras's eps 1e-3", False, y,
             reference.transformer_forward(x, t, spec.replace(norm_eps=1e-3)), tol),
    ]


def transpose_crop_via_backends(dtype: str) -> List[Result]:
    """resty_tf.TransformerNet with transposed-conv upsampling: the right crop (1, 0) against
    resty_torch, and the Keras-'same'-like crop (0, 1) (a one-pixel shift) injected into TF."""
    from resty.specs import TransformerSpec
    from resty.weights import random_transformer
    torch = _torch()
    tf = _tf()
    Tt, Tf = _backend("resty_torch").TransformerNet, _backend("resty_tf").TransformerNet
    spec = TransformerSpec(channels=(4, 6, 8), residual_blocks=1, upsampling="transposed_conv")
    ws = random_transformer(spec, 12)
    x = _rng(7).random((2, 20, 28, 3)).astype(np.float32)
    with torch.no_grad():
        yt = Tt(spec, ws, dtype=dtype, device="cpu")(_tt(x.transpose(0, 3, 1, 2), dtype)).numpy().transpose(0, 2, 3, 1)
    tol = T.get("output", dtype)
    good = Tf(spec, ws, dtype=dtype)(tf.constant(x.astype(dtype))).numpy()
    import dataclasses
    bad_spec = spec.replace(transpose_crop=(0, 1))
    bad = Tf(bad_spec, dataclasses.replace(ws, spec=bad_spec), dtype=dtype)(tf.constant(x.astype(dtype))).numpy()
    return [
        _cmp("resty_tf vs resty_torch, transposed conv crop (1,0)", True, good, yt, tol),
        _cmp("resty_tf with crop (0,1) (Keras 'same' shift) vs resty_torch", False, bad, yt, tol),
    ]


MUTATIONS.update({
    "transformer_eps_backend": transformer_eps_via_backends,
    "transpose_crop_backend": transpose_crop_via_backends,
})



# --------------------------------------------------------------------------- QDQ rounding (arbitrary)
def qdq_rounding_via_backends(dtype: str) -> List[Result]:
    """ONNX QuantizeLinear rounds half to even and saturates, and DequantizeLinear subtracts the
    zero point: both backends' ``fake_quantize`` against the oracle's (resty.arbitrary) on exact
    ties (x/scale = k + 0.5, scale a power of two) and saturating values; mutants round half away
    from zero, drop the zero point, or drop the saturation.  Then the backend predictor (small
    random net, calibrated int8 table) with every zero point read as 0."""
    import torch
    from resty.arbitrary import QDQ, fake_quantize
    from resty_tf.arbitrary import fake_quantize as fq_tf
    from resty_torch.arbitrary import fake_quantize as fq_torch
    q = QDQ(0.125, -3, -128, 127)
    ties = (np.arange(-150, 150) + 0.5) * q.scale
    x = np.concatenate([ties, _rng(30).standard_normal(200) * 12]).astype(dtype)
    ref = fake_quantize(x, q)
    tol = T.get("output", dtype)
    xt = _tt(x, dtype)

    def away(v):             # round half away from zero (C's round(), Python 2's round)
        return torch.sign(v) * torch.floor(torch.abs(v) + 0.5)
    s = q.scale
    out = [
        _cmp("resty_torch fake_quantize vs oracle (ties, saturation)", True, fq_torch(xt, q).numpy(), ref, tol),
        _cmp("resty_tf fake_quantize vs oracle (ties, saturation)", True, fq_tf(_tf().constant(x), q).numpy(), ref,
             tol),
        _cmp("round half away from zero vs oracle", False,
             ((torch.clamp(away(xt / s) + q.zero_point, q.qmin, q.qmax) - q.zero_point) * s).numpy(), ref, tol),
        _cmp("zero point dropped vs oracle", False,
             (torch.clamp(torch.round(xt / s), q.qmin, q.qmax) * s).numpy(), ref, tol),
        _cmp("no saturation vs oracle", False, (torch.round(xt / s) * s).numpy(), ref, tol),
    ]
    # network level: a table loaded without its zero points
    from resty import reference_arbitrary as RA
    from resty.arbitrary import ArbitrarySpec, PredictorSpec, TransferSpec, random_arbitrary_tensors, split_tensors
    from resty_torch.arbitrary import StylePredictor
    spec = ArbitrarySpec(PredictorSpec(stem_channels=4, blocks=((1, 4, 1), (3, 6, 2)), head_channels=8, style_dim=5,
                                       image_size=16), TransferSpec(channels=(4, 6, 8), residual_blocks=1,
                                                                    up_channels=(6, 4), style_dim=5))
    t = random_arbitrary_tensors(spec, 11)
    img = _rng(31).random((2, 17, 15, 3)).astype(np.float32).astype(np.float64)
    aq = RA.calibrate_quantization(img, img, t, spec).of("predictor")
    want = RA.predictor_forward(img, t, spec.predictor, aq)
    p = split_tensors(t)[0]
    xi = _tt(img.transpose(0, 3, 1, 2), dtype)
    with torch.no_grad():
        good = StylePredictor(spec.predictor, p, dtype=dtype, device="cpu", quant=aq)(xi).double().numpy()
        nozp = {k: v._replace(zero_point=0) for k, v in aq.items()}
        bad = StylePredictor(spec.predictor, p, dtype=dtype, device="cpu", quant=nozp)(xi).double().numpy()
    tol_e = T.Tolerance("scaled", tol.rtol, reason=tol.reason) if dtype == "float64" else \
        T.Tolerance("norm", 0.1, 0.99, reason="float32 quantized rows (parity_tests/cases.py)")
    out += [_cmp("resty_torch quantized predictor vs oracle", True, good, want, tol_e),
            _cmp("resty_torch quantized predictor, zero points read as 0, vs oracle", False, bad, want, tol_e)]
    return out


MUTATIONS["arbitrary_qdq_rounding"] = qdq_rounding_via_backends

from .adain_cases import ADAIN_MUTATIONS  # noqa: E402

MUTATIONS.update(ADAIN_MUTATIONS)


def _missing_on_import_error(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(dtype):
        try:
            return fn(dtype)
        except ImportError as exc:   # a framework (e.g. TF on a torch-only GPU box) is not installed
            raise Missing(f"{fn.__name__}: {exc}") from None
    return wrapper


MUTATIONS = {k: _missing_on_import_error(v) for k, v in MUTATIONS.items()}
