"""socbi: decide which samples to label next, fast.

The core is :class:`SemiOrderedIndex`, a concurrent ranked index of sample scores
written in C++17 (``socbi._core``). Neighbour scoring, selection strategies, feature
extraction and the active-learning loop live in submodules (``socbi.knn``,
``socbi.scoring``, ``socbi.strategies``, ``socbi.features``, ...).
"""
from __future__ import annotations

from typing import Any, Optional

from socbi._core import MAX_CAPACITY
from socbi._core import SemiOrderedIndex as _CoreIndex
from socbi._threads import check_threads as _check_threads


_core_insert, _core_update, _core_assign = _CoreIndex.insert, _CoreIndex.update, _CoreIndex.assign


class SemiOrderedIndex(_CoreIndex):
    """The C++ index (``socbi._core.SemiOrderedIndex``; see its methods' docstrings) with
    socbi's one ``threads`` rule on the writers: a positive count or -1 (all cores);
    ``threads=0`` is refused with ValueError. One Python call of overhead per batch."""

    __doc__ = (_CoreIndex.__doc__ or "") + "\n\n" + (__doc__ or "")

    def insert(self, ids: Any, scores: Any, threads: int = 1, bulk: Optional[bool] = None) -> None:
        if threads == 0:  # the core accepts 0; socbi's rule (socbi._threads) refuses it
            _check_threads(threads)
        return _core_insert(self, ids, scores, threads, bulk)

    def update(self, ids: Any, deltas: Any, threads: int = 1, bulk: Optional[bool] = None) -> None:
        if threads == 0:  # the core accepts 0; socbi's rule (socbi._threads) refuses it
            _check_threads(threads)
        return _core_update(self, ids, deltas, threads, bulk)

    def assign(self, ids: Any, scores: Any, threads: int = 1, bulk: Optional[bool] = None) -> None:
        if threads == 0:  # the core accepts 0; socbi's rule (socbi._threads) refuses it
            _check_threads(threads)
        return _core_assign(self, ids, scores, threads, bulk)


__all__ = ["SemiOrderedIndex", "MAX_CAPACITY", "ActiveLearner", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The session pulls in scikit-learn and hnswlib; import it only when asked for.
    if name == "ActiveLearner":
        from socbi.session import ActiveLearner

        return ActiveLearner
    raise AttributeError(f"module 'socbi' has no attribute {name!r}")
