"""resty.onnx_runtime: the rewritten ONNX graph equals resty_torch; the ONNX Runtime stylizer."""
import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from resty.errors import OutputExistsError, RestyError  # noqa: E402
from resty import onnx_runtime as ox  # noqa: E402
from resty.presets import get as get_preset  # noqa: E402
from resty.weights import random_transformer  # noqa: E402

LIGHT = get_preset("restynet-light").transformer
SIZES = [(1, 3, 29, 19), (2, 3, 36, 44), (1, 3, 41, 64)]


def _inputs(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.random(s, dtype=np.float32) for s in SIZES]


# ------------------------------------------------------------------ the weight rewrites (NumPy only)
def _conv2d(x, w, stride=1):
    """Valid cross-correlation, float64: x (C, H, W), w (O, C, k, k)."""
    o, c, k, _ = w.shape
    h, wd = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((o, h, wd))
    for dy in range(k):
        for dx in range(k):
            patch = x[:, dy:dy + stride * h:stride, dx:dx + stride * wd:stride]
            out += np.einsum("oc,chw->ohw", w[:, :, dy, dx], patch)
    return out


def _d2s_dcr(y, b=2):
    c = y.shape[0] // (b * b)
    return y.reshape(b, b, c, *y.shape[1:]).transpose(2, 3, 0, 4, 1).reshape(c, y.shape[1] * b, y.shape[2] * b)


def test_subpixel_weights_equal_upsample_reflect_conv():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 7, 6)), rng.standard_normal((4, 5, 3, 3))
    up = x.repeat(2, 1).repeat(2, 2)
    want = _conv2d(np.pad(up, ((0, 0), (1, 1), (1, 1)), mode="reflect"), w)
    got = _d2s_dcr(_conv2d(np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge"), ox.subpixel_weights(w)))[:, 1:-1, 1:-1]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", [2, 4])
def test_space_to_depth_weights_equal_conv(block):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 16, 24)), rng.standard_normal((2, 3, 9, 9))
    want = _conv2d(np.pad(x, ((0, 0), (4, 4), (4, 4)), mode="reflect"), w)
    xp = np.pad(x, ((0, 0), (4, 4), (4, 4)), mode="reflect")
    c, h, wd = xp.shape
    s2d = xp.reshape(c, h // block, block, wd // block, block).transpose(2, 4, 0, 1, 3).reshape(block * block * c, h // block, wd // block)
    got = _d2s_dcr(_conv2d(s2d, ox.space_to_depth_weights(w, block)), block)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_phase_stride_weights_equal_conv():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 18, 22)), rng.standard_normal((2, 3, 9, 9))
    xp = np.pad(x, ((0, 0), (4, 4), (4, 4)), mode="reflect")
    got = _d2s_dcr(_conv2d(xp, ox._phase_stride_weights(w), stride=2))
    np.testing.assert_allclose(got, _conv2d(xp, w), rtol=0, atol=1e-12)


def test_depth_to_space_as_conv_transpose_is_bit_exact():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    c = 3
    k = np.zeros((4 * c, 1, 2, 2), np.float32)
    for ph in range(4):
        k[ph::4, 0, ph // 2, ph % 2] = 1.0
    nodes = [helper.make_node("ConvTranspose", ["x", "k"], ["a"], kernel_shape=[2, 2], strides=[2, 2], group=c),
             helper.make_node("DepthToSpace", ["x"], ["b"], blocksize=2, mode="CRD")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4 * c, 5, 7])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "ab"],
                          [numpy_helper.from_array(k, "k")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(3).standard_normal((1, 4 * c, 5, 7)).astype(np.float32) * 1e3
    a, b = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.array_equal(a, b)
    del onnx


# ------------------------------------------------------------------ the whole graph against resty_torch
def _torch(ws):
    """resty_torch's network on NCHW inputs, reached as the core reaches it (the registry)."""
    from resty.backends import load_backend_module
    return load_backend_module("resty_torch.export").Exporter(ws).outputs


@pytest.mark.parametrize("flags", [dict(subpixel=False, out_conv="plain"), dict(), dict(out_conv="s2d"),
                                   dict(subpixel=False)], ids=["plain", "default", "s2d", "no-subpixel"])
def test_graph_equals_torch(flags):
    pytest.importorskip("torch")
    ws = random_transformer(LIGHT, 0)
    model = ox.build_onnx_model(ws, **flags)
    err = ox.check_against_reference(model, ws, _inputs(), reference=_torch(ws))
    assert err < 1e-4      # float32 rounding (measured ~3e-6 on outputs of magnitude ~1)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_graph_equals_torch_other_specs(activation):
    pytest.importorskip("torch")
    spec = LIGHT.replace(channels=(8, 16, 24), residual_blocks=2, output_activation=activation, kernel_out=5)
    ws = random_transformer(spec, 1)
    assert ox.check_against_reference(ox.build_onnx_model(ws), ws, _inputs(2), reference=_torch(ws)) < 1e-4


@pytest.mark.parametrize("flags", [dict(), dict(subpixel=False, out_conv="plain")], ids=["default", "plain"])
def test_graph_equals_the_numpy_reference(flags):
    """The default check needs no framework: the float64 NumPy network of resty.reference."""
    ws = random_transformer(LIGHT.replace(residual_blocks=2), 0)
    assert ox.check_against_reference(ox.build_onnx_model(ws, **flags), ws, _inputs(2)) < 1e-4


def test_check_flags_a_wrong_graph():
    ws = random_transformer(LIGHT.replace(residual_blocks=2), 0)
    other = random_transformer(LIGHT.replace(residual_blocks=2), 1)
    with pytest.raises(RestyError, match="differs from the reference network"):
        ox.check_against_reference(ox.build_onnx_model(other), ws, _inputs(2))


def test_unsupported_spec_is_refused():
    spec = get_preset("johnson2016").transformer.replace(norm="batch")
    assert not ox.supports(spec)
    assert "norm='batch'" in ox.cpu_fast_path_unavailable(spec)
    with pytest.raises(RestyError, match="instance norm"):
        ox.build_onnx_model(random_transformer(spec, 0))


@pytest.mark.parametrize("crop", [(1, 0), (0, 1)])
def test_transposed_subpixel_weights_equal_conv_transpose(crop):
    from resty.reference import conv_transpose2d
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 5, 7, 6))
    w = rng.normal(size=(5, 4, 3, 3))                       # IOHW
    want = conv_transpose2d(x, w, None, 2, crop)[0]          # (4, 14, 12)
    w4, lo, hi = ox.transposed_subpixel_weights(w, crop[0])
    xp = np.pad(x[0], ((0, 0), (lo, hi), (lo, hi)))
    got = _d2s_dcr(_conv2d(xp, w4))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("crop", [(1, 0), (0, 1)])
def test_graph_equals_torch_transposed_conv_spec(crop):
    pytest.importorskip("torch")
    spec = get_preset("johnson2016").transformer.replace(channels=(8, 16, 24), residual_blocks=2,
                                                          transpose_crop=crop)
    ws = random_transformer(spec, 2)
    model = ox.build_onnx_model(ws)
    assert "ConvTranspose" in {n.op_type for n in model.graph.node}      # the DepthToSpace-as-conv only
    assert ox.check_against_reference(model, ws, _inputs(3), reference=_torch(ws)) < 1e-4
    plain = ox.build_onnx_model(ws, subpixel=False)                      # ONNX's own ConvTranspose
    assert ox.check_against_reference(plain, ws, _inputs(3), reference=_torch(ws)) < 1e-4


def test_convert_model_uses_the_fast_graph(tmp_path):
    pytest.importorskip("torch")
    import onnx
    from resty.backends import convert_model
    ws = random_transformer(LIGHT.replace(residual_blocks=1), 0)
    fast = convert_model(ws, "onnx", tmp_path / "fast.onnx")
    plain = convert_model(ws, "onnx", tmp_path / "plain.onnx", onnx_graph="torch")
    ops = lambda p: {n.op_type for n in onnx.load(str(p)).graph.node}   # noqa: E731
    assert "ConvTranspose" in ops(fast) and "Resize" not in ops(fast)
    assert "Resize" in ops(plain)
    x = _inputs()[2]
    a = ox.OnnxStylizer(fast, threads=1).run(x)
    b = ox.OnnxStylizer(plain, threads=1).run(x)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    assert onnx.load(str(fast)).producer_name == "resty" and onnx.load(str(plain)).producer_name != "resty"
    with pytest.raises(RestyError, match="onnx_graph"):
        convert_model(ws, "onnx", tmp_path / "x.onnx", onnx_graph="nope")


def test_convert_model_falls_back_to_torch_export(tmp_path):
    pytest.importorskip("torch")
    import onnx
    from resty.backends import convert_model
    spec = get_preset("johnson2016").transformer.replace(channels=(8, 16, 24), residual_blocks=1, norm="batch")
    out = convert_model(random_transformer(spec, 0), "onnx", tmp_path / "j.onnx")   # checked inside
    assert onnx.load(str(out)).producer_name != "resty"


# ------------------------------------------------------------------ export, sessions, stylizer
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("onnx")
    ws = random_transformer(LIGHT.replace(residual_blocks=2), 0)
    return ws, ox.export_onnx(ws, d / "light.onnx")


def test_export_refuses_to_overwrite(exported):
    ws, path = exported
    with pytest.raises(OutputExistsError, match="already exists"):
        ox.export_onnx(ws, path)


def test_stylizer_matches_torch_and_takes_images(exported):
    ws, path = exported
    s = ox.OnnxStylizer(path, threads=1)
    img = np.random.default_rng(4).random((37, 50, 3), dtype=np.float32)
    ref = _torch(ws)([img.transpose(2, 0, 1)[None]])[0][0].transpose(1, 2, 0)
    out = s.stylize(img)
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, np.clip(ref, 0, 1), rtol=0, atol=1e-4)
    np.testing.assert_allclose(s.stylize(img, clamp=False), ref, rtol=0, atol=1e-4)
    u8 = (img * 255).round().astype(np.uint8)
    np.testing.assert_allclose(s.stylize(u8), s.stylize(u8.astype(np.float32) / 255), atol=0)
    assert s.stylize(np.stack([img, img])).shape == (2, 37, 50, 3)
    with pytest.raises(RestyError, match="HxWx3"):
        s.stylize(img[..., 0])


def test_optimized_cache_roundtrip(exported):
    _, path = exported
    x = _inputs()[1]
    a = ox.OnnxStylizer(path, threads=1, optimized_cache=True)
    caches = list(path.parent.glob("light.opt-*.onnx"))
    assert len(caches) == 1
    b = ox.OnnxStylizer(path, threads=1, optimized_cache=True)     # loads the cached, optimised graph
    np.testing.assert_array_equal(a.run(x), b.run(x))


@pytest.mark.parametrize("make", ["missing", "garbage"])
def test_bad_model_path_is_one_line_error(tmp_path, make):
    p = tmp_path / "m.onnx"
    if make == "garbage":
        p.write_bytes(b"not an onnx model")
    with pytest.raises(RestyError) as info:
        ox.OnnxStylizer(p)
    msg = str(info.value)
    assert "\n" not in msg and str(p) in msg


def test_module_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, resty.onnx_runtime; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_int8_variant_is_close(exported, tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    _, path = exported
    cal = [x[:, :, :48, :48] for x in ox.calibration_images(64)]
    q = ox.quantize_int8(path, tmp_path / "q.onnx", images=cal)
    x = ox.calibration_images(64)[0]
    f32 = ox.OnnxStylizer(path, threads=1).run(x)
    i8 = ox.OnnxStylizer(q, threads=1).run(x)
    assert ox.psnr(i8, f32) > 25.0       # approximate, unlike the float graph
    with pytest.raises(OutputExistsError):
        ox.quantize_int8(path, q, images=cal)


def test_graph_conv_flops_counted_by_hand():
    # channels (4, 8, 8), one residual block, a 16x16 image: every layer written out.
    spec = LIGHT.replace(channels=(4, 8, 8), residual_blocks=1)
    plain = (2 * 3 * 4 * 81 * 256 + 2 * 4 * 8 * 9 * 64 + 2 * 8 * 8 * 9 * 16 + 2 * (2 * 8 * 8 * 9 * 16)
             + 2 * 8 * 8 * 9 * 64 + 2 * 8 * 4 * 9 * 256 + 2 * 4 * 3 * 81 * 256)
    # sub-pixel up convs: 4 phases x 2x2 taps on the low-resolution map; phase-split output conv:
    # 4x3 outputs, 10x10 taps, at 8x8
    graph = (2 * 3 * 4 * 81 * 256 + 2 * 4 * 8 * 9 * 64 + 2 * 8 * 8 * 9 * 16 + 2 * (2 * 8 * 8 * 9 * 16)
             + 2 * 8 * 32 * 4 * 16 + 2 * 8 * 16 * 4 * 64 + 2 * 4 * 12 * 100 * 64)
    assert ox.graph_conv_flops(spec, 16, 16) == (graph, plain)
    tr = spec.replace(upsampling="transposed_conv")
    g2, p2 = ox.graph_conv_flops(tr, 16, 16)
    assert p2 == plain - (2 * 8 * 8 * 9 * 64 - 2 * 8 * 8 * 9 * 16) - (2 * 8 * 4 * 9 * 256 - 2 * 8 * 4 * 9 * 64)
    assert g2 == graph          # the same phase convs as the sub-pixel upsampling
    assert ox.sgemm_gflops(256, 1) > 0
