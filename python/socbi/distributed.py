"""So-CBI past one machine: a neighbour pool and score index sharded over Ray actors.

The unlabelled pool is split across ``n_shards`` Ray actors. Shard ``s`` owns the sample
ids with ``shard_of(id) == s`` (a stable hash of the id, or contiguous ranges) and holds

* a :class:`socbi.knn.NeighbourPool` (``"exact"`` or ``"hnsw"``) over its own embeddings,
* a ``socbi.SemiOrderedIndex`` with the boundary counts of its own unlabelled ids.

Global ids are kept: inside a shard, sample ``g`` is stored under its rank among the
shard's sorted ids (pool) and under the rank of its tie-break slot ``perm[g]`` among
the shard's slots (index). Both maps are monotone, so a shard orders distance ties by
global id and count ties by global slot, exactly as the single-machine
:class:`socbi.scoring.BoundaryScorer` does, and the merged answers are identical.

One scoring round (:meth:`ShardedScorer.label`) with a batch ``B``:

1. the queries (``B`` plus the older labelled samples whose list lost a member of
   ``B``) are fetched from their owning shards and go into Ray's object store **once**
   (``ray.put``); every shard receives the
   reference, marks its members of ``B`` labelled and returns its local K nearest
   unlabelled candidates with distances;
2. the driver merges the ``n_shards * K`` candidates of each query to the global K
   nearest by ``(distance, id)`` (:func:`merge_candidates`) and forms the +1/-1
   deltas exactly as ``BoundaryScorer`` does;
3. the deltas are grouped by owning shard and each shard applies its group in one
   batched ``update`` (and erases its members of ``B`` from its index).

``select(n)`` asks every shard for its local ``n`` lowest (or highest) counts and merges
them by ``(count, slot)`` (:func:`merge_ranked`): the exact global answer.

Rows: shards load their own rows from storage every node can read (a ``.npy`` file,
Parquet files or URI, a Ray Dataset; see :mod:`socbi.storage`), validated chunk by chunk
while they load. The driver never reads the matrix: it holds the labelled ids and their
neighbour lists (O(|L| K)) and fetches the rows of a round's queries from their owning
shards (:meth:`ShardedScorer.rows`), O(batch d) bytes.

Faults: shards write a full snapshot every ``checkpoint_every`` rounds and, between
snapshots, one delta file per round (the ids marked labelled and the count deltas it
applied) into ``checkpoint_dir``: a shared folder or any pyarrow filesystem URI. When a
shard actor dies (``ray.exceptions.RayActorError``) the driver starts a new actor for
that shard only, which loads the newest snapshot and replays its own delta files (no
neighbour query is needed); the interrupted round is then retried for the calls that
got no answer, so only the dead shard is queried again. Every shard call of a round
is idempotent by round number. Each recovery is recorded in
:attr:`ShardedScorer.recoveries` (which shard, from which snapshot, which rounds were
replayed). No label is lost: labels live on the driver and in the delta files.

:class:`DistributedLearner` is :class:`socbi.session.ActiveLearner` with a sharded
scorer (same ``query``/``teach``/``run``), with its own directory-based save/load;
:func:`make_learner` chooses the single-machine or sharded session from configuration.

Requires Ray (``pip install ray``); importing this module does not, building a scorer
does. Thread safety: a :class:`ShardedScorer` is not synchronised; drive it from one
thread. Each shard actor runs one call at a time (Ray's default), so shard state needs
no locking.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import knn as _knn
from .knn import _check_ids
from .scoring import RoundStats, _LabelledState, _positive_int, default_index_factory, round_deltas
from .session import ActiveLearner
from .strategies import PoolState
from .storage import ArrayRows, CheckpointStore, NpyRows, RowSource, RowsView, open_rows

__all__ = [
    "shard_of", "owned_ids", "merge_candidates", "merge_ranked", "ShardCore", "ShardedScorer",
    "DistributedLearner", "make_learner", "embed",
]

PathLike = Union[str, "os.PathLike[str]"]
_MASK32 = np.uint64(0xFFFFFFFF)


def _require_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("socbi.distributed needs Ray: install it with `pip install ray` "
                          "(or the socbi 'distributed' extra)") from exc
    return ray


# ---------------------------------------------------------------------------- ownership
def shard_of(ids: Any, n_shards: int, *, scheme: str = "hash", n_samples: Optional[int] = None
             ) -> np.ndarray:
    """Owning shard (int64) of each global id.

    ``scheme="hash"``: splitmix64(id) mod n_shards -- stable across processes, machines
    and Python versions (no ``hash()`` randomisation), balanced for any id order.
    ``scheme="range"``: ``id * n_shards // n_samples`` (contiguous blocks; needs
    ``n_samples``). O(len(ids)); pure function, thread-safe.
    """
    n_shards = _positive_int("n_shards", n_shards)
    ids = np.asarray(ids, dtype=np.int64)
    if scheme == "hash":
        with np.errstate(over="ignore"):
            z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        return (z % np.uint64(n_shards)).astype(np.int64)
    if scheme == "range":
        if n_samples is None or n_samples < 1:
            raise ValueError(f"scheme='range' needs n_samples >= 1, got {n_samples!r}")
        return (ids * n_shards) // int(n_samples)
    raise ValueError(f"scheme must be 'hash' or 'range', got {scheme!r}")


# ---------------------------------------------------------------------------- merges
def merge_candidates(ids: Sequence[np.ndarray], dists: Sequence[np.ndarray], k: int
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Global K nearest per query from per-shard candidate lists.

    ``ids[s]`` (m, k_s) int64 global ids (-1 = no candidate) and ``dists[s]`` (m, k_s)
    float32 distances (>= 0) of shard ``s``. Returns ``(ids (m, k), dist (m, k))`` sorted
    by ascending ``(distance, id)`` -- the order of :func:`socbi.knn.exact_knn`, so with
    exact shards the result equals an exact query over the union. Each (distance, id)
    pair is packed into one uint64 key (float32 bits << 32 | id), so one
    ``np.partition`` + sort of the k smallest ranks lexicographically.
    Complexity: O(m * S * k) for S shards. Pure function, thread-safe.
    """
    k = _positive_int("k", k, lo=0)
    parts = []
    for i, d in zip(ids, dists):
        i = np.asarray(i, dtype=np.int64)
        d = np.asarray(d, dtype=np.float32)
        key = d.view(np.uint32).astype(np.uint64) << np.uint64(32)
        key |= (i.astype(np.uint64) & _MASK32)
        key[i < 0] = np.uint64(np.iinfo(np.uint64).max)
        parts.append(key)
    if not parts:
        raise ValueError("merge_candidates needs at least one shard's candidates")
    keys = np.concatenate(parts, axis=1)
    m = keys.shape[0]
    if k > keys.shape[1]:
        raise ValueError(f"k={k} exceeds the {keys.shape[1]} candidates per query")
    if k == 0 or m == 0:
        return np.empty((m, k), np.int64), np.empty((m, k), np.float32)
    if keys.shape[1] > k:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys = np.sort(keys, axis=1)
    if (keys == np.uint64(np.iinfo(np.uint64).max)).any():
        raise ValueError(f"fewer than k={k} real candidates for some query; lower k")
    out_ids = (keys & _MASK32).astype(np.int64)
    out_d = (keys >> np.uint64(32)).astype(np.uint32).view(np.float32)
    return out_ids, out_d


def merge_ranked(parts: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], n: int, *,
                 largest: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Exact global ``bottom(n)`` / ``top(n)`` from each shard's local answer.

    ``parts[s] = (ids, counts, slots)`` of shard ``s``'s local n best, in its index order
    (ascending ``(count, slot)``, or descending when ``largest``). Each shard's list is
    sorted, so the global n best are among the union; ranking the union by the same key
    gives the answer the single index over all samples would give. Implemented as one
    stable sort of the packed key ``count << 32 | slot`` over the S * n candidates
    (O(S n log(S n)); a heap-based k-way merge is O(n log S) but slower in numpy for
    the n used here). Pure function, thread-safe.
    """
    n = _positive_int("n", n, lo=0)
    ids = np.concatenate([np.asarray(p[0], np.int64) for p in parts]) if parts else np.empty(0, np.int64)
    cnt = np.concatenate([np.asarray(p[1], np.int64) for p in parts]) if parts else np.empty(0, np.int64)
    slot = np.concatenate([np.asarray(p[2], np.int64) for p in parts]) if parts else np.empty(0, np.int64)
    if n > ids.size:
        raise ValueError(f"n={n} exceeds the {ids.size} merged candidates")
    if (cnt < 0).any() or (slot < 0).any() or (slot >= (1 << 32)).any():
        raise ValueError("merge_ranked expects counts >= 0 and slots in [0, 2**32)")
    key = (cnt.astype(np.uint64) << np.uint64(32)) | slot.astype(np.uint64)
    order = np.argsort(key, kind="stable")
    if largest:
        order = order[::-1]
    order = order[:n]
    return ids[order], cnt[order]


# ---------------------------------------------------------------------------- one shard
def _owned_range(shard: int, n_shards: int, n: int) -> Tuple[int, int]:
    """``[lo, hi)`` of the ids that ``scheme="range"`` gives ``shard``: the ids with
    ``id * n_shards // n == shard``."""
    return -(-shard * n // n_shards), -(-(shard + 1) * n // n_shards)


def owned_ids(shard: int, n_shards: int, n: int, scheme: str = "hash",
              chunk: int = 1 << 22) -> np.ndarray:
    """Ascending global ids that ``shard`` owns among ``0..n-1``. O(n) hashing in chunks of
    ``chunk`` ids for ``scheme="hash"`` (8 bytes per owned id kept), O(n / S) for range."""
    if scheme == "range":
        lo, hi = _owned_range(shard, n_shards, n)
        return np.arange(lo, hi, dtype=np.int64)
    parts = []
    for s in range(0, n, chunk):
        ids = np.arange(s, min(n, s + chunk), dtype=np.int64)
        parts.append(ids[shard_of(ids, n_shards) == shard])
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _rss_bytes(kind: str = "VmRSS") -> int:
    """Resident set size of this process in bytes (Linux /proc/self/status; ``kind``
    ``"VmRSS"`` (all), ``"RssAnon"`` (heap) or ``"RssFile"`` (mapped files); 0 where
    unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(kind + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        pass
    return 0


def _delta_name(r: int) -> str:
    return f"r{r:010d}.npz"


class ShardCore:
    """The state of one shard: pool + score index over the shard's own global ids.

    Plain Python (the Ray actor wraps it; tests may use it directly). The shard reads its
    own rows from ``source`` (a :class:`socbi.storage.RowSource`: ``.npy``, Parquet, a
    Ray Dataset, an in-memory array), streamed in chunks and validated chunk by chunk
    (finite, right dimension) while the pool is built: the only full validation. With
    ``scheme="range"`` the shard reads only its id range; with ``"hash"`` it streams the
    whole source and keeps its rows (reads n rows, holds n / S).

    The tie-break slot of id ``g`` is ``perm[g]`` for ``perm =
    default_rng(seed).permutation(n)`` (``tie_break="random"``, as
    :class:`socbi.scoring.BoundaryScorer`) or ``g`` (``"id"``); the shard computes it
    (O(n) time and 8 n bytes transient) so the driver holds no per-sample array.

    Every mutating call takes the round number ``r`` and is idempotent per round:
    ``begin(r, ...)`` marks the round's labelled ids at most once, ``commit(r, ...)``
    applies the round's deltas at most once (``marked_round`` / ``applied_round``). With
    a checkpoint ``store``, ``commit`` appends the round's delta file
    (``shard-XXXX/deltas/``) before it returns, and :meth:`snapshot` writes the full
    state; :meth:`restore` loads the newest snapshot and replays the deltas after it.

    Memory: the pool (exact: 4 d + 8 bytes per id; HNSW: 4 d + ~8 M + 60 bytes) plus the
    index (~28 bytes per id) plus 24 bytes per id of maps (3 int64 arrays).
    Thread safety: none; one call at a time (Ray actors run calls serially).
    """

    def __init__(self, shard: int, n_shards: int, source: Any, k: int, *, scheme: str = "hash",
                 backend: str = "exact", space: str = "l2", tie_break: str = "random",
                 seed: int = 0, pool_options: Optional[Dict[str, Any]] = None,
                 store: Optional[str] = None, _state: Optional[Dict[str, Any]] = None) -> None:
        self.shard, self.n_shards, self.k = int(shard), int(n_shards), int(k)
        self.source = open_rows(source)
        self.scheme, self.backend, self.space = scheme, backend, space
        self.tie_break, self.seed = tie_break, int(seed)
        self.pool_options = dict(pool_options or {})
        self.store = None if store is None else CheckpointStore(store)
        self.replayed: List[int] = []
        t0 = time.process_time()
        n = self.source.n
        self.gids = owned_ids(self.shard, self.n_shards, n, scheme)
        if self.gids.size == 0:
            raise ValueError(f"shard {shard} owns no samples; use fewer shards (n_shards) "
                             f"for this many samples")
        if tie_break == "random":
            self.slots = np.random.default_rng(self.seed).permutation(n)[self.gids].astype(np.int64)
        else:
            self.slots = self.gids.copy()
        # index key: rank of the global slot among this shard's slots (monotone map)
        self._slot_order = np.argsort(self.slots, kind="stable")
        self._local_slot = np.empty(self.gids.size, np.int64)
        self._local_slot[self._slot_order] = np.arange(self.gids.size)
        if _state is not None and _state.get("pool") is not None:
            self.pool = _state["pool"]
        else:
            self.pool = self._build_pool()
        lab = np.empty(0, np.int64) if _state is None else _state["labelled"].astype(np.int64)
        # hnswlib cannot return a deleted (labelled) item's vector: HNSW shards keep the
        # rows of their labelled ids (O(|L_shard| d)), exact pools keep every row anyway
        self._lab_loc = np.empty(0, np.int64)
        self._lab_x = np.empty((0, self.source.dim), np.float32)
        if lab.size and self.backend == "exact":
            self.pool.mark_labelled(lab)
        elif lab.size:
            self._lab_loc, self._lab_x = lab, _state["lab_rows"].astype(np.float32)
        self.index = default_index_factory()(self.gids.size)
        unl = np.flatnonzero(self.pool.state == _knn.UNLABELLED)
        c = np.zeros(unl.size) if _state is None else _state["counts"].astype(np.float64)
        self.index.insert(self._local_slot[unl], c)
        if unl.size:
            self.index.bottom(1)  # pay the lazy split of the bulk insert now
        r = 0 if _state is None else int(_state["round"])
        self.marked_round = self.applied_round = r
        self.load_cpu_s = time.process_time() - t0

    def _build_pool(self) -> _knn.NeighbourPool:
        """Stream this shard's rows from the source into a new pool (chunk-validated)."""
        opts = dict(self.pool_options)
        opts.setdefault("progress", False)
        pool = _knn.make_pool(self.backend, self.source.dim, self.gids.size, self.space, **opts)
        if self.scheme == "range":
            lo, hi = int(self.gids[0]), int(self.gids[-1]) + 1
        else:
            lo, hi = 0, self.source.n
        for ids, rows in self.source.chunks(lo, hi):
            if self.scheme != "range":
                mine = shard_of(ids, self.n_shards) == self.shard
                ids, rows = ids[mine], rows[mine]
            if ids.size:
                pool.add(np.searchsorted(self.gids, ids), rows)
        self.source.release()
        if len(pool) != self.gids.size:
            miss = self.gids[pool.state == _knn.ABSENT]
            raise ValueError(f"shard {self.shard}: the source gave no row for ids "
                             f"{miss[:5].tolist()} ({miss.size} missing); every id 0..n-1 needs a row")
        return pool

    # -- id maps
    def _local(self, g: np.ndarray) -> np.ndarray:
        loc = np.searchsorted(self.gids, g)
        if g.size and (loc.max() >= self.gids.size or (self.gids[np.minimum(loc, self.gids.size - 1)] != g).any()):
            raise ValueError(f"shard {self.shard} does not own some of ids {g[:5].tolist()}")
        return loc

    def size(self) -> int:
        """Unlabelled samples in this shard. O(1)."""
        return len(self.pool)

    def pid(self) -> int:
        """OS process id of the actor (for operators and fault-injection tests)."""
        return os.getpid()

    def info(self) -> Dict[str, Any]:
        """Process facts for operators and benchmarks: pid, node, RSS and peak RSS bytes, rows held,
        CPU seconds spent loading, rounds replayed by the last restore. O(1)."""
        ip = None
        try:
            import ray
            ip = ray.util.get_node_ip_address()
            node = ray.get_runtime_context().get_node_id()
        except Exception:  # pragma: no cover - outside Ray
            node = None
        import resource
        return dict(shard=self.shard, pid=os.getpid(), node_ip=ip, node_id=node,
                    rss=_rss_bytes(), rss_anon=_rss_bytes("RssAnon"),
                    rss_file=_rss_bytes("RssFile"), peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                    rows=int(self.gids.size), unlabelled=len(self.pool),
                    load_cpu_s=self.load_cpu_s, replayed=list(self.replayed))

    def rounds(self) -> Tuple[int, int]:
        """``(marked_round, applied_round)``: how far this shard is. O(1)."""
        return self.marked_round, self.applied_round

    def rows(self, gids: Any) -> np.ndarray:
        """Embeddings (float32) of this shard's ``gids`` (labelled or not), in order, from
        the pool's stored vectors (L2-normalised with ``space="cosine"``).
        O(len(gids) d); validated at load, so nothing is checked again here."""
        loc = self._local(np.asarray(gids, np.int64))
        if isinstance(self.pool, _knn.ExactPool):
            return self.pool.vectors(loc)
        out = np.empty((loc.size, self.source.dim), np.float32)
        lab = _member(self._lab_loc, loc)
        if lab.any():
            out[lab] = self._lab_x[np.searchsorted(self._lab_loc, loc[lab])]
        if (~lab).any():
            got = self.pool._index.get_items(loc[~lab])
            out[~lab] = np.asarray(got, dtype=np.float32).reshape(-1, self.source.dim)
        return out

    def _mark(self, loc: np.ndarray) -> None:
        """Mark local ids labelled in the pool (HNSW: keep their rows first)."""
        if loc.size and not isinstance(self.pool, _knn.ExactPool):
            x = np.asarray(self.pool._index.get_items(loc), dtype=np.float32).reshape(-1, self.source.dim)
            allx = np.concatenate([self._lab_x, x])
            alll = np.concatenate([self._lab_loc, loc])
            order = np.argsort(alll, kind="stable")
            self._lab_loc, self._lab_x = alll[order], allx[order]
        self.pool.mark_labelled(loc)

    # -- a round
    def begin(self, r: int, new_gids: np.ndarray, queries: np.ndarray, k: int
              ) -> Tuple[np.ndarray, np.ndarray, int]:
        """Mark this shard's ``new_gids`` labelled (once for round ``r``) and return its
        local K nearest unlabelled candidates of ``queries`` as global ids / distances
        (-1 / inf pad when the shard has fewer than ``k``), plus the new pool size.
        O(m * n_shard * d) exact, O(m log n_shard) HNSW. The queries are checked by the
        pool (O(m d): only the rows of this round)."""
        if r <= self.marked_round and r <= self.applied_round:
            pass  # already committed (replay): nothing to mark
        elif r > self.marked_round:
            if r != self.marked_round + 1:
                raise RuntimeError(f"shard {self.shard} is at round {self.marked_round}; "
                                   f"cannot begin round {r}")
            self._mark(self._local(np.asarray(new_gids, np.int64)))
            self.marked_round = r
        m = queries.shape[0]
        kk = min(int(k), len(self.pool))
        ids = np.full((m, k), -1, np.int64)
        dist = np.full((m, k), np.inf, np.float32)
        if kk > 0 and m > 0:
            li, ld = self.pool.query(queries, kk)
            ids[:, :kk] = self.gids[li]
            dist[:, :kk] = ld
        return ids, dist, len(self.pool)

    def commit(self, r: int, new_gids: np.ndarray, upd_gids: np.ndarray, deltas: np.ndarray,
               *, log: bool = True) -> int:
        """Erase this shard's ``new_gids`` from its index and add ``deltas`` to the
        counts of ``upd_gids`` (its own ids), once for round ``r``; then (``log`` and a
        store) append the round's delta file. Returns the round now applied. One
        batched index update: O(len(upd) + node work) plus one small write."""
        if r <= self.applied_round:
            return self.applied_round
        if r != self.applied_round + 1:
            raise RuntimeError(f"shard {self.shard} applied round {self.applied_round}; "
                               f"cannot commit round {r}")
        new_gids = np.asarray(new_gids, np.int64)
        upd = np.asarray(upd_gids, np.int64)
        deltas = np.asarray(deltas, np.float64)
        new = self._local(new_gids)
        upd_loc = self._local(upd)
        if self.marked_round < r:  # replay: begin() was not called for this round
            self._mark(new)
            self.marked_round = r
        if new.size:
            self.index.erase(self._local_slot[new])
        if upd.size:
            self.index.update(self._local_slot[upd_loc], deltas)
        self.applied_round = r
        if log and self.store is not None:
            self.store.put_npz(f"{self._dir()}/deltas/{_delta_name(r)}",
                               dict(new=new_gids, upd=upd, delta=deltas))
        return r

    # -- reads
    def ranked(self, n: int, largest: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local n best ``(global ids, counts, global slots)`` in index order. O(n + B)."""
        n = min(int(n), len(self.index))
        ls, sc = self.index.top(n) if largest else self.index.bottom(n)
        loc = self._slot_order[np.asarray(ls, np.int64)]
        return self.gids[loc], np.rint(sc).astype(np.int64), self.slots[loc]

    def counts(self, gids: np.ndarray) -> np.ndarray:
        """Counts of this shard's unlabelled ``gids``. O(len)."""
        g = np.asarray(gids, np.int64)
        if g.size == 0:
            return np.empty(0, np.int64)
        return np.rint(np.asarray(self.index.score(self._local_slot[self._local(g)]))).astype(np.int64)

    def all_counts(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(global ids ascending, counts)`` of every unlabelled id here. O(n_shard)."""
        loc = np.flatnonzero(self.pool.state == _knn.UNLABELLED)
        return self.gids[loc], self.counts(self.gids[loc])

    def check(self) -> None:
        self.index.check()
        if len(self.index) != len(self.pool):
            raise AssertionError(f"shard {self.shard}: index holds {len(self.index)} ids, pool {len(self.pool)}")

    # -- persistence
    def _dir(self) -> str:
        return f"shard-{self.shard:04d}"

    def snapshot(self, location: Optional[str] = None) -> int:
        """Write the full shard state to ``location`` (default: the checkpoint store):
        ``shard-XXXX/snap-r<round>-<token>/`` holds ``state.npz`` (round, labelled local
        ids, counts, configuration) and, for HNSW, the saved graph (the exact backend
        rebuilds from the source instead: its rows are already on shared storage). A
        ``CURRENT`` file naming the snapshot is written last; then older snapshots and
        the delta files it covers are removed. Returns the round. O(n_shard) (+ the
        graph file for HNSW)."""
        store = self.store if location is None else CheckpointStore(location)
        if store is None:
            raise ValueError("this shard has no checkpoint store; pass location=")
        if self.marked_round != self.applied_round:
            raise RuntimeError(f"shard {self.shard} is inside round {self.marked_round}; "
                               f"snapshot between rounds")
        r = self.applied_round
        name = f"snap-r{r:010d}-{uuid.uuid4().hex[:8]}"
        base = f"{self._dir()}/{name}"
        state = self.pool.state
        unl = np.flatnonzero(state == _knn.UNLABELLED)
        counts = np.rint(np.asarray(self.index.score(self._local_slot[unl]))).astype(np.int64) \
            if unl.size else np.empty(0, np.int64)
        if self.backend == "hnsw":
            with tempfile.TemporaryDirectory(prefix="socbi-snap-") as tmp:
                self.pool.save(Path(tmp) / "pool")
                store.upload(tmp, f"{base}/pool")
        store.put_npz(f"{base}/state.npz", dict(
            round=r, labelled=np.flatnonzero(state == _knn.LABELLED), counts=counts,
            lab_rows=self._lab_x,
            config=json.dumps(dict(shard=self.shard, n_shards=self.n_shards, k=self.k,
                                   scheme=self.scheme, backend=self.backend, space=self.space,
                                   tie_break=self.tie_break, seed=self.seed, n=self.source.n,
                                   pool_options=self.pool_options))))
        old = store.get(f"{self._dir()}/CURRENT").decode().strip() \
            if store.exists(f"{self._dir()}/CURRENT") else None
        store.put(f"{self._dir()}/CURRENT", name.encode())
        for entry in store.listdir(self._dir()):
            if entry.startswith("snap-") and entry != name:
                store.delete(f"{self._dir()}/{entry}")
        for entry in store.listdir(f"{self._dir()}/deltas"):
            if entry.endswith(".npz") and int(entry[1:11]) <= r:
                store.delete(f"{self._dir()}/deltas/{entry}")
        del old
        return r

    @classmethod
    def restore(cls, shard: int, n_shards: int, source: Any, k: int, *, location: str,
                store: Optional[str] = None, **options: Any) -> "ShardCore":
        """A shard from its newest snapshot under ``location``, with the delta files
        after it replayed (``self.replayed`` lists those rounds). The exact backend
        re-reads its rows from ``source``; HNSW loads its saved graph. ``store``: where
        the restored shard checkpoints from now on (default ``location``). Cost: one
        shard's load plus the replayed batched updates; no neighbour query."""
        st = CheckpointStore(location)
        d = f"shard-{int(shard):04d}"
        if not st.exists(f"{d}/CURRENT"):
            raise FileNotFoundError(f"no snapshot of shard {shard} under {location!r}: "
                                    f"{d}/CURRENT is missing")
        snap = f"{d}/{st.get(f'{d}/CURRENT').decode().strip()}"
        meta = st.get_npz(f"{snap}/state.npz")
        cfg = json.loads(str(meta["config"]))
        if cfg["n"] != open_rows(source).n or cfg["n_shards"] != n_shards:
            raise ValueError(f"snapshot of shard {shard} in {location!r} was taken over "
                             f"{cfg['n']} rows and {cfg['n_shards']} shards, not "
                             f"{open_rows(source).n} rows and {n_shards} shards")
        state: Dict[str, Any] = dict(round=int(meta["round"]), labelled=meta["labelled"],
                                     counts=meta["counts"], lab_rows=meta["lab_rows"], pool=None)
        if cfg["backend"] == "hnsw":
            with tempfile.TemporaryDirectory(prefix="socbi-restore-") as tmp:
                st.download(f"{snap}/pool", tmp)
                state["pool"] = _knn.load_pool(Path(tmp) / "pool", progress=False,
                                               num_threads=cfg["pool_options"].get("num_threads"))
        opts = dict(scheme=cfg["scheme"], backend=cfg["backend"], space=cfg["space"],
                    tie_break=cfg["tie_break"], seed=cfg["seed"], pool_options=cfg["pool_options"])
        opts.update(options)
        core = cls(shard, n_shards, source, k, store=location if store is None else store,
                   _state=state, **opts)
        base = core.applied_round
        for entry in st.listdir(f"{d}/deltas"):
            if not entry.endswith(".npz"):
                continue
            q = int(entry[1:11])
            if q <= base:
                continue
            if q != core.applied_round + 1:
                raise RuntimeError(f"shard {shard}: delta log under {location!r} jumps from round "
                                   f"{core.applied_round} to {q}; round {core.applied_round + 1} is missing")
            j = st.get_npz(f"{d}/deltas/{entry}")
            core.commit(q, j["new"], j["upd"], j["delta"], log=store is not None and store != location)
            core.replayed.append(q)
        return core


class _RestoredShard(ShardCore):
    """The actor class for restarts and loads: :meth:`ShardCore.restore` in ``__init__``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401
        core = ShardCore.restore(*args, **kwargs)
        self.__dict__.update(core.__dict__)


class _Labelled:
    """Membership test over the sorted labelled ids, shaped like an (n,) bool mask for
    :func:`socbi.scoring.round_deltas` (``mask[ids]`` and ``shape[0]``). O(log |L|) per id."""

    def __init__(self, lab: np.ndarray, n: int) -> None:
        self._lab, self.shape = lab, (int(n),)

    def __getitem__(self, ids: Any) -> np.ndarray:
        return _member(self._lab, np.asarray(ids, np.int64))


def _member(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Bool per ``ids``: present in the ascending ``sorted_ids``. O(len(ids) log n)."""
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return sorted_ids[pos] == ids


# ---------------------------------------------------------------------------- the driver
class ShardedScorer(_LabelledState):
    """Drop-in for :class:`socbi.scoring.BoundaryScorer` with the pool on Ray actors.

    Parameters
    ----------
    embeddings : array, path, :class:`socbi.storage.RowSource` or ``ray.data.Dataset``
        Where the rows are (:func:`socbi.storage.open_rows`): a ``.npy`` path or a
        Parquet file/folder/URI that every node can read, a Ray Dataset with ``id`` and
        ``embedding`` columns, or an in-memory array (put in the object store once; for
        small pools and tests). Each shard loads its own rows; the driver never reads
        the matrix.
    k, labelled, backend, space, pool_options, tie_break, seed :
        As for ``BoundaryScorer`` (same tie-break permutation for the same seed).
        ``labelled`` is a bool mask or an array of ids.
    n_shards : int
        Number of shard actors (>= 1).
    scheme : ``"hash"`` (default) or ``"range"``: ownership, see :func:`shard_of`. With
        ``"range"`` each shard reads only its contiguous id range of the source.
    actor_options : dict or list of dicts
        ``ray.remote`` options for every shard actor, or one dict per shard (e.g. custom
        ``resources`` to place shards on given nodes); default ``{"num_cpus": 0}``.
    checkpoint_dir : path or URI, optional
        Where shards write snapshots and per-round delta files: a folder every node can
        reach (shared mount) or any pyarrow filesystem URI (``s3://bucket/run``,
        ``gs://...``, ``hdfs://...``). A temporary local folder (removed by
        :meth:`close`) when None: only correct when every shard runs on this machine.
    checkpoint_every : int
        Full snapshot every this many rounds (and at construction); between snapshots
        each shard appends one delta file per round. Default 10.

    Driver state is O(|L| K + batch): the labelled ids (sorted), their neighbour lists,
    the round's queries. Per-sample answers (``counts()`` of every id,
    ``labelled_mask``, ``unlabelled_ids()``, ``recount``, ``check``) are O(n) on demand
    only. Ray must be initialised by the caller (``ray.init(...)``); the scorer starts
    and owns its actors (:meth:`close` ends them).

    Complexity per round of b labels with r repairs on S shards: rows of the b + r
    queries fetched from their owners (O((b + r) d) bytes), (b + r) queries on every
    shard in parallel (exact: O((b + r) n d / S) per shard), a merge O((b + r) S K),
    deltas O(|L| K), one batched update and one delta file per shard.

    Thread safety: not synchronised; one thread at a time.
    """

    def __init__(self, embeddings: Any, k: int = 10, *, labelled: Any = None,
                 n_shards: int = 2, scheme: str = "hash", backend: str = "exact",
                 space: str = "l2", pool_options: Optional[Dict[str, Any]] = None,
                 tie_break: str = "random", seed: int = 0,
                 actor_options: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]] = None,
                 checkpoint_dir: Optional[PathLike] = None, checkpoint_every: int = 10,
                 progress: bool = False, _restore: Optional[Dict[str, Any]] = None) -> None:
        ray = _require_ray()
        if not ray.is_initialized():
            raise RuntimeError("Ray is not initialised; call ray.init() (e.g. ray.init(num_cpus=2)) "
                               "or ray.init(address='auto') for a cluster before building a ShardedScorer")
        src = open_rows(embeddings)
        n = src.n
        if n == 0:
            raise ValueError("embeddings has no rows; pass at least one sample")
        if n > np.iinfo(np.int32).max:
            raise ValueError(f"embeddings has {n} rows; at most {np.iinfo(np.int32).max} are supported")
        self.k = _positive_int("k", k)
        self.n_shards = _positive_int("n_shards", n_shards)
        if self.n_shards > n:
            raise ValueError(f"n_shards={n_shards} exceeds the {n} samples; use at most {n} shards")
        if tie_break not in ("random", "id"):
            raise ValueError(f"tie_break must be 'random' or 'id', got {tie_break!r}")
        if backend not in ("exact", "hnsw"):
            raise ValueError(f"backend must be 'exact' or 'hnsw', got {backend!r}")
        if scheme not in ("hash", "range"):
            raise ValueError(f"scheme must be 'hash' or 'range', got {scheme!r}")
        self.checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
        if isinstance(src, ArrayRows):
            src.share()
        self.source = src
        self.n_samples, self.dim = n, src.dim
        self.backend, self.space, self.scheme = backend, space, scheme
        self.pool_options = dict(pool_options or {})
        if backend == "hnsw":
            self.pool_options.setdefault("seed", int(seed))
        self.tie_break, self.seed = tie_break, int(seed)
        self.progress = bool(progress)
        self.actor_options = self._per_shard_options(actor_options)
        self._owned_tmp = checkpoint_dir is None
        self.checkpoint_dir = str(tempfile.mkdtemp(prefix="socbi-shards-") if checkpoint_dir is None
                                  else os.fspath(checkpoint_dir))
        CheckpointStore(self.checkpoint_dir)  # fail now (bad URI, no access), not in an actor
        self.round = 0
        self.recoveries: List[Dict[str, Any]] = []
        self._ckpt_round = 0
        self._fault_hook: Optional[Callable[[str, int], None]] = None
        self.last_round = RoundStats()
        self.merge_s = 0.0
        self.begin_calls = [0] * self.n_shards  # neighbour queries sent per shard (rounds)
        self._lab = np.empty(0, np.int64)            # labelled ids, ascending
        self._lab_nbr = np.empty((0, self.k), np.int32)  # their neighbour lists (-1 pad)

        if _restore is not None:  # load(): actors from saved snapshots
            self.round = int(_restore["round"])
            self._lab = _restore["labelled"].astype(np.int64)
            self._lab_nbr = _restore["neighbours"].astype(np.int32).reshape(-1, self.k)
            self.actors = [self._spawn(s, restore_from=str(_restore["location"]))
                           for s in range(self.n_shards)]
            rounds = [applied for _, applied in ray.get([a.rounds.remote() for a in self.actors])]
            if any(r != self.round for r in rounds):
                raise ValueError(f"saved shards are at rounds {rounds} but the session at round "
                                 f"{self.round}; the save is incomplete")
            self.checkpoint()
            return

        lab_ids = self._labelled_ids_arg(labelled, n)
        self.actors = [self._spawn(s) for s in range(self.n_shards)]
        try:
            ray.get([a.size.remote() for a in self.actors])
        except ray.exceptions.RayActorError as exc:  # a shard could not load its rows
            self.close()
            cause = str(exc).strip().splitlines()
            raise ValueError(f"a shard failed to load its rows from {src!r}: "
                             f"{next((c for c in reversed(cause) if 'Error' in c), cause[-1] if cause else exc)}"
                             ) from exc
        self.checkpoint()
        if lab_ids.size:  # round 0's initial labels: counted like a first round, no repairs
            self._round(lab_ids, initial=True)

    # ------------------------------------------------------------------ helpers
    def _per_shard_options(self, opts: Any) -> List[Dict[str, Any]]:
        if opts is None:
            return [{"num_cpus": 0} for _ in range(self.n_shards)]
        if isinstance(opts, dict):
            return [dict(opts) for _ in range(self.n_shards)]
        opts = list(opts)
        if len(opts) != self.n_shards or not all(isinstance(o, dict) for o in opts):
            raise ValueError(f"actor_options must be a dict or a list of {self.n_shards} dicts "
                             f"(one per shard), got {len(opts)} entries")
        return [dict(o) for o in opts]

    def _spawn(self, s: int, restore_from: Optional[str] = None) -> Any:
        """Start shard ``s``'s actor: fresh from the source, or restored from a snapshot
        (``restore_from``: the checkpoint store, or a save folder)."""
        ray = _require_ray()
        common = dict(store=self.checkpoint_dir)
        if restore_from is None:
            return ray.remote(**self.actor_options[s])(ShardCore).remote(
                s, self.n_shards, self.source, self.k, scheme=self.scheme, backend=self.backend,
                space=self.space, tie_break=self.tie_break, seed=self.seed,
                pool_options=self.pool_options, **common)
        return ray.remote(**self.actor_options[s])(_RestoredShard).remote(
            s, self.n_shards, self.source, self.k, location=restore_from, **common)

    def _labelled_ids_arg(self, labelled: Any, n: int) -> np.ndarray:
        if labelled is None:
            return np.empty(0, np.int64)
        arr = np.asarray(labelled)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise ValueError(f"labelled mask has shape {arr.shape}, expected ({n},); pass one "
                                 f"flag per sample or an array of ids")
            return np.flatnonzero(arr).astype(np.int64)
        ids = _check_ids(arr, n, name="labelled")
        return np.unique(ids)

    def _owner(self, ids: np.ndarray) -> np.ndarray:
        return shard_of(ids, self.n_shards, scheme=self.scheme, n_samples=self.n_samples)

    # ------------------------------------------------------------------ labelled state
    @property
    def labelled_mask(self) -> np.ndarray:  # type: ignore[override]
        """Bool (n,) mask, True for labelled samples: built on demand, O(n)."""
        m = np.zeros(self.n_samples, bool)
        m[self._lab] = True
        m.flags.writeable = False
        return m

    @property
    def _labelled(self) -> np.ndarray:  # the inherited O(n) helpers build the mask on demand
        return self.labelled_mask

    def labelled_ids(self) -> np.ndarray:
        """Ascending labelled ids. O(|L|)."""
        return self._lab.copy()

    def is_labelled(self, ids: Any) -> np.ndarray:
        """Bool per id. O(len(ids) log |L|)."""
        return _member(self._lab, _check_ids(ids, self.n_samples))

    def neighbours(self, ids: Any) -> np.ndarray:
        """Stored neighbour lists (len(ids), K) of labelled ``ids``; -1 pads short lists.
        O(len(ids) log |L|)."""
        ids = _check_ids(ids, self.n_samples)
        pos = np.searchsorted(self._lab, ids)
        ok = _member(self._lab, ids)
        if not ok.all():
            raise ValueError(f"ids {ids[~ok][:5].tolist()} are not labelled, so they have no "
                             f"neighbour list; pass labelled ids")
        return self._lab_nbr[pos].astype(np.int64)

    def _unlabelled_arg(self, ids: Any) -> np.ndarray:
        if ids is None:
            return self.unlabelled_ids()
        ids = _check_ids(ids, self.n_samples)
        bad = _member(self._lab, ids)
        if bad.any():
            raise ValueError(f"ids {ids[bad][:5].tolist()} are labelled and have no count; "
                             f"pass unlabelled ids")
        return ids

    def __len__(self) -> int:
        """Unlabelled samples (driver's count, O(1))."""
        return int(self.n_samples - self._lab.size)

    # ------------------------------------------------------------------ BoundaryScorer API
    def counts(self, ids: Any = None) -> np.ndarray:
        """Counts (int64) of unlabelled ``ids`` (default all, ascending: O(n)), asked of
        their owning shards in parallel. O(len(ids)) plus one round trip."""
        ids = self._unlabelled_arg(ids)
        out = np.empty(ids.size, np.int64)
        own = self._owner(ids)
        got = self._fan_out("counts", {s: (ids[own == s],) for s in np.unique(own).tolist()})
        for s, c in got.items():
            out[own == s] = c
        return out

    def rows(self, ids: Any) -> np.ndarray:
        """Embeddings (len(ids), d) float32 of ``ids``, in order, fetched from their owning
        shards (L2-normalised with ``space="cosine"``): how the driver gets a batch's
        rows for a model without holding the matrix. O(len(ids) d) bytes moved."""
        ids = _check_ids(ids, self.n_samples)
        out = np.empty((ids.size, self.dim), np.float32)
        if ids.size == 0:
            return out
        own = self._owner(ids)
        got = self._fan_out("rows", {s: (ids[own == s],) for s in np.unique(own).tolist()})
        for s, r in got.items():
            out[own == s] = r
        return out

    def knn(self, queries: Any, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest unlabelled samples of each query row over all shards:
        ``(ids (m, k) int64, distances (m, k) float32)`` by ascending ``(distance, id)``
        -- with exact shards, what one exact pool over every row answers. Changes
        nothing. The queries go to the object store once; O(m n d / S) per shard (exact)
        plus a merge O(m S k)."""
        ray = _require_ray()
        q = _knn._check_embeddings(queries, self.dim, name="queries")
        k = _positive_int("k", k)
        if k > len(self):
            raise ValueError(f"k={k} exceeds the {len(self)} unlabelled samples")
        if q.shape[0] == 0:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        q_ref = ray.put(q)
        got = self._fan_out("begin", {s: (self.round, np.empty(0, np.int64), q_ref, k)
                                      for s in range(self.n_shards)})
        return merge_candidates([got[s][0] for s in range(self.n_shards)],
                                [got[s][1] for s in range(self.n_shards)], k)

    @property
    def pool(self) -> "_ShardedPool":
        """The shards' unlabelled rows as one read-only neighbour pool (``len``,
        ``query(x, k)`` = :meth:`knn`), for strategies that walk neighbourhoods
        (``margin_div*``, SEALS with its own ``k``)."""
        return _ShardedPool(self)

    def select(self, n: int, *, largest: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` unlabelled samples with the smallest (or largest) counts, best first:
        each shard's local ``n`` merged exactly (:func:`merge_ranked`). O(S n log(S n))."""
        self._check_select_n(n, len(self))
        got = self._fan_out("ranked", {s: (int(n), bool(largest)) for s in range(self.n_shards)})
        return merge_ranked([got[s] for s in range(self.n_shards)], int(n), largest=largest)

    def label(self, ids: Any) -> RoundStats:
        """Label ``ids`` (distinct, unlabelled) in one sharded round; see the module
        docstring. Recovers from a dead shard actor (see :attr:`recoveries`)."""
        ids = _check_ids(ids, self.n_samples)
        already = _member(self._lab, ids)
        if already.any():
            raise ValueError(f"ids {ids[already][:5].tolist()} are labelled already; pass only "
                             f"unlabelled ids")
        if ids.size == 0:
            self.last_round = RoundStats()
            return self.last_round
        stats = self._round(ids, initial=False)
        if self.round - self._ckpt_round >= self.checkpoint_every:
            self.checkpoint()
        return stats

    # ------------------------------------------------------------------ the round
    def _gather(self, refs: Dict[int, Any], into: Dict[int, Any]) -> None:
        """``ray.get`` every ref, keeping each answer that arrives in ``into``; raises
        RayActorError after all were tried if any shard died."""
        ray = _require_ray()
        err: Optional[BaseException] = None
        for s, ref in refs.items():
            try:
                into[s] = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                err = exc
        if err is not None:
            raise err

    def _fan_out(self, method: str, args: Dict[int, Tuple[Any, ...]]) -> Dict[int, Any]:
        """Call ``method(*args[s])`` on shards ``s`` in parallel and gather the answers.
        A dead shard (between rounds) is restored from its snapshot and delta log (see
        :meth:`_recover`), and only the calls that got no answer are sent again."""
        ray = _require_ray()
        out: Dict[int, Any] = {}
        while True:
            try:
                todo = {s: a for s, a in args.items() if s not in out}
                self._gather({s: getattr(self.actors[s], method).remote(*a) for s, a in todo.items()}, out)
                return out
            except ray.exceptions.RayActorError:
                self._recover(self.round + 1, retry=False)

    def _round(self, new: np.ndarray, *, initial: bool) -> RoundStats:
        ray = _require_ray()
        r = self.round + 1
        ctx: Dict[str, Any] = dict(parts={}, committed={})
        while True:
            try:
                stats = self._round_once(r, new, ctx, initial=initial)
                break
            except ray.exceptions.RayActorError:
                self._recover(r)
        self.round = r
        self.last_round = stats
        return stats

    def _hook(self, phase: str, r: int) -> None:
        if self._fault_hook is not None:
            self._fault_hook(phase, r)

    def _round_once(self, r: int, new: np.ndarray, ctx: Dict[str, Any], *, initial: bool) -> RoundStats:
        """One attempt at round ``r``. ``ctx`` survives retries: the shards whose
        candidates or commits already arrived are not asked again, so a recovery
        re-queries only the restarted shard."""
        ray = _require_ray()
        stats = RoundStats(labelled=int(new.size))
        t0 = time.perf_counter()
        if "queries" not in ctx:
            aff_pos = np.empty(0, np.int64)
            if not initial and self._lab.size:
                tab = self._lab_nbr
                hit = np.isin(tab, new) & (tab >= 0)
                aff_pos = np.flatnonzero(hit.any(axis=1)).astype(np.int64)
            ctx["aff_pos"] = aff_pos
            ctx["affected"] = self._lab[aff_pos]
            ctx["queries"] = np.concatenate([new, ctx["affected"]])
        queries, affected, aff_pos = ctx["queries"], ctx["affected"], ctx["aff_pos"]
        k_eff = min(self.k, len(self) - int(new.size))
        if "q_ref" not in ctx:  # the rows come from their owners, then go out once
            ctx["q_ref"] = ray.put(self.rows(queries))
        new_own = self._owner(new)
        self._hook("before_query", r)
        parts: Dict[int, Any] = ctx["parts"]
        todo = [s for s in range(self.n_shards) if s not in parts]
        for s in todo:
            self.begin_calls[s] += 1
        self._gather({s: self.actors[s].begin.remote(r, new[new_own == s], ctx["q_ref"], max(k_eff, 0))
                      for s in todo}, parts)
        t1 = time.perf_counter()
        self._hook("after_query", r)
        if k_eff > 0:
            nbr, _ = merge_candidates([parts[s][0] for s in range(self.n_shards)],
                                      [parts[s][1] for s in range(self.n_shards)], k_eff)
        else:
            nbr = np.empty((queries.size, 0), np.int64)
        t2 = time.perf_counter()
        new_nbr, rep_nbr = nbr[:new.size], nbr[new.size:]
        upd_ids, upd_d = round_deltas(self._lab_nbr, _Labelled(self._lab, self.n_samples), new,
                                      new_nbr, aff_pos, rep_nbr)
        upd_own = self._owner(upd_ids)
        t3 = time.perf_counter()
        done: Dict[int, Any] = ctx["committed"]
        refs = {s: self.actors[s].commit.remote(r, new[new_own == s], upd_ids[upd_own == s],
                                                upd_d[upd_own == s])
                for s in range(self.n_shards) if s not in done}
        self._hook("during_commit", r)
        self._gather(refs, done)
        t4 = time.perf_counter()
        # ---- driver commit (only after every shard applied the round)
        lab = np.concatenate([self._lab, new])
        tab = np.full((lab.size, self.k), -1, np.int32)
        tab[:self._lab.size] = self._lab_nbr
        tab[self._lab.size:, :k_eff] = new_nbr
        if affected.size:
            tab[aff_pos] = -1
            tab[aff_pos, :k_eff] = rep_nbr
        order = np.argsort(lab, kind="stable")
        self._lab, self._lab_nbr = lab[order], tab[order]
        stats.queries = int(queries.size)
        stats.repairs = int(affected.size)
        stats.updates = int(upd_ids.size)
        stats.query_s = t1 - t0
        stats.other_s = (t2 - t1) + (t3 - t2) + (time.perf_counter() - t4)
        stats.index_s = t4 - t3
        self.merge_s = t2 - t1
        return stats

    # ------------------------------------------------------------------ faults
    def _alive(self, s: int) -> bool:
        ray = _require_ray()
        try:
            ray.get(self.actors[s].size.remote(), timeout=60)
            return True
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return False

    def _recover(self, r: int, *, retry: bool = True) -> None:
        """Restart every dead shard from its newest snapshot plus its own delta log, so
        that it stands at round ``r - 1`` (or ``r`` if it had logged round ``r``); the
        caller retries what got no answer (the dead shard's part of round ``r`` only).
        Appends one entry per restarted shard to :attr:`recoveries`: ``shard``,
        ``checkpoint_round``, ``replayed_rounds``, ``retried_round`` (None between
        rounds), ``seconds``. Cost: one shard's load plus its replayed updates."""
        ray = _require_ray()
        dead = [s for s in range(self.n_shards) if not self._alive(s)]
        if not dead:
            raise RuntimeError("a shard call failed with RayActorError but every shard answers; "
                               "giving up instead of looping")
        for s in dead:
            t0 = time.perf_counter()
            actor = self._spawn(s, restore_from=self.checkpoint_dir)
            info = ray.get(actor.info.remote())
            _, applied = ray.get(actor.rounds.remote())
            if applied < r - 1:
                raise RuntimeError(f"shard {s} restored to round {applied} from {self.checkpoint_dir!r}, "
                                   f"but the session is at round {r - 1}: its delta log is incomplete")
            self.actors[s] = actor
            replay = list(info["replayed"])
            self.recoveries.append(dict(shard=s, round=r, checkpoint_round=applied - len(replay),
                                        replayed_rounds=replay,
                                        retried_round=r if retry else None,
                                        seconds=time.perf_counter() - t0))

    def checkpoint(self) -> None:
        """Every shard writes a full snapshot into ``checkpoint_dir`` (in parallel) and
        drops the delta files it covers. O(n / S) per shard (+ the HNSW graph)."""
        rounds = self._fan_out("snapshot", {s: () for s in range(self.n_shards)})
        self._ckpt_round = min(int(x) for x in rounds.values())

    def shard_info(self) -> List[Dict[str, Any]]:
        """:meth:`ShardCore.info` of every shard (pid, node, RSS, rows held)."""
        got = self._fan_out("info", {s: () for s in range(self.n_shards)})
        return [got[s] for s in range(self.n_shards)]

    # ------------------------------------------------------------------ verification
    def recount(self) -> np.ndarray:
        """Counts of all unlabelled samples (ascending id) from scratch: every labelled
        sample re-queried on every shard and merged. O(|L|) queries per shard, O(n) out."""
        lab = self.labelled_ids()
        unl = self.unlabelled_ids()
        k_eff = min(self.k, len(self))
        total = np.zeros(self.n_samples, np.int64)
        if lab.size and k_eff > 0:
            nbr, _ = self.knn(self.rows(lab), k_eff)
            total += np.bincount(nbr.ravel(), minlength=self.n_samples)
        return total[unl]

    def check(self, *, recount: bool = True) -> None:
        """Shard invariants, index counts vs stored lists, and (``recount``) vs a
        recount. O(n) on the driver (verification only)."""
        self._fan_out("check", {s: () for s in range(self.n_shards)})
        sizes = self._fan_out("size", {s: () for s in range(self.n_shards)}).values()
        if sum(sizes) != len(self):
            raise AssertionError(f"shards hold {sum(sizes)} unlabelled samples, driver {len(self)}")
        flat = self._lab_nbr.ravel()
        flat = flat[flat >= 0].astype(np.int64)
        if flat.size and _member(self._lab, flat).any():
            raise AssertionError("a stored neighbour list contains a labelled sample")
        unl = self.unlabelled_ids()
        implied = np.bincount(flat, minlength=self.n_samples)[unl]
        held = self.counts()
        if not np.array_equal(implied, held):
            bad = np.flatnonzero(implied != held)
            raise AssertionError(f"shard counts differ from the stored lists at ids "
                                 f"{unl[bad][:5].tolist()}: shards {held[bad][:5].tolist()}, "
                                 f"lists {implied[bad][:5].tolist()}")
        if recount and not np.array_equal(self.recount(), held):
            raise AssertionError("incremental sharded counts differ from a recount")

    # ------------------------------------------------------------------ persistence
    def save(self, directory: PathLike) -> str:
        """Snapshot every shard (``shard-XXXX/``) and write the driver state
        (``scorer.npz``: labelled ids, their lists, configuration, the source's
        description) under ``directory``, a path or pyarrow filesystem URI. Driver
        state is written last, so an interrupted save leaves the previous
        ``scorer.npz`` (whose shards may then be newer: :meth:`load` refuses).
        Returns ``directory``."""
        loc = os.fspath(directory)
        store = CheckpointStore(loc)
        self._fan_out("snapshot", {s: (loc,) for s in range(self.n_shards)})
        store.put_npz("scorer.npz", dict(
            k=self.k, n_shards=self.n_shards, scheme=self.scheme, backend=self.backend,
            space=self.space, tie_break=self.tie_break, seed=self.seed, round=self.round,
            n=self.n_samples, labelled=self._lab, neighbours=self._lab_nbr,
            pool_options=json.dumps(self.pool_options), source=json.dumps(self.source.describe())))
        return loc

    @classmethod
    def load(cls, directory: PathLike, embeddings: Any = None, *,
             actor_options: Union[None, Dict[str, Any], Sequence[Dict[str, Any]]] = None,
             checkpoint_dir: Optional[PathLike] = None, checkpoint_every: int = 10) -> "ShardedScorer":
        """Start shard actors from a :meth:`save` folder. ``embeddings``: the same rows
        (needed for arrays and Ray Datasets; a saved ``.npy`` / Parquet location is
        reopened when None)."""
        loc = os.fspath(directory)
        store = CheckpointStore(loc)
        if not store.exists("scorer.npz"):
            raise FileNotFoundError(f"no saved sharded scorer in {loc!r}: scorer.npz is missing")
        m = store.get_npz("scorer.npz")
        if embeddings is None:
            desc = json.loads(str(m["source"]))
            if desc["format"] not in ("npy", "parquet"):
                raise ValueError(f"the scorer was saved over {desc['format']!r} rows, which are not "
                                 f"stored; pass embeddings= to load()")
            embeddings = desc
        src = open_rows(embeddings)
        if src.n != int(m["n"]):
            raise ValueError(f"embeddings has {src.n} rows but the saved scorer {int(m['n'])}")
        restore = dict(round=int(m["round"]), labelled=m["labelled"], neighbours=m["neighbours"],
                       location=loc)
        return cls(src, int(m["k"]), n_shards=int(m["n_shards"]), scheme=str(m["scheme"]),
                   backend=str(m["backend"]), space=str(m["space"]),
                   pool_options=json.loads(str(m["pool_options"])), tie_break=str(m["tie_break"]),
                   seed=int(m["seed"]), actor_options=actor_options, checkpoint_dir=checkpoint_dir,
                   checkpoint_every=checkpoint_every, _restore=restore)

    def close(self) -> None:
        """End the shard actors; remove the temporary checkpoint folder if we made it."""
        ray = _require_ray()
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a)
            except Exception:  # already dead
                pass
        self.actors = []
        if self._owned_tmp:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return (f"ShardedScorer(n={self.n_samples}, k={self.k}, shards={self.n_shards}, "
                f"labelled={self._lab.size}, round={self.round}, backend={self.backend!r})")


class _ShardedPool:
    """A :class:`ShardedScorer` seen as a read-only neighbour pool (what
    ``NeighbourhoodDiverse``, SEALS and ASCMR query): ``len``, ``query``,
    ``unlabelled_ids``, ``dim``, ``space``, ``capacity``; nothing that changes it."""

    def __init__(self, scorer: ShardedScorer) -> None:
        self._scorer = scorer
        self.dim, self.space, self.capacity = scorer.dim, scorer.space, scorer.n_samples

    def __len__(self) -> int:
        return len(self._scorer)

    def unlabelled_ids(self) -> np.ndarray:
        return self._scorer.unlabelled_ids()

    def query(self, embeddings: Any, k: int) -> Tuple[np.ndarray, np.ndarray]:
        return self._scorer.knn(embeddings, k)


# ---------------------------------------------------------------------------- embedding
class _Encoder:
    """Ray actor body: builds the encoder once, then embeds batches."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]]) -> None:
        self._encode = factory()

    def encode(self, start: int, batch: Any) -> Tuple[int, np.ndarray]:
        out = np.asarray(self._encode(batch), dtype=np.float32)
        return start, out


def embed(items: Sequence[Any], encoder_factory: Callable[[], Callable[[Any], Any]], *,
          batch_size: int = 1024, n_actors: int = 2,
          actor_options: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """Embed ``items`` on a pool of Ray actors; returns (len(items), d) float32 in order.

    ``encoder_factory()`` is called once per actor (load the model there, not in the
    driver) and must return ``encode(batch) -> (len(batch), d)`` array-like; it must be
    picklable (a module-level function or class). Batches of ``batch_size`` items are
    handed out to ``n_actors`` actors as they free up (``ray.util.ActorPool``), so a slow
    actor does not hold the others back. ``actor_options`` go to ``ray.remote`` (e.g.
    ``{"num_gpus": 1}``; default ``{"num_cpus": 1}``). The actors end when this returns.

    Cost: len(items) / batch_size encoder calls spread over the actors, plus 4 d bytes
    per item back to the driver. Thread safety: drive from one thread. For pools too large
    for the driver's memory, write each batch to shared storage instead (not built here).
    """
    ray = _require_ray()
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised; call ray.init() before socbi.distributed.embed")
    if not callable(encoder_factory):
        raise ValueError(f"encoder_factory must be a callable returning an encoder, got "
                         f"{type(encoder_factory).__name__}")
    batch_size = _positive_int("batch_size", batch_size)
    n_actors = _positive_int("n_actors", n_actors)
    n = len(items)
    if n == 0:
        raise ValueError("items is empty; pass at least one item to embed")
    from ray.util import ActorPool
    opts = {"num_cpus": 1} if actor_options is None else dict(actor_options)
    actor_cls = ray.remote(**opts)(_Encoder)
    actors = [actor_cls.remote(encoder_factory) for _ in range(min(n_actors, -(-n // batch_size)))]
    try:
        pool = ActorPool(actors)
        starts = list(range(0, n, batch_size))
        results = pool.map_unordered(lambda a, st: a.encode.remote(st, items[st:st + batch_size]), starts)
        out: Optional[np.ndarray] = None
        for start, block in results:
            want = min(batch_size, n - start)
            if block.ndim != 2 or block.shape[0] != want:
                raise ValueError(f"the encoder returned shape {block.shape} for a batch of {want} "
                                 f"items; it must return one row per item, (batch, d)")
            if out is None:
                out = np.empty((n, block.shape[1]), np.float32)
            elif block.shape[1] != out.shape[1]:
                raise ValueError(f"the encoder returned rows of dimension {block.shape[1]} and "
                                 f"{out.shape[1]}; it must return one fixed dimension")
            if not np.isfinite(block).all():
                raise ValueError(f"the encoder returned non-finite values for items "
                                 f"{start}..{start + want - 1}")
            out[start:start + want] = block
        assert out is not None
        return out
    finally:
        for a in actors:
            ray.kill(a)


# ---------------------------------------------------------------------------- the session
def _fresh_restore(scorer: ShardedScorer, seed: int) -> Dict[str, Any]:
    """The ``_restore`` dict that makes ActiveLearner start exactly like a fresh session
    (same generator draws as its own constructor) but with ``scorer``."""
    rng = np.random.default_rng(seed)
    round_seed = int(rng.integers(0, 2**31 - 1))
    return dict(scorer=scorer, rng_state=rng.bit_generator.state, round_seed=round_seed,
                round=0, log=[], pending=None, model=None, fingerprint=None)


# strategies that need every row on the driver (K-Center's distances to all samples,
# ASCMR's graph): DistributedLearner runs them only over an in-memory array
_WHOLE_MATRIX = {"kcenter", "kcenter_socbi", "ascmr", "margin_div_kc"}


def _whole_matrix_strategy(strategy: str, options: Dict[str, Any]) -> Optional[str]:
    """The strategy (or class_balanced's ``base``) that needs the whole matrix, or None."""
    from .session import canonical_strategy

    name = canonical_strategy(strategy)
    if name == "class_balanced" and isinstance(options.get("base"), str):
        name = canonical_strategy(options["base"])
    return name if name in _WHOLE_MATRIX else None


def _session_rows(src: RowSource, scorer: ShardedScorer) -> RowsView:
    """How the distributed session reads rows by id on the driver: an in-memory array
    as it is; a ``.npy`` file through a read-only map opened per read (only the rows
    asked for; unmapped after); any other source from the owning shards
    (:meth:`ShardedScorer.rows`)."""
    if isinstance(src, ArrayRows):
        x = np.ascontiguousarray(src.array, dtype=np.float32)
        return RowsView(src.n, src.dim, None, array=x, where="driver memory")
    if not isinstance(src, NpyRows):
        return RowsView(src.n, src.dim, scorer.rows, where=repr(src))

    def take(ids: np.ndarray) -> np.ndarray:
        try:
            return src.take(ids)
        finally:  # unmap: pages read for one batch do not stay in the driver's RSS
            src.release()

    return RowsView(src.n, src.dim, take, where=repr(src))


class DistributedLearner(ActiveLearner):
    """:class:`socbi.session.ActiveLearner` whose So-CBI scorer is a :class:`ShardedScorer`.

    Same ``query`` / ``teach`` / ``run`` / ``log`` as the single-machine session and, for
    the same seed and the exact backend, the same selections and counts.

    ``embeddings`` is anything :func:`socbi.storage.open_rows` accepts -- a ``.npy``
    path, Parquet file/folder/URI, a Ray Dataset, a :class:`~socbi.storage.RowSource`,
    or an in-memory array. The shards load and validate their own rows; the driver
    never reads or checks the matrix. It reads rows by id only: the rows a model is
    fitted on or scores (from the ``.npy`` map, or fetched from the shards for Parquet
    and Ray Datasets -- L2-normalised then under ``space="cosine"``). ``labels``: None,
    an (n,) array (-1 = unlabelled), a dict ``{id: class}`` or a pair ``(ids, classes)``.

    Driver state is O(|L| + batch) whatever n is: the labels of the labelled ids only
    (sorted ids + classes), the scorer's labelled ids and neighbour lists, the model.
    Per-sample arrays (``labels``, ``unlabelled_ids``, ``synthetic``, ``balance()``) are
    built on demand, O(n) each call; ``embeddings`` is a :class:`~socbi.storage.RowsView`
    (``learner.embeddings[ids]`` reads those rows). Per query, a
    strategy costs what it reads: ``socbi`` reads the shards' best counts only (O(batch)
    on the driver); ``lc_socbi`` ranks the tied samples at its cut and ``random`` draws
    from the unlabelled ids (O(n) transients); ``least_confidence``,
    ``margin``, ``entropy`` and ``margin_div*`` run the model over every unlabelled row,
    read by id in chunks; ``seals`` over its candidates. K-Center variants and ASCMR
    need the whole matrix on the driver: they run over an in-memory array only, and
    raise ValueError at construction for any other source.

    Extra keyword arguments: ``n_shards``, ``scheme``, ``actor_options``,
    ``checkpoint_dir``, ``checkpoint_every`` (see :class:`ShardedScorer`). Ray must be
    initialised. ``backend`` defaults to ``"exact"`` here (``"hnsw"`` in ActiveLearner):
    exact is the backend whose sharded answers equal the single machine's; pass
    ``backend="hnsw"`` for large pools.

    Persistence is a folder (not the single-file format): :meth:`save` writes every
    shard, the driver's scorer state and the session state (labelled ids and classes,
    generator, round, log); :meth:`load` starts new actors from it. Call :meth:`close`
    to end the actors. Thread safety: as ActiveLearner (one thread at a time).
    """

    def __init__(self, embeddings: Any, labels: Any = None, *, n_shards: int = 2,
                 scheme: str = "hash", actor_options: Any = None,
                 checkpoint_dir: Optional[PathLike] = None, checkpoint_every: int = 10,
                 k: int = 10, backend: str = "exact", space: str = "l2",
                 pool_options: Optional[Dict[str, Any]] = None, seed: int = 0,
                 synthetic: Any = None, _scorer: Optional[ShardedScorer] = None,
                 _restore: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        from .session import DEFAULT_STRATEGY, _sparse_label_arg

        src = open_rows(embeddings)
        strategy = kwargs.get("strategy", DEFAULT_STRATEGY)
        needs = _whole_matrix_strategy(strategy, dict(kwargs.get("strategy_options") or {}))
        if needs is not None and not isinstance(src, ArrayRows):
            raise ValueError(f"strategy {strategy!r} needs the whole embedding matrix on the driver "
                             f"({needs} reads every unlabelled row at once), but DistributedLearner reads "
                             f"{src!r} by id only; use a strategy that reads only the rows it scores "
                             f"(socbi, lc_socbi, seals, margin, margin_div_cover, ...), or pass the "
                             f"embeddings as an in-memory array")
        store = _sparse_label_arg(labels, src.n, synthetic)
        own = _scorer is None
        if _scorer is None:
            _scorer = ShardedScorer(src, k, labelled=store.ids(), n_shards=n_shards, scheme=scheme,
                                    backend=backend, space=space, pool_options=pool_options,
                                    seed=seed, actor_options=actor_options,
                                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
        self._source = src
        restore = _restore if _restore is not None else _fresh_restore(_scorer, seed)
        restore["scorer"] = _scorer
        restore.setdefault("fingerprint", None)
        restore["fingerprint"] = restore["fingerprint"] or f"sharded:{json.dumps(src.describe())}"
        try:
            super().__init__(_session_rows(src, _scorer), store, k=k, backend=backend, space=space,
                             pool_options=pool_options, seed=seed, _restore=restore, **kwargs)
        except BaseException:
            if own:  # a bad session argument: end the actors just started, leave nothing behind
                _scorer.close()
            raise

    def _rows_arg(self, embeddings: Any) -> Tuple[Any, Optional[np.ndarray]]:
        # the RowsView: nothing read or checked here (the shards validated their rows)
        given = self._source.array if isinstance(self._source, ArrayRows) else None
        return embeddings, given

    def _labels_arg(self, labels: Any, synthetic: Any, n: int) -> Any:
        return labels  # the O(|L|) store built in __init__

    def _labelled_lookup(self) -> Any:
        return self._store  # membership by binary search, no n-long mask

    def _state(self, timed: Any) -> PoolState:
        # labelled comes lazily from the scorer (its sorted ids), embeddings and features
        # are read by id: no n-long array unless the strategy itself reads every sample
        return PoolState(scorer=timed, embeddings=self._x, features=self.features, model=self.model)

    @property
    def recoveries(self) -> List[Dict[str, Any]]:
        """Shard restarts so far: shard, checkpoint round, replayed rounds (scorer rounds)."""
        return list(self.scorer.recoveries)

    def save(self, path: PathLike, *, store_embeddings: bool = False) -> Path:  # type: ignore[override]
        """Save shards + driver state + session state under folder ``path``. Embeddings
        are not stored (pass them to :meth:`load`); sklearn models are refit on load,
        other models are not saved. O(n (d + K)) across the shards."""
        if store_embeddings:
            raise ValueError("DistributedLearner.save does not store embeddings (they are "
                             "usually too large); pass store_embeddings=False and give them to load()")
        d = Path(path)
        self.scorer.save(d / "scorer")
        meta = dict(labelled_ids=self._store.ids().tolist(), label_values=self._store.values().tolist(),
                    synthetic_ids=self._store.ids()[self._store.is_synthetic(self._store.ids())].tolist(),
                    round=self.round, round_seed=self._round_seed,
                    rng_state=self._rng.bit_generator.state, log=self.log, pending=self._pending,
                    options=dict(strategy=self.strategy_name, strategy_options=self.strategy_options,
                                 k=self.k, backend=self.backend, space=self.space,
                                 pool_options=self.pool_options, threads=self.threads,
                                 seed=self._seed, budget=self.budget,
                                 target_accuracy=self.target_accuracy, max_rounds=self.max_rounds,
                                 class_names=self.class_names,
                                 n_classes=self.n_classes if self._n_classes_declared else None,
                                 n_shards=self.scorer.n_shards,
                                 scheme=self.scorer.scheme))
        from ._files import atomic_write
        from .session import _jsonable
        data = json.dumps(_jsonable(meta), sort_keys=True).encode()
        atomic_write(d / "session.json", lambda fh: fh.write(data))
        return d

    @classmethod
    def load(cls, path: PathLike, embeddings: Any = None, *, model: Any = "logreg",  # type: ignore[override]
             features: Any = None, eval_set: Any = None, actor_options: Any = None,
             checkpoint_dir: Optional[PathLike] = None, checkpoint_every: int = 10,
             **kwargs: Any) -> "DistributedLearner":
        """Resume a session saved by :meth:`save` over the same ``embeddings``."""
        if embeddings is None:
            raise ValueError("DistributedLearner.load needs embeddings= (save() does not store them)")
        d = Path(path)
        if not (d / "session.json").exists():
            raise FileNotFoundError(f"no saved distributed session in {str(d)!r}: session.json is missing")
        meta = json.loads((d / "session.json").read_text())
        o = meta["options"]
        scorer = ShardedScorer.load(d / "scorer", embeddings, actor_options=actor_options,
                                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
        restore = dict(scorer=scorer, rng_state=meta["rng_state"], round_seed=meta["round_seed"],
                       round=meta["round"], log=meta["log"], pending=meta["pending"], model=None,
                       fingerprint=None)
        if "labelled_ids" in meta:
            labels: Any = (np.asarray(meta["labelled_ids"], np.int64), np.asarray(meta["label_values"], np.int64))
            kwargs.setdefault("synthetic", np.asarray(meta.get("synthetic_ids", []), np.int64))
        else:  # folders saved before the session kept O(|L|) labels: one label per sample
            labels = np.asarray(meta["labels"], np.int64)
        return cls(embeddings, labels, k=o["k"], backend=o["backend"],
                   space=o["space"], pool_options=o["pool_options"], seed=o["seed"],
                   strategy=o["strategy"], strategy_options=o["strategy_options"],
                   threads=o["threads"], budget=o["budget"], target_accuracy=o["target_accuracy"],
                   max_rounds=o["max_rounds"], class_names=o["class_names"],
                   n_classes=o.get("n_classes"), model=model,
                   features=features, eval_set=eval_set, _scorer=scorer, _restore=restore, **kwargs)

    def close(self) -> None:
        """End the shard actors (see :meth:`ShardedScorer.close`)."""
        self.scorer.close()


def make_learner(embeddings: Any, labels: Any = None, *, distributed: Optional[Dict[str, Any]] = None,
                 **kwargs: Any) -> Any:
    """A single-machine :class:`~socbi.session.ActiveLearner` (``distributed=None``) or a
    :class:`DistributedLearner` (``distributed={"n_shards": 4, ...}``: keyword arguments
    of :class:`ShardedScorer` such as ``scheme``, ``actor_options``, ``checkpoint_dir``).
    Everything else goes to the session unchanged, so a configuration switches one key."""
    if distributed is None:
        return ActiveLearner(embeddings, labels, **kwargs)
    if not isinstance(distributed, dict):
        raise ValueError(f"distributed must be None or a dict of ShardedScorer options "
                         f"(e.g. {{'n_shards': 4}}), got {type(distributed).__name__}")
    allowed = {"n_shards", "scheme", "actor_options", "checkpoint_dir", "checkpoint_every"}
    extra = set(distributed) - allowed
    if extra:
        raise ValueError(f"distributed has unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
    return DistributedLearner(embeddings, labels, **distributed, **kwargs)
