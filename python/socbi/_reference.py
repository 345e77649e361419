"""A plain, obviously-correct model of :class:`socbi.SemiOrderedIndex`.

Used by the tests as the oracle that random operation sequences are checked
against, and handy for reading what the fast index promises. Every operation is
O(n) or O(n log n); do not use it for real pools.

Ordering: the key of an item is ``(score, id)``. ``bottom(n)`` returns the n
smallest keys ascending; ``top(n)`` returns the n largest keys descending, so ties
in score come out by ascending id in ``bottom`` and by descending id in ``top``.
"""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

import numpy as np


class ReferenceIndex:
    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.scores: Dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.scores)

    def __contains__(self, item: int) -> bool:
        return int(item) in self.scores

    def insert(self, ids: Iterable[int], scores: Iterable[float]) -> None:
        for i, s in zip(ids, scores):
            assert int(i) not in self.scores
            self.scores[int(i)] = float(s)

    def update(self, ids: Iterable[int], deltas: Iterable[float]) -> None:
        for i, d in zip(ids, deltas):
            self.scores[int(i)] += float(d)

    def assign(self, ids: Iterable[int], scores: Iterable[float]) -> None:
        for i, s in zip(ids, scores):
            assert int(i) in self.scores
            self.scores[int(i)] = float(s)

    def erase(self, ids: Iterable[int]) -> None:
        for i in ids:
            del self.scores[int(i)]

    def score(self, ids: Iterable[int]) -> np.ndarray:
        return np.array([self.scores[int(i)] for i in ids], dtype=np.float64)

    def _sorted(self) -> list:
        return sorted(((s, i) for i, s in self.scores.items()))

    def bottom(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        items = self._sorted()[: max(0, int(n))]
        return (np.array([i for _, i in items], dtype=np.int64),
                np.array([s for s, _ in items], dtype=np.float64))

    def top(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        items = self._sorted()[::-1][: max(0, int(n))]
        return (np.array([i for _, i in items], dtype=np.int64),
                np.array([s for s, _ in items], dtype=np.float64))
