"""This machine's yardsticks, in one run, so that figures from two machines can be compared.

Prints a table and, last, one JSON line with `machine` (pipeline/machine.py's block),
`gemm_fp32_gflops`, `gemm_bf16_over_fp32` (bf16 GEMM speed / float32's), `field_bf16_speedup`
(the teacher's field forward+backward under bf16 autocast vs float32: what `teacher.mlp_bf16:
auto` decides on), `mem_bandwidth_gbs` (a large copy, read + write), `student_ort_ms` (the toy
config's student, one frame in onnxruntime-python on 1 thread) and `resolved` (what the teacher's
`auto` switches resolve to here).

Every figure is measured in this run; compare machines by these ratios, not by raw
timings taken at different times.

    python bench/machine.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from export.onnx_export import ort_session, to_onnx_bytes  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.machine import describe, short  # noqa: E402
from student.kinds import StudentCamera, build_student  # noqa: E402
from teacher.model import field_bf16_speedup, speed_switches  # noqa: E402


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_gflops(n: int, dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def copy_bandwidth_gbs(n_bytes: int, repeats: int) -> float:
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    return 2 * n_bytes / best_seconds(lambda: dst.copy_(src), repeats) / 1e9  # read + write


def student_ort_ms(repeats: int) -> float:
    """The toy config's student (64x64 output) as ONNX, ms a frame on 1 onnxruntime thread."""
    cfg = load_config(ROOT / "configs" / "toy.yaml")
    camera = StudentCamera.square(cfg.student.output_size, cfg.student.output_size * 1.1, near=2.0,
                           far=6.0, center=(0.0, 0.0, 0.0), scale=1.5)
    torch.manual_seed(0)
    model = build_student(cfg.student.kind, cfg.student.arch, camera).eval()
    sess = ort_session(to_onnx_bytes(model, cfg.export.opset), threads=1)
    pose = np.eye(4, dtype=np.float32)
    pose[2, 3] = 4.0
    name = sess.get_inputs()[0].name
    return 1000 * best_seconds(lambda: sess.run(None, {name: pose}), repeats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a smoke test)")
    args = ap.parse_args()
    n, reps, mb = (256, 2, 16) if args.quick else (2048, 5, 512)
    machine = describe("cpu")
    print(f"machine: {short(machine)}")
    fp32 = gemm_gflops(n, torch.float32, reps)
    bf16 = gemm_gflops(n, torch.bfloat16, reps)
    field = field_bf16_speedup(n_points=1 << (12 if args.quick else 15), repeats=1 if args.quick else 2)
    bandwidth = copy_bandwidth_gbs(mb << 20, reps)
    ort_ms = student_ort_ms(3 if args.quick else 20)
    resolved = {k: c.value for k, c in speed_switches(load_config(ROOT / "configs" / "lego.yaml").teacher,
                                                      torch.device("cpu")).items()}
    rows = [
        (f"GEMM {n}x{n} float32", f"{fp32:.1f} GFLOP/s"),
        (f"GEMM {n}x{n} bf16", f"{bf16:.1f} GFLOP/s ({bf16 / fp32:.2f}x float32)"),
        ("teacher field fwd+bwd, bf16 autocast", f"{field:.2f}x float32's speed"),
        (f"copy {mb} MiB (read + write)", f"{bandwidth:.1f} GB/s"),
        ("toy student, onnxruntime 1 thread", f"{ort_ms:.2f} ms/frame"),
        ("lego profile's auto switches", ", ".join(f"{k}={v}" for k, v in resolved.items())),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps({"machine": machine, "gemm_fp32_gflops": round(fp32, 2),
                      "gemm_bf16_over_fp32": round(bf16 / fp32, 3), "field_bf16_speedup": round(field, 3),
                      "mem_bandwidth_gbs": round(bandwidth, 2),
                      "student_ort_ms": round(ort_ms, 3), "resolved": resolved}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
