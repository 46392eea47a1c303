"""AdaIN (Huang & Belongie 2017, "Arbitrary Style Transfer in Real-time with Adaptive Instance
Normalization"), written once for both backends: the presets, the encoder's weights (Resty's loss
network with its preprocessing as the 1×1 ``conv0`` of the original's ``vgg_normalised``, or the
published file itself), the importers of pytorch-AdaIN's ``vgg_normalised.pth`` / ``decoder.pth``
key layout, colour preservation, and :class:`AdaINStylizerBase` (``fit`` through the shared
training driver of resty.fast, ``stylize`` with alpha, style interpolation and colour
preservation, ``save``/``load``).  A backend supplies the encoder, the AdaIN op, the decoder and
one training step (resty_torch/adain.py, resty_tf/adain.py); the NumPy oracle is
resty.reference.adain_*."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import ArgumentError, ImageError, RestyError, WeightsError
from .fast import FastStylizerBase, StepOutcome, TrainingPlan, TrainingSession
from .images import _scale_round, load_image, random_crop, resize_to
from .inputs import prepare_styles
from .run_identity import data_identity
from .specs import (ADAIN_ENCODER_LAYERS, AdaINSpec, AdamSpec, Preprocessing, TrainConfig, VGGSpec, _Spec,
                    _check_choice, _fail, _tuple, adain_decoder_layers, adain_decoder_shapes, vgg_truncate)
from .training_data import BatchSchedule, crop_rng, list_training_images
from .weights import WeightSet, load_weights

__all__ = ["AdaINPreset", "ADAIN_PRESETS", "get_adain_preset", "resolve_adain_preset", "encoder_tensors",
           "preprocessing_conv", "resolve_encoder_weights", "from_pytorch_adain_vgg", "from_pytorch_adain_decoder",
           "read_pytorch_adain_decoder", "random_decoder", "match_color", "AdaINSessionBase", "AdaINStylizerBase",
           "MIN_SIDE", "is_adain_file", "load_mask", "mask_regions",
           "adain_regions_reference", "SIGMA_FORMULAS"]

#: The smallest image side (px): relu4_1 is 1/8 of the input, and its reflection pad needs 2 px.
MIN_SIDE = 16
#: The encoder's conv layers, VGG19 to conv4_1.
ENCODER_CONVS = tuple(l.name for l in vgg_truncate("vgg19", ["relu4_1"]) if l.kind == "conv")


# =========================================================================== presets
#: Each named σ convention (resty.specs.SIGMA_CONVENTIONS) over a channel's N = H·W values.
SIGMA_FORMULAS = {"biased": "sqrt(Σ(x−μ)²/N)", "biased_eps": "sqrt(Σ(x−μ)²/N + eps)",
                  "unbiased_eps": "sqrt(Σ(x−μ)²/(N−1) + eps)"}


@dataclass(frozen=True)
class AdaINPreset(_Spec):
    """An AdaIN recipe: the network and loss (``adain``), the loss network's weights source,
    and the training settings (resty.specs.TrainConfig, read by the shared driver)."""
    name: str
    description: str
    sources: Tuple[str, ...]
    adain: AdaINSpec = field(default_factory=AdaINSpec)
    imagenet_source: str = "caffe"
    training: TrainConfig = field(default_factory=TrainConfig)
    notes: Tuple[str, ...] = ()

    def __post_init__(self):
        _tuple(self, "sources")
        _tuple(self, "notes")
        if not isinstance(self.name, str) or not self.name:
            _fail(type(self), "name", self.name, "a non-empty string")
        _check_choice(self, "imagenet_source", ("torchvision", "caffe", "keras"))
        for attr, kind in (("adain", AdaINSpec), ("training", TrainConfig)):
            if not isinstance(getattr(self, attr), kind):
                _fail(type(self), attr, type(getattr(self, attr)).__name__, kind.__name__)

    #: The encoder is VGG19 (max pooling) in every recipe.
    vgg = VGGSpec("vgg19", "max")
    method = "adain"

    @property
    def preprocessing_name(self) -> str:
        return "torchvision" if self.imagenet_source == "torchvision" else "caffe"

    def to_dict(self) -> Dict[str, Any]:
        return dict(super().to_dict(), method="adain")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AdaINPreset":
        if not isinstance(d, Mapping):
            raise ValueError(f"AdaINPreset: expected a mapping, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k != "method"}
        if isinstance(d.get("adain"), Mapping):
            d["adain"] = AdaINSpec.from_dict(dict(d["adain"]))
        if isinstance(d.get("training"), Mapping):
            t = dict(d["training"])
            if isinstance(t.get("adam"), Mapping):
                t["adam"] = AdamSpec.from_dict(dict(t["adam"]))
            d["training"] = TrainConfig(**t)
        return cls(**d)

    def describe(self) -> str:
        """Human-readable summary (``resty presets NAME``): the σ conventions written out, the
        loss weights, the optimizer and the sources."""
        a, t, o = self.adain, self.training, self.training.adam
        sig = lambda c: SIGMA_FORMULAS[c].replace("eps", f"{a.eps:g}")     # noqa: E731
        red = {"mean": "MSE (mean over batch and channels)",
               "sum_over_batch": "squared differences summed, divided by the batch size"}[a.style_reduction]
        return "\n".join([
            f"{self.name}: {self.description}",
            "  method: AdaIN (arbitrary style; AdaINStylizer, `resty train --method adain`)",
            f"  encoder: VGG19 to relu4_1, frozen, {a.encoder_padding} padding, {self.imagenet_source} ImageNet "
            f"weights ({self.preprocessing_name} preprocessing as the 1×1 conv0)",
            f"  decoder: widths {a.decoder_widths}, {a.decoder_padding} padding, nearest ×2 upsampling",
            f"  AdaIN σ: content {a.content_sigma} = {sig(a.content_sigma)}; style {a.style_sigma} = "
            f"{sig(a.style_sigma)}",
            f"  loss: content MSE(relu4_1, target)×{a.content_weight:g} + style×{a.style_weight:g} over "
            f"{', '.join(ADAIN_ENCODER_LAYERS)} (|Δμ|² + |Δσ|², {red}; σ {a.loss_sigma} = {sig(a.loss_sigma)})",
            f"  optimizer: Adam lr {o.lr:g} (β1 {o.beta1:g}, β2 {o.beta2:g}, eps {o.eps:g}), lr_i = lr / "
            f"(1 + {a.lr_decay:g}·i)",
            f"  train: {t.image_size}px crops of images resized to {a.load_size}, batch {t.batch_size}, "
            f"{f'{t.steps} steps' if t.steps else f'{t.epochs} epochs'}",
            "  sources: " + "; ".join(self.sources)] + [f"  note: {n}" for n in self.notes])


def _train(**kw) -> TrainConfig:
    base = dict(image_size=256, batch_size=8, epochs=None, steps=160000, adam=AdamSpec(lr=1e-4),
                checkpoint_every=10000, keep_checkpoints=2, log_every=100, seed=0, num_workers=2)
    base.update(kw)
    return TrainConfig(**base)


ADAIN_PRESETS: Dict[str, AdaINPreset] = {p.name: p for p in (
    AdaINPreset(
        "adain2017", "Huang & Belongie 2017, the paper's Lua/Torch code (xunhuang1995/AdaIN-style)",
        ("Huang & Belongie, ICCV 2017, arXiv:1703.06868", "github.com/xunhuang1995/AdaIN-style (train.lua, "
         "lib/AdaptiveInstanceNormalization.lua)"),
        adain=AdaINSpec(content_sigma="biased_eps", style_sigma="biased", loss_sigma="biased_eps", content_weight=1.0,
                        style_weight=1e-2, style_reduction="sum_over_batch"),
        training=_train(),
        notes=("content σ: the Lua code normalises the content with nn.BatchNormalization over the reshaped "
               "(1, N·C, H·W) features in training mode: per sample and channel, biased variance plus eps 1e-5 "
               "inside the square root; the style σ is std(·, true): biased, no eps",
               "the loss's σ (of the output and the style, per layer) is biased with eps 1e-5 inside the root: "
               "without it a dead ReLU channel (σ = 0) has an infinite gradient (NaN weights)",
               "the style criterion sums the squared mean and σ differences and divides by the batch size",
               "images: short side resized to 512, random 256 crops (content and style)")),
    AdaINPreset(
        "pytorch-adain", "naoto0804/pytorch-AdaIN (the published decoder.pth / vgg_normalised.pth)",
        ("github.com/naoto0804/pytorch-AdaIN (function.py calc_mean_std, net.py, train.py)",),
        adain=AdaINSpec(content_sigma="unbiased_eps", style_sigma="unbiased_eps", loss_sigma="unbiased_eps",
                        content_weight=1.0, style_weight=10.0, style_reduction="mean"),
        training=_train(),
        notes=("σ = sqrt(var() + 1e-5) with torch's unbiased var, content and style alike",
               "pytorch-AdaIN resizes to 512×512 (squashing the aspect); Resty resizes the short side to 512",
               "its VGG pools with ceil_mode=True: equal to Resty's floor on sides that are multiples of 8")),
    AdaINPreset(
        "keras-adain", "keras-io example 'Neural Style Transfer with AdaIN' (Keras 3)",
        ("keras.io/examples/generative/adain/",),
        adain=AdaINSpec(content_sigma="biased_eps", style_sigma="biased_eps", loss_sigma="biased_eps",
                        content_weight=1.0, style_weight=4.0, style_reduction="mean", encoder_padding="zeros",
                        decoder_padding="zeros", lr_decay=0.0, load_size=224),
        imagenet_source="keras",
        training=_train(image_size=224, batch_size=32, steps=1500, adam=AdamSpec(lr=1e-5), checkpoint_every=500,
                        log_every=50),
        notes=("σ = sqrt(ops.moments variance (biased) + 1e-5)", "'same' (zero) padding in encoder and decoder, "
               "Keras VGG19 (Caffe preprocessing), Adam 1e-5 without decay, 30 epochs × 50 steps of batch 32")),
)}


def get_adain_preset(name: str) -> AdaINPreset:
    try:
        return ADAIN_PRESETS[name]
    except KeyError:
        raise ArgumentError(f"preset: got {name!r}; AdaIN presets: {', '.join(ADAIN_PRESETS)}") from None


def resolve_adain_preset(preset: Any) -> AdaINPreset:
    """A name, an AdaINPreset or its dict -> AdaINPreset."""
    if isinstance(preset, AdaINPreset):
        return preset
    if isinstance(preset, str):
        return get_adain_preset(preset)
    if isinstance(preset, Mapping):
        try:
            return AdaINPreset.from_dict(preset)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"preset: {exc}") from None
    raise ArgumentError(f"preset: expected an AdaIN preset name ({', '.join(ADAIN_PRESETS)}), an AdaINPreset or "
                        f"its dict; got {type(preset).__name__}")


# =========================================================================== encoder weights
def preprocessing_conv(prep: Preprocessing) -> Tuple[np.ndarray, np.ndarray]:
    """The preprocessing as the original's first 1×1 conv (``vgg_normalised``'s layer 0):
    ``x_net[c] = (x[order[c]]·scale − mean[c]) / std[c]`` = ``W x + b`` with
    ``W[c, order[c]] = scale/std[c]`` and ``b[c] = −mean[c]/std[c]``; (3, 3, 1, 1) and (3,)."""
    w = np.zeros((3, 3, 1, 1))
    b = np.zeros(3)
    for c, src in enumerate(prep.channel_index):
        w[c, src, 0, 0] = prep.scale / prep.std[c]
        b[c] = -prep.mean[c] / prep.std[c]
    return w, b


def encoder_tensors(ws: WeightSet) -> Dict[str, np.ndarray]:
    """The encoder's canonical tensors from a VGG19 weight set: ``conv0`` (its preprocessing as a
    1×1 conv) and conv1_1 … conv4_1 (OIHW)."""
    if ws.architecture != "vgg19":
        raise WeightsError(f"AdaIN encoder: needs VGG19 weights, got {ws.architecture}")
    w, b = preprocessing_conv(ws.preprocessing)
    out = {"conv0.weight": w, "conv0.bias": b}
    for name in ENCODER_CONVS:
        out[f"{name}.weight"] = np.asarray(ws.tensors[f"{name}.weight"], np.float64)
        out[f"{name}.bias"] = np.asarray(ws.tensors[f"{name}.bias"], np.float64)
    return out


#: pytorch-AdaIN's net.vgg: nn.Sequential index of every conv (0 is the 1×1 preprocessing conv).
_VGG_INDEX = dict(zip(["conv0"] + [l.name for l in vgg_truncate("vgg19", ["relu5_4"]) if l.kind == "conv"],
                      [0, 2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51]))
#: pytorch-AdaIN's net.decoder: nn.Sequential index of every conv.
_DECODER_INDEX = dict(zip([n for n, *_ in adain_decoder_layers(AdaINSpec())], [1, 5, 8, 11, 14, 18, 21, 25, 28]))


def _read_pth_state(path: Path) -> Mapping[str, np.ndarray]:
    """A ``.pth`` state dict through the registered weights-only reader (never unpickled here)."""
    from .weights import importers
    reader = importers._pth_reader()
    if reader is None:
        raise WeightsError(f"{path}: {importers._NEEDS_TORCH}")
    state = reader(path)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    return state


def _get(state: Mapping[str, Any], key: str, shape: Optional[Tuple[int, ...]], where: object) -> np.ndarray:
    if key not in state:
        raise WeightsError(f"{where}: missing tensor {key!r} (pytorch-AdaIN layout)")
    a = np.asarray(state[key])
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise WeightsError(f"{where}: tensor {key!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if a.dtype.kind != "f" or not np.isfinite(a).all():
        raise WeightsError(f"{where}: tensor {key!r} is not finite floating point")
    return a


def from_pytorch_adain_vgg(state: Mapping[str, Any], where: object = "vgg_normalised") -> WeightSet:
    """pytorch-AdaIN's ``vgg_normalised.pth`` (net.vgg's keys ``0.weight``, ``2.weight``, …
    ``51.bias``) -> a VGG19 WeightSet whose Preprocessing is the file's 1×1 layer 0.  That layer
    must be a channel permutation with one common scale and a bias (as published: RGB [0, 1] ->
    BGR·255 − mean); its weights are not rescaled further (the file's convs are already the
    'normalised' ones)."""
    from .weights.format import vgg_param_shapes
    shapes = vgg_param_shapes("vgg19")
    w0 = _get(state, "0.weight", (3, 3, 1, 1), where)[:, :, 0, 0].astype(np.float64)
    b0 = _get(state, "0.bias", (3,), where).astype(np.float64)
    order = tuple(int(np.argmax(np.abs(w0[c]))) for c in range(3))
    scale = float(w0[0, order[0]])
    perm = np.zeros((3, 3))
    perm[range(3), order] = 1.0
    if sorted(order) != [0, 1, 2] or scale <= 0 or not np.allclose(w0, scale * perm, rtol=1e-6, atol=1e-6 * scale) \
            or order not in ((0, 1, 2), (2, 1, 0)):
        raise WeightsError(f"{where}: layer 0 (1×1) is not a channel permutation (RGB or BGR) times one scale; "
                           "this is not a vgg_normalised file Resty can read")
    prep = Preprocessing(name="vgg_normalised", channel_order="RGB" if order == (0, 1, 2) else "BGR", scale=scale,
                         mean=tuple(float(-x) for x in b0), std=(1.0, 1.0, 1.0))
    tensors = {}
    for name, idx in _VGG_INDEX.items():
        if name == "conv0":
            continue
        tensors[f"{name}.weight"] = _get(state, f"{idx}.weight", shapes[f"{name}.weight"], where).astype(np.float32)
        tensors[f"{name}.bias"] = _get(state, f"{idx}.bias", shapes[f"{name}.bias"], where).astype(np.float32)
    return WeightSet(tensors, "vgg19", source=f"pytorch-AdaIN {where}", preprocessing=prep).validate(where)


def from_pytorch_adain_decoder(state: Mapping[str, Any], spec: Optional[AdaINSpec] = None,
                               where: object = "decoder") -> WeightSet:
    """pytorch-AdaIN's ``decoder.pth`` (net.decoder's keys ``1.weight`` … ``28.bias``) -> an
    ``adain`` WeightSet (widths read from the file; the rest of ``spec``, default pytorch-adain's)."""
    spec = spec or get_adain_preset("pytorch-adain").adain
    a = _get(state, "1.weight", None, where).shape[0]
    b = _get(state, "14.weight", None, where).shape[0]
    c = _get(state, "21.weight", None, where).shape[0]
    spec = spec.replace(decoder_widths=(int(a), int(b), int(c)))
    shapes = adain_decoder_shapes(spec)
    tensors = {}
    for name, idx in _DECODER_INDEX.items():
        tensors[f"{name}.weight"] = _get(state, f"{idx}.weight", shapes[f"{name}.weight"], where).astype(np.float32)
        tensors[f"{name}.bias"] = _get(state, f"{idx}.bias", shapes[f"{name}.bias"], where).astype(np.float32)
    return WeightSet(tensors, "adain", source=f"pytorch-AdaIN {where}", spec=spec,
                     extra={"preset": get_adain_preset("pytorch-adain").replace(adain=spec).to_dict()}).validate(where)


def read_pytorch_adain_decoder(path, spec: Optional[AdaINSpec] = None) -> WeightSet:
    p = Path(os.fspath(path))
    return from_pytorch_adain_decoder(_read_pth_state(p), spec, where=p)


def _is_pytorch_adain_vgg(path: Path) -> bool:
    return path.suffix.lower() in (".pth", ".pt") and path.is_file()


def resolve_encoder_weights(weights: Any, preset: AdaINPreset) -> WeightSet:
    """The encoder's VGG19 weight set: Resty's loss-network rule (``imagenet``, ``random:SEED``,
    a Resty/torchvision/Keras file, a WeightSet), or pytorch-AdaIN's ``vgg_normalised.pth``
    (recognised by its layer-0 key ``0.weight`` of shape (3, 3, 1, 1))."""
    if isinstance(weights, (str, os.PathLike)) and _is_pytorch_adain_vgg(Path(os.fspath(weights))):
        p = Path(os.fspath(weights))
        state = _read_pth_state(p)
        w0 = state.get("0.weight") if isinstance(state, Mapping) else None
        if w0 is not None and tuple(np.shape(w0)) == (3, 3, 1, 1):
            return from_pytorch_adain_vgg(state, where=p)
    from .weights.resolve import resolve_loss_network
    return resolve_loss_network(weights, "vgg19", preset.preprocessing_name)


def random_decoder(spec: AdaINSpec, seed: int) -> WeightSet:
    """Seeded He-normal decoder weights (``N(0, 2/(9·C_in))``, biases ``N(0, 0.01²)``)."""
    rng = np.random.default_rng([int(seed), 0xADA1])
    tensors = {}
    for name, shape in adain_decoder_shapes(spec).items():
        if name.endswith(".weight"):
            tensors[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / (9 * shape[1]))).astype(np.float32)
        else:
            tensors[name] = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    return WeightSet(tensors, "adain", source=f"random:{seed}", spec=spec)


def is_adain_file(path) -> bool:
    """Whether ``path`` is a Resty weight file of an AdaIN decoder (the CLI dispatches on it)."""
    from .weights import read_metadata
    try:
        return read_metadata(path).get("architecture") == "adain"
    except (RestyError, OSError):
        return False


# =========================================================================== colour
def match_color(source: np.ndarray, target: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """``source`` (H×W×3) with the mean and covariance of ``target``'s colours (the original's
    ``-preserveColor``: the style image takes the content's colour statistics before stylizing):
    ``x' = C_t^{1/2} C_s^{-1/2} (x − μ_s) + μ_t`` with symmetric square roots, clipped to [0, 1]."""
    s = np.asarray(source, np.float64).reshape(-1, 3)
    t = np.asarray(target, np.float64).reshape(-1, 3)
    ms, mt = s.mean(0), t.mean(0)
    cs = np.cov((s - ms).T) + eps * np.eye(3)
    ct = np.cov((t - mt).T) + eps * np.eye(3)

    def sqrtm(c, inv=False):
        vals, vecs = np.linalg.eigh(c)
        vals = np.maximum(vals, eps)
        return (vecs * (vals ** (-0.5 if inv else 0.5))) @ vecs.T

    out = (s - ms) @ (sqrtm(ct) @ sqrtm(cs, inv=True)).T + mt
    return np.clip(out, 0.0, 1.0).reshape(np.shape(source)).astype(np.float32)


# =========================================================================== spatial control
def load_mask(mask: Any, size_hw: Tuple[int, int]) -> np.ndarray:
    """A mask (a path, PIL image or array: H×W, or H×W×C averaged over its channels; float in
    [0, 1], uint8 or bool) as H×W float64 in [0, 1] at ``size_hw`` (resized when it differs)."""
    if isinstance(mask, np.ndarray):
        m = mask.astype(np.float64) / 255.0 if mask.dtype == np.uint8 else np.asarray(mask, np.float64)
    else:
        m = np.asarray(load_image(mask, name="mask"), np.float64)
    if m.ndim == 3:
        m = m.mean(axis=2)
    if m.ndim != 2 or not np.isfinite(m).all() or m.size == 0:
        raise ArgumentError(f"mask: expected an H×W image of finite values, got shape {np.shape(m)}")
    if m.min() < 0.0 or m.max() > 1.0:
        raise ArgumentError(f"mask: values must lie in [0, 1] (got {m.min():g} .. {m.max():g})")
    if m.shape != tuple(size_hw):
        m = np.clip(resize_to(m, tuple(size_hw)).astype(np.float64), 0.0, 1.0)
    return m


def mask_regions(mask: Any, size_hw: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The (foreground, background) positions on the relu4_1 grid of a content of ``size_hw``:
    the mask is padded as ``stylize`` pads the content (reflect, to a multiple of 8), averaged
    over each 8×8 block (the encoder's three 2×2 poolings) and split at 0.5 (foreground: ≥ 0.5,
    the first style).  A region of a single position is given to the other (its σ is undefined
    with the unbiased convention); an empty region is allowed (the other style everywhere)."""
    h, w = size_hw
    m = load_mask(mask, (h, w))
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        m = np.pad(m, ((0, ph), (0, pw)), mode="reflect")
    H, W = m.shape[0] // 8, m.shape[1] // 8
    fg = m.reshape(H, 8, W, 8).mean(axis=(1, 3)) >= 0.5
    if fg.sum() == 1:
        fg[:] = False
    elif (~fg).sum() == 1:
        fg[:] = True
    return fg, ~fg


def adain_regions_reference(fc: np.ndarray, styles: Sequence[np.ndarray], regions: Sequence[np.ndarray],
                            spec: AdaINSpec) -> np.ndarray:
    """The NumPy float64 oracle of spatial control: ``fc`` (1, C, h, w) and each style's relu4_1
    (1, C, h_i, w_i); ``regions`` disjoint h×w boolean masks covering the grid.  Each region's
    positions are AdaIN'd on their own (their μ and σ, over that region only) with its style,
    as the Lua original's ``-mask`` (``index`` the positions, AdaIN, ``indexCopy`` them back)."""
    from . import reference as R
    fc = np.asarray(fc, np.float64)
    C = fc.shape[1]
    flat = fc.reshape(C, -1)
    out = np.zeros_like(flat)
    for fs, region in zip(styles, regions):
        idx = np.flatnonzero(np.asarray(region).ravel())
        if idx.size:
            part = flat[:, idx].reshape(1, C, idx.size, 1)
            out[:, idx] = R.adain(part, np.asarray(fs, np.float64), spec).reshape(C, idx.size)
    return out.reshape(fc.shape)


# =========================================================================== training data
def load_crop(item: Any, load_size: int, crop: int, seed: int, step: int, slot: int) -> Optional[np.ndarray]:
    """One training crop: the short side resized to ``max(load_size, crop)``, then the random
    ``crop`` square of ``crop_rng(seed, step, slot)``; None when the item cannot be read."""
    try:
        img = load_image(item)
        h, w = img.shape[:2]
        size = max(load_size, crop)
        img = resize_to(img, (_scale_round(h, size, min(h, w)), _scale_round(w, size, min(h, w))))
        return random_crop(img, crop, crop_rng(seed, step, slot))
    except (ImageError, OSError):
        return None


def load_pairs(plan: TrainingPlan, load_size: int, step: int, lo: int = 0,
               hi: Optional[int] = None) -> Tuple[List[np.ndarray], List[np.ndarray], List[int]]:
    """The readable (content, style) crop pairs of slots ``lo .. hi-1`` of ``step``'s global
    batch (default: all) and their unreadable slots (content slot ``j``; style slot
    ``batch_size + j``).  A pair with an unreadable half is left out.  Slots keep their global
    numbers, so a process's share of the batch loads the very crops one process would."""
    B = plan.batch_size
    contents, styles, bad = [], [], []
    for j, i in enumerate(plan.schedule.batch(step)):
        if j < lo or (hi is not None and j >= hi):
            continue
        c = load_crop(plan.items[i], load_size, plan.image_size, plan.seed, step, j)
        s = load_crop(plan.styles[plan.style_index(step, j)], load_size, plan.image_size,
                      plan.style_schedule.seed, step, j)
        if c is None:
            bad.append(j)
        if s is None:
            bad.append(B + j)
        if c is not None and s is not None:
            contents.append(c)
            styles.append(s)
    return contents, styles, bad


def style_seed(seed: int) -> int:
    """The style schedule's and crops' seed, a pure function of the run's seed (not equal to it)."""
    return int(np.random.SeedSequence([int(seed), 0x57]).generate_state(1)[0])


class AdaINSessionBase(TrainingSession):
    """The training session of :class:`AdaINStylizerBase`, written once: pairs of (content,
    style) crops per step (loaded ahead in a thread pool of ``num_workers``), the learning rate
    ``lr / (1 + lr_decay·step)``, the books, and the split of each global batch over the
    processes of ``dist`` (the backend's distributed context: each rank loads its contiguous
    share, ``resty.distributed.shard_bounds``, and the ranks agree on the unreadable slots and
    on a stop).  A backend supplies ``_train(content, style, lr, weight)`` (one Adam step on
    B×S×S×3 float arrays; returns the ``[total, content, style, tv]`` terms as a framework
    tensor; ``weight``, None in one process, is this rank's share ``n_r / N`` of the global
    batch's readable pairs, by which the terms come back multiplied and whose gradient sum over
    the ranks is the global batch mean's), ``_to_numpy(terms)``, ``_gather(terms)`` (the terms
    of several steps as host rows, summed over the ranks) and the optimizer state (canonical
    names/layouts)."""

    def __init__(self, owner: "AdaINStylizerBase", plan: TrainingPlan):
        self.owner, self.plan = owner, plan
        self.spec = owner.preset.adain

    def start(self, style_grams, start_step: int) -> None:
        self.start_step = start_step

    def lr_at(self, step: int) -> float:
        return self.plan.lr / (1.0 + self.spec.lr_decay * step)

    def steps(self, term):
        from .distributed import shard_bounds
        plan, d = self.plan, self.dist
        B, S = plan.batch_size, plan.image_size
        many = d.world_size > 1
        lo, hi = shard_bounds(B, d.rank, d.world_size)
        load = lambda s: load_pairs(plan, self.spec.load_size, s, lo, hi)     # noqa: E731
        pool = ThreadPoolExecutor(max(1, plan.num_workers)) if plan.num_workers else None
        try:
            ahead = pool.submit(load, self.start_step) if pool and self.start_step < plan.total_steps else None
            for s in range(self.start_step, plan.total_steps):
                if term.hit and not many:
                    return
                contents, styles, bad = ahead.result() if ahead is not None else load(s)
                ahead = pool.submit(load, s + 1) if pool and s + 1 < plan.total_steps else None
                n, weight = len(contents), None
                if many:
                    # One small all-reduce per step: the global batch's unreadable slots (every
                    # rank books the same) and whether any rank got SIGTERM.
                    flags = np.zeros(2 * B + 1)
                    flags[bad] = 1.0
                    flags[2 * B] = 1.0 if term.hit else 0.0
                    flags = d.sum_host(flags)
                    if flags[2 * B] > 0:
                        term.hit = True
                        return
                    bad = [int(j) for j in np.flatnonzero(flags[:2 * B])]
                    n = B - len({j % B for j in bad})          # pairs with both halves readable
                    weight = len(contents) / n if n else 0.0
                    if n and not contents:
                        # Nothing readable here but elsewhere: this rank still joins the
                        # gradient all-reduce, with a stand-in pair of weight 0.
                        contents = styles = [np.full((S, S, 3), 0.5, np.float32)]
                if not n:
                    yield s, (None, bad, 0)
                    continue
                terms = self._train(np.stack(contents), np.stack(styles), self.lr_at(s), weight)
                yield s, (terms, bad, n)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def resolve(self, handles):
        done = [t for t, _, _ in handles if t is not None]
        rows = iter(self._gather(done)) if done else iter(())
        return [StepOutcome(None if t is None else np.asarray(next(rows), np.float64), bad, n)
                for t, bad, n in handles]

    def _gather(self, terms: List[Any]) -> List[np.ndarray]:
        """Host rows of ``terms`` (one per step), summed over the ranks of a distributed run."""
        return [np.asarray(self._to_numpy(t), np.float64) for t in terms]

    def _train(self, content: np.ndarray, style: np.ndarray, lr: float, weight: Optional[float] = None):
        raise NotImplementedError

    def _to_numpy(self, terms) -> np.ndarray:
        raise NotImplementedError


# =========================================================================== the stylizer
class AdaINStylizerBase(FastStylizerBase):
    """What both backends' ``AdaINStylizer`` share (the public API).  A backend builds, in its
    ``__init__`` through :meth:`_setup`, ``self.encoder`` (frozen) and ``self.net`` (the decoder,
    with ``state_dict_canonical``/``load_canonical``) and supplies:

    * ``_encode(batch, layers)``: encoder features of a B×H×W×3 float array by layer (framework);
    * ``_adain(fc, fs)``: the AdaIN op of the preset on relu4_1 features (framework);
    * ``_decode(t)``: the decoder on relu4_1-like features -> B×H×W×3 NumPy (not clamped);
    * ``_training_session(plan)``: an :class:`AdaINSessionBase`.

    ``fit(content_images, style_images, steps=...)`` runs resty.fast's driver (checkpoints,
    resume, skipped images, SIGTERM, callbacks); content and style are folders, path lists or
    arrays, and each step pairs a content crop with a style crop (the style schedule is seeded
    apart from the content's)."""

    method = "adain"

    def _setup(self, preset, weights, decoder_weights):
        """``(preset, encoder WeightSet, decoder WeightSet)``; sets the books."""
        self.preset = resolve_adain_preset(preset)
        dw = decoder_weights
        if dw is None:
            dw = random_decoder(self.preset.adain, self.preset.training.seed)
        elif isinstance(dw, str) and dw.strip().lower().startswith("random:"):
            dw = random_decoder(self.preset.adain, int(dw.split(":", 1)[1]))
        elif isinstance(dw, (str, os.PathLike)):
            dw = self._read_decoder(dw)
        if not isinstance(dw, WeightSet) or dw.architecture != "adain":
            raise ArgumentError("decoder_weights: expected None, 'random:SEED', an AdaIN decoder file or WeightSet")
        if dw.spec.decoder_widths != self.preset.adain.decoder_widths:
            self.preset = self.preset.replace(adain=self.preset.adain.replace(decoder_widths=dw.spec.decoder_widths))
        enc = weights if isinstance(weights, WeightSet) and weights.architecture == "vgg19" else \
            resolve_encoder_weights(weights, self.preset)
        # The run identity hashes the encoder's weights through this (resty.run_identity).
        self.weights = weights if isinstance(weights, str) and weights.strip().lower().startswith("random") else enc
        self.encoder_weights = enc
        self.history, self.skipped, self.skipped_count, self.step = [], [], 0, 0
        self._cpu_fast, self.fast_path_note = None, "AdaIN runs in the framework"
        return enc, dw

    @staticmethod
    def _read_decoder(path) -> WeightSet:
        p = Path(os.fspath(path))
        if p.suffix.lower() in (".pth", ".pt"):
            return read_pytorch_adain_decoder(p)
        return load_weights(p, expect="adain")

    # ------------------------------------------------------------------ training (driver hooks)
    def _min_side(self) -> int:
        return MIN_SIDE

    def _fit_styles(self, plan: TrainingPlan, style, style_weights):
        if style_weights is not None:
            raise ArgumentError("style_weights: AdaIN trains on a collection of style images, not a blend")
        plan.styles = list_training_images(style)
        plan.style_schedule = BatchSchedule(len(plan.styles), 1, style_seed(plan.seed))
        if plan.checkpoint_dir is not None:
            plan.style_data = data_identity(style, plan.styles)
        else:
            plan.style_data = {"n_items": len(plan.styles)}
        return [], ()

    def _identity(self, plan: TrainingPlan, styles, blend) -> Dict[str, Any]:
        """The driver's run identity, plus the AdaIN spec (σ conventions, loss, lr decay)."""
        out = super()._identity(plan, styles, blend)
        out["preset"]["adain"] = self.preset.adain.to_dict()
        return out

    def _build_vgg(self):
        return self.encoder

    def _grams_of(self, style):
        return {}

    # ------------------------------------------------------------------ inference
    def _prepare(self, img, what: str) -> np.ndarray:
        x = load_image(img)
        if min(x.shape[:2]) < MIN_SIDE:
            raise ImageError(f"<{what}>: {x.shape[0]}×{x.shape[1]} px is too small for AdaIN (sides must be >= "
                             f"{MIN_SIDE} px)")
        return x

    def stylize(self, content, style, *, alpha: float = 1.0, style_weights=None, preserve_color: bool = False,
                mask=None):
        """``content`` (a path, PIL image or array) in the style of ``style`` (one image, or several
        interpolated by ``style_weights``, normalised to sum 1: the weighted sum of their AdaIN
        targets, as in the paper) -> H×W×3 float32 in [0, 1] at the content's size.
        ``alpha`` in [0, 1]: ``target = α·AdaIN(f(c), f(s)) + (1 − α)·f(c)``.
        ``preserve_color``: each style first takes the content's colour mean and covariance.
        ``mask`` (spatial control; H×W in [0, 1] over the content, a path or an array) with
        ``style=[style_a, style_b]``: on the relu4_1 grid (:func:`mask_regions`) the positions where
        the mask is ≥ 0.5 are AdaIN'd with ``style_a``'s statistics, the others with ``style_b``'s,
        each region normalised by its own μ and σ."""
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            alpha = float("nan")
        if not 0.0 <= alpha <= 1.0:
            raise ArgumentError(f"alpha: got {alpha!r}; need a number in [0, 1]")
        self._eval_mode()
        c = self._prepare(content, "content")
        if mask is not None:
            if not isinstance(style, (list, tuple)) or len(style) != 2:
                raise ArgumentError("mask: spatial control takes two styles, [style for mask ≥ 0.5, style for "
                                    "the rest]")
            if style_weights is not None:
                raise ArgumentError("mask: spatial control does not take style_weights (each region has one style)")
        styles, blend = prepare_styles(style, style_weights)
        styles = [self._prepare(s, "style") for s in styles]
        if preserve_color:
            styles = [match_color(s, c) for s in styles]
        h, w = c.shape[:2]
        ph, pw = (-h) % 8, (-w) % 8
        x = np.pad(c, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else c
        fc = self._encode(x[None], ("relu4_1",))["relu4_1"]
        if mask is not None:
            regions = mask_regions(mask, (h, w))
            target = self._adain_regions(fc, [self._encode(s[None], ("relu4_1",))["relu4_1"] for s in styles],
                                         regions)
        else:
            target = None
            for s, wgt in zip(styles, blend):
                t = self._adain(fc, self._encode(s[None], ("relu4_1",))["relu4_1"]) * float(wgt)
                target = t if target is None else target + t
        if alpha != 1.0:
            target = target * alpha + fc * (1.0 - alpha)
        y = self._decode(target)[0, :h, :w]
        return np.clip(y, 0.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ files
    # save() (the base's) writes the decoder: architecture ``adain``, the AdaINSpec and the preset
    _file_architecture = "adain"

    def _file_spec(self):
        return self.preset.adain

    def _file_extra(self) -> Dict[str, Any]:
        return {"encoder": getattr(self.encoder_weights, "source", "")}

    @classmethod
    def load(cls, path, *, weights="imagenet", device=None, dtype="float32", **kw) -> "AdaINStylizerBase":
        """A stylizer from a decoder written by :meth:`save` (either backend) or pytorch-AdaIN's
        ``decoder.pth``; ``weights``: the encoder (``imagenet``, ``random:SEED``, a file, or
        pytorch-AdaIN's ``vgg_normalised.pth``, which its decoder was trained with)."""
        ws = cls._read_decoder(path)
        saved = ws.extra.get("preset")
        preset = resolve_adain_preset(saved) if saved else get_adain_preset("pytorch-adain")
        preset = preset.replace(adain=ws.spec)
        obj = cls(preset, weights=weights, device=device, dtype=dtype, decoder_weights=ws, **kw)
        obj.step = int(ws.extra.get("steps", 0))
        return obj

    def export_onnx(self, path, *, opset: int = 17, overwrite: bool = False) -> Path:
        """Encoder + AdaIN + decoder as one ONNX graph (torch backend): inputs ``content`` and
        ``style`` (1×3×H×W float32 RGB in [0, 1]; the content's sides multiples of 8, as
        ``stylize`` pads them) and ``alpha`` (float32 scalar), output ``stylized`` (clamped to
        [0, 1]).  The encoder's weights are in the file.  Checked with onnxruntime against
        :meth:`stylize` on two sizes before it is moved into place; returns the path."""
        from .images import atomic_path
        out = Path(os.fspath(path))
        if out.suffix.lower() != ".onnx":
            raise ArgumentError(f"{out}: an ONNX export is a .onnx file")
        try:
            import onnxruntime as ort
        except ImportError:
            raise RestyError("ONNX export is checked with onnxruntime: pip install 'resty[onnx]'") from None
        # the one atomic writer: an existing file is refused unless overwrite, a failed check leaves nothing
        with atomic_path(out, overwrite=overwrite) as tmp:
            self._export_onnx(tmp, int(opset))
            sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            rng = np.random.default_rng(0)
            worst = 0.0
            for hw, shw, a in (((32, 48), (40, 24), 1.0), ((48, 40), (32, 56), 0.6)):
                c = rng.random(hw + (3,)).astype(np.float32)
                s = rng.random(shw + (3,)).astype(np.float32)
                got = sess.run(None, {"content": c.transpose(2, 0, 1)[None], "style": s.transpose(2, 0, 1)[None],
                                      "alpha": np.asarray(a, np.float32)})[0][0].transpose(1, 2, 0)
                worst = max(worst, float(np.abs(got - self.stylize(c, s, alpha=a)).max()))
            if not worst <= 1e-3:
                raise RestyError(f"ONNX export: onnxruntime differs from stylize by {worst:.2e} (> 1e-3); not written")
        return out

    def export_savedmodel(self, path, *, overwrite: bool = False) -> Path:
        """Encoder + AdaIN + decoder as a TensorFlow SavedModel folder (tf backend): its
        ``serving_default`` signature takes ``content`` (B×H×W×3 float32 RGB in [0, 1], any sides
        >= 16: reflect-padded to multiples of 8 and cropped back in the graph, as ``stylize``
        does), ``style`` (1×h×w×3, or B of them) and ``alpha`` (float32 scalar), and returns
        ``stylized`` (clamped to [0, 1]).  It loads with ``tf.saved_model.load`` alone (no Resty);
        the encoder's weights are in it.  Written to a temporary folder, read back and checked
        against :meth:`stylize` on two sizes, then moved into place; an existing ``path`` is
        refused unless ``overwrite``, and even then a folder that is not a SavedModel is.
        Returns the path."""
        from .backends import _atomic_dir
        out = Path(os.fspath(path))

        def write(tmp):
            self._export_savedmodel(tmp)
            run = self._load_savedmodel(tmp)
            rng = np.random.default_rng(0)
            worst = 0.0
            # Sides that are not multiples of 8: the graph pads and crops as stylize does.
            for hw, shw, a in (((30, 45), (40, 24), 1.0), ((48, 40), (33, 56), 0.6)):
                c = rng.random(hw + (3,)).astype(np.float32)
                s = rng.random(shw + (3,)).astype(np.float32)
                worst = max(worst, float(np.abs(run(c, s, a) - self.stylize(c, s, alpha=a)).max()))
            if not worst <= 1e-4:
                raise RestyError(f"SavedModel export: the reloaded model differs from stylize by {worst:.2e} "
                                 "(> 1e-4); not written")
        # overwrite replaces a file or a SavedModel folder, never another folder of the user's
        _atomic_dir(out, overwrite, write)
        return out

    def _export_savedmodel(self, path) -> None:
        raise RestyError("SavedModel export of an AdaIN decoder goes through the tf backend (the decoder file is "
                         "either backend's: AdaINStylizer.load it with get_backend('tf'))")

    def _load_savedmodel(self, path):
        """The SavedModel at ``path`` as ``run(content, style, alpha) -> H×W×3`` (H×W×3 arrays)."""
        raise NotImplementedError

    def _export_onnx(self, path, opset: int) -> None:
        raise RestyError("ONNX export of an AdaIN decoder goes through the torch backend (the decoder file is "
                         "either backend's: AdaINStylizer.load it with get_backend('torch'))")

    # ------------------------------------------------------------------ backend operations
    def _encode(self, batch: np.ndarray, layers: Sequence[str] = ADAIN_ENCODER_LAYERS):
        raise NotImplementedError

    def _adain(self, fc, fs):
        raise NotImplementedError

    def _adain_regions(self, fc, styles, regions):
        """Spatial control in the framework: ``fc`` (batch 1) with each boolean h×w region's
        positions AdaIN'd with its style's features (:func:`adain_regions_reference`)."""
        raise NotImplementedError

    def _decode(self, t) -> np.ndarray:
        raise NotImplementedError
