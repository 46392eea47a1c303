"""Every tolerance of the parity suite, in one place, with the reason for it.

Two tiers (docs/ARCHITECTURE.md, pitfalls):

* **float64** — tight.  Measured on CPU with random weights and TF32 off, torch and TF agree
  to ≤ 1e-13 relative on features, Grams, losses, gradients and Johnson outputs, and the
  NumPy oracle agrees with torch to 3e-15.  A tolerance of 1e-10 of the tensor's scale leaves
  three orders of magnitude of headroom for summation order, yet a convention bug (an eps, a
  divisor, a one-pixel shift, a transposed kernel) is at least ~1e-7 and cannot hide there.
* **float32** — scaled to each tensor.  Measured: features ≈ 3e-6, Grams ≈ 7e-7, Johnson
  output ≈ 1e-5 of their scale; so features, Grams, losses and outputs get 1e-4 of their
  scale.  Gradients through VGG are compared by relative L2 norm and cosine instead of
  element-wise: a ReLU whose input is within rounding of zero legitimately takes the other
  branch in one framework (measured relL2 ≈ 5e-4), which makes single elements differ by O(1)
  of their own size while the gradient as a whole agrees.

Definitions (see :mod:`parity_tests.compare`): for tensors ``a`` and ``b``
``scale = max(max|a|, max|b|)``; *scaled* tolerances pass iff ``max|a−b| ≤ rtol·scale``
(the "max rel diff" column is ``max|a−b| / scale``); *norm* tolerances pass iff
``‖a−b‖₂ / max(‖a‖₂, ‖b‖₂) ≤ rtol`` and ``cos(a, b) ≥ min_cos`` (the column is the relL2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["Tolerance", "TOLERANCES", "get", "DTYPES", "CATEGORIES"]

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Tolerance:
    kind: str                  # "scaled" (max abs diff vs tensor scale) or "norm" (relL2 + cosine)
    rtol: float
    min_cos: Optional[float] = None
    reason: str = ""

    def __post_init__(self):
        if self.kind not in ("scaled", "norm"):
            raise ValueError(f"Tolerance.kind: got {self.kind!r}; allowed: 'scaled', 'norm'")
        if self.kind == "norm" and self.min_cos is None:
            raise ValueError("Tolerance: a norm tolerance needs min_cos")

    def describe(self) -> str:
        def fmt(x):
            return f"{x:.1e}".replace(".0e", "e")

        if self.kind == "scaled":
            return f"{fmt(self.rtol)}·scale"
        cos = f"1−{fmt(1 - self.min_cos)}" if self.min_cos > 0.999999 else f"{self.min_cos:g}"
        return f"relL2 {fmt(self.rtol)}, cos ≥ {cos}"


_F64 = ("float64: torch vs TF measured ≤ 1e-13 relative and oracle vs torch 3e-15 (ARCHITECTURE.md, pitfalls); "
        "1e-10 leaves 1000× headroom for summation order while any convention bug is ≥ 1e-7")

# (category, dtype) -> Tolerance
TOLERANCES: Dict[Tuple[str, str], Tolerance] = {
    # Preprocessing is an element-wise affine map: only rounding of x·scale − mean (≤ 1 ulp).
    ("preprocess", "float64"): Tolerance("scaled", 1e-12, reason=_F64 + "; an affine map: ~1 ulp"),
    ("preprocess", "float32"): Tolerance("scaled", 1e-6, reason="element-wise affine map in float32: a few ulp (6e-8) of the scale"),
    # VGG activations.
    ("features", "float64"): Tolerance("scaled", 1e-10, reason=_F64),
    ("features", "float32"): Tolerance("scaled", 1e-4, reason="float32 VGG features measured 3e-6 of scale (ARCHITECTURE.md, pitfalls); 1e-4 ≈ 30× headroom"),
    # Gram matrices.
    ("gram", "float64"): Tolerance("scaled", 1e-10, reason=_F64),
    ("gram", "float32"): Tolerance("scaled", 1e-4, reason="float32 Grams measured 7e-7 of scale (ARCHITECTURE.md, pitfalls); 1e-4 as for features"),
    # Scalar losses (and vectors of per-term losses).
    ("loss", "float64"): Tolerance("scaled", 1e-10, reason=_F64),
    ("loss", "float32"): Tolerance("scaled", 1e-4, reason="a loss is a sum of squares of float32 differences of O(1) relative accuracy 1e-6; 1e-4 of its value"),
    # Gradients of losses w.r.t. features (no ReLU in between): element-wise is fine in f64;
    # in f32 we still use norms since cancellation in G − A varies per element.
    ("grad", "float64"): Tolerance("norm", 1e-10, 1 - 1e-12, reason=_F64 + "; compared by relative L2 and cosine"),
    ("grad", "float32"): Tolerance("norm", 5e-3, 0.9999, reason="gradient through ReLUs: sign flips near zero are legitimate; measured relL2 ≈ 5e-4 (ARCHITECTURE.md, pitfalls), 10× headroom; cosine ≥ 0.9999"),
    # Transformer outputs (images in [0, 1] units).
    ("output", "float64"): Tolerance("scaled", 1e-10, reason=_F64),
    ("output", "float32"): Tolerance("scaled", 1e-4, reason="float32 Johnson output measured 1e-5 of scale (ARCHITECTURE.md, pitfalls); 1e-4 = 10× headroom"),
    # Optimiser trajectories: displacement x_N − x_0 after N steps.  In float64 every step is
    # deterministic arithmetic on identical numbers (measured 3e-14 over 20 Adam steps, docs/
    # ARCHITECTURE.md, pitfalls).  In float32 Adam normalises each element by its own gradient size, so an element
    # whose gradient is at rounding level moves by ±lr at random: compare by norm and cosine.
    ("trajectory", "float64"): Tolerance("norm", 1e-9, 1 - 1e-12, reason="float64 Adam: 3e-14 over 20 steps (ARCHITECTURE.md, pitfalls); L-BFGS compounds the curvature estimate, 1e-9"),
    ("trajectory", "float32"): Tolerance("norm", 2e-2, 0.999, reason="float32: Adam/L-BFGS amplify rounding of tiny gradient elements to ±lr steps; relL2 2e-2 and cosine 0.999 of the displacement"),
    # One optimiser step from *identical* gradients (numbers handed to both sides): only the
    # update formula differs, so the step Δx is compared element-wise to its own scale.
    ("step", "float64"): Tolerance("scaled", 1e-10, reason=_F64),
    ("step", "float32"): Tolerance("scaled", 1e-4, reason="float32 Adam update from identical gradients: a few ulp of the step; Keras's epsilon-hat moves it by ≥ 3e-3"),
    # Images returned by the public API (stylize): float32 H×W×3 by contract, also in the float64
    # tier, where both backends round the same float64 numbers to float32: identical except for
    # a value within 1e-13 of a rounding boundary, which differs by one ulp.
    ("image_out", "float64"): Tolerance("scaled", 1.2e-7, reason="the API returns float32 images: float64 runs round to the same float32 except at a rounding boundary (≤ 1 ulp = 1.2e-7 of the scale)"),
    ("image_out", "float32"): Tolerance("scaled", 1e-4, reason="float32 Johnson output measured 1e-5 of scale (ARCHITECTURE.md, pitfalls); 1e-4 = 10× headroom"),
    # End-to-end stylize / training: many steps through VGG in float32.
    ("e2e", "float64"): Tolerance("scaled", 1.2e-7, reason="float64: many VGG forward/backward passes (each ≤ 1e-13) and a float32 image out (API): ≤ 1 float32 ulp of the scale"),
    ("e2e", "float32"): Tolerance("norm", 5e-2, 0.999, reason="float32: ReLU sign flips (relL2 5e-4 per gradient) compound over the steps, and L-BFGS's curvature pairs amplify them (measured: 10 L-BFGS evaluations at 24×40, output change relL2 1.4e-2, cosine 0.9999, loss history 6e-5); relL2 and cosine of the change from the start"),
}

CATEGORIES = tuple(sorted({c for c, _ in TOLERANCES}))


def get(category: str, dtype: str) -> Tolerance:
    try:
        return TOLERANCES[(category, dtype)]
    except KeyError:
        raise KeyError(f"no tolerance for ({category!r}, {dtype!r}); categories: {', '.join(CATEGORIES)}") from None
