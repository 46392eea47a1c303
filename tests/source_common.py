"""What the tests/source_*.py re-creations share: Resty's canonical VGG weights copied into a
source's own VGG by name, in place of the ImageNet weights the sources load.  Test-only: never
imported by resty."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np


def vgg_conv_tensors(weights) -> List[Tuple[np.ndarray, np.ndarray]]:
    """A resty VGG WeightSet's canonical conv tensors in layer order: (weight OIHW, bias) each."""
    names = [k[:-len(".weight")] for k in weights.tensors if k.endswith(".weight")]
    return [(weights.tensors[name + ".weight"], weights.tensors[name + ".bias"]) for name in names]


def torchvision_vgg_features(cfg: str, weights, dtype):
    """torchvision's ``make_layers(cfgs[cfg])`` (== ``vgg16/vgg19(weights=None).features`` for
    "D"/"E", without the classifier's init) holding ``weights``' conv tensors, in ``dtype``, eval mode."""
    import torch
    from torchvision.models.vgg import cfgs, make_layers
    features = make_layers(cfgs[cfg])
    convs = [m for m in features if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for conv, (weight, bias) in zip(convs, vgg_conv_tensors(weights)):
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(bias))
    return features.to(dtype).eval()
