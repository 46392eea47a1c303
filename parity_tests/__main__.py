"""``python -m parity_tests --report [--json FILE] [--quick]``: the parity table.

Prints the environment, a markdown table (quantity, dtype, pair, max abs diff, max rel diff,
tolerance, pass) with every quantity in both tiers, and the honesty (mutation) checks.  Exit
status 1 when a comparison fails or errors, or a mutation is not caught; 0 otherwise (rows whose
backend is not installed are listed as missing; ``--strict`` makes them fail too).
``main(argv)`` is the entry point of ``resty parity``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

from . import compare, tolerances


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parity_tests",
                                description="Compare resty_torch, resty_tf and the NumPy float64 oracle.")
    p.add_argument("--report", action="store_true", help="print the markdown report (the default action)")
    p.add_argument("--json", metavar="FILE", help="also write every row (with per-item details) as JSON")
    p.add_argument("--quick", action="store_true", help="only the quick subset of quantities")
    p.add_argument("--only", metavar="KEY", action="append", default=[],
                   help="run only this quantity (repeatable); see --list")
    p.add_argument("--dtype", choices=tolerances.DTYPES, action="append", default=[],
                   help="only this tier (repeatable; default both)")
    p.add_argument("--no-mutations", action="store_true", help="skip the honesty (mutation) checks")
    p.add_argument("--strict", action="store_true", help="rows with a missing backend or hook fail too")
    p.add_argument("--list", action="store_true", help="list the quantities and exit")
    p.add_argument("--tolerances", action="store_true", help="print the tolerance table with reasons and exit")
    return p


def tolerance_table() -> str:
    lines = ["| category | dtype | tolerance | reason |", "|---|---|---|---|"]
    for (cat, dt), t in tolerances.TOLERANCES.items():
        lines.append(f"| {cat} | {dt} | {t.describe()} | {t.reason} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.tolerances:
        print(tolerance_table())
        return 0
    from . import cases, mutations   # imports torch before TF (package __init__)
    qs = cases.build()
    if args.list:
        for q in qs:
            print(f"{q.key:26s} {'quick' if q.quick else '     '}  {q.name}")
        return 0
    unknown = [k for k in args.only if k not in {q.key for q in qs}]
    if unknown:
        print(f"unknown quantity {unknown[0]!r}; see --list", file=sys.stderr)
        return 2
    if args.only:
        qs = [q for q in qs if q.key in args.only]
    elif args.quick:
        qs = [q for q in qs if q.quick]
    dtypes = args.dtype or list(tolerances.DTYPES)
    t0 = time.perf_counter()
    ctx = cases.Ctx(quick=args.quick)
    rows: List[compare.Row] = []
    for q in qs:
        for dt in dtypes:
            if dt in q.dtypes:
                rows.extend(compare.run_quantity(q, ctx, dt))
    muts = []
    if not args.no_mutations and not args.only:
        for name, fn in mutations.MUTATIONS.items():
            for dt in dtypes:
                try:
                    for label, expect, r in fn(dt):
                        muts.append({"mutation": name, "dtype": dt, "check": label, "expect_pass": expect,
                                     "passed": r.passed, "max_rel": r.max_rel, "note": r.note,
                                     "ok": r.passed == expect})
                except compare.Missing as exc:
                    muts.append({"mutation": name, "dtype": dt, "check": str(exc), "expect_pass": None,
                                 "passed": None, "max_rel": None, "note": "missing", "ok": None})
                except Exception as exc:  # noqa: BLE001 - reported, and fails the run
                    muts.append({"mutation": name, "dtype": dt, "check": f"error: {compare._fmt_exc(exc)}",
                                 "expect_pass": None, "passed": None, "max_rel": None, "note": "error",
                                 "ok": False})
    seconds = time.perf_counter() - t0

    print("## Parity report\n")
    print("Environment: " + ", ".join(f"{k} {v}" for k, v in ctx.env.items()) + "\n")
    print(compare.markdown_table(rows))
    if muts:
        print("\nHonesty checks (a known pitfall injected into one side must FAIL; controls must pass):\n")
        print("| pitfall | dtype | check | expected | max rel diff | result |")
        print("|---|---|---|---|---|---|")
        for m in muts:
            exp = "—" if m["expect_pass"] is None else ("pass" if m["expect_pass"] else "fail (caught)")
            res = "— missing" if m["ok"] is None else ("✅" if m["ok"] else "❌ NOT AS EXPECTED")
            rel = "–" if m["max_rel"] is None else compare._num(m["max_rel"])
            print(f"| {m['mutation']} | {m['dtype']} | {m['check']} | {exp} | {rel} | {res} |")
    n_fail = sum(r.status in ("FAIL", "error") for r in rows)
    n_missing = sum(r.status == "missing" for r in rows)
    m_bad = sum(m["ok"] is False for m in muts)
    print(f"\n{len(rows)} comparisons: {sum(r.passed for r in rows)} pass, {n_fail} fail/error, "
          f"{n_missing} missing; {len(muts)} honesty checks, {m_bad} not as expected; {seconds:.0f} s.")
    for r in rows:
        if r.status in ("FAIL", "error") or (args.strict and r.status == "missing"):
            print(f"  {r.status}: {r.quantity} [{r.dtype}, {r.pair}]: {r.note}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"environment": ctx.env, "seconds": seconds, "rows": [r.to_dict() for r in rows],
                       "mutations": muts,
                       "tolerances": {f"{c}/{d}": {"tolerance": t.describe(), "reason": t.reason}
                                      for (c, d), t in tolerances.TOLERANCES.items()}},
                      f, indent=1, ensure_ascii=False, default=str)
    failed = n_fail or m_bad or (args.strict and n_missing)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
