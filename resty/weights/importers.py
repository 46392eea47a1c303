"""Importers: canonical weight sets from torchvision state dicts, ``.pth`` files and Keras HDF5.

A ``.pth`` file is a pickle, so only torch reads it, with ``torch.load(..., weights_only=True)``
(which refuses anything but tensors and plain containers): the reader is the torch backend's
(:mod:`resty_torch.weights_io`).  Importing ``resty_torch`` registers it; without that, the
reader is reached through :func:`resty.backends.load_backend_module` when torch is installed.
The core never unpickles by itself and imports no framework.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple

import numpy as np

from resty.backends import load_backend_module
from resty.errors import WeightsError, one_line
from resty.specs import PREPROCESSING, vgg_layers

from .format import PathLike, WeightSet, _fail, _read_bytes, load_weights, vgg_param_shapes
from .layouts import from_keras_kernel
from .sniff import _SUPPORTED, _sniff

__all__ = ["from_torchvision_state_dict", "from_keras_h5", "register_pth_reader"]


# --------------------------------------------------------------------------- torchvision
def _as_float_array(value, where: object, key: str) -> np.ndarray:
    try:
        a = np.asarray(value)
    except Exception as exc:
        raise _fail(where, f"{key!r} cannot be converted to an array ({exc})") from None
    if a.dtype.kind != "f":
        raise _fail(where, f"{key!r} has dtype {a.dtype}, expected floating point")
    return a.astype(np.float64 if a.dtype == np.float64 else np.float32)


def _vgg_arch_from_count(n_convs: int, where: object) -> str:
    for arch in ("vgg16", "vgg19"):
        if n_convs == len(vgg_param_shapes(arch)) // 2:
            return arch
    raise _fail(where, f"found {n_convs} conv layers; VGG16 has 13 and VGG19 16")


def from_torchvision_state_dict(state: Mapping[str, Any], arch: Optional[str] = None, *,
                                source: str = "torchvision state dict",
                                where: object = "state dict") -> WeightSet:
    """Canonical VGG weights from a torchvision ``vgg16``/``vgg19`` state dict.

    Keys are ``features.{index}.weight`` / ``.bias`` with ``index`` from
    :func:`resty.specs.vgg_layers` (``LayerDef.index``); kernels are already OIHW.
    ``classifier.*`` keys are ignored; any other unknown ``features.*`` key (e.g. from a
    ``vgg19_bn``) or a missing / wrong-shaped one raises :class:`WeightsError`.  Values may
    be NumPy arrays or anything ``np.asarray`` accepts (CPU tensors).  Reading the ``.pth``
    file itself needs torch (pickle) and is done by the torch backend's reader.
    ``arch=None`` detects VGG16/VGG19 from the number of conv kernels.
    """
    if not isinstance(state, Mapping):
        raise _fail(where, f"expected a mapping of parameter names to arrays, got {type(state).__name__}")
    conv_keys = {str(k) for k, v in state.items() if re.fullmatch(r"features\.\d+\.weight", str(k))
                 and np.ndim(v) == 4}
    if arch is None:
        arch = _vgg_arch_from_count(len(conv_keys), where)
    shapes = vgg_param_shapes(arch)
    for other in ("vgg16", "vgg19"):
        # The other VGG's exact conv layout: say so, as load_weights does for canonical files.
        if other != arch and conv_keys == {f"features.{l.index}.weight" for l in vgg_layers(other)
                                           if l.kind == "conv"}:
            raise _fail(where, f"holds {other} weights, expected {arch} ({len(conv_keys)} conv layers "
                               f"in features.*, as in torchvision {other})")
    key_of = {}
    for layer in vgg_layers(arch):
        if layer.kind == "conv":
            key_of[f"features.{layer.index}.weight"] = f"{layer.name}.weight"
            key_of[f"features.{layer.index}.bias"] = f"{layer.name}.bias"
    for key in state:
        if not str(key).startswith("classifier.") and key not in key_of:
            raise _fail(where, f"unexpected key {key!r} for torchvision {arch} (is this a {arch}_bn "
                               "or another model?)")
    tensors = {}
    for key, name in key_of.items():
        if key not in state:
            raise _fail(where, f"missing key {key!r} ({name}, shape {shapes[name]}) for torchvision {arch}")
        tensors[name] = _as_float_array(state[key], where, key)
        if tuple(tensors[name].shape) != shapes[name]:
            raise _fail(where, f"key {key!r} has shape {tuple(tensors[name].shape)}, expected {shapes[name]} "
                               f"for torchvision {arch}")
    return WeightSet(tensors, arch, source, PREPROCESSING["torchvision"]).validate(where)


# --------------------------------------------------------------------------- Keras HDF5
_BLOCK_RE = re.compile(r"block(\d+)_conv(\d+)")


def _h5_datasets(group) -> list:
    """All datasets under an h5py group, depth first, in name order."""
    import h5py

    out = []
    for key in sorted(group.keys()):
        item = group[key]
        if isinstance(item, h5py.Dataset):
            out.append((item.name, item))
        elif isinstance(item, h5py.Group):
            out.extend(_h5_datasets(item))
    return out


def _kernel_and_bias(group, where: object, label: str):
    """The one 4-D (kernel) and one 1-D (bias) dataset of a layer group."""
    ds = _h5_datasets(group)
    kernels = [d for _, d in ds if d.ndim == 4]
    biases = [d for _, d in ds if d.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1:
        raise _fail(where, f"layer {label!r}: expected one 4-D kernel and one 1-D bias, found "
                           f"{[f'{n} {d.shape}' for n, d in ds]}")
    return np.asarray(kernels[0][()]), np.asarray(biases[0][()])


def _decode(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _keras_conv_layers(f, where: object) -> List[Tuple[Optional[str], np.ndarray, np.ndarray]]:
    """Conv layers of a Keras 2 or Keras 3 weight file as (name or None, kernel HWIO, bias)."""
    import h5py

    if isinstance(f.get("layers"), h5py.Group):
        # Keras 3 ``.weights.h5``: layers/{class_name[_n]}/vars/{0: kernel, 1: bias}; the
        # ``vars`` group's ``name`` attribute holds the layer's own name (block1_conv1).
        convs = []
        for key in f["layers"].keys():
            vars_ = f["layers"][key].get("vars") if isinstance(f["layers"][key], h5py.Group) else None
            if vars_ is None or "0" not in vars_ or vars_["0"].ndim != 4:
                continue
            if "1" not in vars_:
                raise _fail(where, f"layer {key!r} has no bias (vars/1)")
            # Keras numbers layers of one class in creation order: conv2d, conv2d_1, conv2d_2...
            order = int(key.rsplit("_", 1)[1]) if re.fullmatch(r".+_\d+", key) else 0
            name = vars_.attrs.get("name")
            convs.append((order, _decode(name) if name is not None else None,
                          np.asarray(vars_["0"][()]), np.asarray(vars_["1"][()])))
        convs.sort(key=lambda c: c[0])
        return [c[1:] for c in convs]
    # Keras 2 / keras-applications files: one group per layer, named block{b}_conv{i}; the
    # datasets sit directly in it (block1_conv1_W_1:0) or one level down (block1_conv1/kernel:0).
    root = f["model_weights"] if "model_weights" in f else f
    return [(key, *_kernel_and_bias(root[key], where, key)) for key in root.keys()
            if _BLOCK_RE.fullmatch(key) and isinstance(root[key], h5py.Group)]


def from_keras_h5(path: PathLike, arch: Optional[str] = None, *, source: Optional[str] = None) -> WeightSet:
    """Canonical VGG weights from a Keras applications VGG16/VGG19 HDF5 file.

    Reads the published ``vgg{16,19}_weights_tf_dim_ordering_tf_kernels[_notop].h5`` files
    (groups ``block{b}_conv{i}`` holding ``block1_conv1_W_1:0`` / ``..._b_1:0`` or
    ``block1_conv1/kernel:0`` / ``bias:0``), whole-model ``.h5`` saves (``model_weights/``)
    and Keras 3 ``.weights.h5`` files (``layers/conv2d*/vars/0`` and ``1``, matched by the
    stored layer name, else by creation order).  Kernels (kh, kw, in, out) become OIHW; dense
    (top) layers are ignored.  The preprocessing is ``caffe``: these weights expect BGR in
    [0, 255] minus the mean pixel.  ``arch=None`` detects VGG16/VGG19 from the conv count.
    """
    import h5py

    p = Path(os.fspath(path))
    _read_bytes(p, 8)  # uniform "no such file" / "is a directory" errors
    try:
        with h5py.File(p, "r") as f:
            found = _keras_conv_layers(f, p)
    except WeightsError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError/... for non-HDF5 or damaged files
        raise _fail(p, f"not a readable Keras HDF5 weight file ({exc})") from None
    if arch is None:
        arch = _vgg_arch_from_count(len(found), p)
    shapes = vgg_param_shapes(arch)
    # canonical conv name -> Keras layer name: conv3_2 -> block3_conv2
    keras_name = {l.name: f"block{l.block}_conv{l.name.split('_')[1]}" for l in vgg_layers(arch) if l.kind == "conv"}
    for other in ("vgg16", "vgg19"):
        # The other VGG's conv layers (by name, or by count when unnamed): say so plainly.
        theirs = {f"block{l.block}_conv{l.name.split('_')[1]}" for l in vgg_layers(other) if l.kind == "conv"}
        names = [n for n, _, _ in found]
        named = bool(found) and all(n is not None and _BLOCK_RE.fullmatch(n) for n in names)
        if other != arch and ((named and set(names) == theirs) or (not named and len(found) == len(theirs))):
            raise _fail(p, f"holds {other} weights, expected {arch} ({len(found)} conv layers, as in Keras {other})")
    if found and all(n is not None and _BLOCK_RE.fullmatch(n) for n, _, _ in found):
        by_name = {n: (k, b) for n, k, b in found}
        unknown = sorted(set(by_name) - set(keras_name.values()))
        if unknown:
            raise _fail(p, f"unexpected conv layer {unknown[0]!r} for Keras {arch}")
    else:
        if len(found) != len(keras_name):
            raise _fail(p, f"found {len(found)} conv layers, expected {len(keras_name)} for Keras {arch}")
        by_name = {kn: (k, b) for kn, (_, k, b) in zip(keras_name.values(), found)}
    tensors = {}
    for name, kn in keras_name.items():
        if kn not in by_name:
            raise _fail(p, f"missing layer {kn!r} for Keras {arch}")
        kernel, bias = by_name[kn]
        o, i, kh, kw = shapes[f"{name}.weight"]
        if tuple(kernel.shape) != (kh, kw, i, o):
            raise _fail(p, f"layer {kn!r} kernel has shape {tuple(kernel.shape)}, expected "
                           f"{(kh, kw, i, o)} (kh, kw, in, out) for Keras {arch}")
        if tuple(bias.shape) != (o,):
            raise _fail(p, f"layer {kn!r} bias has shape {tuple(bias.shape)}, expected {(o,)}")
        tensors[f"{name}.weight"] = _as_float_array(from_keras_kernel(kernel), p, kn)
        tensors[f"{name}.bias"] = _as_float_array(bias, p, kn)
    return WeightSet(tensors, arch, source or f"keras {p.name}", PREPROCESSING["caffe"]).validate(p)


# --------------------------------------------------------------------------- .pth files
PthReader = Callable[[Path], Mapping[str, Any]]
# Registered by resty_torch when it is imported (resty_torch.weights_io.read_pth).
_PTH_READER: Optional[PthReader] = None


def register_pth_reader(fn: Optional[PthReader]) -> None:
    """Install the function that reads a torch ``.pth`` file into ``{key: np.ndarray}``.

    The torch backend registers one (``torch.load(..., weights_only=True)``); the core never
    unpickles.  ``None`` removes it.
    """
    global _PTH_READER
    _PTH_READER = fn


def _torch_installed() -> bool:
    """Whether torch can be imported (without importing it)."""
    if "torch" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _read_pth_through_backend(path: Path) -> Mapping[str, Any]:
    """The torch backend's reader, loaded through the backend registry: for a process that did
    not import ``resty_torch`` (the TF backend, the CLI) but has torch installed."""
    try:
        weights_io = load_backend_module("resty_torch.weights_io")
    except Exception as exc:   # a missing torchvision or a broken torch install: one line
        raise _fail(path, f"reading a .pth needs torch, which failed to import ({one_line(exc)[:200]}); "
                          "reinstall it (pip install 'resty[torch]'), or convert the file with "
                          "`resty weights import PATH` where torch works") from None
    return weights_io.read_pth(path)


def _pth_reader() -> Optional[PthReader]:
    """The registered .pth reader, else the torch backend's when torch is installed, else None
    (nothing is imported to decide)."""
    if _PTH_READER is not None:
        return _PTH_READER
    return _read_pth_through_backend if _torch_installed() else None


_NEEDS_TORCH = ("reading a .pth needs torch, which is not installed (it is a pickle, and only "
                "torch.load(weights_only=True) may read it): pip install torch, or convert it first with "
                "`resty weights import PATH` where torch is installed")


def _read_pth(path: Path, arch: Optional[str]) -> WeightSet:
    reader = _pth_reader()
    if reader is None:
        raise _fail(path, _NEEDS_TORCH)
    try:
        state = reader(path)
    except WeightsError:
        raise
    except Exception as exc:
        raise _fail(path, f"cannot read the PyTorch file ({exc})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return from_torchvision_state_dict(state, arch, source=f"torchvision {path.name}", where=path)


# --------------------------------------------------------------------------- any file
def _load_any(path: Path, arch: Optional[str]) -> WeightSet:
    """A WeightSet from a canonical, Keras HDF5 or torch file (the format detected first)."""
    kind = _sniff(path)
    if kind == "hdf5":
        if arch == "transformer":
            raise _fail(path, "is a Keras HDF5 file; only VGG weights can be imported from Keras files")
        return from_keras_h5(path, arch)
    if kind == "torch":
        if arch == "transformer":
            raise _fail(path, "is a PyTorch file; load transformer checkpoints with resty_torch, "
                              "or save them as .safetensors")
        return _read_pth(path, arch)
    if kind == "keras-archive":
        raise _fail(path, "a .keras archive is not supported; save the weights with "
                          "model.save_weights(\"x.weights.h5\") and use that file")
    if kind == "unknown":
        raise _fail(path, f"unsupported weight file type; {_SUPPORTED}")
    return load_weights(path, expect=arch)
