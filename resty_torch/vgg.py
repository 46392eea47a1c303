"""VGG16/VGG19 feature extractor built from ``resty.specs.vgg_layers`` (layers by name)."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from resty.errors import ImageError
from resty.specs import POOLINGS, Preprocessing, vgg_layer_names, vgg_truncate
from resty.weights import WeightSet, resolve_loss_network, resolve_weights

from .device import resolve_device, resolve_dtype

__all__ = ["VGGFeatures"]


class VGGFeatures(nn.Module):
    """The loss network: VGG cut after the deepest requested layer, frozen.

    ``weights`` is anything :func:`resty.weights.resolve_weights` accepts, or a WeightSet;
    the preprocessing (channel order, scale, mean, std) is the weight set's own, so a
    torchvision set and a Caffe/Keras set each get the input they were trained on.
    ``pooling`` 'avg' uses ``count_include_pad=False`` (no padding arises with 2×2/2 windows,
    but it keeps torch equal to TF's VALID average pooling by construction).
    Calling it on RGB [0, 1] NCHW images returns ``{layer name: features}``.
    """

    def __init__(self, arch: str = "vgg19", weights="imagenet", pooling: str = "max",
                 layers: Optional[Sequence[str]] = None, dtype="float32", device=None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: got {pooling!r}; allowed: {', '.join(map(repr, POOLINGS))}")
        ws = resolve_weights(weights, arch)   # a WeightSet is validated against arch too
        self.arch, self.pooling = arch, pooling
        self.preprocessing: Preprocessing = ws.preprocessing
        self.source = ws.source
        self.layers = tuple(layers) if layers is not None else vgg_layer_names(arch)
        table = vgg_truncate(arch, self.layers)
        self._table = table
        # Each 2x2 pool halves the side (floor): the deepest layer needs 2**pools pixels.
        self.min_side = 2 ** sum(1 for l in table if l.kind == "pool")
        self.convs = nn.ModuleDict()
        wanted = set(self.layers)
        self._plan = []   # (kind, name, conv name or None, inplace relu)
        for i, layer in enumerate(table):
            if layer.kind == "conv":
                conv = nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(ws.tensors[f"{layer.name}.weight"].astype("float32")))
                    conv.bias.copy_(torch.from_numpy(ws.tensors[f"{layer.name}.bias"].astype("float32")))
                self.convs[layer.name] = conv
                self._plan.append(("conv", layer.name))
            elif layer.kind == "relu":
                # In place saves one activation per layer, but only when nobody needs the conv
                # output it would overwrite.
                prev = table[i - 1].name
                self._plan.append(("relu_" if prev not in wanted else "relu", layer.name))
            else:
                self._plan.append((pooling + "pool", layer.name))
        p = self.preprocessing
        idx = list(p.channel_index)
        self._reorder = idx != [0, 1, 2]
        self.register_buffer("_index", torch.tensor(idx), persistent=False)
        self.register_buffer("_mean", torch.tensor(p.mean, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(p.std, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        self._scale = float(p.scale)
        # Activation checkpointing per VGG block when a gradient flows to the input (Gatys):
        # trades ~1 extra forward for a peak memory of about one block (see GatysStylizer).
        self.checkpoint = False
        self.requires_grad_(False)
        self.eval()
        self.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        # Weights in float64 when asked (the float64 parity tier); buffers follow the dtype.
        if resolve_dtype(dtype) == torch.float64:
            self._reload_f64(ws)

    def _reload_f64(self, ws: WeightSet) -> None:
        # Copy from the float32/float64 NumPy originals so float64 weights are not first
        # rounded through float32 (a float64 source file keeps its full precision).
        with torch.no_grad():
            for name, conv in self.convs.items():
                conv.weight.copy_(torch.from_numpy(ws.tensors[f"{name}.weight"].astype("float64")))
                conv.bias.copy_(torch.from_numpy(ws.tensors[f"{name}.bias"].astype("float64")))

    def train(self, mode: bool = True):
        # Always in eval mode: the loss network is fixed (no dropout/BN here, but be explicit).
        return super().train(False)

    def preprocess(self, images01: torch.Tensor) -> torch.Tensor:
        """NCHW RGB [0, 1] -> the network input of this weight set."""
        x = images01
        if self._reorder:
            x = x.index_select(1, self._index)
        if self._scale != 1.0:
            x = x * self._scale
        return (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)

    def forward(self, images01: torch.Tensor, preprocess: bool = True,
                layers: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
        """Features of the requested layers (default: those given at construction).
        ``layers`` may name a subset to stop early (e.g. only the content layer)."""
        want = self.layers if layers is None else tuple(layers)
        missing = [l for l in want if l not in self.layers]
        if missing:
            raise ValueError(f"VGGFeatures: layer(s) {missing} were not requested at construction "
                             f"(have {list(self.layers)})")
        remaining = set(want)
        if min(images01.shape[-2:]) < self.min_side:
            raise ImageError(f"<image>: {tuple(images01.shape[-2:])} px is too small for {self.arch} up to "
                             f"{self._table[-1].name}; each side needs >= {self.min_side} px")
        h = self.preprocess(images01) if preprocess else images01
        out: Dict[str, torch.Tensor] = {}
        if self.checkpoint and torch.is_grad_enabled() and h.requires_grad:
            # Activation checkpointing per block (conv/ReLU runs between pools): only the block
            # inputs and the requested features are kept; the rest is recomputed in backward.
            for seg in self._segments():
                keep = [name for _, name in seg if name in remaining]
                if not keep and not remaining:
                    break
                # No RNG in VGG: not saving RNG state also keeps this capturable in a CUDA graph.
                res = torch.utils.checkpoint.checkpoint(self._run_plan, h, seg, tuple(keep),
                                                        use_reentrant=False, preserve_rng_state=False)
                h = res[0]
                for name, t in zip(keep, res[1:]):
                    out[name] = t
                    remaining.discard(name)
                if not remaining:
                    break
            return out
        for kind, name in self._plan:
            h = self._layer(kind, name, h)
            if name in remaining:
                out[name] = h
                remaining.discard(name)
                if not remaining:
                    break
        return out

    def _layer(self, kind: str, name: str, h: torch.Tensor) -> torch.Tensor:
        if kind == "conv":
            return self.convs[name](h)
        if kind == "relu_":
            return F.relu(h, inplace=True)
        if kind == "relu":
            return F.relu(h)
        if kind == "maxpool":
            return F.max_pool2d(h, 2, 2)
        return F.avg_pool2d(h, 2, 2, count_include_pad=False)

    def _segments(self):
        """The plan cut after each pool: [[(kind, name), ...], ...]."""
        segs, cur = [], []
        for step in self._plan:
            cur.append(step)
            if step[0].endswith("pool"):
                segs.append(cur)
                cur = []
        if cur:
            segs.append(cur)
        return segs

    def _run_plan(self, h: torch.Tensor, seg, keep):
        got = {}
        for kind, name in seg:
            h = self._layer(kind, name, h)
            if name in keep:
                # A requested ReLU output must not be modified by a later in-place op.
                got[name] = h
        return (h,) + tuple(got[k] for k in keep)


def loss_network_weights(weights, preset) -> WeightSet:
    """The VGG weight set for a preset's loss network.

    ``random:SEED`` and a bare ``imagenet`` follow the preset's ImageNet source (so random
    weights get the preprocessing the preset's source used, and ``imagenet`` picks that
    source); an explicit source, a file or a WeightSet keeps its own preprocessing."""
    return resolve_loss_network(weights, preset.vgg.arch, preset.preprocessing_name)


__all__.append("loss_network_weights")
