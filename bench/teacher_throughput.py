"""Throughput of the teacher's radiance field: our hash encoding vs the naive reference.

    python bench/teacher_throughput.py [--compile/--no-compile] [--mlp-dtype bf16|fp32] [--quick]

Measures samples/s of ``NGPField`` at 2^16 and 2^18 samples (uniform points in the
aabb, random directions), on 2 torch threads:

* fwd:     forward with autograd recording (the training forward),
* fwd+bwd: forward + backward of sum(rgb) + sum(sigma),
* render:  forward under torch.no_grad (pseudo-view rendering for distillation),

for the naive field (same MLPs, float32, encoding by ``hash_encode_naive`` with
plain autograd) and ours. Each figure is the median of a few timed repeats after
warm-up (which includes any cold compile, reported separately). The last line
of output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    field = NGPField(AABB, spec, compile=compile, mlp_dtype=mlp_dtype)
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


def timed(fn, repeats: int, warmup: int) -> tuple[float, float]:
    """(median seconds of `repeats` calls, seconds of the warm-up calls)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), warm


def measure(field: NGPField, n: int, repeats: int, warmup: int) -> dict[str, float]:
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

    out = {}
    for name, fn in (("fwd_bwd", fwd_bwd), ("fwd", fwd), ("render", render)):
        seconds, warm = timed(fn, repeats, warmup)
        out[name] = n / seconds
        out[f"{name}_warmup_s"] = warm
    return out


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
        kinds += [k for k in ("ours-eager-fp32", "ours-compiled-fp32") if k != ours and (args.compile or "eager" in k)]
    kinds.append(ours)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, malloc tuning "
          f"{'on' if malloc_tuned else 'off'}, hash grid {spec}")
    print(f"samples/s, median of {repeats} after warm-up; fwd = training forward, render = no_grad forward\n")

    torch.manual_seed(0)
    state = NGPField(AABB, spec).state_dict()
    results: dict[str, dict[int, dict[str, float]]] = {}
    header = f"{'field':<22}{'samples':>9}{'fwd+bwd':>12}{'fwd':>12}{'render':>12}{'warm-up s':>11}"
    print(header)
    print("-" * len(header))
    for kind in kinds:
        field = make_field(kind, spec, state)
        results[kind] = {}
        for n in SIZES:
            warmup = 2 if "compiled" in kind else 1
            r = measure(field, n, repeats, warmup)
            results[kind][n] = r
            warm = r["fwd_bwd_warmup_s"] + r["fwd_warmup_s"] + r["render_warmup_s"]
            print(f"{kind:<22}{'2^' + str(n.bit_length() - 1):>9}{r['fwd_bwd'] / 1e6:>10.3f}M"
                  f"{r['fwd'] / 1e6:>11.3f}M{r['render'] / 1e6:>11.3f}M{warm:>11.1f}", flush=True)

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
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
