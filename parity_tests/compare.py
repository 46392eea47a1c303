"""The comparison engine: quantities computed on several sides, compared pairwise.

A *quantity* is a function ``(ctx, dtype) -> {side: {item: array}}`` for sides ``torch``,
``tf`` and ``ref`` (the NumPy float64 oracle).  Every array is NumPy, in one canonical layout
(NCHW for images/features, as the oracle), converted by the quantity.  A side that cannot be
computed because a backend or one of its hooks is missing raises :class:`Missing`; any other
exception is an error (the row fails).

Each (quantity, dtype, pair) gives one :class:`Row`: the maximum over its items of the max
absolute and max relative difference, the tolerance and pass/fail.  Items are kept in
``Row.items`` for the JSON report and for failure messages.
"""
from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from . import tolerances as T

SIDES = ("torch", "tf", "ref")
PAIRS = (("torch", "tf"), ("torch", "ref"), ("tf", "ref"))


class Missing(Exception):
    """A side cannot be computed: a backend or a hook it needs is not there (yet)."""


@dataclass
class ItemResult:
    item: str
    max_abs: float
    max_rel: float
    cosine: Optional[float]
    passed: bool
    note: str = ""


def compare_arrays(a, b, tol: T.Tolerance, item: str = "") -> ItemResult:
    """Compare two arrays under ``tol`` (see :mod:`parity_tests.tolerances` for definitions).

    A shape mismatch or a non-finite value fails (it never passes silently)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return ItemResult(item, math.inf, math.inf, None, False, f"shape {a.shape} vs {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return ItemResult(item, math.inf, math.inf, None, False, "non-finite values")
    if a.size == 0:
        return ItemResult(item, 0.0, 0.0, None, False, "empty tensors")
    d = a - b
    max_abs = float(np.abs(d).max())
    if tol.kind == "scaled":
        scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
        rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
        return ItemResult(item, max_abs, rel, None, rel <= tol.rtol)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    denom = max(na, nb)
    rel = float(np.linalg.norm(d)) / denom if denom > 0 else (0.0 if max_abs == 0 else math.inf)
    cos = float(a.ravel() @ b.ravel()) / (na * nb) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    return ItemResult(item, max_abs, rel, cos, rel <= tol.rtol and cos >= tol.min_cos)


@dataclass
class Row:
    quantity: str
    dtype: str
    pair: str
    max_abs: float
    max_rel: float
    tolerance: str
    status: str            # "pass" | "FAIL" | "missing" | "error"
    note: str = ""
    items: List[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("max_abs", "max_rel"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = str(d[k])
        return d


@dataclass
class Quantity:
    key: str                               # pytest id
    name: str                              # table label
    category: str                          # tolerances category
    fn: Callable                           # (ctx, dtype) -> {side: {item: array}}
    quick: bool = True                     # part of --quick
    slow: bool = False                     # marked slow in pytest
    dtypes: Sequence[str] = T.DTYPES
    sides: Sequence[str] = SIDES           # sides this quantity can have at all
    tol_override: Optional[Callable[[str], T.Tolerance]] = None

    def tolerance(self, dtype: str) -> T.Tolerance:
        return self.tol_override(dtype) if self.tol_override else T.get(self.category, dtype)


def _fmt_exc(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {msg}"[:300]


def run_quantity(q: Quantity, ctx, dtype: str) -> List[Row]:
    """Compute every side of ``q`` in ``dtype`` and compare all available pairs."""
    tol = q.tolerance(dtype)
    t0 = time.perf_counter()
    results: Dict[str, Mapping[str, np.ndarray]] = {}
    missing: Dict[str, str] = {}
    errors: Dict[str, str] = {}
    try:
        out = q.fn(ctx, dtype)
    except Missing as exc:   # the quantity as a whole
        out = {s: exc for s in q.sides}
    except Exception as exc:  # noqa: BLE001 - reported in the row
        out = {s: RuntimeError(_fmt_exc(exc) + " | " + traceback.format_exc(limit=-2).replace("\n", " ")[-400:])
               for s in q.sides}
    for side in q.sides:
        v = out.get(side, Missing(f"{side} not computed"))
        if isinstance(v, Missing):
            missing[side] = str(v)
        elif isinstance(v, BaseException):
            errors[side] = str(v)
        else:
            results[side] = v
    seconds = time.perf_counter() - t0
    rows = []
    for a, b in PAIRS:
        if a not in q.sides or b not in q.sides:
            continue
        pair = f"{a} vs {b}"
        if a in errors or b in errors:
            rows.append(Row(q.name, dtype, pair, math.nan, math.nan, tol.describe(), "error",
                            "; ".join(f"{s}: {errors[s]}" for s in (a, b) if s in errors), seconds=seconds))
            continue
        if a in missing or b in missing:
            rows.append(Row(q.name, dtype, pair, math.nan, math.nan, tol.describe(), "missing",
                            "; ".join(f"{s}: {missing[s]}" for s in (a, b) if s in missing), seconds=seconds))
            continue
        ra, rb = results[a], results[b]
        items = []
        for k in sorted(set(ra) | set(rb), key=lambda k: list(ra).index(k) if k in ra else 10**6):
            if k not in ra or k not in rb:
                items.append(ItemResult(k, math.inf, math.inf, None, False, f"only on {a if k in ra else b}"))
            else:
                items.append(compare_arrays(ra[k], rb[k], tol, k))
        if not items:
            rows.append(Row(q.name, dtype, pair, math.nan, math.nan, tol.describe(), "error", "no items"))
            continue
        ok = all(i.passed for i in items)
        bad = [i for i in items if not i.passed]
        note = "" if ok else "failing: " + ", ".join(
            f"{i.item} (rel {i.max_rel:.2e}{', cos %.6f' % i.cosine if i.cosine is not None else ''}"
            f"{', ' + i.note if i.note else ''})" for i in bad[:6])
        rows.append(Row(q.name, dtype, pair, max(i.max_abs for i in items), max(i.max_rel for i in items),
                        tol.describe(), "pass" if ok else "FAIL", note, [asdict(i) for i in items], seconds))
    return rows


# --------------------------------------------------------------------------- formatting
def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    return f"{x:.1e}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| quantity | dtype | pair | max abs diff | max rel diff | tolerance | pass |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        status = {"pass": "✅", "FAIL": "❌ FAIL", "missing": "— missing", "error": "❌ error"}[r.status]
        lines.append(f"| {r.quantity} | {r.dtype} | {r.pair} | {_num(r.max_abs)} | {_num(r.max_rel)} | "
                     f"{r.tolerance} | {status} |")
    return "\n".join(lines)
