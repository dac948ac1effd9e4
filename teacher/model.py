"""Building, saving and loading the teacher (field + occupancy grid)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from nerfacc import OccGridEstimator

from pipeline.config import TeacherConfig
from pipeline.errors import StageError

from .field import NGPField
from .hashgrid import HashGridSpec


def build_teacher(cfg: TeacherConfig, device: torch.device) -> tuple[NGPField, OccGridEstimator]:
    aabb = torch.tensor(cfg.aabb, dtype=torch.float32)
    spec = HashGridSpec(**dataclasses.asdict(cfg.hash))
    mlp_dtype = torch.bfloat16 if cfg.mlp_bf16 is True else None
    field = NGPField(aabb, spec, hidden=cfg.hidden, compile=cfg.compile is True, mlp_dtype=mlp_dtype).to(device)
    estimator = OccGridEstimator(roi_aabb=aabb, resolution=cfg.grid_resolution, levels=1).to(device)
    return field, estimator


def load_teacher(path: Path, cfg: TeacherConfig, device: torch.device) -> tuple[NGPField, OccGridEstimator]:
    """Load `model.pt`; a checkpoint of other settings or a corrupt file is a clear error."""
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
    field, estimator = build_teacher(cfg, device)
    try:
        field.load_state_dict(state["field"])
        estimator.load_state_dict(state["estimator"])
    except RuntimeError as err:  # tensor shapes of other settings (a checkpoint without teacher_config)
        raise StageError(f"{path}: does not fit this config's teacher ({str(err).splitlines()[0][:120]}); "
                         "re-run `python -m pipeline stage teacher --force`") from None
    field.eval()
    estimator.eval()
    return field, estimator


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
