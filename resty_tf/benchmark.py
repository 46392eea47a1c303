"""What ``resty bench`` needs from TensorFlow to time Resty's public API: device set-up, clock
sync, peak memory, the environment, and the inference call.

The bench itself (``resty.bench.workloads``) is framework-free and reaches this module by name
through ``resty.backends.load_backend_module``; ``resty_torch.benchmark`` has the same functions
with the same meaning.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from .device import resolve_device, set_tf32

GPU_MEMORY_KIND = "tf get_memory_info peak"


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU."""
    return bool(tf.config.list_logical_devices("GPU"))


def prepare(device: str, precision: str) -> str:
    """The TensorFlow device for ``device`` ("cpu", "cuda"), with TF32 on for every precision
    but float32 on a GPU."""
    dev = resolve_device("cpu" if device == "cpu" else "gpu")
    if "GPU" in dev.upper():
        set_tf32(precision != "float32")
    return dev


# The four below are called for a GPU group only (CPU timings need no sync; the CPU peak is
# the process RSS, sampled by the bench itself).
def sync() -> None:
    """Nothing to wait for: every timed call reads its result back to the host (``.numpy()``,
    ``float()``), which waits for the device."""


def reset_peak() -> int:
    """Reset the GPU peak-memory counter; the bytes in use now."""
    tf.config.experimental.reset_memory_stats("GPU:0")
    return tf.config.experimental.get_memory_info("GPU:0")["current"]


def peak() -> int:
    """Peak GPU bytes in use since :func:`reset_peak`."""
    return tf.config.experimental.get_memory_info("GPU:0")["peak"]


def release() -> None:
    """Nothing to do: TensorFlow keeps its allocator's pool (peaks are measured from a reset)."""


def environment() -> Dict[str, Any]:
    return {"tensorflow": tf.__version__}


def inference_call(stylizer, images: np.ndarray, compile_mode: Optional[str] = None) -> Callable[[], object]:
    """One timed inference of ``stylizer`` (a resty_tf FastStylizer) on ``images`` (B×H×W×3
    float32 in [0, 1]): :meth:`FastStylizer.stylize`, which returns host arrays (so the call
    includes the device sync).  ``compile_mode`` is a torch.compile setting and has no TF
    meaning: XLA is the stylizer's own ``compile=True``."""
    if compile_mode is not None:
        raise ValueError(f"compile_mode={compile_mode!r}: the tf backend compiles with FastStylizer(compile=True)")
    images = np.asarray(images, np.float32)
    return lambda: stylizer.stylize(images)
