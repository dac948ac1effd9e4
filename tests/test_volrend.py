"""Packed CPU compositing vs nerfacc's batched (pure torch) formulation and closed forms."""

from __future__ import annotations

import math

import nerfacc
import pytest
import torch

from teacher.volrend import (
    render_transmittance_from_density,
    render_visibility_from_density,
    render_weight_from_density,
    rendering,
)


def _packed_and_padded(seed: int = 0):
    """Random packed samples (with empty rays) and the same samples padded to (n_rays, max_samples).

    Padding has zero-length intervals and zero density, so it contributes nothing.
    """
    g = torch.Generator().manual_seed(seed)
    n_rays = 9
    counts = torch.randint(0, 12, (n_rays,), generator=g)
    counts[3] = 0
    counts[-1] = 0
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    n = ray_indices.numel()
    dts = torch.rand(n, generator=g) * 0.2 + 0.01
    t_starts = torch.empty(n)
    t_ends = torch.empty(n)
    start = 0
    for r, c in enumerate(counts.tolist()):
        edges = 1.0 + r * 0.1 + torch.cat([torch.zeros(1), dts[start:start + c].cumsum(0)])
        t_starts[start:start + c] = edges[:-1]
        t_ends[start:start + c] = edges[1:]
        start += c
    sigmas = torch.rand(n, generator=g) * 8.0
    rgbs = torch.rand(n, 3, generator=g)

    width = int(counts.max())
    slot = torch.arange(n) - (counts.cumsum(0) - counts)[ray_indices]
    pad = dict(
        t_starts=torch.zeros(n_rays, width), t_ends=torch.zeros(n_rays, width),
        sigmas=torch.zeros(n_rays, width), rgbs=torch.zeros(n_rays, width, 3),
    )
    pad["t_starts"][ray_indices, slot] = t_starts
    pad["t_ends"][ray_indices, slot] = t_ends
    packed = dict(t_starts=t_starts, t_ends=t_ends, sigmas=sigmas, rgbs=rgbs, ray_indices=ray_indices)
    return packed, (ray_indices, slot), pad, n_rays


def _to_padded(x, where, n_rays, width):
    ri, slot = where
    out = torch.zeros((n_rays, width) + x.shape[1:], dtype=x.dtype)
    return out.index_put((ri, slot), x)


def test_weights_match_nerfacc_batched_values_and_grads():
    packed, where, pad, n_rays = _packed_and_padded()
    width = pad["t_starts"].shape[1]
    sig = packed["sigmas"].clone().requires_grad_(True)
    w, trans, alphas = render_weight_from_density(
        packed["t_starts"], packed["t_ends"], sig, packed["ray_indices"], n_rays
    )

    sig_b = packed["sigmas"].clone().requires_grad_(True)
    w_b, trans_b, alphas_b = nerfacc.render_weight_from_density(
        pad["t_starts"], pad["t_ends"], _to_padded(sig_b, where, n_rays, width)
    )
    ri, slot = where
    torch.testing.assert_close(w, w_b[ri, slot], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(trans, trans_b[ri, slot], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(alphas, alphas_b[ri, slot])

    g = torch.Generator().manual_seed(1)
    cot = torch.randn(w.shape, generator=g)
    (gw,) = torch.autograd.grad((w * cot).sum() + trans.sum(), sig)
    (gw_b,) = torch.autograd.grad((w_b[ri, slot] * cot).sum() + trans_b[ri, slot].sum(), sig_b)
    torch.testing.assert_close(gw, gw_b, rtol=1e-5, atol=1e-6)


def test_weights_gradcheck_float64():
    packed, _, _, n_rays = _packed_and_padded(seed=2)
    ts, te, ri = packed["t_starts"].double(), packed["t_ends"].double(), packed["ray_indices"]
    sig = packed["sigmas"].double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: render_weight_from_density(ts, te, s, ri, n_rays)[0], (sig,))


def test_rendering_matches_nerfacc_batched_values_and_grads():
    packed, where, pad, n_rays = _packed_and_padded(seed=3)
    width = pad["t_starts"].shape[1]
    bkgd = torch.tensor([0.2, 0.5, 1.0])

    sig = packed["sigmas"].clone().requires_grad_(True)
    rgb = packed["rgbs"].clone().requires_grad_(True)
    out = rendering(
        packed["t_starts"], packed["t_ends"], packed["ray_indices"], n_rays,
        rgb_sigma_fn=lambda ts, te, ri: (rgb, sig), render_bkgd=bkgd,
    )
    sig_b = packed["sigmas"].clone().requires_grad_(True)
    rgb_b = packed["rgbs"].clone().requires_grad_(True)
    out_b = nerfacc.rendering(
        pad["t_starts"], pad["t_ends"],
        rgb_sigma_fn=lambda ts, te, ri: (
            _to_padded(rgb_b, where, n_rays, width), _to_padded(sig_b, where, n_rays, width)
        ),
        render_bkgd=bkgd,
    )
    for a, b in zip(out[:3], out_b[:3], strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # Empty rays show the background and have zero opacity / depth.
    torch.testing.assert_close(out[0][3], bkgd)
    assert float(out[1][3].detach()) == 0.0 and float(out[2][3].detach()) == 0.0
    assert set(out[3]) == {"weights", "alphas", "trans", "sigmas", "rgbs"}

    g = torch.Generator().manual_seed(4)
    cots = [torch.randn(x.shape, generator=g) for x in out[:3]]
    grads = torch.autograd.grad(sum((x * c).sum() for x, c in zip(out[:3], cots, strict=True)), (sig, rgb))
    grads_b = torch.autograd.grad(sum((x * c).sum() for x, c in zip(out_b[:3], cots, strict=True)), (sig_b, rgb_b))
    for a, b in zip(grads, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_constant_slab_closed_form():
    """sigma over length L: opacity 1 - exp(-sigma L), T(t) = exp(-sigma (t - t0)), depth of the exponential."""
    sigma, t0, length, n = 1.7, 2.0, 1.5, 3000
    edges = torch.linspace(t0, t0 + length, n + 1, dtype=torch.float64)
    ts, te = edges[:-1], edges[1:]
    ri = torch.zeros(n, dtype=torch.long)
    colour = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    sigmas = torch.full((n,), sigma, dtype=torch.float64)
    rgb, opacity, depth, extras = rendering(
        ts, te, ri, 1, rgb_sigma_fn=lambda a, b, c: (colour.expand(n, 3), sigmas)
    )
    expected_opacity = 1 - math.exp(-sigma * length)
    assert float(opacity) == pytest.approx(expected_opacity, rel=1e-12)
    torch.testing.assert_close(extras["trans"], torch.exp(-sigma * (ts - t0)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rgb[0], colour * expected_opacity, rtol=1e-12, atol=1e-12)
    # E[t | hit] for an exponential truncated at L, midpoint-rule error O(dt^2).
    expected_depth = t0 + 1 / sigma - length * math.exp(-sigma * length) / expected_opacity
    assert float(depth) == pytest.approx(expected_depth, abs=1e-6)

    # float32, as in training: same numbers to float32 precision.
    trans32, alphas32 = render_transmittance_from_density(ts.float(), te.float(), sigmas.float(), ri, 1)
    torch.testing.assert_close(trans32.double(), torch.exp(-sigma * (ts - t0)), rtol=1e-5, atol=1e-6)


def test_visibility_matches_nerfacc_docstring_example():
    t_starts = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    t_ends = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    sigmas = torch.tensor([0.4, 0.8, 0.1, 0.8, 0.1, 0.0, 0.9])
    ray_indices = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    vis = render_visibility_from_density(t_starts, t_ends, sigmas, ray_indices, 3, early_stop_eps=0.3, alpha_thre=0.2)
    assert vis.tolist() == [True, True, False, True, False, False, True]
    trans, alphas = render_transmittance_from_density(t_starts, t_ends, sigmas, ray_indices, 3)
    torch.testing.assert_close(trans, torch.tensor([1.0, 0.6703, 0.3012, 1.0, 0.4493, 1.0, 1.0]), atol=1e-4, rtol=0)


def test_empty_inputs():
    z = torch.empty(0)
    ri = torch.empty(0, dtype=torch.long)
    w, t, a = render_weight_from_density(z, z, z, ri, 4)
    assert w.shape == t.shape == a.shape == (0,)
    rgb, opacity, depth, _ = rendering(z, z, ri, 4, rgb_sigma_fn=None, render_bkgd=torch.ones(3))
    assert rgb.shape == (4, 3) and opacity.shape == depth.shape == (4, 1)
    torch.testing.assert_close(rgb, torch.ones(4, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nerfacc kernels)")
def test_cpu_matches_nerfacc_cuda():
    packed, _, _, n_rays = _packed_and_padded(seed=5)
    args_cpu = [packed[k] for k in ("t_starts", "t_ends")]
    ri = packed["ray_indices"]
    sig = packed["sigmas"].clone().requires_grad_(True)
    sig_c = packed["sigmas"].cuda().requires_grad_(True)
    w, trans, alphas = render_weight_from_density(*args_cpu, sig, ri, n_rays)
    w_c, trans_c, alphas_c = render_weight_from_density(*[a.cuda() for a in args_cpu], sig_c, ri.cuda(), n_rays)
    for a, b in zip((w, trans, alphas), (w_c, trans_c, alphas_c), strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(w.sum(), sig)
    (g_c,) = torch.autograd.grad(w_c.sum(), sig_c)
    torch.testing.assert_close(g, g_c.cpu(), rtol=1e-4, atol=1e-5)

    rgb = packed["rgbs"]
    out = rendering(*args_cpu, ri, n_rays, rgb_sigma_fn=lambda *_: (rgb, packed["sigmas"]))
    out_c = rendering(
        *[a.cuda() for a in args_cpu], ri.cuda(), n_rays,
        rgb_sigma_fn=lambda *_: (rgb.cuda(), packed["sigmas"].cuda()),
    )
    for a, b in zip(out[:3], out_c[:3], strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-5, atol=1e-6)
    vis = render_visibility_from_density(*args_cpu, packed["sigmas"], ri, n_rays, early_stop_eps=0.1, alpha_thre=0.3)
    vis_c = render_visibility_from_density(
        *[a.cuda() for a in args_cpu], packed["sigmas"].cuda(), ri.cuda(), n_rays, early_stop_eps=0.1, alpha_thre=0.3
    )
    assert torch.equal(vis, vis_c.cpu())
