"""Thread counts: one check and one limiter for every ``threads`` option (stdlib only).

``threads`` means the same everywhere in socbi: a positive count, or -1 for all CPUs
of this process; 0, negatives other than -1 and booleans are refused by
:func:`check_threads` with a message naming the argument. :func:`limit_threads` caps
torch's and the BLAS libraries' thread pools for a block of work (``socbi embed
--threads``, experiment workers).
"""
from __future__ import annotations

import contextlib
import numbers
import os
import sys
from typing import Any, Iterator, Optional

__all__ = ["check_threads", "default_threads", "limit_threads", "resolve_threads"]


def default_threads() -> int:
    """All CPUs this process may run on (the meaning of ``threads=-1``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def check_threads(value: Any, name: str = "threads", *, allow_all: bool = True) -> int:
    """``value`` as an int if it is a positive count (or -1 = all CPUs when ``allow_all``);
    ValueError naming ``name``, the value and the fix otherwise. O(1)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and (int(value) >= 1 or (allow_all and int(value) == -1)):
        return int(value)
    fix = "a positive count, or -1 for all cores" if allow_all else "a positive count"
    raise ValueError(f"{name} = {value!r} is invalid; pass {fix}")


def resolve_threads(value: Optional[int], name: str = "threads") -> int:
    """The number of threads ``value`` asks for: None or -1 = :func:`default_threads`."""
    if value is None:
        return default_threads()
    v = check_threads(value, name)
    return default_threads() if v == -1 else v


@contextlib.contextmanager
def limit_threads(threads: Optional[int], name: str = "threads") -> Iterator[int]:
    """Cap torch (when imported) and BLAS (through threadpoolctl when installed) at
    ``threads`` for the ``with`` block; restores the old limits after. Yields the count."""
    n = resolve_threads(threads, name)
    torch = sys.modules.get("torch")
    old_torch = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            yield n
            return
        with threadpool_limits(limits=n):
            yield n
    finally:
        if torch is not None and old_torch is not None:
            torch.set_num_threads(old_torch)
