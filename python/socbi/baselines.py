"""What a user would write instead of socbi, behind one interface, for the benchmarks.

Every structure here keeps a score per sample id (dense ids ``0..capacity-1``) and
answers ``top(n)`` / ``bottom(n)`` like :class:`socbi.SemiOrderedIndex`: it has
``insert``, ``update`` (adds deltas; repeated ids allowed), ``assign``, ``erase``,
``score``, ``top``, ``bottom``, ``len()``, ``in`` and ``capacity``. Queries return
``(int64 ids, float64 scores)`` best first.

For the paper's split of a query into T_sort and T_search (So-CBI §4.4.2) every
structure also has ``prepare(from_top)`` (the work that does not depend on n: a full
sort, a heap build, nothing for a tree) and ``take(n, from_top)`` (the rest);
``top(n)`` is ``prepare(True)`` then ``take(n, True)``.

Structures (``make(name, capacity)`` builds one; ``STRUCTURES`` lists them):

=====================  ==========================================================
``socbi``              :class:`socbi.SemiOrderedIndex` through this interface
``numpy_argsort``      float64 array, ``np.add.at``; query: full ``np.argsort``
``numpy_partition``    float64 array, ``np.add.at``; query: ``np.argpartition`` +
                       sort of the n winners (numpy as a user writes it today)
``heapq``              dict id -> score, Python loop; query: ``heapq.nlargest``
``btrees``             BTrees (ZODB's C B+tree) set of (score, id) keys: an
                       ``LLTreeSet`` of packed integer keys ``score * 2**32 + id``
                       when scores are integer counts (``key="packed"``), else an
                       ``OOTreeSet`` of ``(score, id)`` tuples (``key="tuple"``)
``sortedlist``         ``sortedcontainers.SortedList`` with the same keys
``cpp_sort``           C++ array + ``std::sort`` per query (socbi._core)
``cpp_heap``           C++ array + ``std::make_heap`` and n pops per query
``cpp_partial_sort``   C++ array + ``std::partial_sort``
``cpp_select``         C++ array + ``std::nth_element`` + sort of the n winners
``cpp_set``            C++ ``std::set`` of (score, id) keys
=====================  ==========================================================

The C++ arrays add in parallel with a lock-free compare-and-swap when
``update(..., threads>1)`` (``sync="atomic"``, the default); ``cpp_*_mutex`` names
build them with one ``std::mutex`` taken per item instead, the way a non-concurrent
structure must be shared. For the Python structures :class:`Locked` does the same: one
``threading.Lock``, and ``update(..., threads=t)`` runs t Python threads that take it
per chunk of ``lock_chunk`` ids.

Ties: structures keyed by (score, id) (socbi, sorts, heaps, trees) order ties by id,
as socbi does. ``numpy_partition`` and ``heapq`` return a correct set of n best
scores sorted by (score, id), but which of several tied ids at the boundary make the
cut is up to ``np.argpartition``; compare scores, not ids, when ties are possible.

Thread safety: none of the Python structures is thread-safe on its own (wrap it in
:class:`Locked`); the C++ ``sync="atomic"`` arrays allow overlapping ``update`` calls
only; ``_mutex`` variants and :class:`Locked` allow everything from many threads.

Argument checks: ``validate=True`` (default) checks a whole batch before changing
anything and raises ``TypeError``/``ValueError``/``KeyError`` naming the argument, as
socbi does; the benchmarks pass ``validate=False`` to the Python structures so that
they time only what a user's own code would do (socbi and the C++ baselines always
check, in C++).
"""
from __future__ import annotations

import heapq
import threading
from abc import ABC, abstractmethod
from typing import Callable, Dict, Optional, Tuple

import numpy as np

__all__ = [
    "Baseline", "SocbiIndex", "NumpyArgsort", "NumpyPartition", "HeapqIndex", "BTreesIndex",
    "SortedListIndex", "CppArray", "CppSet", "Locked", "STRUCTURES", "make", "describe",
]

Result = Tuple[np.ndarray, np.ndarray]
_EMPTY: Result = (np.empty(0, np.int64), np.empty(0, np.float64))
_PACK = 1 << 32          # packed key = score * 2**32 + id
_PACK_LIMIT = 1 << 31    # packed scores must lie in [-2**31, 2**31)


# ----------------------------------------------------------------------- argument checks

def _check_capacity(capacity) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
        raise TypeError(f"capacity must be an integer, got {capacity!r}")
    if not 1 <= int(capacity) <= 0xFFFFFFFF:
        raise ValueError(f"capacity = {capacity!r} is out of range; pass 1 <= capacity <= 4294967295")
    return int(capacity)


def _as_ids(ids, capacity: int, name: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.size == 0 and arr.dtype.kind in "fO":
        return np.empty(0, np.int64)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}; convert with "
                        f"np.asarray({name}, dtype=np.int64) if the values are whole numbers")
    if arr.ndim > 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {arr.shape}; pass {name}.ravel()")
    arr = np.atleast_1d(arr)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise ValueError(f"{name} contains {lo}, which is negative; ids must lie in [0, capacity={capacity})")
        if hi >= capacity:
            raise ValueError(f"{name} contains {hi}, which is out of range; ids must lie in "
                             f"[0, capacity={capacity}): build the structure with a larger capacity")
    return arr.astype(np.int64, copy=False)


def _as_values(values, n: int, name: str) -> np.ndarray:
    if isinstance(values, (bool, np.bool_)):
        raise TypeError(f"{name} must be numbers, got a bool")
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu" and arr.size:
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got a {arr.ndim}-D array; pass {name}.ravel()")
    if arr.ndim == 0:
        arr = np.full(n, float(arr), np.float64)
    elif arr.size != n:
        raise ValueError(f"{name} has length {arr.size} but ids has length {n}; "
                         "pass one value per id, or a scalar to use for every id")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}[{bad}] = {arr[bad]} is not finite; scores and deltas must be finite numbers")
    return arr


def _count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer, got {n!r}")
    if n < 0:
        raise ValueError(f"n = {n} is negative; ask for n >= 0 items")
    return int(n)


def _check_distinct(ids: np.ndarray, name: str = "ids") -> None:
    if ids.size > 1:
        u, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"{name} contains id {int(u[counts > 1][0])} more than once; pass each id once per call")


def _check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an integer, got {threads!r}")
    if threads == 0 or threads < -1:
        raise ValueError(f"threads = {threads} is invalid; pass a positive count")
    return int(threads)


def _order(ids: np.ndarray, scores: np.ndarray, from_top: bool) -> np.ndarray:
    """Permutation putting (score, id) keys best first."""
    o = np.lexsort((ids, scores))
    return o[::-1] if from_top else o


# --------------------------------------------------------------------------- interface

class Baseline(ABC):
    """The interface every structure implements (see the module docstring)."""

    #: registry name and one-line description (set by make(); subclasses set defaults)
    name: str = "?"
    description: str = "?"
    #: True when update(threads > 1) runs in parallel without a wrapper
    native_threads: bool = False

    def __init__(self, capacity: int, validate: bool = True) -> None:
        self._capacity = _check_capacity(capacity)
        self.validate = bool(validate)

    @property
    def capacity(self) -> int:
        return self._capacity

    # -- to implement
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _contains(self, i: int) -> bool: ...

    @abstractmethod
    def _present_mask(self, ids: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _insert(self, ids: np.ndarray, scores: np.ndarray) -> None: ...

    @abstractmethod
    def _update(self, ids: np.ndarray, deltas: np.ndarray) -> None: ...

    @abstractmethod
    def _assign(self, ids: np.ndarray, scores: np.ndarray) -> None: ...

    @abstractmethod
    def _erase(self, ids: np.ndarray) -> None: ...

    @abstractmethod
    def _score(self, ids: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _take(self, n: int, from_top: bool) -> Result: ...

    def _prepare(self, from_top: bool) -> None:
        return None

    def _check_new_scores(self, ids: np.ndarray, new: np.ndarray, extreme: Optional[np.ndarray] = None,
                          deltas: Optional[np.ndarray] = None) -> None:
        """Hook: a structure with a narrower key space (packed keys) rejects scores here.

        new: the scores the ids will have; extreme: a bound on |score| along the way;
        deltas: the batch's deltas (update only)."""

    # -- public methods, with the checks
    def __contains__(self, item) -> bool:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            return False
        return 0 <= int(item) < self._capacity and self._contains(int(item))

    def _ids(self, ids) -> np.ndarray:
        if self.validate:
            return _as_ids(ids, self._capacity)
        return np.atleast_1d(np.asarray(ids, dtype=np.int64))

    def _values(self, values, n: int, name: str) -> np.ndarray:
        if self.validate:
            return _as_values(values, n, name)
        arr = np.asarray(values, dtype=np.float64)
        return np.full(n, float(arr)) if arr.ndim == 0 else arr

    def _require(self, ids: np.ndarray, present: bool, what: str) -> None:
        mask = self._present_mask(ids)
        bad = np.flatnonzero(~mask if present else mask)
        if bad.size:
            j = int(bad[0])
            if present:
                raise KeyError(f"ids[{j}] = {int(ids[j])} is not present, so it cannot be {what}; insert it first")
            raise ValueError(f"ids[{j}] = {int(ids[j])} is already present; use assign() or update()")

    def insert(self, ids, scores) -> None:
        ids = self._ids(ids)
        scores = self._values(scores, ids.size, "scores")
        if self.validate:
            _check_distinct(ids)
            self._require(ids, False, "inserted")
            self._check_new_scores(ids, scores)
        self._insert(ids, scores)

    def update(self, ids, deltas, threads: int = 1) -> None:
        ids = self._ids(ids)
        deltas = self._values(deltas, ids.size, "deltas")
        if self.validate:
            threads = _check_threads(threads)
            self._require(ids, True, "updated")
            if ids.size:
                u, inv = np.unique(ids, return_inverse=True)
                extreme = np.abs(self._score(u)) + np.bincount(inv, np.abs(deltas), minlength=u.size)
                if not np.isfinite(extreme).all():
                    raise ValueError("deltas would make a score overflow to infinity; keep scores within +/-1.7e308")
                self._check_new_scores(u, self._score(u) + np.bincount(inv, deltas, minlength=u.size),
                                       extreme=extreme, deltas=deltas)
        if threads != 1 and not self.native_threads:
            raise ValueError(f"{self.name} is not thread-safe; wrap it in socbi.baselines.Locked(...) "
                             "to update it from several threads")
        self._update_threads(ids, deltas, threads)

    def _update_threads(self, ids: np.ndarray, deltas: np.ndarray, threads: int) -> None:
        self._update(ids, deltas)

    def assign(self, ids, scores) -> None:
        ids = self._ids(ids)
        scores = self._values(scores, ids.size, "scores")
        if self.validate:
            _check_distinct(ids)
            self._require(ids, True, "assigned")
            self._check_new_scores(ids, scores)
        self._assign(ids, scores)

    def erase(self, ids) -> None:
        ids = self._ids(ids)
        if self.validate:
            _check_distinct(ids)
            self._require(ids, True, "erased")
        self._erase(ids)

    def score(self, ids):
        scalar = np.ndim(ids) == 0
        arr = self._ids(ids)
        if self.validate:
            self._require(arr, True, "scored")
        out = self._score(arr)
        return float(out[0]) if scalar else out

    def prepare(self, from_top: bool = True) -> None:
        """The n-independent part of a query (the paper's T_sort)."""
        self._prepare(bool(from_top))

    def take(self, n, from_top: bool = True) -> Result:
        """The rest of a query (the paper's T_search); call prepare() first."""
        n = min(_count(n), len(self))
        if n == 0:
            return _EMPTY
        return self._take(n, bool(from_top))

    def top(self, n) -> Result:
        self.prepare(True)
        return self.take(n, True)

    def bottom(self, n) -> Result:
        self.prepare(False)
        return self.take(n, False)

    def memory_bytes(self) -> Optional[int]:
        """Bytes held, where the structure can say exactly; None otherwise."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} capacity={self._capacity} len={len(self)}>"


# ------------------------------------------------------------------------------- socbi

class SocbiIndex(Baseline):
    """socbi.SemiOrderedIndex through the baseline interface (no extra work)."""

    name = "socbi"
    description = "socbi.SemiOrderedIndex"
    native_threads = True

    def __init__(self, capacity: int, validate: bool = True, node_size: Optional[int] = None,
                 bulk: Optional[bool] = None) -> None:
        from socbi import SemiOrderedIndex

        super().__init__(capacity, validate)
        self.index = SemiOrderedIndex(capacity, node_size=node_size)
        self.bulk = bulk

    # The core checks everything itself; pass arguments straight through.
    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, item) -> bool:
        return item in self.index

    def _contains(self, i: int) -> bool:
        return i in self.index

    def _present_mask(self, ids):
        return np.array([int(i) in self.index for i in ids], bool)

    def insert(self, ids, scores) -> None:
        self.index.insert(ids, scores, bulk=self.bulk)

    def update(self, ids, deltas, threads: int = 1) -> None:
        self.index.update(ids, deltas, threads=threads, bulk=self.bulk)

    def assign(self, ids, scores) -> None:
        self.index.assign(ids, scores, bulk=self.bulk)

    def erase(self, ids) -> None:
        self.index.erase(ids)

    def score(self, ids):
        return self.index.score(ids)

    def top(self, n) -> Result:
        return self.index.top(n)

    def bottom(self, n) -> Result:
        return self.index.bottom(n)

    def take(self, n, from_top: bool = True) -> Result:
        return self.index.top(n) if from_top else self.index.bottom(n)

    _insert = _update = _assign = _erase = _score = _take = None  # type: ignore[assignment]

    def memory_bytes(self) -> int:
        return int(self.index.stats()["memory_bytes"])


# ------------------------------------------------------------------------------- numpy

class _NumpyArray(Baseline):
    """Scores in a float64 array of `capacity`, presence in a bool array."""

    def __init__(self, capacity: int, validate: bool = True) -> None:
        super().__init__(capacity, validate)
        self._scores = np.zeros(self._capacity, np.float64)
        self._present = np.zeros(self._capacity, bool)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _contains(self, i: int) -> bool:
        return bool(self._present[i])

    def _present_mask(self, ids):
        return self._present[ids]

    def _insert(self, ids, scores):
        self._scores[ids] = scores
        self._present[ids] = True
        self._size += ids.size

    def _update(self, ids, deltas):
        np.add.at(self._scores, ids, deltas)

    def _assign(self, ids, scores):
        self._scores[ids] = scores

    def _erase(self, ids):
        self._present[ids] = False
        self._size -= ids.size

    def _score(self, ids):
        return self._scores[ids]

    def _live(self) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """(ids of present items or None for all, their scores)."""
        if self._size == self._capacity:
            return None, self._scores
        ids = np.flatnonzero(self._present)
        return ids, self._scores[ids]

    def memory_bytes(self) -> int:
        return int(self._scores.nbytes + self._present.nbytes)


class NumpyArgsort(_NumpyArray):
    """Array + full sort: a stable ``np.argsort`` of every present score per query."""

    name = "numpy_argsort"
    description = "numpy array, np.add.at; query: full np.argsort"

    def __init__(self, capacity: int, validate: bool = True) -> None:
        super().__init__(capacity, validate)
        self._sorted: Optional[Tuple[np.ndarray, np.ndarray, bool]] = None

    def _prepare(self, from_top):
        ids, scores = self._live()
        order = np.argsort(scores, kind="stable")  # (score, position) ascending = (score, id)
        if from_top:
            order = order[::-1]
        sorted_ids = order if ids is None else ids[order]
        self._sorted = (sorted_ids, scores[order], from_top)

    def _take(self, n, from_top):
        if self._sorted is None or self._sorted[2] != from_top:
            self._prepare(from_top)
        ids, scores, _ = self._sorted
        self._sorted = None  # a later mutation would make it stale
        return ids[:n].astype(np.int64), scores[:n].copy()


class NumpyPartition(_NumpyArray):
    """numpy as users write it today: ``np.add.at`` + ``np.argpartition`` + sort of n."""

    name = "numpy_partition"
    description = "numpy array, np.add.at; query: np.argpartition + sort of the n winners"

    def _take(self, n, from_top):
        ids, scores = self._live()
        m = scores.size
        if n < m:
            part = np.argpartition(scores, m - n)[m - n:] if from_top else np.argpartition(scores, n - 1)[:n]
        else:
            part = np.arange(m)
        pid = part if ids is None else ids[part]
        ps = scores[part]
        o = _order(pid, ps, from_top)
        return pid[o].astype(np.int64), ps[o]


# ------------------------------------------------------------------------------- heapq

class HeapqIndex(Baseline):
    """A dict id -> score updated in a Python loop; ``heapq.nlargest`` per query."""

    name = "heapq"
    description = "dict id -> score, Python loop; query: heapq.nlargest/nsmallest"

    def __init__(self, capacity: int, validate: bool = True) -> None:
        super().__init__(capacity, validate)
        self._s: Dict[int, float] = {}

    def __len__(self):
        return len(self._s)

    def _contains(self, i):
        return i in self._s

    def _present_mask(self, ids):
        s = self._s
        return np.fromiter((i in s for i in ids.tolist()), bool, ids.size)

    def _insert(self, ids, scores):
        self._s.update(zip(ids.tolist(), scores.tolist()))

    def _update(self, ids, deltas):
        s = self._s
        for i, d in zip(ids.tolist(), deltas.tolist()):
            s[i] += d

    def _assign(self, ids, scores):
        self._s.update(zip(ids.tolist(), scores.tolist()))

    def _erase(self, ids):
        s = self._s
        for i in ids.tolist():
            del s[i]

    def _score(self, ids):
        s = self._s
        return np.fromiter((s[i] for i in ids.tolist()), np.float64, ids.size)

    def _take(self, n, from_top):
        pick = heapq.nlargest if from_top else heapq.nsmallest
        best = pick(n, ((v, i) for i, v in self._s.items()))
        return (np.fromiter((i for _, i in best), np.int64, len(best)),
                np.fromiter((v for v, _ in best), np.float64, len(best)))


# ---------------------------------------------------------------------- ordered trees

class _KeyedTree(Baseline):
    """A sorted container of (score, id) keys plus a list of current scores.

    key="packed": integer keys ``score * 2**32 + id`` (scores must be whole numbers in
    [-2**31, 2**31): neighbour counts); key="tuple": ``(score, id)`` tuples (any float).
    """

    def __init__(self, capacity: int, validate: bool = True, key: str = "tuple") -> None:
        super().__init__(capacity, validate)
        if key not in ("packed", "tuple"):
            raise ValueError(f"key = {key!r} is not known; use 'packed' (integer scores) or 'tuple' (any float)")
        self.key = key
        self._packed = key == "packed"
        self._cur: list = [None] * self._capacity  # score, or None when absent
        self._size = 0

    def _check_new_scores(self, ids, new, extreme=None, deltas=None):
        if not self._packed:
            return
        vals = new if extreme is None else extreme
        whole = np.all(new == np.floor(new)) and (deltas is None or np.all(deltas == np.floor(deltas)))
        if not whole or (vals.size and np.abs(vals).max() >= _PACK_LIMIT):
            raise ValueError(f"{self.name} was built with key='packed', which holds whole-number scores in "
                             "[-2**31, 2**31) only; build it with key='tuple' for other scores")

    def _k(self, i: int, s):
        return s * _PACK + i if self._packed else (s, i)

    def __len__(self):
        return self._size

    def _contains(self, i):
        return self._cur[i] is not None

    def _present_mask(self, ids):
        cur = self._cur
        return np.fromiter((cur[i] is not None for i in ids.tolist()), bool, ids.size)

    def _score(self, ids):
        cur = self._cur
        return np.fromiter((cur[i] for i in ids.tolist()), np.float64, ids.size)

    def _py_scores(self, values: np.ndarray) -> list:
        return values.astype(np.int64).tolist() if self._packed else values.tolist()

    def _insert(self, ids, scores):
        cur, add = self._cur, self._add
        for i, s in zip(ids.tolist(), self._py_scores(scores)):
            cur[i] = s
            add(self._k(i, s))
        self._size += ids.size

    def _update(self, ids, deltas):
        cur, add, remove = self._cur, self._add, self._remove
        if self._packed:
            for i, d in zip(ids.tolist(), deltas.astype(np.int64).tolist()):
                s = cur[i]
                remove(s * _PACK + i)
                s += d
                cur[i] = s
                add(s * _PACK + i)
        else:
            for i, d in zip(ids.tolist(), deltas.tolist()):
                s = cur[i]
                remove((s, i))
                s += d
                cur[i] = s
                add((s, i))

    def _assign(self, ids, scores):
        cur, add, remove, k = self._cur, self._add, self._remove, self._k
        for i, s in zip(ids.tolist(), self._py_scores(scores)):
            remove(k(i, cur[i]))
            cur[i] = s
            add(k(i, s))

    def _erase(self, ids):
        cur, remove, k = self._cur, self._remove, self._k
        for i in ids.tolist():
            remove(k(i, cur[i]))
            cur[i] = None
        self._size -= ids.size

    def _unpack(self, keys: list) -> Result:
        if self._packed:
            arr = np.array(keys, dtype=np.int64)
            return arr & (_PACK - 1), (arr >> 32).astype(np.float64)
        return (np.fromiter((i for _, i in keys), np.int64, len(keys)),
                np.fromiter((s for s, _ in keys), np.float64, len(keys)))


class BTreesIndex(_KeyedTree):
    """BTrees (ZODB's C B+tree): LLTreeSet of packed keys, or OOTreeSet of tuples."""

    name = "btrees"

    def __init__(self, capacity: int, validate: bool = True, key: str = "tuple") -> None:
        super().__init__(capacity, validate, key)
        if self._packed:
            from BTrees.LLBTree import LLTreeSet as TreeSet
        else:
            from BTrees.OOBTree import OOTreeSet as TreeSet
        self._tree = TreeSet()
        self._add, self._remove = self._tree.add, self._tree.remove
        self.description = ("BTrees LLTreeSet of packed int keys score*2^32+id" if self._packed
                            else "BTrees OOTreeSet of (score, id) tuples")

    def _take(self, n, from_top):
        keys = self._tree.keys()
        if from_top:
            got = list(keys[-n:])
            got.reverse()
        else:
            got = list(keys[:n])
        return self._unpack(got)


class SortedListIndex(_KeyedTree):
    """sortedcontainers.SortedList of packed int keys or (score, id) tuples."""

    name = "sortedlist"

    def __init__(self, capacity: int, validate: bool = True, key: str = "tuple") -> None:
        from sortedcontainers import SortedList

        super().__init__(capacity, validate, key)
        self._list = SortedList()
        self._add, self._remove = self._list.add, self._list.remove
        self.description = ("sortedcontainers.SortedList of packed int keys" if self._packed
                            else "sortedcontainers.SortedList of (score, id) tuples")

    def _insert(self, ids, scores):
        if self._size == 0:  # bulk load: SortedList sorts once
            vals = self._py_scores(scores)
            cur = self._cur
            for i, s in zip(ids.tolist(), vals):
                cur[i] = s
            self._list.update(self._k(i, s) for i, s in zip(ids.tolist(), vals))
            self._size += ids.size
            return
        super()._insert(ids, scores)

    def _take(self, n, from_top):
        m = len(self._list)
        got = list(self._list.islice(m - n, m, reverse=True) if from_top else self._list.islice(0, n))
        return self._unpack(got)


# --------------------------------------------------------------------------------- C++

class _Cpp(Baseline):
    """A socbi._core baseline: argument checks and GIL release as for socbi itself."""

    native_threads = True

    def __init__(self, capacity: int, validate: bool = True) -> None:
        super().__init__(capacity, validate)
        self.obj = None  # set by subclasses

    def __len__(self):
        return len(self.obj)

    def __contains__(self, item):
        return item in self.obj

    def _contains(self, i):
        return i in self.obj

    def _present_mask(self, ids):
        return np.array([int(i) in self.obj for i in ids], bool)

    def insert(self, ids, scores):
        self.obj.insert(ids, scores)

    def update(self, ids, deltas, threads: int = 1):
        self.obj.update(ids, deltas, threads)

    def assign(self, ids, scores):
        self.obj.assign(ids, scores)

    def erase(self, ids):
        self.obj.erase(ids)

    def score(self, ids):
        return self.obj.score(ids)

    def prepare(self, from_top: bool = True):
        self.obj.prepare(bool(from_top))

    def take(self, n, from_top: bool = True):
        return self.obj.take(n, bool(from_top))

    def top(self, n):
        return self.obj.top(n)

    def bottom(self, n):
        return self.obj.bottom(n)

    _insert = _update = _assign = _erase = _score = _take = None  # type: ignore[assignment]

    def memory_bytes(self) -> int:
        return int(self.obj.memory_bytes())


class CppArray(_Cpp):
    """C++ score array; per query sort / heap / partial_sort / select (socbi._core.ArrayBaseline)."""

    _DESCRIPTIONS = {
        "sort": "C++ array + std::sort per query",
        "heap": "C++ array + std::make_heap, n pops per query",
        "partial_sort": "C++ array + std::partial_sort per query",
        "select": "C++ array + std::nth_element + sort of n per query",
    }

    def __init__(self, capacity: int, validate: bool = True, method: str = "sort", sync: str = "atomic") -> None:
        from socbi import _core

        super().__init__(capacity, validate)
        self.obj = _core.ArrayBaseline(capacity, method, sync)
        self.name = f"cpp_{method}" + ("" if sync == "atomic" else f"_{sync}")
        self.native_threads = sync != "none"
        lock = {"atomic": "lock-free CAS adds", "mutex": "one mutex per item", "none": "one thread"}[sync]
        self.description = f"{self._DESCRIPTIONS[method]} ({lock})"


class CppSet(_Cpp):
    """C++ std::set of (score, id) keys (socbi._core.SetBaseline)."""

    def __init__(self, capacity: int, validate: bool = True, sync: str = "none") -> None:
        from socbi import _core

        super().__init__(capacity, validate)
        self.obj = _core.SetBaseline(capacity, sync)
        self.name = "cpp_set" + ("" if sync == "none" else f"_{sync}")
        self.native_threads = sync == "mutex"
        self.description = "C++ std::set of (score, id)" + (" (one mutex per item)" if sync == "mutex" else "")


# ------------------------------------------------------------------------------ Locked

class Locked(Baseline):
    """One threading.Lock around a non-concurrent structure, as a user must share it.

    Every method takes the lock. ``update(ids, deltas, threads=t)`` splits the batch into
    t contiguous parts and runs t Python threads, each applying its part in chunks of
    ``lock_chunk`` ids with the lock held per chunk (per-id locking from Python would
    time the lock, not the structure). Many Python threads may call any method at once.
    """

    native_threads = True

    def __init__(self, base: Baseline, lock_chunk: int = 256) -> None:
        if not isinstance(base, Baseline):
            raise TypeError(f"base must be a socbi.baselines.Baseline, got {type(base).__name__}")
        if isinstance(lock_chunk, bool) or not isinstance(lock_chunk, (int, np.integer)) or lock_chunk < 1:
            raise ValueError(f"lock_chunk = {lock_chunk!r} is invalid; pass a positive integer")
        self.base = base
        self._capacity = base.capacity
        self.validate = base.validate
        self.lock_chunk = int(lock_chunk)
        self._lock = threading.Lock()
        self.name = f"{base.name}+lock"
        self.description = f"{base.description}, one threading.Lock"

    def __len__(self):
        with self._lock:
            return len(self.base)

    def __contains__(self, item):
        with self._lock:
            return item in self.base

    def _contains(self, i):
        return i in self

    def _present_mask(self, ids):
        with self._lock:
            return self.base._present_mask(ids)

    def insert(self, ids, scores):
        with self._lock:
            self.base.insert(ids, scores)

    def assign(self, ids, scores):
        with self._lock:
            self.base.assign(ids, scores)

    def erase(self, ids):
        with self._lock:
            self.base.erase(ids)

    def score(self, ids):
        with self._lock:
            return self.base.score(ids)

    def prepare(self, from_top: bool = True):
        with self._lock:
            self.base.prepare(from_top)

    def take(self, n, from_top: bool = True):
        with self._lock:
            return self.base.take(n, from_top)

    def top(self, n):
        with self._lock:
            return self.base.top(n)

    def bottom(self, n):
        with self._lock:
            return self.base.bottom(n)

    def update(self, ids, deltas, threads: int = 1):
        threads = _check_threads(threads)
        if threads == -1:
            import os

            threads = os.cpu_count() or 1
        if self.validate:  # whole batch first, so no thread applies part of a bad batch
            ids_arr = _as_ids(ids, self._capacity)
            vals = _as_values(deltas, ids_arr.size, "deltas")
            self.base._require(ids_arr, True, "updated")
        else:
            ids_arr = np.atleast_1d(np.asarray(ids, dtype=np.int64))
            vals = np.asarray(deltas, dtype=np.float64)
            if vals.ndim == 0:
                vals = np.full(ids_arr.size, float(vals))
        if threads == 1 or ids_arr.size <= self.lock_chunk:
            self._apply(ids_arr, vals, 0, ids_arr.size)
            return
        n = ids_arr.size
        bounds = [n * t // threads for t in range(threads + 1)]
        errors: list = []

        def work(b: int, e: int) -> None:
            try:
                self._apply(ids_arr, vals, b, e)
            except BaseException as exc:  # re-raised on the caller
                errors.append(exc)

        pool = [threading.Thread(target=work, args=(bounds[t], bounds[t + 1])) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        if errors:
            raise errors[0]

    def _apply(self, ids: np.ndarray, vals: np.ndarray, b: int, e: int) -> None:
        step = self.lock_chunk
        for s in range(b, e, step):
            with self._lock:
                self.base.update(ids[s:min(e, s + step)], vals[s:min(e, s + step)])

    _insert = _update = _assign = _erase = _score = _take = None  # type: ignore[assignment]

    def memory_bytes(self):
        return self.base.memory_bytes()


# ---------------------------------------------------------------------------- registry

def _cpp_array(method: str, sync: str) -> Callable[..., Baseline]:
    return lambda capacity, validate=True, **kw: CppArray(capacity, validate, method=method, sync=sync)


STRUCTURES: Dict[str, Callable[..., Baseline]] = {
    "socbi": lambda capacity, validate=True, **kw: SocbiIndex(capacity, validate, **kw),
    "numpy_argsort": lambda capacity, validate=True, **kw: NumpyArgsort(capacity, validate),
    "numpy_partition": lambda capacity, validate=True, **kw: NumpyPartition(capacity, validate),
    "heapq": lambda capacity, validate=True, **kw: HeapqIndex(capacity, validate),
    "btrees": lambda capacity, validate=True, key="tuple", **kw: BTreesIndex(capacity, validate, key=key),
    "sortedlist": lambda capacity, validate=True, key="tuple", **kw: SortedListIndex(capacity, validate, key=key),
    "cpp_sort": _cpp_array("sort", "atomic"),
    "cpp_heap": _cpp_array("heap", "atomic"),
    "cpp_partial_sort": _cpp_array("partial_sort", "atomic"),
    "cpp_select": _cpp_array("select", "atomic"),
    "cpp_sort_mutex": _cpp_array("sort", "mutex"),
    "cpp_heap_mutex": _cpp_array("heap", "mutex"),
    "cpp_partial_sort_mutex": _cpp_array("partial_sort", "mutex"),
    "cpp_select_mutex": _cpp_array("select", "mutex"),
    "cpp_set": lambda capacity, validate=True, **kw: CppSet(capacity, validate, sync="none"),
    "cpp_set_mutex": lambda capacity, validate=True, **kw: CppSet(capacity, validate, sync="mutex"),
}


def make(name: str, capacity: int, *, validate: bool = True, locked: bool = False, lock_chunk: int = 256,
         **options) -> Baseline:
    """Build the structure `name` (see STRUCTURES) with room for ids 0..capacity-1.

    options: ``key`` ("packed" or "tuple") for btrees/sortedlist; ``node_size`` and
    ``bulk`` for socbi. ``locked=True`` wraps it in :class:`Locked`.
    """
    if name not in STRUCTURES:
        raise ValueError(f"structure {name!r} is not known; choose from {', '.join(STRUCTURES)}")
    if name not in ("btrees", "sortedlist"):
        options.pop("key", None)  # the key choice only shapes the tree structures
    s = STRUCTURES[name](capacity, validate, **options)
    s.name = f"{name}({s.key})" if name in ("btrees", "sortedlist") else name
    return Locked(s, lock_chunk) if locked else s


def describe(name: str, **options) -> str:
    """One line saying what `name` is (builds a tiny instance)."""
    return make(name, 1, **options).description
