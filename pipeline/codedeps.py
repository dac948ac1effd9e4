"""The code a stage runs, found from its imports rather than listed by hand.

A stage's code is the closure of its entry module under imports, restricted to
the project's own packages (every top-level folder of the repository root that
holds an `__init__.py`; third-party and standard-library modules are ignored,
since they are the environment, not the project). The imports are read
statically with `ast`, so the modules are never executed:

- `import a.b.c` brings in `a`, `a.b` and `a.b.c` (importing a submodule runs
  every package `__init__.py` above it);
- `from a.b import c` brings in `a`, `a.b`, and `a.b.c` when `c` is a submodule
  rather than a name defined in `a/b`;
- relative imports (`from . import x`, `from ..pkg import y`) resolve against
  the importing module's package;
- imports anywhere in the module count, inside functions too: a lazy import
  still runs when the stage runs. (`importlib.import_module` with a computed
  name is not seen: a stage that loads modules by name declares them,
  `Stage.loads` in pipeline/stages.py; the student stage loads every kind in
  `KINDS`, and every stage downstream of it is keyed on them through its key.)

Files a module compiles or loads at run time are code too. Such a module
declares them at module level, as a literal tuple of globs relative to its own
folder, for example in `teacher/native.py`::

    BUILD_SOURCES = ("csrc/*.c",)

and every stage whose closure holds that module also hashes the matching files.
Data files that decide a module's output count the same way (`export/site_format.py`
declares the viewer's schemas, which decide what export and report write).
The declaration sits next to the code that builds them, so whoever adds a
kernel sees it, and a glob that matches nothing is an error, not a silent gap.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path

from .errors import StageError

DECLARATION = "BUILD_SOURCES"


@functools.cache
def project_packages(root: Path) -> frozenset[str]:
    """Names of the top-level folders of `root` that are Python packages."""
    return frozenset(p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").is_file())


def _module_file(root: Path, name: str) -> Path | None:
    """The source file of project module `name` ("a.b"), or None if it is not a module."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(root: Path, name: str) -> list[str]:
    """`name` and the packages above it, those that are project modules, outermost first."""
    found = []
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if _module_file(root, prefix) is None:
            break  # an attribute of the module above (e.g. `from a import some_function`), not a module
        found.append(prefix)
    return found


def _parse(path: Path, root: Path) -> ast.Module:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as err:
        raise StageError(f"cannot read the imports of {path.relative_to(root)}: {err.msg} at line {err.lineno}; "
                         "fix the syntax error") from None


def _build_sources(tree: ast.Module, path: Path, root: Path) -> list[str]:
    """Files matched by the module's `BUILD_SOURCES` declaration, as paths relative to `root`."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if not any(isinstance(t, ast.Name) and t.id == DECLARATION for t in targets) or node.value is None:
            continue
        where = f"{path.relative_to(root)}:{node.lineno}"
        try:
            globs = ast.literal_eval(node.value)
        except ValueError:
            globs = None
        if not isinstance(globs, tuple) or not all(isinstance(g, str) for g in globs):
            raise StageError(f"{where}: {DECLARATION} must be a literal tuple of glob strings")
        files = []
        for pattern in globs:
            matched = sorted(p for p in path.parent.glob(pattern) if p.is_file())
            if not matched:
                raise StageError(f"{where}: {DECLARATION} pattern '{pattern}' matches no file")
            # normpath: a declaration may reach outside its package ('../site/schema/*.json')
            files += [Path(os.path.normpath(p)).relative_to(root).as_posix() for p in matched]
        return files
    return []


@functools.cache
def _direct(root: Path, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(project modules that module `name` imports, files it declares it builds)."""
    path = _module_file(root, name)
    if path is None:
        raise StageError(f"module '{name}' not found under {root}")
    tree = _parse(path, root)
    # the package that relative imports start from: the module itself if it is a package
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    wanted: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wanted += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package) - 1:
                    continue  # beyond the top-level package: would fail at run time; not ours to judge
                parts = package[:len(package) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            wanted.append(base)
            wanted += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    ours = project_packages(root)
    modules = {m for w in wanted if w.split(".")[0] in ours for m in _with_parents(root, w)}
    modules.discard(name)
    return tuple(sorted(modules)), tuple(_build_sources(tree, path, root))


@functools.cache
def code_files(root: Path, module: str) -> tuple[str, ...]:
    """Every project file that running `module` executes or builds, as sorted paths relative to `root`.

    Cached per process: the closure is asked for every time a key is computed,
    and a running process's code does not change under it.
    """
    seen: set[str] = set()
    files: set[str] = set()
    todo = _with_parents(root, module)
    if not todo or todo[-1] != module:
        raise StageError(f"stage entry module '{module}' not found under {root}")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        files.add(_module_file(root, name).relative_to(root).as_posix())
        imported, built = _direct(root, name)
        files.update(built)
        todo += imported
    return tuple(sorted(files))


def code_hashes(root: Path, *modules: str) -> dict[str, str]:
    """{path relative to root: sha256 of its content} for the `code_files` of every module.

    Not cached: contents are read afresh each time (tests edit files in place).
    """
    files = sorted({rel for module in modules for rel in code_files(root, module)})
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in files}


def clear_cache() -> None:
    """Forget the closures (for a process that edits imports and asks again)."""
    for fn in (project_packages, _direct, code_files):
        fn.cache_clear()
