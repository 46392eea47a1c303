"""Johnson et al. 2016's image transformation network, from ``resty.specs.TransformerSpec``.

The module tree is laid out so that torch's ``state_dict`` keys *are* the canonical names
of :func:`resty.specs.transformer_param_shapes` (``conv_in.weight``, ``res1.conv2.norm.bias``,
...), so converting to and from the canonical safetensors file is a plain rename-free copy.
Must match :func:`resty.reference.transformer_forward` (checked in float64 by the tests).
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resty.errors import WeightsError
from resty.specs import ConvDef, TransformerSpec, transformer_layers
from resty.weights import WeightSet, resolve_weights

from .device import resolve_device, resolve_dtype

__all__ = ["TransformerNet", "ConvLayer"]


class ConvLayer(nn.Module):
    """[nearest ×2] → reflection pad k//2 → conv (or transposed conv) → [norm] → [ReLU]."""

    def __init__(self, d: ConvDef, spec: TransformerSpec):
        super().__init__()
        self.d = d
        if d.transposed:
            # IOHW kernel, torch's layout.  transpose_crop (1, 0) is exactly torch's
            # padding=1, output_padding=1; (0, 1) is the full 2H+1 output minus its last row/col.
            self.crop = spec.transpose_crop
            self.weight = nn.Parameter(torch.empty(d.in_channels, d.out_channels, d.kernel, d.kernel))
        else:
            self.pad = nn.ReflectionPad2d(d.kernel // 2)
            self.weight = nn.Parameter(torch.empty(d.out_channels, d.in_channels, d.kernel, d.kernel))
        # A bias in front of a norm has a true gradient of exactly 0 (the norm subtracts the
        # mean), so it is left out unless the spec reproduces a source that had one.
        self.bias = nn.Parameter(torch.zeros(d.out_channels)) if d.bias else None
        if d.norm:
            if spec.norm == "instance":
                self.norm = nn.InstanceNorm2d(d.out_channels, eps=spec.norm_eps, affine=True,
                                              track_running_stats=False)
            else:
                self.norm = nn.BatchNorm2d(d.out_channels, eps=spec.norm_eps, affine=True)
        else:
            self.norm = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.d
        if d.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if d.transposed:
            if self.crop == (1, 0):
                x = F.conv_transpose2d(x, self.weight, self.bias, stride=d.stride, padding=1, output_padding=1)
            else:
                x = F.conv_transpose2d(x, self.weight, self.bias, stride=d.stride)
                a, z = self.crop
                x = x[:, :, a:x.shape[2] - z, a:x.shape[3] - z]
        else:
            x = F.conv2d(self.pad(x), self.weight, self.bias, stride=d.stride)
        if self.norm is not None:
            x = self.norm(x)
        if d.relu:
            x = F.relu(x)
        return x


class ResidualBlock(nn.Module):
    def __init__(self, d1: ConvDef, d2: ConvDef, spec: TransformerSpec):
        super().__init__()
        self.conv1 = ConvLayer(d1, spec)
        self.conv2 = ConvLayer(d2, spec)

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


class TransformerNet(nn.Module):
    """The feed-forward stylisation network: RGB [0, 1] NCHW in, RGB [0, 1]-unit NCHW out
    (not clamped), any input size (reflection-padded to a multiple of 4, cropped back)."""

    def __init__(self, spec: Optional[TransformerSpec] = None,
                 weights: Union[None, str, WeightSet] = None, dtype="float32", device=None):
        super().__init__()
        if spec is None:
            spec = weights.spec if isinstance(weights, WeightSet) else TransformerSpec()
        self.spec = spec
        defs = {d.name: d for d in transformer_layers(spec)}
        self.conv_in = ConvLayer(defs["conv_in"], spec)
        self.down1 = ConvLayer(defs["down1"], spec)
        self.down2 = ConvLayer(defs["down2"], spec)
        self.n_res = spec.residual_blocks
        for i in range(1, spec.residual_blocks + 1):
            self.add_module(f"res{i}", ResidualBlock(defs[f"res{i}.conv1"], defs[f"res{i}.conv2"], spec))
        self.up1 = ConvLayer(defs["up1"], spec)
        self.up2 = ConvLayer(defs["up2"], spec)
        self.conv_out = ConvLayer(defs["conv_out"], spec)
        self.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        ws = resolve_weights(weights if weights is not None else "random:0", "transformer", spec=spec)
        self.load_canonical(ws.tensors)

    # ------------------------------------------------------------------ canonical weights
    def state_dict_canonical(self) -> Dict[str, np.ndarray]:
        """Canonical names (== torch state_dict keys) and layouts (OIHW, IOHW) as NumPy."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()
                if not k.endswith("num_batches_tracked")}

    def load_canonical(self, tensors) -> None:
        """Load canonical tensors (a dict of arrays, or a WeightSet); names and shapes checked."""
        if isinstance(tensors, WeightSet):
            tensors = tensors.tensors
        own = {k: v for k, v in self.state_dict().items() if not k.endswith("num_batches_tracked")}
        missing = sorted(set(own) - set(tensors))
        extra = sorted(set(tensors) - set(own))
        if missing or extra:
            raise WeightsError(f"transformer weights: missing {missing[:4]}, unexpected {extra[:4]} for this spec")
        with torch.no_grad():
            for k, v in own.items():
                a = np.asarray(tensors[k])
                if tuple(a.shape) != tuple(v.shape):
                    raise WeightsError(f"transformer weights: {k} has shape {a.shape}, expected {tuple(v.shape)}")
                v.copy_(torch.from_numpy(np.ascontiguousarray(a)).to(v.dtype))

    # ------------------------------------------------------------------ forward
    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        h0, w0 = images01.shape[-2:]
        if min(h0, w0) < spec.kernel_in // 2 + 1:
            raise ValueError(f"transformer input: sides must be >= {spec.kernel_in // 2 + 1} px, got {h0}x{w0}")
        m = spec.size_multiple
        ph, pw = (-h0) % m, (-w0) % m
        x = images01
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        x = x * spec.input_scale
        x = self.down2(self.down1(self.conv_in(x)))
        for i in range(1, self.n_res + 1):
            x = getattr(self, f"res{i}")(x)
        y = self.conv_out(self.up2(self.up1(x)))
        y = y[:, :, :h0, :w0]
        if spec.output_activation == "none":
            return y / spec.input_scale
        if spec.output_activation == "sigmoid":
            return torch.sigmoid(y)
        return (torch.tanh(y) + 1.0) * 0.5
