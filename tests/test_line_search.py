"""L-BFGS with torch.optim.LBFGS's strong-Wolfe line search (LBFGSSpec.line_search): a torch
backend option.  It runs within the evaluation budget (plus at most one search), descends, is
taken by the host loop when cuda_graph=True (DeviceLBFGS has no search), and the TensorFlow
backend refuses it up front in one line instead of failing deep inside."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from resty import presets
from resty.errors import RestyError

torch_missing = importlib.util.find_spec("torch") is None
tf_missing = importlib.util.find_spec("tensorflow") is None


def _preset():
    p = presets.get("gatys2015")
    loss = p.loss.replace(content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1", "relu3_1"),
                          style_layer_weights=(1 / 3,) * 3, style_weight=1e4, tv_weight=1e-3)
    g = p.gatys.replace(optimizer="lbfgs", image_size=24, init="noise",
                        lbfgs=p.gatys.lbfgs.replace(max_iter=7, history_size=5, line_search="strong_wolfe"))
    return p.replace(name="tiny-ls", loss=loss, gatys=g)


def _images():
    rng = np.random.default_rng(0)
    return rng.random((24, 24, 3)).astype(np.float32), rng.random((24, 24, 3)).astype(np.float32)


@pytest.mark.skipif(torch_missing, reason="needs torch")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_torch_strong_wolfe_runs_in_budget_and_descends(cuda_graph):
    import resty_torch as rt
    g = rt.GatysStylizer(_preset(), weights="random:0", device="cpu", cuda_graph=cuda_graph)
    content, style = _images()
    out = g.stylize(content, style, iterations=12, seed=1)
    losses = [h["total"] for h in g.history]
    assert 12 <= len(losses) <= 12 + 25
    assert [h["step"] for h in g.history] == list(range(1, len(losses) + 1))
    assert losses[-1] < 0.5 * losses[0]
    assert out.shape == (24, 24, 3) and np.isfinite(out).all()


@pytest.mark.skipif(tf_missing or torch_missing, reason="needs tensorflow")
def test_tf_refuses_line_search_in_one_line():
    import torch  # noqa: F401  (torch before tensorflow)
    import resty_tf as rtf
    g = rtf.GatysStylizer(_preset(), weights="random:0", device="cpu")
    content, style = _images()
    with pytest.raises(RestyError, match="torch backend only") as e:
        g.stylize(content, style, iterations=3)
    assert "\n" not in str(e.value)
    g.stylize(content, style, iterations=2, optimizer="adam")     # Adam is unaffected
