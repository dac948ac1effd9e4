import math

import numpy as np
import torch

from pipeline.cameras import (
    Intrinsics,
    camera_directions,
    focal_from_fov,
    orbit_pose,
    pinhole_rays,
    pixel_directions,
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
    dirs = camera_directions(Intrinsics(2.0, 2.0, 2.0, 2.0, 4, 4))
    c = dirs[1:3, 1:3].reshape(-1, 3)
    assert torch.allclose(c.sum(0), torch.tensor([0.0, 0.0, -4.0]))
    # pixel (0, 0) is top-left: x < 0, y > 0 in OpenGL camera frame
    assert dirs[0, 0, 0] < 0 and dirs[0, 0, 1] > 0
    assert torch.allclose(dirs[0, 0], torch.tensor([(0.5 - 2) / 2, -(0.5 - 2) / 2, -1.0]))


def test_pinhole_rays_world_frame():
    c2w = torch.tensor(orbit_pose([0, 0, 0], 4.0, 0.0, 0.0), dtype=torch.float32)  # eye on +x, looking at origin
    dirs = camera_directions(Intrinsics(3.0, 3.0, 1.5, 1.5, 3, 3))
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


def test_intrinsics_non_square_off_centre_closed_form():
    # fx != fy, principal point off centre, 6 wide x 4 high
    k = Intrinsics(fx=2.0, fy=4.0, cx=2.5, cy=1.0, width=6, height=4)
    dirs = camera_directions(k)
    assert dirs.shape == (4, 6, 3)
    # pixel (i=2, j=0): x = (2.5 - 2.5) / 2 = 0, y = -(0.5 - 1) / 4 = 0.125
    assert torch.allclose(dirs[0, 2], torch.tensor([0.0, 0.125, -1.0]))
    # pixel_directions of flat indices through per-pixel intrinsics = the table's rows
    pix = torch.tensor([0, 5, 13, 23])
    got = pixel_directions(pix, torch.tensor([[k.fx, k.fy, k.cx, k.cy]]).expand(4, 4), k.width)
    assert torch.equal(got, dirs.reshape(-1, 3)[pix])


def test_intrinsics_resized_keeps_the_field_of_view():
    k = Intrinsics.from_fov(800, 600, math.pi / 2)
    assert np.allclose((k.fx, k.fy, k.cx, k.cy), (400.0, 400.0, 400.0, 300.0))
    small = k.resized(200, 200)  # anisotropic: the same rays on a square grid
    assert np.allclose((small.fx, small.fy, small.cx, small.cy), (100.0, 400.0 / 3, 100.0, 100.0))
    assert math.isclose(small.camera_angle_x, math.pi / 2)
    # the corner pixel's ray of the resized camera keeps its direction (up to the pixel footprint)
    big, tiny = camera_directions(k), camera_directions(k.resized(8, 6))
    assert torch.allclose(tiny[0, 0], big[0:100, 0:100].mean(dim=(0, 1)), atol=1e-6)


def _scene(root, meta: dict, size=(4, 6)) -> None:
    import json

    import imageio.v3 as iio

    root.mkdir(parents=True, exist_ok=True)
    for fr in meta["frames"]:
        iio.imwrite(root / f"{fr['file_path']}.png", np.zeros((*size, 4), np.uint8))
    for split in ("train", "test"):
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))


def test_scene_loader_gives_per_view_intrinsics(tmp_path):
    from pipeline.scene import load_split

    eye = np.eye(4).tolist()
    # a phone-style capture: per-frame calibration (pixels of a 12 x 8 original), non-square 6 x 4 images
    meta = {"fl_y": 9.0, "w": 12, "h": 8, "frames": [
        {"file_path": "a", "transform_matrix": eye, "fl_x": 10.0, "cx": 6.5, "cy": 4.0},
        {"file_path": "b", "transform_matrix": eye, "fl_x": 11.0, "fl_y": 12.0, "cx": 5.0, "cy": 3.0}]}
    _scene(tmp_path / "phone", meta)
    views = load_split(tmp_path / "phone", "train")
    assert (views.width, views.height) == (6, 4)
    a, b = views.intrinsics
    assert np.allclose((a.fx, a.fy, a.cx, a.cy), (5.0, 4.5, 3.25, 2.0))  # top-level fl_y, halved with the image
    assert np.allclose((b.fx, b.fy, b.cx, b.cy), (5.5, 6.0, 2.5, 1.5))
    assert views.k.shape == (2, 4) and np.allclose(views.k[1].numpy(), (5.5, 6.0, 2.5, 1.5))
    # Blender: one field of view for all, centred; data.downscale halves everything
    _scene(tmp_path / "blender", {"camera_angle_x": math.pi / 2, "frames": [
        {"file_path": "c", "transform_matrix": eye}]}, size=(8, 8))
    (c,) = load_split(tmp_path / "blender", "train", downscale=2).intrinsics
    assert np.allclose((c.fx, c.fy, c.cx, c.cy, c.width, c.height), (2.0, 2.0, 2.0, 2.0, 4, 4))


def test_scene_loader_names_a_bad_intrinsic(tmp_path):
    import pytest

    from pipeline.errors import DataError
    from pipeline.scene import load_split

    eye = np.eye(4).tolist()
    _scene(tmp_path / "s", {"frames": [{"file_path": "a", "transform_matrix": eye, "fl_x": -3}]})
    with pytest.raises(DataError, match=r"'frames\[0\]\.fl_x' must be a positive number of pixels, got -3"):
        load_split(tmp_path / "s", "train")
    _scene(tmp_path / "t", {"frames": [{"file_path": "a", "transform_matrix": eye}]})
    with pytest.raises(DataError, match="'camera_angle_x' must be a number in \\(0, pi\\) radians"):
        load_split(tmp_path / "t", "train")
