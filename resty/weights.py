"""Weights: the canonical file format, seeded random weights, importers, sources and cache.

Canonical format
----------------
A safetensors file (never pickle) holding one float32 (or float64) tensor per named
parameter, plus string metadata:

=================  =====================================================================
``format``         ``"resty-weights"``
``format_version`` ``"1"``
``architecture``   ``"vgg16"``, ``"vgg19"`` or ``"transformer"``
``layout``         ``"OIHW (conv), IOHW (transposed conv)"`` (torch's layouts)
``source``         free text: ``"torchvision vgg19-dcbb9e9d.pth"``, ``"random:0"``, ...
``preprocessing``  JSON of the :class:`~resty.specs.Preprocessing` (VGG only)
``spec``           JSON of the :class:`~resty.specs.TransformerSpec` (transformer only)
``extra``          optional JSON object (training step, hashes, notes)
=================  =====================================================================

VGG parameters are ``conv1_1.weight`` (out, in, kh, kw) and ``conv1_1.bias`` (out,), named
after :func:`resty.specs.vgg_layers`; transformer parameters are exactly
:func:`resty.specs.transformer_param_shapes`.  Both backends read and write this format, so
a network trained in one runs in the other.  The layout conversions to Keras
(:func:`to_keras_kernel` and friends) live here and nowhere else.

Sources
-------
``resolve_weights`` turns what a user typed (``"random:SEED"``, ``"imagenet"``,
``"imagenet:torchvision"``, ``"imagenet:keras"`` or a path) into a :class:`WeightSet`.
ImageNet weights come from the Resty cache (``$RESTY_HOME`` or ``~/.cache/resty``), from a
file the frameworks already downloaded (Keras's ``~/.keras/models``, torch hub's
``~/.cache/torch/hub/checkpoints``), or from the network (through a downloader a backend
registered, else urllib; set ``RESTY_OFFLINE=1`` to forbid).  Reading a torchvision ``.pth``
file needs torch (it is a pickle): the torch backend registers a reader with
:func:`register_pth_reader`; without one, the core imports torch (only torch, never
torchvision, which can crash a process that already imported TensorFlow) when it is installed
and reads the file with ``torch.load(..., weights_only=True)``, which refuses anything but
tensors and plain containers.  The core never unpickles by itself.

This module imports no framework.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import struct
import sys
import urllib.error
import urllib.request
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from resty.errors import OutputExistsError, RestyError, WeightsError
from resty.images import atomic_path
from resty.specs import (PREPROCESSING, Preprocessing, TransformerSpec, transformer_layers,
                         transformer_param_shapes, vgg_layers)

__all__ = [
    "FORMAT", "FORMAT_VERSION", "LAYOUT", "ARCHITECTURES", "WeightSet", "vgg_param_shapes",
    "expected_shapes", "save_weights", "load_weights", "read_metadata", "random_vgg",
    "random_transformer", "to_keras_kernel", "from_keras_kernel", "iohw_to_keras_transposed",
    "keras_transposed_to_iohw", "from_torchvision_state_dict", "from_keras_h5", "ImagenetSource",
    "IMAGENET_SOURCES", "cache_dir", "cached_weights_path", "keras_cache_dir", "torch_cache_dir",
    "register_pth_reader", "register_downloader", "download", "resolve_weights",
    "import_weights", "verify", "list_cached", "file_sha256",
]

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "resty-weights"
FORMAT_VERSION = "1"
LAYOUT = "OIHW (conv), IOHW (transposed conv)"
ARCHITECTURES = ("vgg16", "vgg19", "transformer")
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# A safetensors header larger than this is certainly not one of ours (VGG19's is ~4 KB);
# refusing it early keeps a garbage file from making us read gigabytes of "JSON".
_MAX_HEADER_BYTES = 16 * 1024 * 1024


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _fail(where: object, problem: str) -> WeightsError:
    """A one-line WeightsError naming the file (or other origin) and the problem."""
    return WeightsError(_one_line(f"{where}: {problem}"))


# --------------------------------------------------------------------------- shapes
def vgg_param_shapes(arch: str) -> Dict[str, Tuple[int, ...]]:
    """Canonical VGG parameter names and shapes, in forward order:
    ``conv1_1.weight`` (out, in, 3, 3), ``conv1_1.bias`` (out,), ... ``conv5_{3|4}.bias``."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    for layer in vgg_layers(arch):
        if layer.kind == "conv":
            shapes[f"{layer.name}.weight"] = (layer.out_channels, layer.in_channels, 3, 3)
            shapes[f"{layer.name}.bias"] = (layer.out_channels,)
    return shapes


def expected_shapes(architecture: str, spec: Optional[TransformerSpec] = None) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes a weight set of ``architecture`` must hold (``spec`` for transformers)."""
    if architecture == "transformer":
        if spec is None:
            raise ValueError("expected_shapes: a transformer needs its TransformerSpec")
        return transformer_param_shapes(spec)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: got {architecture!r}; allowed: {', '.join(map(repr, ARCHITECTURES))}")
    return vgg_param_shapes(architecture)


def _first_problem(tensors: Mapping[str, Any], shapes: Mapping[str, Tuple[int, ...]]) -> Optional[str]:
    """The first thing wrong with ``tensors`` against ``shapes`` (canonical order), or None."""
    missing = [n for n in shapes if n not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"missing tensor {missing[0]!r} of shape {tuple(shapes[missing[0]])}{more}"
    unexpected = sorted(n for n in tensors if n not in shapes)
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        return f"unexpected tensor {unexpected[0]!r}{more}"
    for name, shape in shapes.items():
        t = np.asarray(tensors[name])
        if tuple(t.shape) != tuple(shape):
            return f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}"
        if t.dtype not in _FLOAT_DTYPES:
            return f"tensor {name!r} has dtype {t.dtype}, expected float32 or float64"
    for name in shapes:
        # A diverged training run saves NaNs; catching them here names the file at fault.
        if not np.isfinite(np.asarray(tensors[name])).all():
            return f"tensor {name!r} contains NaN or infinite values"
    return None


# --------------------------------------------------------------------------- weight set
@dataclass(frozen=True, eq=False)
class WeightSet:
    """Named parameters (NumPy, canonical layouts) and what they are.

    ``architecture`` is ``vgg16``, ``vgg19`` or ``transformer``; a VGG set carries the
    ``preprocessing`` its inputs need, a transformer set its ``spec``.  ``source`` is free
    text saying where the numbers came from; ``extra`` is a JSON-able dict.
    (``eq=False``: comparing dicts of arrays with ``==`` is ambiguous; use :meth:`fingerprint`.)
    """
    tensors: Dict[str, np.ndarray]
    architecture: str
    source: str = ""
    preprocessing: Optional[Preprocessing] = None
    spec: Optional[TransformerSpec] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"WeightSet.architecture: got {self.architecture!r}; "
                             f"allowed: {', '.join(map(repr, ARCHITECTURES))}")
        if self.architecture == "transformer":
            if not isinstance(self.spec, TransformerSpec):
                raise ValueError("WeightSet.spec: a transformer weight set needs a TransformerSpec")
            if self.preprocessing is not None:
                raise ValueError("WeightSet.preprocessing: only VGG weight sets carry a preprocessing")
        else:
            if not isinstance(self.preprocessing, Preprocessing):
                raise ValueError("WeightSet.preprocessing: a VGG weight set needs a Preprocessing")
            if self.spec is not None:
                raise ValueError("WeightSet.spec: only transformer weight sets carry a spec")
        if not isinstance(self.extra, dict):
            raise ValueError(f"WeightSet.extra: expected a dict, got {type(self.extra).__name__}")

    @property
    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        """The names and shapes this architecture (and spec) requires."""
        return expected_shapes(self.architecture, self.spec)

    @property
    def n_params(self) -> int:
        return int(sum(np.asarray(t).size for t in self.tensors.values()))

    def problem(self) -> Optional[str]:
        """The first thing wrong with the tensors (missing, unexpected, shape, dtype, NaN) or None."""
        return _first_problem(self.tensors, self.shapes)

    def validate(self, where: object = "weights") -> "WeightSet":
        """Raise a one-line :class:`WeightsError` (prefixed by ``where``) if anything is wrong."""
        problem = self.problem()
        if problem:
            raise _fail(where, problem)
        return self

    def fingerprint(self) -> str:
        """SHA-256 over names, dtypes, shapes and bytes: equal iff the numbers are identical."""
        h = hashlib.sha256()
        for name in sorted(self.tensors):
            t = np.ascontiguousarray(self.tensors[name])
            h.update(f"{name}|{t.dtype.str}|{t.shape}\n".encode())
            h.update(t.tobytes())
        return h.hexdigest()

    def astype(self, dtype) -> "WeightSet":
        """A copy with every tensor cast to ``dtype`` (float32 or float64)."""
        return dataclasses.replace(self, tensors={k: np.asarray(v).astype(dtype) for k, v in self.tensors.items()})

    def metadata(self) -> Dict[str, str]:
        """The safetensors metadata this set is saved with."""
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": self.architecture,
                "layout": LAYOUT, "source": str(self.source)}
        if self.preprocessing is not None:
            meta["preprocessing"] = self.preprocessing.to_json()
        if self.spec is not None:
            meta["spec"] = self.spec.to_json()
        if self.extra:
            try:
                meta["extra"] = json.dumps(self.extra, sort_keys=True)
            except (TypeError, ValueError) as exc:
                raise WeightsError(f"weights: 'extra' must be JSON-serialisable ({_one_line(exc)})") from None
        return meta


# --------------------------------------------------------------------------- save / load
def save_weights(path: PathLike, ws: WeightSet, *, overwrite: bool = False) -> Path:
    """Write ``ws`` as a canonical safetensors file, atomically; returns the path.

    The set is validated first, so a bad file is never written.  An existing file raises
    :class:`OutputExistsError` unless ``overwrite``.
    """
    from safetensors.numpy import save as _st_save

    target = Path(os.fspath(path))
    ws.validate(target)
    if not overwrite and os.path.lexists(target):
        raise OutputExistsError(f"{target}: already exists (pass overwrite=True to replace it)")
    # safetensors needs C-contiguous arrays; the header is written in name order, so equal
    # sets give byte-identical files.
    tensors = {k: np.ascontiguousarray(ws.tensors[k]) for k in sorted(ws.tensors)}
    data = _st_save(tensors, metadata=ws.metadata())
    with atomic_path(target, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return target


def _parse_header(data: bytes, where: object) -> Dict[str, Any]:
    """The JSON header of safetensors bytes (the format is: u64 little-endian length, JSON, data)."""
    if len(data) < 8:
        raise _fail(where, "not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > _MAX_HEADER_BYTES or 8 + n > len(data):
        raise _fail(where, "not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _fail(where, "not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise _fail(where, "not a safetensors file (header is not a JSON object)")
    return header


def _read_bytes(path: Path, limit: Optional[int] = None) -> bytes:
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, not a weight file")
    try:
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except OSError as exc:
        raise _fail(path, f"cannot read ({exc.strerror or exc})") from None


def _meta_from_header(header: Mapping[str, Any], where: object) -> Dict[str, str]:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise _fail(where, "not a safetensors file (metadata is not an object)")
    return {str(k): str(v) for k, v in meta.items()}


def read_metadata(path: PathLike) -> Dict[str, str]:
    """The safetensors string metadata of ``path`` (reads only the header)."""
    p = Path(os.fspath(path))
    head = _read_bytes(p, 8)
    if len(head) < 8:
        raise _fail(p, "not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > _MAX_HEADER_BYTES:
        raise _fail(p, "not a safetensors file (bad header length)")
    return _meta_from_header(_parse_header(_read_bytes(p, 8 + n), p), p)


def _interpret_metadata(meta: Mapping[str, str], where: object):
    """(architecture, source, preprocessing, spec, extra) from Resty metadata, checked."""
    fmt = meta.get("format")
    if fmt != FORMAT:
        found = "no 'format' metadata" if fmt is None else f"metadata format={fmt!r}"
        raise _fail(where, f"not a Resty weight file ({found}; expected format={FORMAT!r}); "
                           "convert it with `resty weights import PATH`")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise _fail(where, f"format_version {version!r} is not supported (this Resty reads {FORMAT_VERSION!r})")
    arch = meta.get("architecture")
    if arch not in ARCHITECTURES:
        raise _fail(where, f"architecture {arch!r} is unknown; allowed: {', '.join(ARCHITECTURES)}")
    layout = meta.get("layout", LAYOUT)
    if layout != LAYOUT:
        raise _fail(where, f"layout {layout!r} is not {LAYOUT!r}")
    prep = spec = None
    try:
        if arch == "transformer":
            if "spec" not in meta:
                raise _fail(where, "transformer weights without 'spec' metadata")
            spec = TransformerSpec.from_json(meta["spec"])
        else:
            if "preprocessing" not in meta:
                raise _fail(where, "VGG weights without 'preprocessing' metadata")
            prep = Preprocessing.from_json(meta["preprocessing"])
        extra = json.loads(meta["extra"]) if "extra" in meta else {}
    except WeightsError:
        raise
    except (ValueError, TypeError) as exc:
        raise _fail(where, f"bad metadata ({exc})") from None
    if not isinstance(extra, dict):
        raise _fail(where, "bad metadata ('extra' is not a JSON object)")
    return arch, meta.get("source", ""), prep, spec, extra


def _check_expect(ws: WeightSet, expect, where: object) -> None:
    if expect is None:
        return
    if isinstance(expect, TransformerSpec):
        if ws.architecture != "transformer":
            raise _fail(where, f"holds {ws.architecture} weights, expected transformer weights")
        if ws.spec != expect:
            theirs, ours = ws.spec.to_dict(), expect.to_dict()
            diff = [k for k in ours if theirs.get(k) != ours[k]] or ["spec"]
            k = diff[0]
            raise _fail(where, f"transformer spec differs: {k}={theirs.get(k)!r} in the file, "
                               f"{ours.get(k)!r} expected")
        return
    if expect not in ARCHITECTURES:
        raise ValueError(f"load_weights(expect=...): got {expect!r}; allowed: None, a TransformerSpec, "
                         f"{', '.join(map(repr, ARCHITECTURES))}")
    if ws.architecture != expect:
        raise _fail(where, f"holds {ws.architecture} weights, expected {expect}")


def load_weights(path: PathLike, *, expect: Union[None, str, TransformerSpec] = None) -> WeightSet:
    """Read and validate a canonical weight file.

    Checks, in order: the file exists and is readable safetensors; the metadata says
    ``format=resty-weights`` version 1 with a known architecture; every expected tensor is
    present with its shape, none unexpected, all float32/float64 and finite; and, with
    ``expect`` (an architecture name or a :class:`TransformerSpec`), that it matches.
    Any failure raises a one-line :class:`WeightsError` naming the file and the first problem.
    Tensors are returned as writable arrays in the file's dtype.
    """
    from safetensors.numpy import load as _st_load

    p = Path(os.fspath(path))
    data = _read_bytes(p)
    header = _parse_header(data, p)
    meta = _meta_from_header(header, p)
    arch, source, prep, spec, extra = _interpret_metadata(meta, p)
    try:
        raw = _st_load(data)
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise _fail(p, f"corrupt safetensors data ({exc})") from None
    # np.array copies: safetensors returns read-only views on `data`, which torch.from_numpy dislikes.
    tensors = {k: np.array(v) for k, v in raw.items()}
    try:
        ws = WeightSet(tensors, arch, source, prep, spec, extra)
    except ValueError as exc:
        raise _fail(p, str(exc)) from None
    ws.validate(p)
    _check_expect(ws, expect, p)
    return ws


# --------------------------------------------------------------------------- random weights
def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WeightsError(f"random weights: seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _normal(seed: int, name: str, shape, std: float = 1.0, mean: float = 0.0) -> np.ndarray:
    """N(mean, std²) for parameter ``name``: float64 draws, then one rounding to float32.

    The generator is seeded by (seed, crc32(name)), so a parameter's values depend neither on
    the order parameters are generated in nor on which other parameters exist; PCG64 and the
    float64 arithmetic are the same on every platform, so the float32 result is bit-identical.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    x = rng.standard_normal(shape)
    x *= std
    x += mean
    return x.astype(np.float32)


# Typical standard deviation of a natural photo's pixels in [0, 1] units (0.22-0.30 over
# ImageNet-like images).  Used to undo each preprocessing's input scale in the first conv.
_PIXEL_STD = 0.25


def _input_gain(prep: Preprocessing) -> np.ndarray:
    """Per input channel factor for conv1_1's weights: 1 / the preprocessed image's spread.

    ``x_net[c] = (x01 * scale - mean[c]) / std[c]`` spreads about ``scale * 0.25 / std[c]``
    (~1.1 for torchvision, ~64 for caffe): multiplying conv1_1's weights by the inverse makes
    the features of both conventions O(1) with the same underlying random draws.
    """
    return np.array([s / (prep.scale * _PIXEL_STD) for s in prep.std], dtype=np.float64)


def _as_preprocessing(preprocessing) -> Preprocessing:
    if isinstance(preprocessing, Preprocessing):
        return preprocessing
    if preprocessing in PREPROCESSING:
        return PREPROCESSING[preprocessing]
    raise WeightsError(f"preprocessing: got {preprocessing!r}; allowed: {', '.join(map(repr, PREPROCESSING))} "
                       "or a Preprocessing")


def random_vgg(arch: str, seed: int, preprocessing: Union[str, Preprocessing] = "torchvision") -> WeightSet:
    """Seeded random VGG weights whose activations keep an O(1) scale through relu5_4.

    Kernels are He-normal, ``N(0, 2 / (9 C_in))``, which preserves the mean square through
    conv + ReLU; conv1_1 is additionally scaled per input channel by 1 / the preprocessing's
    input spread (see ``_input_gain``).  Biases are ``N(0, 0.01²)``.  Measured on a 64 px
    photo (tests/test_weights.py): every relu layer's RMS stays within [0.1, 10]× relu1_1's
    for both VGGs and both preprocessings (max pooling raises it a little per block).
    """
    seed = _check_seed(seed)
    prep = _as_preprocessing(preprocessing)
    tensors: Dict[str, np.ndarray] = {}
    for layer in vgg_layers(arch):
        if layer.kind != "conv":
            continue
        fan_in = layer.in_channels * 9
        w_name, b_name = f"{layer.name}.weight", f"{layer.name}.bias"
        shape = (layer.out_channels, layer.in_channels, 3, 3)
        rng = np.random.default_rng([seed, zlib.crc32(w_name.encode("utf-8"))])
        w = rng.standard_normal(shape)
        w *= np.sqrt(2.0 / fan_in)
        if layer.in_channels == 3:
            w *= _input_gain(prep)[None, :, None, None]
        tensors[w_name] = w.astype(np.float32)
        tensors[b_name] = _normal(seed, b_name, (layer.out_channels,), 0.01)
    return WeightSet(tensors, arch, f"random:{seed}", prep, None, {"seed": seed})


# Typical mean of a photo's pixels in [0, 1] units; with _PIXEL_STD it gives the input's
# mean square, from which random_transformer predicts batch-norm running variances.
_PIXEL_MEAN = 0.45


def random_transformer(spec: TransformerSpec, seed: int) -> WeightSet:
    """Seeded random transformer weights (canonical names and layouts of ``spec``).

    Conv kernels are He-normal over their fan-in (``C_in k²``, or ``C_in k² / stride²`` for a
    transposed conv, whose output pixels each see a quarter of the taps).  ``conv_in`` also
    undoes the input scale (images are ``[0, 1] * input_scale``) so its outputs are O(1).
    Norm weights are ``1 + N(0, 0.1²)`` and norm biases ``N(0, 0.1²)`` (far enough from 1 and
    0 that a swapped or missing parameter shows in a parity test); conv biases ``N(0, 0.01²)``.
    ``conv_out``: with ``output_activation='none'`` its output spreads ~0.25 * input_scale
    around 0.5 * input_scale (a mid-grey image with photo-like contrast after /input_scale);
    with sigmoid/tanh its pre-activation is O(1), away from saturation.

    Batch norm (inference mode) does not normalise by itself, so its running statistics are
    set from the predicted mean square of each conv's output (He convs double the mean
    square of a ReLU'd input; residual sums add up), times ``exp(N(0, 0.1²))``, with running
    means ``N(0, 0.1²)``: the activations then stay O(1) through the residual stack, as with
    instance norm.
    """
    seed = _check_seed(seed)
    if not isinstance(spec, TransformerSpec):
        raise TypeError(f"random_transformer: spec must be a TransformerSpec, got {type(spec).__name__}")
    tensors: Dict[str, np.ndarray] = {}
    # Predicted mean square of the current activation (input: photo pixels * input_scale).
    m2 = (_PIXEL_MEAN ** 2 + _PIXEL_STD ** 2) * spec.input_scale ** 2
    block_in = m2
    for layer in transformer_layers(spec):
        if layer.name.endswith(".conv1"):
            block_in = m2
        k2 = layer.kernel * layer.kernel
        fan_in = layer.in_channels * k2 / (layer.stride ** 2 if layer.transposed else 1)
        std = np.sqrt(2.0 / fan_in)
        if layer.name == "conv_in":
            std /= spec.input_scale * _PIXEL_STD
        bias_mean, bias_std = 0.0, 0.01
        if layer.name == "conv_out":
            # Input: ReLU of normalised features, mean square ~1/2, so He std gives unit output.
            target = 0.25 * spec.input_scale if spec.output_activation == "none" else 1.0
            std *= target
            if spec.output_activation == "none":
                bias_mean, bias_std = 0.5 * spec.input_scale, 0.01 * spec.input_scale
        conv_m2 = fan_in * std * std * m2
        if layer.transposed:
            shape = (layer.in_channels, layer.out_channels, layer.kernel, layer.kernel)
        else:
            shape = (layer.out_channels, layer.in_channels, layer.kernel, layer.kernel)
        tensors[f"{layer.name}.weight"] = _normal(seed, f"{layer.name}.weight", shape, std)
        if layer.bias:
            tensors[f"{layer.name}.bias"] = _normal(seed, f"{layer.name}.bias", (layer.out_channels,),
                                                    bias_std, bias_mean)
        m2 = conv_m2
        if layer.norm:
            n, c = f"{layer.name}.norm", (layer.out_channels,)
            tensors[f"{n}.weight"] = _normal(seed, f"{n}.weight", c, 0.1, 1.0)
            tensors[f"{n}.bias"] = _normal(seed, f"{n}.bias", c, 0.1)
            if spec.norm == "batch":
                tensors[f"{n}.running_mean"] = _normal(seed, f"{n}.running_mean", c, 0.1)
                rng = np.random.default_rng([seed, zlib.crc32(f"{n}.running_var".encode("utf-8"))])
                tensors[f"{n}.running_var"] = (conv_m2 * np.exp(rng.standard_normal(c) * 0.1)).astype(np.float32)
            m2 = 1.0
        if layer.relu:
            m2 *= 0.5
        if layer.name.endswith(".conv2"):
            m2 += block_in
    return WeightSet(tensors, "transformer", f"random:{seed}", None, spec, {"seed": seed}).validate("random weights")


# --------------------------------------------------------------------------- layouts
def _check_4d(w, what: str) -> np.ndarray:
    a = np.asarray(w)
    if a.ndim != 4:
        raise ValueError(f"{what}: expected a 4-D kernel, got shape {a.shape}")
    return a


def to_keras_kernel(w_oihw) -> np.ndarray:
    """Conv kernel, torch/canonical (out, in, kh, kw) -> Keras (kh, kw, in, out)."""
    return np.ascontiguousarray(_check_4d(w_oihw, "to_keras_kernel").transpose(2, 3, 1, 0))


def from_keras_kernel(w_hwio) -> np.ndarray:
    """Conv kernel, Keras (kh, kw, in, out) -> torch/canonical (out, in, kh, kw)."""
    return np.ascontiguousarray(_check_4d(w_hwio, "from_keras_kernel").transpose(3, 2, 0, 1))


def iohw_to_keras_transposed(w_iohw) -> np.ndarray:
    """Transposed-conv kernel, torch/canonical (in, out, kh, kw) -> Keras Conv2DTranspose
    (kh, kw, out, in).  (The same axis permutation as for convs: both frameworks swap in/out.)"""
    return np.ascontiguousarray(_check_4d(w_iohw, "iohw_to_keras_transposed").transpose(2, 3, 1, 0))


def keras_transposed_to_iohw(w_hwoi) -> np.ndarray:
    """Transposed-conv kernel, Keras Conv2DTranspose (kh, kw, out, in) -> canonical (in, out, kh, kw)."""
    return np.ascontiguousarray(_check_4d(w_hwoi, "keras_transposed_to_iohw").transpose(3, 2, 0, 1))


# --------------------------------------------------------------------------- importers
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


# --------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class ImagenetSource:
    """One published ImageNet VGG weight file."""
    arch: str
    source: str               # "torchvision" or "keras"
    url: str
    filename: str
    sha256_prefix: Optional[str]   # torchvision names carry the first hex digits of the SHA-256
    md5: Optional[str]             # Keras publishes MD5 sums (keras.utils.get_file file_hash)
    preprocessing: str

    def framework_cache_path(self) -> Path:
        """Where the framework's own downloader keeps this file."""
        if self.source == "keras":
            return keras_cache_dir() / self.filename
        return torch_cache_dir() / self.filename


_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/{a}/{a}_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_SOURCES: Dict[str, Dict[str, ImagenetSource]] = {
    "vgg16": {
        "torchvision": ImagenetSource("vgg16", "torchvision", "https://download.pytorch.org/models/vgg16-397923af.pth",
                                      "vgg16-397923af.pth", "397923af", None, "torchvision"),
        "keras": ImagenetSource("vgg16", "keras", _KERAS_URL.format(a="vgg16"),
                                "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", None,
                                "6d6bbae143d832006294945121d1f1fc", "caffe"),
    },
    "vgg19": {
        "torchvision": ImagenetSource("vgg19", "torchvision", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                                      "vgg19-dcbb9e9d.pth", "dcbb9e9d", None, "torchvision"),
        "keras": ImagenetSource("vgg19", "keras", _KERAS_URL.format(a="vgg19"),
                                "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", None,
                                "253f8cb515780f3b799900260a226db6", "caffe"),
    },
}

# Order tried for a bare "imagenet": Keras first because the core reads its HDF5 file
# without any framework (a .pth needs torch).  "imagenet:torchvision" pins the other.
_IMAGENET_ORDER = ("keras", "torchvision")


def _env_path(var: str) -> Optional[Path]:
    v = os.environ.get(var)
    return Path(v).expanduser() if v else None


def cache_dir() -> Path:
    """Resty's cache root: ``$RESTY_HOME``, else ``$XDG_CACHE_HOME/resty``, else ``~/.cache/resty``."""
    return _env_path("RESTY_HOME") or (_env_path("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "resty"


def cached_weights_path(arch: str, source: str) -> Path:
    """``cache_dir()/weights/{arch}-{source}.safetensors`` (canonical converted files)."""
    return cache_dir() / "weights" / f"{arch}-{source}.safetensors"


def keras_cache_dir() -> Path:
    """Where ``keras.utils.get_file`` stores application weights: ``$KERAS_HOME/models`` (default ~/.keras)."""
    return (_env_path("KERAS_HOME") or Path("~/.keras").expanduser()) / "models"


def torch_cache_dir() -> Path:
    """Where torch.hub stores checkpoints: ``$TORCH_HOME`` (default ``$XDG_CACHE_HOME/torch``
    or ``~/.cache/torch``) ``/hub/checkpoints``."""
    home = _env_path("TORCH_HOME") or (_env_path("XDG_CACHE_HOME") or Path("~/.cache").expanduser()) / "torch"
    return home / "hub" / "checkpoints"


# --------------------------------------------------------------------------- hooks
PthReader = Callable[[Path], Mapping[str, Any]]
Downloader = Callable[[ImagenetSource], Optional[PathLike]]
_PTH_READER: Optional[PthReader] = None
_DOWNLOADERS: List[Downloader] = []


def register_pth_reader(fn: Optional[PthReader]) -> None:
    """Install the function that reads a torch ``.pth`` file into ``{key: np.ndarray}``.

    The torch backend registers one (``torch.load(..., weights_only=True)``); the core never
    unpickles.  ``None`` removes it.
    """
    global _PTH_READER
    _PTH_READER = fn


def register_downloader(fn: Downloader) -> None:
    """Add a downloader ``fn(source: ImagenetSource) -> path or None``.

    Backends register their framework's mechanism (``torch.hub.download_url_to_file`` into
    the torch hub cache, ``keras.utils.get_file``) so files land where the framework looks.
    It returns the local path of the verified file, or None to decline; an exception counts
    as a failure and the next downloader (finally urllib) is tried.
    """
    if fn not in _DOWNLOADERS:
        _DOWNLOADERS.append(fn)


def _offline() -> bool:
    return os.environ.get("RESTY_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_md5(path: PathLike) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: PathLike, sha256_prefix: Optional[str] = None, md5: Optional[str] = None,
             *, timeout: float = 60.0, overwrite: bool = True) -> Path:
    """Download ``url`` to ``dest`` with urllib, atomically, checking the hashes given.

    ``sha256_prefix`` is compared with the start of the SHA-256 hex digest (as torch.hub does
    with the digits in torchvision file names); ``md5`` with the full MD5.  On a mismatch or
    any network error nothing is left at ``dest`` (the partial file is deleted) and a
    one-line :class:`WeightsError` is raised.
    """
    target = Path(os.fspath(dest))
    sha, md = hashlib.sha256(), hashlib.md5()
    try:
        with atomic_path(target, overwrite=overwrite) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    sha.update(chunk)
                    md.update(chunk)
                    out.write(chunk)
            if sha256_prefix and not sha.hexdigest().startswith(sha256_prefix.lower()):
                raise _fail(url, f"downloaded file has SHA-256 {sha.hexdigest()[:16]}..., expected a digest "
                                 f"starting {sha256_prefix}; deleted it")
            if md5 and md.hexdigest() != md5.lower():
                raise _fail(url, f"downloaded file has MD5 {md.hexdigest()}, expected {md5}; deleted it")
    except RestyError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:   # ValueError: malformed URL
        reason = getattr(exc, "reason", None) or exc
        raise _fail(url, f"download failed ({reason})") from None
    return target


# --------------------------------------------------------------------------- resolution
_ACCEPTED = ("'random:SEED' (e.g. random:0), 'imagenet', 'imagenet:torchvision', 'imagenet:keras', "
             "or a path to a .safetensors or Keras .h5 weight file")
_KNOWN_SUFFIXES = (".safetensors", ".h5", ".hdf5", ".keras", ".pth", ".pt", ".bin")


_SUPPORTED = "supported: .safetensors, torchvision .pth/.pt, Keras .h5/.weights.h5"


def _zip_kind(path: Path) -> Optional[str]:
    """'torch' or 'keras-archive' for a zip file, from its member names (read from the zip's
    directory only; nothing is extracted or unpickled); None when it cannot tell."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch"               # torch.save's zip: {archive}/data.pkl, {archive}/data/0, ...
    if "config.json" in names or "model.weights.h5" in names:
        return "keras-archive"       # keras Model.save(".keras"): config.json, model.weights.h5
    return None


def _sniff(path: Path) -> str:
    """'hdf5', 'torch', 'safetensors', 'keras-archive' or 'unknown', from the first bytes
    (and, for a zip, its member names); the suffix decides only what the bytes leave open."""
    head = _read_bytes(path, 16)
    suffix = path.suffix.lower()
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"PK\x03\x04"):       # a zip: torch.save's format, or a .keras archive
        kind = _zip_kind(path)
        if kind:
            return kind
        return "keras-archive" if suffix == ".keras" else "torch" if suffix in (".pth", ".pt") else "unknown"
    if head[:1] == b"\x80":                  # a pickle: torch's legacy format
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    if suffix in (".pth", ".pt"):
        return "torch"
    if suffix == ".keras":
        return "keras-archive"
    if suffix == ".safetensors":
        return "safetensors"
    return "unknown"


def _torch_installed() -> bool:
    """Whether torch can be imported (without importing it)."""
    if "torch" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _to_numpy(obj: Any) -> Any:
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):    # a torch.Tensor
        t = obj.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":    # NumPy has no bfloat16
            t = t.float()
        return t.numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v) for k, v in obj.items()}
    return obj


def _torch_load_pth(path: Path) -> Dict[str, Any]:
    """Read a torch state-dict file with ``torch.load(weights_only=True)`` into NumPy: the
    reader used when no backend registered one.  Imports torch only (not torchvision)."""
    try:
        import torch
    except Exception as exc:   # a broken torch install
        raise _fail(path, f"reading a .pth needs torch, which failed to import ({_one_line(exc)[:200]}); "
                          "reinstall it (pip install torch), or convert the file with "
                          "`resty weights import PATH` where torch works") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:   # torch raises pickle/Unpickling/Runtime errors of many kinds
        raise _fail(path, f"cannot read the PyTorch file with weights_only=True ({_one_line(exc)[:200]})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise _fail(path, f"expected a state dict (a mapping of names to tensors), got {type(state).__name__}")
    return {str(k): _to_numpy(v) for k, v in state.items()}


def _pth_reader() -> Optional[PthReader]:
    """The registered .pth reader, else torch.load when torch is installed, else None."""
    if _PTH_READER is not None:
        return _PTH_READER
    return _torch_load_pth if _torch_installed() else None


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


def _check_prep(ws: WeightSet, preprocessing, where: object) -> WeightSet:
    if preprocessing is not None and ws.preprocessing is not None:
        want = _as_preprocessing(preprocessing)
        if ws.preprocessing != want:
            raise _fail(where, f"these weights expect {ws.preprocessing.name!r} preprocessing, not "
                               f"{want.name!r}; never mix them (omit the preprocessing to use the weights' own)")
    return ws


def _source_matching(preprocessing) -> Tuple[str, ...]:
    if preprocessing is None:
        return _IMAGENET_ORDER
    name = _as_preprocessing(preprocessing).name
    return tuple(s for s in _IMAGENET_ORDER if IMAGENET_SOURCES["vgg19"][s].preprocessing == name) or _IMAGENET_ORDER


def resolve_weights(weights, arch: str, *, preprocessing: Union[None, str, Preprocessing] = None,
                    spec: Optional[TransformerSpec] = None, allow_download: Optional[bool] = None) -> WeightSet:
    """Turn a weights argument into a validated :class:`WeightSet` for ``arch``.

    ``weights`` is one of:

    - ``"random:SEED"``: :func:`random_vgg` with ``preprocessing`` (default torchvision), or
      :func:`random_transformer` of ``spec`` (default ``TransformerSpec()``) when ``arch`` is
      ``"transformer"``;
    - ``"imagenet"``, ``"imagenet:keras"``, ``"imagenet:torchvision"``: published ImageNet
      VGG weights.  Looked for, in order: the canonical cache
      (``cache_dir()/weights/{arch}-{source}.safetensors``); a file Keras or torch.hub already
      downloaded (converted into the cache on first use); a download, through the registered
      downloaders then urllib, unless ``allow_download`` is False or ``RESTY_OFFLINE=1``.  A
      bare ``"imagenet"`` prefers Keras (readable without torch), or the source whose
      preprocessing equals ``preprocessing`` if one is given;
    - a path (``str`` or ``os.PathLike``) to a canonical ``.safetensors`` file, a Keras
      ``.h5`` file, or a torchvision ``.pth`` (only once the torch backend registered its reader);
    - a :class:`WeightSet` (checked and returned).

    With ``preprocessing`` given, weights that expect a different one raise (never mix them).
    Every failure is a one-line :class:`WeightsError`.
    """
    if arch not in ARCHITECTURES:
        raise WeightsError(f"architecture: got {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    if isinstance(weights, WeightSet):
        ws = weights.validate("weights")
        _check_expect(ws, spec if (arch == "transformer" and spec is not None) else arch, "weights")
        return _check_prep(ws, preprocessing, "weights")
    if isinstance(weights, os.PathLike):
        return _resolve_path(Path(os.fspath(weights)), arch, preprocessing, spec)
    if not isinstance(weights, str):
        raise WeightsError(f"weights: got {type(weights).__name__}; accepted: {_ACCEPTED}")
    text = weights.strip()
    if not text:
        raise WeightsError(f"weights: got an empty string; accepted: {_ACCEPTED}")
    low = text.lower()
    if low.startswith("random:") or low == "random":
        seed_text = text.partition(":")[2].strip()
        if not re.fullmatch(r"\d+", seed_text):
            raise WeightsError(f"weights {weights!r}: the seed must be an integer >= 0, as in 'random:0'")
        if arch == "transformer":
            return random_transformer(spec or TransformerSpec(), int(seed_text))
        return random_vgg(arch, int(seed_text), preprocessing or "torchvision")
    if low == "imagenet" or low.startswith("imagenet:"):
        if arch == "transformer":
            raise WeightsError(f"weights {weights!r}: ImageNet weights exist only for vgg16 and vgg19, "
                               "not for the transformer")
        which = low.partition(":")[2]
        if which:
            if which not in IMAGENET_SOURCES[arch]:
                raise WeightsError(f"weights {weights!r}: unknown ImageNet source {which!r}; allowed: "
                                   f"{', '.join(IMAGENET_SOURCES[arch])}")
            sources: Tuple[str, ...] = (which,)
        else:
            sources = _source_matching(preprocessing)
        ws = _resolve_imagenet(arch, sources, allow_download)
        return _check_prep(ws, preprocessing, f"weights {weights!r}")
    path = Path(text).expanduser()
    if path.exists() or path.suffix.lower() in _KNOWN_SUFFIXES or os.sep in text or "/" in text:
        return _resolve_path(path, arch, preprocessing, spec)
    raise WeightsError(f"weights {weights!r}: not understood; accepted: {_ACCEPTED}")


def _resolve_path(path: Path, arch: str, preprocessing, spec) -> WeightSet:
    if not path.exists():
        raise _fail(path, "no such weight file")
    ws = _load_any(path, arch)
    if arch == "transformer" and spec is not None:
        _check_expect(ws, spec, path)
    return _check_prep(ws, preprocessing, path)


def _resolve_imagenet(arch: str, sources: Tuple[str, ...], allow_download: Optional[bool]) -> WeightSet:
    # 1. Canonical files already converted.
    for src in sources:
        p = cached_weights_path(arch, src)
        if p.exists():
            return load_weights(p, expect=arch)
    # 2. Files the frameworks downloaded before: convert once, then use the canonical copy.
    blocked = None
    for src in sources:
        raw = IMAGENET_SOURCES[arch][src].framework_cache_path()
        if raw.exists():
            if _sniff(raw) == "torch" and _pth_reader() is None:
                blocked = raw
                continue
            return load_weights(import_weights(raw, arch, overwrite=True), expect=arch)
    # 3. Download.
    first = IMAGENET_SOURCES[arch][sources[0]]
    label = f"ImageNet {arch.upper()} weights ({'/'.join(sources)})"
    fix = f"download {first.url} and run `resty weights import PATH`"
    if first.source == "torchvision" and _pth_reader() is None:
        fix += " where torch is installed (a .pth is a pickle only torch reads), or use 'imagenet:keras'"
    if blocked is not None:
        fix = f"found {blocked}, but reading a .pth needs torch (pip install torch); or {fix}"
    if allow_download is False or (allow_download is None and _offline()):
        raise WeightsError(_one_line(f"{label} are not cached and cannot be downloaded here (offline); {fix}"))
    errors = []
    for src in sources:
        entry = IMAGENET_SOURCES[arch][src]
        if entry.filename.endswith(".pth") and _pth_reader() is None:
            errors.append(f"{src}: reading a .pth needs torch")
            continue
        try:
            raw, temporary = _download_source(entry)
        except WeightsError as exc:
            errors.append(f"{src}: {exc}")
            continue
        try:
            return load_weights(import_weights(raw, arch, overwrite=True), expect=arch)
        finally:
            if temporary:
                Path(raw).unlink(missing_ok=True)
    raise WeightsError(_one_line(f"{label} are not cached and could not be downloaded "
                                 f"({'; '.join(errors)}); {fix}"))


def _download_source(entry: ImagenetSource) -> Tuple[Path, bool]:
    """(path, is_temporary): through registered downloaders first, then urllib into the cache."""
    failures = []
    for fn in list(_DOWNLOADERS):
        try:
            got = fn(entry)
        except Exception as exc:   # a backend's downloader failing must not hide the others
            failures.append(_one_line(exc))
            continue
        if got is not None and Path(os.fspath(got)).exists():
            return Path(os.fspath(got)), False
    dest = cache_dir() / "downloads" / entry.filename
    try:
        return download(entry.url, dest, entry.sha256_prefix, entry.md5), True
    except WeightsError as exc:
        failures.append(str(exc))
        raise WeightsError(_one_line("; ".join(failures))) from None


# --------------------------------------------------------------------------- cache tools
def _official_match(path: Path, ws: WeightSet) -> Tuple[Optional[str], Dict[str, Any]]:
    """('torchvision'|'keras'|None, hash info): is this one of the published ImageNet files?

    A file whose hash matches is the published one.  A file with the published name but
    another hash (re-saved, or a framework cache someone replaced) is still filed under
    that source, like torch.hub and Keras use a cached file, with a warning.
    """
    if ws.architecture not in IMAGENET_SOURCES:
        return None, {}
    kind = _sniff(path)
    src = {"hdf5": "keras", "torch": "torchvision"}.get(kind)
    if src is None:
        return None, {}
    entry = IMAGENET_SOURCES[ws.architecture][src]
    if entry.md5:
        digest, what = _file_md5(path), "MD5"
        ok = digest == entry.md5
    else:
        digest, what = file_sha256(path), "SHA-256"
        ok = digest.startswith(entry.sha256_prefix)
    info = {what.lower().replace("-", ""): digest, "verified": ok}
    if ok:
        return src, info
    if path.name == entry.filename:
        warnings.warn(f"{path}: {what} {digest} differs from the published {entry.md5 or entry.sha256_prefix}; "
                      "using it anyway", stacklevel=3)
        return src, info
    return None, {}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "weights"


def import_weights(path: PathLike, arch: Optional[str] = None, *, name: Optional[str] = None,
                   overwrite: bool = False) -> Path:
    """Convert a weight file into the canonical cache; returns the canonical path.

    What ``resty weights import PATH`` runs.  The format is detected from the file's first
    bytes: Keras HDF5, torch ``.pth`` (needs the torch backend's reader) or canonical
    safetensors.  The published ImageNet files (recognised by name and hash) are stored as
    ``{arch}-keras`` / ``{arch}-torchvision``, which ``"imagenet"`` then finds; anything
    else as ``{arch}-{name or file stem}``, with a UserWarning saying that ``"imagenet"`` will
    not use it and to pass its path instead.  ``arch=None`` detects VGG16/VGG19.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise _fail(p, "no such weight file")
    if arch is not None and arch not in ARCHITECTURES:
        raise WeightsError(f"architecture: got {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    ws = _load_any(p, arch)
    key, info = (None, {}) if name else _official_match(p, ws)
    if info:
        ws = dataclasses.replace(ws, extra={**ws.extra, **info, "imported_from": p.name})
    if key is None:
        stem = _slug(name or p.name.split(".")[0])
        key = stem[len(ws.architecture) + 1:] if stem.startswith(ws.architecture + "-") else stem
    target = cached_weights_path(ws.architecture, key)
    target.parent.mkdir(parents=True, exist_ok=True)
    saved = save_weights(target, ws, overwrite=overwrite)
    if ws.architecture in IMAGENET_SOURCES and key not in IMAGENET_SOURCES[ws.architecture]:
        # Shown by the CLI as "resty: warning: ...": "imagenet" looks only for {arch}-keras /
        # {arch}-torchvision, so say how this file is used instead.
        warnings.warn(_one_line(f"{p.name} is not one of the published ImageNet {ws.architecture} files, so "
                                f"--weights imagenet will not use it; pass it with --weights {saved}"),
                      UserWarning, stacklevel=2)
    return saved


def verify(path: PathLike) -> Dict[str, Any]:
    """Load and fully validate a canonical file; a summary for ``resty weights verify``.

    Keys: path, architecture, source, preprocessing (name or None), spec (dict or None),
    n_tensors, n_params, dtype(s), sha256 of the file, size_bytes.
    """
    p = Path(os.fspath(path))
    ws = load_weights(p)
    return {
        "path": str(p),
        "architecture": ws.architecture,
        "source": ws.source,
        "preprocessing": ws.preprocessing.name if ws.preprocessing else None,
        "spec": ws.spec.to_dict() if ws.spec else None,
        "n_tensors": len(ws.tensors),
        "n_params": ws.n_params,
        "dtype": ",".join(sorted({str(t.dtype) for t in ws.tensors.values()})),
        "sha256": file_sha256(p),
        "size_bytes": p.stat().st_size,
    }


def list_cached() -> List[Dict[str, Any]]:
    """Canonical files in ``cache_dir()/weights`` with their metadata (headers only, fast).

    Each entry: name, path, architecture, source, size_bytes; a file that cannot be read
    gets an ``error`` entry instead of failing the listing.
    """
    d = cache_dir() / "weights"
    out: List[Dict[str, Any]] = []
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.safetensors")):
        if p.name.startswith("."):
            continue   # atomic-write temporaries
        entry: Dict[str, Any] = {"name": p.stem, "path": str(p), "size_bytes": p.stat().st_size}
        try:
            meta = read_metadata(p)
            entry["architecture"] = meta.get("architecture")
            entry["source"] = meta.get("source")
        except RestyError as exc:
            entry["error"] = str(exc)
        out.append(entry)
    return out


def resolve_loss_network(weights, arch: str, preprocessing: Union[None, str, Preprocessing] = None) -> WeightSet:
    """The one rule both backends use for a loss network's weights argument.

    ``preprocessing`` (usually the preset's) applies to ``random:SEED`` (the random weights get
    that convention) and to a bare ``imagenet`` (which then picks the source published with that
    preprocessing: torchvision or Keras/Caffe).  An explicit ``imagenet:SOURCE``, a file or a
    WeightSet keeps its own preprocessing.
    """
    if isinstance(weights, str):
        low = weights.strip().lower()
        if low.startswith("random") or low == "imagenet":
            return resolve_weights(weights, arch, preprocessing=preprocessing)
    return resolve_weights(weights, arch)
