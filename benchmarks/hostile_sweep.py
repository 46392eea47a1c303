"""A hostile user's sweep of the command line: bad images, bad numbers, bad weight files, malicious
pickles, outputs, kill + resume, corrupt checkpoints, folders, both backends in one process.

Each case runs ``python -m resty ...`` (or a small script) in a fresh process and is classified:
``ok`` (exit 0 where success is right), ``refused`` (exit 2 with exactly one ``resty: error:``
line and no traceback), ``INTERNAL`` (exit 1, "internal error"), ``CRASH`` (killed by a signal),
``MULTILINE`` (an error that is not one line), ``TIMEOUT``, or ``WRONG`` (an outcome other than the
one expected).  Prints a table and the counts; exits 1 when any case is not as expected.

    python benchmarks/hostile_sweep.py [--backend torch|tf|both] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


class Evil:
    """A pickle that runs code when unpickled: it must never run."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/resty-hostile-pwned",))


def make_files(d: Path) -> dict:
    rng = np.random.default_rng(0)
    f = {}
    for name, shape in (("content", (40, 56, 3)), ("style", (36, 36, 3)), ("style2", (30, 44, 3))):
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(d / f"{name}.png")
        f[name] = str(d / f"{name}.png")
    (d / "empty.png").write_bytes(b"")
    (d / "garbage.png").write_bytes(b"this is not an image" * 10)
    png = (d / "content.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    Image.fromarray((rng.random((1, 1, 3)) * 255).astype(np.uint8)).save(d / "tiny.png")
    Image.fromarray((rng.random((30, 30)) * 65535).astype(np.uint16)).save(d / "gray16.png")
    Image.fromarray((rng.random((30, 30, 4)) * 255).astype(np.uint8)).save(d / "rgba.png")
    # a decompression bomb: a header claiming 100000×100000 pixels
    bomb = Image.new("1", (100000, 100000))
    bomb.save(d / "bomb.png")
    (d / "adir.png").mkdir()
    (d / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    hdr = b"[" * 100000 + b"]" * 100000
    (d / "nested.safetensors").write_bytes(struct.pack("<Q", len(hdr)) + hdr)
    (d / "evil.pth").write_bytes(pickle.dumps({"state_dict": Evil()}))
    (d / "garbage.pth").write_bytes(b"PK\x03\x04 not a zip")
    (d / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 then nothing a decoder can read" * 4)
    for k in ("empty", "garbage", "truncated", "tiny", "gray16", "rgba", "bomb", "adir", "garbage.safetensors",
              "nested.safetensors", "evil.pth", "garbage.pth", "garbage.mp4"):
        f[k] = str(d / (k if "." in k else f"{k}.png"))
    photos = d / "photos"
    photos.mkdir()
    for i in range(4):
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(photos / f"p{i}.png")
    shutil.copy(d / "garbage.png", photos / "bad.png")
    f["photos"] = str(photos)
    bad = d / "allbad"
    bad.mkdir()
    for i in range(3):
        (bad / f"b{i}.png").write_bytes(b"nope" * i)
    f["allbad"] = str(bad)
    same = d / "samestem"
    same.mkdir()
    Image.open(d / "content.png").save(same / "a.png")
    Image.open(d / "content.png").convert("RGB").save(same / "a.jpg")
    f["samestem"] = str(same)
    return f


def run(argv, env, timeout=300, expect="refused", cwd=None):
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        return "TIMEOUT", "", time.perf_counter() - t0
    err = r.stderr
    errors = [ln for ln in err.splitlines() if ln.startswith("resty: error:") or ln.startswith("resty: internal")]
    if r.returncode < 0:
        kind = f"CRASH({signal.Signals(-r.returncode).name})"
    elif "internal error" in err or r.returncode == 1:
        kind = "INTERNAL"
    elif "Traceback" in err:
        kind = "MULTILINE"
    elif r.returncode == 2:
        kind = "refused" if len(errors) == 1 else "MULTILINE"
    elif r.returncode == 0:
        kind = "ok"
    else:
        kind = f"exit {r.returncode}"
    line = errors[-1] if errors else (r.stdout.strip().splitlines() or [""])[-1]
    if kind in ("ok", "refused") and kind != expect:
        kind = f"WRONG({kind})"
    return kind, line[:150], time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="torch", choices=["torch", "tf", "both"])
    ap.add_argument("--keep", default=None)
    a = ap.parse_args()
    d = Path(a.keep or tempfile.mkdtemp(prefix="resty-hostile-"))
    d.mkdir(parents=True, exist_ok=True)
    f = make_files(d)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESTY_OFFLINE": "1", "RESTY_HOME": str(d / "home")}
    env.pop("RESTY_DEBUG", None)
    backends = ["torch", "tf"] if a.backend == "both" else [a.backend]
    R = ["-m", "resty"]
    cases = []

    def case(cat, name, argv, expect="refused", timeout=300):
        cases.append((cat, name, argv, expect, timeout))

    for b in backends:
        g = ["--backend", b, "--weights", "random:0", "--iterations", "2", "-q"]
        model = str(d / f"model-{b}.safetensors")
        case("setup", f"{b}: train a model", R + ["train", f["style"], "--data", f["photos"], "--out", model,
                                                    "--backend", b, "--weights", "random:0", "--steps", "2",
                                                    "--batch-size", "2", "--image-size", "32", "-q"], "ok")
        out = lambda n: str(d / f"out-{b}-{n}.png")   # noqa: E731
        # bad images
        for k in ("empty", "garbage", "truncated", "bomb", "adir"):
            case("bad images", f"{b}: content {k}", R + ["stylize", f[k], f["style"], "-o", out(k)] + g)
        case("bad images", f"{b}: missing content", R + ["stylize", str(d / "nope.png"), f["style"], "-o", out("m")] + g)
        case("bad images", f"{b}: style garbage", R + ["stylize", f["content"], f["garbage"], "-o", out("sg")] + g)
        # the TF tutorial scales the longest side to 512, so a 1x1 photo becomes 512x512 (as its source does)
        case("bad images", f"{b}: 1x1 content, tf-tutorial scales it up", R + ["stylize", f["tiny"], f["style"], "-o",
                                                                              out("t"), "--preset", "tf-tutorial"] + g,
             "ok")
        case("bad images", f"{b}: 16-bit gray content", R + ["stylize", f["gray16"], f["style"], "-o", out("g16")] + g, "ok")
        case("bad images", f"{b}: RGBA content", R + ["stylize", f["rgba"], f["style"], "-o", out("rgba")] + g, "ok")
        case("bad images", f"{b}: fast on 1x1", R + ["stylize", f["tiny"], "-o", out("ft"), "--model", model] + g)
        # bad numbers
        for flag, val in (("--iterations", "-1"), ("--iterations", "abc"), ("--size", "-5"), ("--seed", "-1"),
                          ("--style-weights", "nan,1"), ("--style-weights", "-1,2"), ("--style-weights", "1")):
            argv = R + ["stylize", f["content"], f["style"], f["style2"], "-o", out(f"n{flag}{val}")] + g + [flag, val]
            case("bad numbers", f"{b}: {flag} {val}", argv)
        case("bad numbers", f"{b}: --style-weights 1e308,1e308", R + ["stylize", f["content"], f["style"], f["style2"],
                                                                       "-o", out("big")] + g + ["--style-weights",
                                                                                                "1e308,1e308"], "ok")
        # the API returns the initial image for 0 iterations; the command line asks for at least 1
        case("bad numbers", f"{b}: --iterations 0", R + ["stylize", f["content"], f["style"], "-o", out("i0")] + g
             + ["--iterations", "0"])
        tr = ["train", f["style"], "--data", f["photos"], "--backend", b, "--weights", "random:0", "-q"]
        for flag, val in (("--steps", "-1"), ("--batch-size", "0"), ("--image-size", "100000"), ("--image-size", "2"),
                          ("--lr", "-1"), ("--lr", "nan")):
            case("bad numbers", f"{b}: train {flag} {val}", R + tr + ["--out", str(d / f"x{flag}{val}.safetensors"),
                                                                      "--steps", "1", flag, val])
        case("bad numbers", f"{b}: convert --opset 3", R + ["convert", model, "--to", "onnx", "-o", str(d / "o3.onnx"),
                                                            "--opset", "3"])
        # bad weight files and malicious pickles
        for k in ("garbage.safetensors", "nested.safetensors", "garbage.pth", "evil.pth"):
            case("bad weights" if "evil" not in k else "malicious pickles", f"{b}: --weights {Path(f[k]).name}",
                 R + ["stylize", f["content"], f["style"], "-o", out(f"w{k}"), "--backend", b, "--weights", f[k],
                      "--iterations", "1", "-q"])
            case("bad weights" if "evil" not in k else "malicious pickles", f"{b}: --model {Path(f[k]).name}",
                 R + ["stylize", f["content"], "-o", out(f"m{k}"), "--model", f[k], "--backend", b, "-q"])
        case("bad weights", f"{b}: --weights random:x", R + ["stylize", f["content"], f["style"], "-o", out("rx"),
                                                               "--backend", b, "--weights", "random:x", "-q"])
        case("bad weights", f"{b}: --weights imagenet offline", R + ["stylize", f["content"], f["style"], "-o",
                                                                       out("inet"), "--backend", b, "-q"])
        case("malicious pickles", "weights import evil.pth", R + ["weights", "import", f["evil.pth"]])
        # outputs
        Path(out("exists")).write_bytes(b"mine")
        case("outputs", f"{b}: -o existing", R + ["stylize", f["content"], f["style"], "-o", out("exists")] + g)
        case("outputs", f"{b}: -o under a file", R + ["stylize", f["content"], f["style"], "-o",
                                                       str(Path(f["content"]) / "x.png")] + g)
        case("outputs", f"{b}: -o unknown extension", R + ["stylize", f["content"], f["style"], "-o",
                                                            str(d / "x.xyz")] + g)
        mine = d / f"mine-{b}"
        mine.mkdir(exist_ok=True)
        (mine / "thesis.tex").write_text("keep me")
        if b == "tf" or a.backend == "both":
            case("outputs", f"{b}: convert --overwrite onto a user folder",
                 R + ["convert", model, "--to", "savedmodel", "-o", str(mine), "--overwrite"])
        # folders
        case("folders", f"{b}: same stems", R + ["stylize", f["samestem"], "-o", str(d / f"ss-{b}"), "--model", model,
                                                 "--backend", b, "-q"], "ok")
        case("folders", f"{b}: one unreadable of five", R + ["stylize", f["photos"], "-o", str(d / f"ph-{b}"),
                                                              "--model", model, "--backend", b, "-q"])
        case("folders", f"{b}: -o the content folder", R + ["stylize", f["photos"], "-o", f["photos"], "--model", model,
                                                            "--backend", b, "-q"])
        case("folders", f"{b}: train on all-unreadable", R + ["train", f["style"], "--data", f["allbad"], "--out",
                                                              str(d / f"allbad-{b}.safetensors"), "--backend", b,
                                                              "--weights", "random:0", "--steps", "2", "-q"])
        # checkpoints: kill + resume, another run's folder, corrupt newest
        ck = d / f"ck-{b}"
        base = ["train", f["style"], "--data", f["photos"], "--backend", b, "--weights", "random:0",
                "--batch-size", "2", "--image-size", "32", "--checkpoint-dir", str(ck), "--checkpoint-every", "1", "-q"]
        case("kill + resume", f"{b}: train 2 steps with checkpoints", R + base + ["--steps", "2", "--out",
                                                                                  str(d / f"k-{b}.safetensors")], "ok")
        case("kill + resume", f"{b}: resume to 3", R + base + ["--steps", "3", "--resume", "--out",
                                                               str(d / f"k3-{b}.safetensors")], "ok")
        case("kill + resume", f"{b}: resume with another style", R + ["train", f["style2"]] + base[2:]
             + ["--steps", "4", "--resume", "--out", str(d / f"k4-{b}.safetensors")])
        case("kill + resume", f"{b}: new run in an occupied folder", R + base + ["--steps", "2", "--out",
                                                                                 str(d / f"k5-{b}.safetensors")])
        cases.append(("corrupt checkpoints", f"{b}: truncate the newest, resume", ("corrupt", ck, R + base
                      + ["--steps", "4", "--resume", "--out", str(d / f"k6-{b}.safetensors")]), "ok", 300))
        # AdaIN, fine-tuning, pretrained networks, video
        ada = str(d / f"adain-{b}.safetensors")
        case("adain", f"{b}: train a decoder", R + ["train", "--method", "adain", "--data", f["photos"], "--styles",
                                                     f["photos"], "--out", ada, "--backend", b, "--weights", "random:0",
                                                     "--steps", "2", "--batch-size", "2", "--image-size", "32", "-q"], "ok")
        sa = ["stylize", f["content"], "--method", "adain", "--model", ada, "--style-image", f["style"], "--backend", b,
              "--weights", "random:0", "-q"]
        case("adain", f"{b}: stylize", R + sa + ["-o", out("ada")], "ok")
        for flag, val in (("--alpha", "2"), ("--alpha", "nan"), ("--mask", f["garbage"])):
            case("adain", f"{b}: {flag} {Path(val).name}", R + sa + ["-o", out(f"ada{flag}"), flag, val])
        case("adain", f"{b}: train on unreadable styles", R + ["train", "--method", "adain", "--data", f["photos"],
                                                                "--styles", f["allbad"], "--out", str(d / "x.safetensors"),
                                                                "--backend", b, "--weights", "random:0", "--steps", "1",
                                                                "-q"])
        case("adain", f"{b}: savedmodel onto a user folder", R + ["convert", ada, "--to", "savedmodel", "-o", str(mine),
                                                                   "--overwrite", "--weights", "random:0"])
        for flag, val in (("--temporal-weight", "-1"), ("--temporal-weight", "nan")):
            case("fine-tuning", f"{b}: train {flag} {val}", R + tr + ["--out", str(d / f"t{val}.safetensors"),
                                                                      "--steps", "1", flag, val])
        case("fine-tuning", f"{b}: --style 5 on a one-style model", R + tr + ["--out", str(d / "s5.safetensors"),
                                                                              "--steps", "1", "--resume-from", model,
                                                                              "--style", "5"])
        case("pretrained", f"{b}: --activation-quantization on a Johnson model",
             R + ["stylize", f["content"], "-o", out("aq"), "--model", model, "--activation-quantization",
                  "--backend", b, "-q"])
        case("video", f"{b}: a clip that is not a video", R + ["stylize", f["garbage.mp4"], "-o",
                                                               str(d / f"v-{b}.mp4"), "--model", model, "--backend", b,
                                                               "-q"])
    for k in ("evil.pth", "garbage.pth", "garbage.safetensors"):
        case("pretrained" if "evil" not in k else "malicious pickles", f"models import {k}",
             R + ["models", "import", f[k]])
    case("pretrained", "models download ../../etc/passwd", R + ["models", "download", "../../etc/passwd"])
    case("pretrained", "models download candy offline", R + ["models", "download", "candy"])
    case("pretrained", "models info nope", R + ["models", "info", "nope"])
    if a.backend == "both" or True:
        cases.append(("both backends", "torch then tf in one process", ("script", "torch-first"), "ok", 600))
        cases.append(("both backends", "tf then torch in one process", ("script", "tf-first"), "ok", 600))

    rows, counts = [], {}
    for cat, name, argv, expect, timeout in cases:
        if isinstance(argv, tuple) and argv[0] == "corrupt":
            _, ckdir, real = argv
            newest = sorted(Path(ckdir).glob("step-*.safetensors"))
            if newest:
                data = newest[-1].read_bytes()
                newest[-1].write_bytes(data[: len(data) // 3])
            kind, line, sec = run(real, env, timeout, expect)
        elif isinstance(argv, tuple) and argv[0] == "script":
            kind, line, sec = run([str(ROOT / "tests" / "both_backends_script.py"), argv[1]], env, timeout, expect)
        else:
            kind, line, sec = run(argv, env, timeout, expect)
        rows.append((cat, name, kind, line, sec))
        counts[kind] = counts.get(kind, 0) + 1
        print(f"| {cat} | {name} | {kind} | {line} | {sec:.1f} s |", flush=True)
    pwned = Path("/tmp/resty-hostile-pwned").exists()
    bad = sum(v for k, v in counts.items() if k not in ("ok", "refused"))
    print(f"\n{len(rows)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; malicious pickle ran: {'YES' if pwned else 'no'}")
    return 1 if bad or pwned else 0


if __name__ == "__main__":
    sys.exit(main())
