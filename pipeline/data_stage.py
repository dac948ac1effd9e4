"""Stage 1, data: generate the toy scene, validate a Blender scene folder, or read a capture
(nerfstudio, instant-ngp, COLMAP, LLFF; pipeline/formats/), place it in the teacher's box
(pipeline/placement.py) and write it in the Blender layout (pipeline/canonical.py)."""

from __future__ import annotations

import json
from pathlib import Path

from .canonical import write_scene
from .errors import DataError
from .formats import PLACED_ALREADY, image_size, read_capture, resolve_kind
from .io import atomic_write_text
from .placement import identity, place_capture, scene_type
from .scene import load_split, scene_files
from .toy_scene import split_poses, write_toy_scene


def run(ctx) -> dict:
    cfg = ctx.cfg
    kind = resolve_kind(cfg.data.kind, cfg.data.root)
    placement, source = identity(), {"kind": kind}
    masked, c2w = True, None  # a capture's cameras and masks say what the scene is (below)
    if kind == "toy":
        root = ctx.out_dir / "scene"
        write_toy_scene(cfg.data.toy, root)
        files = scene_files(root)
        if cfg.data.toy.surroundings != "none":  # no transparent pixel: the cameras say what it is
            masked, c2w = False, list(split_poses(cfg.data.toy)["train"])
    elif kind == "blender" and not _oversized(scene_files(Path(cfg.data.root).resolve()), cfg.data.max_size):
        root = Path(cfg.data.root).resolve()  # read in place, as it is
        files = scene_files(root)
        source["root"] = str(root)
    else:
        capture = read_capture(Path(cfg.data.root).resolve(), kind)
        for line in capture.warnings:
            ctx.log(line)
        if kind not in PLACED_ALREADY:
            placement = place_capture(capture, cfg.teacher.aabb)
            ctx.log(f"placed {kind} capture: centre {_fmt(placement.centre)}, up {_fmt(placement.up)}, radius "
                    f"{placement.radius:.4g} (from the {placement.radius_from}) -> scale {placement.scale:.4g}")
        root = ctx.out_dir / "scene"
        write_scene(capture, placement, root, cfg.data.max_size, ctx.out_dir / "cache",
                    [ctx.previous_dir / "cache"], log=ctx.log)
        files = capture.input_files()
        if kind != "blender":  # a Blender scene's alpha is its mask, at any size
            masked = all(f.mask is not None for f in capture.frames)
            c2w = [f.c2w for f in capture.frames]
        rel = capture.relative
        source |= {"root": str(capture.root), **({"format": capture.source} if capture.source else {}),
                   "frames": {s: [rel(f.image) for f in fr] for s, fr in capture.splits.items()},
                   "skipped": [rel(p) for lost in capture.missing.values() for p in lost]}
    if cfg.data.scene_type != "auto":
        kind_of_scene, why = cfg.data.scene_type, "data.scene_type"
    elif c2w is None:
        kind_of_scene, why = "object", "a Blender-layout scene: its alpha is the mask"
    else:
        kind_of_scene, why = scene_type(c2w, masked)
    ctx.log(f"scene type: {kind_of_scene} ({why})")
    atomic_write_text(ctx.out_dir / "placement.json", json.dumps(
        {"source": source, "box": list(cfg.teacher.aabb), "scene_type": kind_of_scene, "scene_type_why": why,
         **placement.to_json()}, indent=1))
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
    in_place = root != ctx.out_dir / "scene"
    return {
        "metrics": {"n_files": len(files), **{f"n_{k}": v for k, v in counts.items()}, "size": size,
                    "scene_type": kind_of_scene},
        # a scene written here is named relative to the stage folder (the runs folder may move)
        "outputs": {"scene": str(root) if in_place else "scene", "placement": "placement.json"},
    }


def _oversized(files: list[Path], max_size: int) -> bool:
    """Whether any image among a Blender scene's files is larger than data.max_size on its long side."""
    return any(max(image_size(p)) > max_size for p in files if p.suffix.lower() != ".json")


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"
