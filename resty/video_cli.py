"""``resty stylize CLIP -o OUT --model NAME [--style K | --style-image IMG]``: a clip (a video
file, or a folder of frames with a video as OUT) through any fast network, in either backend;
resty.cli dispatches here.  The networks: a trained or imported FastStylizer (Johnson, or the
conditional-norm ``multistyle26`` with ``--style``), the arbitrary-style network
(``--style-image``, model ``arbitrary``), and AdaIN decoders (``--style-image``)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

__all__ = ["stylize", "frame_function"]


def _usage(msg: str):
    from .cli import UsageError
    return UsageError(msg)


def frame_function(args, backend):
    """``(fn, label)``: ``fn`` maps a B×H×W×3 float32 batch to stylized frames, for the network
    the arguments ask for (its style resolved once, not per frame)."""
    from .adain import is_adain_file
    from .cli import _check_image, _check_readable_file
    pc = bool(getattr(args, "preserve_color", False))
    if args.method == "gatys":
        raise _usage("video needs a fast network (--model NAME or FILE, or --style-image): Gatys optimises each "
                     "frame for minutes")
    if args.method == "adain" or (args.model and os.path.exists(os.path.expanduser(args.model))
                                  and is_adain_file(args.model)):
        styles = list(args.style_image or []) + list(args.styles or [])
        if not args.model:
            raise _usage("--method adain needs --model DECODER")
        if not styles:
            raise _usage("AdaIN needs a style: --style-image IMAGE")
        imgs = [_check_image(s, "style image") for s in styles]
        alpha = args.alpha if args.alpha is not None else 1.0
        st = backend.AdaINStylizer.load(args.model, weights=args.weights, device=args.device)

        def adain(batch):
            return np.stack([st.stylize(f, imgs if len(imgs) > 1 else imgs[0], alpha=alpha,
                                        style_weights=args.style_weights, preserve_color=pc) for f in batch])
        return adain, f"AdaIN {Path(args.model).name}"
    if args.style_image:
        if args.style is not None:
            raise _usage("--style picks a style of a multi-style model; --style-image uses any image as the style")
        if not 0.0 <= args.strength <= 1.0:
            raise _usage(f"--strength must be between 0 and 1, got {args.strength}")
        imgs = [_check_image(s, "style image") for s in args.style_image]
        st = backend.ArbitraryStylizer.load(args.model or "arbitrary", device=args.device)
        if args.strength < 1.0:
            raise _usage("--strength < 1 blends towards each frame's own style: not for video (it would flicker)")
        emb = st.blended_embedding(imgs, style_weights=args.style_weights)

        def arbitrary(batch):
            from .images import preserve_color as _pc
            out = [np.clip(np.asarray(st._transfer(f, emb), np.float32), 0.0, 1.0) for f in batch]
            return np.stack([_pc(y, f) if pc else y for y, f in zip(out, batch)])
        return arbitrary, f"arbitrary-style ({args.model or 'arbitrary'})"
    if not args.model:
        raise _usage("video needs a fast network: --model NAME or FILE (e.g. multistyle26), or --style-image IMAGE")
    model = args.model
    if not os.path.exists(os.path.expanduser(model)):
        from .models import resolve_model
        model = str(resolve_model(model))
    _check_readable_file(model, "model file")
    from .cli import _speed_kwargs
    st = backend.FastStylizer.load(str(Path(model).expanduser()), weights=args.weights, device=args.device,
                                   **_speed_kwargs(args))
    if args.style is not None and not st.preset.transformer.conditional:
        raise _usage("--style picks a style of a multi-style model (e.g. multistyle26); this model has one style")

    def fast(batch):
        kw = {"style": args.style} if args.style is not None else {}
        return st.stylize(batch, preserve_color=pc, batch_size=len(batch), **kw)
    return fast, f"{Path(args.model).name}" + (f" style {args.style}" if args.style is not None else "")


def stylize(args, content: Path, out: Path, backend) -> int:
    from .cli import _check_output, _note, _say
    from .video import is_video_path, stylize_video
    if content.is_dir() and not is_video_path(out):
        raise _usage(f"{out}: a folder of frames becomes a video: give -o CLIP.mp4 (or .mkv, .mov, .webm, .avi)")
    if not content.is_dir() and not is_video_path(content):
        raise _usage(f"{content}: CONTENT is not a video (.mp4, .mkv, .mov, .webm, .avi, .m4v) or a folder of "
                     "frames, but -o is a video")
    if not is_video_path(out) and out.suffix:
        raise _usage(f"{out}: a clip is written as a video (.mp4, .mkv, .mov, .webm, .avi) or a folder of frames "
                     "(a path without a suffix)")
    if is_video_path(out):
        _check_output(out, args.overwrite)
    for opt in ("iterations", "preset", "nproc"):
        if getattr(args, opt, None) is not None:
            _note(f"note: --{opt} has no effect on a video")
    if args.fps is not None and not (args.fps > 0 and np.isfinite(args.fps)):
        raise _usage(f"--fps must be a positive number, got {args.fps}")
    fn, label = frame_function(args, backend)
    t0 = time.perf_counter()
    r = stylize_video(content, out, fn, batch_size=args.batch_size, size=args.size, fps=args.fps,
                      overwrite=args.overwrite, progress=not args.quiet)
    if r.get("audio_note"):
        _note(f"note: {r['audio_note']}")
    audio = f", audio {r['audio']} copied" if r.get("audio") else ""
    _say(f"{content} -> {out} ({r['frames']} frames, {r['width']}×{r['height']} at {float(r['rate']):.3g} fps"
         f"{audio}; {label}; {r['fps']:.2f} frames/s, {time.perf_counter() - t0:.1f} s)")
    return 0
