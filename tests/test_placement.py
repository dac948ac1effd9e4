"""Placing a capture in the teacher's box (pipeline/placement.py), against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.cameras import Intrinsics, orbit_pose
from pipeline.placement import axes_centre, identity, place, rotation_to_z

BOX = [-1.5, -1.0, -2.0, 1.5, 3.0, 2.0]  # off-centre, not a cube: half-width 1.5 (x), centre (0, 1, 0)
HALF, BOX_CENTRE = 1.5, np.array([0.0, 1.0, 0.0])


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _ring(target, up, distance: float, elevation: float, n: int = 12) -> np.ndarray:
    """n cameras at one elevation, evenly spaced in azimuth, looking at `target`: their mean up is `up`."""
    return np.stack([orbit_pose(target, distance, 360.0 * k / n, elevation, up) for k in range(n)])


def test_axes_centre_is_the_point_every_axis_passes():
    rng = np.random.default_rng(0)
    p = np.array([0.3, -1.2, 2.0])
    origins = p + rng.normal(size=(7, 3)) * 3
    assert np.allclose(axes_centre(origins, p - origins, prior=np.zeros(3)), p, atol=1e-12)


def test_axes_centre_of_parallel_axes_keeps_the_prior_along_them():
    # forward-facing: every axis along -z through (x_k, y_k): the closest point is their mean in x, y;
    # along z the axes say nothing and the prior's z stays
    origins = np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 3.0], [1.0, 3.0, 0.0]])
    got = axes_centre(origins, np.tile([0.0, 0.0, -1.0], (3, 1)), prior=np.array([5.0, 5.0, -7.0]))
    assert np.allclose(got, [1.0, 1.0, -7.0], atol=1e-12)


@pytest.mark.parametrize("up", [[0, 0, 1], [0, 0, -1], [1, 0, 0], [0.3, -0.5, 0.8]])
def test_rotation_to_z_turns_up_to_z(up):
    u = _unit(up)
    r = rotation_to_z(u)
    assert np.allclose(r @ u, [0, 0, 1], atol=1e-12)
    assert np.allclose(r.T @ r, np.eye(3), atol=1e-12) and math.isclose(np.linalg.det(r), 1.0)
    if up == [0, 0, 1]:
        assert np.allclose(r, np.eye(3))


def test_orbit_is_placed_by_its_target_up_and_field_of_view():
    target, up, d = np.array([2.0, -1.0, 0.5]), _unit([0.2, 0.1, 1.0]), 4.0
    c2w = _ring(target, up, d, 20.0)
    camera = Intrinsics(50.0, 50.0, 20.0, 15.0, 40, 30)  # narrower vertically: atan(15 / 50)
    p = place(c2w, [camera] * len(c2w), BOX)
    radius = d * math.sin(math.atan(15 / 50))
    assert np.allclose(p.centre, target, atol=1e-12) and np.allclose(p.up, up, atol=1e-12)
    assert p.radius_from == "cameras" and math.isclose(p.radius, radius, rel_tol=1e-12)
    assert math.isclose(p.scale, HALF / radius, rel_tol=1e-12)
    assert np.allclose(p.apply_points(target), BOX_CENTRE, atol=1e-12)
    assert np.allclose(p.rotation @ up, [0, 0, 1], atol=1e-12)
    placed = p.apply_c2w(c2w)
    assert np.allclose(np.linalg.norm(placed[:, :3, 3] - BOX_CENTRE, axis=-1), d * p.scale)
    assert np.allclose(placed[:, :3, :3].transpose(0, 2, 1) @ placed[:, :3, :3], np.eye(3), atol=1e-12)
    # elevation is kept: every camera sits 20 degrees above the box centre's horizontal plane
    assert np.allclose(placed[:, 2, 3] - BOX_CENTRE[2], d * p.scale * math.sin(math.radians(20.0)))


def test_sparse_points_and_bounds_give_the_radius():
    target, up, d, rho = np.zeros(3), np.array([0.0, 0.0, 1.0]), 5.0, 1.25
    c2w = _ring(target, up, d, 30.0)
    cameras = [Intrinsics(30.0, 30.0, 16.0, 16.0, 32, 32)] * len(c2w)
    sphere = _unit_rows(np.random.default_rng(1).normal(size=(500, 3))) * rho  # every point at rho
    p = place(c2w, cameras, BOX, points=sphere)
    assert p.radius_from == "points" and math.isclose(p.radius, rho, rel_tol=1e-12)
    # LLFF's near and far bracket the scene along each axis: both ends at rho from the centre
    p = place(c2w, cameras, BOX, bounds=np.tile([d - rho, d + rho], (len(c2w), 1)))
    assert p.radius_from == "bounds" and math.isclose(p.radius, rho, rel_tol=1e-12)
    # points beyond the cameras (a room's walls) do not shrink the object below the cameras' ring
    p = place(c2w, cameras, BOX, points=sphere * 10)
    assert math.isclose(p.radius, d, rel_tol=1e-12)


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_forward_facing_cameras_centre_at_their_depth():
    # cameras on a plane all looking down -z: the bounds' mid-depth fixes the centre along z
    c2w = np.tile(np.eye(4), (5, 1, 1))
    c2w[:, :3, 3] = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]]
    bounds = np.tile([2.0, 6.0], (5, 1))
    p = place(c2w, [Intrinsics(10.0, 10.0, 5.0, 5.0, 10, 10)] * 5, BOX, bounds=bounds)
    assert np.allclose(p.centre, [0, 0, -4.0], atol=1e-12)
    assert np.isfinite(p.matrix).all()


def test_placement_is_the_same_for_the_scene_moved_turned_or_scaled():
    rng = np.random.default_rng(3)
    target, up = np.array([0.5, 0.2, -0.3]), _unit([0.1, -0.2, 1.0])
    c2w = np.stack([orbit_pose(target, rng.uniform(3, 4), rng.uniform(-180, 180), rng.uniform(5, 60), up)
                    for _ in range(15)])
    cameras = [Intrinsics(40.0, 42.0, 19.0, 21.0, 40, 40)] * 15
    points = target + rng.normal(size=(200, 3)) * 0.5
    base = place(c2w, cameras, BOX, points=points)
    # a similarity S of the whole capture: its placement P' is P S^-1 up to a turn about the box's z
    angle, s, shift = 0.7, 2.5, np.array([3.0, -1.0, 4.0])
    rot = rotation_to_z(_unit([0.4, 0.3, 0.5])).T @ np.array([[math.cos(angle), -math.sin(angle), 0],
                                                              [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    sim = np.eye(4)
    sim[:3, :3], sim[:3, 3] = s * rot, shift
    moved = c2w.copy()
    moved[:, :3, :3] = rot @ c2w[:, :3, :3]
    moved[:, :3, 3] = c2w[:, :3, 3] @ (s * rot).T + shift
    other = place(moved, cameras, BOX, points=points @ (s * rot).T + shift)
    turn = other.matrix @ sim @ np.linalg.inv(base.matrix)  # must fix the box centre and +z
    assert np.allclose(turn[:3, :3].T @ turn[:3, :3], np.eye(3), atol=1e-9)
    assert np.allclose(turn[:3, :3] @ [0, 0, 1], [0, 0, 1], atol=1e-9)
    assert np.allclose(turn[:3, :3] @ BOX_CENTRE + turn[:3, 3], BOX_CENTRE, atol=1e-9)
    # without a turn (a shift and a scale only) the placed cameras are the same
    moved = c2w.copy()
    moved[:, :3, 3] = c2w[:, :3, 3] * s + shift
    again = place(moved, cameras, BOX, points=points * s + shift)
    assert np.allclose(again.apply_c2w(moved), base.apply_c2w(c2w), atol=1e-9)


def test_identity_leaves_poses_alone():
    c2w = _ring(np.zeros(3), np.array([0, 0, 1.0]), 3.0, 10.0, n=3)
    assert np.array_equal(identity().apply_c2w(c2w), c2w)
