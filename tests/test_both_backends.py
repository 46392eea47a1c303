"""Both backends in one process, imported in either order, directly (not through
resty.backends.get_backend): every later call must be safe.  Importing TensorFlow before torch's
lazily imported parts (torchvision, torch._dynamo, which torch.optim loads on first use) can
crash the process with a segmentation fault, so each order runs in its own interpreter."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resty.backends import is_installed

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    if sys.argv[1] == "torch-first":
        import resty_torch as first
        import resty_tf as second
    else:
        import resty_tf as first
        import resty_torch as second
    from resty.presets import get
    p = get("johnson2016")
    p = p.replace(transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1))
    rng = np.random.default_rng(0)
    imgs = [rng.random((32, 32, 3)).astype(np.float32) for _ in range(2)]
    for B in (first, second):
        f = B.FastStylizer(p, weights="random:0", device="cpu")
        f.fit(imgs, imgs[0], steps=1, batch_size=2, image_size=24, num_workers=0)
        assert f.stylize(imgs[0]).shape == (32, 32, 3)
        g = B.GatysStylizer("gatys2015", weights="random:0", device="cpu")
        assert g.stylize(imgs[0], imgs[1], iterations=2, image_size=32).shape == (32, 32, 3)
    print("OK", sys.argv[1])
""")


@pytest.mark.skipif(not (is_installed("torch") and is_installed("tf")), reason="needs both frameworks")
@pytest.mark.parametrize("order", ["torch-first", "tf-first"])
def test_both_backends_in_one_process_in_either_order(order, tmp_path):
    script = tmp_path / "both.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script), order], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, f"exit {r.returncode} (139 is a segfault): {r.stderr[-1500:]}"
    assert f"OK {order}" in r.stdout
