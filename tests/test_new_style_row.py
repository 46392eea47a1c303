"""Fine-tuning a multi-style network: one more style trained as only a new gamma/beta row
(Dumoulin et al. 2017), through the shared driver, in both frameworks: only that row moves, the
two frameworks agree on it, the saved model loads and ``style=N`` uses the new row.

The two trainings run in float64: in float32 Adam turns the rounding noise of near-zero gradients
into whole steps (e.g. ``res1.conv2.norm.bias``, a per-channel shift the next instance norm
removes: its gradient is ~0 up to padding effects), so float32 runs of the two frameworks differ
there by up to ~2 lr after 2 steps while agreeing elsewhere; in float64 they agree to ~1e-9."""
from __future__ import annotations

import numpy as np
import pytest

from resty.backends import get_backend, is_installed
from resty.errors import ArgumentError
from resty.models import add_style
from resty.presets import get as get_preset
from resty.reference import transformer_forward
from resty.specs import TransformerSpec
from resty.weights import load_weights, random_transformer, save_weights

CIN = TransformerSpec(channels=(4, 6, 8), residual_blocks=1, up_channels=(5, 3), norm="conditional_instance",
                      num_styles=3, norm_out=True, output_activation="sigmoid", input_scale=1.0)
BACKENDS = [b for b in ("torch", "tf") if is_installed(b)]
ROW = lambda k: k.endswith((".norm.weight", ".norm.bias"))  # noqa: E731


def _base(tmp_path):
    ws = random_transformer(CIN, 0)
    rng = np.random.default_rng(1)
    for k, v in ws.tensors.items():
        if ROW(k):
            ws.tensors[k] = (v + rng.normal(0, 0.3, v.shape)).astype(np.float32)
    return save_weights(tmp_path / "base.safetensors", ws)


def _data():
    rng = np.random.default_rng(2)
    images = [rng.random((40, 40, 3), dtype=np.float32) for _ in range(2)]
    style = rng.random((32, 32, 3), dtype=np.float32)
    return images, style


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("newstyle")
    base = _base(tmp)
    images, style = _data()
    out = {}
    for b in BACKENDS:
        f = get_backend(b).FastStylizer.load(base, weights="random:0", device="cpu", new_style=True, dtype="float64")
        assert f.preset.transformer.num_styles == 4
        start = f.net.state_dict_canonical()
        summary = f.fit(images, style, steps=2, batch_size=2, image_size=32, num_workers=0, seed=0,
                        train_only="style_row", lr=1e-2)
        assert summary["steps"] == 2
        out[b] = (start, f.net.state_dict_canonical(), f.save(tmp / f"m4_{b}.safetensors"))
    return base, out


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_the_new_row_changes(trained, backend):
    base, out = trained
    start, end, _ = out[backend]
    orig = load_weights(base, expect="transformer").tensors
    moved = []
    for k, v in end.items():
        if ROW(k):
            np.testing.assert_array_equal(v[:3], orig[k], err_msg=k)       # old styles: bit for bit
            np.testing.assert_allclose(start[k][3], np.mean(orig[k], axis=0, dtype=np.float64), atol=1e-7)
            moved += [k] if np.abs(v[3] - start[k][3]).max() > 1e-4 else []
        else:
            np.testing.assert_array_equal(v, orig[k], err_msg=k)           # frozen
    # The new row was trained: every table but res1.conv2.norm.bias (a shift the next instance
    # norm removes exactly: zero gradient) moved.
    assert sorted(set(k for k in end if ROW(k)) - set(moved)) == ["res1.conv2.norm.bias"]


def test_backends_agree_on_the_new_row(trained):
    if len(BACKENDS) < 2:
        pytest.skip("needs both backends")
    _, out = trained
    a, b = out["torch"][1], out["tf"][1]
    for k in a:
        if ROW(k):
            scale = max(1.0, float(np.abs(a[k][3]).max()))
            assert np.abs(a[k][3] - b[k][3]).max() <= 1e-6 * scale, k


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_model_loads_and_style_n_uses_the_row(trained, backend):
    _, out = trained
    path = out[backend][2]
    ws = load_weights(path, expect="transformer")
    assert ws.spec.num_styles == 4
    f = get_backend(backend).FastStylizer.load(path, weights="random:0", device="cpu")
    img = np.random.default_rng(4).random((24, 28, 3), dtype=np.float32)
    y = f.stylize(img, style=3)
    ref = np.clip(transformer_forward(img[None].astype(np.float64), ws.tensors, ws.spec, style=3)[0], 0, 1)
    assert np.abs(y - ref).max() < 1e-4
    before = np.clip(transformer_forward(img[None].astype(np.float64), out[backend][0], ws.spec, style=3)[0], 0, 1)
    assert np.abs(y - before).max() > 1e-4          # the trained row, not the initial one


def test_refusals(tmp_path):
    b = BACKENDS[0]
    FS = get_backend(b).FastStylizer
    images, style = _data()
    one = FS(get_preset("restynet").replace(transformer=get_preset("restynet").transformer.replace(
        channels=(4, 6, 8), residual_blocks=1)), weights="random:0", device="cpu")
    with pytest.raises(ArgumentError, match="multi-style"):
        one.fit(images, style, steps=1, train_only="style_row")
    with pytest.raises(ArgumentError, match="train_only"):
        one.fit(images, style, steps=1, train_only="everything")
    with pytest.raises(ArgumentError, match="multi-style"):
        add_style(random_transformer(get_preset("restynet").transformer, 0))


def test_cli_train_new_style(tmp_path, capsys):
    from resty.cli import main
    from resty.images import save_image
    base = _base(tmp_path)
    images, style = _data()
    (tmp_path / "photos").mkdir()
    for i, im in enumerate(images):
        save_image(im, tmp_path / "photos" / f"{i}.png")
    save_image(style, tmp_path / "style.png")
    out = tmp_path / "m4.safetensors"
    assert main(["train", str(tmp_path / "style.png"), "--data", str(tmp_path / "photos"), "--resume-from", str(base),
                 "--new-style", "--out", str(out), "--steps", "1", "--batch-size", "1", "--image-size", "32",
                 "--weights", "random:0", "--backend", BACKENDS[0], "-q"]) == 0
    assert "--style 3" in capsys.readouterr().out
    ws, orig = load_weights(out, expect="transformer"), load_weights(base, expect="transformer")
    assert ws.spec.num_styles == 4
    for k, v in orig.tensors.items():
        np.testing.assert_array_equal(ws.tensors[k][:3] if ROW(k) else ws.tensors[k], v, err_msg=k)
    assert main(["train", str(tmp_path / "style.png"), "--data", str(tmp_path / "photos"), "--new-style",
                 "--out", str(tmp_path / "x.safetensors"), "--weights", "random:0"]) == 2
