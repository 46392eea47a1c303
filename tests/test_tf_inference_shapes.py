"""resty_tf FastStylizer: one traced inference function for every image size (a folder of
photos of different sizes used to pay a ~1 s retrace for each of its first new shapes)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")          # torch before tensorflow in one process
tf = pytest.importorskip("tensorflow")

import resty_tf as rtf  # noqa: E402
from resty import presets  # noqa: E402


def test_one_trace_for_all_sizes_and_same_pixels():
    p = presets.get("johnson2016")
    p = p.replace(name="tiny", transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1))
    f = rtf.FastStylizer(p, weights="random:0", device="cpu", transformer_weights="random:3")
    rng = np.random.default_rng(0)
    images = [rng.random(hw + (3,)).astype(np.float32) for hw in [(33, 40), (40, 40), (27, 51), (40, 33)]]
    outs = [f.stylize(x) for x in images]
    assert f._infer.experimental_get_tracing_count() == 1
    assert [o.shape[:2] for o in outs] == [x.shape[:2] for x in images]
    # the shape-generic graph computes what the eager net computes
    for x, y in zip(images, outs):
        ref = np.clip(f.net(tf.convert_to_tensor(x[None]), training=False).numpy()[0], 0, 1)
        np.testing.assert_allclose(y, ref, atol=1e-5)
