"""Hostile input to the command line: each mistake ends with one ``resty: error:`` line and exit
status 2, and nothing a user made is lost."""
from __future__ import annotations

import numpy as np
import pytest

from resty.backends import is_installed
from resty.presets import get as get_preset

from cli_helpers import assert_usage_error, offline_env, run

HAS_TORCH, HAS_TF = is_installed("torch"), is_installed("tf")


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    offline_env(tmp_path, monkeypatch)


def _tiny_preset():
    p = get_preset("johnson2016")
    return p.replace(transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from resty.backends import get_backend
    name = "torch" if HAS_TORCH else "tf"
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    get_backend(name).FastStylizer(_tiny_preset(), weights="random:0", device="cpu").save(path)
    return path


@pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed")
def test_convert_overwrite_never_deletes_a_folder_resty_did_not_write(model, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    rc, _, err = run(["convert", model, "--to", "savedmodel", "-o", folder, "--overwrite"], capsys)
    assert_usage_error(rc, err, str(folder), "not a SavedModel")
    assert (folder / "thesis.tex").read_text() == "years of work"
    # a SavedModel Resty wrote is replaced
    out = tmp_path / "sm"
    assert run(["convert", model, "--to", "savedmodel", "-o", out], capsys)[0] == 0
    stamp = (out / "saved_model.pb").stat().st_mtime_ns
    rc, _, err = run(["convert", model, "--to", "savedmodel", "-o", out, "--overwrite"], capsys)
    assert rc == 0, err
    assert (out / "saved_model.pb").exists() and (out / "saved_model.pb").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_home", "mine", "sm"]     # no leftovers


@pytest.mark.parametrize("opset", [3, 999])
def test_convert_bad_opset_is_one_line(model, tmp_path, capsys, opset):
    rc, _, err = run(["convert", model, "--to", "onnx", "-o", tmp_path / "m.onnx", "--opset", opset], capsys)
    assert_usage_error(rc, err, f"opset: got {opset}")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("header", [b"[" * 100000 + b"]" * 100000, b'{"a":' * 50000 + b"1" + b"}" * 50000])
def test_deeply_nested_safetensors_header_is_one_line(tmp_path, capsys, header):
    import struct
    bad = tmp_path / "nested.safetensors"
    bad.write_bytes(struct.pack("<Q", len(header)) + header)
    rc, _, err = run(["convert", bad, "--to", "onnx", "-o", tmp_path / "m.onnx"], capsys)
    assert_usage_error(rc, err, str(bad), "not a safetensors file")


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_pickle_pth_is_refused_without_advice_to_unpickle_it(tmp_path, capsys):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    rc, out, err = run(["weights", "import", evil], capsys)
    line = assert_usage_error(rc, err, str(evil), "not a weights-only PyTorch file", "was not loaded")
    assert "weights_only set to False" not in err and "warning" not in err and "this ran" not in out + err
    assert line.count("\n") == 0


def test_full_disk_names_the_output_and_keeps_the_old_file(model, tmp_path, capsys, monkeypatch):
    import errno

    from PIL import Image
    content = tmp_path / "c.png"
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(content)
    out = tmp_path / "o.png"
    out.write_bytes(b"the old output")

    def full_disk(self, fp, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", full_disk)
    rc, _, err = run(["stylize", content, "-o", out, "--method", "fast", "--model", model, "--weights",
                      "random:0", "--overwrite"], capsys)
    assert_usage_error(rc, err, str(out), "No space left on device")
    assert out.read_bytes() == b"the old output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_home", "c.png", "o.png"]


def test_api_words_become_cli_words(tmp_path, capsys):
    from PIL import Image
    content = tmp_path / "c.png"
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(content)
    out = tmp_path / "o.png"
    out.write_bytes(b"x")
    rc, _, err = run(["stylize", content, content, "-o", out, "--weights", "random:0", "--iterations", "1"], capsys)
    assert_usage_error(rc, err, "--overwrite")
    assert "overwrite=True" not in err


def test_style_weights_near_the_float_maximum_still_blend_evenly():
    from resty.inputs import blend_weights
    assert blend_weights([1e308, 1e308], 2) == (0.5, 0.5)
    assert blend_weights([1e308, 3e307], 2)[1] == pytest.approx(3 / 13)


def test_activation_quantization_outside_the_arbitrary_network_is_refused(model, tmp_path, capsys):
    """The flag means something only for Magenta's int8 originals: with a Johnson model (or
    Gatys) it would be silently ignored, so it is refused."""
    from PIL import Image
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(tmp_path / "c.png")
    for extra in (["--model", str(model)], [str(tmp_path / "c.png")]):
        rc, _, err = run(["stylize", tmp_path / "c.png", *extra, "-o", tmp_path / "o.png", "--activation-quantization",
                          "-q"], capsys)
        assert_usage_error(rc, err, "--activation-quantization is for Magenta's arbitrary network")
    assert not (tmp_path / "o.png").exists()
