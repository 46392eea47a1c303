"""Where published ImageNet VGG weights come from: the files, the caches, the downloads.

Resty converts published files into its own cache (``$RESTY_HOME``, else
``$XDG_CACHE_HOME/resty``, else ``~/.cache/resty``).  It also finds files the frameworks already
downloaded, where they keep them (Keras: ``$KERAS_HOME/models``; torch.hub:
``$TORCH_HOME/hub/checkpoints``), and downloads through the downloaders the backends registered
(so files land where the framework looks), then through urllib, checking the published hashes.
``RESTY_OFFLINE=1`` forbids downloads.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from resty.errors import RestyError, WeightsError, one_line
from resty.images import atomic_path

from .format import PathLike, _fail

__all__ = ["ImagenetSource", "IMAGENET_SOURCES", "cache_dir", "cached_weights_path", "keras_cache_dir",
           "torch_cache_dir", "register_downloader", "download", "file_sha256"]


# --------------------------------------------------------------------------- published files and caches
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


# --------------------------------------------------------------------------- downloads
Downloader = Callable[[ImagenetSource], Optional[PathLike]]
# Registered by the backends (resty_torch: torch.hub, resty_tf: keras.utils.get_file).
_DOWNLOADERS: List[Downloader] = []


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


def _file_digest(path: PathLike, h) -> str:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: PathLike) -> str:
    """The SHA-256 hex digest of a file (read in 1 MiB chunks)."""
    return _file_digest(path, hashlib.sha256())


def _file_md5(path: PathLike) -> str:
    return _file_digest(path, hashlib.md5())


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


def _download_source(entry: ImagenetSource) -> Tuple[Path, bool]:
    """(path, is_temporary): through registered downloaders first, then urllib into the cache."""
    failures = []
    for fn in list(_DOWNLOADERS):
        try:
            got = fn(entry)
        except Exception as exc:   # a backend's downloader failing must not hide the others
            failures.append(one_line(exc))
            continue
        if got is not None and Path(os.fspath(got)).exists():
            return Path(os.fspath(got)), False
    dest = cache_dir() / "downloads" / entry.filename
    try:
        return download(entry.url, dest, entry.sha256_prefix, entry.md5), True
    except WeightsError as exc:
        failures.append(str(exc))
        raise WeightsError(one_line("; ".join(failures))) from None
