"""socbi's one progress policy (used by every long step: pools, rounds, runs, embedding).

* ``enabled=False``: nothing is shown.
* on a terminal (stderr is a TTY): a tqdm bar that clears itself when done;
* otherwise (a log file, CI, a pipe): one plain line every ``interval`` seconds
  (default 10, or the ``SOCBI_PROGRESS_INTERVAL`` environment variable), e.g.
  ``socbi hnsw add: 12000/20000 (60%) 2.1e+03 it/s, ~4 s left``, and a last line when a
  step that printed anything ends, so a log shows long work without bar frames.

A step shorter than ``interval`` prints nothing to a log. Totals are what the step will
really do (callers pass the total of the active stopping rule). Thread safety: one
object per step, updated from one thread.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional

__all__ = ["progress", "LineProgress", "DEFAULT_INTERVAL_S"]

DEFAULT_INTERVAL_S = 10.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("SOCBI_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Off:
    """The disabled progress object: every call is a no-op."""

    def __init__(self, iterable: Optional[Iterable[Any]] = None) -> None:
        self._it = iterable
        self.n = 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self._it if self._it is not None else ())

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *a: Any, **k: Any) -> None:
        pass

    def set_postfix_str(self, *a: Any, **k: Any) -> None:
        pass

    def set_description(self, *a: Any, **k: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Off":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LineProgress(_Off):
    """Progress as plain lines on ``file`` (default stderr), at most one per ``interval`` s."""

    def __init__(self, iterable: Optional[Iterable[Any]] = None, *, total: Optional[int] = None,
                 desc: str = "", unit: str = "it", initial: int = 0, interval: Optional[float] = None,
                 file: Any = None) -> None:
        super().__init__(iterable)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = int(initial)
        self._start_n = self.n
        self.interval = _interval() if interval is None else float(interval)
        self.file = file
        self._t0 = time.monotonic()
        self._last = self._t0
        self._printed = False
        self._postfix = ""
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in (self._it if self._it is not None else ()):
                yield item
                self.update(1)
        finally:
            self.close()

    def set_postfix(self, *a: Any, **k: Any) -> None:
        k.pop("refresh", None)
        items = dict(*a, **k)
        self._postfix = ", ".join(f"{key}={v:.4g}" if isinstance(v, float) else f"{key}={v}"
                                  for key, v in items.items())

    def set_postfix_str(self, s: str = "", *a: Any, **k: Any) -> None:
        self._postfix = str(s)

    def set_description(self, desc: str = "", *a: Any, **k: Any) -> None:
        self.desc = str(desc)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(now)

    def line(self, now: Optional[float] = None) -> str:
        now = time.monotonic() if now is None else now
        dt = max(now - self._t0, 1e-9)
        rate = (self.n - self._start_n) / dt
        if self.total:
            pct = 100.0 * self.n / self.total
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta = f", ~{left:.0f} s left" if left != float("inf") and self.n < self.total else ""
            head = f"{self.n}/{self.total} ({pct:.0f}%)"
        else:
            head, eta = f"{self.n}", ""
        tail = f", {self._postfix}" if self._postfix else ""
        return f"socbi {self.desc}: {head} {rate:.3g} {self.unit}/s, {dt:.0f} s{eta}{tail}"

    def _emit(self, now: float) -> None:
        print(self.line(now), file=self.file or sys.stderr, flush=True)
        self._printed = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._printed or (time.monotonic() - self._t0 >= self.interval and self.n > self._start_n):
            self._emit(time.monotonic())


def progress(iterable: Optional[Iterable[Any]] = None, *, total: Optional[int] = None, desc: str = "",
             unit: str = "it", enabled: Optional[bool] = True, initial: int = 0,
             interval: Optional[float] = None, file: Any = None) -> Any:
    """A progress object (iterate it, or call ``update(n)`` / ``close()``) under the policy
    in the module docstring. ``enabled``: False = off; True or None = a bar on a terminal,
    else a line every ``interval`` seconds. O(1) per update."""
    if enabled is False:
        return _Off(iterable)
    stream = file or sys.stderr
    if _is_tty(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=False, file=stream)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, interval=interval,
                        file=file)
