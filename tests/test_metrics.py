import math

import numpy as np
import pytest
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


def _ssim_reference(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """SSIM written out from Wang et al. (2004), eq. 13 with the 11x11 Gaussian window (sigma 1.5),
    K1 = 0.01, K2 = 0.03, L = 1: at every position where the window fits ("valid"), weighted means,
    weighted variances sum w (x - mu)^2 and covariance, per channel; the mean over positions and channels.
    a, b: (H, W, C) float64. Loops instead of convolutions, so it shares no code path with ssim()."""
    r = np.arange(window) - window // 2
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    w /= w.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(a.shape[2]):
        for i in range(a.shape[0] - window + 1):
            for j in range(a.shape[1] - window + 1):
                x, y = a[i:i + window, j:j + window, ch], b[i:i + window, j:j + window, ch]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
                cxy = (w * (x - mx) * (y - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_the_formula_written_out():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(16, 18, 3, generator=g, dtype=torch.float64)
    b = (0.7 * a + 0.3 * torch.rand(16, 18, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    expected = _ssim_reference(a.numpy(), b.numpy())
    assert 0.3 < expected < 0.95  # a pair with structure in common, not a trivial value
    assert math.isclose(ssim(a, b), expected, rel_tol=1e-10)
    assert math.isclose(ssim(b, a), expected, rel_tol=1e-10)  # symmetric
    # batched input: the mean over images
    batch = ssim(torch.stack([a, a]), torch.stack([b, a]))
    assert math.isclose(batch, (expected + 1.0) / 2, rel_tol=1e-10)


def test_ssim_of_constant_images_closed_form():
    # Constant images: variances and covariance are 0, so the contrast-structure factor is
    # c2 / c2 = 1 and SSIM = (2ab + c1) / (a^2 + b^2 + c1) = 0.3751 / 0.6251 for a = 0.25, b = 0.75.
    a = torch.full((12, 12, 3), 0.25, dtype=torch.float64)
    b = torch.full((12, 12, 3), 0.75, dtype=torch.float64)
    assert math.isclose(ssim(a, b), 0.3751 / 0.6251, rel_tol=1e-12)


def test_psnr_and_ssim_judge_only_the_masked_pixels():
    torch.manual_seed(0)
    a = torch.rand(32, 40, 3)
    b = a.clone()
    b[:, 30:] = torch.rand(32, 10, 3)  # wrong outside the mask only
    mask = torch.zeros(32, 40, dtype=torch.bool)
    mask[:, :30] = True
    assert psnr(a, b, mask) == math.inf and psnr(a, b) < 20
    assert ssim(a, b, mask=mask) == pytest.approx(1.0) and ssim(a, b) < 0.9
    b[5, 5] += 0.1  # one wrong pixel inside: a finite PSNR over the 960 masked pixels, in closed form
    assert psnr(a, b, mask) == pytest.approx(-10 * math.log10(0.01 / 960), abs=1e-4)
