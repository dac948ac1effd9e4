"""The teacher's hash encoding and radiance field against slow references and closed forms.

Both CPU paths are checked: the C kernels (``native``, the default) and the
eager torch path. The compiled torch path is off here (cold compiles take tens
of seconds); set NELF_TEST_COMPILE=1 to also check it against the naive reference.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import warnings

import pytest
import torch

from teacher import hashgrid_native, malloc_tuning, native
from teacher.field import NGPField, sh_encode, trunc_exp
from teacher.hashgrid import HashEncoding, HashGridSpec, MaybeCompiled, hash_encode_naive
from teacher.malloc_tuning import tune_malloc

# Small grid with both kinds of level: R = 4, 8 (dense: 125, 729 <= 1024 rows) and 16, 32 (hashed).
MIXED = HashGridSpec(n_levels=4, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=32)


def _points(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3) points in [0, 1], including the cube's corners and faces."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    x[:8] = torch.tensor([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=torch.float32)
    x[8:12, 0] = 1.0
    return x


def _encoding(spec: HashGridSpec, seed: int = 0, **kwargs) -> HashEncoding:
    torch.manual_seed(seed)
    enc = HashEncoding(spec, **kwargs)
    with torch.no_grad():  # O(1) values, so interpolation errors are not hidden by the 1e-4 init
        enc.table.uniform_(-1.0, 1.0)
    return enc


# ------------------------------------------------------------------ grid layout


def test_default_spec_levels_follow_instant_ngp():
    spec = HashGridSpec()
    res = spec.resolutions()
    assert len(res) == 16 and res[0] == 16 and res[-1] == 2048
    b = spec.per_level_scale
    assert b == pytest.approx((2048 / 16) ** (1 / 15))
    assert res == tuple(math.floor(16 * b**level + 1e-6) for level in range(16))
    levels = spec.levels()
    # (R + 1)^3 <= 2^19 only up to R = 79: R = 16..58 are dense, R = 80 onwards hashed.
    assert [lv.dense for lv in levels] == [True] * 5 + [False] * 11
    assert levels[0].size == 17**3 + 7  # 4913 rounded up to a multiple of 8
    assert all(lv.size == 2**19 for lv in levels[5:])
    assert all(b.offset == a.offset + a.size for a, b in zip(levels, levels[1:], strict=False))
    assert spec.n_rows == levels[-1].offset + levels[-1].size
    assert spec.out_dim == 32


def test_dense_vs_hashed_selection_edges():
    # (R + 1)^3 == T exactly is still dense: T = 2^9 = 512 and R = 7 (8^3 = 512 vertices).
    spec = HashGridSpec(n_levels=2, log2_table_size=9, base_resolution=7, max_resolution=8)
    dense = [lv.dense for lv in spec.levels()]
    assert spec.resolutions() == (7, 8)
    assert dense == [True, False]  # 8^3 = 512 <= 512, 9^3 = 729 > 512
    all_hashed = HashGridSpec(n_levels=3, log2_table_size=8, base_resolution=16, max_resolution=64)
    assert not any(lv.dense for lv in all_hashed.levels())
    assert [lv.dense for lv in MIXED.levels()] == [True, True, False, False]


def test_single_level_spec():
    spec = HashGridSpec(n_levels=1, base_resolution=8, max_resolution=8, log2_table_size=12)
    assert spec.resolutions() == (8,)
    enc = _encoding(spec)
    x = _points(64)
    torch.testing.assert_close(enc(x), hash_encode_naive(x, enc.table, spec))


# ------------------------------------------------------------------ encoding vs reference

PATHS = pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])


def test_native_kernels_build_here():
    """CI has a C compiler: the fast path must really be in use, not silently replaced."""
    enc = HashEncoding(MIXED)
    assert enc.native, "C kernels did not build; see the RuntimeWarning"
    assert not HashEncoding(MIXED, native=False).native


def test_native_build_failure_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_libs", {})
    monkeypatch.setenv("NELF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "FLAGS", ("-O3", "--no-such-flag"))
    with pytest.warns(RuntimeWarning, match="using the torch path"):
        enc = _encoding(MIXED)
    assert not enc.native
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert not _encoding(MIXED).native
    x = _points(100)
    torch.testing.assert_close(enc(x), hash_encode_naive(x, enc.table, MIXED), rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.iterdir())  # no partly written library left behind


@PATHS
@pytest.mark.parametrize("spec", [MIXED, HashGridSpec()], ids=["mixed", "default"])
def test_forward_matches_naive(spec, native):
    enc = _encoding(spec, native=native)
    x = _points(3000)
    out = enc(x)
    assert out.shape == (3000, spec.out_dim) and out.dtype == torch.float32
    torch.testing.assert_close(out, hash_encode_naive(x, enc.table, spec), rtol=1e-5, atol=1e-6)


def test_naive_hash_is_the_instant_ngp_hash():
    """One hand-computed lookup: a point exactly on a vertex reads that vertex's row."""
    spec = HashGridSpec(n_levels=1, n_features=1, log2_table_size=4, base_resolution=32, max_resolution=32)
    assert not spec.levels()[0].dense
    table = torch.arange(16, dtype=torch.float32)
    i, j, k = 3, 5, 7
    x = torch.tensor([[i / 32, j / 32, k / 32]])
    expected = ((i * 1) ^ (j * 2654435761) ^ (k * 805459861)) % 16
    assert hash_encode_naive(x, table, spec).item() == pytest.approx(expected)
    assert HashEncoding(spec).encode(x, table).item() == pytest.approx(expected)


def test_interpolation_is_trilinear_on_dense_level():
    """A table holding f(vertex) = a.v + c reproduces the affine function exactly."""
    spec = HashGridSpec(n_levels=1, n_features=1, log2_table_size=12, base_resolution=8, max_resolution=8)
    level = spec.levels()[0]
    assert level.dense
    r = torch.arange(level.size)
    i, j, k = r % 9, (r // 9) % 9, r // 81
    a = torch.tensor([0.3, -1.2, 2.0])
    table = (a[0] * i + a[1] * j + a[2] * k).float() / 8 + 0.5
    x = _points(500)
    out = HashEncoding(spec).encode(x, table)[:, 0]
    torch.testing.assert_close(out, x @ a + 0.5, rtol=1e-5, atol=1e-5)


@PATHS
@pytest.mark.parametrize("spec", [MIXED, HashGridSpec()], ids=["mixed", "default"])
def test_table_gradient_matches_naive(spec, native):
    enc = _encoding(spec, native=native)
    x = _points(2000, seed=1)
    grad_out = torch.randn(2000, spec.out_dim, generator=torch.Generator().manual_seed(2))
    (enc(x) * grad_out).sum().backward()
    ours = enc.table.grad.clone()
    enc.table.grad = None
    (hash_encode_naive(x, enc.table, spec) * grad_out).sum().backward()
    torch.testing.assert_close(ours, enc.table.grad, rtol=1e-5, atol=1e-5)


def test_backward_chunks_agree():
    x = _points(1000)
    grads = []
    for chunk in (1000, 333):
        enc = _encoding(MIXED, backward_chunk=chunk, native=False)
        enc(x).square().sum().backward()
        grads.append(enc.table.grad)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("n_features", [2, 3])
def test_native_multithreaded_matches_torch_path(n_features):
    """Enough points that the C kernels split work over threads (points forward, levels backward)."""
    spec = HashGridSpec(n_levels=5, n_features=n_features, log2_table_size=12, base_resolution=4, max_resolution=64)
    x = _points(40000, seed=3)
    grad_out = torch.randn(40000, spec.out_dim, generator=torch.Generator().manual_seed(4))
    outs, grads = [], []
    for use_c in (True, False):
        enc = _encoding(spec, native=use_c)
        assert enc.native == use_c
        out = enc(x)
        (out * grad_out).sum().backward()
        outs.append(out)
        grads.append(enc.table.grad)
    assert torch.get_num_threads() == 1 or hashgrid_native.load() is not None
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


@PATHS
def test_gradcheck_float64(native):
    spec = HashGridSpec(n_levels=2, n_features=2, log2_table_size=5, base_resolution=2, max_resolution=4)
    assert [lv.dense for lv in spec.levels()] == [True, False]
    enc = HashEncoding(spec, native=native).double()
    table = torch.empty_like(enc.table).uniform_(-1, 1).requires_grad_(True)
    x = _points(16).double()
    assert torch.autograd.gradcheck(lambda t: enc.encode(x, t), (table,), eps=1e-6, atol=1e-8)


@PATHS
def test_no_gradient_to_positions_and_nan_safe(native):
    enc = _encoding(MIXED, native=native)
    x = _points(16).requires_grad_(True)
    enc(x).sum().backward()
    assert x.grad is None
    x_nan = _points(16)
    x_nan[0, 1] = float("nan")
    out = enc(x_nan)  # reads in-bounds rows (no crash), and says NaN for that point only
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1:]).all()


@PATHS
def test_clamps_points_outside_unit_cube(native):
    enc = _encoding(MIXED, native=native)
    x = torch.tensor([[-0.5, 0.2, 1.7]])
    torch.testing.assert_close(enc(x), enc(torch.tensor([[0.0, 0.2, 1.0]])))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    enc = _encoding(MIXED)
    x = _points(4096)
    grad_out = torch.randn(4096, MIXED.out_dim)
    (enc(x) * grad_out).sum().backward()
    enc_cuda = _encoding(MIXED).cuda()
    out = enc_cuda(x.cuda())
    (out * grad_out.cuda()).sum().backward()
    torch.testing.assert_close(out.cpu(), enc(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc_cuda.table.grad.cpu(), enc.table.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(os.environ.get("NELF_TEST_COMPILE") != "1", reason="set NELF_TEST_COMPILE=1 (slow cold compile)")
def test_compiled_matches_naive():
    enc = _encoding(HashGridSpec(), compile=True)
    x = _points(5000)
    grad_out = torch.randn(5000, enc.out_dim)
    out = enc(x)
    assert enc.compiled
    (out * grad_out).sum().backward()
    ours = enc.table.grad.clone()
    enc.table.grad = None
    ref = hash_encode_naive(x, enc.table, enc.spec)
    (ref * grad_out).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, enc.table.grad, rtol=1e-5, atol=1e-5)


def test_compile_failure_falls_back_to_eager():
    def failing_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    fn = MaybeCompiled(lambda t: t * 2.0, True, backend=failing_backend)
    assert fn.compiled
    with pytest.warns(RuntimeWarning, match="using eager"):
        out = fn(torch.ones(3))
    torch.testing.assert_close(out, torch.full((3,), 2.0))
    assert not fn.compiled
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        fn(torch.ones(3))


def test_tune_malloc_applies_on_glibc_only_and_is_idempotent(monkeypatch):
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert tune_malloc() is glibc  # applied exactly where mallopt exists
    assert tune_malloc() is glibc  # a second call reports the same
    # Not applied yet on another OS: nothing is done, and it says so.
    monkeypatch.setattr(malloc_tuning, "_applied", False)
    monkeypatch.setattr(malloc_tuning.sys, "platform", "darwin")
    assert tune_malloc() is False


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="malloc_trim is glibc's")
def test_release_freed_hands_the_kept_pages_back():
    """Under `tune_malloc` freed memory stays resident; `release_freed` returns it (the distill
    loop's guard against a heap that fragments view after view)."""
    from teacher.malloc_tuning import release_freed

    def resident_mb() -> float:
        return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

    assert tune_malloc()
    blocks = [torch.ones(int(1e6) + 4096 * i) for i in range(64)]  # 260 MB in blocks of varied size
    del blocks
    kept = resident_mb()
    assert release_freed()
    assert resident_mb() < kept - 150


# ------------------------------------------------------------------ spherical harmonics


C0, C1 = 0.28209479177387814, 0.48860251190291987


def test_sh_low_bands_closed_form():
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, -0.8, 0.0]])
    sh1 = sh_encode(d, degree=1)
    torch.testing.assert_close(sh1, torch.full((4, 1), C0))
    sh2 = sh_encode(d, degree=2)
    # tiny-cuda-nn order and signs: C0, -C1 y, C1 z, -C1 x.
    expected = torch.tensor(
        [
            [C0, 0.0, 0.0, -C1],
            [C0, -C1, 0.0, 0.0],
            [C0, 0.0, C1, 0.0],
            [C0, 0.8 * C1, 0.0, -0.6 * C1],
        ]
    )
    torch.testing.assert_close(sh2, expected)
    assert sh_encode(d, degree=4).shape == (4, 16)
    torch.testing.assert_close(sh_encode(d, degree=4)[:, :4], expected)  # bands nest


def test_sh_basis_is_orthonormal_on_the_sphere():
    n = 20000  # Fibonacci sphere: near-uniform quadrature nodes of weight 4 pi / n
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (1.0 + 5.0**0.5) * i
    r = torch.sqrt(1.0 - z * z)
    d = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    y = sh_encode(d, degree=4)
    gram = y.T @ y * (4.0 * math.pi / n)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), rtol=0, atol=2e-3)


def test_sh_rejects_bad_degree():
    with pytest.raises(ValueError):
        sh_encode(torch.zeros(1, 3), degree=5)


# ------------------------------------------------------------------ field


def test_trunc_exp_forward_and_clamped_backward():
    x = torch.tensor([-2.0, 0.0, 3.0, 20.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x))
    y.sum().backward()
    expected = torch.exp(torch.tensor([-2.0, 0.0, 3.0, 15.0], dtype=torch.float64))
    torch.testing.assert_close(x.grad, expected)


def _field(**kwargs) -> NGPField:
    torch.manual_seed(0)
    aabb = torch.tensor([-1.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    return NGPField(aabb, MIXED, **kwargs)


def test_field_shapes_ranges_and_gradients():
    field = _field()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(500, 3, generator=g) * torch.tensor([2.0, 4.0, 4.0]) + torch.tensor([-1.0, -2.0, -1.0])
    d = torch.randn(500, 3, generator=g)
    rgb, sigma = field(x, d)
    assert rgb.shape == (500, 3) and sigma.shape == (500,)
    assert rgb.dtype == sigma.dtype == torch.float32
    assert ((rgb >= 0) & (rgb <= 1)).all() and (sigma > 0).all()
    torch.testing.assert_close(field.query_density(x), sigma)
    (rgb.sum() + sigma.sum()).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_field_density_is_zero_outside_aabb():
    field = _field()
    x = torch.tensor(
        [
            [-1.5, 0.0, 0.0],  # x below
            [0.0, 2.5, 0.0],  # y above
            [0.0, 0.0, 3.0],  # on the far z face
            [0.0, 0.0, 1.0],  # inside
        ]
    )
    sigma = field.query_density(x)
    assert (sigma[:3] == 0).all() and sigma[3] > 0


def test_field_direction_scale_does_not_matter():
    field = _field()
    x = torch.zeros(4, 3)
    d = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(field(x, d)[0], field(x, 7.0 * d)[0])


def test_field_bf16_mlps_stay_close_to_float32():
    x = torch.rand(256, 3, generator=torch.Generator().manual_seed(6))
    d = torch.randn(256, 3, generator=torch.Generator().manual_seed(7))
    rgb32, sigma32 = _field()(x, d)
    rgb16, sigma16 = _field(mlp_dtype=torch.bfloat16)(x, d)
    assert rgb16.dtype == sigma16.dtype == torch.float32
    torch.testing.assert_close(rgb16, rgb32, rtol=0, atol=2e-2)
    torch.testing.assert_close(sigma16, sigma32, rtol=5e-2, atol=1e-3)
