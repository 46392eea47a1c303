"""What makes two training runs the same run: the identity stored in every checkpoint.

A run is identified by everything that changes the weights it reaches at a given step: the
preset's loss, network and optimizer definitions, the style image(s) and their blend weights,
the loss network's weights, the training data, and the settings (batch size, crop size, seed,
learning rate, style size).  ``fit(resume=True)`` refuses a checkpoint of another identity and
names what differs; a new run refuses a checkpoint folder that already holds checkpoints, and
pruning only deletes the run's own checkpoints (resty.checkpoints).

Not part of the identity, because they do not change any step's result: the total number of
steps (a resumed run may go further: the learning rate has no schedule), the backend, device,
dtype and number of processes (a run resumes in either backend and under any process count),
loader workers, logging, checkpoint cadence, and the preset's name and prose.

Everything here is computed from the inputs every process sees alike (the listed items, the
decoded styles), never from a process's shard, so every rank of a distributed run agrees."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["IDENTITY_VERSION", "preset_identity", "style_identity", "data_identity", "loss_network_identity",
           "run_id", "identity_differences"]

#: Version of the identity layout (a checkpoint with another version is compared part by part).
IDENTITY_VERSION = 1

#: The preset's training fields that are either overridden by ``fit``'s arguments (recorded in
#: the settings instead) or do not change the result.
_TRAINING_NOT_COMPARED = ("image_size", "batch_size", "epochs", "steps", "seed", "num_workers",
                          "checkpoint_every", "keep_checkpoints", "log_every", "style_size")


def _short(h: Optional[str]) -> str:
    return f"{h[:12]}..." if isinstance(h, str) else "none"


def preset_identity(preset_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """The parts of a preset's JSON (``Preset.to_dict()``) that change fast training: the loss
    network, the fast loss, the transformer and the optimizer (its learning rate is in the
    settings: ``fit(lr=...)`` overrides it)."""
    out = {k: preset_dict.get(k) for k in ("vgg", "imagenet_source", "fast_loss", "transformer")}
    training = {k: v for k, v in dict(preset_dict.get("training") or {}).items() if k not in _TRAINING_NOT_COMPARED}
    if not training.get("temporal_weight"):     # off: the identity of runs made before the term existed
        for k in ("temporal_weight", "temporal_flow", "temporal_noise"):
            training.pop(k, None)
    adam = dict(training.pop("adam", None) or {})
    adam.pop("lr", None)
    training["adam"] = adam
    out["training"] = training
    return json.loads(json.dumps(out, sort_keys=True))     # plain JSON values (tuples -> lists)


def style_identity(styles: Sequence[np.ndarray], blend: Sequence[float]) -> Dict[str, Any]:
    """A content hash of the decoded style pixels (what the run trains towards, however the
    image was given: a path, a PIL image or an array) and the normalised blend weights."""
    h = hashlib.sha256()
    for s in styles:
        a = np.ascontiguousarray(np.asarray(s, np.float32))
        h.update(f"{a.shape}\n".encode())
        h.update(a.tobytes())
    return {"count": len(styles), "hash": h.hexdigest(), "weights": [float(w) for w in blend]}


def data_identity(source: Any, items: Sequence[Any]) -> Dict[str, Any]:
    """The number of training items and a hash of their names and file sizes (paths relative
    to the folder when a folder was given, so the folder may move), or of the pixels of
    in-memory images."""
    root = None
    if isinstance(source, (str, os.PathLike)) and Path(os.fspath(source)).is_dir():
        root = Path(os.fspath(source))
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, str):
            name = Path(os.path.relpath(item, root)).as_posix() if root is not None else item
            try:
                size = os.stat(item).st_size
            except OSError:
                size = -1
            h.update(f"file|{name}|{size}\n".encode())
        else:
            a = np.ascontiguousarray(np.asarray(item))
            h.update(f"array|{a.dtype.str}|{a.shape}\n".encode())
            h.update(a.tobytes())
    return {"n_items": len(items), "hash": h.hexdigest()}


def loss_network_identity(weights: Any, arch: str, preprocessing: Any) -> Dict[str, Any]:
    """``{"weights": how they were given, "fingerprint": ...}`` of the loss network's weights.
    The weights are resolved as the backends resolve them (resty.weights) and their tensors
    hashed, so ``random:0`` and the same numbers given as a WeightSet or a file are the same
    weights; seeded random weights, a pure function of (arch, preprocessing, seed), are hashed
    once per process."""
    from .weights import WeightSet
    from .weights.resolve import resolve_loss_network

    prep = getattr(preprocessing, "name", preprocessing)
    if isinstance(weights, WeightSet):
        label = f"<WeightSet {weights.source or weights.architecture}>"
    elif isinstance(weights, (str, os.PathLike)):
        label = os.fspath(weights)
    else:
        label = f"<{type(weights).__name__}>"
    m = re.fullmatch(r"\s*random\s*:\s*(\d+)\s*", label) if isinstance(weights, str) else None
    if m:
        fingerprint = _random_fingerprint(arch, prep, int(m.group(1)))
    else:
        fingerprint = _fingerprint(resolve_loss_network(weights, arch, preprocessing))
    return {"weights": label, "fingerprint": fingerprint}


def _fingerprint(ws: Any) -> str:
    prep = getattr(ws.preprocessing, "name", ws.preprocessing)
    return hashlib.sha256(f"{ws.architecture}|{prep}|{ws.fingerprint()}".encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def _random_fingerprint(arch: str, preprocessing: Optional[str], seed: int) -> str:
    from .weights.resolve import resolve_loss_network
    return _fingerprint(resolve_loss_network(f"random:{seed}", arch, preprocessing))


def _compared(identity: Mapping[str, Any]) -> Dict[str, Any]:
    """What two identities must share (how the loss network's weights were named is left out:
    ``imagenet`` and the file it resolves to are the same weights)."""
    out = {k: v for k, v in identity.items() if k not in ("version", "loss_network", "total_steps")}
    out["loss_network"] = _part(identity, "loss_network").get("fingerprint")
    return out


def run_id(identity: Mapping[str, Any]) -> str:
    """A short digest of an identity: equal for checkpoints of the same run."""
    text = json.dumps(_compared(identity), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(d, Mapping):
        out: Dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _setting_diffs(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    return [f"{k}: checkpoint {old.get(k)!r}, this run {v!r}" for k, v in new.items() if old.get(k) != v]


def _part(identity: Mapping[str, Any], key: str) -> Dict[str, Any]:
    """One part of an identity as a dict (a checkpoint's JSON may hold anything)."""
    value = identity.get(key)
    return dict(value) if isinstance(value, Mapping) else {}


def identity_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """What differs between a checkpoint's identity ``old`` and this run's ``new``, each as a
    phrase completing "the checkpoint was made with ..."; empty when they are the same run."""
    out: List[str] = []
    po, pn = _flatten(_part(old, "preset")), _flatten(_part(new, "preset"))
    keys = [k for k in sorted(set(po) | set(pn)) if po.get(k) != pn.get(k)]
    if keys:
        more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
        out.append(f"a different preset ({keys[0]}: checkpoint {po.get(keys[0])!r}, this run "
                   f"{pn.get(keys[0])!r}{more})")
    so, sn = _part(old, "style"), _part(new, "style")
    # A Johnson run's style part counts its images ("count"); AdaIN's is a folder listing ("n_items").
    co, cn = (p.get("count", p.get("n_items")) for p in (so, sn))
    if (co, so.get("hash")) != (cn, sn.get("hash")):
        noun = "a different style image" if cn == 1 and co == 1 else "different style images"
        out.append(f"{noun} (checkpoint {co} image(s) {_short(so.get('hash'))}, "
                   f"this run {cn} image(s) {_short(sn.get('hash'))})")
    elif so.get("weights") != sn.get("weights"):
        out.append(f"different style blend weights (checkpoint {so.get('weights')}, this run {sn.get('weights')})")
    lo, ln = _part(old, "loss_network"), _part(new, "loss_network")
    if lo.get("fingerprint") != ln.get("fingerprint"):
        out.append(f"different loss-network weights (checkpoint {lo.get('weights')!r} {_short(lo.get('fingerprint'))}, "
                   f"this run {ln.get('weights')!r} {_short(ln.get('fingerprint'))})")
    do, dn = _part(old, "data"), _part(new, "data")
    if do != dn:
        out.append(f"different training data (checkpoint {do.get('n_items')} items {_short(do.get('hash'))}, "
                   f"this run {dn.get('n_items')} items {_short(dn.get('hash'))})")
    diffs = _setting_diffs(_part(old, "settings"), _part(new, "settings"))
    if diffs:
        out.append(f"different settings ({', '.join(diffs)})")
    return out
