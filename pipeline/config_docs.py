"""The config reference, generated from the dataclasses of pipeline/config.py.

A key's documentation is the comment written next to its field: the comment at the
end of its line or, failing that, the comment lines directly above it. Sections are
documented by their class docstrings. `python -m pipeline config` prints the
reference; docs/CONFIG.md is that output, and tests check that it is up to date and
that no key is undocumented.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
import typing
from pathlib import Path
from typing import Any

from . import config


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text without '#', whether the line holds only the comment)."""
    out = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            out[row] = (tok.string.lstrip("#").strip(), not lines[row - 1][:col].strip())
    return out


def field_docs(source: str | None = None) -> dict[str, dict[str, str]]:
    """Class name -> field name -> its comment ('' when it has none), for every class of
    `source` (default: pipeline/config.py)."""
    source = Path(config.__file__).read_text() if source is None else source
    comments = _comments(source)
    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = docs.setdefault(node.name, {})
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            text, alone = comments.get(stmt.end_lineno, ("", True))
            if not text or alone:  # no comment at the end of the line: the block of comment lines above
                above, row = [], stmt.lineno - 1
                while row in comments and comments[row][1]:
                    above.insert(0, comments[row][0])
                    row -= 1
                text = " ".join(above)
            fields[stmt.target.id] = text
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def entries(cls: type = config.Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, meaning) of every key below `cls`, depth first."""
    docs, hints = field_docs()[cls.__name__], typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += entries(tp, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", config._type_name(tp), _yaml(_default(f)), docs[f.name]))
    return rows


def _section(cls: type, prefix: str) -> list[str]:
    """Markdown for one section: its docstring, its own keys, then its subsections."""
    docs, hints = field_docs()[cls.__name__], typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    out = [" ".join((cls.__doc__ or "").split()), ""]
    for f in fields:
        if not dataclasses.is_dataclass(hints[f.name]):
            out.append(f"- `{prefix}{f.name}` ({config._type_name(hints[f.name])}, "
                       f"default `{_yaml(_default(f))}`): {docs[f.name]}")
    for f in fields:
        if dataclasses.is_dataclass(hints[f.name]):
            out += ["", f"## {prefix}{f.name}", ""] + _section(hints[f.name], f"{prefix}{f.name}.")
    return out


def reference() -> str:
    """The config reference as Markdown (docs/CONFIG.md)."""
    head = ["# Config reference", "",
            "Every key of a pipeline config (YAML), generated from the comments in `pipeline/config.py`",
            "by `python -m pipeline config > docs/CONFIG.md`. A key left out of a config takes its default;",
            "`--set KEY=VALUE` overrides one on the command line.", "", "## top level", ""]
    return "\n".join(head + _section(config.Config, "")) + "\n"
