"""The environment parity runs in: TF32 off and determinism on, in both frameworks."""
import sys

import pytest

from parity_tests import env


def test_torch_imported_before_tensorflow():
    # Importing parity_tests imports torch and torchvision first; by now all three are loaded.
    assert "torch" in sys.modules and "torchvision" in sys.modules and "tensorflow" in sys.modules


def test_tf32_off_and_deterministic(parity_ctx):
    env.assert_configured()
    d = parity_ctx.env
    assert d["tf_tf32"] == "False"
    assert "ieee" in d["torch_tf32"] or "False" in d["torch_tf32"]


def test_assert_configured_catches_tf32():
    torch = pytest.importorskip("torch")
    env.configure()
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        try:
            with pytest.raises(AssertionError, match="TF32"):
                env.assert_configured()
        finally:
            env.configure()
    import tensorflow as tf
    tf.config.experimental.enable_tensor_float_32_execution(True)
    try:
        with pytest.raises(AssertionError, match="TF32"):
            env.assert_configured()
    finally:
        env.configure()
    env.assert_configured()
