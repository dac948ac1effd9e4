"""Throughput of the teacher's radiance field: our hash encoding vs the naive reference.

    python bench/teacher_throughput.py [--compile/--no-compile] [--mlp-dtype bf16|fp32] [--quick]

Measures samples/s of ``NGPField`` at 2^16 and 2^18 samples (uniform points in the
aabb, random directions), on 2 torch threads:

* fwd:     forward with autograd recording (the training forward),
* fwd+bwd: forward + backward of sum(rgb) + sum(sigma),
* render:  forward under torch.no_grad (pseudo-view rendering for distillation),

for the naive field (same MLPs, float32, encoding by ``hash_encode_naive`` with
plain autograd) and ours: the hash encoding's C kernels (the CPU default) with
eager or compiled MLPs, and (without --quick) the torch-only encoding
(``-torch``: inductor-compiled gather, index_add_ scatter) for comparison.
Each figure is the median of a few timed repeats after warm-up (which includes
any cold compile, reported separately); repeats of the different fields are
interleaved so that other load on the machine hits them alike. The last line of
output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.machine import describe  # noqa: E402
from teacher import hashgrid_native  # noqa: E402
from teacher.field import NGPField  # noqa: E402
from teacher.hashgrid import HashEncoding, HashGridSpec, hash_encode_naive  # noqa: E402
from teacher.malloc_tuning import tune_malloc  # noqa: E402

AABB = torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5])
SIZES = (1 << 16, 1 << 18)


class NaiveHashEncoding(nn.Module):
    """Wraps a HashEncoding's table but encodes with the slow reference."""

    def __init__(self, inner: HashEncoding) -> None:
        super().__init__()
        self.inner = inner
        self.out_dim = inner.out_dim

    def forward(self, x: Tensor) -> Tensor:
        return hash_encode_naive(x, self.inner.table, self.inner.spec)


def make_field(kind: str, spec: HashGridSpec, state: dict | None) -> NGPField:
    compile = kind.startswith("ours-compiled")
    mlp_dtype = torch.bfloat16 if kind.endswith("bf16") else None
    field = NGPField(AABB, spec, compile=compile, mlp_dtype=mlp_dtype, native="-torch" not in kind)
    if state is not None:
        field.load_state_dict(state)
    if kind == "naive":
        field.encoding = NaiveHashEncoding(field.encoding)
    return field


def samples(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lo, hi = AABB[:3], AABB[3:]
    x = lo + (hi - lo) * torch.rand(n, 3, generator=g)
    d = torch.randn(n, 3, generator=g)
    return x, d / d.norm(dim=-1, keepdim=True)


def _cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def workloads(field: NGPField, n: int) -> dict[str, object]:
    """The three timed calls on one field at n samples."""
    x, d = samples(n)

    def fwd_bwd() -> None:
        field.zero_grad(set_to_none=True)
        rgb, sigma = field(x, d)
        (rgb.sum() + sigma.sum()).backward()

    def fwd() -> None:
        rgb, sigma = field(x, d)
        del rgb, sigma

    def render() -> None:
        with torch.no_grad():
            field(x, d)

    return {"fwd_bwd": fwd_bwd, "fwd": fwd, "render": render}


def measure(fields: dict[str, NGPField], n: int, repeats: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """samples/s per field and workload, and warm-up seconds per field.

    Repeats are interleaved across fields (naive, ours, naive, ours, ...) so that
    load from other processes on a shared machine hits all fields alike.
    """
    calls = {kind: workloads(field, n) for kind, field in fields.items()}
    warm = {}
    for kind, fns in calls.items():
        t0 = time.perf_counter()
        for _ in range(2 if "compiled" in kind else 1):  # first compiled calls compile
            for fn in fns.values():
                fn()
        warm[kind] = time.perf_counter() - t0
    times: dict[str, dict[str, list[float]]] = {kind: {w: [] for w in fns} for kind, fns in calls.items()}
    for _ in range(repeats):
        for workload in ("fwd_bwd", "fwd", "render"):
            for kind, fns in calls.items():
                t0 = time.perf_counter()
                fns[workload]()
                times[kind][workload].append(time.perf_counter() - t0)
    rates = {kind: {w: n / statistics.median(ts) for w, ts in per.items()} for kind, per in times.items()}
    return rates, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.compile our encoding and MLP heads (default: on)")
    parser.add_argument("--mlp-dtype", choices=("bf16", "fp32"), default="bf16",
                        help="our MLPs' autocast dtype (default bf16; the naive field is always fp32)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, fewer variants")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--malloc-tuning", action=argparse.BooleanOptionalAction, default=True,
                        help="glibc mallopt: keep freed memory in the process (default: on)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    malloc_tuned = tune_malloc() if args.malloc_tuning else False
    repeats = args.repeats or (3 if args.quick else 5)
    spec = HashGridSpec()

    ours = "ours-compiled" if args.compile else "ours-eager"
    ours += "-bf16" if args.mlp_dtype == "bf16" else "-fp32"
    kinds = ["naive"]
    if not args.quick:
        kinds += [k for k in ("ours-eager-fp32", "ours-compiled-fp32", "ours-compiled-torch-bf16")
                  if k != ours and (args.compile or "eager" in k)]
    kinds.append(ours)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, malloc tuning "
          f"{'on' if malloc_tuned else 'off'}, hash grid {spec}, C kernels "
          f"{'built' if hashgrid_native.load() is not None else 'UNAVAILABLE (torch path)'}")
    print(f"samples/s, median of {repeats} after warm-up; fwd = training forward, render = no_grad forward\n")

    torch.manual_seed(0)
    state = NGPField(AABB, spec).state_dict()
    results: dict[str, dict[int, dict[str, float]]] = {}
    header = f"{'field':<22}{'samples':>9}{'fwd+bwd':>12}{'fwd':>12}{'render':>12}{'warm-up s':>11}"
    print(header)
    print("-" * len(header))
    fields = {kind: make_field(kind, spec, state) for kind in kinds}
    busy0, wall0 = _cpu_busy_seconds(), time.perf_counter()
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    for n in SIZES:
        rates, warm = measure(fields, n, repeats)
        for kind in kinds:
            r = rates[kind]
            results.setdefault(kind, {})[n] = r
            print(f"{kind:<22}{'2^' + str(n.bit_length() - 1):>9}{r['fwd_bwd'] / 1e6:>10.3f}M"
                  f"{r['fwd'] / 1e6:>11.3f}M{r['render'] / 1e6:>11.3f}M{warm[kind]:>11.1f}", flush=True)

    busy1, wall1 = _cpu_busy_seconds(), time.perf_counter()
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    other_cores = None
    if busy0 is not None and busy1 is not None:
        own = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
        other_cores = max(0.0, (busy1 - busy0) - own) / (wall1 - wall0)
        print(f"\nother processes kept {other_cores:.2f} cores busy on average during the timings")
        if other_cores > 0.25:
            print("warning: the machine was shared; figures (the naive ones most) are unreliable, re-run when idle")

    # Same weights in every field: check ours against the reference on the bench's inputs.
    x, d = samples(1 << 14, seed=1)
    with torch.no_grad():
        rgb_ref, sigma_ref = make_field("naive", spec, state)(x, d)
        rgb, sigma = make_field(ours, spec, state)(x, d)
    err_rgb = (rgb - rgb_ref).abs().max().item()
    err_sigma = ((sigma - sigma_ref).abs() / sigma_ref.abs().clamp_min(1e-6)).max().item()

    big = SIZES[-1]
    print(f"\nratios to naive at 2^{big.bit_length() - 1}:")
    for kind in kinds[1:]:
        r, base = results[kind][big], results["naive"][big]
        print(f"  {kind:<22} fwd+bwd x{r['fwd_bwd'] / base['fwd_bwd']:.2f}   fwd x{r['fwd'] / base['fwd']:.2f}"
              f"   render x{r['render'] / base['render']:.2f}")
    print(f"  {ours} vs naive outputs: max |rgb diff| {err_rgb:.2e}, max rel sigma diff {err_sigma:.2e}")

    headline = {
        "speedup_fwd_bwd_2p18": round(results[ours][big]["fwd_bwd"] / results["naive"][big]["fwd_bwd"], 3),
        "samples_per_s_fwd_bwd_2p18": round(results[ours][big]["fwd_bwd"]),
        "samples_per_s_render": round(results[ours][big]["render"]),
        "speedup_render_2p18": round(results[ours][big]["render"] / results["naive"][big]["render"], 3),
        "config": ours,
        "threads": torch.get_num_threads(),
        "other_load_cores": None if other_cores is None else round(other_cores, 2),
        "machine": describe("cpu"),
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
