"""Typed pipeline configuration: YAML -> nested dataclasses, validated at load.

Every key is checked against the dataclass fields (unknown keys get a
"did you mean" hint) and every value against its annotated type; errors name
the full dotted key path and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
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

    size: int = 64  # image width = height, pixels
    n_train: int = 60
    n_val: int = 4
    n_test: int = 8
    camera_angle_x: float = 0.6911  # radians, lego's field of view
    radius: float = 3.2  # camera distance to the origin
    seed: int = 0


@dataclass
class DataConfig:
    kind: Literal["toy", "blender"] = "toy"
    root: str | None = None  # a Blender-layout folder, for kind == "blender"
    downscale: int = 1  # integer factor applied to every image at load time
    require_alpha: bool = False  # refuse RGB images (else they load as fully opaque)
    toy: ToySceneConfig = field(default_factory=ToySceneConfig)


@dataclass
class HashGridConfig:
    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048  # finest level, in cells across the scene box


@dataclass
class TeacherConfig:
    steps: int = 2000
    max_seconds: float = 0.0  # wall-clock training budget; 0 = none (stops early, then evaluates)
    # steps the recipe needs to do its job (0: `steps`); a warning when max_seconds at the
    # measured step rate allows fewer than half of them
    expected_steps: int = 0
    aabb: list[float] = field(default_factory=lambda: [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5])
    hash: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64
    grid_resolution: int = 128  # occupancy grid cells per axis
    grid_update_every: int = 16
    grid_warmup_steps: int = 256
    occ_threshold: float = 0.01
    render_step_size: float = 0.005  # world units between samples along a ray
    alpha_thre: float = 0.0  # skip samples below this opacity (nerfacc recipe: 0 for lego)
    early_stop_eps: float = 1e-4
    init_batch_rays: int = 1024
    target_samples: int = 65536  # adaptive ray batch keeps samples/step near this
    max_batch_rays: int = 16384
    lr: float = 0.01
    adam_beta2: float = 0.999  # Instant-NGP uses 0.99 (faster adaptation), nerfacc's example torch's 0.999
    weight_decay: float = 1e-6
    warmup_steps: int = 100
    loss: Literal["smooth_l1", "mse"] = "smooth_l1"
    random_background: bool = True
    eval_views: int = 0  # 0 = every test view
    eval_chunk_rays: int = 8192
    checkpoint_every: int = 500
    log_every: int = 50
    # torch.compile the MLP heads, and the hash encoding where its C kernels are not used (CUDA);
    # auto: on CUDA only (on the CPU a cold compile costs a minute or more and gains little)
    compile: bool | Literal["auto"] = "auto"
    # CPU: run the small MLPs under bfloat16 autocast (CUDA always uses bf16 autocast);
    # auto: measured once per machine (pipeline/machine.py), on only where bf16 is faster
    mlp_bf16: bool | Literal["auto"] = "auto"
    seed: int = 0


@dataclass
class DistillConfig:
    n_views: int = 2000
    seed: int = 0
    jitter_fraction: float = 0.0  # share of views that are jittered training poses
    jitter_deg: float = 3.0
    chunk_rays: int = 16384
    alpha_thre: float = 0.01  # forward-only rendering of a trained teacher skips faint samples
    early_stop_eps: float = 1e-3


@dataclass
class StudentConfig:
    output_size: int = 64  # square output image, pixels (distill renders at this size)
    sr_factor: int = 4  # input grid = output_size / sr_factor; power of two
    n_points: int = 8  # K points per ray
    pe_freqs: int = 6  # L frequencies of the positional encoding
    near: float | None = None  # None: derived from the cameras and the scene box
    far: float | None = None
    width: int = 64  # body channels
    n_blocks: int = 4  # residual blocks in the body
    sr_channels: list[int] = field(default_factory=lambda: [32, 16])
    sr_blocks: int = 1  # residual blocks after each upsampling
    # x2 upsampling: MobileR2L's ConvTranspose k4 s2, or a 1x1 conv + PixelShuffle (4x fewer
    # FLOPs; ConvTranspose dominated a small student's time in the browser's WASM backend)
    upsample: Literal["transpose", "pixelshuffle"] = "transpose"
    activation: Literal["gelu", "gelu_tanh", "relu"] = "gelu"
    steps: int = 2000
    # wall-clock training budget; 0 = none. Training stops at whichever of `steps` and this
    # comes first, and the cosine decay follows whichever is further along.
    max_seconds: float = 0.0
    # steps the recipe needs to do its job (0: `steps`); a warning when max_seconds at the
    # measured step rate allows fewer than half of them
    expected_steps: int = 0
    batch_images: int = 8  # global batch, in images (rays mode: as many rays as that many images have)
    # "images": each step trains on whole images; "rays": on the same number of rays drawn
    # at random from every view (per-ray networks only, i.e. upsample: pixelshuffle):
    # decorrelated batches, faster convergence per step
    batch_mode: Literal["images", "rays"] = "images"
    lr: float = 0.001
    weight_decay: float = 0.0
    warmup_steps: int = 100
    real_fraction: float = 0.0  # share of each batch drawn from the real training views
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0


@dataclass
class ExportConfig:
    site_dir: str = "site"  # the viewer site; the scene goes to <site_dir>/scenes/<name>/
    opset: int = 17
    simplify: bool = True  # run onnxsim
    check_poses: int = 3
    preview: bool = True  # also export the model on a 2x coarser ray grid (the viewer's preview while moving)
    fp16: bool = False  # also write model_fp16.onnx (float16 conv weights, half the file); the viewer loads it
    max_abs_diff: float = 1e-3


@dataclass
class ReportConfig:
    turntable_frames: int = 60  # frames of the 360-degree orbit videos
    fps: int = 24
    gif_size: int = 128  # pixels of the animated GIF (README preview)
    teacher_turntable_size: int = 64  # pixels of the teacher's turntable (0: none); the teacher is slow


@dataclass
class Config:
    name: str = "toy"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    runs_dir: str = "runs"
    background: Literal["white", "black"] = "white"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


# ---------------------------------------------------------------------------
# Loading and validation


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
        if value not in typing.get_args(tp):
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
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"{source}: unknown key '{path}'{hint}")
        kwargs[key] = _convert(value, hints[key], path, source)
    return cls(**kwargs)


def _check_ranges(cfg: Config, source: str) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            value = cfg
            for part in key.split("."):
                value = getattr(value, part)
            raise ConfigError(f"{source}: '{key}' must be {what}, got {value!r}")

    need(cfg.name.replace("-", "").replace("_", "").isalnum(), "name", "letters, digits, '-' or '_'")
    need(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"), "device",
         "'auto', 'cpu', 'cuda' or 'cuda:N'")
    need(cfg.data.downscale >= 1, "data.downscale", ">= 1")
    need(cfg.data.kind != "blender" or bool(cfg.data.root), "data.root",
         "a scene folder when data.kind is 'blender'")
    need(cfg.data.toy.size >= 8, "data.toy.size", ">= 8")
    need(len(cfg.teacher.aabb) == 6, "teacher.aabb", "6 numbers [xmin, ymin, zmin, xmax, ymax, zmax]")
    need(all(cfg.teacher.aabb[i] < cfg.teacher.aabb[i + 3] for i in range(3)) if len(cfg.teacher.aabb) == 6 else True,
         "teacher.aabb", "min < max on every axis")
    need(cfg.teacher.steps >= 1, "teacher.steps", ">= 1")
    need(cfg.teacher.render_step_size > 0, "teacher.render_step_size", "> 0")
    need(0.0 <= cfg.teacher.adam_beta2 < 1.0, "teacher.adam_beta2", "in [0, 1)")
    need(cfg.distill.n_views >= 1, "distill.n_views", ">= 1")
    s = cfg.student
    need(s.sr_factor >= 1 and (s.sr_factor & (s.sr_factor - 1)) == 0, "student.sr_factor", "a power of two")
    need(s.output_size % max(s.sr_factor, 1) == 0, "student.output_size", f"a multiple of sr_factor ({s.sr_factor})")
    n_up = s.sr_factor.bit_length() - 1
    need(len(s.sr_channels) == n_up, "student.sr_channels",
         f"a list of {n_up} channel counts (one per 2x upsampling for sr_factor {s.sr_factor})")
    need(s.n_points >= 1 and s.pe_freqs >= 0 and s.width >= 1, "student.n_points", ">= 1")
    need(s.steps >= 1, "student.steps", ">= 1")
    need(s.max_seconds >= 0, "student.max_seconds", ">= 0 (0: no time budget)")
    need(0.0 <= s.real_fraction <= 1.0, "student.real_fraction", "between 0 and 1")
    need(s.batch_mode == "images" or s.upsample == "pixelshuffle", "student.batch_mode",
         "'images' unless student.upsample is 'pixelshuffle' (ConvTranspose mixes neighbouring rays)")
    need(cfg.export.opset >= 17, "export.opset", ">= 17")
    need(cfg.report.turntable_frames >= 1, "report.turntable_frames", ">= 1")
    need(cfg.report.fps >= 1, "report.fps", ">= 1")
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
    data.setdefault("name", path.stem)
    for item in overrides:
        key, value = parse_override(item)
        _apply_override(data, key, value)
    cfg = _build(Config, data, "", str(path))
    _check_ranges(cfg, str(path))
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
