"""socbi: decide which samples to label next, fast.

The core is :class:`SemiOrderedIndex`, a concurrent ranked index of sample scores
written in C++17 (``socbi._core``). Neighbour scoring, selection strategies, feature
extraction and the active-learning loop live in submodules (``socbi.knn``,
``socbi.scoring``, ``socbi.strategies``, ``socbi.features``, ...).
"""
from __future__ import annotations

from socbi._core import MAX_CAPACITY, SemiOrderedIndex

__all__ = ["SemiOrderedIndex", "MAX_CAPACITY", "ActiveLearner", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The session pulls in scikit-learn and hnswlib; import it only when asked for.
    if name == "ActiveLearner":
        from socbi.session import ActiveLearner

        return ActiveLearner
    raise AttributeError(f"module 'socbi' has no attribute {name!r}")
