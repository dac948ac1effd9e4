"""What machine this is, and what the `auto` speed switches mean on it.

The same config runs on very different machines: a Zen 5 with AVX-512 BF16 runs
bf16 autocast at float32's speed, a Zen 1 with AVX2 alone emulates bf16 and ran
the teacher's MLPs 6.5x slower under it. So a speed switch set to `auto` is
decided here, per machine, from what the CPU reports and, where that cannot
decide, from a short measurement cached per machine; an explicit true/false in
the config always wins. Every record and benchmark carries `describe()`, so a
figure always names the machine that produced it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .io import atomic_write_json

# CPU flags (/proc/cpuinfo) of native bf16 arithmetic: x86 AVX-512 BF16 or AMX, Arm's BF16 extension
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# bf16 must beat float32 by this factor to be chosen: a small gain in the MLPs alone is eaten
# by the casts around them (lego, AVX-512 BF16: bf16 1,761 steps in 5 minutes, float32 1,987)
MIN_BF16_SPEEDUP = 1.15


def cache_dir() -> Path:
    """Per-machine cache (compiled kernels, measurements): $NELF_CACHE_DIR, else ~/.cache/nelf-pipeline."""
    return Path(os.environ.get("NELF_CACHE_DIR") or Path.home() / ".cache" / "nelf-pipeline")


@dataclass(frozen=True)
class CpuInfo:
    """What the CPU reports. `capability` is torch's dispatch level ('AVX512', 'AVX2', 'DEFAULT', ...)."""

    model: str
    flags: frozenset[str]
    capability: str

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)

    def fingerprint(self) -> str:
        """A short hash of the model name and the instruction-set flags: a KVM guest reports
        'AMD EPYC' for CPUs of very different generations, so the name alone is not enough."""
        text = repr((self.model, sorted(self.flags), platform.machine()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def cpu_info() -> CpuInfo:
    model, flags = None, frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:  # x86 / Arm
                    flags = frozenset(value.split())
    except OSError:
        pass
    return CpuInfo(model=model or platform.processor() or platform.machine(), flags=flags,
                   capability=torch.backends.cpu.get_cpu_capability())


def describe(device: torch.device | str = "cpu") -> dict:
    """The machine block every record.json and benchmark line carries."""
    cpu = cpu_info()
    device = torch.device(device)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    block = {"cpu": cpu.model, "isa": cpu.capability, "native_bf16": cpu.native_bf16, "cores": cores,
             "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        block["gpu"] = torch.cuda.get_device_name(device)
        block["gpus"] = torch.cuda.device_count()
    return block


def short(block: dict) -> str:
    """'AMD EPYC (AVX512, native bf16), 2 threads, torch 2.13.0+cpu, cpu' for tables and logs."""
    bf16 = "native bf16" if block.get("native_bf16") else "no native bf16"
    where = block.get("gpu") or block.get("device", "cpu")
    return (f"{block.get('cpu')} ({block.get('isa')}, {bf16}), {block.get('threads')} threads, "
            f"torch {block.get('torch')}, {where}")


@dataclass(frozen=True)
class Choice:
    """A resolved speed switch and why it has that value (for the log and record.json)."""

    value: bool
    reason: str


def resolve_compile(setting: bool | str, device: torch.device) -> Choice:
    """torch.compile: explicit wins; auto = on CUDA only.

    On a CPU the hash grid runs in C kernels, so compile would only fuse the small MLP
    heads, and a cold compile took 76 s of a 20-minute budget on an AVX2 machine.
    """
    if isinstance(setting, bool):
        return Choice(setting, "set in the config")
    if device.type == "cuda":
        return Choice(True, "auto: CUDA")
    return Choice(False, "auto: CPU (a cold compile costs a minute or more; the MLP heads gain little)")


def resolve_mlp_bf16(setting: bool | str, device: torch.device, measure: Callable[[], float],
                     cpu: CpuInfo | None = None) -> Choice:
    """bf16 autocast for the teacher's MLPs on the CPU: explicit wins; auto = on only where
    the CPU has native bf16 and a short measurement finds it faster than float32.

    measure: () -> bf16's speed-up over float32 on the real workload (the caller's,
        e.g. `measured('teacher-field-bf16', ...)`); called only when the CPU has bf16.
    cpu: this machine's unless given (tests fake it). On CUDA the training step
        autocasts to bf16 anyway: off here.
    """
    if isinstance(setting, bool):
        return Choice(setting, "set in the config")
    if device.type != "cpu":
        return Choice(False, f"auto: {device.type} (the training step autocasts to bf16 there)")
    cpu = cpu or cpu_info()
    if not cpu.native_bf16:
        return Choice(False, f"auto: this CPU has no native bf16 ({cpu.capability}; emulated bf16 ran the "
                             "MLPs several times slower than float32)")
    speedup = measure()
    verdict = "faster" if speedup >= MIN_BF16_SPEEDUP else f"not faster enough (needs {MIN_BF16_SPEEDUP}x)"
    return Choice(speedup >= MIN_BF16_SPEEDUP, f"auto: bf16 measured {speedup:.2f}x float32's speed here, {verdict}")


def measured(name: str, measure: Callable[[], float]) -> float:
    """`measure()`, run once per machine (CPU model and flags, torch version, threads) and
    cached in cache_dir() as JSON, so every later run decides in no time and the same way."""
    cpu = cpu_info()
    key = f"{name}-{cpu.fingerprint()}-{torch.__version__}-{torch.get_num_threads()}"
    path = cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        return float(json.loads(path.read_text())["value"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = float(measure())
    try:
        atomic_write_json(path, {"value": value, "key": key, "cpu": cpu.model})
    except OSError:
        pass  # an unwritable cache only means measuring again next time
    return value
