"""Device, dtype, mixed precision and TF32 control for the torch backend."""
from __future__ import annotations

import contextlib
from typing import Optional, Union

import torch

from resty.errors import RestyError
from resty.runtime import check_dtype

__all__ = ["resolve_device", "resolve_dtype", "autocast_dtype", "autocast", "set_tf32", "get_tf32"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PRECISIONS = {None: None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
               "fp16": torch.float16, "float16": torch.float16}


def resolve_device(device: Union[None, str, torch.device] = None) -> torch.device:
    """``None`` picks CUDA when torch sees a GPU, else the CPU; strings as torch accepts them."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise RestyError(f"device: got {device!r}; use 'cpu', 'cuda' or 'cuda:N' ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RestyError(f"device {device!r}: torch sees no CUDA GPU here; use device='cpu' or device=None")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype] = "float32") -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    return _DTYPES[check_dtype(dtype)]


def autocast_dtype(precision: Optional[str]) -> Optional[torch.dtype]:
    if precision not in _PRECISIONS:
        raise RestyError(f"precision: got {precision!r}; allowed: None, 'bf16', 'fp16'")
    return _PRECISIONS[precision]


def autocast(device: torch.device, precision: Optional[torch.dtype], cache: bool = True):
    """An autocast context for ``precision`` (a torch half dtype), or a no-op for None.

    ``cache=False`` for code captured in a CUDA graph: autocast's weight-cast cache lives
    outside the graph and is cleared on exit, so a replay would read freed memory."""
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision, cache_enabled=cache)


def _new_api() -> bool:
    return (hasattr(torch.backends.cuda.matmul, "fp32_precision")
            and hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"))


def set_tf32(enabled: bool) -> None:
    """Allow (or forbid) TF32 for float32 matmuls and convolutions on Ampere+ GPUs.

    TF32 gives ~1e-3 relative feature error (docs/ARCHITECTURE.md, pitfalls): parity runs turn it off,
    speed runs may turn it on.  Sets the legacy ``allow_tf32`` flags: torch keeps the new
    per-backend ``fp32_precision`` in step with them, whereas setting ``fp32_precision``
    makes every later read of ``allow_tf32`` raise ("mix of the legacy and new APIs") --
    and Inductor's max-autotune reads it (seen with torch 2.11 on an H200)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def get_tf32() -> dict:
    """The current TF32 settings (for logs and benchmark records)."""
    if _new_api():
        return {"matmul": torch.backends.cuda.matmul.fp32_precision,
                "conv": torch.backends.cudnn.conv.fp32_precision}
    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "conv": torch.backends.cudnn.allow_tf32}
