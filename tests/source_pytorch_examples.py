"""pytorch/examples fast_neural_style (github.com/pytorch/examples, fast_neural_style/neural_style/:
transformer_net.py, vgg.py, utils.py, neural_style.py's ``train`` and ``stylize``), as the example
writes it, for tests/test_preset_sources.py.  Test-only: never imported by resty.

Changes from the example's text, each forced by running it here: ``Vgg16`` takes its features
module (torchvision's ``vgg16(weights=None)`` with seeded random weights instead of ImageNet's)
and the ``TransformerNet`` gets Resty's seeded random initialisation, both copied in by name
(:func:`load_transformer`, :func:`vgg16_features`); everything is float64 on the CPU; the data
come as arrays instead of an ``ImageFolder``: each training image is already ``image_size``
square (``transforms.Resize`` + ``CenterCrop`` are then the identity; Resty takes a random crop
of the same size, also the identity), and the order of the items in each batch is given
(``batches``: the example's ``DataLoader`` reads an ImageFolder in sorted order, Resty's
schedule is a seeded permutation, resty.training_data.BatchSchedule)."""
from __future__ import annotations

from collections import namedtuple
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch.optim import Adam

from resty.models_fast_neural_style import example_key_names
from source_common import torchvision_vgg_features

DTYPE = torch.float64


# --------------------------------------------------------------------------- transformer_net.py
class TransformerNet(torch.nn.Module):
    def __init__(self):
        super(TransformerNet, self).__init__()
        # Initial convolution layers
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = torch.nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = torch.nn.InstanceNorm2d(128, affine=True)
        # Residual layers
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        # Upsampling Layers
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = torch.nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = torch.nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        # Non-linearities
        self.relu = torch.nn.ReLU()

    def forward(self, X):
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res1(y)
        y = self.res2(y)
        y = self.res3(y)
        y = self.res4(y)
        y = self.res5(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        y = self.deconv3(y)
        return y


class ConvLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super(ConvLayer, self).__init__()
        reflection_padding = kernel_size // 2
        self.reflection_pad = torch.nn.ReflectionPad2d(reflection_padding)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        out = self.reflection_pad(x)
        out = self.conv2d(out)
        return out


class ResidualBlock(torch.nn.Module):
    """ResidualBlock
    introduced in: https://arxiv.org/abs/1512.03385
    recommended architecture: http://torch.ch/blog/2016/02/04/resnets.html
    """

    def __init__(self, channels):
        super(ResidualBlock, self).__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        out = out + residual
        return out


class UpsampleConvLayer(torch.nn.Module):
    """UpsampleConvLayer
    Upsamples the input and then does a convolution. This method gives better results
    compared to ConvTranspose2d.
    ref: http://distill.pub/2016/deconv-checkerboard/
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super(UpsampleConvLayer, self).__init__()
        self.upsample = upsample
        reflection_padding = kernel_size // 2
        self.reflection_pad = torch.nn.ReflectionPad2d(reflection_padding)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        x_in = x
        if self.upsample:
            x_in = torch.nn.functional.interpolate(x_in, mode='nearest', scale_factor=self.upsample)
        out = self.reflection_pad(x_in)
        out = self.conv2d(out)
        return out


# --------------------------------------------------------------------------- vgg.py
class Vgg16(torch.nn.Module):
    def __init__(self, vgg_pretrained_features, requires_grad=False):
        super(Vgg16, self).__init__()
        # vgg_pretrained_features = models.vgg16(pretrained=True).features
        self.slice1 = torch.nn.Sequential()
        self.slice2 = torch.nn.Sequential()
        self.slice3 = torch.nn.Sequential()
        self.slice4 = torch.nn.Sequential()
        for x in range(4):
            self.slice1.add_module(str(x), vgg_pretrained_features[x])
        for x in range(4, 9):
            self.slice2.add_module(str(x), vgg_pretrained_features[x])
        for x in range(9, 16):
            self.slice3.add_module(str(x), vgg_pretrained_features[x])
        for x in range(16, 23):
            self.slice4.add_module(str(x), vgg_pretrained_features[x])
        if not requires_grad:
            for param in self.parameters():
                param.requires_grad = False

    def forward(self, X):
        h = self.slice1(X)
        h_relu1_2 = h
        h = self.slice2(h)
        h_relu2_2 = h
        h = self.slice3(h)
        h_relu3_3 = h
        h = self.slice4(h)
        h_relu4_3 = h
        vgg_outputs = namedtuple("VggOutputs", ['relu1_2', 'relu2_2', 'relu3_3', 'relu4_3'])
        out = vgg_outputs(h_relu1_2, h_relu2_2, h_relu3_3, h_relu4_3)
        return out


# --------------------------------------------------------------------------- utils.py
def gram_matrix(y):
    (b, ch, h, w) = y.size()
    features = y.view(b, ch, w * h)
    features_t = features.transpose(1, 2)
    gram = features.bmm(features_t) / (ch * h * w)
    return gram


def normalize_batch(batch):
    # normalize using imagenet mean and std
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(255.0)
    return (batch - mean) / std


# --------------------------------------------------------------------------- neural_style.py
def _to_tensor_mul255(array: np.ndarray) -> torch.Tensor:
    """``transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: x.mul(255))])``
    on an H×W×3 float array in [0, 1] (ToTensor keeps float arrays' values; here float64)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(array, np.float64).transpose(2, 0, 1))).to(DTYPE).mul(255)


def train(transformer: TransformerNet, vgg: Vgg16, images: Sequence[np.ndarray], batches: Sequence[Sequence[int]],
          style_image: np.ndarray, lr: float = 1e-3, content_weight: float = 1e5,
          style_weight: float = 1e10) -> List[float]:
    """``train(args)`` from ``optimizer = Adam(...)`` on, one step per entry of ``batches``
    (item indices), ``args.batch_size = len(batches[0])``.  Returns the total losses."""
    batch_size = len(batches[0])
    optimizer = Adam(transformer.parameters(), lr)
    mse_loss = torch.nn.MSELoss()

    style = _to_tensor_mul255(style_image)
    style = style.repeat(batch_size, 1, 1, 1)

    features_style = vgg(normalize_batch(style))
    gram_style = [gram_matrix(y) for y in features_style]

    totals = []
    transformer.train()
    for idx in batches:
        x = torch.stack([_to_tensor_mul255(images[i]) for i in idx])
        n_batch = len(x)
        optimizer.zero_grad()

        y = transformer(x)

        y = normalize_batch(y)
        x = normalize_batch(x)

        features_y = vgg(y)
        features_x = vgg(x)

        content_loss = content_weight * mse_loss(features_y.relu2_2, features_x.relu2_2)

        style_loss = 0.
        for ft_y, gm_s in zip(features_y, gram_style):
            gm_y = gram_matrix(ft_y)
            style_loss += mse_loss(gm_y, gm_s[:n_batch, :, :])
        style_loss *= style_weight

        total_loss = content_loss + style_loss
        total_loss.backward()
        optimizer.step()
        totals.append(total_loss.item())
    return totals


def stylize(transformer: TransformerNet, content_image: np.ndarray) -> np.ndarray:
    """``stylize(args)`` with the model in memory: ToTensor·255, the net, and ``save_image``'s
    ``clamp(0, 255)``; returned as H×W×3 float64 in [0, 1] (``/255``, not rounded to uint8)."""
    content = _to_tensor_mul255(content_image).unsqueeze(0)
    transformer.eval()
    with torch.no_grad():
        output = transformer(content)
    img = output[0].clone().clamp(0, 255)
    return (img / 255).permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- weights by name
TRANSFORMER_NAMES = example_key_names()  # the importer's table; test_models_fast_neural_style checks it by output


def load_transformer(canonical: Dict[str, np.ndarray]) -> TransformerNet:
    """A float64 ``TransformerNet`` holding Resty's canonical tensors (every one of them)."""
    net = TransformerNet().to(DTYPE)
    state = net.state_dict()
    assert set(state) == set(TRANSFORMER_NAMES.values()) and set(canonical) == set(TRANSFORMER_NAMES)
    net.load_state_dict({TRANSFORMER_NAMES[k]: torch.from_numpy(np.asarray(v, np.float64))
                         for k, v in canonical.items()})
    return net


def transformer_canonical(net: TransformerNet) -> Dict[str, np.ndarray]:
    """The example net's tensors under Resty's canonical names."""
    state = net.state_dict()
    return {ours: state[theirs].detach().numpy().copy() for ours, theirs in TRANSFORMER_NAMES.items()}


def vgg16_features(weights) -> torch.nn.Module:
    """``models.vgg16().features`` (torchvision's ``make_layers(cfgs["D"])``) with a resty WeightSet's canonical conv weights, float64."""
    return torchvision_vgg_features("D", weights, DTYPE)
