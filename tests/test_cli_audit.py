"""The ``resty`` command, problems found by a CLI audit (one test or more per fix):

1. ``resty parity --help`` / ``-h`` show the parity options (exit 0);
2. a destination that cannot be written is refused before any work (one line, exit 2);
3. ``resty parity --only UNKNOWN`` is a standard ``resty: error:`` line;
4. ``resty stylize FOLDER`` skips finished outputs with or without ``--nproc`` and sums up;
5. ``--nproc`` workers get ``OMP_NUM_THREADS`` (no torchrun banner about it).

Everything runs in-process with tiny inputs; the expensive parts (model loading, training,
the parity report, the benchmark, torchrun workers) are replaced by fakes that fail the test if
they are reached when they should not be.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from resty import cli
from resty import distributed as rdist
from resty.images import load_image, save_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Empty caches, no downloads, working directory in tmp."""
    offline_env(tmp_path, monkeypatch)
    for var in (rdist.CHILD_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK", "TF_CONFIG",
                "RESTY_RANK", "RESTY_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def imgs(tmp_path):
    yy, xx = np.mgrid[0:32, 0:40] / 40.0
    content = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx)], -1)
    style = np.random.default_rng(0).random((24, 24, 3))
    d = tmp_path / "in"
    paths = {"content": save_image(content, d / "content.png"), "style": save_image(style, d / "style.png")}
    folder = tmp_path / "photos"
    for i, name in enumerate(("a.png", "b.jpg", "c.png")):
        save_image(np.roll(content, 3 * i, axis=1), folder / name)
    paths["folder"] = folder
    afile = tmp_path / "afile"
    afile.write_bytes(b"a regular file")
    paths["afile"] = afile
    return {k: str(v) for k, v in paths.items()}


from cli_helpers import assert_usage_error, offline_env, run  # noqa: E402,F401  (tests/ is on sys.path)


def _tree(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "_home" not in p.parts)


@pytest.fixture
def no_work(monkeypatch):
    """Every expensive step raises: a test using this proves the command stopped before it."""
    def boom(*a, **k):
        raise AssertionError("expensive work started before the arguments were checked")
    import resty.backends
    import resty.bench
    import resty.demo
    monkeypatch.setattr(cli, "_backend", boom)
    monkeypatch.setattr(resty.backends, "convert_model", boom)
    monkeypatch.setattr(resty.bench, "run_bench", boom)
    monkeypatch.setattr(resty.demo, "run_demo", boom)
    monkeypatch.setattr(rdist, "relaunch_cli", boom)


# =========================================================================== 1 + 3: parity
def _fake_parity(monkeypatch, keys=("preprocess", "vgg19-max")):
    """Stand-ins for parity_tests.__main__ (its parser and main) and parity_tests.cases (the
    quantity keys), so no framework is imported.  Returns the list of argv main() got."""
    calls = []

    def _parser():
        p = argparse.ArgumentParser(prog="python -m parity_tests", description="Compare the frameworks.")
        p.add_argument("--report", action="store_true", help="print the markdown report")
        p.add_argument("--json", metavar="FILE", help="also write every row as JSON")
        p.add_argument("--quick", action="store_true", help="only the quick subset of quantities")
        p.add_argument("--only", metavar="KEY", action="append", default=[], help="run only this quantity")
        p.add_argument("--list", action="store_true", help="list the quantities and exit")
        p.add_argument("--tolerances", action="store_true", help="print the tolerance table and exit")
        return p

    def main(argv):
        calls.append(list(argv))
        args = _parser().parse_args(argv)
        if args.list or args.tolerances:
            return 0
        unknown = [k for k in args.only if k not in keys]
        if unknown:     # what the real one does
            print(f"unknown quantity {unknown[0]!r}; see --list", file=sys.stderr)
            return 2
        return 0

    fake_main = types.ModuleType("parity_tests.__main__")
    fake_main._parser, fake_main.main = _parser, main
    fake_cases = types.ModuleType("parity_tests.cases")
    fake_cases.build = lambda: [types.SimpleNamespace(key=k) for k in keys]
    monkeypatch.setitem(sys.modules, "parity_tests.__main__", fake_main)
    monkeypatch.setitem(sys.modules, "parity_tests.cases", fake_cases)
    return calls


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_parity_help_lists_the_parity_options(flag, monkeypatch, capsys):
    calls = _fake_parity(monkeypatch)
    rc, out, err = run(["parity", flag], capsys)
    assert rc == 0, err
    assert "usage: resty parity" in out
    for opt in ("--only", "--list", "--json", "--quick"):
        assert opt in out
    assert calls == []          # help only: the report did not run


def test_parity_help_without_the_parity_tests(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "parity_tests.__main__", None)   # import fails
    rc, out, err = run(["parity", "--help"], capsys)
    assert rc == 0, err
    assert "resty parity" in out and "parity_tests" in out


def test_parity_bad_option_is_one_line(monkeypatch, capsys):
    calls = _fake_parity(monkeypatch)
    rc, out, err = run(["parity", "--bogus"], capsys)
    assert_usage_error(rc, err, "--bogus", "resty parity --help")
    assert "usage:" not in err and calls == []


def test_parity_unknown_quantity_is_a_usage_error(monkeypatch, capsys):
    calls = _fake_parity(monkeypatch)
    rc, out, err = run(["parity", "--only", "nope"], capsys)
    line = assert_usage_error(rc, err, "'nope'", "--list")
    assert line.startswith("resty: error: --only: unknown quantity 'nope'")
    assert err.strip() == line and calls == []
    # known quantities (and --list with an unknown one) still reach the report
    rc, _, err = run(["parity", "--only", "preprocess", "--quick"], capsys)
    assert rc == 0, err
    assert calls == [["--only", "preprocess", "--quick"]]
    rc, _, err = run(["parity", "--list", "--only", "nope"], capsys)
    assert rc == 0, err


def test_parity_json_destination_checked_first(monkeypatch, imgs, capsys):
    calls = _fake_parity(monkeypatch)
    rc, _, err = run(["parity", "--json", Path(imgs["afile"]).name + "/rows.json"], capsys)
    assert_usage_error(rc, err, "cannot write afile/rows.json", "afile is a file, not a folder")
    assert calls == []


# =========================================================================== 2: destinations first
BAD_DESTINATIONS = [
    (["stylize", "{content}", "{style}", "-o", "afile/out.png"], "afile/out.png"),
    (["stylize", "{folder}", "{style}", "-o", "afile/styled"], "afile/styled"),
    (["stylize", "{folder}", "{style}", "-o", "afile/styled", "--nproc", "2"], "afile/styled"),
    (["stylize", "{content}", "-o", "afile/out.png", "--method", "fast", "--model", "{content}"], "afile/out.png"),
    (["train", "{style}", "--data", "{folder}", "--out", "afile/t.safetensors", "--steps", "1"],
     "afile/t.safetensors"),
    (["train", "{style}", "--data", "{folder}", "--out", "afile/t.safetensors", "--steps", "1", "--nproc", "2"],
     "afile/t.safetensors"),
    (["train", "{style}", "--data", "{folder}", "--out", "t.safetensors", "--steps", "1",
      "--checkpoint-dir", "afile/ck"], "afile/ck"),
    (["train", "{style}", "--data", "{folder}", "--out", "t.safetensors", "--steps", "1",
      "--sample-every", "1", "--sample-dir", "afile/samples"], "afile/samples"),
    (["train", "{style}", "--data", "{folder}", "--out", "afile.safetensors", "--steps", "1",
      "--sample-every", "1"], None),      # default sample folder afile_samples: made a file below
    (["convert", "{content}", "--to", "onnx", "-o", "afile/c.onnx"], "afile/c.onnx"),
    (["convert", "{content}", "--to", "savedmodel", "-o", "afile/m_savedmodel"], "afile/m_savedmodel"),
    (["bench", "--out", "afile"], "afile"),
    (["bench", "--out", "afile/sub", "--quick"], "afile/sub"),
    (["demo", "--out", "afile/demo"], "afile/demo"),
]


@pytest.mark.parametrize("argv, shown", BAD_DESTINATIONS)
def test_unwritable_destination_refused_before_any_work(argv, shown, imgs, tmp_path, no_work, capsys):
    if shown is None:
        (tmp_path / "afile_samples").write_bytes(b"a regular file")
        shown, blocker = "afile_samples", "afile_samples"
    else:
        blocker = "afile"
    before = _tree(tmp_path)
    rc, out, err = run([a.format(**imgs) for a in argv], capsys)
    assert_usage_error(rc, err, f"cannot write {shown}:", f"{blocker} is a file, not a folder")
    assert _tree(tmp_path) == before      # nothing created, nothing lost
    assert Path(imgs["afile"]).read_bytes() == b"a regular file"


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.isdir("/proc/self"),
                    reason="needs Linux /proc")
@pytest.mark.parametrize("argv", [
    ["stylize", "{content}", "{style}", "-o", "/proc/out.png"],
    ["stylize", "{content}", "{style}", "-o", "/proc/resty-audit/deeper/out.png"],
    ["train", "{style}", "--data", "{folder}", "--out", "/proc/t.safetensors", "--steps", "1"],
    ["convert", "{content}", "--to", "onnx", "-o", "/proc/c.onnx"],
    ["bench", "--out", "/proc/bench"],
])
def test_read_only_destination_refused_before_any_work(argv, imgs, no_work, capsys):
    # /proc takes no new files, even for root (for whom os.access says every folder is writable)
    rc, _, err = run([a.format(**imgs) for a in argv], capsys)
    assert_usage_error(rc, err, "cannot write /proc/", "/proc is not writable")


def test_writable_check_creates_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "out.png"
    cli._check_writable(target)
    cli._check_writable(tmp_path / "fresh-folder", folder=True)
    assert not (tmp_path / "new").exists() and not (tmp_path / "fresh-folder").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".resty")]   # probe removed


# =========================================================================== 4: folder re-runs
class _FakeStylizer:
    """Returns the content unchanged (the CLI's bookkeeping is under test, not the method)."""

    calls: list = []

    def __init__(self, *a, **k):
        pass

    def stylize(self, img, *a, **k):
        _FakeStylizer.calls.append(img.shape)
        return img


@pytest.fixture
def fake_backend(monkeypatch):
    _FakeStylizer.calls = []
    mod = types.SimpleNamespace(GatysStylizer=_FakeStylizer)
    monkeypatch.setattr(cli, "_backend", lambda name: mod)
    return _FakeStylizer.calls


def _stylize_folder(imgs, out, *extra):
    return ["stylize", imgs["folder"], imgs["style"], "-o", out, "--weights", "random:0", "-q", *extra]


def test_stylize_folder_skips_finished_outputs(imgs, tmp_path, fake_backend, capsys):
    out = tmp_path / "styled"
    out.mkdir()
    (out / "a.png").write_bytes(b"finished earlier")
    rc, stdout, err = run(_stylize_folder(imgs, out), capsys)
    assert rc == 0, err
    assert (out / "a.png").read_bytes() == b"finished earlier"      # kept, not redone
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert len(fake_backend) == 2
    assert "[1/2]" in stdout and "[2/2]" in stdout
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith(f"stylized 2 images into {out} (")
    assert "1 already there, skipped; --overwrite to redo" in summary
    # --overwrite redoes every image
    rc, stdout, err = run(_stylize_folder(imgs, out, "--overwrite"), capsys)
    assert rc == 0, err
    assert load_image(str(out / "a.png")).shape == (32, 40, 3)
    assert len(fake_backend) == 5 and "already there" not in stdout
    assert stdout.strip().splitlines()[-1].startswith(f"stylized 3 images into {out} (")


def test_stylize_folder_all_done_says_so(imgs, tmp_path, no_work, capsys):
    out = tmp_path / "styled"
    out.mkdir()
    for n in ("a", "b", "c"):
        (out / f"{n}.png").write_bytes(b"done")
    for extra in ([], ["--nproc", "2"]):
        rc, stdout, err = run(_stylize_folder(imgs, out, *extra), capsys)
        assert rc == 0, err
        assert stdout.strip() == (f"nothing to do: the outputs of all 3 images already exist in {out} "
                                  "(--overwrite to redo)")


def test_stylize_folder_nproc_parent_skips_and_sums_up(imgs, tmp_path, monkeypatch, capsys):
    """The --nproc parent counts what is left and sums up after the workers (faked here)."""
    out = tmp_path / "styled"
    out.mkdir()
    (out / "b.png").write_bytes(b"finished earlier")
    launched = []

    def fake_relaunch(backend, nproc, argv, *, collective=True, env=None):
        launched.append((backend, nproc, collective))
        for n in ("a", "c"):
            save_image(np.zeros((4, 4, 3)), out / f"{n}.png")
        return 0

    monkeypatch.setattr(rdist, "relaunch_cli", fake_relaunch)
    monkeypatch.setattr(cli, "_backend", lambda name: pytest.fail("the parent loaded a model"))
    rc, stdout, err = run(_stylize_folder(imgs, out, "--nproc", "2"), capsys)
    assert rc == 0, err
    assert launched == [("torch", 2, False)]
    assert stdout.strip() == (f"stylized 2 images into {out} (2 processes; 1 already there, skipped; "
                              "--overwrite to redo)")


def test_stylize_folder_worker_does_its_share_without_summing_up(imgs, tmp_path, fake_backend, monkeypatch,
                                                                 capsys):
    out = tmp_path / "styled"
    monkeypatch.setenv(rdist.CHILD_ENV, "1")
    monkeypatch.setenv("RESTY_RANK", "1")
    monkeypatch.setenv("RESTY_WORLD_SIZE", "2")
    rc, stdout, err = run(_stylize_folder(imgs, out), capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]        # rank 1 of 2: the 2nd image
    assert "stylized" not in stdout                                  # the parent sums up


def test_stylize_folder_nproc_checks_images_before_launching(imgs, tmp_path, no_work, capsys):
    # a broken image is found by the parent (header only), not launched, and listed at the end
    for n in ("a.png", "b.jpg", "c.png"):
        (Path(imgs["folder"]) / n).unlink()
    (Path(imgs["folder"]) / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    rc, _, err = run(_stylize_folder(imgs, tmp_path / "styled", "--nproc", "2"), capsys)
    assert_usage_error(rc, err, "1 of 1 image could not be stylized")
    assert "resty: failed: " in err and "d.png" in err


# =========================================================================== 5: OMP_NUM_THREADS
class _FakePopen:
    envs: list = []

    def __init__(self, argv, env=None, **kw):
        _FakePopen.envs.append(dict(env or {}))

    def poll(self):
        return 0


def test_torchrun_workers_get_omp_num_threads(monkeypatch):
    _FakePopen.envs = []
    monkeypatch.setattr(rdist.subprocess, "Popen", _FakePopen)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert rdist.launch_torch(2, ["-m", "resty", "presets"]) == 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _FakePopen.envs[-1]["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert rdist.omp_threads_per_process(10 ** 6) == 1
    # the user's own setting wins (from the environment or from env=)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    rdist.launch_torch(2, ["-m", "resty", "presets"])
    assert _FakePopen.envs[-1]["OMP_NUM_THREADS"] == "3"
    monkeypatch.delenv("OMP_NUM_THREADS")
    rdist.launch_torch(2, ["-m", "resty", "presets"], env={"OMP_NUM_THREADS": "5"})
    assert _FakePopen.envs[-1]["OMP_NUM_THREADS"] == "5"


def test_torchrun_prints_no_omp_banner(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "worker.py"
    # one write per line: two workers share the pipe (print writes text and newline separately
    # when unbuffered, and lines then interleave)
    script.write_text("import os; os.write(1, f\"threads {os.environ.get('OMP_NUM_THREADS')}\\n\".encode())\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    code = f"from resty import distributed as d; raise SystemExit(d.launch_torch(2, [{str(script)!r}], timeout=60))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("threads ") == 2 and "threads None" not in r.stdout
    assert "OMP_NUM_THREADS" not in r.stderr, r.stderr
