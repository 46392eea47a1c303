"""Video (resty.video, resty.video_cli) and frame-to-frame stability (resty.temporal): streaming
I/O round trip with audio, the warp and occlusion check vs the float64 oracle, the warping
error on known motion, the CLI's one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from resty import reference_temporal as R
from resty import temporal as T
from resty.errors import ArgumentError

av = pytest.importorskip("av")


def _make_clip(path, n=5, w=32, h=32, fps=10, audio=True):
    c = av.open(str(path), "w")
    v = c.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    a = c.add_stream("aac", rate=8000) if audio else None
    if a is not None:
        a.layout = "mono"
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, :, 0] = (np.arange(w) * 8 + i * 10) % 256
        img[:, :, 1] = 128
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts = i
        for p in v.encode(f):
            c.mux(p)
    if a is not None:
        t = np.arange(int(8000 * n / fps)) / 8000
        s = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for k in range(0, s.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(s[:, k:k + 1024]), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 8000, k
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    for p in v.encode(None):
        c.mux(p)
    c.close()
    return path


def test_round_trip_streams_keeps_rate_size_and_audio(tmp_path):
    from resty.video import open_frames, stylize_video
    src = _make_clip(tmp_path / "in.mp4")
    seen = []
    r = stylize_video(src, tmp_path / "out.mp4", lambda b: (seen.append(len(b)), 1.0 - b)[1], batch_size=2)
    assert r["frames"] == 5 and (r["width"], r["height"]) == (32, 32) and float(r["rate"]) == 10
    assert seen == [2, 2, 1]                      # streamed in batches
    assert r["audio"] == "aac"
    c = av.open(str(tmp_path / "out.mp4"))
    assert sorted(s.type for s in c.streams) == ["audio", "video"]
    c.close()
    with open_frames(src) as (_, fin), open_frames(tmp_path / "out.mp4") as (info, fout):
        a, b = list(fin), list(fout)
    assert len(b) == 5 and info.fps == 10
    assert np.abs((1 - a[2]) - b[2]).mean() < 0.03      # H.264 at crf 18
    assert not list(tmp_path.glob("*.tmp*")) and len(list(tmp_path.iterdir())) == 2


def test_size_frames_folder_and_atomic_failure(tmp_path):
    from resty.errors import RestyError
    from resty.video import open_frames, stylize_video
    src = _make_clip(tmp_path / "in.mp4", audio=False)
    r = stylize_video(src, tmp_path / "frames", lambda b: b, size=16)
    assert (r["width"], r["height"]) == (16, 16) and len(list((tmp_path / "frames").glob("*.png"))) == 5
    r = stylize_video(tmp_path / "frames", tmp_path / "back.mkv", lambda b: b, fps=12)
    assert r["frames"] == 5 and float(r["rate"]) == 12

    def boom(b):
        raise RestyError("boom")
    with pytest.raises(RestyError):
        stylize_video(src, tmp_path / "never.mp4", boom)
    assert not (tmp_path / "never.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.mkv", "frames", "in.mp4"]
    with open_frames(tmp_path / "back.mkv") as (info, f):
        assert (info.width, info.height) == (16, 16) and len(list(f)) == 5


def test_warp_and_occlusion_match_the_oracle():
    rng = np.random.default_rng(0)
    img = rng.random((9, 11, 3))
    fl = rng.normal(0, 3, (9, 11, 2))
    a, va = T.warp(img, fl)
    b, vb = R.warp_bilinear(img, fl)
    assert np.abs(a - b).max() < 1e-12 and (va == vb).all()
    fl2 = rng.normal(0, 3, (9, 11, 2))
    assert (T.occlusion_mask(fl, fl2) == R.occlusion(fl, fl2)).all()
    # a plan (what both backends apply) is the same map, bilinear and nearest
    for mode, oracle in (("bilinear", R.warp_bilinear), ("nearest", R.warp_nearest)):
        for f in (fl, fl2):
            plan = T.warp_plan(f, mode)
            ref, valid = oracle(img, f)
            assert np.abs(T.apply_plan(img, plan) - ref).max() < 1e-12 and (plan.valid == valid).all(), mode
    # the temporal loss's plans: nearest (ReReVST), a pure function of (seed, step)
    assert T.TRAINING_WARP == "nearest"
    plans, noise = T.temporal_pair(0, 3, 9, 11, 2, magnitude=3.0)
    flow0 = T.random_smooth_flow(np.random.default_rng([0, 3, 0x7E4D]), 9, 11, magnitude=3.0)
    ref, valid = R.warp_nearest(img, flow0)
    assert np.abs(T.apply_plan(img, plans[0]) - ref).max() == 0 and (plans[0].valid == valid).all()
    assert noise.shape == (2, 9, 11, 3)
    again, _ = T.temporal_pair(0, 3, 9, 11, 2, magnitude=3.0)
    assert all((x.index == y.index).all() for x, y in zip(plans, again))
    bil, _ = T.temporal_pair(0, 3, 9, 11, 2, magnitude=3.0, mode="bilinear")
    assert np.abs(T.apply_plan(img, bil[0]) - R.warp_bilinear(img, flow0)[0]).max() < 1e-12
    with pytest.raises(ArgumentError):
        T.warp_plan(fl, "bicubic")


def test_nearest_warp_keeps_texture_bilinear_blurs_it():
    """Why the temporal loss warps by nearest pixel (ReReVST): a bilinear warp by a half-pixel
    shift averages neighbours, so ``W(S(x))`` of a high-frequency stylized frame loses most of its
    texture and ``‖S(W(x)) − W(S(x))‖²`` asks the network to blur; a nearest warp copies pixels."""
    rng = np.random.default_rng(3)
    tex = rng.random((32, 32, 3))
    fl = np.full((32, 32, 2), 0.5)
    for mode, kept in (("nearest", 1.0), ("bilinear", 0.5)):
        out = T.apply_plan(tex, T.warp_plan(fl, mode))[:-1, :-1]
        assert np.std(out) / np.std(tex[:-1, :-1]) == pytest.approx(kept, abs=0.06), mode


def test_warping_error_zero_for_exact_motion_positive_for_noise():
    rng = np.random.default_rng(1)
    big = rng.random((40, 60, 3))
    frames = [big[4:36, 2 * t:2 * t + 40] for t in range(5)]      # pans 2 px right per frame
    fw = np.zeros((32, 40, 2))
    fw[..., 0] = -2.0                 # pixel p of frame t is at p - 2 px in frame t+1
    bw = -fw
    res = T.clip_warping_error(frames, [(fw, bw)] * 4)
    assert res["pairs"] == 4 and res["mean"] < 1e-20
    noisy = [f + rng.normal(0, 0.05, f.shape) for f in frames]
    assert T.clip_warping_error(noisy, [(fw, bw)] * 4)["mean"] > 1e-3
    m = T.occlusion_mask(fw, bw)
    assert not m[:, :2].any() and m[:, 2:].all()                     # left strip leaves the frame


def test_synthetic_clip_true_flow_beats_farneback_and_zero_flow():
    pytest.importorskip("cv2")
    clip = T.synthetic_clip(n_frames=60, size=64)
    f0, f1 = clip.frame(0), clip.frame(1)
    fw, bw = next(clip.flows())
    e_true = T.warping_error(f0, f1, fw, T.occlusion_mask(fw, bw))
    e_zero = T.warping_error(f0, f1, np.zeros_like(fw))
    assert e_true < 0.5 * e_zero
    assert np.abs(T.farneback_flow(f0, f1) - fw).mean() < 0.5


@pytest.mark.parametrize("argv, words", [
    (["{bad}", "-o", "{d}/o.mp4", "--model", "multistyle26"], "cannot read this video"),
    (["{clip}", "-o", "{d}/o.gifx", "--model", "multistyle26"], "is written as a video"),
    (["{clip}", "some_style.jpg", "-o", "{d}/o.mp4"], "video needs a fast network"),
])
def test_cli_one_line_errors(tmp_path, capsys, argv, words):
    from resty.cli import main
    clip = _make_clip(tmp_path / "c.mp4", n=2, audio=False)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    argv = [a.format(bad=tmp_path / "bad.mp4", clip=clip, d=tmp_path) for a in argv]
    assert main(["stylize", *argv, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.mp4").exists()


def test_cli_stylizes_a_clip_with_multistyle26(tmp_path, capsys):
    pytest.importorskip("torch")
    from resty.cli import main
    clip = _make_clip(tmp_path / "c.mp4", n=3)
    assert main(["stylize", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "multistyle26", "--style", "19",
                 "--weights", "random:0", "-q"]) == 0
    out = capsys.readouterr().out
    assert "3 frames" in out and "audio aac copied" in out and "frames/s" in out


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_temporal_loss_matches_the_oracle(backend):
    """The ReReVST term (a gather-and-sum warp on the framework's tensors) equals the core's
    NumPy definition with the float64 oracle's transformer, and has a gradient."""
    from resty.backends import get_backend
    from resty.reference import transformer_forward
    from resty.specs import TransformerSpec
    be = get_backend(backend)
    spec = TransformerSpec(channels=(4, 8, 8), residual_blocks=1)
    net = be.TransformerNet(spec, weights="random:3", dtype="float64")
    weights = net.state_dict_canonical()
    rng = np.random.default_rng(5)
    x = rng.random((2, 20, 24, 3))
    plans, noise = T.temporal_pair(1, 7, 20, 24, 2, magnitude=3.0, noise_std=0.02)
    want = T.temporal_loss(lambda a: transformer_forward(a, weights, spec), x, plans, noise)
    if backend == "torch":
        import torch
        from resty_torch.temporal import temporal_loss
        xt = torch.tensor(x.transpose(0, 3, 1, 2))
        got = temporal_loss(net, xt, plans, noise)
        got.backward()
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.parameters())
        got = float(got.detach())
    else:
        import tensorflow as tf
        from resty_tf.temporal import temporal_loss
        with tf.GradientTape() as tape:
            got = temporal_loss(net, tf.constant(x), plans, noise)
        grads = tape.gradient(got, net.trainable_variables)
        assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
        got = float(got)
    assert want > 0 and abs(got - want) <= 1e-10 * max(1.0, want)


def test_fit_books_the_temporal_term_only_when_weighted():
    pytest.importorskip("torch")
    from resty.backends import get_backend
    from resty.presets import get
    from resty.specs import TransformerSpec
    p = get("johnson2016")
    p = p.replace(transformer=TransformerSpec(channels=(4, 8, 8), residual_blocks=1),
                  training=p.training.replace(image_size=32, batch_size=1, num_workers=0))
    rng = np.random.default_rng(0)
    imgs = [rng.random((36, 40, 3)).astype(np.float32)]
    style = rng.random((32, 32, 3)).astype(np.float32)
    rows = {}
    for w in (0.0, 50.0):
        st = get_backend("torch").FastStylizer(p.replace(training=p.training.replace(temporal_weight=w)),
                                               weights="random:0", transformer_weights="random:1")
        rows[w] = st.fit(imgs, style, steps=1)["history"][0]
    assert "temporal" not in rows[0.0] and rows[50.0]["temporal"] > 0
    assert rows[50.0]["total"] == pytest.approx(rows[0.0]["total"] + rows[50.0]["temporal"], rel=1e-5)
