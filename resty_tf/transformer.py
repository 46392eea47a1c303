"""Johnson's image transformation network (with Ulyanov's instance norm) from the core's spec."""
from __future__ import annotations

from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from resty.errors import WeightsError
from resty.specs import TransformerSpec, transformer_layers, transformer_param_shapes
from resty.weights import (WeightSet, from_keras_kernel, iohw_to_keras_transposed,
                           keras_transposed_to_iohw, resolve_weights, to_keras_kernel)

from .device import assert_compute_dtype, dtype_policy, resolve_device
from .layers import SpecConv, TorchBatchNormalization

__all__ = ["TransformerNet"]


@keras.saving.register_keras_serializable(package="resty_tf")
class TransformerNet(keras.Model):
    """``TransformerNet(spec=None, weights=None, dtype="float32", device=None)``: NHWC RGB [0, 1]
    in, NHWC RGB [0, 1] units out (not clamped), any size (odd too), the input's size.

    The forward pass is exactly ``resty.reference.transformer_forward``: reflection-pad
    bottom/right to a multiple of 4, times ``input_scale``, conv_in, down1, down2, residual
    blocks, up1, up2, conv_out, crop, output activation.  ``weights``: ``"random:SEED"``, a
    path or a WeightSet (canonical weights); None means ``"random:0"`` (as in resty_torch, so
    both backends start from the same numbers).
    Under mixed precision (``precision="bf16"|"fp16"``) the output is cast back to float32.
    """

    def __init__(self, spec: Optional[TransformerSpec] = None, weights=None, dtype: str = "float32",
                 device=None, *, precision=None, name: str = "transformer"):
        policy = dtype_policy(dtype, precision)
        super().__init__(dtype=policy, name=name)
        if spec is None and isinstance(weights, WeightSet) and weights.spec is not None:
            spec = weights.spec
        self.spec = spec if spec is not None else TransformerSpec()
        self.device = resolve_device(device)
        self.resty_dtype = dtype
        self.precision = precision
        self.defs = transformer_layers(self.spec)
        with tf.device(self.device):
            cpu = self.device.upper().startswith("/CPU")
            self.blocks = [SpecConv(d, self.spec, dtype=policy, forward_grads=cpu) for d in self.defs]
            for b in self.blocks:
                b.build()
        self._by_name = {d.name: b for d, b in zip(self.defs, self.blocks)}
        if self.spec.conditional:
            # The style weight vector of the conditional norms (not trainable, not in the canonical
            # weights): set_style() / call(style=...); style 0 until then.  A variable, so a traced
            # inference function reads the current style without a retrace.
            with tf.device(self.device):
                self.style_weights = tf.Variable(np.eye(self.spec.num_styles)[0], dtype=policy.variable_dtype,
                                                 trainable=False, name="style_weights")
        self.built = True
        ws = resolve_weights(weights if weights is not None else "random:0", "transformer", spec=self.spec)
        self.load_canonical(ws.tensors)
        assert_compute_dtype(self, policy.compute_dtype)

    # ------------------------------------------------------------------ forward
    def set_style(self, weights) -> None:
        """The conditional norms' style weights for the next calls: a (num_styles,) vector
        (resty.inputs.style_vector turns an index, a dict or ``"3:0.5,12:0.5"`` into one)."""
        if not self.spec.conditional:
            raise ValueError("set_style: this network has no conditional norm (one style)")
        w = np.asarray(weights, np.float64)
        if w.shape != (self.spec.num_styles,):
            raise ValueError(f"set_style: expected {self.spec.num_styles} weights, got shape {w.shape}")
        self.style_weights.assign(w.astype(self.style_weights.dtype.as_numpy_dtype))

    def get_style(self) -> np.ndarray:
        return self.style_weights.numpy().copy()

    def call(self, images01, training=False, style=None):
        spec = self.spec
        if spec.conditional:
            style = self.style_weights if style is None else tf.convert_to_tensor(style, self.style_weights.dtype)
        elif style is not None:
            raise ValueError("style: this network has no conditional norm (one style)")
        x = tf.convert_to_tensor(images01)
        x = tf.cast(x, self.compute_dtype)
        h0, w0 = tf.shape(x)[1], tf.shape(x)[2]
        m = spec.size_multiple
        # Pad bottom/right up to a multiple of 4 so both stride-2 stages invert exactly.
        ph, pw = (-h0) % m, (-w0) % m
        x = tf.pad(x, [[0, 0], [0, ph], [0, pw], [0, 0]], mode="REFLECT")
        x = x * tf.constant(spec.input_scale, x.dtype)
        by = self._by_name
        for name in ("conv_in", "down1", "down2"):
            x = by[name](x, training=training, style=style)
        for i in range(1, spec.residual_blocks + 1):
            r = by[f"res{i}.conv2"](by[f"res{i}.conv1"](x, training=training, style=style), training=training,
                                    style=style)
            x = x + r
        for name in ("up1", "up2", "conv_out"):
            x = by[name](x, training=training, style=style)
        y = x[:, :h0, :w0, :]
        # The activation runs in float32 at least (a bf16 division by 255 keeps 3 digits).
        if y.dtype in (tf.float16, tf.bfloat16):
            y = tf.cast(y, tf.float32)
        if spec.output_activation == "none":
            y = y / tf.constant(spec.input_scale, y.dtype)
        elif spec.output_activation == "sigmoid":
            y = tf.sigmoid(y)
        else:
            y = (tf.tanh(y) + 1.0) / 2.0
        return y

    # ------------------------------------------------------------------ Keras serialisation
    def get_config(self):
        """Enough to rebuild the architecture (``.keras`` files); weights are saved by Keras."""
        return {"spec": self.spec.to_dict(), "dtype": self.resty_dtype, "precision": self.precision,
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(TransformerSpec.from_dict(config["spec"]), None, dtype=config.get("dtype", "float32"),
                   precision=config.get("precision"), name=config.get("name", "transformer"))

    # ------------------------------------------------------------------ canonical weights
    def state_dict_canonical(self) -> Dict[str, np.ndarray]:
        """Canonical names and layouts (conv OIHW, transposed conv IOHW), float32 or float64."""
        out: Dict[str, np.ndarray] = {}
        for d, b in zip(self.defs, self.blocks):
            k = b.conv.kernel.numpy()
            out[f"{d.name}.weight"] = keras_transposed_to_iohw(k) if d.transposed else from_keras_kernel(k)
            if d.bias:
                out[f"{d.name}.bias"] = b.conv.bias.numpy()
            if b.norm is not None:
                out[f"{d.name}.norm.weight"] = b.norm.gamma.numpy()
                out[f"{d.name}.norm.bias"] = b.norm.beta.numpy()
                if isinstance(b.norm, TorchBatchNormalization):
                    out[f"{d.name}.norm.running_mean"] = b.norm.running_mean.numpy()
                    out[f"{d.name}.norm.running_var"] = b.norm.running_var.numpy()
        return out

    def load_canonical(self, tensors) -> None:
        """Load canonical tensors (names/shapes of ``transformer_param_shapes(spec)``)."""
        if isinstance(tensors, WeightSet):
            tensors = tensors.tensors
        shapes = transformer_param_shapes(self.spec)
        missing = sorted(set(shapes) - set(tensors))
        extra = sorted(set(tensors) - set(shapes))
        if missing or extra:
            raise WeightsError(f"transformer weights: missing {missing[:3]} / unexpected {extra[:3]} "
                               f"for this TransformerSpec")
        for name, shape in shapes.items():
            if tuple(np.shape(tensors[name])) != tuple(shape):
                raise WeightsError(f"transformer weights: {name!r} has shape {tuple(np.shape(tensors[name]))}, "
                                   f"expected {tuple(shape)}")

        def put(var, value):
            var.assign(np.asarray(value).astype(var.dtype))

        for d, b in zip(self.defs, self.blocks):
            w = tensors[f"{d.name}.weight"]
            put(b.conv.kernel, iohw_to_keras_transposed(w) if d.transposed else to_keras_kernel(w))
            if d.bias:
                put(b.conv.bias, tensors[f"{d.name}.bias"])
            if b.norm is not None:
                put(b.norm.gamma, tensors[f"{d.name}.norm.weight"])
                put(b.norm.beta, tensors[f"{d.name}.norm.bias"])
                if isinstance(b.norm, TorchBatchNormalization):
                    put(b.norm.running_mean, tensors[f"{d.name}.norm.running_mean"])
                    put(b.norm.running_var, tensors[f"{d.name}.norm.running_var"])

    def canonical_variables(self) -> Dict[str, tf.Variable]:
        """Trainable variables keyed by canonical name (layouts are Keras's; used for
        optimizer state, whose moments have the variables' shapes)."""
        out = {}
        for d, b in zip(self.defs, self.blocks):
            out[f"{d.name}.weight"] = b.conv.kernel
            if d.bias:
                out[f"{d.name}.bias"] = b.conv.bias
            if b.norm is not None:
                out[f"{d.name}.norm.weight"] = b.norm.gamma
                out[f"{d.name}.norm.bias"] = b.norm.beta
        return out

    def to_canonical_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        """A tensor shaped like variable ``name`` (Keras layout) -> canonical layout."""
        if name.endswith(".weight") and np.ndim(value) == 4:
            d = next(d for d in self.defs if f"{d.name}.weight" == name)
            return keras_transposed_to_iohw(value) if d.transposed else from_keras_kernel(value)
        return np.asarray(value)

    def from_canonical_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        if name.endswith(".weight") and np.ndim(value) == 4:
            d = next(d for d in self.defs if f"{d.name}.weight" == name)
            return iohw_to_keras_transposed(value) if d.transposed else to_keras_kernel(value)
        return np.asarray(value)
