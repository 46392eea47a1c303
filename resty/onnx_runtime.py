"""A fast ONNX graph of the feed-forward transformer, and a small ONNX Runtime stylizer.

``resty convert --to onnx`` exports resty_torch's TransformerNet with ``torch.onnx.export``: a
faithful transcription of the eager network.  ONNX Runtime's CPU provider runs that graph at a
fraction of the machine's speed, mostly because of the layers with few channels (MLAS's direct
NCHWc convolution computes 8 output channels per pass, so a 3-channel 9x9 output conv wastes 5/8
of its work and is starved of reuse) and because nearest x2 upsampling quadruples the work of the
conv that follows it.  :func:`build_onnx_model` writes the *same function* as a different graph,
directly from the canonical weights (no torch needed):

* **sub-pixel upsampling**: nearest x2, reflection pad 1 and a 3x3 conv equal an edge (replicate)
  pad 1 of the low-resolution map, one 2x2 conv with 4x the output channels (one group per output
  phase, its taps the sums of the 3x3 taps that read the same low-resolution pixel) and a
  DepthToSpace; 16 instead of 36 multiply-adds per low-resolution pixel and channel pair, no
  Resize, a 4x smaller Pad;
* **space-to-depth output conv**: the 9x9 conv with 3 output channels becomes SpaceToDepth(2) ->
  5x5 conv with 4x16 inputs and 4x3 outputs -> DepthToSpace(2): the same sums (taps that fall
  outside the 9x9 window are zero), in a shape MLAS runs at full speed;
* the input scale (x255) and output scale (/255) folded into the first and last conv.

All of these are exact rewrites: they reorder float32 additions (and sum a few weights first),
nothing else; :func:`check_against_torch` measures the difference to resty_torch.

:class:`OnnxStylizer` builds an ONNX Runtime session tuned for the CPU (all graph optimisations,
including the NCHWc layout transform; one intra-op thread per core), optionally caching the
optimised graph next to the model so later sessions start fast, and stylizes HxWx3 images.
:func:`quantize_int8` makes a separate, approximate int8 (QDQ, static, calibrated) variant.

onnx / onnxruntime are imported lazily; this module never imports torch at import time.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import BackendUnavailableError, RestyError

__all__ = ["build_onnx_model", "export_onnx", "OnnxStylizer", "make_session", "check_against_torch",
           "quantize_int8", "psnr"]

PathLike = Union[str, os.PathLike]

# 3x3 conv after nearest x2 upsampling, as a 2x2 conv on the (edge-padded) low-resolution map.
# Output slot 0 of position r is upsampled row 2r-1 (it reads low rows r-1, r-1, r: taps {0,1},{2});
# slot 1 is upsampled row 2r (low rows r-1, r, r: taps {0},{1,2}).  DepthToSpace then puts slot s of
# position r at row 2r+s, i.e. upsampled row 2r+s-1: a uniform shift of one row, cropped away.
_SUBPIXEL_TAPS = (((0, 1), (2,)), ((0,), (1, 2)))


def _need_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise BackendUnavailableError("ONNX export needs the onnx package: pip install 'resty[onnx]'") from None
    return onnx, helper, numpy_helper


def _need_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("running ONNX models needs onnxruntime: pip install 'resty[onnx]'") from None
    return ort


def subpixel_weights(w: np.ndarray) -> np.ndarray:
    """(O, I, 3, 3) kernel of a conv that follows nearest x2 upsampling -> (4*O, I, 2, 2) kernel of
    the equivalent conv on the edge-padded low-resolution map (output groups in DepthToSpace DCR
    order, see ``_SUBPIXEL_TAPS``).  Sums are taken in float64."""
    w = np.asarray(w, np.float64)
    o, i, kh, kw = w.shape
    if (kh, kw) != (3, 3):
        raise RestyError(f"sub-pixel rewrite needs a 3x3 kernel, got {kh}x{kw}")
    out = np.zeros((2, 2, o, i, 2, 2))
    for sy in range(2):
        for ty in range(2):
            for sx in range(2):
                for tx in range(2):
                    out[sy, sx, :, :, ty, tx] = sum(w[:, :, ky, kx] for ky in _SUBPIXEL_TAPS[sy][ty]
                                                    for kx in _SUBPIXEL_TAPS[sx][tx])
    return out.reshape(4 * o, i, 2, 2)


def space_to_depth_weights(w: np.ndarray, block: int = 2) -> np.ndarray:
    """(O, I, k, k) stride-1 kernel -> (b²O, b²I, K, K) kernel, K = ceil((k + b - 1) / b), of the
    same conv computed on SpaceToDepth(b) of its (padded) input, output in DepthToSpace DCR order.
    Output phase (a, c) at block (u, v) reads input phase (p, q) of block (u + m, v + n) with the
    original tap (b m + p - a, b n + q - c); taps outside the k x k window are zero."""
    w = np.asarray(w, np.float64)
    o, i, k, k2 = w.shape
    b = int(block)
    kk = -(-(k + b - 1) // b)
    out = np.zeros((b, b, o, b, b, i, kk, kk))
    for a in range(b):
        for c in range(b):
            for p in range(b):
                for q in range(b):
                    for m in range(kk):
                        dy = b * m + p - a
                        if not 0 <= dy < k:
                            continue
                        for n in range(kk):
                            dx = b * n + q - c
                            if 0 <= dx < k2:
                                out[a, c, :, p, q, :, m, n] = w[:, :, dy, dx]
    return out.reshape(b * b * o, b * b * i, kk, kk)


def _phase_stride_weights(w: np.ndarray) -> np.ndarray:
    """(O, I, k, k) stride-1 kernel -> (4*O, I, k+1, k+1) stride-2 kernel computing output phase
    (a, c) (DCR order) at every second pixel: the same taps shifted by (a, c)."""
    w = np.asarray(w, np.float64)
    o, i, k, _ = w.shape
    out = np.zeros((2, 2, o, i, k + 1, k + 1))
    for a in range(2):
        for c in range(2):
            out[a, c, :, :, a:a + k, c:c + k] = w
    return out.reshape(4 * o, i, k + 1, k + 1)


def _dcr_to_crd(w: np.ndarray, blocks: int) -> np.ndarray:
    """Reorder output channels from DCR (phase*O + o) to CRD (o*blocks + phase)."""
    n = w.shape[0] // blocks
    return w.reshape(blocks, n, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)


class _G:
    """A tiny ONNX graph writer: unique names, initializers, nodes."""

    def __init__(self):
        self.onnx, self.h, self.nh = _need_onnx()
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, base):
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value, base="c", dtype=np.float32):
        n = self.name(base)
        self.inits.append(self.nh.from_array(np.asarray(value, dtype), n))
        return n

    def op(self, op_type, inputs, base=None, **attrs):
        out = self.name(base or op_type.lower())
        self.nodes.append(self.h.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def build_onnx_model(ws, *, subpixel: bool = True, s2d_out: bool = True, opset: int = 17,
                     fold_scale: bool = True):
    """The transformer of the canonical weight set ``ws`` as an ``onnx.ModelProto``: input
    ``image`` (N, 3, H, W) float32 RGB in [0, 1], any size >= the torch net's minimum; output
    ``stylized`` (N, 3, H, W), not clamped (the same contract as ``resty convert --to onnx``).

    ``subpixel`` / ``s2d_out`` switch the two exact rewrites described in the module docstring
    (both on by default; with both off the graph is a plain transcription of the torch net).
    Supports the nearest-upsampling, instance-norm transformers (every ``restynet``/``johnson``
    style spec with ``upsampling='nearest_conv'``)."""
    from .specs import transformer_layers

    spec = ws.spec
    if spec.upsampling != "nearest_conv":
        raise RestyError(f"the ONNX graph builder supports upsampling='nearest_conv' nets, not {spec.upsampling!r}; "
                         "use resty convert --to onnx")
    if spec.norm != "instance":
        raise RestyError(f"the ONNX graph builder supports instance norm, not {spec.norm!r}; use resty convert --to onnx")
    T = {k: np.asarray(v, np.float64) for k, v in ws.tensors.items()}
    defs = {d.name: d for d in transformer_layers(spec)}
    g = _G()
    h = g.h
    scale = float(spec.input_scale)
    m = int(spec.size_multiple)

    # ---- reflect-pad H, W up to a multiple of m (inside the graph, like the torch net)
    x = "image"
    shape = g.op("Shape", [x], "shape")
    hw = g.op("Slice", [shape, g.const([2], "i", np.int64), g.const([4], "i", np.int64)], "hw")
    if m > 1:
        ph = g.op("Mod", [g.op("Neg", [hw], "neg"), g.const([m], "m", np.int64)], "padhw", fmod=0)
        pads = g.op("Concat", [g.const([0, 0, 0, 0, 0, 0], "z", np.int64), ph], "pads", axis=0)
        x = g.op("Pad", [x, pads], "pad_multiple", mode="reflect")
    if not fold_scale and scale != 1.0:
        x = g.op("Mul", [x, g.const(scale, "scale")], "scale_in")

    def conv(x, w, b=None, base="conv", **attrs):
        ins = [x, g.const(w, base + "_w")] + ([g.const(b, base + "_b")] if b is not None else [])
        return g.op("Conv", ins, base, kernel_shape=list(w.shape[2:]), **attrs)

    def pad(x, p, mode, base):
        return g.op("Pad", [x, g.const([0, 0, p, p, 0, 0, p, p], "p", np.int64)], base, mode=mode)

    def depth_to_space(x, c, crop, base):
        # DepthToSpace(2) of CRD-ordered channels (c*4 + phase) as a grouped stride-2 ConvTranspose
        # with 0/1 taps (exact, and several times faster than ORT's DepthToSpace); its pads crop
        # ``crop`` rows/cols on each side.
        k = np.zeros((4 * c, 1, 2, 2))
        for ph in range(4):
            k[ph::4, 0, ph // 2, ph % 2] = 1.0
        return g.op("ConvTranspose", [x, g.const(k, base + "_w")], base, kernel_shape=[2, 2], strides=[2, 2],
                    group=int(c), pads=[crop] * 4)

    def layer(x, name, w_scale=1.0):
        d = defs[name]
        w = T[f"{name}.weight"] * w_scale
        b = T.get(f"{name}.bias")
        if d.upsample and subpixel and d.kernel == 3 and d.stride == 1:
            x = pad(x, 1, "edge", name + "_pad")
            w4 = _dcr_to_crd(subpixel_weights(w), 4)
            y = conv(x, w4, None if b is None else np.repeat(b, 4), name)
            y = depth_to_space(y, d.out_channels, 1, name + "_d2s")   # also crops the shifted row/col
        else:
            if d.upsample:
                x = g.op("Resize", [x, "", g.const([1, 1, 2, 2], "sc")], name + "_up", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            if d.transposed:
                raise RestyError("transposed convs are not supported by the ONNX graph builder")
            x = pad(x, d.kernel // 2, "reflect", name + "_pad")
            y = conv(x, w, b, name, strides=[d.stride] * 2)
        if d.norm:
            y = g.op("InstanceNormalization", [y, g.const(T[f"{name}.norm.weight"], "g"),
                                               g.const(T[f"{name}.norm.bias"], "b")], name + "_in",
                     epsilon=float(spec.norm_eps))
        if d.relu:
            y = g.op("Relu", [y], name + "_relu")
        return y

    x = layer(x, "conv_in", scale if fold_scale else 1.0)
    x = layer(layer(x, "down1"), "down2")
    for i in range(1, spec.residual_blocks + 1):
        x = g.op("Add", [x, layer(layer(x, f"res{i}.conv1"), f"res{i}.conv2")], f"res{i}")
    x = layer(layer(x, "up1"), "up2")

    # ---- output conv (no norm, no relu), output scale folded in
    d = defs["conv_out"]
    out_div = scale if (spec.output_activation == "none" and fold_scale) else 1.0
    w = T["conv_out.weight"] / out_div
    b = T.get("conv_out.bias")
    b = None if b is None else b / out_div
    x = pad(x, d.kernel // 2, "reflect", "conv_out_pad")
    if s2d_out and d.stride == 1 and m % 2 == 0:
        if s2d_out == "stride":   # SpaceToDepth folded into a stride-2 conv with a 10x10 kernel
            w2 = _dcr_to_crd(_phase_stride_weights(w), 4)
            y = conv(x, w2, None if b is None else np.repeat(b, 4), "conv_out", strides=[2, 2])
        else:
            x = g.op("SpaceToDepth", [x], "conv_out_s2d", blocksize=2)
            w2 = _dcr_to_crd(space_to_depth_weights(w, 2), 4)
            y = conv(x, w2, None if b is None else np.repeat(b, 4), "conv_out")
        y = depth_to_space(y, d.out_channels, 0, "conv_out_d2s")
    else:
        y = conv(x, w, b, "conv_out")
    # ---- crop back to the input size, output activation
    y = g.op("Slice", [y, g.const([0, 0], "s", np.int64), hw, g.const([2, 3], "a", np.int64)], "crop")
    if spec.output_activation == "none":
        if out_div == 1.0 and scale != 1.0:
            y = g.op("Div", [y, g.const(scale, "scale")], "scale_out")
    elif spec.output_activation == "sigmoid":
        y = g.op("Sigmoid", [y], "sigmoid")
    else:   # tanh -> (tanh + 1) / 2
        y = g.op("Mul", [g.op("Add", [g.op("Tanh", [y], "tanh"), g.const(1.0, "one")], "tanh1"),
                         g.const(0.5, "half")], "tanh01")
    g.nodes.append(h.make_node("Identity", [y], ["stylized"], name="stylized"))
    graph = h.make_graph(g.nodes, "resty_transformer",
                         [h.make_tensor_value_info("image", g.onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                         [h.make_tensor_value_info("stylized", g.onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                         g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", int(opset))], producer_name="resty")
    model.ir_version = min(model.ir_version, 8)
    g.onnx.checker.check_model(model)
    return model
