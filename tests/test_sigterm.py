"""SIGTERM during a single-process fit (both backends): the step in flight finishes, a
checkpoint is written, one line on stderr says how to continue, and the process still dies of
SIGTERM (exit -15); resume=True then continues from that step."""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import torch  # torch before tensorflow
    sys.path.insert(0, {root!r})
    from resty import presets
    backend, ckdir, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    p = presets.get("johnson2016")
    p = p.replace(name="tiny", transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1),
                  fast_loss=p.fast_loss.replace(style_layers=("relu1_2", "relu2_2"), style_layer_weights=(1.0, 1.0)),
                  training=p.training.replace(image_size=24, batch_size=1, num_workers=0, checkpoint_every=100))
    if backend == "torch":
        import resty_torch as rb
    else:
        import resty_tf as rb
    rng = np.random.default_rng(0)
    images = [rng.random((28, 30, 3)).astype(np.float32) for _ in range(4)]
    style = rng.random((24, 24, 3)).astype(np.float32)
    f = rb.FastStylizer(p, weights="random:0", device="cpu")
    def callback(step, losses, _):
        if not resume and step == 2:
            os.kill(os.getpid(), signal.SIGTERM)     # as a job scheduler would
    s = f.fit(images, style, steps=4, checkpoint_dir=ckdir, resume=resume, callback=callback)
    print("DONE", s["start_step"], s["steps"])
""")


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_sigterm_checkpoints_says_so_and_resumes(backend, tmp_path):
    if importlib.util.find_spec("torch") is None or (backend == "tf" and importlib.util.find_spec("tensorflow") is None):
        pytest.skip(f"needs {backend}")
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    ck = tmp_path / "ck"
    r = subprocess.run([sys.executable, str(script), backend, str(ck), "0"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -signal.SIGTERM, r.stderr[-2000:]
    assert "DONE" not in r.stdout
    lines = [l for l in r.stderr.splitlines() if l.startswith("resty: terminated (SIGTERM)")]
    assert len(lines) == 1 and "at step 2" in lines[0] and str(ck) in lines[0] and "--resume" in lines[0]
    from resty.checkpoints import latest_checkpoint
    assert latest_checkpoint(ck) is not None and "00000002" in latest_checkpoint(ck).name
    r = subprocess.run([sys.executable, str(script), backend, str(ck), "1"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DONE 2 4" in r.stdout
