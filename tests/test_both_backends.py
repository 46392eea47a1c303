"""Both backends in one process, imported in either order, directly (not through
resty.backends.get_backend): every later call must be safe.  Importing TensorFlow before torch's
lazily imported parts (torchvision, torch._dynamo, which torch.optim loads on first use) can
crash the process with a segmentation fault, so each order runs in its own interpreter."""
import subprocess
import sys
from pathlib import Path

import pytest

from resty.backends import is_installed

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = Path(__file__).with_name("both_backends_script.py")



@pytest.mark.skipif(not (is_installed("torch") and is_installed("tf")), reason="needs both frameworks")
@pytest.mark.parametrize("order", ["torch-first", "tf-first"])
def test_both_backends_in_one_process_in_either_order(order, tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), order], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, f"exit {r.returncode} (139 is a segfault): {r.stderr[-1500:]}"
    assert f"OK {order}" in r.stdout
