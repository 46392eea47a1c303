"""resty bench: a tiny run writes the table, JSON and chart; ratios come from baselines measured
in the same run.  No timed assertions (timings on shared CPUs are noise)."""
import importlib.util
import json
import math
import subprocess
import sys

import pytest

from resty.bench import BenchConfig, LIGHT_SPEC, run_bench

BACKENDS = tuple(b for b, m in (("torch", "torch"), ("tf", "tensorflow")) if importlib.util.find_spec(m))
ROW_FIELDS = ("id", "workload", "label", "backend", "device", "precision", "impl", "variant", "unit",
              "median", "min", "max", "spread_pct", "n", "values", "peak_mem_kind", "t_start", "t_end")


def test_import_pulls_no_framework():
    code = ("import sys, resty.bench, resty.bench.report, resty.bench.workloads; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_light_spec_is_half_width():
    from resty.specs import TransformerSpec
    assert LIGHT_SPEC.channels == tuple(c // 2 for c in TransformerSpec().channels)


@pytest.mark.skipif(not BACKENDS, reason="needs torch or tensorflow")
def test_tiny_bench_writes_table_json_chart(tmp_path):
    cfg = BenchConfig(quick=True, backends=BACKENDS, devices=("cpu",), precisions=("float32",),
                      workloads=("fast-infer",), fast_sizes=(32,), repeats=1, warmup=1, out=str(tmp_path))
    doc = run_bench(cfg, log=lambda s: None)
    for name in ("bench.md", "bench.json", "bench.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["schema"] == "resty.bench/1"
    assert data["errors"] == [], data["errors"]
    for key in ("config", "environment", "rows", "notes", "started", "finished", "definitions"):
        assert key in data
    rows = data["rows"]
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows)
    assert {r["backend"] for r in rows} == set(BACKENDS)
    for r in rows:
        for f in ROW_FIELDS:
            assert f in r, (f, r["id"])
        assert r["median"] > 0 and r["min"] > 0 and r["n"] == 1 and all(v > 0 for v in r["values"])
        assert data["started"] <= r["t_start"] <= r["t_end"] <= data["finished"]
    resty = [r for r in rows if r["impl"] == "resty"]
    assert resty and all(b in {r["backend"] for r in resty} for b in BACKENDS)
    for r in resty:
        base = by_id[r["baseline_id"]]       # a baseline row of this very run
        assert base["impl"] == "baseline"
        for k in ("workload", "label", "backend", "device", "precision", "size", "batch", "unit"):
            assert base[k] == r[k], k
        assert math.isclose(r["ratio_vs_baseline"], base["median"] / r["median"], rel_tol=1e-9)
        assert r["ratio_vs_baseline"] > 0
        # interleaved: the two were timed in the same window
        assert base["t_start"] <= r["t_end"] and r["t_start"] <= base["t_end"]
    md = (tmp_path / "bench.md").read_text()
    assert "ratio vs baseline" in md and "baseline" in md and "×" in md
    assert doc["rows"] == rows


def test_cli_has_bench_subcommand():
    from resty import cli
    a = cli.build_parser().parse_args(["bench", "--quick", "--out", "x", "--backends", "torch",
                                       "--workloads", "fast-infer,gatys-step", "--size", "64"])
    assert a.quick and a.out == "x" and a.backends == ("torch",) and a.size == 64


def test_cpu_targets_summarise_the_worst_row():
    from resty.bench.report import targets

    def row(backend, workload, impl, variant, median, ratio=None, hib=False):
        rid = f"{workload}|{backend}|{impl}|{variant}"
        return {"id": rid, "workload": workload, "label": workload, "backend": backend, "device": "cpu",
                "precision": "float32", "impl": impl, "variant": variant, "median": median, "size": 96,
                "batch": 1, "unit": "ms", "higher_is_better": hib, "ratio_vs_baseline": ratio,
                "baseline_id": f"{workload}|{backend}|baseline|b" if impl == "resty" else None}
    rows = [row("torch", "a", "baseline", "b", 100), row("torch", "a", "resty", "eager", 110, 0.91),
            row("torch", "a", "resty", "fast=True (ONNX Runtime)", 60, 1.67),      # best variant of row a
            row("torch", "c", "baseline", "b", 100), row("torch", "c", "resty", "eager", 105, 0.95),
            row("tf", "a", "baseline", "b", 200), row("tf", "a", "resty", "graph", 140, 1.43),
            row("tf", "c", "baseline", "b", 200), row("tf", "c", "resty", "graph", 150, 1.33)]
    t = {x["target"].split(" (")[0]: x for x in targets(rows)}
    torch_t = t["torch on the CPU no slower than its plain baseline"]
    assert torch_t["best"] == 0.95 and not torch_t["met"]            # row c has no faster variant
    assert t["tf on the CPU no slower than its plain baseline"]["met"]
    tt = t["TF within 1.3x of torch on the CPU"]
    assert abs(tt["best"] - 150 / 105) < 1e-12 and not tt["met"]     # row c: 150 vs 105 (default variants)


@pytest.mark.skipif(not BACKENDS, reason="needs torch or tensorflow")
def test_adain_beside_johnson_and_gatys(tmp_path):
    """adain-infer at the side of fast-infer and gatys-run: each backend gets an AdaIN row with
    its plain baseline of the same run, and the methods table pairs the three at that side with
    ratios taken from those very rows."""
    side = 32
    cfg = BenchConfig(quick=True, backends=BACKENDS, devices=("cpu",), precisions=("float32",),
                      workloads=("adain-infer", "fast-infer", "gatys-run"), fast_sizes=(side,), size=side,
                      iterations=2, repeats=1, warmup=1, out=str(tmp_path))
    doc = run_bench(cfg, log=lambda s: None)
    assert doc["errors"] == [], doc["errors"]
    rows = doc["rows"]
    for b in BACKENDS:
        ad = [r for r in rows if r["workload"] == "adain-infer" and r["backend"] == b]
        assert {r["impl"] for r in ad} == {"baseline", "resty"} and all(r["size"] == side for r in ad)
        resty = next(r for r in ad if r["impl"] == "resty")
        base = next(r for r in ad if r["impl"] == "baseline")
        assert resty["baseline_id"] == base["id"]
        assert math.isclose(resty["ratio_vs_baseline"], base["median"] / resty["median"], rel_tol=1e-9)
    ms = {m["backend"]: m for m in doc["methods"]}
    assert set(ms) == set(BACKENDS)
    for b, m in ms.items():
        pick = lambda w, v: next(r for r in rows if r["workload"] == w and r["backend"] == b   # noqa: E731
                                 and r["impl"] == "resty" and r["variant"] == v)
        a = pick("adain-infer", "eager")
        j = pick("fast-infer", "eager" if b == "torch" else "graph")
        g = pick("gatys-run", "eager" if b == "torch" else "L-BFGS")
        assert m["size"] == side and m["gatys_evaluations"] == 2
        assert math.isclose(m["johnson_over_adain"], j["median"] / a["median"], rel_tol=1e-9)
        assert math.isclose(m["gatys_over_adain"], g["median"] / (a["median"] / 1e3), rel_tol=1e-9)
    md = (tmp_path / "bench.md").read_text()
    assert "AdaIN vs Johnson vs Gatys" in md and "AdaIN inference 32px" in md
