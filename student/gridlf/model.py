"""GridLightField: the surface-anchored tri-plane light field (student kind `gridlf`).

pose (4, 4) -> one ray per output pixel. Where along a ray is the scene? The teacher knows:
its mean density per cell (a buffer of the graph, `surfaces.pack_density`) is marched on one
ray every `march_stride` pixels, one sample a cell over the box of the occupied cells, to where
the ray turns `surface_opacity` opaque. Each pixel then marches its own ray, `pixel_samples`
samples between the nearest and farthest hit of its 3x3 neighbourhood of march rays, to its own
crossing, or, for a pixel the scene covers in part, the median of where its light ends
(`march.first_opaque`). K points in a window of `window` cells centred there read learned
tri-planes over the box of the occupied cells (one Gather a point), and a small MLP maps their
features, the encoded view direction and the pixel's opacity to colour. Rays that meet no
occupied cell are the background: for an object one learned colour; for a scene with
surroundings (StudentCamera.surroundings) the far field (far.py), what the ray sees beyond the
box, which the near MLP's fourth output blends behind the near colour (silhouettes, and rays
that cross the box's occupied cells without stopping).

Capacity lives in the planes, which train in minutes like the teacher's hash grid, and the
lookups sit where the surface is instead of spread between near and far. It stays a light
field: the density only places the points, no colour is composited, and a frame is one MLP
pass per pixel. docs/DESIGN.md gives the measurements behind each choice.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from pipeline.cameras import Intrinsics, camera_directions
from pipeline.config import GridLFConfig

from ..kinds import StudentCamera, StudentModel, TeacherGrids, ray_layout
from .far import FAR_STRIDE, slab_points, sphere_points
from .features import encode_direction, encoding_order, planes_nearest, planes_tv, triplane_nearest
from .march import box_interval, compact, first_opaque, neighbourhood_hits, window_points
from .surfaces import cell_box, pack_density, pool_to

__all__ = ["GridLightField"]

# random points per cell the teacher's density is averaged over: 16 keep the mean within a few
# percent where the density varies inside a cell
DENSITY_SAMPLES = 16


class GridLightField(StudentModel):
    """pose -> per-pixel rays -> density march -> K anchored points -> tri-planes -> MLP."""

    kind = "gridlf"
    arch_type = GridLFConfig

    def __init__(self, arch: GridLFConfig, camera: StudentCamera):
        super().__init__(arch, camera)
        if camera.aabb is None:
            raise ValueError("a gridlf student needs the scene box (StudentCamera.aabb)")
        c, st = camera, arch.march_stride
        if c.width % st or c.height % st:
            raise ValueError(f"a {c.width}x{c.height} frame is not a multiple of march_stride {st} a side")
        self.ray_grid = (c.height, c.width)  # one ray per pixel
        dirs = camera_directions(c.intrinsics).reshape(-1, 3)
        self.register_buffer("dirs", dirs / dirs.norm(dim=-1, keepdim=True), persistent=False)
        # the march's rays: one at the centre of each stride x stride block
        march = camera_directions(Intrinsics(c.fx / st, c.fy / st, c.cx / st, c.cy / st, c.width // st,
                                             c.height // st)).reshape(-1, 3)
        self.register_buffer("march_dirs", march / march.norm(dim=-1, keepdim=True), persistent=False)
        lo, hi = torch.tensor(camera.aabb[:3]), torch.tensor(camera.aabb[3:])
        self.register_buffer("lo", lo, persistent=False)
        self.register_buffer("hi", hi, persistent=False)
        r = arch.occupancy_resolution
        # the packed density grid (`pack_density`); from_teacher fills it: until then every cell
        # is occupied and empty of density
        self.register_buffer("occupancy", torch.ones(r ** 3))
        # the box of the dilated occupied cells (cell units), which the march crosses, and the one
        # the feature planes span (world units); from_teacher narrows both to the teacher's cells
        self.register_buffer("march_box", torch.tensor([0.0, 0.0, 0.0, r, r, r]))
        self.register_buffer("grid_box", torch.cat([lo, hi]))
        self._set_march_samples()
        self.cell = float((hi - lo).mean()) / r  # world units per occupancy cell
        self.grids = nn.ParameterList([nn.Parameter(torch.empty(3 * g * g, arch.grid_channels).uniform_(-1e-4, 1e-4))
                                       for g in arch.grid_resolutions])
        n_in = arch.n_points * len(arch.grid_resolutions) * 3 * arch.grid_channels
        # the first layer is split (features, direction, opacity): matmuls and adds instead of
        # concatenating 200-odd floats a pixel, which cost onnxruntime as much as the matmul
        self.feat_in = nn.Linear(n_in, arch.width)
        self.dir_in = nn.Linear(3 * (1 + 2 * arch.dir_freqs), arch.width, bias=False)
        self.opacity_in = nn.Linear(1, arch.width, bias=False)
        layers: list[nn.Module] = [nn.ReLU()]
        for _ in range(arch.depth - 1):
            layers += [nn.Linear(arch.width, arch.width), nn.ReLU()]
        # a scene with surroundings: the near colour's fourth output is its opacity over the far field
        self.far = bool(camera.surroundings) and arch.far_points > 0
        layers.append(nn.Linear(arch.width, 4 if self.far else 3))
        self.mlp = nn.Sequential(*layers)
        self.background = nn.Parameter(torch.zeros(3))  # logits of the colour of rays that hit nothing
        self.far_stride = 1
        # each far point reads one 2-D grid: a forward-facing scene's lie on planes facing its mean
        # camera (far.slab_points), a 360 scene's on spheres about the box (far.sphere_points)
        self.slab = self.far and camera.slab is not None
        if self.far:
            self.far_grid = nn.Parameter(torch.empty(sum(arch.far_points * g * g for g in arch.far_resolutions),
                                                     arch.far_channels).uniform_(-1e-4, 1e-4))
            n_far = arch.far_points * len(arch.far_resolutions) * arch.far_channels
            if self.slab:
                sl = torch.tensor(camera.slab)
                self.register_buffer("slab_rotation", sl[:9].reshape(3, 3), persistent=False)
                self.register_buffer("slab_eye", sl[9:12], persistent=False)
                self.register_buffer("slab_reach", sl[13:15], persistent=False)
                self.slab_depth = float(sl[12])
            self.far_in = nn.Linear(n_far, arch.far_width)
            self.far_dir = nn.Linear(3 * (1 + 2 * arch.dir_freqs), arch.far_width, bias=False)
            self.far_out = nn.Sequential(nn.ReLU(), nn.Linear(arch.far_width, 3))
            aabb = torch.tensor(camera.aabb)
            self.register_buffer("far_centre", (aabb[:3] + aabb[3:]) / 2, persistent=False)
            self.register_buffer("far_half", (aabb[3:] - aabb[:3]) / 2, persistent=False)
            # one far ray per FAR_STRIDE x FAR_STRIDE pixels, through the block's centre: what lies
            # beyond the box is far and smooth (far.py); each pixel takes its block's colour
            fs = FAR_STRIDE if c.width % FAR_STRIDE == 0 and c.height % FAR_STRIDE == 0 else 1
            self.far_stride = fs
            far = camera_directions(Intrinsics(c.fx / fs, c.fy / fs, c.cx / fs, c.cy / fs, c.width // fs,
                                               c.height // fs)).reshape(-1, 3)
            self.register_buffer("far_dirs", far / far.norm(dim=-1, keepdim=True), persistent=False)
            rows, cols = torch.arange(c.height) // fs, torch.arange(c.width) // fs
            self.register_buffer("far_block", (rows[:, None] * (c.width // fs) + cols[None]).reshape(-1),
                                 persistent=False)  # each pixel's block

    def _set_march_samples(self) -> None:
        """One sample per cell along the longest ray through the marched box (the block march)."""
        extent = self.march_box[3:] - self.march_box[:3]
        self.n_march = max(1, int(math.ceil(float(extent.norm()))))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._set_march_samples()  # the marched box came with the weights

    # --- scene knowledge -------------------------------------------------------------
    def teacher_grids(self) -> TeacherGrids:
        return TeacherGrids(resolution=self.arch.occupancy_resolution, samples=DENSITY_SAMPLES)

    def from_teacher(self, occupancy: Tensor, density: Tensor) -> list[str]:
        """Take the teacher's occupied cells and mean density, (R0, R0, R0) over the same box
        (R0 a multiple of `occupancy_resolution`): pooled, dilated by `dilate` cells and packed;
        the march and the feature planes then span the box of the dilated cells."""
        r = self.arch.occupancy_resolution
        occ, mean = pool_to(occupancy, density, r)
        self.occupancy.copy_(pack_density(occ, mean, self.arch.dilate).to(self.occupancy.device))
        box = cell_box(self.occupancy.reshape(r, r, r) > 0)
        if box is not None:
            self.march_box.copy_(box)
            self._set_march_samples()
            cell = ((self.hi - self.lo) / r).repeat(2)
            self.grid_box.copy_(self.lo.repeat(2) + box.to(self.lo) * cell)
        g = self.grid_box.tolist()
        return [f"teacher surfaces: {occ.float().mean():.1%} of {r}^3 cells at least half opaque; "
                f"{(self.occupancy > 0).float().mean():.1%} after dilation",
                "feature planes span the occupied cells: " + " x ".join(f"[{g[i]:.2f}, {g[i + 3]:.2f}]"
                                                                          for i in range(3))]

    # --- the interface ---------------------------------------------------------------
    @property
    def n_points(self) -> int:
        return self.arch.n_points

    @property
    def per_ray(self) -> bool:
        return True  # a pixel depends on its own ray and its neighbourhood's march rays only

    @property
    def ray_inputs_required(self) -> bool:
        return True  # each pixel's anchor needs its neighbourhood's march rays: whole frames

    @property
    def ray_input_columns(self) -> int:
        return 4  # t0, window length, hit, opacity

    def param_groups(self, lr: float) -> list[dict]:
        """The planes' gradients are sparse: Adam's eps small, and no weight decay."""
        grids = list(self.grids.parameters()) + ([self.far_grid] if self.far else [])
        ids = {id(p) for p in grids}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "lr": lr}, {"params": grids, "lr": lr, "eps": 1e-15, "weight_decay": 0.0}]

    def regularization(self) -> Tensor | None:
        """The far planes' total variation: a far cell that few rays reach follows its neighbours."""
        a = self.arch
        if not self.far or not a.far_tv:
            return None
        return a.far_tv * planes_tv(self.far_grid, a.far_resolutions, a.far_points)

    # --- where each pixel's points go ------------------------------------------------
    def _in_cells(self, origin: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A ray in cell units of the occupancy grid (t stays world units): o, v (..., 3), and
        where it enters and leaves the box, t_near, t_far (...)."""
        r = self.arch.occupancy_resolution
        scale = r / (self.hi - self.lo)
        o, v = (origin - self.lo) * scale, d * scale
        box = torch.zeros_like(self.lo)
        t_near, t_far = box_interval(o, v, box, box + r)
        return o, v, t_near, t_far

    def block_anchor(self, origin: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """The march rays (origin, d (..., 3)): where each turns opaque, else its first dilated
        cell (a haze the teacher marked occupied does not hide the surface behind it from the
        pixels' marches), and whether it meets an occupied cell, t, hit (...). Only the rays that
        meet the box of the dilated cells march it, one sample a cell (compacted as shading is:
        most rays of a view miss it)."""
        lead = d.shape[:-1]
        o, v, _, _ = self._in_cells(origin, d)
        box = self.march_box
        t_near, t_far = box_interval(o, v, box[:3], box[3:])
        t_near = t_near.clamp(min=self.camera.near)
        idx, place = compact((t_far > t_near).to(d.dtype).reshape(-1))
        o, v = o.expand_as(v).reshape(-1, 3)[idx], v.reshape(-1, 3)[idx]
        t_near, t_far = t_near.reshape(-1)[idx], t_far.reshape(-1)[idx]
        n = self.n_march
        step = (t_far - t_near).clamp(min=0.0) / n
        t_surf, found, t_cell, hit, _ = first_opaque(o, v, t_near, step, n, self.occupancy,
                                                     self.arch.occupancy_resolution, self.arch.surface_opacity)
        t = torch.where(found > 0, t_surf, torch.where(hit > 0, t_cell, t_near + n * step))
        t = torch.cat([t, torch.zeros_like(t[:1])])[place].reshape(lead)  # the rest: no hit
        hit = torch.cat([hit, torch.zeros_like(hit[:1])])[place].reshape(lead)
        return t, hit

    def pixel_anchor(self, origin: Tensor, d: Tensor, near: Tensor, far: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each pixel's own surface, between the nearest and farthest hit of its neighbourhood's
        march rays (`neighbourhood_hits`): origin, d (..., 3), near, far (...) -> t0 (the window's
        start, centred on the surface), hit and opacity (...).

        A march of `pixel_samples` samples over [near - 1 cell, far + 3 cells] through the
        teacher's mean density places the surface where the ray turns `surface_opacity` opaque,
        or at the median of where its light ends for a pixel the scene covers in part
        (`first_opaque` with median). The pixel covers the scene if any sample is in a cell of
        the dilated grid (generous: a pixel of the scene painted background costs far more than a
        background pixel the network learns to paint); one that covers the scene but finds no
        density centres its window a cell past its first dilated cell. The opacity over the whole
        march says how much of the pixel the scene covers.
        """
        a = self.arch
        cell = self.cell
        o, v, t_near, t_far = self._in_cells(origin, d)
        t_near = t_near.clamp(min=self.camera.near)
        start = torch.maximum(near - cell, t_near)
        span = (torch.minimum(far + 3 * cell, t_far) - start).clamp(min=0.0)
        step = span / a.pixel_samples
        t_surf, on_surface, t_cell, covered, opacity = first_opaque(o, v, start, step, a.pixel_samples,
                                                                    self.occupancy, a.occupancy_resolution,
                                                                    a.surface_opacity, median=True)
        centre = torch.where(on_surface > 0, t_surf, t_cell + 0.5 * step + cell)
        return centre - 0.5 * a.window * cell, covered, opacity  # opacity > 0 only in covered cells

    def anchors_frame(self, pose: Tensor, d: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Where every pixel's K points go: pose (B, 4, 4) -> t0, length, hit and the pixel's
        opacity (`pixel_anchor`), each (B, P), P = H x W pixels. d: the pixels' world directions
        (B, P, 3), when the caller has them."""
        b, st = pose.shape[0], self.arch.march_stride
        h, w = self.ray_grid
        mh, mw, p = h // st, w // st, h * w
        rot, origin = pose[:, :3, :3], pose[:, None, :3, 3]  # origin (B, 1, 3)
        t, hit = self.block_anchor(origin, torch.matmul(self.march_dirs, rot.transpose(1, 2)))  # each (B, m^2)

        def blocks(v: Tensor) -> Tensor:  # each march ray's value for every pixel of its stride x stride block
            return v.reshape(b, mh, 1, mw, 1).expand(b, mh, st, mw, st).reshape(b, p)

        if d is None:
            d = torch.matmul(self.dirs, rot.transpose(1, 2))
        near, far, near_any = (blocks(v).reshape(-1) for v in neighbourhood_hits(t.reshape(b, mh, mw),
                                                                                   hit.reshape(b, mh, mw)))
        # only pixels with a hit around them march: in an object-centred view most have none
        idx, place = compact(near_any)
        rows = self.pixel_anchor(origin.expand(b, p, 3).reshape(-1, 3)[idx], d.reshape(-1, 3)[idx],
                                 near[idx], far[idx])
        t0, hit, opacity = (torch.cat([v, torch.zeros_like(v[:1])])[place].reshape(b, p) for v in rows)
        return t0, torch.full_like(t0, self.arch.window * self.cell), hit, opacity

    def ray_inputs(self, pose: Tensor) -> Tensor:
        """Each pixel's anchor (t0, length, hit, opacity) of views pose (B, 4, 4) -> (B, P, 4):
        computed once per training view, a training step then reads its rays' rows instead of
        marching."""
        return torch.stack(self.anchors_frame(pose), dim=-1)

    # --- colour ----------------------------------------------------------------------
    def shade(self, origin: Tensor, d: Tensor, t0: Tensor, length: Tensor, hit: Tensor, opacity: Tensor,
              noise: Tensor | None = None, behind: Tensor | None = None) -> Tensor:
        """Colour of rays (origin, d (..., 3)) whose points span [t0, t0 + length] (...) -> (..., 3);
        opacity (...): the pixel's (`anchors_frame`), an input of the MLP. behind (..., 3): the
        rays' far colour (`behind_frame`, `behind_rays`), which a scene with surroundings needs.

        noise: optional (..., K) in [0, 1): each point's place within its share of the window
        (training; NeRF's stratified samples); None: the middle of it (every frame in the viewer).
        """
        k, a = self.arch.n_points, self.arch
        lo, hi = self.grid_box[:3], self.grid_box[3:]
        size = hi - lo
        if noise is not None:
            t = t0[..., None] + (torch.arange(k, device=d.device, dtype=d.dtype) + noise) * (length / k)[..., None]
            x = ((origin - lo) / size)[..., None, :] + t[..., None] * (d / size)[..., None, :]  # grid box -> [0, 1]^3
        else:
            x = window_points(origin, d, t0, length / k, k, lo, size)
        table = self.grids[0] if len(self.grids) == 1 else torch.cat(list(self.grids))  # folded at export
        h = triplane_nearest(table, a.grid_resolutions, x).flatten(-2)  # (..., K * L * 3 * C)
        # the direction's and the opacity's terms of the first layer as one MatMul (the weights are
        # reordered and joined once, at export)
        enc = torch.cat([encode_direction(d, a.dir_freqs), opacity[..., None].to(d.dtype)], dim=-1)
        weight = torch.cat([self.dir_in.weight[:, encoding_order(a.dir_freqs)], self.opacity_in.weight], dim=1)
        h = self.feat_in(h) + torch.matmul(enc, weight.t())
        out = torch.sigmoid(self.mlp(h))
        w = hit[..., None]
        if not self.far:
            return w * out + (1 - w) * torch.sigmoid(self.background)
        if behind is None:
            raise ValueError("a gridlf student of a scene with surroundings shades with its far colour (behind)")
        alpha = out[..., 3:]
        return w * (alpha * out[..., :3] + (1 - alpha) * behind) + (1 - w) * behind

    def far_field(self, origin: Tensor, d: Tensor) -> Tensor:
        """The colour beyond the box of rays origin, d (..., 3) -> (..., 3): where the rays leave K
        spheres about the box (`far.sphere_points`), or for a forward-facing scene where they cross
        K planes facing its mean camera (`far.slab_points`), each crossing reads its own 2-D grid,
        and a small MLP maps their features and the encoded direction to colour."""
        a = self.arch
        if self.slab:
            x = slab_points(origin, d, self.slab_rotation, self.slab_eye, self.slab_depth, self.slab_reach,
                            a.far_points)
        else:
            x = sphere_points(origin, d, self.far_centre, self.far_half, a.far_points)
        h = planes_nearest(self.far_grid, a.far_resolutions, x)
        enc = encode_direction(d, a.dir_freqs)
        h = self.far_in(h) + torch.matmul(enc, self.far_dir.weight[:, encoding_order(a.dir_freqs)].t())
        return torch.sigmoid(self.far_out(h))

    def behind_frame(self, pose: Tensor) -> Tensor | None:
        """Every pixel's far colour of views pose (B, 4, 4) -> (B, P, 3): the far field of its
        block's ray (`far_stride`); None for an object."""
        if not self.far:
            return None
        b, fs, (h, w) = pose.shape[0], self.far_stride, self.ray_grid
        d = torch.matmul(self.far_dirs, pose[:, :3, :3].transpose(1, 2))  # (B, blocks, 3)
        rgb = self.far_field(pose[:, None, :3, 3].expand_as(d), d)
        return rgb.reshape(b, h // fs, 1, w // fs, 1, 3).expand(b, h // fs, fs, w // fs, fs, 3).reshape(b, h * w, 3)

    def behind_rays(self, pose: Tensor, ray: Tensor) -> Tensor | None:
        """`behind_frame` of rays ray (N,) of views pose (N, 4, 4) -> (N, 3); None for an object."""
        if not self.far:
            return None
        d = torch.matmul(pose[:, :3, :3], self.far_dirs[self.far_block[ray]][:, :, None])[:, :, 0]
        return self.far_field(pose[:, :3, 3], d)

    def shade_hits(self, origin: Tensor, d: Tensor, t0: Tensor, length: Tensor, hit: Tensor, opacity: Tensor,
                   noise: Tensor | None = None, behind: Tensor | None = None) -> Tensor:
        """`shade` of the rays that hit only; the others are the background colour, or with
        surroundings their far colour (behind, (..., 3)). Equal to `shade` (test): a frame costs
        its covered pixels, not all of them (NonZero, Gathers and a CumSum in the graph: the
        background is most of a typical object-centred view)."""
        lead = hit.shape
        idx, place = compact(hit.reshape(-1))
        rows = [v.reshape(-1, v.shape[-1])[idx] for v in (origin, d)]
        nz = None if noise is None else noise.reshape(-1, noise.shape[-1])[idx]
        if behind is not None:
            behind = behind.reshape(-1, 3)
        elif self.far:
            raise ValueError("a gridlf student of a scene with surroundings shades with its far colour (behind)")
        rgb = self.shade(*rows, t0.reshape(-1)[idx], length.reshape(-1)[idx], torch.ones_like(idx, dtype=d.dtype),
                         opacity.reshape(-1)[idx], nz, None if behind is None else behind[idx])  # (N + 1, 3)
        if behind is None:
            table = torch.cat([rgb, torch.sigmoid(self.background)[None].to(rgb.dtype)])  # the rest: background
            return table[place].reshape(*lead, 3)
        table = torch.cat([rgb, torch.zeros_like(rgb[:1])])  # the rest: their far field
        return (table[place] + (1 - hit).reshape(-1, 1) * behind).reshape(*lead, 3)

    def forward(self, pose: Tensor, jitter: bool | Tensor = False, ray: Tensor | None = None,
                cached: Tensor | None = None) -> Tensor:
        if ray is not None:
            return self.forward_rays(pose, ray, jitter if isinstance(jitter, Tensor) else None, cached)
        if pose.dim() == 2:
            pose = pose[None]
        b, (h, w) = pose.shape[0], self.ray_grid
        d = torch.matmul(self.dirs, pose[:, :3, :3].transpose(1, 2))  # (B, P, 3)
        t0, length, hit, opacity = self.anchors_frame(pose, d)
        noise = None
        if isinstance(jitter, Tensor):
            noise = jitter
        elif jitter:
            noise = torch.rand(b, h * w, self.arch.n_points, device=pose.device)
        origin = pose[:, None, :3, 3].expand(b, h * w, 3)
        rgb = self.shade_hits(origin, d, t0, length, hit, opacity, noise, self.behind_frame(pose))  # (B, P, 3)
        return rgb.transpose(1, 2).reshape(b, 3, h, w)

    def forward_rays(self, pose: Tensor, ray: Tensor, noise: Tensor | None = None,
                     cached: Tensor | None = None) -> Tensor:
        """cached: (N, 4) the rays' rows of `ray_inputs` (training); None: computed here, from
        whole frames of the distinct poses (a pixel's anchor needs its neighbourhood)."""
        rot, origin = pose[:, :3, :3], pose[:, :3, 3]
        d = torch.matmul(rot, self.dirs[ray][:, :, None])[:, :, 0]
        if cached is None:
            poses, which = torch.unique(pose, dim=0, return_inverse=True)
            cached = self.ray_inputs(poses)[which, ray]
        t0, length, hit, opacity = cached.unbind(dim=-1)
        rgb = self.shade(origin, d, t0, length, hit, opacity, noise, self.behind_rays(pose, ray))  # (N, 3)
        b, h, w = ray_layout(len(ray), self.ray_grid)
        return rgb.reshape(b, h * w, 3).transpose(1, 2).reshape(b, 3, h, w)

    def coarser(self, factor: int = 2) -> GridLightField:
        """The same weights at 1/factor of the pixels; the march keeps its rays where it can."""
        cam, st = self.camera, self.arch.march_stride
        new_stride = st // factor if st % factor == 0 else st
        if cam.width % factor or cam.height % factor or (cam.width // factor) % new_stride or \
                (cam.height // factor) % new_stride:
            raise ValueError(f"a {cam.width}x{cam.height} frame with march_stride {st} cannot be made "
                             f"{factor}x coarser")
        small = GridLightField(dataclasses.replace(self.arch, march_stride=new_stride), cam.coarser(factor))
        small.load_state_dict(self.state_dict())
        return small.to(self.occupancy.device).train(self.training)

    def flops_per_frame(self) -> int:
        """2 x multiply-adds of the MLPs a pixel (the far field's once a block of `far_stride`^2
        pixels); nearest-cell reads, the march and the index arithmetic are not counted."""
        far = {id(m) for name in ("far_in", "far_dir", "far_out") if hasattr(self, name)
               for m in getattr(self, name).modules()}
        macs = 0.0
        for m in self.modules():
            if isinstance(m, nn.Linear):
                share = 1.0 / self.far_stride ** 2 if id(m) in far else 1.0
                macs += m.in_features * m.out_features * share
        return int(2 * macs * self.n_rays)
