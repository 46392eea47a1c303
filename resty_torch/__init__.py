"""Resty's PyTorch backend: Gatys and Johnson style transfer driven by the core's specs.

Importing this package registers the torchvision ``.pth`` reader and the torch.hub
downloader with :mod:`resty.weights`.  It never imports TensorFlow.
"""
from __future__ import annotations

from resty.backends import prepare_imports

prepare_imports(warn_if_late=True)      # torchvision and torch._dynamo now, so a later TensorFlow import is safe

from . import weights_io as _weights_io  # noqa: E402
from .device import autocast, resolve_device, resolve_dtype, set_tf32, get_tf32
from .arbitrary import ArbitraryStylizer, ArbitraryTransferNet, StylePredictor
from .adain import AdaINStylizer
from .fast import FastStylizer
from .gatys import GatysStylizer
from .losses import content_loss, gram, style_loss, total_loss, tv_loss
from .transformer import TransformerNet
from .vgg import VGGFeatures

_weights_io.register()

__all__ = ["GatysStylizer", "FastStylizer", "AdaINStylizer", "ArbitraryStylizer", "ArbitraryTransferNet", "StylePredictor", "TransformerNet", "VGGFeatures", "gram", "style_loss",
           "content_loss", "tv_loss", "total_loss", "set_tf32", "get_tf32", "resolve_device",
           "resolve_dtype", "autocast"]
