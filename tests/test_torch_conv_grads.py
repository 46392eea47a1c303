"""resty_torch's stride-1 convolution with forward-convolution gradients (resty_torch.convgrad).

TransformerNet uses it on the CPU (``conv_grads="auto"``), where oneDNN's convolution backward
is slow for few channels.  It must give autograd's gradients to float rounding for every shape
the transformer has, leave a whole network's parameter gradients unchanged, and stay out of the
way where it does not apply (inference, strided convs, autocast, ``conv_grads="native"``).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from resty.specs import TransformerSpec  # noqa: E402
from resty_torch import TransformerNet  # noqa: E402
from resty_torch.convgrad import conv2d_forward_grads  # noqa: E402

from conv_grad_cases import CONV_GRAD_CASES  # noqa: E402  (tests/ is on sys.path)

gen = torch.Generator().manual_seed(3)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("n,h,w,ci,co,kh,kw,bias", CONV_GRAD_CASES)
def test_forward_grads_equal_autograd_float64(n, h, w, ci, co, kh, kw, bias):
    x = torch.randn(n, ci, h, w, dtype=torch.float64, generator=gen, requires_grad=True)
    k = torch.randn(co, ci, kh, kw, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(co, dtype=torch.float64, generator=gen, requires_grad=True) if bias else None
    dy = torch.randn(n, co, h - kh + 1, w - kw + 1, dtype=torch.float64, generator=gen)
    ins = [x, k] + ([b] if bias else [])
    y1 = conv2d_forward_grads(x, k, b)
    g1 = torch.autograd.grad(y1, ins, dy)
    y0 = F.conv2d(x, k, b)
    g0 = torch.autograd.grad(y0, ins, dy)
    assert rel(y1, y0) == 0.0
    for a, r in zip(g1, g0):
        assert a.shape == r.shape and rel(a, r) < 1e-12


def test_only_the_needed_gradients_are_computed():
    x = torch.randn(1, 4, 9, 9, generator=gen)                     # data: no gradient wanted
    k = torch.randn(3, 4, 3, 3, generator=gen, requires_grad=True)
    (gk,) = torch.autograd.grad(conv2d_forward_grads(x, k).sum(), [k])
    (want,) = torch.autograd.grad(F.conv2d(x, k).sum(), [k])
    assert rel(gk, want) < 1e-5


def _param_grads(net, x):
    y = net(x)
    obj = torch.sin(3.0 * y).sum()
    return y, torch.autograd.grad(obj, list(net.parameters()))


def _count_calls(monkeypatch):
    import resty_torch.transformer as T
    calls = []
    real = T.conv2d_forward_grads

    def counting(x, w, b=None):
        calls.append(tuple(w.shape))
        return real(x, w, b)
    monkeypatch.setattr(T, "conv2d_forward_grads", counting)
    return calls


def test_transformer_parameter_gradients_unchanged_float64(monkeypatch):
    from resty.specs import transformer_layers
    spec = TransformerSpec(channels=(4, 8, 8), residual_blocks=1)
    net = TransformerNet(spec, "random:1", dtype="float64", device="cpu")
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64, generator=gen)
    calls = _count_calls(monkeypatch)
    y1, g1 = _param_grads(net, x)
    n_stride1 = sum(1 for d in transformer_layers(spec) if d.stride == 1 and not d.transposed)
    assert len(calls) == n_stride1                 # every stride-1 conv took the path on the CPU
    net.configure(conv_grads="native")
    y0, g0 = _param_grads(net, x)
    assert len(calls) == n_stride1
    assert rel(y1, y0) == 0.0
    # Biases of convs followed by instance norm have zero gradient (the norm removes them), so
    # compare against the largest gradient, not each tensor's own (rounding-noise) scale.
    scale = max(float(b.abs().max()) for b in g0)
    for a, b in zip(g1, g0):
        assert float((a - b).abs().max()) < 1e-10 * scale


def test_path_not_taken_for_inference_or_autocast(monkeypatch):
    spec = TransformerSpec(channels=(4, 8, 8), residual_blocks=1)
    net = TransformerNet(spec, "random:1", device="cpu")
    calls = _count_calls(monkeypatch)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x).float().sum().backward()
    assert calls == []
    net(x).sum().backward()
    assert calls
    with pytest.raises(ValueError, match="conv_grads"):
        net.configure(conv_grads="fastest")
