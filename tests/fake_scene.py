"""A tiny stand-in for an exported NeLF student, so the viewer is tested on its own.

`write_fake_scene` writes the same files the real export does (see
`export/SCENE_FORMAT.md`): `scenes/<name>/{model.onnx, scene.json, reference.png}` and
an entry in `scenes/index.json`; scene.json is built and checked by export's own code
(`export/site_format.py`). The network has the student's shape of computation
(pose -> rays -> per-ray 1x1 convolutions -> ConvTranspose2d upsampling -> sigmoid)
but random, seeded weights: its output is a smooth colourful pattern that changes
with the pose, which is all the viewer tests need.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export import site_format
from pipeline.cameras import orbit_pose

RAYS = 16  # rays per side; the ConvTranspose2d doubles it
SIZE = 2 * RAYS  # output image side in pixels
ORBIT = {
    "target": [0.0, 0.0, 0.0],
    "radius": 4.0,
    "radius_min": 3.0,
    "radius_max": 6.0,
    "azimuth_deg": 30.0,
    "elevation_deg": 30.0,
    "elevation_min_deg": 5.0,
    "elevation_max_deg": 80.0,
}
REFERENCE_VIEW = (4.5, 75.0, 20.0)  # radius, azimuth deg, elevation deg: not the default view


class FakeStudent(nn.Module):
    """pose (4, 4) camera-to-world -> rgb (1, 3, SIZE, SIZE) in [0, 1]."""

    def __init__(self, width: int = 32, n_freqs: int = 4) -> None:
        super().__init__()
        # Fixed pinhole camera of the fake model (focal in pixels of the ray grid).
        focal = RAYS / (2 * math.tan(math.radians(40.0) / 2))
        j, i = torch.meshgrid(torch.arange(RAYS) + 0.5, torch.arange(RAYS) + 0.5, indexing="ij")
        dirs_cam = torch.stack([(i - RAYS / 2) / focal, -(j - RAYS / 2) / focal, -torch.ones_like(i)], 0)
        self.register_buffer("dirs_cam", dirs_cam.reshape(3, RAYS * RAYS))  # (3, n_rays)
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs, dtype=torch.float32))  # (n_freqs,)
        n_in = 6 * 2 * n_freqs
        self.mlp = nn.Sequential(
            nn.Conv2d(n_in, width, 1), nn.ReLU(),
            nn.Conv2d(width, width, 1), nn.ReLU(),
            nn.Conv2d(width, width, 1), nn.ReLU(),
        )
        self.up = nn.ConvTranspose2d(width, 3, kernel_size=4, stride=2, padding=1)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        rays_d = pose[:3, :3] @ self.dirs_cam  # (3, n_rays)
        rays_d = rays_d / torch.linalg.norm(rays_d, dim=0, keepdim=True)
        rays_o = pose[:3, 3:4].expand(3, RAYS * RAYS) / 4.0  # (3, n_rays), radius ~ 1
        x = torch.cat([rays_o, rays_d], 0)  # (6, n_rays)
        xf = (x[None] * self.freqs[:, None, None]).reshape(-1, RAYS * RAYS)  # (6 * n_freqs, n_rays)
        feat = torch.cat([torch.sin(xf), torch.cos(xf)], 0).reshape(1, -1, RAYS, RAYS)
        return torch.sigmoid(self.up(self.mlp(feat)))


def run_ort(model_path: Path, pose: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(["rgb"], {"pose": pose.astype(np.float32)})[0]


def to_rgb8(rgb: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded to nearest."""
    return np.clip(np.rint(rgb[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


def write_fake_scene(site_dir: Path, name: str = "fake", seed: int = 0) -> Path:
    """Write scenes/<name>/ and add it to scenes/index.json under `site_dir`; return the scene dir."""

    site_dir = Path(site_dir)
    scene_dir = site_dir / "scenes" / name
    scene_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    model = FakeStudent().eval()
    with torch.no_grad():
        for m in model.mlp:  # spread the weights so the pattern has contrast
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(2.5)
        # Bilinear upsampling kernel times a random colour mix: smooth, no checkerboard.
        bilinear_1d = torch.tensor([0.25, 0.75, 0.75, 0.25])
        mix = torch.randn(model.up.in_channels, 3) * 8.0 / math.sqrt(model.up.in_channels)
        model.up.weight.copy_(mix[:, :, None, None] * torch.outer(bilinear_1d, bilinear_1d))
    model_path = scene_dir / "model.onnx"
    pose0 = torch.from_numpy(orbit_pose(ORBIT["target"], *REFERENCE_VIEW)).float()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and fine here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (pose0,), str(model_path), input_names=["pose"], output_names=["rgb"],
            opset_version=17, dynamo=False,
        )

    return _finish_scene(site_dir, name, "rgb", "rgb")


def _finish_scene(site_dir: Path, name: str, output: str, layout: str) -> Path:
    """reference.png (onnxruntime-python at the reference view) and scene.json beside the
    scene's model.onnx, and its entry in the index; returns the scene dir."""
    from PIL import Image

    scene_dir = Path(site_dir) / "scenes" / name
    ref_pose = orbit_pose(ORBIT["target"], *REFERENCE_VIEW).astype(np.float32)
    Image.fromarray(to_rgb8(run_ort(scene_dir / "model.onnx", ref_pose))).save(scene_dir / "reference.png")
    scene = site_format.scene_document(
        name=name, width=SIZE, height=SIZE, camera={"fx": 1.2 * SIZE, "fy": 1.2 * SIZE, "cx": SIZE / 2, "cy": SIZE / 2},
        up=[0, 0, 1], background=[1, 1, 1], orbit=ORBIT,
        reference_pose=ref_pose.tolist(), output=output, output_layout=layout)
    site_format.write(scene_dir / "scene.json", scene, "scene")
    add_to_index(site_dir, name)
    return scene_dir


def add_to_index(site_dir: Path, name: str) -> None:
    """Add (or replace) `name` -> scenes/<name>/scene.json in site_dir/scenes/index.json."""
    index_path = Path(site_dir) / "scenes" / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"scenes": []}
    entries = [s for s in index["scenes"] if s["name"] != name]
    entries.append({"name": name, "path": f"scenes/{name}/scene.json"})
    index_path.write_text(json.dumps({"scenes": entries}, indent=2))


def write_fake_report(scene_dir: Path, psnrs: tuple[float, ...] = (31.5, 24.25, 28.0)) -> Path:
    """A report.json (one small view per PSNR, no videos) where the scene's scene.json says; return its path."""
    from PIL import Image

    scene = json.loads((Path(scene_dir) / "scene.json").read_text())
    report_path = Path(scene_dir) / scene["report"]
    views = []
    for k, p in enumerate(psnrs):
        stem = f"views/{k:05d}"
        for kind, shade in (("gt", 40), ("teacher", 120), ("student", 200)):
            (report_path.parent / "views").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (shade, 255 - shade, 60 * k)).save(report_path.parent / f"{stem}_{kind}.png")
        views.append({"view": f"r_{k}", "gt": f"{stem}_gt.png", "teacher": f"{stem}_teacher.png",
                      "student": f"{stem}_student.png", "psnr": p, "ssim": 0.9, "teacher_psnr": p + 3.0,
                      "psnr_vs_teacher": p + 1.0})
    report = site_format.report_document(
        name=scene["name"], width=SIZE, height=SIZE,
        summary={"psnr": 28.0, "ssim": 0.9, "psnr_vs_teacher": 29.0, "teacher_psnr": 31.0, "baseline_psnr": 12.0},
        teacher_stage={"psnr": 31.0, "ssim": 0.95, "steps": 100, "train_seconds": 12.5}, model_card={},
        curves={"teacher": [{"step": 0, "seconds": 0.0, "loss": 0.1, "psnr": 10.0}], "student": []},
        turntable={"frames": 4, "fps": 12, "size": SIZE, "teacher_size": 0}, views=views)
    site_format.write(report_path, report, "report")
    return report_path


def fake_gridlf(size: int = SIZE, seed: int = 0, surroundings: bool = False, slab: bool = False):
    """A small gridlf student (student/gridlf/) with every op of the real one: the density
    march, each pixel's own surface and opacity, nearest-cell tri-plane Gathers over the box of
    the occupied cells, the split first layer. Its scene is a sphere of radius 0.8 in the box
    [-1, 1]^3; its planes hold smooth colour patterns (as trained planes do), so a lookup that
    lands in the neighbouring cell changes little. surroundings: a scene that reaches beyond the
    box, whose background is the far field (student/gridlf/far.py: spheres about the box); slab: a
    forward-facing one, whose far points lie on planes facing a mean camera (`far.slab_points`)."""
    from pipeline.cameras import orbit_pose
    from pipeline.config import GridLFConfig
    from student.gridlf import GridLightField
    from student.kinds import StudentCamera, slab_bound

    focal = size / (2 * math.tan(math.radians(40.0) / 2))
    frame = None
    if slab:  # the mean camera of a forward-facing capture, 3.5 units from the box centre
        mean = orbit_pose([0.0, 0.0, 0.0], 3.5, 37.0, 23.0, [0.0, 0.0, 1.0])
        extent = [[-0.5, -0.3, -0.2], [0.5, 0.3, 0.2]]
        frame = (*mean[:3, :3].reshape(-1).tolist(), *mean[:3, 3].tolist(), 3.5,
                 *slab_bound(focal, focal, size / 2, size / 2, size, size, 30.0, extent, 3.5))
    camera = StudentCamera.square(size, focal, near=1.0, far=8.0, center=(0.0, 0.0, 0.0),
                           scale=math.sqrt(3.0), aabb=(-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
                           surroundings=surroundings or slab, slab=frame)
    arch = GridLFConfig(occupancy_resolution=16, march_stride=4, n_points=4, grid_resolutions=[8, 32],
                        grid_channels=4, width=16, depth=2, dir_freqs=2, far_points=4, far_resolutions=[8, 16],
                        far_channels=4, far_width=8)
    torch.manual_seed(seed)
    model = GridLightField(arch, camera)
    r = model.teacher_grids().resolution
    centres = (torch.arange(r) + 0.5) / r * 2 - 1
    x, y, z = torch.meshgrid(centres, centres, centres, indexing="ij")
    ball = x ** 2 + y ** 2 + z ** 2 <= 0.8 ** 2
    model.from_teacher(ball, ball.float() * 50.0)  # opaque within a cell (0.125 units: optical depth 6)
    with torch.no_grad():
        planes = list(zip(model.grids, arch.grid_resolutions, strict=True))
        if model.far:
            n = arch.far_points  # planes a resolution has: one a far point
            offsets = [sum(n * g * g for g in arch.far_resolutions[:i]) for i in range(len(arch.far_resolutions))]
            planes += [(model.far_grid[o:o + n * g * g], g) for o, g in zip(offsets, arch.far_resolutions, strict=True)]
        for plane, res in planes:
            n = plane.shape[0] // (res * res)
            u = (torch.arange(res) + 0.5) / res
            a, b = torch.meshgrid(u, u, indexing="ij")
            freq = torch.rand(n, plane.shape[1], 2) * 6
            phase = torch.rand(n, plane.shape[1]) * 6.28
            pattern = torch.sin(freq[..., 0, None, None] * a + freq[..., 1, None, None] * b + phase[..., None, None])
            plane.copy_(pattern.permute(0, 2, 3, 1).reshape(n * res * res, plane.shape[1]))
        model.background.fill_(2.0)
    return model.eval()


def write_fake_gridlf_scene(site_dir: Path, name: str = "fakegrid", surroundings: bool = False,
                            slab: bool = False) -> Path:
    """scenes/<name>/ with a `fake_gridlf` model exported by the real export code (rgba output);
    surroundings: with the far field of a scene that reaches beyond its box; slab: a forward-facing
    scene's, on planes facing its mean camera."""
    from export.onnx_export import simplify, to_onnx_bytes

    scene_dir = Path(site_dir) / "scenes" / name
    scene_dir.mkdir(parents=True, exist_ok=True)
    model = fake_gridlf(surroundings=surroundings, slab=slab)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        onnx_bytes = simplify(to_onnx_bytes(model, 17))
    (scene_dir / "model.onnx").write_bytes(onnx_bytes)
    return _finish_scene(site_dir, name, "rgba", "rgba255")
