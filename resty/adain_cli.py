"""``resty train --method adain`` and ``resty stylize --model DECODER --style-image IMAGE`` for
AdaIN decoders (resty.adain); resty.cli dispatches here."""
from __future__ import annotations

import time
from pathlib import Path



def _usage(msg: str):
    from .cli import UsageError
    return UsageError(msg)


def train(args, backend) -> int:
    from .adain import resolve_adain_preset
    from .training_data import list_training_images
    for flag, folder in (("--data", args.data), ("--styles", args.styles)):
        if not folder:
            raise _usage(f"--method adain needs {flag} FOLDER")
        p = Path(folder).expanduser()
        if not p.is_dir():
            raise _usage(f"{folder}: no such folder ({flag} takes a folder of images)")
        list_training_images(str(p))
    if args.style:
        raise _usage("--method adain trains on a folder of styles (--styles DIR), not one STYLE image")
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".safetensors":
        raise _usage(f"{out}: a model is saved as .safetensors")
    if args.resume and not args.checkpoint_dir:
        raise _usage("--resume needs --checkpoint-dir (where the checkpoints are)")
    from .cli import _check_output
    _check_output(out, args.overwrite)
    from . import distributed as _dist
    if (args.nproc or 1) > 1 and not _dist.is_launched_child():
        # The Johnson network's launcher: N workers run this very command (torch: torchrun + DDP;
        # tf: MultiWorkerMirroredStrategy workers, each with its TF_CONFIG).
        return _dist.relaunch_cli(args.backend, args.nproc, args.argv)
    preset = resolve_adain_preset(args.preset or "pytorch-adain")
    init = args.transformer_weights or f"random:{args.seed}"
    st = backend.AdaINStylizer(preset, weights=args.weights, device=args.device, decoder_weights=init)
    t0 = time.perf_counter()
    summary = st.fit(str(Path(args.data).expanduser()), str(Path(args.styles).expanduser()), steps=args.steps,
                     epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                     checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every, resume=args.resume,
                     seed=args.seed, progress=not args.quiet, lr=args.lr)
    st.save(str(out), overwrite=args.overwrite)      # rank 0 only under --nproc
    if not _dist.process_info().is_main:
        return 0
    if not args.quiet:
        procs = f" on {summary['world_size']} processes" if summary.get("world_size", 1) > 1 else ""
        print(f"trained to step {summary['steps']} in {time.perf_counter() - t0:.1f}s{procs}; decoder written to "
              f"{out}")
    if summary.get("skipped"):
        print(f"warning: skipped {len(summary['skipped'])} unreadable image(s), e.g. {summary['skipped'][0]}")
    return 0


def stylize(args, backend, contents, targets) -> int:
    from .images import save_image
    if not args.model:
        raise _usage("--method adain needs --model DECODER (.safetensors from `resty train --method adain`, "
                         "or pytorch-AdaIN's decoder.pth)")
    styles = list(args.style_image or []) + list(args.styles or [])
    if not styles:
        raise _usage("AdaIN needs a style: --style-image IMAGE (repeat to interpolate, --style-weights)")
    alpha = args.alpha if getattr(args, "alpha", None) is not None else getattr(args, "strength", 1.0)
    mask = getattr(args, "mask", None)
    if mask:
        if len(styles) != 2:
            raise _usage(f"--mask takes two styles (--style-image FOREGROUND --style-image BACKGROUND), "
                         f"got {len(styles)}")
        if args.style_weights is not None:
            raise _usage("--mask: each region has one style; --style-weights does not apply")
        if not Path(mask).expanduser().is_file():
            raise _usage(f"{mask}: no such mask file (--mask takes a grey image)")
        mask = str(Path(mask).expanduser())
    st = backend.AdaINStylizer.load(args.model, weights=args.weights, device=args.device)
    for c, t in zip(contents, targets):
        y = st.stylize(str(c), styles, alpha=alpha, style_weights=args.style_weights,
                       preserve_color=args.preserve_color, mask=mask or None)
        save_image(y, t, overwrite=args.overwrite)
        if not args.quiet:
            print(f"wrote {t}")
    return 0


def convert(args, model, out) -> int:
    """``resty convert DECODER --to onnx|savedmodel -o OUT [--weights W]``: encoder + AdaIN +
    decoder in one graph, an ONNX file (AdaINStylizerBase.export_onnx, through torch, checked
    with onnxruntime) or a TensorFlow SavedModel folder (export_savedmodel, through tf, checked
    with tf.saved_model.load); both checked against ``stylize`` before they are moved into place."""
    if args.to not in ("onnx", "savedmodel"):
        raise _usage(f"an AdaIN decoder converts --to onnx or --to savedmodel (one graph with its encoder); for "
                     f"torch or tf use the .safetensors itself (both backends load it), not --to {args.to}")
    from .backends import get_backend
    if args.to == "savedmodel":
        st = get_backend("tf").AdaINStylizer.load(str(model), weights=args.weights, device="cpu")
        path = st.export_savedmodel(out, overwrite=args.overwrite)
        print(f"{model} -> {path} (savedmodel: serving_default(content, style, alpha) -> stylized; encoder "
              f"weights {args.weights})")
        return 0
    st = get_backend("torch").AdaINStylizer.load(str(model), weights=args.weights, device="cpu")
    path = st.export_onnx(out, opset=args.opset, overwrite=args.overwrite)
    print(f"{model} -> {path} (onnx: inputs content, style, alpha; encoder weights {args.weights})")
    return 0
