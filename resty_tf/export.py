"""What ``resty convert`` (:func:`resty.backends.convert_model`) needs from TensorFlow/Keras:
the transformer's outputs to check a converted model against, the ``.weights.h5`` file, and
the SavedModel / ``.keras`` exports.

The framework-free core reaches this module by name through
``resty.backends.load_backend_module``; ``resty_torch.export`` has the same class with the
same methods.  Images cross this boundary as NCHW float32 NumPy arrays in both backends (the
Keras models are NHWC: transposed here).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np

from resty.errors import RestyError

from .device import resolve_device  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from .transformer import TransformerNet  # noqa: E402

NATIVE_SUFFIXES = (".weights.h5",)   # what save_native writes
EXPORT_FORMATS = ("savedmodel", "keras")


def _nhwc(x: np.ndarray) -> tf.Tensor:
    return tf.constant(np.transpose(np.asarray(x, np.float32), (0, 2, 3, 1)))


def _nchw(y) -> np.ndarray:
    return np.transpose(np.asarray(y), (0, 3, 1, 2))


class Exporter:
    """A trained transformer (canonical ``resty.weights.WeightSet`` ``ws``) as resty_tf's
    FastStylizer of ``preset`` (whose ``export`` writes SavedModel and ``.keras``), on the CPU."""

    def __init__(self, ws, preset):
        from .fast import FastStylizer
        self.ws = ws
        self.stylizer = FastStylizer(preset, weights="random:0", device="cpu", transformer_weights=ws)
        self.net = self.stylizer.net

    def outputs(self, probes: Sequence[np.ndarray]) -> List[np.ndarray]:
        """The network on each NCHW probe (the reference a converted model is checked against)."""
        return [_nchw(self.net(_nhwc(p))) for p in probes]

    def canonical(self):
        """The WeightSet with this network's tensors (a ``.safetensors`` re-saved through Keras)."""
        tensors = {k: np.asarray(v) for k, v in self.net.state_dict_canonical().items()}
        return dataclasses.replace(self.ws, tensors=tensors)

    def save_native(self, path) -> None:
        """Keras ``save_weights`` (a ``.weights.h5`` file)."""
        self.net.save_weights(str(path))

    def load_native(self, path) -> Callable[[np.ndarray], np.ndarray]:
        """The file written by :meth:`save_native`, read back into a fresh network: NCHW -> NCHW."""
        net = TransformerNet(self.ws.spec, weights=None)
        net(tf.zeros((1, 32, 32, 3)))   # builds the variables load_weights fills
        net.load_weights(str(path))
        return lambda x: _nchw(net(_nhwc(x)))

    def export(self, fmt: str, path, *, opset: int = 17, probe: np.ndarray = None) -> None:
        """``fmt="savedmodel"``: signature ``serving_default(images)`` taking NHWC float32 RGB in
        [0, 1] of any size, output ``stylized`` clamped; ``fmt="keras"``: a ``.keras`` file."""
        if fmt not in EXPORT_FORMATS:
            raise RestyError(f"the tf backend exports {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
        self.stylizer.export(str(path), format=fmt)

    def load_export(self, path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
        """An exported model read back: NCHW -> NCHW (a SavedModel's output is clamped)."""
        if fmt == "keras":
            back = keras.saving.load_model(str(path))
            return lambda x: _nchw(back(_nhwc(x)))
        if fmt == "savedmodel":
            fn = tf.saved_model.load(str(path)).signatures["serving_default"]
            return lambda x: _nchw(fn(images=_nhwc(x))["stylized"].numpy())
        raise RestyError(f"the tf backend exports {', '.join(EXPORT_FORMATS)}, not {fmt!r}")


def _export_network(net: TransformerNet, path, format: str = "savedmodel") -> Path:
    """A resty_tf TransformerNet exported for serving (FastStylizer.export): ``"savedmodel"``,
    a SavedModel directory whose ``serving_default`` signature maps ``images`` (B, H, W, 3)
    float32 RGB [0, 1] of any size to ``stylized`` (clamped to [0, 1]), loadable with
    ``tf.saved_model.load`` without Resty; ``"keras"``, a ``.keras`` file
    (``keras.saving.load_model`` needs ``resty_tf`` imported, which registers its layers)."""
    p = Path(path)
    if format == "savedmodel":
        if p.exists():
            raise RestyError(f"{p}: already exists; choose a new directory for the SavedModel")
        module = tf.Module()
        module.net = net

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")], autograph=False)
        def serve(images):
            y = net(tf.cast(images, net.compute_dtype), training=False)
            return {"stylized": tf.clip_by_value(tf.cast(y, tf.float32), 0.0, 1.0)}
        module.serve = serve
        tf.saved_model.save(module, str(p), signatures={"serving_default": serve})
        return p
    if format == "keras":
        if p.suffix != ".keras":
            raise RestyError(f"{p}: a Keras export needs the .keras extension")
        if p.exists():
            raise RestyError(f"{p}: already exists")
        net.save(str(p))
        return p
    raise RestyError(f"export format: got {format!r}; allowed: 'savedmodel', 'keras'")
