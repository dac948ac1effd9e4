"""Shared by bench/lego_cpu.py and bench/capture.py: run a whole profile (`python -m pipeline run`)
in a benchmark workspace, then print its stage table and, last, one JSON line of its figures;
with `--record`, append them to bench/results/measurements.jsonl (docs/PERFORMANCE.md is made
from that file by bench/update_performance.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from pipeline.machine import short

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("data", "teacher", "distill", "student", "export", "report")
MEASUREMENTS = ROOT / "bench" / "results" / "measurements.jsonl"


def git_commit() -> str | None:
    """HEAD's short hash, with '+dirty' when tracked files differ from it; None outside a git checkout."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return git("rev-parse", "--short=7", "HEAD") + ("+dirty" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def run_config(config: str, workspace: Path, commands: list[list[str]], sets: list[str]) -> Path | None:
    """Run each `python -m pipeline <command> configs/<config> --set ...` in `workspace` (a copy of
    the config there, so the repository's runs/ is untouched); returns the workspace, or None when
    a command failed (the pipeline has printed why)."""
    ws = Path(workspace)
    (ws / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "configs" / config, ws / "configs" / config)
    flags = [f for s in sets for f in ("--set", s)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "pipeline", *command, f"configs/{config}", *flags],
                              cwd=ws, env=env)
        if done.returncode != 0:
            print(f"error: `python -m pipeline {' '.join(command)} configs/{config}` stopped (exit {done.returncode})",
                  file=sys.stderr)
            return None
    return ws


def summarize(ws: Path, name: str, what: str, max_gap_db: float, target_seconds: float, record: bool,
              commit: str | None, day: str, extra: dict | None = None) -> dict:
    """Print the stage table of run `name` in workspace `ws` and return its JSON line (printed by the
    caller, last); with `record`, append the measurement to MEASUREMENTS."""
    recs = {s: json.loads((ws / "runs" / name / s / "record.json").read_text()) for s in STAGES}
    teacher, student, export = (recs[s]["metrics"] for s in ("teacher", "student", "export"))
    total = sum(recs[s]["seconds"] for s in STAGES)
    size = export.get("frame", {})
    print()
    print(f"machine: {short(recs['student']['machine'])}")
    print(f"{'stage':<9}{'seconds':>9}  result")
    notes = {
        "data": " / ".join(f"{v} {k[2:]}" for k, v in recs["data"]["metrics"].items()
                           if k in ("n_train", "n_val", "n_test")) + " views, {}x{} px".format(
                               *recs["data"]["metrics"].get("size", ("?", "?"))),
        "teacher": f"{teacher.get('steps')} steps, PSNR {teacher['psnr']:.2f} dB on {teacher['n_views']} test views",
        "distill": f"{recs['distill']['metrics']['n_views']} views, "
                   f"{recs['distill']['metrics'].get('views_per_s') or float('nan'):.2f} views/s",
        "student": f"PSNR {student['psnr']:.2f} dB (teacher on the same {student['n_views']} views "
                   f"{student['teacher_psnr']:.2f} dB), vs teacher {student['psnr_vs_teacher']:.2f} dB",
        "export": f"{export['onnx_bytes'] / 1e6:.2f} MB ONNX, {export['params']:,} params, "
                  f"{export['flops_per_frame'] / 1e9:.2f} GFLOP/frame, {export['ort_python_ms_1thread']:.1f} ms "
                  "in onnxruntime-python (1 thread)",
    }
    for s in STAGES:
        print(f"{s:<9}{recs[s]['seconds']:>9.0f}  {notes.get(s, '')}")
    print(f"{'total':<9}{total:>9.0f}  (target at most about {target_seconds:.0f} s)")
    gap = student["teacher_psnr"] - student["psnr"]
    print(f"student is {gap:.2f} dB below the teacher on the same views (target <= {max_gap_db}: "
          f"{'met' if gap <= max_gap_db else 'MISSED'})")
    line = {"teacher_psnr": round(student["teacher_psnr"], 3), "student_psnr": round(student["psnr"], 3),
            "student_vs_teacher_psnr": round(student["psnr_vs_teacher"], 3),
            "total_seconds": round(total, 1), "teacher_stage_psnr": round(teacher["psnr"], 3),
            "student_ssim": round(student["ssim"], 4),
            "stage_seconds": {s: round(recs[s]["seconds"], 1) for s in STAGES},
            "student_kind": recs["student"]["settings"]["student"].get("kind", "mobiler2l"),
            **({"output_size": [size["width"], size["height"]]} if size else {}),
            **(extra or {}),
            "resolved": recs["teacher"].get("resolved"), "machine": recs["student"].get("machine")}
    if record:
        views_per_s = recs["distill"]["metrics"].get("views_per_s")
        row = {"what": what, "machine": line["machine"], "date": day, "commit": commit,
               "student_kind": line["student_kind"], "teacher_steps": teacher.get("steps"),
               "teacher_stage_psnr": line["teacher_stage_psnr"], "teacher_psnr": line["teacher_psnr"],
               "student_steps": student.get("steps"), "student_psnr": line["student_psnr"],
               "student_vs_teacher_psnr": line["student_vs_teacher_psnr"], "student_below_teacher_db": round(gap, 2),
               "student_ssim": line["student_ssim"], "total_seconds": line["total_seconds"],
               "stage_seconds": line["stage_seconds"],
               "distill_views_per_s": None if views_per_s is None else round(views_per_s, 2),
               "onnx_mb": round(export["onnx_bytes"] / 1e6, 2),
               "ort_python_ms_1thread": round(export["ort_python_ms_1thread"], 1), "resolved": line["resolved"],
               **{k: line[k] for k in ("output_size", *(extra or {})) if k in line}}
        MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        with MEASUREMENTS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"appended to {MEASUREMENTS.relative_to(ROOT)} (python bench/update_performance.py: docs/PERFORMANCE.md)")
    return line
