"""Seeded random weights: reproducible, platform-independent stand-ins for trained networks.

Each parameter is drawn from its own generator, seeded by (seed, crc32(name)), so the values
are bit-identical on every platform and do not depend on which other parameters exist.
The scales keep activations O(1) through the network, so random weights exercise the same
numerics as trained ones in tests and benchmarks.
"""
from __future__ import annotations

import zlib
from typing import Dict, Union

import numpy as np

from resty.errors import WeightsError
from resty.specs import Preprocessing, TransformerSpec, transformer_layers, vgg_layers

from .format import WeightSet, _as_preprocessing

__all__ = ["random_vgg", "random_transformer"]


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WeightsError(f"random weights: seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _normal(seed: int, name: str, shape, std: float = 1.0, mean: float = 0.0) -> np.ndarray:
    """N(mean, std²) for parameter ``name``: float64 draws, then one rounding to float32.

    The generator is seeded by (seed, crc32(name)), so a parameter's values depend neither on
    the order parameters are generated in nor on which other parameters exist; PCG64 and the
    float64 arithmetic are the same on every platform, so the float32 result is bit-identical.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    x = rng.standard_normal(shape)
    x *= std
    x += mean
    return x.astype(np.float32)


# Typical standard deviation of a natural photo's pixels in [0, 1] units (0.22-0.30 over
# ImageNet-like images).  Used to undo each preprocessing's input scale in the first conv.
_PIXEL_STD = 0.25


def _input_gain(prep: Preprocessing) -> np.ndarray:
    """Per input channel factor for conv1_1's weights: 1 / the preprocessed image's spread.

    ``x_net[c] = (x01 * scale - mean[c]) / std[c]`` spreads about ``scale * 0.25 / std[c]``
    (~1.1 for torchvision, ~64 for caffe): multiplying conv1_1's weights by the inverse makes
    the features of both conventions O(1) with the same underlying random draws.
    """
    return np.array([s / (prep.scale * _PIXEL_STD) for s in prep.std], dtype=np.float64)


def random_vgg(arch: str, seed: int, preprocessing: Union[str, Preprocessing] = "torchvision") -> WeightSet:
    """Seeded random VGG weights whose activations keep an O(1) scale through relu5_4.

    Kernels are He-normal, ``N(0, 2 / (9 C_in))``, which preserves the mean square through
    conv + ReLU; conv1_1 is additionally scaled per input channel by 1 / the preprocessing's
    input spread (see ``_input_gain``).  Biases are ``N(0, 0.01²)``.  On a photo, every relu
    layer's RMS stays within [0.1, 10]× relu1_1's for both VGGs and both preprocessings
    (tests/test_weights.py checks it; max pooling raises it a little per block).
    """
    seed = _check_seed(seed)
    prep = _as_preprocessing(preprocessing)
    tensors: Dict[str, np.ndarray] = {}
    for layer in vgg_layers(arch):
        if layer.kind != "conv":
            continue
        fan_in = layer.in_channels * 9
        w_name, b_name = f"{layer.name}.weight", f"{layer.name}.bias"
        shape = (layer.out_channels, layer.in_channels, 3, 3)
        rng = np.random.default_rng([seed, zlib.crc32(w_name.encode("utf-8"))])
        w = rng.standard_normal(shape)
        w *= np.sqrt(2.0 / fan_in)
        if layer.in_channels == 3:
            w *= _input_gain(prep)[None, :, None, None]
        tensors[w_name] = w.astype(np.float32)
        tensors[b_name] = _normal(seed, b_name, (layer.out_channels,), 0.01)
    return WeightSet(tensors, arch, f"random:{seed}", prep, None, {"seed": seed})


# Typical mean of a photo's pixels in [0, 1] units; with _PIXEL_STD it gives the input's
# mean square, from which random_transformer predicts batch-norm running variances.
_PIXEL_MEAN = 0.45


def random_transformer(spec: TransformerSpec, seed: int) -> WeightSet:
    """Seeded random transformer weights (canonical names and layouts of ``spec``).

    Conv kernels are He-normal over their fan-in (``C_in k²``, or ``C_in k² / stride²`` for a
    transposed conv, whose output pixels each see a quarter of the taps).  ``conv_in`` also
    undoes the input scale (images are ``[0, 1] * input_scale``) so its outputs are O(1).
    Norm weights are ``1 + N(0, 0.1²)`` and norm biases ``N(0, 0.1²)`` (far enough from 1 and
    0 that a swapped or missing parameter shows in a parity test); conv biases ``N(0, 0.01²)``.
    ``conv_out``: with ``output_activation='none'`` its output spreads ~0.25 * input_scale
    around 0.5 * input_scale (a mid-grey image with photo-like contrast after /input_scale);
    with sigmoid/tanh its pre-activation is O(1), away from saturation.

    Batch norm (inference mode) does not normalise by itself, so its running statistics are
    set from the predicted mean square of each conv's output (He convs double the mean
    square of a ReLU'd input; residual sums add up), times ``exp(N(0, 0.1²))``, with running
    means ``N(0, 0.1²)``: the activations then stay O(1) through the residual stack, as with
    instance norm.
    """
    seed = _check_seed(seed)
    if not isinstance(spec, TransformerSpec):
        raise TypeError(f"random_transformer: spec must be a TransformerSpec, got {type(spec).__name__}")
    tensors: Dict[str, np.ndarray] = {}
    # Predicted mean square of the current activation (input: photo pixels * input_scale).
    m2 = (_PIXEL_MEAN ** 2 + _PIXEL_STD ** 2) * spec.input_scale ** 2
    block_in = m2
    for layer in transformer_layers(spec):
        if layer.name.endswith(".conv1"):
            block_in = m2
        k2 = layer.kernel * layer.kernel
        fan_in = layer.in_channels * k2 / (layer.stride ** 2 if layer.transposed else 1)
        std = np.sqrt(2.0 / fan_in)
        if layer.name == "conv_in":
            std /= spec.input_scale * _PIXEL_STD
        bias_mean, bias_std = 0.0, 0.01
        if layer.name == "conv_out":
            # Input: ReLU of normalised features, mean square ~1/2, so He std gives unit output.
            target = 0.25 * spec.input_scale if spec.output_activation == "none" else 1.0
            std *= target
            if spec.output_activation == "none":
                bias_mean, bias_std = 0.5 * spec.input_scale, 0.01 * spec.input_scale
        conv_m2 = fan_in * std * std * m2
        if layer.transposed:
            shape = (layer.in_channels, layer.out_channels, layer.kernel, layer.kernel)
        else:
            shape = (layer.out_channels, layer.in_channels, layer.kernel, layer.kernel)
        tensors[f"{layer.name}.weight"] = _normal(seed, f"{layer.name}.weight", shape, std)
        if layer.bias:
            tensors[f"{layer.name}.bias"] = _normal(seed, f"{layer.name}.bias", (layer.out_channels,),
                                                    bias_std, bias_mean)
        m2 = conv_m2
        if layer.norm:
            n = f"{layer.name}.norm"
            c = (spec.num_styles, layer.out_channels) if spec.conditional else (layer.out_channels,)
            tensors[f"{n}.weight"] = _normal(seed, f"{n}.weight", c, 0.1, 1.0)
            tensors[f"{n}.bias"] = _normal(seed, f"{n}.bias", c, 0.1)
            if spec.norm == "batch":
                tensors[f"{n}.running_mean"] = _normal(seed, f"{n}.running_mean", c, 0.1)
                rng = np.random.default_rng([seed, zlib.crc32(f"{n}.running_var".encode("utf-8"))])
                tensors[f"{n}.running_var"] = (conv_m2 * np.exp(rng.standard_normal(c) * 0.1)).astype(np.float32)
            m2 = 1.0
        if layer.relu:
            m2 *= 0.5
        if layer.name.endswith(".conv2"):
            m2 += block_in
    return WeightSet(tensors, "transformer", f"random:{seed}", None, spec, {"seed": seed}).validate("random weights")
