"""The canonical cache: importing weight files into it, verifying and listing its files."""
from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from resty.errors import RestyError, WeightsError, one_line

from .format import ARCHITECTURES, PathLike, WeightSet, _fail, load_weights, read_metadata, save_weights
from .importers import _load_any
from .sniff import _sniff
from .sources import IMAGENET_SOURCES, _file_md5, cache_dir, cached_weights_path, file_sha256

__all__ = ["import_weights", "verify", "list_cached"]


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
        warnings.warn(one_line(f"{p.name} is not one of the published ImageNet {ws.architecture} files, so "
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
