"""Progress off a terminal: sparse plain lines, not a bar's carriage returns (pipeline/progress.py)."""

from __future__ import annotations

from pipeline import progress as progress_mod
from pipeline.progress import progress


def test_a_fast_loop_off_a_terminal_prints_one_final_line(capsys):
    assert list(progress(range(1000), desc="teacher", unit="step")) == list(range(1000))
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("teacher: 1000/1000 steps (100%)") and "\r" not in err


def test_a_slow_loop_prints_a_line_per_share_not_per_item(capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "MIN_SECONDS", 0.0)  # every item "slow": only the 5% rule limits lines
    bar = progress(range(1000), desc="distill", total=1000, unit="view")
    for k in bar:
        if k == 10:
            bar.set_postfix({"psnr": "30.1"})
    lines = capsys.readouterr().err.splitlines()
    assert 19 <= len(lines) <= 21 and lines[-1] == lines[-1].strip()
    assert "distill: 500/1000 views (50%)" in "\n".join(lines) and lines[-1].endswith("psnr=30.1")


def test_disabled_prints_nothing(capsys):
    assert sum(progress(range(5), desc="x", disable=True)) == 10
    assert capsys.readouterr().err == ""
