"""`python -m pipeline run|stage|status|config`: the command line.

Errors the user can fix print as one line (exit 2 for usage/config, 1 for
data/runtime); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path

from .errors import PipelineError, UsageError

LAST_RUN = Path("runs") / "last_run.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set teacher.steps=500 (repeatable)")
        sp.add_argument("--debug", action="store_true", help="show full tracebacks")

    r = sub.add_parser("run", help="run every stage, reusing valid caches")
    r.add_argument("config", nargs="?", help="YAML config (default: the most recent run's)")
    r.add_argument("--force", action="store_true", help="re-run every stage")
    common(r)
    s = sub.add_parser("stage", help="run one stage")
    s.add_argument("name", help="data | teacher | distill | student | export")
    s.add_argument("config", nargs="?", help="YAML config (default: the most recent run's)")
    s.add_argument("--force", action="store_true", help="re-run the stage even if cached")
    common(s)
    st = sub.add_parser("status", help="show each stage: done / stale / missing, and why")
    st.add_argument("config", nargs="?", help="YAML config (default: the most recent run's)")
    common(st)
    c = sub.add_parser("config", help="print every config key with its type, default and meaning (docs/CONFIG.md)")
    c.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def _resolve_config(path: str | None, overrides: list[str]) -> tuple[Path, list[str]]:
    if path:
        return Path(path), overrides
    if LAST_RUN.is_file():
        try:
            last = json.loads(LAST_RUN.read_text())
            cfg_path = Path(last["config"])
        except (json.JSONDecodeError, KeyError):
            cfg_path = None
        if cfg_path is not None:
            merged = list(last.get("overrides", [])) + overrides
            extra = f" with --set {' --set '.join(merged)}" if merged else ""
            print(f"using the most recent run's config: {cfg_path}{extra}", flush=True)
            return cfg_path, merged
    configs = sorted(str(p) for p in Path("configs").glob("*.yaml")) if Path("configs").is_dir() else []
    listing = ", ".join(configs) if configs else "none found in ./configs"
    raise UsageError(f"no config given and no previous run in this workspace; pass one of: {listing}")


def _sigterm(signum: int, frame: object) -> None:
    # `kill PID` stops as cleanly as Ctrl-C: locks released, temporary files removed
    raise KeyboardInterrupt


def _one_line(err: BaseException) -> tuple[str, int]:
    """The message and exit status for an error that escaped the stages."""
    if isinstance(err, PipelineError):
        return str(err), err.exit_code
    if isinstance(err, OSError):
        # permissions, full disk, a file where a folder should be: name the path, no traceback
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err} (check that the path exists and is writable)", 1
    if isinstance(err, MemoryError):
        return "out of memory; lower the batch sizes (teacher.max_batch_rays, student.train.batch_images)", 1
    return (f"unexpected {err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(run again with --debug for the traceback)"), 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _main(args)
    except KeyboardInterrupt:
        command = shlex.join(["python", "-m", "pipeline", *argv])
        print(f"\ninterrupted; finished outputs and the last checkpoint are kept. "
              f"Run `{command}` again to resume.", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        message, code = _one_line(err)
        print(f"error: {message}", file=sys.stderr)
        return code


def _main(args: argparse.Namespace) -> int:
    if args.command == "config":
        from .config_docs import reference

        print(reference(), end="")
        return 0
    from .config import load_config

    cfg_path, overrides = _resolve_config(args.config, args.overrides)
    cfg = load_config(cfg_path, overrides)

    from . import distributed

    distributed.init_from_env(cfg.device)
    # Only a clean finish leaves the group: after an error torchrun tears the
    # other ranks down, and a barrier here could hang.
    code = _run(args, cfg, cfg_path, overrides)
    distributed.shutdown()
    return code


def _run(args: argparse.Namespace, cfg, cfg_path: Path, overrides: list[str]) -> int:
    from . import distributed
    from .stages import STAGES, Pipeline, get_stage

    pipe = Pipeline(cfg, cfg_path)
    if args.command == "status":
        print(f"config {cfg_path} (name '{cfg.name}'), runs in {pipe.run_dir}")
        for st in STAGES:
            state, reasons = pipe.explain(st.name)
            print(f"  {st.name:<8} {state:<8} {pipe.out_dir(st.name)}")
            for reason in reasons:  # why it is not done, one line each, under the stage
                print(f"{'':<13}{reason}")
        return 0

    from .io import atomic_write_json

    if distributed.is_main():
        atomic_write_json(LAST_RUN, {"config": str(cfg_path), "overrides": overrides})
    t0 = time.time()
    if args.command == "stage":
        get_stage(args.name)
        records = [pipe.run_stage(args.name, force=args.force)]
    else:
        records = pipe.run_all(force=args.force)
    if not distributed.is_main():
        return 0
    print(f"finished in {time.time() - t0:.1f} s; outputs under {pipe.run_dir}")
    for rec in records:
        if rec and rec.get("stage") == "export":
            site = rec["outputs"].get("site")
            print(f"viewer: python -m http.server -d {site}  then open http://localhost:8000/ "
                  "(results: http://localhost:8000/compare.html)")
    return 0
