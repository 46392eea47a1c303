"""``resty bench --flicker``: how much a stylized clip flickers (Lai et al. 2018 warping error,
resty.temporal) and how fast it goes, per backend.

* the synthetic clip (resty.temporal.SyntheticClip: a sample photo panned and zoomed, 60 frames):
  the flow is the camera's true flow, so no flow model is involved;
* ``--clip FILE``: any clip, stylized here, its flow from Farnebäck (OpenCV) on the input frames.

Writes DIR/flicker.md and DIR/flicker.json.  No framework is imported here (resty.backends)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["flicker_rows", "measure_clip", "run_flicker", "markdown"]


def measure_clip(fn: Callable[[np.ndarray], np.ndarray], frames: Sequence[np.ndarray], flows, *,
                 batch_size: int = 4, keep: bool = False) -> Dict[str, Any]:
    """Stylize ``frames`` with ``fn`` (batches of ``batch_size``), time it, and take the warping
    error with ``flows`` (``(F_fw, F_bw)`` per pair, of the input frames)."""
    from ..temporal import clip_warping_error
    outs: List[np.ndarray] = []
    t0 = time.perf_counter()
    for k in range(0, len(frames), batch_size):
        outs.extend(np.asarray(fn(np.stack(frames[k:k + batch_size])), np.float32))
    seconds = time.perf_counter() - t0
    err = clip_warping_error(outs, flows)
    r = {"warping_error": err["mean"], "per_pair": err["per_pair"], "frames": len(outs),
         "frames_per_s": len(outs) / seconds if seconds > 0 else float("nan")}
    if keep:
        r["outputs"] = outs
    return r


def flicker_rows(backends: Sequence[str] = ("torch", "tf"), *, model: str = "multistyle26",
                 styles: Sequence[int] = (0, 9, 19), size: int = 256, n_frames: int = 60,
                 photo: str = "astronaut", extra_models: Optional[Dict[str, Any]] = None,
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The synthetic clip stylized by ``model`` with each of ``styles`` in each backend: warping
    error (true flow), frames/s, and the largest difference between the backends' frames."""
    from ..backends import get_backend
    from ..temporal import clip_warping_error, synthetic_clip
    clip = synthetic_clip(photo, n_frames, size)
    frames = list(clip.frames())
    flows = list(clip.flows())
    floor = clip_warping_error(frames, flows)["mean"]
    rows, outs = [], {}
    for b in backends:
        be = get_backend(b)
        nets = {model: be.FastStylizer.load(model, weights="random:0")}
        for name, ws in (extra_models or {}).items():
            nets[name] = be.FastStylizer.load(ws, weights="random:0")
        for name, st in nets.items():
            cond = st.preset.transformer.conditional
            for s in (styles if cond else (None,)):
                kw = {"style": int(s)} if s is not None else {}
                fn = (lambda batch, st=st, kw=kw: st.stylize(batch, batch_size=len(batch), **kw))
                fn(np.stack(frames[:1]))       # warm-up
                r = measure_clip(fn, frames, flows, keep=True)
                outs[(b, name, s)] = r.pop("outputs")
                row = {"backend": b, "model": name, "style": s, "size": size, "frames": r["frames"],
                       "warping_error": r["warping_error"], "frames_per_s": r["frames_per_s"],
                       "flow": "true (synthetic camera)"}
                rows.append(row)
                log(f"flicker: {b} {name} style {s}: E_warp {row['warping_error']:.5f}, "
                    f"{row['frames_per_s']:.1f} frames/s at {size} px")
    for row in rows:
        if row["backend"] != backends[0]:
            ref = outs.get((backends[0], row["model"], row["style"]))
            if ref is not None:
                mine = outs[(row["backend"], row["model"], row["style"])]
                row["max_abs_diff_vs_" + backends[0]] = float(max(np.abs(a - c).max() for a, c in zip(mine, ref)))
    return {"clip": {"photo": photo, "frames": n_frames, "size": size, "input_warping_error": floor,
                     "flow": "true (synthetic camera)"}, "rows": rows}


def markdown(doc: Dict[str, Any]) -> str:
    c = doc["clip"]
    lines = [f"Synthetic clip: `{c['photo']}` panned and zoomed, {c['frames']} frames at {c['size']} px; flow: "
             f"{c['flow']}; the input clip's own warping error (interpolation floor): {c['input_warping_error']:.5f}.",
             "", "| backend | model | style | warping error | frames/s | max diff vs first backend |",
             "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        d = next((v for k, v in r.items() if k.startswith("max_abs_diff")), None)
        lines.append(f"| {r['backend']} | {r['model']} | {r['style'] if r['style'] is not None else '-'} | "
                     f"{r['warping_error']:.5f} | {r['frames_per_s']:.1f} | {'-' if d is None else f'{d:.2e}'} |")
    for r in doc.get("clips", []):
        lines.append("")
        lines.append(f"Clip `{r['clip']}` ({r['frames']} frames, {r['backend']} {r['model']} style {r['style']}): "
                     f"warping error {r['warping_error']:.5f} (flow: {r['flow']}), {r['frames_per_s']:.1f} frames/s")
    return "\n".join(lines) + "\n"


def run_flicker(out: str, backends: Sequence[str], *, size: int = 256, n_frames: int = 60,
                clip: Optional[str] = None, model: str = "multistyle26", styles=(0, 9, 19),
                log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The synthetic-clip rows, plus ``clip`` (any video file or frame folder) stylized in the
    first backend and measured with Farnebäck flow; writes DIR/flicker.{md,json}."""
    doc = flicker_rows(backends, model=model, styles=styles, size=size, n_frames=n_frames, log=log)
    if clip:
        import tempfile
        from ..backends import get_backend
        from ..video import stylize_video, video_warping_error
        st = get_backend(backends[0]).FastStylizer.load(model, weights="random:0")
        s = int(styles[0])
        with tempfile.TemporaryDirectory(prefix="resty-flicker-") as d:
            # lossless PNG frames: a lossy encode would add its own flicker to the measurement
            r = stylize_video(clip, Path(d) / "frames", lambda b: st.stylize(b, batch_size=len(b), style=s),
                              size=size, audio=False)
            e = video_warping_error(Path(d) / "frames", clip, size=size)
        doc["clips"] = [{"clip": str(clip), "frames": r["frames"], "backend": backends[0], "model": model,
                         "style": s, "warping_error": e["mean"], "flow": e["flow"], "frames_per_s": r["fps"]}]
    p = Path(out)
    p.mkdir(parents=True, exist_ok=True)
    (p / "flicker.json").write_text(json.dumps(doc, indent=1, default=str))
    (p / "flicker.md").write_text(markdown(doc))
    return doc
