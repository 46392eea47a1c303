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

from resty import rewrites
from resty.errors import WeightsError
from resty.specs import ConvDef, TransformerSpec, transformer_layers
from resty.weights import WeightSet, resolve_weights

from .convgrad import conv2d_forward_grads
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
            if spec.conditional:
                self.norm = ConditionalInstanceNorm2d(spec.num_styles, d.out_channels, spec.norm_eps)
            elif spec.norm == "instance":
                self.norm = nn.InstanceNorm2d(d.out_channels, eps=spec.norm_eps, affine=True,
                                              track_running_stats=False)
            else:
                self.norm = nn.BatchNorm2d(d.out_channels, eps=spec.norm_eps, affine=True)
        else:
            self.norm = None
        # Speed options (TransformerNet.configure); the defaults are the exact reference path.
        self.norm_impl = "auto"
        self.pad_channels = 0
        self.pad_impl = "auto"
        self.conv_grads = "auto"
        self.io_impl = "direct"

    def set_io_impl(self, impl: str) -> None:
        """``"direct"`` or ``"s2d"`` (see :meth:`_s2d_conv`).  The gather index of the s2d kernel
        is a non-persistent buffer (moves with the module, not saved), built here in NumPy and
        not inside a torch.compile'd forward (Dynamo would trace the loops)."""
        self.io_impl = impl
        if impl == "s2d" and "s2d_index" not in self._buffers:
            d = self.d
            o, i, k = d.out_channels, d.in_channels, d.kernel
            ids = np.arange(1, o * i * k * k + 1, dtype=np.float64).reshape(o, i, k, k)
            w4 = rewrites.dcr_to_crd_inputs(rewrites.dcr_to_crd(rewrites.space_to_depth_weights(ids, 2)))
            self.register_buffer("s2d_index", torch.from_numpy(np.rint(w4).astype(np.int64)).to(self.weight.device),
                                 persistent=False)

    def _s2d_conv(self, x: torch.Tensor) -> torch.Tensor:
        """This stride-1 conv on pixel_unshuffle(x, 2): a ceil((k+1)/2)-tap conv with 4x the
        input and output channels, then pixel_shuffle (resty.rewrites.space_to_depth_weights):
        the same sums, but 12 instead of 3 channels for the 9x9 input/output convs, a shape
        tensor-core kernels take.  The kernel is gathered from ``weight`` on every call, so it
        follows training (and gradients flow back through the gather)."""
        w = torch.cat([self.weight.new_zeros(1), self.weight.reshape(-1)])[self.s2d_index]
        b = self.bias.repeat_interleave(4) if self.bias is not None else None
        x = F.pixel_unshuffle(x, 2)
        pc = self.pad_channels
        cin, cout = w.shape[1], w.shape[0]
        pin, pout = ((-cin) % pc, (-cout) % pc) if pc else (0, 0)
        if pin:                       # 12 -> 16 input channels (zero weights): tensor-core friendly
            x = F.pad(x, (0, 0, 0, 0, 0, pin))
            w = F.pad(w, (0, 0, 0, 0, 0, pin))
        if pout:
            w = F.pad(w, (0, 0, 0, 0, 0, 0, 0, pout))
            b = F.pad(b, (0, pout)) if b is not None else None
        y = F.conv2d(x, w, b)
        return F.pixel_shuffle(y[:, :cout] if pout else y, 2)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        d = self.d
        if self.io_impl == "s2d" and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:
            return self._s2d_conv(x)
        w, b = self.weight, self.bias
        pc = self.pad_channels
        if pc and d.in_channels < pc:
            # Zero input channels with zero kernel slices: the same sums, but a channel count
            # tensor-core kernels take (3 -> 8), instead of a slow path for C_in = 3.
            x = F.pad(x, (0, 0, 0, 0, 0, pc - d.in_channels))
            w = F.pad(w, (0, 0, 0, 0, 0, pc - d.in_channels))
        out_pad = pc - d.out_channels if pc and d.out_channels < pc else 0
        if out_pad:
            w = F.pad(w, (0, 0, 0, 0, 0, 0, 0, out_pad))
            b = F.pad(b, (0, out_pad)) if b is not None else None
        if self._forward_grads(x):
            y = conv2d_forward_grads(x, w, b)
        else:
            y = F.conv2d(x, w, b, stride=d.stride)
        return y[:, :d.out_channels] if out_pad else y

    def _forward_grads(self, x: torch.Tensor) -> bool:
        """Whether this conv differentiates through forward convolutions (resty_torch.convgrad):
        ``conv_grads="auto"``: stride 1, on the CPU, full precision, when a gradient is wanted."""
        if self.conv_grads == "native" or self.d.stride != 1 or not torch.is_grad_enabled():
            return False
        if not (x.requires_grad or self.weight.requires_grad):
            return False
        if self.conv_grads == "forward":
            return True
        return x.device.type == "cpu" and not torch.is_autocast_enabled("cpu") and \
            x.dtype in (torch.float32, torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.d
        if d.upsample:
            if x.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(x.device.type):
                # Autocast runs upsample_nearest2d in float32 (and the reflection pad after it):
                # a cast copy plus 2x the traffic on the two largest tensors.  Nearest
                # upsampling only copies values, so the half-precision result is identical.
                with torch.autocast(device_type=x.device.type, enabled=False):
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
            else:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        if d.transposed:
            if self.crop == (1, 0):
                x = F.conv_transpose2d(x, self.weight, self.bias, stride=d.stride, padding=1, output_padding=1)
            else:
                x = F.conv_transpose2d(x, self.weight, self.bias, stride=d.stride)
                a, z = self.crop
                x = x[:, :, a:x.shape[2] - z, a:x.shape[3] - z]
        elif self.pad_impl == "cat" or (self.pad_impl == "auto" and _is_channels_last(x)):
            x = self._conv(_reflect_pad_cat(x, d.kernel // 2))
        else:
            x = self._conv(self.pad(x))
        if self.norm is not None and self._fused_norm(x):
            return _instance_norm_fused(x, self.norm.weight, self.norm.bias, self.norm.eps, d.relu)
        if self.norm is not None:
            x = self.norm(x)
        if d.relu:
            x = F.relu(x)
        return x

    def _fused_norm(self, x: torch.Tensor) -> bool:
        if not isinstance(self.norm, nn.InstanceNorm2d):
            return False
        if self.norm_impl == "fused":
            return True
        return self.norm_impl == "auto" and (x.dtype in (torch.float16, torch.bfloat16) or _is_channels_last(x))


def _is_channels_last(x: torch.Tensor) -> bool:
    """A 4-d tensor laid out NHWC (and not also NCHW-contiguous, as 1-channel or 1x1 maps are)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _reflect_pad_cat(x: torch.Tensor, p: int) -> torch.Tensor:
    """Reflection padding by slicing and concatenation: the same values as ReflectionPad2d,
    but keeps a channels_last tensor channels_last (torch's reflection_pad2d kernel returns
    NCHW, so each conv of a channels_last net paid two layout conversions)."""
    if p == 0:
        return x
    x = torch.cat([x[:, :, 1:p + 1].flip(2), x, x[:, :, -p - 1:-1].flip(2)], dim=2)
    return torch.cat([x[:, :, :, 1:p + 1].flip(3), x, x[:, :, :, -p - 1:-1].flip(3)], dim=3)


def _instance_norm_fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                         relu: bool) -> torch.Tensor:
    """Instance norm (biased variance) + optional ReLU as one statistics pass and one
    multiply-add: ``y = x·s + t`` with ``s = γ/sqrt(var+eps)``, ``t = β − mean·s`` per (image,
    channel).  Statistics are accumulated in float32 (float64 for float64) and ``s``, ``t``
    are formed in that precision, then cast to ``x``'s dtype for the multiply-add.

    Why: ``nn.InstanceNorm2d`` runs as batch norm over a (1, B·C, H, W) view; on CUDA that is
    cuDNN for float32/float16 but torch's own kernel for bfloat16, and the view forces a
    contiguous (NCHW) copy of a channels_last tensor.  This path has neither, keeps the
    memory format, and is one pointwise kernel for torch.compile to fuse with the ReLU.
    Not the default in float32/float64 (different summation order from the reference path)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    var, mean = var.to(acc), mean.to(acc)
    s = weight.to(acc).view(1, -1, 1, 1) * torch.rsqrt(var + eps)
    t = bias.to(acc).view(1, -1, 1, 1) - mean * s
    y = torch.addcmul(t.to(x.dtype), x, s.to(x.dtype))
    return torch.relu_(y) if relu else y


class ConditionalInstanceNorm2d(nn.Module):
    """Dumoulin et al. 2017: instance norm (biased variance, ``eps``) whose affine parameters
    are the style-weighted sum of the rows of ``weight`` / ``bias`` (num_styles, C).  The
    style weights (num_styles,) are set on the module by :class:`TransformerNet` before each
    forward (``style``); must match resty.reference.conditional_instance_norm."""

    def __init__(self, num_styles: int, channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_styles, channels))
        self.bias = nn.Parameter(torch.zeros(num_styles, channels))
        self.style: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.style.to(self.weight.dtype)
        gamma, beta = w @ self.weight, w @ self.bias
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        xf = x.to(acc)
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)
        y = (xf - mean) / torch.sqrt(var + self.eps)
        y = y * gamma.to(acc).view(1, -1, 1, 1) + beta.to(acc).view(1, -1, 1, 1)
        return y.to(x.dtype)


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
        if spec.conditional:
            # The style weight vector of the conditional norms (not a parameter, not saved):
            # set_style() / forward(style=...); style 0 until then.
            self.register_buffer("style_weights", torch.eye(spec.num_styles)[0], persistent=False)
        self.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
        ws = resolve_weights(weights if weights is not None else "random:0", "transformer", spec=spec)
        self.load_canonical(ws.tensors)

    # ------------------------------------------------------------------ styles (conditional norm)
    def set_style(self, weights) -> None:
        """The conditional norms' style weights for the next forwards: a (num_styles,) vector
        (resty.inputs.style_vector turns an index, a dict or ``"3:0.5,12:0.5"`` into one)."""
        if not self.spec.conditional:
            raise ValueError("set_style: this network has no conditional norm (one style)")
        w = torch.as_tensor(np.asarray(weights, np.float64))
        if tuple(w.shape) != (self.spec.num_styles,):
            raise ValueError(f"set_style: expected {self.spec.num_styles} weights, got shape {tuple(w.shape)}")
        with torch.no_grad():
            self.style_weights.copy_(w.to(self.style_weights))

    def get_style(self) -> np.ndarray:
        return self.style_weights.detach().cpu().numpy().copy()

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

    # ------------------------------------------------------------------ speed options
    NORM_IMPLS = ("auto", "torch", "fused")

    def configure(self, *, norm_impl: Optional[str] = None, pad_channels: Optional[int] = None,
                  pad_impl: Optional[str] = None, conv_grads: Optional[str] = None,
                  io_convs: Optional[str] = None) -> "TransformerNet":
        """Speed options (same weights, same function up to rounding):

        ``norm_impl``: ``"auto"`` (default: nn.InstanceNorm2d for NCHW float32/float64, the
        fused float32-statistics path for float16/bfloat16 activations, i.e. under autocast,
        and for channels_last ones, which nn.InstanceNorm2d would copy to NCHW),
        ``"torch"`` (always nn.InstanceNorm2d), ``"fused"`` (always the fused path).
        ``pad_channels``: 0 (off) or N (e.g. 8): conv_in's 3 input channels and conv_out's 3
        output channels are zero-padded to N (weights too) so tensor-core kernels apply;
        exact up to summation order.  ``pad_impl``: ``"auto"`` (default: ``"cat"`` for
        channels_last activations, else ``"torch"``), ``"torch"`` (nn.ReflectionPad2d, whose
        output is NCHW whatever its input) or ``"cat"`` (slices + concatenation: identical
        values, keeps channels_last).
        ``conv_grads``: ``"auto"`` (default: stride-1 convs on the CPU in float32/float64 take
        their gradients as forward convolutions, resty_torch.convgrad; 1.6x a CPU training
        step at 256 px), ``"native"`` (always autograd's), ``"forward"`` (always).
        ``io_convs``: ``"direct"`` (default) or ``"s2d"``: the stride-1 convs with 3 input or
        output channels (conv_in, conv_out) run on pixel_unshuffle'd maps with 4x the channels
        (exact up to summation order; for GPUs, whose fast kernels want >= 8 channels; with
        ``pad_channels`` the 12 channels are padded to a multiple of it).  Returns self."""
        if norm_impl is not None:
            if norm_impl not in self.NORM_IMPLS:
                raise ValueError(f"norm_impl: got {norm_impl!r}; allowed: {', '.join(self.NORM_IMPLS)}")
            for m in self.modules():
                if isinstance(m, ConvLayer):
                    m.norm_impl = norm_impl
        if pad_impl is not None:
            if pad_impl not in ("auto", "torch", "cat"):
                raise ValueError(f"pad_impl: got {pad_impl!r}; allowed: auto, torch, cat")
            for m in self.modules():
                if isinstance(m, ConvLayer):
                    m.pad_impl = pad_impl
        if io_convs is not None:
            if io_convs not in ("direct", "s2d"):
                raise ValueError(f"io_convs: got {io_convs!r}; allowed: direct, s2d")
            for m in self.modules():
                if isinstance(m, ConvLayer) and m.d.stride == 1 and not m.d.transposed and not m.d.upsample \
                        and min(m.d.in_channels, m.d.out_channels) <= 4 and m.d.kernel > 1:
                    m.set_io_impl(io_convs)
        if conv_grads is not None:
            if conv_grads not in ("auto", "native", "forward"):
                raise ValueError(f"conv_grads: got {conv_grads!r}; allowed: auto, native, forward")
            for m in self.modules():
                if isinstance(m, ConvLayer):
                    m.conv_grads = conv_grads
        if pad_channels is not None:
            pc = int(pad_channels)
            if pc < 0:
                raise ValueError(f"pad_channels: got {pad_channels!r}; use 0 (off) or a channel count such as 8")
            for m in self.modules():
                if isinstance(m, ConvLayer):
                    m.pad_channels = pc
        return self

    @property
    def norm_impl(self) -> str:
        return self.conv_in.norm_impl

    @property
    def pad_channels(self) -> int:
        return self.conv_in.pad_channels

    # ------------------------------------------------------------------ forward
    def forward(self, images01: torch.Tensor, style=None) -> torch.Tensor:
        spec = self.spec
        if spec.conditional:
            if style is None:
                w = self.style_weights
            else:
                w = torch.as_tensor(style, dtype=self.style_weights.dtype, device=self.style_weights.device)
            for m in self.modules():
                if isinstance(m, ConditionalInstanceNorm2d):
                    m.style = w
        elif style is not None:
            raise ValueError("style: this network has no conditional norm (one style)")
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
