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
   ``B``) go into Ray's object store **once** (``ray.put``); every shard receives the
   reference, marks its members of ``B`` labelled and returns its local K nearest
   unlabelled candidates with distances;
2. the driver merges the ``n_shards * K`` candidates of each query to the global K
   nearest by ``(distance, id)`` (:func:`merge_candidates`) and forms the +1/-1
   deltas exactly as ``BoundaryScorer`` does;
3. the deltas are grouped by owning shard and each shard applies its group in one
   batched ``update`` (and erases its members of ``B`` from its index).

``select(n)`` asks every shard for its local ``n`` lowest (or highest) counts and merges
them by ``(count, slot)`` (:func:`merge_ranked`): the exact global answer.

Faults: shards checkpoint their state (pool + counts + round number) every
``checkpoint_every`` rounds into ``checkpoint_dir``; the driver journals the per-shard
effect of every round since (ids marked labelled, deltas applied). When a shard actor
dies (``ray.exceptions.RayActorError``) the driver starts a new actor from that shard's
last checkpoint, replays the journaled rounds for that shard only (no neighbour query is
needed: the journal holds the deltas), and retries the interrupted round; every shard
call of a round is idempotent by round number, so survivors that had already applied
part of it are not changed twice. Each recovery is recorded in
:attr:`ShardedScorer.recoveries` (which shard, from which checkpoint, which rounds were
replayed). No label is lost: labels live on the driver and in the journal.

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
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import knn as _knn
from .knn import _check_embeddings, _check_ids
from .scoring import RoundStats, _LabelledState, _positive_int, default_index_factory, round_deltas
from .session import ActiveLearner

__all__ = [
    "shard_of", "merge_candidates", "merge_ranked", "ShardCore", "ShardedScorer",
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
class ShardCore:
    """The state of one shard: pool + score index over the shard's own global ids.

    Plain Python (the Ray actor wraps it; tests may use it directly). ``gids`` are the
    shard's global ids (any order; stored sorted), ``x`` their embeddings (same order),
    ``slots`` their global tie-break slots, ``labelled`` a bool mask over ``gids`` of
    those labelled before round 1.

    Every mutating call takes the round number ``r`` and is idempotent per round:
    ``begin(r, ...)`` marks the round's labelled ids at most once, ``commit(r, ...)``
    applies the round's deltas at most once (``marked_round`` / ``applied_round``).

    Memory: the pool (exact: 4 d bytes per id; HNSW: 4 d + ~8 M bytes) plus the index
    (16 bytes per id up front + nodes) plus 32 bytes per id of maps (4 int64 arrays).
    Thread safety: none; one call at a time (Ray actors run calls serially).
    """

    def __init__(self, shard: int, gids: Any, x: Any, slots: Any, k: int, *,
                 backend: str = "exact", space: str = "l2",
                 pool_options: Optional[Dict[str, Any]] = None,
                 labelled: Any = None, counts: Any = None, round: int = 0,
                 pool: Optional[_knn.NeighbourPool] = None) -> None:
        gids = np.asarray(gids, dtype=np.int64)
        order = np.argsort(gids, kind="stable")
        self.shard = int(shard)
        self.gids = gids[order]
        n = self.gids.size
        if n == 0:
            raise ValueError(f"shard {shard} owns no samples; use fewer shards (n_shards) "
                             f"for this many samples")
        self.slots = np.asarray(slots, dtype=np.int64)[order]
        self.k = int(k)
        # index key: rank of the global slot among this shard's slots (monotone map)
        self._slot_order = np.argsort(self.slots, kind="stable")
        self._local_slot = np.empty(n, np.int64)
        self._local_slot[self._slot_order] = np.arange(n)
        lab = np.zeros(n, bool) if labelled is None else np.asarray(labelled, bool)[order]
        if pool is None:
            xx = _check_embeddings(x, None, name="x")[order]
            opts = dict(pool_options or {})
            opts.setdefault("progress", False)
            pool = _knn.make_pool(backend, xx.shape[1], n, space, **opts)
            unl = np.flatnonzero(~lab)
            pool.add(unl, xx[unl])
        self.pool = pool
        self.index = default_index_factory()(n)
        unl = np.flatnonzero(pool.state == _knn.UNLABELLED)
        c = np.zeros(unl.size) if counts is None else np.asarray(counts, np.float64)
        self.index.insert(self._local_slot[unl], c)
        if unl.size:
            self.index.bottom(1)  # pay the lazy split of the bulk insert now
        self.marked_round = int(round)
        self.applied_round = int(round)

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

    def rounds(self) -> Tuple[int, int]:
        """``(marked_round, applied_round)``: how far this shard is. O(1)."""
        return self.marked_round, self.applied_round

    # -- a round
    def begin(self, r: int, new_gids: np.ndarray, queries: np.ndarray, k: int
              ) -> Tuple[np.ndarray, np.ndarray, int]:
        """Mark this shard's ``new_gids`` labelled (once for round ``r``) and return its
        local K nearest unlabelled candidates of ``queries`` as global ids / distances
        (-1 / inf pad when the shard has fewer than ``k``), plus the new pool size.
        O(m * n_shard * d) exact, O(m log n_shard) HNSW."""
        if r <= self.marked_round and r <= self.applied_round:
            pass  # already committed (replay): nothing to mark
        elif r > self.marked_round:
            if r != self.marked_round + 1:
                raise RuntimeError(f"shard {self.shard} is at round {self.marked_round}; "
                                   f"cannot begin round {r}")
            self.pool.mark_labelled(self._local(np.asarray(new_gids, np.int64)))
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

    def commit(self, r: int, new_gids: np.ndarray, upd_gids: np.ndarray, deltas: np.ndarray) -> int:
        """Erase this shard's ``new_gids`` from its index and add ``deltas`` to the
        counts of ``upd_gids`` (its own ids), once for round ``r``. Returns the round
        now applied. One batched index update: O(len(upd) + node work)."""
        if r <= self.applied_round:
            return self.applied_round
        if r != self.applied_round + 1:
            raise RuntimeError(f"shard {self.shard} applied round {self.applied_round}; "
                               f"cannot commit round {r}")
        new = self._local(np.asarray(new_gids, np.int64))
        if self.marked_round < r:  # replay: begin() was not called for this round
            self.pool.mark_labelled(new)
            self.marked_round = r
        if new.size:
            self.index.erase(self._local_slot[new])
        upd = np.asarray(upd_gids, np.int64)
        if upd.size:
            self.index.update(self._local_slot[self._local(upd)], np.asarray(deltas, np.float64))
        self.applied_round = r
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
    def save(self, directory: str) -> int:
        """Write the shard (pool, counts, maps, round) under ``directory`` atomically:
        into a fresh subfolder, then a ``CURRENT`` file naming it is replaced last.
        Returns the saved round. O(n_shard * d)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.marked_round != self.applied_round:
            raise RuntimeError(f"shard {self.shard} is inside round {self.marked_round}; save between rounds")
        sub = d / f"r{self.applied_round:08d}-{os.getpid()}-{time.monotonic_ns()}"
        sub.mkdir()
        self.pool.save(sub / "pool")
        g, c = self.all_counts()
        _knn._atomic_savez(sub / "shard.npz", dict(
            shard=self.shard, gids=self.gids, slots=self.slots, k=self.k,
            counted=g, counts=c, round=self.applied_round))
        tmp = d / f"CURRENT.tmp-{os.getpid()}"
        tmp.write_text(sub.name)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        old = (d / "CURRENT").read_text().strip() if (d / "CURRENT").exists() else None
        os.replace(tmp, d / "CURRENT")
        _knn._fsync_path(d)
        if old and old != sub.name:
            shutil.rmtree(d / old, ignore_errors=True)
        return self.applied_round

    @classmethod
    def load(cls, directory: str) -> "ShardCore":
        """Rebuild a shard from :meth:`save`. O(n_shard * d)."""
        d = Path(directory)
        cur = d / "CURRENT"
        if not cur.exists():
            raise FileNotFoundError(f"no saved shard in {str(d)!r}: CURRENT is missing")
        sub = d / cur.read_text().strip()
        with np.load(sub / "shard.npz", allow_pickle=False) as z:
            meta = {k: z[k] for k in z.files}
        pool = _knn.load_pool(sub / "pool", progress=False)
        gids = meta["gids"].astype(np.int64)
        lab = pool.state != _knn.UNLABELLED
        core = cls(int(meta["shard"]), gids, None, meta["slots"], int(meta["k"]), labelled=lab,
                   pool=pool, counts=None, round=int(meta["round"]))
        counted = meta["counted"].astype(np.int64)
        if counted.size:
            core.index.assign(core._local_slot[core._local(counted)], meta["counts"].astype(np.float64))
        return core


# ---------------------------------------------------------------------------- the driver
class ShardedScorer(_LabelledState):
    """Drop-in for :class:`socbi.scoring.BoundaryScorer` with the pool on Ray actors.

    Parameters
    ----------
    embeddings : (n, d) array
        All embeddings (the driver needs the labelled ones as queries; each shard gets
        its own rows once, through the object store).
    k, labelled, backend, space, pool_options, tie_break, seed :
        As for ``BoundaryScorer`` (same tie-break permutation for the same seed).
    n_shards : int
        Number of shard actors (>= 1).
    scheme : ``"hash"`` (default) or ``"range"``: ownership, see :func:`shard_of`.
    actor_options : dict
        ``ray.remote`` options for each shard actor; default ``{"num_cpus": 0}`` so that
        many shards fit a small machine (set e.g. ``num_cpus=4, memory=...`` on a cluster).
    checkpoint_dir : path, optional
        Where shards checkpoint; a temporary folder (removed by :meth:`close`) when None.
    checkpoint_every : int
        Checkpoint every this many rounds (after round 0, i.e. at construction, always).
        A recovery replays at most ``checkpoint_every - 1`` journaled rounds.

    Ray must be initialised by the caller (``ray.init(...)``); the scorer starts and
    owns its actors (:meth:`close` ends them).

    Complexity per round of b labels with r repairs on S shards: (b + r) queries on every
    shard in parallel (exact: O((b + r) n d / S) per shard), a merge O((b + r) S K),
    deltas O(|L| K) numpy, one batched update per shard. Network per round:
    4 d (b + r) bytes once into the object store, read by each shard, plus
    12 S K (b + r) bytes of candidates back and 16 K (b + r) bytes of deltas out.

    Thread safety: not synchronised; one thread at a time.
    """

    def __init__(self, embeddings: Any, k: int = 10, *, labelled: Any = None,
                 n_shards: int = 2, scheme: str = "hash", backend: str = "exact",
                 space: str = "l2", pool_options: Optional[Dict[str, Any]] = None,
                 tie_break: str = "random", seed: int = 0,
                 actor_options: Optional[Dict[str, Any]] = None,
                 checkpoint_dir: Optional[PathLike] = None, checkpoint_every: int = 1,
                 progress: bool = False, _restore: Optional[Dict[str, Any]] = None) -> None:
        ray = _require_ray()
        if not ray.is_initialized():
            raise RuntimeError("Ray is not initialised; call ray.init() (e.g. ray.init(num_cpus=2)) "
                               "or ray.init(address='auto') for a cluster before building a ShardedScorer")
        x = _check_embeddings(embeddings, None, name="embeddings")
        n, d = x.shape
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
        self.checkpoint_every = _positive_int("checkpoint_every", checkpoint_every)
        self.embeddings = x
        self.n_samples = n
        self.backend, self.space, self.scheme = backend, space, scheme
        self.pool_options = dict(pool_options or {})
        self.tie_break, self.seed = tie_break, int(seed)
        self.progress = bool(progress)
        self.actor_options = {"num_cpus": 0} if actor_options is None else dict(actor_options)
        self._owned_tmp = checkpoint_dir is None
        self.checkpoint_dir = Path(tempfile.mkdtemp(prefix="socbi-shards-") if checkpoint_dir is None
                                   else checkpoint_dir)
        if tie_break == "random":
            self._perm = np.random.default_rng(self.seed).permutation(n).astype(np.int64)
        else:
            self._perm = np.arange(n, dtype=np.int64)
        self.owner = shard_of(np.arange(n), self.n_shards, scheme=scheme, n_samples=n)
        empty = np.flatnonzero(np.bincount(self.owner, minlength=self.n_shards) == 0)
        if empty.size:
            raise ValueError(f"shards {empty.tolist()} own no samples with scheme={scheme!r} and "
                             f"n_shards={n_shards}; use fewer shards")
        self._Actor = ray.remote(**self.actor_options)(ShardCore)
        self.round = 0
        self.recoveries: List[Dict[str, Any]] = []
        self._journal: Dict[int, Dict[str, np.ndarray]] = {}   # round -> new ids / upd ids / deltas
        self._ckpt_round = [0] * self.n_shards
        self._fault_hook: Optional[Callable[[str, int], None]] = None
        self.last_round = RoundStats()
        self._nbr = np.full((n, self.k), -1, np.int32)

        if _restore is not None:  # load(): actors from saved shard folders
            self.round = int(_restore["round"])
            self._labelled = _restore["labelled"].astype(bool)
            self._nbr[:] = _restore["neighbours"]
            self.actors = [_spawn_loaded(self.actor_options, str(_restore["shard_dirs"][s]))
                           for s in range(self.n_shards)]
            rounds = [applied for _, applied in ray.get([a.rounds.remote() for a in self.actors])]
            if any(r != self.round for r in rounds):
                raise ValueError(f"saved shards are at rounds {rounds} but the session at round "
                                 f"{self.round}; the save is incomplete")
            self._ckpt_round = [self.round] * self.n_shards
            self.checkpoint()
            return

        lab = self._labelled_mask(labelled, n)
        self._labelled = np.zeros(n, bool)
        self.actors = []
        for s in range(self.n_shards):
            own = np.flatnonzero(self.owner == s).astype(np.int64)
            self.actors.append(self._Actor.remote(
                s, own, x[own], self._perm[own], self.k, backend=backend, space=space,
                pool_options=self._shard_pool_options(s), labelled=None))
        ray.get([a.size.remote() for a in self.actors])
        self.checkpoint()
        lab_ids = np.flatnonzero(lab).astype(np.int64)
        if lab_ids.size:  # round 0's initial labels: counted like a first round, no repairs
            self._round(lab_ids, initial=True)
            self.checkpoint()

    # ------------------------------------------------------------------ helpers
    def _shard_pool_options(self, s: int) -> Dict[str, Any]:
        opts = dict(self.pool_options)
        if self.backend == "hnsw":
            opts.setdefault("seed", self.seed)
        return opts

    def _shard_dir(self, s: int) -> Path:
        return self.checkpoint_dir / f"shard-{s:04d}"

    # ------------------------------------------------------------------ BoundaryScorer API
    def __len__(self) -> int:
        """Unlabelled samples (driver's count, O(1))."""
        return int(self.n_samples - self._n_lab())

    def _n_lab(self) -> int:
        return int(self._labelled.sum())

    def counts(self, ids: Any = None) -> np.ndarray:
        """Counts (int64) of unlabelled ``ids`` (default all, ascending), asked of their
        owning shards in parallel. O(len(ids)) plus one round trip."""
        ids = self._unlabelled_arg(ids)
        out = np.empty(ids.size, np.int64)
        own = self.owner[ids]
        got = self._fan_out("counts", {s: (ids[own == s],) for s in np.unique(own).tolist()})
        for s, c in got.items():
            out[own == s] = c
        return out

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
        already = self._labelled[ids]
        if already.any():
            raise ValueError(f"ids {ids[already][:5].tolist()} are labelled already; pass only "
                             f"unlabelled ids")
        if ids.size == 0:
            self.last_round = RoundStats()
            return self.last_round
        stats = self._round(ids, initial=False)
        if self.round % self.checkpoint_every == 0:
            self.checkpoint()
        return stats

    # ------------------------------------------------------------------ the round
    def _get(self, ref: Any, s: int) -> Any:
        ray = _require_ray()
        return ray.get(ref)

    def _fan_out(self, method: str, args: Dict[int, Tuple[Any, ...]]) -> Dict[int, Any]:
        """Call ``method(*args[s])`` on shards ``s`` in parallel and gather the answers.
        A dead shard (between rounds) is restarted from its checkpoint, replayed to the
        current round (see :meth:`_recover`), and the whole call is retried."""
        ray = _require_ray()
        while True:
            try:
                refs = {s: getattr(self.actors[s], method).remote(*a) for s, a in args.items()}
                return {s: ray.get(ref) for s, ref in refs.items()}
            except ray.exceptions.RayActorError:
                self._recover(self.round + 1, retry=False)

    def _round(self, new: np.ndarray, *, initial: bool) -> RoundStats:
        ray = _require_ray()
        r = self.round + 1
        while True:
            try:
                stats = self._round_once(r, new, initial=initial)
                break
            except ray.exceptions.RayActorError:
                self._recover(r)
        self.round = r
        self.last_round = stats
        return stats

    def _hook(self, phase: str, r: int) -> None:
        if self._fault_hook is not None:
            self._fault_hook(phase, r)

    def _round_once(self, r: int, new: np.ndarray, *, initial: bool) -> RoundStats:
        ray = _require_ray()
        stats = RoundStats(labelled=int(new.size))
        t0 = time.perf_counter()
        affected = np.empty(0, np.int64)
        old = np.flatnonzero(self._labelled)
        if not initial and old.size:
            is_new = np.zeros(self.n_samples, bool)
            is_new[new] = True
            tab = self._nbr[old]
            hit = is_new[np.where(tab >= 0, tab, 0)] & (tab >= 0)
            affected = old[hit.any(axis=1)].astype(np.int64)
        queries = np.concatenate([new, affected])
        k_eff = min(self.k, len(self) - int(new.size))
        q_ref = ray.put(np.ascontiguousarray(self.embeddings[queries]))  # once, shared by all shards
        new_own = self.owner[new]
        self._hook("before_query", r)
        refs = [a.begin.remote(r, new[new_own == s], q_ref, max(k_eff, 0))
                for s, a in enumerate(self.actors)]
        parts = [self._get(ref, s) for s, ref in enumerate(refs)]
        t1 = time.perf_counter()
        self._hook("after_query", r)
        if k_eff > 0:
            nbr, _ = merge_candidates([p[0] for p in parts], [p[1] for p in parts], k_eff)
        else:
            nbr = np.empty((queries.size, 0), np.int64)
        t2 = time.perf_counter()
        new_nbr, rep_nbr = nbr[:new.size], nbr[new.size:]
        upd_ids, upd_d = round_deltas(self._nbr, self._labelled, new, new_nbr, affected, rep_nbr)
        upd_own = self.owner[upd_ids]
        journal = {"new": new.copy(), "upd": upd_ids, "delta": upd_d}
        t3 = time.perf_counter()
        refs = [a.commit.remote(r, new[new_own == s], upd_ids[upd_own == s], upd_d[upd_own == s])
                for s, a in enumerate(self.actors)]
        self._hook("during_commit", r)
        for s, ref in enumerate(refs):
            self._get(ref, s)
        t4 = time.perf_counter()
        # ---- driver commit (only after every shard applied the round)
        self._journal[r] = journal
        self._labelled[new] = True
        self._nbr[new] = -1
        self._nbr[new, :k_eff] = new_nbr
        if affected.size:
            self._nbr[affected] = -1
            self._nbr[affected, :k_eff] = rep_nbr
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
        """Restart every dead shard from its checkpoint and replay its journaled rounds
        (``ckpt+1 .. r-1``) so that it stands at round ``r - 1``; the caller retries
        round ``r`` (``retry=True``) or, between rounds, its read / checkpoint call.
        Appends one entry per restarted shard to :attr:`recoveries`: ``shard``,
        ``checkpoint_round``, ``replayed_rounds``, ``retried_round`` (None between
        rounds), ``seconds``. O(shard size) to reload plus the replayed updates."""
        ray = _require_ray()
        dead = [s for s in range(self.n_shards) if not self._alive(s)]
        if not dead:
            raise RuntimeError("a shard call failed with RayActorError but every shard answers; "
                               "giving up instead of looping")
        for s in dead:
            t0 = time.perf_counter()
            actor = _spawn_loaded(self.actor_options, str(self._shard_dir(s)))
            base = self._ckpt_round[s]
            replay = list(range(base + 1, r))
            for q in replay:
                j = self._journal[q]
                mine_new = j["new"][self.owner[j["new"]] == s]
                sel = self.owner[j["upd"]] == s
                ray.get(actor.commit.remote(q, mine_new, j["upd"][sel], j["delta"][sel]))
            self.actors[s] = actor
            self.recoveries.append(dict(shard=s, round=r, checkpoint_round=base,
                                        replayed_rounds=replay,
                                        retried_round=r if retry else None,
                                        seconds=time.perf_counter() - t0))

    def checkpoint(self) -> None:
        """Every shard saves its state into ``checkpoint_dir`` (in parallel); journal
        entries no shard needs any more are dropped. O(n d / S) per shard."""
        ray = _require_ray()
        while True:
            try:
                rounds = ray.get([a.save.remote(str(self._shard_dir(s))) for s, a in enumerate(self.actors)])
                break
            except ray.exceptions.RayActorError:
                self._recover(self.round + 1, retry=False)
        self._ckpt_round = [int(x) for x in rounds]
        low = min(self._ckpt_round)
        for q in [q for q in self._journal if q <= low]:
            del self._journal[q]

    # ------------------------------------------------------------------ verification
    def recount(self) -> np.ndarray:
        """Counts of all unlabelled samples (ascending id) from scratch: every labelled
        sample re-queried on every shard and merged. O(|L|) queries per shard."""
        ray = _require_ray()
        lab = self.labelled_ids()
        unl = self.unlabelled_ids()
        k_eff = min(self.k, len(self))
        total = np.zeros(self.n_samples, np.int64)
        if lab.size and k_eff > 0:
            q_ref = ray.put(np.ascontiguousarray(self.embeddings[lab]))
            got = self._fan_out("begin", {s: (self.round, np.empty(0, np.int64), q_ref, k_eff)
                                          for s in range(self.n_shards)})
            parts = [got[s] for s in range(self.n_shards)]
            nbr, _ = merge_candidates([p[0] for p in parts], [p[1] for p in parts], k_eff)
            total += np.bincount(nbr.ravel(), minlength=self.n_samples)
        return total[unl]

    def check(self, *, recount: bool = True) -> None:
        """Shard invariants, index counts vs stored lists, and (``recount``) vs a recount."""
        self._fan_out("check", {s: () for s in range(self.n_shards)})
        sizes = self._fan_out("size", {s: () for s in range(self.n_shards)}).values()
        if sum(sizes) != len(self):
            raise AssertionError(f"shards hold {sum(sizes)} unlabelled samples, driver {len(self)}")
        _, held = self._check_lists_against_counts("shard")
        if recount and not np.array_equal(self.recount(), held):
            raise AssertionError("incremental sharded counts differ from a recount")

    # ------------------------------------------------------------------ persistence
    def save(self, directory: PathLike) -> Path:
        """Save every shard (``shard-XXXX/``) and the driver state (``scorer.npz``) under
        ``directory``. Driver state is written last, so an interrupted save leaves the
        previous ``scorer.npz`` (whose shards may then be newer: :meth:`load` refuses)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._fan_out("save", {s: (str(d / f"shard-{s:04d}"),) for s in range(self.n_shards)})
        _knn._atomic_savez(d / "scorer.npz", dict(
            k=self.k, n_shards=self.n_shards, scheme=self.scheme, backend=self.backend,
            space=self.space, tie_break=self.tie_break, seed=self.seed, round=self.round,
            labelled=self._labelled, neighbours=self._nbr,
            pool_options=json.dumps(self.pool_options)))
        return d

    @classmethod
    def load(cls, directory: PathLike, embeddings: Any, *, actor_options: Optional[Dict[str, Any]] = None,
             checkpoint_dir: Optional[PathLike] = None, checkpoint_every: int = 1) -> "ShardedScorer":
        """Start shard actors from a :meth:`save` folder, over the same ``embeddings``."""
        d = Path(directory)
        meta_p = d / "scorer.npz"
        if not meta_p.exists():
            raise FileNotFoundError(f"no saved sharded scorer in {str(d)!r}: scorer.npz is missing")
        with np.load(meta_p, allow_pickle=False) as z:
            m = {k: z[k] for k in z.files}
        n_shards = int(m["n_shards"])
        restore = dict(round=int(m["round"]), labelled=m["labelled"], neighbours=m["neighbours"],
                       shard_dirs=[str(d / f"shard-{s:04d}") for s in range(n_shards)])
        return cls(embeddings, int(m["k"]), n_shards=n_shards, scheme=str(m["scheme"]),
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
                f"labelled={self._n_lab()}, round={self.round}, backend={self.backend!r})")


class _LoadedShard(ShardCore):
    """A ShardCore built from a saved folder (the actor class for restarts/loads)."""

    def __init__(self, directory: str) -> None:  # noqa: D401 - see ShardCore.load
        core = ShardCore.load(directory)
        self.__dict__.update(core.__dict__)


def _spawn_loaded(options: Dict[str, Any], directory: str) -> Any:
    """A shard actor started from a saved shard folder."""
    ray = _require_ray()
    return ray.remote(**options)(_LoadedShard).remote(directory)


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


class DistributedLearner(ActiveLearner):
    """:class:`socbi.session.ActiveLearner` whose So-CBI scorer is a :class:`ShardedScorer`.

    Same ``query`` / ``teach`` / ``run`` / ``log`` as the single-machine session and, for
    the same seed and the exact backend, the same selections and counts. Extra keyword
    arguments: ``n_shards``, ``scheme``, ``actor_options``, ``checkpoint_dir``,
    ``checkpoint_every`` (see :class:`ShardedScorer`). Ray must be initialised.
    ``backend`` defaults to ``"exact"`` here (``"hnsw"`` in ActiveLearner): exact is the
    backend whose sharded answers equal the single machine's; pass ``backend="hnsw"``
    for large pools.

    Persistence is a folder (not the single-file format): :meth:`save` writes every
    shard, the driver's scorer state and the session state (labels, generator, round,
    log); :meth:`load` starts new actors from it. Call :meth:`close` to end the actors.
    Thread safety: as ActiveLearner (one thread at a time).
    """

    def __init__(self, embeddings: Any, labels: Any = None, *, n_shards: int = 2,
                 scheme: str = "hash", actor_options: Optional[Dict[str, Any]] = None,
                 checkpoint_dir: Optional[PathLike] = None, checkpoint_every: int = 1,
                 k: int = 10, backend: str = "exact", space: str = "l2",
                 pool_options: Optional[Dict[str, Any]] = None, seed: int = 0,
                 _scorer: Optional[ShardedScorer] = None, _restore: Optional[Dict[str, Any]] = None,
                 **kwargs: Any) -> None:
        x = _check_embeddings(embeddings, None, name="embeddings")
        if _scorer is None:
            n = x.shape[0]
            lab = np.full(n, -1, np.int64) if labels is None else np.asarray(labels)
            if lab.shape != (n,):
                raise ValueError(f"labels has shape {lab.shape}, expected ({n},); one class or -1 per sample")
            _scorer = ShardedScorer(x, k, labelled=lab >= 0, n_shards=n_shards, scheme=scheme,
                                    backend=backend, space=space, pool_options=pool_options,
                                    seed=seed, actor_options=actor_options,
                                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
        restore = _restore if _restore is not None else _fresh_restore(_scorer, seed)
        restore["scorer"] = _scorer
        super().__init__(x, labels, k=k, backend=backend, space=space, pool_options=pool_options,
                         seed=seed, _restore=restore, **kwargs)

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
        meta = dict(labels=self._labels.tolist(), round=self.round, round_seed=self._round_seed,
                    rng_state=self._rng.bit_generator.state, log=self.log, pending=self._pending,
                    options=dict(strategy=self.strategy_name, strategy_options=self.strategy_options,
                                 k=self.k, backend=self.backend, space=self.space,
                                 pool_options=self.pool_options, threads=self.threads,
                                 seed=self._seed, budget=self.budget,
                                 target_accuracy=self.target_accuracy, max_rounds=self.max_rounds,
                                 class_names=self.class_names, n_shards=self.scorer.n_shards,
                                 scheme=self.scorer.scheme))
        from .session import _jsonable, atomic_write
        data = json.dumps(_jsonable(meta), sort_keys=True).encode()
        atomic_write(d / "session.json", lambda fh: fh.write(data))
        return d

    @classmethod
    def load(cls, path: PathLike, embeddings: Any = None, *, model: Any = "logreg",  # type: ignore[override]
             features: Any = None, eval_set: Any = None, actor_options: Optional[Dict[str, Any]] = None,
             checkpoint_dir: Optional[PathLike] = None, checkpoint_every: int = 1,
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
        return cls(embeddings, np.asarray(meta["labels"], np.int64), k=o["k"], backend=o["backend"],
                   space=o["space"], pool_options=o["pool_options"], seed=o["seed"],
                   strategy=o["strategy"], strategy_options=o["strategy_options"],
                   threads=o["threads"], budget=o["budget"], target_accuracy=o["target_accuracy"],
                   max_rounds=o["max_rounds"], class_names=o["class_names"], model=model,
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
