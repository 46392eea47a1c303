"""Reproduce the RestyNet report's figure and timing table: Gatys vs fast, per framework.

The report (VGG19 loss network, Adam lr 1e-3 for both methods, instance norm) measured 39 s per
image for Gatys and 0.601 s per image for the trained feed-forward network on one GPU.  This
script runs both methods in every installed backend with the report's preset (``restynet``) and
writes the figure (content | style | method × framework) and the timing table:

    python examples/reproduce_report.py --out report-figures            # full size (use a GPU)
    python examples/reproduce_report.py --quick                         # a couple of minutes on CPU

Without cached ImageNet VGG weights it falls back to seeded random weights (printed).  The fast
network here is trained briefly on the scikit-image sample photos; the report trained 2 epochs on
~9000 COCO images (``resty train STYLE --data COCO_DIR --preset restynet``).
"""
from __future__ import annotations

import argparse

from resty.demo import DemoSettings, run_demo

REPORT_SECONDS = {"Gatys": 39.0, "fast (Johnson)": 0.601}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="report-figures", help="output folder")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a couple of minutes on CPU")
    ap.add_argument("--backends", default=None, help="comma-separated (default: all installed)")
    ap.add_argument("--size", type=int, default=None, help="longest side in px (default 512; --quick 48)")
    ap.add_argument("--iterations", type=int, default=None, help="Gatys iterations (default 500, the preset's)")
    ap.add_argument("--train-steps", type=int, default=None, help="fast-net training steps (default 200)")
    ap.add_argument("--weights", default=None, help="VGG weights (default: ImageNet if cached, else random:0)")
    ap.add_argument("--device", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        s = DemoSettings(contents=("chelsea",), size=48, iterations=5, train_steps=4, train_batch=2,
                         train_size=48)
    else:
        s = DemoSettings(contents=("chelsea", "astronaut", "coffee"), size=512, iterations=500,
                         train_steps=200, train_batch=4, train_size=256)
    s.out = a.out
    s.gatys_preset = s.fast_preset = "restynet"      # the report's settings for both methods
    s.train_lr = None                                # the preset's Adam lr 1e-3
    s.title = "RestyNet report, reproduced"
    s.report = REPORT_SECONDS
    s.pretrained = None                              # the report's two methods only
    s.edge_threshold = None                          # show what the report's settings give (the column stays)
    for field, value in (("size", a.size), ("iterations", a.iterations), ("train_steps", a.train_steps),
                         ("weights", a.weights), ("device", a.device)):
        if value is not None:
            setattr(s, field, value)
    if a.backends:
        s.backends = [b for b in a.backends.split(",") if b]
    result = run_demo(settings=s)
    print(open(result["timing_md"]).read())
    return 0


if __name__ == "__main__":
    from resty.errors import run_script
    run_script(main, "reproduce_report.py")
