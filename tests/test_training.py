"""The one training loop (pipeline/training.py): schedules, progress, the budget warning,
and the loop itself on a model small enough to check by hand (resume, NaN stop, budget)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from pipeline.errors import StageError
from pipeline.training import CHECKPOINT, LoopSettings, StepOutput, budget_warning, progress, train
from student.stage import lr_schedule as student_schedule
from teacher.stage import lr_schedule as teacher_schedule


def test_progress_follows_whichever_is_further():
    assert progress(100, 1000, 50.0, 100.0) == 0.5  # time is further along than steps
    assert progress(900, 1000, 50.0, 100.0) == 0.9  # steps are
    assert progress(250, 1000, 1e6, 0.0) == 0.25  # no budget: steps alone


def test_student_schedule_closed_form():
    f = student_schedule(warmup_steps=0, steps=1000)
    assert f(10, 0.0) == 1.0 and abs(f(10, 1.0) - 0.05) < 1e-12
    assert abs(f(10, 0.5) - 0.525) < 1e-12  # cosine midpoint: 0.05 + 0.95 / 2
    assert student_schedule(10, 1000)(4, 0.9) == 0.5  # warm-up first: (4 + 1) / 10
    # with a warm-up, the cosine runs over the steps after it: step 505 of 1000 is its midpoint
    g = student_schedule(10, 1000)
    assert abs(g(505, 505 / 1000) - 0.525) < 1e-12


def test_teacher_schedule_closed_form():
    f = teacher_schedule(warmup_steps=100)
    assert abs(f(0, 0.0) - 0.01) < 1e-12 and f(100, 0.2) == 1.0
    assert abs(f(100, 0.5) - 0.33) < 1e-12 and abs(f(100, 0.8) - 0.33**2) < 1e-12
    assert abs(f(100, 0.95) - 0.33**3) < 1e-12


def test_budget_warning_names_the_setting_and_step_count():
    s = LoopSettings(name="teacher", knob="teacher", steps=20000, max_seconds=1200.0, expected_steps=5000)
    # 8 s a step (bf16 autocast on a CPU without native bf16): ~150 steps in 20 minutes
    msg = budget_warning(s, done=10, seconds=80.0)
    assert msg is not None
    assert "teacher.max_seconds=1200" in msg and "about 150 steps" in msg and "5,000" in msg
    assert budget_warning(s, done=50, seconds=10.0) is None  # 6000 steps projected: fine
    assert budget_warning(s, done=10, seconds=4.7) is None  # 2553 projected: over half is fine
    assert budget_warning(s, done=10, seconds=5.0) is not None  # 2400 < 2500: warn
    no_budget = LoopSettings(name="teacher", knob="teacher", steps=20000)
    assert budget_warning(no_budget, done=1, seconds=1000.0) is None
    # without expected_steps, `steps` is what the recipe expects
    plain = LoopSettings(name="student", knob="student.train", steps=1000, max_seconds=10.0)
    assert "student.train.max_seconds=10" in budget_warning(plain, done=10, seconds=1.0)


@dataclass
class FakeContext:
    out_dir: Path
    resume: bool = True
    device: torch.device = torch.device("cpu")
    lines: list[str] = field(default_factory=list)

    def log(self, msg: str) -> None:
        self.lines.append(msg)


def _fit_line(ctx, steps: int, nan_at: int | None = None, max_seconds: float = 0.0, **kw):
    """Fit y = 3x - 1 with one Linear layer; returns (model, result)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.linspace(-1, 1, 64)[:, None]
    y = 3 * x - 1
    seen = []

    def step_fn(step: int) -> StepOutput:
        seen.append(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        return StepOutput(loss * float("nan") if step == nan_at else loss)

    s = LoopSettings(name="toy", knob="toy", steps=steps, max_seconds=max_seconds, checkpoint_every=5,
                     log_every=1, **kw)
    result = train(ctx, s, step_fn, lambda step, p: 1.0, opt, {"model": model}, model.parameters)
    return model, result, seen


def test_loop_trains_stops_on_nan_and_resumes(tmp_path):
    ctx = FakeContext(tmp_path)
    with pytest.raises(StageError, match=r"toy: loss became nan at step 7; .*last good checkpoint \(step 5\)"):
        _fit_line(ctx, steps=60, nan_at=7)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["step"] == 5

    model, result, seen = _fit_line(ctx, steps=60)  # resumes from step 5
    assert seen[0] == 5 and result.start == 5 and result.steps == 60
    assert any("resuming from step 5" in line for line in ctx.lines)
    w, b = model.weight.item(), model.bias.item()
    assert abs(w - 3) < 0.05 and abs(b + 1) < 1e-3  # the loop really optimises
    assert [row["step"] for row in result.curve] == list(range(60))  # steps 0-4 logged before, 5-59 now
    assert result.curve[-1]["psnr"] > result.curve[0]["psnr"]
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["trained"] and ckpt["step"] == 60

    # a finished run's checkpoint: no retraining, same step count
    _, again, seen = _fit_line(ctx, steps=60)
    assert seen == [] and again.steps == 60


def test_loop_time_budget_stops_and_warns(tmp_path):
    ctx = FakeContext(tmp_path, resume=False)
    _, result, _ = _fit_line(ctx, steps=1000, max_seconds=1e-6)
    assert result.steps == 1
    assert "stopping at step 1: toy.max_seconds=1e-06 reached" in ctx.lines
    # the budget ends training long before 1000 steps: the warning came first, once
    warnings = [line for line in ctx.lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "toy.max_seconds" in warnings[0] and math.isfinite(result.seconds)
