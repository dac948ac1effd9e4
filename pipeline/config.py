"""Typed pipeline configuration: YAML -> nested dataclasses, validated at load.

Every key is checked against the dataclass fields (unknown keys get a
"did you mean" hint) and every value against its annotated type; errors name
the full dotted key path and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError


@dataclass
class ToySceneConfig:
    """The synthetic scene the project renders itself (analytic ray casting)."""

    size: int = 64  # image width = height, pixels (>= 8)
    n_train: int = 60  # training views, orbiting at elevations 5-75 degrees (>= 1)
    n_val: int = 4  # validation views (>= 1)
    n_test: int = 8  # test views, evenly spaced in azimuth at 30 degrees elevation (>= 1)
    camera_angle_x: float = 0.6911  # horizontal field of view, radians in (0, pi); lego's
    radius: float = 3.2  # camera distance to the origin, world units (> 0)
    seed: int = 0  # random seed of the training and validation poses (>= 0)
    # none: the shapes on a transparent background (an object); 360: inside a textured environment,
    # cameras orbiting; forward: the same environment, cameras on a patch facing the shapes (LLFF-like)
    surroundings: Literal["none", "360", "forward"] = "none"


@dataclass
class DataConfig:
    """The scene: where the training and test views come from."""

    # the layout of data.root: auto recognises it from the files there (the toy scene when data.root
    # is null); toy: generated (data.toy); blender: a NeRF-synthetic folder; nerfstudio, instant-ngp:
    # a transforms.json; colmap: sparse/0/ + images/; llff: poses_bounds.npy + images/
    kind: Literal["auto", "toy", "blender", "nerfstudio", "instant-ngp", "colmap", "llff"] = "auto"
    root: str | None = None  # the scene or capture folder (every kind but toy)
    # what the scene is: object (masked photos or alpha: only the object is learned), 360 (cameras
    # around a scene with surroundings) or forward (forward-facing shots); auto: masks say object,
    # else the cameras' spread of directions decides (pipeline/placement.py: scene_type)
    scene_type: Literal["auto", "object", "360", "forward"] = "auto"
    # captures are written as RGBA PNGs with the long side at most this many pixels (>= 8); Blender
    # scenes within it are read in place
    max_size: int = 800
    downscale: int = 1  # integer factor applied to every image at load time (>= 1)
    require_alpha: bool = False  # refuse RGB images (else they load as fully opaque)
    toy: ToySceneConfig = field(default_factory=ToySceneConfig)


@dataclass
class HashGridConfig:
    """The teacher's multiresolution hash encoding (Instant-NGP)."""

    n_levels: int = 16  # resolution levels, coarse to fine (>= 1)
    n_features: int = 2  # features per table entry (>= 1)
    log2_table_size: int = 19  # entries per level = 2^this (1-30)
    base_resolution: int = 16  # coarsest level, in cells across the scene box (>= 1)
    max_resolution: int = 2048  # finest level, in cells across the scene box (>= base_resolution)


@dataclass
class TeacherConfig:
    """The Instant-NGP teacher: hash grid + small MLPs, trained on the scene's views."""

    steps: int = 2000  # optimiser steps (>= 1)
    max_seconds: float = 0.0  # wall-clock training budget, seconds (>= 0; 0 = none); stops early, then evaluates
    # steps the recipe needs to do its job (>= 0; 0: `steps`); the stage warns when max_seconds at
    # the measured step rate allows fewer than half of them
    expected_steps: int = 0
    aabb: list[float] = field(default_factory=lambda: [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5])  # scene box, world units
    hash: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64  # width of the density and colour MLPs (>= 1)
    grid_resolution: int = 128  # occupancy grid cells per axis (>= 1)
    grid_update_every: int = 16  # steps between occupancy grid updates (>= 1)
    grid_warmup_steps: int = 256  # steps during which the grid is updated from every cell, not a sample (>= 0)
    occ_threshold: float = 0.01  # density x step size below which a grid cell counts as empty (>= 0)
    render_step_size: float = 0.005  # world units between samples along a ray (> 0)
    # a 360 scene (contracted space, teacher/space.py): the step grows with distance t as
    # max(t x cone_angle, render_step_size) (>= 0; nerfacc's unbounded recipe: 0.004); objects and
    # forward-facing scenes (their ndc box) march constant steps
    cone_angle: float = 0.004
    alpha_thre: float = 0.0  # skip samples below this opacity, in [0, 1) (nerfacc recipe: 0 for lego)
    early_stop_eps: float = 1e-4  # stop marching a ray once its transmittance is below this, in [0, 1)
    init_batch_rays: int = 1024  # rays in the first step's batch (>= 1)
    target_samples: int = 65536  # adaptive ray batch keeps samples/step near this (>= 1)
    max_batch_rays: int = 16384  # upper bound of the adaptive ray batch (>= 1)
    lr: float = 0.01  # Adam learning rate after warm-up (> 0)
    adam_beta2: float = 0.999  # in [0, 1); Instant-NGP uses 0.99 (faster adaptation), nerfacc's example torch's 0.999
    weight_decay: float = 1e-6  # Adam weight decay (>= 0)
    warmup_steps: int = 100  # linear learning-rate warm-up, steps (>= 0)
    loss: Literal["smooth_l1", "mse"] = "smooth_l1"  # photometric loss on the ray colours
    random_background: bool = True  # train on a random background colour per ray (learns transparency)
    eval_views: int = 0  # test views evaluated after training (>= 0; 0 = every test view)
    eval_chunk_rays: int = 8192  # rays rendered at once during evaluation (>= 1)
    checkpoint_every: int = 500  # steps between resumable checkpoints (>= 1)
    log_every: int = 50  # steps between loss-curve entries (>= 1)
    # torch.compile the MLP heads, and the hash encoding where its C kernels are not used (CUDA);
    # auto: on CUDA only (on the CPU a cold compile costs a minute or more and gains little)
    compile: bool | Literal["auto"] = "auto"
    # CPU: run the small MLPs under bfloat16 autocast (CUDA always uses bf16 autocast);
    # auto: measured once per machine (pipeline/machine.py), on only where bf16 is faster
    mlp_bf16: bool | Literal["auto"] = "auto"
    seed: int = 0  # random seed of initialisation and ray sampling (>= 0)


@dataclass
class DistillConfig:
    """Pseudo-views: the trained teacher rendered from many sampled cameras."""

    n_views: int = 2000  # pseudo-views rendered (>= 1)
    # wall-clock budget of the pseudo-views, seconds (>= 0; 0 = none): rendering stops when it is
    # spent and the views written so far are the set (a scene with surroundings renders slower)
    max_seconds: float = 0.0
    seed: int = 0  # random seed of the sampled cameras (>= 0)
    jitter_fraction: float = 0.0  # share of views that are jittered training poses, in [0, 1]
    jitter_deg: float = 3.0  # rotation jitter of those views, degrees (>= 0)
    chunk_rays: int = 16384  # rays rendered at once (>= 1)
    alpha_thre: float = 0.01  # in [0, 1); forward-only rendering of a trained teacher skips faint samples
    early_stop_eps: float = 1e-3  # stop marching a ray once its transmittance is below this, in [0, 1)


@dataclass
class MobileR2LConfig:
    """Architecture of the MobileR2L-family student (student.kind: mobiler2l): rays on a
    coarse grid, K encoded points per ray, 1x1 convs, then super-resolution."""

    sr_factor: int = 4  # the ray grid is the frame / sr_factor a side; a power of two
    n_points: int = 8  # K points per ray, one per equal depth bin between near and far (>= 1)
    pe_freqs: int = 6  # L frequencies of the positional encoding (>= 0)
    width: int = 64  # body channels (>= 1)
    n_blocks: int = 4  # residual blocks in the body (>= 0)
    sr_channels: list[int] = field(default_factory=lambda: [32, 16])  # channels after each x2 upsampling (>= 1 each)
    sr_blocks: int = 1  # residual blocks after each upsampling (>= 0)
    # x2 upsampling: MobileR2L's ConvTranspose k4 s2, or a 1x1 conv + PixelShuffle (4x fewer
    # FLOPs; ConvTranspose dominated a small student's time in the browser's WASM backend)
    upsample: Literal["transpose", "pixelshuffle"] = "transpose"
    activation: Literal["gelu", "gelu_tanh", "relu"] = "gelu"  # of every layer; gelu_tanh: GELU's tanh approximation

    @property
    def frame_multiple(self) -> int:
        """Both sides of the frame are a multiple of this (a ray's block of pixels)."""
        return self.sr_factor


@dataclass
class GridLFConfig:
    """Architecture of the surface-anchored feature-plane light field (student.kind: gridlf):
    one ray per output pixel. The teacher's mean density per cell (inside the graph) says where
    along each pixel's ray its surface is: where the ray turns `surface_opacity` opaque, or for a
    pixel the scene covers only in part, at the median of where its light ends. K points in a
    short window there read learned tri-planes; a small MLP maps their features, the view
    direction and the pixel's opacity to colour. Lengths are in cells of the occupancy grid, so
    they follow the scene box, not a scene's units. docs/DESIGN.md gives the measurements behind
    each default."""

    occupancy_resolution: int = 128  # cells per side of the grid of the teacher's density the rays march (>= 1)
    dilate: int = 1  # grow occupied cells by this many cells (>= 0) so that thin parts are not stepped over
    march_stride: int = 4  # one coarse march ray per this many pixels a side (>= 1; both frame sides a multiple)
    pixel_samples: int = 32  # samples of each pixel's own march between its neighbourhood's hits (>= 1)
    surface_opacity: float = 0.5  # the ray's opacity where its surface is (in (0, 1))
    n_points: int = 4  # K feature points per ray (>= 1)
    window: float = 4.0  # the K points span this many occupancy cells, centred on the surface (> 0)
    # cells per side of each tri-plane (>= 2 each); they span the box of the teacher's occupied cells
    grid_resolutions: list[int] = field(default_factory=lambda: [64, 256])
    grid_channels: int = 8  # features per plane cell (>= 1)
    dir_freqs: int = 4  # frequencies of the view direction's encoding (>= 0)
    width: int = 64  # MLP hidden width (>= 1)
    depth: int = 2  # hidden layers (>= 1)
    # the far field of a scene with surroundings (student/gridlf/far.py; an object's background is
    # one learned colour): K points a ray, equally spaced in disparity out to infinity, each reading
    # a 2-D grid of its own: a 360 scene's on spheres about the box (octahedral maps), a
    # forward-facing scene's on planes facing its mean camera (0: one colour)
    far_points: int = 4
    far_resolutions: list[int] = field(default_factory=lambda: [64, 256])  # cells per side (>= 2 each)
    far_channels: int = 8  # features per far plane cell (>= 1)
    far_width: int = 32  # the far MLP's hidden width (>= 1)
    far_tv: float = 0.1  # weight of the far planes' total variation in the loss (>= 0): smooths cells few rays reach

    @property
    def frame_multiple(self) -> int:
        """Both sides of the frame are a multiple of this (the march's block of pixels)."""
        return self.march_stride


# gridlf options that lost in the rankings of docs/DESIGN.md, with the design gridlf always has now:
# a config or checkpoint that asks for anything else gets a one-line error naming the option
GRIDLF_REMOVED: dict[str, Any] = {
    "surface": "density", "faint_surface": "median", "ray_opacity": True, "features": "triplane",
    "grid_extent": "occupied", "plane_combine": "concat", "plane_interp": "nearest", "blend": "hit",
    "anchor": True, "jitter": True, "refine": 0, "fine_samples": 0, "subdivide": 2, "tv_weight": 0.0,
    "grid_lr_scale": 1.0,
}


@dataclass
class StudentTrainConfig:
    """How the student is trained (any kind)."""

    steps: int = 2000  # optimiser steps (>= 1)
    # wall-clock training budget, seconds (>= 0; 0 = none). Training stops at whichever of `steps`
    # and this comes first, and the cosine decay follows whichever is further along.
    max_seconds: float = 0.0
    # steps the recipe needs to do its job (>= 0; 0: `steps`); the stage warns when max_seconds at
    # the measured step rate allows fewer than half of them
    expected_steps: int = 0
    batch_images: int = 8  # global batch, in images (>= 1; rays mode: as many rays as that many images have)
    # "images": each step trains on whole images; "rays": on the same number of rays drawn
    # at random from every view (per-ray networks only, e.g. mobiler2l with upsample: pixelshuffle):
    # decorrelated batches, faster convergence per step
    batch_mode: Literal["images", "rays"] = "images"
    # rays mode: rays in each global batch (>= 0; 0: as many as batch_images images have). A
    # per-pixel student (gridlf) has 40,000 rays in one 200x200 image: a batch of a few thousand
    # rays from many views trains faster per second than one whole image's worth
    batch_rays: int = 0
    lr: float = 0.001  # AdamW learning rate after warm-up (> 0)
    weight_decay: float = 0.0  # AdamW weight decay (>= 0)
    warmup_steps: int = 100  # linear learning-rate warm-up, steps (>= 0); then cosine decay to 5%
    real_fraction: float = 0.0  # share of each batch drawn from the real training views, in [0, 1]
    # the last this share of training (by steps or seconds, whichever is further along) draws every
    # ray from the real training views (R2L's finetune on the real data), in [0, 1)
    finetune_fraction: float = 0.0
    # rays mode: share of each batch drawn from a pool of the rays with the highest loss so far
    # (R2L's hard-example mining, 0.2 there), in [0, 1]
    hard_fraction: float = 0.0
    checkpoint_every: int = 500  # steps between resumable checkpoints (>= 1)
    log_every: int = 50  # steps between loss-curve entries (>= 1)
    seed: int = 0  # random seed of initialisation and batches (>= 0)


# The student kinds: student.kind -> the class that implements it, "module:class" (student/kinds.py
# loads it by name, so reading a config needs no torch). Each kind has an architecture section of its
# name in StudentConfig; docs/DESIGN.md shows how to add one.
KINDS: dict[str, str] = {
    "mobiler2l": "student.mobiler2l:MobileR2L",
    "gridlf": "student.gridlf:GridLightField",
}
StudentKind = Literal[tuple(KINDS)]  # type: ignore[valid-type]


@dataclass
class StudentConfig:
    """The NeLF student: camera pose in, image out. `kind` selects the architecture; only the
    section of that name is read (and is part of the stage's cache key)."""

    kind: StudentKind = "mobiler2l"  # the registered student (student/kinds.py), one of the sections below
    # the frame's long side, pixels (>= 1); the short side keeps the training photos' aspect ratio,
    # rounded to the kind's multiple (distill renders at this frame)
    output_size: int = 64
    near: float | None = None  # nearest depth of the encoded points, world units (> 0); null: from the cameras and box
    far: float | None = None  # farthest depth, world units (> near); null: from the cameras and the scene box
    mobiler2l: MobileR2LConfig = field(default_factory=MobileR2LConfig)
    gridlf: GridLFConfig = field(default_factory=GridLFConfig)
    train: StudentTrainConfig = field(default_factory=StudentTrainConfig)

    @property
    def arch(self) -> Any:
        """The selected kind's architecture section."""
        return getattr(self, self.kind)

    def settings(self) -> dict:
        """The values that determine the trained student: every key except the sections of the
        kinds not selected (the student stage's cache key)."""
        unused = set(typing.get_args(StudentKind)) - {self.kind}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}


@dataclass
class ExportConfig:
    """ONNX export of the student and the scene files for the browser viewer."""

    site_dir: str = "site"  # the viewer site; the scene goes to <site_dir>/scenes/<name>/
    opset: int = 17  # ONNX opset version of the exported graph (>= 17)
    simplify: bool = True  # run onnxsim
    check_poses: int = 3  # poses on which the ONNX output is compared with torch (>= 1)
    preview: bool = True  # also export the model on a 2x coarser ray grid (the viewer's preview while moving)
    fp16: bool = False  # also write model_fp16.onnx (float16 conv weights, half the file); the viewer loads it
    max_abs_diff: float = 1e-3  # largest accepted |onnx - torch| of an output colour in [0, 1] (> 0) ...
    # ... in all but this share of the colour values (in [0, 1]): a student reading grids at the nearest
    # cell (gridlf) may land in the neighbouring cell where float rounding differs at a cell border
    max_mismatch_fraction: float = 1e-3


@dataclass
class ReportConfig:
    """Turntables and side-by-side test views written into the viewer site."""

    turntable_frames: int = 60  # frames of the 360-degree orbit videos (>= 1)
    fps: int = 24  # frames per second of the videos and the GIF (>= 1)
    gif_size: int = 128  # pixels of the animated GIF (README preview); even, >= 8
    teacher_turntable_size: int = 64  # pixels of the teacher's turntable (0: none; else even); the teacher is slow


@dataclass
class Config:
    """A whole pipeline run: one scene, its teacher, student, export and report."""

    name: str = "toy"  # run and scene name: runs/<name>/, site/scenes/<name>/ (letters, digits, '-', '_')
    device: str = "auto"  # auto | cpu | cuda | cuda:N (auto: cuda when available)
    runs_dir: str = "runs"  # folder of the stage outputs
    background: Literal["white", "black"] = "white"  # colour behind the scene in every image
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


# ---------------------------------------------------------------------------
# Loading and validation

# sections whose options were removed -> {option: the one value it has now}
REMOVED: dict[type, dict[str, Any]] = {GridLFConfig: GRIDLF_REMOVED}


def removed_note(cls: type, key: str) -> str:
    """Why option `key` of section `cls` is gone, in one phrase."""
    return (f"{key}: {yaml.safe_dump(REMOVED[cls][key], default_flow_style=True).strip().removesuffix('...').strip()}"
            " is the only design now (docs/DESIGN.md has the rankings); delete the key")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check `value` against annotation `tp`; return the typed value."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{path}' must be a mapping, got {value!r}")
        return _build(tp, value, path, source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path, source)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: '{path}' must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        options = typing.get_args(tp)
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in options:
            return str(value)  # YAML reads `scene_type: 360` as a number
        if value not in options:
            raise ConfigError(f"{source}: '{path}' must be one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{path}' must be {_type_name(tp)}, got {value!r}")
        return [_convert(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{path}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{path}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{path}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{path}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")


def _build(cls: type, data: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints and key in REMOVED.get(cls, {}):
            raise ConfigError(f"{source}: '{path}' was removed: {removed_note(cls, str(key))}")
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"{source}: unknown key '{path}'{hint}")
        kwargs[key] = _convert(value, hints[key], path, source)
    return cls(**kwargs)


def _check_ranges(cfg: Config, source: str) -> None:
    """Ranges and relations the types cannot express; each failure names its own key."""

    def value(key: str) -> Any:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: '{key}' must be {what}, got {value(key)!r}")

    def at_least(key: str, low: int, note: str = "") -> None:
        need(value(key) >= low, key, f">= {low}{note}")

    def positive(key: str) -> None:
        need(value(key) > 0, key, "> 0")

    def fraction(key: str, closed: bool = True) -> None:
        v = value(key)
        need(0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0, key, "in [0, 1]" if closed else "in [0, 1)")

    need(cfg.name.replace("-", "").replace("_", "").isalnum(), "name", "letters, digits, '-' or '_'")
    need(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"), "device",
         "'auto', 'cpu', 'cuda' or 'cuda:N'")
    at_least("data.downscale", 1)
    need(cfg.data.kind in ("toy", "auto") or bool(cfg.data.root), "data.root",
         f"a scene folder when data.kind is '{cfg.data.kind}'")
    at_least("data.max_size", 8)
    at_least("data.toy.size", 8)
    for key in ("n_train", "n_val", "n_test"):
        at_least(f"data.toy.{key}", 1)
    need(0.0 < cfg.data.toy.camera_angle_x < math.pi, "data.toy.camera_angle_x", "in (0, pi) radians")
    positive("data.toy.radius")

    t = cfg.teacher
    need(len(t.aabb) == 6, "teacher.aabb", "6 numbers [xmin, ymin, zmin, xmax, ymax, zmax]")
    need(all(t.aabb[i] < t.aabb[i + 3] for i in range(3)), "teacher.aabb", "min < max on every axis")
    for key in ("n_levels", "n_features", "base_resolution"):
        at_least(f"teacher.hash.{key}", 1)
    need(1 <= t.hash.log2_table_size <= 30, "teacher.hash.log2_table_size", "in [1, 30]")
    need(t.hash.max_resolution >= t.hash.base_resolution, "teacher.hash.max_resolution",
         f">= teacher.hash.base_resolution ({t.hash.base_resolution})")
    for key in ("steps", "hidden", "grid_resolution", "grid_update_every", "init_batch_rays", "target_samples",
                "max_batch_rays", "eval_chunk_rays", "checkpoint_every", "log_every"):
        at_least(f"teacher.{key}", 1)
    at_least("teacher.max_seconds", 0, " (0: no time budget)")
    at_least("teacher.expected_steps", 0, " (0: teacher.steps)")
    for key in ("grid_warmup_steps", "occ_threshold", "weight_decay", "warmup_steps", "eval_views", "seed",
                "cone_angle"):
        at_least(f"teacher.{key}", 0)
    for key in ("render_step_size", "lr"):
        positive(f"teacher.{key}")
    for key in ("alpha_thre", "early_stop_eps", "adam_beta2"):
        fraction(f"teacher.{key}", closed=False)

    at_least("distill.n_views", 1)
    at_least("distill.max_seconds", 0, " (0: no time budget)")
    at_least("distill.chunk_rays", 1)
    at_least("distill.seed", 0)
    at_least("distill.jitter_deg", 0)
    fraction("distill.jitter_fraction")
    fraction("distill.alpha_thre", closed=False)
    fraction("distill.early_stop_eps", closed=False)

    s = cfg.student
    at_least("student.output_size", 1)
    need(s.near is None or s.near > 0, "student.near", "> 0 or null (derived)")
    need(s.far is None or s.far > (s.near if s.near is not None else 0.0), "student.far",
         "> student.near" if s.near is not None else "> 0 or null (derived)")
    if s.kind == "mobiler2l":
        m = s.mobiler2l
        need(m.sr_factor >= 1 and (m.sr_factor & (m.sr_factor - 1)) == 0, "student.mobiler2l.sr_factor",
             "a power of two")
        need(s.output_size % max(m.sr_factor, 1) == 0, "student.output_size",
             f"a multiple of student.mobiler2l.sr_factor ({m.sr_factor})")
        n_up = m.sr_factor.bit_length() - 1
        need(len(m.sr_channels) == n_up, "student.mobiler2l.sr_channels",
             f"a list of {n_up} channel counts (one per 2x upsampling for sr_factor {m.sr_factor})")
        need(all(c >= 1 for c in m.sr_channels), "student.mobiler2l.sr_channels", "channel counts >= 1")
        for key in ("n_points", "width"):
            at_least(f"student.mobiler2l.{key}", 1)
        for key in ("pe_freqs", "n_blocks", "sr_blocks"):
            at_least(f"student.mobiler2l.{key}", 0)
        need(s.train.batch_mode == "images" or m.upsample == "pixelshuffle", "student.train.batch_mode",
             "'images' unless student.mobiler2l.upsample is 'pixelshuffle' (ConvTranspose mixes neighbouring rays)")
    if s.kind == "gridlf":
        g = s.gridlf
        for key in ("occupancy_resolution", "march_stride", "n_points", "grid_channels", "width", "depth",
                    "pixel_samples", "far_channels", "far_width"):
            at_least(f"student.gridlf.{key}", 1)
        need(0.0 < g.surface_opacity < 1.0, "student.gridlf.surface_opacity", "a number between 0 and 1 (exclusive)")
        for key in ("dilate", "dir_freqs", "far_points"):
            at_least(f"student.gridlf.{key}", 0)
        positive("student.gridlf.window")
        need(g.far_tv >= 0, "student.gridlf.far_tv", "a number >= 0")
        need(len(g.grid_resolutions) >= 1 and all(r >= 2 for r in g.grid_resolutions),
             "student.gridlf.grid_resolutions", "a list of one or more resolutions >= 2")
        need(len(g.far_resolutions) >= 1 and all(r >= 2 for r in g.far_resolutions),
             "student.gridlf.far_resolutions", "a list of one or more resolutions >= 2")
        need(s.output_size % g.march_stride == 0, "student.output_size",
             f"a multiple of student.gridlf.march_stride ({g.march_stride})")
    for key in ("steps", "batch_images", "checkpoint_every", "log_every"):
        at_least(f"student.train.{key}", 1)
    at_least("student.train.max_seconds", 0, " (0: no time budget)")
    at_least("student.train.expected_steps", 0, " (0: student.train.steps)")
    for key in ("weight_decay", "warmup_steps", "seed", "batch_rays"):
        at_least(f"student.train.{key}", 0)
    positive("student.train.lr")
    fraction("student.train.real_fraction")
    fraction("student.train.hard_fraction")
    fraction("student.train.finetune_fraction", closed=False)  # 1: no training on the pseudo-views at all

    at_least("export.opset", 17)
    at_least("export.check_poses", 1)
    positive("export.max_abs_diff")
    fraction("export.max_mismatch_fraction")
    at_least("report.turntable_frames", 1)
    at_least("report.fps", 1)
    need(cfg.report.gif_size >= 8 and cfg.report.gif_size % 2 == 0, "report.gif_size", "an even number >= 8")
    need(cfg.report.teacher_turntable_size >= 0 and cfg.report.teacher_turntable_size % 2 == 0,
         "report.teacher_turntable_size", "0 (none) or an even number of pixels")


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set teacher.steps=500")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: cannot parse value {raw!r} ({err.__class__.__name__})") from None
    return key, value


def _apply_override(data: dict, key: str, value: Any) -> None:
    cls: Any = Config
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints and part in REMOVED.get(cls, {}):
            raise ConfigError(f"--set {key}: '{key}' was removed: {removed_note(cls, part)}")
        if part not in hints:
            path = ".".join(parts[: i + 1])
            names = list(hints)
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"--set {key}: unknown key '{path}'{hint}")
        if i == len(parts) - 1:
            node[part] = value
            return
        cls = hints[part]
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a mapping in the config")


def default_name(path: Path, data: dict) -> str:
    """A config without `name`: a capture's folder name (a user's scene is named after itself, e.g.
    configs/capture.yaml with data.root=~/scans/teapot is `teapot`), else the config file's name."""
    section = data.get("data") if isinstance(data.get("data"), dict) else {}
    root = section.get("root")
    if isinstance(root, str) and root and section.get("kind", DataConfig.kind) != "toy":
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(root).expanduser().resolve().name).strip("-")
        if name:
            return name
    return path.stem


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply `--set` overrides, validate; raise ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass a YAML config file such as configs/toy.yaml")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a YAML config") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    for item in overrides:
        key, value = parse_override(item)
        _apply_override(data, key, value)
    data.setdefault("name", default_name(path, data))
    cfg = _build(Config, data, "", str(path))
    _check_ranges(cfg, str(path))
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
