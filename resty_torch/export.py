"""What ``resty convert`` (:func:`resty.backends.convert_model`) needs from PyTorch: the
transformer's outputs to check a converted model against, the ``.pt`` state-dict file, and
the ``torch.onnx.export`` graph.

The framework-free core reaches this module by name through
``resty.backends.load_backend_module``; ``resty_tf.export`` has the same class with the same
methods.  Images cross this boundary as NCHW float32 NumPy arrays in both backends.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np
import torch

from resty.errors import RestyError

from .transformer import TransformerNet

NATIVE_SUFFIXES = (".pt", ".pth")            # what save_native writes
_NATIVE_FORMAT = "resty-transformer-torch"    # the payload's "format" field
EXPORT_FORMATS = ("onnx",)


class Exporter:
    """A trained transformer (canonical ``resty.weights.WeightSet`` ``ws``) in PyTorch, on the
    CPU, in eval mode.  ``preset`` (the model's preset) is unused here (the TF twin needs it)."""

    def __init__(self, ws, preset=None):
        self.ws = ws
        self.net = TransformerNet(ws.spec, weights=ws, device="cpu")
        self.net.eval()

    def outputs(self, probes: Sequence[np.ndarray]) -> List[np.ndarray]:
        """The network on each NCHW probe (the reference a converted model is checked against)."""
        with torch.no_grad():
            return [self.net(torch.from_numpy(np.ascontiguousarray(p))).numpy() for p in probes]

    def canonical(self):
        """The WeightSet with this network's tensors (a ``.safetensors`` re-saved through torch)."""
        tensors = {k: np.asarray(v) for k, v in self.net.state_dict_canonical().items()}
        return dataclasses.replace(self.ws, tensors=tensors)

    def save_native(self, path) -> None:
        """``{"state_dict", "spec", "extra", "format"}`` saved with ``torch.save`` (loadable with
        ``weights_only=True``)."""
        payload = {"state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                   "spec": self.ws.spec.to_json(), "extra": json.dumps(self.ws.extra, sort_keys=True),
                   "format": _NATIVE_FORMAT}
        torch.save(payload, str(path))

    def load_native(self, path) -> Callable[[np.ndarray], np.ndarray]:
        """The file written by :meth:`save_native`, read back into a fresh network: NCHW -> NCHW."""
        back = torch.load(str(path), weights_only=True)
        net = TransformerNet(self.ws.spec, weights=None, device="cpu")
        net.load_state_dict(back["state_dict"])
        net.eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return net(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        return run

    def export(self, fmt: str, path, *, opset: int = 17, probe: np.ndarray = None) -> None:
        """``fmt="onnx"``: ``torch.onnx.export`` of the network (input ``image``, output
        ``stylized``, dynamic batch/height/width), traced on ``probe`` (NCHW)."""
        if fmt not in EXPORT_FORMATS:
            raise RestyError(f"the torch backend exports {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
        x = torch.from_numpy(np.ascontiguousarray(probe))
        kwargs = dict(input_names=["image"], output_names=["stylized"], opset_version=int(opset),
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                    "stylized": {0: "batch", 2: "height", 3: "width"}})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(self.net, (x,), str(Path(path)), dynamo=False, **kwargs)
            except TypeError:   # torch without the dynamo switch
                torch.onnx.export(self.net, (x,), str(Path(path)), **kwargs)

    def load_export(self, path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
        """An exported model read back: NCHW -> NCHW (ONNX through onnxruntime's CPU provider)."""
        if fmt not in EXPORT_FORMATS:
            raise RestyError(f"the torch backend exports {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
        import onnxruntime as ort
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"image": np.ascontiguousarray(x, np.float32)})[0]
