"""Neighbour pools: the K nearest *unlabelled* samples of a batch of embeddings.

So-CBI (§3.2) asks, for every labelled sample, for its K nearest neighbours among the
unlabelled pool. A :class:`NeighbourPool` holds the unlabelled embeddings, forgets a
sample when it becomes labelled, and answers batched K-nearest-neighbour queries. Two
backends share one interface:

* :class:`HNSWPool` — hnswlib's HNSW graph (approximate; sublinear queries). Labelled
  samples are *marked deleted* in the graph: they still route searches but never come
  back as results.
* :class:`ExactPool` — brute force in numpy, chunked so that memory stays bounded
  whatever the pool size. Exact, deterministic, ties broken by ascending id; use it
  for small pools and as the oracle that measures HNSW recall
  (:func:`recall_at_k`).

Ids are dense integers in ``[0, capacity)``, the same ids the score index uses. Every
id is in one of three states: absent (never added), unlabelled (returned by
queries) or labelled (kept, never returned).

Distances: ``space="l2"`` gives the *squared* Euclidean distance, ``space="cosine"``
gives ``1 - cos`` (embeddings are normalised on the way in; zero vectors are
rejected). Both backends report the same quantity, as float32.

Thread safety: a pool is not internally synchronised. Concurrent :meth:`query` calls
are safe with each other (hnswlib searches are read-only; the exact backend only
reads); :meth:`add`, :meth:`mark_labelled`, :meth:`unmark_labelled` and
:meth:`load_pool` must not run concurrently with anything else on the same pool.
hnswlib parallelises inside one call with ``num_threads`` threads.

Determinism: queries are deterministic for a given graph and state. An HNSW graph
built with ``num_threads > 1`` depends on thread scheduling (the insertion order of
concurrent inserts), so pass ``num_threads=1`` when a bit-reproducible graph matters;
``seed`` fixes the level assignment either way.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ._checks import readonly_view
from ._files import atomic_write, fsync_path

from ._progress import progress as _progress_policy
from ._threads import default_threads

__all__ = [
    "SPACES",
    "NeighbourPool",
    "ExactPool",
    "HNSWPool",
    "make_pool",
    "load_pool",
    "exact_knn",
    "recall_at_k",
    "ABSENT",
    "UNLABELLED",
    "LABELLED",
]

SPACES = ("l2", "cosine")

ABSENT = np.uint8(0)
UNLABELLED = np.uint8(1)
LABELLED = np.uint8(2)

_MAX_CAPACITY = 2**32 - 1  # ids are packed into the low 32 bits of a sort key
PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- helpers
def _progress(iterable, *, total: int, desc: str, enabled: bool):
    """socbi's progress policy (socbi._progress): a bar on a terminal, else log lines."""
    return _progress_policy(iterable, total=total, desc=desc, unit="chunk", enabled=enabled)


def _check_ids(ids: Any, capacity: int, name: str = "ids") -> np.ndarray:
    """Return ``ids`` as a 1-D int64 array of unique values in [0, capacity)."""
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer ids, got shape {arr.shape}; "
                         f"pass a flat list or array")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype} "
                             f"(first value {arr.reshape(-1)[0]!r}); pass integer ids")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= capacity)
    if bad.any():
        raise ValueError(f"{name} must lie in [0, {capacity}), got {arr[bad][:5].tolist()}; "
                         f"ids are dense sample numbers below the capacity")
    if np.unique(arr).size != arr.size:
        vals, counts = np.unique(arr, return_counts=True)
        raise ValueError(f"{name} must be distinct, got repeated ids {vals[counts > 1][:5].tolist()}; "
                         f"pass each id once")
    return arr


def _check_embeddings(x: Any, dim: Optional[int], name: str = "embeddings",
                      rows: Optional[int] = None) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 (m, dim) array, rejecting NaN/inf and bad shapes."""
    arr = np.asarray(x)
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x dimension), got shape {arr.shape}; "
                         f"reshape to (n, {dim if dim is not None else 'd'})")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}; pass a float array")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, but this pool holds {dim}-d vectors; "
                         f"pass embeddings from the same encoder")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but {rows} ids were given; "
                         f"pass one embedding per id")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(f"{name} contains NaN or infinite values in rows {bad_rows[:5].tolist()}"
                         f"{' ...' if bad_rows.size > 5 else ''}; drop or repair those samples")
    return arr


def _normalise_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    zero = norms == 0
    if zero.any():
        raise ValueError(f"{name} rows {np.flatnonzero(zero)[:5].tolist()} have zero norm, so their "
                         f"cosine distance is undefined; drop them or use space='l2'")
    return np.ascontiguousarray((x / norms[:, None]).astype(np.float32))


def _check_k(k: Any, available: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > available:
        raise ValueError(f"k={k} exceeds the {available} unlabelled samples in the pool; "
                         f"ask for at most {available} neighbours")
    return k


def exact_knn(data: np.ndarray, data_ids: np.ndarray, queries: np.ndarray, k: int,
              space: str = "l2", *, sq_norms: Optional[np.ndarray] = None,
              max_chunk_bytes: int = 64 << 20, progress: bool = False
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Exact K nearest rows of ``data`` for each query, chunked.

    ``data`` (n, d) float32 and ``data_ids`` (n,) int64 are the candidates; for
    ``space="cosine"`` both ``data`` and ``queries`` must already be L2-normalised.
    Returns ``(ids (m, k) int64, dist (m, k) float32)`` sorted by ascending
    ``(distance, id)``: ties are broken by the smaller id, so the answer does not depend
    on the order of ``data``.

    Distances are computed in float64 (one GEMM per chunk) and rounded to float32
    before ranking; the float32 bits and the id are packed into one uint64 key so that
    a single ``np.partition`` ranks lexicographically.

    Complexity: O(m * n * d) time, O(chunk) extra memory where one chunk is at most
    ``max_chunk_bytes`` of distance workspace (default 64 MiB). Thread safety: pure
    function (numpy's BLAS may use several threads inside the GEMM).
    """
    n = data.shape[0]
    m = queries.shape[0]
    if k > n:
        raise ValueError(f"k={k} exceeds the {n} candidate rows")
    if m == 0:
        return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
    if sq_norms is None and space == "l2":
        d64 = data.astype(np.float64)
        sq_norms = np.einsum("ij,ij->i", d64, d64)
    ids_u64 = data_ids.astype(np.uint64)
    # ~4 float64 (q x p) temporaries live at once.
    q_block = int(min(m, 1024))
    p_block = int(max(k, max_chunk_bytes // (32 * q_block)))
    out_ids = np.empty((m, k), np.int64)
    out_dist = np.empty((m, k), np.float32)
    n_q_chunks = -(-m // q_block)
    n_p_chunks = -(-n // p_block)
    chunks = ((qs, ps) for qs in range(0, m, q_block) for ps in range(0, n, p_block))
    best: Optional[np.ndarray] = None
    q64 = qn = None
    for qs, ps in _progress(chunks, total=n_q_chunks * n_p_chunks, desc="exact knn",
                            enabled=progress and n_q_chunks * n_p_chunks > 8):
        qe = min(m, qs + q_block)
        pe = min(n, ps + p_block)
        if ps == 0:
            q64 = queries[qs:qe].astype(np.float64)
            qn = np.einsum("ij,ij->i", q64, q64)
            best = None
        block = data[ps:pe].astype(np.float64)
        dist = q64 @ block.T
        if space == "l2":
            dist *= -2.0
            dist += qn[:, None]
            dist += sq_norms[ps:pe][None, :]
        else:  # cosine on normalised rows
            np.subtract(1.0, dist, out=dist)
        np.maximum(dist, 0.0, out=dist)
        keys = dist.astype(np.float32).view(np.uint32).astype(np.uint64)
        keys <<= np.uint64(32)
        keys |= ids_u64[ps:pe][None, :]
        if best is not None:
            keys = np.concatenate([best, keys], axis=1)
        if keys.shape[1] > k:
            keys = np.partition(keys, k - 1, axis=1)[:, :k]
        best = keys
        if pe == n:
            best = np.sort(best, axis=1)
            out_ids[qs:qe] = (best & np.uint64(0xFFFFFFFF)).astype(np.int64)
            out_dist[qs:qe] = (best >> np.uint64(32)).astype(np.uint32).view(np.float32)
    return out_ids, out_dist


def recall_at_k(approx_ids: np.ndarray, exact_dist: np.ndarray, approx_dist: np.ndarray,
                rtol: float = 1e-5) -> float:
    """Recall of an approximate K-NN answer against the exact one, tie-aware.

    A returned neighbour counts as correct when its distance is within the exact
    K-th distance (relative tolerance ``rtol``), so that an equally near sample chosen
    instead of the exact answer's tie-broken one is not a miss (ann-benchmarks'
    convention). Invalid entries (id < 0) count as misses.

    Complexity O(m k). Thread safety: pure function.
    """
    approx_ids = np.asarray(approx_ids)
    approx_dist = np.asarray(approx_dist, dtype=np.float64)
    exact_dist = np.asarray(exact_dist, dtype=np.float64)
    if approx_ids.shape != exact_dist.shape or approx_dist.shape != exact_dist.shape:
        raise ValueError(f"shapes differ: approx_ids {approx_ids.shape}, approx_dist "
                         f"{approx_dist.shape}, exact_dist {exact_dist.shape}; pass answers "
                         f"for the same queries and k")
    if exact_dist.size == 0:
        return 1.0
    kth = exact_dist[:, -1:]
    ok = (approx_dist <= kth + rtol * np.maximum(np.abs(kth), 1e-12)) & (approx_ids >= 0)
    return float(ok.mean())


# --------------------------------------------------------------------------- pools
class NeighbourPool:
    """Common interface and id bookkeeping of the neighbour pools.

    Subclasses implement ``_add``, ``_delete``, ``_undelete``, ``_query``, ``_save`` and
    ``_load``. All public methods validate their whole input before changing anything,
    so a rejected call leaves the pool as it was.
    """

    backend = "abstract"

    def __init__(self, dim: int, capacity: int, space: str = "l2", *,
                 num_threads: Optional[int] = None, progress: bool = True) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) \
                or not 1 <= capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity must be an integer in [1, {_MAX_CAPACITY}], got {capacity!r}; "
                             f"pass the number of samples")
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        if num_threads is not None and (isinstance(num_threads, bool) or
                                        not isinstance(num_threads, (int, np.integer))
                                        or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None (all CPUs), "
                             f"got {num_threads!r}")
        self.dim = int(dim)
        self.capacity = int(capacity)
        self.space = space
        self.num_threads = int(num_threads) if num_threads is not None else default_threads()
        self.progress = bool(progress)
        self._state = np.zeros(self.capacity, dtype=np.uint8)
        self._n_unlabelled = 0

    # ---- state ------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of unlabelled samples (those a query can return). O(1)."""
        return self._n_unlabelled

    def __contains__(self, item: Any) -> bool:
        """True when ``item`` is an unlabelled sample of the pool. O(1)."""
        try:
            i = int(item)
        except (TypeError, ValueError):
            return False
        return 0 <= i < self.capacity and self._state[i] == UNLABELLED

    @property
    def state(self) -> np.ndarray:
        """Read-only view of the per-id state (0 absent, 1 unlabelled, 2 labelled)."""
        return readonly_view(self._state)

    def unlabelled_ids(self) -> np.ndarray:
        """Ascending ids of the unlabelled samples. O(capacity)."""
        return np.flatnonzero(self._state == UNLABELLED).astype(np.int64)

    def labelled_ids(self) -> np.ndarray:
        """Ascending ids of the samples marked labelled. O(capacity)."""
        return np.flatnonzero(self._state == LABELLED).astype(np.int64)

    # ---- mutation ---------------------------------------------------------------
    def add(self, ids: Any, embeddings: Any) -> None:
        """Add unlabelled samples.

        ``ids`` must be distinct and absent from the pool; ``embeddings`` is
        (len(ids), dim), finite (and non-zero for cosine). HNSW: O(len(ids) * log n * M *
        ef_construction) spread over ``num_threads`` threads; exact: O(len(ids) * dim).
        """
        ids = _check_ids(ids, self.capacity)
        x = _check_embeddings(embeddings, self.dim, rows=ids.size)
        present = self._state[ids] != ABSENT
        if present.any():
            raise ValueError(f"ids {ids[present][:5].tolist()} are already in the pool; "
                             f"add each sample once (use unmark_labelled to return a labelled one)")
        if ids.size == 0:
            return
        if self.space == "cosine":
            x = _normalise_rows(x, "embeddings")
        self._add(ids, x)
        self._state[ids] = UNLABELLED
        self._n_unlabelled += int(ids.size)

    def mark_labelled(self, ids: Any) -> None:
        """Stop returning ``ids`` from queries (they became labelled). O(len(ids)).

        Every id must currently be unlabelled; otherwise ValueError and nothing changes.
        """
        ids = self._check_state(ids, UNLABELLED, "unlabelled", "they are labelled already or absent")
        if ids.size == 0:
            return
        self._delete(ids)
        self._state[ids] = LABELLED
        self._n_unlabelled -= int(ids.size)

    def unmark_labelled(self, ids: Any) -> None:
        """Undo :meth:`mark_labelled`: ``ids`` are returned by queries again. O(len(ids))."""
        ids = self._check_state(ids, LABELLED, "labelled", "they are not marked labelled")
        if ids.size == 0:
            return
        self._undelete(ids)
        self._state[ids] = UNLABELLED
        self._n_unlabelled += int(ids.size)

    def _check_state(self, ids: Any, want: np.uint8, word: str, why: str) -> np.ndarray:
        ids = _check_ids(ids, self.capacity)
        bad = self._state[ids] != want
        if bad.any():
            raise ValueError(f"ids {ids[bad][:5].tolist()}{' ...' if bad.sum() > 5 else ''} are not "
                             f"{word} in this pool ({why}); pass only {word} ids")
        return ids

    # ---- queries ----------------------------------------------------------------
    def query(self, embeddings: Any, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest unlabelled samples of each query embedding.

        Returns ``(ids (m, k) int64, distances (m, k) float32)``, nearest first. Labelled
        and absent ids never appear. ``k`` must not exceed ``len(self)``.
        """
        q = _check_embeddings(embeddings, self.dim, name="embeddings")
        k = _check_k(k, self._n_unlabelled)
        if q.shape[0] == 0:
            return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
        if self.space == "cosine":
            q = _normalise_rows(q, "embeddings")
        return self._query(q, k)

    # ---- persistence --------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Write the pool next to a session: ``<path>.meta.npz`` (+ a graph file for HNSW).

        The HNSW graph goes to a new file named by a fresh token (``<path>.<token>.hnsw``),
        then the metadata, which names that file, replaces the old metadata atomically
        (temporary file, fsync, rename, fsync of the directory); only then is the previous
        graph file removed. A crash at any point leaves the previous save loadable and
        consistent. O(pool size).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta: Dict[str, Any] = dict(backend=self.backend, space=self.space, dim=self.dim,
                                    capacity=self.capacity, state=self._state,
                                    **self._meta())
        old_graph = _graph_file_of(path)
        graph = self._save(path)
        if graph is not None:
            meta["graph_file"] = graph.name
        try:
            _atomic_savez(Path(str(path) + ".meta.npz"), meta)
        except BaseException:
            if graph is not None and graph.exists():
                graph.unlink()
            raise
        if old_graph is not None and old_graph != graph and old_graph.exists():
            old_graph.unlink()

    def _meta(self) -> Dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dim={self.dim}, capacity={self.capacity}, "
                f"space={self.space!r}, unlabelled={len(self)}, "
                f"labelled={int((self._state == LABELLED).sum())})")

    # ---- backend hooks ----------------------------------------------------------------
    def _add(self, ids: np.ndarray, x: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _delete(self, ids: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _undelete(self, ids: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _query(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _save(self, path: Path) -> Optional[Path]:
        """Write backend files that the metadata must name; return the file or None."""
        return None


def _graph_file_of(path: Path) -> Optional[Path]:
    """The graph file the current metadata at ``path`` names (None if none or unreadable)."""
    meta_path = Path(str(path) + ".meta.npz")
    try:
        with np.load(meta_path, allow_pickle=False) as z:
            if "graph_file" in z.files:
                return path.with_name(str(z["graph_file"]))
    except (OSError, ValueError):
        return None
    legacy = Path(str(path) + ".hnsw")
    return legacy if legacy.exists() else None


_fsync_path = fsync_path  # the old private name, still used by callers


def _atomic_savez(target: Path, arrays: Dict[str, Any]) -> None:
    """``np.savez`` of ``arrays`` to ``target`` through :func:`socbi._files.atomic_write`."""
    atomic_write(target, lambda fh: np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()}))


class ExactPool(NeighbourPool):
    """Brute-force pool in numpy: exact answers, ties broken by ascending id.

    Memory: capacity * dim float32 for the vectors (allocated lazily by the OS) plus one
    float64 per id. Query: O(m * n_unlabelled * dim) time, distance workspace bounded by
    ``max_chunk_bytes``. Thread safety: see the module docstring.
    """

    backend = "exact"

    def __init__(self, dim: int, capacity: int, space: str = "l2", *,
                 max_chunk_bytes: int = 64 << 20, num_threads: Optional[int] = None,
                 progress: bool = True) -> None:
        super().__init__(dim, capacity, space, num_threads=num_threads, progress=progress)
        if isinstance(max_chunk_bytes, bool) or not isinstance(max_chunk_bytes, (int, np.integer)) \
                or max_chunk_bytes < (1 << 16):
            raise ValueError(f"max_chunk_bytes must be an integer >= 65536, got {max_chunk_bytes!r}")
        self.max_chunk_bytes = int(max_chunk_bytes)
        self._data = np.zeros((self.capacity, self.dim), dtype=np.float32)
        self._sq = np.zeros(self.capacity, dtype=np.float64)

    def _add(self, ids: np.ndarray, x: np.ndarray) -> None:
        self._data[ids] = x
        x64 = x.astype(np.float64)
        self._sq[ids] = np.einsum("ij,ij->i", x64, x64)

    def _delete(self, ids: np.ndarray) -> None:
        pass  # the state array is the whole story

    def _undelete(self, ids: np.ndarray) -> None:
        pass

    def _query(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        act = self.unlabelled_ids()
        return exact_knn(self._data[act], act, q, k, self.space, sq_norms=self._sq[act],
                         max_chunk_bytes=self.max_chunk_bytes, progress=self.progress)

    def _meta(self) -> Dict[str, Any]:
        present = np.flatnonzero(self._state != ABSENT)
        return dict(max_chunk_bytes=self.max_chunk_bytes, present=present,
                    data=self._data[present])

    def vectors(self, ids: Any) -> np.ndarray:
        """Stored (normalised, for cosine) vectors of present ids. O(len(ids) * dim)."""
        ids = _check_ids(ids, self.capacity)
        absent = self._state[ids] == ABSENT
        if absent.any():
            raise ValueError(f"ids {ids[absent][:5].tolist()} were never added to the pool")
        return self._data[ids].copy()


class HNSWPool(NeighbourPool):
    """hnswlib HNSW pool; labelled samples are marked deleted in the graph.

    Parameters: ``M`` (graph degree, default 16), ``ef_construction`` (build beam, 200),
    ``ef`` (query beam, 64; raised to ``k`` when smaller), ``seed`` (level assignment),
    ``num_threads`` (threads inside add and query calls; None = all CPUs).

    Complexity: add O(log n * M * ef_construction * dim) per item; query
    O(log n * M * ef * dim) per item (more when many samples are deleted: deleted nodes
    still route the search). If the graph cannot produce ``k`` unlabelled results
    (possible after deleting most of the pool), the query is retried with a doubled
    ``ef`` and, as a last resort, answered exactly over the unlabelled vectors.
    Memory: about capacity * (4 * dim + 8 * M + 16) bytes.
    """

    backend = "hnsw"

    def __init__(self, dim: int, capacity: int, space: str = "l2", *, M: int = 16,
                 ef_construction: int = 200, ef: int = 64, seed: int = 0,
                 num_threads: Optional[int] = None, progress: bool = True,
                 add_chunk: int = 20000, _index: Any = None) -> None:
        super().__init__(dim, capacity, space, num_threads=num_threads, progress=progress)
        for name, val, lo in (("M", M, 2), ("ef_construction", ef_construction, 1), ("ef", ef, 1),
                              ("add_chunk", add_chunk, 1)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        try:
            import hnswlib
        except ImportError as exc:  # pragma: no cover - hnswlib is a test dependency
            raise ImportError("HNSWPool needs hnswlib: pip install 'socbi[knn]' "
                              "(or use backend='exact' for small pools)") from exc
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.ef = int(ef)
        self.seed = int(seed)
        self.add_chunk = int(add_chunk)
        self.fallbacks = 0  # queries that needed a larger ef or the exact path
        if _index is None:
            _index = hnswlib.Index(space=space, dim=self.dim)
            _index.init_index(max_elements=self.capacity, M=self.M,
                              ef_construction=self.ef_construction, random_seed=self.seed)
        self._index = _index

    def _add(self, ids: np.ndarray, x: np.ndarray) -> None:
        # With progress on, blocks of about 1/20 of the build (>= 1000) give a log line
        # every few seconds; the insertion order, hence a one-thread graph, is unchanged.
        step = min(self.add_chunk, max(1000, -(-ids.size // 20))) if self.progress else self.add_chunk
        bar = _progress_policy(total=ids.size, desc="hnsw build", unit="sample",
                               enabled=self.progress and ids.size > step)
        try:
            for s in range(0, ids.size, step):
                self._index.add_items(x[s:s + step], ids[s:s + step], num_threads=self.num_threads)
                bar.update(min(step, ids.size - s))
        finally:
            bar.close()

    def _delete(self, ids: np.ndarray) -> None:
        done = []
        try:
            for i in ids.tolist():
                self._index.mark_deleted(i)
                done.append(i)
        except BaseException:
            for i in done:
                self._index.unmark_deleted(i)
            raise

    def _undelete(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            self._index.unmark_deleted(i)

    def _query(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        m = q.shape[0]
        step = max(10000, 2000 * self.num_threads)
        out_ids = np.empty((m, k), np.int64)
        out_dist = np.empty((m, k), np.float32)
        starts = range(0, m, step)
        for s in _progress(starts, total=len(starts), desc="hnsw query",
                           enabled=self.progress and len(starts) > 1):
            out_ids[s:s + step], out_dist[s:s + step] = self._query_block(q[s:s + step], k)
        return out_ids, out_dist

    def _query_block(self, q: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        ef = max(self.ef, k)
        total = int(self._index.get_current_count())
        while True:
            self._index.set_ef(ef)
            try:
                labels, dist = self._index.knn_query(q, k=k, num_threads=self.num_threads)
                return labels.astype(np.int64), dist.astype(np.float32, copy=False)
            except RuntimeError:
                self.fallbacks += 1
                if ef >= total:
                    break
                ef = min(total, ef * 2)
            finally:
                self._index.set_ef(max(self.ef, 1))
        # Last resort: exact over the unlabelled vectors (graph could not reach k of them).
        act = self.unlabelled_ids()
        data = np.asarray(self._index.get_items(act), dtype=np.float32).reshape(act.size, self.dim)
        if self.space == "cosine":
            data = _normalise_rows(data, "stored vectors")
        return exact_knn(data, act, q, k, self.space)

    def _meta(self) -> Dict[str, Any]:
        return dict(M=self.M, ef_construction=self.ef_construction, ef=self.ef, seed=self.seed,
                    add_chunk=self.add_chunk)

    def _save(self, path: Path) -> Optional[Path]:
        target = Path(f"{path}.{uuid.uuid4().hex[:16]}.hnsw")
        return atomic_write(target, self._index.save_index, by_name=True)


def make_pool(backend: str, dim: int, capacity: int, space: str = "l2", **kwargs: Any
              ) -> NeighbourPool:
    """Create an empty pool: ``backend`` is ``"hnsw"`` or ``"exact"``; kwargs go to its class."""
    if backend == "hnsw":
        return HNSWPool(dim, capacity, space, **kwargs)
    if backend == "exact":
        return ExactPool(dim, capacity, space, **kwargs)
    raise ValueError(f"backend must be 'hnsw' or 'exact', got {backend!r}")


def load_pool(path: PathLike, *, num_threads: Optional[int] = None, progress: bool = True
              ) -> NeighbourPool:
    """Load a pool written by :meth:`NeighbourPool.save` (``path`` without suffix). O(pool size)."""
    path = Path(path)
    meta_path = Path(str(path) + ".meta.npz")
    if not meta_path.exists():
        raise FileNotFoundError(f"no saved pool at {str(path)!r}: {meta_path.name} is missing; "
                                f"pass the prefix given to save()")
    with np.load(meta_path, allow_pickle=False) as z:
        meta = {k: z[k] for k in z.files}
    backend = str(meta["backend"])
    space = str(meta["space"])
    dim = int(meta["dim"])
    capacity = int(meta["capacity"])
    state = meta["state"].astype(np.uint8)
    if state.shape != (capacity,):
        raise ValueError(f"corrupt pool metadata in {meta_path.name}: state has shape {state.shape}, "
                         f"expected ({capacity},)")
    pool: NeighbourPool
    if backend == "exact":
        pool = ExactPool(dim, capacity, space, max_chunk_bytes=int(meta["max_chunk_bytes"]),
                         num_threads=num_threads, progress=progress)
        present = meta["present"].astype(np.int64)
        pool._add(present, meta["data"].astype(np.float32))
    elif backend == "hnsw":
        import hnswlib
        hnsw_path = (path.with_name(str(meta["graph_file"])) if "graph_file" in meta
                     else Path(str(path) + ".hnsw"))
        if not hnsw_path.exists():
            raise FileNotFoundError(f"no HNSW graph at {hnsw_path.name} next to {meta_path.name}")
        index = hnswlib.Index(space=space, dim=dim)
        index.load_index(str(hnsw_path), max_elements=capacity)
        if int(index.get_current_count()) != int((state != ABSENT).sum()):
            raise ValueError(f"{hnsw_path.name} holds {index.get_current_count()} items but "
                             f"{meta_path.name} lists {int((state != ABSENT).sum())}; the files "
                             f"come from different saves")
        pool = HNSWPool(dim, capacity, space, M=int(meta["M"]),
                        ef_construction=int(meta["ef_construction"]), ef=int(meta["ef"]),
                        seed=int(meta["seed"]), add_chunk=int(meta["add_chunk"]),
                        num_threads=num_threads, progress=progress, _index=index)
    else:
        raise ValueError(f"unknown pool backend {backend!r} in {meta_path.name}")
    pool._state[:] = state
    pool._n_unlabelled = int((state == UNLABELLED).sum())
    return pool
