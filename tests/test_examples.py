"""Each script in examples/ runs with --quick (a couple of minutes at most on CPU).

They run as subprocesses, as a user would run them, in a temporary working directory and with
offline, empty caches.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resty.backends import is_installed

REPO = Path(__file__).resolve().parents[1]
BOTH = is_installed("torch") and is_installed("tf")


def _run(script, args, tmp_path, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               RESTY_OFFLINE="1", RESTY_HOME=str(tmp_path / "home"), MPLBACKEND="Agg",
               TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
@pytest.mark.skipif(not BOTH, reason="needs both backends")
def test_reproduce_report(tmp_path):
    out = _run("reproduce_report.py", ["--quick", "--out", "rep", "--size", "32"], tmp_path)
    assert (tmp_path / "rep" / "demo.png").exists()
    assert "39" in (tmp_path / "rep" / "timing.md").read_text()
    assert "| Gatys | PyTorch |" in out and "| Fast (Johnson) | TensorFlow |" in out


@pytest.mark.slow
@pytest.mark.skipif(not is_installed("torch"), reason="needs torch")
def test_train_fast(tmp_path):
    out = _run("train_fast.py", ["--quick", "--out", "m.safetensors", "--image-size", "32"], tmp_path)
    assert (tmp_path / "m.safetensors").exists() and (tmp_path / "m.png").exists()
    assert "trained 3 steps" in out
    if BOTH:
        diff = float(out.split("max |difference| to torch = ")[1].split()[0])
        assert diff < 1e-3


@pytest.mark.slow
@pytest.mark.skipif(not BOTH, reason="needs both backends")
def test_compare_frameworks(tmp_path):
    out = _run("compare_frameworks.py", ["--quick"], tmp_path)
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "compared" not in ln]
    assert len(rows) == 4
    for ln in rows:
        diff = float(ln.split("|")[2])
        assert diff < 5e-3, ln


@pytest.mark.slow
@pytest.mark.skipif(not is_installed("torch"), reason="needs torch")
def test_export_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    out = _run("export_onnx.py", ["--quick", "--out", "m.onnx"], tmp_path)
    assert (tmp_path / "m.onnx").exists()
    diff = float(out.split("max |difference| ")[1].split()[0])
    assert diff < 1e-3


@pytest.mark.slow
@pytest.mark.skipif(not is_installed("torch"), reason="needs torch")
def test_adain_short_run(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    args = ["--quick", "--threads", "1", "--diagnose", "--curve-every", "1", "--figure", "a.png"]
    out = _run("adain_short_run.py", args, tmp_path)
    assert (tmp_path / "a.png").exists() and "trained 3 steps" in out
    import json
    rep = json.loads((tmp_path / "adain-run" / "report.json").read_text())
    assert len(rep["trained"]) == 4 and [r["step"] for r in rep["curve"]] == [1, 2, 3]
    assert set(rep["diagnosis"]) == {"coffee", "chelsea"}
    assert "trained 3 steps" in _run("adain_short_run.py", args, tmp_path)   # resumes: same inputs


@pytest.mark.parametrize("script, args, words", [
    ("compare_frameworks.py", ["--preset", "nope"], "unknown preset 'nope'"),
    ("train_fast.py", ["--quick", "--data", "/nonexistent-folder"], "/nonexistent-folder"),
    ("export_onnx.py", ["/nonexistent.safetensors"], "/nonexistent.safetensors"),
])
def test_bad_input_is_one_line_exit_2(script, args, words, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               RESTY_OFFLINE="1", RESTY_HOME=str(tmp_path / "home"), MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("RESTY_DEBUG", None)
    r = subprocess.run([sys.executable, str(REPO / "examples" / script), *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith(f"{script}: error:")]
    assert len(err) == 1 and words in err[0], r.stderr[-2000:]
