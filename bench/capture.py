"""A real capture through the capture CPU profile (configs/capture.yaml), end to end.

Runs `python -m pipeline run configs/capture.yaml --set data.root=SCENE` in a workspace of its
own (default bench_runs/capture/; cached like any run) with nothing else set, exports the scene
into the repository's site/, and prints each stage's time and the quality figures: the teacher
and the student on every held-out photo (undistorted to its pinhole camera, resampled to the
student's frame; a masked capture's photos composited on the background), the student against
its teacher, and the whole profile's time. With `--fps`, also the viewer's frame rate in
Chromium on WASM with 2 threads (bench/viewer.py). Last line: one JSON object with
`teacher_psnr`, `student_psnr`, `student_vs_teacher_psnr`, `total_seconds`, `output_size`,
`machine`, `scene_type` (object, 360 or forward, as the data stage found it; + `fps_wasm2` with
`--fps`). `--no-masks` runs the capture as if it had no masks (its surroundings then count).

Targets on 2 cores: the profile in 60 minutes or less, the student within 3 dB of the teacher,
the viewer at 15 fps or more. `--record` appends the figures to bench/results/measurements.jsonl.

    python bench/capture.py --scene PATH [--no-masks] [--fps] [--record] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from profile_run import ROOT, git_commit, run_config, summarize, today

sys.path.insert(0, str(ROOT))
from pipeline.config import load_config  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402

MAX_GAP_DB = 3.0
TARGET_SECONDS = 3600
TARGET_FPS = 15.0


def without_masks(scene: Path, workspace: Path) -> Path:
    """<workspace>/<name>-unmasked/: links to every entry of the capture folder but `masks/` (the
    same photos and cameras, read as a capture without masks; nothing is copied)."""
    out = workspace / f"{scene.name}-unmasked"
    out.mkdir(parents=True, exist_ok=True)
    for entry in scene.iterdir():
        link = out / entry.name
        if entry.name != "masks" and not link.exists():
            link.symlink_to(entry)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", required=True, help="the capture's folder (any layout data.kind: auto reads)")
    ap.add_argument("--workspace", default=str(ROOT / "bench_runs" / "capture"))
    ap.add_argument("--site", default=str(ROOT / "site"), help="viewer site the scene is exported into")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--fps", action="store_true", help="measure the viewer in Chromium (WASM, 2 threads)")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/results/measurements.jsonl")
    ap.add_argument("--no-masks", action="store_true",
                    help="the capture as if it had no masks: a folder of links to everything but masks/")
    args = ap.parse_args()
    scene = Path(args.scene).expanduser().resolve()
    if not scene.is_dir():
        print(f"error: capture folder not found: {scene} (--scene PATH)", file=sys.stderr)
        return 2
    if args.no_masks:
        scene = without_masks(scene, Path(args.workspace))
    sets = [f"data.root={scene}", f"export.site_dir={Path(args.site).resolve()}", *args.overrides]
    try:  # the run's name (the capture's folder name) and a config error before an hour starts
        name = load_config(ROOT / "configs" / "capture.yaml", sets).name
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    commit, day = git_commit(), today()
    ws = run_config("capture.yaml", Path(args.workspace), [["run"]], sets)
    if ws is None:
        return 1
    extra = {"scene": name}
    data = json.loads((ws / "runs" / name / "data" / "record.json").read_text())
    extra["scene_type"] = data["metrics"].get("scene_type", "object")
    if args.fps:
        viewer = [sys.executable, str(ROOT / "bench" / "viewer.py"), "--site", args.site, "--scene", name,
                  "--no-fullsize", "--no-webgpu", "--json-out", str(ws / "viewer.json")]
        out = subprocess.run(viewer, capture_output=True, text=True, cwd=ROOT)
        print(out.stdout, end="")
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr, end="")
            return out.returncode
        fps = json.loads(out.stdout.strip().splitlines()[-1])["fps_wasm2"]
        extra["fps_wasm2"] = fps
    what = f"capture CPU profile (python bench/capture.py, configs/capture.yaml, {name})"
    line = summarize(ws, name, what, MAX_GAP_DB, TARGET_SECONDS, args.record, commit, day, extra)
    if "fps_wasm2" in line:
        print(f"viewer: {line['fps_wasm2']:.1f} fps on WASM, 2 threads (target >= {TARGET_FPS:.0f})")
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
