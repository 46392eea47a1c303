"""Tests of resty_torch on CPU: seeded random weights, images <= 64 px.

The float64 tier compares with resty.reference (the NumPy oracle) at ~1e-10 relative, which
catches convention bugs (a wrong normalisation, a swapped kernel axis, a padding shift); the
behavioural tests check what users see (sizes, errors, skipped files, resume)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import resty_torch as rt  # noqa: E402
from resty import gatys, presets, reference as R, weights as W  # noqa: E402
from resty.errors import ImageError, TrainingError  # noqa: E402
from resty.specs import GRAM_CONVENTIONS, CONTENT_CONVENTIONS, TV_CONVENTIONS, TransformerSpec, VGGSpec  # noqa: E402

# One intra-op thread: the tensors here are tiny, and on a shared 2-core machine OpenMP threads
# that spin-wait for a busy core made a 64x576 float64 bmm 75x slower (31 ms vs 0.4 ms).
torch.set_num_threads(1)

# RESTY_TEST_DEVICE=cuda runs the same tests on a GPU (TF32 off, so the float64/float32 tiers
# keep their meaning); CI has no GPU and uses the CPU.
DEV = __import__("os").environ.get("RESTY_TEST_DEVICE", "cpu")
if DEV.startswith("cuda"):
    rt.set_tf32(False)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).random(shape)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))).to(DEV)


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize("conv", GRAM_CONVENTIONS)
def test_gram_and_style_loss_match_reference(conv):
    f = _rand(2, 4, 5, 6, seed=1)
    target = R.gram(_rand(1, 4, 7, 3, seed=2), conv)[0]
    g = rt.gram(torch.from_numpy(f), conv).numpy()
    assert _rel(g, R.gram(f, conv)) < 1e-12
    s = float(rt.style_loss(torch.from_numpy(f), torch.from_numpy(target), conv))
    assert abs(s - R.style_loss(f, target, conv)) <= 1e-12 * abs(R.style_loss(f, target, conv))


@pytest.mark.parametrize("conv", CONTENT_CONVENTIONS)
def test_content_loss_matches_reference(conv):
    f, p = _rand(2, 4, 5, 6, seed=3), _rand(2, 4, 5, 6, seed=4)
    got = float(rt.content_loss(torch.from_numpy(f), torch.from_numpy(p), conv))
    assert abs(got - R.content_loss(f, p, conv)) <= 1e-12 * R.content_loss(f, p, conv)


@pytest.mark.parametrize("conv", TV_CONVENTIONS)
def test_tv_loss_matches_reference(conv):
    x = _rand(2, 3, 7, 9, seed=5)
    got = float(rt.tv_loss(torch.from_numpy(x), conv))
    assert abs(got - R.tv_loss(x, conv)) <= 1e-12 * R.tv_loss(x, conv)


def test_total_loss_matches_reference():
    p = presets.get("tf-tutorial").loss   # abs TV, tf-tutorial Gram, mse content
    feats = {l: _rand(1, 3, 4, 5, seed=i) for i, l in enumerate(p.all_layers)}
    ct = {l: _rand(1, 3, 4, 5, seed=10 + i) for i, l in enumerate(p.content_layers)}
    sg = {l: R.gram(_rand(1, 3, 6, 6, seed=20 + i), p.gram)[0] for i, l in enumerate(p.style_layers)}
    img = _rand(1, 3, 8, 8, seed=30)
    ref = R.total_loss(feats, img, p, ct, sg)
    got = rt.total_loss({k: torch.from_numpy(v) for k, v in feats.items()}, torch.from_numpy(img), p,
                        {k: torch.from_numpy(v) for k, v in ct.items()}, {k: torch.from_numpy(v) for k, v in sg.items()})
    for name, v in zip(("total", "content", "style", "tv"), got.tolist()):
        assert abs(v - ref[name]) <= 1e-12 * abs(ref[name]) + 1e-300


def test_half_precision_gram_does_not_overflow():
    # Features ~1e3: a naive float16 F Fᵀ sums 1024 products of ~1e6 -> ~1e9 > 65504 = inf.
    f64 = 1e3 * (0.5 + _rand(1, 8, 32, 32, seed=6))
    f16 = torch.from_numpy(f64).half()
    m = f16.reshape(1, 8, -1)
    assert not torch.isfinite(torch.bmm(m, m.transpose(1, 2))).all()      # the naive way overflows
    for conv in ("gatys2015", "johnson2016"):
        g = rt.gram(f16, conv)
        assert g.dtype == torch.float32 and torch.isfinite(g).all()
        assert _rel(g.double().numpy(), R.gram(f16.double().numpy(), conv)) < 1e-5
        # Under autocast too (autocast would otherwise run bmm in half precision).
        with torch.autocast("cpu", dtype=torch.bfloat16):
            gb = rt.gram(f16.to(torch.bfloat16), conv)
            sl = rt.style_loss(f16.to(torch.bfloat16), g[0], conv)
        assert gb.dtype == torch.float32 and torch.isfinite(gb).all() and torch.isfinite(sl)
        assert _rel(gb.double().numpy(), R.gram(f64, conv)) < 2e-2


# ---------------------------------------------------------------- networks
@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_vgg_features_match_reference(arch, pooling):
    prep = "caffe" if pooling == "avg" else "torchvision"   # cover both preprocessings
    ws = W.random_vgg(arch, 0, prep)
    layers = ["conv1_1", "relu1_2", "pool1", "relu2_2", "relu3_1", "pool3", "relu4_2", "relu5_1"]
    img = _rand(1, 32, 40, 3, seed=7)
    v = rt.VGGFeatures(arch, ws, pooling, layers, dtype="float64", device=DEV)
    assert not any(p.requires_grad for p in v.parameters())
    assert v._plan[-1][1] == "relu5_1"     # cut after the deepest requested layer
    out = v(_nchw(img))
    ref = R.vgg_features(R.preprocess(img, ws.preprocessing), ws.tensors, VGGSpec(arch, pooling), layers)
    for l in layers:
        assert out[l].dtype == torch.float64
        assert _rel(out[l].cpu().numpy(), ref[l]) < 1e-10, l


@pytest.mark.parametrize("upsampling,crop,act", [("nearest_conv", (1, 0), "none"),
                                                 ("transposed_conv", (1, 0), "tanh"),
                                                 ("transposed_conv", (0, 1), "sigmoid")])
def test_transformer_matches_reference(upsampling, crop, act):
    spec = TransformerSpec(channels=(8, 16, 16), residual_blocks=2, upsampling=upsampling, transpose_crop=crop,
                           output_activation=act, conv_bias_before_norm=crop == (0, 1), norm_eps=1e-3)
    ws = W.random_transformer(spec, 3)
    net = rt.TransformerNet(spec, ws, dtype="float64", device=DEV)
    x = _rand(2, 37, 53, 3, seed=8)
    y = net(_nchw(x)).detach().cpu().numpy().transpose(0, 2, 3, 1)
    assert y.shape == (2, 37, 53, 3)
    assert _rel(y, R.transformer_forward(x, ws.tensors, spec)) < 1e-10
    # Canonical round trip: names are the canonical ones, values unchanged.
    sd = net.state_dict_canonical()
    assert set(sd) == set(ws.tensors)
    assert all(np.array_equal(sd[k], ws.tensors[k].astype(np.float64)) for k in sd)
    # No bias in front of a norm unless the spec asks for it.
    assert ("down1.bias" in sd) == (crop == (0, 1))


# ---------------------------------------------------------------- Gatys
def _tiny_preset(optimizer="adam", full=False, **gatys):
    """gatys2015 with small settings; unless ``full``, VGG is cut at relu3_1 (5 of 13 convs) to
    keep CPU tests fast.  The full layer set is covered by test_gatys_loss_terms_match_reference."""
    p = presets.get("gatys2015")
    loss = p.loss.replace(tv_weight=1e-3, style_weight=1e4)
    if not full:
        loss = loss.replace(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1", "relu3_1"),
                            style_layer_weights=(1 / 3,) * 3)
    # clamp=True unless asked: these tests cover the clamped path (gatys2015 itself does not clamp)
    g = p.gatys.replace(optimizer=optimizer, image_size=24, iterations=5, init="noise",
                        adam=p.gatys.adam.replace(lr=0.02), lbfgs=p.gatys.lbfgs.replace(max_iter=7, history_size=5),
                        **{"clamp": True, **gatys})
    return p.replace(name="tiny", loss=loss, gatys=g)


def _reference_fun(g, content, style):
    """(loss, grad) of the stylizer's own float64 loss, for driving the reference optimisers."""
    ct, sg = g._targets(content, [style], (1.0,))

    def fun(x):
        t = torch.from_numpy(np.array(x, dtype=np.float64)).to(DEV).requires_grad_(True)
        loss = g._loss_eager(t, ct, sg)[0]
        loss.backward()
        return float(loss.detach()), t.grad.cpu().numpy().copy()
    return fun


@pytest.fixture(scope="module")
def gatys64():
    return rt.GatysStylizer(_tiny_preset(), weights="random:0", device=DEV, dtype="float64")


def test_gatys_loss_terms_match_reference():
    g = rt.GatysStylizer(_tiny_preset(full=True), weights="random:0", device=DEV, dtype="float64")
    img, content, style = _rand(32, 32, 3, seed=9), _rand(32, 32, 3, seed=10), _rand(24, 40, 3, seed=11)
    ws = W.random_vgg("vgg19", 0, "caffe")     # gatys2015 uses Caffe/Keras preprocessing
    p = g.preset
    pre = lambda a: R.preprocess(a, ws.preprocessing)
    got = g.loss_terms(img.astype(np.float32), content.astype(np.float32), style.astype(np.float32))
    # Inputs go through load_image (float32), so compare against float32-rounded inputs.
    img32, c32, s32 = (a.astype(np.float32).astype(np.float64) for a in (img, content, style))
    fi = R.vgg_features(pre(img32), ws.tensors, p.vgg, p.loss.all_layers)
    fc = R.vgg_features(pre(c32), ws.tensors, p.vgg, p.loss.content_layers)
    fs = R.vgg_features(pre(s32), ws.tensors, p.vgg, p.loss.style_layers)
    ref = R.total_loss(fi, img32.transpose(2, 0, 1)[None], p.loss, fc,
                       {l: R.gram(fs[l], p.loss.gram)[0] for l in p.loss.style_layers})
    for k in ("total", "content", "style", "tv"):
        assert abs(got[k] - ref[k]) <= 1e-10 * abs(ref[k]), k


def test_adam_trajectory_matches_reference(gatys64):
    g = gatys64
    content = _rand(24, 24, 3, seed=12).astype(np.float32)
    style = _rand(24, 24, 3, seed=13).astype(np.float32)
    out = g.stylize(content, style, iterations=5, seed=4)
    fun = _reference_fun(g, content, style)
    # a float64 run makes its initial image in float64 from the (exactly converted) content
    x = gatys.init_image("noise", content.astype(np.float64), None, 4, g.preset.gatys.noise_std)
    x = x.transpose(2, 0, 1)[None]
    state, losses = R.AdamState(x.shape), []
    for _ in range(5):
        f, grad = fun(x)
        losses.append(f)
        x = np.clip(R.adam_step(x, grad, state, g.preset.gatys.adam), 0, 1)
    got = [h["total"] for h in g.history]
    assert len(got) == 5 and [h["step"] for h in g.history] == [1, 2, 3, 4, 5]
    assert _rel(got, losses) < 1e-10
    assert np.abs(out - x[0].transpose(1, 2, 0)).max() < 1e-6     # output is float32


def test_lbfgs_trajectory_matches_reference():
    g = rt.GatysStylizer(_tiny_preset("lbfgs"), weights="random:0", device=DEV, dtype="float64")
    content = _rand(24, 24, 3, seed=14).astype(np.float32)
    style = _rand(24, 24, 3, seed=15).astype(np.float32)
    out = g.stylize(content, style, iterations=30, seed=2)
    fun = _reference_fun(g, content, style)
    x0 = gatys.init_image("noise", content.astype(np.float64), None, 2, g.preset.gatys.noise_std)
    x, losses = R.lbfgs_minimize(fun, x0.transpose(2, 0, 1)[None], g.preset.gatys.lbfgs, 30,
                                 project=lambda a: np.clip(a, 0, 1))
    got = [h["total"] for h in g.history]
    assert len(got) == len(losses) == 30
    assert _rel(got, losses) < 1e-10
    assert np.abs(out - np.clip(x[0].transpose(1, 2, 0), 0, 1)).max() < 1e-6
    assert got[-1] < 0.5 * got[0]


@pytest.fixture(scope="module")
def gatys32():
    return rt.GatysStylizer(_tiny_preset(), weights="random:0", device=DEV)


def test_gatys_multi_style_preserve_color_coarse_to_fine(gatys32):
    content = _rand(37, 53, 3, seed=18).astype(np.float32)
    styles = [_rand(30, 30, 3, seed=19).astype(np.float32), _rand(20, 44, 3, seed=20).astype(np.float32)]
    out = gatys32.stylize(content, styles, style_weights=[3, 1], iterations=6, image_size=53,
                          preserve_color=True, scales=(0.5, 1.0), init="content", style_scale=0.8)
    assert out.shape == (37, 53, 3)
    sizes = [tuple(h["size"]) for h in gatys32.history]
    assert sizes[0] == (18, 26) and sizes[-1] == (37, 53) and len(sizes) == 6
    with pytest.raises(ImageError, match="too small"):
        gatys32.stylize(content, styles[0], iterations=1, image_size=3)
    # preserve_color keeps the content's chrominance (YIQ I and Q channels).
    from resty.images import _rgb_to_yiq
    iq_out, iq_c = _rgb_to_yiq(out)[..., 1:], _rgb_to_yiq(content)[..., 1:]
    assert np.abs(iq_out - iq_c).mean() < 0.02
    # Blend weights matter: a different blend gives a different result.
    a = gatys32.stylize(content, styles, style_weights=[1, 0], iterations=3, image_size=32, init="content")
    b = gatys32.stylize(content, styles, style_weights=[0, 1], iterations=3, image_size=32, init="content")
    assert np.abs(a - b).max() > 1e-4


def test_gatys_nonfinite_loss_names_the_step():
    p = _tiny_preset(clamp=False)
    p = p.replace(gatys=p.gatys.replace(adam=p.gatys.adam.replace(lr=1e30)))
    g = rt.GatysStylizer(p, weights="random:0", device=DEV)
    with pytest.raises(TrainingError, match=r"at step 2 .*precision=None"):
        g.stylize(_rand(24, 24, 3).astype(np.float32), _rand(24, 24, 3, seed=1).astype(np.float32), iterations=10)


def test_gatys_bf16_autocast_is_finite_and_close():
    img, c, s = (_rand(24, 24, 3, seed=k).astype(np.float32) for k in (21, 22, 23))
    ref = rt.GatysStylizer(_tiny_preset(), weights="random:0", device=DEV).loss_terms(img, c, s)
    half = rt.GatysStylizer(_tiny_preset(), weights="random:0", device=DEV, precision="bf16")
    got = half.loss_terms(img, c, s)
    assert all(np.isfinite(v) for v in got.values())
    assert abs(got["total"] - ref["total"]) < 0.1 * ref["total"]
    out = half.stylize(c, s, iterations=3)
    assert np.isfinite(out).all() and out.shape == (24, 24, 3)


# ---------------------------------------------------------------- fast
def _fast_preset():
    p = presets.get("johnson2016")
    return p.replace(name="tiny-fast",
                     transformer=p.transformer.replace(channels=(8, 16, 16), residual_blocks=1),
                     training=p.training.replace(image_size=32, batch_size=2, num_workers=0, log_every=2,
                                                 checkpoint_every=2, keep_checkpoints=3))


def test_fit_on_arrays_and_resume_settings_checked(tmp_path):
    arrays = [_rand(40, 40, 3, seed=k).astype(np.float32) for k in range(3)]
    f = rt.FastStylizer(_fast_preset(), weights="random:0", device=DEV)
    s = f.fit(iter(arrays), arrays[0], steps=2, checkpoint_dir=tmp_path)
    assert s["skipped"] == [] and s["steps"] == 2
    from resty.errors import RestyError
    with pytest.raises(RestyError, match="different settings"):
        f.fit(arrays, arrays[0], steps=3, checkpoint_dir=tmp_path, resume=True, batch_size=3)


# ---------------------------------------------------------------- weights I/O
def test_pth_reader_imports_torchvision_state_dict(tmp_path):
    ws = W.random_vgg("vgg16", 5, "torchvision")
    from resty.specs import vgg_layers
    state = {}
    for layer in vgg_layers("vgg16"):
        if layer.kind == "conv":
            state[f"features.{layer.index}.weight"] = torch.from_numpy(ws.tensors[f"{layer.name}.weight"])
            state[f"features.{layer.index}.bias"] = torch.from_numpy(ws.tensors[f"{layer.name}.bias"])
    state["classifier.0.weight"] = torch.zeros(4, 3)
    path = tmp_path / "vgg16-12345678.pth"
    torch.save(state, path)
    got = W.resolve_weights(str(path), "vgg16")
    assert got.preprocessing.name == "torchvision"
    assert all(np.array_equal(got.tensors[k], ws.tensors[k]) for k in ws.tensors)
    v = rt.VGGFeatures("vgg16", str(path), layers=["relu1_2"], device=DEV)
    assert v.preprocessing.name == "torchvision"


def test_device_helpers():
    assert rt.resolve_device(None).type in ("cpu", "cuda")
    assert rt.resolve_dtype("float64") == torch.float64
    before = rt.get_tf32()
    rt.set_tf32(False)
    assert rt.get_tf32()["matmul"] in ("ieee", False)
    rt.set_tf32(True)
    assert rt.get_tf32()["conv"] in ("tf32", True)
    rt.set_tf32(before["matmul"] in ("tf32", True))     # leave the process as it was for later tests
    from resty.errors import RestyError
    with pytest.raises(RestyError):
        rt.resolve_dtype("float16")


def test_fit_nonfinite_loss_names_the_step():
    arrays = [_rand(40, 40, 3, seed=k).astype(np.float32) for k in range(2)]
    f = rt.FastStylizer(_fast_preset(), weights="random:0", device=DEV)
    with pytest.raises(TrainingError, match=r"at step \d+ "):
        f.fit(arrays, arrays[0], steps=4, lr=1e30)
