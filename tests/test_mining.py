"""Hard-example mining (student/mining.py): per-ray errors in forward_rays' layout, and the pool."""

from __future__ import annotations

import torch

from student.mining import HardRayPool, ray_errors
from student.stage import ray_blocks


def test_ray_errors_follow_the_ray_layout():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    view, ray = torch.tensor([0, 2, 1, 2]), torch.tensor([5, 0, 15, 9])  # a 4x4 ray grid, 2x2 blocks
    target = ray_blocks(images, view, ray, grid=(4, 4), sr=2)  # (1, 3, 2, 8): a strip of 4 blocks
    pred = target.clone()
    pred[..., 2:4] += 0.5  # the second ray's block is off by 0.5 everywhere
    err = ray_errors(pred, target, ray_block=2)
    assert torch.allclose(err, torch.tensor([0.0, 0.25, 0.0, 0.0]))


def test_pool_keeps_the_worst_rays_once_each_with_their_latest_error():
    pool = HardRayPool(size=3)
    pool.update(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 2, 1, 2]), torch.tensor([0.1, 0.9, 0.5, 0.3]))
    assert sorted(zip(pool.view.tolist(), pool.ray.tolist(), strict=True)) == [(0, 2), (1, 1), (1, 2)]
    # (0, 2) trained again and now fine: its new error replaces the old one
    pool.update(torch.tensor([0, 2]), torch.tensor([2, 7]), torch.tensor([0.0, 0.8]))
    pairs = dict(zip(zip(pool.view.tolist(), pool.ray.tolist(), strict=True), pool.err.tolist(), strict=True))
    assert set(pairs) == {(2, 7), (1, 1), (1, 2)} and abs(pairs[(2, 7)] - 0.8) < 1e-6
    v, r = pool.draw(50)
    assert set(zip(v.tolist(), r.tolist(), strict=True)) <= set(pairs)
