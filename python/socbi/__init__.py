"""socbi: decide which samples to label next, fast.

The core is :class:`SemiOrderedIndex`, a concurrent ranked index of sample scores
written in C++17 (``socbi._core``). Neighbour scoring, selection strategies, feature
extraction and the active-learning loop live in submodules (``socbi.knn``,
``socbi.scoring``, ``socbi.strategies``, ``socbi.features``, ...).
"""
from __future__ import annotations

from socbi._core import MAX_CAPACITY, SemiOrderedIndex

__all__ = ["SemiOrderedIndex", "MAX_CAPACITY", "__version__"]
__version__ = "0.1.0"
