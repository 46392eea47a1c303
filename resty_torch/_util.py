"""Small tensor <-> NumPy helpers shared by the stylizers."""
from __future__ import annotations

import numpy as np
import torch


def to_nchw(img_hwc: np.ndarray, device: torch.device, dtype: torch.dtype, channels_last: bool = False) -> torch.Tensor:
    """H×W×3 (or B×H×W×3) NumPy -> NCHW tensor on ``device``."""
    a = np.asarray(img_hwc)
    if a.ndim == 3:
        a = a[None]
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(device=device, dtype=dtype)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def to_hwc(t: torch.Tensor) -> np.ndarray:
    """NCHW tensor -> B×H×W×3 float32 NumPy."""
    return t.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
