"""FastStylizer(fast=True) on the CPU, both backends: stylize() runs the net through ONNX Runtime
(resty.onnx_runtime.CpuFastPath).  It must give the framework's own output (float32 rounding),
follow weight changes (training, loading), say which engine ran, and step aside, with the
reason, for options the ONNX graph does not honour."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")     # before tensorflow (import order matters, see README)
tf = pytest.importorskip("tensorflow")

import resty_tf  # noqa: E402
import resty_torch  # noqa: E402
from resty.presets import get as get_preset  # noqa: E402
from resty.weights import random_transformer  # noqa: E402

BACKENDS = {"torch": resty_torch, "tf": resty_tf}


def tiny(name="restynet", **kw):
    p = get_preset(name)
    return p.replace(transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1, **kw))


IMAGES = [np.random.default_rng(5).random((37, 50, 3), dtype=np.float32),
          np.random.default_rng(6).random((24, 24, 3), dtype=np.float32)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["restynet", "johnson2016"])
def test_fast_cpu_stylize_equals_framework(backend, preset):
    B = BACKENDS[backend]
    p = tiny(preset)
    fast = B.FastStylizer(p, weights="random:0", device="cpu", fast=True)
    ref = B.FastStylizer(p, weights="random:0", device="cpu")
    assert fast.inference_engine == "onnxruntime" and fast.fast_path_note is None
    assert ref.inference_engine != "onnxruntime"
    got, want = fast.stylize(IMAGES), ref.stylize(IMAGES)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == np.float32
        assert 0.0 <= g.min() and g.max() <= 1.0
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-5)
    # tiles and batches go through the same path
    np.testing.assert_allclose(fast.stylize(IMAGES[0], tile=24, overlap=8), ref.stylize(IMAGES[0], tile=24, overlap=8),
                               rtol=0, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_cpu_follows_weight_changes(backend):
    B = BACKENDS[backend]
    p = tiny()
    fast = B.FastStylizer(p, weights="random:0", device="cpu", fast=True)
    a = fast.stylize(IMAGES[0])
    b = fast.stylize(IMAGES[0])
    assert fast._cpu_fast.builds == 1          # unchanged weights: the session is reused
    np.testing.assert_array_equal(a, b)
    fast.net.load_canonical(random_transformer(p.transformer, 9).tensors)
    c = fast.stylize(IMAGES[0])
    assert fast._cpu_fast.builds == 2
    ref = B.FastStylizer(p, weights="random:0", device="cpu", transformer_weights=random_transformer(p.transformer, 9))
    np.testing.assert_allclose(c, ref.stylize(IMAGES[0]), rtol=0, atol=2e-5)
    assert np.abs(c - a).max() > 1e-2


def test_fast_cpu_same_pixels_in_both_backends():
    p = tiny()
    ws = random_transformer(p.transformer, 3)
    a = resty_torch.FastStylizer(p, weights="random:0", device="cpu", fast=True, transformer_weights=ws).stylize(IMAGES[0])
    b = resty_tf.FastStylizer(p, weights="random:0", device="cpu", fast=True, transformer_weights=ws).stylize(IMAGES[0])
    np.testing.assert_array_equal(a, b)        # one ONNX graph from the same canonical weights


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_cpu_steps_aside_with_a_reason(backend):
    B = BACKENDS[backend]
    f = B.FastStylizer(tiny(), weights="random:0", device="cpu", fast=True, precision="bf16")
    assert f.inference_engine != "onnxruntime" and "precision='bf16'" in f.fast_path_note
    f = B.FastStylizer(tiny(norm="batch"), weights="random:0", device="cpu", fast=True)
    assert f.inference_engine != "onnxruntime" and "norm='batch'" in f.fast_path_note
    assert f.stylize(IMAGES[1]).shape == IMAGES[1].shape        # and still stylizes


def test_fast_cpu_training_stays_in_torch_then_serves_new_weights(tmp_path):
    from skimage import data
    p = tiny().replace(training=tiny().training.replace(image_size=32, batch_size=2))
    imgs = [data.astronaut()[::8, ::8], data.coffee()[::8, ::8]]
    f = resty_torch.FastStylizer(p, weights="random:0", device="cpu", fast=True)
    before = f.stylize(IMAGES[1])
    f.fit(imgs, data.chelsea()[::8, ::8], steps=2, seed=0)
    after = f.stylize(IMAGES[1])
    assert f.inference_engine == "onnxruntime" and f._cpu_fast.builds == 2
    f.net.eval()
    with torch.inference_mode():
        want = f.net(torch.from_numpy(IMAGES[1].transpose(2, 0, 1)[None].copy())).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(after, want, rtol=0, atol=2e-5)
    assert np.abs(after - before).max() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_on_a_cpu_without_it_warns(backend, monkeypatch):
    import warnings
    from resty import runtime
    B = BACKENDS[backend]
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx", "avx2"}))
    with pytest.warns(RuntimeWarning, match="emulated"):
        B.FastStylizer(tiny(), weights="random:0", device="cpu", precision="bf16")
    with pytest.warns(RuntimeWarning, match="emulated"):
        B.GatysStylizer("restynet", weights="random:0", device="cpu", precision="bf16")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        B.FastStylizer(tiny(), weights="random:0", device="cpu", precision="bf16")
