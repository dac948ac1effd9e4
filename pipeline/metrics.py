"""Image quality metrics on (..., H, W, 3) tensors in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB for peak 1.0 (inf for identical images); with `mask`
    ((..., H, W) bool), over the pixels it marks only."""
    err = (a.double() - b.double()) ** 2
    mse = (err[mask].mean() if mask is not None and not bool(mask.all()) else err.mean()).item()
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5, mask: Tensor | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004), Gaussian window, per channel.

    a, b: (H, W, 3) or (N, H, W, 3) in [0, 1]. mask: optional (H, W) or (N, H, W) bool, the pixels
    to judge: the mean is then over the windows that lie wholly inside it.
    """
    if a.dim() == 3:
        a, b = a[None], b[None]
        mask = None if mask is None else mask[None]
    x = a.permute(0, 3, 1, 2).double()
    y = b.permute(0, 3, 1, 2).double()
    c = x.shape[1]
    g = torch.exp(-((torch.arange(window, dtype=torch.float64) - window // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, k, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    if mask is None or bool(mask.all()):
        return s.mean().item()
    # a window counts when every pixel under it is in the mask
    inside = F.conv2d(mask[:, None].double(), torch.ones(1, 1, window, window, dtype=torch.float64)) > window**2 - 0.5
    return s[inside.expand_as(s)].mean().item()
