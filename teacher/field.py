"""The teacher's radiance field: nerfacc's Instant-NGP example (examples/radiance_fields/ngp.py) in torch.

    position -> aabb to [0, 1]^3 -> hash grid -> density MLP (1 hidden layer) -> density (truncated exp)
                                                                              -> geometry features (15)
    view direction -> spherical harmonics (degree 4, 16 coefficients) --+--> colour MLP (2 hidden) -> rgb

Frames and units: positions and the aabb are in the world frame of the scene's
poses; directions are world-frame and are normalised here; density is per world
unit of length; rgb is linear in [0, 1].
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hashgrid import HashEncoding, HashGridSpec, MaybeCompiled
from .space import Space, contract_to_unisphere


class _TruncExp(torch.autograd.Function):
    """exp(x) whose gradient uses exp(min(x, 15)): large pre-activations early in
    training cannot blow up the hash table's gradient (Instant-NGP, nerfacc)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """Elementwise exp with the backward clamped at exp(15); any shape."""
    return _TruncExp.apply(x)


# Real spherical-harmonic constants in tiny-cuda-nn's order and signs
# (encodings/spherical_harmonics.h), i.e. Instant-NGP's direction encoding.
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.48860251190291987
_SH_C2 = (1.0925484305920792, 0.94617469575755997, 0.31539156525251999, 0.54627421529603959)
_SH_C3 = (0.59004358992664352, 2.8906114426405538, 0.45704579946446572, 0.3731763325901154, 1.4453057213202769)


def sh_encode(d: Tensor, degree: int = 4) -> Tensor:
    """Real spherical harmonics basis of unit directions (tiny-cuda-nn convention).

    Args:
        d: (..., 3) unit vectors (x, y, z). Not normalised here.
        degree: number of SH bands, 1..4 (tiny-cuda-nn's "degree").

    Returns:
        (..., degree**2) in the order: 0.28209479; -0.48860251 y, 0.48860251 z,
        -0.48860251 x; then bands 2 and 3 as in tiny-cuda-nn. The basis is
        orthonormal over the sphere (sum of Y_i Y_j over the sphere = delta_ij).
    """
    if not 1 <= degree <= 4:
        raise ValueError(f"sh degree must be in 1..4, got {degree}")
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    out = [torch.full_like(x, _SH_C0)]
    if degree > 1:
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        a, b, c, e = _SH_C2
        out += [a * xy, -a * yz, b * zz - c, -a * xz, e * (xx - yy)]
    if degree > 3:
        a, b, c, e, f = _SH_C3
        out += [
            a * y * (-3.0 * xx + yy),
            b * xy * z,
            c * y * (1.0 - 5.0 * zz),
            e * z * (5.0 * zz - 3.0),
            c * x * (1.0 - 5.0 * zz),
            f * z * (xx - yy),
            a * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


class NGPField(nn.Module):
    """Density and colour at points, Instant-NGP style.

    Args:
        aabb: (6,) scene box [xmin, ymin, zmin, xmax, ymax, zmax], world units.
            Points outside it (or on its faces) get density 0.
        spec: hash grid layout.
        hidden: width of both MLPs.
        geo_feat_dim: geometry features passed from the density to the colour MLP.
        sh_degree: spherical-harmonic bands of the view direction (degree**2 inputs).
        compile: ``torch.compile`` the hash encoding and the MLP heads (falls back
            to eager with a warning). Shape-dynamic, so varying sample counts do not
            recompile.
        mlp_dtype: run the MLPs under autocast in this dtype (e.g. torch.bfloat16
            on CPUs with AMX/AVX512-BF16; float16 or bfloat16 on CUDA); None: float32.
            The hash encoding and all outputs stay float32.
        native: the hash encoding's C kernels on CPU (see ``HashEncoding``).
        space: the space the field covers (teacher/space.py; default an object's box). With
            ``space.contract``, positions go through ``contract_to_unisphere`` about the aabb
            instead of being cut off at it; renderers take its cone angle from here.
    """

    def __init__(
        self,
        aabb: Tensor,
        spec: HashGridSpec,
        hidden: int = 64,
        geo_feat_dim: int = 15,
        sh_degree: int = 4,
        compile: bool = False,
        mlp_dtype: torch.dtype | None = None,
        native: bool = True,
        space: Space | None = None,
    ) -> None:
        super().__init__()
        self.space = space or Space()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(6).clone())
        self.geo_feat_dim = geo_feat_dim
        self.sh_degree = sh_degree
        self.mlp_dtype = mlp_dtype
        self.encoding = HashEncoding(spec, compile=compile, native=native)
        self.density_mlp = nn.Sequential(
            nn.Linear(self.encoding.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1 + geo_feat_dim)
        )
        self.color_mlp = nn.Sequential(
            nn.Linear(sh_degree**2 + geo_feat_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 3),
        )
        self._density_head = MaybeCompiled(self._density_head_eager, compile, dynamic=True)
        self._color_head = MaybeCompiled(self._color_head_eager, compile, dynamic=True)

    def _autocast(self, device: torch.device):
        if self.mlp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.mlp_dtype)

    def _density_head_eager(self, features: Tensor, inside: Tensor) -> tuple[Tensor, Tensor]:
        """(N, L F) encoding, (N,) bool -> sigma (N,), geometry features (N, geo_feat_dim)."""
        with self._autocast(features.device):
            out = self.density_mlp(features)
        out = out.float()
        sigma = trunc_exp(out[:, 0] - 1.0) * inside
        return sigma, out[:, 1:]

    def _color_head_eager(self, d: Tensor, geo: Tensor) -> Tensor:
        """(N, 3) directions, (N, geo_feat_dim) -> rgb (N, 3) in [0, 1]."""
        d = F.normalize(d, dim=-1)
        h = torch.cat([sh_encode(d, self.sh_degree), geo], dim=-1)
        with self._autocast(d.device):
            out = self.color_mlp(h)
        return torch.sigmoid(out.float())

    def _density_and_geo(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.space.contract:
            u = contract_to_unisphere(x, self.aabb)
        else:
            lo, hi = self.aabb[:3], self.aabb[3:]
            u = (x - lo) / (hi - lo)
        inside = ((u > 0.0) & (u < 1.0)).all(dim=-1)
        return self._density_head(self.encoding(u), inside)

    def query_density(self, x: Tensor) -> Tensor:
        """Density at world points.

        Args:
            x: (N, 3) world positions.

        Returns:
            (N,) sigma >= 0, float32; 0 outside the aabb (bounded space).
        """
        return self._density_and_geo(x)[0]

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """Colour and density at world points seen from directions.

        Args:
            x: (N, 3) world positions.
            d: (N, 3) view directions (normalised here).

        Returns:
            rgb: (N, 3) in [0, 1], float32.
            sigma: (N,) >= 0, float32; 0 outside the aabb.
        """
        sigma, geo = self._density_and_geo(x)
        return self._color_head(d, geo), sigma
