"""End-to-end smoke test: the toy scene through every stage, then the cache rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_workspace, run_cli

STAGES = ("data", "teacher", "distill", "student", "export")


def records(ws, name="toy"):
    return {s: json.loads((ws / "runs" / name / s / "record.json").read_text()) for s in STAGES}


@pytest.mark.slow
def test_toy_end_to_end(toy_run):
    ws, proc, seconds = toy_run
    recs = records(ws)
    for s in STAGES:
        assert recs[s]["key"], s
    run = ws / "runs" / "toy"
    assert (run / "teacher" / "model.pt").exists() and list((run / "teacher" / "renders").glob("*.png"))
    n_views = recs["distill"]["metrics"]["n_views"]
    assert len(list((run / "distill" / "pseudo").glob("*.png"))) == n_views
    meta = json.loads((run / "distill" / "transforms.json").read_text())
    assert len(meta["frames"]) == n_views and np.asarray(meta["frames"][0]["transform_matrix"]).shape == (4, 4)
    scene_dir = ws / "site" / "scenes" / "toy"
    scene = json.loads((scene_dir / "scene.json").read_text())
    assert (scene_dir / scene["model"]).exists() and (scene_dir / "reference.png").exists()
    index = json.loads((ws / "site" / "scenes" / "index.json").read_text())
    assert {"name": "toy", "path": "scenes/toy/scene.json"} in index["scenes"]
    assert recs["export"]["metrics"]["max_abs_diff"] < 1e-3

    teacher, student = recs["teacher"]["metrics"], recs["student"]["metrics"]
    print(f"toy: {seconds:.0f} s; " + ", ".join(f"{s} {recs[s]['seconds']:.1f} s" for s in STAGES))
    print(f"teacher PSNR {teacher['psnr']:.2f}; student PSNR {student['psnr']:.2f} (vs teacher "
          f"{student['psnr_vs_teacher']:.2f}), constant-colour baseline {student['baseline_psnr']:.2f}")
    assert teacher["psnr"] > student["baseline_psnr"] + 8.0
    assert student["psnr"] > student["baseline_psnr"] + 5.0


TINY = """
name: tiny
data: {kind: toy, toy: {size: 16, n_train: 12, n_val: 1, n_test: 2}}
teacher:
  steps: 30
  aabb: [-1.2, -1.2, -1.2, 1.2, 1.2, 1.2]
  hash: {n_levels: 4, log2_table_size: 12, max_resolution: 64}
  grid_resolution: 32
  render_step_size: 0.05
  grid_warmup_steps: 8
  init_batch_rays: 256
  checkpoint_every: 10
distill: {n_views: 6}
student: {output_size: 16, sr_factor: 2, sr_channels: [8], width: 8, n_blocks: 1, steps: 10, batch_images: 2,
          n_points: 4, pe_freqs: 2}
export: {check_poses: 1}
"""


@pytest.fixture()
def tiny_ws(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    (ws / "configs" / "tiny.yaml").write_text(TINY)
    return ws


def _ran(proc) -> set[str]:
    return {s for s in STAGES if f"[{s}] running" in proc.stdout}


@pytest.mark.slow
def test_cache_rules(tiny_ws):
    first = run_cli(tiny_ws, "run", "configs/tiny.yaml")
    assert _ran(first) == set(STAGES)
    keys = {s: r["key"] for s, r in records(tiny_ws, "tiny").items()}

    second = run_cli(tiny_ws, "run", "configs/tiny.yaml")
    assert _ran(second) == set()
    assert second.stdout.count("cached") == len(STAGES)

    status = run_cli(tiny_ws, "status", "configs/tiny.yaml").stdout
    assert all(f"{s}" in status for s in STAGES) and "stale" not in status and "missing" not in status

    third = run_cli(tiny_ws, "run", "configs/tiny.yaml", "--set", "student.steps=12")
    assert _ran(third) == {"student", "export"}
    assert records(tiny_ws, "tiny")["teacher"]["key"] == keys["teacher"]
    status = run_cli(tiny_ws, "status", "configs/tiny.yaml").stdout  # without the override: stale
    assert "student  stale" in status and "export   stale" in status and "teacher  done" in status

    # no config: the most recent run's, with its overrides
    fourth = run_cli(tiny_ws, "stage", "distill")
    assert "using the most recent run's config: configs/tiny.yaml" in fourth.stdout and _ran(fourth) == set()

    forced = run_cli(tiny_ws, "stage", "distill", "configs/tiny.yaml", "--force")
    assert _ran(forced) == {"distill"}


def test_clear_errors(tiny_ws, tmp_path):
    bad = run_cli(tiny_ws, "stage", "student", "configs/tiny.yaml", check=False)
    assert bad.returncode == 1 and "needs stage 'data' first" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = run_cli(tiny_ws, "stage", "nosuch", "configs/tiny.yaml", check=False)
    assert bad.returncode == 2 and "unknown stage 'nosuch'" in bad.stderr
    empty = make_workspace(tmp_path / "empty")
    bad = run_cli(empty, "status", check=False)
    assert bad.returncode == 2 and "no config given" in bad.stderr and "configs/toy.yaml" in bad.stderr
    bad = run_cli(tiny_ws, "run", "configs/tiny.yaml", "--set", "teacher.stepz=3", check=False)
    assert bad.returncode == 2 and "did you mean 'steps'" in bad.stderr


@pytest.mark.slow
def test_toy_export_renders_in_chromium(toy_run, tmp_path):
    """The exported toy student in the real viewer: canvas vs onnxruntime-python >= 40 dB."""
    from browser import CHROMIUM, ConsoleLog, canvas_vs_ort_psnr, launch_chromium, require_or_skip, serve, wait_state

    ws, _, _ = toy_run
    site = ws / "site"
    require_or_skip(CHROMIUM.exists(), f"{CHROMIUM} not found")
    require_or_skip((site / "vendor").is_dir(), "site/vendor missing: run `npm ci --prefix site`")
    sync_api = pytest.importorskip("playwright.sync_api")
    with serve(site) as url, sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 700})
            log = ConsoleLog(page)
            page.goto(url + "?scene=toy&backend=wasm")
            assert wait_state(page, timeout_ms=60_000) == "ready", page.inner_text("body")
            value = canvas_vs_ort_psnr(page, site / "scenes" / "toy" / "model.onnx")
            check = page.evaluate("window.viewer.selfCheck")
            page.screenshot(path=str(tmp_path / "toy_viewer.png"))
        finally:
            browser.close()
    assert value >= 40.0, f"canvas vs onnxruntime-python: {value:.1f} dB"
    assert check["ok"], check
    assert not log.errors, log.errors
