"""resty_tf on CPU against the NumPy float64 oracle (resty.reference), plus its behaviours.

Seeded random weights ("random:0"), images <= 64 px.  The float64 tier is tight (~1e-12):
it catches convention and layout bugs (a swapped kernel axis, a wrong padding, an epsilon in
the wrong place), which show as O(1e-3..1) errors.
"""
from __future__ import annotations


import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import resty_tf  # noqa: E402
from resty import reference as R  # noqa: E402
from resty.errors import TrainingError  # noqa: E402
from resty.presets import get as get_preset  # noqa: E402
from resty.specs import (AdamSpec, CONTENT_CONVENTIONS, GRAM_CONVENTIONS, LBFGSSpec, TV_CONVENTIONS,  # noqa: E402
                         TransformerSpec, VGGSpec)
from resty.weights import (iohw_to_keras_transposed, random_transformer, random_vgg,  # noqa: E402
                           to_keras_kernel)
from resty_tf import FastStylizer, GatysStylizer, TransformerNet, VGGFeatures  # noqa: E402
from resty_tf import losses as L  # noqa: E402
from resty_tf import optim as O  # noqa: E402
from resty_tf.device import assert_compute_dtype  # noqa: E402

rng = np.random.default_rng(7)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


def tiny_preset(name="gatys2015", **gatys):
    """A preset whose Gatys part keeps the content's size (image_size None)."""
    p = get_preset(name)
    return p.replace(gatys=p.gatys.replace(image_size=None, **gatys))


def tiny_fast_preset():
    p = get_preset("johnson2016")
    return p.replace(transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1))


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("conv", GRAM_CONVENTIONS)
def test_gram_and_style_loss_match_reference(conv):
    f = rng.random((2, 5, 7, 6))
    a = rng.random((6, 6))
    assert rel(L.gram(tf.constant(f), conv).numpy(), R.gram(nchw(f), conv)) < 1e-13
    assert abs(float(L.style_loss(tf.constant(f), a, conv)) / R.style_loss(nchw(f), a, conv) - 1) < 1e-13


@pytest.mark.parametrize("conv", CONTENT_CONVENTIONS)
def test_content_loss_matches_reference(conv):
    f, t = rng.random((2, 5, 7, 6)), rng.random((2, 5, 7, 6))
    assert abs(float(L.content_loss(tf.constant(f), tf.constant(t), conv)) / R.content_loss(nchw(f), nchw(t), conv) - 1) < 1e-13


@pytest.mark.parametrize("conv", TV_CONVENTIONS)
def test_tv_loss_matches_reference(conv):
    x = rng.random((2, 9, 11, 3))
    assert abs(float(L.tv_loss(tf.constant(x), conv)) / R.tv_loss(nchw(x), conv) - 1) < 1e-13


def test_total_loss_matches_reference():
    loss = get_preset("tf-tutorial").loss
    feats = {l: rng.random((1, 4, 5, 3)) for l in loss.all_layers}
    targets = {l: rng.random((1, 4, 5, 3)) for l in loss.content_layers}
    grams = {l: rng.random((3, 3)) for l in loss.style_layers}
    img = rng.random((1, 8, 8, 3))
    got = L.total_loss({k: tf.constant(v) for k, v in feats.items()}, tf.constant(img), loss,
                       {k: tf.constant(v) for k, v in targets.items()}, grams)
    want = R.total_loss({k: nchw(v) for k, v in feats.items()}, nchw(img), loss,
                        {k: nchw(v) for k, v in targets.items()}, grams)
    for k, v in zip(L.LOSS_TERMS, got.numpy()):
        assert abs(float(v) - want[k]) <= 1e-12 * abs(want["total"])


def test_half_precision_gram_stays_finite_where_naive_fp16_overflows():
    f16 = tf.constant(rng.uniform(0, 60, (1, 64, 64, 8)), tf.float16)   # ReLU-like features
    m = tf.reshape(f16, [1, -1, 8])
    naive = tf.matmul(m, m, transpose_a=True)                           # raw Gram in fp16
    assert not np.isfinite(naive.numpy().astype(np.float32)).all()
    for conv in ("gatys2015", "johnson2016"):
        g = L.gram(f16, conv)
        assert g.dtype == tf.float32 and np.isfinite(g.numpy()).all()
        loss = L.style_loss(f16, tf.zeros((8, 8)), conv)
        assert np.isfinite(float(loss))
        ref = R.style_loss(nchw(f16.numpy().astype(np.float64)), np.zeros((8, 8)), conv)
        assert abs(float(loss) / ref - 1) < 1e-5


def test_gatys_bf16_run_is_finite():
    g = GatysStylizer(tiny_preset(), weights="random:0", device="cpu", precision="bf16")
    assert g.vgg.compute_dtype == "bfloat16"
    c = rng.random((32, 32, 3)).astype(np.float32)
    out = g.stylize(c, c[::-1], iterations=2, optimizer="adam")
    assert np.isfinite(out).all() and all(np.isfinite(h["total"]) for h in g.history)
    assert isinstance(g.history[0]["total"], float)


# ----------------------------------------------------------------------------- layers and nets
def test_asymmetric_nonsquare_kernels_keep_their_orientation():
    """A kernel with kh and kw swapped would load silently: check 2x3 kernels explicitly."""
    x = rng.random((1, 6, 7, 3))
    w = rng.random((4, 3, 2, 3))                       # OIHW, kh=2, kw=3
    conv = keras.layers.Conv2D(4, (2, 3), padding="valid", use_bias=False, dtype="float64")
    conv.build((None, None, None, 3))
    conv.kernel.assign(to_keras_kernel(w))
    assert rel(nchw(conv(x).numpy()), R.conv2d(nchw(x), w)) < 1e-13
    wt = rng.random((3, 4, 2, 3))                      # IOHW transposed kernel
    tconv = keras.layers.Conv2DTranspose(4, (2, 3), strides=2, padding="valid", use_bias=False, dtype="float64")
    tconv.build((None, None, None, 3))
    tconv.kernel.assign(iohw_to_keras_transposed(wt))
    assert rel(nchw(tconv(x).numpy()), R.conv_transpose2d(nchw(x), wt, crop=(0, 0))) < 1e-13


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_vgg_features_match_reference(arch, pooling):
    layers = ["conv1_1", "relu1_2", "pool2", "relu3_1", "relu4_2", "relu5_1"]
    v = VGGFeatures(arch, "random:0", pooling, layers=layers, dtype="float64", device="cpu")
    x = rng.random((1, 32, 40, 3))
    got = v(x)
    ref = R.vgg_features(R.preprocess(x, v.preprocessing), random_vgg(arch, 0).tensors, VGGSpec(arch, pooling), layers)
    assert set(got) == set(layers)
    for l in layers:
        assert rel(nchw(got[l].numpy()), ref[l]) < 1e-12, l
    assert not v.trainable_variables          # frozen


@pytest.mark.parametrize("upsampling,crop,act", [("nearest_conv", (1, 0), "none"),
                                                 ("transposed_conv", (1, 0), "tanh"),
                                                 ("transposed_conv", (0, 1), "sigmoid")])
def test_transformer_matches_reference(upsampling, crop, act):
    spec = TransformerSpec(channels=(4, 6, 8), residual_blocks=2, upsampling=upsampling,
                           transpose_crop=crop, output_activation=act)
    ws = random_transformer(spec, 3)
    net = TransformerNet(spec, ws, dtype="float64", device="cpu")
    x = rng.random((2, 37, 53, 3))
    y = net(x).numpy()
    assert y.shape == (2, 37, 53, 3) and y.dtype == np.float64
    assert rel(y, R.transformer_forward(x, ws.tensors, spec)) < 1e-12
    # Canonical weights round-trip exactly (layouts OIHW / IOHW).
    sd = net.state_dict_canonical()
    assert set(sd) == set(ws.tensors)
    for k, v in ws.tensors.items():
        np.testing.assert_array_equal(sd[k], v.astype(np.float64))
    net2 = TransformerNet(spec, None, dtype="float64", device="cpu")
    net2.load_canonical(sd)
    np.testing.assert_array_equal(net2(x).numpy(), y)


def test_float64_really_computes_in_float64():
    net = TransformerNet(TransformerSpec(channels=(4, 6, 8), residual_blocks=1), "random:0", dtype="float64")
    assert_compute_dtype(net, "float64")
    for layer in net._flatten_layers(include_self=False, recursive=True):
        assert layer.compute_dtype == "float64", layer.name
    assert all(v.dtype == "float64" for v in net.weights)
    v = VGGFeatures("vgg16", "random:0", layers=["relu2_2"], dtype="float64")
    assert_compute_dtype(v, "float64")
    assert v(rng.random((1, 16, 16, 3)))["relu2_2"].dtype == tf.float64
    # ... and the check does catch a float32 layer.
    v32 = VGGFeatures("vgg16", "random:0", layers=["relu1_1"], dtype="float32")
    with pytest.raises(AssertionError):
        assert_compute_dtype(v32, "float64")


def test_keras_h5_vgg19_loads_through_resty_weights(tmp_path):
    h5py = pytest.importorskip("h5py")
    ws = random_vgg("vgg19", 5)
    path = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    # The keras-applications layout: one group per layer, datasets <layer>_W_1:0 / <layer>_b_1:0.
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"input_1"] + [n.encode() for n in []]
        for name in [k[:-7] for k in ws.tensors if k.endswith(".weight")]:
            b, i = name[4:].split("_")
            g = f.create_group(f"block{b}_conv{i}")
            g.create_dataset(f"block{b}_conv{i}_W_1:0", data=to_keras_kernel(ws.tensors[f"{name}.weight"]))
            g.create_dataset(f"block{b}_conv{i}_b_1:0", data=ws.tensors[f"{name}.bias"])
    v = VGGFeatures("vgg19", str(path), "max", layers=["relu1_1", "relu4_4"], dtype="float64", device="cpu")
    assert v.preprocessing.name == "caffe"
    got = v.canonical_weights()
    for k, a in got.items():
        np.testing.assert_array_equal(a, ws.tensors[k].astype(np.float64))
    x = rng.random((1, 24, 20, 3))
    ref = R.vgg_features(R.preprocess(x, v.preprocessing), ws.tensors, VGGSpec("vgg19", "max"), ["relu4_4"])
    assert rel(nchw(v(x)["relu4_4"].numpy()), ref["relu4_4"]) < 1e-12


# ----------------------------------------------------------------------------- optimisers
def _gatys_loss_fn(dtype="float64"):
    """The actual Gatys loss of a tiny image (float64): fun(x) -> (loss, grad) on TF tensors."""
    g = GatysStylizer(tiny_preset(), weights="random:0", device="cpu", dtype=dtype)
    c = rng.random((20, 20, 3)).astype(np.float32)
    s = rng.random((20, 20, 3)).astype(np.float32)
    ct, grams = g._targets(c, [s], [1.0])
    fn = g._function("loss_grad")

    def fun(x):
        terms, grad = fn(tf.convert_to_tensor(x), ct, grams)
        return terms[0], grad
    x0 = common_noise((1, 20, 20, 3))
    return fun, x0


def common_noise(shape):
    return np.clip(0.5 + 0.25 * np.random.default_rng(0).standard_normal(shape), 0, 1)


@pytest.mark.parametrize("epsilon_hat", [False, True])
def test_adam_trajectory_matches_reference(epsilon_hat):
    fun, x0 = _gatys_loss_fn()
    spec = AdamSpec(lr=0.05, eps=1e-3 if epsilon_hat else 1e-8, epsilon_hat=epsilon_hat, weight_decay=0.01)
    var = tf.Variable(x0)
    opt = O.TorchAdam(spec, [var])
    state, xr = R.AdamState(x0.shape), x0.copy()
    for _ in range(5):
        _, gt = fun(var)
        opt.apply([gt])
        _, gr = fun(xr)
        xr = R.adam_step(xr, gr.numpy(), state, spec)
    assert rel(var.numpy() - x0, xr - x0) < 1e-12


def test_lbfgs_trajectory_matches_reference():
    fun, x0 = _gatys_loss_fn()
    spec = LBFGSSpec(max_iter=6, history_size=3)
    clip = dict(project_tf=lambda x: tf.clip_by_value(x, 0, 1), project_np=lambda x: np.clip(x, 0, 1))
    xt, lt = O.lbfgs_minimize(fun, tf.constant(x0), spec, 16, project=clip["project_tf"])

    def fun_np(x):
        f, g = fun(x)
        return float(f), g.numpy()
    xr, lr_ = R.lbfgs_minimize(fun_np, x0, spec, 16, project=clip["project_np"])
    assert len(lt) == len(lr_) == 16
    assert lr_[-1] < lr_[0]
    np.testing.assert_allclose(lt, lr_, rtol=1e-10)
    assert rel(xt.numpy() - x0, xr - x0) < 1e-10


# ----------------------------------------------------------------------------- Gatys
def test_gatys_multi_style_blends_grams():
    g = GatysStylizer(tiny_preset(), weights="random:0", device="cpu", dtype="float64")
    c = rng.random((24, 24, 3))
    a, b = rng.random((24, 24, 3)), rng.random((24, 24, 3))
    x = rng.random((24, 24, 3))
    only_a = g.loss_terms(x, c, a)
    assert abs(g.loss_terms(x, c, [a, b], style_weights=[2.0, 0.0])["style"] / only_a["style"] - 1) < 1e-12
    mixed = g.loss_terms(x, c, [a, b], style_weights=[1, 1])["style"]
    assert mixed != only_a["style"]
    out = g.stylize(c, [a, b], style_weights=[0.3, 0.7], iterations=3, optimizer="adam")
    assert out.shape == (24, 24, 3)


def test_gatys_nan_raises_training_error_naming_the_step():
    g = GatysStylizer(tiny_preset(), weights="random:0", device="cpu")
    poison = tf.Variable(1.0)
    orig = g._terms

    def terms(x, ct, grams):
        return orig(x, ct, grams) * poison
    g._terms = terms

    def cb(step, losses, img):
        if step == 2:
            poison.assign(float("nan"))
    c = rng.random((20, 20, 3)).astype(np.float32)
    with pytest.raises(TrainingError, match="step 3"):
        g.stylize(c, c, iterations=6, optimizer="adam", callback=cb)


# ----------------------------------------------------------------------------- fast
def test_export_savedmodel_and_keras_reload_same_output(tmp_path):
    f = FastStylizer(tiny_fast_preset(), weights="random:0", device="cpu", transformer_weights="random:4")
    x = rng.random((1, 37, 53, 3)).astype(np.float32)
    want = f.stylize(x)
    f.export(tmp_path / "sm", format="savedmodel")
    m = tf.saved_model.load(str(tmp_path / "sm"))
    got = m.signatures["serving_default"](images=tf.constant(x))["stylized"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    f.export(tmp_path / "m.keras", format="keras")
    k = keras.saving.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(np.clip(k(x).numpy(), 0, 1), want, atol=1e-5)


def test_lbfgs_two_problem_sizes_in_one_process():
    # Regression: the L-BFGS two-loop tf.function was traced once for one pixel count and
    # reused for another (InvalidArgumentError on reshape).
    from resty_tf.optim import lbfgs_minimize as tf_lbfgs
    from resty.specs import LBFGSSpec
    import tensorflow as tf
    for n in (7, 13):
        target = tf.constant(np.linspace(0, 1, n), tf.float64)

        def fun(x):
            with tf.GradientTape() as t:
                t.watch(x)
                f = tf.reduce_sum((x - target) ** 2)
            return f, t.gradient(f, x)
        x, losses = tf_lbfgs(fun, tf.zeros([n], tf.float64), LBFGSSpec(max_iter=5), 12)
        assert losses[-1] < losses[0]


def test_repeated_adam_stylize_reuses_trace_and_restarts_state():
    # The traced Adam step is cached per image size; each run must still start from a fresh
    # Adam state and its own init, so two identical calls give identical images.
    g = GatysStylizer(tiny_preset(optimizer="adam"), weights="random:0", device="cpu")
    c = rng.random((24, 20, 3)).astype(np.float32)
    s = rng.random((20, 20, 3)).astype(np.float32)
    a = g.stylize(c, s, iterations=4, seed=1)
    n_traces = len(g._adam_cache)
    b = g.stylize(c, s, iterations=4, seed=1)
    assert len(g._adam_cache) == n_traces
    np.testing.assert_array_equal(a, b)
    other = g.stylize(c, s, iterations=4, seed=2)
    assert not np.array_equal(a, other)


def test_lbfgs_workspace_reuse_matches_reference():
    # A workspace kept between runs (as GatysStylizer does) must give the reference's
    # trajectory on every run, including a shorter run in a larger workspace.
    fun, x0 = _gatys_loss_fn()
    spec = LBFGSSpec(max_iter=5, history_size=4)

    def fun_np(x):
        f, g = fun(x)
        return float(f), g.numpy()
    ws = O.lbfgs_workspace(x0.size, tf.float64, spec, 20)
    for evals in (13, 7):
        xt, lt = O.lbfgs_minimize(fun, tf.constant(x0), spec, evals, workspace=ws,
                                  project=lambda x: tf.clip_by_value(x, 0, 1))
        xr, lr_ = R.lbfgs_minimize(fun_np, x0, spec, evals, project=lambda x: np.clip(x, 0, 1))
        assert len(lt) == len(lr_) == evals
        np.testing.assert_allclose(lt, lr_, rtol=1e-10)
        assert rel(xt.numpy() - x0, xr - x0) < 1e-10


def test_gatys_checkpoint_and_history_options_same_result():
    """checkpoint=True (tf.recompute_grad per VGG block) and history_size change memory, not
    the numbers: same gradient in float64, and a history at least as long as the run is the
    same L-BFGS."""
    import resty_tf as rtf
    rng = np.random.default_rng(3)
    c, s = rng.random((32, 32, 3)), rng.random((32, 32, 3))
    kw = dict(iterations=6, image_size=0, scales=(1.0,), optimizer="lbfgs")
    a = rtf.GatysStylizer("gatys2015", weights="random:0", dtype="float64")
    b = rtf.GatysStylizer("gatys2015", weights="random:0", dtype="float64", checkpoint=True, history_size=10)
    ya, yb = a.stylize(c, s, **kw), b.stylize(c, s, **kw)
    assert b.vgg.checkpoint and b.preset.gatys.lbfgs.history_size == 10
    assert np.abs(ya - yb).max() <= 1e-6
    ha = [h["total"] for h in a.history]
    hb = [h["total"] for h in b.history]
    assert np.allclose(ha, hb, rtol=1e-10)
    with pytest.raises(ValueError, match="history_size"):
        rtf.GatysStylizer("gatys2015", weights="random:0", history_size=0)


def test_fp16_overflow_is_recomputed_in_full_precision():
    """As in resty_torch: an fp16 batch whose activations overflow (scaled-up first conv) is
    recomputed in float32 with a warning instead of returning NaN/inf pixels."""
    import resty_tf as rtf
    img = np.random.default_rng(5).random((24, 28, 3)).astype(np.float32)
    ref = rtf.FastStylizer(tiny_fast_preset(), weights="random:0")
    half = rtf.FastStylizer(tiny_fast_preset(), weights="random:0", precision="fp16")
    w = ref.net.state_dict_canonical()
    w["conv_in.weight"] = w["conv_in.weight"] * 1e4     # conv_in outputs ~1e6: inf in fp16
    ref.net.load_canonical(w)
    half.net.load_canonical(w)
    raw = half.net(tf.constant(img[None]), training=False).numpy()
    assert not np.isfinite(raw).all()                    # the fp16 path itself overflows
    with pytest.warns(RuntimeWarning, match="non-finite"):
        got = half.stylize(img)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref.stylize(img), atol=1e-5)
