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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

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
                     ) -> Tuple["ExperimentConfig", Optional[str]]:  # noqa: F821
    """(validated ExperimentConfig, out directory or None) from a parsed document."""
    from .experiment import ExperimentConfig

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


def load_config(path: Union[str, Path]) -> Tuple["ExperimentConfig", Optional[str]]:  # noqa: F821
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
