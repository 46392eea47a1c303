"""The fast paths of resty_torch (issue 7) on the CPU: resty_torch.cudagraph (eagerly, and its
capture/replay protocol emulated), TransformerNet.configure (fused instance norm, channel
padding), FastStylizer(cuda_graph=..., fast=...) inference and training.

The CUDA capture itself needs a GPU: benchmarks/gpu_fast_explore.py runs it (and
RESTY_TEST_DEVICE=cuda runs this file there)."""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import resty_torch as rt  # noqa: E402
from resty import presets, reference as R  # noqa: E402
from resty.errors import RestyError  # noqa: E402
from resty_torch.cudagraph import (GraphedFunction, init_adam_state, optimizer_tensors,  # noqa: E402
                                   restore_snapshot, snapshot)

torch.set_num_threads(1)
DEV = os.environ.get("RESTY_TEST_DEVICE", "cpu")
if DEV.startswith("cuda"):
    rt.set_tf32(False)      # float32 comparisons below mean float32, not TF32


def _same(a, b, rtol=1e-4):
    """Bitwise on the CPU; on CUDA float32 rounding (atomics in some backward kernels and
    capturable Adam's on-device bias correction are not bitwise repeatable)."""
    a, b = np.asarray(a), np.asarray(b)
    if DEV == "cpu":
        return np.array_equal(a, b)
    return np.allclose(a, b, rtol=rtol, atol=1e-6 * max(1.0, float(np.abs(b).max())))


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).random(shape)


def _tiny_preset(norm="instance"):
    p = presets.get("johnson2016")
    return p.replace(name="tiny-fast",
                     transformer=p.transformer.replace(channels=(8, 16, 16), residual_blocks=1, norm=norm),
                     training=p.training.replace(image_size=32, batch_size=2, num_workers=0, log_every=2,
                                                 checkpoint_every=2, keep_checkpoints=3))


# ---------------------------------------------------------------- cudagraph helper
def test_graphed_function_eager_on_cpu_and_keys():
    calls = []

    def f(x, k):
        calls.append(tuple(x.shape))
        return x * k

    g = GraphedFunction(f)
    x = torch.ones(2, 3)
    assert torch.equal(g(x, 2.0), x * 2) and g.eager_calls == 1 and g.captures == 0
    k1 = GraphedFunction.key((torch.ones(1, 3, 4, 4), 1))
    k2 = GraphedFunction.key((torch.ones(1, 3, 4, 5), 1))
    k3 = GraphedFunction.key((torch.ones(1, 3, 4, 4, dtype=torch.float64), 1))
    k4 = GraphedFunction.key((torch.ones(1, 3, 4, 4), 2))
    k5 = GraphedFunction.key((torch.ones(1, 3, 4, 4).contiguous(memory_format=torch.channels_last), 1))
    assert len({k1, k2, k3, k4, k5}) == 5
    assert k1 == GraphedFunction.key((torch.zeros(1, 3, 4, 4), 1))


def test_emulated_capture_static_buffers_and_eviction():
    def f(x):
        return {"y": x * 2 + 1, "s": x.sum()}

    g = GraphedFunction(f, emulate=True, warmup=2, max_graphs=2)
    a = torch.arange(6.0).view(2, 3)
    out1 = g(a)
    assert g.captures == 1 and torch.equal(out1["y"], a * 2 + 1)
    b = torch.full((2, 3), 5.0)
    out2 = g(b)
    # Same key: the same static output tensors, overwritten by the replay.
    assert out2["y"] is out1["y"] and torch.equal(out1["y"], b * 2 + 1) and g.captures == 1
    g(torch.ones(3, 3))
    g(torch.ones(4, 3))                      # a third shape evicts the least recently used
    assert g.captures == 3 and g.graphs == 2
    g(a)
    assert g.captures == 4
    g.reset()
    assert g.graphs == 0
    c = GraphedFunction(f, emulate=True, clone_outputs=True)
    o1 = c(a)
    o2 = c(b)
    assert o1["y"] is not o2["y"] and torch.equal(o1["y"], a * 2 + 1)


def test_emulated_capture_undoes_warmup_with_restore():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.Adam([w], lr=0.1)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss = ((w * x) ** 2).sum()
        loss.backward()
        opt.step()
        return loss.detach()

    ref_w = torch.nn.Parameter(w.detach().clone())
    ref_opt = torch.optim.Adam([ref_w], lr=0.1)
    x = torch.tensor([0.5, 3.0])
    g = GraphedFunction(step, emulate=True, warmup=3, before_capture=lambda: init_adam_state(opt),
                        restore=lambda: [w, *optimizer_tensors(opt)])
    for _ in range(4):
        got = g(x)
        ref_opt.zero_grad(set_to_none=True)
        ref = ((ref_w * x) ** 2).sum()
        ref.backward()
        ref_opt.step()
        assert torch.equal(got, ref.detach())
    assert torch.equal(w.detach(), ref_w.detach())
    assert float(opt.state[w]["step"]) == 4.0


def test_snapshot_restore_in_place():
    t = torch.ones(3)
    snap = snapshot([t])
    t.add_(5)
    restore_snapshot(snap)
    assert torch.equal(t, torch.ones(3))


def test_capture_failure_fallback_and_raise():
    def bad(x):
        raise RuntimeError("operation not permitted when stream is capturing")

    g = GraphedFunction(bad, emulate=True, fallback=True)
    with pytest.warns(RuntimeWarning, match="running eagerly"):
        with pytest.raises(RuntimeError):
            g(torch.ones(2))              # the fallback call itself still raises: fn is broken
    assert g.failures
    h = GraphedFunction(bad, emulate=True)
    with pytest.raises(RuntimeError, match="capturing"):
        h(torch.ones(2))


# ---------------------------------------------------------------- transformer options
@pytest.mark.parametrize("spec_name", ["restynet", "johnson2016"])
def test_configure_pad_channels_and_fused_norm_float64_match_oracle(spec_name):
    spec = presets.get(spec_name).transformer.replace(channels=(4, 8, 8), residual_blocks=1)
    net = rt.TransformerNet(spec, "random:3", dtype="float64", device=DEV)
    x = _rand(1, 19, 22, 3, seed=1)
    ref = R.transformer_forward(x, net.state_dict_canonical(), spec)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(DEV)
    for kw in ({"pad_channels": 8}, {"pad_channels": 0, "norm_impl": "fused"}, {"pad_channels": 8},
               {"pad_impl": "cat"}):
        net.configure(**kw)
        with torch.no_grad():
            y = net(xt).cpu().numpy().transpose(0, 2, 3, 1)
        assert np.abs(y - ref).max() / np.abs(ref).max() < 1e-10, kw
    assert net.norm_impl == "fused" and net.pad_channels == 8
    with pytest.raises(ValueError):
        net.configure(norm_impl="nope")
    with pytest.raises(ValueError):
        net.configure(pad_channels=-1)
    with pytest.raises(ValueError):
        net.configure(pad_impl="zeros")


def test_default_float32_path_unchanged_and_bf16_uses_fused_norm():
    spec = presets.get("restynet").transformer.replace(channels=(8, 16, 16), residual_blocks=2)
    net = rt.TransformerNet(spec, "random:0", device=DEV).eval()
    x = torch.rand(2, 3, 28, 36, device=DEV)
    assert net.norm_impl == "auto"
    with torch.no_grad():
        y = net(x)
        net.configure(norm_impl="torch")
        y_torch = net(x)
        with torch.autocast(DEV, dtype=torch.bfloat16):
            y_bf_torch = net(x).float()
        net.configure(norm_impl="auto")
        with torch.autocast(DEV, dtype=torch.bfloat16):
            y_bf = net(x).float()
    assert torch.equal(y, y_torch)          # float32: auto is nn.InstanceNorm2d, bit for bit
    scale = y.abs().max()
    # The fused bf16 path is no worse than bf16 through nn.InstanceNorm2d.
    assert (y_bf - y).abs().max() <= 2 * (y_bf_torch - y).abs().max() + 1e-3 * scale
    assert (y_bf - y).abs().max() < 0.05 * scale


def test_fused_norm_gradients_match_instance_norm():
    spec = presets.get("restynet").transformer.replace(channels=(4, 8, 8), residual_blocks=1)
    a = rt.TransformerNet(spec, "random:1", dtype="float64", device=DEV)
    b = rt.TransformerNet(spec, "random:1", dtype="float64", device=DEV).configure(norm_impl="fused", pad_channels=8)
    x = torch.rand(2, 3, 16, 20, dtype=torch.float64, device=DEV)
    (a(x) ** 2).mean().backward()
    (b(x) ** 2).mean().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=n)


def test_channels_last_fused_norm():
    spec = presets.get("restynet").transformer.replace(channels=(8, 16, 16), residual_blocks=1)
    net = rt.TransformerNet(spec, "random:0", device=DEV).eval()
    x = torch.rand(1, 3, 24, 24, device=DEV)
    with torch.no_grad():
        y = net(x)
        net.configure(norm_impl="fused", pad_channels=8).to(memory_format=torch.channels_last)
        y2 = net(x.contiguous(memory_format=torch.channels_last))
        net.configure(pad_impl="cat")
        y3 = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y2, y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y3, y2, rtol=1e-5, atol=1e-5)



def test_channels_last_defaults_keep_the_layout_through_training():
    """With the default (auto) options a channels_last net stays channels_last through every
    layer in float32 (cat reflection pad, fused norm: nn.ReflectionPad2d and nn.InstanceNorm2d
    would return NCHW), computes the NCHW net's function, and trains to the same gradients."""
    spec = presets.get("restynet").transformer.replace(channels=(8, 16, 16), residual_blocks=1)
    a = rt.TransformerNet(spec, "random:2", dtype="float64", device=DEV)
    b = rt.TransformerNet(spec, "random:2", dtype="float64", device=DEV).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64, device=DEV)
    nchw_layers = []
    for name, m in b.named_modules():
        if isinstance(m, rt.transformer.ConvLayer) and m.d.out_channels > 3:
            m.register_forward_hook(lambda mod, i, o, name=name: None if (
                o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous()) else nchw_layers.append(name))
    ya = a(x)
    yb = b(x.contiguous(memory_format=torch.channels_last))
    assert nchw_layers == []
    torch.testing.assert_close(yb, ya, rtol=1e-10, atol=1e-12)
    (ya ** 2).mean().backward()
    (yb ** 2).mean().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=n)
    assert b.conv_in.pad_impl == "auto" and b.norm_impl == "auto"


@pytest.mark.skipif(not os.environ.get("RESTY_TEST_COMPILE"),
                    reason="torch.compile of a training loss takes ~2 min on 2 CPU cores (and is timed by "
                           "benchmarks/gpu_fast_explore.py on a GPU, with its first loss checked); set RESTY_TEST_COMPILE=1")
def test_compiled_training_loss_equals_eager():
    """compile=True compiles the whole training loss (net, VGG, losses) as one function;
    the terms and one Adam step agree with the eager stylizer's."""
    style = _rand(40, 40, 3, seed=3).astype(np.float32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(DEV)
    out = []
    for comp in (False, True):
        f = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV, compile=comp)
        assert (f._train_loss_compiled is not None) == comp
        grams = f._style_grams(style, None, None)
        f.net.train()
        step = f.make_train_step(grams, torch.optim.Adam(f.net.parameters(), lr=1e-2), cuda_graph=False)
        out.append([step(x).clone().cpu() for _ in range(2)])
    for a, b in zip(*out):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- FastStylizer
def test_stylizer_options_and_stylize_tensor():
    x = _rand(29, 37, 3, seed=4).astype(np.float32)
    base = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV)
    y0 = base.stylize(x)
    g = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV, cuda_graph=True, pad_channels=8)
    y1 = g.stylize(x)
    np.testing.assert_allclose(y1, y0, atol=1e-5)
    t = torch.from_numpy(x.transpose(2, 0, 1)[None].copy()).to(DEV)
    yt = g.stylize_tensor(t)
    assert yt.shape == (1, 3, 29, 37) and float(yt.min()) >= 0 and float(yt.max()) <= 1
    np.testing.assert_allclose(yt[0].permute(1, 2, 0).cpu().numpy(), y0, atol=1e-5)
    f = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV, fast=True)
    if f.device.type == "cpu":
        assert f.precision is None and not f.channels_last and not f.cuda_graph
    else:
        assert f.precision == torch.bfloat16 and f.channels_last and f.cuda_graph
    assert np.abs(f.stylize(x) - y0).max() < 0.05
    with pytest.raises(RestyError, match="own CUDA graphs"):
        rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV, cuda_graph=True, compile="reduce-overhead")


def test_stylize_with_emulated_graph_per_shape():
    f = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV, cuda_graph=True)
    f._infer.emulate = True
    a, b = _rand(24, 24, 3, seed=1).astype(np.float32), _rand(20, 28, 3, seed=2).astype(np.float32)
    ref = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV)
    ya, yb, ya2 = f.stylize(a), f.stylize(b), f.stylize(a)
    assert f._infer.captures == 2 and f._infer.replays == 3
    np.testing.assert_array_equal(ya, ref.stylize(a))
    np.testing.assert_array_equal(yb, ref.stylize(b))
    np.testing.assert_array_equal(ya2, ya)
    # In-place weight changes are seen by the captured graph (same parameter tensors).
    with torch.no_grad():
        f.net.conv_out.bias.add_(0.1)
        ref.net.conv_out.bias.add_(0.1)
    np.testing.assert_array_equal(f.stylize(a), ref.stylize(a))
    assert f._infer.captures == 2


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_graph_training_step_equals_eager(norm):
    """make_train_step with the capture protocol emulated (warm-up steps undone, static
    buffers) gives bit-identical weights and losses to the eager step."""
    style = _rand(40, 40, 3, seed=3).astype(np.float32)
    xs = [torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(k)).to(DEV) for k in range(3)]
    res = []
    for graph in (False, True):
        f = rt.FastStylizer(_tiny_preset(norm), weights="random:0", device=DEV)
        grams = f._style_grams(style, None, None)
        opt = torch.optim.Adam(f.net.parameters(), lr=1e-2)
        f.net.train()
        step = f.make_train_step(grams, opt, cuda_graph=False)
        if graph:
            step = GraphedFunction(step, emulate=True, warmup=2, before_capture=lambda: init_adam_state(opt),
                                   restore=lambda: [*f.net.parameters(), *f.net.buffers(), *optimizer_tensors(opt)])
        terms = [step(x).clone() for x in xs]
        res.append((terms, f.net.state_dict_canonical()))
    (t0, w0), (t1, w1) = res
    assert all(_same(a.cpu().numpy(), b.cpu().numpy()) for a, b in zip(t0, t1))
    assert all(_same(w1[k], w0[k]) for k in w0)


def test_fit_cuda_graph_flag_same_result(tmp_path):
    arrays = [_rand(40, 44, 3, seed=k).astype(np.float32) for k in range(4)]
    style = _rand(40, 40, 3, seed=9).astype(np.float32)
    a = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV)
    a.fit(arrays, style, steps=3)
    b = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV)
    s = b.fit(arrays, style, steps=3, cuda_graph=True, checkpoint_dir=tmp_path)
    assert s["steps"] == 3 and len(b.history) == 3
    wa, wb = a.net.state_dict_canonical(), b.net.state_dict_canonical()
    if DEV == "cpu":
        assert all(np.array_equal(wa[k], wb[k]) for k in wa)
        assert [h["total"] for h in a.history] == [h["total"] for h in b.history]
    else:   # capturable Adam rounds its bias correction on the GPU
        for k in wa:
            np.testing.assert_allclose(wb[k], wa[k], rtol=1e-4, atol=1e-6 * max(1.0, np.abs(wa[k]).max()))
    # resume from the graph run's checkpoint continues (Adam state restored, then captured)
    c = rt.FastStylizer(_tiny_preset(), weights="random:0", device=DEV)
    s2 = c.fit(arrays, style, steps=4, cuda_graph=True, checkpoint_dir=tmp_path, resume=True)
    assert s2["start_step"] == 3 and s2["steps"] == 4


def test_init_adam_state_layout_matches_lazy_init():
    p = torch.nn.Parameter(torch.ones(3, device=DEV))
    opt = torch.optim.Adam([p])
    init_adam_state(opt)
    q = torch.nn.Parameter(torch.ones(3, device=DEV))
    ref = torch.optim.Adam([q])
    q.grad = torch.zeros(3, device=DEV)
    ref.step()
    assert set(opt.state[p]) == set(ref.state[q])
    assert opt.state[p]["step"].dtype == ref.state[q]["step"].dtype
    assert opt.state[p]["step"].device == ref.state[q]["step"].device


def test_fp16_overflow_is_recomputed_in_full_precision():
    """A net whose activations exceed fp16's 65504 (scaled-up first conv) gives inf/NaN in fp16;
    stylize() recomputes that batch in float32, warns, and returns the float32 image."""
    img = _rand(24, 28, 3, seed=5).astype(np.float32)
    ref = rt.FastStylizer(_tiny_preset(), weights="random:0", device="cpu")
    half = rt.FastStylizer(_tiny_preset(), weights="random:0", device="cpu", precision="fp16")
    for f in (ref, half):
        with torch.no_grad():
            f.net.conv_in.weight.mul_(1e4)          # conv_in outputs ~1e6: finite in fp32, inf in fp16
    with torch.inference_mode():
        raw = half.stylize_tensor(half._tensor(img[None]))
    assert not torch.isfinite(raw).all()           # the fp16 path itself does overflow
    with pytest.warns(RuntimeWarning, match="non-finite"):
        got = half.stylize(img)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref.stylize(img), atol=1e-5)


# ----------------------------------------------------------------------------- io_convs="s2d"
@pytest.mark.parametrize("pad", [0, 8])
def test_s2d_io_convs_same_function_and_gradients(pad):
    """conv_in/conv_out on pixel_unshuffle'd maps (resty.rewrites.space_to_depth_weights): the
    same outputs and parameter gradients as the direct convs, in float64, odd sizes included."""
    spec = presets.get("restynet").transformer.replace(channels=(4, 8, 8), residual_blocks=1)
    a = rt.TransformerNet(spec, "random:1", dtype="float64", device=DEV)
    b = rt.TransformerNet(spec, "random:1", dtype="float64", device=DEV).configure(io_convs="s2d", pad_channels=pad)
    assert [m.d.name for m in b.modules() if getattr(m, "io_impl", "") == "s2d"] == ["conv_in", "conv_out"]
    assert set(b.state_dict()) == set(a.state_dict())          # the gather index is not saved
    for shape in [(1, 3, 29, 19), (2, 3, 36, 44)]:
        x = torch.rand(*shape, dtype=torch.float64, device=DEV)
        ya, yb = a(x), b(x)
        assert float((ya - yb).abs().max()) < 1e-12
        ga = torch.autograd.grad(torch.sin(ya).sum(), list(a.parameters()))
        gb = torch.autograd.grad(torch.sin(yb).sum(), list(b.parameters()))
        scale = max(float(g.abs().max()) for g in ga)
        assert max(float((p - q).abs().max()) for p, q in zip(ga, gb)) < 1e-12 * scale
    with pytest.raises(ValueError, match="io_convs"):
        b.configure(io_convs="winograd")


def test_s2d_io_convs_follow_weight_updates():
    spec = presets.get("restynet").transformer.replace(channels=(4, 8, 8), residual_blocks=1)
    f = rt.FastStylizer(presets.get("restynet").replace(transformer=spec), weights="random:0", device=DEV,
                        dtype="float64", io_convs="s2d")
    ref = rt.FastStylizer(presets.get("restynet").replace(transformer=spec), weights="random:0", device=DEV,
                          dtype="float64")
    img = np.random.default_rng(2).random((21, 30, 3), dtype=np.float32)
    np.testing.assert_allclose(f.stylize(img), ref.stylize(img), rtol=0, atol=1e-6)
    from resty.weights import random_transformer
    new = random_transformer(spec, 7)
    f.net.load_canonical(new)
    ref.net.load_canonical(new)
    np.testing.assert_allclose(f.stylize(img), ref.stylize(img), rtol=0, atol=1e-6)
