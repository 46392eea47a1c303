"""Image input and output: the one place where pixels are decoded, resized and written.

Every backend receives images from here, already decoded and resized, as NumPy float32
arrays of shape H×W×3 with values in [0, 1] (RGB). Doing this once, in the core, with
Pillow is deliberate: TensorFlow's JPEG decoder differs from Pillow on most pixels and
``tf.image.resize`` does not antialias while torchvision does, so letting each framework
decode or resize would make the two backends disagree before the first convolution
(docs/ARCHITECTURE.md, pitfalls).

Conventions
-----------
* Arrays are H×W×C (channels last), float32, RGB, values in [0, 1].
* Transparency is removed by compositing over **white** (the usual background of a page or
  a viewer), not by dropping the alpha channel: dropping it would expose whatever colour
  happens to be stored under fully transparent pixels (often black or garbage).
* EXIF orientation is applied, so a phone photo comes out the way viewers show it.
* 16-bit grayscale (Pillow modes ``I;16*`` and ``I``) keeps its 16-bit precision.
  Pillow itself reduces 16-bit-per-channel *RGB* PNGs to 8 bits while decoding; that
  precision cannot be recovered here without a second decoder.
* Resizing is Lanczos (antialiased) on float32 data, one channel at a time (Pillow mode
  "F"), so no 8-bit quantisation happens between decode and network.
* Errors about bad input are :class:`resty.errors.ImageError` (a ``ValueError``), one line,
  starting with the file name (or ``<array>`` / ``<PIL image>`` / the ``name=`` given).

Outputs are written atomically (:func:`atomic_path`): a crash or an exception while
writing never leaves a half-written file under the final name, and an existing file is
never replaced unless asked for.
"""

from __future__ import annotations

import contextlib
import functools
import errno
import os
import secrets
import struct
import threading
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resty.errors import ImageError, OutputExistsError, OutputWriteError, RestyError, one_line

__all__ = [
    "MAX_PIXELS",
    "SAVE_FORMATS",
    "load_image",
    "resize_longest",
    "resize_to",
    "random_crop",
    "resize_short_then_crop",
    "to_uint8",
    "save_image",
    "atomic_path",
    "atomic_write_bytes",
    "preserve_color",
    "match_histogram",
    "sample_images",
    "SAMPLE_CONTENT",
    "SAMPLE_STYLES",
]

#: Default limit on width × height. It is Pillow's own hard limit
#: (2 × ``PIL.Image.MAX_IMAGE_PIXELS``): beyond it Pillow calls an image a decompression
#: bomb. Override per call with ``max_pixels=`` (``None`` disables the check).
MAX_PIXELS = 178_956_970

#: File extensions :func:`save_image` accepts, and the Pillow format each one means.
SAVE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

PathLike = Union[str, "os.PathLike[str]"]

# Floats a hair outside [0, 1] (e.g. 1.0000001 after arithmetic in float32) are rounding,
# not a wrong convention; anything further out is refused so that a [0, 255] float image
# is caught instead of being silently clipped to white.
_FLOAT_TOLERANCE = 1e-6

# Pillow enforces its decompression-bomb limit in a module global. When a caller asks for a
# larger limit than Pillow's, we lift the global for that one open; the lock keeps two such
# opens from restoring each other's value.
_PIL_LIMIT_LOCK = threading.Lock()

# What Pillow raises for damaged or unsupported data, besides UnidentifiedImageError:
# OSError ("image file is truncated", decoder errors), SyntaxError (broken PNG chunks),
# ValueError (oversized text chunks, bad modes), EOFError, struct.error (short headers)
# and a few lookup errors from malformed metadata. Catching Exception instead would also
# hide real bugs in Resty, so the list is explicit.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError,
                  TypeError, struct.error, Image.DecompressionBombError)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------

def _label(name: object) -> str:
    # Escape rather than collapse line breaks in a *name*: it must stay recognisable.
    return str(name).replace("\r", "\\r").replace("\n", "\\n")


def _check_pixels(height: int, width: int, max_pixels: int | None, label: str) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError(
            f"{label}: image is {width}×{height} = {width * height:,} pixels, over the limit "
            f"of {max_pixels:,} (pass a larger max_pixels to allow it)"
        )


def load_image(src, *, max_pixels: int | None = MAX_PIXELS, name: str | None = None,
               dtype=np.float32) -> np.ndarray:
    """Load an image as an H×W×3 float32 RGB array with values in [0, 1].

    ``dtype`` (float32 or float64) is the result's: integer pixels are converted once, to it
    (a float64 run sees ``k / 255`` in float64), and a float64 array given with
    ``dtype=np.float64`` is not rounded through float32.

    ``src`` may be:

    * a path (``str`` or ``os.PathLike``) to any format Pillow reads. Only the first frame
      of an animated or multi-page file is used;
    * a ``PIL.Image.Image`` in any common mode (1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr,
      I;16, I, F);
    * a NumPy array H×W, H×W×1, H×W×2 (gray + alpha), H×W×3 or H×W×4 (RGBA), of dtype
      uint8 (0–255), uint16 (0–65535) or floating point (0–1).

    Conversions: EXIF orientation is applied (paths and PIL images); alpha is composited
    over white; gray is replicated to three channels; palette images with transparency go
    through RGBA; CMYK uses Pillow's plain conversion (no ICC colour management); mode
    ``I`` is read as 16-bit (how older Pillow versions represent 16-bit PNGs), clipped to
    0–65535; mode ``F`` and float arrays must already lie in [0, 1].

    ``max_pixels`` bounds width × height (``None``: no bound). For files it is checked from
    the header, before any pixel is decoded, so a decompression bomb costs nothing.
    ``name`` replaces the label used in error messages (default: the path, ``<array>`` or
    ``<PIL image>``).

    Raises :class:`ImageError` (one line, naming the file) for a missing file, a
    directory, an empty, corrupt, truncated or non-image file, an image over the pixel
    limit, an unsupported mode, a wrong array shape or dtype, or float values outside
    [0, 1] or NaN. The result is always a new array (never a view of the input).
    """
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
        max_pixels = int(max_pixels)

    if isinstance(src, np.ndarray):
        label = _label(name if name is not None else "<array>")
        if src.ndim >= 2:
            _check_pixels(src.shape[0], src.shape[1], max_pixels, label)
        return _array_to_rgb(src, label, dtype)

    if isinstance(src, Image.Image):
        default = getattr(src, "filename", "") or "<PIL image>"
        label = _label(name if name is not None else default)
        _check_pixels(src.size[1], src.size[0], max_pixels, label)
        try:
            return _pil_to_rgb(src, label, dtype)
        except ImageError:
            raise
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{label}: cannot decode image ({one_line(exc)})") from None

    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if isinstance(path, bytes):  # os.PathLike may yield bytes; messages want text
            path = os.fsdecode(path)
        return _load_path(path, max_pixels, _label(name if name is not None else path), dtype)

    raise ImageError(
        f"{_label(name) if name is not None else '<input>'}: cannot load an image from a "
        f"{type(src).__name__}; expected a path, a PIL image or a NumPy array"
    )


def _load_path(path: str, max_pixels: int | None, label: str, dtype=np.float32) -> np.ndarray:
    # Check the common mistakes first so that each gets a message that says what it is,
    # instead of Pillow's generic "cannot identify image file".
    if not os.path.lexists(path):
        raise ImageError(f"{label}: no such file")
    if os.path.isdir(path):
        raise ImageError(f"{label}: is a directory, not an image file")
    try:
        if os.path.getsize(path) == 0:
            raise ImageError(f"{label}: file is empty")
    except OSError as exc:  # e.g. a dangling symlink
        raise ImageError(f"{label}: cannot read file ({one_line(exc.strerror or exc)})") from None

    try:
        with _open_image(path, max_pixels) as im:
            _check_pixels(im.size[1], im.size[0], max_pixels, label)
            # load() is where the pixel data is decoded and truncation is discovered.
            im.load()
            return _pil_to_rgb(im, label, dtype)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file, or a format Pillow cannot read") from None
    except Image.DecompressionBombError:
        # A few formats (GIF frames, ICO) check sizes again while decoding, against
        # Pillow's global limit; only reachable when our limit is above Pillow's.
        raise ImageError(f"{label}: image is over Pillow's decompression-bomb limit") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{label}: image data is corrupt or truncated ({one_line(exc)})") from None


def _open_image(path: str, max_pixels: int | None) -> Image.Image:
    """``Image.open`` with our pixel limit in charge instead of Pillow's global one."""
    with warnings.catch_warnings():
        # Pillow warns from half its hard limit on; we enforce our own limit instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            pass
        # Pillow refused the header. Open it again with Pillow's limit lifted: Image.open
        # reads only the header, and the caller checks the size against *our* limit before
        # anything is decoded. This way the caller's max_pixels decides (it may be larger
        # than Pillow's), and the error names the actual size.
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _pil_to_rgb(im: Image.Image, label: str, dtype=np.float32) -> np.ndarray:
    """Convert a PIL image of any common mode to float32 RGB in [0, 1]."""
    im = ImageOps.exif_transpose(im)
    mode = im.mode

    if mode.startswith("I;16"):
        # 16-bit gray (PNG, TIFF). np.asarray honours the byte order (I;16B -> '>u2').
        arr = np.asarray(im).astype(np.uint16)
    elif mode == "I":
        # 32-bit signed. Pillow < 10 opened 16-bit PNGs in this mode, so read it as 16-bit.
        arr = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float32)
    elif mode in ("1", "L") and "transparency" not in im.info:
        arr = np.asarray(im.convert("L"))
    elif mode in ("LA", "La"):
        arr = np.asarray(im.convert("LA"))  # La is premultiplied; LA is what we composite
    elif mode == "RGB" and "transparency" not in im.info:
        arr = np.asarray(im)
    elif mode in ("RGBA", "RGBa", "PA") or "transparency" in im.info:
        # Includes P with a transparent palette entry and L/RGB with a colour key (tRNS):
        # going through RGBA turns the transparency into alpha, which we composite.
        arr = np.asarray(im.convert("RGBA"))
    else:
        # P (opaque), CMYK, YCbCr, RGBX, HSV, ...: Pillow's own conversion.
        try:
            arr = np.asarray(im.convert("RGB"))
        except ValueError:
            raise ImageError(f"{label}: unsupported image mode {mode!r}") from None
    return _array_to_rgb(arr, label, dtype)


def _array_to_rgb(arr: np.ndarray, label: str, dtype=np.float32) -> np.ndarray:
    """Validate an array and bring it to ``dtype`` (float32 or float64) H×W×3 in [0, 1],
    converting once."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageError(
            f"{label}: array of shape {tuple(arr.shape)} is not an image; expected H×W, "
            f"H×W×1, H×W×2, H×W×3 or H×W×4"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{label}: image has no pixels (shape {tuple(arr.shape)})")

    out_dtype, dtype = dtype, arr.dtype
    if dtype == np.uint8:
        x = arr.astype(out_dtype)
        x /= 255.0
    elif dtype == np.uint16:
        x = arr.astype(out_dtype)
        x /= 65535.0
    elif np.issubdtype(dtype, np.floating):
        x = arr.astype(out_dtype)  # always a copy, so later in-place work is safe
        if not np.isfinite(x).all():
            raise ImageError(f"{label}: image contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
            raise ImageError(
                f"{label}: float image values must lie in [0, 1], found [{lo:g}, {hi:g}] "
                f"(divide 0-255 data by 255, or pass it as uint8)"
            )
        np.clip(x, 0.0, 1.0, out=x)
    else:
        raise ImageError(
            f"{label}: unsupported array dtype {dtype}; use uint8 (0-255), uint16 "
            f"(0-65535) or float (0-1)"
        )

    channels = x.shape[2]
    if channels in (2, 4):
        # Composite over white: out = colour·α + 1·(1−α). Straight (not premultiplied)
        # alpha, which is what PNG, Pillow's RGBA/LA and most arrays use.
        alpha = x[:, :, -1:]
        x = x[:, :, :-1] * alpha + (1.0 - alpha)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return np.ascontiguousarray(x, dtype=out_dtype)


# --------------------------------------------------------------------------------------
# Resizing and cropping
# --------------------------------------------------------------------------------------

def _as_float_image(img, what: str = "image") -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"<array>: {what} must be H×W or H×W×C, got shape {tuple(img.shape)}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if not np.issubdtype(img.dtype, np.floating):
        raise ImageError(f"<array>: {what} must be float in [0, 1] or uint8, got {img.dtype}")
    # float64 stays float64 (a float64 run is not rounded through float32); others float32.
    return img if img.dtype == np.float64 else img.astype(np.float32, copy=False)


def _check_size(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _scale_round(n: int, num: int, den: int) -> int:
    """max(1, round(n·num/den)), rounding halves up, in exact integer arithmetic.

    Exact so that the computed size never depends on float rounding (and thus on the
    platform or on how a backend would have computed it).
    """
    return max(1, (2 * n * num + den) // (2 * den))


def resize_to(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize to exactly ``(height, width)``: Lanczos, antialiased, on float32 data.

    Each channel is resized as a Pillow mode "F" (32-bit float) image, so nothing is
    quantised to 8 bits. Lanczos rings slightly at sharp edges; the result is clipped to
    [0, 1] so it stays a valid image. Accepts H×W or H×W×C (any C), float in [0, 1] or
    uint8; returns float32 (float64 for float64 input: a copy without rounding when the size
    is already right, else the float32 resampling cast back), always a new array.
    """
    h = _check_size(size_hw[0], "height")
    w = _check_size(size_hw[1], "width")
    x = _as_float_image(img)
    if x.shape[:2] == (h, w):
        return np.array(x, dtype=x.dtype, copy=True)
    planes = x[:, :, None] if x.ndim == 2 else x
    out = np.empty((h, w, planes.shape[2]), dtype=x.dtype)
    for c in range(planes.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(planes[:, :, c], dtype=np.float32))
        assert plane.mode == "F"
        out[:, :, c] = np.asarray(plane.resize((w, h), Image.Resampling.LANCZOS))
    np.clip(out, 0.0, 1.0, out=out)
    return out[:, :, 0] if x.ndim == 2 else out


def resize_longest(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the longest side becomes ``size``, keeping the aspect ratio.

    This is *the* resize of Resty: every backend, preset and CLI command goes through it
    (and :func:`resize_to`), so all frameworks see identical pixels. The other side is
    ``max(1, round(side · size / longest))`` with halves rounded up. Images smaller than
    ``size`` are enlarged.
    """
    size = _check_size(size, "size")
    x = _as_float_image(img)
    h, w = x.shape[:2]
    longest = max(h, w)
    return resize_to(x, (_scale_round(h, size, longest), _scale_round(w, size, longest)))


def random_crop(img: np.ndarray, size, rng: np.random.Generator) -> np.ndarray:
    """A random ``size``×``size`` (or ``(h, w)``) crop, positions drawn from ``rng``.

    Raises :class:`ImageError` if the image is smaller than the crop. Returns a copy.
    """
    ch, cw = (size, size) if np.isscalar(size) else size
    ch, cw = _check_size(ch, "crop height"), _check_size(cw, "crop width")
    x = _as_float_image(img)
    h, w = x.shape[:2]
    if h < ch or w < cw:
        raise ImageError(f"<array>: image {h}×{w} is smaller than the crop {ch}×{cw}")
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    return np.array(x[top:top + ch, left:left + cw], dtype=np.float32, copy=True)


def resize_short_then_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Training view: resize so the short side is ``size``, then a random square crop.

    Scaling the short side (rather than squashing to a square) keeps the aspect ratio, so
    training images are not distorted; the random crop is the only augmentation.
    """
    size = _check_size(size, "size")
    x = _as_float_image(img)
    h, w = x.shape[:2]
    short = min(h, w)
    x = resize_to(x, (_scale_round(h, size, short), _scale_round(w, size, short)))
    return random_crop(x, size, rng)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] → uint8 [0, 255]: scale, round to nearest, clip.

    Rounding (not truncating) keeps a load → save round trip of 8-bit data exact.
    NaN or infinite values raise :class:`ImageError` (casting them is undefined).
    """
    x = np.asarray(img)
    if x.dtype == np.uint8:
        return x.copy()
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ImageError("<array>: image contains NaN or infinite values; cannot convert to 8 bits")
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _check_target(path: Path, overwrite: bool) -> None:
    if os.path.isdir(path):
        raise OutputExistsError(f"{_label(path)}: is a directory; cannot write a file there")
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{_label(path)}: already exists (pass overwrite=True to replace it)")


def _fsync_path(path: Path, directory: bool = False) -> None:
    """Flush a file (or, best effort, a directory entry) to disk."""
    if directory:
        if os.name != "posix":
            return  # directories cannot be opened for fsync on Windows
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return
    # O_RDWR rather than O_RDONLY: Windows refuses to flush a read-only handle.
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(path: Path) -> Path:
    """Create an empty, hidden temporary file next to ``path`` with the same extension.

    Same directory, because ``os.replace`` is only atomic within one file system. Same
    extension, because writers such as ``PIL.Image.save`` or ``numpy.save`` pick or append
    a format from it. Created with mode 0o666 so the process umask applies as it would
    for a normal file (``tempfile.mkstemp`` would leave it 0o600).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part{path.suffix}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise RestyError(
                f"{_label(path.parent)}: cannot write in this directory ({one_line(exc.strerror or exc)})"
            ) from None
        os.close(fd)
        return tmp
    raise RestyError(f"{_label(path.parent)}: cannot create a temporary file")


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    # No overwrite: os.link fails if the target appeared meanwhile (atomic no-clobber),
    # unlike os.replace. File systems without hard links fall back to check-then-replace.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(
            f"{_label(path)}: already exists (pass overwrite=True to replace it)"
        ) from None
    except (OSError, AttributeError, NotImplementedError):
        if os.path.lexists(path):
            raise OutputExistsError(
                f"{_label(path)}: already exists (pass overwrite=True to replace it)"
            ) from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


#: Errors of the storage itself while an output is written (not of what is being written).
_WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EIO")
                          if hasattr(errno, n))


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Write a file atomically: ``with atomic_path(p) as tmp: write(tmp)``.

    Yields the path of an empty temporary file in the target's directory, with the
    target's extension. Write the whole content to it (by path). When the block ends
    normally the file is flushed to disk (fsync) and moved to ``path`` in one step; if
    the block raises (or is interrupted) the temporary file is deleted and ``path`` is
    left exactly as it was. So ``path`` is always either the old file or the complete
    new one, never a half-written mix, even after a crash.

    Parent directories are created. If ``path`` exists and ``overwrite`` is false,
    :class:`OutputExistsError` is raised before anything is written (and again at the
    end if the file appeared meanwhile). Used for images, weights and checkpoints.
    """
    target = Path(os.fspath(path))
    _check_target(target, overwrite)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestyError(
            f"{_label(parent)}: cannot create output directory ({one_line(exc.strerror or exc)})"
        ) from None
    tmp = _create_temp(target)
    try:
        yield tmp
        _fsync_path(tmp)
        _commit(tmp, target, overwrite)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS and not isinstance(exc, RestyError):
            # A full disk, a quota, an I/O error: say which output failed; the old file is intact.
            raise OutputWriteError(f"{_label(target)}: cannot write ({one_line(exc.strerror or exc)}); "
                                   "nothing was changed") from None
        raise
    _fsync_path(parent, directory=True)  # make the rename itself durable


def atomic_write_bytes(path: PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`). Returns the path."""
    target = Path(os.fspath(path))
    with atomic_path(target, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return target


def save_image(img, path: PathLike, *, overwrite: bool = False, quality: int = 95) -> Path:
    """Save an image atomically; the format follows the extension.

    ``img``: float array in [0, 1] (converted with :func:`to_uint8`) or uint8 array, of
    shape H×W, H×W×1 or H×W×3. Extensions: .png, .jpg/.jpeg, .webp, .bmp, .tif/.tiff.
    ``quality`` (1–100) applies to JPEG and WebP; JPEG is written without chroma
    subsampling (4:4:4), because stylised images have fine colour detail that 4:2:0
    visibly smears. Refuses to replace an existing file unless ``overwrite=True``
    (:class:`OutputExistsError`). Returns the path written.
    """
    target = Path(os.fspath(path))
    fmt = SAVE_FORMATS.get(target.suffix.lower())
    if fmt is None:
        allowed = ", ".join(SAVE_FORMATS)
        raise ImageError(
            f"{_label(target)}: unknown image extension {target.suffix or '(none)'!r}; use one of {allowed}"
        )
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")

    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or 0 in arr.shape:
        raise ImageError(f"{_label(target)}: cannot save an array of shape {tuple(arr.shape)}; expected H×W or H×W×3")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ImageError(f"{_label(target)}: cannot save dtype {arr.dtype}; use float in [0, 1] or uint8")
        arr = to_uint8(arr)
    pil = Image.fromarray(np.ascontiguousarray(arr))

    options: dict = {}
    if fmt == "JPEG":
        options = {"quality": int(quality), "subsampling": 0}
    elif fmt == "WEBP":
        options = {"quality": int(quality)}
    with atomic_path(target, overwrite=overwrite) as tmp:
        pil.save(tmp, format=fmt, **options)
    return target


# --------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------

# RGB -> YIQ (NTSC 1953 coefficients, as in skimage.color.rgb2yiq). The inverse is
# computed, not typed in, so that the round trip is exact to float precision.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114],
     [0.595716, -0.274453, -0.321263],
     [0.211456, -0.522591, 0.311135]],
    dtype=np.float64,
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _rgb_to_yiq(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ _RGB_TO_YIQ.T


def _yiq_to_rgb(x: np.ndarray) -> np.ndarray:
    return x @ _YIQ_TO_RGB.T


def preserve_color(stylized, content) -> np.ndarray:
    """Keep the content's colours, the stylised image's luminance ("luminance transfer").

    Gatys, Bethge, Hertzmann & Shechtman (2016), "Preserving color in neural artistic
    style transfer": the stylised result's luminance Y is combined with the content's
    chrominance (I, Q) in YIQ space, then converted back to RGB and clipped to [0, 1].
    This is the post-hoc variant, usable with any stylizer (also fast feed-forward nets,
    whose users often ask for it). If the sizes differ, the content is resized to the
    stylised image's size with :func:`resize_to`.

    Both inputs go through :func:`load_image` (paths, PIL images or arrays).
    """
    s = load_image(stylized, name="<stylized>")
    c = load_image(content, name="<content>")
    if c.shape[:2] != s.shape[:2]:
        c = resize_to(c, s.shape[:2])
    ys, yc = _rgb_to_yiq(s), _rgb_to_yiq(c)
    out = np.concatenate([ys[:, :, :1], yc[:, :, 1:]], axis=2)
    return np.clip(_yiq_to_rgb(out), 0.0, 1.0).astype(np.float32)


def match_histogram(source, reference) -> np.ndarray:
    """Match each RGB channel's histogram of ``source`` to that of ``reference``.

    The other colour-preservation method of Gatys et al. (2016): match the *style*
    image's colours to the content image before stylising. Uses
    ``skimage.exposure.match_histograms`` (exact quantile mapping, per channel). Sizes
    may differ. Returns float32 H×W×3 in [0, 1].
    """
    from skimage.exposure import match_histograms  # imported lazily: slow to import

    s = load_image(source, name="<source>")
    r = load_image(reference, name="<reference>")
    out = match_histograms(s, r, channel_axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------
# Sample images
# --------------------------------------------------------------------------------------

#: Photos usable as content images (all ship inside the scikit-image wheel: no download).
SAMPLE_CONTENT = ("astronaut", "chelsea", "coffee", "rocket")
#: Images usable as styles: two gray textures (replicated to RGB) and a colourful one.
SAMPLE_STYLES = ("brick", "gravel", "hubble")

# Resty name -> skimage.data function. Only images bundled with scikit-image are listed;
# others (e.g. skimage.data.lfw_subset's relatives, kidney, cells3d) are fetched from the
# network on first use and would break offline runs.
_SKIMAGE_NAMES = {
    "astronaut": "astronaut",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "brick": "brick",
    "gravel": "gravel",
    "hubble": "hubble_deep_field",
}


@functools.lru_cache(maxsize=1)
def _sample_images_cached() -> dict:
    import skimage.data  # lazily: scikit-image takes a while to import

    out = {}
    for name, fn in _SKIMAGE_NAMES.items():
        arr = getattr(skimage.data, fn)()
        img = load_image(arr, name=f"skimage.data.{fn}")
        img.setflags(write=False)
        out[name] = img
    return out


def sample_images() -> dict[str, np.ndarray]:
    """Sample photos and style images from ``skimage.data``, offline.

    Keys: :data:`SAMPLE_CONTENT` (astronaut, chelsea, coffee, rocket) then
    :data:`SAMPLE_STYLES` (brick, gravel, hubble). Values are float32 H×W×3 RGB in [0, 1];
    gray textures are replicated to three channels. Each call returns fresh copies, so
    callers may modify them.
    """
    return {name: img.copy() for name, img in _sample_images_cached().items()}
