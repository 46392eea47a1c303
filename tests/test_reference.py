"""The NumPy float64 oracle against independent, hand-written computations and finite differences.

Each expected value below is written out from its source's formula with explicit loops or
einsum, independently of resty.losses' factor tables, so a wrong factor there fails here.
"""
import numpy as np
import pytest

from resty import reference as R
from resty.specs import AdamSpec, PREPROCESSING, TransformerSpec, VGGSpec, transformer_param_shapes

rng = np.random.default_rng(1234)


def feats(b=2, c=5, h=4, w=7):
    return rng.normal(size=(b, c, h, w))


# ----------------------------------------------------------------- Gram and style conventions
def test_gram_raw_is_explicit_sum():
    f = feats(1, 3, 2, 3)
    g = np.zeros((3, 3))
    for k in range(3):
        for k2 in range(3):
            for i in range(2):
                for j in range(3):
                    g[k, k2] += f[0, k, i, j] * f[0, k2, i, j]
    np.testing.assert_allclose(R.gram(f, "raw")[0], g, rtol=1e-14)


@pytest.mark.parametrize("conv", ["raw", "gatys2015", "johnson2016", "pytorch-examples",
                                  "pytorch-tutorial", "tf-tutorial"])
def test_style_loss_conventions(conv):
    f, s = feats(2, 5, 4, 7), feats(1, 5, 3, 6)
    b, c, h, w = f.shape
    F = f.reshape(b, c, h * w)
    raw = np.einsum("bkm,bjm->bkj", F, F)
    Ss = s.reshape(1, 5, 18)
    raw_s = np.einsum("bkm,bjm->bkj", Ss, Ss)[0]
    if conv in ("raw", "gatys2015"):
        G, A = raw, raw_s
    elif conv == "tf-tutorial":
        G, A = raw / (h * w), raw_s / 18
    else:
        G, A = raw / (c * h * w), raw_s / (5 * 18)
    scale = np.abs(G).max()
    np.testing.assert_allclose(R.gram(f, conv), G, rtol=1e-13, atol=1e-14 * scale)
    np.testing.assert_allclose(R.gram(s, conv)[0], A, rtol=1e-13, atol=1e-14 * np.abs(A).max())
    sq = ((G - A) ** 2).sum(axis=(1, 2))
    expected = {
        "raw": sq,
        "gatys2015": sq / (4 * c ** 2 * (h * w) ** 2),     # 1/(4 N² M²) Σ (G−A)²
        "johnson2016": sq,                               # ‖G − A‖²_F with G normalised by CHW
        "pytorch-examples": ((G - A) ** 2).mean(axis=(1, 2)),
        "pytorch-tutorial": ((G - A) ** 2).mean(axis=(1, 2)),
        "tf-tutorial": ((G - A) ** 2).mean(axis=(1, 2)),
    }[conv].mean()
    assert R.style_loss(f, A, conv) == pytest.approx(expected, rel=1e-13)


def test_gatys_report_form_equals_paper_form():
    # The report writes 1/(2 n_H n_W n_C)²; the paper 1/(4 N² M²): the same number.
    f = feats(1, 6, 5, 3)
    a = R.gram(feats(1, 6, 5, 3), "raw")[0]
    nh, nw, nc = 5, 3, 6
    report = ((R.gram(f, "raw")[0] - a) ** 2).sum() / (2 * nh * nw * nc) ** 2
    assert R.style_loss(f, a, "gatys2015") == pytest.approx(report, rel=1e-14)


@pytest.mark.parametrize("conv", ["gatys2015", "johnson2016", "mse", "sum"])
def test_content_loss_conventions(conv):
    f, p = feats(), feats()
    d2 = ((f - p) ** 2).reshape(f.shape[0], -1)
    expected = {"gatys2015": 0.5 * d2.sum(1), "johnson2016": d2.sum(1) / d2.shape[1],
                "mse": d2.mean(1), "sum": d2.sum(1)}[conv].mean()
    assert R.content_loss(f, p, conv) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("conv", ["squared_sum", "abs_sum", "squared_mean", "abs_mean"])
def test_tv_conventions(conv):
    x = rng.random((2, 3, 5, 6))
    per = []
    for b in range(2):
        dh = [x[b, c, i + 1, j] - x[b, c, i, j] for c in range(3) for i in range(4) for j in range(6)]
        dw = [x[b, c, i, j + 1] - x[b, c, i, j] for c in range(3) for i in range(5) for j in range(5)]
        dh, dw = np.array(dh), np.array(dw)
        per.append({"squared_sum": (dh ** 2).sum() + (dw ** 2).sum(),
                    "abs_sum": np.abs(dh).sum() + np.abs(dw).sum(),      # tf.image.total_variation
                    "squared_mean": (dh ** 2).mean() + (dw ** 2).mean(),
                    "abs_mean": np.abs(dh).mean() + np.abs(dw).mean()}[conv])
    assert R.tv_loss(x, conv) == pytest.approx(np.mean(per), rel=1e-13)


def _fd(fun, x, eps=1e-6, n=12):
    """Central finite differences at n random coordinates."""
    idx = [tuple(rng.integers(0, s) for s in x.shape) for _ in range(n)]
    out = []
    for i in idx:
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        out.append((fun(xp) - fun(xm)) / (2 * eps))
    return idx, np.array(out)


@pytest.mark.parametrize("conv", ["gatys2015", "johnson2016", "tf-tutorial", "raw"])
def test_style_grad_matches_finite_differences(conv):
    f = feats(2, 4, 3, 5)
    a = R.gram(feats(1, 4, 3, 5), conv)[0]
    g = R.style_loss_grad(f, a, conv)
    idx, fd = _fd(lambda z: R.style_loss(z, a, conv), f)
    np.testing.assert_allclose([g[i] for i in idx], fd, rtol=1e-6, atol=1e-9 * np.abs(g).max())


@pytest.mark.parametrize("conv", ["gatys2015", "mse"])
def test_content_grad_matches_finite_differences(conv):
    f, p = feats(), feats()
    g = R.content_loss_grad(f, p, conv)
    idx, fd = _fd(lambda z: R.content_loss(z, p, conv), f)
    np.testing.assert_allclose([g[i] for i in idx], fd, rtol=1e-6)


@pytest.mark.parametrize("conv", ["squared_sum", "abs_mean"])
def test_tv_grad_matches_finite_differences(conv):
    x = rng.random((2, 3, 5, 6))
    g = R.tv_loss_grad(x, conv)
    idx, fd = _fd(lambda z: R.tv_loss(z, conv), x)
    np.testing.assert_allclose([g[i] for i in idx], fd, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------- layers
def test_conv2d_explicit_loops_asymmetric_kernel_stride_padding():
    x = rng.normal(size=(1, 2, 6, 7))
    w = rng.normal(size=(3, 2, 3, 2))         # non-square kernel: a kh/kw swap cannot hide
    b = rng.normal(size=3)
    out = R.conv2d(x, w, b, stride=2, padding=(1, 0, 2, 1))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 0), (2, 1)))
    ho = (xp.shape[2] - 3) // 2 + 1
    wo = (xp.shape[3] - 2) // 2 + 1
    exp = np.zeros((1, 3, ho, wo))
    for o in range(3):
        for i in range(ho):
            for j in range(wo):
                exp[0, o, i, j] = (xp[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 2] * w[o]).sum() + b[o]
    np.testing.assert_allclose(out, exp, rtol=1e-13, atol=1e-13)


def test_reflection_pad_excludes_edge():
    x = np.arange(4.0).reshape(1, 1, 1, 4)
    np.testing.assert_array_equal(R.pad(x, 0, 0, 2, 2, "reflect")[0, 0, 0], [2, 1, 0, 1, 2, 3, 2, 1])


def test_conv_transpose_is_adjoint_of_strided_conv():
    # <conv(x), y> == <x, conv_transpose(y)>: the transposed conv is the conv's adjoint,
    # for the 'full' transposed output and zero-padding-free strided conv.
    x = rng.normal(size=(1, 2, 9, 7))
    w = rng.normal(size=(3, 2, 3, 3))          # OIHW of the forward conv = IOHW of its transpose
    y = rng.normal(size=(1, 3, 4, 3))
    lhs = (R.conv2d(x, w, stride=2) * y).sum()
    rhs = (x * R.conv_transpose2d(y, w.transpose(0, 1, 2, 3), stride=2, crop=(0, 0))).sum()
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_pooling_and_norm_and_upsample():
    x = rng.normal(size=(2, 3, 5, 4))
    mp = R.max_pool2d(x)
    assert mp.shape == (2, 3, 2, 2)
    assert mp[1, 2, 1, 0] == x[1, 2, 2:4, 0:2].max()
    assert R.avg_pool2d(x)[0, 1, 0, 1] == pytest.approx(x[0, 1, 0:2, 2:4].mean())
    g, bta = rng.normal(size=3), rng.normal(size=3)
    n = R.instance_norm(x, g, bta, 1e-5)
    v = x[1, 2]
    np.testing.assert_allclose(n[1, 2], (v - v.mean()) / np.sqrt(v.var() + 1e-5) * g[2] + bta[2], rtol=1e-12)
    u = R.upsample_nearest2x(x)
    assert u.shape == (2, 3, 10, 8) and u[0, 0, 3, 5] == x[0, 0, 1, 2]


def test_preprocess_conventions():
    img = rng.random((4, 5, 3))
    tv = R.preprocess(img, PREPROCESSING["torchvision"])
    np.testing.assert_allclose(tv[0, 1], (img[..., 1] - 0.456) / 0.224)
    cf = R.preprocess(img, PREPROCESSING["caffe"])
    np.testing.assert_allclose(cf[0, 0], img[..., 2] * 255 - 103.939)   # channel 0 is blue
    np.testing.assert_allclose(cf[0, 2], img[..., 0] * 255 - 123.68)


def _random_vgg(arch):
    from resty.specs import vgg_layers
    w = {}
    for l in vgg_layers(arch):
        if l.kind == "conv":
            w[l.name + ".weight"] = rng.normal(size=(l.out_channels, l.in_channels, 3, 3)) * np.sqrt(2 / (9 * l.in_channels))
            w[l.name + ".bias"] = rng.normal(size=l.out_channels) * 0.01
    return w


def test_vgg_features_first_layers_by_hand():
    w = _random_vgg("vgg16")
    x = rng.normal(size=(1, 3, 8, 6))
    f = R.vgg_features(x, w, VGGSpec("vgg16", "avg"), ["conv1_1", "relu1_2", "pool1", "relu2_1"])
    c11 = R.conv2d(x, w["conv1_1.weight"], w["conv1_1.bias"], 1, 1)
    np.testing.assert_allclose(f["conv1_1"], c11)
    r12 = R.relu(R.conv2d(R.relu(c11), w["conv1_2.weight"], w["conv1_2.bias"], 1, 1))
    np.testing.assert_allclose(f["relu1_2"], r12)
    np.testing.assert_allclose(f["pool1"], R.avg_pool2d(r12))
    assert f["relu2_1"].shape == (1, 128, 4, 3)


@pytest.mark.parametrize("up", ["nearest_conv", "transposed_conv"])
def test_transformer_forward_shapes_and_padding(up):
    spec = TransformerSpec(channels=(4, 6, 8), residual_blocks=2, upsampling=up)
    w = {k: rng.normal(size=s) * 0.2 for k, s in transformer_param_shapes(spec).items()}
    x = rng.random((2, 13, 10, 3))
    y = R.transformer_forward(x, w, spec)
    assert y.shape == x.shape
    # The input is reflection-padded to 16x12 and cropped back: padding the input ourselves
    # to that size and cropping gives the same output.
    xp = np.pad(x, ((0, 0), (0, 3), (0, 2), (0, 0)), mode="reflect")
    np.testing.assert_allclose(R.transformer_forward(xp, w, spec)[:, :13, :10], y, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="sides"):
        R.transformer_forward(rng.random((3, 3, 3)), w, spec)


def test_adam_torch_vs_keras_epsilon():
    x = rng.normal(size=5)
    g = rng.normal(size=5)
    s1, s2 = R.AdamState(5), R.AdamState(5)
    a = R.adam_step(x, g, s1, AdamSpec(lr=0.1))
    b = R.adam_step(x, g, s2, AdamSpec(lr=0.1, epsilon_hat=True))
    # first torch step: m̂/ (sqrt(v̂)+eps) = g/(|g|+eps) -> a step of lr·sign(g)
    np.testing.assert_allclose(a, x - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    # Keras 3: bias corrections with beta_1/beta_2 rounded through float32; moments with the exact 1 - beta
    b1, b2 = float(np.float32(0.9)), float(np.float32(0.999))
    m, v = (1 - 0.9) * g, (1 - 0.999) * g * g
    np.testing.assert_allclose(b, x - 0.1 * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + 1e-8), rtol=1e-12)
    assert not np.allclose(a, b, rtol=1e-9, atol=0)
