"""Rank student designs on the same pseudo-views and test views, each for the same time budget.

Each candidate is a set of --set overrides on top of a config. It runs the real student and
export stages (`pipeline.stages`) in a folder of its own whose data, teacher and distill
outputs are links to one finished workspace (by default the lego CPU profile's,
bench_runs/runs/lego), so every candidate reads the same views and is scored on the same
test views. Prints a table (dB vs the teacher and vs ground truth, steps, training seconds,
onnxruntime ms a frame) and, last, one JSON line {"machine", "budget_s", "candidates": [...]}.

    python bench/student_ablation.py --seconds 600 \\
        --candidate "mobiler2l=" --candidate "gridlf=student.kind=gridlf" ...

A candidate is NAME=OVERRIDE[,OVERRIDE...]. The workspace must have finished data, teacher
and distill stages (run bench/lego_cpu.py first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.machine import describe, short  # noqa: E402
from pipeline.stages import Pipeline  # noqa: E402


def parse_candidate(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition("=")
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise SystemExit(f"--candidate {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...] (NAME: letters, digits, _ -)")
    # commas inside brackets belong to a value: grid_resolutions=[64,256]
    return name, [o for o in re.split(r",(?![^\[]*\])", rest) if o] if rest else []


def row(ws: Path, name: str, overrides: list[str] | None = None) -> dict:
    """One candidate's figures, from its student and export records."""
    run_dir = ws / "runs" / f"ablation_{name}"
    rec = json.loads((run_dir / "student" / "record.json").read_text())
    exp = json.loads((run_dir / "export" / "record.json").read_text())
    m, e = rec["metrics"], exp["metrics"]
    if overrides is None:
        note = run_dir / "ablation.json"
        overrides = json.loads(note.read_text())["overrides"] if note.exists() else []
    return {"name": name, "overrides": overrides, "kind": rec["settings"]["student"]["kind"],
            "psnr_vs_teacher": round(m["psnr_vs_teacher"], 2), "psnr": round(m["psnr"], 2),
            "teacher_psnr": round(m["teacher_psnr"], 2), "steps": m["steps"], "train_seconds": m["train_seconds"],
            "params": m["params"], "flops_per_frame": m["flops_per_frame"],
            "onnx_mb": round(e["onnx_bytes"] / 1e6, 2), "ort_ms_1thread": e["ort_python_ms_1thread"],
            "scene_dir": exp["outputs"]["scene"] if "outputs" in exp else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=str(ROOT / "bench_runs"), help="folder with configs/ and runs/")
    ap.add_argument("--config", default="configs/lego.yaml", help="config inside the workspace")
    ap.add_argument("--scene-name", default="lego", help="the finished run's name (runs/<name>)")
    ap.add_argument("--seconds", type=float, default=600.0, help="student.train.max_seconds of every candidate")
    ap.add_argument("--candidate", action="append", default=[], help="NAME=OVERRIDE[,OVERRIDE...]")
    ap.add_argument("--collect", action="append", default=[], metavar="NAME",
                    help="no training: read candidate NAME's finished records (repeatable), e.g. to "
                         "tabulate runs made by several invocations")
    ap.add_argument("--set", dest="common", action="append", default=[], help="override for every candidate")
    ap.add_argument("--json-out", default=str(ROOT / "bench_runs" / "student_ablation.json"))
    args = ap.parse_args()

    ws = Path(args.workspace).resolve()
    source = ws / "runs" / args.scene_name
    for stage in ("data", "teacher", "distill") if args.candidate else ():
        if not (source / stage / "record.json").exists():
            print(f"{source / stage}: not finished; run bench/lego_cpu.py first", file=sys.stderr)
            return 2
    site = ws / "ablation_site"
    (site / "scenes").mkdir(parents=True, exist_ok=True)
    last = ws / "runs" / "last_run.json"  # the overrides the workspace's runs were made with (data.root, ...)
    common = [*(json.loads(last.read_text()).get("overrides", []) if last.exists() else []), *args.common]
    rows = []
    for text in args.candidate:
        name, overrides = parse_candidate(text)
        run_name = f"ablation_{name}"
        run_dir = ws / "runs" / run_name
        run_dir.mkdir(parents=True, exist_ok=True)
        for stage in ("data", "teacher", "distill"):  # the same upstream outputs for everyone
            link = run_dir / stage
            if link.is_symlink() or link.exists():
                (link.unlink() if link.is_symlink() else shutil.rmtree(link))
            link.symlink_to(source / stage, target_is_directory=True)
        sets = [*common, *overrides, f"name={run_name}", f"student.train.max_seconds={args.seconds}",
                f"export.site_dir={site}"]
        cfg = load_config(ws / args.config, sets)
        os.chdir(ws)
        pipe = Pipeline(cfg, ws / args.config)
        (run_dir / "ablation.json").write_text(json.dumps({"overrides": overrides}))
        print(f"== {name}: {' '.join(overrides) or '(config as is)'}", flush=True)
        pipe.run_stage("student", force=True, check_upstream=False)
        pipe.run_stage("export", force=True, check_upstream=False)
        rows.append(row(ws, name, overrides))
    rows += [row(ws, name) for name in args.collect]
    machine = describe()
    print()
    print(f"machine: {short(machine)}; budget {args.seconds:.0f} s of training each; "
          f"{rows[0]['teacher_psnr'] if rows else float('nan')} dB teacher on the same test views")
    print(f"{'candidate':<22}{'vs teacher':>11}{'vs GT':>8}{'steps':>7}{'train s':>9}{'GFLOP':>7}{'MB':>7}"
          f"{'ort ms':>8}")
    for r in rows:
        print(f"{r['name']:<22}{r['psnr_vs_teacher']:>11.2f}{r['psnr']:>8.2f}{r['steps']:>7}"
              f"{r['train_seconds']:>9.0f}{r['flops_per_frame'] / 1e9:>7.2f}{r['onnx_mb']:>7.1f}"
              f"{r['ort_ms_1thread']:>8.1f}")
    out = {"machine": machine, "budget_s": args.seconds, "candidates": rows}
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
