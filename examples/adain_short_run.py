"""A short AdaIN training run on a CPU, and what it can show (docs/ADAIN.md, docs/adain.png).

Content: scikit-image sample photos; styles: scikit-image's textures and colour images (it has no
paintings).  Two photos and two styles are held out of training and used only to evaluate.
The encoder is VGG19 with seeded random weights (``--weights random:0``): ImageNet weights
cannot be downloaded here.  Pass ``--weights imagenet`` (or a file) where they can.

Checks, on the held-out pairs:

* colour statistics: the distance of the output's per-channel mean and std (and mean and
  covariance) to the style's, as alpha goes 0 -> 1, against the content photo's own distance;
* content: the Sobel-edge correlation of the output's luminance with the photo's
  (resty.metrics.edge_correlation), at every alpha, against the untrained decoder's.

With the random encoder the colour check passes and the edge check does not: docs/ADAIN.md says why.

    python examples/adain_short_run.py --steps 2400 --batch-size 4 --image-size 64 --load-size 128 \
        --eval-size 128 --widths 64,32,16 --lr 1e-3 --style-weight 1 --threads 1 --curve-every 100 \
        --diagnose --out adain-run --figure docs/adain.png     # docs/ADAIN.md's run
    python examples/adain_short_run.py --quick          # 3 steps, 32 px: a smoke run

``--diagnose`` first prints the random encoder's relu4_1 statistics and, for each held-out photo,
the relu4_1 content loss and edge r of blurred copies of it and of images optimised for that loss;
``--curve-every N`` records the held-out edge r every N steps (report.json, ``curve``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# skimage.data.cat is chelsea: never in training.
TRAIN_CONTENT = ("astronaut", "rocket", "stereo_motorcycle", "camera", "coins", "clock", "moon")
# Light and dark, colour and grey: shepp_logan_phantom (mean 0.12), cell and microaneurysms are dark.
TRAIN_STYLES = ("retina", "colorwheel", "brick", "grass", "gravel", "logo", "shepp_logan_phantom", "cell",
                "microaneurysms", "text", "page", "checkerboard", "horse", "binary_blobs")
TEST_CONTENT = ("coffee", "chelsea")
TEST_STYLES = ("immunohistochemistry", "hubble_deep_field")    # fixed before any result was seen
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def sample(name: str, short: int) -> np.ndarray:
    """A scikit-image sample as H×W×3 float32 in [0, 1], its short side resized to ``short``."""
    import skimage.data
    from resty.images import _scale_round, resize_to
    a = getattr(skimage.data, name)(**({"rng": 0} if name == "binary_blobs" else {}))   # seeded: reproducible
    a = a[0] if isinstance(a, tuple) else a
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind == "f":                             # float images are in [0, 1]
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:                                  # RGBA over white
        al = a[..., 3:4] / 255.0
        a = (a[..., :3] * al + 255.0 * (1 - al)).astype(np.uint8)
    x = a.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    return resize_to(x, (_scale_round(h, short, min(h, w)), _scale_round(w, short, min(h, w))))


def colour_stats(x: np.ndarray):
    p = np.asarray(x, np.float64).reshape(-1, 3)
    return p.mean(0), p.std(0), np.cov(p.T)


def distances(out: np.ndarray, style: np.ndarray):
    """(per-channel mean+std distance, mean+covariance distance) of ``out`` to ``style``."""
    mo, so, co = colour_stats(out)
    ms, ss, cs = colour_stats(style)
    return (float(np.linalg.norm(mo - ms) + np.linalg.norm(so - ss)),
            float(np.linalg.norm(mo - ms) + np.linalg.norm(co - cs)))


def evaluate(st, contents, styles, alphas=ALPHAS):
    from resty.metrics import edge_correlation
    rows = []
    for cn, c in contents.items():
        for sn, s in styles.items():
            own_ms, own_mc = distances(c, s)
            row = {"content": cn, "style": sn, "content_dist_meanstd": own_ms, "content_dist_meancov": own_mc,
                   "alphas": []}
            for a in alphas:
                y = st.stylize(c, s, alpha=a)
                d_ms, d_mc = distances(y, s)
                row["alphas"].append({"alpha": a, "dist_meanstd": d_ms, "dist_meancov": d_mc,
                                      "edge_corr": float(edge_correlation(y, c)),
                                      "mean": colour_stats(y)[0].tolist(), "std": colour_stats(y)[1].tolist()})
            row["style_mean"], row["style_std"] = colour_stats(s)[0].tolist(), colour_stats(s)[1].tolist()
            rows.append(row)
    return rows


def learning_curve_callback(st, contents, styles, every: int, rows: list):
    """fit's callback: every ``every`` steps, the edge r at alpha 0 and 1 of each held-out pair."""
    from resty.metrics import edge_correlation

    def cb(step, losses, _):
        if step % every == 0:
            row = {"step": int(step), "loss": {k: float(v) for k, v in dict(losses).items()}}
            for cn, c in contents.items():
                for sn, s in styles.items():
                    row[f"{cn}×{sn}"] = [float(edge_correlation(st.stylize(c, s, alpha=a), c)) for a in (0.0, 1.0)]
            rows.append(row)
            e = [v for k, v in row.items() if "×" in k]
            print(f"  [curve] step {step}: loss {row['loss'].get('total', float('nan')):.3f}; edge r at α 0 "
                  f"{min(x[0] for x in e):.3f}..{max(x[0] for x in e):.3f}, at α 1 "
                  f"{min(x[1] for x in e):.3f}..{max(x[1] for x in e):.3f}", flush=True)
        return False
    return cb


def diagnose(st, contents, steps: int = 150) -> dict:
    """Why the decoder cannot reconstruct: relu4_1 statistics of the random encoder, and for each
    held-out photo the relu4_1 content loss (the training loss's content term, MSE) and the edge r
    of (a) the photo blurred (average-pooled ×k, bilinear back up: smooth images that keep its
    edges) and (b) images optimised directly for that loss (Adam on the pixels from flat grey, at
    full and at 1/4 resolution): the lowest content loss reachable, and what it looks like."""
    import torch
    import torch.nn.functional as F
    from resty.metrics import edge_correlation
    enc = st.encoder
    out = {}
    for cn, c in contents.items():
        x01 = np.ascontiguousarray(c[: c.shape[0] // 8 * 8, : c.shape[1] // 8 * 8])
        x = torch.from_numpy(x01).permute(2, 0, 1)[None]
        hwc = lambda t: t[0].permute(1, 2, 0).numpy()                    # noqa: E731
        f4 = lambda im: enc(im, ("relu4_1",))["relu4_1"]                 # noqa: E731
        loss = lambda im: float(((f4(im) - f) ** 2).mean())              # noqa: E731
        with torch.no_grad():
            f = f4(x)
            v = f[0].reshape(f.shape[1], -1)
            d = {"relu4_1_rms": float(f.pow(2).mean().sqrt()),
                 "dead_channels": float((v.max(1).values <= 0).float().mean()),
                 "channel_mean_median": float(v.mean(1).median()), "channel_std_median": float(v.std(1).median()),
                 "flat_grey": {"loss": loss(torch.full_like(x, 0.5)), "edge_r": 0.0}}
            for k in (2, 4, 8):
                b = F.interpolate(F.avg_pool2d(x, k), scale_factor=k, mode="bilinear", align_corners=False)
                d[f"blur_x{k}"] = {"loss": loss(b), "edge_r": edge_correlation(hwc(b), x01)}
        for k in (1, 4):
            up = (lambda t: t) if k == 1 else (lambda t, k=k: F.interpolate(t, scale_factor=k, mode="bilinear",
                                                                             align_corners=False))
            z = torch.full((1, 3, x.shape[2] // k, x.shape[3] // k), 0.5, requires_grad=True)
            opt = torch.optim.Adam([z], lr=0.02)
            for _ in range(steps):
                opt.zero_grad()
                l_ = ((f4(up(z)) - f) ** 2).mean()
                l_.backward()
                opt.step()
            with torch.no_grad():
                im = up(z).clamp(0, 1)
                d[f"optimised_1/{k}"] = {"loss": loss(im), "edge_r": edge_correlation(hwc(im), x01)}
        out[cn] = d
        print(f"  {cn}: relu4_1 rms {d['relu4_1_rms']:.2f}, dead channels {d['dead_channels']:.0%}, channel "
              f"mean/std (median) {d['channel_mean_median']:.2f}/{d['channel_std_median']:.2f}")
        for key in ("flat_grey", "blur_x2", "blur_x4", "blur_x8", "optimised_1/1", "optimised_1/4"):
            print(f"    {key:14s} relu4_1 content loss {d[key]['loss']:.3f}  edge r {d[key]['edge_r']:.3f}")
    return out


def figure(st, contents, styles, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from resty.metrics import edge_correlation
    pairs = [(cn, sn) for cn, sn in zip(contents, styles)]
    cols = ["content", "style", "α = 0", "α = 0.5", "α = 1", "mask: both styles"]
    fig, axes = plt.subplots(len(pairs), len(cols), figsize=(2.0 * len(cols), 1.7 * len(pairs)))
    s_all = list(styles.values())
    for r, (cn, sn) in enumerate(pairs):
        c, s = contents[cn], styles[sn]
        h, w = c.shape[:2]
        m = np.zeros((h, w))
        m[:, : w // 2] = 1.0
        ims = [c, s] + [st.stylize(c, s, alpha=a) for a in (0.0, 0.5, 1.0)]
        ims.append(st.stylize(c, [s, [x for x in s_all if x is not s][0]], mask=m))
        for k, (ax, im) in enumerate(zip(axes[r], ims)):
            ax.imshow(np.clip(im, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            title = cols[k] if r == 0 else ""
            if 2 <= k <= 4:
                title += f"\nedge r {edge_correlation(im, c):.2f}"
            ax.set_title(title, fontsize=7)
        axes[r][0].set_ylabel(f"{cn}\n× {sn}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    from PIL import Image                                 # 256 colours: a small file for the docs
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--weights", default="random:0", help="encoder weights (default random:0: no download)")
    ap.add_argument("--preset", default="pytorch-adain")
    ap.add_argument("--style-weight", type=float, default=1.0,
                    help="style weight (default 1: random VGG features have other magnitudes than ImageNet's)")
    ap.add_argument("--widths", default="128,64,32", help="decoder widths (paper: 256,128,64)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=64, help="training crop (px)")
    ap.add_argument("--load-size", type=int, default=128, help="short side before the crop (px)")
    ap.add_argument("--eval-size", type=int, default=128, help="short side of the evaluation photos (px)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="adain-run")
    ap.add_argument("--figure", default=None, help="also write the figure here (e.g. docs/adain.png)")
    ap.add_argument("--curve-every", type=int, default=0, help="edge r of the held-out pairs every N steps")
    ap.add_argument("--diagnose", action="store_true",
                    help="first: the random encoder's relu4_1 statistics and how well its content loss pins edges")
    ap.add_argument("--quick", action="store_true", help="3 steps at 32 px (a smoke run)")
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.image_size, a.load_size, a.eval_size, a.widths = 3, 32, 48, 48, "16,8,8"
    from resty.adain import get_adain_preset
    from resty.backends import get_backend
    from resty.images import save_image
    if a.backend == "torch":
        import torch
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    for sub in ("content", "styles"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for n in TRAIN_CONTENT:
        save_image(sample(n, a.load_size), out / "content" / f"{n}.png", overwrite=True)
    for n in TRAIN_STYLES:
        save_image(sample(n, a.load_size), out / "styles" / f"{n}.png", overwrite=True)
    contents = {n: sample(n, a.eval_size) for n in TEST_CONTENT}
    styles = {n: sample(n, a.eval_size) for n in TEST_STYLES}

    p = get_adain_preset(a.preset)
    widths = tuple(int(x) for x in a.widths.split(","))
    p = p.replace(adain=p.adain.replace(decoder_widths=widths, load_size=a.load_size, style_weight=a.style_weight),
                  training=p.training.replace(num_workers=1, checkpoint_every=max(1, a.steps // 4)))
    S = get_backend(a.backend).AdaINStylizer
    st = S(p, weights=a.weights, decoder_weights="random:0")
    diag = None
    if a.diagnose:
        print("diagnosis (relu4_1 content loss vs edge r on the held-out photos):")
        diag = diagnose(st, contents, steps=10 if a.quick else 150)
    before = evaluate(st, contents, styles, alphas=(0.0, 1.0))
    curve: list = []
    cb = learning_curve_callback(st, contents, styles, a.curve_every, curve) if a.curve_every else None
    t0 = time.perf_counter()
    summary = st.fit(str(out / "content"), str(out / "styles"), steps=a.steps, batch_size=a.batch_size,
                     image_size=a.image_size, lr=a.lr, checkpoint_dir=str(out / "ckpt"), resume=True,
                     progress=True, callback=cb)
    train_s = time.perf_counter() - t0
    st.save(out / "decoder.safetensors", overwrite=True)
    after = evaluate(st, contents, styles)
    hist = summary["history"]
    report = {"preset": p.to_dict(), "weights": a.weights, "steps": a.steps, "batch_size": a.batch_size,
              "image_size": a.image_size, "lr": a.lr, "train_seconds": train_s,
              "loss_first": hist[0] if hist else None, "loss_last": hist[-1] if hist else None,
              "untrained": before, "trained": after, "curve": curve, "diagnosis": diag}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    for label, rows in (("untrained decoder", before), ("trained decoder", after)):
        print(f"\n{label}")
        for r in rows:
            print(f"  {r['content']} × {r['style']}: content's own mean+std distance {r['content_dist_meanstd']:.3f}")
            for x in r["alphas"]:
                print(f"    α {x['alpha']:.2f}: mean+std {x['dist_meanstd']:.3f}, mean+cov {x['dist_meancov']:.4f}, "
                      f"edge r {x['edge_corr']:.3f}")
    if a.figure:
        figure(st, contents, styles, Path(a.figure))
        print(f"figure: {a.figure}")
    print(f"trained {a.steps} steps in {train_s:.0f} s; report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
