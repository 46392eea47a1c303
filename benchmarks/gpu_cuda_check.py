"""Run both methods on a GPU and time them: ``python benchmarks/gpu_cuda_check.py [--quick] [--device D]``.

Prints one JSON line per measurement (and writes them to ``--out`` if given):
correctness on the device (float64 features against the CPU, a Gatys run at 512 px, a fit),
Gatys ms per iteration (Adam and L-BFGS) at 512 px, fast-network inference ms at 1024 px, and
training images/s at 256 px (batch 16, VGG16), each in float32 (TF32 off), TF32 and bf16.
Random weights (``random:0``): timings do not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from resty import runtime  # noqa: E402
from resty.gatys import StepRecorder  # noqa: E402
from resty_torch import FastStylizer, GatysStylizer, VGGFeatures, set_tf32  # noqa: E402
from resty_torch.device import autocast  # noqa: E402
from resty_torch.optim import make_adam  # noqa: E402

RECORDS = []


def emit(**kw):
    RECORDS.append(kw)
    print(json.dumps(kw), flush=True)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, reps, warm=2):
    for _ in range(warm):
        fn()
    sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return (time.perf_counter() - t) / reps


MODES = (("float32", False, None), ("tf32", True, None), ("bf16", False, "bf16"))


def gatys_loop(g, optimizer, content, style, n):
    """A function running ``n`` iterations of ``g``'s optimiser loop from the content, the
    targets computed once beforehand (as inside ``stylize``)."""
    targets = g._targets(content, [style], (1.0,))
    x0 = g._tensor(content)
    run = g._run_adam if optimizer == "adam" else g._run_lbfgs

    def loop():
        img = x0.detach().clone().requires_grad_(True)
        run(img, targets, n, StepRecorder([], None, runtime.Progress(0, False)))
    return loop


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke test of this script)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--extras", action="store_true",
                    help="only: where the Adam loop syncs, cudnn.benchmark, torch.compile")
    a = ap.parse_args(argv)
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    q = a.quick
    gs, fs, ts, bs = (64, 64, 32, 2) if q else (512, 1024, 256, 16)
    rng = np.random.default_rng(0)
    content = rng.random((gs, gs, 3)).astype(np.float32)
    style = rng.random((gs, gs, 3)).astype(np.float32)
    emit(kind="env", torch=torch.__version__, device=str(dev),
         name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu")
    if a.extras:
        extras(dev, q, content, style, gs, fs)
        if a.out:
            with open(a.out, "w") as fh:
                json.dump(RECORDS, fh, indent=1)
        return

    # 1. float64 features on the device equal the CPU's (TF32 off).
    set_tf32(False)
    img = torch.from_numpy(rng.random((1, 3, 48, 64)))
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    vc = VGGFeatures("vgg19", "random:0", "avg", layers, dtype="float64", device="cpu")
    vd = VGGFeatures("vgg19", "random:0", "avg", layers, dtype="float64", device=dev)
    fc, fd = vc(img), vd(img.to(dev))
    emit(kind="float64_features_device_vs_cpu",
         max_rel=max(float((fd[l].cpu() - fc[l]).abs().max() / fc[l].abs().max()) for l in layers))

    # 2. Gatys: one real run per optimiser, then ms per iteration per mode.
    for preset, opt in (("restynet", "adam"), ("gatys2015", "lbfgs")):
        for mode, tf32, prec in MODES:
            set_tf32(tf32)
            g = GatysStylizer(preset, weights="random:0", device=dev, precision=prec)
            n = 5 if q else 50
            out = g.stylize(content, style, iterations=n, image_size=gs, init="content" if opt == "adam" else "noise")
            h = [x["total"] for x in g.history]
            # Time the optimisation loop alone (targets precomputed, as inside stylize).
            per = timed(gatys_loop(g, opt, content, style, n), dev, 1, warm=1) / n
            emit(kind="gatys", preset=preset, optimizer=opt, mode=mode, size=gs, ms_per_iter=round(per * 1e3, 3),
                 loss_first=h[0], loss_last=h[-1], finite=bool(np.isfinite(out).all()), shape=list(out.shape))
    # No host sync inside the Adam loop: count synchronisations torch reports (CUDA only).
    if dev.type == "cuda":
        set_tf32(False)
        g = GatysStylizer("restynet", weights="random:0", device=dev)
        gatys_loop(g, "adam", content, style, 3)()
        loop = gatys_loop(g, "adam", content, style, 24)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                loop()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        emit(kind="adam_loop_host_syncs", steps=24, syncs_reported=len(w),
             note="expected: only the deferred loss read-backs (resty.gatys.run_deferred)")

    # 3. Fast network inference at fs px.
    for mode, tf32, prec in MODES:
        set_tf32(tf32)
        for cl in (False, True):
            f = FastStylizer("johnson2016", weights="random:0", device=dev, precision=prec, channels_last=cl)
            x = torch.rand(1, 3, fs, fs, device=dev)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)

            def infer():
                with torch.inference_mode(), autocast(dev, f.precision):
                    return f.net(x)
            per = timed(infer, dev, 3 if q else 20)
            emit(kind="fast_inference", mode=mode, channels_last=cl, size=fs, ms=round(per * 1e3, 3))

    # 4. Training throughput: the step on a fixed device batch, then a real fit() with workers.
    for mode, tf32, prec in MODES:
        set_tf32(tf32)
        f = FastStylizer("johnson2016", weights="random:0", device=dev, precision=prec)
        grams = f._style_grams(style, None, None)
        opt = make_adam(f.net.parameters(), f.preset.training.adam, foreach=None)
        xb = torch.rand(bs, 3, ts, ts, device=dev)

        def step():
            opt.zero_grad(set_to_none=True)
            terms = f._train_loss(xb, grams)
            terms[0].backward()
            opt.step()
        per = timed(step, dev, 2 if q else 20)
        emit(kind="train_step", mode=mode, size=ts, batch=bs, ms=round(per * 1e3, 2),
             images_per_s=round(bs / per, 1))
    set_tf32(False)
    photos = [rng.random((ts + 40, ts + 60, 3)).astype(np.float32) for _ in range(64 if not q else 6)]
    f = FastStylizer("johnson2016", weights="random:0", device=dev, precision="bf16")
    s = f.fit(photos, style, steps=3 if q else 40, batch_size=bs, image_size=ts, num_workers=2 if q else 12)
    emit(kind="fit_pipeline_bf16", steps=s["steps"], images_per_s=round(s["images_per_second"], 1),
         loss_first=s["history"][0]["total"], loss_last=s["history"][-1]["total"], seconds=round(s["seconds"], 2))
    y = f.stylize(content)
    emit(kind="fit_then_stylize", shape=list(y.shape), finite=bool(np.isfinite(y).all()))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(RECORDS, fh, indent=1)


def _gatys_ms(g, content, style, n, dev, reps=2):
    return timed(gatys_loop(g, "adam", content, style, n), dev, reps, warm=1) / n


def extras(dev, q, content, style, gs, fs):
    n = 5 if q else 50
    # Where does the Adam loop synchronise?  (file:line of each reported sync)
    if dev.type == "cuda":
        set_tf32(False)
        g = GatysStylizer("restynet", weights="random:0", device=dev)
        gatys_loop(g, "adam", content, style, 3)()
        loop = gatys_loop(g, "adam", content, style, 24)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                loop()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        emit(kind="adam_loop_sync_sites", sites=[f"{x.filename.split('/')[-1]}:{x.lineno}" for x in w])
    # Repeat float32 (clock warm-up check) and cudnn.benchmark on/off.
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        for mode, tf32 in (("float32", False), ("tf32", True)):
            set_tf32(tf32)
            g = GatysStylizer("restynet", weights="random:0", device=dev)
            emit(kind="gatys_adam", mode=mode, cudnn_benchmark=bench, size=gs,
                 ms_per_iter=round(_gatys_ms(g, content, style, n, dev) * 1e3, 3))
            f = FastStylizer("johnson2016", weights="random:0", device=dev)
            x = torch.rand(1, 3, fs, fs, device=dev)

            def infer():
                with torch.inference_mode():
                    return f.net(x)
            emit(kind="fast_inference", mode=mode, cudnn_benchmark=bench, size=fs,
                 ms=round(timed(infer, dev, 3 if q else 20) * 1e3, 3))
    torch.backends.cudnn.benchmark = False
    # torch.compile: Gatys (TF32) and the fast network (fp16 autocast, and TF32).
    set_tf32(True)
    t = time.perf_counter()
    g = GatysStylizer("restynet", weights="random:0", device=dev, compile=True)
    ms = _gatys_ms(g, content, style, n, dev)
    emit(kind="gatys_adam_compiled", mode="tf32", size=gs, ms_per_iter=round(ms * 1e3, 3),
         total_seconds_incl_compile=round(time.perf_counter() - t, 1))
    for prec in ("fp16", None):
        t = time.perf_counter()
        f = FastStylizer("johnson2016", weights="random:0", device=dev, precision=prec, compile=True)
        x = torch.rand(1, 3, fs, fs, device=dev)

        def infer():
            with torch.inference_mode(), autocast(dev, f.precision):
                return f._net_fn(x)
        ms = timed(infer, dev, 3 if q else 20, warm=3)
        emit(kind="fast_inference_compiled", mode=prec or "tf32", size=fs, ms=round(ms * 1e3, 3),
             total_seconds_incl_compile=round(time.perf_counter() - t, 1))
    set_tf32(False)


if __name__ == "__main__":
    main()
