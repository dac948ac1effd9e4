"""Stage 4: train the NeLF student on the teacher's pseudo-views."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline import distributed
from pipeline.config import StudentTrainConfig
from pipeline.errors import DataError, StageError
from pipeline.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, to_uint8
from pipeline.metrics import psnr, ssim
from pipeline.scene import background_rgb, load_split
from pipeline.training import all_finite, inject_faults, nonfinite_error, resume_from

from .kinds import StudentCamera, StudentModel, build_student, ray_layout, student_checkpoint
from .model import count_params

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


def load_views(folder: Path, transforms: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Images (N, S, S, 3) uint8 and poses (N, 4, 4) of a distill output; camera_angle_x."""
    try:
        meta = json.loads((folder / transforms).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{folder / transforms}: missing or unreadable ({err.__class__.__name__}); "
                        "re-run `python -m pipeline stage distill --force`") from None
    imgs, poses = [], []
    for fr in tqdm(meta["frames"], desc=f"load {transforms}", unit="view", leave=False):
        path = folder / (fr["file_path"] + ".png")
        try:
            imgs.append(iio.imread(path)[..., :3])
        except Exception as err:
            raise DataError(f"{path}: unreadable pseudo-view ({err.__class__.__name__}); "
                            "re-run `python -m pipeline stage distill --force`") from None
        poses.append(fr["transform_matrix"])
    return (torch.from_numpy(np.stack(imgs)), torch.tensor(poses, dtype=torch.float32),
            float(meta["camera_angle_x"]))


def ray_blocks(images: torch.Tensor, view: torch.Tensor, ray: torch.Tensor, grid: int, sr: int) -> torch.Tensor:
    """The sr x sr pixel block of each ray, laid out like `StudentModel.forward_rays`.

    images: (V, S, S, 3) uint8; view, ray: (N,) view index and row-major ray index on the
    grid x grid ray grid. Returns (B, 3, h * sr, w * sr) float in [0, 1], (B, h, w) =
    `ray_layout(N, grid)`.
    """
    offs = torch.arange(sr)
    rows = (ray // grid * sr)[:, None] + offs  # (N, sr)
    cols = (ray % grid * sr)[:, None] + offs
    blocks = images[view[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, sr, sr, 3)
    b, h, w = ray_layout(len(ray), grid)
    blocks = blocks.reshape(b, h, w, sr, sr, 3).permute(0, 5, 1, 3, 2, 4)  # (B, 3, h, sr, w, sr)
    return blocks.reshape(b, 3, h * sr, w * sr).float() / 255.0


def student_camera(cfg, camera_angle_x: float, dist: dict, aabb: list[float]) -> StudentCamera:
    """Near/far: the camera radius band of the pseudo-views around the scene box's
    bounding sphere; points are normalised by that sphere."""
    s = cfg.student
    center = [(aabb[i] + aabb[i + 3]) / 2 for i in range(3)]
    half = [(aabb[i + 3] - aabb[i]) / 2 for i in range(3)]
    radius = math.sqrt(sum(h * h for h in half))
    r_min, r_max = dist["radius"]
    near = s.near if s.near is not None else max(r_min - radius, 0.05)
    far = s.far if s.far is not None else r_max + radius
    focal = 0.5 * s.output_size / math.tan(0.5 * camera_angle_x)
    return StudentCamera(output_size=s.output_size, focal=focal, near=near, far=far,
                         center=tuple(center), scale=radius)


def _lr_factor(step: int, progress: float, warmup_steps: int) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to 5% as `progress` goes 0 -> 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _lr_lambda(cfg: StudentTrainConfig):
    def f(step: int) -> float:
        p = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
        return _lr_factor(step, p, cfg.warmup_steps)
    return f


def _time_progress(cfg: StudentTrainConfig, step: int, spent: float) -> float:
    """Training progress in [0, 1+) under a time budget: whichever of steps and seconds is
    further along (rank 0's clock decides, so that every rank stops at the same step)."""
    by_steps = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return max(by_steps, spent / cfg.max_seconds)


def run(ctx) -> dict:
    cfg, scfg, tcfg, dev = ctx.cfg, ctx.cfg.student, ctx.cfg.student.train, ctx.device
    torch.manual_seed(tcfg.seed)
    distill_dir = ctx.upstream["distill"]
    dist = ctx.upstream_records["distill"]["outputs"]["pose_distribution"]
    images, poses, camera_angle_x = load_views(distill_dir, "transforms.json")
    if images.shape[1] != scfg.output_size:
        raise StageError(f"{distill_dir}: pseudo-views are {images.shape[1]} px, student.output_size is "
                         f"{scfg.output_size}; re-run distill")
    camera = student_camera(cfg, camera_angle_x, dist, cfg.teacher.aabb)
    model = build_student(scfg.kind, scfg.arch, camera).to(dev)
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
            f"input {model.in_size}x{model.in_size} -> {scfg.output_size}, near {camera.near:.2f} far {camera.far:.2f}")

    real = None
    if tcfg.real_fraction > 0:
        root = Path(ctx.upstream_records["data"]["outputs"]["scene_root"])
        train = load_split(root, "train", cfg.data.downscale)
        rgb = train.rgb_on(background_rgb(cfg.background)).permute(0, 3, 1, 2)
        rgb = F.interpolate(rgb, size=(scfg.output_size,) * 2, mode="area")
        real = ((rgb.permute(0, 2, 3, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8), train.c2w)

    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(tcfg))
    start, curve, elapsed, trained = 0, [], 0.0, False
    ckpt_path = ctx.out_dir / CHECKPOINT
    targets = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    state = resume_from(ckpt_path, dev, targets, ctx.log) if ctx.resume else None
    if state is not None:
        start, curve, elapsed, trained = state["step"], state["curve"], state["elapsed"], state.get("trained", False)
        torch.set_rng_state(state["rng"])
        ctx.log(f"resuming from step {start} ({ckpt_path}){'; training had finished' if trained else ''}")

    def save_checkpoint(step: int, trained: bool = False) -> None:
        if not distributed.is_main():
            return
        if not all_finite(model.parameters()):
            raise nonfinite_error("student", "parameters became non-finite", step, ckpt_path, last_good,
                                  "student.train.lr")
        atomic_torch_save(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": step, "curve": curve,
            "elapsed": elapsed, "rng": torch.get_rng_state(), "trained": trained})

    use_amp = dev.type == "cuda"
    rays_mode = tcfg.batch_mode == "rays"
    if rays_mode and not model.per_ray:
        raise StageError(f"student.train.batch_mode: rays needs a per-ray student; this {scfg.kind} one is not "
                         "(use batch_mode: images)")
    # one global batch per step (same seed on every rank), of whole images or of rays
    n_items = tcfg.batch_images * (model.n_rays if rays_mode else 1)
    n_real = int(round(n_items * tcfg.real_fraction)) if real is not None else 0
    pool_img, pool_pose = (torch.cat([images, real[0]]), torch.cat([poses, real[1]])) if n_real else (images, poses)
    t_last, last_good, done = time.time(), start, start
    bar = tqdm(range(start, start if trained else tcfg.steps), desc="student", initial=start, total=tcfg.steps,
               unit="step", disable=not distributed.is_main())
    share = slice(rank * n_items // world, (rank + 1) * n_items // world)
    for step in bar:
        net.train()
        # views: pseudo-views, then (real_fraction) real training views at the end of the pool
        view = torch.randint(0, images.shape[0], (n_items - n_real,))
        if n_real:
            view = torch.cat([view, torch.randint(images.shape[0], pool_img.shape[0], (n_real,))])
        if rays_mode:
            ray = torch.randint(0, model.n_rays, (n_items,))
            noise = torch.rand(n_items, model.n_points)  # depth jitter, global batch
            target = ray_blocks(pool_img, view[share], ray[share], model.in_size, model.ray_block).to(dev)
            inputs = {"pose": pool_pose[view[share]].to(dev), "ray": ray[share].to(dev)}
        else:
            noise = torch.rand(n_items, model.n_rays, model.n_points)  # depth jitter, global batch
            target = pool_img[view[share]].to(dev).permute(0, 3, 1, 2).float() / 255.0
            inputs = {"pose": pool_pose[view[share]].to(dev)}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            pred = net(**inputs, jitter=noise[share].to(dev))
        loss = inject_faults(F.mse_loss(pred.float(), target), step)
        if not torch.isfinite(loss):
            raise nonfinite_error("student", f"loss became {loss.item()}", step, ckpt_path, last_good,
                                  "student.train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        out_of_time = False
        if tcfg.max_seconds:
            spent = distributed.broadcast(elapsed + time.time() - t_last)
            out_of_time = spent >= tcfg.max_seconds
            for group in optimizer.param_groups:
                group["lr"] = tcfg.lr * _lr_factor(step + 1, _time_progress(tcfg, step + 1, spent),
                                                   tcfg.warmup_steps)
        if step % tcfg.log_every == 0 or step == tcfg.steps - 1:
            now = time.time()
            elapsed += now - t_last
            t_last = now
            curve.append({"step": step, "seconds": round(elapsed, 2), "loss": loss.item(),
                          "psnr": -10 * math.log10(max(loss.item(), 1e-10))})
            bar.set_postfix(loss=f"{loss.item():.5f}", psnr=f"{curve[-1]['psnr']:.2f}")
        done = step + 1
        if done % tcfg.checkpoint_every == 0 and done < tcfg.steps:
            save_checkpoint(done)
            last_good = done
        if out_of_time:
            ctx.log(f"stopping at step {done}: student.train.max_seconds={tcfg.max_seconds:g} reached")
            break
    bar.close()
    if not trained:
        elapsed += time.time() - t_last
        save_checkpoint(done, trained=True)  # an interruption during evaluation does not retrain
    if not distributed.is_main():
        return {}  # rank 0 evaluates and writes the outputs

    metrics = evaluate(ctx, model, images)
    metrics.update({"train_seconds": round(elapsed, 2), "steps": done, "params": count_params(model),
                    "flops_per_frame": model.flops_per_frame(), "resumed_from_step": start})
    atomic_torch_save(ctx.out_dir / MODEL, student_checkpoint(model))  # kind, arch and camera: rebuilt from it
    atomic_write_json(ctx.out_dir / "curve.json", curve)
    atomic_write_json(ctx.out_dir / "metrics.json", metrics)
    ckpt_path.unlink(missing_ok=True)
    ctx.log(f"PSNR vs ground truth {metrics['psnr']:.2f} dB, vs teacher {metrics['psnr_vs_teacher']:.2f} dB "
            f"(constant-colour baseline {metrics['baseline_psnr']:.2f} dB)")
    return {"metrics": metrics, "outputs": {"model": MODEL, "camera": dataclasses.asdict(camera)}}


def test_views(ctx):
    """The scene's test split and its images on the background at the student's output
    size, (N, S, S, 3) float in [0, 1] (area-downsampled if the scene is larger)."""
    cfg, size = ctx.cfg, ctx.cfg.student.output_size
    root = Path(ctx.upstream_records["data"]["outputs"]["scene_root"])
    test = load_split(root, "test", cfg.data.downscale)
    gt = test.rgb_on(background_rgb(cfg.background)).permute(0, 3, 1, 2)
    if gt.shape[-1] != size:
        gt = F.interpolate(gt, size=(size, size), mode="area")
    return test, gt.permute(0, 2, 3, 1)


@torch.no_grad()
def evaluate(ctx, model: StudentModel, train_images: torch.Tensor, n_saved: int = 4) -> dict:
    """Student vs the real test views and vs the teacher's renders of the same cameras."""
    dev = ctx.device
    model.eval()
    test, gt = test_views(ctx)
    teacher_imgs, _, _ = load_views(ctx.upstream["distill"], "transforms_test.json")
    teacher_imgs = teacher_imgs.float() / 255.0
    mean_colour = train_images.float().mean(dim=(0, 1, 2)) / 255.0
    rows = []
    for k in range(len(test.names)):
        pred = model(test.c2w[k].to(dev)).float()[0].permute(1, 2, 0).cpu()
        rows.append({"view": test.names[k], "psnr": psnr(pred, gt[k]), "ssim": ssim(pred, gt[k]),
                     "psnr_vs_teacher": psnr(pred, teacher_imgs[k]), "teacher_psnr": psnr(teacher_imgs[k], gt[k]),
                     "baseline_psnr": psnr(mean_colour.expand_as(gt[k]), gt[k])})
        if k < n_saved:
            side = torch.cat([gt[k], teacher_imgs[k], pred], dim=1)
            atomic_write_bytes(ctx.out_dir / "side_by_side" / f"{test.names[k]}.png",
                               iio.imwrite("<bytes>", to_uint8(side), extension=".png"))
    mean = {key: float(np.mean([r[key] for r in rows]))
            for key in ("psnr", "ssim", "psnr_vs_teacher", "teacher_psnr", "baseline_psnr")}
    return {**mean, "n_views": len(rows), "per_view": rows}
