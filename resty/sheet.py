"""Contact sheets: one photo in every style of a multi-style network, labelled.

``resty sheet photo.jpg -o sheet.png --model multistyle26`` (or :func:`make_sheet` with either
backend's ``FastStylizer``).  The grid is computed once, here (:func:`sheet_layout`); the
stylizer only stylizes; Pillow draws the tiles and their labels; the file is written atomically
(:func:`resty.images.save_image`).  Each tile is the photo in style ``i``, labelled ``i``; the
first tile is the photo itself, labelled ``photo`` (``include_photo=False`` leaves it out).
Every tile's Sobel edge correlation with the photo (:func:`resty.metrics.edge_correlation`) is
kept in :attr:`Sheet.edge_correlations`, so a style that keeps the photo's structure is easy
to pick.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ArgumentError

__all__ = ["SheetLayout", "Sheet", "sheet_layout", "make_sheet", "style_count", "add_parser", "run_cli"]

PHOTO_LABEL = "photo"


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on a sheet of ``n_tiles`` tiles of ``tile_w``×``tile_h`` pixels:
    ``columns``×``rows`` cells, each the tile with a ``label_h`` px label strip under it,
    ``pad`` px between cells and around the sheet."""
    n_tiles: int
    columns: int
    rows: int
    tile_w: int
    tile_h: int
    pad: int
    label_h: int

    @property
    def width(self) -> int:
        return self.columns * self.tile_w + (self.columns + 1) * self.pad

    @property
    def height(self) -> int:
        return self.rows * (self.tile_h + self.label_h) + (self.rows + 1) * self.pad

    def tile_xy(self, i: int) -> Tuple[int, int]:
        """Top-left pixel of tile ``i`` (row-major)."""
        if not 0 <= i < self.n_tiles:
            raise IndexError(f"tile {i} of {self.n_tiles}")
        r, c = divmod(i, self.columns)
        return self.pad + c * (self.tile_w + self.pad), self.pad + r * (self.tile_h + self.label_h + self.pad)

    def label_box(self, i: int) -> Tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of tile ``i``'s label strip."""
        x, y = self.tile_xy(i)
        return x, y + self.tile_h, x + self.tile_w, y + self.tile_h + self.label_h


def sheet_layout(n_tiles: int, tile_w: int, tile_h: int, *, columns: Optional[int] = None, pad: int = 6,
                 label_h: Optional[int] = None) -> SheetLayout:
    """The grid for ``n_tiles`` tiles: ``columns`` given, or the count that makes the sheet
    closest to square (labels included); ``label_h`` defaults to a size readable at the tile's
    scale (14 px at 128 px tiles, up to 28 px)."""
    for name, v in (("n_tiles", n_tiles), ("tile_w", tile_w), ("tile_h", tile_h)):
        if int(v) != v or v < 1:
            raise ArgumentError(f"sheet: {name} must be a positive integer, got {v!r}")
    if label_h is None:
        label_h = int(min(28, max(14, round(min(tile_w, tile_h) * 0.11))))
    if columns is None:
        cell_w, cell_h = tile_w + pad, tile_h + label_h + pad
        columns = min(range(1, n_tiles + 1),
                      key=lambda c: (abs(math.log(c * cell_w / (math.ceil(n_tiles / c) * cell_h))), c))
    elif int(columns) != columns or columns < 1:
        raise ArgumentError(f"sheet: columns must be a positive integer, got {columns!r}")
    columns = int(min(columns, n_tiles))
    return SheetLayout(int(n_tiles), columns, math.ceil(n_tiles / columns), int(tile_w), int(tile_h), int(pad),
                       int(label_h))


@dataclass
class Sheet:
    """A composed contact sheet: ``image`` (H×W×3 uint8), its ``layout``, one label per tile,
    the style of each tile (None for the photo), and each style's edge correlation with the photo."""
    image: np.ndarray
    layout: SheetLayout
    labels: List[str]
    styles: List[Optional[int]]
    edge_correlations: Dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write the sheet atomically (the format follows the extension)."""
        from .images import save_image
        return save_image(self.image, path, overwrite=overwrite)


def style_count(stylizer: Any) -> int:
    """How many styles ``stylizer`` (a FastStylizer of either backend) has: the rows of its
    conditional norm's tables, or 1."""
    preset = getattr(stylizer, "preset", None)
    spec = getattr(preset, "transformer", None)
    if spec is None or not hasattr(stylizer, "stylize"):
        raise ArgumentError("make_sheet: expected a FastStylizer (resty_torch or resty_tf), e.g. "
                            "FastStylizer.load('multistyle26')")
    return int(spec.num_styles) if spec.conditional else 1


def _font(px: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=px)      # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def make_sheet(stylizer: Any, photo: Any, *, size: Optional[int] = 256, styles: Optional[Sequence[int]] = None,
               columns: Optional[int] = None, include_photo: bool = True, pad: int = 6,
               background: Tuple[int, int, int] = (255, 255, 255),
               callback: Optional[Callable[[int, int], None]] = None) -> Sheet:
    """The contact sheet of ``photo`` in each style of ``stylizer`` (a ``FastStylizer`` of
    either backend).

    ``photo``: a path, PIL image or array; resized so its longest side is ``size`` (None: as it
    is).  ``styles``: the indices to show (default: all of them, 0 to N-1).  ``columns``:
    default: the sheet closest to square.  ``callback(done, total)`` after each style.
    Returns a :class:`Sheet`; ``sheet.save(path)`` writes it."""
    from PIL import Image, ImageDraw

    from .images import load_image, resize_longest, to_uint8
    from .metrics import edge_correlation

    n = style_count(stylizer)
    x = load_image(photo, name="photo")
    if size is not None:
        if int(size) != size or size < 8:
            raise ArgumentError(f"sheet: size must be an integer >= 8, got {size!r}")
        x = resize_longest(x, int(size))
    if styles is None:
        styles = list(range(n))
    styles = [int(s) for s in styles]
    bad = [s for s in styles if not 0 <= s < n]
    if bad:
        raise ArgumentError(f"sheet: style {bad[0]} out of range; this network has styles 0 to {n - 1}")
    if not styles:
        raise ArgumentError("sheet: no styles given")

    h, w = x.shape[:2]
    tiles: List[np.ndarray] = [x] if include_photo else []
    labels: List[str] = [PHOTO_LABEL] if include_photo else []
    which: List[Optional[int]] = [None] if include_photo else []
    edges: Dict[int, float] = {}
    t0 = time.perf_counter()
    for k, s in enumerate(styles):
        y = stylizer.stylize(x, style=s) if n > 1 else stylizer.stylize(x)
        edges[s] = edge_correlation(x, y)
        tiles.append(y)
        labels.append(str(s))
        which.append(s)
        if callback is not None:
            callback(k + 1, len(styles))
    seconds = time.perf_counter() - t0

    lay = sheet_layout(len(tiles), w, h, columns=columns, pad=pad)
    canvas = Image.new("RGB", (lay.width, lay.height), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(8, lay.label_h - 4))
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        canvas.paste(Image.fromarray(to_uint8(tile)), lay.tile_xy(i))
        left, top, right, bottom = lay.label_box(i)
        draw.text(((left + right) / 2, (top + bottom) / 2), label, fill=(0, 0, 0), font=font, anchor="mm")
    return Sheet(np.asarray(canvas, np.uint8).copy(), lay, labels, which, edges, seconds)


# --------------------------------------------------------------------------- CLI
def add_parser(sub) -> None:
    """Register ``resty sheet`` on the CLI's subparsers."""
    from .cli import _add_common, _positive_int
    p = sub.add_parser("sheet", help="contact sheet: a photo in every style of a multi-style network",
                       description="Stylize PHOTO in each style of a multi-style network (e.g. multistyle26) and "
                                   "write one labelled contact sheet (the photo first, then style 0, 1, ...), "
                                   "written atomically.")
    p.add_argument("photo", metavar="PHOTO", help="the photo")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="the sheet (.png, .jpg, ...)")
    p.add_argument("--model", default="multistyle26", metavar="NAME|FILE",
                   help="multi-style network: a model name (`resty models list`) or a .safetensors file "
                        "(default multistyle26)")
    p.add_argument("--size", type=_positive_int, default=256,
                   help="longest side of each tile in pixels (default 256)")
    p.add_argument("--columns", type=_positive_int, default=None, help="tiles per row (default: a square-ish sheet)")
    _add_common(p, weights=False)
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    from .cli import UsageError, _backend, _check_image, _check_image_suffix, _check_output, _check_writable, \
        _fmt_seconds, _note, _say
    out = Path(args.out).expanduser()
    _check_image_suffix(out)
    _check_output(out, args.overwrite)
    _check_writable(out)
    if args.size < 8:
        raise UsageError(f"--size {args.size}: use at least 8 px")
    photo = _check_image(args.photo, "photo")
    model = args.model if not os.path.exists(os.path.expanduser(args.model)) else os.path.expanduser(args.model)
    # A model name is resolved by load (a bad one: one line naming the known models).
    stylizer = _backend(args.backend).FastStylizer.load(model, device=args.device)
    n = style_count(stylizer)
    if n < 2:
        _note(f"note: {args.model} has one style; the sheet shows it beside the photo")

    def tick(done, total):
        if not args.quiet:
            sys.stderr.write(f"\rresty sheet: style {done}/{total}" + ("\n" if done == total else ""))
            sys.stderr.flush()

    sheet = make_sheet(stylizer, photo, size=args.size, columns=args.columns, callback=tick)
    sheet.save(out, overwrite=args.overwrite)
    _say(f"{args.photo} -> {out} ({n} style{'s' if n != 1 else ''}, {sheet.layout.columns}×{sheet.layout.rows} "
         f"tiles, {_fmt_seconds(sheet.seconds)})")
    return 0

