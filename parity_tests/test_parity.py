"""Every quantity, in both tiers: torch vs TF vs the NumPy float64 oracle.

A row fails on a difference beyond its tolerance (parity_tests/tolerances.py) or an error; a
side whose backend or hook is missing skips with the hook's name."""
import pytest

from parity_tests import cases, compare, tolerances

QUANTITIES = cases.build()


@pytest.mark.parametrize("dtype", tolerances.DTYPES)
@pytest.mark.parametrize("q", QUANTITIES, ids=[q.key for q in QUANTITIES])
def test_parity(q, dtype, parity_ctx):
    if dtype not in q.dtypes:
        pytest.skip(f"{q.key} is defined for {', '.join(q.dtypes)} only")
    rows = compare.run_quantity(q, parity_ctx, dtype)
    bad = [r for r in rows if r.status in ("FAIL", "error")]
    assert not bad, "\n".join(f"{r.quantity} [{dtype}, {r.pair}] {r.status}: max abs {r.max_abs:.3e}, "
                              f"max rel {r.max_rel:.3e} (tolerance {r.tolerance}); {r.note}" for r in bad)
    missing = [r for r in rows if r.status == "missing"]
    if missing and len(missing) == len(rows):
        pytest.skip("; ".join(sorted({r.note for r in missing})))
    assert any(r.passed for r in rows)
