"""Viewer speed in headless Chromium vs onnxruntime-python, for every exported scene.

For each scene in `<site>/scenes/index.json` (export writes them), in one run:
- onnxruntime-python (CPU, 1 and 2 threads): median ms of `session.run` (the reference);
- the viewer page in Chromium on WASM with 1 and 2 threads (cross-origin isolated through
  coi-serviceworker, as a user gets it from a plain static server) and on WebGPU with
  SwiftShader's software adapter (correctness only: 50-100x slower than WASM). For each:
  the page's own frame time (pose in, pixels on the canvas) and the bare `session.run`
  time, both medians of `viewer.benchmark()`, plus the canvas's PSNR against
  onnxruntime-python at the same pose;
- with `--runs DIR`: WASM 2 threads on the export without onnxsim (`model_raw.onnx`),
  to show what simplification does to the runtime's fusions.
Then a MobileR2L-size student (random weights, 100x100 -> 800x800) in onnxruntime-python
and WASM, both 2 threads, for `wasm_over_ort_ratio_fullsize`.

Targets (2 cores): the lego CPU-profile student >= 15 fps on WASM with 2 threads; page
frame time <= 1.15x the bare session.run. Last line: one JSON object with `fps_wasm2`,
`scene`, `page_overhead_ratio`, `wasm_over_ort_ratio_fullsize` (+ per-scene figures).

    python bench/viewer.py [--site site] [--runs runs] [--frames 20] [--no-webgpu] [--no-fullsize]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the Chromium/Playwright helpers the browser tests use

from browser import ConsoleLog, canvas_vs_ort_psnr, launch_chromium, serve, wait_state  # noqa: E402

from export.stage import reference_image, update_index  # noqa: E402
from pipeline.machine import describe  # noqa: E402

TARGET_FPS = 15.0
TARGET_OVERHEAD = 1.15


def ort_ms(model: Path, threads: int, frames: int, pose: np.ndarray) -> float:
    from export.onnx_export import ort_session

    sess = ort_session(model.read_bytes(), threads=threads)
    out = sess.get_outputs()[0].name
    for _ in range(3):
        sess.run([out], {"pose": pose})
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        sess.run([out], {"pose": pose})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def page_bench(browser, url: str, model: Path | None, frames: int, timeout_ms: int) -> dict:
    """Open the viewer at `url`, wait for the first frame, run viewer.benchmark()."""
    page = browser.new_page(viewport={"width": 900, "height": 800})
    log = ConsoleLog(page)
    try:
        page.goto(url)
        if wait_state(page, timeout_ms=timeout_ms) != "ready":
            raise RuntimeError(f"{url}: viewer error: {page.evaluate('window.viewer.error')}; {log.errors}")
        res = page.evaluate(f"window.viewer.benchmark({{frames: {frames}, warmup: 2}})")
        asked = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&") if "=" in part).get("threads")
        if asked is not None and int(asked) != res["threads"]:
            # onnxruntime-web falls back to 1 thread where the page is not cross-origin isolated
            raise RuntimeError(f"{url}: the viewer ran {res['threads']} thread(s), not {asked} (cross-origin "
                               f"isolated: {res.get('crossOriginIsolated')}); is coi-serviceworker.js in the site? "
                               "(`npm ci --prefix site` puts it there)")
        res["self_check_db"] = page.evaluate("window.viewer.selfCheck.psnr")
        res["psnr_vs_ort"] = canvas_vs_ort_psnr(page, model) if model else math.nan
        return res
    finally:
        page.close()


def fullsize_model(path: Path) -> None:
    """A MobileR2L-size student (width 256, 28 blocks, 100x100 -> 800x800), random weights."""
    import torch

    from export.onnx_export import simplify, to_onnx_bytes
    from pipeline.config import ExportConfig, MobileR2LConfig
    from student.kinds import StudentCamera
    from student.mobiler2l import MobileR2L

    arch = MobileR2LConfig(sr_factor=8, n_points=16, pe_freqs=10, width=256, n_blocks=28,
                           sr_channels=[64, 64, 16], activation="gelu_tanh")
    cam = StudentCamera.square(800, 1111.0, near=2.0, far=6.0, center=(0, 0, 0), scale=2.6)
    torch.manual_seed(0)
    raw = to_onnx_bytes(MobileR2L(arch, cam).eval(), ExportConfig().opset)
    path.write_bytes(simplify(raw))


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default=str(ROOT / "site"))
    ap.add_argument("--runs", default=None, help="runs folder of the exports (adds the no-onnxsim comparison)")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--scene", action="append", default=None, help="only these scenes (repeatable)")
    ap.add_argument("--no-webgpu", action="store_true")
    ap.add_argument("--no-fullsize", action="store_true", help="skip the MobileR2L-size ratio")
    ap.add_argument("--json-out", default=str(ROOT / "bench_runs" / "viewer.json"),
                    help="also write the figures here (bench/update_readme.py reads them)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    site = Path(args.site)
    index = json.loads((site / "scenes" / "index.json").read_text())["scenes"]
    names = [s["name"] for s in index if not args.scene or s["name"] in args.scene]
    if not names:
        print(f"error: no scenes to benchmark in {site / 'scenes' / 'index.json'}", file=sys.stderr)
        return 2

    rows, per_scene = [], {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        # A copy of the site, so that extra scenes (no-onnxsim, full-size) never touch site/.
        work = Path(tmp) / "site"
        shutil.copytree(site, work, ignore=shutil.ignore_patterns("node_modules"), symlinks=True)
        browser, gpu_browser = launch_chromium(pw), None if args.no_webgpu else launch_chromium(pw, webgpu=True)
        with serve(work) as base:
            for name in names:
                scene = json.loads((work / "scenes" / name / "scene.json").read_text())
                model = work / "scenes" / name / scene["model"]
                pose = np.asarray(scene["reference"]["pose"], np.float32)
                fig = {"ort1_ms": ort_ms(model, 1, args.frames, pose), "ort2_ms": ort_ms(model, 2, args.frames, pose)}
                runs = [("wasm1", browser, "backend=wasm&threads=1"), ("wasm2", browser, "backend=wasm&threads=2")]
                if gpu_browser:
                    runs.append(("webgpu_sw", gpu_browser, "backend=webgpu"))
                for key, b, query in runs:
                    frames = args.frames if key != "webgpu_sw" else max(3, args.frames // 5)
                    res = page_bench(b, f"{base}index.html?scene={name}&{query}&quality=full", model, frames,
                                     timeout_ms=600_000 if key == "webgpu_sw" else 120_000)
                    fig[key] = res
                    rows.append((name, key, res["page_ms"], res["run_ms"], res["psnr_vs_ort"]))
                if args.runs and (Path(args.runs) / name / "export" / "model_raw.onnx").exists():
                    raw_dir = work / "scenes" / f"{name}_raw"
                    shutil.copytree(work / "scenes" / name, raw_dir)
                    shutil.copy(Path(args.runs) / name / "export" / "model_raw.onnx", raw_dir / scene["model"])
                    raw_scene = {k: v for k, v in scene.items() if k != "model_fp16"}  # the viewer would load that
                    (raw_dir / "scene.json").write_text(json.dumps({**raw_scene, "name": f"{name}_raw"}))
                    update_index(work, f"{name}_raw")
                    res = page_bench(browser, f"{base}index.html?scene={name}_raw&backend=wasm&threads=2&quality=full",
                                     None, args.frames, 120_000)
                    fig["wasm2_no_onnxsim"] = res
                    rows.append((f"{name} (no onnxsim)", "wasm2", res["page_ms"], res["run_ms"], math.nan))
                fig["fps_wasm2"] = 1000 / fig["wasm2"]["page_ms"]
                fig["page_overhead_ratio"] = fig["wasm2"]["page_ms"] / fig["wasm2"]["run_ms"]
                fig["wasm2_over_ort2"] = fig["wasm2"]["run_ms"] / fig["ort2_ms"]
                fig["flops_per_frame"] = scene.get("model_card", {}).get("flops_per_frame")
                per_scene[name] = fig

            ratio_full = math.nan
            if not args.no_fullsize:
                full_dir = work / "scenes" / "mobiler2l_size"
                ref = work / "scenes" / names[0]
                shutil.copytree(ref, full_dir)
                fullsize_model(full_dir / "model.onnx")
                scene = json.loads((ref / "scene.json").read_text())
                pose = np.asarray(scene["reference"]["pose"], np.float32)
                png, _ = reference_image((full_dir / "model.onnx").read_bytes(), pose)
                (full_dir / "reference.png").write_bytes(png)
                scene = {**scene, "name": "mobiler2l_size", "width": 800, "height": 800, "output": "rgba",
                         "output_layout": "rgba255"}
                scene.pop("preview", None)
                scene.pop("model_fp16", None)
                (full_dir / "scene.json").write_text(json.dumps(scene))
                update_index(work, "mobiler2l_size")
                ort2 = ort_ms(full_dir / "model.onnx", 2, 5, pose)
                res = page_bench(browser, f"{base}index.html?scene=mobiler2l_size&backend=wasm&threads=2&quality=full",
                                 None, 5, 300_000)
                ratio_full = res["run_ms"] / ort2
                rows.append(("mobiler2l_size (random)", "wasm2", res["page_ms"], res["run_ms"], math.nan))
                rows.append(("mobiler2l_size (random)", "ort2 (python)", math.nan, ort2, math.nan))
        browser.close()
        if gpu_browser:
            gpu_browser.close()

    print(f"{'scene':<26} {'backend':<14} {'page ms':>9} {'run ms':>9} {'PSNR vs ORT':>12}")
    for name, key, page_ms, run_ms, db in rows:
        print(f"{name:<26} {key:<14} {fmt(page_ms):>9} {fmt(run_ms):>9} {fmt(db):>12}")
    for name, fig in per_scene.items():
        print(f"{name:<26} {'ort1 (python)':<14} {'-':>9} {fmt(fig['ort1_ms']):>9}")
        print(f"{name:<26} {'ort2 (python)':<14} {'-':>9} {fmt(fig['ort2_ms']):>9}")
    main_scene = "lego" if "lego" in per_scene else names[0]
    fig = per_scene[main_scene]
    print(f"\n{main_scene}: {fig['fps_wasm2']:.1f} fps on WASM x2 (target >= {TARGET_FPS:.0f}: "
          f"{'met' if fig['fps_wasm2'] >= TARGET_FPS else 'MISSED'}); page / bare session.run "
          f"{fig['page_overhead_ratio']:.3f} (target <= {TARGET_OVERHEAD}: "
          f"{'met' if fig['page_overhead_ratio'] <= TARGET_OVERHEAD else 'MISSED'}); WASM x2 / onnxruntime-python x2 "
          f"{fig['wasm2_over_ort2']:.2f}; MobileR2L-size WASM / python {fmt(ratio_full, 2)}")
    result = {"fps_wasm2": round(fig["fps_wasm2"], 2), "scene": main_scene,
              "page_overhead_ratio": round(fig["page_overhead_ratio"], 3),
              "wasm_over_ort_ratio_fullsize": None if math.isnan(ratio_full) else round(ratio_full, 2),
              "scenes": {n: _summary(f) for n, f in per_scene.items()}, "machine": describe("cpu")}
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


def _summary(fig: dict) -> dict:
    out = {"ort1_ms": round(fig["ort1_ms"], 2), "ort2_ms": round(fig["ort2_ms"], 2),
           "fps_wasm2": round(fig["fps_wasm2"], 2), "page_overhead_ratio": round(fig["page_overhead_ratio"], 3)}
    for key in ("wasm1", "wasm2", "webgpu_sw", "wasm2_no_onnxsim"):
        if key in fig:
            out[f"{key}_page_ms"] = round(fig[key]["page_ms"], 2)
            out[f"{key}_run_ms"] = round(fig[key]["run_ms"], 2)
            if not math.isnan(fig[key]["psnr_vs_ort"]):
                out[f"{key}_psnr_vs_ort"] = round(fig[key]["psnr_vs_ort"], 2)
    return out


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RuntimeError as err:  # a page that failed or ran other than asked: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
