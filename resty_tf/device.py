"""Devices, dtypes and precision for the TensorFlow backend.

TensorFlow places operations on the first GPU automatically when it sees one; Resty makes
the choice explicit (``device=None`` -> ``/GPU:0`` if any GPU is visible, else ``/CPU:0``)
so that a run says where it ran, and so that ``device="cpu"`` really pins everything there.

Precision follows docs/ARCHITECTURE.md, pitfalls:

* float64 is requested per layer through a Keras ``DTypePolicy("float64")``.  Keras's global
  ``keras.config.set_floatx`` is *not* used: it is silently ignored by layers that were
  already built, so a half-float64 model would pass unnoticed.  :func:`assert_compute_dtype`
  checks every layer after building.
* Mixed precision uses the Keras policies ``mixed_bfloat16`` / ``mixed_float16`` (variables
  float32, compute half); Gram matrices and losses are always computed in float32
  (see :mod:`resty_tf.losses`).
* TF32 is on by default in TensorFlow for convolutions *and* matmuls on Ampere/Hopper GPUs;
  :func:`set_tf32` switches it (parity runs turn it off).
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # keep TF's C++ start-up chatter out of users' logs

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from resty.errors import RestyError  # noqa: E402
from resty.runtime import PRECISIONS, DTYPES, check_dtype  # noqa: E402,F401

__all__ = ["resolve_device", "set_tf32", "dtype_policy", "assert_compute_dtype", "DTYPES", "PRECISIONS"]

_MIXED = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _check_keras_backend() -> None:
    if keras.backend.backend() != "tensorflow":
        raise RestyError(f"resty_tf needs Keras on the TensorFlow backend; KERAS_BACKEND is "
                         f"{keras.backend.backend()!r} (set KERAS_BACKEND=tensorflow before importing keras)")


_check_keras_backend()


def resolve_device(device=None) -> str:
    """A TF device string: ``None`` -> GPU:0 when TF sees a GPU, else CPU:0.

    Accepts ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"GPU:1"``, ``"/GPU:0"``, ``"cuda:1"``.
    Asking for a GPU that TF does not see raises (rather than silently running on CPU).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if device is None:
        return "/GPU:0" if gpus else "/CPU:0"
    if not isinstance(device, str):
        raise RestyError(f"device: expected None or a string such as 'cpu' or 'GPU:0', got {device!r}")
    d = device.strip().lstrip("/").lower()
    if d.startswith("device:"):
        d = d[len("device:"):]
    kind, _, index = d.partition(":")
    if kind == "cpu":
        return "/CPU:0"
    if kind in ("gpu", "cuda"):
        i = int(index) if index.isdigit() else 0
        if i >= len(gpus):
            raise RestyError(f"device {device!r}: TensorFlow sees {len(gpus)} GPU(s); use device='cpu' or None")
        return f"/GPU:{i}"
    raise RestyError(f"device: got {device!r}; allowed: None, 'cpu', 'gpu', 'GPU:N', 'cuda', 'cuda:N'")


def set_tf32(enabled: bool) -> None:
    """Turn TensorFloat-32 on or off for TF convolutions and matmuls (process-wide)."""
    tf.config.experimental.enable_tensor_float_32_execution(bool(enabled))


def dtype_policy(dtype: str = "float32", precision=None) -> keras.DTypePolicy:
    """The Keras dtype policy for a model: float32, float64, or a mixed half policy."""
    check_dtype(dtype, precision)
    if precision is not None:
        return keras.DTypePolicy(_MIXED[precision])
    return keras.DTypePolicy(dtype)


def assert_compute_dtype(model, dtype: str) -> None:
    """Raise if any layer of ``model`` (recursively) computes in another dtype than ``dtype``,
    or if any of its variables is not stored in the policy's variable dtype."""
    layers = [model] + list(model._flatten_layers(include_self=False, recursive=True))
    bad = [f"{l.name}:{l.compute_dtype}" for l in layers if l.compute_dtype != dtype]
    if bad:
        raise AssertionError(f"layers not computing in {dtype}: {', '.join(bad[:8])}")
    want_var = model.dtype_policy.variable_dtype
    badv = [f"{v.path}:{v.dtype}" for v in model.weights if v.dtype != want_var]
    if badv:
        raise AssertionError(f"variables not stored in {want_var}: {', '.join(badv[:8])}")
