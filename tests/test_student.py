import dataclasses
import math

import numpy as np
import pytest
import torch

from pipeline.cameras import Intrinsics, camera_directions, orbit_pose
from pipeline.config import Config, ExportConfig, MobileR2LConfig, StudentConfig
from pipeline.errors import StageError
from student.encoding import positional_encoding
from student.kinds import KINDS, StudentCamera, build_student, load_student, student_checkpoint, student_class
from student.mobiler2l import MobileR2L, fold_batchnorm


def test_positional_encoding_closed_form():
    x = torch.tensor([[0.25, -0.5]])
    out = positional_encoding(x, 2)
    # level l encodes sin(2^l pi x), cos(2^l pi x)
    expected = [0.25, -0.5]
    for level in range(2):
        a = (2**level) * math.pi * x[0]
        expected += [math.sin(a[0]), math.sin(a[1]), math.cos(a[0]), math.cos(a[1])]
    assert out.shape == (1, 2 * 5)
    assert torch.allclose(out[0], torch.tensor(expected), atol=1e-6)


def test_positional_encoding_argument_reduction_matches_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1000, 3, generator=g) * 3 - 1.5
    out = positional_encoding(x, 10)
    ref = [x.double()]
    for level in range(10):
        a = (2.0**level) * math.pi * x.double()
        ref += [torch.sin(a), torch.cos(a)]
    assert torch.allclose(out.double(), torch.cat(ref, -1), atol=2e-5)


def _camera(size=32):
    return StudentCamera.square(size, size * 1.2, near=2.0, far=4.0, center=(0.0, 0.0, 0.0), scale=1.5,
                         aabb=(-1.0, -1.0, -1.0, 1.0, 1.0, 1.0))


def _cfg(**kw):
    """MobileR2L architecture settings of a small test student (ray grid 8x8 -> 32x32 with _camera())."""
    base = dict(sr_factor=4, n_points=4, pe_freqs=3, width=16, n_blocks=2, sr_channels=[8, 8], activation="gelu")
    base.update(kw)
    return MobileR2LConfig(**base)


def test_student_shapes_and_range():
    torch.manual_seed(0)
    model = MobileR2L(_cfg(), _camera()).eval()
    poses = torch.tensor(np.stack([orbit_pose([0, 0, 0], 3.0, a, 20.0) for a in (0, 90)]), dtype=torch.float32)
    out = model(poses)
    assert out.shape == (2, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert model.encode(poses).shape == (2, 4 * 3 * 7, 8, 8)
    assert model(poses[0]).shape == (1, 3, 32, 32)


def test_jittered_points_stay_in_their_bins():
    model = MobileR2L(_cfg(n_points=4, pe_freqs=0), _camera())
    pose = torch.tensor(orbit_pose([0, 0, 0], 3.0, 0, 0), dtype=torch.float32)
    x = model.encode(pose, jitter=True)  # (1, K*3, h, w) normalised points
    pts = x[0].reshape(4, 3, -1) * 1.5  # back to world units, centre 0
    dist = (pts - torch.tensor([3.0, 0, 0])[None, :, None]).norm(dim=1)  # distance from the eye
    for k in range(4):
        assert dist[k].min() >= 2.0 + 0.5 * k - 1e-5 and dist[k].max() <= 2.0 + 0.5 * (k + 1) + 1e-5


def _trained_bn(model: MobileR2L) -> MobileR2L:
    """The model with BatchNorm running statistics away from their initial values, in eval mode."""
    model.train()
    with torch.no_grad():
        for a in (0, 50, 100):
            model(torch.tensor(orbit_pose([0, 0, 0], 3.0, a, 20), dtype=torch.float32))
    return model.eval()


def test_for_export_folds_batchnorm_and_preserves_output():
    torch.manual_seed(0)
    model = _trained_bn(MobileR2L(_cfg(), _camera()))
    pose = torch.tensor(orbit_pose([0, 0, 0], 3.0, 10, 20), dtype=torch.float32)
    with torch.no_grad():
        ref = model(pose)
        exported = model.for_export()
        out = exported(pose)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in exported.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy: the model keeps its BN
    assert torch.allclose(out, ref, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fold_batchnorm(model).modules())  # in place


def test_flops_counts_convs():
    model = MobileR2L(_cfg(n_blocks=0, sr_channels=[], sr_factor=1), _camera(8))
    c_in = 4 * 3 * 7
    assert model.flops_per_frame() == 2 * 64 * (c_in * 16 + 16 * 3)


def test_ray_grid_layout():
    model = MobileR2L(_cfg(sr_factor=4), _camera(32))
    assert (model.ray_grid, model.n_rays, model.ray_block, model.n_points) == ((8, 8), 64, 4, 4)
    # row-major grid, z = -1 before normalising: ray (row 0, col 7) is up and to the right
    f = 32 * 1.2 / 4  # focal on the ray grid, pixels
    expected = torch.tensor([(7.5 - 4) / f, (4 - 0.5) / f, -1.0])
    assert torch.allclose(model.dirs.reshape(8, 8, 3)[0, 7], expected / expected.norm(), atol=1e-6)
    with pytest.raises(ValueError, match="not a multiple of sr_factor 4"):
        MobileR2L(_cfg(sr_factor=4), _camera(30))
    # a frame of another shape and principal point: rays at the centres of the 4x4 blocks, closed form
    cam = dataclasses.replace(_camera(32), width=48, height=32, fx=40.0, fy=36.0, cx=20.0, cy=18.0)
    model = MobileR2L(_cfg(sr_factor=4), cam)
    assert model.ray_grid == (8, 12) and model(torch.eye(4)).shape == (1, 3, 32, 48)
    expected = torch.tensor([((11 + 0.5) * 4 - 20.0) / 40.0, -((2 + 0.5) * 4 - 18.0) / 36.0, -1.0])
    assert torch.allclose(model.dirs.reshape(8, 12, 3)[2, 11], expected / expected.norm(), atol=1e-6)


def test_onnx_export_matches_torch(tmp_path):
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = MobileR2L(_cfg(activation="gelu_tanh"), _camera()).eval()
    poses = [orbit_pose([0, 0, 0], 3.0, a, 25.0) for a in (0, 120, 240)]
    onnx_bytes, report = export_onnx(model, ExportConfig(), poses, tmp_path)
    assert report["max_abs_diff"] < 1e-4 and report["max_abs_diff_raw"] < 1e-4
    assert (tmp_path / "model.onnx").read_bytes() == onnx_bytes
    assert report["nodes"] <= report["nodes_raw"]


@pytest.mark.parametrize("upsample", ["transpose", "pixelshuffle"])
def test_coarser_student_renders_the_same_view_smaller(upsample):
    """The preview model: the same weights on a 2x coarser ray grid. Its rays are, in closed
    form, the 2x2 means of the full grid's (unnormalised, z = -1) directions, and the full
    model fed exactly those rays renders exactly the preview's image."""
    torch.manual_seed(0)
    model = _trained_bn(MobileR2L(_cfg(upsample=upsample, sr_factor=4), _camera()))
    small = model.coarser(2)
    assert isinstance(small, MobileR2L) and small.arch == model.arch and not small.training
    assert (small.ray_grid, small.camera.width, small.camera.fx) == ((4, 4), 16, model.camera.fx / 2)
    assert small.flops_per_frame() * 4 == model.flops_per_frame()  # every layer at half the resolution
    f = model.camera.fx / 4
    fine = camera_directions(Intrinsics(f, f, 4.0, 4.0, 8, 8))  # the full model's ray grid, (8, 8, 3)
    coarse = fine.reshape(4, 2, 4, 2, 3).mean(dim=(1, 3)).reshape(-1, 3)
    assert torch.allclose(small.dirs, coarse / coarse.norm(dim=-1, keepdim=True), atol=1e-6)

    pose = torch.from_numpy(orbit_pose([0, 0, 0], 3.0, 40.0, 25.0)).float()
    with torch.no_grad():
        low = small(pose)
        d = small.dirs @ pose[:3, :3].T  # (16, 3) world directions
        x = model.ray_features(pose[:3, 3], d)  # through the full model's encoding and weights
        expected = model.decode(x.T.reshape(1, -1, 4, 4))
    assert low.shape == (1, 3, 16, 16)
    assert torch.allclose(low, expected, atol=1e-6)
    with torch.no_grad():  # and it is not just any image: the full model's is not a 2x upsampling of it
        assert (torch.nn.functional.interpolate(low, scale_factor=2) - model(pose)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="not divisible by 3"):
        model.coarser(3)


def test_fp16_weights_export_is_half_size_and_close():
    from export.onnx_export import OUTPUTS, fp16_weights, ort_session, psnr_between, simplify, to_onnx_bytes

    torch.manual_seed(0)
    model = MobileR2L(_cfg(activation="gelu_tanh", width=128, n_blocks=4), _camera()).eval()
    fp32 = simplify(to_onnx_bytes(model, 17))  # what export writes
    fp16 = fp16_weights(fp32)
    poses = [orbit_pose([0, 0, 0], 3.0, a, 25.0) for a in (0, 120)]
    db = psnr_between(fp32, fp16, poses)
    assert 0.45 < len(fp16) / len(fp32) < 0.6, (len(fp16), len(fp32))
    assert db > 40.0, db
    out = ort_session(fp16).run(OUTPUTS, {"pose": poses[0].astype(np.float32)})
    assert out[0].dtype == np.float32 and out[1].shape == (1, 32, 32, 4)


def test_ray_batches_match_whole_images():
    """A per-ray (PixelShuffle) student on a batch of rays gives exactly the pixel blocks
    it gives those rays in whole images, and ray_blocks cuts the same blocks from images."""
    from student.stage import ray_blocks

    torch.manual_seed(0)
    model = MobileR2L(_cfg(upsample="pixelshuffle"), _camera()).eval()
    poses = torch.stack([torch.from_numpy(orbit_pose([0, 0, 0], 3.0, a, 25.0)).float() for a in (10, 200)])
    with torch.no_grad():
        full = model(poses)  # (2, 3, 32, 32)
    view, ray = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([0, 5, 63, 17, 36])
    with torch.no_grad():
        blocks = model(poses[view], ray=ray)
    images = (full.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    expected = ray_blocks(images, view, ray, model.ray_grid, 4)
    assert blocks.shape == expected.shape == (1, 3, 4, 4 * len(ray))
    assert (blocks - expected).abs().max() <= 0.5 / 255 + 1e-6
    # a whole number of ray grids: laid out as images; shuffled rays of two views
    view, ray = torch.tensor([0, 1] * 32), torch.randperm(64)
    with torch.no_grad():
        blocks = model(poses[view], ray=ray)
    expected = ray_blocks(images, view, ray, model.ray_grid, 4)
    assert blocks.shape == expected.shape == (1, 3, 32, 32)
    assert (blocks - expected).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="pixelshuffle"):
        MobileR2L(_cfg(upsample="transpose"), _camera())(poses[view], ray=ray)


def test_registry_matches_config_sections():
    """Every kind of student.kind is registered, has a section of its name holding its
    architecture settings, and is built from those settings alone."""
    import typing

    kinds = typing.get_args(typing.get_type_hints(StudentConfig)["kind"])
    assert set(kinds) == set(KINDS)
    camera = _camera()
    for kind in kinds:
        cls = student_class(kind)
        assert cls.kind == kind and isinstance(getattr(StudentConfig(), kind), cls.arch_type)
        model = build_student(kind, StudentConfig(kind=kind, output_size=32).arch, camera)
        assert model.camera == camera and model.camera.width == model.ray_grid[1] * model.ray_block
    with pytest.raises(ValueError, match="unknown student kind 'nerf'"):
        student_class("nerf")
    with pytest.raises(TypeError, match="built from MobileR2LConfig settings, got StudentConfig"):
        MobileR2L(StudentConfig(), camera)


def test_student_stage_key_covers_only_the_selected_kind():
    from pipeline.stages import Pipeline

    cfg = Config()
    assert set(cfg.student.settings()) == {"kind", "output_size", "near", "far", "mobiler2l", "train"}
    key = Pipeline(cfg).key("student")
    cfg.student.mobiler2l.width += 1
    assert Pipeline(cfg).key("student") != key
    cfg.student.mobiler2l.width -= 1
    cfg.export.opset += 1  # another stage's setting
    assert Pipeline(cfg).key("student") == key


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    """model.pt alone (kind, architecture, camera, weights with BatchNorm statistics) gives
    a model with identical outputs; no config is involved."""
    torch.manual_seed(0)
    model = _trained_bn(MobileR2L(_cfg(upsample="pixelshuffle", width=24), _camera()))
    path = tmp_path / "model.pt"
    torch.save(student_checkpoint(model), path)
    loaded = load_student(path, torch.device("cpu"))
    assert type(loaded) is MobileR2L and loaded.arch == model.arch and loaded.camera == model.camera
    assert not loaded.training
    poses = torch.stack([torch.from_numpy(orbit_pose([0, 0, 0], 3.0, a, 25.0)).float() for a in (0, 77)])
    with torch.no_grad():
        assert torch.equal(loaded(poses), model(poses))


def test_load_student_errors_are_one_line(tmp_path):
    model = MobileR2L(_cfg(), _camera())
    state = student_checkpoint(model)
    cases = {
        "missing.pt": (None, "student model not found"),
        "corrupt.pt": (b"not a torch file", "corrupt student model"),
        "old.pt": ({"model": state["model"], "camera": state["camera"], "student_config": {}},
                   r"not a student model of this project \(no kind, arch\)"),
        "list.pt": ([1, 2], "not a student model of this project"),
        "unknown.pt": ({**state, "kind": "grid"}, "student kind 'grid' is unknown here"),
        "foreign_arch.pt": ({**state, "arch": {"depth": 3}}, "does not fit its own settings"),
        "other_weights.pt": ({**state, "model": MobileR2L(_cfg(width=8), _camera()).state_dict()},
                             "does not fit its own settings"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(StageError, match=message) as err:
            load_student(path, torch.device("cpu"))
        text = str(err.value)
        assert "\n" not in text and text.startswith(str(path)) and "stage student --force" in text, text


def test_batches_draw_real_views_at_the_end_of_the_pool_and_only_them_in_the_finetune():
    from student.stage import draw_views
    torch.manual_seed(0)
    view = draw_views(n_items=4000, n_pseudo=30, n_pool=40, n_real=500, finetune=False)
    assert view.shape == (4000,) and bool((view[:3500] < 30).all()) and bool((view[3500:] >= 30).all())
    assert set(view[:3500].tolist()) == set(range(30)) and set(view[3500:].tolist()) == set(range(30, 40))
    assert bool((draw_views(4000, 30, 30, 0, finetune=False) < 30).all())
    tuned = draw_views(4000, 30, 40, 500, finetune=True)
    assert tuned.shape == (4000,) and set(tuned.tolist()) == set(range(30, 40))


def test_an_old_checkpoint_camera_loads_as_a_square_centred_frame():
    old = {"output_size": 32, "focal": 32 * 1.2, "near": 2.0, "far": 4.0, "center": [0.0, 0.0, 0.0], "scale": 1.5,
           "aabb": [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]}
    assert StudentCamera.from_dict(old) == _camera(32)


def test_a_forward_region_gives_the_far_planes_mean_camera():
    """`student_camera` of a forward-facing scene bakes its mean camera (axes, eye), the box
    centre's depth in front of it and the planes' reach; an object or a box behind the mean
    camera gets none."""
    from pipeline.cameras import Intrinsics
    from student.kinds import slab_bound
    from student.stage import forward_slab

    cam = Intrinsics(50.0, 50.0, 40.0, 30.0, 80, 60)
    region = {"type": "forward", "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "centre": [0.0, 0.0, 2.0],
              "extent": [[-0.4, -0.2, 0.0], [0.4, 0.2, 0.0]], "turn_deg": 12.0}
    slab = forward_slab(cam, region, [0.0, 0.0, -1.0])
    assert slab[:12] == (1, 0, 0, 0, 1, 0, 0, 0, 1, 0.0, 0.0, 2.0) and slab[12] == 3.0  # looking down -z
    assert slab[13:] == slab_bound(50.0, 50.0, 40.0, 30.0, 80, 60, 12.0, region["extent"], 3.0)
    assert forward_slab(cam, region, [0.0, 0.0, 3.0]) is None  # the box behind the mean camera
    assert forward_slab(cam, None, [0.0, 0.0, -1.0]) is None
