"""Test-session setup shared by tests/ and parity_tests/.

Import order matters when PyTorch and TensorFlow share a process: torch (including
torch._dynamo, which torch.optim pulls in lazily along with triton) and torchvision must be
imported before tensorflow, or the process can crash (measured here: a segfault).
"""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RESTY_OFFLINE", "1")   # tests never download

try:  # order: torch, torch._dynamo, torchvision, then (lazily, elsewhere) tensorflow
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass
