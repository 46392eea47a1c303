"""pytest set-up for the parity suite.

pytest loads the conftest of every ``testpaths`` entry before collecting anything, so importing
:mod:`parity_tests` here imports torch and torchvision before TensorFlow for the whole run
(docs/ARCHITECTURE.md, pitfalls: the other order segfaults), including ``tests/``.
"""
from __future__ import annotations

import pytest

import parity_tests  # noqa: F401  (import order: torch, torchvision, then tensorflow)


@pytest.fixture(scope="session")
def parity_ctx():
    from parity_tests import cases
    return cases.Ctx()


@pytest.fixture(autouse=True)
def _parity_environment():
    """Re-assert TF32 off / determinism before every parity test (a unit test elsewhere in the
    same run may have switched TF32 on through a backend's set_tf32)."""
    from parity_tests import env
    env.configure()
    yield
