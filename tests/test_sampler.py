"""CPU occupancy-grid sampler vs a brute-force per-ray replay of nerfacc's CUDA kernel.

Every test runs twice on CPU: with the marching in C (the default) and with the
torch version (the fallback without a C compiler).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nerfacc import OccGridEstimator

from teacher import sampler
from teacher.sampler import occ_grid_sampling
from teacher.volrend import render_visibility_from_density

AABB = [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]


@pytest.fixture(autouse=True, params=["native", "torch"])
def marcher(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setattr(sampler, "_occgrid_lib", lambda: None)
    else:
        assert sampler._occgrid_lib() is not None, "C marcher did not build; see the RuntimeWarning"
    return request.param


def _estimator(res: int = 32, p_occ: float = 0.15, seed: int = 0) -> OccGridEstimator:
    """A grid whose occupied cells are random, denser towards the centre."""
    g = torch.Generator().manual_seed(seed)
    est = OccGridEstimator(roi_aabb=AABB, resolution=res, levels=1)
    idx = (torch.arange(res) + 0.5) / res * 2 - 1
    r = torch.stack(torch.meshgrid(idx, idx, idx, indexing="ij"), -1).norm(dim=-1)
    prob = p_occ * 3 * (r < 0.8)
    est.binaries.copy_((torch.rand(res, res, res, generator=g) < prob)[None])
    est.occs.copy_(torch.rand(est.occs.shape, generator=g) * 0.02)
    return est


def _rays(n: int, seed: int = 0, inside: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from a sphere of radius 4 towards random points in the box; the first `inside` start inside it."""
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g)
    o = o / o.norm(dim=-1, keepdim=True) * 4.0
    o[:inside] = torch.rand(inside, 3, generator=g) * 2 - 1
    target = torch.rand(n, 3, generator=g) * 2.4 - 1.2
    d = target - o
    d = d / d.norm(dim=-1, keepdim=True)
    d[-1] = torch.tensor([0.0, 0.0, -1.0])  # an axis-aligned ray (zero components)
    o[-1] = torch.tensor([0.1, -0.2, 4.0])
    return o, d


def _reference(est, rays_o, rays_d, near, far, step):
    """Brute force: replay the kernel's float32 running sum step by step for every ray.

    Emits [t_k, t_{k+1}] iff max(entry, near) <= mid_k < min(exit, far) and the cell
    trunc(clamp(g0 + gd * mid_k, 0, res - 1)) is occupied, where g0 and gd are the
    ray's origin and direction in grid units.
    """
    f32 = np.float32
    binaries = est.binaries[0].numpy()
    res = np.array(binaries.shape)
    scale = res.astype(np.float32) / (est.aabbs[0, 3:] - est.aabbs[0, :3]).numpy()
    amin = est.aabbs[0, :3].numpy()
    amax = est.aabbs[0, 3:].numpy()
    o_all, d_all = rays_o.numpy(), rays_d.numpy()
    dt = f32(step)
    half = f32(dt * f32(0.5))
    out = []
    with np.errstate(divide="ignore"):
        for r in range(o_all.shape[0]):
            o, d = o_all[r], d_all[r]
            inv = f32(1.0) / d
            t1, t2 = (amin - o) * inv, (amax - o) * inv
            t_in, t_out = np.minimum(t1, t2).max(), np.maximum(t1, t2).min()
            if not (t_in <= t_out and t_out > 0):
                continue
            lo, hi = max(t_in, f32(near[r])), min(t_out, f32(far[r]))
            if lo >= hi:
                continue
            t = f32(near[r])
            while True:
                mid = f32(t + half)
                if mid >= hi:
                    break
                t_next = f32(t + dt)
                if mid >= lo:
                    g = (o - amin) * scale + (d * scale) * mid
                    idx = np.clip(g, 0, (res - 1).astype(np.float32)).astype(np.int64)
                    if binaries[idx[0], idx[1], idx[2]]:
                        out.append((r, t, t_next))
                t = t_next
    if not out:
        return torch.empty(0, dtype=torch.long), torch.empty(0), torch.empty(0)
    ri, ts, te = zip(*out, strict=True)
    return torch.tensor(ri), torch.tensor(np.array(ts)), torch.tensor(np.array(te))


def _assert_same(got, want):
    ri, ts, te = got
    ri_ref, ts_ref, te_ref = want
    assert ri.dtype == torch.long and ts.dtype == torch.float32 and te.dtype == torch.float32
    assert ri.shape == ts.shape == te.shape
    assert torch.equal(ri, ri_ref), f"{ri.numel()} vs {ri_ref.numel()} samples"
    torch.testing.assert_close(ts, ts_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(te, te_ref, rtol=0, atol=1e-5)


# 2^-7 + 2^-22 is (2^14 + 1/2) ulps of [4, 8): the running sum's rounding ties
# there (round-half-even alternates before it settles).
@pytest.mark.parametrize(
    ("near_plane", "step"), [(0.0, 3 * 3**0.5 / 256), (2.7, 3 * 3**0.5 / 256), (0.0, 2**-7 + 2**-22)]
)
def test_matches_bruteforce(near_plane, step):
    est = _estimator()
    rays_o, rays_d = _rays(48, seed=1, inside=6)
    got = occ_grid_sampling(est, rays_o, rays_d, near_plane=near_plane, render_step_size=step)
    n = rays_o.shape[0]
    want = _reference(est, rays_o, rays_d, [near_plane] * n, [1e10] * n, step)
    assert want[0].numel() > 200
    _assert_same(got, want)
    # Bit-exact, not just close: the float32 running sum is reproduced.
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    # Sorted by ray, then t.
    key = got[0].double() * 1e3 + got[1].double()
    assert bool((key[1:] > key[:-1]).all())


def test_per_ray_range_and_small_chunks():
    est = _estimator(res=24, seed=3)
    rays_o, rays_d = _rays(40, seed=2, inside=4)
    g = torch.Generator().manual_seed(5)
    t_min = torch.rand(40, generator=g) * 3.0
    t_max = t_min + torch.rand(40, generator=g) * 4.0
    step = 0.013
    got = occ_grid_sampling(
        est, rays_o, rays_d, near_plane=0.5, far_plane=6.0, t_min=t_min, t_max=t_max,
        render_step_size=step, max_samples_per_chunk=50,
    )
    near = torch.clamp(torch.full((40,), 0.5), min=t_min)
    far = torch.clamp(torch.full((40,), 6.0), max=t_max)
    _assert_same(got, _reference(est, rays_o, rays_d, near, far, step))


def test_stratified_matches_bruteforce_with_same_jitter():
    est = _estimator(seed=4)
    rays_o, rays_d = _rays(32, seed=3)
    step = 0.02
    torch.manual_seed(123)
    got = occ_grid_sampling(est, rays_o, rays_d, near_plane=1.0, render_step_size=step, stratified=True)
    torch.manual_seed(123)
    near = torch.full((32,), 1.0)
    near += torch.rand_like(near) * step  # as OccGridEstimator.sampling jitters
    _assert_same(got, _reference(est, rays_o, rays_d, near, [1e10] * 32, step))


def test_empty_grid_and_missing_rays():
    est = _estimator()
    est.binaries.zero_()
    rays_o, rays_d = _rays(8)
    ri, ts, te = occ_grid_sampling(est, rays_o, rays_d, render_step_size=0.01)
    assert ri.numel() == ts.numel() == te.numel() == 0
    est = _estimator()
    rays_o = torch.full((4, 3), 5.0)
    rays_d = torch.tensor([[1.0, 0.0, 0.0]]).expand(4, 3)  # pointing away from the box
    assert occ_grid_sampling(est, rays_o, rays_d, render_step_size=0.01)[0].numel() == 0


def _estimator_levels(levels: int = 3, res: int = 16, p_occ: float = 0.2, seed: int = 0) -> OccGridEstimator:
    """Nested levels (an unbounded scene's grid), each with random occupied cells."""
    g = torch.Generator().manual_seed(seed)
    est = OccGridEstimator(roi_aabb=AABB, resolution=res, levels=levels)
    est.binaries.copy_(torch.rand(est.binaries.shape, generator=g) < p_occ)
    return est


def _reference_levels(est, rays_o, rays_d, near, far, step, cone):
    """Brute force, one ray and one step at a time, in float32: t_0 = near, dt = clamp(t cone,
    step, 1e10), t_{k+1} = t + dt; [t_k, t_{k+1}] is a sample iff its midpoint is in the
    largest box and in [near, far) and the finest level holding it has its cell occupied."""
    f32 = np.float32
    binaries = est.binaries.numpy()
    res = np.array(binaries.shape[1:])
    boxes = est.aabbs.numpy().astype(np.float32)
    scale = res.astype(np.float32) / (boxes[:, 3:] - boxes[:, :3])
    out = []
    with np.errstate(divide="ignore"):
        for r in range(rays_o.shape[0]):
            o, d = rays_o[r].numpy(), rays_d[r].numpy()
            inv = f32(1.0) / d
            t1, t2 = (boxes[-1, :3] - o) * inv, (boxes[-1, 3:] - o) * inv
            t_in, t_out = np.minimum(t1, t2).max(), np.maximum(t1, t2).min()
            if not (t_in <= t_out and t_out > 0):
                continue
            lo, hi = max(t_in, f32(near)), min(t_out, f32(far))
            t = f32(near)
            while True:
                dt = min(max(f32(t * f32(cone)), f32(step)), f32(1e10))
                mid = f32(t + f32(dt * f32(0.5)))
                if not mid < hi:
                    break
                t_next = f32(t + dt)
                if mid >= lo:
                    for level in range(len(boxes)):
                        g = (d * scale[level]) * mid + (o - boxes[level, :3]) * scale[level]
                        if (g >= 0).all() and (g < res).all():
                            i, j, k = np.minimum(g.astype(np.int64), res - 1)
                            if binaries[level, i, j, k]:
                                out.append((r, t, t_next))
                            break
                t = t_next
    ri, ts, te = zip(*out, strict=True)
    return torch.tensor(ri), torch.tensor(np.array(ts)), torch.tensor(np.array(te))


@pytest.mark.parametrize(("levels", "cone"), [(3, 0.004), (3, 0.0), (1, 0.02)])
def test_levels_and_cone_match_bruteforce(marcher, levels, cone):
    est = _estimator_levels(levels)
    rays_o, rays_d = _rays(40, seed=3, inside=8)
    rays_o = rays_o * 2.0  # from outside the second level: every level is crossed
    kwargs = dict(near_plane=0.05, render_step_size=0.02, cone_angle=cone)
    if marcher == "torch":  # no C compiler: a clear error instead of a slow march
        with pytest.raises(RuntimeError, match="C marcher"):
            occ_grid_sampling(est, rays_o, rays_d, **kwargs)
        return
    got = occ_grid_sampling(est, rays_o, rays_d, **kwargs)
    want = _reference_levels(est, rays_o, rays_d, 0.05, 1e10, 0.02, cone)
    assert want[0].numel() > 100
    _assert_same(got, want)
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    steps = got[2] - got[1]
    if cone > 0:  # steps grow with distance where t cone passes the base step
        assert float(steps.max()) > 0.02 * 1.5 and float(steps.min()) >= 0.02 - 1e-7
    else:
        torch.testing.assert_close(steps, torch.full_like(steps, 0.02), rtol=0, atol=1e-5)


def test_negative_cone_angle():
    rays_o, rays_d = _rays(4)
    with pytest.raises(ValueError, match="cone_angle"):
        occ_grid_sampling(_estimator(res=8), rays_o, rays_d, cone_angle=-1.0)


def _reference_visibility(ri, ts, te, sigmas, eps, alpha_thre):
    """Per ray loop over samples: T_i = exp(-sum_{j<i} sigma_j dt_j)."""
    keep = torch.zeros(ri.numel(), dtype=torch.bool)
    optical_depth, prev = 0.0, -1
    for i in range(ri.numel()):
        if int(ri[i]) != prev:
            optical_depth, prev = 0.0, int(ri[i])
        tau = float(sigmas[i]) * float(te[i] - ts[i])
        alpha = 1.0 - np.exp(-tau)
        keep[i] = bool(np.exp(-optical_depth) >= eps and (alpha_thre <= 0 or alpha >= alpha_thre))
        optical_depth += tau
    return keep


@pytest.mark.parametrize("alpha_thre", [0.0, 0.05])
def test_sigma_fn_filter_matches_bruteforce(alpha_thre):
    est = _estimator(seed=6)
    rays_o, rays_d = _rays(48, seed=7)
    step = 3 * 3**0.5 / 256

    def sigma_fn(t_starts, t_ends, ray_indices):
        x = rays_o[ray_indices] + rays_d[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
        return 40.0 * torch.exp(-4 * (x**2).sum(-1)) + 0.2 * (x[:, 0] > 0)

    ri, ts, te = occ_grid_sampling(est, rays_o, rays_d, render_step_size=step)
    sigmas = sigma_fn(ts, te, ri)
    thre = min(alpha_thre, est.occs.mean().item())
    assert alpha_thre == 0 or 0 < thre < alpha_thre  # the grid's mean occupancy caps it
    keep = _reference_visibility(ri, ts, te, sigmas, 1e-2, thre)
    assert 0 < int(keep.sum()) < keep.numel()
    if alpha_thre > 0:  # the alpha threshold drops samples the transmittance test keeps
        assert int(keep.sum()) < int(_reference_visibility(ri, ts, te, sigmas, 1e-2, 0.0).sum())
    got = occ_grid_sampling(
        est, rays_o, rays_d, sigma_fn=sigma_fn, render_step_size=step,
        early_stop_eps=1e-2, alpha_thre=alpha_thre,
    )
    _assert_same(got, (ri[keep], ts[keep], te[keep]))
    vis = render_visibility_from_density(ts, te, sigmas, ri, rays_o.shape[0], early_stop_eps=1e-2, alpha_thre=thre)
    assert torch.equal(vis, keep)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nerfacc kernels)")
@pytest.mark.parametrize("stratified", [False, True])
def test_cpu_matches_nerfacc_cuda(stratified):
    est = _estimator(res=64, seed=8)
    rays_o, rays_d = _rays(512, seed=9, inside=16)
    step = 3 * 3**0.5 / 512

    def sigma_fn_on(device):
        def sigma_fn(t_starts, t_ends, ray_indices):
            x = rays_o.to(device)[ray_indices] + rays_d.to(device)[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
            return 30.0 * torch.exp(-4 * (x**2).sum(-1))
        return sigma_fn

    kwargs = dict(render_step_size=step, near_plane=0.3, early_stop_eps=1e-3, alpha_thre=1e-3)
    if stratified:
        # Same jitter on both devices: pass the jittered near planes as t_min.
        g = torch.Generator().manual_seed(0)
        kwargs["t_min"] = 0.3 + torch.rand(512, generator=g) * step
    cpu = occ_grid_sampling(est, rays_o, rays_d, sigma_fn=sigma_fn_on("cpu"), **kwargs)
    est_cuda = est.to("cuda")
    if stratified:
        kwargs["t_min"] = kwargs["t_min"].cuda()
    gpu = occ_grid_sampling(est_cuda, rays_o.cuda(), rays_d.cuda(), sigma_fn=sigma_fn_on("cuda"), **kwargs)
    gpu = tuple(x.cpu() for x in gpu)
    # The kernel picks cells by a DDA walk, we by floor(): a midpoint within float32
    # rounding of a cell face between an occupied and an empty cell may differ.
    key_cpu = set(zip(cpu[0].tolist(), cpu[1].tolist(), strict=True))
    key_gpu = set(zip(gpu[0].tolist(), gpu[1].tolist(), strict=True))
    assert len(key_cpu ^ key_gpu) <= 1e-3 * len(key_gpu)
    if key_cpu == key_gpu:
        _assert_same(cpu, gpu)
        assert torch.equal(cpu[1], gpu[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nerfacc kernels)")
def test_levels_and_cone_match_nerfacc_cuda(marcher):
    if marcher == "torch":
        pytest.skip("several levels march in C only")
    est = _estimator_levels(levels=4, res=32, seed=10)
    rays_o, rays_d = _rays(512, seed=11, inside=64)
    kwargs = dict(render_step_size=0.01, near_plane=0.05, cone_angle=0.004)
    cpu = occ_grid_sampling(est, rays_o, rays_d, **kwargs)
    gpu = occ_grid_sampling(est.to("cuda"), rays_o.cuda(), rays_d.cuda(), **kwargs)
    gpu = tuple(x.cpu() for x in gpu)
    # the kernel walks cells by DDA between the levels' box crossings, we test each midpoint: a
    # midpoint within float32 rounding of a cell or box face may differ
    key_cpu = set(zip(cpu[0].tolist(), cpu[1].tolist(), strict=True))
    key_gpu = set(zip(gpu[0].tolist(), gpu[1].tolist(), strict=True))
    assert len(key_gpu) > 1000 and len(key_cpu ^ key_gpu) <= 1e-3 * len(key_gpu)


def test_empty_grid_is_refilled_for_training():
    from teacher.stage import refill_empty_grid

    est = _estimator()
    est.binaries.zero_()
    rays_o, rays_d = _rays(16)
    assert occ_grid_sampling(est, rays_o, rays_d, render_step_size=0.05)[0].numel() == 0
    assert refill_empty_grid(est)
    assert bool(est.binaries.all())
    assert occ_grid_sampling(est, rays_o, rays_d, render_step_size=0.05)[0].numel() > 0
    assert not refill_empty_grid(est)  # an occupied grid is left alone
