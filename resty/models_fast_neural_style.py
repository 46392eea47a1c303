"""pytorch/examples ``fast_neural_style`` networks, imported into Resty's canonical format.

Two sources hold the same network (Johnson et al. 2016 with Ulyanov's instance norm, as
pytorch/examples' ``transformer_net.py`` writes it):

* the example's checkpoints (``candy.pth``, ``mosaic.pth``, ``udnie.pth``, ``rain_princess.pth``):
  a ``state_dict`` with the example's key names (``conv1.conv2d.weight``, ``in1.weight``,
  ``res1.conv1.conv2d.weight``, ``deconv1.conv2d.weight``, ...).  Checkpoints saved by old torch
  versions also carry ``running_mean`` / ``running_var`` for every ``InstanceNorm2d``; the network
  never uses them (instance norm takes each image's own statistics), and the example's
  ``stylize`` deletes them before ``load_state_dict`` -- so does this importer, and nothing else;
* the ONNX model zoo's exports of those checkpoints (``mosaic-9.onnx``, ``candy-8.onnx``, ...):
  Pad (reflect) -> Conv (with bias) -> InstanceNormalization -> Relu, residual Adds, nearest x2
  Upsample/Resize before the two upsampling convs.  The graph is read, not assumed: every conv's
  padding, stride and norm is checked, and the import is checked numerically against ONNX Runtime
  (``resty.models.import_model``).

Both take pixels in [0, 255] and give [0, 255] unclamped: ``TransformerSpec(input_scale=255,
output_activation="none")``, and the conv bias before each norm is kept
(``conv_bias_before_norm=True``: it is in the files, though a norm cancels it).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Mapping

import numpy as np

from .errors import ArgumentError, WeightsError, one_line
from .specs import TransformerSpec, transformer_layers, transformer_param_shapes
from .weights import WeightSet

__all__ = ["example_key_names", "from_fast_neural_style_state_dict", "fast_neural_style_onnx_to_weightset",
           "is_fast_neural_style_onnx", "PUBLISHED", "download_published"]

# The example's stale InstanceNorm statistics (neural_style.py's stylize drops the same keys).
_STALE = re.compile(r"(^|\.)in\d+\.(running_mean|running_var|num_batches_tracked)$")
_RES_KEY = re.compile(r"^res(\d+)\.")


def _fail(where, why: str) -> WeightsError:
    return WeightsError(one_line(f"{where}: not a pytorch/examples fast_neural_style network: {why}"))


def example_key_names(residual_blocks: int = 5) -> Dict[str, str]:
    """Resty's canonical tensor name -> the example's ``state_dict`` key."""
    convs = {"conv_in": ("conv1", "in1"), "down1": ("conv2", "in2"), "down2": ("conv3", "in3"),
             "up1": ("deconv1", "in4"), "up2": ("deconv2", "in5"), "conv_out": ("deconv3", None)}
    for i in range(1, residual_blocks + 1):
        convs[f"res{i}.conv1"] = (f"res{i}.conv1", f"res{i}.in1")
        convs[f"res{i}.conv2"] = (f"res{i}.conv2", f"res{i}.in2")
    names = {}
    for ours, (conv, norm) in convs.items():
        names[f"{ours}.weight"] = f"{conv}.conv2d.weight"
        names[f"{ours}.bias"] = f"{conv}.conv2d.bias"
        if norm:
            names[f"{ours}.norm.weight"] = f"{norm}.weight"
            names[f"{ours}.norm.bias"] = f"{norm}.bias"
    return names


def _spec_from_shapes(shape_of, residual_blocks: int, where) -> TransformerSpec:
    """The spec whose layer shapes these are (widths and kernels read from the weights)."""
    try:
        c0, c1, c2 = (int(shape_of(n)[0]) for n in ("conv_in", "down1", "down2"))
        u1, u2 = int(shape_of("up1")[0]), int(shape_of("up2")[0])
        k_in, k_out = int(shape_of("conv_in")[-1]), int(shape_of("conv_out")[-1])
    except (IndexError, TypeError, ValueError) as exc:
        raise _fail(where, f"unexpected weight shapes ({one_line(exc)})") from None
    return TransformerSpec(channels=(c0, c1, c2), residual_blocks=residual_blocks,
                           up_channels=None if (u1, u2) == (c1, c0) else (u1, u2),
                           conv_bias_before_norm=True, input_scale=255.0, output_activation="none",
                           kernel_in=k_in, kernel_out=k_out)


def from_fast_neural_style_state_dict(state: Mapping[str, object], *, where: object = "state dict",
                                      source: str = "pytorch/examples fast_neural_style") -> WeightSet:
    """A WeightSet from the example's ``TransformerNet.state_dict()`` (tensors as arrays)."""
    if not isinstance(state, Mapping):
        raise _fail(where, f"expected a state dict, got {type(state).__name__}")
    kept = {str(k): v for k, v in state.items() if not _STALE.search(str(k))}
    blocks = sorted({int(m.group(1)) for k in kept if (m := _RES_KEY.match(k))})
    if not blocks or blocks != list(range(1, len(blocks) + 1)):
        raise _fail(where, f"expected residual blocks res1..resN, found {blocks or 'none'}")
    names = example_key_names(len(blocks))
    missing = sorted(set(names.values()) - set(kept))
    extra = sorted(set(kept) - set(names.values()))
    if missing or extra:
        raise _fail(where, (f"missing keys {missing[:4]}" if missing else "")
                    + ("; " if missing and extra else "") + (f"unexpected keys {extra[:4]}" if extra else ""))
    tensors = {}
    for ours, theirs in names.items():
        v = kept[theirs]
        try:
            tensors[ours] = np.array(v, dtype=np.float32)
        except (TypeError, ValueError):
            raise _fail(where, f"{theirs} is not a numeric array") from None
    bad = [names[f"{n}.weight"] for n in ("conv_in", "down1", "down2", "up1", "up2", "conv_out")
           if tensors[f"{n}.weight"].ndim != 4]
    if bad:
        raise _fail(where, f"{bad[0]} is not a 4-D convolution weight")
    spec = _spec_from_shapes(lambda n: tensors[f"{n}.weight"].shape, len(blocks), where)
    for ours, shape in transformer_param_shapes(spec).items():
        if tensors[ours].shape != tuple(shape):
            raise _fail(where, f"{names[ours]} has shape {tensors[ours].shape}, expected {tuple(shape)} "
                               f"for a network whose layers have widths {spec.channels}")
    dropped = sorted(set(map(str, state)) - set(kept))
    extra_meta = {"imported_from": str(Path(os.fspath(where)).name) if isinstance(where, (str, Path)) else str(where),
                  "format": "pytorch/examples fast_neural_style state_dict",
                  "dropped_keys": len(dropped)}
    return WeightSet(tensors, "transformer", source=source, spec=spec, extra=extra_meta).validate(where)


# --------------------------------------------------------------------------- ONNX (the model zoo's exports)
def is_fast_neural_style_onnx(model) -> bool:
    """Whether an ONNX graph looks like an export of the example's network (InstanceNormalization
    operators, one input): the zoo's files, as opposed to the conditional-norm graphs."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    return (any(n.op_type == "InstanceNormalization" for n in g.node)
            and len([i for i in g.input if i.name not in inits]) == 1)


def fast_neural_style_onnx_to_weightset(path, model=None) -> WeightSet:
    """Read an ONNX export of the example's network (see the module doc)."""
    from .models import _const_values, check_reflect_padded_conv, load_onnx_model, onnx_attr as attr
    if model is None:
        path, model = load_onnx_model(path)
    from onnx import numpy_helper
    path = Path(os.fspath(path))
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    vals = _const_values(model)
    for n in g.node:        # exporters share equal tensors through Identity nodes
        if n.op_type == "Identity" and n.input[0] in vals:
            vals[n.output[0]] = vals[n.input[0]]
    allowed = {"Constant", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze",
               "Identity", "Pad", "Conv", "InstanceNormalization", "Relu", "Add", "Upsample", "Resize"}
    ops = {n.op_type for n in g.node}
    if ops - allowed:
        raise _fail(path, f"operators {sorted(ops - allowed)} are outside what this network uses")
    ins = [i.name for i in g.input if i.name not in inits]
    if len(ins) != 1 or len(g.output) != 1:
        raise _fail(path, f"expected one image input and one output, got inputs {ins}")
    producer = {o: n for n in g.node for o in n.output}
    consumers: Dict[str, List] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    convs = [n for n in g.node if n.op_type == "Conv"]
    n_res, rem = divmod(len(convs) - 6, 2)
    if rem or n_res < 1:
        raise _fail(path, f"{len(convs)} convolutions; expected 3 + 2 per residual block + 3")
    layers = transformer_layers(TransformerSpec(residual_blocks=n_res))
    strides = [2 if l.name in ("down1", "down2") else 1 for l in layers]
    tensors: Dict[str, np.ndarray] = {}
    eps = set()
    for c, layer, stride in zip(convs, layers, strides):
        w = vals.get(c.input[1])
        b = vals.get(c.input[2]) if len(c.input) > 2 and c.input[2] else None
        if w is None or b is None or w.ndim != 4:
            raise _fail(path, f"conv {c.name or c.output[0]}: expected weight and bias initializers")
        check_reflect_padded_conv(c, int(w.shape[-1]), layer.name, producer, vals, path, stride=stride)
        p = producer[c.input[0]]
        if layer.upsample:
            up = producer.get(p.input[0])
            if up is None or up.op_type not in ("Upsample", "Resize") or attr(up, "mode", "nearest") != "nearest":
                raise _fail(path, f"{layer.name}: expected a nearest x2 upsampling before its padding")
            scales = attr(up, "scales")
            if scales is None:
                s_in = up.input[1] if up.op_type == "Upsample" else (up.input[2] if len(up.input) > 2 else "")
                scales = vals.get(s_in)
            if scales is None or [float(v) for v in np.ravel(scales)] != [1.0, 1.0, 2.0, 2.0]:
                raise _fail(path, f"{layer.name}: expected constant upsampling scales [1, 1, 2, 2]")
        tensors[f"{layer.name}.weight"] = np.array(w, np.float32)
        tensors[f"{layer.name}.bias"] = np.array(b, np.float32)
        after = consumers.get(c.output[0], [])
        if layer.norm:
            if len(after) != 1 or after[0].op_type != "InstanceNormalization":
                raise _fail(path, f"conv for {layer.name}: expected an InstanceNormalization after it")
            n = after[0]
            gamma, beta = vals.get(n.input[1]), vals.get(n.input[2])
            if gamma is None or beta is None:
                raise _fail(path, f"norm after {layer.name}: expected scale and bias initializers")
            tensors[f"{layer.name}.norm.weight"] = np.array(gamma, np.float32)
            tensors[f"{layer.name}.norm.bias"] = np.array(beta, np.float32)
            eps.add(float(attr(n, "epsilon", 1e-5)))
            after = consumers.get(n.output[0], [])
            relu = [a for a in after if a.op_type == "Relu"]
            if bool(relu) != layer.relu:
                raise _fail(path, f"{layer.name}: expected {'a' if layer.relu else 'no'} ReLU after its norm")
        elif c.output[0] != g.output[0].name:
            raise _fail(path, "the last convolution must be the output (no activation after it)")
    if sum(n.op_type == "Add" for n in g.node) != n_res:
        raise _fail(path, f"expected {n_res} residual additions")
    if len(eps) != 1:
        raise _fail(path, f"expected one instance-norm epsilon, got {sorted(eps)}")
    spec = _spec_from_shapes(lambda n: tensors[f"{n}.weight"].shape, n_res, path).replace(
        norm_eps=float(str(np.float32(eps.pop()))))
    extra = {"imported_from": path.name, "format": "ONNX export of pytorch/examples fast_neural_style",
             "image_input": ins[0], "output": g.output[0].name}
    return WeightSet(tensors, "transformer", source=f"ONNX import of {path.name}", spec=spec,
                     extra=extra).validate(path)



# --------------------------------------------------------------------------- published files
# pytorch/examples' download_saved_models.py fetches this zip (candy.pth, mosaic.pth, udnie.pth,
# rain_princess.pth); the ONNX model zoo keeps its exports under one folder, each at opset 8 and 9.
PYTORCH_EXAMPLES_ZIP = "https://www.dropbox.com/s/lrvwfehqdcxoza8/saved_models.zip?dl=1"
ONNX_ZOO_URL = ("https://github.com/onnx/models/raw/main/validated/vision/style_transfer/"
                "fast_neural_style/model/{name}.onnx")
PUBLISHED: Dict[str, Dict[str, str]] = {}
for _style in ("candy", "mosaic", "udnie", "rain_princess"):
    PUBLISHED[_style] = {"source": "pytorch/examples", "url": PYTORCH_EXAMPLES_ZIP, "member": f"{_style}.pth"}
for _style in ("candy", "mosaic", "udnie", "rain-princess", "pointilism"):
    for _opset in (8, 9):
        PUBLISHED[f"{_style}-{_opset}"] = {"source": "ONNX model zoo",
                                           "url": ONNX_ZOO_URL.format(name=f"{_style}-{_opset}")}


def download_published(name: str) -> Path:
    """The local file of a published network (``PUBLISHED``), downloaded once into
    ``$RESTY_HOME/downloads`` (atomically; ``RESTY_OFFLINE=1`` forbids it).  For pytorch/examples'
    zip, the one checkpoint is taken out of it by its file name (nothing else is extracted)."""
    import zipfile
    from .images import atomic_path
    from .weights.sources import _offline, cache_dir, download
    entry = PUBLISHED.get(name)
    if entry is None:
        raise ArgumentError(f"{name}: not a published network; known: {', '.join(sorted(PUBLISHED))}")
    folder = cache_dir() / "downloads"
    member = entry.get("member")
    final = folder / (member or f"{name}.onnx")
    if final.is_file():
        return final
    if _offline():
        what = f"{entry['url']}, take {member} out of the zip," if member else entry["url"]
        raise WeightsError(f"{name}: not downloaded yet and RESTY_OFFLINE is set; fetch {what} yourself "
                           f"and run: resty models import {member or 'FILE'} --name {name}")
    folder.mkdir(parents=True, exist_ok=True)
    if member is None:
        return download(entry["url"], final)
    archive = download(entry["url"], folder / "pytorch_examples_saved_models.zip")
    try:
        with zipfile.ZipFile(archive) as z:
            found = [m for m in z.namelist() if m.rsplit("/", 1)[-1] == member]
            if not found:
                raise WeightsError(f"{archive}: has no {member} (members: {', '.join(z.namelist()[:8])})")
            with atomic_path(final) as tmp, z.open(found[0]) as src, open(tmp, "wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    out.write(chunk)
    except zipfile.BadZipFile:
        archive.unlink(missing_ok=True)         # a broken download must not block the next try
        raise WeightsError(f"{entry['url']}: the download is not a zip file; deleted it, try again") from None
    return final
