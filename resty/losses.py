"""Loss conventions as definitions: the normalisation each source uses, named and defined once.

Both backends and the NumPy oracle compute the same three quantities on features
``F`` of shape (B, C, H, W) (one image per batch row) and read every constant from here:

* Gram matrix per image: ``G = F_b F_bᵀ / gram_divisor(conv, C, H, W)`` with ``F_b`` viewed as
  (C, H·W).
* Style loss of one layer: ``style_scale(conv, C, H, W) · Σ_{k,k'} (G − A)²``, averaged over the
  batch (A is the target Gram, shared by every row).
* Content loss of one layer: ``content_scale(conv, C, H, W) · Σ (F − P)²`` per image, averaged
  over the batch.
* Total variation of an RGB [0, 1] image x: with ``dh = x[:, :, 1:, :] − x[:, :, :-1, :]`` and
  ``dw = x[:, :, :, 1:] − x[:, :, :, :-1]``, ``r(|dh|^p) + r(|dw|^p)`` per image with
  ``p, r = tv_form(conv)``, averaged over the batch.

Total: ``α Σ_l w_l L_content(l) + β Σ_l λ_l L_style(l) + τ L_tv`` (LossSpec).

Numerical note: a raw Gram of ReLU features grows like H·W·|F|²; in float16 it overflows at
moderate sizes. Backends therefore compute Grams and losses in float32 (or float64) even
under mixed precision, and may divide F by ``sqrt(gram_divisor)`` before the product.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple

from .specs import CONTENT_CONVENTIONS, GRAM_CONVENTIONS, TV_CONVENTIONS

__all__ = ["gram_divisor", "style_scale", "content_scale", "tv_form", "CONVENTION_SOURCES"]


CONVENTION_SOURCES: Dict[str, Dict[str, str]] = {
    "gram": {
        "raw": "G = F Fᵀ; L = Σ (G − A)²",
        "gatys2015": "Gatys et al. 2015, eq. 4-5: G = F Fᵀ; L = 1/(4 N² M²) Σ (G − A)², N channels, "
                     "M = H·W (the report's 1/(2 n_H n_W n_C)²)",
        "johnson2016": "Johnson et al. 2016, eq. 3-4: G = F Fᵀ/(C H W); L = ‖G − A‖²_F",
        "pytorch-examples": "pytorch/examples fast_neural_style: gram = bmm(F, Fᵀ)/(C H W); "
                            "mse_loss(G, A) (mean over C×C)",
        "pytorch-tutorial": "PyTorch 'Neural Transfer Using PyTorch': G = F Fᵀ/(a·b·c·d) with a = 1 "
                            "image; mse_loss(G, A)",
        "tf-tutorial": "TensorFlow 'Neural style transfer' tutorial: einsum('bijc,bijd->bcd')/(H W); "
                       "reduce_mean((G − A)²)",
    },
    "content": {
        "gatys2015": "Gatys et al. 2015, eq. 1: ½ Σ (F − P)²",
        "johnson2016": "Johnson et al. 2016, eq. 2: 1/(C H W) ‖φ(ŷ) − φ(y)‖²",
        "mse": "mean squared error over C·H·W (equal to johnson2016 by definition)",
        "sum": "Σ (F − P)²",
    },
    "tv": {
        "squared_sum": "Σ dh² + Σ dw² (Johnson et al. 2016's total-variation regulariser)",
        "abs_sum": "Σ |dh| + Σ |dw| (tf.image.total_variation, used by the TF tutorial)",
        "squared_mean": "mean(dh²) + mean(dw²)",
        "abs_mean": "mean|dh| + mean|dw|",
    },
}


def _check(kind: str, name: str, allowed) -> None:
    if name not in allowed:
        raise ValueError(f"{kind} convention: got {name!r}; allowed: {', '.join(map(repr, allowed))}")


def gram_divisor(convention: str, c: int, h: int, w: int) -> float:
    """The number a Gram matrix ``F Fᵀ`` is divided by."""
    _check("gram", convention, GRAM_CONVENTIONS)
    if convention in ("raw", "gatys2015"):
        return 1.0
    if convention == "tf-tutorial":
        return float(h * w)
    return float(c * h * w)   # johnson2016, pytorch-examples, pytorch-tutorial (one image)


def style_scale(convention: str, c: int, h: int, w: int) -> float:
    """The factor in front of ``Σ (G − A)²`` for one layer and one image."""
    _check("gram", convention, GRAM_CONVENTIONS)
    if convention == "gatys2015":
        m = float(h * w)
        return 1.0 / (4.0 * c * c * m * m)
    if convention in ("pytorch-examples", "pytorch-tutorial", "tf-tutorial"):
        return 1.0 / float(c * c)   # a mean over the C×C entries
    return 1.0                      # raw, johnson2016 (squared Frobenius norm)


def content_scale(convention: str, c: int, h: int, w: int) -> float:
    """The factor in front of ``Σ (F − P)²`` for one layer and one image."""
    _check("content", convention, CONTENT_CONVENTIONS)
    if convention == "gatys2015":
        return 0.5
    if convention == "sum":
        return 1.0
    return 1.0 / float(c * h * w)   # johnson2016, mse


def tv_form(convention: str) -> Tuple[int, str]:
    """(power p, reduction 'sum' | 'mean') of the total-variation convention."""
    _check("tv", convention, TV_CONVENTIONS)
    power = 2 if convention.startswith("squared") else 1
    reduction = "sum" if convention.endswith("sum") else "mean"
    return power, reduction


#: The loss terms every backend reports, in this order (a backend's total_loss returns them as
#: one stacked tensor in this order; histories and callbacks name them).
LOSS_TERMS = ("total", "content", "style", "tv")


def weighted_terms(loss: Any, features: Mapping[str, Any], image: Any, content_targets: Mapping[str, Any],
                   style_grams: Mapping[str, Any], *, content_loss: Callable, style_loss: Callable,
                   tv_loss: Callable, zero: Any) -> Tuple[Any, Any, Any, Any]:
    """``(total, content, style, tv)`` with ``total = α Σ w_l L_content + β Σ λ_l L_style + τ L_tv``
    (LossSpec ``loss``), composed from one framework's per-layer losses.  A layer of weight 0
    contributes nothing (it is not evaluated); ``zero`` is that framework's scalar 0 in the
    loss dtype.  Written once so the oracle and both backends add the same terms in the same
    order (float addition is not associative)."""
    content = zero
    for name, w in zip(loss.content_layers, loss.content_layer_weights):
        if w:
            content = content + w * content_loss(features[name], content_targets[name], loss.content)
    style = zero
    for name, w in zip(loss.style_layers, loss.style_layer_weights):
        if w:
            style = style + w * style_loss(features[name], style_grams[name], loss.gram)
    content = content * loss.content_weight
    style = style * loss.style_weight
    tv = tv_loss(image, loss.tv) * loss.tv_weight if loss.tv_weight else zero
    return content + style + tv, content, style, tv


# --------------------------------------------------------------------------- AdaIN (Huang & Belongie 2017)
def sigma_form(convention: str, n: Any, eps: float) -> Tuple[Any, float]:
    """``(divisor, eps under the root)`` of a σ convention over ``n`` values:
    ``σ = sqrt(Σ(x − μ)² / divisor + eps)`` (resty.specs.SIGMA_CONVENTIONS)."""
    if convention == "biased":
        return n, 0.0
    if convention == "biased_eps":
        return n, eps
    if convention == "unbiased_eps":
        return n - 1, eps
    raise ValueError(f"σ convention: got {convention!r}; allowed: 'biased', 'biased_eps', 'unbiased_eps'")


def adain_transfer(content: Any, style: Any, spec: Any, mean_std: Callable) -> Any:
    """``σ(y)·(x − μ(x))/σ(x) + μ(y)`` with the spec's content and style σ conventions;
    ``mean_std(features, convention)`` is one framework's per-sample, per-channel statistics."""
    mc, sc = mean_std(content, spec.content_sigma)
    ms, ss = mean_std(style, spec.style_sigma)
    return ss * (content - mc) / sc + ms


def adain_loss_terms(g_feats: Mapping[str, Any], target: Any, style_feats: Mapping[str, Any], spec: Any, *,
                     mean_std: Callable, reduce_mean: Callable, reduce_sum: Callable, batch: Callable,
                     zero: Any) -> Tuple[Any, Any, Any]:
    """``(total, content, style)`` of the AdaIN training loss: content = content_weight · MSE of
    relu4_1 against the AdaIN target; style = style_weight · Σ over relu1_1..relu4_1 of
    reduce((μ_g − μ_s)²) + reduce((σ_g − σ_s)²), reduce the spec's style_reduction (a mean, or a
    sum divided by the batch as the Lua code does)."""
    d = g_feats["relu4_1"] - target
    content = reduce_mean(d * d)
    style = zero
    for name in ("relu1_1", "relu2_1", "relu3_1", "relu4_1"):
        mg, sg = mean_std(g_feats[name], spec.loss_sigma)
        ms, ss = mean_std(style_feats[name], spec.loss_sigma)
        for diff in (mg - ms, sg - ss):
            sq = diff * diff
            style = style + (reduce_mean(sq) if spec.style_reduction == "mean" else reduce_sum(sq) / batch(diff))
    c, s = content * spec.content_weight, style * spec.style_weight
    return c + s, c, s
