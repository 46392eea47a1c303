"""NumPy float64 reference implementation: the oracle both backends are tested against.

Written for clarity, not speed (small images only).  Arrays are NCHW like the canonical
weights; images come in as (B, H, W, 3) or (H, W, 3) RGB in [0, 1].  Every constant and
convention comes from :mod:`resty.specs` and :mod:`resty.losses`, so when a backend and this
module disagree, one of the two translated the shared definition wrongly.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import losses as _conv
from .specs import (LBFGSSpec, AdamSpec, LossSpec, Preprocessing, TransformerSpec, VGGSpec,
                    transformer_layers, vgg_truncate)

__all__ = [
    "as_batch", "preprocess", "pad", "conv2d", "conv_transpose2d", "relu", "max_pool2d",
    "avg_pool2d", "instance_norm", "conditional_instance_norm", "style_mix", "batch_norm", "upsample_nearest2x", "vgg_features", "gram",
    "style_loss", "content_loss", "tv_loss", "style_loss_grad", "content_loss_grad", "tv_loss_grad",
    "total_loss", "transformer_forward", "AdamState", "adam_betas", "adam_bias_corrections", "adam_step",
    "lbfgs_minimize",
]

Array = np.ndarray


# --------------------------------------------------------------------------- images
def as_batch(img: Array) -> Array:
    """(H, W, 3) or (B, H, W, 3) -> (B, H, W, 3) float64."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"image batch: expected (H, W, 3) or (B, H, W, 3), got shape {a.shape}")
    return a


def preprocess(img01: Array, prep: Preprocessing) -> Array:
    """RGB [0, 1] images (B, H, W, 3) -> network input (B, 3, H, W) for a weight set."""
    x = as_batch(img01)[..., list(prep.channel_index)] * prep.scale
    x = (x - np.asarray(prep.mean)) / np.asarray(prep.std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- layers
def pad(x: Array, top: int, bottom: int, left: int, right: int, mode: str = "zeros") -> Array:
    """Pad the spatial axes of an NCHW array; ``mode`` is 'zeros' or 'reflect' (no edge repeat)."""
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    if mode == "zeros":
        return np.pad(x, widths)
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    raise ValueError(f"pad mode: got {mode!r}; allowed: 'zeros', 'reflect'")


def conv2d(x: Array, w: Array, b: Optional[Array] = None, stride: int = 1,
           padding: Union[int, Tuple[int, int, int, int]] = 0, pad_mode: str = "zeros") -> Array:
    """Cross-correlation of NCHW ``x`` with OIHW ``w`` (as torch and TF compute it)."""
    if isinstance(padding, int):
        padding = (padding,) * 4
    if any(padding):
        x = pad(x, *padding, mode=pad_mode)
    o, i, kh, kw = w.shape
    if x.shape[1] != i:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels, kernel expects {i}")
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # B,C,Ho,Wo,kh,kw
    out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))                       # B,Ho,Wo,O
    out = out.transpose(0, 3, 1, 2)
    if b is not None:
        out = out + b[None, :, None, None]
    return np.ascontiguousarray(out)


def conv_transpose2d(x: Array, w: Array, b: Optional[Array] = None, stride: int = 2,
                     crop: Tuple[int, int] = (1, 0)) -> Array:
    """Transposed conv with an IOHW kernel: the full ``(H-1)*s + k`` output, then ``crop``
    (top/left, bottom/right) removed.  crop=(1, 0) equals torch's padding=1, output_padding=1."""
    i, o, kh, kw = w.shape
    bsz, c, h, wd = x.shape
    full = np.zeros((bsz, o, (h - 1) * stride + kh, (wd - 1) * stride + kw))
    # Scatter each input pixel's contribution: out[.., y*s+p, x*s+q] += x[.., y, x] * w[i, o, p, q]
    for p in range(kh):
        for q in range(kw):
            full[:, :, p:p + (h - 1) * stride + 1:stride, q:q + (wd - 1) * stride + 1:stride] += \
                np.einsum("bihw,io->bohw", x, w[:, :, p, q])
    a, z = crop
    out = full[:, :, a:full.shape[2] - z, a:full.shape[3] - z]
    if b is not None:
        out = out + b[None, :, None, None]
    return np.ascontiguousarray(out)


def relu(x: Array) -> Array:
    return np.maximum(x, 0.0)


def _pool_windows(x: Array) -> Array:
    h2, w2 = x.shape[2] // 2, x.shape[3] // 2     # floor mode, as both frameworks' VALID pooling
    return x[:, :, :2 * h2, :2 * w2].reshape(x.shape[0], x.shape[1], h2, 2, w2, 2)


def max_pool2d(x: Array) -> Array:
    """2x2 max pooling, stride 2."""
    return _pool_windows(x).max(axis=(3, 5))


def avg_pool2d(x: Array) -> Array:
    """2x2 average pooling, stride 2 (no padding, so count_include_pad does not arise)."""
    return _pool_windows(x).mean(axis=(3, 5))


def instance_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    """Per image and channel: (x - mean) / sqrt(biased var + eps) * weight + bias."""
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)          # biased (ddof=0), as torch and TF compute it
    return (x - mean) / np.sqrt(var + eps) * weight[None, :, None, None] + bias[None, :, None, None]


def style_mix(table: Array, style: Array) -> Array:
    """The conditional norm's per-channel parameter for a style weight vector: ``style @ table``
    (a (N,) vector against an (N, C) gamma or beta table; a one-hot vector picks a row)."""
    return np.asarray(style, np.float64) @ np.asarray(table, np.float64)


def conditional_instance_norm(x: Array, gamma: Array, beta: Array, style: Array, eps: float) -> Array:
    """Dumoulin et al. 2017: instance norm whose affine parameters are the style-weighted sum of
    the (N, C) ``gamma`` / ``beta`` rows."""
    return instance_norm(x, style_mix(gamma, style), style_mix(beta, style), eps)


def batch_norm(x: Array, weight: Array, bias: Array, running_mean: Array, running_var: Array,
               eps: float) -> Array:
    """Batch norm in inference mode (running statistics)."""
    inv = weight / np.sqrt(running_var + eps)
    return (x - running_mean[None, :, None, None]) * inv[None, :, None, None] + bias[None, :, None, None]


def upsample_nearest2x(x: Array) -> Array:
    return x.repeat(2, axis=2).repeat(2, axis=3)


# --------------------------------------------------------------------------- VGG
def vgg_features(x_net: Array, weights: Mapping[str, Array], vgg: VGGSpec,
                 layers: Iterable[str]) -> Dict[str, Array]:
    """Run a preprocessed NCHW batch through VGG, returning the named layers."""
    layers = list(layers)
    out: Dict[str, Array] = {}
    h = np.asarray(x_net, dtype=np.float64)
    for layer in vgg_truncate(vgg.arch, layers):
        if layer.kind == "conv":
            h = conv2d(h, np.asarray(weights[f"{layer.name}.weight"], np.float64),
                       np.asarray(weights[f"{layer.name}.bias"], np.float64), 1, 1, "zeros")
        elif layer.kind == "relu":
            h = relu(h)
        else:
            h = max_pool2d(h) if vgg.pooling == "max" else avg_pool2d(h)
        if layer.name in layers:
            out[layer.name] = h
    return out


# --------------------------------------------------------------------------- losses
def gram(f: Array, convention: str) -> Array:
    """(B, C, H, W) -> (B, C, C) Gram matrices, normalised per ``convention``."""
    b, c, h, w = f.shape
    m = f.reshape(b, c, h * w)
    return m @ m.transpose(0, 2, 1) / _conv.gram_divisor(convention, c, h, w)


def style_loss(f: Array, target_gram: Array, convention: str) -> float:
    """Style loss of one layer, averaged over the batch; ``target_gram`` is (C, C) or (B, C, C)."""
    b, c, h, w = f.shape
    d = gram(f, convention) - target_gram
    per_image = (d ** 2).sum(axis=(1, 2)) * _conv.style_scale(convention, c, h, w)
    return float(per_image.mean())


def content_loss(f: Array, target: Array, convention: str) -> float:
    """Content loss of one layer, averaged over the batch."""
    b, c, h, w = f.shape
    per_image = ((f - target) ** 2).sum(axis=(1, 2, 3)) * _conv.content_scale(convention, c, h, w)
    return float(per_image.mean())


def _tv_diffs(x: Array) -> Tuple[Array, Array]:
    return x[:, :, 1:, :] - x[:, :, :-1, :], x[:, :, :, 1:] - x[:, :, :, :-1]


def tv_loss(x: Array, convention: str) -> float:
    """Total variation of an NCHW image batch, averaged over the batch."""
    p, red = _conv.tv_form(convention)
    dh, dw = _tv_diffs(x)
    r = (lambda a: a.sum(axis=(1, 2, 3))) if red == "sum" else (lambda a: a.mean(axis=(1, 2, 3)))
    return float((r(np.abs(dh) ** p) + r(np.abs(dw) ** p)).mean())


def style_loss_grad(f: Array, target_gram: Array, convention: str) -> Array:
    """d style_loss / d f, analytically: (4 s / d) (G − A) F / B for symmetric G, A."""
    b, c, h, w = f.shape
    d = _conv.gram_divisor(convention, c, h, w)
    s = _conv.style_scale(convention, c, h, w)
    diff = gram(f, convention) - target_gram
    m = f.reshape(b, c, h * w)
    return (4.0 * s / d * (diff @ m) / b).reshape(f.shape)


def content_loss_grad(f: Array, target: Array, convention: str) -> Array:
    b, c, h, w = f.shape
    return 2.0 * _conv.content_scale(convention, c, h, w) * (f - target) / b


def tv_loss_grad(x: Array, convention: str) -> Array:
    p, red = _conv.tv_form(convention)
    dh, dw = _tv_diffs(x)
    gh = (2 * dh) if p == 2 else np.sign(dh)
    gw = (2 * dw) if p == 2 else np.sign(dw)
    if red == "mean":
        gh = gh / dh[0].size
        gw = gw / dw[0].size
    g = np.zeros_like(x)
    g[:, :, 1:, :] += gh
    g[:, :, :-1, :] -= gh
    g[:, :, :, 1:] += gw
    g[:, :, :, :-1] -= gw
    return g / x.shape[0]


def total_loss(features: Mapping[str, Array], image_nchw: Array, loss: LossSpec,
               content_targets: Mapping[str, Array], style_grams: Mapping[str, Array]) -> Dict[str, float]:
    """The terms of resty.losses.weighted_terms as a dict of float64 values, by LOSS_TERMS name."""
    terms = _conv.weighted_terms(loss, features, image_nchw, content_targets, style_grams,
                                 content_loss=content_loss, style_loss=style_loss, tv_loss=tv_loss, zero=0.0)
    return dict(zip(_conv.LOSS_TERMS, terms))


# --------------------------------------------------------------------------- transformer
def transformer_forward(img01: Array, weights: Mapping[str, Array], spec: TransformerSpec,
                        raw: bool = False, style=None) -> Array:
    """Johnson's transformer on RGB [0, 1] images (B, H, W, 3) -> (B, H, W, 3) in [0, 1] units
    (not clamped; ``output_activation='none'`` can leave the range).  ``raw=True`` returns the
    pre-activation output in network units (NCHW), before cropping.  ``style`` (conditional
    norm only): a style index, or a weight vector of ``spec.num_styles`` used as given (the
    norms' gamma/beta are ``style @ table``); None is style 0."""
    if spec.conditional:
        if style is None:
            style = 0
        if np.ndim(style) == 0:
            style = np.eye(spec.num_styles)[int(style)]
        style = np.asarray(style, np.float64)
        if style.shape != (spec.num_styles,):
            raise ValueError(f"style: expected an index or {spec.num_styles} weights, got shape {style.shape}")
    x = as_batch(img01).transpose(0, 3, 1, 2)
    _, _, h0, w0 = x.shape
    if min(h0, w0) < spec.kernel_in // 2 + 1:
        raise ValueError(f"transformer input: sides must be >= {spec.kernel_in // 2 + 1} px, got {h0}x{w0}")
    m = spec.size_multiple
    # Reflection-pad up to a multiple of 4 so the two stride-2 stages invert exactly; crop after.
    x = pad(x, 0, (-h0) % m, 0, (-w0) % m, "reflect") * spec.input_scale

    def W(name):
        return np.asarray(weights[name], dtype=np.float64)

    def apply(h, layer):
        if layer.upsample:
            h = upsample_nearest2x(h)
        bias = W(f"{layer.name}.bias") if layer.bias else None
        if layer.transposed:
            h = conv_transpose2d(h, W(f"{layer.name}.weight"), bias, layer.stride, spec.transpose_crop)
        else:
            k = layer.kernel // 2
            h = conv2d(h, W(f"{layer.name}.weight"), bias, layer.stride, (k, k, k, k), "reflect")
        if layer.norm:
            n = f"{layer.name}.norm"
            if spec.norm == "instance":
                h = instance_norm(h, W(n + ".weight"), W(n + ".bias"), spec.norm_eps)
            elif spec.conditional:
                h = conditional_instance_norm(h, W(n + ".weight"), W(n + ".bias"), style, spec.norm_eps)
            else:
                h = batch_norm(h, W(n + ".weight"), W(n + ".bias"), W(n + ".running_mean"),
                               W(n + ".running_var"), spec.norm_eps)
        if layer.relu:
            h = relu(h)
        return h

    defs = {l.name: l for l in transformer_layers(spec)}
    h = x
    for name in ("conv_in", "down1", "down2"):
        h = apply(h, defs[name])
    for i in range(1, spec.residual_blocks + 1):
        r = apply(apply(h, defs[f"res{i}.conv1"]), defs[f"res{i}.conv2"])
        h = h + r
    for name in ("up1", "up2", "conv_out"):
        h = apply(h, defs[name])
    if raw:
        return h
    y = h[:, :, :h0, :w0]
    if spec.output_activation == "none":
        y = y / spec.input_scale
    elif spec.output_activation == "sigmoid":
        y = 1.0 / (1.0 + np.exp(-y))
    else:
        y = (np.tanh(y) + 1.0) / 2.0
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1))


# --------------------------------------------------------------------------- optimisers
class AdamState:
    """Adam moments; ``step`` counts updates taken."""

    def __init__(self, shape):
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.step = 0


def adam_betas(spec: AdamSpec) -> Tuple[float, float]:
    """The β1, β2 that Adam's bias corrections ``1 - β^t`` use.  Torch: the spec's.  Keras
    (``spec.epsilon_hat``): the spec's rounded to float32, whatever the variables' dtype, since
    Keras 3's Adam computes ``ops.power(ops.cast(self.beta_1, variable.dtype), step)`` and
    ``tf.cast`` of a Python float goes through a float32 tensor (0.99 -> 0.9900000095367432).
    In a float64 run this moves the first step by ~1e-7 (the tf-tutorial mismatch, issue 16)."""
    if spec.epsilon_hat:
        return float(np.float32(spec.beta1)), float(np.float32(spec.beta2))
    return spec.beta1, spec.beta2


def adam_bias_corrections(spec: AdamSpec, t) -> Tuple[float, float]:
    """``(1 - β1^t, 1 - β2^t)`` in float64 with :func:`adam_betas`."""
    b1, b2 = adam_betas(spec)
    return 1 - b1 ** t, 1 - b2 ** t


def adam_step(x: Array, grad: Array, state: AdamState, spec: AdamSpec) -> Array:
    """One Adam update.  PyTorch's formula (``torch.optim.Adam``, foreach=False) by default:

        m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²
        x -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)

    With ``spec.epsilon_hat`` Keras 3's Adam (the eps inside before bias correction, its
    moment updates ``m += (g - m)(1-β1)``, betas rounded to float32 in the bias corrections,
    :func:`adam_betas`):
        x -= lr·sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + eps)
    """
    g = grad + spec.weight_decay * x if spec.weight_decay else grad
    state.step += 1
    t = state.step
    bc1, bc2 = adam_bias_corrections(spec, t)
    if spec.epsilon_hat:
        # Keras's moment updates, m += (g - m)(1-β1), and its operation order
        state.m = state.m + (g - state.m) * (1 - spec.beta1)
        state.v = state.v + (g * g - state.v) * (1 - spec.beta2)
        return x - (spec.lr * np.sqrt(bc2) / bc1 * state.m) / (np.sqrt(state.v) + spec.eps)
    state.m = spec.beta1 * state.m + (1 - spec.beta1) * g
    state.v = spec.beta2 * state.v + (1 - spec.beta2) * g * g
    return x - (spec.lr / bc1) * state.m / (np.sqrt(state.v) / np.sqrt(bc2) + spec.eps)


def lbfgs_minimize(fun: Callable[[Array], Tuple[float, Array]], x0: Array, spec: LBFGSSpec,
                   max_evals: int, callback: Optional[Callable[[int, float], None]] = None,
                   project: Optional[Callable[[Array], Array]] = None,
                   project_at: str = "step") -> Tuple[Array, list]:
    """L-BFGS with the exact semantics of ``torch.optim.LBFGS`` (line_search_fn=None),
    called repeatedly with ``max_iter`` inner iterations per outer step until ``max_evals``
    function evaluations were made (the way Gatys implementations drive it).

    ``project`` (e.g. clamping to [0, 1]) is applied where ``project_at`` says
    (resty.specs.CLAMP_MODES): ``step`` between outer steps (after every ``optimizer.step``),
    ``evaluation``/``update`` to x itself before every evaluation (the PyTorch tutorial's
    ``clamp_`` inside the closure; L-BFGS does not see the change: its pairs are built from its
    own ``t·d``), and once after the last outer step.  Returns the final x and the list of
    losses, one per evaluation.
    This is the one definition of the algorithm; the TensorFlow backend ports it op by op.
    """
    if spec.line_search is not None:
        raise ValueError("lbfgs_minimize: the reference implements line_search=None only")
    x = np.array(x0, dtype=np.float64).ravel()
    shape = np.shape(x0)
    losses: list = []
    # State that torch keeps across outer steps.
    d = t = None
    old_dirs: list = []
    old_stps: list = []
    ro: list = []
    h_diag = 1.0
    prev_flat_grad = prev_loss = None
    n_iter = 0

    inner = project is not None and project_at in ("evaluation", "update")

    def evaluate(xf):
        if inner:       # in place, as clamp_ on the parameter inside the closure
            xf[...] = np.asarray(project(xf.reshape(shape)), dtype=np.float64).ravel()
        f, g = fun(xf.reshape(shape))
        losses.append(float(f))
        if callback is not None:
            callback(len(losses), float(f))
        return float(f), np.asarray(g, dtype=np.float64).ravel()

    max_eval_per_step = spec.max_iter * 5 // 4     # torch's default max_eval
    while len(losses) < max_evals:
        # One outer torch step, with max_iter cut to the evaluations left: torch makes one
        # evaluation per inner iteration except the last, whose update is applied unevaluated.
        step_max_iter = min(spec.max_iter, max_evals - len(losses))
        loss, flat_grad = evaluate(x)
        evals = 1
        if np.abs(flat_grad).max() <= spec.tolerance_grad:
            break
        it = 0
        while it < step_max_iter:
            it += 1
            n_iter += 1
            if n_iter == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                h_diag = 1.0
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y @ s
                if ys > 1e-10:
                    if len(old_dirs) == spec.history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / (y @ y)
                num_old = len(old_dirs)
                al = [0.0] * num_old
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = (old_stps[i] @ q) * ro[i]
                    q = q - al[i] * old_dirs[i]
                d = q * h_diag
                for i in range(num_old):
                    be_i = (old_dirs[i] @ d) * ro[i]
                    d = d + old_stps[i] * (al[i] - be_i)
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            t = (min(1.0, 1.0 / np.abs(flat_grad).sum()) * spec.lr) if n_iter == 1 else spec.lr
            gtd = flat_grad @ d
            if gtd > -spec.tolerance_change:
                break
            x = x + t * d
            if it != step_max_iter:
                loss, flat_grad = evaluate(x)
                evals += 1
            if it == step_max_iter or evals >= max_eval_per_step:
                break
            if np.abs(flat_grad).max() <= spec.tolerance_grad:
                break
            if np.abs(d * t).max() <= spec.tolerance_change:
                break
            if abs(loss - prev_loss) < spec.tolerance_change:
                break
        if project is not None:
            x = np.asarray(project(x.reshape(shape)), dtype=np.float64).ravel()
    return x.reshape(shape), losses


# --------------------------------------------------------------------------- AdaIN (Huang & Belongie 2017)
def adain_mean_std(x: Array, convention: str, eps: float) -> Tuple[Array, Array]:
    """Per sample and channel over H×W: ``(μ, σ)``, each (N, C, 1, 1); ``convention`` is one of
    resty.specs.SIGMA_CONVENTIONS (biased, biased_eps, unbiased_eps)."""
    mu = x.mean(axis=(2, 3), keepdims=True)
    div, e = _conv.sigma_form(convention, x.shape[2] * x.shape[3], eps)
    return mu, np.sqrt(((x - mu) ** 2).sum(axis=(2, 3), keepdims=True) / div + e)


def adain(content: Array, style: Array, spec) -> Array:
    """resty.losses.adain_transfer in float64."""
    return _conv.adain_transfer(content, style, spec, lambda x, c: adain_mean_std(x, c, spec.eps))


def adain_encoder(img01: Array, weights: Mapping[str, Array], spec) -> Dict[str, Array]:
    """The AdaIN encoder on RGB [0, 1] images (B, H, W, 3): the 1×1 ``conv0`` (the preprocessing,
    resty.adain.encoder_tensors), then VGG19 to relu4_1 with the spec's padding; returns
    relu1_1, relu2_1, relu3_1 and relu4_1 (NCHW)."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    h = conv2d(np.ascontiguousarray(as_batch(img01).transpose(0, 3, 1, 2)), w["conv0.weight"], w["conv0.bias"])
    out: Dict[str, Array] = {}
    wanted = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    for layer in vgg_truncate("vgg19", wanted):
        if layer.kind == "conv":
            h = conv2d(h, w[f"{layer.name}.weight"], w[f"{layer.name}.bias"], 1, 1, spec.encoder_padding)
        elif layer.kind == "relu":
            h = relu(h)
        else:
            h = max_pool2d(h)
        if layer.name in wanted:
            out[layer.name] = h
    return out


def adain_decoder(t: Array, weights: Mapping[str, Array], spec) -> Array:
    """The decoder on NCHW relu4_1-like features -> NCHW images (not clamped)."""
    from .specs import adain_decoder_layers
    h = np.asarray(t, np.float64)
    layers = adain_decoder_layers(spec)
    for i, (name, _, _, up) in enumerate(layers):
        h = conv2d(h, np.asarray(weights[f"{name}.weight"], np.float64), np.asarray(weights[f"{name}.bias"], np.float64),
                   1, 1, spec.decoder_padding)
        if i < len(layers) - 1:
            h = relu(h)
        if up:
            h = upsample_nearest2x(h)
    return h


def adain_loss(g_feats: Mapping[str, Array], target: Array, style_feats: Mapping[str, Array], spec) -> Dict[str, float]:
    """resty.losses.adain_loss_terms in float64: ``{total, content, style, tv}`` (tv 0)."""
    t = _conv.adain_loss_terms(g_feats, target, style_feats, spec,
                               mean_std=lambda x, c: adain_mean_std(x, c, spec.eps), reduce_mean=np.mean,
                               reduce_sum=np.sum, batch=lambda d: d.shape[0], zero=0.0)
    return {"total": float(t[0]), "content": float(t[1]), "style": float(t[2]), "tv": 0.0}


def adain_train_terms(content01: Array, style01: Array, encoder: Mapping[str, Array], decoder: Mapping[str, Array],
                      spec) -> Dict[str, float]:
    """One training step's loss terms on paired batches (B, H, W, 3) of content and style crops."""
    fc = adain_encoder(content01, encoder, spec)
    fs = adain_encoder(style01, encoder, spec)
    t = adain(fc["relu4_1"], fs["relu4_1"], spec)
    g = adain_decoder(t, decoder, spec)
    return adain_loss(adain_encoder(np.ascontiguousarray(g.transpose(0, 2, 3, 1)), encoder, spec), t, fs, spec)


__all__ += ["adain_mean_std", "adain", "adain_encoder", "adain_decoder", "adain_loss", "adain_train_terms"]
