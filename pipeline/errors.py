"""Errors the command line turns into one clear line (no traceback unless --debug)."""

from __future__ import annotations


class PipelineError(Exception):
    """A user-facing failure. `exit_code` 2: usage/config, 1: data or runtime."""

    exit_code = 1


class ConfigError(PipelineError):
    exit_code = 2


class UsageError(PipelineError):
    exit_code = 2


class DataError(PipelineError):
    exit_code = 1


class StageError(PipelineError):
    exit_code = 1
