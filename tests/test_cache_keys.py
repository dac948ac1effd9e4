"""Stage keys cover all the code a stage runs, found from its imports; `status` says why a stage is stale.

Keys are computed on a scratch copy of the project's packages (`Pipeline(..., root=copy)`),
whose files the tests edit; nothing runs the stages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import cache, codedeps
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.stages import STAGES, Pipeline

ROOT = Path(__file__).resolve().parent.parent
ALL = {s.name for s in STAGES}

# What editing a file must make stale (its own stages and everything downstream), written out
# from reading the imports, not computed:
EXPECTED_STALE = {
    # to_uint8 and the atomic writers: the toy scene's writer (data) and every stage
    "pipeline/io.py": ALL,
    # psnr/ssim and the shared training helpers: teacher and student import them, distill
    # imports teacher.stage; data does not
    "pipeline/metrics.py": ALL - {"data"},
    "pipeline/training.py": ALL - {"data"},
    # the training loop (pipeline/training.py) broadcasts rank 0's clock: every training stage
    "pipeline/distributed.py": ALL - {"data"},
    # student-only modules, the kinds among them (loaded by name: Stage.loads)
    "student/kinds.py": {"student", "export", "report"},
    "student/mobiler2l.py": {"student", "export", "report"},
    "student/encoding.py": {"student", "export", "report"},
    # the gridlf kind, and the teacher's surfaces that only the student reads
    "student/gridlf/model.py": {"student", "export", "report"},
    "student/gridlf/march.py": {"student", "export", "report"},
    "teacher/occupancy.py": {"student", "export", "report"},
    # built by teacher/native.py (BUILD_SOURCES), which the teacher's hash grid and sampler load
    "teacher/csrc/hashgrid.c": ALL - {"data"},
    "export/onnx_export.py": {"export", "report"},
    # the toy scene writer is data's own code: everything downstream follows
    "pipeline/toy_scene.py": ALL,
    # so are the capture readers (each one, though a config reads one layout) and the placement
    "pipeline/formats/colmap.py": ALL,
    "pipeline/placement.py": ALL,
    # the command line, the runner and the cache run stages but are no stage's code
    "pipeline/cli.py": set(),
    "pipeline/stages.py": set(),
    "pipeline/cache.py": set(),
}


def _copy_project(dst: Path) -> Path:
    """The repository's packages (top-level folders with an __init__.py) and the viewer's
    schemas (code of export and report, declared in export/site_format.py), copied to `dst`."""
    dst.mkdir()
    for pkg in ROOT.iterdir():
        if (pkg / "__init__.py").is_file():
            shutil.copytree(pkg, dst / pkg.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "site" / "schema", dst / "site" / "schema")
    return dst


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return _copy_project(tmp_path / "project")


@pytest.fixture()
def cfg(tmp_path: Path):
    return load_config(ROOT / "configs" / "toy.yaml", [f"runs_dir={tmp_path / 'runs'}"])


def _keys(root: Path, cfg) -> dict[str, str]:
    pipe = Pipeline(cfg, root=root)
    return {s.name: pipe.key(s.name) for s in STAGES}


def _edit(path: Path) -> bytes:
    """Append a comment (a change that alters no behaviour); return the original bytes."""
    original = path.read_bytes()
    path.write_bytes(original + (b"\n# edited\n" if path.suffix == ".py" else b"\n/* edited */\n"))
    return original


def _stale_after_edit(root: Path, rel: str, cfg) -> set[str]:
    before = _keys(root, cfg)
    original = _edit(root / rel)
    try:
        after = _keys(root, cfg)
    finally:
        (root / rel).write_bytes(original)
    assert _keys(root, cfg) == before, "restoring the file restores the keys"
    return {s for s in before if after[s] != before[s]}


@pytest.mark.parametrize("rel", sorted(EXPECTED_STALE))
def test_editing_a_module_makes_exactly_its_stages_stale(project, cfg, rel):
    assert _stale_after_edit(project, rel, cfg) == EXPECTED_STALE[rel]


def test_a_c_source_is_code_of_the_stages_that_load_it(project, cfg):
    """The stages whose own code changes (not through upstream) are those importing teacher.native."""
    pipe = Pipeline(cfg, root=project)
    before = {s.name: pipe.key_parts(s.name)["code"] for s in STAGES}
    _edit(project / "teacher" / "csrc" / "occgrid.c")
    pipe = Pipeline(cfg, root=project)
    own = {s.name for s in STAGES if pipe.key_parts(s.name)["code"] != before[s.name]}
    # report renders the teacher's turntable; the student reads the teacher's surfaces
    assert own == {"teacher", "distill", "student", "report"}


def _imported_at_load(root: Path, modules: list[str]) -> dict[str, list[str]]:
    """For each module, the project files that importing it (alone, in a fresh set of project
    modules) loads: an oracle independent of the static analysis, blind to imports in functions."""
    script = textwrap.dedent("""
        import importlib, json, os, sys
        root = sys.argv[1]
        def ours():
            return {n: m for n, m in list(sys.modules.items())
                    if (getattr(m, "__file__", None) or "").startswith(root + os.sep)}
        found = {}
        for name in sys.argv[2:]:
            for n in ours():
                del sys.modules[n]
            importlib.import_module(name)
            found[name] = sorted(os.path.relpath(m.__file__, root) for m in ours().values())
        print(json.dumps(found))
    """)
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", script, str(root), *modules], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_every_module_a_stage_loads_is_in_its_key(project, cfg):
    entries = {s.name: s.entry.split(":")[0] for s in STAGES}
    loaded = _imported_at_load(project, list(entries.values()))
    files = {name: set(codedeps.code_files(project, module)) for name, module in entries.items()}
    for name, module in entries.items():
        assert set(loaded[module]) <= files[name], f"{name}: imported but not hashed"
    # (imports inside functions, which loading alone does not run, are covered by the made-up project below)

    # every file of a stage's closure changes its key; each edit makes stale exactly the stages
    # holding the file and those downstream of them
    downstream = {s.name: {s.name} for s in STAGES}
    for s in STAGES:  # STAGES is in run order, so upstream sets are complete when read
        for u in s.upstream:
            for stage in downstream.values():
                if u in stage:
                    stage.add(s.name)
    for rel in sorted(set().union(*files.values())):
        want = set().union(*(downstream[name] for name in files if rel in files[name]))
        assert _stale_after_edit(project, rel, cfg) == want, rel


def test_closure_resolves_every_import_form(tmp_path):
    root = tmp_path / "proj"
    src = {
        "app/__init__.py": "",
        "app/entry.py": """
            import os
            import numpy as np
            import lib.deep.leaf
            from lib import helpers, CONSTANT
            from . import sibling
            def later():
                from .sub.inner import thing
        """,
        "app/sibling.py": "",
        "app/unused.py": "",
        "app/sub/__init__.py": "",
        "app/sub/inner.py": "from ..sibling import x\nfrom ...outside import y\n",
        "lib/__init__.py": "CONSTANT = 1\n",
        "lib/helpers.py": "from .native import load\n",
        "lib/native.py": 'BUILD_SOURCES = ("csrc/*.c",)\n',
        "lib/csrc/k.c": "int k;\n",
        "lib/csrc/notes.txt": "",
        "lib/deep/__init__.py": "",
        "lib/deep/leaf.py": "",
        "notapackage/mod.py": "",
    }
    for rel, text in src.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    assert set(codedeps.code_files(root, "app.entry")) == {
        "app/__init__.py", "app/entry.py", "app/sibling.py", "app/sub/__init__.py", "app/sub/inner.py",
        "lib/__init__.py", "lib/helpers.py", "lib/native.py", "lib/csrc/k.c",
        "lib/deep/__init__.py", "lib/deep/leaf.py"}

    (root / "lib" / "native.py").write_text('BUILD_SOURCES = ("kernels/*.cu",)\n')
    codedeps.clear_cache()
    with pytest.raises(StageError, match=r"lib/native.py:1: BUILD_SOURCES pattern 'kernels/\*.cu' matches no file"):
        codedeps.code_files(root, "app.entry")


def _write_records(pipe: Pipeline) -> None:
    """Every stage done with the current keys, as a finished run leaves it (no stage runs)."""
    for s in STAGES:
        out = pipe.out_dir(s.name)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.pt").write_bytes(b"weights")
        (out / "views").mkdir(exist_ok=True)
        for i in range(3):
            (out / "views" / f"{i}.png").write_bytes(b"png")
        cache.finish_output(out, {"stage": s.name, "key": pipe.key(s.name), **pipe.key_parts(s.name)})


def _reasons(root: Path, cfg) -> dict[str, tuple[str, list[str]]]:
    pipe = Pipeline(cfg, root=root)
    return {s.name: pipe.explain(s.name) for s in STAGES}


def test_status_names_the_changed_setting_code_file_and_upstream(project, cfg, tmp_path):
    _write_records(Pipeline(cfg, root=project))
    assert _reasons(project, cfg) == {name: ("done", []) for name in ALL}

    steps = cfg.teacher.steps
    changed = load_config(ROOT / "configs" / "toy.yaml",
                          [f"runs_dir={tmp_path / 'runs'}", f"teacher.steps={steps + 1}"])
    why = _reasons(project, changed)
    assert why["data"] == ("done", [])
    assert why["teacher"] == ("stale", [f"setting teacher.steps: {steps} -> {steps + 1}"])
    assert why["distill"] == ("stale", ["upstream stage 'teacher' changed"])

    _edit(project / "pipeline" / "metrics.py")
    _edit(project / "teacher" / "csrc" / "hashgrid.c")
    why = _reasons(project, cfg)
    assert why["data"] == ("done", [])
    assert why["teacher"] == ("stale", ["code changed: pipeline/metrics.py", "code changed: teacher/csrc/hashgrid.c"])
    # the student reads the teacher's surfaces (teacher/occupancy.py), so the teacher's code is its code too
    assert why["student"] == ("stale", ["upstream stage 'teacher' changed", "upstream stage 'distill' changed",
                                        "code changed: pipeline/metrics.py", "code changed: teacher/csrc/hashgrid.c"])


def test_status_names_missing_outputs_and_changed_inputs(project, cfg):
    pipe = Pipeline(cfg, root=project)
    _write_records(pipe)
    (pipe.out_dir("teacher") / "model.pt").unlink()
    (pipe.out_dir("student") / "views" / "1.png").unlink()
    why = _reasons(project, cfg)
    assert why["teacher"] == ("stale", ["output missing: model.pt"])
    assert why["student"] == ("stale", ["outputs incomplete: views/ holds 2 of 3 files"])
    assert why["distill"] == ("done", []), "the key is unchanged: a re-run of teacher reproduces it"
    assert cache.stage_state(pipe.out_dir("teacher"), pipe.key("teacher")) == "stale", "so `run` re-runs it"

    record = pipe.out_dir("data") / cache.RECORD
    rec = json.loads(record.read_text())
    record.write_text(json.dumps(rec | {"key": "earlier", "external": "another scene"}))
    assert _reasons(project, cfg)["data"] == ("stale", ["input data changed"])
    record.write_text(json.dumps({k: v for k, v in rec.items() if k != "code"} | {"key": "earlier"}))
    assert _reasons(project, cfg)["data"] == (
        "stale", ["recorded before records kept the key's parts; run it again to record them"])

    record.unlink()
    cache.prepare_output(pipe.out_dir("data"), pipe.key("data"), force=False)  # as a run that was then killed
    assert _reasons(project, cfg)["data"] == ("missing", ["outputs incomplete: interrupted; the next run resumes"])
    shutil.rmtree(pipe.out_dir("data"))
    assert _reasons(project, cfg)["data"] == ("missing", ["never run"])


def test_status_command_prints_reasons_under_each_stage(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "configs", ws / "configs")
    monkeypatch.chdir(ws)
    _write_records(Pipeline(load_config("configs/toy.yaml")))  # the real code: the command line reads it
    steps = load_config("configs/toy.yaml").teacher.steps
    assert main(["status", "configs/toy.yaml", "--set", f"teacher.steps={steps * 2}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index(f"  teacher  stale    {Path('runs/toy/teacher')}")
    assert lines[at - 1] == f"  data     done     {Path('runs/toy/data')}"
    assert lines[at + 1] == f"             setting teacher.steps: {steps} -> {steps * 2}"
    assert lines[at + 2] == f"  distill  stale    {Path('runs/toy/distill')}"
    assert lines[at + 3] == "             upstream stage 'teacher' changed"


def test_a_rerun_keeps_the_last_finished_outputs_until_it_finishes(tmp_path):
    out = tmp_path / "runs" / "x" / "teacher"
    out.mkdir(parents=True)
    (out / "model.pt").write_bytes(b"twenty minutes")
    (out / "renders").mkdir()
    (out / "renders" / "0.png").write_bytes(b"png")
    cache.finish_output(out, {"stage": "teacher", "key": "old"})
    # another key (an edited module): the folder is emptied for the new run...
    assert cache.prepare_output(out, "new", force=False) is False
    assert sorted(p.name for p in out.iterdir()) == [cache.PROGRESS]
    # ...and the finished result waits beside it, whole, while the new run goes on or is stopped
    keep = cache.previous_dir(out)
    assert keep == out.parent / "teacher.previous"
    assert (keep / "model.pt").read_bytes() == b"twenty minutes" and (keep / "renders" / "0.png").exists()
    assert json.loads((keep / cache.RECORD).read_text())["key"] == "old"
    # a stopped run restarted: resumes its own partial outputs, the previous result still kept
    (out / "ckpt.pt").write_bytes(b"partial")
    assert cache.prepare_output(out, "new", force=False) is True and (out / "ckpt.pt").exists()
    assert (keep / "model.pt").exists()
    # the new run finishes: it replaces the previous result
    (out / "model.pt").write_bytes(b"new weights")
    cache.finish_output(out, {"stage": "teacher", "key": "new"})
    assert not keep.exists() and (out / "model.pt").read_bytes() == b"new weights"


def test_every_kind_is_code_of_the_student_stage(project, cfg):
    """The kinds are loaded by name (student/kinds.py), which imports cannot show: the student
    stage declares them (Stage.loads), and a kind missing from its key would leave a stale
    student looking done after that kind's code changed."""
    from pipeline.config import KINDS

    code = Pipeline(cfg, root=project).key_parts("student")["code"]
    for target in KINDS.values():
        module = target.split(":")[0]
        path = module.replace(".", "/")
        assert f"{path}.py" in code or f"{path}/__init__.py" in code, f"{module} (KINDS) is not in the student's key"
