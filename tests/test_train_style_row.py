"""Fine-tuning a multi-style network at style row K (issue 20): ``fit(style_row=K)`` and
``resty train --resume-from MODEL --style K`` train every weight with the network run at row K
(not row 0), and refuse K out of range or a single-style network in one line."""
from __future__ import annotations

import numpy as np
import pytest

from resty.backends import get_backend, is_installed
from resty.errors import ArgumentError
from resty.presets import get as get_preset
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
        if ROW(k):      # rows that differ, so training at another row gives other weights
            ws.tensors[k] = (v + rng.normal(0, 0.3, v.shape)).astype(np.float32)
    return save_weights(tmp_path / "base.safetensors", ws)


def _data():
    rng = np.random.default_rng(2)
    return [rng.random((40, 40, 3), dtype=np.float32) for _ in range(2)], rng.random((32, 32, 3), dtype=np.float32)


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
    from resty.images import save_image
    base = _base(tmp_path)
    images, style = _data()
    (tmp_path / "photos").mkdir()
    for i, im in enumerate(images):
        save_image(im, tmp_path / "photos" / f"{i}.png")
    save_image(style, tmp_path / "style.png")
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
