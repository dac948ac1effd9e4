"""The teacher's space (teacher/space.py) and what decides it (pipeline/placement.py: scene_type),
checked against closed forms."""

from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.cameras import orbit_pose
from pipeline.placement import scene_type
from pipeline.toy_scene import forward_poses
from teacher.space import (
    DEFAULT_LEVELS,
    MAX_LEVELS,
    NDCFrame,
    Space,
    contract_to_unisphere,
    levels_for_reach,
    space_for,
)

AABB = torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5])


def test_contraction_closed_form():
    # inside the inscribed ball: x / 1.5 / 4 + 1/2 (the box's half-width is 1.5)
    x = torch.tensor([[0.0, 0.0, 0.0], [0.75, -0.3, 0.6], [1.5, 0.0, 0.0]])
    torch.testing.assert_close(contract_to_unisphere(x, AABB), x / 1.5 / 4 + 0.5)
    # outside: normalised radius m -> 2 - 1/m along the same direction
    for m in (1.5, 2.0, 8.0, 1e6):
        d = torch.tensor([0.6, -0.8, 0.0])
        got = contract_to_unisphere((m * 1.5 * d)[None], AABB)[0]
        torch.testing.assert_close(got, (2 - 1 / m) * d / 4 + 0.5)
    # continuous at the ball's surface, monotone outward, inside [0, 1]^3 for any point
    r = torch.linspace(0.5, 100.0, 2000)[:, None] * torch.tensor([[0.48, 0.6, 0.64]])
    u = contract_to_unisphere(r, AABB)
    dist = (u - 0.5).norm(dim=-1)
    assert bool((dist[1:] > dist[:-1]).all()) and float(dist.max()) < 0.5
    a, b = contract_to_unisphere(torch.tensor([[1.5 - 1e-4, 0, 0], [1.5 + 1e-4, 0, 0]]), AABB)
    assert float((a - b).abs().max()) < 1e-4


def test_levels_for_reach():
    assert levels_for_reach(None, 1.5)[0] == DEFAULT_LEVELS
    assert levels_for_reach(1.0, 1.5)[0] == 2  # at least two levels for any scene with surroundings
    assert levels_for_reach(6.0, 1.5)[0] == 3  # 1.5 * 2^2 = 6 holds it
    assert levels_for_reach(6.1, 1.5)[0] == 4
    assert levels_for_reach(1e9, 1.5)[0] == MAX_LEVELS
    assert space_for("object", list(AABB.tolist()), 0.004, 100.0)[0] == Space()
    space = space_for("360", list(AABB.tolist()), 0.004, 20.0)[0]
    assert space == Space(contract=True, levels=5, cone_angle=0.004)
    assert Space.from_json(space.to_json()) == space and Space.from_json(None) == Space()


def test_scene_type_from_the_cameras():
    orbit = np.stack([orbit_pose(np.zeros(3), 4.0, az, 20.0, np.array([0.0, 0.0, 1.0])) for az in range(0, 360, 30)])
    assert scene_type(orbit, masked=False)[0] == "360"
    assert scene_type(orbit, masked=True)[0] == "object"
    assert scene_type(orbit[:2], masked=False)[0] == "forward"  # 30 degrees apart: 15 from their mean
    assert scene_type(forward_poses(10, np.random.default_rng(0), 3.2), masked=False)[0] == "forward"
    # a quarter of an orbit: cameras 45 degrees each side of their mean is still forward; wider is 360
    arc = np.stack([orbit_pose(np.zeros(3), 4.0, az, 0.0, np.array([0.0, 0.0, 1.0])) for az in (-44.0, 0.0, 44.0)])
    assert scene_type(arc, masked=False)[0] == "forward"
    arc = np.stack([orbit_pose(np.zeros(3), 4.0, az, 0.0, np.array([0.0, 0.0, 1.0])) for az in (-50.0, 0.0, 50.0)])
    assert scene_type(arc, masked=False)[0] == "360"
    assert math.isclose(float(np.linalg.det(forward_poses(3, None, 3.2)[0, :3, :3])), 1.0)


def test_forward_pseudo_views_stay_in_the_photos_region():
    from distill.poses import _rotation_power, forward_distribution, mean_rotation, sample_forward_poses

    rng = np.random.default_rng(1)
    train = forward_poses(12, rng, 3.2)
    # turn each a little about random axes, so the orientations differ
    for k in range(len(train)):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        a = np.radians(rng.uniform(0, 8))
        train[k, :3, :3] = (np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx) @ train[k, :3, :3]
    dist = forward_distribution(train)
    rot = np.array(dist["rotation"])
    assert np.allclose(rot @ rot.T, np.eye(3)) and np.isclose(np.linalg.det(rot), 1.0)
    assert 0 < dist["turn_deg"] <= 8.0 + 1e-6
    poses = sample_forward_poses(200, 0, train, dist)
    local = (poses[:, :3, 3] - np.array(dist["centre"])) @ rot
    lo, hi = np.array(dist["extent"][0]), np.array(dist["extent"][1])
    assert bool(((local >= lo - 1e-9) & (local <= hi + 1e-9)).all())
    turn = np.degrees(np.arccos(np.clip((np.trace(rot.T @ poses[:, :3, :3], axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert float(turn.max()) <= dist["turn_deg"] + 1e-6  # never turned further than a photo is
    assert np.allclose(poses[:, :3, :3] @ poses[:, :3, :3].transpose(0, 2, 1), np.eye(3), atol=1e-9)
    # closed forms: the mean of one rotation is itself; r^0 = I, r^1 = r, r^(1/2) r^(1/2) = r
    r = train[3, :3, :3]
    assert np.allclose(mean_rotation(r[None]), r)
    assert np.allclose(_rotation_power(r, 0.0), np.eye(3)) and np.allclose(_rotation_power(r, 1.0), r)
    assert np.allclose(_rotation_power(r, 0.5) @ _rotation_power(r, 0.5), r)


def _toy_teacher(tmp_path, monkeypatch, capsys, surroundings: str):
    """The tiny toy scene with `surroundings` through the data and teacher stages, 12 steps ->
    (the teacher stage's stdout, model.pt, the loaded field and estimator)."""
    import yaml
    from conftest import main_inproc
    from test_pipeline_e2e import TINY

    from pipeline.config import load_config
    from teacher.model import load_teacher

    cfg = yaml.safe_load(TINY)
    cfg["data"]["toy"]["surroundings"] = surroundings
    cfg["teacher"].update(steps=12, checkpoint_every=6)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "t.yaml").write_text(yaml.safe_dump(cfg))
    for stage in ("data", "teacher"):
        proc = main_inproc(tmp_path, monkeypatch, capsys, "stage", stage, "configs/t.yaml")
        assert proc.returncode == 0, proc.stderr
    model = tmp_path / "runs" / cfg["name"] / "teacher" / "model.pt"
    field, estimator, _ = load_teacher(model, load_config(tmp_path / "configs" / "t.yaml").teacher,
                                       torch.device("cpu"))
    return proc.stdout, model, field, estimator


def test_teacher_learns_surroundings_in_contracted_space(tmp_path, monkeypatch, capsys):
    """A toy scene inside its environment: the data stage says 360, the teacher trains in contracted
    space (4 levels, steps growing with distance), saves that space, and load_teacher brings it back
    (distill renders with it)."""
    stdout, model, field, estimator = _toy_teacher(tmp_path, monkeypatch, capsys, "360")
    assert "space: 360: contracted space, 4 levels" in stdout
    assert torch.load(model, weights_only=False)["space"] == {"contract": True, "levels": 4, "cone_angle": 0.004}
    assert field.space == Space(contract=True, levels=4, cone_angle=0.004) and estimator.levels == 4
    # far outside the box the contracted field still answers (a bounded one is 0 there)
    with torch.no_grad():
        assert float(field.query_density(torch.tensor([[30.0, 0.0, 0.0]]))[0]) > 0


def _ndc_frame(near: float = 1.0) -> NDCFrame:
    # a reference camera at (0, -4, 0) looking along +y, up +z (OpenGL: x right, y up, z back)
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -4], [0, 1, 0, 0]])
    return NDCFrame(tuple(c2w.reshape(-1).tolist()), 2.0, 1.5, near, (-1, -1, -1, 1, 1, 1), 3.0)


def test_ndc_points_closed_form():
    from teacher.space import ndc_points
    f = _ndc_frame(near=1.0)
    # on the axis: the plane (depth 1) -> z = -1, depth 2 -> 0, far away -> 1; x, y 0
    x = torch.tensor([[0.0, -3.0, 0.0], [0.0, -2.0, 0.0], [0.0, 1e6, 0.0]])
    torch.testing.assert_close(ndc_points(x, f), torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
                               atol=1e-5, rtol=0)
    # a point at depth 2, 1 to the right and 1 up: x = sx 1/2, y = sy 1/2
    torch.testing.assert_close(ndc_points(torch.tensor([[1.0, -2.0, 1.0]]), f), torch.tensor([[1.0, 0.75, 0.0]]))


def test_ndc_rays_follow_the_world_ray():
    """The ndc ray o' + s d' passes through the ndc of every world point of the ray beyond the
    plane, in order, starting on the plane (ndc z -1) and reaching infinity (z 1) at s = span."""
    from teacher.space import ndc_points, ndc_rays
    f = _ndc_frame(near=0.8)
    gen = torch.Generator().manual_seed(0)
    o = torch.tensor([0.0, -4.0, 0.0]) + 0.5 * torch.randn(64, 3, generator=gen)
    d = torch.tensor([0.0, 1.0, 0.0]) + 0.3 * torch.randn(64, 3, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True)
    o, d = o.double(), d.double()
    o_n, d_n = ndc_rays(o, d, f)
    torch.testing.assert_close(o_n[:, 2], torch.full((64,), -1.0, dtype=torch.float64))
    torch.testing.assert_close((o_n + f.span * d_n)[:, 2], torch.ones(64, dtype=torch.float64))
    for t in (3.0, 5.0, 40.0):
        p = ndc_points(o + t * d, f)
        # on the ndc ray: p - o' parallel to d', at a parameter in (0, span)
        s = ((p - o_n) * d_n).sum(-1) / (d_n * d_n).sum(-1)
        torch.testing.assert_close(o_n + s[:, None] * d_n, p, atol=1e-9, rtol=0)
        beyond = (o + t * d)[:, 1] > -4.0 + f.near  # beyond the plane (the camera looks along +y)
        assert bool(((s > 0) & (s < f.span))[beyond].all()) and int(beyond.sum()) > 48


def test_ndc_density_in_world_units_keeps_the_optical_depth():
    """A field of constant density c per unit of the ndc rays' parameter: along the reference
    axis, from the plane to infinity, the world density it gives integrates to c span, the optical
    depth of the whole ndc ray; nearer than the plane it is 0."""
    from teacher.occupancy import world_density
    from teacher.space import Space

    f = _ndc_frame(near=0.8)

    class Constant:
        space = Space(ndc=f)

        def query_density(self, u):
            return torch.full(u.shape[:-1], 2.5, dtype=u.dtype)

    # depth s from the camera at (0, -4, 0) along +y; substitute depth = near / (1 - v), v in [0, 1)
    v = (torch.arange(200000, dtype=torch.float64) + 0.5) / 200000
    depth = f.near / (1 - v)
    x = torch.stack([torch.zeros_like(depth), -4.0 + depth, torch.zeros_like(depth)], -1)
    sigma = world_density(Constant(), x)
    optical = float((sigma * f.near / (1 - v) ** 2).mean())  # integral of sigma d(depth) over v
    assert abs(optical - 2.5 * f.span) < 1e-6
    nearer = torch.tensor([[0.0, -4.0 + 0.5 * f.near, 0.0]], dtype=torch.float64)
    assert float(world_density(Constant(), nearer)[0]) == 0.0


def test_forward_teacher_trains_in_ndc(tmp_path, monkeypatch, capsys):
    """The forward-facing toy: the teacher trains in the ndc of its cameras' mean pose (their mean
    centre and axis; the plane at 3/4 of the box's nearest depth; a box that every training ray
    falls in), saves that space, load_teacher brings it back, and its rays render the photos' views."""
    from teacher.render import MarchSettings, render_rays

    stdout, _, field, estimator = _toy_teacher(tmp_path, monkeypatch, capsys, "forward")
    assert "space: forward: ndc of the cameras' mean pose" in stdout
    f = field.space.ndc
    assert f is not None and not field.space.contract and estimator.levels == 1
    # the toy's forward cameras all look along +y from y = -3.2; the box [-1.2, 1.2]^3's nearest
    # face is 2 in front of them
    rot = torch.tensor(f.c2w).reshape(3, 4)[:, :3]
    torch.testing.assert_close(rot[:, 2], torch.tensor([0.0, -1.0, 0.0]))
    assert math.isclose(f.near, 0.75 * 2.0, rel_tol=1e-5) and math.isclose(f.span, 2.4, rel_tol=1e-6)
    torch.testing.assert_close(field.aabb, torch.tensor(f.box, dtype=torch.float32))
    # a ray from a training camera through the box renders within the ndc box's samples
    o, d = torch.tensor([[0.3, -3.2, 0.1]]), torch.tensor([[0.0, 1.0, 0.0]])
    rgb, opacity, _, n = render_rays(field, estimator, o, d, torch.ones(3), MarchSettings(render_step_size=0.05))
    assert n > 0 and bool(torch.isfinite(rgb).all())


def test_ndc_frame_needs_the_box_in_front_of_the_cameras():
    """ndc_frame: the plane at 3/4 of the box's nearest corner's depth from the mean pose, and the
    ndc box holds the given rays from the plane to infinity; cameras whose box reaches behind them
    (inside the scene) get a ValueError, on which the teacher stage falls back to contraction."""
    import pytest

    from teacher.space import ndc_frame, ndc_rays

    poses = torch.as_tensor(forward_poses(5, np.random.default_rng(1), 3.2), dtype=torch.float32)
    o = poses[:, :3, 3].repeat_interleave(4, 0)
    d = torch.tensor([[0.3, 1.0, 0.2], [-0.3, 1.0, 0.2], [0.3, 1.0, -0.2], [-0.3, 1.0, -0.2]]).repeat(5, 1)
    d = d / d.norm(dim=-1, keepdim=True)
    aabb = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    frame, _ = ndc_frame(poses, 50.0, 50.0, 64, 64, aabb, (o, d))
    depth = 3.2 - 1.0  # every camera at y = -3.2 looks along +y; the box's near face is at y = -1
    assert math.isclose(frame.near, 0.75 * depth, rel_tol=1e-5)
    o_n, d_n = ndc_rays(o, d, frame)
    ends = torch.cat([o_n, o_n + frame.span * d_n])
    lo, hi = torch.tensor(frame.box[:3]), torch.tensor(frame.box[3:])
    assert bool(((ends >= lo - 1e-5) & (ends <= hi + 1e-5)).all())
    with pytest.raises(ValueError, match="behind the cameras"):
        ndc_frame(poses, 50.0, 50.0, 64, 64, [-4.0, -4.0, -4.0, 4.0, 4.0, 4.0], (o, d))
