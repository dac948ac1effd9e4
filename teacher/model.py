"""Building, saving and loading the teacher (field + occupancy grid)."""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import torch
from nerfacc import OccGridEstimator

from pipeline import machine
from pipeline.config import TeacherConfig
from pipeline.errors import StageError
from pipeline.machine import Choice

from .field import NGPField
from .hashgrid import HashGridSpec
from .space import Space


def speed_switches(cfg: TeacherConfig, device: torch.device) -> dict[str, Choice]:
    """teacher.compile and teacher.mlp_bf16 resolved for this machine (`auto` decided here)."""
    measure = functools.partial(machine.measured, "teacher-field-bf16", field_bf16_speedup)
    return {"teacher.compile": machine.resolve_compile(cfg.compile, device),
            "teacher.mlp_bf16": machine.resolve_mlp_bf16(cfg.mlp_bf16, device, measure)}


def field_bf16_speedup(n_points: int = 1 << 15, repeats: int = 3) -> float:
    """float32 time / bf16 time of one forward + backward of a lego-size field (hash grid
    2^19 x 16 levels, both MLPs) at `n_points` points on the CPU: the teacher's real step,
    casts included, without the sampler. About two seconds on 2 cores."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n_points, 3, generator=gen) * 2 - 1
    d = torch.randn(n_points, 3, generator=gen)
    fields = {}
    for dtype in (None, torch.bfloat16):
        with torch.random.fork_rng(devices=[]):  # the stage's own seeded stream stays untouched
            torch.manual_seed(0)
            fields[dtype] = NGPField(torch.tensor([-1.0, -1, -1, 1, 1, 1]), HashGridSpec(max_resolution=512),
                                     mlp_dtype=dtype)
    best = {dtype: float("inf") for dtype in fields}
    for k in range(repeats + 1):  # the first round warms up; the two alternate, so other load hits both
        for dtype, field in fields.items():
            t0 = time.perf_counter()
            rgb, sigma = field(x, d)
            (rgb.sum() + sigma.sum()).backward()
            if k:
                best[dtype] = min(best[dtype], time.perf_counter() - t0)
    return best[None] / best[torch.bfloat16]


def build_teacher(cfg: TeacherConfig, device: torch.device, switches: dict[str, Choice] | None = None,
                  space: Space | None = None) -> tuple[NGPField, OccGridEstimator]:
    """The field and occupancy grid of `cfg` in `space` (teacher/space.py; default: the box of an
    object); `switches` from `speed_switches` (resolved here if None)."""
    switches = switches or speed_switches(cfg, device)
    space = space or Space()
    aabb = torch.tensor(space.ndc.box if space.ndc is not None else cfg.aabb, dtype=torch.float32)
    spec = HashGridSpec(**dataclasses.asdict(cfg.hash))
    mlp_dtype = torch.bfloat16 if switches["teacher.mlp_bf16"].value else None
    field = NGPField(aabb, spec, hidden=cfg.hidden, compile=switches["teacher.compile"].value,
                     mlp_dtype=mlp_dtype, space=space).to(device)
    estimator = OccGridEstimator(roi_aabb=aabb, resolution=cfg.grid_resolution, levels=space.levels).to(device)
    return field, estimator


def load_teacher(path: Path, cfg: TeacherConfig,
                 device: torch.device) -> tuple[NGPField, OccGridEstimator, dict[str, Choice]]:
    """Load `model.pt`: the field and the occupancy grid in the space it was trained in (its
    `space`; a checkpoint without one: an object's box), and the speed switches it runs with.

    The switches are the ones the teacher was trained with (stored in model.pt), so a
    teacher renders as it trained even where `auto` would decide otherwise (a runs folder
    shared by several machines); a model.pt without them resolves them here. A checkpoint
    of other settings or a corrupt file is a clear error.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise StageError(f"{path}: teacher model not found; run the teacher stage first") from None
    except Exception as err:
        raise StageError(f"{path}: corrupt teacher checkpoint ({err.__class__.__name__}); "
                         "re-run `python -m pipeline stage teacher --force`") from None
    if not isinstance(state, dict) or "field" not in state or "estimator" not in state:
        raise StageError(f"{path}: not a teacher checkpoint (missing 'field'/'estimator')")
    saved = state.get("teacher_config")
    if saved is not None and saved != dataclasses.asdict(cfg):
        raise StageError(f"{path}: checkpoint was trained with other teacher settings than this config's "
                         f"({_differences(saved, dataclasses.asdict(cfg))}); "
                         "re-run `python -m pipeline stage teacher --force`")
    trained_with = state.get("switches")
    if isinstance(trained_with, dict) and set(trained_with) == {"teacher.compile", "teacher.mlp_bf16"}:
        switches = {k: Choice(bool(v), "as the teacher was trained (model.pt)") for k, v in trained_with.items()}
        if device.type != "cpu":  # bf16 MLPs on the CPU only; compile is decided by the device
            switches = speed_switches(cfg, device)
    else:
        switches = speed_switches(cfg, device)
    field, estimator = build_teacher(cfg, device, switches, Space.from_json(state.get("space")))
    try:
        field.load_state_dict(state["field"])
        estimator.load_state_dict(state["estimator"])
    except RuntimeError as err:  # tensor shapes of other settings (a checkpoint without teacher_config)
        raise StageError(f"{path}: does not fit this config's teacher ({str(err).splitlines()[0][:120]}); "
                         "re-run `python -m pipeline stage teacher --force`") from None
    field.eval()
    estimator.eval()
    return field, estimator, switches


def _differences(saved: dict, current: dict, prefix: str = "teacher.") -> str:
    """'teacher.hidden: 32 in the checkpoint, 64 in the config; ...' (first three)."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            if a != b:
                diffs.append(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} in the config")
    return "; ".join(diffs[:3])
