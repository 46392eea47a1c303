"""Training checkpoints: a safetensors file of tensors beside a JSON file of metadata, written
atomically, named by step, readable by either backend (Adam's state in a canonical layout)."""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from .errors import RestyError, one_line
from .images import atomic_path


def _io_errors() -> tuple:
    """What reading or writing a file can raise: OSError, and safetensors' own error (it is no
    OSError), imported lazily as everything of safetensors here."""
    try:
        from safetensors import SafetensorError
    except ImportError:                   # pragma: no cover - older safetensors
        return (OSError,)
    return (OSError, SafetensorError)

# =========================================================================== checkpoints
#: Version of the checkpoint layout (bumped on incompatible changes).
CHECKPOINT_FORMAT = 1
_STEM_RE = re.compile(r"^step-(\d{8,})$")


def checkpoint_stem(step: int) -> str:
    return f"step-{int(step):08d}"


def list_checkpoints(directory: Union[str, os.PathLike]) -> List[Tuple[int, Path]]:
    """Complete checkpoints in ``directory`` as ``[(step, json_path)]``, oldest first.  A
    checkpoint is complete when its JSON (written last) and its safetensors file both exist."""
    d = Path(os.fspath(directory))
    if not d.is_dir():
        return []
    out = []
    for p in d.glob("step-*.json"):
        m = _STEM_RE.match(p.stem)
        if m and p.with_suffix(".safetensors").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(directory: Union[str, os.PathLike]) -> Optional[Path]:
    """The JSON path of the newest complete checkpoint in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(directory: Union[str, os.PathLike], step: int, tensors: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any], keep: int = 2, run_id: Optional[str] = None) -> Path:
    """Write ``step-{N:08d}.safetensors`` (``tensors``: names prefixed ``net.`` for the network's
    canonical parameters and ``opt.`` for optimizer state) then ``step-{N:08d}.json`` (``meta``:
    step, epoch, position, RNG states, history, preset JSON, ... — JSON-able), each atomically;
    the JSON goes last so a crash in between leaves no half checkpoint.  Keeps the newest
    ``keep`` checkpoints of the run ``run_id`` (stored in both files; resty.run_identity):
    another run's checkpoints are never deleted.  A failed write (a full disk) is a one-line
    RestyError naming the file; the checkpoints written before are left as they were.
    Returns the JSON path."""
    from safetensors.numpy import save_file

    d = Path(os.fspath(directory))
    stem = checkpoint_stem(step)
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    header = {"format": "resty-checkpoint", "version": str(CHECKPOINT_FORMAT)}
    if run_id is not None:
        header["run_id"] = str(run_id)
    record = dict(meta)
    record.setdefault("step", int(step))
    record["format"] = CHECKPOINT_FORMAT
    if run_id is not None:
        record["run_id"] = str(run_id)
    text = json.dumps(record, sort_keys=True, default=_json_default)
    target = d / f"{stem}.safetensors"
    try:
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, overwrite=True) as tmp:
            save_file(arrays, str(tmp), metadata=header)
        target = d / f"{stem}.json"
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except (RestyError,) + _io_errors() as exc:
        if target.suffix == ".json":        # no JSON: the new tensors alone are no checkpoint
            with contextlib.suppress(OSError):
                (d / f"{stem}.safetensors").unlink()
        cause = exc.__context__ if isinstance(exc, RestyError) and isinstance(exc.__context__, OSError) else exc
        reason = one_line(getattr(cause, "strerror", None) or cause) or type(cause).__name__
        raise RestyError(f"{target}: cannot write checkpoint ({reason}); the checkpoints written before "
                         "are left as they were") from None
    mine = [p for _, p in list_checkpoints(d) if checkpoint_run_id(p) == run_id]
    for old in mine[:-max(1, int(keep))]:
        for p in (old, old.with_suffix(".safetensors")):
            try:
                p.unlink()
            except OSError:
                pass
    return d / f"{stem}.json"


def checkpoint_run_id(path: Union[str, os.PathLike]) -> Optional[str]:
    """The run id stored in a checkpoint's safetensors header (read without its tensors), or
    None (no id: written by an older Resty, or unreadable)."""
    from safetensors import safe_open

    p = Path(os.fspath(path)).with_suffix(".safetensors")
    try:
        with safe_open(str(p), framework="numpy") as f:
            return (f.metadata() or {}).get("run_id")
    except Exception:                     # noqa: BLE001 - any unreadable header: no id
        return None


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def load_checkpoint(path: Union[str, os.PathLike]) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint given by its JSON or safetensors path, its stem, or a
    directory (the newest checkpoint in it)."""
    from safetensors.numpy import load_file

    p = Path(os.fspath(path))
    if p.is_dir():
        latest = latest_checkpoint(p)
        if latest is None:
            raise RestyError(f"{p}: no checkpoint in this folder")
        p = latest
    p = p.with_suffix(".json") if p.suffix in (".safetensors", "") else p
    st = p.with_suffix(".safetensors")
    if not p.is_file() or not st.is_file():
        raise RestyError(f"{p}: checkpoint is missing or incomplete (need {p.name} and {st.name})")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
        tensors = load_file(str(st))
    except (ValueError,) + _io_errors() as exc:
        raise RestyError(f"{p}: cannot read checkpoint ({one_line(exc) or type(exc).__name__})") from None
    if not isinstance(meta, dict) or isinstance(meta.get("step"), bool) or not isinstance(meta.get("step"), int):
        what = ("is null" if meta is None else f"is a JSON {type(meta).__name__}") if not isinstance(meta, dict) \
            else "has no integer step"
        raise RestyError(f"{p}: cannot read checkpoint (its metadata {what}: not a checkpoint)")
    return tensors, meta


def adam_state_to_tensors(step: int, exp_avg: Mapping[str, np.ndarray],
                          exp_avg_sq: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Adam state in the backend-neutral checkpoint layout: ``opt.step`` (int64, shape (1,)),
    ``opt.{param}.exp_avg`` and ``opt.{param}.exp_avg_sq`` keyed by canonical parameter names
    (so the moments move with the weights between backends)."""
    out = {"opt.step": np.asarray([int(step)], dtype=np.int64)}   # shape (1,): safetensors has no 0-d
    for name, m in exp_avg.items():
        out[f"opt.{name}.exp_avg"] = np.asarray(m)
        out[f"opt.{name}.exp_avg_sq"] = np.asarray(exp_avg_sq[name])
    return out


def adam_state_from_tensors(tensors: Mapping[str, np.ndarray]) -> Tuple[int, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Inverse of :func:`adam_state_to_tensors` (ignores non-``opt.`` entries)."""
    step = int(np.asarray(tensors["opt.step"]).reshape(-1)[0]) if "opt.step" in tensors else 0
    m, v = {}, {}
    for k, a in tensors.items():
        if k.startswith("opt.") and k.endswith(".exp_avg"):
            m[k[4:-len(".exp_avg")]] = a
        elif k.startswith("opt.") and k.endswith(".exp_avg_sq"):
            v[k[4:-len(".exp_avg_sq")]] = a
    return step, m, v
