"""Hard-example mining for ray batches (R2L: a share of each batch from the rays with the
highest loss so far), kept per process: rays are (view, ray) index pairs."""

from __future__ import annotations

import torch
from torch import Tensor


def ray_errors(pred: Tensor, target: Tensor, ray_block: int) -> Tensor:
    """Mean squared error of each ray's block: pred, target (B, 3, h * r, w * r) laid out as
    `StudentModel.forward_rays` returns them -> (B * h * w,) in the rays' order."""
    b, _, hh, ww = pred.shape
    r = ray_block
    err = ((pred.float() - target) ** 2).mean(dim=1)  # (B, h * r, w * r)
    return err.reshape(b, hh // r, r, ww // r, r).mean(dim=(2, 4)).reshape(-1)


class HardRayPool:
    """The `size` rays with the highest error seen so far (an error is refreshed whenever its
    ray is trained on again)."""

    def __init__(self, size: int):
        self.size = size
        self.view = torch.empty(0, dtype=torch.long)
        self.ray = torch.empty(0, dtype=torch.long)
        self.err = torch.empty(0)

    def __len__(self) -> int:
        return len(self.err)

    def draw(self, n: int) -> tuple[Tensor, Tensor]:
        """n rays of the pool, uniformly with replacement."""
        pick = torch.randint(0, len(self), (n,))
        return self.view[pick], self.ray[pick]

    def update(self, view: Tensor, ray: Tensor, err: Tensor) -> None:
        """Merge rays just trained on; keep the `size` worst, one entry per (view, ray)."""
        view = torch.cat([view.cpu(), self.view])
        ray = torch.cat([ray.cpu(), self.ray])
        err = torch.cat([err.detach().float().cpu(), self.err])
        # newest first, so the first occurrence of a pair carries its latest error
        key = view * (int(ray.max()) + 1 if len(ray) else 1) + ray
        uniq, inverse = torch.unique(key, return_inverse=True)
        first = torch.full((len(uniq),), len(key), dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(len(key)), reduce="amin")
        keep = first[torch.topk(err[first], min(self.size, len(first))).indices]
        self.view, self.ray, self.err = view[keep], ray[keep], err[keep]
