"""The canonical weight format: :class:`WeightSet`, its shapes, and the safetensors file.

A file holds one float32 (or float64) tensor per named parameter and string metadata
(``format``, ``format_version``, ``architecture``, ``layout``, ``source``, ``preprocessing`` or
``spec``, ``extra``); see :mod:`resty.weights`.  Files are written atomically and read without
unpickling anything; every failure is a one-line :class:`WeightsError` naming the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from resty.arbitrary import ArbitrarySpec, arbitrary_param_shapes
from resty.errors import OutputExistsError, WeightsError, one_line
from resty.images import atomic_path
from resty.specs import (PREPROCESSING, AdaINSpec, Preprocessing, TransformerSpec, adain_decoder_shapes,
                          transformer_param_shapes, vgg_layers)

__all__ = ["FORMAT", "FORMAT_VERSION", "LAYOUT", "ARCHITECTURES", "WeightSet", "vgg_param_shapes",
           "expected_shapes", "save_weights", "load_weights", "read_metadata"]


PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "resty-weights"
FORMAT_VERSION = "1"
LAYOUT = "OIHW (conv), IOHW (transposed conv)"
ARCHITECTURES = ("vgg16", "vgg19", "transformer", "adain", "arbitrary")
#: Architectures whose weight set carries a spec (and no preprocessing), and the spec's class.
_SPEC_CLASSES = {"transformer": TransformerSpec, "adain": AdaINSpec, "arbitrary": ArbitrarySpec}
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# A safetensors header larger than this is certainly not one of ours (VGG19's is ~4 KB);
# refusing it early keeps a garbage file from making us read gigabytes of "JSON".
_MAX_HEADER_BYTES = 16 * 1024 * 1024


def _fail(where: object, problem: str) -> WeightsError:
    """A one-line WeightsError naming the file (or other origin) and the problem."""
    return WeightsError(one_line(f"{where}: {problem}"))


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
    if architecture == "arbitrary":
        if spec is None:
            raise ValueError("expected_shapes: arbitrary-style networks need their ArbitrarySpec")
        return arbitrary_param_shapes(spec)
    if architecture == "adain":
        if spec is None:
            raise ValueError("expected_shapes: an AdaIN decoder needs its AdaINSpec")
        return adain_decoder_shapes(spec)
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
        if self.architecture in _SPEC_CLASSES:
            kind = _SPEC_CLASSES[self.architecture]
            if not isinstance(self.spec, kind):
                raise ValueError(f"WeightSet.spec: a {self.architecture} weight set needs a {kind.__name__}")
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
                raise WeightsError(f"weights: 'extra' must be JSON-serialisable ({one_line(exc)})") from None
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
    except (UnicodeDecodeError, ValueError, RecursionError):
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
        if arch in _SPEC_CLASSES:
            if "spec" not in meta:
                raise _fail(where, f"{arch} weights without 'spec' metadata")
            spec = _SPEC_CLASSES[arch].from_json(meta["spec"])
        else:
            if "preprocessing" not in meta:
                raise _fail(where, "VGG weights without 'preprocessing' metadata")
            prep = Preprocessing.from_json(meta["preprocessing"])
        extra = json.loads(meta["extra"]) if "extra" in meta else {}
    except WeightsError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
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


# --------------------------------------------------------------------------- preprocessing
def _as_preprocessing(preprocessing) -> Preprocessing:
    """A :class:`Preprocessing` from itself or its name (``"torchvision"``, ``"caffe"``)."""
    if isinstance(preprocessing, Preprocessing):
        return preprocessing
    if preprocessing in PREPROCESSING:
        return PREPROCESSING[preprocessing]
    raise WeightsError(f"preprocessing: got {preprocessing!r}; allowed: {', '.join(map(repr, PREPROCESSING))} "
                       "or a Preprocessing")
