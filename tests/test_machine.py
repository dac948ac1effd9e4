"""The machine decides the speed switches (pipeline/machine.py): `auto` from a faked CPU
description both ways, explicit values winning, the per-machine caches (measurements and
C kernels) keyed by the CPU's instruction-set flags, and the machine block in bench output."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import machine
from pipeline.config import TeacherConfig
from pipeline.machine import CpuInfo, resolve_compile, resolve_mlp_bf16
from teacher import native
from teacher.model import speed_switches

ROOT = Path(__file__).resolve().parent.parent
# two machine kinds the switches must tell apart: a KVM guest says "AMD EPYC" for both
ZEN1 = CpuInfo("AMD EPYC", frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"}), "AVX2")
ZEN5 = CpuInfo("AMD EPYC", frozenset({"fpu", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16"}), "AVX512")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _never() -> float:
    raise AssertionError("no measurement is needed to decide this")


def test_bf16_auto_is_off_without_native_bf16_and_never_measured():
    choice = resolve_mlp_bf16("auto", CPU, _never, cpu=ZEN1)
    assert choice.value is False and "no native bf16" in choice.reason and "AVX2" in choice.reason


def test_bf16_auto_follows_the_measurement_where_the_cpu_has_bf16():
    faster = resolve_mlp_bf16("auto", CPU, lambda: 1.6, cpu=ZEN5)
    assert faster.value is True and "1.60x" in faster.reason
    slower = resolve_mlp_bf16("auto", CPU, lambda: 0.89, cpu=ZEN5)
    assert slower.value is False and "0.89x" in slower.reason
    # a gain too small to survive the casts around the MLPs does not switch bf16 on
    assert resolve_mlp_bf16("auto", CPU, lambda: machine.MIN_BF16_SPEEDUP - 0.01, cpu=ZEN5).value is False


def test_explicit_values_win_everywhere():
    for cpu in (ZEN1, ZEN5):
        assert resolve_mlp_bf16(True, CPU, _never, cpu=cpu) == machine.Choice(True, "set in the config")
        assert resolve_mlp_bf16(False, CPU, _never, cpu=cpu).value is False
    assert resolve_compile(True, CPU).value is True and resolve_compile(False, CUDA).value is False


def test_auto_on_cuda():
    assert resolve_compile("auto", CUDA).value is True
    assert resolve_compile("auto", CPU).value is False
    assert resolve_mlp_bf16("auto", CUDA, _never, cpu=ZEN5).value is False  # autocast covers it there


def test_fingerprint_sees_the_flags_not_only_the_name():
    assert ZEN1.model == ZEN5.model and ZEN1.fingerprint() != ZEN5.fingerprint()
    assert ZEN5.native_bf16 and not ZEN1.native_bf16


def test_cpu_info_reads_this_machine():
    cpu = machine.cpu_info()
    assert cpu.model and cpu.capability == torch.backends.cpu.get_cpu_capability()
    if Path("/proc/cpuinfo").exists():
        assert cpu.flags  # x86 'flags' or Arm 'Features'


def test_measurements_are_cached_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("NELF_CACHE_DIR", str(tmp_path))
    calls = []

    def measure() -> float:
        calls.append(1)
        return 1.25

    monkeypatch.setattr(machine, "cpu_info", lambda: ZEN5)
    assert machine.measured("probe", measure) == 1.25 and machine.measured("probe", measure) == 1.25
    assert len(calls) == 1  # the second run read the cache
    monkeypatch.setattr(machine, "cpu_info", lambda: ZEN1)  # same name, other flags: measured anew
    assert machine.measured("probe", measure) == 1.25 and len(calls) == 2


def test_kernel_built_for_other_flags_is_not_loaded(monkeypatch, tmp_path):
    """A -march=native library built on a CPU with other flags must not be reused."""
    monkeypatch.setenv("NELF_CACHE_DIR", str(tmp_path))
    cc = native._compiler()
    if cc is None:
        pytest.skip("no C compiler")
    source = native.CSRC / "occgrid.c"
    monkeypatch.setattr(machine, "cpu_info", lambda: ZEN5)
    built_on_zen5 = native._build(source, cc, native.FLAGS)
    monkeypatch.setattr(machine, "cpu_info", lambda: ZEN1)
    for_zen1 = native._build(source, cc, native.FLAGS)
    assert for_zen1 != built_on_zen5 and for_zen1.exists() and built_on_zen5.exists()
    assert native._build(source, cc, native.FLAGS) == for_zen1  # and that one is reused on its machine


def test_teacher_speed_switches_resolve_the_config():
    switches = speed_switches(TeacherConfig(compile=False, mlp_bf16=False), CPU)
    assert {k: c.value for k, c in switches.items()} == {"teacher.compile": False, "teacher.mlp_bf16": False}


def test_bench_machine_prints_the_machine_block():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "machine.py"), "--quick"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["machine"] == {**machine.describe("cpu"), "threads": last["machine"]["threads"]}
    for key in ("gemm_fp32_gflops", "gemm_bf16_over_fp32", "field_bf16_speedup", "mem_bandwidth_gbs",
                "student_ort_ms"):
        assert last[key] > 0, key
    assert set(last["resolved"]) == {"teacher.compile", "teacher.mlp_bf16"}


# helpers and doc writers; profile_run.py builds the JSON line of the scripts that call its summarize()
NOT_BENCHMARKS = ("lego_workspace.py", "profile_run.py", "update_readme.py", "update_performance.py")


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")
                                          if p.name not in NOT_BENCHMARKS))
def test_every_bench_script_reports_its_machine(script):
    """Each bench script's last JSON line carries the machine block (a static check: most of
    them need lego or minutes to run; bench/machine.py is run for real above)."""
    text = (ROOT / "bench" / script).read_text()
    if "summarize(" in text:  # the line comes from bench/profile_run.py
        text = (ROOT / "bench" / "profile_run.py").read_text()
    assert '"machine":' in text, f"bench/{script}: its JSON line has no machine block"


def _update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "bench" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_results_keep_the_profiles_not_rerun_here():
    """bench/update_readme.py regenerates the sections it has runs for and keeps the others as
    they were (a lego figure measured on another machine does not vanish when a capture is
    re-run here); sections come out toy, lego, then captures by name, one blank line apart."""
    ur = _update_readme()
    old = ["Toy scene (`make demo`), from ..., on machine A:", "", "| toy | old |", "",
           "Lego at 200x200, CPU profile, on machine A:", "| lego | old |",
           "The capture `cape`, capture CPU profile, on machine A:", "| cape | old |"]
    assert list(ur.sections(old)) == ["toy", "lego", "capture:cape"]
    new = {"capture:cape": ["The capture `cape`, capture CPU profile, on machine B:", "| cape | new |", ""],
           "capture:cape-unmasked": ["The capture `cape-unmasked`, capture CPU profile, on machine B:", "| u |"]}
    out = ur.merged(old, new)
    assert out == ["Toy scene (`make demo`), from ..., on machine A:", "", "| toy | old |", "",
                   "Lego at 200x200, CPU profile, on machine A:", "| lego | old |", "",
                   "The capture `cape`, capture CPU profile, on machine B:", "| cape | new |", "",
                   "The capture `cape-unmasked`, capture CPU profile, on machine B:", "| u |", ""]
    assert ur.merged(out, {}) == out  # nothing re-run: the block is unchanged
