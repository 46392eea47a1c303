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


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread for torch here: on a few shared cores the default pool oversubscribes
    them (a 40-evaluation run took 12 s with 2 threads, 1.5 s with 1), and float64 sums then
    do not depend on the thread count."""
    if TORCH is None:
        yield
        return
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def _pt_resty(pt_source, preset, dtype="float64", evals=None):
    content, style, _, n = pt_source
    g = TORCH.GatysStylizer(preset, weights=SEED, dtype=dtype)
    return g.stylize(content, style, iterations=evals or n, output_dtype="float64")


def _diff(a, b) -> float:
    return float("inf") if a.shape != b.shape else float(np.abs(a - b).max())


def test_pytorch_tutorial_matches_its_source(pt_source):
    ref, evals = pt_source[2], pt_source[3]
    assert evals == 40
    d64 = _diff(_pt_resty(pt_source, _pt_preset()), ref)
    d32 = _diff(_pt_resty(pt_source, _pt_preset(), "float32"), ref)
    print(f"\npytorch-tutorial: {evals} evaluations, float64 max abs {d64:.2e}, float32 {d32:.2e}")
    assert d64 <= TOL


@pytest.mark.parametrize("mutation", [dict(clamp="step"), dict(clamp="end")], ids=["clamp-step", "clamp-end"])
def test_pytorch_tutorial_mutation_breaks_the_match(pt_source, mutation):
    assert _diff(_pt_resty(pt_source, _pt_preset(**mutation)), pt_source[2]) > 1e3 * TOL


def test_pytorch_tutorial_sizing_mutation_breaks_the_match(pt_source):
    """Sizing 'longest' (36×48 instead of 48×64); one evaluation shows the shape."""
    assert _diff(_pt_resty(pt_source, _pt_preset(sizing="longest"), evals=1), pt_source[2]) == float("inf")


# --------------------------------------------------------------------------- tf-tutorial
# Content 51×64 -> longest 40 -> 31×40 (int(31.875) = 31: `longest` sizing would give 32);
# style 70×45 -> 40×25, each on its own.  The content is stretched so that ~10% of its pixels
# start at 0 or 1: the clip after each update is active (without it, 20 steps of lr 0.02 never
# leave [0, 1] and every clamp mode gives the same image).
TF_STEPS = 20


def _tf_preset(**gatys):
    p = presets.get("tf-tutorial")
    return p.replace(gatys=p.gatys.replace(image_size=40, iterations=TF_STEPS, **gatys))


@pytest.fixture(scope="module")
def tf_source():
    if TF is None:
        pytest.skip("tensorflow not installed")
    import source_tf_tutorial as S
    content, style = np.clip(1.4 * (_image(51, 64, 1) - 0.5) + 0.5, 0.0, 1.0), _image(70, 45, 2)
    ws = resolve_loss_network(SEED, "vgg19", presets.get("tf-tutorial").preprocessing_name)
    return content, style, S.tutorial(content, style, ws, max_dim=40, steps=TF_STEPS)


def _tf_resty(tf_source, preset, dtype="float64", backend=None):
    content, style, _ = tf_source
    return (backend or TF).GatysStylizer(preset, weights=SEED, dtype=dtype).stylize(content, style,
                                                                                  output_dtype="float64")


def test_tf_tutorial_matches_its_source(tf_source):
    d64 = _diff(_tf_resty(tf_source, _tf_preset()), tf_source[2])
    d32 = _diff(_tf_resty(tf_source, _tf_preset(), "float32"), tf_source[2])
    d_torch = _diff(_tf_resty(tf_source, _tf_preset(), backend=TORCH), tf_source[2]) if TORCH else float("nan")
    print(f"\ntf-tutorial: {TF_STEPS} steps, float64 max abs {d64:.2e} (torch backend {d_torch:.2e}), "
          f"float32 {d32:.2e}")
    assert d64 <= TOL
    assert TORCH is None or d_torch <= TOL


def test_tf_tutorial_clamp_mutation_breaks_the_match(tf_source):
    """Clamp 'end' (no clip after each update) instead of the tutorial's 'update'."""
    assert _diff(_tf_resty(tf_source, _tf_preset(clamp="end")), tf_source[2]) > 1e3 * TOL


def test_tf_tutorial_sizing_mutation_breaks_the_match(tf_source):
    """Sizing 'longest' (rounded: 32 rows instead of 31).  The output size is
    resty.gatys.output_size's, which the stylizers call (a TF run would only show the shape)."""
    from resty.gatys import output_size
    content, _, ref = tf_source
    assert output_size(content.shape[:2], 40, _tf_preset().gatys.sizing) == ref.shape[:2] == (31, 40)
    assert output_size(content.shape[:2], 40, "longest") == (32, 40)


# --------------------------------------------------------------------------- pytorch-examples
# fast_neural_style's train() for 3 steps (batch 2 of 4 training images, 32 px) and stylize();
# float32-representable pixels: Resty's training pipeline decodes items to float32.
PE_SIZE, PE_BATCH, PE_STEPS = 32, 2, 3


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(np.float64)


def _pe_dead(name: str) -> bool:
    """Parameters whose true gradient is exactly 0: a conv bias in front of instance norm, and the
    second norm's bias in a residual block (the residual stream only reaches conv -> instance norm,
    which removes a per-channel constant).  Adam moves them by lr·noise/(|noise| + eps)."""
    return ((name.endswith(".bias") and not name.endswith("norm.bias") and not name.startswith("conv_out"))
            or (name.startswith("res") and name.endswith("conv2.norm.bias")))


@pytest.fixture(scope="module")
def pe_source():
    if TORCH is None:
        pytest.skip("torch not installed")
    import torch
    import source_pytorch_examples as S
    from resty.training_data import BatchSchedule
    p = presets.get("pytorch-examples")
    images = [_f32(_image(PE_SIZE, PE_SIZE, 10 + i)) for i in range(4)]
    style, content = _f32(_image(PE_SIZE + 8, PE_SIZE - 4, 3)), _f32(_image(PE_SIZE + 4, PE_SIZE + 12, 4))
    w0 = TORCH.FastStylizer(p, weights=SEED, dtype="float64").net.state_dict_canonical()
    net = S.load_transformer(w0)
    vgg = S.Vgg16(S.vgg16_features(resolve_loss_network(SEED, "vgg16", p.preprocessing_name)))
    sched = BatchSchedule(len(images), PE_BATCH, p.training.seed)
    f = p.fast_loss
    S.train(net, vgg, images, [sched.batch(s) for s in range(PE_STEPS)], style, lr=p.training.adam.lr,
            content_weight=f.content_weight, style_weight=f.style_weight)
    return dict(images=images, style=style, content=content, w0=w0, weights=S.transformer_canonical(net),
                image=S.stylize(net, content))


def _pe_resty(pe_source, preset=None, dtype="float64"):
    """(canonical weights after PE_STEPS steps, stylized content image) of Resty's FastStylizer."""
    import torch
    fs = TORCH.FastStylizer(preset or presets.get("pytorch-examples"), weights=SEED, dtype=dtype)
    fs.fit(pe_source["images"], pe_source["style"], steps=PE_STEPS, batch_size=PE_BATCH, image_size=PE_SIZE,
           num_workers=0)
    x = torch.from_numpy(np.ascontiguousarray(pe_source["content"].transpose(2, 0, 1)[None]))
    image = fs.stylize_tensor(x)[0].permute(1, 2, 0).double().numpy()
    return {k: v.astype(np.float64) for k, v in fs.net.state_dict_canonical().items()}, image


def _pe_diffs(pe_source, weights, image):
    ref = pe_source["weights"]
    live = max(_diff(weights[k], ref[k]) for k in ref if not _pe_dead(k))
    dead = max(_diff(weights[k], ref[k]) for k in ref if _pe_dead(k))
    return live, dead, _diff(image, pe_source["image"])


def test_pytorch_examples_matches_its_source(pe_source):
    assert set(pe_source["w0"]) == set(pe_source["weights"])
    w, img = _pe_resty(pe_source)
    live, dead, d_img = _pe_diffs(pe_source, w, img)
    moved = max(_diff(pe_source["weights"][k], pe_source["w0"][k]) for k in w)
    live32, _, img32 = _pe_diffs(pe_source, *_pe_resty(pe_source, dtype="float32"))
    print(f"\npytorch-examples: {PE_STEPS} Adam steps, batch {PE_BATCH}, {PE_SIZE} px: float64 weights max abs "
          f"{live:.2e} (zero-gradient biases {dead:.2e}; weights moved {moved:.2e}), image {d_img:.2e}; "
          f"float32 weights {live32:.2e}, image {img32:.2e}")
    assert moved > 1e-4                   # the steps did train
    assert live <= TOL and d_img <= TOL
    lr = presets.get("pytorch-examples").training.adam.lr
    assert dead <= PE_STEPS * lr          # Adam moves a parameter by at most ~lr per step


def test_pytorch_examples_mutation_breaks_the_match(pe_source):
    """Loss normalisation: the Gram MSE summed (johnson2016) instead of averaged over C×C."""
    p = presets.get("pytorch-examples")
    live, _, d_img = _pe_diffs(pe_source, *_pe_resty(pe_source, p.replace(fast_loss=p.fast_loss.replace(
        gram="johnson2016"))))
    assert live > 1e3 * TOL and d_img > 1e3 * TOL
