"""Stage 2: train the Instant-NGP teacher (nerfacc's recipe, adapted to the device)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.cameras import camera_directions, pinhole_rays, pixel_directions, rays_for_pixels, undistort_image
from pipeline.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, png_bytes
from pipeline.metrics import psnr, ssim
from pipeline.progress import progress
from pipeline.scene import background_rgb, load_split
from pipeline.training import CHECKPOINT, LoopSettings, StepOutput, train

from .malloc_tuning import tune_malloc
from .model import build_teacher, speed_switches
from .render import MarchSettings, render_image, render_rays
from .space import Space, ndc_frame, space_for

MODEL = "model.pt"


def lr_schedule(warmup_steps: int):
    """nerfacc's recipe: linear warm-up, then x0.33 at 1/2, 3/4 and 9/10 of training.
    Returns (step, progress in [0, 1+)) -> learning-rate factor."""
    def factor(step: int, progress: float) -> float:
        warm = min(1.0, 0.01 + 0.99 * step / max(warmup_steps, 1))
        return warm * 0.33 ** sum(progress >= m for m in (0.5, 0.75, 0.9))
    return factor


def refill_empty_grid(estimator) -> bool:
    """Mark every cell occupied if none is; True if it was empty.

    At initialisation the density can be exactly constant (the bf16 MLP rounds
    the 1e-4 hash features away): no cell is above the grid's mean-based
    threshold, so there are no samples, no gradient, and training stalls until
    something lifts a cell (lego with max_resolution 256 lost 450 steps). The
    next updates carve the grid again.
    """
    if bool(estimator.binaries.any()):
        return False
    estimator.binaries.fill_(True)
    return True


def scene_space(placement_json: Path, tcfg, views) -> tuple[Space, str]:
    """The teacher's space for the data stage's scene: its type, the reach of its surroundings (in
    teacher units) and, for a forward-facing one, the training views' cameras (`ndc_space`); a
    placement.json of an older data stage is an object's box."""
    try:
        placement = json.loads(placement_json.read_text())
    except (OSError, ValueError):
        placement = {}
    kind = placement.get("scene_type", "object")
    if kind == "forward":
        try:
            return ndc_space(views, tcfg)
        except ValueError as err:  # cameras too close to the scene for one plane in front of them
            space, why = space_for(kind, tcfg.aabb, tcfg.cone_angle, _reach(placement))
            return space, f"{why} ({err})"
    return space_for(kind, tcfg.aabb, tcfg.cone_angle, _reach(placement))


def _reach(placement: dict) -> float | None:
    far = placement.get("far")
    return far * placement["scale"] if far is not None and "scale" in placement else None


def ndc_space(views, tcfg) -> tuple[Space, str]:
    """A forward-facing scene's space: the ndc of its training cameras' mean pose, over a box that
    every training ray's edge pixels fall in (teacher/space.py: ndc_frame)."""
    H, W = views.height, views.width
    border = torch.cat([torch.arange(W), (H - 1) * W + torch.arange(W), torch.arange(H) * W,
                        torch.arange(H) * W + W - 1])
    n = len(views.names)
    view = torch.arange(n).repeat_interleave(len(border))
    rays_o, rays_d = rays_for_pixels(views.c2w[view], pixel_directions(border.repeat(n), views.k[view], W))
    k = views.intrinsics[0]
    frame, why = ndc_frame(views.c2w, k.fx, k.fy, W, H, tcfg.aabb, (rays_o, rays_d))
    return Space(ndc=frame), "forward: " + why


def run(ctx) -> dict:
    tune_malloc()
    cfg, tcfg, dev = ctx.cfg, ctx.cfg.teacher, ctx.device
    torch.manual_seed(tcfg.seed)
    root = ctx.input("data", "scene")
    views = load_split(root, "train", cfg.data.downscale)
    bg = background_rgb(cfg.background).to(dev)
    H, W = views.height, views.width

    # every training pixel as one flat table; rays are built per batch
    pixels = views.images.reshape(-1, 4).to(dev)
    c2w, k_views = views.c2w.to(dev), views.k.to(dev)  # each view's pose, intrinsics and lens distortion
    if all(c.is_pinhole for c in views.intrinsics):
        k_views = k_views[:, :4]  # pinhole rays without a per-batch look at the distortion (a sync on CUDA)
    n_pix = H * W

    switches = speed_switches(tcfg, dev)
    for key, choice in switches.items():
        ctx.log(f"{key}: {choice.value} ({choice.reason})")
    space, why = scene_space(ctx.input("data", "placement"), tcfg, views)
    ctx.log(f"space: {why}")
    field, estimator = build_teacher(tcfg, dev, switches, space)
    # fused: one kernel over all parameters; on 2 CPU cores the 11M-entry hash table's
    # update went from 33 to 7 ms a step (of ~250), measured on lego
    optimizer = torch.optim.Adam(field.parameters(), lr=tcfg.lr, betas=(0.9, tcfg.adam_beta2), eps=1e-15,
                                 weight_decay=tcfg.weight_decay, fused=True)
    march = MarchSettings(render_step_size=tcfg.render_step_size, alpha_thre=tcfg.alpha_thre,
                          early_stop_eps=tcfg.early_stop_eps)
    use_amp = dev.type == "cuda"
    batch = {"num_rays": tcfg.init_batch_rays}  # adaptive: keeps the samples per step near the target

    def occ_eval_fn(x: torch.Tensor) -> torch.Tensor:
        return field.query_density(x).float()[:, None] * tcfg.render_step_size

    def update_grid(step: int) -> None:
        field.train()
        estimator.train()
        estimator.update_every_n_steps(step=step, occ_eval_fn=occ_eval_fn, occ_thre=tcfg.occ_threshold,
                                       warmup_steps=tcfg.grid_warmup_steps, n=tcfg.grid_update_every)
        if step % tcfg.grid_update_every == 0 and refill_empty_grid(estimator):
            ctx.log(f"step {step}: the occupancy grid came out empty; every cell is marked occupied again")

    def step_fn(step: int) -> StepOutput | None:
        num_rays = batch["num_rays"]
        idx = torch.randint(0, pixels.shape[0], (num_rays,), device=dev)
        view = torch.div(idx, n_pix, rounding_mode="floor")
        rays_o, rays_d = rays_for_pixels(c2w[view], pixel_directions(idx % n_pix, k_views[view], W))
        rgba = pixels[idx]
        background = torch.rand(num_rays, 3, device=dev) if tcfg.random_background else bg
        target = rgba[:, :3] * rgba[:, 3:] + background * (1 - rgba[:, 3:])
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            rgb, _, _, n_samples = render_rays(field, estimator, rays_o, rays_d, background, march, stratified=True)
        if n_samples == 0:
            return None
        batch["num_rays"] = int(min(max(num_rays * tcfg.target_samples / n_samples, 256), tcfg.max_batch_rays))
        loss = F.smooth_l1_loss(rgb, target) if tcfg.loss == "smooth_l1" else F.mse_loss(rgb, target)

        def log() -> dict:
            mse = F.mse_loss(rgb.detach(), target).item()
            return {"psnr": -10 * math.log10(max(mse, 1e-10)), "rays": num_rays, "samples": n_samples}
        return StepOutput(loss, log)

    loop = LoopSettings(name="teacher", knob="teacher", steps=tcfg.steps, max_seconds=tcfg.max_seconds,
                        expected_steps=tcfg.expected_steps, checkpoint_every=tcfg.checkpoint_every,
                        log_every=tcfg.log_every)
    result = train(ctx, loop, step_fn, lr_schedule(tcfg.warmup_steps), optimizer,
                   targets={"field": field, "estimator": estimator}, params=field.parameters,
                   extra=batch, before_step=update_grid)

    metrics = evaluate(ctx, field, estimator, root, march)
    metrics["train_seconds"] = round(result.seconds, 2)
    metrics["steps"] = result.steps
    metrics["resumed_from_step"] = result.start
    atomic_torch_save(ctx.out_dir / MODEL, {
        "field": field.state_dict(), "estimator": estimator.state_dict(),
        "teacher_config": dataclasses.asdict(tcfg), "space": space.to_json(),
        "switches": {key: choice.value for key, choice in switches.items()},  # what downstream renders with
    })
    atomic_write_json(ctx.out_dir / "curve.json", result.curve)
    atomic_write_json(ctx.out_dir / "metrics.json", metrics)
    (ctx.out_dir / CHECKPOINT).unlink(missing_ok=True)
    ctx.log(f"test PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} over {metrics['n_views']} views "
            f"after {result.steps} steps, {result.seconds:.0f} s of training")
    return {"metrics": metrics,
            "outputs": {"model": MODEL, "metrics": "metrics.json", "curve": "curve.json", "renders": "renders"},
            "resolved": {key: choice.value for key, choice in switches.items()}}


@torch.no_grad()
def evaluate(ctx, field, estimator, root: Path, march: MarchSettings, n_saved: int = 4) -> dict:
    cfg, dev = ctx.cfg, ctx.device
    field.eval()
    estimator.eval()
    test = load_split(root, "test", cfg.data.downscale, max_views=cfg.teacher.eval_views or None)
    bg = background_rgb(cfg.background).to(dev)
    gt_all = test.rgb_on(bg.cpu())
    psnrs, ssims, t0 = [], [], time.time()
    for k in progress(range(len(test.names)), desc="teacher eval", unit="view"):
        # the project's rule: compare in the photo's pinhole camera, against the photo undistorted to it
        gt, camera = undistort_image(gt_all[k], test.intrinsics[k])
        rays_o, rays_d = pinhole_rays(test.c2w[k].to(dev), camera_directions(camera, dev))
        img, _ = render_image(field, estimator, rays_o, rays_d, bg, march, chunk=cfg.teacher.eval_chunk_rays)
        img = img.cpu()
        psnrs.append(psnr(img, gt))
        ssims.append(ssim(img, gt))
        if k < n_saved:
            side = png_bytes(torch.cat([gt, img], 1))
            atomic_write_bytes(ctx.out_dir / "renders" / f"{test.names[k]}.png", side)
    return {
        "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "n_views": len(psnrs),
        "per_view_psnr": [round(p, 3) for p in psnrs], "eval_seconds_per_view": (time.time() - t0) / len(psnrs),
    }
