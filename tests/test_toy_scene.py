import json

import imageio.v3 as iio
import numpy as np

from pipeline.cameras import focal_from_fov, orbit_pose
from pipeline.config import ToySceneConfig
from pipeline.scene import load_split
from pipeline.toy_scene import AMBIENT, BOX_FACE_COLOURS, BOX_MAX, BOX_MIN, LIGHT, SPHERES, cast, write_toy_scene


def test_ray_hits_sphere_centre_front():
    centre, radius, colour, checker = SPHERES[1]  # plain green sphere
    o = centre + np.array([5.0, 0, 0])
    rgb, alpha = cast(o[None], np.array([[-1.0, 0, 0]]))
    normal = np.array([1.0, 0, 0])
    expected = colour * (AMBIENT + (1 - AMBIENT) * max(normal @ LIGHT, 0))
    assert alpha[0] == 1 and np.allclose(rgb[0], expected)


def test_ray_hits_box_top_face_and_misses_outside():
    p = (BOX_MIN + BOX_MAX) / 2
    o = np.array([p[0], p[1], 5.0])
    rgb, alpha = cast(np.stack([o, o + [10, 10, 0]]), np.array([[0, 0, -1.0], [0, 0, -1.0]]))
    expected = BOX_FACE_COLOURS[5] * (AMBIENT + (1 - AMBIENT) * LIGHT[2])
    assert alpha.tolist() == [1.0, 0.0]
    assert np.allclose(rgb[0], expected)


def test_written_scene_matches_analytic_render(tmp_path):
    cfg = ToySceneConfig(size=16, n_train=3, n_val=1, n_test=2)
    write_toy_scene(cfg, tmp_path)
    meta = json.loads((tmp_path / "transforms_test.json").read_text())
    assert len(meta["frames"]) == 2 and np.isclose(meta["camera_angle_x"], cfg.camera_angle_x)
    views = load_split(tmp_path, "test")
    assert views.images.shape == (2, 16, 16, 4)
    # the centre pixel ray, recomputed here from the camera, matches the PNG
    c2w = np.array(meta["frames"][0]["transform_matrix"])
    f = focal_from_fov(16, cfg.camera_angle_x)
    img = iio.imread(tmp_path / "test" / "r_0.png").astype(np.float64) / 255
    for (i, j) in [(8, 8), (3, 12), (0, 0)]:
        d = c2w[:3, :3] @ np.array([(i + 0.5 - 8) / f, -(j + 0.5 - 8) / f, -1.0])
        rgb, alpha = cast(c2w[:3, 3][None], (d / np.linalg.norm(d))[None])
        assert np.allclose(img[j, i, 3], alpha[0], atol=1 / 255)
        assert np.allclose(img[j, i, :3], rgb[0] * alpha[0], atol=0.6 / 255)


def test_test_orbit_is_deterministic(tmp_path):
    cfg = ToySceneConfig(size=8, n_train=2, n_val=1, n_test=2)
    write_toy_scene(cfg, tmp_path / "a")
    write_toy_scene(cfg, tmp_path / "b")
    for split in ("train", "test"):
        assert (tmp_path / "a" / f"transforms_{split}.json").read_text() == \
               (tmp_path / "b" / f"transforms_{split}.json").read_text()
    expected = orbit_pose(np.zeros(3), cfg.radius, 15.0, 30.0, (0, 0, 1))
    got = np.array(json.loads((tmp_path / "a" / "transforms_test.json").read_text())["frames"][0]["transform_matrix"])
    assert np.allclose(got, expected)


def test_environment_closed_form_and_no_transparent_pixel(tmp_path):
    from pipeline.toy_scene import ENV_RADIUS, environment

    # from the centre along +x: longitude 0, latitude 0, a dark checker cell
    rgb = environment(np.zeros((1, 3)), np.array([[1.0, 0.0, 0.0]]))[0]
    hue = np.array([np.cos(0.0), np.cos(-2.1), np.cos(2.1)]) * 0.3 + 0.55
    assert np.allclose(rgb, hue * 0.7 * 0.75)
    # from off-centre, the point met is on the sphere, ahead of the ray
    o, d = np.array([[1.0, -2.0, 0.5]]), np.array([[0.0, 0.6, 0.8]])
    b = float(o[0] @ d[0])
    t = -b + np.sqrt(b * b - (o[0] @ o[0] - ENV_RADIUS ** 2))
    assert t > 0 and np.isclose(np.linalg.norm(o[0] + t * d[0]), ENV_RADIUS)
    for sur in ("360", "forward"):
        cfg = ToySceneConfig(size=16, n_train=3, n_val=1, n_test=2, surroundings=sur)
        write_toy_scene(cfg, tmp_path / sur)
        views = load_split(tmp_path / sur, "train")
        assert bool((views.images[..., 3] == 1).all())  # the surroundings fill every pixel


def test_forward_cameras_face_the_shapes():
    from pipeline.toy_scene import forward_poses

    poses = forward_poses(5, np.random.default_rng(0), 3.2)
    assert np.allclose(-poses[:, :3, 2], [0.0, 1.0, 0.0])  # all look along +y
    assert np.allclose(poses[:, 1, 3], -3.2) and np.abs(poses[:, [0, 2], 3]).max() <= 0.2 * 3.2
    assert np.allclose(poses[:, :3, 1], [0.0, 0.0, 1.0])  # upright
