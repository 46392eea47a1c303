"""resty.demo: what a first run shows (the quick demo's two framework columns agree)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from resty.demo import DemoSettings, run_demo
from resty.images import load_image, resize_to

needs_both = pytest.mark.skipif(not (importlib.util.find_spec("torch") and importlib.util.find_spec("tensorflow")),
                                reason="needs torch and tensorflow")


def test_quick_demo_uses_adam_for_gatys():
    s = DemoSettings.quick()
    assert s.gatys_adam_lr == 0.02 and DemoSettings().gatys_adam_lr is None


@needs_both
def test_quick_demo_gatys_columns_agree(tmp_path):
    """The quick demo's Gatys images from PyTorch and TensorFlow are the same picture (the
    tutorial's L-BFGS in float32 made them unrelated: chaotic trajectories), and stylised."""
    import torch  # noqa: F401  (torch before tensorflow)
    settings = DemoSettings.quick(out=str(tmp_path / "demo"), backends=("torch", "tf"), size=48, iterations=10,
                                  train_steps=1, train_size=32, verbose=False)
    res = run_demo(settings=settings)
    assert {r["preset"] for r in res["rows"] if r["method"] == "gatys"} == {"pytorch-tutorial, Adam lr 0.02"}
    out = tmp_path / "demo"
    a = load_image(out / "chelsea-gatys-torch.png")
    b = load_image(out / "chelsea-gatys-tf.png")
    # The tutorial's preset sizes Gatys by the shorter side: its image is larger than the photo.
    c = resize_to(load_image(out / "chelsea.png"), a.shape[:2])
    assert np.abs(a - b).mean() < 2 / 255
    assert np.abs(a - c).mean() > 5 / 255
