"""Tests of resty.images: decoding every input form, errors, resizing, atomic writes, colour."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from resty import images
from resty.errors import ImageError, OutputExistsError
from resty.images import (
    atomic_path,
    atomic_write_bytes,
    load_image,
    match_histogram,
    preserve_color,
    random_crop,
    resize_longest,
    resize_short_then_crop,
    resize_to,
    sample_images,
    save_image,
    to_uint8,
)


def _rgb_u8(h=12, w=17, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check(img, shape):
    assert img.dtype == np.float32
    assert img.shape == shape
    assert img.flags.c_contiguous
    assert 0.0 <= img.min() and img.max() <= 1.0


# ---------------------------------------------------------------- input forms


def test_png_path_is_exact(tmp_path):
    a = _rgb_u8()
    p = tmp_path / "a.png"
    Image.fromarray(a).save(p)
    img = load_image(p)
    _check(img, (12, 17, 3))
    np.testing.assert_array_equal(to_uint8(img), a)
    np.testing.assert_array_equal(load_image(str(p)), img)  # str and PathLike alike


def test_jpeg_path(tmp_path):
    a = np.full((16, 24, 3), (200, 40, 90), np.uint8)  # flat colour: JPEG keeps it closely
    p = tmp_path / "a.jpg"
    Image.fromarray(a).save(p, quality=95)
    img = load_image(p)
    _check(img, (16, 24, 3))
    assert np.abs(to_uint8(img).astype(int) - a).max() <= 3


def test_pil_gray_modes():
    g = np.arange(0, 240, 2, dtype=np.uint8).reshape(6, 20)
    img = load_image(Image.fromarray(g))  # mode L
    _check(img, (6, 20, 3))
    np.testing.assert_allclose(img[..., 0], g / 255.0, atol=1e-7)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])

    bw = Image.fromarray(g > 100)  # mode 1
    assert bw.mode == "1"
    np.testing.assert_array_equal(load_image(bw)[..., 0], (g > 100).astype(np.float32))


def test_pil_la_and_rgba_composite_over_white():
    la = Image.new("LA", (4, 3), (0, 0))  # black, fully transparent -> white
    la.putpixel((0, 0), (0, 255))  # black, opaque -> black
    la.putpixel((1, 0), (0, 128))  # black, half -> grey
    img = load_image(la)
    _check(img, (3, 4, 3))
    assert np.all(img[0, 0] == 0.0)
    np.testing.assert_allclose(img[0, 1], 1 - 128 / 255, atol=1e-6)
    assert np.all(img[2, 3] == 1.0)

    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 0))  # the hidden blue must not show
    img = load_image(rgba)
    np.testing.assert_array_equal(img[0, 0], [1, 0, 0])
    np.testing.assert_array_equal(img[0, 1], [1, 1, 1])


def test_pil_palette_with_transparency(tmp_path):
    p_img = Image.new("P", (3, 2), 0)
    p_img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)  # index 0 black, index 1 green
    p_img.putpixel((0, 0), 1)
    p_img.info["transparency"] = 0  # black is transparent -> white
    path = tmp_path / "p.png"
    p_img.save(path, transparency=0)
    for src in (p_img, path):
        img = load_image(src)
        _check(img, (2, 3, 3))
        np.testing.assert_array_equal(img[0, 0], [0, 1, 0])
        np.testing.assert_array_equal(img[1, 2], [1, 1, 1])


def test_pil_opaque_palette():
    p_img = Image.new("P", (2, 2), 1)
    p_img.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    np.testing.assert_allclose(load_image(p_img)[1, 1], np.array([10, 20, 30]) / 255, atol=1e-7)


def test_pil_cmyk():
    cmyk = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # no cyan, full magenta+yellow = red
    img = load_image(cmyk)
    _check(img, (3, 3, 3))
    np.testing.assert_allclose(img[1, 1], [1, 0, 0], atol=1e-6)


def test_16bit_png_keeps_precision(tmp_path):
    a = (np.arange(40 * 50, dtype=np.uint32) * 31 % 65536).astype(np.uint16).reshape(40, 50)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    img = load_image(path)
    _check(img, (40, 50, 3))
    # Exact to 16 bits: 8-bit quantisation would lose up to 128/65535.
    np.testing.assert_array_equal(np.rint(img[..., 0].astype(np.float64) * 65535).astype(np.uint16), a)


def test_pil_mode_i_and_f():
    i = Image.fromarray(np.array([[0, 65535, 70000, -5]], dtype=np.int32))
    assert i.mode == "I"
    np.testing.assert_allclose(load_image(i)[0, :, 0], [0, 1, 1, 0])
    f = Image.fromarray(np.array([[0.25, 0.5]], dtype=np.float32))
    assert f.mode == "F"
    np.testing.assert_allclose(load_image(f)[0, :, 1], [0.25, 0.5])
    with pytest.raises(ImageError, match="in \\[0, 1\\]"):
        load_image(Image.fromarray(np.array([[0.5, 255.0]], dtype=np.float32)))


def test_array_forms():
    a8 = _rgb_u8()
    img = load_image(a8)
    _check(img, (12, 17, 3))
    np.testing.assert_allclose(img, a8 / 255.0, atol=1e-7)

    a16 = a8.astype(np.uint16) * 257  # same image in 16 bits
    np.testing.assert_allclose(load_image(a16), img, atol=1e-7)

    f64 = a8 / 255.0
    np.testing.assert_allclose(load_image(f64), img, atol=1e-7)
    assert load_image(f64).dtype == np.float32

    g = load_image(np.full((5, 6), 0.25))
    _check(g, (5, 6, 3))
    assert np.all(g == 0.25)

    rgba = np.zeros((2, 2, 4), np.uint8)  # transparent black -> white
    assert np.all(load_image(rgba) == 1.0)

    # Never a view of the caller's array.
    src = np.full((3, 3, 3), 0.5, np.float32)
    out = load_image(src)
    out[:] = 0
    assert np.all(src == 0.5)


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.full((4, 4, 3), 2.0), "in \\[0, 1\\]"),
        (np.full((4, 4, 3), -0.5, np.float32), "in \\[0, 1\\]"),
        (np.array([[[np.nan, 0, 0]]]), "NaN"),
        (np.ones((4, 4, 3), bool), "dtype bool"),
        (np.ones((4, 4, 3), np.int64), "dtype int64"),
        (np.ones((4, 4, 5), np.uint8), "shape"),
        (np.ones((2, 4, 4, 3), np.uint8), "shape"),
        (np.ones(5, np.uint8), "shape"),
        (np.ones((0, 4, 3), np.uint8), "no pixels"),
    ],
)
def test_bad_arrays(arr, message):
    with pytest.raises(ImageError, match=message) as info:
        load_image(arr, name="my-array")
    assert str(info.value).startswith("my-array: ")
    assert "\n" not in str(info.value)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide × 20 high: top half red, bottom half blue. Orientation 6 means
    # "rotate 90° clockwise to display", so viewers show it 20 wide × 40 high with the
    # red (stored top) on the right.
    a = np.zeros((20, 40, 3), np.uint8)
    a[:10] = (255, 0, 0)
    a[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    path = tmp_path / "phone.jpg"
    Image.fromarray(a).save(path, exif=exif, quality=95)

    img = load_image(path)
    _check(img, (40, 20, 3))
    right, left = img[:, -3:].mean(axis=(0, 1)), img[:, :3].mean(axis=(0, 1))
    assert right[0] > 0.9 and right[2] < 0.1  # red
    assert left[2] > 0.9 and left[0] < 0.1  # blue
    # The same for an already opened PIL image.
    with Image.open(path) as im:
        assert load_image(im).shape == (40, 20, 3)


# ---------------------------------------------------------------- bad files


def _bad_file_cases(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_rgb_u8(30, 30)).save(good)
    data = good.read_bytes()

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG\n")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    directory = tmp_path / "folder.png"
    directory.mkdir()
    return {
        "missing": (tmp_path / "missing.png", "no such file", {}),
        "directory": (directory, "directory", {}),
        "empty": (empty, "empty", {}),
        "text": (text, "not an image", {}),
        "truncated": (truncated, "corrupt or truncated", {}),
        "too large": (good, "over the limit", {"max_pixels": 899}),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "truncated", "too large"])
def test_bad_files_give_one_line_image_error(tmp_path, case):
    path, message, kwargs = _bad_file_cases(tmp_path)[case]
    with pytest.raises(ImageError, match=message) as info:
        load_image(path, **kwargs)
    text = str(info.value)
    assert str(path) in text
    assert "\n" not in text
    # No chained traceback ("During handling of the above exception ...").
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert isinstance(info.value, ValueError)


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(_rgb_u8(30, 30)).save(path)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded before the check"))
    with pytest.raises(ImageError, match="900 pixels"):
        load_image(path, max_pixels=899)


def test_our_limit_overrides_pillows(tmp_path, monkeypatch):
    path = tmp_path / "img.png"
    Image.fromarray(_rgb_u8(30, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would call 900 px a bomb
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert load_image(path, max_pixels=1000).shape == (30, 30, 3)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored
    with pytest.raises(ImageError, match="over the limit"):
        load_image(path, max_pixels=150)
    assert load_image(path, max_pixels=None).shape == (30, 30, 3)


def test_pil_and_array_inputs_respect_pixel_limit():
    with pytest.raises(ImageError, match="over the limit"):
        load_image(Image.new("RGB", (10, 10)), max_pixels=99)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(np.zeros((10, 10, 3), np.uint8), max_pixels=99)


def test_unsupported_source_type():
    with pytest.raises(ImageError, match="list"):
        load_image([[0, 1]])


# ---------------------------------------------------------------- resizing


@pytest.mark.parametrize(
    "shape, size, expected",
    [((30, 50), 25, (15, 25)), ((31, 50), 25, (16, 25)), ((50, 30), 10, (10, 6)),
     ((7, 7), 14, (14, 14)), ((1, 300), 30, (1, 30)), ((1000, 2), 10, (10, 1))],
)
def test_resize_longest_shape(shape, size, expected):
    out = resize_longest(np.full(shape + (3,), 0.5, np.float32), size)
    _check(out, expected + (3,))
    np.testing.assert_allclose(out, 0.5, atol=1e-6)


def test_resize_is_antialiased():
    # A one-pixel checkerboard averages to mid grey; nearest-neighbour sampling would
    # keep only black or only white pixels.
    yy, xx = np.mgrid[:64, :64]
    board = ((yy + xx) % 2).astype(np.float32)
    img = np.repeat(board[:, :, None], 3, axis=2)
    small = resize_longest(img, 16)
    assert small.shape == (16, 16, 3)
    inner = small[2:-2, 2:-2]
    assert np.abs(inner - 0.5).max() < 0.02
    nearest = np.asarray(Image.fromarray(board).resize((16, 16), Image.Resampling.NEAREST))
    assert set(np.unique(nearest)) <= {0.0, 1.0}


def test_resize_keeps_float_precision():
    ramp = np.linspace(0.1, 0.9, 100 * 100, dtype=np.float32).reshape(100, 100)
    out = resize_to(ramp, (40, 50))
    assert out.shape == (40, 50) and out.dtype == np.float32
    # Values off the 1/255 grid survive: no 8-bit step in between.
    off_grid = np.abs(out * 255 - np.rint(out * 255)) > 0.01
    assert off_grid.mean() > 0.9


def test_resize_to_same_size_is_a_copy():
    img = np.random.default_rng(1).random((8, 9, 3)).astype(np.float32)
    out = resize_to(img, (8, 9))
    np.testing.assert_array_equal(out, img)
    out[:] = 0
    assert img.max() > 0


def test_resize_clips_lanczos_ringing():
    step = np.zeros((40, 40, 3), np.float32)
    step[:, 20:] = 1.0
    out = resize_to(step, (40, 57))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_random_crop_and_training_view():
    img = np.random.default_rng(2).random((30, 40, 3)).astype(np.float32)
    crop = random_crop(img, 16, np.random.default_rng(7))
    assert crop.shape == (16, 16, 3)
    # The crop is a window of the image.
    hits = [(t, l) for t in range(15) for l in range(25) if np.array_equal(img[t:t + 16, l:l + 16], crop)]
    assert len(hits) == 1
    np.testing.assert_array_equal(crop, random_crop(img, 16, np.random.default_rng(7)))
    assert random_crop(img, (10, 40), np.random.default_rng(0)).shape == (10, 40, 3)
    with pytest.raises(ImageError, match="smaller than the crop"):
        random_crop(img, 31, np.random.default_rng(0))

    view = resize_short_then_crop(img, 12, np.random.default_rng(3))
    assert view.shape == (12, 12, 3) and view.dtype == np.float32
    np.testing.assert_array_equal(view, resize_short_then_crop(img, 12, np.random.default_rng(3)))
    # Short side 30 -> 12 means long side 40 -> 16: the crop is a window of that resize.
    resized = resize_to(img, (12, 16))
    assert any(np.array_equal(resized[:, l:l + 12], view) for l in range(5))


# ---------------------------------------------------------------- writing


def test_to_uint8_rounds_and_clips():
    x = np.array([0.0, 0.6 / 255, 1.49 / 255, 1.51 / 255, 1.0, 1.2, -0.1])
    np.testing.assert_array_equal(to_uint8(x), [0, 1, 1, 2, 255, 255, 0])
    with pytest.raises(ImageError, match="NaN"):
        to_uint8(np.array([np.nan]))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".PNG"])
def test_save_formats_round_trip(tmp_path, ext):
    a = np.full((10, 14, 3), (30, 160, 220), np.uint8)
    path = save_image(a / 255.0, tmp_path / f"out{ext}")
    assert path.exists()
    back = to_uint8(load_image(path))
    tolerance = 4 if ext in (".jpg", ".jpeg", ".webp") else 0
    assert np.abs(back.astype(int) - a).max() <= tolerance
    assert sorted(os.listdir(tmp_path)) == [f"out{ext}"]  # no temporary files left


def test_save_png_is_exact_and_gray_works(tmp_path):
    a = _rgb_u8(9, 11, seed=5)
    save_image(a, tmp_path / "u8.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "u8.png")), a)
    save_image(np.full((4, 5), 0.5), tmp_path / "gray.png")
    assert Image.open(tmp_path / "gray.png").mode == "L"


def test_save_refuses_overwrite_unless_asked(tmp_path):
    path = tmp_path / "out.png"
    save_image(np.zeros((4, 4, 3)), path)
    with pytest.raises(OutputExistsError, match="already exists") as info:
        save_image(np.ones((4, 4, 3)), path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, FileExistsError)
    assert load_image(path).max() == 0.0  # untouched
    save_image(np.ones((4, 4, 3)), path, overwrite=True)
    assert load_image(path).min() == 1.0
    assert os.listdir(tmp_path) == ["out.png"]


def test_save_failure_mid_write_keeps_original(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    save_image(np.zeros((4, 4, 3)), path)
    original = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half of an image")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(np.ones((4, 4, 3)), path, overwrite=True)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["out.png"]

    with pytest.raises(OSError, match="disk full"):
        save_image(np.ones((4, 4, 3)), tmp_path / "new.png")
    assert os.listdir(tmp_path) == ["out.png"]


def test_save_creates_dirs_and_uses_normal_permissions(tmp_path):
    path = save_image(np.zeros((2, 2, 3)), tmp_path / "a" / "b" / "c.jpg")
    assert path.is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_save_rejects_bad_extension_and_arrays(tmp_path):
    with pytest.raises(ImageError, match="\\.png.*\\.tiff") as info:
        save_image(np.zeros((2, 2, 3)), tmp_path / "x.gif")
    assert "x.gif" in str(info.value)
    with pytest.raises(ImageError, match="shape"):
        save_image(np.zeros((2, 2, 5)), tmp_path / "x.png")
    with pytest.raises(ImageError, match="dtype"):
        save_image(np.zeros((2, 2, 3), np.int32), tmp_path / "x.png")
    with pytest.raises(ValueError, match="quality"):
        save_image(np.zeros((2, 2, 3)), tmp_path / "x.jpg", quality=0)
    assert os.listdir(tmp_path) == []


def test_atomic_helpers(tmp_path):
    path = tmp_path / "sub" / "w.safetensors"
    atomic_write_bytes(path, b"abc")
    assert path.read_bytes() == b"abc"
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(path, b"xyz")
    atomic_write_bytes(path, b"xyz", overwrite=True)
    assert path.read_bytes() == b"xyz"

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path, overwrite=True) as tmp:
            assert tmp.parent == path.parent and tmp.suffix == ".safetensors"
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"xyz"
    assert os.listdir(path.parent) == ["w.safetensors"]

    # The target appearing while we write is not clobbered.
    late = tmp_path / "late.bin"
    with pytest.raises(OutputExistsError):
        with atomic_path(late) as tmp:
            tmp.write_bytes(b"mine")
            late.write_bytes(b"theirs")
    assert late.read_bytes() == b"theirs"
    assert sorted(os.listdir(tmp_path)) == ["late.bin", "sub"]

    with pytest.raises(OutputExistsError, match="directory"):
        atomic_write_bytes(tmp_path / "sub", b"", overwrite=True)


# ---------------------------------------------------------------- colour


def test_preserve_color_takes_luminance_from_stylized_and_chroma_from_content():
    rng = np.random.default_rng(4)
    # Mid-range values so the recombined colours need no clipping.
    content = (0.35 + 0.3 * rng.random((16, 16, 3))).astype(np.float32)
    stylized = (0.35 + 0.3 * rng.random((16, 16, 3))).astype(np.float32)
    out = preserve_color(stylized, content)
    _check(out, (16, 16, 3))
    yiq_out, yiq_c, yiq_s = (images._rgb_to_yiq(x) for x in (out, content, stylized))
    np.testing.assert_allclose(yiq_out[..., 0], yiq_s[..., 0], atol=1e-6)
    np.testing.assert_allclose(yiq_out[..., 1:], yiq_c[..., 1:], atol=1e-6)

    # A grey stylised image on colourful content comes back coloured.
    grey = np.full((16, 16, 3), 0.5, np.float32)
    assert np.ptp(preserve_color(grey, content), axis=2).mean() > 0.01

    # Different sizes: content is resized to the stylised size.
    assert preserve_color(stylized, resize_to(content, (32, 40))).shape == (16, 16, 3)


def test_yiq_round_trip():
    x = np.random.default_rng(0).random((5, 5, 3))
    np.testing.assert_allclose(images._yiq_to_rgb(images._rgb_to_yiq(x)), x, atol=1e-12)


def test_match_histogram():
    rng = np.random.default_rng(5)
    source = rng.random((20, 20, 3)).astype(np.float32) * 0.5  # dark
    reference = 0.5 + 0.5 * rng.random((20, 20, 3)).astype(np.float32)  # bright
    out = match_histogram(source, reference)
    _check(out, (20, 20, 3))
    for c in range(3):
        # Same pixel count: the sorted values become exactly the reference's...
        np.testing.assert_allclose(np.sort(out[..., c], axis=None), np.sort(reference[..., c], axis=None), atol=1e-6)
        # ...while the order of pixels (the picture) is the source's.
        assert np.array_equal(np.argsort(out[..., c], axis=None), np.argsort(source[..., c], axis=None))


# ---------------------------------------------------------------- samples and imports


def test_sample_images_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("sample_images tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    images._sample_images_cached.cache_clear()
    samples = sample_images()
    assert set(samples) == set(images.SAMPLE_CONTENT) | set(images.SAMPLE_STYLES)
    for name, img in samples.items():
        assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256, name
        assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
        assert img.std() > 0.05, name  # a real picture, not a blank
    assert samples["astronaut"].shape == (512, 512, 3)
    brick = samples["brick"]
    assert np.array_equal(brick[..., 0], brick[..., 2])  # gray texture replicated
    samples["astronaut"][:] = 0  # callers get copies
    assert sample_images()["astronaut"].max() > 0


def test_core_imports_no_framework():
    code = (
        "import sys, resty.images, resty.errors\n"
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'skimage') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
