import math

import numpy as np
import pytest
import torch

from pipeline.cameras import orbit_pose
from pipeline.config import ExportConfig, StudentConfig
from student.model import NeLFStudent, StudentCamera, flops_per_frame, fold_batchnorm, positional_encoding


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
    return StudentCamera(output_size=size, focal=size * 1.2, near=2.0, far=4.0, center=(0.0, 0.0, 0.0), scale=1.5)


def _cfg(**kw):
    base = dict(output_size=32, sr_factor=4, n_points=4, pe_freqs=3, width=16, n_blocks=2,
                sr_channels=[8, 8], activation="gelu")
    base.update(kw)
    return StudentConfig(**base)


def test_student_shapes_and_range():
    torch.manual_seed(0)
    model = NeLFStudent(_cfg(), _camera()).eval()
    poses = torch.tensor(np.stack([orbit_pose([0, 0, 0], 3.0, a, 20.0) for a in (0, 90)]), dtype=torch.float32)
    out = model(poses)
    assert out.shape == (2, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert model.encode(poses).shape == (2, 4 * 3 * 7, 8, 8)
    assert model(poses[0]).shape == (1, 3, 32, 32)


def test_jittered_points_stay_in_their_bins():
    model = NeLFStudent(_cfg(n_points=4, pe_freqs=0), _camera())
    pose = torch.tensor(orbit_pose([0, 0, 0], 3.0, 0, 0), dtype=torch.float32)
    x = model.encode(pose, jitter=True)  # (1, K*3, h, w) normalised points
    pts = x[0].reshape(4, 3, -1) * 1.5  # back to world units, centre 0
    dist = (pts - torch.tensor([3.0, 0, 0])[None, :, None]).norm(dim=1)  # distance from the eye
    for k in range(4):
        assert dist[k].min() >= 2.0 + 0.5 * k - 1e-5 and dist[k].max() <= 2.0 + 0.5 * (k + 1) + 1e-5


def test_fold_batchnorm_preserves_output():
    torch.manual_seed(0)
    model = NeLFStudent(_cfg(), _camera())
    model.train()
    pose = torch.tensor(orbit_pose([0, 0, 0], 3.0, 10, 20), dtype=torch.float32)
    for _ in range(3):  # populate BN running stats
        model(pose)
    model.eval()
    ref = model(pose)
    import copy
    fused = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert torch.allclose(fused(pose), ref, atol=1e-5)


def test_flops_counts_convs():
    model = NeLFStudent(_cfg(n_blocks=0, sr_channels=[], sr_factor=1, output_size=8), _camera(8))
    c_in = 4 * 3 * 7
    assert flops_per_frame(model) == 2 * 64 * (c_in * 16 + 16 * 3)


def test_onnx_export_matches_torch(tmp_path):
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = NeLFStudent(_cfg(activation="gelu_tanh"), _camera()).eval()
    poses = [orbit_pose([0, 0, 0], 3.0, a, 25.0) for a in (0, 120, 240)]
    onnx_bytes, report = export_onnx(model, ExportConfig(), poses, tmp_path)
    assert report["max_abs_diff"] < 1e-4 and report["max_abs_diff_raw"] < 1e-4
    assert (tmp_path / "model.onnx").read_bytes() == onnx_bytes
    assert report["nodes"] <= report["nodes_raw"]


@pytest.mark.parametrize("upsample", ["transpose", "pixelshuffle"])
def test_coarser_student_renders_the_same_view_smaller(upsample):
    """The preview model: the same weights on a 2x coarser ray grid gives a 2x smaller image."""
    from student.model import coarser

    torch.manual_seed(0)
    model = NeLFStudent(_cfg(upsample=upsample, output_size=32, sr_factor=4), _camera()).eval()
    small = coarser(model, 2)
    pose = torch.from_numpy(orbit_pose([0, 0, 0], 3.0, 40.0, 25.0)).float()
    with torch.no_grad():
        full, low = model(pose), small(pose)
    assert low.shape == (1, 3, 16, 16) and small.in_size == model.in_size // 2
    assert all(torch.equal(a, b) for (n, a), (_, b) in zip(model.state_dict().items(), small.state_dict().items(),
                   strict=True) if n != "dirs")
    assert full.shape == (1, 3, 32, 32) and torch.isfinite(low).all()


def test_fp16_weights_export_is_half_size_and_close():
    from export.onnx_export import OUTPUTS, fp16_weights, ort_session, psnr_between, simplify, to_onnx_bytes

    torch.manual_seed(0)
    model = NeLFStudent(_cfg(activation="gelu_tanh", width=128, n_blocks=4), _camera()).eval()
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
    model = NeLFStudent(_cfg(upsample="pixelshuffle"), _camera()).eval()
    poses = torch.stack([torch.from_numpy(orbit_pose([0, 0, 0], 3.0, a, 25.0)).float() for a in (10, 200)])
    with torch.no_grad():
        full = model(poses)  # (2, 3, 32, 32)
    view, ray = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([0, 5, 63, 17, 36])
    with torch.no_grad():
        blocks = model(poses[view], ray=ray)
    images = (full.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    expected = ray_blocks(images, view, ray, model.in_size, 4)
    assert blocks.shape == expected.shape == (1, 3, 4, 4 * len(ray))
    assert (blocks - expected).abs().max() <= 0.5 / 255 + 1e-6
    # a whole number of ray grids: laid out as images; shuffled rays of two views
    view, ray = torch.tensor([0, 1] * 32), torch.randperm(64)
    with torch.no_grad():
        blocks = model(poses[view], ray=ray)
    expected = ray_blocks(images, view, ray, model.in_size, 4)
    assert blocks.shape == expected.shape == (1, 3, 32, 32)
    assert (blocks - expected).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="pixelshuffle"):
        NeLFStudent(_cfg(upsample="transpose"), _camera())(poses[view], ray=ray)
