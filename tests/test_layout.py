"""The layout shows the pipeline: every stage is found by its name, stages know each other
only through declared outputs, and no stage module imports another (read from the imports)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline import codedeps
from pipeline.stages import STAGES, Stage, StageContext, check_outputs, get_stage

ROOT = Path(__file__).resolve().parent.parent
STAGE_MODULES = {st.entry.split(":")[0]: st.name for st in STAGES}


def _file(module: str) -> str:
    return Path(importlib.util.find_spec(module).origin).relative_to(ROOT).as_posix()


@pytest.mark.parametrize("module", sorted(STAGE_MODULES))
def test_no_stage_module_imports_another(module):
    """Not directly, and not through a library module either: the whole import closure
    (pipeline/codedeps.py, the same closure the stage's cache key hashes) holds no other stage."""
    closure = set(codedeps.code_files(ROOT, module))
    others = {_file(m): m for m in STAGE_MODULES if m != module}
    found = sorted(others[f] for f in closure & set(others))
    assert not found, f"{module} imports the stage module(s) {found}; share code through a library module"


def test_every_stage_lives_in_a_module_named_for_it():
    for st in STAGES:
        module = st.entry.split(":")[0]
        # `<name>/stage.py`; the data stage, a scene loader's thin wrapper, is pipeline/data_stage.py
        assert module in (f"{st.name}.stage", f"pipeline.{st.name}_stage"), (st.name, module)
        assert importlib.util.find_spec(module) is not None


def test_stages_read_only_declared_outputs(tmp_path):
    (tmp_path / "distill").mkdir()
    (tmp_path / "distill" / "transforms.json").write_text("{}")
    ctx = StageContext(cfg=None, stage=get_stage("student"), out_dir=tmp_path / "student", device=None,
                       resume=False, upstream={"data": tmp_path / "data", "distill": tmp_path / "distill"},
                       upstream_records={"distill": {"outputs": {"views": "transforms.json"}}, "data": {}})
    assert ctx.input("distill", "views") == tmp_path / "distill" / "transforms.json"
    with pytest.raises(Exception, match="declares no output 'pseudo'"):
        ctx.input("distill", "pseudo")
    with pytest.raises(Exception, match="not one of its upstream stages"):
        ctx.input("export", "metrics")  # downstream of the student: never one of its inputs
    with pytest.raises(Exception, match="no output 'cameras'"):
        ctx.input("distill", "cameras")  # declared, but this (old) record lacks it


def test_a_stage_must_write_what_it_declares(tmp_path):
    st = Stage("demo", (), "x:run", lambda c: {}, outputs={"a": "a file", "b": "a folder"})
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b").mkdir()
    assert check_outputs(st, tmp_path, {"a": "a.json", "b": "b"}) == {"a": "a.json", "b": "b"}
    with pytest.raises(Exception, match="declares"):
        check_outputs(st, tmp_path, {"a": "a.json"})
    with pytest.raises(Exception, match="'b' .* was not written"):
        check_outputs(st, tmp_path, {"a": "a.json", "b": "missing"})
