"""The student interface, the loading of student kinds by name, and the student checkpoint.

A kind is a `StudentModel`: an nn.Module built from its architecture settings (its
section of `student` in pipeline/config.py, e.g. `student.mobiler2l`) and a
`StudentCamera` only. Training, export, the report, the viewer's preview model and the
FLOP count use nothing but this interface, so a new kind adds its module, its
architecture section to `StudentConfig` and one line to `KINDS` (pipeline/config.py),
and nothing else (docs/DESIGN.md, "Adding a student kind").

The checkpoint (`model.pt`) carries the kind, its architecture settings and the
camera, so whoever loads it rebuilds the same model whatever the current config says.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pipeline.cameras import Intrinsics
from pipeline.config import KINDS, REMOVED
from pipeline.errors import StageError

__all__ = ["KINDS", "StudentCamera", "StudentModel", "TeacherGrids", "build_student", "count_params", "load_student",
           "ray_layout", "slab_bound", "student_checkpoint", "student_class"]


@dataclass(frozen=True)
class StudentCamera:
    """Everything about the camera and scene a student bakes in (the viewer supplies only the pose).

    The frame is a pinhole camera of width x height pixels, focal lengths fx, fy and principal
    point cx, cy (pixels from the top-left corner; `Intrinsics`' conventions): the pseudo-views'
    camera, which keeps the photos' aspect ratio and principal point.
    """

    width: int  # pixels
    height: int
    fx: float  # pixels
    fy: float
    cx: float
    cy: float
    near: float  # world units along each ray
    far: float
    center: tuple[float, float, float]  # points are encoded as (p - center) / scale
    scale: float
    aabb: tuple[float, ...] | None = None  # the scene box (xmin, ymin, zmin, xmax, ymax, zmax): the teacher's
    # the scene reaches beyond the box (a capture without masks: 360 or forward-facing), which the
    # teacher covers in contracted space about the box; an object's background is one colour
    surroundings: bool = False
    # a forward-facing scene's mean camera, for its far field's planes (gridlf/far.py: slab_points):
    # its axes (3 x 3 row-major, as columns x right, y up, z back), its eye (3), the nearest plane's
    # depth, and how far x/z and y/z reach (2); None for an object or a 360 scene
    slab: tuple[float, ...] | None = None

    @property
    def intrinsics(self) -> Intrinsics:
        return Intrinsics(self.fx, self.fy, self.cx, self.cy, self.width, self.height)

    def coarser(self, factor: int) -> StudentCamera:
        """The same view on a frame `factor` times smaller a side (ValueError if a side does not divide)."""
        if self.width % factor or self.height % factor:
            raise ValueError(f"a {self.width}x{self.height} frame cannot be made {factor}x coarser")
        return dataclasses.replace(self, width=self.width // factor, height=self.height // factor,
                                   fx=self.fx / factor, fy=self.fy / factor, cx=self.cx / factor,
                                   cy=self.cy / factor)

    @classmethod
    def square(cls, size: int, focal: float, **scene) -> StudentCamera:
        """A centred frame of size x size pixels with square pixels (a Blender scene's); `scene`: the
        remaining fields (near, far, center, scale, aabb)."""
        return cls(width=size, height=size, fx=focal, fy=focal, cx=0.5 * size, cy=0.5 * size, **scene)

    @classmethod
    def from_dict(cls, d: dict) -> StudentCamera:
        d = dict(d)
        if "output_size" in d and "focal" in d:  # a checkpoint of the square, centred frames of old
            size, f = d.pop("output_size"), d.pop("focal")
            d.update(width=size, height=size, fx=f, fy=f, cx=0.5 * size, cy=0.5 * size)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def slab_bound(fx: float, fy: float, cx: float, cy: float, width: int, height: int, turn_deg: float,
               extent: list[list[float]], depth: float) -> tuple[float, float]:
    """How far (x/z, y/z in the capture's mean camera) a forward-facing scene's far points reach:
    a pseudo-view turns up to `turn_deg` from the mean camera, so its frame's edge ray is that
    much further out, and its centre lies in the box `extent` (lo, hi: the photos' centres in the
    mean camera's frame), which shifts a point at depth `depth` (the nearest plane) by up to
    extent / depth."""
    turn = math.radians(turn_deg)
    bound = []
    for f, c, size, axis in ((fx, cx, width, 0), (fy, cy, height, 1)):
        edge = math.atan(max(c, size - c) / f) + turn
        shift = max(abs(extent[0][axis]), abs(extent[1][axis])) / depth
        bound.append(math.tan(min(edge, math.radians(80.0))) + shift)
    return bound[0], bound[1]


@dataclass(frozen=True)
class TeacherGrids:
    """What a kind needs from the teacher: its occupied cells and mean density on a grid of
    `resolution`^3 cells over the scene box, the density averaged over `samples` random points
    a cell (teacher/occupancy.py: `surface_grids`)."""

    resolution: int
    samples: int


class StudentModel(nn.Module, abc.ABC):
    """What every student kind provides.

    Rendering is on a grid of `ray_grid` = (rows, columns) rays; each ray gives a `ray_block` x
    `ray_block` block of the frame (camera.height = rows * ray_block, camera.width = columns *
    ray_block).
    """

    kind: ClassVar[str]  # its key in KINDS
    arch_type: ClassVar[type]  # its architecture settings dataclass (pipeline/config.py)
    arch: Any  # an arch_type: the settings it was built from
    camera: StudentCamera
    ray_grid: tuple[int, int]  # (rows, columns) of the ray grid (set by each kind)

    def __init__(self, arch: Any, camera: StudentCamera):
        super().__init__()
        if not isinstance(arch, self.arch_type):
            raise TypeError(f"{type(self).__name__} is built from {self.arch_type.__name__} settings, "
                            f"got {type(arch).__name__}")
        self.arch, self.camera = arch, camera

    @property
    def n_rays(self) -> int:
        """Rays per frame."""
        return self.ray_grid[0] * self.ray_grid[1]

    @property
    def ray_block(self) -> int:
        """Pixels per side of the block of the image each ray gives."""
        return self.camera.width // self.ray_grid[1]

    @property
    def n_points(self) -> int:
        """Depth samples per ray that training jitters (the last axis of `jitter` / `noise`); 0: none."""
        return 0

    @property
    def per_ray(self) -> bool:
        """True when each ray's block depends on that ray alone: then the model can be trained
        on any set of rays (`forward_rays`), not only on whole images."""
        return False

    def teacher_grids(self) -> TeacherGrids | None:
        """What the kind needs from the teacher (None, the default: nothing). The student stage
        then computes those grids from the trained teacher and hands them to `from_teacher`."""
        return None

    def from_teacher(self, occupancy: Tensor, density: Tensor) -> list[str]:
        """Take scene knowledge from the teacher (kinds whose `teacher_grids` is not None): its
        occupied cells (R, R, R) bool over the scene box and its mean density in each cell
        (R, R, R) float, R = teacher_grids().resolution. Called once before training; what it
        keeps is saved with the weights (buffers), so the exported graph carries it. Returns
        lines for the stage's log; ValueError (one line) when the grids do not fit."""
        return []

    def param_groups(self, lr: float) -> list[dict]:
        """The optimiser's parameter groups at base learning rate `lr` (one group by default)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def regularization(self) -> Tensor | None:
        """A loss term on the weights themselves, added to each step's loss (None: none)."""
        return None

    @abc.abstractmethod
    def forward(self, pose: Tensor, jitter: bool | Tensor = False, ray: Tensor | None = None,
                cached: Tensor | None = None) -> Tensor:
        """pose (B, 4, 4) or (4, 4) camera-to-world -> rgb (B, 3, H, W) in [0, 1], the camera's frame.

        jitter: False (deterministic), True (random depth jitter), or the noise itself,
        (B, n_rays, n_points) in [0, 1). With `ray`: `forward_rays(pose, ray, jitter, cached)`
        (routed through here so that DistributedDataParallel sees the call).
        """

    def ray_inputs(self, pose: Tensor) -> Tensor | None:
        """What a per-ray model computes from whole frames for each of its rays (e.g. where each
        pixel's surface is), for views pose (B, 4, 4) -> (B, n_rays, C): training computes it once
        per view and hands each step its rays' rows (`cached`). None (the default): nothing."""
        return None

    @property
    def ray_input_columns(self) -> int:
        """C of `ray_inputs` (0: it has none), for sizing the per-view table before computing it."""
        return 0

    @property
    def ray_inputs_required(self) -> bool:
        """True when `forward_rays` without `cached` is impractical for training (it would need
        whole frames of every ray's view), so the per-view table must be kept."""
        return False

    def forward_rays(self, pose: Tensor, ray: Tensor, noise: Tensor | None = None,
                     cached: Tensor | None = None) -> Tensor:
        """Arbitrary rays -> their blocks, for per-ray models.

        pose: (N, 4, 4) each ray's camera; ray: (N,) row-major index into the ray grid;
        noise: optional (N, n_points) depth jitter in [0, 1); cached: optional (N, C), the
        rays' rows of `ray_inputs` (None: computed here). Returns (B, 3, h * r, w * r),
        r = ray_block, (B, h, w) = `ray_layout(N, ray_grid)`: ray n at row-major position n of
        a (B, h, w) grid, its block laid out as in a whole image.
        """
        raise ValueError(f"student kind '{self.kind}' with these settings is not per-ray: train it on images "
                         "(student.train.batch_mode: images)")

    @abc.abstractmethod
    def coarser(self, factor: int = 2) -> StudentModel:
        """The same weights on a ray grid `factor` times coarser (a new model): the same view as
        an image `factor` times smaller, for about 1 / factor^2 of the cost (the viewer's preview
        while the camera moves). ValueError if the ray grid is not divisible by `factor`."""

    @abc.abstractmethod
    def flops_per_frame(self) -> int:
        """Floating-point operations (2 x multiply-adds) of the network layers for one frame."""

    def for_export(self) -> nn.Module:
        """A copy in eval mode ready for ONNX export (e.g. BatchNorm folded), same `forward(pose)`."""
        return copy.deepcopy(self).eval()


def ray_layout(n: int, grid: tuple[int, int]) -> tuple[int, int, int]:
    """How forward_rays lays out n rays: as n / (rows x columns) frames of the `grid` when that
    divides (convolutions then run exactly as on whole images; a 1 x n strip was 2-3x slower in
    mkldnn's conv here), else as one 1 x n strip."""
    rows, cols = grid
    return (n // (rows * cols), rows, cols) if n % (rows * cols) == 0 else (1, 1, n)


def count_params(model: nn.Module) -> int:
    """Trainable parameters of any model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def student_class(kind: str) -> type[StudentModel]:
    if kind not in KINDS:
        raise ValueError(f"unknown student kind '{kind}'; known kinds: {', '.join(KINDS)}")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def build_student(kind: str, arch: Any, camera: StudentCamera) -> StudentModel:
    """A freshly initialised student of `kind` from its architecture settings and camera."""
    return student_class(kind)(arch, camera)


def student_checkpoint(model: StudentModel) -> dict:
    """What `model.pt` holds: enough to rebuild the model without any config."""
    return {"kind": model.kind, "arch": dataclasses.asdict(model.arch), "camera": dataclasses.asdict(model.camera),
            "model": model.state_dict()}


def load_student(path: Path, device: torch.device) -> StudentModel:
    """Rebuild the student a `model.pt` describes, in eval mode; a missing, corrupt or foreign
    file is a StageError of one line."""
    redo = "re-run `python -m pipeline stage student --force`"
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise StageError(f"{path}: student model not found; {redo}") from None
    except Exception as err:
        raise StageError(f"{path}: corrupt student model ({err.__class__.__name__}); {redo}") from None
    missing = [k for k in ("kind", "arch", "camera", "model") if not isinstance(state, dict) or k not in state]
    if missing:
        raise StageError(f"{path}: not a student model of this project (no {', '.join(missing)}); {redo}")
    if state["kind"] not in KINDS:
        raise StageError(f"{path}: student kind '{state['kind']}' is unknown here (known: {', '.join(KINDS)}); {redo}")
    cls = student_class(state["kind"])
    arch = dict(state["arch"])
    for key, value in REMOVED.get(cls.arch_type, {}).items():
        # a checkpoint of the design that won loads; one of a removed variant is named
        if key in arch and arch.pop(key) != value:
            raise StageError(f"{path}: a {cls.kind} student with {key}: {state['arch'][key]!r}, an option that was "
                             f"removed ({key}: {value!r} is the only design now, docs/DESIGN.md has the rankings); "
                             f"{redo}")
    try:
        model = cls(cls.arch_type(**arch), StudentCamera.from_dict(state["camera"]))
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else err.__class__.__name__
        raise StageError(f"{path}: student model does not fit its own settings ({reason}); {redo}") from None
    return model.to(device).eval()
