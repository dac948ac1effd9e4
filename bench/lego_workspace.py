"""Shared by bench/teacher_lego.py and bench/lego_cpu.py: run pipeline commands on lego
200x200 with configs/lego.yaml in a benchmark workspace (default bench_runs/), cached like
any run, so both scripts reuse each other's finished stages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from profile_run import ROOT, run_config


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--scene", default=str(ROOT.parent / "shared/data/nerf_synthetic_200/lego"))
    ap.add_argument("--workspace", default=str(ROOT / "bench_runs"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")


def run_pipeline(args: argparse.Namespace, commands: list[list[str]], sets: list[str]) -> Path | None:
    """Run each `python -m pipeline <command> configs/lego.yaml --set ...` in the workspace;
    the workspace, or None (after a one-line error) when the scene is missing or a command failed."""
    scene = Path(args.scene).resolve()
    if not (scene / "transforms_train.json").is_file():
        print(f"error: lego scene not found at {scene} (--scene PATH)", file=sys.stderr)
        return None
    return run_config("lego.yaml", Path(args.workspace), commands, [f"data.root={scene}", *sets, *args.overrides])
