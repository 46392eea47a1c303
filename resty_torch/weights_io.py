"""torch-only weight I/O: the torchvision ``.pth`` reader and the torch.hub downloader.

:func:`read_pth` is Resty's one ``.pth`` reader.  A ``.pth`` file is a pickle;
``torch.load(..., weights_only=True)`` refuses anything but tensors and plain containers, so a
malicious file cannot run code.  Both hooks are registered with :mod:`resty.weights` when
``resty_torch`` is imported, so ``resolve_weights`` (and the CLI) can read torchvision files and
download into torch.hub's cache; a process without ``resty_torch`` (the TF backend) reaches
:func:`read_pth` through :func:`resty.backends.load_backend_module`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

from resty import weights as _w
from resty.errors import WeightsError, one_line

__all__ = ["read_pth", "torch_hub_downloader", "register"]


def _to_numpy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype == torch.bfloat16:    # NumPy has no bfloat16
            t = t.float()
        return t.numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v) for k, v in obj.items()}
    return obj


def read_pth(path) -> Dict[str, np.ndarray]:
    """Read a torch state-dict file into ``{key: np.ndarray}`` without unpickling code
    (a ``{"state_dict": ...}`` wrapper is unwrapped)."""
    import pickle
    import warnings
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols on the way to refusing a file: the refusal is
            # the message, said once below.
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message ends in advice to re-run with weights_only=False, i.e. to run the
        # file's code: Resty never does, so it is not repeated.
        raise WeightsError(f"{path}: not a weights-only PyTorch file (it holds pickled Python objects, which "
                           "can run code); it was not loaded") from None
    except Exception as exc:   # torch raises zip/Runtime errors of many kinds for a broken file
        why = one_line(exc)[:200] or type(exc).__name__
        try:
            if Path(path).stat().st_size == 0:
                why = "the file is empty"
        except OSError:
            pass
        raise WeightsError(one_line(f"{path}: cannot read the PyTorch file ({why})")) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsError(one_line(f"{path}: expected a state dict (a mapping of names to tensors), "
                                    f"got {type(state).__name__}"))
    return {str(k): _to_numpy(v) for k, v in state.items()}


def torch_hub_downloader(source) -> Optional[Path]:
    """Download torchvision files through torch.hub into its cache, checking the SHA-256
    prefix in the file name (torch.hub's own check).  Declines other sources."""
    if getattr(source, "source", None) != "torchvision":
        return None
    dest = Path(source.framework_cache_path())
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(source.url, str(dest), hash_prefix=source.sha256_prefix, progress=True)
    return dest


def register() -> None:
    """Register :func:`read_pth` and :func:`torch_hub_downloader` with :mod:`resty.weights`."""
    _w.register_pth_reader(read_pth)
    _w.register_downloader(torch_hub_downloader)
