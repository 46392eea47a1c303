"""AdaIN (Huang & Belongie 2017) quantities: the AdaIN op in each σ convention, the encoder, the
decoder, the training loss of each preset, its gradients, one ``fit`` step and ``stylize`` (alpha
and style interpolation), torch vs TF vs the NumPy oracle (resty.reference.adain_*); plus the
honesty checks of the σ conventions (biased vs unbiased, eps inside vs outside the root).
Small: a tiny decoder (widths 8/6/4), 32×40 images, batch 2."""
from __future__ import annotations

import functools
from typing import List

import numpy as np

from resty import reference as R
from resty.specs import SIGMA_CONVENTIONS

from . import tolerances as T
from .compare import Quantity, compare_arrays

WIDTHS = (8, 6, 4)
HW = (32, 40)


def _c():
    from . import cases
    return cases


def preset(name: str = "pytorch-adain"):
    from resty.adain import get_adain_preset
    p = get_adain_preset(name)
    return p.replace(adain=p.adain.replace(decoder_widths=WIDTHS, load_size=44),
                     training=p.training.replace(num_workers=0))


@functools.lru_cache(maxsize=None)
def encoder_ws(prep: str = "caffe"):
    from resty.weights import random_vgg
    return random_vgg("vgg19", 7, prep)


@functools.lru_cache(maxsize=None)
def decoder_ws():
    from resty.adain import random_decoder
    return random_decoder(preset().adain, 5)


def _stylizer(ctx, side, dtype, name="pytorch-adain"):
    S = ctx.hook(side, "adain.AdaINStylizer")
    kw = {"device": ctx.torch_device} if side == "torch" else {}
    return S(preset(name), weights=encoder_ws(), dtype=dtype, decoder_weights=decoder_ws(), **kw)


def _enc_ref():
    from resty.adain import encoder_tensors
    return encoder_tensors(encoder_ws())


def _dec_ref():
    return {k: np.asarray(v, np.float64) for k, v in decoder_ws().tensors.items()}


def _to_np(side, ctx, t):
    return ctx.np_t(t) if side == "torch" else _c().nchw(ctx.np_f(t))


def _in(side, ctx, x_nchw, dtype):
    return ctx.t(x_nchw, dtype) if side == "torch" else ctx.f(_c().nhwc(x_nchw), dtype)


# --------------------------------------------------------------------------- quantities
def q_op(ctx, dtype):
    """AdaIN on random relu-like features (content 2×5×7×9, style 2×5×6×11), every σ convention."""
    c = _c()
    fc, fs = c.features("adain-c", (2, 5, 7, 9)), c.features("adain-s", (2, 5, 6, 11))
    specs = {f"content {a}, style {b}": preset().adain.replace(content_sigma=a, style_sigma=b)
             for a in SIGMA_CONVENTIONS for b in SIGMA_CONVENTIONS if a != "biased" or b == "biased"}

    def side(name):
        mod = ctx.hook(name, "adain")
        return {k: _to_np(name, ctx, mod.adain(_in(name, ctx, fc, dtype), _in(name, ctx, fs, dtype), s))
                for k, s in specs.items()}

    return c.sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"),
                   ref=lambda: {k: R.adain(fc, fs, s) for k, s in specs.items()})


def q_encoder(padding):
    def fn(ctx, dtype):
        c = _c()
        x = c.image("adain-enc", (2,) + HW + (3,))
        spec = preset().adain.replace(encoder_padding=padding)

        def side(name):
            Enc = ctx.hook(name, "adain.AdaINEncoder")
            kw = {"device": ctx.torch_device} if name == "torch" else {}
            out = Enc(encoder_ws(), spec, dtype=dtype, **kw)(_in(name, ctx, c.nchw(x), dtype))
            return {k: _to_np(name, ctx, v) for k, v in out.items()}

        return c.sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"),
                       ref=lambda: R.adain_encoder(x, _enc_ref(), spec))
    return fn


def q_decoder(ctx, dtype):
    c = _c()
    t = c.features("adain-dec", (2, 512, 4, 5))
    spec = preset().adain

    def side(name):
        Dec = ctx.hook(name, "adain.AdaINDecoder")
        kw = {"device": ctx.torch_device} if name == "torch" else {}
        net = Dec(spec, decoder_ws(), dtype=dtype, **kw)
        if name == "torch":
            import torch
            with torch.no_grad():
                return {"decoder(t)": _to_np(name, ctx, net(_in(name, ctx, t, dtype)))}
        return {"decoder(t)": _to_np(name, ctx, net(_in(name, ctx, t, dtype)))}

    return c.sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"),
                   ref=lambda: {"decoder(t)": R.adain_decoder(t, _dec_ref(), spec)})


def _pair():
    c = _c()
    return c.image("adain-content", (2,) + HW + (3,)), c.image("adain-style", (2,) + HW + (3,))


def q_loss(name):
    def fn(ctx, dtype):
        c = _c()
        x, s = _pair()
        keys = ("total", "content", "style")

        def side(side_name):
            st = _stylizer(ctx, side_name, dtype, name)
            terms = st.train_terms(_in(side_name, ctx, c.nchw(x), dtype), _in(side_name, ctx, c.nchw(s), dtype))
            terms = ctx.np_t(terms) if side_name == "torch" else ctx.np_f(terms)
            return dict(zip(keys, map(np.asarray, terms[:3])))

        def ref():
            out = R.adain_train_terms(x, s, _enc_ref(), _dec_ref(), preset(name).adain)
            return {k: np.asarray(out[k]) for k in keys}

        return c.sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"), ref=ref)
    return fn


def q_grads(ctx, dtype):
    """d total / d decoder weights (adain2017 and pytorch-adain)."""
    c = _c()
    x, s = _pair()

    def side(side_name):
        B = c.Backend(ctx, side_name, dtype)
        out = {}
        for name in ("adain2017", "pytorch-adain"):
            st = _stylizer(ctx, side_name, dtype, name)
            params = st.net.canonical_parameters() if B.is_torch else st.net.canonical_variables()
            g = B.param_grads(lambda: st.train_terms(B.tensor_nchw(c.nchw(x)), B.tensor_nchw(c.nchw(s)))[0],
                              params, st.net)
            out[f"{name}: all weights"] = np.concatenate([v.ravel() for v in g.values()])
        return out

    return c.sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"))


FIT_LR = 1e-3


def _fit_data():
    c = _c()
    items = [c.image(("adain-fit", i), (36 + 3 * i, 45 + 2 * i, 3)).astype(np.float32) for i in range(3)]
    styles = [c.image(("adain-fit-style", i), (47, 38 + i, 3)).astype(np.float32) for i in range(3)]
    return items, styles


def _fit_one(ctx, side, dtype):
    key = ("adain-fit", side, dtype)
    if key not in ctx.cache:
        items, styles = _fit_data()
        st = _stylizer(ctx, side, dtype)
        before = {k: np.asarray(v, np.float64) for k, v in st.net.state_dict_canonical().items()}
        st.fit(items, styles, steps=1, batch_size=2, image_size=32, seed=0, num_workers=0, lr=FIT_LR)
        after = {k: np.asarray(v, np.float64) for k, v in st.net.state_dict_canonical().items()}
        ctx.cache[key] = (st, before, after)
    return ctx.cache[key]


def q_fit_loss(ctx, dtype):
    """The loss terms ``fit`` booked for step 1 (its batch: the core's content and style crops)."""
    keys = ("total", "content", "style")

    def side(name):
        h = _fit_one(ctx, name, dtype)[0].history[0]
        return {k: np.asarray(h[k]) for k in keys}

    def ref():
        from resty.adain import load_pairs, style_seed
        from resty.fast import TrainingPlan
        from resty.training_data import BatchSchedule
        items, styles = _fit_data()
        sched = BatchSchedule(len(items), 2, 0)
        plan = TrainingPlan(items, sched, 1, 32, 0, 0, FIT_LR, None, 1, styles=styles,
                            style_schedule=BatchSchedule(len(styles), 1, style_seed(0)))
        cs, ss, _ = load_pairs(plan, preset().adain.load_size, 0)
        out = R.adain_train_terms(np.stack(cs).astype(np.float64), np.stack(ss).astype(np.float64), _enc_ref(),
                                  _dec_ref(), preset().adain)
        return {k: np.asarray(out[k]) for k in keys}

    return _c().sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"), ref=ref)


def q_fit_update(ctx, dtype):
    def side(name):
        _, before, after = _fit_one(ctx, name, dtype)
        return {"all weights (one vector)": np.concatenate([(after[k] - before[k]).ravel() for k in sorted(before)])}

    return _c().sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"))


def q_stylize(ctx, dtype):
    """stylize(alpha=0.6) with two styles interpolated 0.3/0.7, an odd-sized content (reflect
    padded to a multiple of 8 and cropped back)."""
    c = _c()
    x = c.image("adain-sty-c", (35, 42, 3)).astype(np.float32)
    s1, s2 = c.image("adain-sty-1", (40, 33, 3)).astype(np.float32), c.image("adain-sty-2", (29, 37, 3)).astype(np.float32)

    def side(name):
        st = _stylizer(ctx, name, dtype)
        return {"stylize": c.nchw(st.stylize(x, [s1, s2], alpha=0.6, style_weights=[0.3, 0.7])[None])}

    def ref():
        spec = preset().adain
        enc = _enc_ref()
        xp = np.pad(x.astype(np.float64), ((0, 5), (0, 6), (0, 0)), mode="reflect")
        fc = R.adain_encoder(xp, enc, spec)["relu4_1"]
        t = sum(w * R.adain(fc, R.adain_encoder(s.astype(np.float64), enc, spec)["relu4_1"], spec)
                for w, s in ((0.3, s1), (0.7, s2)))
        y = R.adain_decoder(0.6 * t + 0.4 * fc, _dec_ref(), spec)[:, :, :35, :42]
        return {"stylize": np.clip(y, 0, 1).astype(np.float32).astype(np.float64)}

    return c.sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"), ref=ref)


def q_stylize_mask(ctx, dtype):
    """Spatial control: stylize(mask=M, alpha 0.7) with two styles on an odd-sized 35×42 content;
    M splits the content's left 20 columns (first style) from the rest, plus a diagonal blob, so
    both regions are irregular on the 5×6 relu4_1 grid."""
    c = _c()
    from resty.adain import adain_regions_reference, mask_regions
    x = c.image("adain-mask-c", (35, 42, 3)).astype(np.float32)
    s1, s2 = c.image("adain-mask-1", (40, 33, 3)).astype(np.float32), c.image("adain-mask-2", (29, 37, 3)).astype(np.float32)
    m = np.zeros((35, 42))
    m[:, :20] = 1.0
    m[20:, 28:] = 0.8
    m[:10, :10] = 0.2

    def side(name):
        st = _stylizer(ctx, name, dtype)
        return {"stylize(mask)": c.nchw(st.stylize(x, [s1, s2], alpha=0.7, mask=m)[None])}

    def ref():
        spec = preset().adain
        enc = _enc_ref()
        xp = np.pad(x.astype(np.float64), ((0, 5), (0, 6), (0, 0)), mode="reflect")
        fc = R.adain_encoder(xp[None], enc, spec)["relu4_1"]
        fss = [R.adain_encoder(s.astype(np.float64)[None], enc, spec)["relu4_1"] for s in (s1, s2)]
        t = adain_regions_reference(fc, fss, mask_regions(m, (35, 42)), spec)
        y = R.adain_decoder(0.7 * t + 0.3 * fc, _dec_ref(), spec)[:, :, :35, :42]
        return {"stylize(mask)": np.clip(y, 0, 1).astype(np.float32).astype(np.float64)}

    return c.sides(ctx, torch=lambda: side("torch"), tf=lambda: side("tf"), ref=ref)


def build() -> List[Quantity]:
    return [
        Quantity("adain-op", f"AdaIN op, every σ convention pair ({', '.join(SIGMA_CONVENTIONS)})", "features", q_op),
        Quantity("adain-encoder-reflect", "AdaIN encoder (conv0 + VGG19 to relu4_1, reflection pad), 4 layers, "
                 f"{HW[0]}×{HW[1]}", "features", q_encoder("reflect")),
        Quantity("adain-encoder-zeros", "AdaIN encoder, zero pad (keras-adain)", "features", q_encoder("zeros"),
                 quick=False),
        Quantity("adain-decoder", f"AdaIN decoder forward (widths {WIDTHS}, 4×5 -> 32×40)", "output", q_decoder),
        Quantity("adain-loss-adain2017", "AdaIN training loss terms, adain2017 (Lua conventions)", "loss",
                 q_loss("adain2017")),
        Quantity("adain-loss-pytorch-adain", "AdaIN training loss terms, pytorch-adain", "loss", q_loss("pytorch-adain")),
        Quantity("adain-loss-keras-adain", "AdaIN training loss terms, keras-adain (zero padding)", "loss",
                 q_loss("keras-adain"), quick=False),
        Quantity("adain-grads", "AdaIN loss gradient w.r.t. every decoder weight (adain2017, pytorch-adain)", "grad",
                 q_grads, sides=("torch", "tf")),
        Quantity("adain-fit-loss", "AdaINStylizer.fit step 1: booked loss terms (core's content+style crops)", "loss",
                 q_fit_loss),
        Quantity("adain-fit-update", f"AdaINStylizer.fit step 1: decoder update (Adam lr {FIT_LR:g})", "trajectory",
                 q_fit_update, sides=("torch", "tf")),
        Quantity("adain-stylize", "AdaINStylizer.stylize: alpha 0.6, two styles 0.3/0.7, odd 35×42 content",
                 "image_out", q_stylize),
        Quantity("adain-stylize-mask", "AdaINStylizer.stylize(mask=M): two styles, one per region of the relu4_1 "
                 "grid, alpha 0.7, odd 35×42 content", "image_out", q_stylize_mask),
    ]


# --------------------------------------------------------------------------- honesty checks
def sigma_conventions(dtype: str):
    """resty_torch's AdaIN op with pytorch-AdaIN's σ (unbiased, eps inside the root) against the
    oracle, and the pitfalls injected into the oracle: biased variance, eps outside the root."""
    import torch
    from resty_torch import adain as A
    c = _c()
    # A small spread (σ ≈ 3e-3), so eps 1e-5 weighs ~1e-3 of σ² and every pitfall is ≥ 1e-3 relative.
    fc, fs = c.features("adain-mut-c", (2, 4, 5, 7)) * 3e-3, c.features("adain-mut-s", (2, 4, 6, 5)) * 3e-3
    spec = preset().adain
    with torch.no_grad():
        y = A.adain(torch.as_tensor(fc.astype(dtype)), torch.as_tensor(fs.astype(dtype)), spec).double().numpy()
    tol = T.get("features", dtype)

    def eps_outside(x):
        mu = x.mean(axis=(2, 3), keepdims=True)
        return mu, np.sqrt(((x - mu) ** 2).sum(axis=(2, 3), keepdims=True) / (x.shape[2] * x.shape[3] - 1)) + spec.eps

    mc, sc = eps_outside(fc)
    ms, ss = eps_outside(fs)

    def res(label, expect, b) -> tuple:
        return (label, expect, compare_arrays(y, b, tol, label))
    return [
        res("torch vs oracle, unbiased σ + eps inside the root (pytorch-adain)", True, R.adain(fc, fs, spec)),
        res("torch (unbiased) vs oracle with the biased σ (+ eps)", False,
            R.adain(fc, fs, spec.replace(content_sigma="biased_eps", style_sigma="biased_eps"))),
        res("torch (eps inside) vs oracle with eps outside the root", False, ss * (fc - mc) / sc + ms),
        res("torch (eps) vs oracle without eps on the style side (the Lua original's)", False,
            R.adain(fc, fs, spec.replace(style_sigma="biased"))),
    ]


ADAIN_MUTATIONS = {"adain_sigma_conventions": sigma_conventions}
