"""Reliability: bad input gets one clear line and the right exit status; interruptions lose nothing.

Bad input runs the real CLI (a subprocess, or `pipeline.cli.main` in-process where
torch is already imported, to keep the file fast). Interruptions kill a running
stage (SIGINT or SIGKILL) at a point chosen with `NELF_FAULT_INJECT`
(pipeline/faults.py) and check that the same command resumes and finishes with
the same outputs as an uninterrupted run.
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

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from conftest import main_inproc
from test_pipeline_e2e import TINY

from pipeline.cli import _one_line
from pipeline.config import ToySceneConfig
from pipeline.toy_scene import write_toy_scene

CFG = "configs/tiny.yaml"


def _config() -> str:
    """The end-to-end test's TINY config with a shorter teacher (its speed is not the point here)."""
    cfg = yaml.safe_load(TINY)
    cfg["teacher"].update(steps=12, checkpoint_every=4)
    return yaml.safe_dump(cfg)


# ---------------------------------------------------------------------------
# helpers


def _env(faults: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NELF_FAULT_INJECT"}
    env["PYTHONUNBUFFERED"] = "1"
    if faults:
        env["NELF_FAULT_INJECT"] = faults
    return env


def cli(ws: Path, *args: str, faults: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in `ws`; never raises on a non-zero exit."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ws, capture_output=True, text=True,
                          timeout=timeout, env=_env(faults))


def start(ws: Path, *args: str, faults: str | None = None) -> tuple[subprocess.Popen, Path]:
    """The CLI in the background; its stdout+stderr go to a file the test can poll."""
    log = ws / f"bg_{time.monotonic_ns()}.log"
    # SIGINT at its default in the child: a shell that runs the tests in the background
    # (`make test &`) makes children ignore it, and the interrupt test would then never interrupt
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ws, env=_env(faults),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, log


def wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"process ended (rc {proc.returncode}) before {what}"
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)


def error_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Assert exit `code`, no traceback, and one 'error: ' line holding every needle; return it."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    print(f"[exit {code}] {lines[0]}")
    return lines[0]


def record(ws: Path, stage: str) -> dict | None:
    path = ws / "runs" / "tiny" / stage / "record.json"
    return json.loads(path.read_text()) if path.exists() else None


def clone(base: Path, dst: Path) -> Path:
    """A copy of a workspace (configs + runs): each test breaks its own."""
    shutil.copytree(base, dst, ignore=shutil.ignore_patterns("*.log"))
    return dst


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The TINY config with data, teacher and distill done (about 10 s)."""
    ws = tmp_path_factory.mktemp("rel_base")
    (ws / "configs").mkdir()
    (ws / "configs" / "tiny.yaml").write_text(_config())
    for stage in ("data", "teacher", "distill"):
        proc = cli(ws, "stage", stage, CFG)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return ws


@pytest.fixture()
def ws(base, tmp_path) -> Path:
    return clone(base, tmp_path / "ws")


# ---------------------------------------------------------------------------
# 1-3: config, overrides, stages


def test_config_file_missing_not_yaml_not_mapping(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.yaml").write_text("teacher: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- teacher\n- student\n")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "folder.yaml").mkdir()
    # the real entry point once (`python -m pipeline`: exit status and one line on stderr) ...
    error_line(cli(tmp_path, "status", "nope.yaml"), 2, "config file not found: nope.yaml")

    def run(*args: str) -> subprocess.CompletedProcess:  # ... the rest in-process: the same main()
        return main_inproc(tmp_path, monkeypatch, capsys, *args)

    error_line(run("status", "bad.yaml"), 2, "bad.yaml: not valid YAML at line 2")
    error_line(run("status", "list.yaml"), 2, "list.yaml: expected a mapping", "got list")
    error_line(run("status", "bin.yaml"), 2, "bin.yaml: not a text file")
    error_line(run("status", "folder.yaml"), 2, "folder.yaml is a folder")


def test_unknown_key_wrong_type_and_bad_overrides(tmp_path, monkeypatch, capsys):
    (tmp_path / "c.yaml").write_text("teacher:\n  hash: {n_levles: 4}\nstudent: {mobiler2l: {width: wide}}\n")
    (tmp_path / "t.yaml").write_text("student: {mobiler2l: {width: wide}}\n")
    (tmp_path / "ok.yaml").write_text("name: ok\n")
    (tmp_path / "old.yaml").write_text("name: old\nstudent: {kind: gridlf, gridlf: {surface: pixel}}\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        return main_inproc(tmp_path, monkeypatch, capsys, *args)

    error_line(run("status", "c.yaml"), 2, "unknown key 'teacher.hash.n_levles'", "did you mean 'n_levels'")
    error_line(run("status", "t.yaml"), 2, "'student.mobiler2l.width' must be an integer, got 'wide'")
    error_line(run("status", "old.yaml"), 2, "'student.gridlf.surface' was removed", "docs/DESIGN.md")
    error_line(run("status", "ok.yaml", "--set", "teacher.hash.sizee=3"), 2, "unknown key 'teacher.hash.sizee'")
    error_line(run("status", "ok.yaml", "--set", "teacher.steps.x=3"), 2, "'teacher.steps' is not a section")
    error_line(run("status", "ok.yaml", "--set", "teacher.steps=[1,"), 2, "cannot parse value '[1,'")
    error_line(run("status", "ok.yaml", "--set", "teacher.steps"), 2, "expected KEY.PATH=VALUE")
    error_line(run("status", "ok.yaml", "--set", "teacher.steps=many"), 2,
               "'teacher.steps' must be an integer, got 'many'")


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_unknown_stage_and_upstream_not_done(base, tmp_path):
    error_line(cli(base, "stage", "teachr", CFG), 2, "unknown stage 'teachr'", "data, teacher, distill")
    # the teacher is stale for other teacher settings (the student reads it: its surfaces)
    error_line(cli(base, "stage", "student", CFG, "--set", "teacher.steps=13"), 1,
               "stage 'student' needs stage 'teacher' first", "is stale", "python -m pipeline stage teacher")
    empty = tmp_path / "empty"
    shutil.copytree(base / "configs", empty / "configs")
    error_line(cli(empty, "stage", "teacher", CFG), 1, "needs stage 'data' first", "is missing")


# ---------------------------------------------------------------------------
# 4-5: scene folder and images


@pytest.fixture(scope="module")
def toy_scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scene") / "toy"
    write_toy_scene(ToySceneConfig(size=8, n_train=2, n_val=1, n_test=1), root)
    return root


def _scene_ws(tmp_path: Path, toy_scene: Path) -> tuple[Path, Path]:
    """A workspace whose config reads a copy of the toy scene as a Blender scene."""
    ws, scene = tmp_path / "ws", tmp_path / "scene"
    shutil.copytree(toy_scene, scene)
    (ws / "configs").mkdir(parents=True)
    (ws / "configs" / "scn.yaml").write_text(f"name: scn\ndata: {{kind: blender, root: '{scene}'}}\n")
    return ws, scene


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


SCENE_CASES = {
    "folder missing": (lambda s: shutil.rmtree(s), "scene folder not found"),
    "transforms missing": (lambda s: (s / "transforms_train.json").unlink(), "transforms_train.json: missing"),
    "malformed JSON": (lambda s: (s / "transforms_test.json").write_text('{"frames": [}'),
                       "transforms_test.json: malformed JSON at line 1"),
    "no camera_angle_x": (lambda s: _edit_json(s / "transforms_train.json", lambda m: m.pop("camera_angle_x")),
                          "'camera_angle_x' must be a number in (0, pi) radians (or give each frame's "
                          "focal length in pixels as 'fl_x'), got None"),
    "no frames": (lambda s: _edit_json(s / "transforms_val.json", lambda m: m.pop("frames")),
                  "transforms_val.json: 'frames' must be a non-empty list"),
    "3x4 matrix": (lambda s: _edit_json(s / "transforms_train.json",
                                        lambda m: m["frames"][1]["transform_matrix"].pop()),
                   "frames[1].transform_matrix must be a 4x4 matrix of finite numbers, got shape (3, 4)"),
    "NaN in matrix": (lambda s: _edit_json(s / "transforms_test.json",
                                           lambda m: m["frames"][0]["transform_matrix"][0].__setitem__(3, np.nan)),
                      "frames[0].transform_matrix must be a 4x4 matrix of finite numbers, got NaN or infinity"),
    "zero rotation": (lambda s: _edit_json(s / "transforms_train.json", lambda m: _set_rotation(m, 1, 0.0)),
                      "frames[1].transform_matrix must be a 4x4 matrix of finite numbers, but its top-left 3x3 "
                      "is not a rotation (determinant 0;"),
    "scaled rotation": (lambda s: _edit_json(s / "transforms_test.json", lambda m: _set_rotation(m, 0, 2.0)),
                        "frames[0].transform_matrix must be a 4x4 matrix of finite numbers, but its top-left 3x3 "
                        "is not a rotation (determinant 8;"),
}


def _set_rotation(meta: dict, k: int, scale: float) -> None:
    """Frame k's rotation times `scale` (0: all zero; 2: a scaled camera, determinant 8)."""
    m = meta["frames"][k]["transform_matrix"]
    for row in m[:3]:
        row[:3] = [scale * v for v in row[:3]]


def _rewrite_png(path: Path, transform) -> None:
    path.write_bytes(iio.imwrite("<bytes>", transform(iio.imread(path)), extension=".png"))


IMAGE_CASES = {
    "image missing": (lambda s: (s / "train" / "r_1.png").unlink(), "frames[1] image not found"),
    "truncated PNG": (lambda s: (s / "train" / "r_0.png").write_bytes((s / "train" / "r_0.png").read_bytes()[:60]),
                      "unreadable or corrupt image"),
    "size differs in a split": (lambda s: _rewrite_png(s / "train" / "r_1.png", lambda a: np.tile(a, (2, 2, 1))),
                                "r_1.png: size 16x16 differs from the split's 8x8"),
    "size differs across splits": (lambda s: _rewrite_png(s / "test" / "r_0.png", lambda a: np.tile(a, (2, 2, 1))),
                                   "test images are 16x16 after downscale but train images are 8x8"),
}


@pytest.mark.parametrize("case", [*SCENE_CASES, *IMAGE_CASES])
def test_bad_scene_folder_or_images(case, toy_scene, tmp_path, monkeypatch, capsys):
    ws, scene = _scene_ws(tmp_path, toy_scene)
    break_it, needle = {**SCENE_CASES, **IMAGE_CASES}[case]
    break_it(scene)
    error_line(main_inproc(ws, monkeypatch, capsys, "stage", "data", "configs/scn.yaml"), 1, needle)


def test_rgb_image_when_alpha_required(toy_scene, tmp_path, monkeypatch, capsys):
    ws, scene = _scene_ws(tmp_path, toy_scene)
    _rewrite_png(scene / "train" / "r_0.png", lambda a: a[..., :3])
    ok = main_inproc(ws, monkeypatch, capsys, "stage", "data", "configs/scn.yaml")
    assert ok.returncode == 0, ok.stderr  # by default an RGB image loads as fully opaque
    error_line(main_inproc(ws, monkeypatch, capsys, "stage", "data", "configs/scn.yaml", "--set",
                           "data.require_alpha=true"), 1,
               "r_0.png: no alpha channel", "data.require_alpha is true", "set data.require_alpha: false")


# ---------------------------------------------------------------------------
# 6: teacher checkpoints from another config or corrupt


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_teacher_model_from_other_config_or_corrupt(ws):
    from pipeline.config import load_config
    from pipeline.errors import StageError
    from teacher.model import load_teacher

    cfg = load_config(ws / CFG).teacher
    model = ws / "runs" / "tiny" / "teacher" / "model.pt"
    good = model.read_bytes()
    state = torch.load(model, weights_only=False)
    state["teacher_config"]["hidden"] = 32
    torch.save(state, model)
    with pytest.raises(StageError, match="model.pt: checkpoint was trained with other teacher settings") as err:
        load_teacher(model, cfg, torch.device("cpu"))
    assert "teacher.hidden: 32 in the checkpoint, 64 in the config" in str(err.value)
    assert "stage teacher --force" in str(err.value)
    model.write_bytes(good[: len(good) // 2])
    with pytest.raises(StageError, match="model.pt: corrupt teacher checkpoint.*stage teacher --force"):
        load_teacher(model, cfg, torch.device("cpu"))
    # through the command line, a model.pt that is not the one the teacher wrote makes the teacher
    # stale (its record keeps each output's size), so nothing renders from it
    error_line(cli(ws, "stage", "distill", CFG, "--force"), 1, "needs stage 'teacher' first", "is stale")
    status = cli(ws, "status", CFG)
    assert "output changed: model.pt" in status.stdout, status.stdout


# ---------------------------------------------------------------------------
# 7: output folder not writable, not enough disk


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_runs_dir_not_writable(ws):
    (ws / "blocker").write_text("a file where runs_dir needs a folder")
    error_line(cli(ws, "stage", "data", CFG, "--set", "runs_dir=blocker/runs"), 1,
               "cannot write the output folder blocker/runs/tiny/data", "set runs_dir to a writable folder")


def test_oserror_is_one_line():
    message, code = _one_line(PermissionError(13, "Permission denied", "/data/out.png"))
    assert code == 1 and message.startswith("/data/out.png: Permission denied")


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_distill_refuses_without_disk_space(ws):
    proc = cli(ws, "stage", "distill", CFG, "--force", faults="free_bytes:5000")
    error_line(proc, 1, "not enough disk space for distill.n_views=6", "8 views of 16x16 px",
               "need up to 0.0145 MB", "only 0.005 MB are free", "lower distill.n_views")
    assert not list((ws / "runs" / "tiny" / "distill").glob("pseudo/*.png")), "refused before rendering"


# ---------------------------------------------------------------------------
# 8: NaN during training; a corrupt checkpoint on resume


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_teacher_nan_keeps_last_good_checkpoint_and_resumes(ws):
    out = ws / "runs" / "tiny" / "teacher"
    args = ("stage", "teacher", CFG, "--force")
    error_line(cli(ws, *args, faults="nan_at_step:9"), 1, "teacher: loss became nan at step 9",
               f"last good checkpoint (step 8) is kept in {Path('runs/tiny/teacher/checkpoint.pt')}",
               "teacher.lr")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 8 and all(torch.isfinite(v).all() for v in ckpt["field"].values())
    assert record(ws, "teacher") is None

    resumed = cli(ws, *args[:-1])  # the same command, without --force, resumes
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step 8" in resumed.stdout
    rec = record(ws, "teacher")
    assert rec["resumed"] is True and rec["metrics"]["resumed_from_step"] == 8 and rec["metrics"]["steps"] == 12
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_student_nan_then_corrupt_checkpoint_restarts(ws):
    out = ws / "runs" / "tiny" / "student"
    args = ("stage", "student", CFG, "--set", "student.train.checkpoint_every=5")
    error_line(cli(ws, *args, faults="nan_at_step:7"), 1, "student: loss became nan at step 7",
               "last good checkpoint (step 5)")
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # torn, as by a full disk
    again = cli(ws, *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "warning: cannot read checkpoint" in again.stdout and "starting from step 0" in again.stdout
    assert (out / "checkpoint.pt.corrupt").exists()
    rec = record(ws, "student")
    assert rec["resumed"] is True and rec["metrics"]["resumed_from_step"] == 0


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_student_time_budget_stops_early_and_is_recorded(ws):
    proc = cli(ws, "stage", "student", CFG, "--force", "--set", "student.train.max_seconds=0.001")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stopping at step 1: student.train.max_seconds=0.001 reached" in proc.stdout
    rec = record(ws, "student")
    assert rec["metrics"]["steps"] == 1 and rec["settings"]["student"]["train"]["max_seconds"] == 0.001
    error_line(cli(ws, "stage", "student", CFG, "--set", "student.train.max_seconds=-1"), 2,
               "student.train.max_seconds", ">= 0")


# ---------------------------------------------------------------------------
# Interruptions


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_invalid_record_is_never_done(ws, monkeypatch, capsys):
    rec = ws / "runs" / "tiny" / "distill" / "record.json"
    for text in ("{", "[]", ""):
        rec.write_text(text)
        status = main_inproc(ws, monkeypatch, capsys, "status", CFG)
        assert "distill  missing" in status.stdout and "teacher  done" in status.stdout


def test_distill_time_budget_keeps_the_views_written(ws):
    """distill.max_seconds ends rendering early; the set is the views written, in order, and the
    record says how many of those asked for."""
    out = ws / "runs" / "tiny" / "distill"
    proc = cli(ws, "stage", "distill", CFG, "--force", "--set", "distill.n_views=30", "--set",
               "distill.max_seconds=0.5", faults="delay:0.2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames = json.loads((out / "transforms.json").read_text())["frames"]
    files = sorted(p.stem for p in out.glob("pseudo/*.png"))
    assert 1 <= len(frames) < 30 and [f["file_path"] for f in frames] == [f"pseudo/{k}" for k in files]
    assert files == [f"{k:05d}" for k in range(len(files))]  # one process: the first views
    metrics = record(ws, "distill")["metrics"]
    assert metrics["n_views"] == len(frames) and metrics["n_views_asked"] == 30
    assert "distill.max_seconds=0.5 ended rendering" in proc.stdout


def _outputs(folder: Path) -> dict[str, bytes]:
    """Every distill output a downstream stage reads, by relative name."""
    names = ["transforms.json", "transforms_test.json"]
    names += [str(p.relative_to(folder)) for p in sorted(folder.glob("*/*.png"))]
    return {n: (folder / n).read_bytes() for n in names}


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_distill_sigkill_resumes_with_identical_outputs(ws, tmp_path):
    out = ws / "runs" / "tiny" / "distill"
    shutil.rmtree(out)  # the 6 views of the base run must not count as progress
    args = ("stage", "distill", CFG, "--set", "distill.n_views=30")
    proc, _ = start(ws, *args, faults="delay:0.1")
    wait_for(lambda: len(list(out.glob("pseudo/*.png"))) >= 5, proc, "5 views")
    proc.kill()
    proc.wait()
    assert record(ws, "distill") is None
    kept = len(list(out.glob("pseudo/*.png")))
    assert 5 <= kept < 30

    resumed = cli(ws, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming: {kept} of 30 views already written" in resumed.stdout
    rec = record(ws, "distill")
    assert rec["resumed"] is True and rec["metrics"]["rendered_now"] == 30 - kept
    assert not list(out.rglob("*.tmp"))
    got = _outputs(out)

    fresh = cli(ws, *args, "--force")
    assert fresh.returncode == 0 and record(ws, "distill")["resumed"] is False
    want = _outputs(out)
    assert sorted(got) == sorted(want) and len([n for n in got if n.startswith("pseudo/")]) == 30
    assert [n for n in want if got[n] != want[n]] == [], "resumed views differ from an uninterrupted run"


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_teacher_sigint_stops_cleanly_and_resumes(ws):
    out = ws / "runs" / "tiny" / "teacher"
    args = ("stage", "teacher", CFG, "--set", "teacher.steps=24")
    # slowed down, so that the interrupt lands mid-run also on a fast machine (CI once finished first)
    proc, log = start(ws, *args, faults="delay:0.1")
    wait_for(lambda: (out / "checkpoint.pt").exists(), proc, "the first checkpoint")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    text = log.read_text()
    assert "Traceback" not in text
    command = f"python -m pipeline {' '.join(args)}"
    assert f"interrupted; finished outputs and the last checkpoint are kept. Run `{command}` again to resume." in text
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    assert step in (4, 8, 12, 16, 20) and record(ws, "teacher") is None

    resumed = cli(ws, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from step {step}" in resumed.stdout
    rec = record(ws, "teacher")
    assert rec["resumed"] is True and rec["metrics"]["steps"] == 24


@pytest.mark.slow  # runs the pipeline (the TINY config) and breaks it
def test_concurrent_run_refused_then_sigkill_resumes(ws):
    out = ws / "runs" / "tiny" / "student"
    args = ("stage", "student", CFG, "--set", "student.train.steps=60", "--set", "student.train.checkpoint_every=10")
    first, log = start(ws, *args, faults="delay:0.1")
    wait_for(lambda: "[student] running" in log.read_text(), first, "the first run to start")
    second = cli(ws, *args)
    error_line(second, 1, "stage 'student' of config 'tiny' is already running in another process")

    wait_for(lambda: (out / "checkpoint.pt").exists(), first, "the first checkpoint")
    first.kill()  # SIGKILL: the kernel releases the lock
    first.wait()
    step = torch.load(out / "checkpoint.pt", weights_only=False)["step"]
    resumed = cli(ws, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from step {step}" in resumed.stdout
    rec = record(ws, "student")
    assert rec["resumed"] is True and rec["metrics"]["resumed_from_step"] == step
