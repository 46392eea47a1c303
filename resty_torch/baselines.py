"""Plain-PyTorch baselines, written the way the tutorials write them, for ``resty bench``'s ratios.

Gatys: torchvision VGG19 features, per-layer loss modules inserted into an nn.Sequential
(the PyTorch "Neural Transfer" tutorial's structure), optimising the image with Adam or L-BFGS.
Fast: the pytorch/examples fast_neural_style TransformerNet in eager float32.
These are measured seconds apart from Resty on the same machine, so every Resty figure is
also a ratio.  Random weights: timings do not depend on the values.

The bench (``resty.bench.workloads``, framework-free) reaches this module by name through
``resty.backends.load_backend_module``; the functions at the end (``gatys_adam``,
``gatys_run``, ``fast_infer``, ``fast_train``) have twins of the same name and meaning in
``resty_tf.baselines``: NumPy images in, a callable that does one timed call out.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- Gatys (tutorial)
def _gram(x):
    a, b, c, d = x.size()
    f = x.view(a * b, c * d)
    return torch.mm(f, f.t()).div(a * b * c * d)


class _ContentLoss(nn.Module):
    def __init__(self, target):
        super().__init__()
        self.target = target.detach()
        self.loss = None

    def forward(self, x):
        self.loss = F.mse_loss(x, self.target)
        return x


class _StyleLoss(nn.Module):
    def __init__(self, target_feature):
        super().__init__()
        self.target = _gram(target_feature).detach()
        self.loss = None

    def forward(self, x):
        self.loss = F.mse_loss(_gram(x), self.target)
        return x


# The tutorial's own layers (conv_4; conv_1..conv_5) stop at conv3_1.  Resty's Gatys presets go
# to relu5_1; for ratios on the same work the bench uses the same depth with the tutorial's
# structure: conv_N counts convolutions (conv4_2 = conv_10, conv5_1 = conv_13).
TUTORIAL_LAYERS = (("conv_4",), ("conv_1", "conv_2", "conv_3", "conv_4", "conv_5"))
GATYS_DEPTH_LAYERS = (("conv_10",), ("conv_1", "conv_3", "conv_5", "conv_9", "conv_13"))


def tutorial_vgg19(device):
    """torchvision VGG19 ``features`` (random init; timings do not depend on the values)."""
    import torchvision
    cnn = torchvision.models.vgg19(weights=None).features.to(device).eval()
    for p in cnn.parameters():
        p.requires_grad_(False)
    return cnn


def tutorial_gatys_model(content, style, device, content_layers=TUTORIAL_LAYERS[0],
                         style_layers=TUTORIAL_LAYERS[1], cnn=None):
    # The tutorial adds the cnn's own modules to a new nn.Sequential (no copy).
    cnn = tutorial_vgg19(device) if cnn is None else cnn
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(-1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(-1, 1, 1)

    class Norm(nn.Module):
        def forward(self, img):
            return (img - mean) / std

    model = nn.Sequential(Norm())
    content_losses, style_losses = [], []
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
            layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = f"pool_{i}"
        else:
            name = f"other_{i}"
        model.add_module(name, layer)
        if name in content_layers:
            cl = _ContentLoss(model(content).detach())
            model.add_module(f"content_loss_{i}", cl)
            content_losses.append(cl)
        if name in style_layers:
            sl = _StyleLoss(model(style).detach())
            model.add_module(f"style_loss_{i}", sl)
            style_losses.append(sl)
    # trim after the last loss module
    for j in range(len(model) - 1, -1, -1):
        if isinstance(model[j], (_ContentLoss, _StyleLoss)):
            break
    return model[: j + 1], content_losses, style_losses


def tutorial_gatys(content, style, iterations, optimizer="lbfgs", style_weight=1e6, content_weight=1.0,
                   layers=TUTORIAL_LAYERS, cnn=None, counter=None):
    """Run the tutorial's loop (model built from ``cnn``, targets computed, image optimised);
    returns the image.  ``iterations`` counts closure evaluations (exactly that many are made);
    ``counter`` (a list) receives the evaluations actually made."""
    model, cls, sls = tutorial_gatys_model(content, style, content.device, layers[0], layers[1], cnn=cnn)
    return tutorial_optimize(model, cls, sls, content, iterations, optimizer, style_weight,
                             content_weight, counter)


def tutorial_optimize(model, cls, sls, content, iterations, optimizer="lbfgs", style_weight=1e6,
                      content_weight=1.0, counter=None):
    """The tutorial's optimisation loop on a built model (clamp inside the closure)."""
    img = content.clone().contiguous().requires_grad_(True)
    opt = torch.optim.LBFGS([img]) if optimizer == "lbfgs" else torch.optim.Adam([img], lr=1e-3)
    run = [0]

    def closure():
        with torch.no_grad():
            img.clamp_(0, 1)
        opt.zero_grad()
        model(img)
        loss = style_weight * sum(s.loss for s in sls) + content_weight * sum(c.loss for c in cls)
        loss.backward()
        run[0] += 1
        return loss

    while run[0] < iterations:
        if optimizer == "lbfgs":
            # The tutorial's LBFGS defaults (max_iter 20 per step()), except that the last outer
            # step is shortened so that exactly ``iterations`` closures run: torch's LBFGS makes
            # max_iter evaluations per step() without line search.  (Scaling the time of an
            # overshooting run instead also scaled the model and target setup, which favoured
            # the baseline by ~7% at 10 evaluations.)
            group = opt.param_groups[0]
            group["max_iter"] = min(20, iterations - run[0])
            group["max_eval"] = group["max_iter"] * 5 // 4
            opt.step(closure)
        else:
            closure()
            opt.step()
    with torch.no_grad():
        img.clamp_(0, 1)
    if counter is not None:
        counter.append(run[0])
    return img.detach()


# ----------------------------------------------------------------------------- fast (pytorch/examples)
class _ConvLayer(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.pad = nn.ReflectionPad2d(k // 2)
        self.conv = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x):
        return self.conv(self.pad(x))


class _Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.n1 = _ConvLayer(c, c, 3, 1), nn.InstanceNorm2d(c, affine=True)
        self.c2, self.n2 = _ConvLayer(c, c, 3, 1), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return x + self.n2(self.c2(F.relu(self.n1(self.c1(x)))))


class _Up(nn.Module):
    def __init__(self, cin, cout, k, up):
        super().__init__()
        self.up = up
        self.conv = _ConvLayer(cin, cout, k, 1)

    def forward(self, x):
        if self.up:
            x = F.interpolate(x, mode="nearest", scale_factor=self.up)
        return self.conv(x)


class ExamplesTransformerNet(nn.Module):
    """pytorch/examples fast_neural_style/transformer_net.py, structurally."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            _ConvLayer(3, 32, 9, 1), nn.InstanceNorm2d(32, affine=True), nn.ReLU(),
            _ConvLayer(32, 64, 3, 2), nn.InstanceNorm2d(64, affine=True), nn.ReLU(),
            _ConvLayer(64, 128, 3, 2), nn.InstanceNorm2d(128, affine=True), nn.ReLU(),
            *[_Res(128) for _ in range(5)],
            _Up(128, 64, 3, 2), nn.InstanceNorm2d(64, affine=True), nn.ReLU(),
            _Up(64, 32, 3, 2), nn.InstanceNorm2d(32, affine=True), nn.ReLU(),
            _ConvLayer(32, 3, 9, 1))

    def forward(self, x):
        return self.body(x)


def examples_train_step_factory(device, batch, size):
    """One pytorch/examples training step (VGG16 relu1_2..relu4_3, mse on Grams)."""
    import torchvision
    vgg = torchvision.models.vgg16(weights=None).features[:23].to(device).eval()
    for p in vgg.parameters():
        p.requires_grad_(False)
    net = ExamplesTransformerNet().to(device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, -1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, -1, 1, 1)
    taps = {3, 8, 15, 22}

    def feats(x):
        x = (x / 255.0 - mean) / std
        out = []
        for i, layer in enumerate(vgg):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out

    def gram(y):
        b, ch, h, w = y.size()
        f = y.view(b, ch, w * h)
        return f.bmm(f.transpose(1, 2)) / (ch * h * w)

    style = torch.rand(1, 3, size, size, device=device) * 255
    gs = [gram(f) for f in feats(style)]
    x = torch.rand(batch, 3, size, size, device=device) * 255

    def step():
        opt.zero_grad()
        y = net(x)
        fy, fx = feats(y), feats(x)
        c = 1e5 * F.mse_loss(fy[1], fx[1])
        s = 0.0
        for f, g in zip(fy, gs):
            s = s + F.mse_loss(gram(f), g.expand(batch, -1, -1))
        loss = c + 1e10 * s
        loss.backward()
        opt.step()
        return loss
    return step


# ----------------------------------------------------------------------------- the bench's entry points
_CNN: Dict[str, nn.Module] = {}


def _cnn(device) -> nn.Module:
    """One tutorial VGG19 per device for the whole bench run: the tutorial builds it once and
    reuses it for every image pair, and so does Resty's stylizer."""
    key = str(device)
    if key not in _CNN:
        _CNN.clear()   # one device at a time: free the previous device's copy
        _CNN[key] = tutorial_vgg19(device)
    return _CNN[key]


def _nchw(a: np.ndarray, device) -> torch.Tensor:
    """H×W×3 (or B×H×W×3) float32 NumPy -> NCHW tensor on ``device``."""
    a = np.asarray(a, np.float32)
    a = a[None] if a.ndim == 3 else a
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(device)


def gatys_adam(content: np.ndarray, style: np.ndarray, device, steps: int) -> Callable[[], object]:
    """One call: the tutorial's model and targets built, then ``steps`` Adam steps (Gatys-depth
    layers), as one ``GatysStylizer.stylize(..., optimizer="adam")`` call does."""
    ct, st = _nchw(content, device), _nchw(style, device)

    def run():
        tutorial_gatys(ct, st, steps, "adam", layers=GATYS_DEPTH_LAYERS, cnn=_cnn(device))
    return run


def gatys_run(content: np.ndarray, style: np.ndarray, device) -> Callable[[int], object]:
    """``run(iters)``: the tutorial's L-BFGS run with exactly ``iters`` evaluations (model and
    targets included); raises when another count was made."""
    ct, st = _nchw(content, device), _nchw(style, device)
    counter: List[int] = []

    def run(iters: int):
        counter.clear()
        tutorial_gatys(ct, st, iters, "lbfgs", layers=GATYS_DEPTH_LAYERS, cnn=_cnn(device), counter=counter)
        if counter[0] != iters:
            raise RuntimeError(f"the tutorial made {counter[0]} evaluations, expected {iters}")
    return run


GATYS_RUN_NOTE = ("tutorial loop: model + targets + LBFGS (torch defaults, 20 iterations per step(); "
                  "the last step shortened so exactly N closures run)")


def fast_infer(images: np.ndarray, device) -> Callable[[], object]:
    """One eager float32 call of the pytorch/examples net on ``images`` (B×H×W×3 in [0, 1]),
    the input already on the device in the examples' 0..255 units."""
    net = ExamplesTransformerNet().to(device).eval()
    x255 = _nchw(images, device) * 255

    def run():
        with torch.inference_mode():
            net(x255)
    return run


def fast_train(device, batch: int, size: int) -> Callable[[], object]:
    """One pytorch/examples training step (random data)."""
    step = examples_train_step_factory(device, batch, size)

    def run():   # no return value: the bench reads a float returned by a call as its work factor
        step()
    return run


def gatys_memory(content: np.ndarray, style: np.ndarray, device, steps: int = 3) -> Callable[[], object]:
    """The tutorial model + targets + ``steps`` Adam steps (the GPU peak-memory workload)."""
    ct, st = _nchw(content, device), _nchw(style, device)
    return lambda: tutorial_gatys(ct, st, steps, "adam", layers=GATYS_DEPTH_LAYERS, cnn=_cnn(device))


def fast_whole_image(image: np.ndarray, device) -> Callable[[], object]:
    """The examples net on a whole host image: copy in, run, copy out (the tiled-inference
    workload's baseline)."""
    net = ExamplesTransformerNet().to(device).eval()

    def run():
        with torch.inference_mode():
            net(_nchw(image, device) * 255).cpu()
    return run


# ----------------------------------------------------------------------------- AdaIN (pytorch-AdaIN)
def pytorch_adain_nets(widths=(256, 128, 64)):
    """pytorch-AdaIN's net.py ``vgg`` (to relu4_1: its test.py cuts ``vgg[:31]``) and
    ``decoder`` as nn.Sequential, layer by layer as published (reflection pads, nearest ×2)."""
    R = lambda: nn.ReflectionPad2d((1, 1, 1, 1))  # noqa: E731
    vgg = [nn.Conv2d(3, 3, (1, 1))]
    cin = 3
    for n, width in ((2, 64), (2, 128), (4, 256), (1, 512)):
        for _ in range(n):
            vgg += [R(), nn.Conv2d(cin, width, (3, 3)), nn.ReLU()]
            cin = width
        if width != 512:
            vgg.append(nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True))
    a, b, c = widths
    decoder = []
    for cin, cout, up in ((512, a, True), (a, a, False), (a, a, False), (a, a, False), (a, b, True),
                          (b, b, False), (b, c, True), (c, c, False), (c, 3, None)):
        decoder += [R(), nn.Conv2d(cin, cout, (3, 3))]
        if up is not None:
            decoder.append(nn.ReLU())
        if up:
            decoder.append(nn.Upsample(scale_factor=2, mode="nearest"))
    return nn.Sequential(*vgg), nn.Sequential(*decoder)


def _calc_mean_std(feat, eps=1e-5):
    """pytorch-AdaIN's function.py ``calc_mean_std`` (unbiased variance + eps)."""
    N, C = feat.size()[:2]
    feat_var = feat.view(N, C, -1).var(dim=2) + eps
    return feat_var.sqrt().view(N, C, 1, 1), feat.view(N, C, -1).mean(dim=2).view(N, C, 1, 1)


def _adaptive_instance_normalization(content_feat, style_feat):
    size = content_feat.size()
    style_std, style_mean = _calc_mean_std(style_feat)
    content_std, content_mean = _calc_mean_std(content_feat)
    normalized = (content_feat - content_mean.expand(size)) / content_std.expand(size)
    return normalized * style_std.expand(size) + style_mean.expand(size)


def adain_infer(content: np.ndarray, style: np.ndarray, device, alpha: float = 1.0) -> Callable[[], object]:
    """One call of pytorch-AdaIN's test.py ``style_transfer`` (encode content and style, AdaIN,
    alpha blend, decode) under ``torch.no_grad``, host image in and host image out, as
    ``AdaINStylizer.stylize`` takes and returns them."""
    vgg, decoder = pytorch_adain_nets()
    vgg, decoder = vgg.to(device).eval(), decoder.to(device).eval()

    def run():
        with torch.no_grad():
            c, s = _nchw(content, device), _nchw(style, device)
            cf, sf = vgg(c), vgg(s)
            feat = _adaptive_instance_normalization(cf, sf)
            feat = feat * alpha + cf * (1 - alpha)
            decoder(feat).clamp(0, 1).cpu().numpy()
    return run
