import math

import numpy as np
import pytest
import torch

from pipeline.cameras import (
    Intrinsics,
    camera_directions,
    distort_points,
    focal_from_fov,
    orbit_pose,
    pinhole_rays,
    pixel_directions,
    rays_for_pixels,
    sample_orbit_poses,
    scene_up,
    spherical_coords,
    undistort_image,
    undistort_points,
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
    assert views.k.shape == (2, 9) and np.allclose(views.k[1].numpy(), (5.5, 6.0, 2.5, 1.5, 0, 0, 0, 0, 0))
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


# lenses of phones as COLMAP calibrates them (k1 k2 k3 p1 p2), barrel and pincushion
PHONE_LENSES = [(-0.1, 0.02, 0.0, 1e-3, -1e-3), (0.1, -0.02, 0.002, -1e-3, 1e-3), (-0.05, -0.01, 0.0, 5e-4, 1e-3),
                (0.04, 0.01, -0.001, -1e-3, -5e-4)]


def _phone(dist=PHONE_LENSES[0], width=160, height=120) -> Intrinsics:
    # a phone's 4:3 main camera: ~70 degrees across, principal point a little off centre
    return Intrinsics(0.8 * width, 0.81 * width, 0.5 * width + 1.3, 0.5 * height - 0.9, width, height, *dist)


def test_undistort_points_inverts_distort_points_over_a_phone_image():
    gen = torch.Generator().manual_seed(0)
    # the image of a 70-degree 4:3 camera (|x| <= 0.63, |y| <= 0.47), a margin beyond it
    xy = (torch.rand(20000, 2, generator=gen) * 2 - 1) * torch.tensor([0.7, 0.55])
    for dist in PHONE_LENSES:
        back = undistort_points(distort_points(xy, dist), dist)
        assert (back - xy).abs().max() < 1e-6, dist
        assert not torch.equal(distort_points(xy, dist), xy)  # the lens does move the points
    # per-point coefficients broadcast like the points
    dists = torch.tensor(PHONE_LENSES)[torch.arange(len(xy)) % len(PHONE_LENSES)]
    assert (undistort_points(distort_points(xy, dists), dists) - xy).abs().max() < 1e-6


def test_distortion_sign_conventions():
    # OpenCV's: a positive k1 pushes points outwards (pincushion), a negative one inwards (barrel)
    p = torch.tensor([[0.5, 0.0], [0.0, -0.4]])
    assert torch.allclose(distort_points(p, (0.1, 0, 0, 0, 0)), p * torch.tensor([[1 + 0.1 * 0.25], [1 + 0.1 * 0.16]]))
    assert (distort_points(p, (-0.1, 0, 0, 0, 0)).norm(dim=-1) < p.norm(dim=-1)).all()
    # tangential: p2 > 0 moves every point right (x_d - x = p2 (r^2 + 2 x^2)), p1 > 0 down (OpenCV's y)
    q = torch.tensor([[0.3, 0.2], [-0.3, -0.2]])
    shift = distort_points(q, (0, 0, 0, 0, 1e-2)) - q
    assert torch.allclose(shift, 1e-2 * torch.tensor([0.13 + 2 * 0.09, 2 * 0.06]).expand(2, 2))
    shift = distort_points(q, (0, 0, 0, 1e-2, 0)) - q  # y_d - y = p1 (r^2 + 2 y^2), x_d - x = 2 p1 x y
    assert torch.allclose(shift, 1e-2 * torch.tensor([2 * 0.06, 0.13 + 2 * 0.04]).expand(2, 2))
    # in the (OpenGL, y up) camera frame: the pixel imaging the ideal point (0.5, 0) of a k1 = 0.1 lens
    # lies at x_d = 0.5 (1 + 0.1 * 0.25) = 0.5125, here pixel (61, 5): fx * 0.5125 = 41 = 61.5 - cx
    cam = Intrinsics(80.0, 80.0, 20.5, 5.5, 64, 12, k1=0.1)
    assert torch.allclose(camera_directions(cam)[5, 61], torch.tensor([0.5, 0.0, -1.0]), atol=1e-6)
    # pincushion: a corner pixel sees a point nearer the axis than a pinhole's, same quadrant (top-left:
    # x < 0, y > 0)
    lens, pin = camera_directions(_phone((0.1, 0, 0, 0, 0))), camera_directions(_phone((0.1, 0, 0, 0, 0)).pinhole())
    assert (lens[0, 0, :2].abs() < pin[0, 0, :2].abs()).all() and lens[0, 0, 0] < 0 < lens[0, 0, 1]
    # p1 > 0 images ideal points lower down, so a pixel of the principal row (right of centre) looks up
    row = camera_directions(Intrinsics(80.0, 80.0, 20.5, 5.5, 64, 12, p1=1e-2))[5]
    assert (row[30:, 1] > 0).all()


def _project(dirs: torch.Tensor, cam: Intrinsics) -> torch.Tensor:
    """(..., 3) OpenGL camera-frame directions -> (..., 2) pixel coordinates through the lens."""
    x, y = dirs[..., 0] / -dirs[..., 2], dirs[..., 1] / dirs[..., 2]  # OpenCV's frame: y down, z forward
    xy = distort_points(torch.stack([x, y], dim=-1), cam.distortion)
    return torch.stack([xy[..., 0] * cam.fx + cam.cx, xy[..., 1] * cam.fy + cam.cy], dim=-1)


def test_a_pixels_direction_reprojects_onto_the_pixel():
    for dist in PHONE_LENSES:
        cam = _phone(dist, 400, 300)
        dirs = camera_directions(cam)
        j, i = torch.meshgrid(torch.arange(300.0), torch.arange(400.0), indexing="ij")
        err = (_project(dirs.double(), cam) - torch.stack([i + 0.5, j + 0.5], dim=-1).double()).abs().max()
        assert err < 1e-3, (dist, err)
        assert not torch.allclose(dirs, camera_directions(cam.pinhole()), atol=1e-3)


def test_pinhole_directions_are_the_pinhole_formula_bit_for_bit():
    # lego's camera (a focal length float32 cannot hold), off-centre: the arithmetic the benchmark ran
    cam = Intrinsics(1111.1110311937682, 1111.1110311937682, 33.3, 17.7, 60, 40)
    j, i = torch.meshgrid(torch.arange(40, dtype=torch.float32), torch.arange(60, dtype=torch.float32), indexing="ij")
    x = (i + 0.5 - cam.cx) / cam.fx
    y = -(j + 0.5 - cam.cy) / cam.fy
    assert torch.equal(camera_directions(cam), torch.stack([x, y, -torch.ones_like(x)], dim=-1))
    pix = torch.arange(60 * 40)
    k9 = torch.tensor([[cam.fx, cam.fy, cam.cx, cam.cy, 0, 0, 0, 0, 0]]).expand(len(pix), 9)
    i, j = (pix % 60).float() + 0.5, torch.div(pix, 60, rounding_mode="floor").float() + 0.5
    today = torch.stack([(i - k9[:, 2]) / k9[:, 0], -(j - k9[:, 3]) / k9[:, 1], -torch.ones(len(pix))], dim=-1)
    assert torch.equal(pixel_directions(pix, k9, 60), today)
    assert torch.equal(pixel_directions(pix, k9[:, :4], 60), today)
    # the lens path with a zero lens reduces to the same numbers (a batch mixing views takes it)
    k9_lens = k9.clone()
    k9_lens[0, 4] = 1e-3
    assert torch.equal(pixel_directions(pix, k9_lens, 60)[1:], today[1:])
    # a pinhole photo is its own undistorted photo
    img = torch.rand(40, 60, 3)
    out, pinhole = undistort_image(img, cam)
    assert out is img and pinhole == cam


def test_pixel_directions_mixes_distorted_and_pinhole_views():
    cams = [_phone(PHONE_LENSES[0], 40, 30), _phone(PHONE_LENSES[1], 40, 30).resized(40, 30),
            Intrinsics(37.3, 35.1, 19.2, 15.6, 40, 30), _phone((0.08, 0, 0, 0, 0), 40, 30)]
    k = torch.tensor([[c.fx, c.fy, c.cx, c.cy, *c.distortion] for c in cams])
    gen = torch.Generator().manual_seed(1)
    view = torch.randint(0, len(cams), (5000,), generator=gen)
    pix = torch.randint(0, 40 * 30, (5000,), generator=gen)
    tables = torch.stack([camera_directions(c).reshape(-1, 3) for c in cams])
    assert torch.equal(pixel_directions(pix, k[view], 40), tables[view, pix])


def _pattern(xy: torch.Tensor) -> torch.Tensor:
    """(..., 2) normalised coordinates -> (..., 3) a smooth colour pattern (a few cycles across the image)."""
    x, y = xy[..., 0], xy[..., 1]
    return 0.5 + 0.4 * torch.stack([torch.sin(9 * x + 1), torch.cos(7 * y - 2 * x), torch.sin(5 * (x + y))], dim=-1)


def test_undistort_image_recovers_a_distorted_pattern():
    from pipeline.metrics import psnr

    for dist in PHONE_LENSES:
        cam = _phone(dist, 160, 120)
        j, i = torch.meshgrid(torch.arange(120.0), torch.arange(160.0), indexing="ij")
        xy = torch.stack([(i + 0.5 - cam.cx) / cam.fx, (j + 0.5 - cam.cy) / cam.fy], dim=-1)
        # the photo: each pixel shows the pattern at the ideal point its lens images there
        photo = _pattern(undistort_points(xy, dist))
        out, pinhole = undistort_image(photo, cam)
        assert pinhole == cam.pinhole() and out.shape == photo.shape
        inner = (slice(8, -8), slice(8, -8))
        truth = _pattern(xy)
        recovered, as_taken = psnr(out[inner], truth[inner]), psnr(photo[inner], truth[inner])
        # 80 dB here; the photo as taken is 35 to 43 dB off the pattern, which a wrong model would leave
        assert recovered > 35 and recovered > as_taken + 20, (dist, recovered, as_taken)


def test_views_k_carries_each_views_lens():
    from pipeline.scene import Views

    cams = [_phone(PHONE_LENSES[0], 4, 3), Intrinsics(3.0, 3.0, 2.0, 1.5, 4, 3)]
    views = Views(torch.zeros(2, 3, 4, 4), torch.eye(4).expand(2, 4, 4), cams, 3, 4, ["a", "b"])
    assert views.k.shape == (2, 9) and views.k.dtype == torch.float32
    assert torch.allclose(views.k[0, 4:], torch.tensor(PHONE_LENSES[0])) and not views.k[1, 4:].any()


def test_student_frame_keeps_the_photos_aspect_and_principal_point():
    from pipeline.cameras import student_frame

    blender = Intrinsics.from_fov(800, 800, 0.6911)
    assert student_frame([blender] * 3, 200, 4) == blender.resized(200, 200)
    # a phone's 20x15 frames with their own principal point, 16 px on the long side in blocks of 4
    phone = Intrinsics(20.0, 21.0, 9.3, 7.1, 20, 15, k1=-0.08, p2=0.001)
    frame = student_frame([phone, phone], 16, 4)
    assert (frame.width, frame.height, frame.is_pinhole) == (16, 12, True)
    assert (frame.fx, frame.fy, frame.cx, frame.cy) == pytest.approx((16.0, 21.0 * 12 / 15, 7.44, 7.1 * 12 / 15))
    portrait = student_frame([Intrinsics(30.0, 30.0, 10.0, 20.0, 20, 40)], 16, 4)
    assert (portrait.width, portrait.height, portrait.cx, portrait.cy) == (8, 16, 4.0, 8.0)
    # 16:9 at 16 px: 9 rows rounded to 8, half a row trimmed off each edge; the pixels stay square
    wide = student_frame([Intrinsics(40.0, 40.0, 16.0, 9.0, 32, 18)], 16, 4)
    assert (wide.width, wide.height, wide.fx, wide.fy, wide.cx, wide.cy) == (16, 8, 20.0, 20.0, 8.0, 4.0)


def test_resample_to_another_pinhole_camera_in_closed_form():
    from pipeline.scene import resample_to

    # a whole factor with aligned pixels: each pixel the mean of its block
    img = torch.rand(12, 16, 3)
    src = Intrinsics(40.0, 40.0, 8.0, 6.0, 16, 12)
    out, covered = resample_to(img, src, src.resized(8, 6))
    assert covered.all() and torch.allclose(out, img.reshape(6, 2, 8, 2, 3).mean(dim=(1, 3)), atol=1e-6)
    # the same focal length, the principal point 3 px to the left: the photo shifted by 3 px
    out, covered = resample_to(img, src, Intrinsics(40.0, 40.0, 5.0, 6.0, 16, 12))
    assert torch.allclose(out[:, :13], img[:, 3:], atol=1e-6)
    assert covered[:, :13].all() and not covered[:, 13:].any()
    # any scale and shift: a linear ramp in the photo's pixel coordinates stays the ramp at the mapped
    # coordinates, x_src = (x + 0.5 - cx) * sx + cx_src (area averaging and bilinear sampling keep it)
    h, w = 40, 60
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    ramp = torch.stack([0.01 * x, 0.02 * y, 0.005 * x + 0.01 * y], -1).double()
    src = Intrinsics(50.0, 52.0, 31.0, 19.0, w, h)
    dst = Intrinsics(20.0, 20.8, 10.0, 8.0, 20, 16)
    out, covered = resample_to(ramp, src, dst)
    u = (torch.arange(20) + 0.5 - 10.0) * 2.5 + 31.0
    v = (torch.arange(16) + 0.5 - 8.0) * 2.5 + 19.0
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    expected = torch.stack([0.01 * uu, 0.02 * vv, 0.005 * uu + 0.01 * vv], -1).double()
    inner = (vv > 2) & (vv < h - 2) & (uu > 2) & (uu < w - 2)
    assert covered.all() and torch.allclose(out[inner], expected[inner], atol=1e-5)


def test_a_forward_facing_turntable_loops_inside_the_region():
    """The report's loop for a forward-facing scene: every pose inside the region's extent at the
    start's depth, turned like the region camera, the ellipse touching the extent's sides."""
    from report.stage import region_loop_poses

    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    region = {"centre": [1.0, 2.0, 3.0], "rotation": rot.tolist(), "extent": [[-0.4, -0.1, -0.2], [0.6, 0.3, 0.2]],
              "start": [0.1, 0.0, 0.05]}
    poses = np.stack(region_loop_poses(region, 8))
    local = (poses[:, :3, 3] - np.array(region["centre"])) @ rot
    lo, hi = np.array(region["extent"])
    assert np.all(local >= lo - 1e-9) and np.all(local <= hi + 1e-9)
    assert np.allclose(local[:, 2], 0.05) and np.allclose(poses[:, :3, :3], rot)
    assert np.isclose(local[:, 0].max(), 0.6) and np.isclose(local[:, 1].max(), 0.3)
