"""Explore the fast paths of the Johnson feed-forward network on one GPU.

Targets (one H200): stylize one 1024 px image in <= 1.5 ms; train at 256 px, batch 16,
VGG16 loss network, at >= 1500 images/s.

For each variant it measures ms/image at 1024 px (batch 1) and at 512 px (batch 8) through
``FastStylizer.stylize_tensor`` (device tensors in and out: the network, the fp32 cast and the
clamp; with ``cuda_graph`` one graph replay), the peak CUDA memory of those calls, the time of
the first call (capture / compile), and the largest absolute difference of the 1024 px output
from the float32 eager output (TF32 off) of the same weights.  Training: images/s of
``FastStylizer.make_train_step`` (forward through the transformer and VGG16, backward, Adam)
at 256 px, batch 16 and 32, and the first step's loss relative to the TF32 eager step's.
Also a torch.profiler breakdown (top kernels) of eager TF32 vs eager bf16 at 1024 px: why bf16
eager was slower than TF32.

Every variant runs in try/except (a failure is recorded, the rest go on) under a time limit,
and the whole run under ``--budget`` seconds (compile variants last, only if time is left).
Results go to ``--out`` (JSON, rewritten after every variant) and a table on stdout.

Usage (repo root):  python3 benchmarks/gpu_fast_explore.py --out $OUT/fast.json
CPU check of the script: python3 benchmarks/gpu_fast_explore.py --dry --out /tmp/fast.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RESTY_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401  (before anything that might import TensorFlow)

from resty.images import resize_to, sample_images  # noqa: E402
from resty_torch import FastStylizer  # noqa: E402
from resty_torch.device import set_tf32, get_tf32  # noqa: E402
from resty_torch.optim import make_adam  # noqa: E402

T0 = time.perf_counter()
RESULTS = {"inference": [], "training": [], "profile": {}, "errors": [], "notes": []}
ARGS = None


class VariantTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise VariantTimeout("variant time limit")


def elapsed() -> float:
    return time.perf_counter() - T0


def left() -> float:
    return ARGS.budget - elapsed()


def sync():
    if ARGS.device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak():
    if ARGS.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_mib():
    return torch.cuda.max_memory_allocated() / 2**20 if ARGS.device.startswith("cuda") else None


def free():
    gc.collect()
    if ARGS.device.startswith("cuda"):
        torch.cuda.empty_cache()


def timeit(fn, min_s=0.3, max_chunks=15, chunk=5):
    """Median over chunks of ``chunk`` back-to-back calls (one sync per chunk) of the time per
    call, in ms.  Back-to-back calls measure what a stream of images costs; the sync per chunk
    keeps the CPU from running ahead by more than a chunk."""
    if ARGS.dry:
        chunk, max_chunks = 1, 2
    fn()
    sync()
    per = []
    t_start = time.perf_counter()
    while len(per) < max_chunks and (len(per) < min(3, max_chunks) or time.perf_counter() - t_start < min_s):
        t = time.perf_counter()
        for _ in range(chunk):
            fn()
        sync()
        per.append((time.perf_counter() - t) / chunk)
    return statistics.median(per) * 1e3, (max(per) - min(per)) / statistics.median(per)


def save():
    if ARGS.out:
        p = Path(ARGS.out)
        p.parent.mkdir(parents=True, exist_ok=True)
        RESULTS["elapsed_s"] = round(elapsed(), 1)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(RESULTS, indent=1, default=str))
        os.replace(tmp, p)


def guarded(kind, name, limit_s, fn):
    """Run one variant with a time limit; record failures; never raise."""
    lim = max(1.0, min(limit_s, left()))
    if left() < 3:
        RESULTS["errors"].append({"kind": kind, "variant": name, "error": "skipped: budget exhausted"})
        print(f"[skip] {kind} {name}: budget exhausted", flush=True)
        return None
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, lim)
    t = time.perf_counter()
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one variant's failure must not stop the rest
        msg = f"{type(exc).__name__}: {exc}"
        RESULTS["errors"].append({"kind": kind, "variant": name, "error": msg[:2000],
                                  "traceback": traceback.format_exc()[-3000:]})
        print(f"[fail] {kind} {name} after {time.perf_counter() - t:.1f}s: {msg[:300]}", flush=True)
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        free()
        save()


# ----------------------------------------------------------------------------- inputs
def image_batch(side, batch):
    imgs = sample_images()
    names = ["astronaut", "coffee", "chelsea", "rocket", "brick", "camera", "astronaut", "coffee"]
    arr = []
    for i in range(batch):
        a = imgs.get(names[i % len(names)], imgs["astronaut"])
        arr.append(resize_to(a, (side, side)).astype(np.float32))
    x = torch.from_numpy(np.ascontiguousarray(np.stack(arr).transpose(0, 3, 1, 2)))
    return x.to(ARGS.device)


# ----------------------------------------------------------------------------- inference
# (name, preset, FastStylizer kwargs, tf32, cudnn.benchmark in eager, description)
def inference_variants():
    V = []
    add = lambda name, kw, tf32=True, bench=False, preset="restynet", desc="": V.append(  # noqa: E731
        (name, preset, kw, tf32, bench, desc))
    add("eager tf32", {}, desc="as resty bench fast-infer tf32 (cudnn.benchmark off)")
    add("eager tf32 cl", {"channels_last": True})
    add("eager bf16 (torch IN)", {"precision": "bf16", "norm_impl": "torch"},
        desc="bf16 with nn.InstanceNorm2d: the old path (12 ms)")
    add("eager bf16", {"precision": "bf16"}, desc="bf16, fused fp32-stat instance norm (norm_impl auto)")
    add("eager bf16 cl", {"precision": "bf16", "channels_last": True})
    add("eager bf16 cl (torch IN)", {"precision": "bf16", "channels_last": True, "norm_impl": "torch"})
    add("eager fp16", {"precision": "fp16"})
    add("eager fp16 cl", {"precision": "fp16", "channels_last": True})
    add("eager bf16 cl catpad", {"precision": "bf16", "channels_last": True, "pad_impl": "cat"},
        desc="reflection pad by cat: keeps channels_last")
    add("eager bf16 cl +cudnn.bench", {"precision": "bf16", "channels_last": True}, bench=True)
    add("graph tf32", {"cuda_graph": True})
    add("graph tf32 cl", {"cuda_graph": True, "channels_last": True})
    add("graph bf16", {"cuda_graph": True, "precision": "bf16"})
    add("graph bf16 cl", {"cuda_graph": True, "precision": "bf16", "channels_last": True},
        desc="= FastStylizer(fast=True)")
    add("graph bf16 cl (torch IN)", {"cuda_graph": True, "precision": "bf16", "channels_last": True,
                                     "norm_impl": "torch"})
    add("graph fp16 cl", {"cuda_graph": True, "precision": "fp16", "channels_last": True})
    add("graph bf16 cl pad8", {"cuda_graph": True, "precision": "bf16", "channels_last": True, "pad_channels": 8})
    add("graph fp16 cl pad8", {"cuda_graph": True, "precision": "fp16", "channels_last": True, "pad_channels": 8})
    add("graph fp16 pad8 (NCHW)", {"cuda_graph": True, "precision": "fp16", "pad_channels": 8})
    add("graph bf16 pad8 (NCHW)", {"cuda_graph": True, "precision": "bf16", "pad_channels": 8})
    add("graph fp16 cl pad8 catpad", {"cuda_graph": True, "precision": "fp16", "channels_last": True,
                                      "pad_channels": 8, "pad_impl": "cat"})
    add("graph bf16 cl pad8 catpad", {"cuda_graph": True, "precision": "bf16", "channels_last": True,
                                      "pad_channels": 8, "pad_impl": "cat"})
    add("graph fp16 pad8 s2d (NCHW)", {"cuda_graph": True, "precision": "fp16", "pad_channels": 8, "io_convs": "s2d"},
        desc="conv_in/conv_out on pixel_unshuffle'd maps (12 -> 16 channels)")
    add("graph bf16 cl pad8 s2d", {"cuda_graph": True, "precision": "bf16", "channels_last": True, "pad_channels": 8,
                                   "io_convs": "s2d"})
    add("light: eager tf32", {}, preset="restynet-light")
    add("light: graph bf16 cl", {"cuda_graph": True, "precision": "bf16", "channels_last": True},
        preset="restynet-light")
    add("light: graph fp16 cl pad8", {"cuda_graph": True, "precision": "fp16", "channels_last": True,
                                      "pad_channels": 8}, preset="restynet-light")
    add("light: graph fp16 pad8 (NCHW)", {"cuda_graph": True, "precision": "fp16", "pad_channels": 8},
        preset="restynet-light")
    return V


def compile_variants():
    return [
        ("compile+graph fp16 pad8 (NCHW)", "restynet", {"cuda_graph": True, "precision": "fp16",
                                                         "pad_channels": 8, "compile": True}, True, False,
         "torch.compile (default mode, dynamic=False) captured in resty's graph"),
        ("compile+graph fp16 pad8 s2d (NCHW)", "restynet", {"cuda_graph": True, "precision": "fp16",
                                                             "pad_channels": 8, "io_convs": "s2d", "compile": True},
         True, False, "as above with conv_in/conv_out on pixel_unshuffle'd maps"),
        ("compile(max-autotune-no-cg)+graph fp16 cl pad8", "restynet",
         {"cuda_graph": True, "precision": "fp16", "channels_last": True, "pad_channels": 8,
          "compile": "max-autotune-no-cudagraphs"}, True, False,
         "Inductor max-autotune (GEMM/conv autotuning), captured in resty's graph"),
    ]


REFS = {}


def reference(preset, x):
    """float32 eager output of ``preset``'s random:0 weights, TF32 off."""
    if preset not in REFS:
        set_tf32(False)
        torch.backends.cudnn.benchmark = False
        f = FastStylizer(preset, weights="random:0", device=ARGS.device)
        REFS[preset] = f.stylize_tensor(x).float()
        del f
    return REFS[preset]


def neutral_precision_api():
    """torch >= 2.9: Inductor's max-autotune reads the legacy matmul-precision getter, which
    raises once set_tf32 (new fp32_precision API) made cuda and mkldnn disagree; put the
    per-backend settings back to 'none' (inherit: IEEE) before compiling."""
    for mod in (torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)):
        if mod is not None and hasattr(mod, "fp32_precision"):
            mod.fp32_precision = "none"


def run_inference(name, preset, kw, tf32, bench, desc, sizes):
    if kw.get("compile"):
        neutral_precision_api()
        tf32 = None
    else:
        set_tf32(tf32)
    torch.backends.cudnn.benchmark = bench
    rec = {"variant": name, "preset": preset, "options": {k: v for k, v in kw.items()}, "tf32": tf32,
           "cudnn_benchmark_eager": bench, "desc": desc}
    RESULTS["inference"].append(rec)
    f = FastStylizer(preset, weights="random:0", device=ARGS.device, **kw)
    f.net.eval()
    for side, batch in sizes:
        x = XS[(side, batch)]
        key = f"{side}x{batch}"
        t = time.perf_counter()
        y = f.stylize_tensor(x, copy=False)
        sync()
        rec[f"first_call_s_{key}"] = round(time.perf_counter() - t, 3)
        if (side, batch) == sizes[0]:
            ref = reference(preset, x)
            if tf32 is not None:
                set_tf32(tf32)
            else:
                neutral_precision_api()
            torch.backends.cudnn.benchmark = bench
            y = f.stylize_tensor(x, copy=False)
            d = (y.float() - ref).abs()
            rec["max_abs_err"] = float(d.max())
            rec["mean_abs_err"] = float(d.mean())
        reset_peak()
        ms, spread = timeit(lambda: f.stylize_tensor(x, copy=False), min_s=ARGS.min_s)
        rec[f"ms_per_image_{key}"] = ms / batch
        rec[f"spread_{key}"] = round(spread, 3)
        rec[f"peak_mib_{key}"] = peak_mib()
        if left() < 20 and (side, batch) != sizes[-1]:
            rec["note"] = "later sizes skipped: budget"
            break
    rec["graphs_captured"] = f._infer.captures
    rec["graph_failures"] = list(f._infer.failures.values())
    f._infer.reset()
    print(f"[inf ] {name:48s} {SZ1}: {rec.get('ms_per_image_' + SZ1, float('nan')):8.3f} ms   "
          f"{SZ2}: {rec.get('ms_per_image_' + SZ2, float('nan')):8.3f} ms/img   "
          f"err {rec.get('max_abs_err', float('nan')):.2e}   peak {rec.get('peak_mib_' + SZ1)} MiB   "
          f"first {rec.get('first_call_s_' + SZ1)} s", flush=True)
    return rec


# ----------------------------------------------------------------------------- training
def training_variants():
    """In priority order (a budget cut drops the tail)."""
    V = []
    add = lambda name, kw, tf32=True: V.append((name, kw, tf32))  # noqa: E731
    add("eager tf32", {}, True)                    # the reference of the first-loss check
    add("graph bf16", {"cuda_graph": True, "precision": "bf16"})     # best so far (559 img/s)
    # channels_last now keeps its layout end to end (pad_impl/norm_impl "auto": cat reflection
    # pad, fused norm); "torch pad" is the old path (nn.ReflectionPad2d returns NCHW).
    add("graph bf16 cl", {"cuda_graph": True, "precision": "bf16", "channels_last": True})
    # compile=True compiles the whole training loss (transformer + VGG + losses) inside the capture
    add("compile+graph bf16 cl", {"cuda_graph": True, "precision": "bf16", "channels_last": True, "compile": True})
    add("graph bf16 cl pad8 s2d", {"cuda_graph": True, "precision": "bf16", "channels_last": True,
                                   "pad_channels": 8, "io_convs": "s2d"})
    add("graph bf16 cl torch pad", {"cuda_graph": True, "precision": "bf16", "channels_last": True,
                                    "pad_impl": "torch"})
    add("compile+graph bf16", {"cuda_graph": True, "precision": "bf16", "compile": True})
    add("graph tf32", {"cuda_graph": True})
    add("eager bf16", {"precision": "bf16"})
    add("eager bf16 cl", {"precision": "bf16", "channels_last": True})
    add("graph bf16 cl pad8", {"cuda_graph": True, "precision": "bf16", "channels_last": True, "pad_channels": 8})
    return V


TRAIN_REF = {}


def run_training(name, kw, tf32, batches, compile_net=False):
    set_tf32(tf32)
    torch.backends.cudnn.benchmark = False
    rec = {"variant": name, "options": dict(kw), "tf32": tf32, "compile": compile_net}
    RESULTS["training"].append(rec)
    kw = dict(kw)
    compile_net = kw.pop("compile", compile_net)
    rec["compile"] = compile_net
    for bs in batches:
        f = FastStylizer("johnson2016", weights="random:0", device=ARGS.device, compile=compile_net, **kw)
        grams = f._style_grams(STYLE, None, None)
        opt = make_adam(f.net.parameters(), f.preset.training.adam, foreach=None)
        f.net.train()
        step = f.make_train_step(grams, opt)
        x = XT[bs]
        if f.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = time.perf_counter()
        terms = step(x)
        first = float(terms[0])
        rec[f"first_call_s_b{bs}"] = round(time.perf_counter() - t, 3)
        rec[f"first_loss_b{bs}"] = first
        if not np.isfinite(first):
            raise RuntimeError(f"non-finite first loss {first}")
        if name == "eager tf32":
            TRAIN_REF[bs] = first
        if bs in TRAIN_REF:
            rec[f"loss_rel_diff_vs_eager_tf32_b{bs}"] = abs(first - TRAIN_REF[bs]) / abs(TRAIN_REF[bs])
        reset_peak()
        ms, spread = timeit(lambda: step(x), min_s=ARGS.min_s, max_chunks=8, chunk=3)
        rec[f"img_per_s_b{bs}"] = bs / (ms / 1e3)
        rec[f"spread_b{bs}"] = round(spread, 3)
        rec[f"peak_mib_b{bs}"] = peak_mib()
        last = float(step(x)[0])
        rec[f"loss_after_b{bs}"] = last
        if not np.isfinite(last):
            raise RuntimeError(f"non-finite loss after training steps: {last}")
        if hasattr(step, "reset"):
            step.reset()
        del f, opt, step, grams
        free()
    print(f"[train] {name:40s} " + "   ".join(f"b{bs}: {rec.get(f'img_per_s_b{bs}', float('nan')):7.0f} img/s"
                                               for bs in batches)
          + f"   peak {rec.get(f'peak_mib_b{batches[0]}')} MiB   first-loss rel diff "
            f"{rec.get(f'loss_rel_diff_vs_eager_tf32_b{batches[0]}')}", flush=True)
    return rec


# ----------------------------------------------------------------------------- profile
def profile(name, kw, tf32, train_bs=None):
    """Top device kernels (self time; aten:: rows are the ops that launched them and overlap
    with the kernel rows, so the per-call total counts both)."""
    from torch.profiler import ProfilerActivity, profile as tprofile
    set_tf32(tf32)
    torch.backends.cudnn.benchmark = False
    if train_bs:
        f = FastStylizer("johnson2016", weights="random:0", device=ARGS.device, **kw)
        grams = f._style_grams(STYLE, None, None)
        opt = make_adam(f.net.parameters(), f.preset.training.adam, foreach=None)
        f.net.train()
        step = f.make_train_step(grams, opt)
        x = XT[train_bs].contiguous(memory_format=torch.channels_last) if f.channels_last else XT[train_bs]
        call = lambda: step(x)  # noqa: E731
    else:
        f = FastStylizer("restynet", weights="random:0", device=ARGS.device, **kw)
        f.net.eval()
        x = XS[(S1, 1)]
        call = lambda: f.stylize_tensor(x, copy=False)  # noqa: E731
    for _ in range(2):
        call()
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ARGS.device.startswith("cuda") else [])
    with tprofile(activities=acts) as prof:
        for _ in range(3):
            call()
        sync()
    rows = []
    for e in prof.key_averages():
        dev_t = getattr(e, "self_device_time_total", None)
        if dev_t is None:
            dev_t = getattr(e, "self_cuda_time_total", 0)
        rows.append((dev_t / 3 / 1e3, e.key, e.count // 3, getattr(e, "self_cpu_time_total", 0) / 3 / 1e3))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows if not r[1].startswith("aten::"))
    top = [{"kernel": k[:110], "ms_per_call": round(t, 4), "n_per_call": n} for t, k, n, _ in rows[:12]]
    RESULTS["profile"][name] = {"kernel_ms_total_per_call": round(total, 3), "top": top}
    print(f"[prof] {name}: kernel time {total:.3f} ms per call; top kernels and ops:", flush=True)
    for r in top[:12]:
        print(f"         {r['ms_per_call']:8.3f} ms  x{r['n_per_call']:<3d} {r['kernel']}", flush=True)
    return True


# ----------------------------------------------------------------------------- table
def table():
    lines = ["", f"## fast network, {ARGS.device} ({RESULTS['env'].get('gpu', '')})", "",
             f"| variant | ms/img {SZ1} | ms/img {SZ2} | peak MiB {SZ1} | peak MiB {SZ2} | max abs err | first call s |",
             "|---|---|---|---|---|---|---|"]

    def f(v, fmt="{:.3f}"):
        return "" if v is None else (fmt.format(v) if isinstance(v, (int, float)) else str(v))
    for r in RESULTS["inference"]:
        lines.append(f"| {r['variant']} | {f(r.get('ms_per_image_' + SZ1))} | {f(r.get('ms_per_image_' + SZ2))} | "
                     f"{f(r.get('peak_mib_' + SZ1), '{:.0f}')} | {f(r.get('peak_mib_' + SZ2), '{:.0f}')} | "
                     f"{f(r.get('max_abs_err'), '{:.2e}')} | {f(r.get('first_call_s_' + SZ1), '{:.1f}')} |")
    lines += ["", f"| training variant (johnson2016, VGG16, {TS} px) | img/s b{TB[0]} | img/s b{TB[-1]} | "
              f"peak MiB b{TB[0]} | peak MiB b{TB[-1]} | first-loss rel diff vs eager tf32 |", "|---|---|---|---|---|---|"]
    for r in RESULTS["training"]:
        lines.append(f"| {r['variant']} | {f(r.get(f'img_per_s_b{TB[0]}'), '{:.0f}')} | "
                     f"{f(r.get(f'img_per_s_b{TB[-1]}'), '{:.0f}')} | {f(r.get(f'peak_mib_b{TB[0]}'), '{:.0f}')} | "
                     f"{f(r.get(f'peak_mib_b{TB[-1]}'), '{:.0f}')} | "
                     f"{f(r.get(f'loss_rel_diff_vs_eager_tf32_b{TB[0]}'), '{:.1e}')} |")
    if RESULTS["errors"]:
        lines += ["", "failures / skips:"] + [f"- {e['kind']} {e['variant']}: {e['error'][:300]}"
                                              for e in RESULTS["errors"]]
    lines.append(f"\nelapsed {elapsed():.0f} s")
    text = "\n".join(lines)
    RESULTS["table_md"] = text
    print(text, flush=True)


# ----------------------------------------------------------------------------- main
def main(argv=None):
    global ARGS, XS, XT, STYLE, S1, S2, B512, SZ1, SZ2, TS, TB
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="fast_explore.json")
    ap.add_argument("--budget", type=float, default=225.0, help="seconds for the whole run (default 225)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dry", action="store_true", help="tiny sizes (a CPU check of the script)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-train", action="store_true", help="skip the training and profile sections")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only matching variants")
    ap.add_argument("--min-s", type=float, default=0.25, help="timed seconds per measurement (default 0.25)")
    ARGS = ap.parse_args(argv)
    dev = ARGS.device
    if ARGS.dry:
        S1, S2, B512, TS, TB = 40, 24, 2, 32, (2, 4)
        ARGS.min_s = min(ARGS.min_s, 0.02)
        torch.set_num_threads(1)
    else:
        S1, S2, B512, TS, TB = 1024, 512, 8, 256, (16, 32)
    SZ1, SZ2 = f"{S1}x1", f"{S2}x{B512}"
    RESULTS["env"] = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                      "device": dev, "gpu": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu",
                      "tf32_api": str(get_tf32()), "sizes": {"infer": [SZ1, SZ2], "train": [TS, list(TB)]},
                      "budget_s": ARGS.budget}
    print(json.dumps(RESULTS["env"]), flush=True)
    XS = {(S1, 1): image_batch(S1, 1), (S2, B512): image_batch(S2, B512)}
    g = torch.Generator().manual_seed(0)
    XT = {bs: torch.rand(bs, 3, TS, TS, generator=g).to(dev) for bs in TB}
    STYLE = resize_to(sample_images()["brick"], (TS, TS)).astype(np.float32)
    only = [s.strip().lower() for s in ARGS.only.split(",") if s.strip()]
    want = lambda name: not only or any(s in name.lower() for s in only)  # noqa: E731
    sizes = [(S1, 1), (S2, B512)]
    gpu = dev.startswith("cuda")

    for name, preset, kw, tf32, bench, desc in inference_variants():
        if not want(name) or (not gpu and "fp16" in name and not ARGS.dry):
            continue
        guarded("inference", name, 25, lambda: run_inference(name, preset, kw, tf32, bench, desc, sizes))
    def compiled(i, need):
        name, preset, kw, tf32, bench, desc = compile_variants()[i]
        if ARGS.no_compile or not (gpu or only) or not want(name):
            return
        if left() < need:
            RESULTS["errors"].append({"kind": "inference", "variant": name,
                                      "error": f"skipped: {left():.0f} s left, needs ~{need} s"})
            print(f"[skip] {name}: {left():.0f} s left", flush=True)
            return
        # 1024 px only (each shape is a separate compile with dynamic=False)
        guarded("inference", name, min(left() - 5, 150),
                lambda: run_inference(name, preset, kw, tf32, bench, desc, sizes[:1]))

    compiled(0, 40)
    compiled(1, 40)     # the same with io_convs='s2d'
    for name, kw, tf32 in ([] if ARGS.no_train else training_variants()):
        if not want("train " + name):
            continue
        limit = 150 if kw.get("compile") else 30      # a compile of VGG + transformer, fwd and bwd
        if left() < limit / 2:
            RESULTS["errors"].append({"kind": "training", "variant": name, "error": f"skipped: {left():.0f} s left"})
            print(f"[skip] train {name}: {left():.0f} s left", flush=True)
            continue
        # compiled variants at one batch size (each shape is its own compile with dynamic=False)
        guarded("training", name, min(limit, left() - 3),
                lambda: run_training(name, kw, tf32, TB[:1] if kw.get("compile") else TB))
    for name, kw, tf32, tb in [
            ("eager tf32", {}, True, None),
            ("eager bf16 (torch IN)", {"precision": "bf16", "norm_impl": "torch"}, True, None),
            ("eager bf16 cl", {"precision": "bf16", "channels_last": True}, True, None),
            ("graph fp16 pad8 (NCHW)", {"cuda_graph": True, "precision": "fp16", "pad_channels": 8}, True, None),
            ("graph fp16 cl pad8 catpad", {"cuda_graph": True, "precision": "fp16", "channels_last": True,
                                           "pad_channels": 8, "pad_impl": "cat"}, True, None),
            ("train graph bf16 b16", {"cuda_graph": True, "precision": "bf16"}, True, TB[0])]:
        if want("profile " + name) and not ARGS.no_train:
            guarded("profile", name, 20, lambda: profile(name, kw, tf32, tb))
    compiled(2, 75)
    table()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
