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


class SemiOrderedIndex(_CoreIndex):
    """The C++ index (``socbi._core.SemiOrderedIndex``; see its methods' docstrings) with
    socbi's one ``threads`` rule on the writers: a positive count or -1 (all cores);
    ``threads=0`` is refused with ValueError. One Python call of overhead per batch."""

    __doc__ = (_CoreIndex.__doc__ or "") + "\n\n" + (__doc__ or "")

    def insert(self, ids: Any, scores: Any, threads: int = 1, bulk: Optional[bool] = None) -> None:
        return super().insert(ids, scores, threads=_check_threads(threads), bulk=bulk)

    def update(self, ids: Any, deltas: Any, threads: int = 1, bulk: Optional[bool] = None) -> None:
        return super().update(ids, deltas, threads=_check_threads(threads), bulk=bulk)

    def assign(self, ids: Any, scores: Any, threads: int = 1, bulk: Optional[bool] = None) -> None:
        return super().assign(ids, scores, threads=_check_threads(threads), bulk=bulk)


__all__ = ["SemiOrderedIndex", "MAX_CAPACITY", "ActiveLearner", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The session pulls in scikit-learn and hnswlib; import it only when asked for.
    if name == "ActiveLearner":
        from socbi.session import ActiveLearner

        return ActiveLearner
    raise AttributeError(f"module 'socbi' has no attribute {name!r}")
