"""The fine-tune of docs/VIDEO.md: multistyle26 (style 19) fine-tuned with and without the temporal
loss (ReReVST), then the warping error on the synthetic clip (resty.temporal, true flow).

    python benchmarks/temporal_finetune.py tf 300 0,300 PHOTOS_DIR

The loss network is random:0 (no ImageNet weights offline); use weights="imagenet" where they are."""
import json
import sys
import time

import numpy as np

from resty.backends import get_backend
from resty.fast import model_preset
from resty.models import resolve_model
from resty.weights import WeightSet, load_weights
from resty.images import sample_images, resize_longest
from resty.temporal import synthetic_clip, clip_warping_error
backend = sys.argv[1]; steps = int(sys.argv[2]); weights_t = [float(w) for w in sys.argv[3].split(",")]
STYLE = 19
be = get_backend(backend)
where = resolve_model("multistyle26")
ws = where if isinstance(where, WeightSet) else load_weights(where, expect="transformer")
base = be.FastStylizer.load("multistyle26", weights="random:0")
style_img = base.stylize(resize_longest(sample_images()["chelsea"], 256), style=STYLE)
clip = synthetic_clip("astronaut", 60, 256)
frames = list(clip.frames()); flows = list(clip.flows())
def werr(st):
    outs = []
    for k in range(0, 60, 4):
        outs.extend(st.stylize(np.stack(frames[k:k + 4]), style=STYLE, batch_size=4))
    return clip_warping_error(outs, flows)["mean"]
res = {"backend": backend, "steps": steps, "style": STYLE, "per_frame_original": werr(base)}
print(res, flush=True)
photos = sys.argv[4]   # a folder of training photos (docs/VIDEO.md: the 7 scikit-image samples)
for w in weights_t:
    p = model_preset(ws)
    p = p.replace(training=p.training.replace(temporal_weight=w, image_size=128, batch_size=2, num_workers=0))
    st = be.FastStylizer(p, weights="random:0", transformer_weights=ws)
    st.net.set_style(np.eye(26)[STYLE])
    t = time.time()
    s = st.fit(photos, style_img, steps=steps, lr=1e-4, seed=0)
    h = s["history"][-max(1, steps // 4):]
    row = {"temporal_weight": w, "seconds": time.time() - t, "warping_error": werr(st),
           "style_loss_last": float(np.mean([r["style"] for r in h])),
           "content_loss_last": float(np.mean([r["content"] for r in h])),
           "temporal_term_last": float(np.mean([r.get("temporal", 0.0) for r in h]))}
    res[f"w={w:g}"] = row
    print(row, flush=True)
json.dump(res, open(f"finetune_{backend}_{steps}.json", "w"), indent=1)
