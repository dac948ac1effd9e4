"""The closed student interface: a new kind is its module, its settings and one line in KINDS.

A minimal kind defined here (each pixel's colour from its ray direction) goes through the
same path as gridlf and mobiler2l: registered in KINDS, built by name, trained per ray
through `forward_rays`, saved and loaded by its checkpoint, and exported to ONNX.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import Tensor, nn

from pipeline.cameras import camera_directions, orbit_pose
from student import kinds
from student.kinds import StudentCamera, StudentModel, build_student, load_student, ray_layout, student_checkpoint


@dataclasses.dataclass
class DirectionColourConfig:
    """Settings of the fake kind: an MLP of this width from the ray direction to colour."""

    width: int = 8


class DirectionColour(StudentModel):
    """rgb = sigmoid(MLP(d)) for each pixel's world direction d: the smallest light field."""

    kind = "direction"
    arch_type = DirectionColourConfig

    def __init__(self, arch: DirectionColourConfig, camera: StudentCamera):
        super().__init__(arch, camera)
        self.ray_grid = (camera.height, camera.width)
        self.register_buffer("dirs", camera_directions(camera.intrinsics).reshape(-1, 3), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(3, arch.width), nn.ReLU(), nn.Linear(arch.width, 3))

    @property
    def per_ray(self) -> bool:
        return True

    def forward(self, pose: Tensor, jitter: bool | Tensor = False, ray: Tensor | None = None,
                cached: Tensor | None = None) -> Tensor:
        if ray is not None:
            return self.forward_rays(pose, ray)
        pose = pose[None] if pose.dim() == 2 else pose
        b = pose.shape[0]
        rgb = torch.sigmoid(self.mlp(torch.matmul(self.dirs, pose[:, :3, :3].transpose(1, 2))))  # (B, P, 3)
        return rgb.transpose(1, 2).reshape(b, 3, *self.ray_grid)

    def forward_rays(self, pose: Tensor, ray: Tensor, noise: Tensor | None = None,
                     cached: Tensor | None = None) -> Tensor:
        rgb = torch.sigmoid(self.mlp(torch.matmul(pose[:, :3, :3], self.dirs[ray][:, :, None])[:, :, 0]))
        b, h, w = ray_layout(len(ray), self.ray_grid)
        return rgb.reshape(b, h * w, 3).transpose(1, 2).reshape(b, 3, h, w)

    def coarser(self, factor: int = 2) -> DirectionColour:
        small = DirectionColour(self.arch, self.camera.coarser(factor))
        small.load_state_dict(self.state_dict())
        return small

    def flops_per_frame(self) -> int:
        return 2 * (3 * self.arch.width + self.arch.width * 3) * self.n_rays


@pytest.fixture()
def registered(monkeypatch):
    """The fake kind's one registry line (KINDS is read by name, as pipeline/config.py has it)."""
    monkeypatch.setitem(kinds.KINDS, "direction", f"{__name__}:DirectionColour")


def _camera(size: int = 8) -> StudentCamera:
    return StudentCamera.square(size, size * 1.2, near=1.0, far=6.0, center=(0.0, 0.0, 0.0), scale=1.0)


def _pose(az: float) -> Tensor:
    return torch.from_numpy(orbit_pose([0.0, 0.0, 0.0], 3.0, az, 20.0, [0.0, 0.0, 1.0])).float()


def test_a_new_kind_trains_saves_loads_and_exports_through_the_interface(registered, tmp_path):
    from export.onnx_export import compare_with_torch, to_onnx_bytes

    torch.manual_seed(0)
    model = build_student("direction", DirectionColourConfig(width=8), _camera())
    assert model.teacher_grids() is None  # it needs nothing from the teacher: the stage asks for nothing
    # a few per-ray steps towards a constant colour, as the student stage's rays mode takes them
    poses = torch.stack([_pose(a) for a in (0.0, 120.0, 240.0)])
    opt = torch.optim.Adam(model.param_groups(0.05))
    first = None
    for _ in range(30):
        view, ray = torch.randint(0, 3, (64,)), torch.randint(0, model.n_rays, (64,))
        loss = (model(poses[view], ray=ray) - 0.25).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with torch.no_grad():  # per-ray output equals the whole image's
        ray = torch.arange(model.n_rays)
        full = model(poses[:1])
        assert torch.allclose(model(poses[[0] * model.n_rays], ray=ray).reshape(3, -1), full.reshape(3, -1),
                              atol=1e-6)
    torch.save(student_checkpoint(model), tmp_path / "model.pt")
    again = load_student(tmp_path / "model.pt", torch.device("cpu"))
    assert type(again) is DirectionColour and again.arch == model.arch
    with torch.no_grad():
        assert torch.equal(again(poses), model(poses))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        onnx_bytes = to_onnx_bytes(again, 17)
    worst, off = compare_with_torch(again, onnx_bytes, [p.numpy() for p in poses], 1e-5)
    assert off == 0.0 and worst < 1e-5


def test_an_unregistered_kind_is_a_one_line_error(tmp_path, registered):
    from pipeline.errors import StageError

    model = build_student("direction", DirectionColourConfig(), _camera())
    state = student_checkpoint(model)
    state["kind"] = "hologram"
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(StageError, match="student kind 'hologram' is unknown here"):
        load_student(tmp_path / "model.pt", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown student kind 'hologram'"):
        build_student("hologram", DirectionColourConfig(), _camera())
