"""Audit fixes in resty.backends and resty.weights, each checked the way a user meets it.

* TensorFlow's C++ start-up lines (absl / cudart_stub / cuInit) never reach stderr;
* a TensorFlow that is installed but fails to import is one line, exit 2;
* a torchvision ``.pth`` is read with torch.load(weights_only=True) when no backend registered a
  reader (the TF backend), with a clear line when torch is missing;
* ``resty weights import`` names the file type it cannot import (.keras, text, ...);
* a VGG16 file given where VGG19 is expected says so, for .pth and .h5 as for .safetensors;
* importing a file that is not a published ImageNet file says how to use it.

Subprocesses use fake ``tensorflow``/``torch`` packages on PYTHONPATH where the real ones are
not needed, so they take well under a second.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from resty import backends as B
from resty import cli
from resty import weights as W
from resty.errors import BackendUnavailableError, WeightsError
from resty.specs import TransformerSpec, vgg_layers

REPO = Path(__file__).resolve().parents[1]
SMALL = TransformerSpec(channels=(4, 8, 8), residual_blocks=1)
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TF = B.is_installed("tf")

# What TensorFlow 2.x writes to descriptor 2 on a machine without a GPU, whatever
# TF_CPP_MIN_LOG_LEVEL says (copied from a real run).
TF_CHATTER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795918386.641935    8494 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.\n")
CUINIT = ("E0000 00:00:1795918388.913581    8494 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
          "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "cuda_platform")


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty caches, offline, no registered backend hooks (as with only the TF backend)."""
    for k in ("resty", "keras", "torch"):
        (tmp_path / k).mkdir()
    monkeypatch.setenv("RESTY_HOME", str(tmp_path / "resty"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RESTY_OFFLINE", "1")
    monkeypatch.setattr(W, "_DOWNLOADERS", [])
    monkeypatch.setattr(W, "_PTH_READER", None)
    return tmp_path


def tv_state(arch: str, seed: int = 0):
    """A torchvision-layout VGG state dict (real keys and shapes) as NumPy, asymmetric values."""
    rng = np.random.default_rng(seed)
    state = {}
    for l in vgg_layers(arch):
        if l.kind == "conv":
            state[f"features.{l.index}.weight"] = (rng.random((l.out_channels, l.in_channels, 3, 3),
                                                              dtype=np.float32) - 0.5) * 0.1
            state[f"features.{l.index}.bias"] = rng.random(l.out_channels, dtype=np.float32) * 0.01
    state["classifier.6.weight"] = np.zeros((10, 4), np.float32)
    state["classifier.6.bias"] = np.zeros(10, np.float32)
    return state


@pytest.fixture(scope="module")
def vgg16_pth(tmp_path_factory):
    """A torch.save'd torchvision-layout VGG16 state dict: (path, numpy state)."""
    torch = pytest.importorskip("torch")
    state = tv_state("vgg16")
    path = tmp_path_factory.mktemp("pth") / "vgg16.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    return path, state


def write_keras3_h5(path: Path, arch: str) -> None:
    """A Keras 3 ``.weights.h5`` of a VGG (layers/conv2d_N/vars/{0,1}, named blockB_convI)."""
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        n = 0
        for l in vgg_layers(arch):
            if l.kind == "conv":
                g = f.create_group(f"layers/conv2d{'_' + str(n) if n else ''}/vars")
                g.attrs["name"] = f"block{l.block}_conv{l.name.split('_')[1]}"
                g["0"] = rng.random((3, 3, l.in_channels, l.out_channels), dtype=np.float32) - 0.5
                g["1"] = np.zeros(l.out_channels, np.float32)
                n += 1


def run_py(code: str, fake: Path = None, env: dict = None, cwd: Path = None, timeout: int = 120):
    e = dict(os.environ)
    e.pop("RESTY_DEBUG", None)
    e.pop("TF_CPP_MIN_LOG_LEVEL", None)
    if fake is not None:
        e["PYTHONPATH"] = os.pathsep.join([str(fake), str(REPO)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=e, cwd=str(cwd or REPO), timeout=timeout)


def fake_packages(root: Path, tensorflow: str, keras: str = "") -> Path:
    """Fake tensorflow/keras (given sources) and empty torch/torchvision packages under ``root``."""
    for name, src in (("tensorflow", tensorflow), ("keras", keras), ("torch", ""), ("torchvision", "")):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text(textwrap.dedent(src))
    return root


CHATTY_TF = f"""
    import os, types
    os.write(2, {TF_CHATTER.encode()!r})
    def _list(*a):
        os.write(2, {CUINIT.encode()!r})
        return []
    config = types.SimpleNamespace(list_physical_devices=_list)
    """


# --------------------------------------------------------------------------- 1. TF log lines
def test_tf_startup_lines_silenced(tmp_path):
    """The lines TF writes to descriptor 2 while importing and first listing devices are gone;
    what the process writes to stderr afterwards still arrives."""
    fake = fake_packages(tmp_path / "fake", CHATTY_TF)
    code = """
        import os, sys
        from resty import backends as B
        B._import_frameworks(B.BACKENDS["tf"], B._quiet_tensorflow())
        assert "tensorflow" in sys.modules and "keras" in sys.modules
        os.write(2, b"after-fd\\n")
        print("after-py", file=sys.stderr)
        """
    r = run_py(code, fake, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.split() == ["after-fd", "after-py"], r.stderr
    # Asking for TensorFlow's logs (TF_CPP_MIN_LOG_LEVEL=0, or RESTY_DEBUG) shows them.
    for env in ({"TF_CPP_MIN_LOG_LEVEL": "0"}, {"RESTY_DEBUG": "1"}):
        r = run_py(code, fake, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "cudart_stub" in r.stderr and "cuInit" in r.stderr and "after-fd" in r.stderr, r.stderr


def test_quiet_tensorflow_respects_user(monkeypatch):
    monkeypatch.delenv("RESTY_DEBUG", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert B._quiet_tensorflow() is True and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert B._quiet_tensorflow() is False and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    assert B._quiet_tensorflow() is True


def test_stderr_fd_restored_after_exception(tmp_path):
    code = """
        import os
        from resty import backends as B
        try:
            with B._stderr_fd_to_file() as cap:
                os.write(2, b"hidden\\n")
                raise KeyError("x")
        except KeyError:
            pass
        assert cap.text == "hidden\\n", cap.text
        os.write(2, b"visible\\n")
        """
    r = run_py(code, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "visible\n", r.stderr


@pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed")
def test_real_tensorflow_import_is_quiet(tmp_path):
    """The real TensorFlow through get_backend: no absl/cudart/cuInit lines, ops still run.
    (torch is kept out of this process: it only costs time here.)"""
    code = """
        import sys
        from resty import backends as B
        B.prepare_imports = lambda *a, **k: None
        B.get_backend("tf")
        import tensorflow as tf
        print(float(tf.reduce_sum(tf.ones((2, 2)))))
        """
    r = run_py(code, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4.0"
    assert not [ln for ln in r.stderr.splitlines() if any(n in ln for n in NOISE)], r.stderr


# --------------------------------------------------------------------------- 2. broken TF
BROKEN_TF = """
    import os
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n"
                b"E0000 00:00:1795918388.913581    8494 dso_loader.cc:52] could not load libcudart.so.12\\n")
    raise ImportError("libtensorflow_framework.so.2: cannot open shared object file: No such file or "
                      "directory\\nFailed to load the native TensorFlow runtime.")
    """


def test_broken_tensorflow_is_one_line(tmp_path):
    fake = fake_packages(tmp_path / "fake", BROKEN_TF)
    model = W.save_weights(tmp_path / "m.safetensors", W.random_transformer(SMALL, 0))
    r = run_py(f"""
        import sys
        from resty import cli
        sys.exit(cli.main(["convert", {str(model)!r}, "--to", "tf", "-o", "o.weights.h5"]))
        """, fake, cwd=tmp_path)
    line = one_line(r.stderr)
    assert r.returncode == 2, r.stderr
    assert line.startswith("resty: error: TensorFlow is installed but failed to import "
                           "(libtensorflow_framework.so.2: cannot open shared object file"), line
    assert line.endswith("; reinstall it: pip install 'resty[tf]'"), line
    assert "could not load libcudart.so.12" in line        # what TF printed, its relevant line
    assert not (tmp_path / "o.weights.h5").exists()


def test_broken_framework_other_exception(monkeypatch):
    """Not only ImportError: e.g. a protobuf mismatch raises TypeError inside TF's import."""
    real = B.importlib.import_module

    def fake_import(name, *a, **k):
        if name == "tensorflow":
            raise TypeError("Descriptors cannot be created directly.\nmore text")
        return real(name, *a, **k)

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(B.importlib, "import_module", fake_import)
    monkeypatch.setattr(B, "_has_module", lambda m: True)
    with pytest.raises(BackendUnavailableError) as e:
        B._import_frameworks(B.BACKENDS["tf"], quiet=False)
    assert str(e.value) == ("TensorFlow is installed but failed to import (TypeError: Descriptors cannot be "
                            "created directly.); reinstall it: pip install 'resty[tf]'")


def test_relevant_line():
    assert B._relevant_line(TF_CHATTER + CUINIT) == ("failed call to cuInit: INTERNAL: CUDA error: Failed call "
                                                     "to cuInit: UNKNOWN ERROR (303)")
    assert B._relevant_line(TF_CHATTER) == ""
    assert B._relevant_line(TF_CHATTER + "Illegal instruction\n") == "Illegal instruction"


# --------------------------------------------------------------------------- 3. .pth without the torch backend
def test_pth_read_with_torch_when_no_reader_registered(homes, vgg16_pth):
    path, state = vgg16_pth
    ws = W.resolve_weights(str(path), "vgg16")
    assert ws.architecture == "vgg16" and ws.preprocessing.name == "torchvision"
    for l in vgg_layers("vgg16"):
        if l.kind == "conv":
            np.testing.assert_array_equal(ws.tensors[f"{l.name}.weight"], state[f"features.{l.index}.weight"])
    # The tf backend's VGG takes the file too (torch was imported first by get_backend).
    if HAS_TF:
        rt = B.get_backend("tf")
        v = rt.VGGFeatures("vgg16", str(path), layers=["relu1_2"], device="cpu")
        assert v.preprocessing.name == "torchvision"


def test_pth_without_torch_says_so(homes, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "_torch_installed", lambda: False)
    p = tmp_path / "vgg16.pth"
    p.write_bytes(b"\x80\x02 a pickle")
    with pytest.raises(WeightsError) as e:
        W.resolve_weights(str(p), "vgg16")
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    assert "reading a .pth needs torch" in msg and "pip install torch" in msg and "resty weights import" in msg
    assert "resty_torch" not in msg


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed")
def test_pth_reader_refuses_pickled_code(homes, tmp_path):
    """The fallback reader is torch.load(weights_only=True): a pickle that runs code is refused."""
    import torch

    marker = tmp_path / "ran"
    p = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Evil(marker)}, p)
    with pytest.raises(WeightsError, match="not a weights-only PyTorch file .* was not loaded"):
        W.resolve_weights(str(p), "vgg16")
    assert not marker.exists()


# --------------------------------------------------------------------------- 4. file types on import
def test_import_names_unsupported_types(homes, tmp_path, monkeypatch, capsys):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello\n")
    with pytest.raises(WeightsError) as e:
        W.import_weights(txt)
    assert str(e.value) == (f"{txt}: unsupported weight file type; supported: .safetensors, "
                            "torchvision .pth/.pt, Keras .h5/.weights.h5")
    keras_file = tmp_path / "model.keras"
    with zipfile.ZipFile(keras_file, "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"")
    assert W._sniff(keras_file) == "keras-archive"
    with pytest.raises(WeightsError) as e:
        W.import_weights(keras_file)
    assert str(e.value) == (f'{keras_file}: a .keras archive is not supported; save the weights with '
                            f'model.save_weights("x.weights.h5") and use that file')
    # A corrupt .safetensors still gets the safetensors message; --weights gets the same as import.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"xx")
    with pytest.raises(WeightsError, match="not a safetensors file"):
        W.import_weights(bad)
    with pytest.raises(WeightsError, match="unsupported weight file type"):
        W.resolve_weights(str(txt), "vgg19")
    # Through the CLI: one line, exit 2, and no torch backend asked for a .keras zip.
    monkeypatch.setattr(cli, "_backend", lambda name: pytest.fail("no backend needed"))
    capsys.readouterr()
    for f, words in ((keras_file, "model.save_weights"), (txt, "unsupported weight file type")):
        rc = cli.main(["weights", "import", str(f)])
        line = one_line(capsys.readouterr().err)
        assert rc == 2 and line.startswith(f"resty: error: {f}: ") and words in line, line


def test_sniff_torch_zip(tmp_path, vgg16_pth):
    path, _ = vgg16_pth
    assert W._sniff(path) == "torch"
    renamed = tmp_path / "weights.bin"          # no suffix to go by: the zip's member names decide
    os.symlink(path, renamed)
    assert W._sniff(renamed) == "torch"
    fake_zip = tmp_path / "fake.pth"             # a damaged zip: the suffix decides
    fake_zip.write_bytes(b"PK\x03\x04 not really")
    assert W._sniff(fake_zip) == "torch"


# --------------------------------------------------------------------------- 5. VGG16 file for VGG19
def test_wrong_vgg_in_state_dict_and_h5(homes, tmp_path):
    with pytest.raises(WeightsError) as e:
        W.from_torchvision_state_dict(tv_state("vgg16"), "vgg19", where="vgg16.pth")
    assert str(e.value).startswith("vgg16.pth: holds vgg16 weights, expected vgg19"), e.value
    with pytest.raises(WeightsError) as e:
        W.from_torchvision_state_dict(tv_state("vgg19"), "vgg16", where="vgg19.pth")
    assert str(e.value).startswith("vgg19.pth: holds vgg19 weights, expected vgg16"), e.value
    h5 = tmp_path / "v16.weights.h5"
    write_keras3_h5(h5, "vgg16")
    assert W.from_keras_h5(h5).architecture == "vgg16"
    with pytest.raises(WeightsError) as e:
        W.resolve_weights(str(h5), "vgg19")
    assert str(e.value).startswith(f"{h5}: holds vgg16 weights, expected vgg19"), e.value
    h5b = tmp_path / "v19.weights.h5"
    write_keras3_h5(h5b, "vgg19")
    with pytest.raises(WeightsError) as e:
        W.from_keras_h5(h5b, "vgg16")
    assert str(e.value).startswith(f"{h5b}: holds vgg19 weights, expected vgg16"), e.value
    # A vgg19_bn-like dict is still "another model", not "vgg16".
    bn = dict(tv_state("vgg19"), **{"features.1.weight": np.ones(64, np.float32)})
    with pytest.raises(WeightsError, match="another model"):
        W.from_torchvision_state_dict(bn, "vgg19")


def test_wrong_vgg_pth_file(homes, vgg16_pth):
    path, _ = vgg16_pth
    with pytest.raises(WeightsError) as e:
        W.resolve_weights(str(path), "vgg19")
    assert str(e.value).startswith(f"{path}: holds vgg16 weights, expected vgg19"), e.value


# --------------------------------------------------------------------------- 6. import note
def test_import_of_own_file_says_how_to_use_it(homes, tmp_path, capsys):
    h5 = tmp_path / "finetuned.weights.h5"
    write_keras3_h5(h5, "vgg16")
    with pytest.warns(UserWarning, match="--weights imagenet will not use it") as rec:
        target = W.import_weights(h5)
    assert target.name == "vgg16-finetuned.safetensors"
    assert str(target) in str(rec[0].message) and "\n" not in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # named as an ImageNet source: "imagenet" finds it
        assert W.import_weights(h5, name="keras").name == "vgg16-keras.safetensors"
    assert W.resolve_weights("imagenet", "vgg16").source == f"keras {h5.name}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # a trained model: "imagenet" does not apply
        W.import_weights(W.save_weights(tmp_path / "style.safetensors", W.random_transformer(SMALL, 0)))
    # The CLI shows it as one "resty: warning:" line.
    rc = cli.main(["weights", "import", str(h5), "--name", "mine"])
    out, err = capsys.readouterr()
    assert rc == 0 and "imported" in out
    assert one_line(err) == (f"resty: warning: {h5.name} is not one of the published ImageNet vgg16 files, so "
                             f"--weights imagenet will not use it; pass it with --weights "
                             f"{homes / 'resty' / 'weights' / 'vgg16-mine.safetensors'}")
