"""Resty: neural style transfer, one definition, two frameworks.

The core package holds everything both backends must agree on (specs, presets, loss
conventions, weights, images, the NumPy float64 oracle). It never imports a framework:
``resty_torch`` and ``resty_tf`` translate it.
"""
__version__ = "0.1.0"

from . import specs, losses, presets  # noqa: F401  (light, framework-free)

__all__ = ["specs", "losses", "presets", "__version__"]
