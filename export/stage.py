"""Stage 5: ONNX export of the student + scene files for the static viewer.

Writes `<site_dir>/scenes/<name>/{model.onnx, scene.json, reference.png}`
(format: export/SCENE_FORMAT.md) and registers the scene in
`<site_dir>/scenes/index.json`. The ONNX graph is checked against torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from pipeline.cameras import orbit_pose, spherical_coords
from pipeline.errors import StageError
from pipeline.io import atomic_write_bytes, atomic_write_json, read_json
from student.kinds import count_params, load_student

from . import site_format
from .onnx_export import export_onnx, fp16_weights, ort_session, psnr_between


def reference_image(onnx_bytes: bytes, pose: np.ndarray) -> tuple[bytes, float]:
    """The self-check image (8-bit PNG of onnxruntime-python's output for `pose`) and the
    model's ms per frame in onnxruntime-python on one thread."""
    sess = ort_session(onnx_bytes, threads=1)
    feed = {"pose": pose.astype(np.float32)}
    rgba = sess.run(["rgba"], feed)[0][0]
    t0, n = time.time(), 5
    for _ in range(n):
        sess.run(["rgba"], feed)
    png = iio.imwrite("<bytes>", (np.clip(rgba[..., :3], 0, 255) + 0.5).astype(np.uint8), extension=".png")
    return png, (time.time() - t0) / n * 1000


def update_index(site_dir: Path, name: str) -> None:
    index_path = site_dir / "scenes" / "index.json"
    scenes = []
    if index_path.exists():
        try:
            scenes = [s for s in json.loads(index_path.read_text()).get("scenes", []) if s.get("name") != name]
        except (json.JSONDecodeError, AttributeError):
            scenes = []  # a broken index is rebuilt rather than kept
    scenes.append({"name": name, "path": f"scenes/{name}/scene.json"})
    atomic_write_json(index_path, {"scenes": sorted(scenes, key=lambda s: s["name"])})


def halved(model):
    """The preview: the same student on a 2x coarser frame, or None where the frame does not halve."""
    try:
        return model.coarser(2)
    except ValueError:
        return None


def placement_entry(placement: dict) -> dict | None:
    """scene.json's `placement` from the data stage's placement.json (None: the scene was not moved)."""
    if placement.get("radius_from") == "identity":
        return None
    return {"matrix": placement["matrix"], "scale": placement["scale"], "source": placement["source"]["kind"]}


def forward_region(region: dict | None, first: np.ndarray) -> dict | None:
    """scene.json's `region` from distill's forward-facing region (None for an orbit): the viewer
    starts at the first training photo's centre, in the region's frame, clamped to its box."""
    if region is None:
        return None
    lo, hi = (np.asarray(v, dtype=np.float64) for v in region["extent"])
    local = (first[:3, 3] - np.asarray(region["centre"])) @ np.asarray(region["rotation"])
    return {"type": "forward", "centre": region["centre"], "rotation": region["rotation"],
            "extent": [lo.tolist(), hi.tolist()], "start": np.clip(local, lo, hi).tolist()}


def run(ctx) -> dict:
    cfg, ecfg = ctx.cfg, ctx.cfg.export
    site_dir = Path(ecfg.site_dir)
    if not site_dir.is_dir():
        raise StageError(f"export.site_dir '{site_dir}' is not a folder; it must be the viewer site (site/)")
    scene_dir = site_dir / "scenes" / cfg.name
    # rebuilt from the checkpoint (its kind, architecture and camera), not from the current config
    model = load_student(ctx.input("student", "model"), torch.device("cpu"))
    params, flops = count_params(model), model.flops_per_frame()
    dist = read_json(ctx.input("distill", "cameras"))

    # the viewer starts where the first training photo was taken, looking at the scene's centre
    first = np.asarray(read_json(ctx.input("data", "scene") / "transforms_train.json")["frames"][0]["transform_matrix"],
                       dtype=np.float64)
    radius, azimuth, elevation = (float(v[0]) for v in spherical_coords(first[None], np.asarray(dist["target"]),
                                                                         np.asarray(dist["up"])))
    orbit = {
        "target": dist["target"],
        "radius": float(np.clip(radius, *dist["radius"])), "radius_min": dist["radius"][0],
        "radius_max": dist["radius"][1], "azimuth_deg": azimuth,
        "elevation_deg": float(np.clip(elevation, *dist["elevation_deg"])),
        "elevation_min_deg": dist["elevation_deg"][0], "elevation_max_deg": dist["elevation_deg"][1],
    }
    ref_pose = orbit_pose(orbit["target"], orbit["radius"], orbit["azimuth_deg"], orbit["elevation_deg"], dist["up"])
    check_poses = [ref_pose] + [orbit_pose(orbit["target"], orbit["radius"], az, orbit["elevation_deg"], dist["up"])
                                for az in np.linspace(100, 300, max(ecfg.check_poses - 1, 0))]
    region = forward_region(dist.get("region"), first)
    if region is not None:  # a forward-facing scene: its views, not an orbit's
        lo, hi = (np.asarray(v) for v in region["extent"])
        ref_pose = site_format.region_pose(region, region["start"])
        check_poses = [ref_pose] + [site_format.region_pose(region, lo + (hi - lo) * f)
                                    for f in np.linspace(0.0, 1.0, max(ecfg.check_poses - 1, 0))]

    try:
        onnx_bytes, report = export_onnx(model, ecfg, check_poses, ctx.out_dir)
        preview = halved(model) if ecfg.preview else None
        preview_bytes, preview_report = (export_onnx(preview, ecfg, check_poses, ctx.out_dir / "preview")
                                         if preview else (None, {"max_abs_diff": 0.0, "mismatch_fraction": 0.0}))
    except OSError:
        raise  # a path problem: the command line names the path
    except Exception as err:  # torch.onnx, the checker and onnxsim raise many types
        reason = str(err).splitlines()[0][:160] if str(err) else ""
        raise StageError(f"ONNX export failed ({err.__class__.__name__}: {reason}); try export.simplify: false "
                         f"or another export.opset (now {ecfg.opset}); --debug shows the traceback") from err
    for what, rep in (("", report), ("preview ", preview_report)):
        if rep["mismatch_fraction"] > ecfg.max_mismatch_fraction:
            raise StageError(f"{what}ONNX output differs from torch by more than export.max_abs_diff="
                             f"{ecfg.max_abs_diff} in {rep['mismatch_fraction']:.3%} of the colour values (worst "
                             f"{rep['max_abs_diff']:.2e}; limit export.max_mismatch_fraction="
                             f"{ecfg.max_mismatch_fraction})")
    if ecfg.preview and preview is None:
        ctx.log(f"no preview model: the {model.ray_grid[1]}x{model.ray_grid[0]} ray grid cannot be halved")
    ref_png, ort_ms = reference_image(onnx_bytes, ref_pose)

    cam = model.camera
    model_card = {"params": params, "onnx_bytes": len(onnx_bytes), "flops_per_frame": flops,
                  "ort_python_ms_1thread": round(ort_ms, 2), "simplified": ecfg.simplify}
    model_fp16 = preview_entry = None
    atomic_write_bytes(scene_dir / "model.onnx", onnx_bytes)
    atomic_write_bytes(scene_dir / "reference.png", ref_png)
    if ecfg.fp16:
        fp16 = fp16_weights(onnx_bytes)
        fp16_db = psnr_between(onnx_bytes, fp16, check_poses)
        atomic_write_bytes(scene_dir / "model_fp16.onnx", fp16)
        model_fp16 = "model_fp16.onnx"
        model_card.update({"fp16_bytes": len(fp16), "fp16_psnr_vs_fp32": round(min(fp16_db, 200.0), 2)})
        ctx.log(f"fp16 weights: {len(fp16) / 1e6:.2f} MB ({len(fp16) / len(onnx_bytes):.0%} of fp32), "
                f"{fp16_db:.1f} dB vs fp32")
    else:
        (scene_dir / "model_fp16.onnx").unlink(missing_ok=True)
    if preview_bytes is not None:
        preview_png, preview_ms = reference_image(preview_bytes, ref_pose)
        atomic_write_bytes(scene_dir / "preview.onnx", preview_bytes)
        atomic_write_bytes(scene_dir / "preview_reference.png", preview_png)
        preview_entry = {"model": "preview.onnx", "width": preview.camera.width, "height": preview.camera.height,
                         "reference_image": "preview_reference.png",
                         "flops_per_frame": preview.flops_per_frame(),
                         "ort_python_ms_1thread": round(preview_ms, 2)}
    else:
        for stale in ("preview.onnx", "preview_reference.png"):
            (scene_dir / stale).unlink(missing_ok=True)
    scene = site_format.scene_document(
        name=cfg.name, width=cam.width, height=cam.height,
        camera={"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy},
        placement=placement_entry(read_json(ctx.input("data", "placement"))), up=dist["up"],
        background=[1.0, 1.0, 1.0] if cfg.background == "white" else [0.0, 0.0, 0.0],
        orbit=orbit, reference_pose=ref_pose.tolist(), output="rgba", output_layout="rgba255",
        model_fp16=model_fp16, preview=preview_entry, model_card=model_card, region=region)
    site_format.write(scene_dir / "scene.json", scene, "scene")  # checked, and written after the files it names
    update_index(site_dir, cfg.name)
    metrics = {**report, "onnx_bytes": len(onnx_bytes), "params": params, "flops_per_frame": flops,
               "ort_python_ms_1thread": round(ort_ms, 2), "frame": {"width": cam.width, "height": cam.height},
               **{k: v for k, v in model_card.items() if k.startswith("fp16")}}
    atomic_write_json(ctx.out_dir / "metrics.json", metrics)
    ctx.log(f"{scene_dir / 'model.onnx'}: {len(onnx_bytes) / 1e6:.2f} MB, max |onnx - torch| "
            f"{report['max_abs_diff']:.2e} ({report['mismatch_fraction']:.3%} of values > {ecfg.max_abs_diff}), "
            f"{ort_ms:.1f} ms/frame in onnxruntime (1 thread)")
    return {"metrics": metrics, "outputs": {"site": str(site_dir.resolve()), "scene": str(scene_dir.resolve()),
                                            "metrics": "metrics.json"}}
