"""Fine-tuning a multi-style network, in both frameworks through the shared driver.

One more style trained as only a new gamma/beta row (Dumoulin et al. 2017): only that row moves,
the two frameworks agree on it, the saved model loads and ``style=N`` uses the new row.  And an
existing style K fine-tuned (``fit(style_row=K)``, ``resty train --resume-from MODEL --style K``):
every weight trains with the network run at row K, not row 0; K out of range or a single-style
network are refused in one line.

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


def _files_on_disk(tmp_path):
    """The training photos as tmp_path/photos/*.png and the style as tmp_path/style.png."""
    from resty.images import save_image
    images, style = _data()
    (tmp_path / "photos").mkdir()
    for i, im in enumerate(images):
        save_image(im, tmp_path / "photos" / f"{i}.png")
    save_image(style, tmp_path / "style.png")


def test_cli_train_new_style(tmp_path, capsys):
    from resty.cli import main
    base = _base(tmp_path)
    _files_on_disk(tmp_path)
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


# --------------------------------------------------------------------------- fine-tuning at style row K
def _stylizer(backend, base, dtype="float32"):
    return get_backend(backend).FastStylizer(get_preset("johnson2016"), weights="random:0", device="cpu",
                                             transformer_weights=load_weights(base, expect="transformer"),
                                             dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_style_row_trains_every_weight_at_that_row(tmp_path, backend):
    base = _base(tmp_path)
    images, style = _data()
    kw = dict(steps=2, batch_size=2, image_size=32, num_workers=0, seed=0, lr=1e-2)
    a = _stylizer(backend, base, "float64")
    a.fit(images, style, style_row=2, **kw)
    np.testing.assert_array_equal(a.net.get_style(), np.eye(3)[2])
    b = _stylizer(backend, base, "float64")
    b.net.set_style(np.eye(3)[2])                       # the same run, the row set by hand
    b.fit(images, style, **kw)
    c = _stylizer(backend, base, "float64")             # row 0 (the default)
    c.fit(images, style, **kw)
    sa, sb, sc = (s.net.state_dict_canonical() for s in (a, b, c))
    start = load_weights(base, expect="transformer").tensors
    for k in sa:
        np.testing.assert_allclose(sa[k], sb[k], rtol=0, atol=1e-12, err_msg=k)
        if not ROW(k):
            assert not np.array_equal(sa[k], start[k]), f"{k} was not trained"
    assert any(not np.allclose(sa[k], sc[k]) for k in sa)      # row 2, not row 0


def test_fit_style_row_one_line_errors(tmp_path):
    base = _base(tmp_path)
    images, style = _data()
    st = _stylizer(BACKENDS[0], base)
    with pytest.raises(ArgumentError, match=r"style_row: got 3; this network has styles 0\.\.2"):
        st.fit(images, style, steps=1, style_row=3)
    with pytest.raises(ArgumentError, match="style_row"):
        st.fit(images, style, steps=1, style_row=-1)
    one = get_backend(BACKENDS[0]).FastStylizer(get_preset("johnson2016").replace(transformer=TransformerSpec(
        channels=(4, 6, 8), residual_blocks=1)), weights="random:0", device="cpu")
    with pytest.raises(ArgumentError, match="one style"):
        one.fit(images, style, steps=1, style_row=0)


def test_cli_train_style_k(tmp_path, capsys):
    from resty.cli import main
    base = _base(tmp_path)
    _files_on_disk(tmp_path)
    common = ["train", str(tmp_path / "style.png"), "--data", str(tmp_path / "photos"), "--steps", "1",
              "--batch-size", "1", "--image-size", "32", "--weights", "random:0", "--backend", BACKENDS[0], "-q"]
    out = tmp_path / "k2.safetensors"
    assert main(common + ["--resume-from", str(base), "--style", "2", "--out", str(out)]) == 0
    got = load_weights(out, expect="transformer").tensors
    # the same fine-tune through the Python route, at row 2 and at row 0
    from resty.images import load_image
    style_img = load_image(tmp_path / "style.png")
    for row, same in ((2, True), (0, False)):
        st = _stylizer(BACKENDS[0], base)
        st.fit(str(tmp_path / "photos"), style_img, steps=1, batch_size=1, image_size=32, seed=0, style_row=row)
        want = st.net.state_dict_canonical()
        close = all(np.allclose(got[k], want[k], rtol=0, atol=1e-6) for k in want)
        assert close == same, row
    capsys.readouterr()
    bad = [(["--resume-from", str(base), "--style", "3"], "has styles 0..2"),
           (["--style", "1"], "needs --resume-from"),
           (["--resume-from", str(base), "--style", "1", "--new-style"], "pick one")]
    one = save_weights(tmp_path / "one.safetensors", random_transformer(TransformerSpec(channels=(4, 6, 8),
                                                                                        residual_blocks=1), 0))
    bad.append((["--resume-from", str(one), "--style", "0"], "has one style"))
    for extra, words in bad:
        assert main(common + extra + ["--out", str(tmp_path / "x.safetensors")]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (extra, err)
    assert not (tmp_path / "x.safetensors").exists()
