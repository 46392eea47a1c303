"""Train a fast (feed-forward) style network, save it, and use it from the other framework.

    python examples/train_fast.py --style starry.jpg --data coco/ --out starry.safetensors --epochs 2
    python examples/train_fast.py --quick          # sample photos, a few steps, 48 px (CPU, ~1 min)

Without --data it trains on the scikit-image sample photos (written to a temporary folder); without
--style on the demo's procedural texture.  The saved file is canonical safetensors: the script
loads it back in the *other* backend (when installed) and checks that both give the same image.
This is what ``resty train`` does, as a script you can adapt.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from resty.backends import available_backends, get_backend
from resty.demo import style_texture
from resty.images import load_image, resize_longest, sample_images, save_image


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="torch", help="framework to train with (torch or tf)")
    ap.add_argument("--style", default=None, help="style image (default: the demo texture)")
    ap.add_argument("--data", default=None, help="folder of training photos (default: skimage samples)")
    ap.add_argument("--out", default="fast-model.safetensors", help="model file to write")
    ap.add_argument("--preset", default="johnson2016")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--weights", default="imagenet", help="VGG weights; random:0 works offline")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="3 steps at 48 px, random:0 weights, pytorch-tutorial preset")
    a = ap.parse_args(argv)
    if Path(a.out).exists() and not a.overwrite:   # fail now, not after training
        ap.error(f"{a.out}: already exists (pass --overwrite to replace it)")
    if a.quick:
        a.steps, a.image_size, a.batch_size = a.steps or 3, a.image_size or 48, a.batch_size or 2
        a.weights = "random:0" if a.weights == "imagenet" else a.weights
        a.preset = "pytorch-tutorial" if a.preset == "johnson2016" else a.preset

    style = load_image(a.style) if a.style else style_texture(128)
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data
        if data is None:
            data = Path(tmp) / "photos"
            for name, img in sample_images().items():
                if name in ("astronaut", "chelsea", "coffee", "rocket"):
                    save_image(resize_longest(img, 2 * (a.image_size or 256)), data / f"{name}.png")
        mod = get_backend(a.backend)
        f = mod.FastStylizer(a.preset, weights=a.weights, transformer_weights="random:0")
        t = time.perf_counter()
        summary = f.fit(str(data), style, steps=a.steps, epochs=a.epochs, image_size=a.image_size,
                        batch_size=a.batch_size, progress=True)
        print(f"{a.backend}: trained {summary['steps']} steps in {time.perf_counter() - t:.1f} s "
              f"({summary['images_per_second']:.2f} images/s); last losses {summary['history'][-1]}")
    path = f.save(a.out, overwrite=a.overwrite)
    print(f"saved {path}")

    photo = resize_longest(sample_images()["chelsea"], a.image_size or 256)
    y = f.stylize(photo)
    save_image(y, Path(a.out).with_suffix(".png"), overwrite=True)
    other = [b for b in available_backends() if b != a.backend]
    if other:
        g = get_backend(other[0]).FastStylizer.load(str(path), weights=a.weights)
        y2 = g.stylize(photo)
        print(f"reloaded in {other[0]}: max |difference| to {a.backend} = {np.abs(y - y2).max():.2e}")
    return 0


if __name__ == "__main__":
    from resty.errors import run_script
    run_script(main, "train_fast.py")
