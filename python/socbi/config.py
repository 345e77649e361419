"""Experiment configuration files (TOML) for ``socbi run``.

A config is a TOML file whose keys are the fields of
:class:`socbi.experiment.ExperimentConfig`, either at the top level or under an
``[experiment]`` table, plus an optional ``out`` (output directory, relative to the
current directory)::

    [experiment]
    dataset = "digits"            # or "iris", "wine", "breast_cancer", or "data.npz" (X, y)
    strategies = ["random", "least_confidence", "lc_socbi"]
    seeds = 5                     # a count, or a list of seeds
    imbalance = [1.0, 0.1, 0.3]   # IF values; 1.0 = balanced
    batch = 20
    budget = 0.5
    out = "results/digits"

A relative ``dataset`` path is resolved against the config file's directory. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` naming the file,
the key, the value and what is allowed. Parsing uses :mod:`tomllib` (Python 3.11+) or
the ``tomli`` package. O(file size); thread-safe (pure function).

This module also holds the ``socbi run`` command (:func:`register`): it reads a config
and calls :func:`socbi.experiment.run_experiment` (data flows config -> experiment).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from .experiment import ExperimentConfig, run_experiment

__all__ = ["ConfigError", "load_config", "config_from_dict"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the key and the fix."""


def _toml() -> Any:
    try:
        import tomllib  # Python 3.11+
        return tomllib
    except ImportError:  # pragma: no cover - Python < 3.11
        try:
            import tomli
            return tomli
        except ImportError as exc:
            raise ConfigError("reading TOML needs Python 3.11+ or the tomli package: pip install tomli") from exc


def config_from_dict(doc: Dict[str, Any], *, where: str = "config", base_dir: str = "."
                     ) -> Tuple[ExperimentConfig, Optional[str]]:
    """(validated ExperimentConfig, out directory or None) from a parsed document."""
    body = dict(doc)
    if "experiment" in body:
        if not isinstance(body["experiment"], dict):
            raise ConfigError(f"{where}: 'experiment' must be a table ([experiment]), got "
                              f"{type(body['experiment']).__name__}")
        extra = sorted(k for k in body if k not in ("experiment", "out"))
        if extra:
            raise ConfigError(f"{where}: keys {extra} sit outside [experiment]; move them into the table")
        out = body.get("out")
        body = dict(body["experiment"])
        if out is not None and "out" not in body:
            body["out"] = out
    out = body.pop("out", None)
    if out is not None and (not isinstance(out, str) or not out):
        raise ConfigError(f"{where}: 'out' must be a directory name (string), got {out!r}")
    allowed = ExperimentConfig.field_names()
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed keys are {', '.join(allowed)}, out")
    kwargs: Dict[str, Any] = {}
    for k, v in body.items():
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    try:
        cfg = ExperimentConfig(**kwargs, base_dir=base_dir).validate()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return cfg, out


def load_config(path: Union[str, Path]) -> Tuple[ExperimentConfig, Optional[str]]:
    """Read and validate a TOML experiment config; returns (config, out directory or None)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no config file at {str(p)!r}; pass the path of a .toml file")
    toml = _toml()
    try:
        doc = toml.loads(p.read_text(encoding="utf-8"))
    except (toml.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p.name}: not valid TOML ({exc})") from exc
    return config_from_dict(doc, where=p.name, base_dir=str(p.resolve().parent))


# =============================================================================== CLI: socbi run
def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="run an experiment described by a TOML file",
        description="Run the So-CBI evaluation protocol as configured in CONFIG.toml (keys: "
                    + ", ".join(ExperimentConfig.field_names()) + "; see docs/session.md). "
                    "Prints the table and writes results.json, table.md, table.csv and curves.png.")
    p.add_argument("config", metavar="CONFIG.toml", help="experiment configuration")
    p.add_argument("--out", default=None, help="output directory (default: the config's 'out' key, "
                                               "else socbi-out/<config name>)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: the config's, 0 = all CPUs)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_run_main)


def _run_main(args: argparse.Namespace) -> int:
    from ._cliutil import output_dir

    try:
        if Path(args.config).is_dir():
            raise ConfigError(f"CONFIG {args.config!r} is a directory; pass the .toml file")
        if args.out is not None:
            output_dir(args.out, "--out")
        cfg, out = load_config(args.config)
        if args.jobs is not None:
            if args.jobs < 0:
                raise ValueError(f"--jobs {args.jobs} must be >= 0 (0 = all CPUs)")
            cfg.jobs = args.jobs
        out = args.out or out or str(Path("socbi-out") / Path(args.config).stem)
        result = run_experiment(cfg, out=out, progress=not args.no_progress)
    except (ConfigError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"socbi run: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(result.table())
    print(f"\n{len(result.runs)} runs in {result.wall_s:.0f} s; wrote {result.files['results']}, "
          f"{result.files['table_md']}, {result.files['table_csv']} and the learning curves "
          f"{result.files['plot']}")
    return 0
