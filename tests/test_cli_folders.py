"""``resty stylize FOLDER -o OUTDIR``, tried as a hostile user: clashing stems, one image in
memory at a time, unreadable images, ``-o`` the content folder, and the same under ``--nproc``.

A tiny random fast network (torch, 32-px images) keeps each run well under a second; one test
starts real ``--nproc 2`` workers in a subprocess.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resty import backends as B
from resty import cli
from resty.images import save_image

from cli_helpers import assert_usage_error, offline_env, run  # noqa: E402  (tests/ is on sys.path)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not B.is_installed("torch"), reason="PyTorch not installed")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    offline_env(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny untrained fast network (random weights): what is under test is the CLI."""
    from resty import presets
    rt = B.get_backend("torch")
    p = presets.get("johnson2016")
    p = p.replace(name="tiny-folders", transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1))
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    rt.FastStylizer(p, weights="random:0", device="cpu").save(path)
    return path


def _img(seed, h=20, w=24):
    return np.random.default_rng(seed).random((h, w, 3))


def _folder(tmp_path, names=("a.png", "b.jpg")) -> Path:
    d = tmp_path / "photos"
    for i, n in enumerate(names):
        save_image(_img(i), d / n)
    return d


def _cmd(folder, out, model, *extra):
    return ["stylize", folder, "-o", out, "--method", "fast", "--model", model, "--weights", "random:0",
            "-q", *extra]


def _arrows(stdout):
    """The outputs named by the `SRC -> TARGET (...)` lines."""
    return [ln.split(" -> ")[1].rsplit(" (", 1)[0] for ln in stdout.splitlines() if " -> " in ln]


# =========================================================================== output names
def test_clashing_stems_keep_their_extension_and_rerun_skips_them(tmp_path, model, capsys):
    d = _folder(tmp_path, ("a.jpg", "a.png", "b.png"))
    out = tmp_path / "out"
    rc, stdout, err = run(_cmd(d, out, model), capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.png", "a.png.png", "b.png"]
    assert sorted(_arrows(stdout)) == [str(out / n) for n in ("a.jpg.png", "a.png.png", "b.png")]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, stdout, err = run(_cmd(d, out, model), capsys)     # the same names: all finished
    assert rc == 0, err
    assert stdout.startswith("nothing to do: the outputs of all 3 images already exist")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_output_names_never_clash():
    names = cli._output_names([Path(n) for n in ("a.jpg", "a.jpg.png", "a.png", "b.png", "B.jpg", "c.gif")],
                              ".png")
    assert names == ["a.jpg.png", "a.jpg_2.png", "a.png.png", "b.png.png", "B.jpg.png", "c.png"]
    assert len({n.casefold() for n in names}) == len(names)
    assert cli._output_names([Path("x.png"), Path("y.png")], ".jpg") == ["x.jpg", "y.jpg"]


# =========================================================================== streaming
def test_one_image_decoded_at_a_time(tmp_path, model, monkeypatch, capsys):
    import resty.images
    rt = B.get_backend("torch")
    events = []
    load, stylize = resty.images.load_image, rt.FastStylizer.stylize
    monkeypatch.setattr(resty.images, "load_image", lambda *a, **k: events.append("decode") or load(*a, **k))
    monkeypatch.setattr(rt.FastStylizer, "stylize",
                        lambda self, *a, **k: events.append("stylize") or stylize(self, *a, **k))
    d = _folder(tmp_path, ("a.png", "b.png", "c.png", "d.png"))
    rc, _, err = run(_cmd(d, tmp_path / "out", model), capsys)
    assert rc == 0, err
    assert events == ["decode", "stylize"] * 4


# =========================================================================== unreadable images
def _bad_files(d: Path) -> dict:
    """A bad header (found up front), a truncated JPEG (found when decoded), an empty file, a
    dangling link."""
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    buf = io.BytesIO()
    from PIL import Image
    Image.fromarray((_img(9, 64, 64) * 255).astype(np.uint8)).save(buf, format="JPEG")
    (d / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "gone.png").symlink_to(d / "nowhere.png")        # a dangling link is named, not ignored
    return {"bad.png": "bad.png", "cut.jpg": "truncated", "empty.png": "empty", "gone.png": "No such file"}


def test_unreadable_images_are_skipped_and_all_listed(tmp_path, model, capsys):
    d = _folder(tmp_path, ("a.png", "z.png"))
    bad = _bad_files(d)
    out = tmp_path / "out"
    rc, stdout, err = run(_cmd(d, out, model), capsys)
    line = assert_usage_error(rc, err, "4 of 6 images could not be stylized")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "z.png"]     # the others went on
    failed = [ln for ln in err.splitlines() if ln.startswith("resty: failed: ")]
    assert len(failed) == 4, err
    for name, why in bad.items():
        assert any(name in ln and why in ln for ln in failed), (name, err)
    assert err.splitlines()[-1] == line                                      # the list, then the error
    assert stdout.strip().splitlines()[-1].startswith(f"stylized 2 images into {out} (")
    assert "4 failed" in stdout.strip().splitlines()[-1]
    # a re-run tries only the failed ones again, and still says so
    rc, stdout, err = run(_cmd(d, out, model), capsys)
    assert_usage_error(rc, err, "4 of 4 images could not be stylized")
    assert "stylized 0 images" in stdout and "2 already there" in stdout


# =========================================================================== -o the content folder
@pytest.mark.parametrize("spelling", ["{d}", "{d}/", "{d}/../photos", "{link}"])
def test_out_is_the_content_folder_refused(tmp_path, model, capsys, spelling):
    d = _folder(tmp_path)
    (tmp_path / "link").symlink_to(d)
    before = sorted(p.name for p in d.iterdir())
    out = spelling.format(d=d, link=tmp_path / "link")
    rc, stdout, err = run(_cmd(d, out, model), capsys)
    assert_usage_error(rc, err, "is the content folder", "-o ")
    assert sorted(p.name for p in d.iterdir()) == before and stdout == ""


def test_out_inside_the_content_folder_is_fine(tmp_path, model, capsys):
    d = _folder(tmp_path)
    for _ in range(2):      # the subfolder is not listed as input on the re-run
        rc, stdout, err = run(_cmd(d, d / "styled", model), capsys)
        assert rc == 0, err
    assert sorted(p.name for p in (d / "styled").iterdir()) == ["a.png", "b.png"]
    assert stdout.startswith("nothing to do")


# =========================================================================== output lines
def test_each_output_line_is_one_write(monkeypatch):
    """--nproc workers share one pipe; under PYTHONUNBUFFERED print() writes the text and the
    newline separately, so two workers' lines could merge into one (and one vanish)."""
    writes = []

    class Stream:
        def write(self, s):
            writes.append(s)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Stream())
    monkeypatch.setattr(sys, "stderr", Stream())
    cli._say("a.png", "->", "out/a.png (0.01 s)")
    cli._note("skipped b.png: file is empty")
    cli._error("2 of 3 images could not be stylized")
    assert writes == ["a.png -> out/a.png (0.01 s)\n", "resty: skipped b.png: file is empty\n",
                      "resty: error: 2 of 3 images could not be stylized\n"]


# =========================================================================== --nproc
def test_nproc_workers_clashing_stems_and_failures(tmp_path, model):
    d = _folder(tmp_path, ("a.jpg", "a.png", "b.png", "c.png"))
    _bad_files(d)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "resty", *map(str, _cmd(d, out, model, "--nproc", "2"))]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    expected = ["a.jpg.png", "a.png.png", "b.png", "c.png"]
    assert sorted(_arrows(r.stdout)) == [str(out / n) for n in expected]    # each once
    assert sorted(p.name for p in out.iterdir()) == expected
    failed = [ln for ln in r.stderr.splitlines() if ln.startswith("resty: failed: ")]
    assert sorted(Path(ln.split(": ")[2]).name for ln in failed) == ["bad.png", "cut.jpg", "empty.png", "gone.png"]
    assert "truncated" in r.stderr          # found by a worker (the header is fine), reported by the parent
    assert r.stderr.strip().splitlines()[-1].startswith("resty: error: 4 of 8 images could not be stylized")
    assert r.stdout.strip().splitlines()[-1] == f"stylized 4 images into {out} (2 processes; 4 failed)"
