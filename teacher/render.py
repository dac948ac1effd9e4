"""Rendering rays through the teacher: occupancy-grid sampling + packed compositing.

One code path for both devices: `occ_grid_sampling` and `rendering` call
nerfacc's CUDA kernels on CUDA tensors and our torch equivalents on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nerfacc import OccGridEstimator
from torch import Tensor

from .sampler import occ_grid_sampling
from .space import Space, ndc_rays
from .volrend import rendering


@dataclass(frozen=True)
class MarchSettings:
    """How rays march; the step grows with distance as the field's space says (its cone angle)."""

    render_step_size: float
    near_plane: float = 0.0
    alpha_thre: float = 0.0
    early_stop_eps: float = 1e-4


def render_march(cfg, space: Space) -> MarchSettings:
    """How distill and the report render a trained teacher of `cfg` (a Config) in `space`: the
    teacher's steps, skipping faint samples (distill.alpha_thre) and occluded ones. nerfacc skips a
    sample below min(alpha_thre, the grid's mean occupancy): in a box or contracted space most
    cells are empty and the bound stays low, but a forward-facing scene fills its ndc box, the
    full threshold applied, and the toy forward scene's views lost 2.7 dB to it (docs/DESIGN.md):
    an ndc teacher renders every sample, as it trained."""
    alpha = 0.0 if space.ndc is not None else cfg.distill.alpha_thre
    return MarchSettings(render_step_size=cfg.teacher.render_step_size, alpha_thre=alpha,
                         early_stop_eps=cfg.distill.early_stop_eps)


def render_rays(
    field: torch.nn.Module,
    estimator: OccGridEstimator,
    rays_o: Tensor,
    rays_d: Tensor,
    background: Tensor,
    march: MarchSettings,
    stratified: bool = False,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Volume-render rays through `field`.

    Args:
        rays_o, rays_d: (n_rays, 3) origins and unit directions, world frame.
        background: (3,) or (n_rays, 3) colour behind the scene.
    Returns:
        rgb (n_rays, 3), opacity (n_rays, 1), depth (n_rays, 1: along the rays; an ndc teacher's
        along its ndc rays, in their parameter), number of samples.
    """

    view_d = rays_d  # the colour's view direction stays the world's
    if field.space.ndc is not None:  # positions (and the march) in the reference camera's ndc
        rays_o, rays_d = ndc_rays(rays_o, rays_d, field.space.ndc)

    def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        t = (t_starts + t_ends)[:, None] / 2.0
        x = rays_o[ray_indices] + t * rays_d[ray_indices]
        return field.query_density(x).float()

    def rgb_sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> tuple[Tensor, Tensor]:
        t = (t_starts + t_ends)[:, None] / 2.0
        x = rays_o[ray_indices] + t * rays_d[ray_indices]
        rgb, sigma = field(x, view_d[ray_indices])
        return rgb.float(), sigma.float()

    ray_indices, t_starts, t_ends = occ_grid_sampling(
        estimator, rays_o, rays_d,
        sigma_fn=sigma_fn,
        near_plane=march.near_plane,
        render_step_size=march.render_step_size,
        alpha_thre=march.alpha_thre,
        early_stop_eps=march.early_stop_eps,
        stratified=stratified,
        cone_angle=field.space.cone_angle,
    )
    rgb, opacity, depth, _ = rendering(
        t_starts, t_ends, ray_indices, n_rays=rays_o.shape[0], rgb_sigma_fn=rgb_sigma_fn, render_bkgd=background,
    )
    return rgb, opacity, depth, int(t_starts.shape[0])


@torch.no_grad()
def render_image(
    field: torch.nn.Module,
    estimator: OccGridEstimator,
    rays_o: Tensor,
    rays_d: Tensor,
    background: Tensor,
    march: MarchSettings,
    chunk: int = 8192,
) -> tuple[Tensor, int]:
    """Render an image's rays (H, W, 3) in chunks -> (rgb (H, W, 3), total samples)."""
    shape = rays_o.shape[:-1]
    o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    out, n = [], 0
    for i in range(0, o.shape[0], chunk):
        rgb, _, _, ns = render_rays(field, estimator, o[i:i + chunk], d[i:i + chunk], background, march)
        out.append(rgb)
        n += ns
    return torch.cat(out).reshape(*shape, 3).clamp(0, 1), n
