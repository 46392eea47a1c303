"""Gatys on one GPU: the issue-7 targets (500 iterations at 512 px <= 1 s; a 2048 px run peaks at
<= 6 GiB), each Resty variant next to the plain-PyTorch tutorial measured in the same run.

Variants: the host loops (torch.optim.LBFGS / Adam, eager) and ``GatysStylizer(cuda_graph=True)``
(device-resident DeviceLBFGS/DeviceAdam, one CUDA-graph replay per iteration), in TF32 and
bf16, L-BFGS history 100 (the preset's) and 10; memory at 2048 px with and without VGG
activation checkpointing.  Each run's final loss is printed next to its time, so a fast variant
that does not optimise shows up.  Random VGG weights (timings do not depend on the values).

Usage: python3 benchmarks/gpu_gatys_explore.py --out FILE.json [--budget-s 200] [--size 512]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RESTY_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import resty_torch as rt  # noqa: E402
from resty.bench import baselines_torch as B  # noqa: E402
from resty.bench.workloads import _images  # noqa: E402

GiB = 1024 ** 3


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps=1):
    out, ts = None, []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        ts.append(time.perf_counter() - t)
    return out, float(np.median(ts)), min(ts), max(ts)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--mem-size", type=int, default=2048)
    ap.add_argument("--budget-s", type=float, default=200.0)
    ap.add_argument("--only", default="", help="comma-separated labels: run only these variants "
                    "(e.g. 'cuda_graph+channels_last,mem checkpoint'); baselines are skipped unless 'baseline'")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    rows = []

    def left():
        return a.budget_s - (time.perf_counter() - t_start)

    def record(**kw):
        rows.append(kw)
        print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kw.items()), flush=True)
        Path(a.out).write_text(json.dumps({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                                           "torch": torch.__version__, "rows": rows}, indent=1))

    S, N = a.size, a.iters
    content, style = _images(S)

    # ------------------------------------------------------------ 500 iterations at 512 px
    runs = [
        # label, precision, tf32, kwargs of GatysStylizer, optimizer, history
        ("host eager", None, True, {}, "lbfgs"),
        ("cuda_graph", None, True, {"cuda_graph": True}, "lbfgs"),
        ("cuda_graph", "bf16", False, {"cuda_graph": True}, "lbfgs"),
        ("cuda_graph hist10", "bf16", False, {"cuda_graph": True, "history_size": 10}, "lbfgs"),
        ("cuda_graph+channels_last", "bf16", False, {"cuda_graph": True, "channels_last": True}, "lbfgs"),
        ("host eager", None, True, {}, "adam"),
        ("cuda_graph", None, True, {"cuda_graph": True}, "adam"),
        ("cuda_graph", "bf16", False, {"cuda_graph": True}, "adam"),
        ("cuda_graph+channels_last", "bf16", False, {"cuda_graph": True, "channels_last": True}, "adam"),
        ("cuda_graph+channels_last", None, True, {"cuda_graph": True, "channels_last": True}, "lbfgs"),
        ("host eager", "bf16", False, {}, "lbfgs"),
        # compile=True inside the captured iteration: Inductor fuses the elementwise work
        # around VGG's convolutions (the remaining GPU time); wired and CPU-checked, untimed.
        ("cuda_graph+compile", "bf16", False, {"cuda_graph": True, "channels_last": True, "compile": True}, "lbfgs"),
        ("cuda_graph+compile", "bf16", False, {"cuda_graph": True, "channels_last": True, "compile": True}, "adam"),
        ("cuda_graph+compile", None, True, {"cuda_graph": True, "channels_last": True, "compile": True}, "lbfgs"),
    ]
    only = [o.strip() for o in a.only.split(",") if o.strip()]

    def wanted(label):
        return not only or label in only

    # The tutorial baseline first (same work: VGG19 to conv5_1, 500 closure evaluations).
    for opt in ("lbfgs", "adam"):
        if not wanted("baseline"):
            continue
        try:
            rt.set_tf32(True)
            ct = torch.from_numpy(content.transpose(2, 0, 1)[None].copy()).to(dev)
            st = torch.from_numpy(style.transpose(2, 0, 1)[None].copy()).to(dev)
            cnn = B.tutorial_vgg19(dev)
            counter = []
            B.tutorial_gatys(ct, st, 5, opt, layers=B.GATYS_DEPTH_LAYERS, cnn=cnn)   # warm-up
            _, med, lo, hi = timed(lambda: B.tutorial_gatys(ct, st, N, opt, layers=B.GATYS_DEPTH_LAYERS,
                                                            cnn=cnn, counter=counter))
            evals = counter[-1] if counter else N
            record(workload=f"gatys {N} it {S}px", impl="baseline tutorial", optimizer=opt, precision="tf32",
                   seconds=med * N / evals, evals=evals, ms_per_iter=1e3 * med / evals)
        except Exception as exc:   # noqa: BLE001
            record(workload=f"gatys {N} it {S}px", impl="baseline tutorial", optimizer=opt, error=repr(exc)[:300])
            traceback.print_exc()

    for label, prec, tf32, kw, opt in runs:
        if not wanted(label):
            continue
        if left() < 40:
            record(workload="skipped", impl=label, reason="budget")
            continue
        try:
            rt.set_tf32(tf32)
            g = rt.GatysStylizer("gatys2015", weights="random:0", device=dev, precision=prec, **kw)
            run = lambda: g.stylize(content, style, iterations=N, image_size=0, optimizer=opt,  # noqa: E731
                                    scales=(1.0,), init="content")
            g.stylize(content, style, iterations=8, image_size=0, optimizer=opt, scales=(1.0,))  # warm-up
            _, med, lo, hi = timed(run, reps=2)
            h = g.history
            record(workload=f"gatys {N} it {S}px", impl=f"resty {label}", optimizer=opt,
                   precision=prec or ("tf32" if tf32 else "fp32"), seconds=med, min_s=lo, max_s=hi,
                   ms_per_iter=1e3 * med / N, loss_first=h[0]["total"], loss_last=h[-1]["total"])
            del g
            torch.cuda.empty_cache()
        except Exception as exc:   # noqa: BLE001
            record(workload=f"gatys {N} it {S}px", impl=f"resty {label}", optimizer=opt, error=repr(exc)[:300])
            traceback.print_exc()

    # ------------------------------------------------------------ peak memory at 2048 px
    M = a.mem_size
    cm, sm = _images(M)
    mem_runs = [("host eager", None, True, {}), ("host eager", "bf16", False, {}),
                ("checkpoint", None, True, {"checkpoint": True}),
                ("checkpoint", "bf16", False, {"checkpoint": True}),
                ("cuda_graph+checkpoint", "bf16", False, {"checkpoint": True, "cuda_graph": True})]
    if dev == "cuda":
        # cuDNN's algorithm search (benchmark mode) allocates huge trial workspaces at new
        # shapes (it showed 130 GiB peaks at 2048 px): memory is measured with it off.
        torch.backends.cudnn.benchmark = False
    if dev == "cuda" and wanted("mem baseline"):
        try:
            rt.set_tf32(True)
            ct = torch.from_numpy(cm.transpose(2, 0, 1)[None].copy()).to(dev)
            st = torch.from_numpy(sm.transpose(2, 0, 1)[None].copy()).to(dev)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            _, med, _, _ = timed(lambda: B.tutorial_gatys(ct, st, 3, "adam", layers=B.GATYS_DEPTH_LAYERS,
                                                          cnn=B.tutorial_vgg19(dev)))
            record(workload=f"gatys {M}px memory (Adam)", impl="baseline tutorial", precision="tf32",
                   peak_gib=(torch.cuda.max_memory_allocated() - base) / GiB, seconds=med)
            del ct, st
        except Exception as exc:   # noqa: BLE001
            record(workload=f"gatys {M}px memory", impl="baseline tutorial", error=repr(exc)[:300])
    if dev == "cuda":
        for label, prec, tf32, kw in mem_runs:
            if not wanted("mem " + label):
                continue
            if left() < 15:
                record(workload="skipped", impl=label, reason="budget")
                continue
            try:
                rt.set_tf32(tf32)
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                g = rt.GatysStylizer("restynet", weights="random:0", device=dev, precision=prec, **kw)
                iters = 8 if kw.get("cuda_graph") else 3
                _, med, _, _ = timed(lambda: g.stylize(cm, sm, iterations=iters, image_size=M, scales=(1.0,)))
                record(workload=f"gatys {M}px memory (Adam)", impl=f"resty {label}",
                       precision=prec or "tf32", peak_gib=(torch.cuda.max_memory_allocated() - base) / GiB,
                       seconds=med, iters=iters, loss_last=g.history[-1]["total"])
                del g
            except Exception as exc:   # noqa: BLE001
                record(workload=f"gatys {M}px memory", impl=f"resty {label}", error=repr(exc)[:300])
                traceback.print_exc()
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
