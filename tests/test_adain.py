"""AdaIN (resty.adain): the pytorch-AdaIN importers against a re-creation of its net.py on files
made here with the real key names and shapes; a checkpoint written by one backend resumed in the
other; the CLI (train --method adain, stylize with an AdaIN decoder).  Numbers across backends and
the oracle are in parity_tests/adain_cases.py."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from resty.adain import (get_adain_preset, random_decoder, read_pytorch_adain_decoder,  # noqa: E402
                         resolve_encoder_weights)
from resty.errors import WeightsError  # noqa: E402


def _pytorch_adain_nets():
    """pytorch-AdaIN's net.py ``vgg`` and ``decoder`` (the layer lists as published)."""
    nn = torch.nn
    R = lambda: nn.ReflectionPad2d((1, 1, 1, 1))  # noqa: E731
    pool = lambda: nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)  # noqa: E731
    vgg = [nn.Conv2d(3, 3, (1, 1))]
    cin = 3
    for block, (n, width) in enumerate(((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))):
        for _ in range(n):
            vgg += [R(), nn.Conv2d(cin, width, (3, 3)), nn.ReLU()]
            cin = width
        vgg.append(pool())
    decoder = []
    for cin, cout, up in ((512, 256, True), (256, 256, False), (256, 256, False), (256, 256, False),
                          (256, 128, True), (128, 128, False), (128, 64, True), (64, 64, False), (64, 3, None)):
        decoder += [R(), nn.Conv2d(cin, cout, (3, 3))]
        if up is not None:
            decoder.append(nn.ReLU())
        if up:
            decoder.append(nn.Upsample(scale_factor=2, mode="nearest"))
    return nn.Sequential(*vgg[:53]), nn.Sequential(*decoder)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """vgg_normalised.pth / decoder.pth with pytorch-AdaIN's keys and shapes (random numbers; layer 0
    the published preprocessing: RGB [0, 1] -> BGR·255 − mean)."""
    d = tmp_path_factory.mktemp("adain-pth")
    torch.manual_seed(0)
    vgg, dec = _pytorch_adain_nets()
    with torch.no_grad():
        w0 = torch.zeros(3, 3, 1, 1)
        for c in range(3):
            w0[c, 2 - c] = 255.0
        vgg[0].weight.copy_(w0)
        vgg[0].bias.copy_(-torch.tensor([103.939, 116.779, 123.68]))
        for m in list(vgg)[1:]:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(0.3 if m.in_channels == 3 else 1.0)
    torch.save(vgg.state_dict(), d / "vgg_normalised.pth")
    torch.save(dec.state_dict(), d / "decoder.pth")
    assert "51.bias" in vgg.state_dict() and "28.weight" in dec.state_dict()
    return d, vgg.eval(), dec.eval()


def test_pytorch_adain_importers_match_its_network(published):
    from resty_torch.adain import AdaINDecoder, AdaINEncoder
    d, vgg, dec = published
    preset = get_adain_preset("pytorch-adain")
    enc_ws = resolve_encoder_weights(str(d / "vgg_normalised.pth"), preset)
    assert enc_ws.preprocessing.channel_order == "BGR" and enc_ws.preprocessing.scale == 255.0
    dec_ws = read_pytorch_adain_decoder(d / "decoder.pth")
    assert dec_ws.spec.decoder_widths == (256, 128, 64)
    x = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = vgg[:31](x)                     # pytorch-AdaIN's encoder: up to relu4_1
        got = AdaINEncoder(enc_ws, preset.adain)(x, ("relu4_1",))["relu4_1"]
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()
        t = torch.rand(2, 512, 4, 5, generator=torch.Generator().manual_seed(2))
        want_d = dec(t)
        got_d = AdaINDecoder(dec_ws.spec, dec_ws)(t)
        assert (got_d - want_d).abs().max() <= 1e-4 * want_d.abs().max()


def test_importer_refuses_a_wrong_layout(tmp_path):
    sd = {"1.weight": torch.zeros(256, 512, 3, 3), "1.bias": torch.zeros(256)}
    torch.save(sd, tmp_path / "decoder.pth")
    with pytest.raises(WeightsError, match="missing tensor"):
        read_pytorch_adain_decoder(tmp_path / "decoder.pth")


def _tiny():
    p = get_adain_preset("pytorch-adain")
    return p.replace(adain=p.adain.replace(decoder_widths=(8, 6, 4), load_size=40),
                     training=p.training.replace(num_workers=0))


def _data():
    rng = np.random.default_rng(3)
    return ([rng.random((40 + i, 50, 3)).astype(np.float32) for i in range(4)],
            [rng.random((44, 36 + i, 3)).astype(np.float32) for i in range(3)])


@pytest.mark.parametrize("first,second", [("torch", "tf"), ("tf", "torch")])
def test_checkpoint_resumes_in_the_other_backend(first, second, tmp_path):
    from resty.backends import get_backend
    items, styles = _data()
    kw = dict(batch_size=2, image_size=32, lr=1e-3, checkpoint_every=1, num_workers=0)
    make = lambda side: get_backend(side).AdaINStylizer(_tiny(), weights="random:0", dtype="float64",  # noqa: E731
                                                        decoder_weights=random_decoder(_tiny().adain, 1))
    ref = make(first)
    ref.fit(items, styles, steps=3, **kw)
    a = make(first)
    a.fit(items, styles, steps=1, checkpoint_dir=tmp_path, **kw)
    b = make(second)
    out = b.fit(items, styles, steps=3, checkpoint_dir=tmp_path, resume=True, **kw)
    assert out["start_step"] == 1 and out["steps"] == 3
    want, got = ref.net.state_dict_canonical(), b.net.state_dict_canonical()
    scale = max(np.abs(v).max() for v in want.values())
    assert max(np.abs(want[k] - got[k]).max() for k in want) <= 1e-10 * scale
    assert [h["total"] for h in b.history] == pytest.approx([h["total"] for h in ref.history], rel=1e-10)


def test_unreadable_style_is_skipped_and_named(tmp_path):
    from resty.backends import get_backend
    items, styles = _data()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    st = get_backend("torch").AdaINStylizer(_tiny(), weights="random:0")
    out = st.fit(items, [str(bad)] + styles, steps=3, batch_size=2, image_size=32, num_workers=0)
    assert str(bad) in out["skipped"] and out["steps"] == 3


def test_stylize_controls():
    from resty.backends import get_backend
    from resty.errors import ArgumentError
    st = get_backend("torch").AdaINStylizer(_tiny(), weights="random:0")
    c, s = _data()[0][0], _data()[1][0]
    y0 = st.stylize(c, s, alpha=0.0)
    assert y0.shape == c.shape and y0.dtype == np.float32
    assert not np.allclose(st.stylize(c, s, alpha=1.0), y0)
    assert np.allclose(st.stylize(c, [s, s], style_weights=[0.2, 0.8]), st.stylize(c, s), atol=1e-5)
    assert st.stylize(c, s, preserve_color=True).shape == c.shape
    with pytest.raises(ArgumentError, match="alpha"):
        st.stylize(c, s, alpha=1.5)


def test_stylize_mask_spatial_control():
    """mask=M with two styles: an all-foreground mask is the first style alone, an all-background
    mask the second; a split mask changes each side; the mask needs exactly two styles."""
    from resty.adain import mask_regions
    from resty.backends import get_backend
    from resty.errors import ArgumentError
    st = get_backend("torch").AdaINStylizer(_tiny(), weights="random:0")
    c, (s1, s2) = _data()[0][0], _data()[1][:2]
    h, w = c.shape[:2]
    ones, zeros = np.ones((h, w)), np.zeros((h, w), np.uint8)
    assert np.allclose(st.stylize(c, [s1, s2], mask=ones), st.stylize(c, s1), atol=1e-5)
    assert np.allclose(st.stylize(c, [s1, s2], mask=zeros), st.stylize(c, s2), atol=1e-5)
    half = np.zeros((h, w))
    half[:, : w // 2] = 1.0
    fg, bg = mask_regions(half, (h, w))
    assert fg.shape == (5, 7) and fg[:, :3].all() and bg[:, 4:].all() and not (fg & bg).any()
    y = st.stylize(c, [s1, s2], mask=half, alpha=0.8)
    assert y.shape == c.shape and not np.allclose(y, st.stylize(c, s1, alpha=0.8), atol=1e-3)
    with pytest.raises(ArgumentError, match="two styles"):
        st.stylize(c, s1, mask=half)
    with pytest.raises(ArgumentError, match=r"\[0, 1\]"):
        st.stylize(c, [s1, s2], mask=half * 2)


def test_cli_train_and_stylize(tmp_path):
    from resty.images import save_image
    items, styles = _data()
    (tmp_path / "photos").mkdir()
    (tmp_path / "paintings").mkdir()
    for i, a in enumerate(items):
        save_image(a, tmp_path / "photos" / f"{i}.png")
    for i, a in enumerate(styles):
        save_image(a, tmp_path / "paintings" / f"{i}.png")
    model = tmp_path / "decoder.safetensors"
    run = lambda *a: subprocess.run([sys.executable, "-m", "resty", *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=tmp_path, timeout=240)
    r = run("train", "--method", "adain", "--data", "photos", "--styles", "paintings", "--out", str(model),
            "--steps", "1", "--batch-size", "2", "--image-size", "32", "--weights", "random:0", "-q")
    assert r.returncode == 0, r.stderr
    r = run("stylize", "photos/0.png", "-o", "out.png", "--model", str(model), "--style-image", "paintings/1.png",
            "--alpha", "0.6", "--weights", "random:0", "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.png").is_file()


def test_cli_stylize_mask(tmp_path, capsys):
    """``resty stylize --mask M`` with two --style-image (in process; a saved tiny decoder)."""
    from cli_helpers import assert_usage_error, run
    from resty.backends import get_backend
    from resty.images import save_image
    (c,), (s1, s2) = _data()[0][:1], _data()[1][:2]
    model = get_backend("torch").AdaINStylizer(_tiny(), weights="random:0").save(tmp_path / "dec.safetensors")
    mask = np.zeros((40, 50, 3))
    mask[:, :25] = 1.0
    for name, a in (("c.png", c), ("a.png", s1), ("b.png", s2), ("mask.png", mask)):
        save_image(a, tmp_path / name)
    d = str(tmp_path) + "/"
    rc, _, err = run(["stylize", d + "c.png", "-o", d + "m.png", "--model", str(model), "--style-image", d + "a.png",
                      "--style-image", d + "b.png", "--mask", d + "mask.png", "--weights", "random:0", "-q"], capsys)
    assert rc == 0, err
    assert (tmp_path / "m.png").is_file()
    rc, _, err = run(["stylize", d + "c.png", "-o", d + "n.png", "--model", str(model), "--style-image", d + "a.png",
                      "--mask", d + "mask.png", "--weights", "random:0", "-q"], capsys)
    assert_usage_error(rc, err, "--mask", "two styles")


def test_convert_onnx(tmp_path, capsys):
    """``resty convert DECODER --to onnx``: encoder + AdaIN + decoder in one graph, which
    onnxruntime runs as ``stylize`` does (alpha included); other targets are refused."""
    ort = pytest.importorskip("onnxruntime")
    from cli_helpers import assert_usage_error, run
    from resty.backends import get_backend
    st = get_backend("torch").AdaINStylizer(_tiny(), weights="random:0")
    model = st.save(tmp_path / "dec.safetensors")
    rc, _, err = run(["convert", str(model), "--to", "onnx", "-o", str(tmp_path / "a.onnx"), "--weights",
                      "random:0"], capsys)
    assert rc == 0, err      # export_onnx ran the file in onnxruntime against stylize (alpha 1 and 0.6)
    sess = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["content", "style", "alpha"]
    rc, _, err = run(["convert", str(model), "--to", "tf", "-o", str(tmp_path / "a.weights.h5")], capsys)
    assert_usage_error(rc, err, "--to onnx")


def test_convert_savedmodel(tmp_path, capsys):
    """``resty convert DECODER --to savedmodel``: encoder + AdaIN + decoder as a SavedModel whose
    serving signature (content, style, alpha) gives what ``AdaINStylizer.stylize`` gives, read
    back by a process that imports TensorFlow only; an existing folder is refused unless
    --overwrite."""
    pytest.importorskip("tensorflow")
    from cli_helpers import run
    from resty.backends import get_backend
    st = get_backend("tf").AdaINStylizer(_tiny(), weights="random:0", decoder_weights="random:3")
    model = st.save(tmp_path / "dec.safetensors")
    sm = tmp_path / "sm"
    rc, _, err = run(["convert", str(model), "--to", "savedmodel", "-o", str(sm), "--weights", "random:0"], capsys)
    assert rc == 0, err
    assert (sm / "saved_model.pb").is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    c, s = _data()[0][1], _data()[1][2]             # 41×50 content: not a multiple of 8
    np.save(tmp_path / "c.npy", c)
    np.save(tmp_path / "s.npy", s)
    code = ("import sys, numpy as np, tensorflow as tf; d = sys.argv[1]; "
            "f = tf.saved_model.load(d + '/sm').signatures['serving_default']; "
            "y = f(content=tf.constant(np.load(d + '/c.npy')[None]), style=tf.constant(np.load(d + '/s.npy')[None]), "
            "alpha=tf.constant(0.7))['stylized'].numpy()[0]; np.save(d + '/y.npy', y); "
            "assert not [m for m in sys.modules if m.startswith('resty')]")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=240,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    y = np.load(tmp_path / "y.npy")
    want = st.stylize(c, s, alpha=0.7)
    assert y.shape == c.shape and np.abs(y - want).max() <= 1e-5
    assert np.abs(want - st.stylize(c, s, alpha=1.0)).max() > 1e-3      # alpha reached the graph
    stamp = (sm / "saved_model.pb").stat().st_mtime_ns
    rc, _, err = run(["convert", str(model), "--to", "savedmodel", "-o", str(sm), "--weights", "random:0"], capsys)
    assert rc == 2 and "already exists" in err and (sm / "saved_model.pb").stat().st_mtime_ns == stamp
    from resty.errors import OutputExistsError
    with pytest.raises(OutputExistsError):
        st.export_savedmodel(sm)
    assert st.export_savedmodel(sm, overwrite=True) == sm and (sm / "saved_model.pb").stat().st_mtime_ns != stamp
    mine = tmp_path / "thesis"          # a user's folder: --overwrite never replaces it
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    rc, _, err = run(["convert", str(model), "--to", "savedmodel", "-o", str(mine), "--overwrite",
                      "--weights", "random:0"], capsys)
    assert rc == 2 and "not a SavedModel" in err and (mine / "thesis.tex").read_text() == "keep me"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_tf_fit_refuses_several_processes_without_a_strategy(monkeypatch):
    """Several TF processes without their multi-worker strategy would each train the whole batch
    alone: fit refuses in one line (with TF_CONFIG: tests/test_distributed.py)."""
    pytest.importorskip("tensorflow")
    from resty.backends import get_backend
    from resty.errors import RestyError
    items, styles = _data()
    st = get_backend("tf").AdaINStylizer(_tiny(), weights="random:0")
    monkeypatch.setenv("RESTY_WORLD_SIZE", "2")
    monkeypatch.setenv("RESTY_RANK", "1")
    with pytest.raises(RestyError, match="several TensorFlow processes needs their MultiWorkerMirroredStrategy") as e:
        st.fit(items, styles, steps=1, batch_size=2, image_size=32, num_workers=0)
    assert "\n" not in str(e.value)
    monkeypatch.delenv("RESTY_WORLD_SIZE")
    assert st.fit(items, styles, steps=1, batch_size=2, image_size=32, num_workers=0)["steps"] == 1
