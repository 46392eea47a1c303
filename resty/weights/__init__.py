"""Weights: the canonical file format, seeded random weights, importers, sources and cache.

Canonical format (:mod:`.format`)
---------------------------------
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
(:func:`to_keras_kernel` and friends, :mod:`.layouts`) live there and nowhere else.

Modules
-------
:mod:`.format` (WeightSet, save/load), :mod:`.random_init` (seeded random weights),
:mod:`.layouts` (Keras kernel layouts), :mod:`.importers` (torchvision state dicts, ``.pth``,
Keras HDF5), :mod:`.sniff` (file type from the first bytes), :mod:`.sources` (published
ImageNet files, caches, downloads), :mod:`.cache` (import, verify, list), :mod:`.resolve`
(``resolve_weights``).  Import the names from ``resty.weights``.

Sources
-------
``resolve_weights`` turns what a user typed (``"random:SEED"``, ``"imagenet"``,
``"imagenet:torchvision"``, ``"imagenet:keras"`` or a path) into a :class:`WeightSet`.
ImageNet weights come from the Resty cache (``$RESTY_HOME`` or ``~/.cache/resty``), from a
file the frameworks already downloaded (Keras's ``~/.keras/models``, torch hub's
``~/.cache/torch/hub/checkpoints``), or from the network (through a downloader a backend
registered, else urllib; set ``RESTY_OFFLINE=1`` to forbid).  Reading a torchvision ``.pth``
file needs torch (it is a pickle): the one reader is the torch backend's
(``resty_torch.weights_io.read_pth``, ``torch.load(..., weights_only=True)``, which refuses
anything but tensors and plain containers).  ``resty_torch`` registers it with
:func:`register_pth_reader` when imported; otherwise, when torch is installed, it is loaded
through :func:`resty.backends.load_backend_module`.  The core never unpickles by itself.

This package imports no framework.
"""
from __future__ import annotations

import sys
import types

from . import importers as _importers
from . import sources as _sources
from .cache import import_weights, list_cached, verify
from .format import (ARCHITECTURES, FORMAT, FORMAT_VERSION, LAYOUT, PathLike, WeightSet,  # noqa: F401
                     expected_shapes, load_weights, read_metadata, save_weights, vgg_param_shapes)
from .importers import PthReader, from_keras_h5, from_torchvision_state_dict, register_pth_reader  # noqa: F401
from .layouts import from_keras_kernel, iohw_to_keras_transposed, keras_transposed_to_iohw, to_keras_kernel
from .random_init import random_transformer, random_vgg
from .resolve import resolve_loss_network, resolve_weights
from .sniff import _sniff  # noqa: F401  (resty.cli and tests ask for a file's type)
from .sources import (IMAGENET_SOURCES, Downloader, ImagenetSource, cache_dir,  # noqa: F401
                      cached_weights_path, download, file_sha256, keras_cache_dir, register_downloader,
                      torch_cache_dir)

__all__ = [
    "FORMAT", "FORMAT_VERSION", "LAYOUT", "ARCHITECTURES", "WeightSet", "vgg_param_shapes",
    "expected_shapes", "save_weights", "load_weights", "read_metadata", "random_vgg",
    "random_transformer", "to_keras_kernel", "from_keras_kernel", "iohw_to_keras_transposed",
    "keras_transposed_to_iohw", "from_torchvision_state_dict", "from_keras_h5", "ImagenetSource",
    "IMAGENET_SOURCES", "cache_dir", "cached_weights_path", "keras_cache_dir", "torch_cache_dir",
    "register_pth_reader", "register_downloader", "download", "resolve_weights", "resolve_loss_network",
    "import_weights", "verify", "list_cached", "file_sha256",
]

# The backend hooks' state lives in the submodule that uses it.  Reading or replacing it through
# the package (``monkeypatch.setattr(resty.weights, "_PTH_READER", None)``, as tests do to run
# without the backends' hooks) reaches that submodule, so the replacement takes effect.
_HOOK_STATE = {
    "_PTH_READER": _importers,        # the registered .pth reader
    "_torch_installed": _importers,   # whether the torch backend's reader can be loaded
    "_DOWNLOADERS": _sources,         # the registered downloaders
}


class _WeightsPackage(types.ModuleType):
    def __getattr__(self, name):
        home = _HOOK_STATE.get(name)
        if home is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(home, name)

    def __setattr__(self, name, value):
        home = _HOOK_STATE.get(name)
        if home is None:
            super().__setattr__(name, value)
        else:
            setattr(home, name, value)


sys.modules[__name__].__class__ = _WeightsPackage
