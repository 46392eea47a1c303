"""Cross-framework parity tests: resty_torch vs resty_tf vs the NumPy float64 oracle.

Importing this package fixes the framework import order for the whole process: torch and
torchvision are imported *before* TensorFlow (docs/ARCHITECTURE.md, pitfalls: torch, then tensorflow, then
torchvision segfaulted).  ``parity_tests/conftest.py`` imports this package, and pytest loads
the conftest of every ``testpaths`` entry at start-up, so the order holds for the whole
``python3 -m pytest`` run, including ``tests/``.

Entry points: ``python -m parity_tests --report [--json FILE] [--quick]`` and
:func:`parity_tests.__main__.main` (used by ``resty parity``).
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# cuBLAS needs this *before* CUDA initialises for torch.use_deterministic_algorithms(True).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

try:  # order matters: torch and torchvision first, TensorFlow after
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (torch.optim pulls it in lazily; it too must precede TF)
    import torchvision  # noqa: F401
except ImportError:  # pragma: no cover - a machine without the torch extra
    torch = None
try:
    import tensorflow  # noqa: F401
except ImportError:  # pragma: no cover - a machine without the tf extra
    tensorflow = None


def main(argv=None) -> int:
    """``resty parity`` entry point (see :mod:`parity_tests.__main__`)."""
    from .__main__ import main as _main
    return _main(argv)


__all__ = ["main"]
