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
from pathlib import Path

from lego_workspace import add_arguments, run_pipeline
from profile_run import ROOT, git_commit, summarize, today

MAX_GAP_DB = 3.0
TARGET_SECONDS = 3600
WHAT = "lego CPU profile (python bench/lego_cpu.py, configs/lego.yaml, lego 200x200)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    ap.add_argument("--site", default=str(ROOT / "site"), help="viewer site the scene is exported into")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/results/measurements.jsonl")
    args = ap.parse_args()
    # the code and the day the run starts with (a commit made during the hour is not what ran)
    commit, day = git_commit(), today()
    # teacher.max_seconds as bench/teacher_lego.py sets it, so both share the teacher's cache
    ws = run_pipeline(args, [["run"]], ["teacher.max_seconds=1200.0", f"export.site_dir={Path(args.site).resolve()}"])
    if ws is None:
        return 2
    print(json.dumps(summarize(ws, "lego", WHAT, MAX_GAP_DB, TARGET_SECONDS, args.record, commit, day)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
