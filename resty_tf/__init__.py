"""Resty's TensorFlow/Keras 3 backend: the same public API as ``resty_torch``.

``from resty_tf import GatysStylizer, FastStylizer, TransformerNet, VGGFeatures``.
Models are Keras models taking NHWC RGB images in [0, 1]; everything a layer or loss needs
to know comes from the framework-free core (``resty``).
"""
from resty.backends import prepare_imports

prepare_imports()      # torch and torchvision before TensorFlow, so a process may use both backends

from .device import resolve_device, set_tf32  # noqa: F401,E402  (sets KERAS_BACKEND first)
from .transformer import TransformerNet
from .vgg import VGGFeatures
from . import weights_io as _weights_io

_weights_io.register()   # keras.utils.get_file downloads for 'imagenet:keras'

__all__ = ["GatysStylizer", "FastStylizer", "AdaINStylizer", "ArbitraryStylizer", "ArbitraryTransferNet", "StylePredictor", "TransformerNet", "VGGFeatures", "set_tf32", "resolve_device"]


def __getattr__(name):
    # The stylizers import more (tf.data, tqdm); load them on first use.
    if name == "GatysStylizer":
        from .gatys import GatysStylizer
        return GatysStylizer
    if name in ("ArbitraryStylizer", "ArbitraryTransferNet", "StylePredictor"):
        from . import arbitrary
        return getattr(arbitrary, name)
    if name == "AdaINStylizer":
        from .adain import AdaINStylizer
        return AdaINStylizer
    if name == "FastStylizer":
        from .fast import FastStylizer
        return FastStylizer
    raise AttributeError(f"module 'resty_tf' has no attribute {name!r}")
