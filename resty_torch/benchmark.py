"""What ``resty bench`` needs from PyTorch to time Resty's public API: device set-up, clock
sync, peak memory, the environment, and the tensor-level inference call.

The bench itself (``resty.bench.workloads``) is framework-free and reaches this module by name
through ``resty.backends.load_backend_module``; ``resty_tf.benchmark`` has the same functions
with the same meaning.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from .device import set_tf32

GPU_MEMORY_KIND = "torch.cuda.max_memory_allocated"


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU."""
    return torch.cuda.is_available()


def prepare(device: str, precision: str) -> torch.device:
    """The device for ``device`` ("cpu", "cuda"), with TF32 tensor cores on for every
    precision but float32 and cuDNN autotuning off (its first calls would land in the timings)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        set_tf32(precision != "float32")
        torch.backends.cudnn.benchmark = False
    return dev


# The four below are called for a GPU group only (CPU timings need no sync; the CPU peak is
# the process RSS, sampled by the bench itself).
def sync() -> None:
    """Wait for the GPU's queued work, so that a clock read after it covers the work."""
    torch.cuda.synchronize()


def reset_peak() -> int:
    """Reset the GPU peak-memory counter; the bytes allocated now."""
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak() -> int:
    """Peak GPU bytes allocated since :func:`reset_peak`."""
    return torch.cuda.max_memory_allocated()


def release() -> None:
    """Give cached GPU memory back between groups, so one group's peak is not another's."""
    torch.cuda.empty_cache()


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def inference_call(stylizer, images: np.ndarray, compile_mode: Optional[str] = None) -> Callable[[], object]:
    """One timed inference of ``stylizer`` (a resty_torch FastStylizer) on ``images``
    (B×H×W×3 float32 in [0, 1]).

    The ONNX Runtime engine (``fast=True`` on the CPU) runs :meth:`FastStylizer.stylize`, the
    host path it serves.  Otherwise the input is put on the device once and each call is
    :meth:`FastStylizer.stylize_tensor` (tensor in, tensor out: host copies would swamp a
    millisecond GPU call); ``compile_mode`` wraps the network in ``torch.compile`` with that
    mode instead (fixed shapes), under the stylizer's autocast.
    """
    if stylizer.inference_engine == "onnxruntime":
        return lambda: stylizer.stylize(images)
    dev = stylizer.device
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2))).to(dev)
    if compile_mode is None:
        return lambda: stylizer.stylize_tensor(x, copy=False)
    from .device import autocast
    net = torch.compile(stylizer.net.eval(), mode=compile_mode, dynamic=False)
    ac = stylizer.precision   # the autocast dtype (None: the stylizer's dtype)
    xi = x.contiguous(memory_format=torch.channels_last) if stylizer.channels_last else x

    def run():
        with torch.inference_mode(), autocast(dev, ac):
            net(xi)
    return run
