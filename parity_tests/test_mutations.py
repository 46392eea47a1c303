"""Honesty: each known pitfall, injected into ONE side, makes the comparison fail, in both
tiers; the matching control (the right convention) passes.  Inputs are random and asymmetric,
kernels non-square where the pitfall needs it (parity_tests/mutations.py)."""
import pytest

from parity_tests import compare, mutations, tolerances


@pytest.mark.parametrize("dtype", tolerances.DTYPES)
@pytest.mark.parametrize("name", list(mutations.MUTATIONS))
def test_mutation_is_caught(name, dtype, parity_ctx):
    try:
        results = mutations.MUTATIONS[name](dtype)
    except compare.Missing as exc:
        pytest.skip(str(exc))
    assert any(not expect for _, expect, _ in results), "a mutation test needs at least one mutant"
    assert any(expect for _, expect, _ in results), "a mutation test needs at least one control"
    wrong = [(label, expect, r) for label, expect, r in results if r.passed != expect]
    assert not wrong, "\n".join(
        f"{label}: expected {'pass' if expect else 'FAIL'}, got rel {r.max_rel:.3e} {r.note}" for label, expect, r in wrong)


def test_compare_fails_on_shape_mismatch_and_nan():
    import numpy as np
    tol = tolerances.get("features", "float64")
    assert not compare.compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)), tol).passed
    assert not compare.compare_arrays(np.array([np.nan]), np.array([np.nan]), tol).passed
    assert not compare.compare_arrays(np.zeros(0), np.zeros(0), tol).passed
    assert compare.compare_arrays(np.ones(4), np.ones(4) * (1 + 1e-12), tol).passed
    assert not compare.compare_arrays(np.ones(4), np.ones(4) * (1 + 1e-8), tol).passed
    g = tolerances.get("grad", "float32")
    assert not compare.compare_arrays(np.array([1.0, 0]), np.array([0, 1.0]), g).passed
