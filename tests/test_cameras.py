import math

import numpy as np
import torch

from pipeline.cameras import (
    camera_directions,
    focal_from_fov,
    orbit_pose,
    pinhole_rays,
    rays_for_pixels,
    sample_orbit_poses,
    scene_up,
    spherical_coords,
)


def test_focal_from_fov_closed_form():
    # 90 degree FOV: focal = half the width
    assert math.isclose(focal_from_fov(100, math.pi / 2), 50.0)


def test_centre_ray_goes_through_optical_axis():
    # even size: the four centre pixels are symmetric about -z
    dirs = camera_directions(4, 4, focal=2.0)
    c = dirs[1:3, 1:3].reshape(-1, 3)
    assert torch.allclose(c.sum(0), torch.tensor([0.0, 0.0, -4.0]))
    # pixel (0, 0) is top-left: x < 0, y > 0 in OpenGL camera frame
    assert dirs[0, 0, 0] < 0 and dirs[0, 0, 1] > 0
    assert torch.allclose(dirs[0, 0], torch.tensor([(0.5 - 2) / 2, -(0.5 - 2) / 2, -1.0]))


def test_pinhole_rays_world_frame():
    c2w = torch.tensor(orbit_pose([0, 0, 0], 4.0, 0.0, 0.0), dtype=torch.float32)  # eye on +x, looking at origin
    dirs = camera_directions(3, 3, focal=3.0)
    o, d = pinhole_rays(c2w, dirs)
    assert torch.allclose(o[1, 1], torch.tensor([4.0, 0, 0]), atol=1e-6)
    assert torch.allclose(d[1, 1], torch.tensor([-1.0, 0, 0]), atol=1e-6)
    assert torch.allclose(d.norm(dim=-1), torch.ones(3, 3))
    o2, d2 = rays_for_pixels(c2w[None].expand(9, 4, 4), dirs.reshape(-1, 3))
    assert torch.allclose(d2, d.reshape(-1, 3), atol=1e-6) and torch.allclose(o2, o.reshape(-1, 3))


def test_orbit_pose_is_roll_free_and_looks_at_target():
    target = np.array([0.1, -0.2, 0.3])
    c2w = orbit_pose(target, 2.0, 40.0, 25.0, up=(0, 0, 1))
    eye = c2w[:3, 3]
    assert np.isclose(np.linalg.norm(eye - target), 2.0)
    assert np.allclose(-c2w[:3, 2], (target - eye) / 2.0)  # looks down -z at the target
    assert abs(c2w[2, 0]) < 1e-12  # camera x axis is horizontal: no roll
    assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3))
    r, az, el = spherical_coords(c2w[None], target, np.array([0, 0, 1.0]))
    assert np.allclose([r[0], az[0], el[0]], [2.0, 40.0, 25.0])


def test_sampled_poses_stay_in_band():
    rng = np.random.default_rng(0)
    poses = sample_orbit_poses(200, rng, np.zeros(3), np.array([0, 0, 1.0]), (3.0, 4.0), (10.0, 60.0))
    r, _, el = spherical_coords(poses, np.zeros(3), np.array([0, 0, 1.0]))
    assert r.min() >= 3.0 - 1e-9 and r.max() <= 4.0 + 1e-9
    assert el.min() >= 10.0 - 1e-6 and el.max() <= 60.0 + 1e-6
    assert np.allclose(scene_up(poses), [0, 0, 1])
