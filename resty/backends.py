"""Lazy access to the framework backends, by name.

``get_backend("torch")`` returns the ``resty_torch`` module, ``get_backend("tf")`` the
``resty_tf`` module; both expose the same names (docs/BACKEND_API.md).  Nothing here imports
a framework until a backend is asked for, so ``import resty`` (and ``resty presets``,
``resty weights ...``) stays framework-free.

Two things every caller would otherwise get wrong:

* a framework that is not installed gives one line, :class:`resty.errors.BackendUnavailableError`
  ("the tf backend needs TensorFlow: pip install 'resty[tf]'"), never an ImportError traceback;
* import order: importing TensorFlow before torch/torchvision can crash the process (segfault
  seen with torch -> tensorflow -> torchvision).  Before TensorFlow is imported, torch and
  torchvision are imported first when they are installed, so a process may use both backends
  in any order.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .errors import BackendUnavailableError, RestyError

__all__ = ["BACKENDS", "ALIASES", "normalize_name", "get_backend", "is_installed",
           "available_backends", "framework_version"]


@dataclass(frozen=True)
class _Backend:
    name: str            # "torch" | "tf"
    package: str         # the resty backend package
    frameworks: Tuple[str, ...]   # top-level modules it needs
    label: str           # human name of the framework
    extra: str           # pip extra


BACKENDS: Dict[str, _Backend] = {
    "torch": _Backend("torch", "resty_torch", ("torch", "torchvision"), "PyTorch", "torch"),
    "tf": _Backend("tf", "resty_tf", ("tensorflow", "keras"), "TensorFlow", "tf"),
}
ALIASES = {"torch": "torch", "pytorch": "torch", "pt": "torch",
           "tf": "tf", "tensorflow": "tf", "keras": "tf"}


def normalize_name(name: str) -> str:
    """``"pytorch"`` -> ``"torch"``, ``"tensorflow"`` -> ``"tf"``; unknown names raise RestyError."""
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise RestyError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return ALIASES[key]


def _has_module(mod: str) -> bool:
    if mod in sys.modules:
        return True
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def is_installed(name: str) -> bool:
    """Whether the framework(s) of backend ``name`` are installed (nothing is imported)."""
    b = BACKENDS[normalize_name(name)]
    return all(_has_module(m) for m in b.frameworks) and _has_module(b.package)


def available_backends() -> List[str]:
    """Names of the backends whose framework is installed, in the order torch, tf."""
    return [n for n in BACKENDS if is_installed(n)]


def _missing_message(b: _Backend, detail: str = "") -> str:
    msg = f"the {b.name} backend needs {b.label}: pip install 'resty[{b.extra}]'"
    return f"{msg} ({detail})" if detail else msg


def _import_torch_first() -> None:
    """Import torch and torchvision before TensorFlow when they are installed (see module doc)."""
    if "tensorflow" in sys.modules:
        return  # too late to change the order; nothing to gain by importing torch now
    for mod in ("torch", "torchvision"):
        if mod not in sys.modules and _has_module(mod):
            try:
                importlib.import_module(mod)
            except Exception:   # a broken torch must not stop the tf backend
                return


def _quiet_tensorflow() -> None:
    # TensorFlow prints C++ start-up chatter to stderr; users of a CLI see it as noise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def get_backend(name: str):
    """The backend module for ``name`` (``"torch"`` or ``"tf"``; aliases accepted).

    Raises :class:`BackendUnavailableError` with a one-line message when the framework is not
    installed (or fails to import), :class:`RestyError` for an unknown name.
    """
    b = BACKENDS[normalize_name(name)]
    if b.package in sys.modules:
        return sys.modules[b.package]
    for mod in b.frameworks:
        if not _has_module(mod):
            raise BackendUnavailableError(_missing_message(b))
    if b.name == "tf":
        _quiet_tensorflow()
        _import_torch_first()
    elif b.name == "torch":
        # torchvision together with torch, so that a later TensorFlow import comes after both.
        pass
    try:
        for mod in b.frameworks:
            importlib.import_module(mod)
        if not _has_module(b.package):
            raise BackendUnavailableError(
                f"the {b.name} backend package {b.package!r} is not installed; reinstall Resty "
                f"(pip install -e '.[{b.extra}]')")
        return importlib.import_module(b.package)
    except BackendUnavailableError:
        raise
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and missing.split(".")[0] in b.frameworks + (b.package,) and missing != b.package:
            raise BackendUnavailableError(_missing_message(b, f"importing {missing} failed: "
                                                              f"{' '.join(str(exc).split())}")) from None
        raise


def framework_version(name: str) -> str:
    """The version string of backend ``name``'s framework (imports it)."""
    b = BACKENDS[normalize_name(name)]
    get_backend(b.name)
    mod = sys.modules[b.frameworks[0]]
    return str(getattr(mod, "__version__", "?"))
