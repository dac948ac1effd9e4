"""Time the CPU occupancy-grid sampler: 8192 rays through a 128^3 grid, ~10% occupied around the centre.

Run: python -m bench.sampler  (last line: JSON for the main case: solid ball, plain marching,
at the faster of 1 thread and torch's default thread count, for the C marcher (the CPU default)
and the torch version, and their ratio)
"""

from __future__ import annotations

import json
import math
import time

import torch
from nerfacc import OccGridEstimator

from pipeline.machine import describe
from teacher import sampler
from teacher.malloc_tuning import tune_malloc
from teacher.sampler import occ_grid_sampling

RES = 128
AABB = [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]
STEP = math.sqrt(3) * 3 / 1024
N_RAYS = 8192


def _grid(kind: str) -> OccGridEstimator:
    """~10% of the cells occupied: a solid ball, or three concentric shells (surface-like)."""
    est = OccGridEstimator(roi_aabb=AABB, resolution=RES, levels=1)
    c = (torch.arange(RES) + 0.5) / RES * 2 - 1  # cell centres in [-1, 1]
    r = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).norm(dim=-1)
    if kind == "ball":
        occ = r < (0.1 * 6 / math.pi) ** (1 / 3)  # volume fraction 0.1 of the cube
    else:  # shells of equal thickness, 10% of the cube's volume in total
        radii = (0.35, 0.55, 0.75)
        half_width = 0.1 * 8 / (4 * math.pi * sum(x**2 for x in radii)) / 2
        occ = torch.zeros_like(r, dtype=torch.bool)
        for radius in radii:
            occ |= (r - radius).abs() < half_width
    est.binaries.copy_(occ[None])
    est.occs.copy_(occ.float().reshape(-1) * 0.5)
    return est


def _rays(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cameras on a sphere of radius 4, looking at random points of the central region."""
    g = torch.Generator().manual_seed(1)
    o = torch.randn(n, 3, generator=g)
    o = o / o.norm(dim=-1, keepdim=True) * 4.0
    d = torch.rand(n, 3, generator=g) * 2 - 1 - o
    return o, d / d.norm(dim=-1, keepdim=True)


def _time(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    tune_malloc()  # as the training stage does
    torch.manual_seed(0)
    rays_o, rays_d = _rays(N_RAYS)
    default_threads = torch.get_num_threads()
    rows = []
    c_marcher = sampler._occgrid_lib
    for impl, threads in [(i, t) for i in ("C", "torch") for t in sorted({1, default_threads})]:
        if c_marcher() is None and impl == "C":
            continue
        sampler._occgrid_lib = c_marcher if impl == "C" else (lambda: None)
        torch.set_num_threads(threads)
        for kind in ("ball", "shells"):
            est = _grid(kind)
            for stratified in (False, True):
                def run(est=est, stratified=stratified):
                    return occ_grid_sampling(est, rays_o, rays_d, render_step_size=STEP, stratified=stratified)

                n_samples = run()[0].numel()
                sec = _time(run)
                rows.append(dict(
                    impl=impl, threads=threads, grid=kind, occupied=float(est.binaries.float().mean()),
                    stratified=stratified,
                    samples=n_samples, ms=1e3 * sec, rays_per_s=N_RAYS / sec, samples_per_s=n_samples / sec,
                ))
    sampler._occgrid_lib = c_marcher
    torch.set_num_threads(default_threads)
    print(f"CPU sampler, {N_RAYS} rays, {RES}^3 grid, step {STEP:.5f}, median of 5")
    print(f"{'impl':>5} {'threads':>7} {'grid':8} {'occ':>5} {'strat':>5} {'samples':>9} {'ms':>8} {'rays/s':>10} "
          f"{'samples/s':>11}")
    for r in rows:
        print(
            f"{r['impl']:>5} {r['threads']:7d} {r['grid']:8} {r['occupied']:5.3f} {r['stratified']!s:>5} "
            f"{r['samples']:9d} {r['ms']:8.1f} {r['rays_per_s']:10.0f} {r['samples_per_s']:11.3g}"
        )
    # Main case: solid ball, plain marching, at whichever thread count was faster here.
    best = {impl: max((r for r in rows if r["impl"] == impl and r["grid"] == "ball" and not r["stratified"]),
                      key=lambda r: r["rays_per_s"], default=None) for impl in ("C", "torch")}
    main_row = best["C"] or best["torch"]
    print(json.dumps({
        "rays_per_s": round(main_row["rays_per_s"]),
        "samples_per_s": round(main_row["samples_per_s"]),
        "threads": main_row["threads"],
        "impl": main_row["impl"],
        "torch_rays_per_s": round(best["torch"]["rays_per_s"]),
        "speedup_c_over_torch": round(best["C"]["rays_per_s"] / best["torch"]["rays_per_s"], 2) if best["C"] else None,
        "machine": describe("cpu"),
    }))


if __name__ == "__main__":
    main()
