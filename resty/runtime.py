"""What a run reports while it goes: a progress bar, non-finite losses as one-line errors, the
CPU half-precision warning, and SIGTERM turned into a clean stop after a checkpoint."""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
from typing import Mapping, Optional


from .errors import ArgumentError, TrainingError

# =========================================================================== errors, progress
# CPU features that give a half precision native arithmetic (x86 Linux /proc/cpuinfo names).
_NATIVE_HALF_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def cpu_flags() -> Optional[frozenset]:
    """The CPU feature flags of this machine (Linux), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_half_precision_warning(precision: Optional[str], flags: Optional[frozenset] = None) -> Optional[str]:
    """A one-line warning for a half precision asked for on a CPU without native support for
    it (x86 without AVX512-BF16/AMX): the frameworks then emulate it, orders of magnitude slower
    than float32.  None when fine or unknown."""
    if precision not in _NATIVE_HALF_FLAGS:
        return None
    flags = cpu_flags() if flags is None else flags
    if flags is None or "avx2" not in flags and "avx" not in flags:   # not an x86 we can judge
        return None
    if any(f in flags for f in _NATIVE_HALF_FLAGS[precision]):
        return None
    return (f"precision={precision!r} on this CPU (no {'/'.join(_NATIVE_HALF_FLAGS[precision])}) is emulated and "
            f"much slower than float32; use precision=None on the CPU")


def warn_cpu_half_precision(precision, stacklevel: int = 3) -> None:
    """Issue :func:`cpu_half_precision_warning` as a RuntimeWarning (the stylizers call this
    when they are built for the CPU)."""
    msg = cpu_half_precision_warning(precision if isinstance(precision, str) else None)
    if msg:
        import warnings
        warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel)


def nonfinite_message(value: float, step: int) -> str:
    """The one message both backends raise when a loss stops being finite."""
    return (f"loss became {value} at step {step} (non-finite: the optimisation diverged); "
            f"lower the learning rate or use precision=None")


def check_finite(value: float, step: int) -> None:
    """Raise :class:`TrainingError` when ``value`` is NaN or infinite."""
    if not math.isfinite(value):
        raise TrainingError(nonfinite_message(value, step))


class Progress:
    """A tqdm bar that shows the loss terms; a no-op when disabled (or tqdm is missing).

    ``update(n_steps, losses)`` advances the bar; loss terms are formatted compactly.  Call it
    only with losses already on the host (a backend updates every few steps to avoid syncs).
    """

    def __init__(self, total: int, enabled: bool = False, desc: str = "", unit: str = "it"):
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:   # progress is a convenience, never a reason to fail
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, losses: Optional[Mapping[str, float]] = None) -> None:
        if self.bar is None:
            return
        if losses:
            self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in losses.items()}, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



class SigtermFlag:
    """While active (main thread only, and only where SIGTERM has its default action), SIGTERM
    sets a flag instead of killing: a training loop stops at the next step boundary, writes a
    checkpoint, then calls :meth:`redeliver`, which says so on stderr and re-sends SIGTERM
    with the default action, so the process still dies of the signal, with nothing lost.
    Both backends' ``fit`` use it when given a checkpoint folder."""

    def __init__(self, enabled: bool):
        self.hit = False
        self.active = (enabled and threading.current_thread() is threading.main_thread()
                       and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)

    def __enter__(self) -> "SigtermFlag":
        if self.active:
            signal.signal(signal.SIGTERM, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def __exit__(self, *exc) -> None:
        if self.active:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def redeliver(self, step: Optional[int] = None, checkpoint_dir=None) -> None:
        if self.active and self.hit:
            where = f" to {checkpoint_dir}" if checkpoint_dir is not None else ""
            at = f" at step {step}" if step is not None else ""
            print(f"resty: terminated (SIGTERM){at}; checkpoint written{where}: run again with --resume "
                  "(fit(..., resume=True)) to continue", file=sys.stderr, flush=True)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


#: The dtypes a run can hold its weights and images in; half precisions are ``precision``.
DTYPES = ("float32", "float64")
#: Mixed precisions (autocast in torch, a Keras mixed policy in TF).
PRECISIONS = (None, "bf16", "fp16")


def check_dtype(dtype: str, precision: Optional[str] = None) -> str:
    """``dtype`` when it and ``precision`` make a valid pair, else a one-line error (the same in
    both backends)."""
    if dtype not in DTYPES:
        raise ArgumentError(f"dtype: got {dtype!r}; allowed: 'float32', 'float64' (use precision='bf16'/'fp16' "
                            "for mixed precision)")
    if precision not in PRECISIONS:
        raise ArgumentError(f"precision: got {precision!r}; allowed: None, 'bf16', 'fp16'")
    if precision is not None and dtype == "float64":
        raise ArgumentError("precision: mixed precision needs dtype='float32' (got dtype='float64')")
    return dtype
