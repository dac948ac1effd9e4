"""torch.distributed when launched by torchrun; a world of one otherwise.

`torchrun --nproc_per_node=N -m pipeline ...` sets WORLD_SIZE, RANK and
LOCAL_RANK; we join the process group from them (gloo on CPU, nccl on CUDA)
and nothing else: torchrun owns process start-up, rendezvous and tear-down.
Without those variables every helper here is a no-op for rank 0 of 1.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any

import torch
import torch.distributed as dist

# Non-distributed stages (the teacher) run on rank 0 while the others wait in a
# collective: the default 30-minute timeout would cut a long teacher run short.
TIMEOUT = _dt.timedelta(hours=24)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_name: str = "auto") -> None:
    """Join torchrun's process group if WORLD_SIZE > 1 (idempotent)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)


def shutdown() -> None:
    """Leave the process group cleanly: every rank waits for the others, then
    destroys it. Left to interpreter exit, gloo's threads can abort the process
    ("terminate called without an active exception") after the work is done."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every rank's batch, on any device.

    torch's SyncBatchNorm runs on GPUs only; this one sums (sum, sum of squares,
    count) over ranks with a differentiable all-reduce, so gloo on CPU gets the
    same statistics, and gradients, as one process with the global batch.
    Parameters and buffers are BatchNorm2d's: state_dicts are interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
            self.num_batches_tracked.add_(1)
        scale = self.weight / torch.sqrt(var + self.eps)
        return x * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm statistics over all ranks: torch's SyncBatchNorm on CUDA, ours elsewhere."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is torch.nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d  # same parameters and buffers, global statistics
    return model
