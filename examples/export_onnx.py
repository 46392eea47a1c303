"""Export a trained fast model to ONNX and run it with onnxruntime (no torch needed to serve it).

    python examples/export_onnx.py MODEL.safetensors --out model.onnx
    python examples/export_onnx.py --quick       # an untrained random:0 network, 64 px

The export is ``resty convert MODEL --to onnx -o OUT`` (resty.onnx_runtime's graph of the
transformer, exact rewrites of resty_torch's TransformerNet that ONNX Runtime runs faster on a CPU;
torch.onnx.export for specs it does not cover; input ``image`` N×3×H×W float32 RGB in [0, 1], any
size; output ``stylized``, not clamped), checked against torch at two sizes.  The script then
stylizes a sample photo with resty.onnx_runtime.OnnxStylizer and prints the difference to torch and
the time of each.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from resty.backends import convert_model, get_backend
from resty.images import resize_longest, sample_images, save_image
from resty.specs import TransformerSpec
from resty.weights import load_weights, random_transformer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None, help="trained model (.safetensors); default: random:0")
    ap.add_argument("--out", default=None, help="ONNX file (default: MODEL with .onnx, or a temporary file)")
    ap.add_argument("--size", type=int, default=256, help="photo size for the check")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--quick", action="store_true", help="64 px")
    a = ap.parse_args(argv)
    if a.quick:
        a.size = 64
    ws = load_weights(a.model, expect="transformer") if a.model else random_transformer(TransformerSpec(), 0)
    tmp = tempfile.TemporaryDirectory()
    out = Path(a.out) if a.out else (Path(a.model).with_suffix(".onnx") if a.model else Path(tmp.name) / "model.onnx")
    if out.exists() and not a.overwrite:
        ap.error(f"{out}: already exists (pass --overwrite to replace it)")
    temporary = "" if (a.out or a.model) else " (temporary, removed at exit: pass --out FILE to keep it)"
    t = time.perf_counter()
    convert_model(ws, "onnx", out, overwrite=a.overwrite)
    print(f"exported {out}{temporary} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s; "
          "checked with onnxruntime")

    import torch

    from resty.onnx_runtime import OnnxStylizer
    torch_b = get_backend("torch")
    photo = resize_longest(sample_images()["astronaut"], a.size)
    x = photo.transpose(2, 0, 1)[None].astype(np.float32)
    stylizer = OnnxStylizer(out)
    stylizer.run(x)
    t = time.perf_counter()
    y_onnx = stylizer.run(x)
    t_onnx = time.perf_counter() - t
    net = torch_b.TransformerNet(ws.spec, weights=ws, device="cpu").eval()
    with torch.no_grad():
        net(torch.from_numpy(x))
        t = time.perf_counter()
        y_torch = net(torch.from_numpy(x)).numpy()
        t_torch = time.perf_counter() - t
    print(f"{a.size} px: onnxruntime {t_onnx:.3f} s, torch {t_torch:.3f} s, "
          f"max |difference| {np.abs(y_onnx - y_torch).max():.2e}")
    # A name of its own: MODEL.png may be the sample train_fast.py wrote next to the model.
    target = out.with_name(out.stem + ".onnx-stylized.png")
    if target.exists() and not a.overwrite:
        print(f"stylized photo not written: {target} exists (pass --overwrite to replace it)")
    else:
        save_image(np.clip(y_onnx[0].transpose(1, 2, 0), 0, 1), target, overwrite=True)
        print(f"stylized photo: {target}{temporary}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    from resty.errors import run_script
    run_script(main, "export_onnx.py")
