"""Argument checks and small array helpers shared across socbi's modules (numpy only)."""
from __future__ import annotations

from typing import Any

import numpy as np


def positive_int(name: str, value: Any, lo: int = 1, hint: str = "") -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``lo``; else ValueError
    naming ``name`` and the value, followed by ``hint``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}{hint}")
    return int(value)


def readonly_view(a: np.ndarray) -> np.ndarray:
    """A view of ``a`` that cannot be written through (``a`` itself stays writable). O(1)."""
    view = a.view()
    view.flags.writeable = False
    return view
