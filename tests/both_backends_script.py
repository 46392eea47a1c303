"""Both backends imported directly in one process, in the order given (torch-first / tf-first),
then one training step and one stylization in each framework.  Run by tests/test_both_backends.py
and benchmarks/hostile_sweep.py in a fresh interpreter."""
import sys
import numpy as np
if sys.argv[1] == "torch-first":
    import resty_torch as first
    import resty_tf as second
else:
    import resty_tf as first
    import resty_torch as second
from resty.presets import get
p = get("johnson2016")
p = p.replace(transformer=p.transformer.replace(channels=(4, 8, 8), residual_blocks=1))
rng = np.random.default_rng(0)
imgs = [rng.random((32, 32, 3)).astype(np.float32) for _ in range(2)]
for B in (first, second):
    f = B.FastStylizer(p, weights="random:0", device="cpu")
    f.fit(imgs, imgs[0], steps=1, batch_size=2, image_size=24, num_workers=0)
    assert f.stylize(imgs[0]).shape == (32, 32, 3)
    g = B.GatysStylizer("gatys2015", weights="random:0", device="cpu")
    assert g.stylize(imgs[0], imgs[1], iterations=2, image_size=32).shape == (32, 32, 3)
print("OK", sys.argv[1])
