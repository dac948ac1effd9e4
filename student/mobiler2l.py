"""The NeLF student (MobileR2L family): camera pose in, image out, one pass per pixel.

pose (4, 4) -> a ray per pixel of a low-resolution grid -> K points per ray
between near and far -> positional encoding -> 1x1-conv head and residual
body -> super-resolution (ConvTranspose k4 s2, or 1x1 conv + PixelShuffle, then residual
blocks) -> sigmoid.
Ray generation and encoding live inside the model so the ONNX export carries
the whole camera model; the viewer only supplies the pose.

Kind `mobiler2l` of the student interface (student/kinds.py), built from
`student.mobiler2l` settings (pipeline/config.py: MobileR2LConfig).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.cameras import Intrinsics, camera_directions
from pipeline.config import MobileR2LConfig

from .encoding import positional_encoding
from .kinds import StudentCamera, StudentModel, ray_layout

__all__ = ["MobileR2L", "fold_batchnorm"]


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    return nn.GELU(approximate="tanh" if name == "gelu_tanh" else "none")


class ConvBN(nn.Module):
    """Conv (1x1, or ConvTranspose k4 s2) + BatchNorm; `fused()` folds the BN for export."""

    def __init__(self, c_in: int, c_out: int, transpose: bool = False):
        super().__init__()
        self.transpose = transpose
        self.conv = (nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1) if transpose
                     else nn.Conv2d(c_in, c_out, 1))
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))

    def fused(self) -> nn.Module:
        return fuse_conv_bn_eval(self.conv.eval(), self.bn.eval(), transpose=self.transpose)


class PixelShuffleUp(nn.Module):
    """x2 upsampling as a 1x1 conv to 4x the channels + PixelShuffle (DepthToSpace in ONNX).

    A quarter of the multiply-adds of ConvTranspose k4 s2 for the same channels; each
    input pixel predicts its own 2x2 block, so all spatial detail comes from the rays.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.proj = ConvBN(c_in, 4 * c_out)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.proj(x))


class ResBlock(nn.Module):
    def __init__(self, c: int, act: str):
        super().__init__()
        self.a = ConvBN(c, c)
        self.b = ConvBN(c, c)
        self.act1, self.act2 = _activation(act), _activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(x + self.b(self.act1(self.a(x))))


class MobileR2L(StudentModel):
    """MobileR2L family: pose -> rays on a grid sr_factor times coarser than the frame -> 1x1 convs
    -> x2 upsamplings."""

    kind = "mobiler2l"
    arch_type = MobileR2LConfig

    def __init__(self, arch: MobileR2LConfig, camera: StudentCamera):
        super().__init__(arch, camera)
        if camera.width % arch.sr_factor or camera.height % arch.sr_factor:
            raise ValueError(f"a {camera.width}x{camera.height} frame is not a multiple of sr_factor "
                             f"{arch.sr_factor} a side")
        if len(arch.sr_channels) != arch.sr_factor.bit_length() - 1 or arch.sr_factor & (arch.sr_factor - 1):
            raise ValueError(f"sr_channels {arch.sr_channels} must list one channel count per x2 upsampling "
                             f"of sr_factor {arch.sr_factor} (a power of two)")
        sr, c = arch.sr_factor, camera
        self.ray_grid = (c.height // sr, c.width // sr)
        # one ray at the centre of each sr x sr block of the frame
        dirs = camera_directions(Intrinsics(c.fx / sr, c.fy / sr, c.cx / sr, c.cy / sr, c.width // sr,
                                            c.height // sr)).reshape(-1, 3)
        self.register_buffer("dirs", dirs / dirs.norm(dim=-1, keepdim=True))  # (P, 3) unit, camera frame
        self.register_buffer("center", torch.tensor(camera.center, dtype=torch.float32))
        k = arch.n_points
        self.register_buffer("t_mid", camera.near + (camera.far - camera.near) * (torch.arange(k) + 0.5) / k)
        c_in = k * 3 * (1 + 2 * arch.pe_freqs)
        act = arch.activation
        self.head = nn.Sequential(nn.Conv2d(c_in, arch.width, 1), _activation(act))
        self.body = nn.Sequential(*[ResBlock(arch.width, act) for _ in range(arch.n_blocks)])
        sr, c = [], arch.width
        for c_out in arch.sr_channels:
            up = ConvBN(c, c_out, transpose=True) if arch.upsample == "transpose" else PixelShuffleUp(c, c_out)
            sr += [up, _activation(act)]
            sr += [ResBlock(c_out, act) for _ in range(arch.sr_blocks)]
            c = c_out
        self.sr = nn.Sequential(*sr)
        self.tail = nn.Conv2d(c, 3, 1)

    @property
    def n_points(self) -> int:
        return self.arch.n_points

    @property
    def per_ray(self) -> bool:
        """1x1 convs and PixelShuffle work on each ray alone; ConvTranspose k4 mixes neighbours."""
        return self.arch.upsample == "pixelshuffle"

    def encode(self, pose: Tensor, jitter: bool | Tensor = False) -> Tensor:
        """pose (B, 4, 4) or (4, 4) -> network input (B, C, h, w).

        jitter: False (bin centres), True (uniform depth jitter within each bin), or the
        uniform noise itself, (B, h * w, K) in [0, 1), so that data-parallel ranks can
        slice one global draw and match a single process exactly.
        """
        if pose.dim() == 2:
            pose = pose[None]
        b = pose.shape[0]
        rot, origin = pose[:, :3, :3], pose[:, :3, 3]
        d = torch.matmul(self.dirs, rot.transpose(1, 2))  # (B, P, 3)
        u = None
        if isinstance(jitter, Tensor) or jitter:  # stratified depths in training only
            u = jitter if isinstance(jitter, Tensor) else torch.rand(b, d.shape[1], self.arch.n_points,
                                                                     device=pose.device)
        x = self.ray_features(origin[:, None, :], d, u)  # (B, P, C)
        return x.transpose(1, 2).reshape(b, -1, *self.ray_grid)

    def ray_features(self, origin: Tensor, d: Tensor, u: Tensor | None = None) -> Tensor:
        """Encoded K points along rays: origin, d (..., 3) (broadcastable), u (..., K)
        optional depth jitter in [0, 1) -> (..., K * 3 * (1 + 2 * pe_freqs))."""
        t = self.t_mid
        if u is not None:
            t = t + (u - 0.5) * (self.camera.far - self.camera.near) / self.arch.n_points
        pts = origin[..., None, :] + t[..., None] * d[..., None, :]  # (..., K, 3)
        x = (pts - self.center) / self.camera.scale
        return positional_encoding(x.flatten(-2), self.arch.pe_freqs)

    def forward(self, pose: Tensor, jitter: bool | Tensor = False, ray: Tensor | None = None,
                cached: Tensor | None = None) -> Tensor:
        """pose (B, 4, 4) or (4, 4) camera-to-world -> rgb (B, 3, H, W) in [0, 1].

        With `ray` (training on ray batches): `forward_rays(pose, ray, jitter)`; it goes
        through here so that DistributedDataParallel sees the call. No `ray_inputs`: cached is None.
        """
        if ray is not None:
            return self.forward_rays(pose, ray, jitter if isinstance(jitter, Tensor) else None)
        return self.decode(self.encode(pose, jitter))

    def decode(self, x: Tensor) -> Tensor:
        """Network input (B, C, h, w) -> rgb (B, 3, h * sr, w * sr)."""
        x = self.head(x)
        x = self.sr(self.body(x))
        return torch.sigmoid(self.tail(x))

    def forward_rays(self, pose: Tensor, ray: Tensor, noise: Tensor | None = None,
                     cached: Tensor | None = None) -> Tensor:
        """Arbitrary rays -> their sr x sr pixel blocks (see StudentModel.forward_rays); the
        weights mean the same thing as in `forward`."""
        if not self.per_ray:
            raise ValueError("forward_rays needs student.mobiler2l.upsample: pixelshuffle "
                             "(ConvTranspose mixes neighbours)")
        d = torch.matmul(pose[:, :3, :3], self.dirs[ray][:, :, None])[:, :, 0]  # (N, 3)
        x = self.ray_features(pose[:, :3, 3], d, noise)  # (N, C)
        b, h, w = ray_layout(d.shape[0], self.ray_grid)
        return self.decode(x.reshape(b, h * w, -1).transpose(1, 2).reshape(b, -1, h, w))

    def coarser(self, factor: int = 2) -> MobileR2L:
        """Every layer is per-ray or local, so the weights carry over; only the ray grid changes."""
        rows, cols = self.ray_grid
        if rows % factor or cols % factor:
            raise ValueError(f"the {cols}x{rows} ray grid is not divisible by {factor}")
        small = MobileR2L(self.arch, self.camera.coarser(factor)).to(self.dirs.device)
        state = {k: v for k, v in self.state_dict().items() if k != "dirs"}
        missing, unexpected = small.load_state_dict(state, strict=False)
        assert missing == ["dirs"] and not unexpected, (missing, unexpected)  # only the ray grid differs
        return small.train(self.training)

    def flops_per_frame(self) -> int:
        """2 x multiply-adds of the conv layers (the encoding and activations are not counted)."""
        total, (rows, cols) = 0, self.ray_grid
        size = 1
        for m in self.modules():
            if isinstance(m, nn.PixelShuffle):
                size *= m.upscale_factor
            elif isinstance(m, nn.Conv2d):
                total += 2 * m.in_channels * m.out_channels * rows * cols * size * size
            elif isinstance(m, nn.ConvTranspose2d):
                size *= 2
                total += 2 * m.in_channels * m.out_channels * 4 * rows * cols * size * size  # k4 s2: 4 taps
        # modules() yields layers in forward order, so `size` is each layer's resolution
        return total

    def for_export(self) -> nn.Module:
        """An eval-mode copy with every BatchNorm folded into its conv."""
        return fold_batchnorm(copy.deepcopy(self).eval())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every ConvBN by its fused conv, in place (eval mode)."""
    for name, child in list(model.named_children()):
        if isinstance(child, ConvBN):
            setattr(model, name, child.fused())
        else:
            fold_batchnorm(child)
    return model
