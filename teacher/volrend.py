"""Packed volume compositing ("how to add it up") on CPU and CUDA.

nerfacc 0.5.3 composites packed samples (flattened, with `ray_indices`) only
through its CUDA extension (`pack_info` and the segmented scans). These
functions keep nerfacc's signatures: on CUDA tensors they call nerfacc; on CPU
they run a torch segment scan with the same semantics.

Packed layout, as nerfacc's samplers produce it: sample `i` belongs to ray
`ray_indices[i]`; the samples of one ray are contiguous, ordered by `t`, and the
rays appear in increasing order.
"""

from __future__ import annotations

from collections.abc import Callable

import nerfacc
import torch
from nerfacc.volrend import accumulate_along_rays
from torch import Tensor


def _segment_exclusive_sum(values: Tensor, ray_indices: Tensor) -> Tensor:
    """Exclusive prefix sum within each ray's contiguous run of samples.

    values: (N,); ray_indices: (N,) long, grouped by ray. Returns (N,) float64.
    Differentiable w.r.t. `values`: one global float64 cumsum minus the running
    total where each ray's run starts (float64 keeps the subtraction exact enough
    for ~1e7 samples of O(1) optical depth).
    """
    v = values.double()
    inclusive = torch.cumsum(v, dim=0)
    exclusive = inclusive - v
    n = ray_indices.shape[0]
    is_first = torch.ones(n, dtype=torch.bool, device=values.device)
    is_first[1:] = ray_indices[1:] != ray_indices[:-1]
    pos = torch.arange(n, device=values.device)
    first = torch.cummax(torch.where(is_first, pos, torch.zeros_like(pos)), dim=0).values
    return exclusive - exclusive[first]


def render_transmittance_from_density(
    t_starts: Tensor,
    t_ends: Tensor,
    sigmas: Tensor,
    ray_indices: Tensor,
    n_rays: int,
) -> tuple[Tensor, Tensor]:
    """Transmittance T_i = exp(-sum_{j<i} sigma_j dt_j) and alpha_i = 1 - exp(-sigma_i dt_i).

    Args:
        t_starts, t_ends: (N,) sample interval bounds along the ray (world units).
        sigmas: (N,) post-activation densities (1 / world unit).
        ray_indices: (N,) long, ray of each sample (packed layout, see module doc).
        n_rays: number of rays.
    Returns:
        trans (N,), alphas (N,), both with the dtype of `sigmas`.
    """
    if sigmas.is_cuda:
        return nerfacc.render_transmittance_from_density(
            t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays
        )
    sigmas_dt = sigmas * (t_ends - t_starts)
    alphas = 1.0 - torch.exp(-sigmas_dt)
    if sigmas.shape[0] == 0:
        return torch.ones_like(sigmas), alphas
    trans = torch.exp(-_segment_exclusive_sum(sigmas_dt, ray_indices)).to(sigmas.dtype)
    return trans, alphas


def render_weight_from_density(
    t_starts: Tensor,
    t_ends: Tensor,
    sigmas: Tensor,
    ray_indices: Tensor,
    n_rays: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rendering weights w_i = T_i * alpha_i of packed samples.

    Same contract as `nerfacc.render_weight_from_density(..., ray_indices=, n_rays=)`.

    Args:
        t_starts, t_ends: (N,) sample interval bounds along the ray (world units).
        sigmas: (N,) post-activation densities; the outputs are differentiable
            w.r.t. `sigmas` (and t_starts/t_ends), on both devices.
        ray_indices: (N,) long, ray of each sample (packed layout, see module doc).
        n_rays: number of rays.
    Returns:
        weights (N,), trans (N,), alphas (N,).
    """
    if sigmas.is_cuda:
        return nerfacc.render_weight_from_density(
            t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays
        )
    trans, alphas = render_transmittance_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    return trans * alphas, trans, alphas


@torch.no_grad()
def render_visibility_from_density(
    t_starts: Tensor,
    t_ends: Tensor,
    sigmas: Tensor,
    ray_indices: Tensor,
    n_rays: int,
    early_stop_eps: float = 1e-4,
    alpha_thre: float = 0.0,
) -> Tensor:
    """Which packed samples are visible: T_i >= early_stop_eps and (if alpha_thre > 0) alpha_i >= alpha_thre.

    Same contract as `nerfacc.render_visibility_from_density(..., ray_indices=, n_rays=)`.

    Args:
        t_starts, t_ends: (N,) sample interval bounds along the ray (world units).
        sigmas: (N,) post-activation densities.
        ray_indices: (N,) long, ray of each sample (packed layout, see module doc).
        n_rays: number of rays.
        early_stop_eps: transmittance below which samples are occluded.
        alpha_thre: opacity below which samples are skipped as transparent.
    Returns:
        (N,) bool mask.
    """
    if sigmas.is_cuda:
        return nerfacc.render_visibility_from_density(
            t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays,
            early_stop_eps=early_stop_eps, alpha_thre=alpha_thre,
        )
    trans, alphas = render_transmittance_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    vis = trans >= early_stop_eps
    if alpha_thre > 0:
        vis = vis & (alphas >= alpha_thre)
    return vis


def rendering(
    t_starts: Tensor,
    t_ends: Tensor,
    ray_indices: Tensor,
    n_rays: int,
    rgb_sigma_fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
    render_bkgd: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Composite packed samples into pixels; same contract as packed `nerfacc.rendering`.

    Args:
        t_starts, t_ends: (N,) sample interval bounds along the ray (world units).
        ray_indices: (N,) long, ray of each sample (packed layout, see module doc).
        n_rays: number of rays.
        rgb_sigma_fn: (t_starts (N,), t_ends (N,), ray_indices (N,)) ->
            (rgbs (N, 3), sigmas (N,)), post-activation. Not called when N == 0.
        render_bkgd: (3,) or (n_rays, 3) background colour, composited behind.
    Returns:
        colors (n_rays, 3), opacities (n_rays, 1), depths (n_rays, 1) (expected
        distance of the weights, normalised by opacity), and extras with
        "weights", "alphas", "trans", "sigmas" (N,) and "rgbs" (N, 3).
        Differentiable w.r.t. the outputs of `rgb_sigma_fn`.
    """
    if t_starts.is_cuda:
        return nerfacc.rendering(
            t_starts, t_ends, ray_indices, n_rays, rgb_sigma_fn=rgb_sigma_fn, render_bkgd=render_bkgd
        )
    assert t_starts.shape == t_ends.shape == ray_indices.shape, "t_starts, t_ends, ray_indices must be (N,)"
    if t_starts.shape[0] != 0:
        rgbs, sigmas = rgb_sigma_fn(t_starts, t_ends, ray_indices)
    else:
        rgbs = torch.empty((0, 3), device=t_starts.device)
        sigmas = torch.empty((0,), device=t_starts.device)
    assert rgbs.shape[-1] == 3, f"rgbs must have 3 channels, got {tuple(rgbs.shape)}"
    assert sigmas.shape == t_starts.shape, f"sigmas must have shape (N,), got {tuple(sigmas.shape)}"
    weights, trans, alphas = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)
    extras = {"weights": weights, "alphas": alphas, "trans": trans, "sigmas": sigmas, "rgbs": rgbs}

    colors = accumulate_along_rays(weights, values=rgbs, ray_indices=ray_indices, n_rays=n_rays)
    opacities = accumulate_along_rays(weights, values=None, ray_indices=ray_indices, n_rays=n_rays)
    depths = accumulate_along_rays(
        weights, values=(t_starts + t_ends)[..., None] / 2.0, ray_indices=ray_indices, n_rays=n_rays
    )
    depths = depths / opacities.clamp_min(torch.finfo(rgbs.dtype).eps)
    if render_bkgd is not None:
        colors = colors + render_bkgd * (1.0 - opacities)
    return colors, opacities, depths, extras
