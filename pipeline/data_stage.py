"""Stage 1, data: generate the toy scene, or validate a real Blender scene folder."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .scene import load_split, scene_files
from .toy_scene import write_toy_scene


def run(ctx) -> dict:
    cfg = ctx.cfg
    if cfg.data.kind == "toy":
        root = ctx.out_dir / "scene"
        write_toy_scene(cfg.data.toy, root)
    else:
        root = Path(cfg.data.root).resolve()
    files = scene_files(root)
    # Load every split once so that unreadable images or size mismatches fail here, early.
    counts, size = {}, None
    for split in ("train", "val", "test"):
        if split == "val" and not (root / "transforms_val.json").exists():
            continue
        views = load_split(root, split, cfg.data.downscale, require_alpha=cfg.data.require_alpha)
        counts[split] = len(views.names)
        if size is not None and size != [views.width, views.height]:
            # one image size per scene: the teacher draws pixels from every view through one table
            raise DataError(f"{root}: {split} images are {views.width}x{views.height} after downscale but "
                            f"train images are {size[0]}x{size[1]}; all images of a scene must have one size")
        size = [views.width, views.height]
    ctx.log(f"scene {root}: {counts}, {size[0]}x{size[1]} after downscale {cfg.data.downscale}")
    return {
        "metrics": {"n_files": len(files), **{f"n_{k}": v for k, v in counts.items()}},
        # the toy scene lives in this stage's folder (relative: the runs folder may move)
        "outputs": {"scene": "scene" if cfg.data.kind == "toy" else str(root)},
    }
