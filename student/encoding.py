"""The positional encoding every student kind uses (NeRF's), in a form the web backends run exactly."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["positional_encoding"]


def positional_encoding(x: Tensor, n_freqs: int) -> Tensor:
    """[x, sin(2^l pi x), cos(2^l pi x)] for l < n_freqs, concatenated on the last axis.

    The argument is reduced to [-pi, pi) before sin/cos: in cycles c = 2^(l-1) x,
    c - floor(c + 1/2) is exact in float32, so GPU shaders whose sin/cos lose
    precision for large arguments see only small ones.
    x: (..., D) -> (..., D * (1 + 2 * n_freqs)).
    """
    out = [x]
    for level in range(n_freqs):
        cycles = x * (2.0 ** (level - 1))
        arg = (cycles - torch.floor(cycles + 0.5)) * (2 * math.pi)
        out += [torch.sin(arg), torch.cos(arg)]
    return torch.cat(out, dim=-1)
