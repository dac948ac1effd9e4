"""The one training loop every stage uses, read top to bottom (nanoGPT's train.py is the model).

A stage builds its model, optimizer and data, then hands `train()` two things of
its own: a `step` function (one batch: forward, loss) and a learning-rate
`schedule`. The loop owns everything else, the same for teacher and student:

- resuming from the checkpoint of an interrupted run (an unreadable one is moved
  aside and training restarts), periodic checkpoints written only while every
  parameter is finite, and a final one marked `trained` so that an interrupted
  evaluation does not retrain;
- stopping with a clear error on a NaN/inf loss, naming the step and the
  checkpoint kept;
- the wall-clock budget (`max_seconds`): training stops at whichever of `steps`
  and the budget comes first, and the schedule follows whichever is further
  along; in a data-parallel stage rank 0's clock decides, so every rank uses the
  same learning rate and stops on the same step;
- a warning, once, when the measured step rate means the budget will end
  training far short of the steps the recipe expects;
- the loss/PSNR curve, and a progress bar.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed, faults
from .errors import StageError
from .io import atomic_torch_save
from .progress import progress as progress_bar

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs of a stage's training settings. `name` is the stage's, `knob`
    the config section of its training settings, for messages ('student.train.max_seconds')."""

    name: str
    knob: str
    steps: int
    max_seconds: float = 0.0  # 0: no time budget
    expected_steps: int = 0  # steps the recipe needs to do its job (0: `steps`); see budget_warning
    checkpoint_every: int = 500
    log_every: int = 50
    collective: bool = False  # every torchrun rank runs this loop (rank 0's clock decides)


@dataclass
class StepOutput:
    """What a stage's step function returns: the loss to minimise, and a function giving
    the curve's extra fields (called on logging steps only: `.item()` synchronises)."""

    loss: torch.Tensor
    log: Callable[[], dict[str, float]] = field(default=lambda: {})


@dataclass
class TrainResult:
    steps: int  # steps done in total (resumed ones included)
    start: int  # the step training (re)started from: 0, or the checkpoint's
    seconds: float  # training wall time, resumed runs' time included
    curve: list[dict]


def progress(step: int, steps: int, seconds: float, max_seconds: float) -> float:
    """Training progress in [0, 1+): whichever of steps and seconds is further along."""
    by_steps = step / steps
    return max(by_steps, seconds / max_seconds) if max_seconds else by_steps


def budget_warning(s: LoopSettings, done: int, seconds: float) -> str | None:
    """The warning for a time budget that cannot do its job, or None.

    After `done` steps in `seconds`, the budget (`s.max_seconds`) allows about
    done / seconds * max_seconds steps; when that is under half of what the
    recipe expects (`s.expected_steps`, else `s.steps`), say so once, naming
    the settings: on a slower machine (or with a slow switch such as bf16 on a
    CPU without native bf16) the same config trains a fraction of its steps.
    """
    if not s.max_seconds or done <= 0 or seconds <= 0:
        return None
    expected = min(s.expected_steps or s.steps, s.steps)
    projected = int(done / seconds * s.max_seconds)
    if projected >= expected / 2:
        return None
    return (f"warning: at {seconds / done:.2f} s a step, {s.knob}.max_seconds={s.max_seconds:g} ends training "
            f"after about {projected:,} steps, far short of the {expected:,} this recipe expects "
            f"({s.knob}.expected_steps); expect lower quality, or raise {s.knob}.max_seconds")


# a budget warning looks at the rate after these many steps (the first steps warm up caches
# and, for the teacher, still run with small batches) or this many seconds, whichever comes first
_RATE_STEPS, _RATE_SECONDS = 50, 60.0


def train(
    ctx,
    s: LoopSettings,
    step_fn: Callable[[int], StepOutput | None],
    schedule: Callable[[int, float], float],
    optimizer: torch.optim.Optimizer,
    targets: dict[str, Any],
    params: Callable[[], Iterable[torch.Tensor]],
    extra: dict | None = None,
    before_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Run the training loop; return what it did.

    Args:
        ctx: the stage context (`out_dir`, `resume`, `device`, `log`).
        s: loop settings.
        step_fn: step -> StepOutput (forward and loss of one batch), or None to skip
            the step (e.g. the teacher's batch had no samples).
        schedule: (step, progress in [0, 1+)) -> learning-rate factor; every group's
            lr is its initial lr times this, set before each optimizer step.
        optimizer: the optimizer; its state is checkpointed.
        targets: name -> object with state_dict/load_state_dict (model, estimator...),
            checkpointed and restored with the optimizer.
        params: the parameters that must be finite for a checkpoint to be written.
        extra: the stage's own resumable state (JSON-like values its step function
            reads and updates, e.g. the teacher's adaptive batch size): checkpointed,
            and updated in place from the checkpoint on resume.
        before_step: called with the step number before `step_fn` (e.g. occupancy-grid updates).
    """
    ckpt_path = ctx.out_dir / CHECKPOINT
    targets = {**targets, "optimizer": optimizer}
    base_lrs = [g["lr"] for g in optimizer.param_groups]  # before a checkpoint overwrites them
    extra = {} if extra is None else extra
    start, curve, elapsed, trained = 0, [], 0.0, False
    state = resume_from(ckpt_path, ctx.device, targets, ctx.log) if ctx.resume else None
    if state is not None:
        start, curve, elapsed = state["step"], state["curve"], state["elapsed"]
        trained = state.get("trained", False)
        extra.update(state.get("extra", {}))
        torch.set_rng_state(state["rng"].cpu())  # map_location moved it to the device
        if "cuda_rng" in state and ctx.device.type == "cuda":  # the teacher draws its rays on the GPU
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), ctx.device)
        ctx.log(f"resuming from step {start} ({ckpt_path}){'; training had finished' if trained else ''}")
    last_good = done = start
    elapsed0 = elapsed  # the rate for budget_warning counts this run's steps only

    def save_checkpoint(step: int, trained: bool = False) -> None:
        if not distributed.is_main():
            return
        if not all_finite(params()):
            raise nonfinite_error(s, "parameters became non-finite", step, ckpt_path, last_good)
        atomic_torch_save(ckpt_path, {
            **{name: obj.state_dict() for name, obj in targets.items()},
            "step": step, "curve": curve, "elapsed": elapsed, "rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(ctx.device)} if ctx.device.type == "cuda" else {}),
            "trained": trained, "extra": dict(extra)})

    t_last, warned = time.time(), False
    bar = progress_bar(range(start, start if trained else s.steps), desc=s.name, initial=start, total=s.steps,
               unit="step", disable=not distributed.is_main())
    for step in bar:
        spent = elapsed + time.time() - t_last
        if s.max_seconds and s.collective:
            spent = distributed.broadcast(spent)  # rank 0's clock: one schedule, one last step
        factor = schedule(step, progress(step, s.steps, spent, s.max_seconds))
        for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = lr * factor
        if before_step is not None:
            before_step(step)

        out = step_fn(step)
        if out is None:
            continue
        faults.delay()
        loss = out.loss * float("nan") if faults.nan_at(step) else out.loss
        if not torch.isfinite(loss):
            raise nonfinite_error(s, f"loss became {loss.item()}", step, ckpt_path, last_good)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = step + 1

        if step % s.log_every == 0 or done == s.steps:
            now = time.time()
            elapsed += now - t_last
            t_last = now
            row = {"step": step, "seconds": round(elapsed, 2), "loss": loss.item(), **out.log()}
            row.setdefault("psnr", -10 * math.log10(max(row["loss"], 1e-10)))
            curve.append(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "seconds")})
        if done % s.checkpoint_every == 0 and done < s.steps:
            save_checkpoint(done)
            last_good = done
        now_spent = elapsed + time.time() - t_last
        out_of_time = bool(s.max_seconds) and now_spent >= s.max_seconds
        if s.max_seconds and s.collective:
            out_of_time = distributed.broadcast(out_of_time)
        if not warned and (done - start >= _RATE_STEPS or now_spent - elapsed0 >= _RATE_SECONDS or out_of_time):
            warned = True
            message = budget_warning(s, done - start, now_spent - elapsed0)
            if message:
                ctx.log(message)
        if out_of_time:
            ctx.log(f"stopping at step {done}: {s.knob}.max_seconds={s.max_seconds:g} reached")
            break
    bar.close()
    if not trained:
        elapsed += time.time() - t_last
        save_checkpoint(done, trained=True)
    return TrainResult(steps=done, start=start, seconds=elapsed, curve=curve)


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
        if distributed.is_main():  # one rank moves it; under torchrun every rank starts from step 0
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


def all_finite(params: Iterable[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def nonfinite_error(s: LoopSettings, problem: str, step: int, ckpt_path: Path, last_good: int) -> StageError:
    """The error for a NaN/inf (`problem`, e.g. 'loss became nan') at `step`; names the checkpoint kept."""
    kept = (f"the last good checkpoint (step {last_good}) is kept in {ckpt_path}" if last_good
            else "no checkpoint had been written yet")
    return StageError(f"{s.name}: {problem} at step {step}; training stopped and {kept}. Try a lower {s.knob}.lr")
