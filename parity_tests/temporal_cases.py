"""The temporal loss (ReReVST, resty.temporal): the warp of the core's plans applied to each
framework's tensors, and the loss ``‖S(W(x) + n) − W(S(x))‖²`` through a small transformer,
torch vs TF vs the float64 oracle (resty.reference_temporal's warp, resty.reference's
transformer).  Small: a 4/8/8-channel net, 1 residual block, 24×28 images, batch 2."""
from __future__ import annotations

import functools
from typing import List

import numpy as np

from resty import temporal as TT
from resty.reference import transformer_forward
from resty.reference_temporal import warp_bilinear, warp_nearest
from resty.specs import TransformerSpec

from .compare import Quantity

SPEC = TransformerSpec(channels=(4, 8, 8), residual_blocks=1)
HW = (24, 28)


def _c():
    from . import cases
    return cases


@functools.lru_cache(maxsize=None)
def _perturbation():
    return TT.temporal_pair(3, 11, HW[0], HW[1], 2, magnitude=3.0, noise_std=0.02)


@functools.lru_cache(maxsize=None)
def _weights():
    from resty.weights import random_transformer
    return random_transformer(SPEC, 9)


def _flows():
    rng = np.random.default_rng([3, 11, 0x7E4D])
    return [TT.random_smooth_flow(rng, HW[0], HW[1], magnitude=3.0) for _ in range(2)]


def q_warp(ctx, dtype):
    """The core's warp plans (random smooth flows, 3 px) on a batch of 2 images, 5 channels:
    bilinear (``warped``) and nearest (``warped_nearest``, the temporal loss's)."""
    c = _c()
    x = c.image("temporal-warp", (2,) + HW + (5,))
    modes = {"warped": "bilinear", "warped_nearest": "nearest"}
    plans = {k: [TT.warp_plan(f, m) for f in _flows()] for k, m in modes.items()}

    def torch_side():
        import torch
        from resty_torch.temporal import WarpBatch, apply_warp
        t = torch.tensor(c.nchw(x).astype(dtype), device=ctx.torch_device)
        return {k: c.nhwc(apply_warp(t, WarpBatch(p, t.device, t.dtype)).cpu().numpy()) for k, p in plans.items()}

    def tf_side():
        import tensorflow as tf
        from resty_tf.temporal import WarpBatch, apply_warp
        t = tf.constant(x.astype(dtype))
        return {k: apply_warp(t, WarpBatch(p, t.dtype)).numpy() for k, p in plans.items()}

    oracle = {"warped": warp_bilinear, "warped_nearest": warp_nearest}
    return c.sides(ctx, torch=torch_side, tf=tf_side,
                   ref=lambda: {k: np.stack([o(x[b], f)[0] for b, f in enumerate(_flows())]) for k, o in oracle.items()})


def q_loss(ctx, dtype):
    """``Σ valid·(S(W(x) + n) − W(S(x)))² / (3 Σ valid)`` through the small transformer."""
    c = _c()
    x = c.image("temporal-loss", (2,) + HW + (3,))
    plans, noise = _perturbation()
    ws = _weights()

    def torch_side():
        import torch
        from resty_torch.temporal import temporal_loss
        from resty_torch.transformer import TransformerNet
        net = TransformerNet(SPEC, weights=ws, dtype=dtype, device=ctx.torch_device)
        with torch.no_grad():
            v = temporal_loss(net, torch.tensor(c.nchw(x).astype(dtype), device=ctx.torch_device), plans, noise)
        return {"temporal": np.asarray(float(v))}

    def tf_side():
        import tensorflow as tf
        from resty_tf.temporal import temporal_loss
        from resty_tf.transformer import TransformerNet
        net = TransformerNet(SPEC, weights=ws, dtype=dtype)
        return {"temporal": np.asarray(float(temporal_loss(net, tf.constant(x.astype(dtype)), plans, noise)))}

    def ref():
        flows = _flows()

        def w(a):
            return np.stack([warp_nearest(a[b], flows[b])[0] for b in range(len(a))])   # TT.TRAINING_WARP
        t = {k: np.asarray(v, np.float64) for k, v in ws.tensors.items()}
        s = lambda a: transformer_forward(a, t, SPEC)   # noqa: E731
        valid = np.stack([warp_nearest(np.zeros(HW + (1,)), f)[1] for f in flows]).astype(np.float64)[..., None]
        d = (s(w(x) + np.asarray(noise, np.float64)) - w(s(x))) ** 2
        return {"temporal": np.asarray(float(np.sum(valid * d) / (3.0 * valid.sum())))}

    return c.sides(ctx, torch=torch_side, tf=tf_side, ref=ref)


def build() -> List[Quantity]:
    return [
        Quantity("temporal-warp", f"temporal loss: the core's warp plans on each framework's tensors (2×{HW[0]}×{HW[1]}"
                 "×5, random smooth flows of 3 px; bilinear and nearest)", "output", q_warp),
        Quantity("temporal-loss", "temporal loss ‖S(W(x)+n) − W(S(x))‖² (ReReVST, nearest warp) through a small transformer",
                 "loss", q_loss),
    ]
