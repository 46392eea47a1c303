"""Hostile input to the command line: each mistake ends with one ``resty: error:`` line and exit
status 2, and nothing a user made is lost."""
from __future__ import annotations

import numpy as np
import pytest

from resty.backends import is_installed
from resty.presets import get as get_preset

from cli_helpers import assert_usage_error, offline_env, run

HAS_TORCH, HAS_TF = is_installed("torch"), is_installed("tf")


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    offline_env(tmp_path, monkeypatch)


def _tiny_preset():
    p = get_preset("johnson2016")
    return p.replace(transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from resty.backends import get_backend
    name = "torch" if HAS_TORCH else "tf"
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    get_backend(name).FastStylizer(_tiny_preset(), weights="random:0", device="cpu").save(path)
    return path


@pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed")
def test_convert_overwrite_never_deletes_a_folder_resty_did_not_write(model, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    rc, _, err = run(["convert", model, "--to", "savedmodel", "-o", folder, "--overwrite"], capsys)
    assert_usage_error(rc, err, str(folder), "not a SavedModel")
    assert (folder / "thesis.tex").read_text() == "years of work"
    # a SavedModel Resty wrote is replaced
    out = tmp_path / "sm"
    assert run(["convert", model, "--to", "savedmodel", "-o", out], capsys)[0] == 0
    stamp = (out / "saved_model.pb").stat().st_mtime_ns
    rc, _, err = run(["convert", model, "--to", "savedmodel", "-o", out, "--overwrite"], capsys)
    assert rc == 0, err
    assert (out / "saved_model.pb").exists() and (out / "saved_model.pb").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_home", "mine", "sm"]     # no leftovers
