"""The lego CPU profile end to end: teacher, distill, student, export (configs/lego.yaml).

Runs `python -m pipeline run configs/lego.yaml` on lego 200x200 in a workspace of its
own (default bench_runs/, shared with bench/teacher_lego.py; cached like any run, so
a finished run is read back from its records, not retrained) and exports the scene
into the repository's site/ (serve it to see lego). Prints each stage's time and the
quality figures, then, last, one JSON line with `teacher_psnr`, `student_psnr`,
`student_vs_teacher_psnr`, `total_seconds`.

Both PSNRs are on the same views: every test view, the teacher's from its distilled
renders of the test cameras, the student's from its own output; against ground truth.
Targets on 2 cores: student PSNR >= teacher PSNR - 3 dB (the longer-term goal: 1 dB);
the whole profile in about an hour.

With `--record`, also appends one measurement to bench/results/measurements.jsonl (the same
figures with `what`, `date` and `commit`, plus step counts, the gap and the export's size and
frame time); `python bench/update_performance.py` turns that file into docs/PERFORMANCE.md.

    python bench/lego_cpu.py [--scene ../shared/data/nerf_synthetic_200/lego] [--set KEY=VALUE] [--record]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from lego_workspace import add_arguments, run_pipeline

from pipeline.machine import short

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("data", "teacher", "distill", "student", "export", "report")
MAX_GAP_DB = 3.0
TARGET_SECONDS = 3600
MEASUREMENTS = ROOT / "bench" / "results" / "measurements.jsonl"
WHAT = "lego CPU profile (python bench/lego_cpu.py, configs/lego.yaml, lego 200x200)"


def git_commit() -> str | None:
    """HEAD's short hash, with '+dirty' when tracked files differ from it; None outside a git checkout."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return git("rev-parse", "--short=7", "HEAD") + ("+dirty" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--site", default=str(ROOT / "site"), help="viewer site the scene is exported into")
    ap.add_argument("--record", action="store_true", help=f"append the figures to {MEASUREMENTS.relative_to(ROOT)}")
    args = ap.parse_args()
    # the code and the day the run starts with (a commit made during the hour is not what ran)
    commit, day = git_commit(), datetime.now(timezone.utc).date().isoformat()
    # teacher.max_seconds as bench/teacher_lego.py sets it, so both share the teacher's cache
    ws = run_pipeline(args, [["run"]], ["teacher.max_seconds=1200.0", f"export.site_dir={Path(args.site).resolve()}"])
    if ws is None:
        return 2

    recs = {s: json.loads((ws / "runs" / "lego" / s / "record.json").read_text()) for s in STAGES}
    teacher, student, export = (recs[s]["metrics"] for s in ("teacher", "student", "export"))
    total = sum(recs[s]["seconds"] for s in STAGES)
    print()
    print(f"machine: {short(recs['student']['machine'])}")
    print(f"{'stage':<9}{'seconds':>9}  result")
    notes = {
        "teacher": f"{teacher.get('steps')} steps, PSNR {teacher['psnr']:.2f} dB on {teacher['n_views']} test views",
        "distill": f"{recs['distill']['metrics']['n_views']} views, "
                   f"{recs['distill']['metrics'].get('views_per_s', float('nan')):.2f} views/s",
        "student": f"PSNR {student['psnr']:.2f} dB (teacher on the same {student['n_views']} views "
                   f"{student['teacher_psnr']:.2f} dB), vs teacher {student['psnr_vs_teacher']:.2f} dB",
        "export": f"{export['onnx_bytes'] / 1e6:.2f} MB ONNX, {export['params']:,} params, "
                  f"{export['flops_per_frame'] / 1e9:.2f} GFLOP/frame, {export['ort_python_ms_1thread']:.1f} ms "
                  "in onnxruntime-python (1 thread)",
    }
    for s in STAGES:
        print(f"{s:<9}{recs[s]['seconds']:>9.0f}  {notes.get(s, '')}")
    print(f"{'total':<9}{total:>9.0f}  (target about {TARGET_SECONDS} s)")
    gap = student["teacher_psnr"] - student["psnr"]
    print(f"student is {gap:.2f} dB below the teacher on the same views (target <= {MAX_GAP_DB}: "
          f"{'met' if gap <= MAX_GAP_DB else 'MISSED'})")
    line = {"teacher_psnr": round(student["teacher_psnr"], 3), "student_psnr": round(student["psnr"], 3),
            "student_vs_teacher_psnr": round(student["psnr_vs_teacher"], 3),
            "total_seconds": round(total, 1), "teacher_stage_psnr": round(teacher["psnr"], 3),
            "student_ssim": round(student["ssim"], 4),
            "stage_seconds": {s: round(recs[s]["seconds"], 1) for s in STAGES},
            "student_kind": recs["student"]["settings"]["student"].get("kind", "mobiler2l"),
            "resolved": recs["teacher"].get("resolved"), "machine": recs["student"].get("machine")}
    if args.record:
        views_per_s = recs["distill"]["metrics"].get("views_per_s")
        row = {"what": WHAT, "machine": line["machine"], "date": day, "commit": commit,
               "student_kind": line["student_kind"], "teacher_steps": teacher.get("steps"),
               "teacher_stage_psnr": line["teacher_stage_psnr"], "teacher_psnr": line["teacher_psnr"],
               "student_steps": student.get("steps"), "student_psnr": line["student_psnr"],
               "student_vs_teacher_psnr": line["student_vs_teacher_psnr"], "student_below_teacher_db": round(gap, 2),
               "student_ssim": line["student_ssim"], "total_seconds": line["total_seconds"],
               "stage_seconds": line["stage_seconds"],
               "distill_views_per_s": None if views_per_s is None else round(views_per_s, 2),
               "onnx_mb": round(export["onnx_bytes"] / 1e6, 2),
               "ort_python_ms_1thread": round(export["ort_python_ms_1thread"], 1), "resolved": line["resolved"]}
        MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        with MEASUREMENTS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"appended to {MEASUREMENTS.relative_to(ROOT)} (python bench/update_performance.py: docs/PERFORMANCE.md)")
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
