"""So-CBI boundary frequency: how often an unlabelled sample is a labelled sample's neighbour.

The paper (So-CBI §3.2, eqs. 9-10) keeps, for every unlabelled sample u, a counter
S'(u) that starts at 0 and is incremented each time u is among the K nearest
unlabelled neighbours N(x) of a labelled sample x; the samples with the **smallest**
counters are taken as the valuable ones (far from everything labelled so far).

Definition used here (so that counts are a function of the current state, not of
the order of rounds)::

    count(u) = |{ x labelled : u in N_K(x; U) }|,   u in U (the unlabelled pool),

where N_K(x; U) is the answer of the neighbour pool (:mod:`socbi.knn`) for x's
embedding over the *current* unlabelled set U, with K_eff = min(K, |U|).

:class:`BoundaryScorer` maintains these counts incrementally in a score index
(``socbi.SemiOrderedIndex`` by default). One labelling round with a batch B:

1. B leaves the pool (marked deleted in HNSW) and the score index (``erase``);
2. every x in B asks for its K nearest unlabelled neighbours: +1 each;
3. *repair*: an older labelled x whose stored list contained a member of B lost that
   neighbour, so it is queried again; samples that entered its list get +1 (and, with an
   approximate backend, any that left it get -1);
4. all deltas of the round go to the index in **one** batched ``update`` call (duplicate
   ids allowed, ``threads`` update threads).

With the exact backend the incremental counts equal :meth:`BoundaryScorer.recount`
(all labelled samples re-queried against the current pool) exactly; with HNSW they
equal it up to the graph search's dependence on which nodes are deleted. Step 3
touches only lists that contained a newly labelled sample, so it is cheap exactly when
the selection takes low-count samples (a sample with count c sits in c lists).

Ties: counts are small integers, so most of the pool ties. The index orders ties by its
own id, so with ``tie_break="random"`` (default) the scorer stores sample ``i`` under
the index id ``perm[i]`` of a fixed permutation drawn from ``seed``: equal counts then
come out in a seeded random order instead of by sample id (the order of a data set is
rarely random). ``tie_break="id"`` uses the identity. Scores stay exact integers; an
earlier design added a per-sample jitter in [0, 0.5) instead, which made nearly every
+1 a node move in the semi-ordered index (about 2x slower updates at 1M samples).
Use the scorer's methods, not ``scorer.index`` directly, to read counts by sample id.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ._checks import positive_int as _positive_int
from ._checks import readonly_view
from ._threads import check_threads

from . import knn as _knn
from .knn import NeighbourPool, _check_embeddings, _check_ids

__all__ = ["BoundaryScorer", "RoundStats", "default_index_factory", "round_deltas"]


def default_index_factory() -> Callable[..., Any]:
    """Return ``socbi.SemiOrderedIndex``, imported now (not at module import time)."""
    try:
        from socbi import SemiOrderedIndex  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ImportError(
            "socbi.SemiOrderedIndex is not importable (the C++ extension socbi._core is not "
            "built or socbi/__init__.py does not export it); build it with `pip install .`, or "
            "for small pools pass index_factory=socbi._reference.ReferenceIndex") from exc
    return SemiOrderedIndex


@dataclass
class RoundStats:
    """What one labelling round cost. Times are wall-clock seconds."""

    labelled: int = 0          # samples labelled in this round
    queries: int = 0           # neighbour queries issued (new samples + repairs)
    repairs: int = 0           # older labelled samples re-queried
    updates: int = 0           # (id, delta) pairs sent to the index
    delete_s: float = 0.0      # neighbour pool: mark the new labels deleted
    query_s: float = 0.0       # neighbour pool: K-NN queries (new samples + repairs)
    index_s: float = 0.0       # score index: erase + update
    other_s: float = 0.0       # numpy bookkeeping (building deltas, tables)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


class _LabelledState:
    """The labelled-flag part of the scorer API, over a bool array ``self._labelled``;
    shared by :class:`BoundaryScorer` and the sharded scorer in ``socbi.distributed``."""

    n_samples: int
    _labelled: np.ndarray  # bool, one flag per sample
    _nbr: np.ndarray  # (n_samples, K) neighbour lists of labelled samples, -1 padded

    @staticmethod
    def _labelled_mask(labelled: Any, n: int) -> np.ndarray:
        if labelled is None:
            return np.zeros(n, dtype=bool)
        arr = np.asarray(labelled)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise ValueError(f"labelled mask has shape {arr.shape}, expected ({n},); pass one "
                                 f"flag per sample or an array of ids")
            return arr.copy()
        ids = _check_ids(arr, n, name="labelled")
        mask = np.zeros(n, dtype=bool)
        mask[ids] = True
        return mask

    @property
    def labelled_mask(self) -> np.ndarray:
        """Read-only bool view: True for labelled samples."""
        return readonly_view(self._labelled)

    def labelled_ids(self) -> np.ndarray:
        """Ascending labelled ids. O(n)."""
        return np.flatnonzero(self._labelled).astype(np.int64)

    def unlabelled_ids(self) -> np.ndarray:
        """Ascending unlabelled ids. O(n)."""
        return np.flatnonzero(~self._labelled).astype(np.int64)

    def neighbours(self, ids: Any) -> np.ndarray:
        """Stored neighbour lists (len(ids), K) of labelled ``ids``; -1 pads short lists."""
        ids = _check_ids(ids, self.n_samples)
        bad = ~self._labelled[ids]
        if bad.any():
            raise ValueError(f"ids {ids[bad][:5].tolist()} are not labelled, so they have no "
                             f"neighbour list; pass labelled ids")
        return self._nbr[ids].astype(np.int64)

    def _unlabelled_arg(self, ids: Any) -> np.ndarray:
        """``ids`` checked to be unlabelled (None: every unlabelled id, ascending)."""
        if ids is None:
            return self.unlabelled_ids()
        ids = _check_ids(ids, self.n_samples)
        bad = self._labelled[ids]
        if bad.any():
            raise ValueError(f"ids {ids[bad][:5].tolist()} are labelled and have no count; "
                             f"pass unlabelled ids")
        return ids

    def _check_lists_against_counts(self, holder: str) -> Tuple[np.ndarray, np.ndarray]:
        """AssertionError unless the stored lists hold only unlabelled ids and the counts
        that ``holder`` keeps (``self.counts()``) equal those the lists imply. Returns the
        unlabelled ids and their counts. O(n + |L| K)."""
        lab = self.labelled_ids()
        flat = self._nbr[lab].ravel()
        flat = flat[flat >= 0].astype(np.int64)
        if flat.size and self._labelled[flat].any():
            raise AssertionError("a stored neighbour list contains a labelled sample")
        unl = self.unlabelled_ids()
        implied = np.bincount(flat, minlength=self.n_samples)[unl]
        held = self.counts()  # type: ignore[attr-defined]
        if not np.array_equal(implied, held):
            bad = np.flatnonzero(implied != held)
            raise AssertionError(f"{holder} counts differ from the stored lists at ids "
                                 f"{unl[bad][:5].tolist()}: {holder} {held[bad][:5].tolist()}, "
                                 f"lists {implied[bad][:5].tolist()}")
        return unl, held

    @staticmethod
    def _check_select_n(n: Any, avail: int) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if avail == 0 and n > 0:
            raise ValueError("the unlabelled pool is empty: every sample is labelled; nothing to select")
        if n > avail:
            raise ValueError(f"n={n} exceeds the {avail} unlabelled samples; ask for at most {avail}")


class BoundaryScorer(_LabelledState):
    """So-CBI boundary counts of an unlabelled pool, kept in a semi-ordered score index.

    Parameters
    ----------
    embeddings : (n, d) array
        One embedding per sample; sample ids are the row numbers 0..n-1. Must be finite.
        Kept by reference when already C-contiguous float32: do not modify it afterwards.
    k : int
        K, neighbours per labelled sample (paper: K; default 10).
    labelled : bool mask (n,) or id array, optional
        Samples labelled before the first round; they are counted at construction.
    pool : NeighbourPool, optional
        A prebuilt pool (e.g. loaded next to a session) over exactly these samples: its
        unlabelled ids must be the complement of ``labelled``. Built when omitted.
    backend, space, pool_options :
        How to build the pool when ``pool`` is None: ``"hnsw"`` (default) or ``"exact"``,
        ``"l2"`` or ``"cosine"``, and extra keyword arguments for the pool class
        (M, ef_construction, ef, seed, num_threads, ...).
    index_factory : callable, optional
        ``index_factory(capacity)`` (or with ``node_size=``) returning the score index;
        defaults to ``socbi.SemiOrderedIndex``, resolved when the scorer is built.
        ``socbi._reference.ReferenceIndex`` works for small pools.
    threads : int
        Update threads passed to ``index.update`` (needs an index that accepts them;
        -1 = all cores for ``SemiOrderedIndex``).
    tie_break : "random" or "id"; seed : int
        Order among equal counts (see the module docstring).

    Complexity: construction builds the pool (HNSW: O(n log n)) and inserts n scores;
    a round of b new labels costs b + r pool queries (r = repaired lists), one index
    update of about K * (b + r) deltas, and O(|L| K) numpy work to find the r lists.
    Memory: 4 n K bytes of neighbour lists on top of the pool and the index.

    Thread safety: not synchronised. One thread at a time may call :meth:`label`,
    :meth:`recount`, :meth:`check`, :meth:`save`; read-only queries (:meth:`select`,
    :meth:`counts`) may run concurrently with each other, and the index itself tolerates
    queries during the batched update inside :meth:`label` (they see each count at some
    instant of the update).
    """

    def __init__(self, embeddings: Any, k: int = 10, *, labelled: Any = None,
                 pool: Optional[NeighbourPool] = None, backend: str = "hnsw",
                 space: str = "l2", pool_options: Optional[Dict[str, Any]] = None,
                 index_factory: Optional[Callable[..., Any]] = None,
                 node_size: Optional[int] = None, threads: int = 1,
                 tie_break: str = "random", seed: int = 0, progress: bool = True,
                 _neighbours: Optional[np.ndarray] = None) -> None:
        x = _check_embeddings(embeddings, None, name="embeddings")
        n, d = x.shape
        if n == 0:
            raise ValueError("embeddings has no rows; pass at least one sample")
        if n > np.iinfo(np.int32).max:
            raise ValueError(f"embeddings has {n} rows; at most {np.iinfo(np.int32).max} are supported")
        self.k = _positive_int("k", k)
        if self.k > n:  # the (n, k) neighbour table would be mostly padding, or not fit in memory
            raise ValueError(f"k={self.k} exceeds the {n} samples; pass k <= {n}")
        self.threads = check_threads(threads)  # -1 = the core index's "all cores"
        if tie_break not in ("random", "id"):
            raise ValueError(f"tie_break must be 'random' or 'id', got {tie_break!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if node_size is not None:
            node_size = _positive_int("node_size", node_size, lo=2)
        lab = self._labelled_mask(labelled, n)

        if pool is None:
            opts = dict(pool_options or {})
            opts.setdefault("progress", progress)
            pool = _knn.make_pool(backend, d, n, space, **opts)
            unl = np.flatnonzero(~lab)
            pool.add(unl, x[unl])
        else:
            if not isinstance(pool, NeighbourPool):
                raise ValueError(f"pool must be a socbi.knn.NeighbourPool, got {type(pool).__name__}")
            if pool.capacity != n or pool.dim != d:
                raise ValueError(f"pool has capacity {pool.capacity} and dim {pool.dim}, but "
                                 f"embeddings is {n} x {d}; build the pool over these embeddings")
            st = pool.state
            mismatch = (st == _knn.UNLABELLED) != ~lab
            if mismatch.any():
                raise ValueError(f"pool disagrees with labelled on ids {np.flatnonzero(mismatch)[:5].tolist()}: "
                                 f"the pool's unlabelled samples must be exactly the ones not in labelled")
        if _neighbours is not None:
            _neighbours = np.asarray(_neighbours)
            if _neighbours.shape != (n, self.k):
                raise ValueError(f"saved neighbour table has shape {_neighbours.shape}, expected {(n, self.k)}")

        factory = index_factory if index_factory is not None else default_index_factory()
        index = factory(n) if node_size is None else factory(n, node_size=node_size)
        if self.threads != 1:
            try:
                index.update(np.empty(0, np.int64), np.empty(0, np.float64), threads=self.threads)
            except TypeError as exc:
                raise ValueError(f"threads={self.threads} needs an index whose update() accepts "
                                 f"threads; {type(index).__name__} does not (use threads=1)") from exc

        self.embeddings = x
        self.pool = pool
        self.index = index
        self.tie_break = tie_break
        self.seed = int(seed)
        self.progress = bool(progress)
        self.n_samples = n
        self._labelled = lab
        self._nbr = np.full((n, self.k), -1, dtype=np.int32)
        if tie_break == "random":
            self._perm: Optional[np.ndarray] = np.random.default_rng(self.seed).permutation(n)
            self._inv: Optional[np.ndarray] = np.empty(n, dtype=np.int64)
            self._inv[self._perm] = np.arange(n)
        else:
            self._perm = self._inv = None
        unl = np.flatnonzero(~lab).astype(np.int64)
        self.index.insert(self._slot(unl), np.zeros(unl.size))
        # Warm-up: a bulk insert of equal scores leaves oversized nodes that the core index
        # splits lazily on the first query (~20 ms at 1M samples). Pay that here, at set-up,
        # instead of inside the first round's selection.
        if unl.size:
            self.index.bottom(1)
        self.last_round = RoundStats()
        lab_ids = np.flatnonzero(lab).astype(np.int64)
        if _neighbours is not None:  # restore from a save: no queries
            self._nbr[lab_ids] = _neighbours[lab_ids]
            flat = self._nbr[lab_ids].ravel()
            flat = flat[flat >= 0].astype(np.int64)
            if flat.size and (lab[flat]).any():
                raise ValueError("saved neighbour lists contain labelled samples; the save is corrupt")
            if flat.size:
                self._update(flat, np.ones(flat.size))
        elif lab_ids.size:
            self.last_round = self._attach(lab_ids, from_pool=False)

    # ------------------------------------------------------------------ helpers
    def _slot(self, ids: np.ndarray) -> np.ndarray:
        """Index ids of sample ids (the tie-break permutation)."""
        return ids if self._perm is None else self._perm[ids]

    def _sample(self, slots: np.ndarray) -> np.ndarray:
        """Sample ids of index ids."""
        slots = np.asarray(slots, dtype=np.int64)
        return slots if self._inv is None else self._inv[slots]

    def _update(self, ids: np.ndarray, deltas: np.ndarray) -> None:
        """Add ``deltas`` to the counts of sample ``ids`` (one batched index call)."""
        if ids.size == 0:
            return
        ids = self._slot(ids)
        if self.threads != 1:
            self.index.update(ids, deltas, threads=self.threads)
        else:
            self.index.update(ids, deltas)

    @staticmethod
    def _to_counts(scores: Any) -> np.ndarray:
        return np.rint(np.asarray(scores, dtype=np.float64)).astype(np.int64)

    # ------------------------------------------------------------------ state
    def __len__(self) -> int:
        """Number of unlabelled samples. O(1)."""
        return len(self.pool)

    def counts(self, ids: Any = None) -> np.ndarray:
        """Boundary counts (int64) of unlabelled ``ids`` (default: all, ascending id). O(len(ids))."""
        ids = self._unlabelled_arg(ids)
        if ids.size == 0:
            return np.empty(0, np.int64)
        return self._to_counts(self.index.score(self._slot(ids)))

    def select(self, n: int, *, largest: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` unlabelled samples with the smallest counts (paper), or the largest.

        Returns ``(ids int64, counts int64)`` best-first. ``bottom``/``top`` of the index:
        O(n + node size) with the semi-ordered index. Raises ValueError when the pool is
        empty or smaller than ``n``.
        """
        self._check_select_n(n, len(self.pool))
        slots, scores = self.index.top(int(n)) if largest else self.index.bottom(int(n))
        return self._sample(slots), self._to_counts(scores)

    # ------------------------------------------------------------------ rounds
    def label(self, ids: Any) -> RoundStats:
        """Move ``ids`` from the unlabelled pool to the labelled set and update counts.

        ``ids`` must be distinct, in range and unlabelled; otherwise ValueError naming
        them, and nothing changes (pool, index and tables are touched only after
        validation; a failing neighbour query restores the pool). Returns and stores
        (``last_round``) the time split between pool queries and index updates.
        """
        ids = _check_ids(ids, self.n_samples)
        already = self._labelled[ids]
        if already.any():
            raise ValueError(f"ids {ids[already][:5].tolist()}{' ...' if already.sum() > 5 else ''} "
                             f"are labelled already; pass only unlabelled ids")
        if ids.size == 0:
            self.last_round = RoundStats()
            return self.last_round
        stats = self._attach(ids, from_pool=True)
        self.last_round = stats
        return stats

    def _attach(self, new: np.ndarray, *, from_pool: bool) -> RoundStats:
        """Count the neighbours of ``new``.

        ``from_pool=True`` (a round): ``new`` are unlabelled samples that leave the pool and
        the index, and older lists that held them are repaired. ``from_pool=False`` (set-up):
        ``new`` were labelled before the pool existed; no other list exists yet.
        """
        stats = RoundStats(labelled=int(new.size))
        in_pool = repair = from_pool
        t_d = time.perf_counter()
        if in_pool:
            self.pool.mark_labelled(new)
        t0 = time.perf_counter()
        stats.delete_s = t0 - t_d
        try:
            k_eff = min(self.k, len(self.pool))
            affected = np.empty(0, np.int64)
            if repair:
                t_b = time.perf_counter()
                old = np.flatnonzero(self._labelled)
                if old.size:
                    is_new = np.zeros(self.n_samples, dtype=bool)
                    is_new[new] = True
                    tab = self._nbr[old]
                    hit = is_new[np.where(tab >= 0, tab, 0)] & (tab >= 0)
                    affected = old[hit.any(axis=1)].astype(np.int64)
                stats.other_s += time.perf_counter() - t_b
            if k_eff > 0:
                new_nbr, _ = self.pool.query(self.embeddings[new], k_eff)
                rep_nbr = (self.pool.query(self.embeddings[affected], k_eff)[0]
                           if affected.size else np.empty((0, k_eff), np.int64))
            else:
                new_nbr = np.empty((new.size, 0), np.int64)
                rep_nbr = np.empty((affected.size, 0), np.int64)
        except BaseException:
            if in_pool:
                self.pool.unmark_labelled(new)
            raise
        t1 = time.perf_counter()
        stats.query_s = t1 - t0 - stats.other_s
        stats.queries = int(new.size + affected.size)
        stats.repairs = int(affected.size)

        # Deltas: +1 for every neighbour of a new sample, and the list changes of repairs.
        t_b = time.perf_counter()
        upd_ids, upd_d = round_deltas(self._nbr, self._labelled, new, new_nbr, affected, rep_nbr)
        t2 = time.perf_counter()
        if in_pool:
            self.index.erase(self._slot(new))
        self._update(upd_ids, upd_d)
        t3 = time.perf_counter()
        self._labelled[new] = True
        self._nbr[new] = -1
        self._nbr[new, :k_eff] = new_nbr
        if affected.size:
            self._nbr[affected] = -1
            self._nbr[affected, :k_eff] = rep_nbr
        t4 = time.perf_counter()
        stats.updates = int(upd_ids.size)
        stats.index_s = t3 - t2
        stats.other_s += (t2 - t_b) + (t4 - t3)
        return stats

    # ------------------------------------------------------------------ verification
    def recount(self) -> np.ndarray:
        """Counts of all unlabelled samples (ascending id) from scratch.

        Re-queries every labelled sample against the current pool: O(|L|) queries.
        Compare with :meth:`counts` (what the index holds incrementally).
        """
        lab = self.labelled_ids()
        unl = self.unlabelled_ids()
        k_eff = min(self.k, len(self.pool))
        total = np.zeros(self.n_samples, dtype=np.int64)
        if lab.size and k_eff > 0:
            nbr, _ = self.pool.query(self.embeddings[lab], k_eff)
            total += np.bincount(nbr.ravel(), minlength=self.n_samples)
        return total[unl]

    def recount_agreement(self) -> float:
        """Fraction of unlabelled samples whose count equals a fresh :meth:`recount`, in
        [0, 1]: 1.0 for the exact pool; for HNSW it measures how far the approximate
        search drifted. O(n) plus |L| pool queries."""
        unl = self.unlabelled_ids()
        if unl.size == 0:
            return 1.0
        return float(np.mean(self.recount() == self.counts(unl)))

    def check(self, *, recount: Optional[bool] = None) -> None:
        """Verify the scorer's invariants; raise AssertionError naming the first broken one.

        Checks sizes of pool / index / labelled set, that stored lists hold only
        unlabelled ids, that the index counts equal the counts implied by the stored
        lists (what the pool returned; exact for every backend) and the index's own
        ``check()`` when it has one. ``recount`` (default: True for the exact backend
        only) also compares the counts with :meth:`recount`, a fresh query of every
        labelled sample: equal for the exact pool, while an HNSW graph search depends on
        which nodes are deleted, so a healthy HNSW pool can differ there -- measure that
        with :meth:`recount_agreement` instead. O(n + |L| K) plus the recount's queries.
        """
        if recount is None:
            recount = self.pool.backend == "exact"
        n_unl = int((~self._labelled).sum())
        if len(self.pool) != n_unl:
            raise AssertionError(f"pool holds {len(self.pool)} unlabelled samples, scorer {n_unl}")
        if len(self.index) != n_unl:
            raise AssertionError(f"index holds {len(self.index)} samples, scorer {n_unl}")
        idx_check = getattr(self.index, "check", None)
        if callable(idx_check):
            idx_check()
        unl, held = self._check_lists_against_counts("index")
        if recount:
            fresh = self.recount()
            if not np.array_equal(fresh, held):
                bad = np.flatnonzero(fresh != held)
                raise AssertionError(f"incremental counts differ from a recount at {bad.size} ids, "
                                     f"e.g. {unl[bad][:5].tolist()}: incremental "
                                     f"{held[bad][:5].tolist()}, recount {fresh[bad][:5].tolist()}")

    # ------------------------------------------------------------------ persistence
    def save(self, path: Any) -> None:
        """Save the pool and the scorer's state next to a session (``<path>.*``).

        Counts are not stored: :meth:`load` rebuilds them from the neighbour lists
        without any query. The embeddings are not stored either. O(n K).
        """
        path = Path(path)
        self.pool.save(path)
        _knn._atomic_savez(Path(str(path) + ".scorer.npz"), dict(
            k=self.k, labelled=self._labelled, neighbours=self._nbr,
            tie_break=self.tie_break, seed=self.seed))

    @classmethod
    def load(cls, path: Any, embeddings: Any, *, index_factory: Optional[Callable[..., Any]] = None,
             node_size: Optional[int] = None, threads: int = 1, progress: bool = True,
             num_threads: Optional[int] = None) -> "BoundaryScorer":
        """Rebuild a scorer saved by :meth:`save`, over the same ``embeddings``. O(n K)."""
        path = Path(path)
        meta = Path(str(path) + ".scorer.npz")
        if not meta.exists():
            raise FileNotFoundError(f"no saved scorer at {str(path)!r}: {meta.name} is missing")
        with np.load(meta, allow_pickle=False) as z:
            k = int(z["k"])
            labelled = z["labelled"].astype(bool)
            neighbours = z["neighbours"]
            tie_break = str(z["tie_break"])
            seed = int(z["seed"])
        pool = _knn.load_pool(path, num_threads=num_threads, progress=progress)
        return cls(embeddings, k, labelled=labelled, pool=pool, index_factory=index_factory,
                   node_size=node_size, threads=threads, tie_break=tie_break, seed=seed,
                   progress=progress, _neighbours=neighbours)

    def __repr__(self) -> str:
        return (f"BoundaryScorer(n={self.n_samples}, k={self.k}, labelled={int(self._labelled.sum())}, "
                f"pool={type(self.pool).__name__}, index={type(self.index).__name__})")


def round_deltas(nbr: np.ndarray, labelled: np.ndarray, new: np.ndarray, new_nbr: np.ndarray,
                 affected: np.ndarray, rep_nbr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The (ids, deltas) one labelling round sends to the index.

    +1 for every neighbour of a newly labelled sample (rows of ``new_nbr``), and for each
    repaired list (``affected`` labelled samples, their stored lists in ``nbr``, their new
    lists ``rep_nbr``): +1 for a member that entered it, -1 for a member that left it
    (members that are labelled now, or in ``new``, have left the pool and are not counted).
    Used by :class:`BoundaryScorer` and the sharded scorer. O(K (|new| + |affected|) log).
    """
    parts_ids = [new_nbr.ravel()]
    parts_d = [np.ones(new_nbr.size)]
    if affected.size:
        n = np.int64(labelled.shape[0])
        rows = np.arange(affected.size, dtype=np.int64)
        old_tab = nbr[affected].astype(np.int64)
        keep = old_tab >= 0
        keep[keep] = ~labelled[old_tab[keep]]
        keep[keep] &= ~np.isin(old_tab[keep], new)
        old_keys = (rows[:, None] * n + old_tab)[keep]
        new_keys = (rows[:, None] * n + rep_nbr).ravel()
        added = np.setdiff1d(new_keys, old_keys, assume_unique=True) % n
        removed = np.setdiff1d(old_keys, new_keys, assume_unique=True) % n
        parts_ids += [added, removed]
        parts_d += [np.ones(added.size), -np.ones(removed.size)]
    return np.concatenate(parts_ids).astype(np.int64), np.concatenate(parts_d).astype(np.float64)
