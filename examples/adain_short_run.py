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

    python examples/adain_short_run.py --steps 150 --out adain-run --figure docs/adain.png
    python examples/adain_short_run.py --quick          # 3 steps, 32 px: a smoke run
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TRAIN_CONTENT = ("astronaut", "rocket", "stereo_motorcycle", "camera", "coins")
TRAIN_STYLES = ("retina", "colorwheel", "brick", "grass", "gravel", "logo")
TEST_CONTENT = ("coffee", "chelsea")
TEST_STYLES = ("immunohistochemistry", "hubble_deep_field")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def sample(name: str, short: int) -> np.ndarray:
    """A scikit-image sample as H×W×3 float32 in [0, 1], its short side resized to ``short``."""
    import skimage.data
    from resty.images import _scale_round, resize_to
    a = getattr(skimage.data, name)()
    a = a[0] if isinstance(a, tuple) else a
    a = np.asarray(a)
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
    before = evaluate(st, contents, styles, alphas=(0.0, 1.0))
    t0 = time.perf_counter()
    summary = st.fit(str(out / "content"), str(out / "styles"), steps=a.steps, batch_size=a.batch_size,
                     image_size=a.image_size, lr=a.lr, checkpoint_dir=str(out / "ckpt"), resume=True,
                     progress=True)
    train_s = time.perf_counter() - t0
    st.save(out / "decoder.safetensors", overwrite=True)
    after = evaluate(st, contents, styles)
    hist = summary["history"]
    report = {"preset": p.to_dict(), "weights": a.weights, "steps": a.steps, "batch_size": a.batch_size,
              "image_size": a.image_size, "lr": a.lr, "train_seconds": train_s,
              "loss_first": hist[0] if hist else None, "loss_last": hist[-1] if hist else None,
              "untrained": before, "trained": after}
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
