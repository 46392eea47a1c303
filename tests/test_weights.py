"""Tests of resty.weights: canonical format, seeded random weights, importers, sources, cache.

No network: downloads go to file:// URLs or mocked downloaders; every framework cache
directory is redirected to a temporary folder.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

from resty import weights as W
from resty.weights import resolve as W_resolve, sources as W_sources
from resty.errors import OutputExistsError, WeightsError
from resty.specs import PREPROCESSING, TransformerSpec, VGGSpec, vgg_layers

REPO = Path(__file__).resolve().parents[1]
SMALL = TransformerSpec(channels=(4, 8, 8), residual_blocks=1)

# torchvision's VGG19 ``features`` positions of the 16 convs, written out independently of
# resty.specs so the test catches a wrong LayerDef.index.
TV_VGG19_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
VGG19_CONV = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv3_4",
              "conv4_1", "conv4_2", "conv4_3", "conv4_4", "conv5_1", "conv5_2", "conv5_3", "conv5_4"]
VGG19_CH = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)] + [(256, 256)] * 3 + \
           [(256, 512)] + [(512, 512)] * 7


def one_line_naming(exc_info, *names) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for n in names:
        assert str(n) in msg, (n, msg)
    return msg


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty Resty/Keras/torch caches, offline, no backend hooks."""
    d = {k: tmp_path / k for k in ("resty", "keras", "torch")}
    for v in d.values():
        v.mkdir()
    monkeypatch.setenv("RESTY_HOME", str(d["resty"]))
    monkeypatch.setenv("KERAS_HOME", str(d["keras"]))
    monkeypatch.setenv("TORCH_HOME", str(d["torch"]))
    monkeypatch.setenv("RESTY_OFFLINE", "1")
    monkeypatch.setattr(W, "_DOWNLOADERS", [])
    monkeypatch.setattr(W, "_PTH_READER", None)
    monkeypatch.setattr(W, "_torch_installed", lambda: False)   # the torch backend's reader out of reach too
    return d


# --------------------------------------------------------------------------- fake files
@functools.lru_cache(maxsize=None)
def cached_random_vgg(arch, seed, prep="torchvision"):
    """random_vgg for tests that only need some VGG weight set (treat as read-only)."""
    return _RANDOM_VGG(arch, seed, prep)


_RANDOM_VGG = W.random_vgg     # bound now: a test below replaces resolve_weights' random_vgg with a spy


@functools.lru_cache(maxsize=None)
def torchvision_vgg19_state(seed=0):
    """A torchvision-style VGG19 state dict with the real keys and shapes, asymmetric kernels.

    The classifier's real shapes are kept through zero-stride views (no memory)."""
    rng = np.random.default_rng(seed)
    state = {}
    for idx, (cin, cout) in zip(TV_VGG19_CONV_INDEX, VGG19_CH):
        state[f"features.{idx}.weight"] = rng.random((cout, cin, 3, 3), dtype=np.float32) - 0.5
        state[f"features.{idx}.bias"] = rng.random(cout, dtype=np.float32) - 0.5
    for i, (o, n) in {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}.items():
        state[f"classifier.{i}.weight"] = np.broadcast_to(np.float32(0), (o, n))
        state[f"classifier.{i}.bias"] = np.zeros(o, np.float32)
    return state


@functools.lru_cache(maxsize=None)
def keras_vgg_hwio(arch="vgg19", seed=1):
    """{block{b}_conv{i}: (kernel (kh, kw, in, out), bias)} with asymmetric random kernels
    (cached: copy before changing it)."""
    rng = np.random.default_rng(seed)
    out = {}
    for l in vgg_layers(arch):
        if l.kind == "conv":
            key = f"block{l.block}_conv{l.name.split('_')[1]}"
            out[key] = (rng.random((3, 3, l.in_channels, l.out_channels), dtype=np.float32) - 0.5,
                        rng.random(l.out_channels, dtype=np.float32) - 0.5)
    return out


def write_keras_h5(path, layers, layout="legacy"):
    """Write layers as Keras would: 'legacy' (keras-applications notop files: W_1:0 / b_1:0),
    'keras2' (block1_conv1/block1_conv1/kernel:0) or 'keras3' (.weights.h5: layers/conv2d_N/vars)."""
    with h5py.File(path, "w") as f:
        names = list(layers)
        if layout == "keras3":
            f.create_group("layers/input_layer/vars").attrs["name"] = "input_layer"
            for n, key in enumerate(names):
                g = f.create_group(f"layers/conv2d{'_' + str(n) if n else ''}/vars")
                g.attrs["name"] = key
                g["0"], g["1"] = layers[key]
            f.create_group("layers/max_pooling2d/vars").attrs["name"] = "block1_pool"
            f.create_group("vars")
            return
        f.attrs["layer_names"] = np.array([b"input_1"] + [k.encode() for k in names] + [b"block5_pool"])
        f.attrs["backend"] = b"tensorflow"
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for key in names:
            g = f.create_group(key)
            k, b = layers[key]
            if layout == "legacy":
                g.attrs["weight_names"] = np.array([f"{key}_W_1:0".encode(), f"{key}_b_1:0".encode()])
                g[f"{key}_W_1:0"], g[f"{key}_b_1:0"] = k, b
            else:
                g.attrs["weight_names"] = np.array([f"{key}/kernel:0".encode(), f"{key}/bias:0".encode()])
                g[f"{key}/kernel:0"], g[f"{key}/bias:0"] = k, b
        f.create_group("block5_pool").attrs["weight_names"] = np.array([], dtype="S1")


# --------------------------------------------------------------------------- format
def test_round_trip_with_metadata(tmp_path):
    for ws in (cached_random_vgg("vgg16", 7, "caffe"), W.random_transformer(SMALL, 4)):
        ws = W.WeightSet(ws.tensors, ws.architecture, ws.source, ws.preprocessing, ws.spec,
                         {"step": 7, "note": "x"})
        p = W.save_weights(tmp_path / f"{ws.architecture}.safetensors", ws)
        back = W.load_weights(p, expect=ws.architecture)
        assert back.fingerprint() == ws.fingerprint()
        assert set(back.tensors) == set(ws.tensors) == set(ws.shapes)
        assert (back.architecture, back.source, back.extra) == (ws.architecture, ws.source, ws.extra)
        assert back.preprocessing == ws.preprocessing and back.spec == ws.spec
        meta = W.read_metadata(p)
        assert meta["format"] == "resty-weights" and meta["format_version"] == "1"
        assert meta["layout"] == "OIHW (conv), IOHW (transposed conv)"
        assert json.loads(meta["extra"]) == {"step": 7, "note": "x"}
        if ws.spec is not None:
            assert TransformerSpec.from_json(meta["spec"]) == SMALL
        else:
            assert json.loads(meta["preprocessing"])["name"] == "caffe"
        assert back.tensors["conv_out.weight" if ws.spec else "conv1_1.weight"].flags.writeable
    # The transposed-conv layout is what transformer_param_shapes says (IOHW).
    spec = SMALL.replace(upsampling="transposed_conv")
    ws = W.random_transformer(spec, 0)
    assert ws.tensors["up1.weight"].shape == (8, 8, 3, 3) and ws.tensors["up2.weight"].shape == (8, 4, 3, 3)
    p = W.save_weights(tmp_path / "t.safetensors", ws)
    assert W.load_weights(p, expect=spec).fingerprint() == ws.fingerprint()
    with pytest.raises(WeightsError) as e:
        W.load_weights(p, expect=SMALL)
    one_line_naming(e, p, "upsampling")
    with pytest.raises(WeightsError) as e:
        W.load_weights(p, expect="vgg19")
    one_line_naming(e, p, "transformer", "vgg19")


def test_save_refuses_overwrite(tmp_path):
    ws = W.random_transformer(SMALL, 0)
    p = W.save_weights(tmp_path / "w.safetensors", ws)
    before = p.read_bytes()
    with pytest.raises(OutputExistsError):
        W.save_weights(p, W.random_transformer(SMALL, 1))
    assert p.read_bytes() == before
    W.save_weights(p, W.random_transformer(SMALL, 1), overwrite=True)
    assert W.load_weights(p).fingerprint() == W.random_transformer(SMALL, 1).fingerprint()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["w.safetensors"]   # no temporaries left


def test_save_validates(tmp_path):
    ws = W.random_transformer(SMALL, 0)
    bad = dict(ws.tensors)
    bad["conv_in.weight"] = bad["conv_in.weight"][:, :, :, :8]
    with pytest.raises(WeightsError):
        W.save_weights(tmp_path / "bad.safetensors", W.WeightSet(bad, "transformer", "x", spec=SMALL))
    assert not (tmp_path / "bad.safetensors").exists()


def _raw_resty_file(path, tensors, **meta_over):
    meta = W.random_transformer(SMALL, 0).metadata()
    meta.update(meta_over)
    meta = {k: v for k, v in meta.items() if v is not None}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape", "garbage", "empty", "not_resty",
                                  "no_file", "nan", "bad_spec", "version", "int_dtype"])
def test_load_rejects(tmp_path, case):
    good = dict(W.random_transformer(SMALL, 0).tensors)
    p = tmp_path / f"{case}.safetensors"
    expect_words = []
    if case == "missing":
        del good["res1.conv2.norm.bias"]
        _raw_resty_file(p, good)
        expect_words = ["missing", "res1.conv2.norm.bias"]
    elif case == "unexpected":
        good["extra.weight"] = np.zeros(3, np.float32)
        _raw_resty_file(p, good)
        expect_words = ["unexpected", "extra.weight"]
    elif case == "shape":
        good["down1.weight"] = np.zeros((8, 4, 3, 2), np.float32)
        _raw_resty_file(p, good)
        expect_words = ["down1.weight", "(8, 4, 3, 2)", "(8, 4, 3, 3)"]
    elif case == "garbage":
        p.write_bytes(os.urandom(1000))
        expect_words = ["safetensors"]
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "not_resty":
        save_file({"a": np.zeros(2, np.float32)}, str(p))
        expect_words = ["not a Resty weight file", "resty weights import"]
    elif case == "no_file":
        expect_words = ["no such file"]
    elif case == "nan":
        good["up1.bias" if "up1.bias" in good else "conv_out.bias"][0] = np.nan
        _raw_resty_file(p, good)
        expect_words = ["NaN"]
    elif case == "bad_spec":
        _raw_resty_file(p, good, spec=json.dumps({"channels": [4, 8, 8], "bogus": 1}))
        expect_words = ["bogus"]
    elif case == "version":
        _raw_resty_file(p, good, format_version="2")
        expect_words = ["format_version"]
    elif case == "int_dtype":
        good["conv_in.weight"] = good["conv_in.weight"].astype(np.int32)
        _raw_resty_file(p, good)
        expect_words = ["int32"]
    with pytest.raises(WeightsError) as e:
        W.load_weights(p)
    one_line_naming(e, p, *expect_words)


# --------------------------------------------------------------------------- random weights
_SNIPPET = textwrap.dedent("""
    import sys, hashlib
    from resty import weights as W
    from resty.specs import TransformerSpec
    h = hashlib.sha256()
    for ws in (W.random_vgg("vgg16", 7, "caffe"),
               W.random_transformer(TransformerSpec(upsampling="transposed_conv", norm="batch",
                                                    conv_bias_before_norm=True), 7)):
        for name in sorted(ws.tensors):
            h.update(name.encode()); h.update(ws.tensors[name].tobytes())
    print(h.hexdigest())
    print(sorted(m for m in ("torch", "tensorflow", "keras") if m in sys.modules))
""")


def test_random_weights_identical_across_processes():
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", _SNIPPET], stdout=subprocess.PIPE, text=True, env=env,
                              cwd=str(REPO)) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split("\n") for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0][0] == outs[1][0] and len(outs[0][0]) == 64
    assert outs[0][1] == "[]"     # generating weights imports no framework
    # ... and in this process too.
    h = hashlib.sha256()
    for ws in (cached_random_vgg("vgg16", 7, "caffe"),
               W.random_transformer(TransformerSpec(upsampling="transposed_conv", norm="batch",
                                                    conv_bias_before_norm=True), 7)):
        assert all(t.dtype == np.float32 for t in ws.tensors.values())
        for name in sorted(ws.tensors):
            h.update(name.encode())
            h.update(ws.tensors[name].tobytes())
    assert h.hexdigest() == outs[0][0]


def test_random_weights_depend_on_seed_and_name_only():
    a, b = W.random_transformer(SMALL, 0), W.random_transformer(SMALL, 1)
    assert a.fingerprint() != b.fingerprint()
    assert not np.array_equal(a.tensors["conv_in.weight"], b.tensors["conv_in.weight"])
    assert a.source == "random:0" and a.fingerprint() == W.random_transformer(SMALL, 0).fingerprint()
    # Per-name seeding: adding residual blocks leaves the shared parameters unchanged.
    big = W.random_transformer(SMALL.replace(residual_blocks=3), 0)
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], big.tensors[name])
    # Different parameters of one set are not copies of each other.
    assert not np.array_equal(a.tensors["res1.conv1.weight"], a.tensors["res1.conv2.weight"])
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(WeightsError):
            W.random_transformer(SMALL, bad)
    with pytest.raises(WeightsError):
        W.random_vgg("vgg19", 0, "bgr")


@functools.lru_cache(maxsize=None)
def _photo(size):
    import skimage.data
    from PIL import Image
    img = Image.fromarray(skimage.data.astronaut()).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float64) / 255.0


def _preprocess(img01, prep):
    """RGB [0, 1] (H, W, 3) -> network input (3, H, W) float32, per Preprocessing's formula."""
    x = img01[..., list(prep.channel_index)] * prep.scale
    x = (x - np.asarray(prep.mean)) / np.asarray(prep.std)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _vgg_relu_rms(ws, x):
    """RMS of every relu layer of a max-pooling VGG (a small float32 im2col forward: the
    float64 oracle is exact but slow, and only magnitudes matter here)."""
    rms = {}
    for layer in vgg_layers(ws.architecture):
        if layer.kind == "conv":
            w, b = ws.tensors[f"{layer.name}.weight"], ws.tensors[f"{layer.name}.bias"]
            c, h, wd = x.shape
            xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
            cols = np.stack([xp[:, dy:dy + h, dx:dx + wd] for dy in range(3) for dx in range(3)], axis=1)
            x = (w.reshape(w.shape[0], c * 9) @ cols.reshape(c * 9, h * wd)).reshape(-1, h, wd) + b[:, None, None]
        elif layer.kind == "relu":
            x = np.maximum(x, 0)
            rms[layer.name] = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        else:
            c, h, wd = x.shape
            x = x[:, :h // 2 * 2, :wd // 2 * 2].reshape(c, h // 2, 2, wd // 2, 2).max(axis=(2, 4))
    return rms


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
@pytest.mark.parametrize("prep", ["torchvision", "caffe"])
def test_random_vgg_activation_scale(arch, prep):
    """Activations of a natural image neither vanish nor explode through relu5_x, and are O(1)
    for both preprocessings (conv1_1 undoes the caffe input's 255 scale)."""
    ws = cached_random_vgg(arch, 7, prep)
    assert ws.preprocessing == PREPROCESSING[prep]
    rms = _vgg_relu_rms(ws, _preprocess(_photo(48), ws.preprocessing))     # relu5_x at 3x3
    assert len(rms) == (13 if arch == "vgg16" else 16)
    assert 0.3 < rms["relu1_1"] < 3, rms
    for name, r in rms.items():
        assert 0.1 <= r / rms["relu1_1"] <= 10, (name, rms)


def test_vgg_forward_helper_matches_oracle():
    """The fast forward above agrees with resty.reference (so the scale check measures VGG)."""
    reference = pytest.importorskip("resty.reference")
    vgg = cached_random_vgg("vgg16", 7, "caffe")
    img = _photo(16)
    x = _preprocess(img, vgg.preprocessing)
    ours = _vgg_relu_rms(vgg, x)
    feats = reference.vgg_features(reference.preprocess(img, vgg.preprocessing), vgg.tensors,
                                   VGGSpec("vgg16", "max"), ["relu1_1", "relu2_2", "relu3_3"])
    for name, f in feats.items():
        np.testing.assert_allclose(ours[name], np.sqrt(np.mean(f ** 2)), rtol=1e-4)


@pytest.mark.parametrize("spec", [
    TransformerSpec(),
    TransformerSpec(upsampling="transposed_conv", output_activation="tanh"),
    TransformerSpec(norm="batch", conv_bias_before_norm=True, output_activation="sigmoid", input_scale=1.0),
], ids=["none", "tanh", "batch-sigmoid"])
def test_random_transformer_output_range(spec):
    """A photo through random transformer weights comes out mid-grey with some contrast:
    neither saturated (tanh/sigmoid) nor far outside [0, 1] (no activation)."""
    reference = pytest.importorskip("resty.reference")
    y = reference.transformer_forward(_photo(32), W.random_transformer(spec, 0).tensors, spec)
    assert 0.3 < y.mean() < 0.75 and 0.05 < y.std() < 0.45, (y.mean(), y.std())
    assert np.mean((y < -0.5) | (y > 1.5)) < 0.01


# --------------------------------------------------------------------------- layouts
def test_layout_conversions():
    w = np.arange(5 * 4 * 3 * 2, dtype=np.float32).reshape(5, 4, 3, 2)        # O, I, kh, kw
    k = W.to_keras_kernel(w)
    assert k.shape == (3, 2, 4, 5) and k[2, 1, 3, 4] == w[4, 3, 2, 1]
    np.testing.assert_array_equal(W.from_keras_kernel(k), w)
    t = np.arange(4 * 5 * 3 * 2, dtype=np.float32).reshape(4, 5, 3, 2)        # I, O, kh, kw
    kt = W.iohw_to_keras_transposed(t)
    assert kt.shape == (3, 2, 5, 4) and kt[2, 1, 4, 3] == t[3, 4, 2, 1]       # (kh, kw, out, in)
    np.testing.assert_array_equal(W.keras_transposed_to_iohw(kt), t)
    with pytest.raises(ValueError):
        W.to_keras_kernel(np.zeros((3, 3)))


# --------------------------------------------------------------------------- importers
def test_from_torchvision_state_dict():
    state = torchvision_vgg19_state()
    ws = W.from_torchvision_state_dict(state, "vgg19", source="torchvision test")
    assert ws.architecture == "vgg19" and ws.preprocessing == PREPROCESSING["torchvision"]
    assert ws.source == "torchvision test"
    for idx, name in zip(TV_VGG19_CONV_INDEX, VGG19_CONV):
        np.testing.assert_array_equal(ws.tensors[f"{name}.weight"], state[f"features.{idx}.weight"])
        np.testing.assert_array_equal(ws.tensors[f"{name}.bias"], state[f"features.{idx}.bias"])
    # One asymmetric element, by hand: conv3_2 is features.12, already OIHW.
    assert ws.tensors["conv3_2.weight"][5, 7, 0, 2] == state["features.12.weight"][5, 7, 0, 2]
    assert ws.tensors["conv3_2.weight"][5, 7, 0, 2] != ws.tensors["conv3_2.weight"][5, 7, 2, 0]
    assert W.from_torchvision_state_dict(state).architecture == "vgg19"      # detected
    with pytest.raises(WeightsError) as e:
        W.from_torchvision_state_dict(state, "vgg16")
    one_line_naming(e, "features.")
    broken = dict(state)
    del broken["features.34.bias"]
    with pytest.raises(WeightsError) as e:
        W.from_torchvision_state_dict(broken, "vgg19")
    one_line_naming(e, "features.34.bias", "conv5_4.bias")
    broken = dict(state, **{"features.2.weight": state["features.2.weight"].transpose(0, 1, 3, 2)[:, :, :2]})
    with pytest.raises(WeightsError) as e:
        W.from_torchvision_state_dict(broken, "vgg19")
    one_line_naming(e, "features.2.weight")
    bn = dict(state, **{"features.1.weight": np.ones(64, np.float32)})     # vgg19_bn-like
    with pytest.raises(WeightsError) as e:
        W.from_torchvision_state_dict(bn, "vgg19")
    one_line_naming(e, "features.1.weight")


@pytest.mark.parametrize("layout", ["legacy", "keras2", "keras3"])
def test_from_keras_h5(tmp_path, layout):
    arch = "vgg19" if layout == "legacy" else "vgg16"
    layers = keras_vgg_hwio(arch)
    p = tmp_path / f"{layout}.h5"
    write_keras_h5(p, layers, layout)
    ws = W.from_keras_h5(p)                                  # arch detected from the conv count
    assert ws.architecture == arch and ws.preprocessing == PREPROCESSING["caffe"]
    hwio, bias = layers["block3_conv2"]
    o, i, kh, kw = 5, 7, 0, 2
    assert ws.tensors["conv3_2.weight"].shape == (256, 256, 3, 3)
    assert ws.tensors["conv3_2.weight"][o, i, kh, kw] == hwio[kh, kw, i, o]
    assert ws.tensors["conv3_2.weight"][o, i, kh, kw] != hwio[kw, kh, i, o]
    np.testing.assert_array_equal(ws.tensors["conv3_2.bias"], bias)
    np.testing.assert_array_equal(ws.tensors["conv1_1.weight"], layers["block1_conv1"][0].transpose(3, 2, 0, 1))
    with pytest.raises(WeightsError) as e:
        W.from_keras_h5(p, "vgg16" if arch == "vgg19" else "vgg19")
    one_line_naming(e, p)


def test_from_keras_h5_rejects(tmp_path):
    layers = dict(keras_vgg_hwio("vgg16"))
    layers["block2_conv1"] = (layers["block2_conv1"][0].transpose(0, 1, 3, 2), layers["block2_conv1"][1])
    p = tmp_path / "swapped.h5"
    write_keras_h5(p, layers)
    with pytest.raises(WeightsError) as e:
        W.from_keras_h5(p, "vgg16")
    one_line_naming(e, p, "block2_conv1", "(3, 3, 128, 64)")
    q = tmp_path / "junk.h5"
    q.write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsError) as e:
        W.from_keras_h5(q, "vgg16")
    one_line_naming(e, q)


# --------------------------------------------------------------------------- resolution
def test_resolve_random_and_bad_strings(tmp_path, homes, monkeypatch):
    calls = []
    real = W_resolve.random_vgg
    monkeypatch.setattr(W_resolve, "random_vgg", lambda *a: calls.append(a) or cached_random_vgg("vgg16", 7, "caffe"))
    W.resolve_weights("random:5", "vgg16")
    assert calls == [("vgg16", 5, "torchvision")]
    monkeypatch.setattr(W_resolve, "random_vgg", real)
    assert W.resolve_weights(" random:7 ", "vgg16", preprocessing="caffe").fingerprint() == \
        cached_random_vgg("vgg16", 7, "caffe").fingerprint()
    t = W.resolve_weights("random:2", "transformer", spec=SMALL)
    assert t.spec == SMALL and t.fingerprint() == W.random_transformer(SMALL, 2).fingerprint()
    cases = {
        "random:x": "random:0", "random:-1": "random:0", "random": "random:0",
        "imagenet:caffe2": "unknown ImageNet source", "bogus": "imagenet:keras",
        "": "random:SEED", str(tmp_path / "missing.safetensors"): "no such weight file",
    }
    for text, words in cases.items():
        with pytest.raises(WeightsError) as e:
            W.resolve_weights(text, "vgg19")
        one_line_naming(e, words)
    with pytest.raises(WeightsError):
        W.resolve_weights("imagenet", "transformer")
    with pytest.raises(WeightsError):
        W.resolve_weights("random:0", "vgg11")
    with pytest.raises(WeightsError):
        W.resolve_weights(3, "vgg19")
    pth = tmp_path / "vgg19-dcbb9e9d.pth"
    pth.write_bytes(b"PK\x03\x04 pretend zip")
    with pytest.raises(WeightsError) as e:
        W.resolve_weights(str(pth), "vgg19")
    one_line_naming(e, pth, "torch", "resty weights import")


def test_resolve_path_and_preprocessing_mismatch(tmp_path, homes):
    p = W.save_weights(tmp_path / "v.safetensors", cached_random_vgg("vgg16", 7, "caffe"))
    assert W.resolve_weights(p, "vgg16").source == "random:7"
    assert W.resolve_weights(str(p), "vgg16", preprocessing="caffe").preprocessing.name == "caffe"
    with pytest.raises(WeightsError) as e:
        W.resolve_weights(p, "vgg16", preprocessing="torchvision")
    one_line_naming(e, p, "caffe", "never mix")
    with pytest.raises(WeightsError) as e:
        W.resolve_weights(p, "vgg19")
    one_line_naming(e, p, "vgg16", "vgg19")
    h5 = tmp_path / "mine.h5"
    write_keras_h5(h5, keras_vgg_hwio("vgg16"))
    assert W.resolve_weights(h5, "vgg16").preprocessing.name == "caffe"


def test_resolve_imagenet_offline_error(homes):
    with pytest.raises(WeightsError) as e:
        W.resolve_weights("imagenet", "vgg19")
    msg = one_line_naming(e, "VGG19", W.IMAGENET_SOURCES["vgg19"]["keras"].url, "resty weights import")
    assert "offline" in msg
    with pytest.raises(WeightsError) as e:
        W.resolve_weights("imagenet:torchvision", "vgg16")
    one_line_naming(e, "https://download.pytorch.org/models/vgg16-397923af.pth", "torch")
    assert not list((homes["resty"]).rglob("*.safetensors"))


def test_resolve_imagenet_download_fails_one_line(homes, monkeypatch):
    monkeypatch.setenv("RESTY_OFFLINE", "0")
    calls = []

    def no_network(url, dest, sha256_prefix=None, md5=None, **kw):
        calls.append(url)
        raise WeightsError(f"{url}: download failed (no route to host)")

    monkeypatch.setattr(W_sources, "download", no_network)
    with pytest.raises(WeightsError) as e:
        W.resolve_weights("imagenet", "vgg16")
    one_line_naming(e, "could not be downloaded", "no route to host", "resty weights import")
    assert calls == [W.IMAGENET_SOURCES["vgg16"]["keras"].url]


def test_resolve_imagenet_from_keras_cache(homes):
    entry = W.IMAGENET_SOURCES["vgg16"]["keras"]
    raw = homes["keras"] / "models" / entry.filename
    raw.parent.mkdir()
    layers = keras_vgg_hwio("vgg16")
    write_keras_h5(raw, layers)
    with pytest.warns(UserWarning, match="MD5"):        # not the published file: used, with a warning
        ws = W.resolve_weights("imagenet", "vgg16")
    assert ws.preprocessing.name == "caffe" and ws.extra["verified"] is False
    assert ws.tensors["conv4_3.weight"][1, 2, 2, 0] == layers["block4_conv3"][0][2, 0, 2, 1]
    cached = homes["resty"] / "weights" / "vgg16-keras.safetensors"
    assert cached.exists()
    raw.unlink()                                        # now served from the canonical cache
    again = W.resolve_weights("imagenet:keras", "vgg16", preprocessing="caffe")
    assert again.fingerprint() == ws.fingerprint()
    assert [c["name"] for c in W.list_cached()] == ["vgg16-keras"]
    with pytest.raises(WeightsError):                   # torchvision preprocessing -> torchvision source
        W.resolve_weights("imagenet", "vgg16", preprocessing="torchvision")


def test_resolve_imagenet_from_torch_cache_with_reader(homes, monkeypatch):
    entry = W.IMAGENET_SOURCES["vgg19"]["torchvision"]
    raw = homes["torch"] / "hub" / "checkpoints" / entry.filename
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"PK\x03\x04 stands in for a torch zip")
    with pytest.raises(WeightsError) as e:               # found, but nothing can read it
        W.resolve_weights("imagenet", "vgg19")
    one_line_naming(e, raw, "torch")
    state = torchvision_vgg19_state()
    W.register_pth_reader(lambda path: state)            # what resty_torch registers
    with pytest.warns(UserWarning, match="SHA-256"):
        ws = W.resolve_weights("imagenet", "vgg19")
    assert ws.preprocessing.name == "torchvision" and ws.source == f"torchvision {entry.filename}"
    np.testing.assert_array_equal(ws.tensors["conv5_4.weight"], state["features.34.weight"])
    assert (homes["resty"] / "weights" / "vgg19-torchvision.safetensors").exists()


def test_pth_without_registered_reader_uses_the_torch_backends(homes, monkeypatch, tmp_path):
    """No reader registered but torch installed: the torch backend's reader, loaded through the
    backend registry (the core imports no framework itself)."""
    from resty.weights import importers as W_importers

    state = torchvision_vgg19_state()
    asked = []

    class FakeWeightsIO:
        @staticmethod
        def read_pth(path):
            return state

    monkeypatch.setattr(W, "_torch_installed", lambda: True)
    monkeypatch.setattr(W_importers, "load_backend_module", lambda name: asked.append(name) or FakeWeightsIO)
    pth = tmp_path / "mine.pth"
    pth.write_bytes(b"PK\x03\x04 stands in for a torch zip")
    ws = W.resolve_weights(str(pth), "vgg19")
    assert asked == ["resty_torch.weights_io"]
    np.testing.assert_array_equal(ws.tensors["conv5_4.weight"], state["features.34.weight"])

    def unavailable(name):
        raise RuntimeError("the torch backend needs PyTorch:\n pip install 'resty[torch]'")

    monkeypatch.setattr(W_importers, "load_backend_module", unavailable)
    with pytest.raises(WeightsError) as e:
        W.resolve_weights(str(pth), "vgg19")
    one_line_naming(e, pth, "needs torch", "resty weights import")


def test_hook_state_read_and_replaced_through_the_package(monkeypatch):
    """The backend hooks live in the submodules that use them; the package reads and replaces
    them there, so patching ``resty.weights._PTH_READER`` (as the fixtures do) takes effect."""
    from resty.weights import importers as W_importers

    def reader(path):
        return {}

    monkeypatch.setattr(W, "_PTH_READER", None)
    W.register_pth_reader(reader)
    assert W._PTH_READER is reader and W_importers._pth_reader() is reader
    monkeypatch.setattr(W, "_PTH_READER", None)
    monkeypatch.setattr(W, "_torch_installed", lambda: False)
    assert W_importers._PTH_READER is None and W_importers._pth_reader() is None
    monkeypatch.setattr(W, "_DOWNLOADERS", [])
    W.register_downloader(reader)
    assert W_sources._DOWNLOADERS == [reader] and W._DOWNLOADERS is W_sources._DOWNLOADERS


def test_resolve_imagenet_through_registered_downloader(homes, monkeypatch, tmp_path):
    monkeypatch.setenv("RESTY_OFFLINE", "0")
    monkeypatch.setattr(W_sources, "download", lambda *a, **k: pytest.fail("urllib fallback must not run"))
    got = []

    def keras_like(source):
        got.append(source)
        dest = homes["keras"] / "models" / source.filename
        dest.parent.mkdir(exist_ok=True)
        write_keras_h5(dest, keras_vgg_hwio(source.arch), "keras2")
        return dest

    W.register_downloader(keras_like)
    with pytest.warns(UserWarning):
        ws = W.resolve_weights("imagenet", "vgg16")
    assert ws.architecture == "vgg16" and [s.source for s in got] == ["keras"]
    assert got[0].md5 == "6d6bbae143d832006294945121d1f1fc"


# --------------------------------------------------------------------------- downloads
def test_download_checks_hashes(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"some weights" * 1000)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    url = src.as_uri()
    out = tmp_path / "dl"
    p = W.download(url, out / f"vgg-{sha[:8]}.pth", sha256_prefix=sha[:8], md5=md5)
    assert p.read_bytes() == src.read_bytes()
    for kw in ({"sha256_prefix": "00000000"}, {"md5": "0" * 32}):
        dest = out / "bad.bin"
        with pytest.raises(WeightsError) as e:
            W.download(url, dest, **kw)
        one_line_naming(e, url, "deleted")
        assert not dest.exists()
    assert sorted(x.name for x in out.iterdir()) == [p.name]          # no partial files left
    with pytest.raises(WeightsError) as e:
        W.download((tmp_path / "nope.bin").as_uri(), out / "nope.bin")
    one_line_naming(e, "download failed")


def test_core_download_fallback_imports_and_cleans_up(homes, monkeypatch, tmp_path):
    """No registered downloader: urllib (here a file:// URL) fetches the Keras file, which is
    converted into the cache and the raw download removed."""
    monkeypatch.setenv("RESTY_OFFLINE", "0")
    served = tmp_path / "served.h5"
    write_keras_h5(served, keras_vgg_hwio("vgg16"))
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    fake = W.ImagenetSource("vgg16", "keras", served.as_uri(), W.IMAGENET_SOURCES["vgg16"]["keras"].filename,
                            None, md5, "caffe")
    monkeypatch.setitem(W.IMAGENET_SOURCES, "vgg16", {**W.IMAGENET_SOURCES["vgg16"], "keras": fake})
    ws = W.resolve_weights("imagenet", "vgg16")
    assert ws.architecture == "vgg16" and ws.extra["verified"] is True      # MD5 matched
    assert (homes["resty"] / "weights" / "vgg16-keras.safetensors").exists()
    assert not list((homes["resty"] / "downloads").iterdir())


# --------------------------------------------------------------------------- cache tools
def test_import_verify_list(homes, tmp_path):
    h5 = tmp_path / "finetuned.h5"
    write_keras_h5(h5, keras_vgg_hwio("vgg16"))
    p = W.import_weights(h5)
    assert p == homes["resty"] / "weights" / "vgg16-finetuned.safetensors"
    with pytest.raises(OutputExistsError):
        W.import_weights(h5)
    assert W.import_weights(h5, overwrite=True) == p
    canon = W.save_weights(tmp_path / "vgg16-keras.safetensors", cached_random_vgg("vgg16", 7, "caffe"))
    q = W.import_weights(canon)
    assert q.name == "vgg16-keras.safetensors"
    assert W.resolve_weights("imagenet", "vgg16").source == "random:7"      # found by "imagenet"
    info = W.verify(q)
    assert info["architecture"] == "vgg16" and info["source"] == "random:7"
    assert info["n_params"] == sum(int(np.prod(s)) for s in W.vgg_param_shapes("vgg16").values())
    assert info["n_params"] == 14714688                                     # VGG16 convs, as published
    assert sum(int(np.prod(s)) for s in W.vgg_param_shapes("vgg19").values()) == 20024384
    assert info["sha256"] == hashlib.sha256(q.read_bytes()).hexdigest()
    listed = {c["name"]: c for c in W.list_cached()}
    assert set(listed) == {"vgg16-finetuned", "vgg16-keras"}
    assert listed["vgg16-finetuned"]["architecture"] == "vgg16"
    (homes["resty"] / "weights" / "broken.safetensors").write_bytes(b"xx")
    assert "error" in {c["name"]: c for c in W.list_cached()}["broken"]
    with pytest.raises(WeightsError):
        W.import_weights(tmp_path / "absent.h5")


def test_cache_locations(monkeypatch, tmp_path):
    monkeypatch.delenv("RESTY_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    home = Path.home()
    assert W.cache_dir() == home / ".cache" / "resty"
    assert W.torch_cache_dir() == home / ".cache" / "torch" / "hub" / "checkpoints"
    assert W.keras_cache_dir() == home / ".keras" / "models"
    monkeypatch.setenv("RESTY_HOME", str(tmp_path))
    assert W.cached_weights_path("vgg19", "keras") == tmp_path / "weights" / "vgg19-keras.safetensors"
    assert W.IMAGENET_SOURCES["vgg19"]["torchvision"].filename == "vgg19-dcbb9e9d.pth"
    assert W.IMAGENET_SOURCES["vgg16"]["torchvision"].sha256_prefix == "397923af"
