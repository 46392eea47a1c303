"""What kind of weight file a path holds, from its first bytes (never by unpickling)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

from .format import _read_bytes

# The file types Resty imports, as the error for any other file lists them.
_SUPPORTED = "supported: .safetensors, torchvision .pth/.pt, Keras .h5/.weights.h5"


def _zip_kind(path: Path) -> Optional[str]:
    """'torch' or 'keras-archive' for a zip file, from its member names (read from the zip's
    directory only; nothing is extracted or unpickled); None when it cannot tell."""
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
