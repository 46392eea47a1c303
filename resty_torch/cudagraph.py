"""CUDA graphs for fixed-shape work: capture a function once per input shape, then replay it.

A replay launches every kernel of the captured call with one CPU call, so a network whose
eager forward costs more CPU time (Python, dispatcher, ~80 kernel launches) than GPU time
runs at GPU speed.  :class:`GraphedFunction` wraps ``fn(*tensors, *constants)``:

* on CUDA, the first call with a new key (shapes, dtypes, devices of the tensor arguments and
  the values of the non-tensor ones) copies the arguments into *static* input buffers, runs
  ``fn`` ``warmup`` times on a side stream (cuDNN autotuning, lazy state, torch.compile), then
  captures one call into a ``torch.cuda.CUDAGraph``; every call (including that first one)
  copies its arguments into the static buffers and replays the graph;
* on the CPU (or with ``enabled=False``) it simply calls ``fn`` eagerly, so the code path that
  uses it is the same and testable without a GPU.

The returned tensors are the graph's *static outputs*: the next replay with the same key
overwrites them.  Copy (``.clone()``) what must outlive the next call, or pass
``clone_outputs=True``.

Rules for a function to be capturable (they also hold for a training step: forward,
``loss.backward()`` or ``torch.autograd.grad``, and an in-place optimizer update):

* **No host synchronisation** inside ``fn``: no ``.item()``, ``float(t)``, ``bool(t)``,
  ``.cpu()``, ``.tolist()``, ``print(t)``, ``torch.nonzero``, boolean-mask indexing,
  ``torch.cuda.synchronize()``, data-dependent Python control flow.  (GradScaler's inf check
  syncs: use bf16 or float32 in captured training steps, not fp16 with a GradScaler.)
* **Static shapes and static memory**: the tensors ``fn`` reads other than its arguments
  (parameters, optimizer state, targets such as Gram matrices) must stay the *same tensor
  objects* after capture; update them in place (``copy_``), never rebind them.  Loading a
  checkpoint by replacing ``optimizer.state[p]`` after capture silently detaches the graph
  from the new tensors (call :meth:`GraphedFunction.reset` after such a change).
* **Optimizer state created before capture**: torch.optim.Adam must be built with
  ``capturable=True`` on CUDA (its step counter then lives on the GPU) and its state must
  exist before capture (:func:`init_adam_state`, or the warm-up's first step creates it).
  Host-side step counters (EpsilonHatAdam, non-capturable Adam) are frozen into the graph.
* **Gradients**: call ``optimizer.zero_grad(set_to_none=True)`` at the start of ``fn``; the
  captured backward then *writes* (not accumulates) the gradients into graph-owned memory.
* **Warm-up mutates state**: the warm-up calls really run ``fn``; a training step would take
  ``warmup`` extra optimizer steps.  Pass ``restore=`` (a callable returning the tensors that
  ``fn`` mutates: parameters, buffers, optimizer state) and they are snapshot before the
  warm-up and copied back (in place) after the capture, so the first replay is the first step.
* **Autocast**: enter the autocast context *inside* ``fn`` (as resty does), so no cast is
  cached across the capture boundary.
* Random numbers (dropout) need ``torch.cuda.graph``'s RNG handling; nothing in resty's
  captured functions draws random numbers.

Capture failures (an op that syncs, an unsupported kernel) raise by default; with
``fallback=True`` the key is marked eager, a warning is issued once and ``fn`` runs eagerly
for that key (``GraphedFunction.failures`` records why).
"""
from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

__all__ = ["GraphedFunction", "graphed", "init_adam_state", "snapshot", "restore_snapshot",
           "cuda_graphs_available"]


def cuda_graphs_available(device=None) -> bool:
    """True when ``device`` (default: the current CUDA device) is a CUDA device torch can use."""
    if not torch.cuda.is_available():
        return False
    if device is None:
        return True
    return torch.device(device).type == "cuda"


def _flatten(obj) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _flatten(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _flatten(v)]
    return []


def _map(obj, f):
    if isinstance(obj, torch.Tensor):
        return f(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map(v, f)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_map(v, f) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(v, f) for v in obj)
    return obj


def snapshot(tensors: Iterable[torch.Tensor]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``[(tensor, clone)]`` of each tensor (detached), to put back with :func:`restore_snapshot`."""
    with torch.no_grad():
        return [(t, t.detach().clone()) for t in tensors if isinstance(t, torch.Tensor)]


def restore_snapshot(snap: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Copy each saved clone back into its tensor, in place (the tensor objects stay the same)."""
    with torch.no_grad():
        for t, saved in snap:
            t.detach().copy_(saved)


def init_adam_state(opt: torch.optim.Optimizer) -> None:
    """Create torch.optim.Adam's per-parameter state now (zeros, step 0) where it is missing,
    with the layout Adam's own lazy init uses (``step`` on the parameter's device when the
    group is ``capturable``, else a CPU scalar), and move existing ``step`` counters to the
    parameter's device for capturable groups (a checkpoint restores them on the CPU)."""
    for group in opt.param_groups:
        cap = bool(group.get("capturable", False))
        for p in group["params"]:
            st = opt.state[p]
            if not st:
                dt = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                st["step"] = torch.zeros((), dtype=dt, device=p.device if cap else "cpu")
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group.get("amsgrad", False):
                    st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif cap and isinstance(st.get("step"), torch.Tensor) and st["step"].device != p.device:
                st["step"] = st["step"].to(p.device)


def optimizer_tensors(opt: torch.optim.Optimizer) -> List[torch.Tensor]:
    """Every tensor in an optimizer's state (for ``restore=``)."""
    return [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]


__all__.append("optimizer_tensors")


class _EmulatedGraph:
    """A stand-in for torch.cuda.CUDAGraph on the CPU (``GraphedFunction(emulate=True)``):
    ``replay()`` calls the function on the static inputs and copies its results into the
    static outputs, so the static-buffer semantics (inputs copied in, outputs overwritten,
    warm-up undone) are testable without a GPU."""

    def __init__(self, fn, args, out):
        self.fn, self.args, self.out = fn, args, out

    def replay(self):
        new = self.fn(*self.args)
        with torch.no_grad():
            for s, n in zip(_flatten(self.out), _flatten(new)):
                s.copy_(n)

    def reset(self):
        self.fn = self.args = self.out = None


@dataclass
class _Entry:
    graph: Any = None                       # torch.cuda.CUDAGraph, or None for an eager key
    static_in: List[torch.Tensor] = field(default_factory=list)
    static_out: Any = None
    reason: str = ""


class GraphedFunction:
    """``fn`` captured per input key into CUDA graphs (see the module docstring for the rules).

    ``fn(*args)``: tensors and hashable constants; the tensors must all be CUDA tensors for a
    graph to be used (any CPU tensor argument, or ``enabled=False``, runs ``fn`` eagerly).
    ``warmup``: eager calls on a side stream before the capture.  ``max_graphs``: graphs kept
    (least recently used dropped first; each holds its own memory pool).  ``restore``: a
    callable returning tensors to snapshot before the warm-up and restore after the capture.
    ``cudnn_benchmark``: turn ``torch.backends.cudnn.benchmark`` on during warm-up and capture
    only (the algorithms then chosen are baked into the graph; the global flag is restored).
    ``before_capture``: called once before each warm-up (e.g. :func:`init_adam_state`).
    """

    def __init__(self, fn: Callable, *, enabled: bool = True, warmup: int = 2, max_graphs: int = 4,
                 restore: Optional[Callable[[], Iterable[torch.Tensor]]] = None,
                 cudnn_benchmark: bool = True, clone_outputs: bool = False, fallback: bool = False,
                 before_capture: Optional[Callable[[], None]] = None,
                 capture_error_mode: str = "thread_local", pool=None, emulate: bool = False):
        self.fn = fn
        self.enabled = bool(enabled)
        self.warmup = max(0, int(warmup))
        self.max_graphs = max(1, int(max_graphs))
        self.restore = restore
        self.cudnn_benchmark = cudnn_benchmark
        self.clone_outputs = clone_outputs
        self.fallback = fallback
        self.before_capture = before_capture
        self.capture_error_mode = capture_error_mode
        self.pool = pool
        self.emulate = bool(emulate)     # CPU tests: the capture/replay protocol without CUDA
        self._entries: "OrderedDict[Any, _Entry]" = OrderedDict()
        self.failures: Dict[Any, str] = {}
        self.captures = 0        # graphs captured so far (for tests and logs)
        self.replays = 0
        self.eager_calls = 0

    # ------------------------------------------------------------------ keys
    @staticmethod
    def key(args: Sequence[Any]) -> Tuple:
        k = []
        for a in args:
            if isinstance(a, torch.Tensor):
                cl = a.dim() == 4 and not a.is_contiguous() and a.is_contiguous(memory_format=torch.channels_last)
                k.append(("T", tuple(a.shape), a.dtype, str(a.device), a.requires_grad, cl))
            else:
                k.append(("C", a))
        return tuple(k)

    def _use_graph(self, args) -> bool:
        if self.emulate:
            return self.enabled
        if not self.enabled or not torch.cuda.is_available():
            return False
        ts = [a for a in args if isinstance(a, torch.Tensor)]
        return bool(ts) and all(t.is_cuda for t in ts)

    def reset(self) -> None:
        """Drop every captured graph (the next call with each key captures again)."""
        for e in self._entries.values():
            if e.graph is not None:
                e.graph.reset()
        self._entries.clear()

    @property
    def graphs(self) -> int:
        return sum(1 for e in self._entries.values() if e.graph is not None)

    # ------------------------------------------------------------------ call
    def __call__(self, *args):
        if not self._use_graph(args):
            self.eager_calls += 1
            return self.fn(*args)
        k = self.key(args)
        e = self._entries.get(k)
        if e is None:
            e = self._capture(k, args)
        else:
            self._entries.move_to_end(k)
        if e.graph is None:                 # capture failed earlier, fallback=True
            self.eager_calls += 1
            return self.fn(*args)
        it = iter(e.static_in)
        with torch.no_grad():
            for a in args:
                if isinstance(a, torch.Tensor):
                    s = next(it)
                    if s.data_ptr() != a.data_ptr():
                        s.copy_(a)
        e.graph.replay()
        self.replays += 1
        if self.clone_outputs:
            return _map(e.static_out, lambda t: t.clone())
        return e.static_out

    def static_inputs(self, *args) -> List[torch.Tensor]:
        """The static input buffers of the key of ``args`` (captured first if needed): a caller
        can write its next inputs straight into them and skip the copy in ``__call__``."""
        if not self._use_graph(args):
            return [a for a in args if isinstance(a, torch.Tensor)]
        k = self.key(args)
        e = self._entries.get(k) or self._capture(k, args)
        return e.static_in

    @contextlib.contextmanager
    def _bench_mode(self):
        old = torch.backends.cudnn.benchmark
        if self.cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = bool(self.cudnn_benchmark)
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = old

    def _capture(self, k, args) -> _Entry:
        while len(self._entries) >= self.max_graphs:
            _, old = self._entries.popitem(last=False)
            if old.graph is not None:
                old.graph.reset()
        # Normal (not inference-mode) tensors, so a graph captured under inference_mode can
        # still be fed from outside it, and vice versa.
        with torch.inference_mode(False), torch.no_grad():
            static_in = [a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                         for a in args]
        call_args = list(static_in)
        e = _Entry(static_in=[a for a in static_in if isinstance(a, torch.Tensor)])
        snap = None
        try:
            if self.before_capture is not None:
                self.before_capture()
            if self.restore is not None:
                snap = snapshot(self.restore())
            if self.emulate:
                for _ in range(self.warmup):
                    self.fn(*call_args)
                out = self.fn(*call_args)       # a real capture records without running
                e.graph, e.static_out = _EmulatedGraph(self.fn, call_args, out), out
                self.captures += 1
                self._entries[k] = e
                return e
            with self._bench_mode():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        self.fn(*call_args)
                torch.cuda.current_stream().wait_stream(side)
                torch.cuda.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self.pool, capture_error_mode=self.capture_error_mode):
                    out = self.fn(*call_args)
            torch.cuda.synchronize()
            e.graph, e.static_out = g, out
            self.captures += 1
        except Exception as exc:   # noqa: BLE001 - reported or re-raised below
            if not self.fallback:
                raise
            e.graph, e.reason = None, f"{type(exc).__name__}: {exc}"
            self.failures[k] = e.reason
            warnings.warn(f"CUDA graph capture failed, running eagerly for this shape: {e.reason}",
                          RuntimeWarning, stacklevel=3)
        finally:
            if snap is not None:
                restore_snapshot(snap)
                if not self.emulate:
                    torch.cuda.synchronize()
        self._entries[k] = e
        return e


def graphed(fn: Optional[Callable] = None, **kw):
    """Decorator form: ``@graphed(warmup=3)`` or ``@graphed`` -> :class:`GraphedFunction`."""
    if fn is None:
        return lambda f: GraphedFunction(f, **kw)
    return GraphedFunction(fn, **kw)
