"""The numerical environment parity runs in, set up once and asserted.

* TF32 off in both frameworks (docs/ARCHITECTURE.md, pitfalls: on an H200 TF32 gives ~1e-3 feature error,
  which would swamp the float32 tier).  torch: the new ``fp32_precision = "ieee"`` API when
  this torch has it, else the legacy ``allow_tf32`` flags, never both (torch warns/errs when
  the two are mixed).  TF: ``enable_tensor_float_32_execution(False)``.
* Deterministic algorithms: ``torch.use_deterministic_algorithms(True, warn_only=True)``,
  cuDNN benchmark off; ``tf.config.experimental.enable_op_determinism()``.
* torch runs on CUDA when available (``torch_device()``); TF places ops itself.

:func:`configure` is idempotent and returns a description of the environment (printed at the
top of the report); :func:`assert_configured` raises if anything was switched back.
"""
from __future__ import annotations

import platform
from typing import Dict

from . import torch as _torch_mod, tensorflow as _tf_mod  # import order fixed in __init__

_done = False


def torch_available() -> bool:
    return _torch_mod is not None


def tf_available() -> bool:
    return _tf_mod is not None


def torch_device() -> str:
    if _torch_mod is not None and _torch_mod.cuda.is_available():
        return "cuda"
    return "cpu"


def _torch_new_api(torch) -> bool:
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and \
        hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def configure() -> Dict[str, str]:
    """Turn TF32 off, switch on determinism, and assert it.  Safe to call repeatedly."""
    global _done
    torch, tf = _torch_mod, _tf_mod
    if torch is not None:
        if _torch_new_api(torch):
            torch.backends.cuda.matmul.fp32_precision = "ieee"
            torch.backends.cudnn.conv.fp32_precision = "ieee"
        else:  # pragma: no cover - older torch
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    if tf is not None:
        tf.config.experimental.enable_tensor_float_32_execution(False)
        if not _done:
            tf.config.experimental.enable_op_determinism()
    _done = True
    assert_configured()
    return describe()


def assert_configured() -> None:
    """Raise AssertionError unless TF32 is off and determinism is on in both frameworks."""
    torch, tf = _torch_mod, _tf_mod
    if torch is not None:
        if _torch_new_api(torch):
            m = torch.backends.cuda.matmul.fp32_precision
            c = torch.backends.cudnn.conv.fp32_precision
            assert m == "ieee", f"torch matmul fp32_precision is {m!r}, expected 'ieee' (TF32 off)"
            assert c == "ieee", f"torch cudnn.conv fp32_precision is {c!r}, expected 'ieee' (TF32 off)"
        else:  # pragma: no cover
            assert not torch.backends.cuda.matmul.allow_tf32, "torch matmul allow_tf32 is on"
            assert not torch.backends.cudnn.allow_tf32, "torch cudnn allow_tf32 is on"
        assert torch.are_deterministic_algorithms_enabled(), "torch deterministic algorithms are off"
        assert not torch.backends.cudnn.benchmark, "cudnn.benchmark is on"
    if tf is not None:
        assert not tf.config.experimental.tensor_float_32_execution_enabled(), "TF TF32 execution is on"
        try:
            from tensorflow.python.framework import config as _tfc
            assert _tfc.is_op_determinism_enabled(), "TF op determinism is off"
        except ImportError:  # pragma: no cover - private module moved
            pass


def describe() -> Dict[str, str]:
    torch, tf = _torch_mod, _tf_mod
    d = {"python": platform.python_version(), "machine": platform.machine()}
    if torch is not None:
        d["torch"] = torch.__version__
        d["torch_device"] = torch_device()
        if torch_device() == "cuda":
            d["gpu"] = torch.cuda.get_device_name(0)
        d["torch_tf32"] = ("fp32_precision=ieee" if _torch_new_api(torch) else "allow_tf32=False")
    if tf is not None:
        d["tensorflow"] = tf.__version__
        d["tf_gpus"] = str(len(tf.config.list_physical_devices("GPU")))
        d["tf_tf32"] = str(tf.config.experimental.tensor_float_32_execution_enabled())
    try:
        import keras
        d["keras"] = keras.__version__
    except ImportError:  # pragma: no cover
        pass
    import numpy
    d["numpy"] = numpy.__version__
    return d
