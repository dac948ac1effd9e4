"""The teacher's space (teacher/space.py) and what decides it (pipeline/placement.py: scene_type),
checked against closed forms."""

from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.cameras import orbit_pose
from pipeline.placement import scene_type
from pipeline.toy_scene import forward_poses
from teacher.space import DEFAULT_LEVELS, MAX_LEVELS, Space, contract_to_unisphere, levels_for_reach, space_for

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


def test_teacher_learns_surroundings_in_contracted_space(tmp_path, monkeypatch, capsys):
    """A toy scene inside its environment: the data stage says 360, the teacher trains in contracted
    space (4 levels, steps growing with distance), saves that space, and load_teacher brings it back
    (distill renders with it)."""
    import yaml
    from conftest import main_inproc
    from test_pipeline_e2e import TINY

    from pipeline.config import load_config
    from teacher.model import load_teacher

    cfg = yaml.safe_load(TINY)
    cfg["data"]["toy"]["surroundings"] = "360"
    cfg["teacher"].update(steps=12, checkpoint_every=6)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "t.yaml").write_text(yaml.safe_dump(cfg))
    for stage in ("data", "teacher"):
        proc = main_inproc(tmp_path, monkeypatch, capsys, "stage", stage, "configs/t.yaml")
        assert proc.returncode == 0, proc.stderr
    assert "space: 360: contracted space, 4 levels" in proc.stdout
    model = tmp_path / "runs" / cfg["name"] / "teacher" / "model.pt"
    assert torch.load(model, weights_only=False)["space"] == {"contract": True, "levels": 4, "cone_angle": 0.004}
    field, estimator, _ = load_teacher(model, load_config(tmp_path / "configs" / "t.yaml").teacher,
                                       torch.device("cpu"))
    assert field.space == Space(contract=True, levels=4, cone_angle=0.004) and estimator.levels == 4
    # far outside the box the contracted field still answers (a bounded one is 0 there)
    with torch.no_grad():
        assert float(field.query_density(torch.tensor([[30.0, 0.0, 0.0]]))[0]) > 0
