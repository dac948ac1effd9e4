"""The gridlf student (student/gridlf/): its math against closed forms and slow twins, its
interface (per-ray training equals whole images), its ONNX export, and the teacher's
surface grid (teacher/occupancy.py)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from fake_scene import fake_gridlf

from pipeline.cameras import orbit_pose
from pipeline.config import GridLFConfig
from student.encoding import positional_encoding
from student.gridlf import GridLightField
from student.gridlf.far import octahedral, slab_points, sphere_points
from student.gridlf.features import encode_direction, encoding_order, planes_nearest, planes_tv, triplane_nearest
from student.gridlf.march import (
    box_interval,
    first_opaque,
    lookup,
    march_index,
    neighbourhood_hits,
    window_points,
)
from student.gridlf.reference import (
    cell_index,
    octahedral_reference,
    first_opaque_reference,
    planes_nearest_reference,
    slab_points_reference,
    sphere_points_reference,
    triplane_nearest_reference,
    window_points_reference,
)
from student.gridlf.surfaces import pack_density
from student.kinds import StudentCamera, build_student, load_student, slab_bound, student_checkpoint
from teacher.occupancy import surface_occupancy


def _camera(size: int = 16) -> StudentCamera:
    return StudentCamera.square(size, size * 1.2, near=1.0, far=8.0, center=(0.0, 0.0, 0.0),
                         scale=math.sqrt(3.0), aabb=(-1.0, -1.0, -1.0, 1.0, 1.0, 1.0))


def _pose(az: float = 30.0, el: float = 20.0) -> torch.Tensor:
    return torch.from_numpy(orbit_pose([0.0, 0.0, 0.0], 3.5, az, el, [0.0, 0.0, 1.0])).float()


def test_triplane_nearest_matches_per_plane_indexing():
    torch.manual_seed(0)
    res = [4, 9]
    planes = torch.randn(sum(3 * r * r for r in res), 5)
    x = torch.rand(7, 11, 3)
    x[0, :3] = torch.tensor([[0.0, 0, 0], [1, 1, 1], [-0.5, 2.0, 0.999]])
    out = triplane_nearest(planes, res, x)
    assert out.shape == (7, 11, 2 * 3 * 5)
    assert torch.equal(out, triplane_nearest_reference(planes, res, x))
    # the xy plane of the coarse level at cell (1, 2): x in [0.25, 0.5), y in [0.5, 0.75)
    p = torch.tensor([[0.3, 0.6, 0.9]])
    assert torch.equal(triplane_nearest(planes, res, p)[0, :5], planes[1 * 4 + 2])


def test_box_interval_closed_form():
    lo, hi = -torch.ones(3), torch.ones(3)
    o = torch.tensor([[0.0, 0.0, -5.0], [0.0, 0.0, 0.0], [3.0, 3.0, -5.0], [2.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    t0, t1 = box_interval(o, d, lo, hi)
    assert torch.allclose(t0[:2], torch.tensor([4.0, -1.0])) and torch.allclose(t1[:2], torch.tensor([6.0, 1.0]))
    assert (t1[2:] <= t0[2:]).all()  # misses: beside the box, and parallel to a slab outside it
    # a diagonal ray through the centre enters at the corner
    t0, t1 = box_interval(torch.tensor([-3.0, -3, -3]), torch.ones(3) / math.sqrt(3), lo, hi)
    assert math.isclose(float(t0), 2 * math.sqrt(3), rel_tol=1e-6) and math.isclose(float(t1), 4 * math.sqrt(3),
                                                                                      rel_tol=1e-6)


def _random_rays(n: int, r: int, seed: int) -> tuple:
    """n rays from x = -4 roughly along +x through the box [-1, 1]^3 of an r^3 grid, in cell
    units, with their box interval and a march of 4r samples over it."""
    torch.manual_seed(seed)
    lo, hi = -torch.ones(3), torch.ones(3)
    o = torch.randn(n, 3) * 0.3 + torch.tensor([-4.0, 0.0, 0.0])
    d = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 0.0]) + 0.2 * torch.randn(n, 3), dim=-1)
    scale = r / (hi - lo)
    ob, v = (o - lo) * scale, d * scale
    t_near, t_far = box_interval(ob, v, torch.zeros(3), torch.full((3,), float(r)))
    t_near = t_near.clamp(min=0.0)
    return ob, v, t_near, t_far, (t_far - t_near).clamp(min=0.0) / (4 * r)


@pytest.mark.parametrize("median", [False, True])
def test_first_opaque_matches_the_transmittance_twin(median):
    r = 8
    occupied = torch.rand(r, r, r, generator=torch.Generator().manual_seed(3)) < 0.1
    density = torch.rand(r, r, r, generator=torch.Generator().manual_seed(4)) * 8.0 * occupied
    grid = pack_density(occupied, density, dilate=1)
    ob, v, t_near, t_far, step = _random_rays(48, r, seed=5)
    fast = first_opaque(ob, v, t_near, step, 4 * r, grid, r, 0.5, median=median)
    slow = first_opaque_reference(ob, v, t_near, step, 4 * r, grid, r, 0.5, median=median)
    for a, b in zip(fast, slow, strict=True):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    found, in_cell, alpha = fast[1], fast[3], fast[4]
    if median:  # every ray with any density is found, at or before its opacity-1/2 crossing
        plain = first_opaque(ob, v, t_near, step, 4 * r, grid, r, 0.5)
        assert torch.equal(found, (alpha > 1e-6).float()) and int(found.sum()) > int(plain[1].sum())
        before = plain[1] > 0
        assert (fast[0][before] <= plain[0][before] + 1e-6).all()  # never behind the opacity-1/2 crossing
        opaque = alpha > 0.75  # half its optical depth is past ln 2: the same crossing
        assert opaque.any() and torch.equal(fast[0][opaque], plain[0][opaque])
    else:
        assert 0 < int(found.sum()) < int(in_cell.sum())  # some rays cross dilated cells without turning opaque
    # in_cell: a sample lands in a dilated cell (the packed grid's nonzero cells), looked up directly
    ts = t_near[:, None] + (torch.arange(4 * r) + 0.5) * step[:, None]
    cells = (ob[:, None] + ts[..., None] * v[:, None]).floor().clamp(0, r - 1).long()
    dilated = (grid.reshape(r, r, r) > 0)[cells[..., 0], cells[..., 1], cells[..., 2]]
    assert torch.equal(in_cell > 0, dilated.any(dim=-1) & (step > 0))


def test_march_index_and_lookup_match_cell_index_and_indexing():
    # dyadic rays (exact in float32): the per-axis multiply-add equals the point at each t
    g = torch.Generator().manual_seed(0)
    r, n = 8, 12
    o = torch.randint(-8, 40, (50, 3), generator=g) / 4.0
    v = torch.randint(-16, 17, (50, 3), generator=g) / 8.0
    start, step = torch.randint(0, 16, (50,), generator=g) / 8.0, torch.randint(0, 8, (50,), generator=g) / 16.0
    t = start[:, None] + (torch.arange(n) + 0.5) * step[:, None]
    index = march_index(o, v, start, step, n, r)
    assert torch.equal(index, cell_index(o, v, t, r)) and index.min() >= 0 and index.max() <= r ** 3 - 1
    table = torch.randn(r ** 3)
    assert torch.equal(lookup(table, index), table[index.long()])


def test_first_opaque_meets_nothing_on_a_ray_with_step_zero():
    r = 8
    grid = pack_density(torch.ones(r, r, r, dtype=torch.bool), torch.full((r, r, r), 5.0), dilate=0)
    o, v = torch.tensor([[0.0, 4.5, 4.5]] * 2), torch.tensor([[1.0, 0.0, 0.0]] * 2)
    start, step = torch.tensor([2.0, 2.0]), torch.tensor([0.0, 1.0])  # the second ray marches dense cells
    for median in (False, True):
        for fn in (first_opaque, first_opaque_reference):
            t, found, t_cell, in_cell, alpha = fn(o, v, start, step, r, grid, r, 0.5, median=median)
            assert found.tolist() == [0.0, 1.0] and in_cell.tolist() == [0.0, 1.0] and alpha[0] == 0.0
            assert t[0] == 2.0 and t_cell[0] == 2.0


def test_octahedral_map_matches_its_twin_the_axes_and_stays_continuous_at_the_fold():
    """`far.octahedral` against its per-octant twin; the axes land on the square's centre, edges'
    midpoints and corners; directions just above and below the equator land next to each other."""
    g = torch.Generator().manual_seed(0)
    n = torch.randn(500, 3, generator=g) * torch.rand(500, 1, generator=g) * 4
    assert torch.allclose(octahedral(n), octahedral_reference(n), atol=1e-6)
    axes = torch.tensor([[0, 0, 1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, -1]], dtype=torch.float32)
    want = torch.tensor([[0.5, 0.5], [1.0, 0.5], [0.0, 0.5], [0.5, 1.0], [0.5, 0.0], [1.0, 1.0]])
    assert torch.allclose(octahedral(axes), want)
    ring = torch.nn.functional.normalize(torch.randn(200, 2, generator=g), dim=-1)
    above = octahedral(torch.cat([ring, torch.full((200, 1), 1e-4)], dim=-1))
    below = octahedral(torch.cat([ring, torch.full((200, 1), -1e-4)], dim=-1))
    assert (above - below).abs().max() < 1e-3
    x = octahedral(torch.randn(500, 3, generator=g))
    assert ((x >= 0) & (x <= 1)).all()


@pytest.mark.parametrize("k", [1, 4])
def test_sphere_points_are_where_rays_leave_spheres_about_the_box(k):
    """`far.sphere_points` against its twin (each sphere's crossing solved for, its direction
    mapped), cameras inside and outside the nearer spheres; closed forms: the sphere at infinity
    reads the ray's direction alone, and a ray from the box centre reads the same spot on every
    sphere."""
    g = torch.Generator().manual_seed(k)
    centre, half = torch.tensor([0.2, -0.1, 0.3]), torch.tensor([1.5, 1.5, 1.0])
    origin = centre + torch.randn(64, 3, generator=g) * 2.0
    d = torch.randn(64, 3, generator=g)
    x = sphere_points(origin, d, centre, half, k)
    assert x.shape == (64, k, 2)
    assert torch.allclose(x, sphere_points_reference(origin, d, centre, half, k), atol=1e-4)
    v = d / half
    assert torch.allclose(x[:, -1], octahedral(v), atol=1e-6)
    from_centre = sphere_points(centre.expand(64, 3), d, centre, half, k)
    assert torch.allclose(from_centre, octahedral(v)[:, None].expand(64, k, 2), atol=1e-5)


def test_window_points_and_direction_encoding_match_their_plain_forms():
    g = torch.Generator().manual_seed(1)
    origin = torch.randn(40, 3, generator=g) * 3
    d = torch.nn.functional.normalize(torch.randn(40, 3, generator=g), dim=-1)
    t0, length = torch.rand(40, generator=g) * 4, torch.rand(40, generator=g)
    lo, size = torch.tensor([-1.0, -0.5, -2.0]), torch.tensor([2.0, 1.5, 3.0])
    k = 5
    plain = window_points_reference(origin, d, t0, length / k, k, lo, size)
    assert torch.allclose(window_points(origin, d, t0, length / k, k, lo, size), plain, atol=1e-5)
    for freqs in (0, 1, 4):
        order = encoding_order(freqs)
        assert sorted(order) == list(range(3 * (1 + 2 * freqs)))
        assert torch.allclose(encode_direction(d, freqs), positional_encoding(d, freqs)[:, order], atol=1e-6)


def test_first_opaque_closed_form_in_a_uniform_medium():
    # a slab of density 2 from cell 3 on, a ray along x at one sample a cell: the opacity
    # reaches 1 - e^-tau after tau / 2 units in the slab (the box is [0, 8] cells, 1 unit each)
    r = 8
    occupied = torch.zeros(r, r, r, dtype=torch.bool)
    occupied[3:] = True
    grid = pack_density(occupied, 2.0 * occupied.float(), dilate=0)
    o, v = torch.tensor([[0.0, 4.5, 4.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    one = torch.ones(1)
    for opacity in (0.3, 0.5, 0.9):
        t, found, t_cell, in_cell, alpha = first_opaque(o, v, 0 * one, one, r, grid, r, opacity)
        tau = -math.log(1 - opacity)
        assert found.item() == 1.0 and in_cell.item() == 1.0 and t_cell.item() == 3.0
        assert math.isclose(t.item(), 3.0 + tau / 2.0, rel_tol=1e-5)
        assert math.isclose(alpha.item(), 1.0 - math.exp(-2.0 * 5.0), rel_tol=1e-6)  # 5 units at density 2
    # a haze below the opacity: never found, the first dilated cell still is
    thin = pack_density(occupied, 0.01 * occupied.float(), dilate=0)
    t, found, t_cell, in_cell, alpha = first_opaque(o, v, 0 * one, one, r, thin, r, 0.5)
    assert found.item() == 0.0 and t.item() == 8.0 and t_cell.item() == 3.0 and in_cell.item() == 1.0
    assert math.isclose(alpha.item(), 1.0 - math.exp(-0.01 * 5.0), rel_tol=1e-5)
    # median: half its optical depth, the middle of the uniform haze (cells 3 to 8); the opaque slab
    # still turns half opaque first
    t, found, _, _, _ = first_opaque(o, v, 0 * one, one, r, thin, r, 0.5, median=True)
    assert found.item() == 1.0 and math.isclose(t.item(), 5.5, rel_tol=1e-5)
    t, found, _, _, _ = first_opaque(o, v, 0 * one, one, r, grid, r, 0.5, median=True)
    assert found.item() == 1.0 and math.isclose(t.item(), 3.0 + math.log(2.0) / 2.0, rel_tol=1e-5)
    # no density at all (a dilated cell only): not found, with or without median
    empty = pack_density(occupied, 0.0 * occupied.float(), dilate=0)
    t, found, t_cell, in_cell, alpha = first_opaque(o, v, 0 * one, one, r, empty, r, 0.5,
                                                    median=True)
    assert found.item() == 0.0 and t.item() == 8.0 and in_cell.item() == 1.0 and alpha.item() == 0.0


@pytest.mark.parametrize("graze", [False, True])
def test_density_surface_lands_on_a_wall_behind_a_cell_it_grazes(graze):
    # a wall of cells x >= 5 of 16 over [-1, 1]^3 (x >= -0.375), density 400 (opaque in a
    # hundredth of a cell); with `graze`, in front of it a slab of cells the teacher marked occupied
    # (one point in them is dense) whose mean density is a haze: the pixels look through it
    # (the median of an opaque wall's light is its own half-opaque crossing: no faint pixel here)
    arch = GridLFConfig(occupancy_resolution=16, dilate=1, march_stride=4, window=2.0, pixel_samples=16)
    m = build_student("gridlf", arch, _camera())
    occupied = torch.zeros(16, 16, 16, dtype=torch.bool)
    occupied[5:] = True
    density = 400.0 * occupied.float()
    if graze:
        occupied[2] = True
        density[2] = 0.5  # optical depth 0.06 across the slab: 6% opaque
    m.from_teacher(occupied, density)
    pose = torch.from_numpy(orbit_pose([0.0, 0.0, 0.0], 3.5, 180.0, 10.0, [0.0, 0.0, 1.0])).float()
    with torch.no_grad():
        t0, length, hit, opacity = m.anchors_frame(pose[None])
    d = m.dirs @ pose[:3, :3].T
    o = pose[:3, 3]
    t_exact = (-0.375 - o[0]) / d[:, 0] + math.log(2.0) / 400.0
    x = o + t_exact[:, None] * d
    inside = (x[:, 1:].abs() < 1.0 - 2 * m.cell).all(dim=-1)
    assert m.teacher_grids().resolution == 16 and inside.sum() > 50 and (hit[0] > 0)[inside].all()
    centre = t0[0] + 0.5 * length[0]
    # within one step of the march (it spans the neighbourhood's hits and 4 cells: under 8 cells here)
    assert (centre - t_exact)[inside].abs().max() <= 0.5 * m.cell
    assert (opacity[0][inside] > 0.99).all() and (opacity[0][hit[0] == 0] == 0).all()  # the wall covers them
    with pytest.raises(ValueError, match="cannot be pooled"):
        m.from_teacher(occupied, density[:8])


def test_density_march_box_is_the_dilated_cells_and_finds_the_same_surface():
    model = fake_gridlf(size=32)  # a ball of radius 0.8 in [-1, 1]^3, 16^3 cells, dilated 1
    r = model.arch.occupancy_resolution
    cells = (model.occupancy.reshape(r, r, r) > 0).nonzero()
    assert model.march_box.tolist() == cells.amin(0).tolist() + (cells.amax(0) + 1).tolist()
    assert model.n_march == math.ceil(float((model.march_box[3:] - model.march_box[:3]).norm()))
    whole = GridLightField(model.arch, model.camera)  # marches the whole box
    state = model.state_dict()
    state["march_box"] = whole.march_box.clone()
    whole.load_state_dict(state)
    assert whole.march_box.tolist() == [0, 0, 0, r, r, r] and whole.n_march == math.ceil(math.sqrt(3) * r)
    poses = torch.stack([_pose(30, 20), _pose(131, 51), _pose(250, 5)])
    with torch.no_grad():
        rot = poses[:, :3, :3].transpose(1, 2)
        t_box, hit_box = model.block_anchor(poses[:, None, :3, 3], torch.matmul(model.march_dirs, rot))
        t_all, hit_all = whole.block_anchor(poses[:, None, :3, 3], torch.matmul(whole.march_dirs, rot))
    # samples placed differently (at most a cell apart either way) can disagree only on rays that
    # clip a cell's corner: the same hits but for a few, the same surface to a small fraction of a cell
    both = (hit_box > 0) & (hit_all > 0)
    assert (hit_box != hit_all).float().mean() < 0.02 and int(both.sum()) > 0.2 * hit_box.numel()
    gap = (t_box - t_all)[both].abs()
    assert gap.mean() <= 0.25 * model.cell and gap.max() <= 2 * model.cell  # grazing rays: a cell or two


def test_feature_planes_span_the_dilated_cells():
    model = fake_gridlf(size=32)  # ball of radius 0.8: cells 2..13 of 16 over [-1, 1], dilated: 1..14
    assert torch.allclose(model.grid_box, torch.tensor([-0.875] * 3 + [0.875] * 3))
    # the planes' cells follow the box: the same weights over the scene box read other cells
    wide = GridLightField(model.arch, model.camera)
    state = model.state_dict()
    state["grid_box"] = torch.tensor([-1.0] * 3 + [1.0] * 3)
    wide.load_state_dict(state)
    pose = _pose(30, 20)[None]
    with torch.no_grad():
        a, b = model(pose), wide(pose)
        wide.grid_box.copy_(model.grid_box)
        assert not torch.allclose(a, b, atol=1e-3) and torch.equal(wide(pose), a)
    # a teacher with no occupied cell leaves the scene box
    empty = GridLightField(model.arch, model.camera)
    empty.from_teacher(torch.zeros(16, 16, 16, dtype=torch.bool), torch.zeros(16, 16, 16))
    assert torch.equal(empty.grid_box, torch.tensor([-1.0] * 3 + [1.0] * 3)) and empty.march_box[3] == 16


def test_neighbourhood_hits_are_the_min_and_max_over_3x3():
    t = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    hit = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    near, far, any_hit = neighbourhood_hits(t, hit)
    assert near[0, 0, 0] == 1.0 and far[0, 0, 0] == 1.0  # itself and its neighbours: only cell (0, 0) hits
    assert near[0, 1, 1] == 1.0 and far[0, 1, 1] == 3.0
    assert near[0, 2, 0] > 1e3 and far[0, 2, 0] < -1e3  # no hit around: huge / very negative
    assert any_hit[0].tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]


def test_from_teacher_pools_dilates_and_packs_the_density():
    arch = GridLFConfig(occupancy_resolution=8, dilate=1, march_stride=4)
    m = build_student("gridlf", arch, _camera())
    occ = torch.zeros(16, 16, 16, dtype=torch.bool)
    occ[7, 7, 7] = True  # one fine cell -> coarse cell (3, 3, 3) -> its 3x3x3 neighbourhood
    density = occ.float() * 8.0  # the coarse cell's mean: 8 / 8 sub-cells = 1
    lines = m.from_teacher(occ, density)
    grid = m.occupancy.reshape(8, 8, 8)
    assert (grid > 0).sum() == 27 and (grid[2:5, 2:5, 2:5] > 0).all()
    assert grid[3, 3, 3] == 2.0 and grid[2, 3, 3] == 1.0  # 1 + the mean density; dilated cells: 1 + 0
    assert m.march_box.tolist() == [2, 2, 2, 5, 5, 5] and len(lines) == 2 and "after dilation" in lines[0]
    with pytest.raises(ValueError, match="cannot be pooled to 8"):
        m.from_teacher(torch.zeros(12, 12, 12, dtype=torch.bool), torch.zeros(12, 12, 12))


@pytest.mark.parametrize("planes,surroundings", [([8, 32], False), ([16], False), ([8, 32], True), ([8, 32], "slab")])
def test_rays_equal_whole_images_and_checkpoint_round_trip(planes, surroundings, tmp_path):
    model = fake_gridlf(size=16, surroundings=bool(surroundings), slab=surroundings == "slab")
    if planes != model.arch.grid_resolutions:
        other = GridLightField(GridLFConfig(**{**model.arch.__dict__, "grid_resolutions": planes}), model.camera)
        with torch.no_grad():
            for name in ("occupancy", "march_box", "grid_box"):
                getattr(other, name).copy_(getattr(model, name))
            for g in other.grids:
                g.normal_()
        other._set_march_samples()
        model = other.eval()
    poses = torch.stack([_pose(30, 20), _pose(200, 60)])
    noise = torch.rand(2, 256, model.n_points)
    with torch.no_grad():
        full = model(poses, noise)  # (2, 3, 16, 16)
        ray = torch.randperm(256)[:100]
        view = torch.tensor([0, 1] * 50)
        part = model(poses[view], noise[view, ray], ray=ray)  # (1, 3, 1, 100)
    assert full.shape == (2, 3, 16, 16) and part.shape == (1, 3, 1, 100)
    expected = full.reshape(2, 3, 256)[view, :, ray]  # (100, 3)
    assert torch.allclose(part[0, :, 0].T, expected, atol=1e-6)
    # training's way: the rays' rows of the per-view table
    with torch.no_grad():
        cached = model.ray_inputs(poses)[view, ray]
        assert torch.allclose(model(poses[view], noise[view, ray], ray=ray, cached=cached), part, atol=1e-6)
    assert 0.0 < model.flops_per_frame()
    torch.save(student_checkpoint(model), tmp_path / "model.pt")
    again = load_student(tmp_path / "model.pt", torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(again(poses), model(poses))


def test_background_where_the_march_finds_nothing():
    model = fake_gridlf(size=16)
    with torch.no_grad():
        img = model(_pose())[0]
    bg = torch.sigmoid(model.background)
    corner = img[:, 0, 0]  # the sphere of radius 0.8 at distance 3.5 leaves the corners empty
    centre = img[:, 8, 8]
    assert torch.allclose(corner, bg) and not torch.allclose(centre, bg)


def test_coarser_shares_weights_and_march_rays():
    model = fake_gridlf(size=32)  # march_stride 4
    small = model.coarser(2)
    assert (small.camera.width, small.camera.height, small.arch.march_stride) == (16, 16, 2)
    pose = _pose()
    with torch.no_grad():
        big_t, big_hit = model.block_anchor(pose[None, None, :3, 3], (model.march_dirs @ pose[:3, :3].T)[None])
        small_t, small_hit = small.block_anchor(pose[None, None, :3, 3], (small.march_dirs @ pose[:3, :3].T)[None])
        assert torch.allclose(big_t, small_t, atol=1e-5) and torch.equal(big_hit, small_hit)
        assert small(pose).shape == (1, 3, 16, 16)


def test_a_frame_of_another_shape_and_principal_point_is_a_window_of_a_larger_frame():
    """A 24x16 frame whose principal point is off its centre sees, pixel for pixel, a window of a
    48x48 centred frame of the same focal length (offsets of whole march blocks, so the march rays
    coincide); away from the window's border (where a pixel's 3x3 neighbourhood of march rays is
    cut) the two render the same colours."""

    big = fake_gridlf(size=48)
    cam = big.camera
    ox, oy = 8, 12  # the window's top-left pixel in the big frame
    small_cam = dataclasses.replace(cam, width=24, height=16, cx=cam.cx - ox, cy=cam.cy - oy)
    small = GridLightField(big.arch, small_cam)
    small.load_state_dict(big.state_dict())
    pose = _pose(40.0, 25.0)
    with torch.no_grad():
        full, part = big(pose)[0], small(pose)[0]
    assert part.shape == (3, 16, 24)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert torch.allclose(part[inner], full[:, oy:oy + 16, ox:ox + 24][inner], atol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of march_stride 4"):
        GridLightField(big.arch, dataclasses.replace(small_cam, width=22))


@pytest.mark.parametrize("surroundings", [False, True, "slab"])
def test_onnx_export_matches_torch(surroundings):
    from export.onnx_export import compare_with_torch, ort_session, simplify, to_onnx_bytes

    model = fake_gridlf(size=32, surroundings=bool(surroundings), slab=surroundings == "slab")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        onnx_bytes = simplify(to_onnx_bytes(model, 17))
    # poses off round angles: at (130, 50) a march sample of this symmetric fake lands on a cell
    # border, and onnxruntime's rounding then picks the next cell in one graph (the pixel march's)
    # and not in the other; the export stage's mismatch share is the guard for such borders
    poses = [_pose(az, el).numpy() for az, el in ((30, 20), (131, 51), (250, 5))]
    worst, off = compare_with_torch(model, onnx_bytes, poses, 1e-4)
    assert off <= 1e-3, (worst, off)
    rgb = ort_session(onnx_bytes).run(["rgb"], {"pose": poses[0]})[0]
    assert rgb.shape == (1, 3, 32, 32) and np.isfinite(rgb).all()
    # a frame where no ray hits (5 units above the box, looking up): the graph's hit list is
    # empty, and every pixel is the background
    away = np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32)
    away[:3, 3] = [0.31, -0.17, 5.0]  # off the axes: no far point exactly on a cell border
    empty = ort_session(onnx_bytes).run(["rgb"], {"pose": away})[0]
    with torch.no_grad():
        bg = model(torch.from_numpy(away)).numpy() if surroundings else \
            torch.sigmoid(model.background).numpy()[None, :, None, None].repeat(32, 2).repeat(32, 3)
    assert np.allclose(empty, bg, atol=1e-5)
    assert (empty.std(axis=(2, 3)) > 1e-3).all() == bool(surroundings)  # the far field varies over the frame


class _SphereField(torch.nn.Module):
    """A density field: `inside` within radius 0.5 of the origin, 0 outside."""

    def __init__(self, inside: float):
        super().__init__()
        self.inside = inside
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def query_density(self, x: torch.Tensor) -> torch.Tensor:
        return (x.norm(dim=-1, keepdim=True) < 0.5).float() * self.inside


def test_surface_occupancy_keeps_opaque_cells_only():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    r = 8  # cell 0.25: half opaque needs sigma >= ln 2 / 0.25 = 2.77
    solid = surface_occupancy(_SphereField(10.0), aabb, r, samples=16)
    centres = (torch.arange(r) + 0.5) / r * 2 - 1
    x, y, z = torch.meshgrid(centres, centres, centres, indexing="ij")
    inside = (x ** 2 + y ** 2 + z ** 2).sqrt() < 0.5
    assert solid.shape == (r, r, r) and solid[inside].all()  # every cell whose centre is inside
    far = (x ** 2 + y ** 2 + z ** 2).sqrt() > 0.5 + 0.25 * math.sqrt(3)
    assert not solid[far].any()
    assert not surface_occupancy(_SphereField(2.0), aabb, r, samples=4).any()  # a haze below half opacity


def _mean_camera(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random rotation (axes as columns) and eye."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.det(q))).float(), torch.randn(3, generator=g)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_slab_points_are_the_rays_crossings_seen_from_the_mean_camera(k):
    """`far.slab_points` against its twin (the plane's crossing solved for, then projected), and
    closed forms: the plane at infinity reads the direction alone (d_x / -d_z, d_y / -d_z in the
    mean camera's frame), and a ray from the mean camera's eye reads the same spot on every plane."""
    rot, eye = _mean_camera(k)
    g = torch.Generator().manual_seed(10 + k)
    local_d = torch.cat([torch.randn(64, 2, generator=g) * 0.4, -torch.ones(64, 1)], dim=-1)  # forward rays
    d = local_d @ rot.T
    origin = eye + (torch.randn(64, 3, generator=g) * 0.3) @ rot.T
    depth, bound = 2.5, torch.tensor([1.5, 1.2])
    x = slab_points(origin, d, rot, eye, depth, bound, k)
    assert x.shape == (64, k, 2)
    assert torch.allclose(x, slab_points_reference(origin, d, rot, eye, depth, bound, k), atol=1e-4)
    at_infinity = (local_d[:, :2] / -local_d[:, 2:]) / (2 * bound) + 0.5
    assert torch.allclose(x[:, -1], at_infinity, atol=1e-5)
    from_eye = slab_points(eye.expand(64, 3), d, rot, eye, depth, bound, k)
    assert torch.allclose(from_eye, at_infinity[:, None].expand(64, k, 2), atol=1e-5)


def test_slab_bound_holds_the_turned_frame_and_the_shifted_eye():
    """A camera turned by the region's largest turn sees at most tan(half field + turn); its eye,
    anywhere in the region's box, shifts a point on the nearest plane by at most extent / depth."""
    bx, by = slab_bound(fx=50.0, fy=50.0, cx=40.0, cy=30.0, width=80, height=60, turn_deg=10.0,
                        extent=[[-0.5, -0.2, -0.1], [0.3, 0.4, 0.1]], depth=2.0)
    assert bx == pytest.approx(math.tan(math.atan(40 / 50) + math.radians(10)) + 0.5 / 2.0)
    assert by == pytest.approx(math.tan(math.atan(30 / 50) + math.radians(10)) + 0.4 / 2.0)


def test_planes_nearest_reads_each_points_own_plane():
    torch.manual_seed(0)
    res, k = [4, 9], 3
    planes = torch.randn(sum(k * r * r for r in res), 5)
    x = torch.rand(7, 2, k, 2)
    x[0, 0] = torch.tensor([[0.0, 0], [1, 1], [-0.5, 2.0]])
    out = planes_nearest(planes, res, x)
    assert out.shape == (7, 2, k * 2 * 5)
    assert torch.equal(out, planes_nearest_reference(planes, res, x))
    # point 1 reads plane 1 of the coarse level: x = (0.3, 0.8) is its cell (1, 3)
    one = planes_nearest(planes, res, torch.tensor([[[0.0, 0.0], [0.3, 0.8], [0.0, 0.0]]]))
    assert torch.equal(one[0, 10:15], planes[16 + 1 * 4 + 3])


def test_planes_tv_closed_forms():
    k, res = 3, [4, 6]
    # plane j of resolution r: cell (a, b) holds j + 2 a - b (every channel); neighbours differ
    # by 2 along the first axis and by 1 along the second: TV = (4 + 1) / 2 at every resolution
    ramps = [(torch.arange(k)[:, None, None] + 2 * torch.arange(r)[:, None] - torch.arange(r)).float()
             for r in res]
    planes = torch.cat([g.reshape(-1, 1).expand(-1, 5) for g in ramps])
    assert planes_tv(planes, res, k).item() == pytest.approx(2.5)
    assert planes_tv(torch.ones_like(planes), res, k).item() == 0.0
    # one resolution flat, the other a ramp: the mean over resolutions
    flat = torch.cat([torch.zeros(k * 16, 5), planes[k * 16:]])
    assert planes_tv(flat, res, k).item() == pytest.approx(1.25)


def test_far_tv_is_the_students_regularization():
    model = fake_gridlf(size=16, surroundings=True)
    model.arch = dataclasses.replace(model.arch, far_tv=0.0)
    assert model.regularization() is None  # no term
    model.arch = dataclasses.replace(model.arch, far_tv=0.5)
    reg = model.regularization()
    a = model.arch
    assert reg.item() == pytest.approx(0.5 * planes_tv(model.far_grid, a.far_resolutions, a.far_points).item())
    reg.backward()
    assert model.far_grid.grad.abs().sum() > 0
    assert fake_gridlf(size=16).regularization() is None  # an object: no far field


@pytest.mark.parametrize("surroundings", [False, True, "slab"])
def test_shading_the_hits_only_equals_shading_every_ray(surroundings):
    model = fake_gridlf(size=16, surroundings=bool(surroundings), slab=surroundings == "slab")
    pose = _pose(60, 30)
    b, s = 1, 16
    with torch.no_grad():
        full = model(pose)  # shade_hits inside
        origin = pose[None, None, :3, 3].expand(b, s * s, 3)
        t0, length, hit, opacity = model.anchors_frame(pose[None])
        behind = model.behind_frame(pose[None])
        every = model.shade(origin, (model.dirs @ pose[:3, :3].T)[None], t0, length, hit, opacity, None, behind)
    assert 0 < hit.mean() < 1  # both kinds of pixel in the frame
    assert torch.allclose(full, every.transpose(1, 2).reshape(1, 3, s, s), atol=1e-6)
    none = torch.zeros_like(hit)
    with torch.no_grad():  # nothing hit: the background everywhere, no empty-tensor trouble
        d = (model.dirs @ pose[:3, :3].T)[None]
        bg = model.shade_hits(origin, d, t0, length, none, opacity, None, behind)
        expected = behind if surroundings else torch.sigmoid(model.background).expand(1, s * s, 3)
    assert torch.allclose(bg, expected, atol=1e-6)
    if surroundings:  # one far ray per 2 x 2 pixels, through the block's centre
        assert model.far_stride == 2 and torch.equal(behind.reshape(16, 16, 3)[::2, ::2],
                                                     behind.reshape(16, 16, 3)[1::2, 1::2])
        centre = pose[None, None, :3, 3].expand(1, 64, 3)
        block_dirs = model.far_dirs @ pose[:3, :3].T
        assert torch.allclose(behind.reshape(8, 2, 8, 2, 3)[:, 0, :, 0].reshape(1, 64, 3),
                              model.far_field(centre, block_dirs[None]), atol=1e-6)
        with pytest.raises(ValueError, match="far colour"):
            model.shade_hits(origin, d, t0, length, hit, opacity)


def test_per_ray_table_over_its_limit_is_a_clear_error(monkeypatch):
    from pipeline.errors import StageError
    from student import stage

    class Ctx:
        def log(self, text: str) -> None:
            pass

    poses = torch.stack([_pose(30, 20), _pose(200, 60)])
    model = fake_gridlf(size=16)
    assert stage.table_fits(model, poses, Ctx()) and model.ray_input_columns == 4
    monkeypatch.setattr(stage, "TABLE_MAX_BYTES", 2 * 256 * 4 * 4 - 1)  # one byte short of two views
    with pytest.raises(StageError, match="lower distill.n_views or student.output_size"):
        stage.table_fits(model, poses, Ctx())
    table = stage.ray_inputs_table(model, poses, torch.device("cpu"), chunk=1)
    assert table.shape == (2, 256, 4) and torch.equal(table, model.ray_inputs(poses))


def test_exact_matmuls_ignore_autocast():
    # CUDA training runs the student under bf16 autocast; the running sums, the direction's
    # arguments and the window's points must stay float32 (here: CPU autocast, the same mechanism)
    r = 8
    occupied = torch.rand(r, r, r, generator=torch.Generator().manual_seed(3)) < 0.1
    grid = pack_density(occupied, torch.rand(r, r, r, generator=torch.Generator().manual_seed(4)) * 8.0, dilate=1)
    ob, v, t_near, t_far, step = _random_rays(48, r, seed=5)
    d = torch.nn.functional.normalize(torch.randn(48, 3, generator=torch.Generator().manual_seed(6)), dim=-1)
    lo, size = torch.zeros(3), torch.full((3,), float(r))

    def run():
        return (*first_opaque(ob, v, t_near, step, 4 * r, grid, r, 0.5, median=True), encode_direction(d, 4),
                window_points(ob, d, t_near, step, 4, lo, size))

    plain = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = run()
    for a, b in zip(plain, cast, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_checkpoint_of_a_removed_variant_is_a_one_line_error(tmp_path):
    from pipeline.errors import StageError

    model = fake_gridlf(size=16)
    state = student_checkpoint(model)
    # a checkpoint that records the design gridlf has now loads, the removed keys dropped
    state["arch"] |= {"surface": "density", "faint_surface": "median", "ray_opacity": True}
    torch.save(state, tmp_path / "same.pt")
    assert isinstance(load_student(tmp_path / "same.pt", torch.device("cpu")), GridLightField)
    state["arch"]["surface"] = "pixel"
    torch.save(state, tmp_path / "pixel.pt")
    with pytest.raises(StageError, match=r"surface: 'pixel', an option that was removed \(surface: 'density'") as err:
        load_student(tmp_path / "pixel.pt", torch.device("cpu"))
    assert "\n" not in str(err.value)
