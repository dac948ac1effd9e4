"""Shared by bench/teacher_lego.py and bench/lego_cpu.py: run pipeline commands on lego
200x200 with configs/lego.yaml in a benchmark workspace (default bench_runs/), cached like
any run, so both scripts reuse each other's finished stages."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--scene", default=str(ROOT.parent / "shared/data/nerf_synthetic_200/lego"))
    ap.add_argument("--workspace", default=str(ROOT / "bench_runs"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")


def run_pipeline(args: argparse.Namespace, commands: list[list[str]], sets: list[str]) -> Path | None:
    """Run each `python -m pipeline <command> configs/lego.yaml --set ...` in the workspace;
    the workspace, or None (after a one-line error) when the scene is missing."""
    scene = Path(args.scene).resolve()
    if not (scene / "transforms_train.json").is_file():
        print(f"error: lego scene not found at {scene} (--scene PATH)", file=sys.stderr)
        return None
    ws = Path(args.workspace)
    (ws / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "configs" / "lego.yaml", ws / "configs" / "lego.yaml")
    flags = [f for s in [f"data.root={scene}", *sets, *args.overrides] for f in ("--set", s)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for command in commands:
        subprocess.run([sys.executable, "-m", "pipeline", *command, "configs/lego.yaml", *flags],
                       cwd=ws, check=True, env=env)
    return ws
