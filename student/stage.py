"""Stage 4: train the NeLF student on the teacher's pseudo-views."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from pipeline import distributed
from pipeline.cameras import Intrinsics
from pipeline.errors import StageError
from pipeline.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, png_bytes, read_json
from pipeline.metrics import psnr, ssim
from pipeline.scene import load_rendered_views, photos_at
from pipeline.training import CHECKPOINT, LoopSettings, StepOutput, train
from teacher.model import load_teacher
from teacher.occupancy import surface_grids

from .kinds import StudentCamera, StudentModel, build_student, count_params, ray_layout, slab_bound, student_checkpoint
from .mining import HardRayPool, ray_errors

MODEL = "model.pt"


def ray_blocks(images: torch.Tensor, view: torch.Tensor, ray: torch.Tensor, grid: tuple[int, int],
               sr: int) -> torch.Tensor:
    """The sr x sr pixel block of each ray, laid out like `StudentModel.forward_rays`.

    images: (V, H, W, 3) uint8; view, ray: (N,) view index and row-major ray index on the
    `grid` = (rows, columns) ray grid. Returns (B, 3, h * sr, w * sr) float in [0, 1],
    (B, h, w) = `ray_layout(N, grid)`.
    """
    offs, cols_per_row = torch.arange(sr), grid[1]
    rows = (ray // cols_per_row * sr)[:, None] + offs  # (N, sr)
    cols = (ray % cols_per_row * sr)[:, None] + offs
    blocks = images[view[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, sr, sr, 3)
    b, h, w = ray_layout(len(ray), grid)
    blocks = blocks.reshape(b, h, w, sr, sr, 3).permute(0, 5, 1, 3, 2, 4)  # (B, 3, h, sr, w, sr)
    return blocks.reshape(b, 3, h * sr, w * sr).float() / 255.0


def student_camera(cfg, camera: Intrinsics, scene_cameras: dict) -> StudentCamera:
    """The pseudo-views' pinhole `camera`, and near/far: the camera radius band of the pseudo-views
    around the scene box's bounding sphere; points are normalised by that sphere."""
    s = cfg.student
    aabb = scene_cameras["aabb"]
    center = [(aabb[i] + aabb[i + 3]) / 2 for i in range(3)]
    half = [(aabb[i + 3] - aabb[i]) / 2 for i in range(3)]
    radius = math.sqrt(sum(h * h for h in half))
    r_min, r_max = scene_cameras["radius"]
    near = s.near if s.near is not None else max(r_min - radius, 0.05)
    far = s.far if s.far is not None else r_max + radius
    return StudentCamera(width=camera.width, height=camera.height, fx=camera.fx, fy=camera.fy, cx=camera.cx,
                         cy=camera.cy, near=near, far=far, center=tuple(center), scale=radius,
                         aabb=tuple(float(v) for v in aabb),
                         surroundings=scene_cameras.get("scene_type", "object") != "object",
                         slab=forward_slab(camera, scene_cameras.get("region"), center))


def forward_slab(camera: Intrinsics, region: dict | None, center: list[float]) -> tuple[float, ...] | None:
    """A forward-facing scene's mean camera for the far field's planes (`StudentCamera.slab`): the
    region's mean camera, the depth of the box centre in front of it (the nearest plane), and the
    reach of the planes' coordinates (`kinds.slab_bound`); None without a forward region or where the
    box centre is not in front of the mean camera."""
    if not region or region.get("type") != "forward":
        return None
    rot = [[float(v) for v in row] for row in region["rotation"]]
    eye = [float(v) for v in region["centre"]]
    depth = -sum((center[i] - eye[i]) * rot[i][2] for i in range(3))  # along the mean camera's -z
    if depth <= 0:
        return None
    bx, by = slab_bound(camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height,
                        float(region["turn_deg"]), region["extent"], depth)
    return (*[v for row in rot for v in row], *eye, depth, bx, by)


def lr_schedule(warmup_steps: int, steps: int):
    """Linear warm-up over `warmup_steps`, then cosine decay to 5% over the rest of training.
    Returns (step, progress in [0, 1+)) -> learning-rate factor."""
    warm = warmup_steps / steps  # the share of training the warm-up takes

    def factor(step: int, progress: float) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        p = min(max((progress - warm) / max(1.0 - warm, 1e-9), 0.0), 1.0)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))
    return factor


def draw_views(n_items: int, n_pseudo: int, n_pool: int, n_real: int, finetune: bool) -> torch.Tensor:
    """Views of a batch's n_items rays or images, indices into the pool: pseudo-views first
    (0 .. n_pseudo - 1), then the real training views (.. n_pool - 1). The last n_real items
    are real views; in the finetune every item is."""
    if finetune:
        return torch.randint(n_pseudo, n_pool, (n_items,))
    view = torch.randint(0, n_pseudo, (n_items - n_real,))
    return torch.cat([view, torch.randint(n_pseudo, n_pool, (n_real,))]) if n_real else view


def run(ctx) -> dict:
    cfg, scfg, tcfg, dev = ctx.cfg, ctx.cfg.student, ctx.cfg.student.train, ctx.device
    torch.manual_seed(tcfg.seed)
    views_path = ctx.input("distill", "views")
    scene_cameras = read_json(ctx.input("distill", "cameras"))
    images, poses, cameras = load_rendered_views(views_path)
    # the student bakes one pinhole camera into its graph (distill renders every view with it)
    c = cameras[0]
    if any(other != c for other in cameras) or not c.is_pinhole:
        raise StageError(f"{views_path}: the pseudo-views need one pinhole camera (first view: {c}); re-run distill")
    if max(c.width, c.height) != scfg.output_size:
        raise StageError(f"{views_path}: pseudo-views are {c.width}x{c.height} px, student.output_size (the long "
                         f"side) is {scfg.output_size}; re-run distill")
    camera = student_camera(cfg, c, scene_cameras)
    model = build_student(scfg.kind, scfg.arch, camera).to(dev)
    needs = model.teacher_grids()
    if needs is not None:
        field, estimator, _ = load_teacher(ctx.input("teacher", "model"), cfg.teacher, dev)
        occupancy, density = surface_grids(field, torch.tensor(cfg.teacher.aabb), needs.resolution,
                                           samples=needs.samples)
        del field, estimator
        try:
            for line in model.from_teacher(occupancy, density):
                ctx.log(line)
        except ValueError as err:
            raise StageError(str(err)) from None
    world, rank = distributed.world_size(), distributed.rank()
    net = model
    if world > 1:
        # Data parallel: every rank takes its slice of one global batch (same seed on
        # every rank), gradients are averaged, BatchNorm statistics are global.
        if tcfg.batch_images % world:
            raise StageError(f"student.train.batch_images={tcfg.batch_images} must be divisible by the number of "
                             f"ranks ({world}): it is the global batch, split evenly across ranks")
        model = distributed.sync_batchnorm(model, dev)
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        ctx.log(f"data parallel over {world} ranks: {tcfg.batch_images // world} images per rank, "
                f"global batch {tcfg.batch_images}")
    ctx.log(f"{scfg.kind}: {count_params(model):,} parameters, {model.flops_per_frame() / 1e9:.3f} GFLOP per frame, "
            f"{model.ray_grid[1]}x{model.ray_grid[0]} rays -> {camera.width}x{camera.height} px, "
            f"near {camera.near:.2f} far {camera.far:.2f}")

    real, pool_cover = None, None
    if tcfg.real_fraction > 0 or tcfg.finetune_fraction > 0:
        views, rgb, covered = photos_at(ctx.input("data", "scene"), "train", cfg.data.downscale, cfg.background,
                                        camera.intrinsics)
        real = ((rgb * 255 + 0.5).clamp(0, 255).to(torch.uint8), views.c2w)
        if not covered.all():
            # photos of other cameras cover part of the frame: the rest is left out of the loss
            ctx.log(f"the training photos cover {covered.float().mean():.1%} of the student's frame at their "
                    "poses (other cameras); the loss counts the covered pixels only")
            pool_cover = torch.cat([torch.ones(images.shape[:3], dtype=torch.uint8),
                                    covered.to(torch.uint8)])[..., None].expand(-1, -1, -1, 3)

    optimizer = torch.optim.AdamW(model.param_groups(tcfg.lr), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    use_amp = dev.type == "cuda"
    rays_mode = tcfg.batch_mode == "rays"
    if rays_mode and not model.per_ray:
        raise StageError(f"student.train.batch_mode: rays needs a per-ray student; this {scfg.kind} one is not "
                         "(use batch_mode: images)")
    # one global batch per step (same seed on every rank), of whole images or of rays
    n_items = (tcfg.batch_rays or tcfg.batch_images * model.n_rays) if rays_mode else tcfg.batch_images
    n_real = int(round(n_items * tcfg.real_fraction)) if real is not None else 0
    pool_img, pool_pose = (torch.cat([images, real[0]]), torch.cat([poses, real[1]])) if real is not None \
        else (images, poses)
    # per-ray values the model takes from whole frames (gridlf: where each pixel's surface is),
    # once per training view, so that a step reads its rays' rows instead of recomputing them
    cache = ray_inputs_table(model, pool_pose, dev) if rays_mode and table_fits(model, pool_pose, ctx) else None
    if cache is not None:
        ctx.log(f"per-ray inputs of {len(pool_pose)} views: {cache.numel() * 4 / 2 ** 20:.0f} MB")
    share = slice(rank * n_items // world, (rank + 1) * n_items // world)
    n_share = share.stop - share.start
    n_hard = int(n_share * tcfg.hard_fraction) if rays_mode else 0
    pool = HardRayPool(n_share) if n_hard else None  # per process; rebuilt within steps after a resume

    # the finetune on the real views is the last finetune_fraction of training's progress, which the
    # loop hands to the learning-rate schedule just before each step (resumes restore it with the step)
    decay = lr_schedule(tcfg.warmup_steps, tcfg.steps)
    phase = {"progress": 0.0, "finetune_from": None}

    def schedule(step: int, progress: float) -> float:
        phase["progress"] = progress
        return decay(step, progress)

    def step_fn(step: int) -> StepOutput:
        net.train()
        finetune = tcfg.finetune_fraction > 0 and phase["progress"] >= 1.0 - tcfg.finetune_fraction
        if finetune and phase["finetune_from"] is None:
            phase["finetune_from"] = step
            ctx.log(f"finetune on the {len(real[1])} real training views from step {step}")
        view = draw_views(n_items, images.shape[0], pool_img.shape[0], n_real, finetune)
        if rays_mode:
            ray = torch.randint(0, model.n_rays, (n_items,))
            noise = torch.rand(n_items, model.n_points)  # depth jitter, global batch
            view, ray = view[share].clone(), ray[share].clone()
            if pool is not None and len(pool) and not finetune:  # the share's first rays from the hard pool
                view[:n_hard], ray[:n_hard] = pool.draw(n_hard)
            target = ray_blocks(pool_img, view, ray, model.ray_grid, model.ray_block).to(dev)
            weight = None if pool_cover is None else \
                ray_blocks(pool_cover, view, ray, model.ray_grid, model.ray_block).to(dev) * 255.0
            inputs = {"pose": pool_pose[view].to(dev), "ray": ray.to(dev)}
            if cache is not None:
                inputs["cached"] = cache[view, ray].to(dev)
        else:
            noise = torch.rand(n_items, model.n_rays, model.n_points)  # depth jitter, global batch
            target = pool_img[view[share]].to(dev).permute(0, 3, 1, 2).float() / 255.0
            weight = None if pool_cover is None else pool_cover[view[share]].to(dev).permute(0, 3, 1, 2).float()
            inputs = {"pose": pool_pose[view[share]].to(dev)}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            pred = net(**inputs, jitter=noise[share].to(dev))
        if weight is not None:  # pixels no photo covers count for nothing (neither loss nor mining)
            pred, target = pred.float() * weight, target * weight
        if pool is not None:
            pool.update(view, ray, ray_errors(pred.detach(), target, model.ray_block))
        if weight is None:
            mse = F.mse_loss(pred.float(), target)
        else:
            mse = ((pred - target) ** 2).sum() / weight.sum().clamp(min=1.0)
        reg = model.regularization()
        if reg is None:
            return StepOutput(mse)
        # the curve's PSNR is the colour error's alone
        return StepOutput(mse + reg, lambda: {"psnr": -10 * math.log10(max(mse.item(), 1e-10)), "reg": reg.item()})

    loop = LoopSettings(name="student", knob="student.train", steps=tcfg.steps, max_seconds=tcfg.max_seconds,
                        expected_steps=tcfg.expected_steps, checkpoint_every=tcfg.checkpoint_every,
                        log_every=tcfg.log_every, collective=world > 1)
    result = train(ctx, loop, step_fn, schedule, optimizer,
                   targets={"model": model}, params=model.parameters)
    if not distributed.is_main():
        return {}  # rank 0 evaluates and writes the outputs

    metrics = evaluate(ctx, model, images)
    if phase["finetune_from"] is not None:
        metrics["finetune_from_step"] = phase["finetune_from"]
    metrics.update({"train_seconds": round(result.seconds, 2), "steps": result.steps,
                    "params": count_params(model), "flops_per_frame": model.flops_per_frame(),
                    "resumed_from_step": result.start})
    atomic_torch_save(ctx.out_dir / MODEL, student_checkpoint(model))  # kind, arch and camera: rebuilt from it
    atomic_write_json(ctx.out_dir / "curve.json", result.curve)
    atomic_write_json(ctx.out_dir / "metrics.json", metrics)
    (ctx.out_dir / CHECKPOINT).unlink(missing_ok=True)
    ctx.log(f"PSNR vs ground truth {metrics['psnr']:.2f} dB, vs teacher {metrics['psnr_vs_teacher']:.2f} dB "
            f"(constant-colour baseline {metrics['baseline_psnr']:.2f} dB)")
    return {"metrics": metrics, "outputs": {"model": MODEL, "metrics": "metrics.json", "curve": "curve.json",
                                            "side_by_side": "side_by_side"}}


TABLE_MAX_BYTES = 8 * 2 ** 30  # per-ray input tables above this are not kept in memory


def table_fits(model: StudentModel, poses: torch.Tensor, ctx) -> bool:
    """Whether the per-view table of `ray_inputs` (`ray_input_columns` floats a ray) stays under
    TABLE_MAX_BYTES. If not, steps compute their rays' inputs themselves (slower); a model that
    can only do that from whole frames (`ray_inputs_required`) is a clear error instead."""
    need = len(poses) * model.n_rays * model.ray_input_columns * 4
    if need <= TABLE_MAX_BYTES:
        return True
    what = f"{len(poses):,} views x {model.n_rays:,} rays need {need / 2 ** 30:.1f} GB of per-ray inputs"
    if model.ray_inputs_required:
        raise StageError(f"student: {what} (limit {TABLE_MAX_BYTES / 2 ** 30:.0f} GB); lower distill.n_views or "
                         "student.output_size")
    ctx.log(f"{what}: over {TABLE_MAX_BYTES / 2 ** 30:.0f} GB, so each step computes its rays' own (slower)")
    return False


@torch.no_grad()
def ray_inputs_table(model: StudentModel, poses: torch.Tensor, dev: torch.device,
                     chunk: int = 8) -> torch.Tensor | None:
    """`model.ray_inputs` of every view, (V, n_rays, C) on the CPU (None: the model has none)."""
    was_training = model.training
    model.eval()
    rows = []
    for start in range(0, len(poses), chunk):
        part = model.ray_inputs(poses[start:start + chunk].to(dev))
        if part is None:
            model.train(was_training)
            return None
        rows.append(part.float().cpu())
    model.train(was_training)
    return torch.cat(rows)


@torch.no_grad()
def evaluate(ctx, model: StudentModel, train_images: torch.Tensor, n_saved: int = 4) -> dict:
    """Student vs the real test photos and vs the teacher's renders of the same cameras, in the
    student's frame: each photo undistorted and resampled to it (`photos_at`), PSNR over the pixels
    the photo covers (all of them when the photos' camera is the frame's, scaled)."""
    dev = ctx.device
    model.eval()
    cfg = ctx.cfg
    test, gt, covered = photos_at(ctx.input("data", "scene"), "test", cfg.data.downscale, cfg.background,
                                  model.camera.intrinsics)
    if not covered.all():
        ctx.log(f"the test photos cover {covered.float().mean():.1%} of the student's frame at their poses (other "
                "cameras): PSNR against them counts the covered pixels only")
    teacher_imgs, _, _ = load_rendered_views(ctx.input("distill", "test_views"))
    teacher_imgs = teacher_imgs.float() / 255.0
    mean_colour = train_images.float().mean(dim=(0, 1, 2)) / 255.0
    rows = []
    for k in range(len(test.names)):
        pred = model(test.c2w[k].to(dev)).float()[0].permute(1, 2, 0).cpu()
        cov = covered[k]
        rows.append({"view": test.names[k], "psnr": psnr(pred, gt[k], cov),
                     "ssim": ssim(pred, gt[k], mask=cov),
                     "psnr_vs_teacher": psnr(pred, teacher_imgs[k]), "teacher_psnr": psnr(teacher_imgs[k], gt[k], cov),
                     "baseline_psnr": psnr(mean_colour.expand_as(gt[k]), gt[k], cov)})
        if k < n_saved:
            side = torch.cat([gt[k], teacher_imgs[k], pred], dim=1)
            atomic_write_bytes(ctx.out_dir / "side_by_side" / f"{test.names[k]}.png", png_bytes(side))
    mean = {key: float(np.mean([r[key] for r in rows]))
            for key in ("psnr", "ssim", "psnr_vs_teacher", "teacher_psnr", "baseline_psnr")}
    return {**mean, "n_views": len(rows), "per_view": rows, "covered": round(float(covered.float().mean()), 4)}
