import math

import torch

from pipeline.metrics import psnr, ssim


def test_psnr_closed_form():
    a = torch.zeros(8, 8, 3)
    b = torch.full((8, 8, 3), 0.1, dtype=torch.float64)  # mse 0.01 -> 20 dB
    assert math.isclose(psnr(a, b), 20.0, rel_tol=1e-9)
    assert psnr(a, a) == math.inf


def test_ssim_identity_and_degradation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(32, 32, 3, generator=g)
    assert math.isclose(ssim(a, a), 1.0, rel_tol=1e-9)
    noisy = (a + 0.2 * torch.randn(32, 32, 3, generator=g)).clamp(0, 1)
    assert ssim(a, noisy) < 0.9
