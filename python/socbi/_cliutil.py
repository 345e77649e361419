"""The ``socbi`` command's one error layer (stdlib only).

Every subcommand reports a bad argument the same way: exit status 2, one line on stderr
``socbi CMD: error: ARGUMENT VALUE: what is wrong; the fix``, and nothing on stdout.
Commands check their paths with :func:`input_file` / :func:`output_file` /
:func:`output_dir` *before* any work or output, and :func:`run_command` (called by
``socbi.cli.main``) turns a :class:`UsageError`, ValueError or OSError that escapes a
command into that exit. Errors that are bugs (anything else) keep their traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from ._files import check_file_target

__all__ = ["UsageError", "fail", "input_file", "output_file", "output_dir", "run_command"]


class UsageError(ValueError):
    """A bad command-line argument; the message names the argument, the value and the fix."""


def fail(cmd: str, msg: Any) -> int:
    """Print ``socbi CMD: error: MSG`` (one line) on stderr; return the exit status 2."""
    print(f"socbi {cmd}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


def input_file(value: str, arg: str, what: str = "a file") -> Path:
    """``value`` as a Path to an existing regular file; UsageError otherwise. O(1)."""
    p = Path(value)
    if p.is_dir():
        raise UsageError(f"{arg} {value!r} is a directory; pass {what} (a file inside it, not the "
                         f"directory)")
    if not p.is_file():
        raise UsageError(f"{arg}: no such file {value!r}; pass {what}")
    return p


def output_file(value: str, arg: str, example: str = "NAME") -> Path:
    """``value`` as a Path where a file can be written (an existing file is replaced);
    UsageError when it is a directory or its directory does not exist. O(1)."""
    try:
        return check_file_target(value, arg, example)
    except OSError as exc:
        raise UsageError(str(exc)) from None


def output_dir(value: str, arg: str) -> Path:
    """``value`` as a Path for a directory (created later if missing); UsageError when it
    exists as a file or its parent directory is missing. O(1)."""
    p = Path(value)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{arg} {value!r} is an existing file, but this writes a directory there; pass "
                         f"a directory path (new or existing), e.g. {str(p.with_suffix(''))+'-out'!r}")
    parent = p.resolve().parent
    if not p.exists() and not parent.is_dir():
        raise UsageError(f"{arg} {value!r}: parent directory {str(parent)!r} does not exist; create it first")
    return p


def run_command(func: Callable[[argparse.Namespace], Optional[int]], args: argparse.Namespace) -> int:
    """Run a subcommand; a UsageError / ValueError / OSError it raises exits 2 on stderr."""
    cmd = getattr(args, "command", None) or "?"
    try:
        return int(func(args) or 0)
    except (ValueError, OSError) as exc:
        if isinstance(exc, OSError) and exc.strerror and exc.filename:
            return fail(cmd, f"{exc.strerror}: {exc.filename!r}")
        return fail(cmd, exc)
