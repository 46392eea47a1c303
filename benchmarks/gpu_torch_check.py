"""One prepared GPU check for resty_torch with plain-PyTorch baselines.

Runs both methods on CUDA at 512 px, then times, in float32 (TF32 off), TF32 and bf16:
Gatys ms per iteration (Adam and L-BFGS) at 512 px, fast-network inference ms at 1024 px, and
training images/s at 256 px (batch 16, VGG16 loss network).  Each Resty figure is paired
with a plain-PyTorch baseline written the tutorials' way and measured in the same run.
It also checks CUDA against the NumPy float64 oracle (features, loss) with TF32 off.

Usage: python benchmarks/gpu_torch_check.py --out DIR [--quick]
Prints a markdown table and writes DIR/gpu_torch.json.  Random weights (timings do not
depend on the values).  Device synchronisation before every clock read; median of N runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RESTY_OFFLINE", "1")

import numpy as np
import torch

from resty import presets, reference as R
from resty.images import resize_longest, sample_images
from resty_torch import FastStylizer, GatysStylizer, VGGFeatures
from resty_torch.device import set_tf32
from resty.bench import baselines_torch as B

ROWS = []


DEV = "cuda"


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def peak_gib():
    return torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else None


def reset_peak():
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()


def timed(fn, n, warmup=2):
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), (max(ts) - min(ts))


def row(workload, mode, impl, value, unit, spread=None, baseline=None, peak=None):
    r = {"workload": workload, "mode": mode, "impl": impl, "value": value, "unit": unit,
         "spread": spread, "peak_gib": peak}
    if baseline:
        r["ratio_vs_baseline"] = (baseline / value) if unit != "img/s" else (value / baseline)
    ROWS.append(r)
    print(json.dumps(r), flush=True)
    return r


def modes():
    return [("fp32", False, None), ("tf32", True, None), ("bf16", True, "bf16")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dry", action="store_true", help="tiny sizes on CPU, to check the script itself")
    args = ap.parse_args()
    global DEV
    G, FS, T, bs = (512, 1024, 256, 16) if not args.dry else (48, 64, 32, 2)
    if args.dry:
        DEV = "cpu"
        args.quick = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    assert DEV == "cpu" or torch.cuda.is_available(), "needs CUDA"
    dev = torch.device(DEV)
    print("torch", torch.__version__, torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu", flush=True)
    imgs = sample_images()
    content = resize_longest(imgs["astronaut"], G)
    style = resize_longest(imgs.get("brick", imgs[sorted(imgs)[-1]]), G)

    # ---------------------------------------------------------------- correctness on CUDA
    set_tf32(False)
    small = resize_longest(content, 40)
    p = presets.get("gatys2015")
    v64 = VGGFeatures("vgg19", "random:0", "avg", layers=p.loss.all_layers, dtype="float64", device=DEV)
    x = torch.from_numpy(small).permute(2, 0, 1)[None].to(dev, torch.float64)
    f_cuda = {k: t.cpu().numpy() for k, t in v64(x).items()}
    from resty.weights import random_vgg
    ws = random_vgg("vgg19", 0, v64.preprocessing)
    f_ref = R.vgg_features(R.preprocess(small, v64.preprocessing), ws.tensors, p.vgg, p.loss.all_layers)
    rel = max(float(np.abs(f_cuda[k] - f_ref[k]).max() / np.abs(f_ref[k]).max()) for k in f_ref)
    print(f"CUDA float64 VGG19 features vs NumPy oracle: max rel diff {rel:.2e}", flush=True)
    ROWS.append({"workload": "parity: CUDA f64 VGG19 features vs oracle", "value": rel, "unit": "rel"})

    # ---------------------------------------------------------------- Gatys 512 px
    n_adam = 20 if args.quick else 50
    for mode, tf32, prec in modes():
        set_tf32(tf32)
        torch.cuda.reset_peak_memory_stats()
        g = GatysStylizer(presets.get("restynet"), weights="random:0", device=DEV, precision=prec)
        g.stylize(content, style, iterations=5, image_size=G)   # warm-up (cuDNN autotune)
        sync()
        t = time.perf_counter()
        img = g.stylize(content, style, iterations=n_adam, image_size=G)
        sync()
        ms = (time.perf_counter() - t) / n_adam * 1e3
        peak = peak_gib()
        assert img.shape[:2] == content.shape[:2] and np.isfinite(img).all()
        base = None
        if prec is None:
            ct = torch.from_numpy(content).permute(2, 0, 1)[None].contiguous().to(dev)
            st = torch.from_numpy(style).permute(2, 0, 1)[None].contiguous().to(dev)
            B.tutorial_gatys(ct, st, 5, "adam")
            sync()
            t = time.perf_counter()
            B.tutorial_gatys(ct, st, n_adam, "adam")
            sync()
            base = (time.perf_counter() - t) / n_adam * 1e3
            row(f"gatys adam step {G}px", mode, "baseline (tutorial)", base, "ms")
        row(f"gatys adam step {G}px", mode, "resty", ms, "ms", baseline=base, peak=peak)
        del g

    n_lbfgs = 100 if args.quick else 300
    for mode, tf32, prec in modes()[:2]:
        set_tf32(tf32)
        g = GatysStylizer(presets.get("pytorch-tutorial"), weights="random:0", device=DEV)
        g.stylize(content, style, iterations=5, image_size=G)
        sync()
        t = time.perf_counter()
        g.stylize(content, style, iterations=n_lbfgs, image_size=G)
        sync()
        s = time.perf_counter() - t
        ct = torch.from_numpy(content).permute(2, 0, 1)[None].contiguous().to(dev)
        st = torch.from_numpy(style).permute(2, 0, 1)[None].contiguous().to(dev)
        B.tutorial_gatys(ct, st, 5, "lbfgs")
        sync()
        t = time.perf_counter()
        B.tutorial_gatys(ct, st, n_lbfgs, "lbfgs")
        sync()
        b = time.perf_counter() - t
        row(f"gatys L-BFGS {n_lbfgs} evals {G}px", mode, "baseline (tutorial)", b, "s")
        row(f"gatys L-BFGS {n_lbfgs} evals {G}px", mode, "resty", s, "s", baseline=b)
        del g

    # ---------------------------------------------------------------- fast inference 1024 px
    x1024 = torch.rand(1, 3, FS, FS, device=dev)
    for mode, tf32, prec in modes():
        set_tf32(tf32)
        f = FastStylizer("pytorch-examples", weights="random:0", device=DEV, precision=prec)
        net = f.net.eval()
        dt = torch.bfloat16 if prec == "bf16" else None

        def run():
            with torch.inference_mode(), torch.autocast(DEV, dtype=dt, enabled=dt is not None):
                net(x1024)
        torch.cuda.reset_peak_memory_stats()
        ms, spread = timed(run, 10 if args.quick else 30)
        peak = peak_gib()
        base = None
        if prec is None:
            bnet = B.ExamplesTransformerNet().to(dev).eval()

            def brun():
                with torch.inference_mode():
                    bnet(x1024 * 255)
            base, _ = timed(brun, 10 if args.quick else 30)
            row(f"fast inference {FS}px", mode, "baseline (examples)", base * 1e3, "ms")
        row(f"fast inference {FS}px", mode, "resty", ms * 1e3, "ms", spread * 1e3,
            baseline=base * 1e3 if base else None, peak=peak)
        # end-to-end stylize (host image in, host image out)
        if mode == "tf32" and not args.dry:
            big = resize_longest(imgs["astronaut"], FS)
            e2e, _ = timed(lambda: f.stylize(big), 5)
            row(f"fast stylize() {FS}px end-to-end", mode, "resty", e2e * 1e3, "ms")
        del f

    # ---------------------------------------------------------------- training 256 px, batch 16
    for mode, tf32, prec in modes():
        set_tf32(tf32)
        torch.cuda.reset_peak_memory_stats()
        f = FastStylizer("johnson2016", weights="random:0", device=DEV, precision=prec)
        grams = f._style_grams(resize_longest(style, T), None, None)
        opt = torch.optim.Adam(f.net.parameters(), 1e-3)
        xb = torch.rand(bs, 3, T, T, device=dev)
        f.net.train()

        def step():
            opt.zero_grad(set_to_none=True)
            terms = f._train_loss(xb, grams)
            terms[0].backward()
            opt.step()
        s, spread = timed(step, 5 if args.quick else 20, warmup=3)
        peak = peak_gib()
        base = None
        if prec is None:
            bstep = B.examples_train_step_factory(dev, bs, T)
            bs_s, _ = timed(bstep, 5 if args.quick else 20, warmup=3)
            base = bs / bs_s
            row(f"fast training {T}px b{bs} (compute)", mode, "baseline (examples, VGG16)", base, "img/s")
        row(f"fast training {T}px b{bs} (compute)", mode, "resty (johnson2016, VGG16)", bs / s, "img/s",
            baseline=base, peak=peak)
        del f

    # fit() end to end, data pipeline included (Pillow decode + crops in DataLoader workers)
    set_tf32(True)
    data = [resize_longest(im, T + T // 4) for k, im in imgs.items()]
    f = FastStylizer("johnson2016", weights="random:0", device=DEV)
    summ = f.fit(data * 8, style, steps=30 if DEV == "cuda" else 3, batch_size=bs, image_size=T, num_workers=8 if DEV == "cuda" else 0)
    row(f"fit() {T}px b{bs} end-to-end (8 workers)", "tf32", "resty", summ["images_per_second"], "img/s")

    # ---------------------------------------------------------------- torch.compile (optional)
    try:
        if args.dry:
            raise RuntimeError("skipped in --dry")
        set_tf32(True)
        g = GatysStylizer(presets.get("restynet"), weights="random:0", device=DEV, compile=True,
                          channels_last=True)
        t = time.perf_counter()
        g.stylize(content, style, iterations=5, image_size=G)
        sync()
        print(f"compile warm-up {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        g.stylize(content, style, iterations=n_adam, image_size=G)
        sync()
        row(f"gatys adam step {G}px", "tf32+compile+channels_last", "resty",
            (time.perf_counter() - t) / n_adam * 1e3, "ms")
    except Exception as e:  # report, don't hide
        print("compile run failed:", repr(e)[:300], flush=True)
        traceback.print_exc()

    (out / "gpu_torch.json").write_text(json.dumps(ROWS, indent=1))
    print("\n| workload | mode | impl | value | unit | ratio vs baseline | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in ROWS:
        ratio = r.get("ratio_vs_baseline")
        print(f"| {r['workload']} | {r.get('mode', '')} | {r.get('impl', '')} | {r['value']:.4g} | {r['unit']} | "
              f"{'' if ratio is None else f'{ratio:.2f}x'} | "
              f"{'' if r.get('peak_gib') is None else format(r['peak_gib'], '.2f')} |")


if __name__ == "__main__":
    main()
