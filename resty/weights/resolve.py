"""``resolve_weights``: what a user typed (``random:SEED``, ``imagenet[:SOURCE]``, a path or a
:class:`WeightSet`) turned into a validated :class:`WeightSet`."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Tuple, Union

from resty.errors import WeightsError, one_line
from resty.specs import Preprocessing, TransformerSpec

from .cache import import_weights
from .format import ARCHITECTURES, WeightSet, _as_preprocessing, _check_expect, _fail, load_weights
from .importers import _load_any, _pth_reader
from .random_init import random_transformer, random_vgg
from .sniff import _sniff
from .sources import IMAGENET_SOURCES, _IMAGENET_ORDER, _download_source, _offline, cached_weights_path

__all__ = ["resolve_weights", "resolve_loss_network"]


_ACCEPTED = ("'random:SEED' (e.g. random:0), 'imagenet', 'imagenet:torchvision', 'imagenet:keras', "
             "or a path to a .safetensors or Keras .h5 weight file")
_KNOWN_SUFFIXES = (".safetensors", ".h5", ".hdf5", ".keras", ".pth", ".pt", ".bin")


def _check_prep(ws: WeightSet, preprocessing, where: object) -> WeightSet:
    """``ws``, unless it expects another preprocessing than the one asked for (never mix them)."""
    if preprocessing is not None and ws.preprocessing is not None:
        want = _as_preprocessing(preprocessing)
        if ws.preprocessing != want:
            raise _fail(where, f"these weights expect {ws.preprocessing.name!r} preprocessing, not "
                               f"{want.name!r}; never mix them (omit the preprocessing to use the weights' own)")
    return ws


def _source_matching(preprocessing) -> Tuple[str, ...]:
    """The sources a bare ``"imagenet"`` tries: those published with ``preprocessing`` (all without one)."""
    if preprocessing is None:
        return _IMAGENET_ORDER
    name = _as_preprocessing(preprocessing).name
    return tuple(s for s in _IMAGENET_ORDER if IMAGENET_SOURCES["vgg19"][s].preprocessing == name) or _IMAGENET_ORDER


def resolve_weights(weights, arch: str, *, preprocessing: Union[None, str, Preprocessing] = None,
                    spec: Optional[TransformerSpec] = None, allow_download: Optional[bool] = None) -> WeightSet:
    """Turn a weights argument into a validated :class:`WeightSet` for ``arch``.

    ``weights`` is one of:

    - ``"random:SEED"``: :func:`random_vgg` with ``preprocessing`` (default torchvision), or
      :func:`random_transformer` of ``spec`` (default ``TransformerSpec()``) when ``arch`` is
      ``"transformer"``;
    - ``"imagenet"``, ``"imagenet:keras"``, ``"imagenet:torchvision"``: published ImageNet
      VGG weights.  Looked for, in order: the canonical cache
      (``cache_dir()/weights/{arch}-{source}.safetensors``); a file Keras or torch.hub already
      downloaded (converted into the cache on first use); a download, through the registered
      downloaders then urllib, unless ``allow_download`` is False or ``RESTY_OFFLINE=1``.  A
      bare ``"imagenet"`` prefers Keras (readable without torch), or the source whose
      preprocessing equals ``preprocessing`` if one is given;
    - a path (``str`` or ``os.PathLike``) to a canonical ``.safetensors`` file, a Keras
      ``.h5`` file, or a torchvision ``.pth`` (read by the torch backend's reader: needs torch);
    - a :class:`WeightSet` (checked and returned).

    With ``preprocessing`` given, weights that expect a different one raise (never mix them).
    Every failure is a one-line :class:`WeightsError`.
    """
    if arch not in ARCHITECTURES:
        raise WeightsError(f"architecture: got {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    if isinstance(weights, WeightSet):
        ws = weights.validate("weights")
        _check_expect(ws, spec if (arch == "transformer" and spec is not None) else arch, "weights")
        return _check_prep(ws, preprocessing, "weights")
    if isinstance(weights, os.PathLike):
        return _resolve_path(Path(os.fspath(weights)), arch, preprocessing, spec)
    if not isinstance(weights, str):
        raise WeightsError(f"weights: got {type(weights).__name__}; accepted: {_ACCEPTED}")
    text = weights.strip()
    if not text:
        raise WeightsError(f"weights: got an empty string; accepted: {_ACCEPTED}")
    low = text.lower()
    if low.startswith("random:") or low == "random":
        seed_text = text.partition(":")[2].strip()
        if not re.fullmatch(r"\d+", seed_text):
            raise WeightsError(f"weights {weights!r}: the seed must be an integer >= 0, as in 'random:0'")
        if arch == "transformer":
            return random_transformer(spec or TransformerSpec(), int(seed_text))
        return random_vgg(arch, int(seed_text), preprocessing or "torchvision")
    if low == "imagenet" or low.startswith("imagenet:"):
        if arch == "transformer":
            raise WeightsError(f"weights {weights!r}: ImageNet weights exist only for vgg16 and vgg19, "
                               "not for the transformer")
        which = low.partition(":")[2]
        if which:
            if which not in IMAGENET_SOURCES[arch]:
                raise WeightsError(f"weights {weights!r}: unknown ImageNet source {which!r}; allowed: "
                                   f"{', '.join(IMAGENET_SOURCES[arch])}")
            sources: Tuple[str, ...] = (which,)
        else:
            sources = _source_matching(preprocessing)
        ws = _resolve_imagenet(arch, sources, allow_download)
        return _check_prep(ws, preprocessing, f"weights {weights!r}")
    path = Path(text).expanduser()
    if path.exists() or path.suffix.lower() in _KNOWN_SUFFIXES or os.sep in text or "/" in text:
        return _resolve_path(path, arch, preprocessing, spec)
    raise WeightsError(f"weights {weights!r}: not understood; accepted: {_ACCEPTED}")


def _resolve_path(path: Path, arch: str, preprocessing, spec) -> WeightSet:
    if not path.exists():
        raise _fail(path, "no such weight file")
    ws = _load_any(path, arch)
    if arch == "transformer" and spec is not None:
        _check_expect(ws, spec, path)
    return _check_prep(ws, preprocessing, path)


def _resolve_imagenet(arch: str, sources: Tuple[str, ...], allow_download: Optional[bool]) -> WeightSet:
    # 1. Canonical files already converted.
    for src in sources:
        p = cached_weights_path(arch, src)
        if p.exists():
            return load_weights(p, expect=arch)
    # 2. Files the frameworks downloaded before: convert once, then use the canonical copy.
    blocked = None
    for src in sources:
        raw = IMAGENET_SOURCES[arch][src].framework_cache_path()
        if raw.exists():
            if _sniff(raw) == "torch" and _pth_reader() is None:
                blocked = raw
                continue
            return load_weights(import_weights(raw, arch, overwrite=True), expect=arch)
    # 3. Download.
    first = IMAGENET_SOURCES[arch][sources[0]]
    label = f"ImageNet {arch.upper()} weights ({'/'.join(sources)})"
    fix = f"download {first.url} and run `resty weights import PATH`"
    if first.source == "torchvision" and _pth_reader() is None:
        fix += " where torch is installed (a .pth is a pickle only torch reads), or use 'imagenet:keras'"
    if blocked is not None:
        fix = f"found {blocked}, but reading a .pth needs torch (pip install torch); or {fix}"
    if allow_download is False or (allow_download is None and _offline()):
        raise WeightsError(one_line(f"{label} are not cached and cannot be downloaded here (offline); {fix}"))
    errors = []
    for src in sources:
        entry = IMAGENET_SOURCES[arch][src]
        if entry.filename.endswith(".pth") and _pth_reader() is None:
            errors.append(f"{src}: reading a .pth needs torch")
            continue
        try:
            raw, temporary = _download_source(entry)
        except WeightsError as exc:
            errors.append(f"{src}: {exc}")
            continue
        try:
            return load_weights(import_weights(raw, arch, overwrite=True), expect=arch)
        finally:
            if temporary:
                Path(raw).unlink(missing_ok=True)
    raise WeightsError(one_line(f"{label} are not cached and could not be downloaded "
                                 f"({'; '.join(errors)}); {fix}"))


def resolve_loss_network(weights, arch: str, preprocessing: Union[None, str, Preprocessing] = None) -> WeightSet:
    """The one rule both backends use for a loss network's weights argument.

    ``preprocessing`` (usually the preset's) applies to ``random:SEED`` (the random weights get
    that convention) and to a bare ``imagenet`` (which then picks the source published with that
    preprocessing: torchvision or Keras/Caffe).  An explicit ``imagenet:SOURCE``, a file or a
    WeightSet keeps its own preprocessing.
    """
    if isinstance(weights, str):
        low = weights.strip().lower()
        if low.startswith("random") or low == "imagenet":
            return resolve_weights(weights, arch, preprocessing=preprocessing)
    return resolve_weights(weights, arch)
