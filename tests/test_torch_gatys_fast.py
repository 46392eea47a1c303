"""Gatys speed/memory paths of resty_torch, checked for *results* on the CPU (and on CUDA with
RESTY_TEST_DEVICE=cuda, where the CUDA-graph capture itself runs):

* DeviceLBFGS (matrix-form two-loop, ring-buffer history, no host sync) follows
  torch.optim.LBFGS's trajectory, including when the history wraps around;
* DeviceAdam equals torch.optim.Adam and the Keras epsilon-hat Adam;
* GatysStylizer(cuda_graph=True) gives the same images and loss history as the host loops;
* VGG activation checkpointing gives the same gradient while autograd keeps far fewer bytes;
* the half-precision Gram keeps no float32 copy of the features for backward.
Speed itself is measured by ``resty bench`` / benchmarks/, never here."""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import resty_torch as rt  # noqa: E402
from resty import losses as conv  # noqa: E402
from resty.specs import AdamSpec, LBFGSSpec  # noqa: E402
from resty_torch import losses as L  # noqa: E402
from resty_torch.optim import DeviceAdam, DeviceLBFGS, EpsilonHatAdam, lbfgs_outer_steps, make_lbfgs  # noqa: E402
from resty_torch.vgg import VGGFeatures  # noqa: E402

torch.set_num_threads(1)
DEV = os.environ.get("RESTY_TEST_DEVICE", "cpu")
if DEV.startswith("cuda"):
    rt.set_tf32(False)

GATYS_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")


def _problem(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = (a @ a.t() / n + 0.1 * torch.eye(n, dtype=torch.float64)).to(DEV)
    b = torch.randn(n, generator=g, dtype=torch.float64).to(DEV)
    x0 = torch.randn(n, generator=g, dtype=torch.float64).to(DEV)
    return (lambda x: 0.5 * x @ a @ x - b @ x + 0.1 * (x ** 4).sum()), x0


@pytest.mark.parametrize("history", [3, 100])
def test_device_lbfgs_follows_torch_lbfgs(history):
    f, x0 = _problem()
    spec = LBFGSSpec(history_size=history, max_iter=7)
    x = x0.clone().requires_grad_(True)
    opt = make_lbfgs(x, spec)
    ref = []

    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        ref.append(x.detach().clone())
        return loss

    lbfgs_outer_steps(opt, closure, spec, 40, lambda: len(ref))
    y = x0.clone().requires_grad_(True)
    dev = DeviceLBFGS(y, spec)
    got = []
    for _ in range(40):
        (g,) = torch.autograd.grad(f(y), y)
        got.append(y.detach().clone())
        dev.step(g)
    assert len(ref) == len(got) == 40
    err = max(float((a - b).abs().max()) for a, b in zip(ref, got))
    assert err < 1e-10
    assert float(f(got[-1])) < float(f(got[0])) - 1.0     # it really optimised


def test_device_lbfgs_freezes_at_gradient_tolerance():
    f, x0 = _problem()
    spec = LBFGSSpec(history_size=5, tolerance_grad=1e-3)
    y = x0.clone().requires_grad_(True)
    dev = DeviceLBFGS(y, spec)
    for _ in range(200):
        (g,) = torch.autograd.grad(f(y), y)
        dev.step(g)
    (g,) = torch.autograd.grad(f(y), y)
    assert bool(dev.frozen)
    before = y.detach().clone()
    dev.step(g)
    assert torch.equal(before, y.detach())     # frozen: no further update


@pytest.mark.parametrize("epsilon_hat", [False, True])
def test_device_adam_equals_host_adam(epsilon_hat):
    spec = AdamSpec(lr=0.05, eps=1e-3, epsilon_hat=epsilon_hat)
    f, x0 = _problem(seed=1)
    x = x0.clone().requires_grad_(True)
    host = (EpsilonHatAdam([x], lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps) if epsilon_hat
            else torch.optim.Adam([x], lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps))
    y = x0.clone().requires_grad_(True)
    dev = DeviceAdam([y], spec)
    for _ in range(30):
        host.zero_grad()
        f(x).backward()
        host.step()
        (g,) = torch.autograd.grad(f(y), y)
        dev.step([g])
    assert float((x - y).detach().abs().max()) < 1e-12
    assert float(dev.step_count) == 30


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_gatys_cuda_graph_path_equals_host_loop(optimizer):
    rng = np.random.default_rng(0)
    content, style = rng.random((32, 32, 3)), rng.random((32, 32, 3))
    kw = dict(iterations=24, image_size=0, optimizer=optimizer, scales=(1.0,))
    dtype = "float64" if DEV == "cpu" else "float32"
    host = rt.GatysStylizer("gatys2015", weights="random:0", device=DEV, dtype=dtype)
    fast = rt.GatysStylizer("gatys2015", weights="random:0", device=DEV, dtype=dtype, cuda_graph=True)
    a = host.stylize(content, style, **kw)
    b = fast.stylize(content, style, **kw)
    ha = np.array([h["total"] for h in host.history])
    hb = np.array([h["total"] for h in fast.history])
    assert len(ha) == len(hb) == 24
    if dtype == "float64":
        assert np.abs(ha - hb).max() <= 1e-9 * np.abs(ha).max()
        assert np.abs(a - b).max() <= 1e-6
    else:
        # float32 on a GPU: L-BFGS amplifies rounding (cuDNN picks different algorithms per
        # run), so the trajectories agree closely at first and then only in outcome (measured
        # on an H200: 1e-5 relative over the first 8 evaluations, 7% apart after 30).
        assert np.abs(ha[:8] - hb[:8]).max() <= 1e-3 * np.abs(ha).max()
        assert abs(hb[-1] - ha[-1]) <= 0.3 * ha[-1]
    assert hb[-1] < 0.7 * hb[0]                  # and it optimised


def test_gatys_cuda_graph_callback_stops_and_sees_every_step():
    rng = np.random.default_rng(1)
    seen = []
    g = rt.GatysStylizer("gatys2015", weights="random:0", device=DEV, cuda_graph=True)
    g.stylize(rng.random((32, 32, 3)), rng.random((32, 32, 3)), iterations=20, image_size=0,
              scales=(1.0,), callback=lambda step, losses, img: seen.append(step) or step == 7)
    assert seen == list(range(1, 8))
    assert len(g.history) == 7


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs."""
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def test_vgg_checkpointing_same_gradient_less_saved_memory():
    vgg = VGGFeatures("vgg19", "random:0", "max", layers=GATYS_LAYERS, device=DEV)
    weights = sum(p.numel() * p.element_size() for p in vgg.parameters())

    def grad(checkpoint):
        vgg.checkpoint = checkpoint
        x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0)).to(DEV).requires_grad_(True)

        def loss():
            f = vgg(x)
            return sum((L.gram(f[k], "gatys2015") ** 2).sum() for k in GATYS_LAYERS)

        total, saved = _saved_bytes(loss)
        total.backward()
        return x.grad, saved - weights      # conv weights are saved either way

    g0, b0 = grad(False)
    g1, b1 = grad(True)
    assert torch.equal(g0, g1)
    assert b1 < 0.3 * b0


def test_half_gram_matches_float32_and_saves_no_float32_copy():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(2, 16, 30, 20, generator=g).to(DEV)
    half = f.to(torch.bfloat16).requires_grad_(True)
    w = torch.randn(2, 16, 16, generator=g).to(DEV)
    old = L._GRAM_CHUNK
    L._GRAM_CHUNK = 2 * 16 * 128            # several column chunks
    try:
        out, saved = _saved_bytes(lambda: L.gram(half, "gatys2015"))
    finally:
        L._GRAM_CHUNK = old
    (out * w).sum().backward()
    assert out.dtype == torch.float32
    assert saved == half.numel() * 2                     # the bf16 features only
    ref = half.detach().float().requires_grad_(True)
    m = ref.reshape(2, 16, -1)
    gr = torch.bmm(m, m.transpose(1, 2)) / conv.gram_divisor("gatys2015", 16, 30, 20)
    (gr * w).sum().backward()
    assert float((out - gr).detach().abs().max()) <= 1e-5 * float(gr.detach().abs().max())
    # the gradient is the float32 one rounded to bf16 (the features' own precision)
    assert float((half.grad.float() - ref.grad).abs().max()) <= 8e-3 * float(ref.grad.abs().max())


def test_gatys_options_validated():
    with pytest.raises(ValueError, match="history_size"):
        rt.GatysStylizer("gatys2015", weights="random:0", device=DEV, cuda_graph=True, history_size=0)


def test_history_memory_check_refuses_with_the_fix():
    from resty.errors import RestyError
    from resty.gatys import check_history_memory
    n = 3 * 2048 * 2048
    check_history_memory(10, n, (2048, 2048), 40 * 2**30)          # 1 GiB of 40: fine
    with pytest.raises(RestyError, match=r"history of 100 pairs at 2048x2048 px needs 9\.4 GiB.*history_size=10"):
        check_history_memory(100, n, (2048, 2048), 12 * 2**30)
