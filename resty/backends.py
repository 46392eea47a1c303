"""Lazy access to the framework backends, by name.

``get_backend("torch")`` returns the ``resty_torch`` module, ``get_backend("tf")`` the
``resty_tf`` module; both expose the same names (docs/BACKEND_API.md).
``load_backend_module("resty_torch.export")`` imports one module of a backend package (or of
``parity_tests``) the same way.  This module is the core's only way to a framework or a backend
(tests/test_core_imports.py holds every other core module to that).  Nothing here imports a
framework until a backend is asked for, so ``import resty`` (and ``resty presets``,
``resty weights ...``) stays framework-free.

Two things every caller would otherwise get wrong:

* a framework that is not installed gives one line, :class:`resty.errors.BackendUnavailableError`
  ("the tf backend needs TensorFlow: pip install 'resty[tf]'"), never an ImportError traceback;
* import order: importing TensorFlow before torch/torchvision can crash the process (segfault
  seen with torch -> tensorflow -> torchvision).  Before TensorFlow is imported, torch and
  torchvision are imported first when they are installed, so a process may use both backends
  in any order.

A framework that is installed but fails to import (a broken install) is one line too:
"TensorFlow is installed but failed to import (...); reinstall it: pip install 'resty[tf]'".

TensorFlow's C++ start-up lines ("All log messages before absl::InitializeLog() ...",
"cudart_stub.cc ... Could not find cuda drivers", "failed call to cuInit") ignore
``TF_CPP_MIN_LOG_LEVEL``; they are written straight to file descriptor 2 while TensorFlow is
imported and while it first lists its devices.  Resty points descriptor 2 at a temporary file
for exactly that time, so a command's stderr holds only Resty's own lines.  Set
``TF_CPP_MIN_LOG_LEVEL=0`` (or ``1``), or ``RESTY_DEBUG=1``, to see them.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from .errors import BackendUnavailableError, RestyError, one_line

__all__ = ["BACKENDS", "ALIASES", "normalize_name", "get_backend", "load_backend_module",
           "is_installed", "available_backends", "framework_version"]


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


def prepare_imports(warn_if_late: bool = False) -> None:
    """Make this process safe for both frameworks: import torch, torchvision and torch._dynamo
    (which torch.optim imports lazily on first use) before TensorFlow, when they are installed.
    Importing them after TensorFlow can crash the process (a segfault).  Both backend packages
    call this first thing on import, so any import order of the backends is safe; if
    TensorFlow is already loaded it is too late (``warn_if_late``: a warning says what to do)."""
    if "tensorflow" in sys.modules:
        if warn_if_late and "torch._dynamo" not in sys.modules:
            import warnings
            warnings.warn("TensorFlow was imported before torch was fully imported: a process using both can "
                          "crash; import resty_torch (or torch and torchvision) before tensorflow",
                          RuntimeWarning, stacklevel=3)
        return
    for mod in ("torch", "torchvision", "torch._dynamo"):
        if mod not in sys.modules and _has_module(mod.split(".")[0]):
            try:
                importlib.import_module(mod)
            except Exception:   # a broken torch must not stop the tf backend
                return


def _tf_logs_wanted() -> bool:
    """Whether the user asked to see TensorFlow's own log lines: ``TF_CPP_MIN_LOG_LEVEL`` set
    to ``0`` or ``1`` (Resty's default is ``2``), or ``RESTY_DEBUG`` set."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if level is not None and level.strip() in ("0", "1"):
        return True
    return os.environ.get("RESTY_DEBUG", "").strip() not in ("", "0")


def _quiet_tensorflow() -> bool:
    """Set ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user set it; True when TensorFlow's C++
    start-up lines should be silenced (see the module doc)."""
    wanted = _tf_logs_wanted()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return not wanted


class _Captured:
    """What was written to file descriptor 2 inside :func:`_stderr_fd_to_file` (``text``)."""
    text = ""


@contextlib.contextmanager
def _stderr_fd_to_file(enabled: bool = True) -> Iterator[_Captured]:
    """Point file descriptor 2 at a temporary file (C/C++ code writes there directly, so
    ``sys.stderr`` alone is not enough), restoring it afterwards, even on errors.  What was
    written is in the yielded object's ``text`` after the block.  Does nothing when not
    ``enabled`` or when descriptor 2 cannot be duplicated."""
    cap = _Captured()
    saved: Optional[int] = None
    tmp = None
    if enabled:
        try:
            sys.stderr.flush()
        except Exception:   # a closed or replaced sys.stderr: nothing to flush
            pass
        try:
            tmp = tempfile.TemporaryFile()
            saved = os.dup(2)
            os.dup2(tmp.fileno(), 2)
        except OSError:
            if saved is not None:
                os.close(saved)
                saved = None
            if tmp is not None:
                tmp.close()
                tmp = None
    try:
        yield cap
    finally:
        if saved is not None:
            try:
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(saved, 2)
            os.close(saved)
        if tmp is not None:
            try:
                tmp.seek(0)
                cap.text = tmp.read(1 << 20).decode("utf-8", "replace")
            except OSError:
                pass
            finally:
                tmp.close()


# absl/glog line prefix: severity letter, MMDD, time, thread id, file:line]
_LOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [^\]]*\] ?")
_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "To enable the following instructions")


def _relevant_line(text: str) -> str:
    """The line of TensorFlow's start-up output that best explains a failure: the first
    error/fatal log line, else the first line that is not start-up chatter; '' if none."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(_NOISE)]
    for ln in lines:
        if ln[:1] in "EF" and _LOG_PREFIX.match(ln):
            return _LOG_PREFIX.sub("", ln)
    for ln in lines:
        if not (ln[:1] in "IW" and _LOG_PREFIX.match(ln)):
            return ln
    return ""


def _first_line(text: object, limit: int = 200) -> str:
    """The first non-blank line of ``text`` made one line by :func:`resty.errors.one_line`, cut
    to ``limit`` characters: a framework's import error can run to pages."""
    for ln in str(text).splitlines():
        ln = one_line(ln)
        if ln:
            return ln if len(ln) <= limit else ln[:limit - 3] + "..."
    return ""


_LABELS = {"tensorflow": "TensorFlow", "keras": "Keras", "torch": "PyTorch", "torchvision": "torchvision"}


def _broken_install(b: _Backend, mod: str, exc: BaseException, captured: str = "") -> BackendUnavailableError:
    """The one-line error for a framework that is installed but fails to import."""
    detail = _first_line(exc) or type(exc).__name__
    if not isinstance(exc, ImportError):
        detail = f"{type(exc).__name__}: {detail}"
    printed = _first_line(_relevant_line(captured))
    if printed and printed not in detail:
        detail += f"; it printed: {printed}"
    return BackendUnavailableError(f"{_LABELS.get(mod, mod)} is installed but failed to import ({detail}); "
                                   f"reinstall it: pip install 'resty[{b.extra}]'")


def _import_frameworks(b: _Backend, quiet: bool) -> None:
    """Import ``b``'s frameworks (descriptor 2 silenced when ``quiet``); a framework that is
    installed but fails to import raises a one-line :class:`BackendUnavailableError`."""
    for mod in b.frameworks:
        if mod in sys.modules:
            continue
        with _stderr_fd_to_file(quiet) as cap:
            try:
                importlib.import_module(mod)
                if mod == "tensorflow":
                    # The first device listing loads the CUDA platform, which logs
                    # "failed call to cuInit" on machines without a GPU; do it silenced now.
                    try:
                        sys.modules["tensorflow"].config.list_physical_devices()
                    except Exception:
                        pass
                err = None
            except ModuleNotFoundError as exc:
                if exc.name == mod:   # not installed after all (find_spec saw a leftover)
                    raise BackendUnavailableError(_missing_message(b)) from None
                err = exc
            except Exception as exc:   # a broken install: ImportError, AttributeError, TypeError...
                err = exc
        if err is not None:
            raise _broken_install(b, mod, err, cap.text) from None


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
    quiet = False
    if b.name == "tf":
        quiet = _quiet_tensorflow()
        prepare_imports()
    elif b.name == "torch":
        # torchvision together with torch, so that a later TensorFlow import comes after both.
        pass
    _import_frameworks(b, quiet)
    try:
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
                                                              f"{one_line(exc)}")) from None
        raise


# The source tree's cross-framework test package: it imports both frameworks itself, so it is
# reached through this registry too (the import order, one-line errors).
PARITY_PACKAGE = "parity_tests"


def load_backend_module(name: str):
    """Import ``name``, a dotted module of a backend package (``"resty_torch.export"``,
    ``"resty_tf.baselines"``) or of the parity test package (``"parity_tests.__main__"``), and
    return it.

    This is the one way the framework-free core reaches framework code: the backend's
    frameworks are imported first, in the safe order :func:`get_backend` uses (torch and
    torchvision before TensorFlow).  A backend whose framework is missing, or a module that does
    not exist, raises a one-line :class:`BackendUnavailableError`; a name outside the backend
    packages raises :class:`RestyError`.
    """
    name = str(name).strip()
    top = name.split(".")[0]
    by_package = {b.package: b for b in BACKENDS.values()}
    if top in by_package:
        b = by_package[top]
        get_backend(b.name)
        what = f"the {b.name} backend"
    elif top == PARITY_PACKAGE:
        # parity_tests imports torch, torchvision and TensorFlow itself; importing the installed
        # ones here first, torch before TensorFlow, keeps the order safe and TensorFlow's start-up
        # lines off stderr.  A framework that fails is left to the parity report to explain.
        quiet = _quiet_tensorflow()
        for b in BACKENDS.values():
            if all(_has_module(m) for m in b.frameworks):
                try:
                    _import_frameworks(b, quiet and "tensorflow" in b.frameworks)
                except BackendUnavailableError:
                    pass
        what = "the parity tests (they ship in the source tree: run from a clone)"
    else:
        raise RestyError(f"{name!r} is not a module of a backend package "
                         f"({', '.join(sorted(by_package))}, {PARITY_PACKAGE})")
    if sys.modules.get(name) is not None:
        return sys.modules[name]
    if not _has_module(name):
        raise BackendUnavailableError(f"{name} is not available here; it belongs to {what}")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = getattr(exc, "name", None) or "?"
        raise BackendUnavailableError(f"{name} could not be imported: module {missing!r} is missing "
                                      f"({_first_line(exc)})") from None


def framework_version(name: str) -> str:
    """The version string of backend ``name``'s framework (imports it)."""
    b = BACKENDS[normalize_name(name)]
    get_backend(b.name)
    mod = sys.modules[b.frameworks[0]]
    return str(getattr(mod, "__version__", "?"))


# =========================================================================== conversion
CONVERT_TARGETS = ("torch", "tf", "onnx", "savedmodel", "keras")


def _is_savedmodel(path) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def _atomic_dir(target, overwrite: bool, write) -> None:
    """Write a folder (or a file whose writer insists on its own name) atomically: ``write(tmp)``
    into a temporary sibling, then rename it onto ``target``.  ``overwrite`` replaces only what
    Resty writes: a file, or a folder that is a SavedModel; any other folder is refused."""
    import shutil
    import tempfile
    from pathlib import Path

    from .errors import OutputExistsError
    target = Path(target)
    if os.path.lexists(target) and not overwrite:
        raise OutputExistsError(f"{target}: already exists (pass --overwrite to replace it)")
    if target.is_dir() and not target.is_symlink() and not _is_savedmodel(target):
        raise OutputExistsError(f"{target}: is a folder that is not a SavedModel; --overwrite replaces only a "
                                "model Resty wrote: choose another output path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        staged = tmpdir / target.name
        write(staged)
        if os.path.lexists(target):
            os.replace(target, tmpdir / "replaced")    # kept until the new one is in place
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _check_close(got, want, what: str, tol: float = 1e-3) -> float:
    import numpy as np
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise RestyError(f"{what}: the converted model gives shape {got.shape}, expected {want.shape}")
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    if not err <= tol:
        raise RestyError(f"{what}: the converted model differs from the original by {err:.3g} (> {tol:g})")
    return err


def _probe_inputs(seed: int = 0):
    """Two small inputs to check a converted model against the original.  The first has sides
    that are not multiples of 4, so a traced export (ONNX) records the padding branch of the
    forward pass; the second has other sizes (multiples of 4) to prove the export is size-generic."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return [rng.random((1, 3, 29, 19), dtype=np.float32), rng.random((2, 3, 36, 44), dtype=np.float32)]


#: The oldest ONNX opset the exported graph can be written in (Resize, Pad with tensor inputs).
MIN_OPSET = 13


def convert_model(ws, to: str, out, *, overwrite: bool = False, opset: int = 17, source: str = "",
                  onnx_graph: str = "auto") -> "os.PathLike":
    """Convert a trained transformer (a canonical :class:`resty.weights.WeightSet`) to ``to``.

    * ``torch``: ``.pt``/``.pth`` -> ``{"state_dict", "spec"}`` saved with ``torch.save`` (loadable
      with ``weights_only=True``); ``.safetensors`` -> canonical file re-saved through resty_torch.
    * ``tf``: ``.weights.h5`` -> Keras ``save_weights``; ``.safetensors`` -> canonical through resty_tf.
    * ``onnx``: the transformer as ONNX (input ``image``: NCHW float32 RGB in [0, 1], dynamic
      batch/height/width; output ``stylized``), checked against torch with onnxruntime on two sizes.
      ``onnx_graph="auto"`` (default) writes :func:`resty.onnx_runtime.build_onnx_model`'s graph
      (exact rewrites that need ~30% less CPU time on ONNX Runtime's CPU provider) when the spec allows it
      (nearest-upsampling, instance-norm nets), else ``torch.onnx.export`` of resty_torch's
      TransformerNet; ``"torch"`` / ``"resty"`` force one.
    * ``savedmodel``: resty_tf's SavedModel export, signature ``serving_default(images)`` taking
      NHWC float32 RGB in [0, 1] of any size (output clamped), checked after reloading.
    * ``keras``: a ``.keras`` file (``keras.saving.load_model`` reads it back with resty_tf
      imported), checked after reloading.

    Every output is written atomically and checked; returns its path.
    """
    from pathlib import Path

    import numpy as np

    from .errors import OutputExistsError
    from .weights import save_weights

    if to not in CONVERT_TARGETS:
        raise RestyError(f"unknown target {to!r}; allowed: {', '.join(CONVERT_TARGETS)}")
    if to == "onnx":
        import onnx
        newest = onnx.defs.onnx_opset_version()
        if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
            raise RestyError(f"opset: got {opset!r}; this ONNX export needs {MIN_OPSET} to {newest} "
                             f"(Resize and Pad with tensor inputs; the installed onnx knows up to {newest})")
    if ws.architecture != "transformer":
        raise RestyError(f"{source or 'model'}: is {ws.architecture} weights, not a trained fast model")
    out = Path(out)
    if os.path.lexists(out) and not overwrite:
        raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    name = out.name.lower()
    if to == "torch" and not name.endswith((".safetensors", ".pt", ".pth")):
        raise RestyError(f"{out}: for --to torch use a .pt/.pth (state dict) or .safetensors file")
    if to == "tf" and not name.endswith((".safetensors", ".weights.h5")):
        raise RestyError(f"{out}: for --to tf use a .weights.h5 (Keras weights) or .safetensors file")
    if to in ("onnx", "keras") and not name.endswith(f".{to}"):
        raise RestyError(f"{out}: for --to {to} use a .{to} file")
    ort = None
    if to == "onnx":
        if onnx_graph not in ("auto", "resty", "torch"):
            raise RestyError(f"unknown onnx_graph {onnx_graph!r}; allowed: auto, resty, torch")
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError("ONNX export is checked with onnxruntime: "
                                          "pip install 'resty[onnx]'") from None

    # The framework side (the network, its files and exports) lives in the backend's twin
    # module; here: the checks, atomic writes and ONNX Runtime, the same for every target.
    from .fast import model_preset
    backend = "torch" if to in ("torch", "onnx") else "tf"
    ex = load_backend_module(f"{BACKENDS[backend].package}.export").Exporter(
        ws, model_preset(ws) if backend == "tf" else None)
    probes = _probe_inputs()
    ref = ex.outputs(probes)

    if to in ("torch", "tf"):
        if name.endswith(".safetensors"):
            return save_weights(out, ex.canonical(), overwrite=overwrite)

        def write(path):
            ex.save_native(path)
            _check_close(ex.load_native(path)(probes[0]), ref[0], str(out), tol=0.0)

        _atomic_dir(out, overwrite, write)
        return out

    if to == "onnx":
        from . import onnx_runtime as _ox
        use_resty = onnx_graph == "resty" or (onnx_graph == "auto" and _ox.supports(ws.spec))

        def write(path):
            if use_resty:   # resty's own graph: the same function, rewritten for ONNX Runtime's CPU kernels
                path.write_bytes(_ox.build_onnx_model(ws, opset=int(opset)).SerializeToString())
            else:
                ex.export("onnx", path, opset=int(opset), probe=probes[0])
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            for p, r in zip(probes, ref):
                tol = _ox.tolerance(r) if use_resty else 1e-3 * max(1.0, float(np.abs(r).max()))
                _check_close(sess.run(None, {"image": p})[0], r, f"{out} (onnxruntime)", tol=tol)

        _atomic_dir(out, overwrite, write)
        return out

    if to == "keras":
        def write(path):
            ex.export("keras", path)
            _check_close(ex.load_export(path, "keras")(probes[1]), ref[1], str(out), tol=1e-5)

        _atomic_dir(out, overwrite, write)
        return out

    def write(path):   # savedmodel: serving_default(images: B×H×W×3 float32 [0, 1]) -> stylized, clamped
        ex.export("savedmodel", path)
        back = ex.load_export(path, "savedmodel")
        for p, r in zip(probes, ref):
            _check_close(back(p), np.clip(r, 0.0, 1.0), f"{out} (reloaded SavedModel)", tol=1e-4)

    _atomic_dir(out, overwrite, write)
    return out



