"""The fine-tune of docs/VIDEO.md: multistyle26 (style 19) fine-tuned with and without the temporal
loss (ReReVST, resty.temporal), then, on the synthetic clip (resty.temporal.synthetic_clip:
astronaut, 256 px, 60 frames, true flow), the warping error and the held-out style loss.

    OMP_NUM_THREADS=1 python benchmarks/temporal_finetune.py STEPS W PHOTOS_DIR OUT.json \\
        [--noise 0.01] [--flow 4] [--warp nearest|bilinear]

One run per call (runs are independent processes: same seed, same data order, same style image,
so the w = 0 run is the per-frame baseline at equal steps).  TF backend, one thread.  Besides the
booked training terms (random 128 px crops), it reports the **held-out style loss**: the style term
(the training loss's own layers, weights and Gram convention) of the stylized clip frames
0, 4, ..., 56 against the style image, with the same loss network, for each net.  PHOTOS_DIR must
not hold the clip's photo (astronaut).  The loss network is a random-weight VGG19 (``random:0``: no
ImageNet weights offline); pass ``--vgg imagenet`` where they are."""
import argparse
import json
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("steps", type=int)
ap.add_argument("weight", type=float)
ap.add_argument("photos")
ap.add_argument("out")
ap.add_argument("--noise", type=float, default=None, help="temporal_noise (default: TrainConfig's)")
ap.add_argument("--flow", type=float, default=None, help="temporal_flow px (default: TrainConfig's)")
ap.add_argument("--warp", choices=("nearest", "bilinear"), default=None,
                help="the temporal loss's warp (default: resty.temporal.TRAINING_WARP); bilinear: the ablation")
ap.add_argument("--style", type=int, default=19)
ap.add_argument("--vgg", default="random:0")
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--original", action="store_true", help="measure the network before any fine-tune (steps ignored)")
ap.add_argument("--eval", metavar="MODEL", default=None,
                help="measure a saved fine-tune (the .safetensors a run writes beside OUT) without training")
a = ap.parse_args()

import tensorflow as tf   # noqa: E402
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from resty import temporal as T   # noqa: E402
from resty.backends import get_backend   # noqa: E402
from resty.fast import model_preset   # noqa: E402
from resty.images import resize_longest, sample_images   # noqa: E402
from resty.models import resolve_model   # noqa: E402
from resty.weights import WeightSet, load_weights   # noqa: E402
from resty_tf import losses as L   # noqa: E402

if a.warp:
    T.TRAINING_WARP = a.warp
be = get_backend("tf")
where = resolve_model("multistyle26")
ws = where if isinstance(where, WeightSet) else load_weights(where, expect="transformer")
base = be.FastStylizer.load("multistyle26", weights=a.vgg)
style_img = base.stylize(resize_longest(sample_images()["chelsea"], 256), style=a.style)
CLIPS = {}


def evaluate(st, size=256):
    """Warping error (true flow) and held-out style/content of the synthetic clip at ``size`` px."""
    if size not in CLIPS:
        c = T.synthetic_clip("astronaut", 60, size)
        CLIPS[size] = (list(c.frames()), list(c.flows()))
    frames, flows = CLIPS[size]
    outs = []
    for k in range(0, 60, 4):
        outs.extend(st.stylize(np.stack(frames[k:k + 4]), style=a.style, batch_size=4))
    werr = T.clip_warping_error(outs, flows)["mean"]
    loss = st.preset.fast_loss
    grams = st._grams_of(style_img)
    rows = []
    for k in range(0, 60, 4):
        x = tf.constant(frames[k][None])
        y = tf.constant(np.asarray(outs[k], np.float32)[None])
        fx = {n: v for n, v in st.vgg(x).items() if n in loss.content_layers}
        rows.append(np.asarray(L.total_loss(st.vgg(y), y, loss, fx, grams), np.float64))
    rows = np.mean(rows, axis=0)   # [total, content, style, tv]
    sfx = "" if size == 256 else f"_{size}"
    return {"warping_error" + sfx: werr, "heldout_style" + sfx: float(rows[2]), "heldout_content" + sfx: float(rows[1])}


def evaluate_all(st):
    """At 256 px (the table) and at 128 px (the training crops' size)."""
    return {**evaluate(st, 256), **evaluate(st, 128)}


t0 = time.time()
if a.original:
    res = {"run": "original", **evaluate_all(base)}
elif a.eval:
    res = {"run": "eval", "model": a.eval, **evaluate_all(be.FastStylizer.load(a.eval, weights=a.vgg))}
else:
    p = model_preset(ws)
    tr = dict(temporal_weight=a.weight, image_size=128, batch_size=2, num_workers=0)
    if a.noise is not None:
        tr["temporal_noise"] = a.noise
    if a.flow is not None:
        tr["temporal_flow"] = a.flow
    p = p.replace(training=p.training.replace(**tr))
    st = be.FastStylizer(p, weights=a.vgg, transformer_weights=ws)
    s = st.fit(a.photos, style_img, steps=a.steps, lr=a.lr, seed=0, style_row=a.style)
    h = s["history"][-max(1, a.steps // 4):]
    res = {"run": "finetune", "steps": a.steps, "temporal_weight": a.weight,
           "temporal_noise": p.training.temporal_noise, "temporal_flow": p.training.temporal_flow,
           "warp": T.TRAINING_WARP, "train_seconds": time.time() - t0,
           "booked_style_last": float(np.mean([r["style"] for r in h])),
           "booked_content_last": float(np.mean([r["content"] for r in h])),
           "booked_temporal_last": float(np.mean([r.get("temporal", 0.0) for r in h])),
           **evaluate_all(st)}
    st.save(a.out.rsplit(".", 1)[0] + ".safetensors", overwrite=True)     # to re-measure without retraining
res.update(style=a.style, vgg=a.vgg, lr=a.lr, seconds=time.time() - t0)
print(json.dumps(res), flush=True)
json.dump(res, open(a.out, "w"), indent=1)
