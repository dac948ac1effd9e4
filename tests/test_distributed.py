"""torchrun on this machine: 2 CPU processes over gloo.

Distill sharded over 2 ranks writes the same files as 1 process; the student's
data-parallel step equals the single-process step; a rank killed mid-distill is
resumed by re-running the same command, with every view written exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_pipeline_e2e import TINY

CFG = "configs/tiny.yaml"


def _config(**student) -> str:
    cfg = yaml.safe_load(TINY)
    cfg["teacher"].update(steps=12, checkpoint_every=4)
    cfg["distill"].update(n_views=12)
    cfg["student"]["train"].update(batch_images=4, log_every=1, warmup_steps=1, **student)
    return yaml.safe_dump(cfg)


def _env(faults: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NELF_FAULT_INJECT"}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    if faults:
        env["NELF_FAULT_INJECT"] = faults
    return env


def cli(ws: Path, *args: str, ranks: int = 1, faults: str | None = None) -> subprocess.CompletedProcess:
    if ranks == 1:
        cmd = [sys.executable, "-m", "pipeline", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "pipeline", *args]
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=300, env=_env(faults))
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """data + teacher done, single process."""
    ws = tmp_path_factory.mktemp("dist_base")
    (ws / "configs").mkdir()
    (ws / "configs" / "tiny.yaml").write_text(_config())
    cli(ws, "stage", "data", CFG)
    cli(ws, "stage", "teacher", CFG)
    return ws


def _clone(base: Path, dst: Path) -> Path:
    shutil.copytree(base, dst)
    return dst


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
def test_distill_two_ranks_equals_one(base, tmp_path):
    one = _clone(base, tmp_path / "one")
    two = _clone(base, tmp_path / "two")
    cli(one, "stage", "distill", CFG)
    out = cli(two, "stage", "distill", CFG, ranks=2)
    assert "x 2 ranks" in out.stdout
    d1, d2 = one / "runs/tiny/distill", two / "runs/tiny/distill"
    assert len(_files(d1 / "pseudo")) == 12
    assert _files(d1 / "pseudo") == _files(d2 / "pseudo")
    assert _files(d1 / "test") == _files(d2 / "test")
    for name in ("transforms.json", "transforms_test.json"):
        assert (d1 / name).read_text() == (d2 / name).read_text()
    rec = json.loads((d2 / "record.json").read_text())
    assert rec["world_size"] == 2 and rec["metrics"]["rendered_now"] == 12
    # the cache treats the distributed run like any other: a plain re-run reuses it
    again = cli(two, "stage", "distill", CFG)
    assert "[distill] cached" in again.stdout


@pytest.mark.slow
def test_killed_rank_resumes_without_duplicates(base, tmp_path):
    ws = _clone(base, tmp_path / "ws")
    log = ws / "torchrun.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pipeline", "stage", "distill", CFG]
    proc = subprocess.Popen(cmd, cwd=ws, env=_env("delay:0.4"), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    pseudo = ws / "runs/tiny/distill/pseudo"
    t0 = time.time()
    while len(list(pseudo.glob("*.png"))) < 3:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() - t0 < 120, "no views written"
        time.sleep(0.05)
    # kill -9 one worker (a child of torchrun); torchrun then stops the other one
    workers = _children(proc.pid)
    assert workers, "no torchrun workers found"
    os.kill(workers[0], signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    # torchrun may exit before its surviving worker does; that worker could still write a
    # view after we count, so stop the whole session and wait until every worker is gone
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _wait_gone(workers)
    written = len(list(pseudo.glob("*.png")))
    assert 0 < written < 12 and not (ws / "runs/tiny/distill/record.json").exists()

    out = cli(ws, "stage", "distill", CFG, ranks=2)
    assert f"resuming: {written} of 12 views already written" in out.stdout
    rec = json.loads((ws / "runs/tiny/distill/record.json").read_text())
    assert rec["metrics"]["rendered_now"] == 12 - written
    reference = _clone(base, tmp_path / "ref")
    cli(reference, "stage", "distill", CFG)
    assert _files(pseudo) == _files(reference / "runs/tiny/distill/pseudo")
    assert not list(pseudo.glob("*.tmp")) and not list(pseudo.glob(".*"))


def _wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    """Until none of `pids` runs (a zombie counts as gone: it can no longer write)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                alive.append(pid)
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"workers {pids} still running {timeout} s after torchrun exited")


def _children(pid: int) -> list[int]:
    """Child process ids of `pid`, from /proc (no procps needed)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _student_params(ws: Path) -> dict[str, torch.Tensor]:
    return torch.load(ws / "runs/tiny/student/model.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_student_ddp_step_matches_single_process_and_loss_decreases(base, tmp_path):
    one = _clone(base, tmp_path / "one")
    cli(one, "stage", "distill", CFG)
    two = _clone(one, tmp_path / "two")
    for ws in (one, two):
        (ws / "configs" / "tiny.yaml").write_text(_config(steps=1))
    cli(one, "stage", "student", CFG)
    out = cli(two, "stage", "student", CFG, ranks=2)
    assert "data parallel over 2 ranks: 2 images per rank, global batch 4" in out.stdout
    p1, p2 = _student_params(one), _student_params(two)
    from pipeline.config import load_config
    from student.kinds import StudentCamera, build_student

    state = torch.load(one / "runs/tiny/student/model.pt", weights_only=False)
    scfg = load_config(one / CFG).student
    torch.manual_seed(scfg.train.seed)
    init = build_student(state["kind"], scfg.arch, StudentCamera.from_dict(state["camera"])).state_dict()
    moved = max((p1[k].float() - init[k].float()).abs().max().item() for k in p1 if k.endswith("weight"))
    assert moved > 1e-4, "one step should move the weights"
    for k in p1:
        if k.endswith(".conv.bias"):
            # a conv bias feeding BatchNorm has an exact gradient of 0 (BN subtracts the mean);
            # Adam's first step turns its rounding noise into +-lr, so it carries no signal
            continue
        assert torch.allclose(p1[k].float(), p2[k].float(), atol=1e-5, rtol=1e-4), k

    (two / "configs" / "tiny.yaml").write_text(_config(steps=25))
    cli(two, "stage", "student", CFG, ranks=2)
    curve = json.loads((two / "runs/tiny/student/curve.json").read_text())
    first, last = curve[0]["loss"], min(c["loss"] for c in curve[-5:])
    assert last < first, (first, last)

    # under a time budget, rank 0's clock decides: every rank stops at the same step (no hang)
    (two / "configs" / "tiny.yaml").write_text(_config(steps=25, max_seconds=0.001))
    out = cli(two, "stage", "student", CFG, ranks=2)
    assert "stopping at step 1: student.train.max_seconds=0.001 reached" in out.stdout
    assert json.loads((two / "runs/tiny/student/metrics.json").read_text())["steps"] == 1
