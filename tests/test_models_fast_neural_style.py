"""pytorch/examples fast_neural_style networks imported and run natively in both backends.

The published checkpoints (candy.pth, ...) and the ONNX model zoo's files cannot be downloaded
here, so the test makes them the way they were made: the example's own ``TransformerNet``
(tests/source_pytorch_examples.py, its text) with seeded weights, saved with ``torch.save`` (in
the legacy and the zip format, with the stale InstanceNorm running statistics old checkpoints
carry) and exported with ``torch.onnx.export`` at opset 9 (``Upsample``, a fixed 224x224 input,
as the zoo's ``*-9.onnx``) and 11 (``Resize``).  Each backend's output is compared with the
example's own ``stylize`` (or ONNX Runtime on the file).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from source_pytorch_examples import TransformerNet, stylize  # noqa: E402

from cli_helpers import assert_usage_error, run  # noqa: E402

# The example's float32 network on [0, 255] pixels; a difference of 2e-3 on [0, 1] is half a level.
TOL = 2e-3


def _example_net(seed: int = 0) -> "TransformerNet":
    """The example's network, float32, seeded, with norm parameters and an output layer that
    make every tensor matter and keep most output pixels inside [0, 255] (unsaturated)."""
    torch.manual_seed(seed)
    net = TransformerNet().float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in net.named_modules():
            if isinstance(mod, torch.nn.InstanceNorm2d):
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
        net.deconv3.conv2d.weight.mul_(20.0)
        net.deconv3.conv2d.bias.fill_(127.5)
    return net


def _photo(side: int) -> np.ndarray:
    from resty.images import resize_to, sample_images
    return resize_to(sample_images()["astronaut"], (side, side)).astype(np.float32)


def _state_with_stale_stats(net) -> dict:
    """What a checkpoint of the example saved by an old torch holds: the state dict plus
    ``running_mean`` / ``running_var`` for every InstanceNorm2d."""
    state = dict(net.state_dict())
    for name, mod in net.named_modules():
        if isinstance(mod, torch.nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.randn(mod.num_features)
            state[f"{name}.running_var"] = torch.rand(mod.num_features) + 0.5
    return state


def _example_stylize(net, img: np.ndarray) -> np.ndarray:
    """The example's ``stylize`` (its source runs float64) with this network."""
    import copy
    return stylize(copy.deepcopy(net).double(), img)


@pytest.fixture(scope="module")
def net():
    return _example_net()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTY_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-pickle", "zip"])
def test_checkpoint_imports_and_both_backends_match_the_example(net, home, legacy, capsys):
    from resty.backends import get_backend
    from resty.weights import load_weights
    from resty.models import find_model
    path = home / "candy.pth"
    state = _state_with_stale_stats(net)
    assert any(k.endswith("running_mean") for k in state) and "res1.in1.running_var" in state
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    rc, out, err = run(["models", "import", path], capsys)
    assert rc == 0, err
    assert "candy" in out
    ws = load_weights(find_model("candy"), expect="transformer")
    assert ws.spec.conv_bias_before_norm and ws.spec.input_scale == 255.0
    assert ws.extra["dropped_keys"] == sum(k.endswith(("running_mean", "running_var")) for k in state)
    img = _photo(256)
    ref = _example_stylize(net, img)
    assert float(np.mean((ref > 0) & (ref < 1))) > 0.8       # unsaturated: the comparison sees every pixel
    for backend in ("torch", "tf"):
        y = get_backend(backend).FastStylizer.load("candy", device="cpu").stylize(img)
        err = float(np.abs(y - ref).max())
        assert y.shape == ref.shape and err <= TOL, (backend, err)


def test_every_tensor_lands_where_the_example_uses_it(net, home, capsys):
    """Swapping two norms' parameters in the file changes the output: the import maps by name."""
    from resty.backends import get_backend
    state = _state_with_stale_stats(net)
    state["res1.in1.weight"], state["res2.in1.weight"] = state["res2.in1.weight"], state["res1.in1.weight"]
    torch.save(state, home / "swapped.pth")
    assert run(["models", "import", home / "swapped.pth"], capsys)[0] == 0
    img = _photo(64)
    y = get_backend("torch").FastStylizer.load("swapped", device="cpu").stylize(img)
    assert float(np.abs(y - _example_stylize(net, img)).max()) > 10 * TOL


@pytest.mark.parametrize("opset", [9, 11])
def test_onnx_export_imports_and_matches_onnxruntime(net, home, opset, capsys):
    """The zoo's files are torch.onnx exports of the example at opset 9 with a fixed 224x224
    input; Resty reads the graph, checks it against ONNX Runtime and runs it at any size."""
    import onnx
    import onnxruntime as ort
    from resty.backends import get_backend
    path = home / f"mosaic-{opset}.onnx"
    torch.onnx.export(net, torch.rand(1, 3, 224, 224) * 255, str(path), dynamo=False, opset_version=opset,
                      input_names=["input1"], output_names=["output1"])
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("Upsample" if opset == 9 else "Resize") in ops
    rc, out, err = run(["models", "import", path, "--name", f"mosaic{opset}"], capsys)
    assert rc == 0, err
    assert "max abs vs ONNX Runtime" in out
    img = _photo(224)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = np.clip(sess.run(None, {"input1": (img * 255).transpose(2, 0, 1)[None]})[0][0].transpose(1, 2, 0) / 255, 0, 1)
    for backend in ("torch", "tf"):
        fs = get_backend(backend).FastStylizer.load(f"mosaic{opset}", device="cpu")
        err = float(np.abs(fs.stylize(img) - ref).max())
        assert err <= TOL, (backend, err)
        assert fs.stylize(_photo(96)).shape == (96, 96, 3)      # any size, unlike the file


def test_bad_checkpoints_are_one_line(net, home, capsys):
    state = dict(net.state_dict())
    del state["res3.in2.bias"]
    torch.save(state, home / "missing.pth")
    rc, _, err = run(["models", "import", home / "missing.pth"], capsys)
    assert_usage_error(rc, err, "missing keys", "res3.in2.bias")
    state = dict(net.state_dict(), **{"fc.weight": torch.zeros(3)})
    torch.save(state, home / "extra.pth")
    rc, _, err = run(["models", "import", home / "extra.pth"], capsys)
    assert_usage_error(rc, err, "unexpected keys", "fc.weight")
    state = dict(net.state_dict(), **{"in2.weight": torch.ones(63)})
    torch.save(state, home / "shape.pth")
    rc, _, err = run(["models", "import", home / "shape.pth"], capsys)
    assert_usage_error(rc, err, "in2.weight has shape (63,), expected (64,)")
    (home / "empty.pth").write_bytes(b"")
    rc, _, err = run(["models", "import", home / "empty.pth"], capsys)
    assert_usage_error(rc, err, "empty.pth", "the file is empty")
    torch.save({"conv1.weight": torch.zeros(3)}, home / "vgg.pth")
    rc, _, err = run(["models", "import", home / "vgg.pth"], capsys)
    assert_usage_error(rc, err, "not a pytorch/examples fast_neural_style network")
    torch.save(net, home / "pickled_module.pth")       # a whole pickled module: never unpickled
    rc, _, err = run(["models", "import", home / "pickled_module.pth"], capsys)
    assert_usage_error(rc, err, "not a weights-only PyTorch file")
    (home / "junk.onnx").write_bytes(b"not a protobuf at all \x00\xff")
    rc, _, err = run(["models", "import", home / "junk.onnx"], capsys)
    assert_usage_error(rc, err, "junk.onnx")


@pytest.fixture(scope="module")
def export11(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "net11.onnx"
    torch.onnx.export(net, torch.rand(1, 3, 64, 64) * 255, str(path), dynamo=False, opset_version=11,
                      input_names=["input1"], output_names=["output1"])
    return path


def _mutated_export(export11, home, name, fn):
    import onnx
    path = home / f"{name}.onnx"
    m = onnx.load(str(export11))
    fn(m)
    onnx.save(m, str(path))
    return path


def _set_attr(m, op, key, value, index=0):
    import onnx
    n = [n for n in m.graph.node if n.op_type == op][index]
    for a in list(n.attribute):
        if a.name == key:
            n.attribute.remove(a)
    n.attribute.append(onnx.helper.make_attribute(key, value))


@pytest.mark.parametrize("trap, words", [
    (lambda m: _set_attr(m, "Pad", "mode", "constant", 3), "padding mode 'constant'"),
    (lambda m: _set_attr(m, "Resize", "mode", "linear"), "nearest x2 upsampling"),
    (lambda m: _set_attr(m, "InstanceNormalization", "epsilon", 1e-3, 4), "one instance-norm epsilon"),
])
def test_graph_traps_are_refused(export11, home, capsys, trap, words):
    """The importer reads what the graph computes: a changed padding mode, upsampling or norm
    epsilon is refused with the reason, not loaded into the wrong function."""
    path = _mutated_export(export11, home, "trap", trap)
    rc, _, err = run(["models", "import", path], capsys)
    assert_usage_error(rc, err, words)


# --------------------------------------------------------------------------- published files, downloaded
def test_download_published_checkpoint_and_zoo_file(net, home, monkeypatch, capsys):
    """``resty models download`` (and first use by name, as torchvision's weights): the download
    code runs for real on file:// URLs of files made like the published ones."""
    import zipfile
    from resty import models_fast_neural_style as M
    from resty.backends import get_backend
    monkeypatch.delenv("RESTY_OFFLINE", raising=False)
    torch.save(_state_with_stale_stats(net), home / "candy.pth")
    with zipfile.ZipFile(home / "saved_models.zip", "w") as z:
        z.write(home / "candy.pth", "saved_models/candy.pth")
        z.writestr("saved_models/README", "other members are left alone")
    torch.onnx.export(net, torch.rand(1, 3, 224, 224) * 255, str(home / "zoo.onnx"), dynamo=False, opset_version=9,
                      input_names=["input1"], output_names=["output1"])
    monkeypatch.setitem(M.PUBLISHED, "candy", dict(M.PUBLISHED["candy"], url=(home / "saved_models.zip").as_uri()))
    monkeypatch.setitem(M.PUBLISHED, "mosaic-9", dict(M.PUBLISHED["mosaic-9"], url=(home / "zoo.onnx").as_uri()))
    rc, out, err = run(["models", "download", "candy"], capsys)
    assert rc == 0, err
    img = _photo(64)
    ref = _example_stylize(net, img)
    fs = get_backend("torch").FastStylizer.load("mosaic-9", device="cpu")      # downloaded on first use
    assert float(np.abs(fs.stylize(img) - ref).max()) <= TOL
    downloads = home / "home" / "downloads"
    assert sorted(p.name for p in downloads.iterdir()) == ["candy.pth", "mosaic-9.onnx",
                                                           "pytorch_examples_saved_models.zip"]
    (home / "saved_models.zip").unlink()                 # cached: no second download
    (home / "home" / "models" / "candy.safetensors").unlink()
    assert run(["models", "download", "candy"], capsys)[0] == 0
    y = get_backend("tf").FastStylizer.load("candy", device="cpu").stylize(img)
    assert float(np.abs(y - ref).max()) <= TOL


def test_download_failures_are_one_line(home, monkeypatch, capsys):
    from resty import models_fast_neural_style as M
    monkeypatch.setenv("RESTY_OFFLINE", "1")
    rc, _, err = run(["models", "download", "udnie"], capsys)
    assert_usage_error(rc, err, "RESTY_OFFLINE", "udnie.pth")
    monkeypatch.delenv("RESTY_OFFLINE")
    (home / "broken.zip").write_bytes(b"<html>quota exceeded</html>")
    monkeypatch.setitem(M.PUBLISHED, "udnie", dict(M.PUBLISHED["udnie"], url=(home / "broken.zip").as_uri()))
    rc, _, err = run(["models", "download", "udnie"], capsys)
    assert_usage_error(rc, err, "not a zip file")
    assert not (home / "home" / "downloads" / "pytorch_examples_saved_models.zip").exists()
    monkeypatch.setitem(M.PUBLISHED, "udnie", dict(M.PUBLISHED["udnie"], url=(home / "absent.zip").as_uri()))
    rc, _, err = run(["models", "download", "udnie"], capsys)
    assert_usage_error(rc, err, "download failed")
    rc, _, err = run(["models", "download", "starry"], capsys)
    assert_usage_error(rc, err, "not a published network", "candy-9")
