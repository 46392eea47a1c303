"""AdaIN (Huang & Belongie 2017) in PyTorch: the framework operations behind
resty.adain.AdaINStylizerBase (encoder, AdaIN op, decoder, loss, one training step).  Every
convention comes from resty.specs.AdaINSpec; the oracle is resty.reference.adain_*."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resty import distributed as rdist
from resty.losses import adain_loss_terms, adain_transfer, sigma_form
from resty.adain import ENCODER_CONVS, AdaINSessionBase, AdaINStylizerBase, encoder_tensors
from resty.fast import TrainingPlan
from resty.specs import ADAIN_ENCODER_LAYERS, AdaINSpec, adain_decoder_layers, vgg_truncate
from resty.weights import WeightSet

from . import distributed as tdist
from ._util import to_hwc, to_nchw
from .device import resolve_device, resolve_dtype
from .fast import adam_state, load_adam_state
from .optim import make_adam

__all__ = ["AdaINEncoder", "AdaINDecoder", "AdaINStylizer", "mean_std", "adain", "adain_loss"]


def _pad(x: torch.Tensor, mode: str) -> torch.Tensor:
    return F.pad(x, (1, 1, 1, 1), mode="reflect" if mode == "reflect" else "constant")


def mean_std(x: torch.Tensor, convention: str, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample and channel over H×W: ``(μ, σ)`` (N, C, 1, 1) by a resty.specs.SIGMA_CONVENTIONS name."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    div, e = sigma_form(convention, x.shape[2] * x.shape[3], eps)
    return mu, ((x - mu).pow(2).sum(dim=(2, 3), keepdim=True) / div + e).sqrt()


def adain(content: torch.Tensor, style: torch.Tensor, spec: AdaINSpec) -> torch.Tensor:
    """resty.losses.adain_transfer in torch."""
    return adain_transfer(content, style, spec, lambda x, c: mean_std(x, c, spec.eps))


def adain_loss(g_feats: Mapping[str, torch.Tensor], target: torch.Tensor, style_feats: Mapping[str, torch.Tensor],
               spec: AdaINSpec) -> torch.Tensor:
    """``[total, content, style, 0]`` (resty.losses.adain_loss_terms)."""
    t = adain_loss_terms(g_feats, target, style_feats, spec, mean_std=lambda x, c: mean_std(x, c, spec.eps),
                         reduce_mean=torch.mean, reduce_sum=torch.sum, batch=lambda d: d.shape[0],
                         zero=target.new_zeros(()))
    return torch.stack([*t, torch.zeros_like(t[0])])


class AdaINEncoder(nn.Module):
    """VGG19 to relu4_1 after the 1×1 ``conv0`` (the preprocessing, as vgg_normalised), frozen;
    ``weights``: a VGG19 WeightSet (resty.adain.resolve_encoder_weights)."""

    def __init__(self, weights: WeightSet, spec: AdaINSpec, dtype="float32", device=None):
        super().__init__()
        self.spec = spec
        dt, dev = resolve_dtype(dtype), resolve_device(device)
        for k, v in encoder_tensors(weights).items():
            self.register_buffer(k.replace(".", "_"), torch.from_numpy(np.asarray(v)).to(dev, dt))
        self._table = vgg_truncate("vgg19", ["relu4_1"])

    def forward(self, x01: torch.Tensor, layers: Sequence[str] = ADAIN_ENCODER_LAYERS) -> Dict[str, torch.Tensor]:
        h = F.conv2d(x01, self.conv0_weight, self.conv0_bias)
        out = {}
        deepest = max(ADAIN_ENCODER_LAYERS.index(l) for l in layers)
        for layer in self._table:
            if layer.kind == "conv":
                h = F.conv2d(_pad(h, self.spec.encoder_padding), getattr(self, f"{layer.name}_weight"),
                             getattr(self, f"{layer.name}_bias"))
            elif layer.kind == "relu":
                h = F.relu(h)
                if layer.name in layers:
                    out[layer.name] = h
                if layer.name == ADAIN_ENCODER_LAYERS[deepest]:
                    break
            else:
                h = F.max_pool2d(h, 2, 2)
        return out


class AdaINDecoder(nn.Module):
    """The decoder mirroring the encoder (resty.specs.adain_decoder_layers); canonical names
    ``conv4_1.weight`` … ``conv1_1.bias`` (OIHW)."""

    def __init__(self, spec: AdaINSpec, weights: WeightSet, dtype="float32", device=None):
        super().__init__()
        self.spec = spec
        self.layers = adain_decoder_layers(spec)
        dt, dev = resolve_dtype(dtype), resolve_device(device)
        self.convs = nn.ModuleDict({name: nn.Conv2d(cin, cout, 3) for name, cin, cout, _ in self.layers}).to(dev, dt)
        self.load_canonical(weights.tensors)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = t
        last = len(self.layers) - 1
        for i, (name, _, _, up) in enumerate(self.layers):
            h = self.convs[name](_pad(h, self.spec.decoder_padding))
            if i < last:
                h = F.relu(h)
            if up:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return h

    def state_dict_canonical(self) -> Dict[str, np.ndarray]:
        return {f"{n}.{k}": getattr(self.convs[n], k).detach().cpu().numpy().copy()
                for n, *_ in self.layers for k in ("weight", "bias")}

    def canonical_parameters(self) -> Dict[str, nn.Parameter]:
        return {f"{n}.{k}": getattr(self.convs[n], k) for n, *_ in self.layers for k in ("weight", "bias")}

    @torch.no_grad()
    def load_canonical(self, tensors: Mapping[str, np.ndarray]) -> None:
        for name, p in self.canonical_parameters().items():
            p.copy_(torch.from_numpy(np.asarray(tensors[name])).to(p.device, p.dtype))


class _Session(AdaINSessionBase):
    """One ``fit``: torch's Adam on the decoder; under torchrun the decoder in DDP, each rank
    training on its share of every global batch (resty.adain.AdaINSessionBase.steps)."""

    def __init__(self, owner: "AdaINStylizer", plan: TrainingPlan):
        super().__init__(owner, plan)
        self.ctx = self.dist = tdist.setup(owner.device)
        self.params = owner.net.canonical_parameters()
        owner.net.train()
        self.opt = make_adam(list(self.params.values()), owner.preset.training.adam, lr=plan.lr)
        self.net_fn = owner.net
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [owner.device.index if owner.device.index is not None else torch.cuda.current_device()] \
                if owner.device.type == "cuda" else None
            # DDP broadcasts rank 0's decoder now and averages the gradients in backward.
            self.net_fn = DDP(owner.net, device_ids=ids)

    def __exit__(self, *exc) -> None:
        self.owner.net.eval()

    def _train(self, content, style, lr, weight=None):
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        terms = self.owner.train_terms(self.owner._tensor(content), self.owner._tensor(style), self.net_fn)
        objective = terms[0]
        if weight is not None and weight * self.ctx.world_size != 1.0:
            # DDP averages the ranks' gradients: weighting each rank's batch mean by n_r·W/N
            # makes that the mean over the N pairs of the global batch, as one process computes.
            objective = objective * (weight * self.ctx.world_size)
        objective.backward()
        self.opt.step()
        return terms.detach() if weight is None else terms.detach() * weight

    def _to_numpy(self, terms):
        return terms.to("cpu", torch.float64).numpy()

    def _gather(self, terms):
        stacked = torch.stack(terms)
        if self.ctx.enabled:
            stacked = self.ctx.all_sum(stacked)    # rows hold n_r/N-weighted local means
        return list(stacked.to("cpu", torch.float64).numpy())

    def optimizer_state(self):
        return adam_state(self.opt, self.params)

    def load_optimizer_state(self, step, exp_avg, exp_avg_sq) -> None:
        load_adam_state(self.opt, self.params, step, exp_avg, exp_avg_sq)


class AdaINExportNet(nn.Module):
    """Encoder + AdaIN + decoder as one graph for export: ``(content, style, alpha) -> stylized``
    (NCHW RGB in [0, 1]; sides multiples of 8; ``alpha`` a float32 scalar; output clamped)."""

    def __init__(self, owner: "AdaINStylizer"):
        super().__init__()
        self.encoder, self.decoder, self.spec = owner.encoder, owner.net, owner.preset.adain

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        fc = self.encoder(content, ("relu4_1",))["relu4_1"]
        fs = self.encoder(style, ("relu4_1",))["relu4_1"]
        t = adain(fc, fs, self.spec)
        return self.decoder(alpha * t + (1.0 - alpha) * fc).clamp(0.0, 1.0)


class AdaINStylizer(AdaINStylizerBase):
    """AdaIN in PyTorch (the API is resty.adain.AdaINStylizerBase's)."""

    backend_name = "torch"
    engine_name = "torch"

    def __init__(self, preset="pytorch-adain", weights="imagenet", device=None, dtype="float32",
                 decoder_weights=None):
        enc, dec = self._setup(preset, weights, decoder_weights)
        self.device = resolve_device(device if device is not None else tdist.default_device())
        self.dtype = resolve_dtype(dtype)
        self.precision = None
        self.encoder = AdaINEncoder(enc, self.preset.adain, self.dtype, self.device)
        self.net = AdaINDecoder(self.preset.adain, dec, self.dtype, self.device)
        self.net.eval()

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return to_nchw(a, self.device, self.dtype)

    def train_terms(self, content: torch.Tensor, style: torch.Tensor, decoder=None) -> torch.Tensor:
        """``[total, content, style, 0]`` of NCHW content/style batches (differentiable w.r.t. the
        decoder; ``decoder``: the network to run it through, e.g. its DDP wrapper)."""
        spec = self.preset.adain
        with torch.no_grad():
            fc = self.encoder(content, ("relu4_1",))["relu4_1"]
            fs = self.encoder(style)
            t = adain(fc, fs["relu4_1"], spec)
        g = (self.net if decoder is None else decoder)(t)
        return adain_loss(self.encoder(g), t, fs, spec)

    def _training_session(self, plan: TrainingPlan) -> _Session:
        return _Session(self, plan)

    def _eval_mode(self) -> None:
        self.net.eval()

    def _writes_files(self) -> bool:
        info = rdist.process_info()       # under torchrun only rank 0 writes the decoder
        return not (info.distributed and info.source == "torchrun" and not info.is_main)

    def _weights_key(self):
        return tuple((id(t), t._version) for t in self.net.parameters())

    @torch.no_grad()
    def _encode(self, batch, layers=ADAIN_ENCODER_LAYERS):
        return self.encoder(self._tensor(batch), tuple(layers))

    def _adain(self, fc, fs):
        return adain(fc, fs, self.preset.adain)

    def _export_onnx(self, path, opset: int) -> None:
        import warnings
        net = AdaINExportNet(self).to("cpu", torch.float32).eval()
        x = torch.rand(1, 3, 32, 40)
        s = torch.rand(1, 3, 24, 32)
        a = torch.tensor(1.0)
        kwargs = dict(input_names=["content", "style", "alpha"], output_names=["stylized"], opset_version=int(opset),
                      dynamic_axes={"content": {2: "height", 3: "width"}, "style": {2: "style_height", 3: "style_width"},
                                    "stylized": {2: "height", 3: "width"}})
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(net, (x, s, a), str(path), dynamo=False, **kwargs)
            except TypeError:   # torch without the dynamo switch
                torch.onnx.export(net, (x, s, a), str(path), **kwargs)
        self.encoder.to(self.device, self.dtype)
        self.net.to(self.device, self.dtype)

    @torch.no_grad()
    def _adain_regions(self, fc, styles, regions):
        C = fc.shape[1]
        flat = fc.reshape(C, -1)
        out = torch.zeros_like(flat)
        for fs, region in zip(styles, regions):
            idx = torch.as_tensor(np.flatnonzero(np.asarray(region).ravel()), device=fc.device)
            if idx.numel():
                part = flat.index_select(1, idx).reshape(1, C, -1, 1)
                out[:, idx] = adain(part, fs, self.preset.adain).reshape(C, -1)
        return out.reshape(fc.shape)

    @torch.no_grad()
    def _decode(self, t) -> np.ndarray:
        return self.net(t).detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
