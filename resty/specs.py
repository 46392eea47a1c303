"""Framework-neutral specifications: the single definition both backends read.

Every spec is a frozen dataclass, validated on construction (a bad value raises a
``ValueError`` naming the field and the allowed values), and round-trips through JSON
(``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json``).  A backend never hard-codes
a layer index, a constant or a default: it reads them from here.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = [
    "LayerDef", "VGG_BLOCKS", "vgg_layers", "vgg_layer_names", "VGGSpec",
    "Preprocessing", "PREPROCESSING", "LossSpec", "GatysConfig", "AdamSpec",
    "LBFGSSpec", "TransformerSpec", "TrainConfig", "GRAM_CONVENTIONS",
    "CONTENT_CONVENTIONS", "TV_CONVENTIONS", "spec_from_dict", "CLAMP_MODES", "SIZINGS",
]


# --------------------------------------------------------------------------- helpers
def _fail(cls, fieldname: str, value, allowed) -> None:
    raise ValueError(f"{cls.__name__}.{fieldname}: got {value!r}; allowed: {allowed}")


def _check_choice(obj, name: str, allowed) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        _fail(type(obj), name, value, ", ".join(repr(a) for a in allowed))


def _check_positive(obj, name: str, allow_zero: bool = False, integer: bool = False) -> None:
    value = getattr(obj, name)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "integer" if integer else "number"
        _fail(type(obj), name, value, f"a finite {kind} {'>= 0' if allow_zero else '> 0'}")


def _tuple(obj, name: str) -> None:
    value = getattr(obj, name)
    if isinstance(value, list):
        object.__setattr__(obj, name, tuple(value))


class _Spec:
    """Mixin: JSON round trip for nested frozen dataclasses."""

    def to_dict(self) -> Dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, _Spec):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Dict[str, Any]):
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}: expected a mapping, got {type(d).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}; allowed: {sorted(names)}")
        kwargs = {}
        for k, v in d.items():
            sub = _NESTED.get((cls.__name__, k))
            if sub is not None and isinstance(v, dict):
                v = sub.from_dict(v)
            kwargs[k] = v
        return cls(**kwargs)

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kw)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- VGG tables
# Channel widths per block; VGG16 has 2,2,3,3,3 convs per block, VGG19 2,2,4,4,4.
VGG_BLOCKS: Dict[str, Tuple[Tuple[int, int], ...]] = {
    # (number of convs, output channels) per block
    "vgg16": ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
    "vgg19": ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
}


@dataclass(frozen=True)
class LayerDef:
    """One named layer of a VGG table.

    ``kind`` is ``conv`` (3x3, stride 1, zero padding 1, with bias), ``relu`` or ``pool``
    (2x2, stride 2).  ``index`` is the position in torchvision's ``features`` Sequential,
    which is the only place an index is used: mapping torchvision state-dict keys.
    """
    name: str
    kind: str
    index: int
    in_channels: int
    out_channels: int
    block: int


def vgg_layers(arch: str) -> Tuple[LayerDef, ...]:
    """The full layer table ``conv1_1, relu1_1, conv1_2, ..., relu5_4, pool5``."""
    if arch not in VGG_BLOCKS:
        raise ValueError(f"VGG architecture: got {arch!r}; allowed: {', '.join(map(repr, VGG_BLOCKS))}")
    layers = []
    index = 0
    cin = 3
    for b, (nconv, width) in enumerate(VGG_BLOCKS[arch], start=1):
        for i in range(1, nconv + 1):
            layers.append(LayerDef(f"conv{b}_{i}", "conv", index, cin, width, b))
            layers.append(LayerDef(f"relu{b}_{i}", "relu", index + 1, width, width, b))
            index += 2
            cin = width
        layers.append(LayerDef(f"pool{b}", "pool", index, width, width, b))
        index += 1
    return tuple(layers)


def vgg_layer_names(arch: str) -> Tuple[str, ...]:
    return tuple(l.name for l in vgg_layers(arch))


def vgg_truncate(arch: str, wanted) -> Tuple[LayerDef, ...]:
    """The table cut after the deepest of ``wanted`` layers (unknown names raise)."""
    table = vgg_layers(arch)
    names = [l.name for l in table]
    deepest = -1
    for w in wanted:
        if w not in names:
            raise ValueError(f"layer {w!r} is not in {arch}; layers are: {', '.join(names)}")
        deepest = max(deepest, names.index(w))
    return table[: deepest + 1]


POOLINGS = ("max", "avg")


@dataclass(frozen=True)
class VGGSpec(_Spec):
    """Which loss network: VGG16 or VGG19, max pooling (as trained) or average (Gatys)."""
    arch: str = "vgg19"
    pooling: str = "max"

    def __post_init__(self):
        _check_choice(self, "arch", tuple(VGG_BLOCKS))
        _check_choice(self, "pooling", POOLINGS)

    @property
    def layers(self) -> Tuple[LayerDef, ...]:
        return vgg_layers(self.arch)

    @property
    def layer_names(self) -> Tuple[str, ...]:
        return vgg_layer_names(self.arch)


# --------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocessing(_Spec):
    """How an RGB image in [0, 1] becomes the network input a weight set expects.

    ``x_net[c] = (x_rgb01[order[c]] * scale - mean[c]) / std[c]`` where ``order`` is
    (0,1,2) for RGB and (2,1,0) for BGR; mean/std are given in the network's channel order.
    """
    name: str = "torchvision"
    channel_order: str = "RGB"
    scale: float = 1.0
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self):
        _tuple(self, "mean")
        _tuple(self, "std")
        _check_choice(self, "channel_order", ("RGB", "BGR"))
        _check_positive(self, "scale")
        for fname in ("mean", "std"):
            v = getattr(self, fname)
            if len(v) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
                _fail(type(self), fname, v, "three finite numbers")
        if any(s <= 0 for s in self.std):
            _fail(type(self), "std", self.std, "three numbers > 0")

    @property
    def channel_index(self) -> Tuple[int, int, int]:
        return (0, 1, 2) if self.channel_order == "RGB" else (2, 1, 0)


PREPROCESSING: Dict[str, Preprocessing] = {
    # torchvision ImageNet models: RGB in [0, 1], per-channel mean/std.
    "torchvision": Preprocessing("torchvision", "RGB", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Caffe / Keras applications (keras.applications.vgg19.preprocess_input, mode "caffe"):
    # BGR in [0, 255] minus the ImageNet mean pixel, no std.
    "caffe": Preprocessing("caffe", "BGR", 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
}


# --------------------------------------------------------------------------- loss conventions
# Each convention is named after its source; resty.losses gives the formula of each.
GRAM_CONVENTIONS = ("raw", "gatys2015", "johnson2016", "pytorch-examples", "pytorch-tutorial", "tf-tutorial")
CONTENT_CONVENTIONS = ("gatys2015", "johnson2016", "mse", "sum")
TV_CONVENTIONS = ("squared_sum", "abs_sum", "squared_mean", "abs_mean")


@dataclass(frozen=True)
class LossSpec(_Spec):
    """Total loss ``α Σ_l w_l L_content(l) + β Σ_l λ_l L_style(l) + τ L_tv``."""
    content_layers: Tuple[str, ...] = ("relu4_2",)
    content_layer_weights: Tuple[float, ...] = (1.0,)
    content_weight: float = 1.0
    style_layers: Tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    style_layer_weights: Tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)
    style_weight: float = 1e3
    tv_weight: float = 0.0
    gram: str = "gatys2015"
    content: str = "gatys2015"
    tv: str = "squared_sum"

    def __post_init__(self):
        for name in ("content_layers", "content_layer_weights", "style_layers", "style_layer_weights"):
            _tuple(self, name)
        _check_choice(self, "gram", GRAM_CONVENTIONS)
        _check_choice(self, "content", CONTENT_CONVENTIONS)
        _check_choice(self, "tv", TV_CONVENTIONS)
        for name in ("content_weight", "style_weight", "tv_weight"):
            _check_positive(self, name, allow_zero=True)
        if not self.content_layers and not self.style_layers:
            _fail(type(self), "style_layers", self.style_layers, "at least one content or style layer")
        for layers, weights in (("content_layers", "content_layer_weights"), ("style_layers", "style_layer_weights")):
            lv, wv = getattr(self, layers), getattr(self, weights)
            if len(lv) != len(wv):
                _fail(type(self), weights, wv, f"one weight per entry of {layers} ({len(lv)})")
            if len(set(lv)) != len(lv):
                _fail(type(self), layers, lv, "distinct layer names")
            for w in wv:
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    _fail(type(self), weights, wv, "finite numbers >= 0")

    def check_layers(self, arch: str) -> None:
        names = vgg_layer_names(arch)
        for layer in self.content_layers + self.style_layers:
            if layer not in names:
                raise ValueError(f"LossSpec: layer {layer!r} is not in {arch}; allowed: {', '.join(names)}")

    @property
    def all_layers(self) -> Tuple[str, ...]:
        seen = []
        for l in self.content_layers + self.style_layers:
            if l not in seen:
                seen.append(l)
        return tuple(seen)


# --------------------------------------------------------------------------- optimisers
@dataclass(frozen=True)
class AdamSpec(_Spec):
    """Adam with PyTorch's formula (epsilon added after bias correction).

    ``epsilon_hat=True`` selects Keras's placement (epsilon added to sqrt(v_t) before the
    bias correction of the step size), used only by presets that reproduce a Keras source.
    It is Keras 3's Adam exactly, including the bias corrections from β rounded to float32
    (resty.reference.adam_betas).
    """
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    epsilon_hat: bool = False

    def __post_init__(self):
        _check_positive(self, "lr")
        _check_positive(self, "eps")
        _check_positive(self, "weight_decay", allow_zero=True)
        for b in ("beta1", "beta2"):
            v = getattr(self, b)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                _fail(type(self), b, v, "a number in [0, 1)")
        if not isinstance(self.epsilon_hat, bool):
            _fail(type(self), "epsilon_hat", self.epsilon_hat, "True or False")


@dataclass(frozen=True)
class LBFGSSpec(_Spec):
    """L-BFGS with the semantics of ``torch.optim.LBFGS`` (one definition for both backends).

    One *iteration* of GatysConfig is one loss/gradient evaluation; an outer step runs up to
    ``max_iter`` inner iterations.  ``line_search="strong_wolfe"`` is torch.optim.LBFGS's own
    search and runs in the torch backend only (its host loop; a run may end up to 25
    evaluations past the budget); the reference and the TensorFlow backend implement
    ``None`` (no presets use a search) and say so.
    """
    lr: float = 1.0
    max_iter: int = 20
    history_size: int = 100
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    line_search: Optional[str] = None

    def __post_init__(self):
        _check_positive(self, "lr")
        _check_positive(self, "max_iter", integer=True)
        _check_positive(self, "history_size", integer=True)
        _check_positive(self, "tolerance_grad", allow_zero=True)
        _check_positive(self, "tolerance_change", allow_zero=True)
        _check_choice(self, "line_search", (None, "strong_wolfe"))


OPTIMIZERS = ("adam", "lbfgs")
INITS = ("content", "noise", "style")

#: Where a Gatys run projects its image onto [0, 1] (``GatysConfig.clamp``):
#:
#: * ``evaluation``: at the start of every loss evaluation, and once at the end (the PyTorch
#:   tutorial's ``input_img.clamp_(0, 1)`` first thing in the L-BFGS closure);
#: * ``update``: after every update of the image (the TF tutorial's
#:   ``image.assign(clip_0_1(image))`` after ``apply_gradients``; L-BFGS: after every inner
#:   update).  In exact arithmetic it gives the same images as ``evaluation``;
#: * ``step``: after every ``optimizer.step`` call: Adam after every update, L-BFGS between
#:   outer steps (every ``max_iter`` updates and after the last) -- the old ``clamp=True``;
#: * ``end``: only the result (and before upsampling to the next scale) -- Gatys's and
#:   jcjohnson's code, the old ``clamp=False``;
#: * ``never``: not during the run nor between scales (the returned image is still in [0, 1]).
CLAMP_MODES = ("evaluation", "update", "step", "end", "never")
#: Old preset JSON's ``clamp: true/false`` and what it meant.
CLAMP_LEGACY = {True: "step", False: "end"}
#: How the content (hence the output) and the styles are sized from ``image_size``
#: (``GatysConfig.sizing``):
#:
#: * ``longest``: the content's longest side becomes ``image_size`` (the other rounded, halves
#:   up); each style's longest side ``style_scale ×`` the output's longest side;
#: * ``shorter``: ``torchvision.transforms.Resize(image_size)`` on each image (the PyTorch
#:   tutorial's loader): the shorter side becomes the size, the longer ``int(size · long / short)``;
#:   the styles with ``style_scale ×`` the output's shorter side;
#: * ``longest_trunc``: the TF tutorial's ``load_img`` on each image independently:
#:   ``scale = size / long`` and ``int(side · scale)`` in float32 (truncated); the styles with
#:   ``style_scale ×`` the output's longest side.
SIZINGS = ("longest", "shorter", "longest_trunc")


@dataclass(frozen=True)
class GatysConfig(_Spec):
    """Gatys et al. 2015: optimise the pixels of an image in RGB [0, 1] space."""
    optimizer: str = "lbfgs"
    adam: AdamSpec = field(default_factory=AdamSpec)
    lbfgs: LBFGSSpec = field(default_factory=LBFGSSpec)
    iterations: int = 500
    init: str = "noise"
    init_seed: int = 0
    noise_std: float = 0.25      # white noise around 0.5 in [0,1] space (init="noise")
    image_size: Optional[int] = 512   # longest side of the output; None keeps the content's size
    style_scale: float = 1.0     # style image resized to style_scale * image_size (longest side)
    clamp: str = "step"          # where the image is projected onto [0, 1]: CLAMP_MODES (True/False: old JSON)
    scales: Tuple[float, ...] = (1.0,)   # coarse-to-fine fractions of image_size, ending at 1.0
    sizing: str = "longest"      # how image_size sizes content and styles: SIZINGS

    def __post_init__(self):
        _tuple(self, "scales")
        _check_choice(self, "optimizer", OPTIMIZERS)
        _check_choice(self, "init", INITS)
        _check_positive(self, "iterations", integer=True)
        _check_positive(self, "noise_std")
        _check_positive(self, "style_scale")
        if not isinstance(self.init_seed, int) or isinstance(self.init_seed, bool):
            _fail(type(self), "init_seed", self.init_seed, "an integer")
        if self.image_size is not None:
            _check_positive(self, "image_size", integer=True)
        if isinstance(self.clamp, bool):     # old presets: True/False, with their old meaning
            object.__setattr__(self, "clamp", CLAMP_LEGACY[self.clamp])
        _check_choice(self, "clamp", CLAMP_MODES)
        _check_choice(self, "sizing", SIZINGS)
        if not self.scales or any(not isinstance(s, (int, float)) or not 0 < s <= 1 for s in self.scales) \
                or list(self.scales) != sorted(self.scales) or self.scales[-1] != 1.0:
            _fail(type(self), "scales", self.scales, "increasing fractions in (0, 1] ending with 1.0")


# --------------------------------------------------------------------------- transformer
UPSAMPLINGS = ("nearest_conv", "transposed_conv")
NORMS = ("instance", "batch", "conditional_instance")
OUTPUT_ACTIVATIONS = ("none", "sigmoid", "tanh")


@dataclass(frozen=True)
class TransformerSpec(_Spec):
    """Johnson et al. 2016 image transformation network with Ulyanov's instance norm.

    Layout (names are the canonical parameter prefixes, see ``transformer_layers``):
    ``conv_in`` 9x9 3->c0, ``down1`` 3x3/2 c0->c1, ``down2`` 3x3/2 c1->c2,
    ``res{i}.conv1/conv2`` 3x3 c2->c2 (i = 1..residual_blocks), ``up1`` x2 c2->c1,
    ``up2`` x2 c1->c0, ``conv_out`` 9x9 c0->3.  Every conv but ``conv_out`` is followed by a
    norm (affine) and ReLU (the second conv of a residual block has no ReLU); every conv is
    preceded by reflection padding of kernel//2.  Upsampling is nearest x2 + conv, or a
    transposed conv (kernel 3, stride 2) equal to torch's padding=1, output_padding=1: the
    full ``(H-1)*2+3`` output cropped by ``transpose_crop = (top/left, bottom/right)``.

    Inputs are RGB in [0,1] times ``input_scale``; the output in the same units passes
    ``output_activation`` and is mapped back to [0,1] (see resty.reference.transformer_forward).
    Any input size works: the input is reflection-padded up to a multiple of ``size_multiple``
    and the output cropped back.
    """
    channels: Tuple[int, int, int] = (32, 64, 128)
    residual_blocks: int = 5
    upsampling: str = "nearest_conv"
    transpose_crop: Tuple[int, int] = (1, 0)
    norm: str = "instance"
    norm_eps: float = 1e-5
    conv_bias_before_norm: bool = False   # True reproduces pytorch/examples (bias has zero gradient)
    output_activation: str = "none"
    input_scale: float = 255.0
    kernel_in: int = 9
    kernel_out: int = 9
    size_multiple: int = 4
    # Generalisations (Dumoulin et al. 2017's conditional instance norm network).  At their
    # defaults they are left out of ``to_dict``, so every existing spec's JSON is unchanged.
    up_channels: Optional[Tuple[int, int]] = None   # widths of up1, up2; None = (c1, c0)
    norm_out: bool = False         # conv_out followed by a norm (then without a bias)
    num_styles: int = 1            # rows of the conditional instance norm's gamma/beta tables

    _DEFAULT_OMITTED = {"up_channels": None, "norm_out": False, "num_styles": 1}

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        for k, default in self._DEFAULT_OMITTED.items():
            if out.get(k) == default:
                out.pop(k)
        return out

    @property
    def conditional(self) -> bool:
        """Conditional instance norm: gamma/beta are (num_styles, C) tables, mixed by a style
        weight vector (resty.reference.conditional_instance_norm)."""
        return self.norm == "conditional_instance"

    def __post_init__(self):
        _tuple(self, "channels")
        _tuple(self, "transpose_crop")
        _tuple(self, "up_channels")
        if self.up_channels is not None and (len(self.up_channels) != 2 or not all(
                isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in self.up_channels)):
            _fail(type(self), "up_channels", self.up_channels, "None or two positive integers")
        if not isinstance(self.norm_out, bool):
            _fail(type(self), "norm_out", self.norm_out, "True or False")
        _check_positive(self, "num_styles", integer=True)
        if self.num_styles != 1 and self.norm != "conditional_instance":
            _fail(type(self), "num_styles", self.num_styles, "1 unless norm='conditional_instance'")
        if len(self.channels) != 3 or not all(isinstance(c, int) and c > 0 for c in self.channels):
            _fail(type(self), "channels", self.channels, "three positive integers")
        _check_positive(self, "residual_blocks", allow_zero=True, integer=True)
        _check_choice(self, "upsampling", UPSAMPLINGS)
        _check_choice(self, "norm", NORMS)
        _check_positive(self, "norm_eps")
        _check_choice(self, "output_activation", OUTPUT_ACTIVATIONS)
        _check_positive(self, "input_scale")
        for k in ("kernel_in", "kernel_out"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1 or v % 2 == 0:
                _fail(type(self), k, v, "an odd positive integer")
        if len(self.transpose_crop) != 2 or not all(isinstance(c, int) and 0 <= c <= 2 for c in self.transpose_crop) \
                or sum(self.transpose_crop) != 1:
            _fail(type(self), "transpose_crop", self.transpose_crop, "(1, 0) or (0, 1): the 2H+1 output cropped to 2H")
        if self.size_multiple != 4:
            _fail(type(self), "size_multiple", self.size_multiple, "4 (two stride-2 stages)")
        if not isinstance(self.conv_bias_before_norm, bool):
            _fail(type(self), "conv_bias_before_norm", self.conv_bias_before_norm, "True or False")


@dataclass(frozen=True)
class ConvDef:
    """One convolution of the transformer, in the order of the forward pass."""
    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    transposed: bool
    upsample: bool      # nearest x2 before the conv
    norm: bool          # followed by a norm layer named ``name + '.norm'``
    relu: bool
    bias: bool


def transformer_layers(spec: TransformerSpec) -> Tuple[ConvDef, ...]:
    """The transformer's convolutions in forward order, with canonical names."""
    c0, c1, c2 = spec.channels
    u1, u2 = spec.up_channels if spec.up_channels is not None else (c1, c0)
    b = spec.conv_bias_before_norm
    tr = spec.upsampling == "transposed_conv"
    layers = [
        ConvDef("conv_in", 3, c0, spec.kernel_in, 1, False, False, True, True, b),
        ConvDef("down1", c0, c1, 3, 2, False, False, True, True, b),
        ConvDef("down2", c1, c2, 3, 2, False, False, True, True, b),
    ]
    for i in range(1, spec.residual_blocks + 1):
        layers.append(ConvDef(f"res{i}.conv1", c2, c2, 3, 1, False, False, True, True, b))
        layers.append(ConvDef(f"res{i}.conv2", c2, c2, 3, 1, False, False, True, False, b))
    layers += [
        ConvDef("up1", c2, u1, 3, 2 if tr else 1, tr, not tr, True, True, b),
        ConvDef("up2", u1, u2, 3, 2 if tr else 1, tr, not tr, True, True, b),
        ConvDef("conv_out", u2, 3, spec.kernel_out, 1, False, False, spec.norm_out, False,
                b if spec.norm_out else True),
    ]
    return tuple(layers)


def transformer_param_shapes(spec: TransformerSpec) -> Dict[str, Tuple[int, ...]]:
    """Canonical parameter names and shapes: conv ``OIHW``, transposed conv ``IOHW``
    (torch's layouts), norm ``.norm.weight`` / ``.norm.bias`` of shape (C,)."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    for l in transformer_layers(spec):
        if l.transposed:
            shapes[f"{l.name}.weight"] = (l.in_channels, l.out_channels, l.kernel, l.kernel)
        else:
            shapes[f"{l.name}.weight"] = (l.out_channels, l.in_channels, l.kernel, l.kernel)
        if l.bias:
            shapes[f"{l.name}.bias"] = (l.out_channels,)
        if l.norm:
            c = (spec.num_styles, l.out_channels) if spec.conditional else (l.out_channels,)
            shapes[f"{l.name}.norm.weight"] = c
            shapes[f"{l.name}.norm.bias"] = c
            if spec.norm == "batch":
                shapes[f"{l.name}.norm.running_mean"] = (l.out_channels,)
                shapes[f"{l.name}.norm.running_var"] = (l.out_channels,)
    return shapes


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig(_Spec):
    """Johnson-style training of the transformer on a folder of photos."""
    image_size: int = 256          # random square crops of this side (after resizing the short side)
    batch_size: int = 4
    epochs: Optional[int] = 2
    steps: Optional[int] = None    # when set, overrides epochs
    adam: AdamSpec = field(default_factory=AdamSpec)
    style_size: Optional[int] = None   # longest side of the style image; None keeps it
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0
    num_workers: int = 2
    #: The ReReVST temporal term (resty.temporal): its weight (0: off, the results unchanged), the
    #: largest displacement (px) of the random smooth flow and the std of the added noise (on [0, 1]
    #: pixels: ReReVST's training code adds 0.001·(1 + U[0, 1)) on ImageNet-normalised input, about
    #: 0.0002-0.0005 here).
    temporal_weight: float = 0.0
    temporal_flow: float = 4.0
    temporal_noise: float = 0.0003

    def __post_init__(self):
        for name in ("image_size", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            _check_positive(self, name, integer=True)
        for name in ("temporal_weight", "temporal_flow", "temporal_noise"):
            _check_positive(self, name, allow_zero=True)
        _check_positive(self, "num_workers", allow_zero=True, integer=True)
        if self.epochs is None and self.steps is None:
            _fail(type(self), "epochs", None, "an integer > 0 (or set steps)")
        if self.epochs is not None:
            _check_positive(self, "epochs", integer=True)
        if self.steps is not None:
            _check_positive(self, "steps", integer=True)
        if self.style_size is not None:
            _check_positive(self, "style_size", integer=True)


_NESTED = {
    ("GatysConfig", "adam"): AdamSpec,
    ("GatysConfig", "lbfgs"): LBFGSSpec,
    ("TrainConfig", "adam"): AdamSpec,
}

SPEC_TYPES = {c.__name__: c for c in (VGGSpec, Preprocessing, LossSpec, AdamSpec, LBFGSSpec,
                                      GatysConfig, TransformerSpec, TrainConfig)}


def spec_from_dict(kind: str, d: Dict[str, Any]):
    if kind not in SPEC_TYPES:
        raise ValueError(f"spec kind: got {kind!r}; allowed: {', '.join(SPEC_TYPES)}")
    return SPEC_TYPES[kind].from_dict(d)


# --------------------------------------------------------------------------- AdaIN (Huang & Belongie 2017)
#: How σ of a feature map (per sample and channel, over H×W) is computed; the references disagree:
#: ``biased``: sqrt(mean((x-μ)²)) (the Lua original's style statistics, torch.std(..., true));
#: ``biased_eps``: sqrt(mean((x-μ)²) + eps) (the Lua original's content side, nn.BatchNormalization
#: over the reshaped features; keras-io's ``ops.moments`` + eps);
#: ``unbiased_eps``: sqrt(Σ(x-μ)²/(HW-1) + eps) (pytorch-AdaIN's ``calc_mean_std``: ``var() + eps``).
SIGMA_CONVENTIONS = ("biased", "biased_eps", "unbiased_eps")
#: How the AdaIN style loss reduces its squared differences of means and of σs, per layer:
#: ``mean`` (MSE over batch and channels, pytorch-AdaIN / keras-io) or ``sum_over_batch``
#: (summed, divided by the batch size: the Lua original's criterion).
ADAIN_STYLE_REDUCTIONS = ("mean", "sum_over_batch")
PADDINGS = ("reflect", "zeros")
#: The encoder: VGG19 up to relu4_1 (after a 1×1 conv holding the preprocessing, as the
#: original's vgg_normalised); the style loss reads these layers, the decoder relu4_1.
ADAIN_ENCODER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


@dataclass(frozen=True)
class AdaINSpec(_Spec):
    """The AdaIN network: a frozen VGG19 encoder to relu4_1, adaptive instance normalisation with
    named σ conventions for the content and the style side, and the decoder mirroring the
    encoder (pad 1 before every 3×3 conv, ReLU after every conv but the last, nearest ×2 where the
    encoder pools).  ``decoder_widths`` are the decoder's (block 3, block 2, block 1) widths:
    (256, 128, 64) in the paper; tests use small ones.  The first decoder conv always takes 512."""
    decoder_widths: Tuple[int, int, int] = (256, 128, 64)
    encoder_padding: str = "reflect"
    decoder_padding: str = "reflect"
    content_sigma: str = "unbiased_eps"
    style_sigma: str = "unbiased_eps"
    eps: float = 1e-5
    # the loss (training): content MSE at relu4_1 against the AdaIN target; style: per layer of
    # ADAIN_ENCODER_LAYERS, reduction(μ(g)-μ(s))² + reduction(σ(g)-σ(s))², σ by ``loss_sigma``
    content_weight: float = 1.0
    style_weight: float = 10.0
    style_reduction: str = "mean"
    loss_sigma: str = "unbiased_eps"
    #: Adam's learning rate at iteration i (0-based) is lr / (1 + lr_decay·i), as both originals
    lr_decay: float = 5e-5
    #: training images are resized (short side) to this before the random crop (image_size)
    load_size: int = 512

    def __post_init__(self):
        _tuple(self, "decoder_widths")
        w = self.decoder_widths
        if len(w) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in w):
            _fail(type(self), "decoder_widths", w, "three integers > 0")
        for name in ("encoder_padding", "decoder_padding"):
            _check_choice(self, name, PADDINGS)
        for name in ("content_sigma", "style_sigma", "loss_sigma"):
            _check_choice(self, name, SIGMA_CONVENTIONS)
        _check_choice(self, "style_reduction", ADAIN_STYLE_REDUCTIONS)
        _check_positive(self, "eps", allow_zero=True)
        _check_positive(self, "content_weight", allow_zero=True)
        _check_positive(self, "style_weight", allow_zero=True)
        _check_positive(self, "lr_decay", allow_zero=True)
        _check_positive(self, "load_size", integer=True)


def adain_decoder_layers(spec: AdaINSpec) -> Tuple[Tuple[str, int, int, bool], ...]:
    """``(name, in, out, upsample after)`` of each decoder conv, in order; names mirror the
    encoder conv they invert (pytorch-AdaIN's decoder indices 1, 5, 8, 11, 14, 18, 21, 25, 28)."""
    a, b, c = spec.decoder_widths
    return (("conv4_1", 512, a, True), ("conv3_4", a, a, False), ("conv3_3", a, a, False),
            ("conv3_2", a, a, False), ("conv3_1", a, b, True), ("conv2_2", b, b, False),
            ("conv2_1", b, c, True), ("conv1_2", c, c, False), ("conv1_1", c, 3, False))


def adain_decoder_shapes(spec: AdaINSpec) -> Dict[str, Tuple[int, ...]]:
    """Canonical decoder parameter names and shapes (OIHW kernels, biases)."""
    out: Dict[str, Tuple[int, ...]] = {}
    for name, cin, cout, _ in adain_decoder_layers(spec):
        out[f"{name}.weight"] = (cout, cin, 3, 3)
        out[f"{name}.bias"] = (cout,)
    return out


SPEC_TYPES["AdaINSpec"] = AdaINSpec
