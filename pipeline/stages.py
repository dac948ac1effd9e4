"""The stage graph and the runner that skips stages whose cache is valid.

A stage is a function `run(ctx) -> dict` (its metrics and declared outputs)
from its config section and its upstream stages' outputs to its own folder
`runs/<config name>/<stage>/`. Each stage declares its outputs by name
(`Stage.outputs`); a stage reads another only by asking for one of them,
`ctx.input("distill", "views")`, and no stage module imports another
(tests/test_layout.py checks both). Shared code lives in library modules.

A stage's key hashes its settings, its upstream stages' keys, the code it runs
and its external inputs (`Pipeline.key_parts`). The code is not listed here:
it is every project module the entry module imports, transitively, plus the C
sources and data files those modules declare (`pipeline/codedeps.py`).
The record keeps the parts, so `status` can say which one changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import cache, codedeps, distributed, machine
from .config import KINDS, Config
from .errors import PipelineError, StageError, UsageError
from .io import hash_files, hash_json

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stage:
    name: str
    upstream: tuple[str, ...]
    entry: str  # "module:function" taking a StageContext, returning {"metrics": ..., "outputs": ...}
    settings: Callable[[Config], Any]  # the config values that determine the outputs
    # name -> what it is; run() returns each as a path (relative to the stage folder, or absolute)
    outputs: dict[str, str] = field(default_factory=dict)
    external: Callable[[Config], str] | None = None  # hash of inputs outside runs/
    # project modules the stage loads by name (importlib), whose code it runs beyond its imports
    loads: Callable[[], tuple[str, ...]] = tuple
    distributed: bool = False  # runs on every torchrun rank (else on rank 0 only)


def _data_settings(cfg: Config) -> dict:
    from .formats import PLACED_ALREADY, resolve_kind

    settings = {"data": dataclasses.asdict(cfg.data) | {"root": None}}
    if resolve_kind(cfg.data.kind, cfg.data.root) not in PLACED_ALREADY:
        settings["box"] = list(cfg.teacher.aabb)  # a capture is placed into the teacher's box
    return settings


def _data_external(cfg: Config) -> str:
    from .formats import input_hash, read_capture, resolve_kind
    from .scene import scene_files

    kind = resolve_kind(cfg.data.kind, cfg.data.root)
    if kind == "toy":
        return "toy"
    root = Path(cfg.data.root)
    if kind == "blender":
        return hash_files(scene_files(root), root)
    return input_hash(read_capture(root, kind))


STAGES: tuple[Stage, ...] = (
    Stage("data", (), "pipeline.data_stage:run", _data_settings,
          outputs={"scene": "the scene folder (Blender layout): the toy scene rendered here, a capture written "
                            "here (placed, resized), or data.root",
                   "placement": "placement.json: the transform from the capture's world into the teacher's box, "
                                "and where the scene came from"},
          external=_data_external),
    Stage("teacher", ("data",), "teacher.stage:run",
          lambda c: {"teacher": dataclasses.asdict(c.teacher), "background": c.background,
                     "data": {"downscale": c.data.downscale}},
          outputs={"model": "model.pt: field, occupancy grid and the teacher settings they were built with",
                   "metrics": "metrics.json: test PSNR/SSIM", "curve": "curve.json: loss and PSNR per step",
                   "renders": "renders/: ground truth | teacher for the first test views"}),
    Stage("distill", ("data", "teacher"), "distill.stage:run",
          lambda c: {"distill": dataclasses.asdict(c.distill), "background": c.background,
                     # the frame the pseudo-views are rendered at (pipeline/cameras.py: student_frame)
                     "student": {"output_size": c.student.output_size,
                                 "frame_multiple": c.student.arch.frame_multiple}},
          outputs={"views": "transforms.json: the pseudo-views (Blender layout, PNGs in pseudo/)",
                   "test_views": "transforms_test.json: the teacher at the test cameras (PNGs in test/)",
                   "cameras": "cameras.json: the scene box and the band of camera positions around it",
                   "metrics": "metrics.json"},
          distributed=True),
    Stage("student", ("data", "teacher", "distill"), "student.stage:run",
          lambda c: {"student": c.student.settings(), "background": c.background},
          loads=lambda: tuple(sorted({target.split(":")[0] for target in KINDS.values()})),
          outputs={"model": "model.pt: weights, kind, architecture and camera (student.kinds.load_student)",
                   "metrics": "metrics.json: PSNR/SSIM vs ground truth and vs the teacher, per view",
                   "curve": "curve.json", "side_by_side": "side_by_side/: ground truth | teacher | student"},
          distributed=True),
    Stage("export", ("data", "distill", "student"), "export.stage:run",
          lambda c: {"export": dataclasses.asdict(c.export), "name": c.name, "background": c.background},
          outputs={"site": "the viewer site (export.site_dir)", "scene": "<site>/scenes/<name>/: scene.json, "
                   "model.onnx and the files it names", "metrics": "metrics.json"}),
    Stage("report", ("data", "teacher", "distill", "student", "export"), "report.stage:run",
          # the teacher turntable renders with the teacher's and distill's render settings
          lambda c: {"report": dataclasses.asdict(c.report), "name": c.name, "background": c.background,
                     "teacher": dataclasses.asdict(c.teacher), "data": {"downscale": c.data.downscale},
                     "render": {k: getattr(c.distill, k) for k in ("alpha_thre", "early_stop_eps", "chunk_rays")}},
          outputs={"report": "<scene>/report/: report.json, turntables, test views for compare.html",
                   "metrics": "metrics.json"}),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise UsageError(f"unknown stage '{name}'; stages are: {', '.join(STAGE_NAMES)}")


def resolve_device(name: str) -> torch.device:
    """The configured device; under torchrun each rank takes the GPU of its LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and distributed.world_size() > 1:
        name = f"cuda:{distributed.local_rank()}"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{name}' requested but CUDA is not available; use device: auto or cpu")
    return dev


@dataclass
class StageContext:
    cfg: Config
    stage: Stage
    out_dir: Path
    device: torch.device
    resume: bool
    upstream: dict[str, Path] = field(default_factory=dict)
    upstream_records: dict[str, dict] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        if distributed.is_main():
            print(f"[{self.stage.name}] {msg}", flush=True)

    @property
    def previous_dir(self) -> Path:
        """Where this stage's last finished outputs wait while it runs again with another key
        (`cache.prepare_output`): a stage may reuse pieces of them (the data stage's converted images)."""
        return cache.previous_dir(self.out_dir)

    def input(self, stage: str, name: str) -> Path:
        """The path of upstream `stage`'s declared output `name`."""
        if stage not in self.upstream:
            raise StageError(f"stage '{self.stage.name}' reads stage '{stage}', which is not one of its upstream "
                             f"stages ({', '.join(self.stage.upstream) or 'none'})")
        if name not in get_stage(stage).outputs:
            raise StageError(f"stage '{stage}' declares no output '{name}' (it has: "
                             f"{', '.join(get_stage(stage).outputs)})")
        rec = self.upstream_records[stage]
        value = (rec.get("outputs") or {}).get(name) if rec else None
        if not isinstance(value, str):
            raise StageError(f"{self.upstream[stage] / cache.RECORD}: no output '{name}'; re-run "
                             f"`python -m pipeline stage {stage} --force`")
        path = Path(value)
        return path if path.is_absolute() else self.upstream[stage] / path


def check_outputs(st: Stage, out_dir: Path, outputs: dict) -> dict[str, str]:
    """The run's outputs as declared: exactly `st.outputs`' names, each an existing path."""
    if set(outputs) != set(st.outputs):
        raise StageError(f"stage '{st.name}' returned outputs {sorted(outputs)}, but declares "
                         f"{sorted(st.outputs)}")
    for name, value in outputs.items():
        path = Path(value) if Path(value).is_absolute() else out_dir / value
        if not path.exists():
            raise StageError(f"stage '{st.name}': its output '{name}' ({path}) was not written")
    return {name: str(value) for name, value in outputs.items()}


class Pipeline:
    """Keys, states and execution of the stages of one config."""

    def __init__(self, cfg: Config, config_path: Path | None = None, root: Path = ROOT):
        self.cfg = cfg
        self.config_path = config_path
        self.root = root  # where the stages' code is read from (tests point it at a scratch copy)
        self.run_dir = Path(cfg.runs_dir) / cfg.name
        self._keys: dict[str, str] = {}
        self._parts: dict[str, dict] = {}

    def out_dir(self, name: str) -> Path:
        return self.run_dir / name

    def key_parts(self, name: str) -> dict:
        """What the stage's key hashes, as stored in its record: settings, upstream keys,
        {code file: sha256} and the external inputs' hash."""
        if name not in self._parts:
            st = get_stage(name)
            parts = {
                "settings": st.settings(self.cfg),
                "upstream": {u: self.key(u) for u in st.upstream},
                "code": codedeps.code_hashes(self.root, st.entry.split(":")[0], *st.loads()),
                "external": st.external(self.cfg) if st.external else None,
            }
            # as JSON gives them back (tuples become lists), so a record compares equal to them
            self._parts[name] = json.loads(json.dumps(parts))
        return self._parts[name]

    def key(self, name: str) -> str:
        if name not in self._keys:
            self._keys[name] = hash_json({"stage": name, **self.key_parts(name)})
        return self._keys[name]

    def state(self, name: str) -> str:
        return cache.stage_state(self.out_dir(name), self.key(name))

    def explain(self, name: str) -> tuple[str, list[str]]:
        """The stage's state and, unless done, why (as `dvc status` says it)."""
        return cache.explain(self.out_dir(name), self.key(name), self.key_parts(name))

    def _check_upstream(self, st: Stage) -> None:
        for up in st.upstream:
            if self.state(up) != "done":
                raise StageError(
                    f"stage '{st.name}' needs stage '{up}' first, whose output in {self.out_dir(up)} is "
                    f"{self.state(up)}; run `python -m pipeline stage {up}` or `python -m pipeline run`")

    def run_stage(self, name: str, force: bool = False, check_upstream: bool = True) -> dict:
        """Run one stage unless its cache is valid; return its record.

        Under torchrun, rank 0 decides, holds the lock, prepares the folder and
        writes the record; a distributed stage (distill, student) runs on every
        rank, any other stage on rank 0 while the rest wait.
        """
        st = get_stage(name)
        out = self.out_dir(name)
        key = self.key(name)
        decision: Any = None
        if distributed.is_main():
            try:
                if check_upstream:
                    self._check_upstream(st)
                decision = "run" if force or self.state(name) != "done" else "cached"
            except PipelineError as err:
                decision = err
        decision = distributed.broadcast(decision)
        if isinstance(decision, Exception):
            raise decision
        if decision == "cached":
            if distributed.is_main():
                print(f"[{name}] cached: {out} (settings, code and inputs unchanged)", flush=True)
            return cache.read_record(out)
        lock = (cache.StageLock(out / cache.LOCK, f"stage '{name}' of config '{self.cfg.name}'")
                if distributed.is_main() else contextlib.nullcontext())
        with lock:
            resume = distributed.broadcast(cache.prepare_output(out, key, force) if distributed.is_main() else None)
            ctx = StageContext(
                cfg=self.cfg, stage=st, out_dir=out, device=resolve_device(self.cfg.device), resume=resume,
                upstream={u: self.out_dir(u) for u in st.upstream},
                upstream_records={u: cache.read_record(self.out_dir(u)) for u in st.upstream},
            )
            world = distributed.world_size()
            if distributed.is_main():
                ranks = f" x {world} ranks" if world > 1 and st.distributed else ""
                print(f"[{name}] running on {ctx.device}{ranks}{' (resuming)' if resume else ''} -> {out}",
                      flush=True)
            # Adam's second moments of barely-touched hash entries underflow into float32
            # denormals, which x86 CPUs process ~100x slower (measured: 1.2 s vs 0.15 s
            # per early teacher step): flush them to zero.
            torch.set_flush_denormal(True)
            t0 = time.time()
            module, func = st.entry.split(":")
            result, error, outputs = {}, None, {}
            try:
                if st.distributed or distributed.is_main():
                    result = getattr(importlib.import_module(module), func)(ctx) or {}
                if distributed.is_main():  # inside the try: a missing output is a failure every rank hears of
                    outputs = check_outputs(st, out, result.get("outputs", {}))
            except BaseException as err:  # every rank must hear of a failure, or the others wait forever
                error = err
            if world > 1 and not isinstance(error, KeyboardInterrupt):
                failed = [r for r, ok in enumerate(distributed.gather(error is None)) if not ok]
                if failed and error is None:
                    raise StageError(f"stage '{name}' failed on rank(s) {failed}; see their output")
            if error is not None:
                raise error
            seconds = time.time() - t0
            record = {
                "stage": name,
                "key": key,
                "config": self.cfg.name,
                **self.key_parts(name),  # settings, upstream keys, code hashes, external: what status diffs
                "device": str(ctx.device),
                "machine": machine.describe(ctx.device),
                "resolved": result.get("resolved", {}),  # speed switches as `auto` decided them here
                "world_size": world if st.distributed else 1,
                "resumed": resume,
                "seconds": round(seconds, 2),
                "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "metrics": result.get("metrics", {}),
                "outputs": outputs if distributed.is_main() else {},
            }
            if distributed.is_main():
                cache.finish_output(out, record)
        record = distributed.broadcast(record)
        if distributed.is_main():
            metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in record["metrics"].items()
                                if not isinstance(v, (dict, list)))
            print(f"[{name}] done in {seconds:.1f} s{': ' + metrics if metrics else ''} -> {out}", flush=True)
        return record

    def run_all(self, force: bool = False) -> list[dict]:
        records = []
        for st in STAGES:
            records.append(self.run_stage(st.name, force=force))
        return records


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
