"""What the teacher and student training loops share: resuming, and stopping on NaN.

A checkpoint is written only after checking that the parameters are finite,
so the one on disk is always a good state to resume from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from . import faults
from .errors import StageError


def resume_from(path: Path, device: torch.device, targets: dict[str, Any],
                log: Callable[[str], None]) -> dict | None:
    """Restore `targets` (name -> object with `load_state_dict`) from the checkpoint
    of an interrupted run; return the checkpoint dict, or None to start from step 0.

    An unreadable checkpoint (torn by a full disk or copied half-way: our own
    writes are atomic) is moved aside to `<name>.corrupt` with a warning and
    training restarts: stopping would leave the user nothing to do but delete it.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a training checkpoint")
    except Exception as err:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log(f"warning: cannot read checkpoint {path} ({err.__class__.__name__}); moved it to {aside.name} "
            "and starting from step 0")
        return None
    try:
        for name, obj in targets.items():
            obj.load_state_dict(state[name])
    except (KeyError, RuntimeError, ValueError) as err:
        # readable but not ours: half-restored objects must not train on
        raise StageError(f"{path}: cannot resume from this checkpoint ({err.__class__.__name__}: "
                         f"{str(err).splitlines()[0][:120]}); delete it or run the stage with --force") from None
    return state


def inject_faults(loss: torch.Tensor, step: int) -> torch.Tensor:
    """The loss, made NaN when a test asks for it (pipeline/faults.py); else unchanged."""
    faults.delay()
    return loss * float("nan") if faults.nan_at(step) else loss


def all_finite(params: Iterable[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def nonfinite_error(stage: str, problem: str, step: int, ckpt_path: Path, last_good: int, knob: str) -> StageError:
    """The error for a NaN/inf (`problem`, e.g. 'loss became nan') at `step`; names the checkpoint kept."""
    kept = (f"the last good checkpoint (step {last_good}) is kept in {ckpt_path}" if last_good
            else "no checkpoint had been written yet")
    return StageError(f"{stage}: {problem} at step {step}; training stopped and {kept}. "
                      f"Try a lower {knob}")
