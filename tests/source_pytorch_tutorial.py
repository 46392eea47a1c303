"""The PyTorch tutorial "Neural Transfer Using PyTorch"
(pytorch.org/tutorials/advanced/neural_style_tutorial.html), as the tutorial writes it, for
tests/test_preset_sources.py.  Test-only: never imported by resty.

Changes from the tutorial's text, each forced by running it here: ``cnn`` is passed in (seeded
random VGG19 weights instead of ImageNet's), everything is float64 on the CPU (the tutorial's
``torch.float``), and ``image_loader`` takes an array instead of a file: its size comes from the
tutorial's own ``transforms.Resize(imsize)``, its pixels from resty.images.resize_to (Resty
decodes and resizes once, in the core; ToTensor would round to float32)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision.transforms as transforms

from resty.images import resize_to
from source_common import torchvision_vgg_features

DTYPE = torch.float64


def image_loader(array: np.ndarray, imsize: int) -> torch.Tensor:
    # loader = transforms.Compose([transforms.Resize(imsize), transforms.ToTensor()])
    h, w = transforms.Resize(imsize)(torch.zeros(1, *array.shape[:2])).shape[-2:]
    image = resize_to(array, (int(h), int(w)))
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(DTYPE)


class ContentLoss(nn.Module):
    def __init__(self, target):
        super(ContentLoss, self).__init__()
        self.target = target.detach()

    def forward(self, input):
        self.loss = F.mse_loss(input, self.target)
        return input


def gram_matrix(input):
    a, b, c, d = input.size()
    features = input.view(a * b, c * d)
    G = torch.mm(features, features.t())
    return G.div(a * b * c * d)


class StyleLoss(nn.Module):
    def __init__(self, target_feature):
        super(StyleLoss, self).__init__()
        self.target = gram_matrix(target_feature).detach()

    def forward(self, input):
        G = gram_matrix(input)
        self.loss = F.mse_loss(G, self.target)
        return input


cnn_normalization_mean = torch.tensor([0.485, 0.456, 0.406], dtype=DTYPE)
cnn_normalization_std = torch.tensor([0.229, 0.224, 0.225], dtype=DTYPE)


class Normalization(nn.Module):
    def __init__(self, mean, std):
        super(Normalization, self).__init__()
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def forward(self, img):
        return (img - self.mean) / self.std


content_layers_default = ['conv_4']
style_layers_default = ['conv_1', 'conv_2', 'conv_3', 'conv_4', 'conv_5']


def get_style_model_and_losses(cnn, normalization_mean, normalization_std, style_img, content_img,
                               content_layers=content_layers_default, style_layers=style_layers_default):
    normalization = Normalization(normalization_mean, normalization_std)
    content_losses = []
    style_losses = []
    model = nn.Sequential(normalization)
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = 'conv_{}'.format(i)
        elif isinstance(layer, nn.ReLU):
            name = 'relu_{}'.format(i)
            layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = 'pool_{}'.format(i)
        elif isinstance(layer, nn.BatchNorm2d):
            name = 'bn_{}'.format(i)
        else:
            raise RuntimeError('Unrecognized layer: {}'.format(layer.__class__.__name__))
        model.add_module(name, layer)
        if name in content_layers:
            target = model(content_img).detach()
            content_loss = ContentLoss(target)
            model.add_module("content_loss_{}".format(i), content_loss)
            content_losses.append(content_loss)
        if name in style_layers:
            target_feature = model(style_img).detach()
            style_loss = StyleLoss(target_feature)
            model.add_module("style_loss_{}".format(i), style_loss)
            style_losses.append(style_loss)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], ContentLoss) or isinstance(model[i], StyleLoss):
            break
    model = model[:(i + 1)]
    return model, style_losses, content_losses


def get_input_optimizer(input_img):
    optimizer = optim.LBFGS([input_img])
    return optimizer


def run_style_transfer(cnn, normalization_mean, normalization_std, content_img, style_img, input_img,
                       num_steps=300, style_weight=1000000, content_weight=1):
    model, style_losses, content_losses = get_style_model_and_losses(
        cnn, normalization_mean, normalization_std, style_img, content_img)
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = get_input_optimizer(input_img)
    run = [0]
    while run[0] <= num_steps:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = 0
            content_score = 0
            for sl in style_losses:
                style_score += sl.loss
            for cl in content_losses:
                content_score += cl.loss
            style_score *= style_weight
            content_score *= content_weight
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            return style_score + content_score
        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    return input_img, run[0]


def vgg19_features(weights) -> nn.Module:
    """``models.vgg19().features`` with a resty WeightSet's canonical conv weights, float64."""
    return torchvision_vgg_features("E", weights, DTYPE)


def tutorial(content: np.ndarray, style: np.ndarray, weights, imsize: int, num_steps: int):
    """The tutorial's main part: load both images, assert they have the same size, content
    init, ``run_style_transfer``.  Returns (H×W×3 float64 image, closure evaluations)."""
    style_img = image_loader(style, imsize)
    content_img = image_loader(content, imsize)
    assert style_img.size() == content_img.size(), "we need to import style and content images of the same size"
    cnn = vgg19_features(weights)
    input_img = content_img.clone()
    output, evals = run_style_transfer(cnn, cnn_normalization_mean, cnn_normalization_std, content_img, style_img,
                                       input_img, num_steps=num_steps)
    return output.detach()[0].permute(1, 2, 0).numpy(), evals
