"""Named presets: documented bundles of specs that reproduce a source's settings.

``resty.presets.get(name)`` returns a frozen :class:`Preset`; ``names()`` lists them.
Every number here says where it comes from.  Where a source leaves a setting open, the
choice is marked "(choice)" in ``notes``.

This is the one registry a user sees (``resty presets``): the Gatys/Johnson presets defined
here and the AdaIN presets of resty.adain (:class:`resty.adain.AdaINPreset`: ``adain2017``,
``pytorch-adain``, ``keras-adain``).  ``names()`` and ``get()`` cover both (``names("adain")``,
``names("gatys")``/``names("fast")`` for one family); ``resolve()`` and :class:`Preset` stay the
Gatys/Johnson API (an AdaIN preset given to them is refused with a pointer to AdaINStylizer).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

from .specs import (AdamSpec, GatysConfig, LBFGSSpec, LossSpec, TrainConfig, TransformerSpec,
                    VGGSpec, _check_choice, _fail, _Spec, _NESTED, _tuple)

__all__ = ["Preset", "get", "names", "method_of", "resolve", "PRESETS", "AGREEMENT", "METHODS"]

#: Measured agreement of a preset's Gatys run with its source's own loop (tests/test_preset_sources.py,
#: seeded random weights, tiny images): what ``resty presets NAME`` and docs/PRESETS.md show.
AGREEMENT: Dict[str, str] = {
    "pytorch-tutorial": "the tutorial's own loop (nn.Sequential loss modules, optim.LBFGS defaults, clamp_ "
                        "in the closure), 48×64 px, 40 evaluations: float64 max abs 1.5e-12; a float32 "
                        "run differs by 2.3e-2",
    "tf-tutorial": "the tutorial's StyleContentModel + Keras Adam + tf.image.total_variation + clip_0_1, "
                   "31×40 px, 20 steps: float64 max abs 1.4e-15 (torch backend 2.6e-15), float32 6.3e-2",
    "pytorch-examples": "fast_neural_style's TransformerNet, Vgg16 slices, gram_matrix, normalize_batch, MSE "
                        "losses and Adam, 3 steps (batch 2, 32 px) then stylize: float64 weights max abs "
                        "3.5e-15 (zero-gradient biases 4.6e-6, no effect on the output), image 1.8e-14; "
                        "float32 weights 5.2e-3, image 0.42 (Adam's sign-like first steps)",
    "gatys2015": "source cannot run here (Lua/Caffe): see the notes for the lines it mirrors",
    "johnson2016": "source cannot run here (Lua/Torch7): see the notes for the lines it mirrors",
}

IMAGENET_SOURCES = ("torchvision", "keras")


@dataclass(frozen=True)
class Preset(_Spec):
    """Everything both methods need.

    ``vgg`` is the loss network; ``imagenet_source`` says which pretrained weights (and so which
    preprocessing: torchvision RGB mean/std, or Keras/Caffe BGR minus mean) the source used and
    which preprocessing seeded random weights get.  ``loss`` drives Gatys, ``fast_loss`` the
    feed-forward training (Johnson).
    """
    name: str
    description: str
    sources: Tuple[str, ...]
    vgg: VGGSpec = field(default_factory=VGGSpec)
    imagenet_source: str = "torchvision"
    loss: LossSpec = field(default_factory=LossSpec)
    gatys: GatysConfig = field(default_factory=GatysConfig)
    fast_loss: LossSpec = field(default_factory=LossSpec)
    transformer: TransformerSpec = field(default_factory=TransformerSpec)
    training: TrainConfig = field(default_factory=TrainConfig)
    notes: Tuple[str, ...] = ()

    def __post_init__(self):
        _tuple(self, "sources")
        _tuple(self, "notes")
        if not isinstance(self.name, str) or not self.name:
            _fail(type(self), "name", self.name, "a non-empty string")
        _check_choice(self, "imagenet_source", IMAGENET_SOURCES)
        for attr, kind in (("vgg", VGGSpec), ("loss", LossSpec), ("gatys", GatysConfig),
                           ("fast_loss", LossSpec), ("transformer", TransformerSpec), ("training", TrainConfig)):
            if not isinstance(getattr(self, attr), kind):
                _fail(type(self), attr, type(getattr(self, attr)).__name__, kind.__name__)
        self.loss.check_layers(self.vgg.arch)
        self.fast_loss.check_layers(self.vgg.arch)

    @property
    def preprocessing_name(self) -> str:
        return "torchvision" if self.imagenet_source == "torchvision" else "caffe"

    @classmethod
    def from_dict(cls, d):
        """A preset's dict; one written by an AdaIN preset (``"method": "adain"``) gives back
        that :class:`resty.adain.AdaINPreset` (the registry's round trip)."""
        if isinstance(d, dict) and d.get("method") == "adain":
            from .adain import AdaINPreset
            return AdaINPreset.from_dict(d)
        return super().from_dict(d)

    def describe(self) -> str:
        """Human-readable summary (used by ``resty presets``)."""
        l, f, g, t = self.loss, self.fast_loss, self.gatys, self.training
        opt = f"Adam lr={g.adam.lr}" if g.optimizer == "adam" else f"L-BFGS (history {g.lbfgs.history_size})"
        lines = [
            f"{self.name}: {self.description}",
            f"  loss network: {self.vgg.arch.upper()}, {self.vgg.pooling} pooling, "
            f"{self.imagenet_source} ImageNet weights ({self.preprocessing_name} preprocessing)",
            f"  Gatys: content {', '.join(l.content_layers)} (α={l.content_weight:g}); style "
            f"{', '.join(f'{n}×{w:g}' for n, w in zip(l.style_layers, l.style_layer_weights))} "
            f"(β={l.style_weight:g}); TV {l.tv} τ={l.tv_weight:g}; gram {l.gram}, content {l.content}",
            f"         {opt}, {g.iterations} iterations, init {g.init}, size {g.image_size} "
            f"(sizing {g.sizing}), clamp {g.clamp}",
            f"  fast:  content {', '.join(f.content_layers)} (α={f.content_weight:g}); style "
            f"{', '.join(f'{n}×{w:g}' for n, w in zip(f.style_layers, f.style_layer_weights))} "
            f"(β={f.style_weight:g}); TV {f.tv} τ={f.tv_weight:g}; gram {f.gram}",
            f"         transformer {self.transformer.upsampling}, {self.transformer.norm} norm "
            f"eps={self.transformer.norm_eps:g}, output {self.transformer.output_activation}; "
            f"train {t.image_size}px crops, batch {t.batch_size}, "
            f"{f'{t.steps} steps' if t.steps else f'{t.epochs} epochs'}, Adam lr={t.adam.lr}",
            "  sources: " + "; ".join(self.sources),
        ]
        if self.name in AGREEMENT and PRESETS.get(self.name) == self:
            lines.append(f"  agreement with the source: {AGREEMENT[self.name]}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


_NESTED.update({
    ("Preset", "vgg"): VGGSpec, ("Preset", "loss"): LossSpec, ("Preset", "gatys"): GatysConfig,
    ("Preset", "fast_loss"): LossSpec, ("Preset", "transformer"): TransformerSpec,
    ("Preset", "training"): TrainConfig,
})

_GATYS_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
_JOHNSON16_STYLE = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")

# Johnson et al. 2016 with the fast-neural-style defaults (content 1.0, style 5.0, TV 1e-6).
_JOHNSON_LOSS = LossSpec(
    content_layers=("relu2_2",), content_layer_weights=(1.0,), content_weight=1.0,
    style_layers=_JOHNSON16_STYLE, style_layer_weights=(1.0,) * 4, style_weight=5.0,
    tv_weight=1e-6, gram="johnson2016", content="johnson2016", tv="squared_sum")

_JOHNSON_TRAINING = TrainConfig(image_size=256, batch_size=4, epochs=2, adam=AdamSpec(lr=1e-3))

PRESETS: Dict[str, Preset] = {}


def _add(p: Preset) -> None:
    PRESETS[p.name] = p


_add(Preset(
    name="restynet",
    description="The RestyNet report: VGG19 loss network, Adam lr 1e-3 for both methods, instance norm",
    sources=("RestyNet final report (Özçömlekçi), Methods and Results",
             "Gatys et al. 2015 (loss formulas as written in the report)",
             "Johnson et al. 2016 (perceptual losses as written in the report)"),
    vgg=VGGSpec("vgg19", "max"),
    imagenet_source="torchvision",
    loss=LossSpec(content_layers=("relu4_2",), content_layer_weights=(1.0,), content_weight=1.0,
                  style_layers=_GATYS_STYLE, style_layer_weights=(0.2,) * 5, style_weight=1e3,
                  tv_weight=0.0, gram="gatys2015", content="gatys2015", tv="squared_sum"),
    gatys=GatysConfig(optimizer="adam", adam=AdamSpec(lr=1e-3), iterations=500, init="content",
                      image_size=512),
    fast_loss=LossSpec(content_layers=("relu2_2",), content_layer_weights=(1.0,), content_weight=1.0,
                       style_layers=("relu1_2", "relu2_2", "relu3_4", "relu4_4"),
                       style_layer_weights=(1.0,) * 4, style_weight=5.0, tv_weight=1e-6,
                       gram="johnson2016", content="johnson2016", tv="squared_sum"),
    transformer=TransformerSpec(upsampling="nearest_conv", norm="instance", norm_eps=1e-5,
                                output_activation="none", input_scale=255.0),
    training=TrainConfig(image_size=256, batch_size=4, epochs=2, adam=AdamSpec(lr=1e-3)),
    notes=("The report gives Adam lr 1e-3 for both methods, a VGG19 loss network, instance norm and "
           "~9000 MS COCO val2014 training images.",
           "(choice) Layers and α/β are not in the report: Gatys's layers and α/β = 1e-3 for Gatys; "
           "Johnson's layer positions mapped onto VGG19 (last ReLU of blocks 1-4) and Johnson's "
           "weights for the fast network.",
           "Gatys here optimises RGB pixels in [0, 1]; with lr 1e-3 a pixel moves at most ~1e-3 per "
           "step, so results need many iterations (as the report's 39 s per image suggests)."),
))

_add(PRESETS["restynet"].replace(
    name="restynet-light",
    description="restynet with a half-width transformer (16/32/64 channels) for fast CPU/mobile inference",
    transformer=PRESETS["restynet"].transformer.replace(channels=(16, 32, 64)),
    notes=PRESETS["restynet"].notes + (
        "(choice) Half the channels of Johnson's network: about 89 instead of 323 GFLOP at 1024 px; "
        "the speed path measured by `resty bench` (ONNX Runtime on CPU).",),
))

_add(Preset(
    name="gatys2015",
    description="Gatys, Ecker, Bethge 2015, 'A Neural Algorithm of Artistic Style'",
    sources=("arXiv:1508.06576, sections 2-3 and Methods",),
    vgg=VGGSpec("vgg19", "avg"),
    imagenet_source="keras",
    loss=LossSpec(content_layers=("relu4_2",), content_layer_weights=(1.0,), content_weight=1.0,
                  style_layers=_GATYS_STYLE, style_layer_weights=(0.2,) * 5, style_weight=1e3,
                  tv_weight=0.0, gram="gatys2015", content="gatys2015", tv="squared_sum"),
    gatys=GatysConfig(optimizer="lbfgs", lbfgs=LBFGSSpec(), iterations=500, init="noise",
                      image_size=512, clamp="end"),
    fast_loss=LossSpec(content_layers=("relu4_2",), content_layer_weights=(1.0,), content_weight=1.0,
                       style_layers=_GATYS_STYLE, style_layer_weights=(0.2,) * 5, style_weight=1e3,
                       gram="gatys2015", content="gatys2015"),
    transformer=TransformerSpec(),
    training=_JOHNSON_TRAINING,
    notes=("Paper: content 'conv4_2', style 'conv1_1'..'conv5_1' with w_l = 1/5, α/β = 1e-3, average "
           "pooling, L-BFGS, white-noise init. In Caffe the ReLU overwrites the conv output in place, "
           "so the paper's 'conv' responses are the ReLU outputs named relu*_* here.",
           "Weights: Caffe VGG19 (Keras applications file), BGR minus mean pixel.",
           "(choice) 500 L-BFGS evaluations, torch.optim.LBFGS defaults, no line search.",
           "No clamping during the optimisation (as Gatys's and jcjohnson/neural-style's code: the output "
           "is clipped at the end): clamping between L-BFGS steps breaks its curvature pairs, and the "
           "loss then jumps up after every clamp (measured: 120 evaluations at 128 px oscillate between "
           "111 and 150 with clamping, decrease monotonically to 109 without).",
           "The paper has no feed-forward network; FastStylizer trains against Gatys's loss.",
           "Source lines mirrored (Gatys's Caffe code is not public; jcjohnson/neural-style's "
           "neural_style.lua implements the paper and cannot run here, Lua/Torch7): clamp 'end' = "
           "`optim.lbfgs(feval, img, optim_state)` with no projection in `feval`, the image only "
           "mapped to [0, 1] when saved (`image.minmax{tensor=disp, min=0, max=1}` in `maybe_save`; "
           "Resty clips instead); sizing 'longest' = `image.scale(content_image, params.image_size, "
           "'bilinear')` (longest side) and `style_size = math.ceil(params.style_scale * "
           "params.image_size)`."),
))

_add(Preset(
    name="johnson2016",
    description="Johnson, Alahi, Fei-Fei 2016, 'Perceptual Losses for Real-Time Style Transfer' "
                "(with Ulyanov et al.'s instance norm)",
    sources=("ECCV 2016, sections 3.1-3.3 and 4.1", "jcjohnson/fast-neural-style defaults "
             "(content 1.0, style 5.0, TV 1e-6)", "Ulyanov et al. 2016, arXiv:1607.08022"),
    vgg=VGGSpec("vgg16", "max"),
    imagenet_source="keras",
    loss=_JOHNSON_LOSS,
    gatys=GatysConfig(optimizer="lbfgs", iterations=500, init="noise", image_size=256, clamp="end"),
    fast_loss=_JOHNSON_LOSS,
    transformer=TransformerSpec(upsampling="transposed_conv", norm="instance", norm_eps=1e-5,
                                output_activation="tanh", input_scale=255.0),
    training=_JOHNSON_TRAINING,
    notes=("Paper: VGG16, content relu2_2, style relu1_2, relu2_2, relu3_3, relu4_3; 256×256 crops, "
           "batch 4, 40k iterations (~2 epochs of 80k COCO images), Adam lr 1e-3, TV 1e-6..1e-4; "
           "fractionally-strided convs; scaled tanh output.",
           "Instance norm instead of batch norm follows Ulyanov et al. (as the report did).",
           "Caffe VGG16 weights (Keras applications file), BGR minus mean pixel.",
           "Source lines mirrored (Lua/Torch7, cannot run here): the Gatys part follows "
           "jcjohnson/neural-style's neural_style.lua: clamp 'end' (`optim.lbfgs(feval, img, "
           "optim_state)`, no projection in `feval`; `image.minmax` only when saving), sizing "
           "'longest' (`image.scale(content_image, params.image_size)`); the fast part follows "
           "jcjohnson/fast-neural-style's fast_neural_style/TotalVariation.lua (squared differences), "
           "GramMatrix.lua and StyleLoss.lua (Gram / (C·H·W), MSE)."),
))

_add(Preset(
    name="pytorch-examples",
    description="pytorch/examples fast_neural_style (VGG16, content 1e5, style 1e10)",
    sources=("github.com/pytorch/examples fast_neural_style/neural_style/neural_style.py, "
             "transformer_net.py, vgg.py, utils.py",),
    vgg=VGGSpec("vgg16", "max"),
    imagenet_source="torchvision",
    loss=LossSpec(content_layers=("relu2_2",), content_layer_weights=(1.0,), content_weight=1e5,
                  style_layers=_JOHNSON16_STYLE, style_layer_weights=(1.0,) * 4, style_weight=1e10,
                  tv_weight=0.0, gram="pytorch-examples", content="mse"),
    gatys=GatysConfig(optimizer="lbfgs", iterations=300, init="content", image_size=256),
    fast_loss=LossSpec(content_layers=("relu2_2",), content_layer_weights=(1.0,), content_weight=1e5,
                       style_layers=_JOHNSON16_STYLE, style_layer_weights=(1.0,) * 4, style_weight=1e10,
                       tv_weight=0.0, gram="pytorch-examples", content="mse"),
    transformer=TransformerSpec(upsampling="nearest_conv", norm="instance", norm_eps=1e-5,
                                conv_bias_before_norm=True, output_activation="none", input_scale=255.0),
    training=TrainConfig(image_size=256, batch_size=4, epochs=2, adam=AdamSpec(lr=1e-3),
                         checkpoint_every=2000),
    notes=("Inputs are multiplied by 255; the VGG input is y/255 normalised with ImageNet mean/std; "
           "the output is unbounded (clamped to [0, 255] when saved).",
           "Its ConvLayer keeps a conv bias in front of InstanceNorm2d; that bias has zero gradient.",
           "UpsampleConvLayer: nearest ×2 interpolation, reflection pad, conv.",
           "The example has no Gatys part; GatysStylizer uses its loss with L-BFGS (choice)."),
))

_add(Preset(
    name="pytorch-tutorial",
    description="PyTorch tutorial 'Neural Transfer Using PyTorch' (Gatys with L-BFGS)",
    sources=("pytorch.org/tutorials/advanced/neural_style_tutorial.html",),
    vgg=VGGSpec("vgg19", "max"),
    imagenet_source="torchvision",
    loss=LossSpec(content_layers=("conv2_2",), content_layer_weights=(1.0,), content_weight=1.0,
                  style_layers=("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"),
                  style_layer_weights=(1.0,) * 5, style_weight=1e6, tv_weight=0.0,
                  gram="pytorch-tutorial", content="mse"),
    gatys=GatysConfig(optimizer="lbfgs", lbfgs=LBFGSSpec(), iterations=300, init="content",
                      image_size=512, clamp="evaluation", sizing="shorter"),
    fast_loss=_JOHNSON_LOSS.replace(
        content_layers=("conv2_2",), style_layers=("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"),
        style_layer_weights=(1.0,) * 5),
    transformer=TransformerSpec(),
    training=_JOHNSON_TRAINING,
    notes=("Tutorial layers 'conv_4' (content) and 'conv_1'..'conv_5' (style) count convolutions: "
           "conv_4 is conv2_2. Losses are taken at conv outputs (before ReLU), since the tutorial "
           "replaces in-place ReLUs.",
           "style_weight 1e6, content_weight 1, LBFGS defaults, 300 closure evaluations, init = content; "
           "image size 512 on GPU (128 on CPU in the tutorial).",
           "clamp 'evaluation': `input_img.clamp_(0, 1)` first thing in every `closure()` and once "
           "after the loop; sizing 'shorter': `transforms.Resize(imsize)` on both images (the "
           "shorter side becomes imsize)."),
))

_add(Preset(
    name="tf-tutorial",
    description="TensorFlow tutorial 'Neural style transfer' (Keras VGG19, Adam, TV)",
    sources=("tensorflow.org/tutorials/generative/style_transfer",),
    vgg=VGGSpec("vgg19", "max"),
    imagenet_source="keras",
    loss=LossSpec(content_layers=("relu5_2",), content_layer_weights=(1.0,), content_weight=1e4,
                  style_layers=_GATYS_STYLE, style_layer_weights=(0.2,) * 5, style_weight=1e-2,
                  tv_weight=30.0, gram="tf-tutorial", content="mse", tv="abs_sum"),
    gatys=GatysConfig(optimizer="adam", adam=AdamSpec(lr=0.02, beta1=0.99, eps=1e-1, epsilon_hat=True),
                      iterations=1000, init="content", image_size=512, clamp="update",
                      sizing="longest_trunc"),
    fast_loss=_JOHNSON_LOSS.replace(content_layers=("relu5_2",), style_layers=_GATYS_STYLE,
                                    style_layer_weights=(0.2,) * 5),
    transformer=TransformerSpec(),
    training=_JOHNSON_TRAINING,
    notes=("Keras layers block5_conv2 (content) and block1..5_conv1 (style) include the ReLU: relu5_2, "
           "relu*_1 here. style_weight/num_style_layers = 1e-2/5 per layer, content_weight 1e4, "
           "total_variation_weight 30 with tf.image.total_variation.",
           "tf.keras Adam(learning_rate=0.02, beta_1=0.99, epsilon=1e-1): Keras's epsilon-hat "
           "placement, kept here because it changes the trajectory; 10 epochs × 100 steps.",
           "clamp 'update': `image.assign(clip_0_1(image))` after `opt.apply_gradients` in "
           "`train_step`; sizing 'longest_trunc': `load_img` resizes content and style each on its "
           "own to longest side 512 (`new_shape = tf.cast(shape * scale, tf.int32)`, truncated)."),
))


def _adain_presets() -> Dict[str, Any]:
    from .adain import ADAIN_PRESETS      # lazily: resty.adain imports resty.fast, which imports this module
    return ADAIN_PRESETS


METHODS = ("gatys", "fast", "adain")


def names(method: Optional[str] = None) -> Tuple[str, ...]:
    """Every preset a user can name: the Gatys/Johnson ones (``method`` 'gatys' or 'fast': both
    methods read the same :class:`Preset`), then the AdaIN ones (``method='adain'``)."""
    if method is not None and method not in METHODS:
        raise ValueError(f"names: method must be one of {', '.join(METHODS)}, got {method!r}")
    out = () if method == "adain" else tuple(PRESETS)
    return out if method in ("gatys", "fast") else out + tuple(_adain_presets())


def method_of(name: str) -> str:
    """'adain' for an AdaIN preset, else 'gatys/fast' (one Preset drives both)."""
    get(name)
    return "adain" if name in _adain_presets() else "gatys/fast"


def get(name: str):
    """The preset called ``name`` (a :class:`Preset`, or a :class:`resty.adain.AdaINPreset` for an
    AdaIN name); an unknown name lists the known ones."""
    if isinstance(name, Preset) or type(name).__name__ == "AdaINPreset":
        return name
    if name in PRESETS:
        return PRESETS[name]
    adain = _adain_presets()
    if name in adain:
        return adain[name]
    raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(names())}")


def _not_adain(p):
    if type(p).__name__ == "AdaINPreset":
        raise ValueError(f"preset {p.name!r} is an AdaIN preset: use it with AdaINStylizer (resty.adain) or "
                         f"`--method adain`; Gatys and fast-network presets: {', '.join(PRESETS)}")
    return p


def resolve(preset: Union[str, Preset, dict]) -> Preset:
    """Accept a preset name, a Preset, or its dict/JSON form wherever a Gatys/Johnson preset is
    accepted (an AdaIN one is refused: resty.adain.resolve_adain_preset takes those)."""
    if isinstance(preset, Preset):
        return preset
    if isinstance(preset, dict):
        return _not_adain(Preset.from_dict(preset))
    if isinstance(preset, str) and preset.lstrip().startswith("{"):
        return _not_adain(Preset.from_dict(json.loads(preset)))
    if isinstance(preset, str):
        return _not_adain(get(preset))
    raise ValueError(f"preset: expected a name, a Preset or a dict, got {type(preset).__name__}; "
                     f"known presets: {', '.join(PRESETS)}")
