"""Keras-side weight download: ``keras.utils.get_file`` registered with resty.weights.

Registered when ``resty_tf`` is imported, so ``resolve_weights("imagenet:keras", ...)`` (and
the CLI) downloads the published Keras applications VGG file into Keras's own cache
(``~/.keras/models``), checked against Keras's published MD5, where Keras itself would look.
The canonical conversion (HDF5 -> safetensors) is the core's (resty.weights.from_keras_h5).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import keras

from resty import weights as _w

__all__ = ["keras_downloader", "register"]


def keras_downloader(source) -> Optional[Path]:
    """Download a Keras-source ImageNet file with ``keras.utils.get_file``; declines others."""
    if getattr(source, "source", None) != "keras":
        return None
    dest = Path(source.framework_cache_path())
    if dest.exists():
        return dest
    got = keras.utils.get_file(source.filename, source.url, cache_subdir="models",
                               file_hash=source.md5, hash_algorithm="md5")
    return Path(got)


def register() -> None:
    _w.register_downloader(keras_downloader)
