"""The ``socbi`` command.

Subcommands live next to the code they drive; each module exposes
``register(subparsers)`` that adds its parser and sets ``func``. A module whose
optional dependencies are missing still registers, and fails with an install hint
only when its subcommand runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ._cliutil import run_command

# (module, attribute) pairs; each attribute is register(subparsers) -> None.
_SUBCOMMAND_MODULES = [
    ("socbi.demo", "register"),
    ("socbi.bench", "register"),
    ("socbi.features.cli", "register"),
    ("socbi.session", "register"),
    ("socbi.config", "register"),  # socbi run
    ("socbi.curate", "register"),
    ("socbi.rebalance", "register"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="socbi",
        description="Decide which samples to label next, fast.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, attr in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only skip when the subcommand's own module is absent, never hide a
            # broken import inside it.
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        getattr(module, attr)(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.func, args)  # bad input: exit 2, message on stderr, stdout empty


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
