"""One behavioural contract over both backends (docs/BACKEND_API.md).

Every test here runs once per backend (``resty_torch`` and ``resty_tf``, through
``resty.backends.get_backend``; a backend whose framework is not installed is skipped) and
asserts the SAME outcome in both: shapes, dtypes, history rows, summary keys, and, for errors,
the same exception type and the same one-line message.  A test that fails for one backend only
is a difference between the backends, to be fixed in the backend (or the shared core), never
by loosening the test.

Seeded random VGG weights ("random:0"), a VGG cut at relu3_1 and images of 20-64 px keep it fast.
RESTY_TEST_DEVICE=cuda runs the torch backend's stylizers on that GPU (TF32 off), as in
test_torch_backend.py; everything else runs on the CPU.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from resty import backends, presets
from resty import gatys as core_gatys
from resty import images as I
from resty.errors import BackendUnavailableError, ImageError, OutputExistsError, RestyError, WeightsError

BACKENDS = ("torch", "tf")
TERMS = {"total", "content", "style", "tv"}
HISTORY_KEYS = {"step", "size"} | TERMS
FIT_HISTORY_KEYS = {"step"} | TERMS
SUMMARY_KEYS = {"steps", "start_step", "total_steps", "stopped", "history", "skipped", "skipped_count",
                "images_seen", "seconds", "images_per_second", "world_size", "rank", "checkpoint"}


def _backend(name):
    try:
        return backends.get_backend(name)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=BACKENDS)
def B(request):
    """The backend module under test (resty_torch or resty_tf)."""
    mod = _backend(request.param)
    if _device(mod).startswith("cuda"):
        mod.set_tf32(False)
    return mod


def _device(B) -> str:
    return os.environ.get("RESTY_TEST_DEVICE", "cpu") if B.__name__ == "resty_torch" else "cpu"


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _raises(exc_type, fn, *args, **kwargs) -> str:
    """Call ``fn``; it must raise exactly ``exc_type`` (or a subclass) with a one-line message.
    Returns the message."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg, f"not a one-line message: {msg!r}"
    return msg


def _image_error_message(src) -> str:
    """What the core's image loader says about ``src`` (both backends must say exactly that)."""
    with pytest.raises(ImageError) as info:
        I.load_image(src)
    return str(info.value)


# ============================================================================ Gatys
def _gatys_preset():
    """gatys2015, VGG cut at relu3_1 (5 of 16 convs), preset size 40, 3 Adam steps, no clamp
    (gatys2015's own setting: the image may leave [0, 1] between steps, what users see may not)."""
    p = presets.get("gatys2015")
    loss = p.loss.replace(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1", "relu3_1"),
                          style_layer_weights=(1 / 3,) * 3, tv_weight=1e-3, style_weight=1e4)
    g = p.gatys.replace(optimizer="adam", image_size=40, iterations=3, init="noise", clamp=False,
                        adam=p.gatys.adam.replace(lr=0.05), lbfgs=p.gatys.lbfgs.replace(max_iter=5, history_size=5))
    return p.replace(name="contract-gatys", loss=loss, gatys=g)


@pytest.fixture(scope="module")
def gatys(B):
    return B.GatysStylizer(_gatys_preset(), weights="random:0", device=_device(B))


@pytest.fixture(scope="module")
def gatys64(B):
    return B.GatysStylizer(_gatys_preset(), weights="random:0", device=_device(B), dtype="float64")


CONTENT = _rand(30, 20, 3, seed=1)     # H×W = 30×20: portrait, odd aspect
STYLE = _rand(24, 24, 3, seed=2)


def test_gatys_zero_iterations_returns_the_initial_image(gatys):
    out = gatys.stylize(CONTENT, STYLE, iterations=0, init="content", image_size=0)
    assert out.shape == (30, 20, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, CONTENT)
    assert gatys.history == []
    # At the output size (the preset's 40 px here): the content resized, nothing else.
    out = gatys.stylize(CONTENT, STYLE, iterations=0, init="content")
    want = core_gatys.prepare_content(CONTENT, 40)[1]
    assert out.shape == (40, 27, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.clip(want, 0, 1), atol=1e-6)
    assert gatys.history == []
    # Noise init: the core's noise image, in [0, 1].
    out = gatys.stylize(CONTENT, STYLE, iterations=0, init="noise", seed=3, image_size=0)
    want = core_gatys.init_image("noise", CONTENT, STYLE, 3, gatys.preset.gatys.noise_std)
    np.testing.assert_allclose(out, want, atol=1e-6)
    assert 0.0 <= out.min() and out.max() <= 1.0 and gatys.history == []


def test_gatys_negative_iterations_is_an_error(gatys):
    msg = _raises(RestyError, gatys.stylize, CONTENT, STYLE, iterations=-1)
    assert msg == "iterations: got -1; need an integer >= 0"


def test_gatys_unknown_optimizer_is_an_error(gatys):
    msg = _raises(RestyError, gatys.stylize, CONTENT, STYLE, iterations=1, optimizer="sgd")
    assert msg == "optimizer: got 'sgd'; allowed: 'adam', 'lbfgs'"


@pytest.mark.parametrize("image_size,hw", [(None, (40, 27)), (0, (30, 20)), (24, (24, 16))])
def test_gatys_image_size_rules(gatys, image_size, hw):
    """None: the preset's size (40); 0: the content's own size; N: longest side N."""
    assert core_gatys.output_size((30, 20), 40 if image_size is None else (image_size or None)) == hw
    out = gatys.stylize(CONTENT, STYLE, iterations=1, image_size=image_size)
    assert out.shape == hw + (3,) and out.dtype == np.float32
    assert [tuple(h["size"]) for h in gatys.history] == [hw]


def test_gatys_too_small_image_is_an_image_error(gatys):
    # style_scale=4: the style (resized to 4 × the output's longest side) is large enough, only the content is not
    msg = _raises(ImageError, gatys.stylize, _rand(3, 3, 3), STYLE, iterations=1, image_size=0, style_scale=4.0)
    assert msg == ("<content>: 3×3 px at this scale is too small for layer relu3_1 (needs sides >= 4 px); "
                   "use a larger image_size or fewer coarse scales")
    msg = _raises(ImageError, gatys.stylize, CONTENT, _rand(30, 30, 3), iterations=1, image_size=0,
                  style_scale=0.1)
    assert msg == ("<style>: 3×3 px at this scale is too small for layer relu3_1 (needs sides >= 4 px); "
                   "use a larger image_size or fewer coarse scales")


def test_gatys_missing_or_garbage_image_file(gatys, tmp_path):
    missing = tmp_path / "missing.png"
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all")
    for bad in (missing, garbage):
        want = _image_error_message(bad)
        assert _raises(ImageError, gatys.stylize, bad, STYLE, iterations=1) == want
        assert _raises(ImageError, gatys.stylize, CONTENT, str(bad), iterations=1) == want


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_invalid_dtype_is_an_error(B, dtype):
    want = (f"dtype: got {dtype!r}; allowed: 'float32', 'float64' "
            "(use precision='bf16'/'fp16' for mixed precision)")
    assert _raises(RestyError, B.GatysStylizer, _gatys_preset(), weights="random:0", device="cpu",
                   dtype=dtype) == want
    assert _raises(RestyError, B.FastStylizer, _fast_preset(), weights="random:0", device="cpu",
                   dtype=dtype) == want


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_gatys_callback_stops_at_step_k(gatys, optimizer):
    seen = []

    def cb(step, losses, image):
        seen.append(step)
        return step >= 3
    out = gatys.stylize(CONTENT, STYLE, iterations=10, optimizer=optimizer, image_size=0, callback=cb)
    assert seen == [1, 2, 3]
    assert [h["step"] for h in gatys.history] == [1, 2, 3]
    assert out.shape == (30, 20, 3) and out.dtype == np.float32


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gatys_callback_arguments(gatys, gatys64, optimizer, dtype):
    g = gatys if dtype == "float32" else gatys64
    calls = []
    g.stylize(CONTENT, STYLE, iterations=3, optimizer=optimizer, image_size=0,
              callback=lambda s, l, im: calls.append((s, l, im)))
    assert [c[0] for c in calls] == [1, 2, 3]
    for step, losses, image in calls:
        assert type(step) is int
        assert isinstance(losses, dict) and set(losses) == TERMS, sorted(losses)
        assert all(type(v) is float and np.isfinite(v) for v in losses.values())
        assert isinstance(image, np.ndarray) and image.shape == (30, 20, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
    # The callback sees what the history records.
    assert [c[1]["total"] for c in calls] == [h["total"] for h in g.history]


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_gatys_history_rows(gatys, optimizer):
    out = gatys.stylize(CONTENT, STYLE, iterations=4, optimizer=optimizer, image_size=0, seed=1)
    assert out.shape == (30, 20, 3) and out.dtype == np.float32 and np.isfinite(out).all()
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert [h["step"] for h in gatys.history] == [1, 2, 3, 4]
    for h in gatys.history:
        assert set(h) == HISTORY_KEYS, sorted(h)
        assert type(h["step"]) is int and list(h["size"]) == [30, 20]
        assert all(type(h[k]) is float and np.isfinite(h[k]) for k in TERMS)


def test_gatys_float64_returns_float32(gatys64):
    out = gatys64.stylize(CONTENT, STYLE, iterations=2, image_size=0)
    assert out.dtype == np.float32 and out.shape == (30, 20, 3)
    assert all(type(h["total"]) is float for h in gatys64.history)
    terms = gatys64.loss_terms(CONTENT, CONTENT, STYLE)
    assert set(terms) == TERMS and all(type(v) is float for v in terms.values())


def test_gatys_loss_terms(gatys):
    terms = gatys.loss_terms(CONTENT, CONTENT, STYLE)
    assert set(terms) == TERMS and all(type(v) is float and np.isfinite(v) for v in terms.values())
    assert terms["content"] == 0.0      # the image is the content
    assert abs(terms["total"] - (terms["content"] + terms["style"] + terms["tv"])) <= 1e-5 * terms["total"]


def test_gatys_preserve_color(gatys):
    """preserve_color=True is the core's colour transfer applied to the plain result
    (moved here from test_tf_backend.py, where it was resty_tf only)."""
    c = _rand(24, 32, 3, seed=5)
    plain = gatys.stylize(c, STYLE, iterations=3, optimizer="adam", seed=1, image_size=0)
    kept = gatys.stylize(c, STYLE, iterations=3, optimizer="adam", seed=1, image_size=0, preserve_color=True)
    assert kept.shape == (24, 32, 3) and kept.dtype == np.float32
    np.testing.assert_allclose(kept, I.preserve_color(plain, c), atol=1e-6)


def test_gatys_lowers_loss_and_keeps_odd_size(gatys):
    """Both optimisers descend; odd sizes and uint8 input are kept; image_size with coarse-to-fine
    scales ends at that size (was in both backend files)."""
    content = (_rand(37, 45, 3, seed=16) * 255).astype(np.uint8)
    style = _rand(40, 30, 3, seed=17)
    for optimizer in ("adam", "lbfgs"):
        steps = []
        out = gatys.stylize(content, style, iterations=12, image_size=0, optimizer=optimizer,
                            callback=lambda s, l, im: steps.append((s, im.shape)) and None)
        assert out.shape == (37, 45, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        h = [x["total"] for x in gatys.history]
        assert h[-1] < 0.8 * h[0], optimizer
        assert [s for s, _ in steps] == list(range(1, 13)) and steps[0][1] == (37, 45, 3)
    out = gatys.stylize(content, style, iterations=4, image_size=44, scales=(0.5, 1.0), optimizer="adam")
    assert out.shape == (36, 44, 3) and len(gatys.history) == 4
    sizes = [tuple(h["size"]) for h in gatys.history]
    assert sizes[0] == (18, 22) and sizes[-1] == (36, 44)


# ============================================================================ fast
def _fast_preset():
    p = presets.get("johnson2016")
    return p.replace(name="contract-fast",
                     transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1),
                     training=p.training.replace(image_size=32, batch_size=2, num_workers=0, log_every=2,
                                                 checkpoint_every=2, keep_checkpoints=3))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    r = np.random.default_rng(11)
    for i in range(5):
        I.save_image(r.random((36 + 3 * i, 44, 3)), d / f"img{i}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


ARRAYS = [_rand(40, 40, 3, seed=k) for k in range(3)]
FAST_STYLE = _rand(32, 32, 3, seed=5)


@pytest.fixture(scope="module")
def fast(B):
    """A stylizer with seeded random transformer weights (nothing trained): for inference/files."""
    return B.FastStylizer(_fast_preset(), weights="random:0", device=_device(B), transformer_weights="random:4")


@pytest.fixture(scope="module")
def trainer(B):
    """One stylizer for the short fit() calls (each call starts a new run)."""
    return B.FastStylizer(_fast_preset(), weights="random:0", device=_device(B))


def test_fit_zero_steps_does_nothing(trainer):
    trainer.fit(ARRAYS, FAST_STYLE, steps=1)      # a previous run must not leak into the next one
    before = trainer.net.state_dict_canonical()
    s = trainer.fit(ARRAYS, FAST_STYLE, steps=0)
    assert set(s) == SUMMARY_KEYS, sorted(set(s) ^ SUMMARY_KEYS)
    assert s["steps"] == 0 and s["total_steps"] == 0 and s["start_step"] == 0 and not s["stopped"]
    assert s["history"] == [] and trainer.history == [] and s["images_seen"] == 0
    after = trainer.net.state_dict_canonical()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_fit_negative_steps_is_an_error(trainer):
    assert _raises(RestyError, trainer.fit, ARRAYS, FAST_STYLE, steps=-1) == "steps: got -1; need an integer >= 0"


@pytest.mark.parametrize("batch_size", [0, -1])
def test_fit_bad_batch_size_is_an_error(trainer, batch_size):
    msg = _raises(RestyError, trainer.fit, ARRAYS, FAST_STYLE, steps=1, batch_size=batch_size)
    assert msg == f"batch_size: got {batch_size}; need an integer >= 1"


def test_fit_folder_without_images_is_an_error(trainer, tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    msg = _raises(ImageError, trainer.fit, tmp_path, FAST_STYLE, steps=1)
    assert msg.startswith(f"{tmp_path}: no image files (")
    assert _raises(ImageError, trainer.fit, [], FAST_STYLE, steps=1) == "<training images>: no images given"


def test_fit_callback_stops_at_step_k(trainer):
    calls = []

    def cb(step, losses, image):
        calls.append((step, losses, image))
        return step >= 2
    s = trainer.fit(ARRAYS, FAST_STYLE, steps=5, callback=cb)
    assert set(s) == SUMMARY_KEYS, sorted(set(s) ^ SUMMARY_KEYS)
    assert s["stopped"] is True and s["steps"] == 2 and s["total_steps"] == 5 and s["start_step"] == 0
    assert [h["step"] for h in s["history"]] == [1, 2]
    assert all(set(h) == FIT_HISTORY_KEYS for h in s["history"])
    assert [c[0] for c in calls] == [1, 2]
    for step, losses, image in calls:
        assert type(step) is int and image is None
        assert set(losses) == TERMS and all(type(v) is float for v in losses.values())
    assert s["skipped"] == [] and s["skipped_count"] == 0 and s["images_seen"] == 4
    assert s["world_size"] == 1 and s["rank"] == 0 and s["checkpoint"] is None
    assert trainer.history == s["history"]


def test_fit_skips_corrupt_saves_loads_stylizes(B, photo_dir, tmp_path):
    """(was in both backend files)"""
    f = B.FastStylizer(_fast_preset(), weights="random:0", device=_device(B))
    before = f.net.state_dict_canonical()
    s = f.fit(str(photo_dir), FAST_STYLE, steps=4, batch_size=2, image_size=32, checkpoint_dir=tmp_path / "ck",
              checkpoint_every=2, num_workers=2)
    assert s["steps"] == 4 and len(s["history"]) == 4
    assert s["skipped"] == [str(photo_dir / "broken.jpg")] and s["skipped_count"] >= 1
    assert all(np.isfinite(h["total"]) for h in s["history"] if "total" in h)
    assert any(not np.array_equal(before[k], v) for k, v in f.net.state_dict_canonical().items())
    path = f.save(tmp_path / "model.safetensors")
    g = B.FastStylizer.load(path, weights="random:0", device=_device(B))
    assert g.preset.transformer == f.preset.transformer and g.preset.name == "contract-fast"
    x = _rand(37, 53, 3, seed=4)
    y1, y2 = f.stylize(x), g.stylize(x)
    assert y1.shape == (37, 53, 3) and y1.dtype == np.float32
    np.testing.assert_array_equal(y1, y2)
    batch = g.stylize([x, x[:33, :41]], preserve_color=True)
    assert isinstance(batch, list) and [b.shape for b in batch] == [(37, 53, 3), (33, 41, 3)]
    tiled = g.stylize(_rand(60, 64, 3, seed=5), tile=32, overlap=8)
    assert tiled.shape == (60, 64, 3) and np.isfinite(tiled).all()
    assert g.stylize(x, tile=24, overlap=8).shape == (37, 53, 3)
    arr = g.stylize(np.stack([x, x]), batch_size=2)
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 37, 53, 3)
    np.testing.assert_allclose(arr[0], y1, atol=1e-5)


def test_interrupted_fit_resumed_equals_uninterrupted(B, photo_dir, tmp_path):
    """A run stopped by its callback at step 2 and resumed (a fresh stylizer, as a new process
    would be) ends with the weights and losses of the uninterrupted run (was in both backend
    files)."""
    from resty import checkpoints
    kw = dict(steps=4, batch_size=2, image_size=32, num_workers=1, checkpoint_every=2)
    a = B.FastStylizer(_fast_preset(), weights="random:0", device=_device(B))
    ra = a.fit(str(photo_dir), FAST_STYLE, checkpoint_dir=tmp_path / "a", **kw)
    b = B.FastStylizer(_fast_preset(), weights="random:0", device=_device(B))
    rb = b.fit(str(photo_dir), FAST_STYLE, checkpoint_dir=tmp_path / "b", callback=lambda s, l, _: s == 2, **kw)
    assert rb["stopped"] and rb["steps"] == 2
    assert checkpoints.latest_checkpoint(tmp_path / "b").name == "step-00000002.json"
    c = B.FastStylizer(_fast_preset(), weights="random:0", device=_device(B))
    rc = c.fit(str(photo_dir), FAST_STYLE, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert rc["start_step"] == 2 and rc["steps"] == 4 and not rc["stopped"]
    wa, wc = a.net.state_dict_canonical(), c.net.state_dict_canonical()
    totals = [h["total"] for h in rc["history"]], [h["total"] for h in ra["history"]]
    if _device(B) == "cpu":
        for k in wa:
            np.testing.assert_array_equal(wc[k], wa[k], err_msg=k)
        assert totals[0] == totals[1]
    else:
        # CUDA backward kernels (reflection-pad and nearest-upsample backward use atomics) are not
        # bitwise repeatable, so two uninterrupted runs differ too: float32 rounding there.
        for k in wa:
            np.testing.assert_allclose(wc[k], wa[k], rtol=1e-4, atol=1e-6 * max(1.0, np.abs(wa[k]).max()), err_msg=k)
        np.testing.assert_allclose(totals[0], totals[1], rtol=1e-5)


def test_stylize_list_and_batch_array(fast):
    x = _rand(20, 28, 3, seed=6)
    one = fast.stylize(x)
    assert isinstance(one, np.ndarray) and one.shape == (20, 28, 3) and one.dtype == np.float32
    assert 0.0 <= one.min() and one.max() <= 1.0
    lst = fast.stylize([x, x[:17, :23]])
    assert isinstance(lst, list) and [a.shape for a in lst] == [(20, 28, 3), (17, 23, 3)]
    assert all(a.dtype == np.float32 for a in lst)
    np.testing.assert_allclose(lst[0], one, atol=1e-6)
    arr = fast.stylize(np.stack([x, x[::-1]]))
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 20, 28, 3) and arr.dtype == np.float32
    np.testing.assert_allclose(arr[0], one, atol=1e-6)


def test_stylize_missing_file_is_an_image_error(fast, tmp_path):
    missing = tmp_path / "nope.jpg"
    assert _raises(ImageError, fast.stylize, missing) == _image_error_message(missing)
    assert _raises(ImageError, fast.stylize, [_rand(20, 20, 3), str(missing)]) == _image_error_message(str(missing))


def test_save_onto_existing_file_needs_overwrite(fast, tmp_path):
    path = tmp_path / "m.safetensors"
    fast.save(path)
    msg = _raises(OutputExistsError, fast.save, path)
    assert msg == f"{path}: already exists (pass overwrite=True to replace it)"
    fast.save(path, overwrite=True)


def test_load_garbage_file_is_a_weights_error(B, tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x00garbage, not a safetensors file")
    msg = _raises(WeightsError, B.FastStylizer.load, bad, weights="random:0", device="cpu")
    assert msg.startswith(str(bad))
    missing = tmp_path / "missing.safetensors"
    assert _raises(WeightsError, B.FastStylizer.load, missing, weights="random:0").startswith(str(missing))


@pytest.mark.parametrize("src,dst", [("torch", "torch"), ("torch", "tf"), ("tf", "torch"), ("tf", "tf")])
def test_save_load_round_trip_within_and_across_backends(src, dst, tmp_path):
    S, D = _backend(src), _backend(dst)
    f = S.FastStylizer(_fast_preset(), weights="random:0", device="cpu", transformer_weights="random:4")
    path = f.save(tmp_path / "model.safetensors")
    g = D.FastStylizer.load(path, weights="random:0", device="cpu")
    assert g.preset == f.preset
    a, b = f.net.state_dict_canonical(), g.net.state_dict_canonical()
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    x = _rand(2, 22, 30, 3, seed=7)
    ya, yb = f.stylize(x), g.stylize(x)
    assert yb.shape == (2, 22, 30, 3) and yb.dtype == np.float32
    if src == dst:
        np.testing.assert_array_equal(ya, yb)
    else:
        np.testing.assert_allclose(ya, yb, atol=1e-4)
