import math

import numpy as np
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
