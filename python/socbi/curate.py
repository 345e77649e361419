"""InfoGrowth: grow a clean, diverse data set from a stream (arXiv 2405.18347).

Every item of a stream is an embedding (``first``), optionally a second-modality
embedding (``second``, e.g. its caption's) and optionally a class label. For each item,
in stream order, :class:`InfoGrowth`:

1. **Cleaner** (only with a second modality): p = similarity(first, second), cosine by
   default (both embeddings must then live in one shared space; pass ``similarity=`` for
   anything else, e.g. a learned projection). If p < ``delta`` (default 0.4) the optional
   ``recaption`` callback is asked for a new second-modality embedding, which is checked
   again; if there is no callback or the new pair still scores below ``delta``, the item
   is dropped and the reason recorded (``"cleaner"``).
2. **Gain**: the mean cosine distance (1 - cos) from the item to its ``k`` (default 4)
   nearest *already-kept* items, from an incrementally grown HNSW index
   (:class:`socbi.knn.HNSWPool`; InfoGrowth's settings M = 48, ef_construction = 100,
   ef = 32). With two modalities there is one index per modality and the two distances
   are averaged (``gain_modalities="all"``; ``"first"`` uses the first modality only).
   This *raw* gain, in [0, 2], is divided by a running high quantile (default the 99th
   percentile) of the raw gains kept so far and clipped to [0, 1]: the gain G. The first
   item (nothing kept yet) gets G = 1. Labelled streams may use the *entropy gain*
   1 - p_lab instead of, or averaged with, the information gain
   (``gain="entropy"`` / ``"info+entropy"``), where p_lab is the fraction of the item's k
   nearest kept items (first modality) that carry its label.
3. **Keep**: the item is appended to the kept set and added to the index. Two optional
   filters drop items instead (the paper keeps every clean item and lets a low gain
   lower its sampling weight): ``duplicate_below=t`` drops an item whose *nearest* kept
   item (first modality) lies within cosine distance t (``"duplicate"``; an exact copy
   has distance 0, while its *mean* distance to k = 4 neighbours need not be small), and
   ``drop_below=t`` drops an item whose raw gain is below t (``"redundant"``).

Samplers over the kept items: the static sampler P(x_i) = G_i / sum_j G_j and the dynamic
sampler that alternates by epoch between P ~ G_i and P ~ max(0.1, 1 - G_i); as numpy
index generators (:func:`sample_indices`, :func:`static_indices`, :func:`dynamic_indices`)
and as a torch ``Sampler`` (:class:`GainSampler`, needs torch).

Batching and stream semantics. :meth:`InfoGrowth.process` takes a batch and gives the
answer the item-by-item algorithm gives (up to HNSW's approximation): the batch asks the
index for each item's k nearest kept items in one batched query, computes the exact
distances between the batch's own items in one matrix product, and merges the two, so an
item sees every earlier item of its own batch as well. Inserts are batched too. The only
batch-level choice is the normalising quantile, which is refreshed once per batch (from
all raw gains kept up to and including that batch), so normalised gains depend, slightly,
on the batch size; raw gains do not.

Persistence: :meth:`InfoGrowth.save` writes a checkpoint *directory*. Each save writes a
new generation sub-directory (arrays as ``.npz``, metadata as JSON, the HNSW graphs),
fsyncs every file and the directory, renames it into place, and then atomically replaces
``LATEST.json`` (temporary file, fsync, ``os.replace``) which names the generation and
the SHA-256 of each of its files; older generations are removed afterwards. A crash at
any point leaves ``LATEST.json`` naming a complete generation. :meth:`InfoGrowth.load`
verifies the checksums, never unpickles (``np.load(allow_pickle=False)``, JSON metadata)
and resumes at ``n_seen``: :func:`curate` skips the items already consumed.

Thread safety: an :class:`InfoGrowth` is not synchronised; use it from one thread at a
time. hnswlib parallelises inside each batched query and insert (``num_threads``).
Determinism: with ``num_threads=1`` (or ``backend="exact"``) results are a function of
the stream and the batch boundaries; a multi-threaded HNSW build depends on scheduling.
After :meth:`InfoGrowth.load`, hnswlib re-seeds its level generator, so an HNSW graph
grown after a resume differs from the uninterrupted one (neighbour answers are equally
valid, not bit-identical); the exact backend resumes bit-identically.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._checks import positive_int as _int_param
from ._checks import readonly_view

from ._cliutil import fail, output_dir
from ._files import atomic_write
from ._files import fsync_path as _fsync_path
from .knn import ExactPool, HNSWPool, NeighbourPool, load_pool

__all__ = [
    "InfoGrowth", "BatchReport", "curate", "open_curator", "REASONS",
    "static_probabilities", "dynamic_probabilities", "sample_indices", "static_indices",
    "dynamic_indices", "GainSampler", "register",
]

PathLike = Union[str, "os.PathLike[str]"]
FORMAT = "socbi-curate"
FORMAT_VERSION = 1
REASONS = ("kept", "cleaner", "duplicate", "redundant")
KEPT, CLEANER, DUPLICATE, REDUNDANT = 0, 1, 2, 3
GAINS = ("info", "entropy", "info+entropy")
_MAX_DIST = 2.0  # cosine distance lies in [0, 2]
_BLOCK = 256     # rows per block of the intra-batch distance computation


# =============================================================================== helpers
def _float_param(name: str, value: Any, lo: float, hi: float, hint: str = "",
                 lo_open: bool = False, hi_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    v = float(value) if ok else float("nan")
    if not ok or not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name} must be a number in {lb}{lo:g}, {hi:g}{rb}, got {value!r}{hint}")
    return v


def _rows(x: Any, dim: Optional[int], name: str, n: Optional[int] = None
          ) -> Tuple[np.ndarray, np.ndarray]:
    """``x`` as float32 (n, dim) rows as given and as unit rows; ValueError naming ``name`` if bad."""
    arr = np.asarray(x)
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (items x dimension), got shape {arr.shape}; "
                         f"reshape to (n, {dim if dim is not None else 'd'})")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}; pass a float array")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, but this curator was built for "
                         f"{dim}-d vectors; pass embeddings from the same encoder")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but first has {n}; pass one row per item")
    a64 = arr.astype(np.float64, copy=False)
    finite = np.isfinite(a64).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"{name} has NaN or infinite values in rows {bad[:5].tolist()}; drop or "
                         f"repair those items before streaming them")
    norms = np.linalg.norm(a64, axis=1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms == 0)
        raise ValueError(f"{name} rows {bad[:5].tolist()} have zero norm, so their cosine distance "
                         f"is undefined; drop those items")
    return (np.ascontiguousarray(arr, dtype=np.float32),
            np.ascontiguousarray((a64 / norms[:, None]).astype(np.float32)))


def _labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one entry per item ({n}), got shape "
                         f"{arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class numbers, got dtype {arr.dtype}; map "
                             f"class names to 0..C-1 first")
    arr = arr.astype(np.int64, copy=False)
    if (arr < 0).any():
        raise ValueError(f"{name} must be >= 0 (class numbers), got {arr[arr < 0][:5].tolist()}; "
                         f"omit labels for unlabelled streams")
    return arr


_BLAS: List[Any] = []


def _blas_limit(threads: Optional[int]) -> Any:
    """Context manager limiting BLAS threads (threadpoolctl), or a no-op without it / for None.

    Small GEMMs with a multi-threaded OpenBLAS on a busy machine can be 10-20x slower
    than single-threaded ones; hnswlib already uses the cores.
    """
    import contextlib

    if threads is None:
        return contextlib.nullcontext()
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
            _BLAS.append(ThreadpoolController())
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _BLAS.append(None)
    if _BLAS[0] is None:  # pragma: no cover
        return contextlib.nullcontext()
    return _BLAS[0].limit(limits=threads, user_api="blas")


def _cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of a, b (same shape, non-zero rows)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.einsum("ij,ij->i", a64, b64) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


class _Buffer:
    """A growable 1-D array with amortised O(1) append (doubling)."""

    def __init__(self, dtype: Any, fill: Any = 0, data: Optional[np.ndarray] = None) -> None:
        self.fill = fill
        if data is not None:
            self._a = np.array(data, dtype=dtype)
            self.n = int(self._a.size)
        else:
            self._a = np.full(1024, fill, dtype=dtype)
            self.n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self.n + int(values.size)
        if need > self._a.size:
            new = np.full(max(need, 2 * self._a.size), self.fill, dtype=self._a.dtype)
            new[:self.n] = self._a[:self.n]
            self._a = new
        self._a[self.n:need] = values
        self.n = need

    def view(self) -> np.ndarray:
        return readonly_view(self._a[:self.n])


class _QuantileSketch:
    """Running quantile of values in [0, 2] from a fixed histogram (``bins`` bins).

    Agrees with ``np.quantile`` (linear interpolation between order statistics) up to
    the bin width 2 / bins (default 2.4e-4). add: O(m); quantile: O(bins).
    """

    def __init__(self, bins: int = 8192, counts: Optional[np.ndarray] = None) -> None:
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, np.int64) if counts is None else counts.astype(np.int64)

    def add(self, values: np.ndarray) -> None:
        if values.size:
            idx = np.clip((values.astype(np.float64) * (self.bins / _MAX_DIST)).astype(np.int64),
                          0, self.bins - 1)
            self.counts += np.bincount(idx, minlength=self.bins)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def _order_stat(self, cum: np.ndarray, r: int) -> float:
        """Approximate r-th smallest value (0-based): its bin, interpolated by rank inside it."""
        b = min(int(np.searchsorted(cum, r, side="right")), self.bins - 1)
        before = int(cum[b - 1]) if b > 0 else 0
        inside = max(int(self.counts[b]), 1)
        return float((b + (r - before + 0.5) / inside) * _MAX_DIST / self.bins)

    def quantile(self, q: float) -> float:
        """numpy's default ("linear") quantile of the added values, within one bin width."""
        total = self.total
        if total == 0:
            return float("nan")
        cum = np.cumsum(self.counts)
        h = (total - 1) * q
        lo = int(math.floor(h))
        v = self._order_stat(cum, lo)
        if h > lo:
            v += (h - lo) * (self._order_stat(cum, min(lo + 1, total - 1)) - v)
        return v


def _grow_pool(pool: NeighbourPool, need: int) -> None:
    """Raise ``pool``'s capacity to at least ``need`` (doubling). O(capacity) when it grows.

    socbi.knn pools have a fixed capacity; a stream does not know its size, so the
    curator grows them here (hnswlib ``resize_index``; the exact pool's arrays).
    """
    if need <= pool.capacity:
        return
    new = int(max(need, 2 * pool.capacity))
    if isinstance(pool, HNSWPool):
        pool._index.resize_index(new)
    elif isinstance(pool, ExactPool):
        data = np.zeros((new, pool.dim), np.float32)
        data[:pool.capacity] = pool._data
        sq = np.zeros(new, np.float64)
        sq[:pool.capacity] = pool._sq
        pool._data, pool._sq = data, sq
    else:  # pragma: no cover - only the two socbi.knn backends exist
        raise TypeError(f"cannot grow a {type(pool).__name__}")
    state = np.zeros(new, np.uint8)
    state[:pool.capacity] = pool._state
    pool._state = state
    pool.capacity = new


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class CheckpointError(ValueError):
    """A curation checkpoint is missing, incomplete, corrupt or from another format."""


# =============================================================================== report
@dataclass
class BatchReport:
    """What :meth:`InfoGrowth.process` decided for each item of one batch.

    positions : stream positions (0-based, over the whole stream) of the batch's items.
    kept : bool per item. kept_ids : row in the curator's kept arrays, -1 if dropped.
    reason : 0 kept, 1 dropped by the cleaner, 2 as a duplicate, 3 as redundant
        (names in ``REASONS``).
    similarity : cleaner similarity p (after a re-caption when one was tried); NaN
        without a second modality.
    recaptioned : the second modality was replaced by the callback (and then passed).
    raw_gain : mean cosine distance to the k nearest kept items (averaged over the
        gain modalities); NaN for items dropped by the cleaner and for items with no
        kept neighbour yet.
    nearest : cosine distance to the nearest kept item, first modality (NaN as above).
    gain : normalised gain G in [0, 1] of kept items (NaN for dropped ones).
    """

    positions: np.ndarray
    kept: np.ndarray
    kept_ids: np.ndarray
    reason: np.ndarray
    similarity: np.ndarray
    recaptioned: np.ndarray
    raw_gain: np.ndarray
    nearest: np.ndarray
    gain: np.ndarray

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    def counts(self) -> Dict[str, int]:
        """Items per outcome: ``{"kept": .., "cleaner": .., "duplicate": .., "redundant": ..}``."""
        return {name: int((self.reason == code).sum()) for code, name in enumerate(REASONS)}


# =============================================================================== curator
class InfoGrowth:
    """Streaming InfoGrowth curator: cleaner, gain, kept set, HNSW index(es), samplers.

    Parameters
    ----------
    dim : dimension of the first-modality embeddings.
    second_dim : dimension of the second modality (e.g. caption embeddings); when set,
        every batch must carry it and the cleaner runs.
    k : neighbours for the gain (default 4, as in InfoGrowth's code).
    delta : cleaner threshold on the cross-modal similarity (default 0.4).
    recaption : optional callback ``recaption(positions, first, second) -> new_second``
        or ``-> (new_second, new_labels)``; called once per batch with the items whose
        similarity fell below ``delta`` (float32 rows as streamed); it returns one new
        second-modality embedding per item (a row of NaN = "no caption", the item is
        dropped). If it raises, the batch is not applied.
    similarity : optional ``similarity(first, second) -> (m,)`` cross-modal similarity
        (float32 rows as streamed, not normalised); default row-wise cosine, which needs
        ``dim == second_dim``.
    gain : ``"info"`` (default), ``"entropy"`` (1 - neighbour label agreement; needs
        labels) or ``"info+entropy"`` (their mean).
    gain_modalities : ``"all"`` (one index per modality, raw gains averaged; default) or
        ``"first"``.
    duplicate_below : drop items whose nearest kept item (first modality) is within this
        cosine distance (near-duplicate filter); default None.
    drop_below : drop items whose raw gain is below this (redundancy filter); default
        None. With both None every clean item is kept, as in the paper (redundancy only
        lowers G).
    quantile : normalising quantile of the raw gains (default 0.99).
    backend : ``"hnsw"`` (default) or ``"exact"`` (brute force; small streams, tests).
    M, ef_construction, ef : HNSW parameters (defaults 48, 100, 32 as in InfoGrowth).
    capacity : initial index capacity; indexes grow by doubling as items are kept.
    num_threads : hnswlib threads per batched call (None = all CPUs).
    blas_threads : BLAS threads for the intra-batch distance blocks (default 1, via
        threadpoolctl when installed; None leaves BLAS alone).
    seed : HNSW level-assignment seed.

    Complexity per batch of b items with n kept so far: cleaner O(b d) (+ callback);
    gain: one batched HNSW query O(b log n · M · ef · d) per modality plus an exact
    b x b distance block O(b^2 d); insert O(b log n · M · ef_construction · d); quantile
    O(bins). With ``duplicate_below`` or ``drop_below`` set, the merge runs item by item
    (b Python-level steps of O(b + k) each). Memory: the HNSW graphs (about 4 d + 8 M bytes per kept item per modality)
    plus ~30 bytes per streamed item of bookkeeping.

    Thread safety: not synchronised; one thread at a time (hnswlib threads inside calls).
    """

    def __init__(self, dim: int, second_dim: Optional[int] = None, *, k: int = 4,
                 delta: float = 0.4,
                 recaption: Optional[Callable[..., Any]] = None,
                 similarity: Optional[Callable[[np.ndarray, np.ndarray], Any]] = None,
                 gain: str = "info", gain_modalities: str = "all",
                 duplicate_below: Optional[float] = None, drop_below: Optional[float] = None,
                 quantile: float = 0.99,
                 backend: str = "hnsw", M: int = 48, ef_construction: int = 100, ef: int = 32,
                 capacity: int = 4096, num_threads: Optional[int] = None,
                 blas_threads: Optional[int] = 1, seed: int = 0,
                 quantile_bins: int = 8192, _restore: Optional[Dict[str, Any]] = None) -> None:
        self.dim = _int_param("dim", dim, 1)
        self.second_dim = None if second_dim is None else _int_param("second_dim", second_dim, 1)
        self.k = _int_param("k", k, 1, "; the gain averages over the k nearest kept items")
        self.delta = _float_param("delta", delta, -1.0, 1.0, "; it is a cosine-similarity threshold")
        if recaption is not None and not callable(recaption):
            raise ValueError(f"recaption must be callable (positions, first, second) -> new_second, "
                             f"got {type(recaption).__name__}")
        if similarity is not None and not callable(similarity):
            raise ValueError(f"similarity must be callable (first, second) -> (m,) array, got "
                             f"{type(similarity).__name__}")
        if self.second_dim is not None and similarity is None and self.second_dim != self.dim:
            raise ValueError(f"second_dim={self.second_dim} differs from dim={self.dim}, so the default "
                             f"cosine cleaner cannot compare the two modalities; pass similarity="
                             f"(first, second) -> p, e.g. a projection into a shared space")
        if recaption is not None and self.second_dim is None:
            raise ValueError("recaption was given but second_dim is None; the cleaner (and its "
                             "re-caption path) needs a second modality: pass second_dim")
        if gain not in GAINS:
            raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")
        if gain_modalities not in ("all", "first"):
            raise ValueError(f"gain_modalities must be 'all' or 'first', got {gain_modalities!r}")
        if duplicate_below is not None:
            duplicate_below = _float_param("duplicate_below", duplicate_below, 0.0, _MAX_DIST,
                                           "; it is a cosine-distance threshold, or None")
        if drop_below is not None:
            drop_below = _float_param("drop_below", drop_below, 0.0, _MAX_DIST,
                                      "; it is a raw-gain (cosine distance) threshold, or None")
        self.quantile = _float_param("quantile", quantile, 0.0, 1.0, lo_open=True)
        if backend not in ("hnsw", "exact"):
            raise ValueError(f"backend must be 'hnsw' or 'exact', got {backend!r}")
        self.M = _int_param("M", M, 2)
        self.ef_construction = _int_param("ef_construction", ef_construction, 1)
        self.ef = _int_param("ef", ef, 1)
        capacity = _int_param("capacity", capacity, 1)
        if num_threads is not None:
            num_threads = _int_param("num_threads", num_threads, 1, "; or None for all CPUs")
        if blas_threads is not None:
            blas_threads = _int_param("blas_threads", blas_threads, 1, "; or None to leave BLAS alone")
        self.blas_threads = blas_threads
        self.seed = _int_param("seed", seed, 0)
        self.quantile_bins = _int_param("quantile_bins", quantile_bins, 16)
        self.recaption = recaption
        self.similarity = similarity
        self.gain_kind = gain
        self.gain_modalities = gain_modalities
        self.duplicate_below = duplicate_below
        self.drop_below = drop_below
        self.backend = backend
        self.num_threads = num_threads

        if _restore is not None:
            self.pools: List[NeighbourPool] = _restore["pools"]
        else:
            dims = [self.dim] + ([int(self.second_dim)] if self._uses_second_index()  # type: ignore[arg-type]
                                 else [])
            self.pools = [self._new_pool(d, capacity) for d in dims]
        r = _restore or {}
        arr = r.get("arrays", {})
        self._kept_pos = _Buffer(np.int64, -1, arr.get("kept_pos"))
        self._kept_raw = _Buffer(np.float32, np.nan, arr.get("kept_raw"))
        self._kept_gain = _Buffer(np.float32, np.nan, arr.get("kept_gain"))
        self._kept_ent = _Buffer(np.float32, np.nan, arr.get("kept_entropy"))
        self._kept_near = _Buffer(np.float32, np.nan, arr.get("kept_nearest"))
        self._kept_sim = _Buffer(np.float32, np.nan, arr.get("kept_sim"))
        self._kept_recap = _Buffer(np.bool_, False, arr.get("kept_recap"))
        self._kept_lab = _Buffer(np.int64, -1, arr.get("kept_labels"))
        self._drop_pos = _Buffer(np.int64, -1, arr.get("drop_pos"))
        self._drop_reason = _Buffer(np.int8, 0, arr.get("drop_reason"))
        self._drop_sim = _Buffer(np.float32, np.nan, arr.get("drop_sim"))
        self._sketch = _QuantileSketch(self.quantile_bins, arr.get("sketch"))
        self.n_seen = int(r.get("n_seen", 0))
        self.n_recaptioned = int(r.get("n_recaptioned", 0))
        self.stats: Dict[str, float] = dict(r.get("stats", {})) or dict(
            batches=0, items=0, total_s=0.0, index_query_s=0.0, index_add_s=0.0,
            recaption_s=0.0, similarity_s=0.0)
        self._broken: Optional[str] = None

    # ------------------------------------------------------------------ set-up
    def _uses_second_index(self) -> bool:
        return self.second_dim is not None and self.gain_modalities == "all" and self.gain_kind != "entropy"

    def _new_pool(self, d: int, capacity: int) -> NeighbourPool:
        if self.backend == "hnsw":
            return HNSWPool(d, capacity, "cosine", M=self.M, ef_construction=self.ef_construction,
                            ef=self.ef, seed=self.seed, num_threads=self.num_threads, progress=False)
        return ExactPool(d, capacity, "cosine", num_threads=self.num_threads, progress=False)

    def config(self) -> Dict[str, Any]:
        """The constructor arguments that define this curator (JSON-able; no callbacks)."""
        return dict(dim=self.dim, second_dim=self.second_dim, k=self.k, delta=self.delta,
                    gain=self.gain_kind, gain_modalities=self.gain_modalities,
                    duplicate_below=self.duplicate_below, drop_below=self.drop_below,
                    quantile=self.quantile, backend=self.backend,
                    M=self.M, ef_construction=self.ef_construction, ef=self.ef,
                    num_threads=self.num_threads, blas_threads=self.blas_threads, seed=self.seed,
                    quantile_bins=self.quantile_bins)

    # ------------------------------------------------------------------ state
    @property
    def n_kept(self) -> int:
        """Number of kept items. O(1)."""
        return self._kept_pos.n

    def __len__(self) -> int:
        return self.n_kept

    @property
    def kept_positions(self) -> np.ndarray:
        """Stream positions of the kept items, in keep order (read-only view). O(1)."""
        return self._kept_pos.view()

    @property
    def raw_gains(self) -> np.ndarray:
        """Raw gain of each kept item (NaN for an item that had no kept neighbour). O(1)."""
        return self._kept_raw.view()

    @property
    def nearest(self) -> np.ndarray:
        """Cosine distance of each kept item to its nearest earlier kept item (NaN for none). O(1)."""
        return self._kept_near.view()

    @property
    def similarities(self) -> np.ndarray:
        """Cleaner similarity of each kept item (NaN without a second modality). O(1)."""
        return self._kept_sim.view()

    @property
    def recaptioned(self) -> np.ndarray:
        """Whether each kept item's second modality came from the re-caption callback. O(1)."""
        return self._kept_recap.view()

    @property
    def labels(self) -> np.ndarray:
        """Label of each kept item (-1 when the stream carried none). O(1)."""
        return self._kept_lab.view()

    @property
    def dropped_positions(self) -> np.ndarray:
        """Stream positions of dropped items. O(1)."""
        return self._drop_pos.view()

    @property
    def dropped_reasons(self) -> np.ndarray:
        """Drop reason codes (1 cleaner, 2 duplicate, 3 redundant; names in ``REASONS``). O(1)."""
        return self._drop_reason.view()

    def current_quantile(self) -> float:
        """The normalising quantile of the raw gains kept so far (NaN before any). O(bins)."""
        return self._sketch.quantile(self.quantile)

    def gains(self, normalisation: str = "arrival") -> np.ndarray:
        """Gain G in [0, 1] of each kept item.

        ``"arrival"`` (default): the value computed when the item arrived, with the
        running quantile of that moment (what a streaming consumer saw). ``"final"``:
        raw gains divided by the current quantile (one scale for every item); the
        entropy part, if any, is unchanged. O(n_kept).
        """
        if normalisation == "arrival":
            return self._kept_gain.view()
        if normalisation != "final":
            raise ValueError(f"normalisation must be 'arrival' or 'final', got {normalisation!r}")
        return self._combine(self._normalise(self._kept_raw.view(), self.current_quantile()),
                             self._kept_ent.view())

    def _normalise(self, raw: np.ndarray, q: float) -> np.ndarray:
        raw = raw.astype(np.float64)
        none = np.isnan(raw)
        if not math.isfinite(q) or q <= 0.0:
            g = np.where(raw > 0, 1.0, 0.0)
        else:
            g = np.clip(raw / q, 0.0, 1.0)
        g[none] = 1.0  # no kept neighbour: the first item(s) get 1
        return g

    def _combine(self, info: np.ndarray, ent: np.ndarray) -> np.ndarray:
        if self.gain_kind == "info":
            g = info
        elif self.gain_kind == "entropy":
            g = ent.astype(np.float64)
        else:
            g = 0.5 * (info + ent.astype(np.float64))
        return np.asarray(g, np.float32)

    # ------------------------------------------------------------------ the step
    def process(self, first: Any, second: Any = None, labels: Any = None) -> BatchReport:
        """Run one batch of stream items through cleaner, gain and keep.

        ``first`` (b, dim), ``second`` (b, second_dim) when the curator has a second
        modality, ``labels`` (b,) ints >= 0 (required for the entropy gain). The whole
        batch is validated, and the re-caption callback run, before anything changes:
        on any error the curator is as before. Returns a :class:`BatchReport`.
        Complexity: see the class docstring.
        """
        if self._broken is not None:
            raise RuntimeError(f"this curator is unusable after an internal error ({self._broken}); "
                               f"reload the last checkpoint with InfoGrowth.load")
        t_start = time.perf_counter()
        x1r, x1 = _rows(first, self.dim, "first")
        b = x1.shape[0]
        x2: Optional[np.ndarray] = None
        x2r: Optional[np.ndarray] = None
        if self.second_dim is not None:
            if second is None:
                raise ValueError(f"second is required: this curator was built with second_dim="
                                 f"{self.second_dim}; pass the second-modality embeddings")
            x2r, x2 = _rows(second, self.second_dim, "second", n=b)
        elif second is not None:
            raise ValueError("second was given but this curator has no second modality; build it "
                             "with second_dim=... to use the cleaner")
        lab = None if labels is None else _labels(labels, b)
        if lab is None and self.gain_kind != "info":
            raise ValueError(f"gain={self.gain_kind!r} needs labels for every item; pass labels= "
                             f"or use gain='info'")
        positions = self.n_seen + np.arange(b, dtype=np.int64)
        reason = np.zeros(b, np.int8)
        sim = np.full(b, np.nan)
        recap = np.zeros(b, bool)
        stats = dict(similarity_s=0.0, recaption_s=0.0, index_query_s=0.0, index_add_s=0.0)

        # ---- cleaner
        if x2 is not None and x2r is not None and b:
            t = time.perf_counter()
            sim = self._similarity(x1r, x2r, "similarity")
            low = np.flatnonzero(sim < self.delta)
            stats["similarity_s"] += time.perf_counter() - t
            if low.size and self.recaption is not None:
                t = time.perf_counter()
                new2r, new2, newlab = self._call_recaption(positions[low], x1r[low], x2r[low], lab)
                stats["recaption_s"] += time.perf_counter() - t
                got = ~np.isnan(new2).any(axis=1)
                sim2 = np.full(low.size, -np.inf)
                if got.any():
                    t = time.perf_counter()
                    sim2[got] = self._similarity(x1r[low[got]], new2r[got], "similarity (re-check)")
                    stats["similarity_s"] += time.perf_counter() - t
                ok = sim2 >= self.delta
                x2 = x2.copy()
                x2[low[ok]] = new2[ok]
                recap[low[ok]] = True
                if newlab is not None and lab is not None:
                    lab = lab.copy()
                    lab[low[ok]] = newlab[ok]
                sim[low] = np.where(np.isfinite(sim2), sim2, sim[low])
                reason[low[~ok]] = CLEANER
            elif low.size:
                reason[low] = CLEANER

        # ---- gain (nothing is modified until the commit below)
        clean = np.flatnonzero(reason == KEPT)
        m = clean.size
        raw = np.full(b, np.nan)
        ent = np.full(b, np.nan)
        near = np.full(b, np.nan)
        mods: List[np.ndarray] = [x1] + ([x2] if x2 is not None and len(self.pools) > 1 else [])
        if m:
            n_old = self.n_kept
            kk = min(self.k, n_old)
            nbr_d: List[np.ndarray] = []
            nbr_i: List[np.ndarray] = []
            xcs: List[np.ndarray] = []
            for j, pool in enumerate(self.pools):
                xc = mods[j][clean]
                if kk:
                    t = time.perf_counter()
                    ids, dist = pool.query(xc, kk)
                    stats["index_query_s"] += time.perf_counter() - t
                else:
                    ids = np.empty((m, 0), np.int64)
                    dist = np.empty((m, 0), np.float32)
                nbr_i.append(ids)
                nbr_d.append(dist.astype(np.float32, copy=False))
                xcs.append(xc)
            labc = None if lab is None else lab[clean]
            with _blas_limit(self.blas_threads):
                if self.drop_below is None and self.duplicate_below is None:
                    why_c, raw_c, ent_c, near_c = self._merge_all(nbr_d, nbr_i, xcs, labc)
                else:
                    why_c, raw_c, ent_c, near_c = self._merge_sequential(nbr_d, nbr_i, xcs, labc)
            raw[clean] = raw_c
            ent[clean] = ent_c
            near[clean] = near_c
            reason[clean] = why_c
        kept = np.flatnonzero(reason == KEPT)
        n_new = kept.size

        # ---- normalise with the quantile refreshed by this batch's kept raw gains
        sketch_counts = self._sketch.counts.copy()
        raw_k = raw[kept]
        self._sketch.add(raw_k[np.isfinite(raw_k)])
        q = self._sketch.quantile(self.quantile)
        gain = np.full(b, np.nan)
        gain[kept] = self._combine(self._normalise(raw_k, q), ent[kept])

        # ---- commit
        start = self.n_kept
        new_ids = np.arange(start, start + n_new, dtype=np.int64)
        if n_new:
            try:
                for j, pool in enumerate(self.pools):
                    _grow_pool(pool, start + n_new)
                    t = time.perf_counter()
                    pool.add(new_ids, mods[j][kept])
                    stats["index_add_s"] += time.perf_counter() - t
            except BaseException as exc:
                self._sketch.counts = sketch_counts
                self._broken = f"{type(exc).__name__} while adding to the index: {exc}"
                raise
        self._kept_pos.extend(positions[kept])
        self._kept_raw.extend(raw_k.astype(np.float32))
        self._kept_gain.extend(gain[kept].astype(np.float32))
        self._kept_ent.extend(ent[kept].astype(np.float32))
        self._kept_near.extend(near[kept].astype(np.float32))
        self._kept_sim.extend(sim[kept].astype(np.float32))
        self._kept_recap.extend(recap[kept])
        self._kept_lab.extend(lab[kept] if lab is not None else np.full(n_new, -1, np.int64))
        dropped = np.flatnonzero(reason != KEPT)
        self._drop_pos.extend(positions[dropped])
        self._drop_reason.extend(reason[dropped])
        self._drop_sim.extend(sim[dropped].astype(np.float32))
        self.n_seen += b
        self.n_recaptioned += int(recap[kept].sum())
        kept_ids = np.full(b, -1, np.int64)
        kept_ids[kept] = new_ids
        self.stats["batches"] += 1
        self.stats["items"] += b
        for key, v in stats.items():
            self.stats[key] += v
        self.stats["total_s"] += time.perf_counter() - t_start
        return BatchReport(positions=positions, kept=reason == KEPT, kept_ids=kept_ids, reason=reason,
                           similarity=sim, recaptioned=recap, raw_gain=raw, nearest=near,
                           gain=gain)

    def _similarity(self, a: np.ndarray, b: np.ndarray, what: str) -> np.ndarray:
        if self.similarity is None:
            return _cosine_similarity(a, b)
        out = np.asarray(self.similarity(a, b), dtype=np.float64).reshape(-1)
        if out.shape[0] != a.shape[0]:
            raise ValueError(f"the {what} callback returned {out.shape[0]} values for {a.shape[0]} "
                             f"pairs; it must return one similarity per pair")
        if np.isnan(out).any():
            raise ValueError(f"the {what} callback returned NaN for pairs "
                             f"{np.flatnonzero(np.isnan(out))[:5].tolist()}; return finite similarities")
        return out

    def _call_recaption(self, pos: np.ndarray, a: np.ndarray, b: np.ndarray,
                        lab: Optional[np.ndarray]
                        ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Run the callback; return (new rows as given, as unit rows, new labels or None)."""
        out = self.recaption(pos.copy(), a.copy(), b.copy())  # type: ignore[misc]
        newlab = None
        if isinstance(out, tuple):
            if len(out) != 2:
                raise ValueError(f"recaption returned a tuple of {len(out)} items; return new_second "
                                 f"or (new_second, new_labels)")
            out, newlab = out
        arr = np.asarray(out, dtype=np.float64)
        if arr.ndim != 2 or arr.shape != (a.shape[0], self.second_dim):
            raise ValueError(f"recaption returned shape {arr.shape}; expected ({a.shape[0]}, "
                             f"{self.second_dim}): one new second-modality embedding per item "
                             f"(a row of NaN for 'no caption')")
        rows_nan: np.ndarray = np.asarray(np.isnan(arr).any(axis=1))
        if np.isinf(arr[~rows_nan]).any():
            raise ValueError("recaption returned infinite values; return finite embeddings or a NaN "
                             "row for items it cannot caption")
        norms = np.linalg.norm(np.where(rows_nan[:, None], 1.0, arr), axis=1)
        if (norms[~rows_nan] == 0).any():
            raise ValueError("recaption returned zero vectors; return a NaN row for items it cannot "
                             "caption")
        unit = np.where(rows_nan[:, None], np.nan, arr / norms[:, None]).astype(np.float32)
        if newlab is not None:
            if lab is None:
                raise ValueError("recaption returned new labels but the batch has no labels; return "
                                 "only the new embeddings")
            newlab = _labels(newlab, a.shape[0], "labels returned by recaption")
        return arr.astype(np.float32), unit, newlab

    def _merge_all(self, nbr_d: List[np.ndarray], nbr_i: List[np.ndarray], xcs: List[np.ndarray],
                   labc: Optional[np.ndarray]
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised merge when every clean item is kept: index answers + earlier batch items.

        Works on row blocks of ``_BLOCK`` items: block [r0, r1) needs distances to batch
        items [0, r1) only (the lower triangle), so the batch costs about half of a full
        b x b GEMM and the k-selection runs on (rows, k + r1) slices.
        Returns (reason codes, raw gains, entropy gains, nearest distances) per clean item.
        """
        m = xcs[0].shape[0]
        raw_sum = np.zeros(m)
        raw_cnt = np.zeros(m)
        ent = np.full(m, np.nan)
        near = np.full(m, np.nan)
        kept_lab = self._kept_lab.view()
        for r0 in range(0, m, _BLOCK):
            r1 = min(m, r0 + _BLOCK)
            rows = r1 - r0
            diag = self._later_mask(rows)
            for j, (d, ids, xc) in enumerate(zip(nbr_d, nbr_i, xcs)):
                a = xc[r0:r1] @ xc[:r1].T                 # (rows, r1) float32 GEMM
                np.subtract(1.0, a, out=a)
                np.clip(a, 0.0, _MAX_DIST, out=a)
                blk = a[:, r0:r1]
                blk[diag] = np.inf                        # item i only sees earlier items
                cand = np.concatenate([d[r0:r1], a], axis=1)
                kk = min(self.k, cand.shape[1])
                if kk < cand.shape[1]:
                    part = np.argpartition(cand, kk - 1, axis=1)[:, :kk]
                else:
                    part = np.broadcast_to(np.arange(cand.shape[1]), (rows, cand.shape[1]))
                vals = np.take_along_axis(cand, part, axis=1).astype(np.float64)
                fin = np.isfinite(vals)
                cnt = fin.sum(axis=1)
                mean = np.where(fin, vals, 0.0).sum(axis=1) / np.maximum(cnt, 1)
                raw_sum[r0:r1] += np.where(cnt > 0, mean, np.nan)
                raw_cnt[r0:r1] += 1
                if j == 0:
                    near[r0:r1] = np.where(cnt > 0, np.where(fin, vals, np.inf).min(axis=1), np.nan)
                if j == 0 and labc is not None:
                    nl = np.concatenate([kept_lab[ids[r0:r1]] if ids.size else np.empty((rows, 0), np.int64),
                                         np.broadcast_to(labc[:r1], (rows, r1))], axis=1)
                    same = (np.take_along_axis(nl, part, axis=1) == labc[r0:r1, None]) & fin
                    ent[r0:r1] = np.where(cnt > 0, 1.0 - same.sum(axis=1) / np.maximum(cnt, 1), 1.0)
        return np.zeros(m, np.int8), raw_sum / raw_cnt, ent, near

    def _later_mask(self, m: int) -> np.ndarray:
        """Cached (m, m) bool mask of the upper triangle with the diagonal."""
        cache = getattr(self, "_mask_cache", None)
        if cache is None or cache.shape[0] != m:
            cache = np.triu(np.ones((m, m), bool))
            self._mask_cache = cache
        return cache

    def _merge_sequential(self, nbr_d: List[np.ndarray], nbr_i: List[np.ndarray],
                          xcs: List[np.ndarray], labc: Optional[np.ndarray]
                          ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Item-by-item merge for the drop filters: later items only see earlier *kept* ones.

        O(b) Python steps, each O(kept-in-batch * d + k) numpy work.
        """
        m = xcs[0].shape[0]
        why = np.zeros(m, np.int8)
        raw = np.full(m, np.nan)
        ent = np.full(m, np.nan)
        near = np.full(m, np.nan)
        kept_lab = self._kept_lab.view()
        before: List[int] = []
        for i in range(m):
            bi = np.asarray(before, np.int64)
            parts = []
            for j, (d, ids, xc) in enumerate(zip(nbr_d, nbr_i, xcs)):
                if bi.size:
                    a = np.clip(1.0 - xc[bi] @ xc[i], 0.0, _MAX_DIST).astype(np.float32)
                else:
                    a = np.empty(0, np.float32)
                cand = np.concatenate([d[i], a])
                if cand.size == 0:
                    parts.append(np.nan)
                    if j == 0:
                        ent[i] = 1.0
                    continue
                kk = min(self.k, cand.size)
                sel = np.argpartition(cand, kk - 1)[:kk] if kk < cand.size else np.arange(cand.size)
                parts.append(float(cand[sel].astype(np.float64).mean()))
                if j == 0:
                    near[i] = float(cand[sel].min())
                if j == 0 and labc is not None:
                    nl = np.concatenate([kept_lab[ids[i]], labc[bi]])
                    ent[i] = 1.0 - float((nl[sel] == labc[i]).mean())
            r = float(np.mean(parts))
            raw[i] = r
            if self.duplicate_below is not None and near[i] < self.duplicate_below:
                why[i] = DUPLICATE
            elif self.drop_below is not None and r < self.drop_below:
                why[i] = REDUNDANT
            else:
                before.append(i)
        return why, raw, ent, near

    # ------------------------------------------------------------------ samplers
    def probabilities(self, epoch: Optional[int] = None, *, normalisation: str = "arrival",
                      floor: float = 0.1) -> np.ndarray:
        """Sampling probabilities over the kept items: static (``epoch=None``) or dynamic.

        See :func:`static_probabilities` and :func:`dynamic_probabilities`. O(n_kept).
        """
        g = self.gains(normalisation)
        if epoch is None:
            return static_probabilities(g)
        return dynamic_probabilities(g, epoch, floor=floor)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: PathLike) -> Path:
        """Checkpoint the whole curator into ``directory`` (created if absent).

        Atomic and resumable: see the module docstring. O(n_kept · (d + M)) bytes written.
        Returns the generation directory written.
        """

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        latest = _read_latest(directory) if (directory / "LATEST.json").exists() else None
        gens = [int(p.name[1:]) for p in directory.glob("g[0-9]*") if p.name[1:].isdigit()]
        gen = max(gens + [latest["generation"] if latest else 0]) + 1
        name = f"g{gen:06d}"
        tmp = directory / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            arrays: Dict[str, Any] = dict(kept_pos=self._kept_pos.view(), kept_raw=self._kept_raw.view(),
                          kept_gain=self._kept_gain.view(), kept_entropy=self._kept_ent.view(),
                          kept_nearest=self._kept_near.view(),
                          kept_sim=self._kept_sim.view(), kept_recap=self._kept_recap.view(),
                          kept_labels=self._kept_lab.view(), drop_pos=self._drop_pos.view(),
                          drop_reason=self._drop_reason.view(), drop_sim=self._drop_sim.view(),
                          sketch=self._sketch.counts)
            with open(tmp / "state.npz", "xb") as fh:
                np.savez(fh, **arrays)
            for j, pool in enumerate(self.pools):
                pool.save(tmp / f"pool{j}")
            meta = dict(format=FORMAT, version=FORMAT_VERSION, config=self.config(),
                        n_seen=self.n_seen, n_kept=self.n_kept, n_recaptioned=self.n_recaptioned,
                        n_pools=len(self.pools), stats=self.stats)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            files = sorted(p.name for p in tmp.iterdir())
            checksums = {}
            for f in files:
                _fsync_path(tmp / f)
                checksums[f] = _sha256_file(tmp / f)
            _fsync_path(tmp)
            os.rename(tmp, directory / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_path(directory)
        payload = json.dumps(dict(format=FORMAT, version=FORMAT_VERSION, generation=gen, dir=name,
                                  files=checksums, n_seen=self.n_seen, n_kept=self.n_kept),
                             indent=1).encode()
        atomic_write(directory / "LATEST.json", lambda fh: fh.write(payload))
        for p in directory.iterdir():  # older generations and stale temporaries
            if p.name != name and (p.name.startswith(".g") or (p.name.startswith("g") and p.name[1:].isdigit())):
                shutil.rmtree(p, ignore_errors=True)
        return directory / name

    @classmethod
    def load(cls, directory: PathLike, *, recaption: Optional[Callable[..., Any]] = None,
             similarity: Optional[Callable[[np.ndarray, np.ndarray], Any]] = None,
             num_threads: Optional[int] = None) -> "InfoGrowth":
        """Resume a curator saved by :meth:`save`. Callbacks are not saved: pass them again.

        Verifies the checksums of every file of the generation named by ``LATEST.json``;
        raises :class:`CheckpointError` naming the problem if anything is missing or
        corrupt. Never unpickles. O(checkpoint size).
        """
        directory = Path(directory)
        latest = _read_latest(directory)
        gdir = directory / str(latest["dir"])
        files = latest.get("files")
        if not isinstance(files, dict) or not files:
            raise CheckpointError(f"{directory / 'LATEST.json'} lists no files; the checkpoint is corrupt")
        for f, digest in files.items():
            p = gdir / f
            if not p.is_file():
                raise CheckpointError(f"checkpoint file {p} is missing; the checkpoint directory was "
                                      f"modified after the save")
            if _sha256_file(p) != digest:
                raise CheckpointError(f"checkpoint file {p} does not match its checksum; it is corrupt "
                                      f"or was modified: restore it or start again")
        meta = json.loads((gdir / "meta.json").read_text())
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{gdir / 'meta.json'} is format {meta.get('format')!r} version "
                                  f"{meta.get('version')!r}; expected {FORMAT!r} {FORMAT_VERSION}")
        with np.load(gdir / "state.npz", allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        pools = [load_pool(gdir / f"pool{j}", num_threads=num_threads, progress=False)
                 for j in range(int(meta["n_pools"]))]
        n_kept = int(meta["n_kept"])
        for j, pool in enumerate(pools):
            if len(pool) != n_kept:
                raise CheckpointError(f"pool{j} holds {len(pool)} items but the checkpoint lists "
                                      f"{n_kept} kept items; the files come from different saves")
        if arrays["kept_pos"].size != n_kept:
            raise CheckpointError(f"state.npz lists {arrays['kept_pos'].size} kept items, meta.json "
                                  f"{n_kept}; the checkpoint is corrupt")
        cfg = dict(meta["config"])
        if num_threads is not None:
            cfg["num_threads"] = num_threads
        for p in pools:
            p.num_threads = cfg["num_threads"] if cfg["num_threads"] is not None else p.num_threads
        return cls(recaption=recaption, similarity=similarity, capacity=max(1, pools[0].capacity),
                   _restore=dict(pools=pools, arrays=arrays, n_seen=meta["n_seen"],
                                 n_recaptioned=meta["n_recaptioned"], stats=meta["stats"]),
                   **cfg)

    def __repr__(self) -> str:
        return (f"InfoGrowth(dim={self.dim}, second_dim={self.second_dim}, k={self.k}, "
                f"seen={self.n_seen}, kept={self.n_kept}, dropped={self._drop_pos.n}, "
                f"backend={self.backend!r})")


def _read_latest(directory: Path) -> Dict[str, Any]:
    path = directory / "LATEST.json"
    if not path.is_file():
        raise CheckpointError(f"no curation checkpoint in {str(directory)!r}: LATEST.json is missing; "
                              f"pass the directory given to InfoGrowth.save")
    try:
        latest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt") from exc
    if not isinstance(latest, dict) or latest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a socbi curation checkpoint")
    if latest.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {latest.get('version')!r}; this socbi "
                              f"reads version {FORMAT_VERSION}")
    return latest


def open_curator(directory: Optional[PathLike], *args: Any,
                 recaption: Optional[Callable[..., Any]] = None,
                 similarity: Optional[Callable[[np.ndarray, np.ndarray], Any]] = None,
                 **kwargs: Any) -> InfoGrowth:
    """Resume from ``directory`` when it holds a checkpoint, else build ``InfoGrowth(*args, **kwargs)``.

    When resuming, the saved configuration wins; ``dim`` and any other given settings
    must agree with it (ValueError naming the first difference otherwise). O(checkpoint).
    """
    if directory is not None and (Path(directory) / "LATEST.json").exists():
        cur = InfoGrowth.load(directory, recaption=recaption, similarity=similarity,
                              num_threads=kwargs.get("num_threads"))
        given = dict(zip(("dim", "second_dim"), args), **kwargs)
        cfg = cur.config()
        for key, val in given.items():
            if key in cfg and key not in ("num_threads", "blas_threads") and cfg[key] != val:
                raise ValueError(f"{key}={val!r} differs from the checkpoint in {str(directory)!r} "
                                 f"({key}={cfg[key]!r}); pass the same settings or a new directory")
        return cur
    return InfoGrowth(*args, recaption=recaption, similarity=similarity, **kwargs)


# =============================================================================== driver
def curate(curator: InfoGrowth, first: Any, second: Any = None, labels: Any = None, *,
           batch_size: int = 1024, checkpoint: Optional[PathLike] = None,
           checkpoint_every: int = 100_000, progress: bool = True,
           on_batch: Optional[Callable[[BatchReport], None]] = None) -> InfoGrowth:
    """Stream the rows of ``first`` (and ``second``, ``labels``) through ``curator``.

    Arrays (or memory maps) hold the *whole* stream; the curator resumes at
    ``curator.n_seen``, so after :meth:`InfoGrowth.load` the same call continues where
    the checkpoint left off. With ``checkpoint`` the curator is saved every
    ``checkpoint_every`` items (at a batch boundary) and at the end. ``on_batch`` sees
    each :class:`BatchReport`. A tqdm bar shows items/s. Returns ``curator``.

    Complexity: the sum of :meth:`InfoGrowth.process` over the batches plus the saves.
    Thread safety: as :class:`InfoGrowth`.
    """
    batch_size = _int_param("batch_size", batch_size, 1)
    checkpoint_every = _int_param("checkpoint_every", checkpoint_every, 1)
    n = len(first)
    for name, arr in (("second", second), ("labels", labels)):
        if arr is not None and len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows but first has {n}; pass one row per item")
    start = curator.n_seen
    if start > n:
        raise ValueError(f"the curator has already consumed {start} items but the stream has only "
                         f"{n}; pass the same stream it was started on (or a fresh curator)")
    bar = None
    if progress:
        from ._progress import progress as _progress_policy

        bar = _progress_policy(total=n, initial=start, desc="curate", unit="item")
    since_save = 0
    try:
        for s in range(start, n, batch_size):
            e = min(n, s + batch_size)
            rep = curator.process(first[s:e], None if second is None else second[s:e],
                                  None if labels is None else labels[s:e])
            if on_batch is not None:
                on_batch(rep)
            since_save += e - s
            if bar is not None:
                bar.update(e - s)
                bar.set_postfix(kept=curator.n_kept, refresh=False)
            if checkpoint is not None and since_save >= checkpoint_every and e < n:
                curator.save(checkpoint)
                since_save = 0
        if checkpoint is not None and (since_save or curator.n_seen == n):
            curator.save(checkpoint)
    finally:
        if bar is not None:
            bar.close()
    return curator


# =============================================================================== samplers
def _check_gains(gains: Any) -> np.ndarray:
    g = np.asarray(gains, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(f"gains must be a non-empty 1-D array (one gain per kept item), got shape {g.shape}")
    if not np.isfinite(g).all():
        raise ValueError(f"gains has NaN or infinite entries at {np.flatnonzero(~np.isfinite(g))[:5].tolist()}; "
                         f"pass the curator's gains() (kept items only)")
    if (g < 0).any() or (g > 1).any():
        raise ValueError(f"gains must lie in [0, 1] (normalised gains G), got min {g.min():.4g}, max "
                         f"{g.max():.4g}; use InfoGrowth.gains(), not raw gains")
    return g


def static_probabilities(gains: Any) -> np.ndarray:
    """InfoGrowth's static sampler: P(x_i) = G_i / sum_j G_j. O(n).

    Items with G = 0 are never drawn. ValueError if every G is 0. Pure function.
    """
    g = _check_gains(gains)
    total = g.sum()
    if total <= 0:
        raise ValueError("every gain is 0, so P = G / sum(G) is undefined; the kept set is all "
                         "duplicates of nothing -- check the stream")
    return g / total


def dynamic_probabilities(gains: Any, epoch: int, *, floor: float = 0.1) -> np.ndarray:
    """InfoGrowth's dynamic sampler for ``epoch``: even epochs P ~ G_i, odd P ~ max(floor, 1 - G_i).

    O(n). Thread safety: pure function.
    """
    epoch = _int_param("epoch", epoch, 0)
    floor = _float_param("floor", floor, 0.0, 1.0, lo_open=True)
    g = _check_gains(gains)
    if epoch % 2 == 0:
        return static_probabilities(g)
    w = np.maximum(floor, 1.0 - g)
    return w / w.sum()


def sample_indices(p: Any, num_samples: int, *, replacement: bool = True,
                   seed: Union[int, np.random.Generator, None] = 0) -> np.ndarray:
    """Draw ``num_samples`` indices with probabilities ``p``. O(n + num_samples log n).

    Without replacement, at most the number of items with p > 0 can be drawn
    (ValueError naming both otherwise). Pure function of (p, num_samples, seed).
    """
    pr = np.asarray(p, dtype=np.float64)
    if pr.ndim != 1 or pr.size == 0 or not np.isfinite(pr).all() or (pr < 0).any() \
            or abs(pr.sum() - 1.0) > 1e-6:
        raise ValueError("p must be a 1-D probability vector (finite, >= 0, summing to 1); use "
                         "static_probabilities / dynamic_probabilities")
    num_samples = _int_param("num_samples", num_samples, 0)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if not replacement:
        nz = int((pr > 0).sum())
        if num_samples > nz:
            raise ValueError(f"num_samples={num_samples} exceeds the {nz} items with non-zero "
                             f"probability; draw at most {nz} without replacement, or pass "
                             f"replacement=True")
    return rng.choice(pr.size, size=num_samples, replace=bool(replacement), p=pr).astype(np.int64)


def static_indices(gains: Any, num_samples: Optional[int] = None, *, replacement: bool = True,
                   seed: int = 0) -> np.ndarray:
    """Indices (into the kept items) drawn by the static sampler. O(n + num_samples log n); pure."""
    g = _check_gains(gains)
    return sample_indices(static_probabilities(g), g.size if num_samples is None else num_samples,
                          replacement=replacement, seed=seed)


def dynamic_indices(gains: Any, epochs: int, num_samples: Optional[int] = None, *,
                    replacement: bool = True, seed: int = 0, floor: float = 0.1
                    ) -> Iterator[np.ndarray]:
    """Per-epoch index arrays of the dynamic sampler (epoch e uses seed ``(seed, e)``).

    A generator of ``epochs`` arrays; each costs O(n + num_samples log n). Pure (seeded).
    """
    epochs = _int_param("epochs", epochs, 0)
    g = _check_gains(gains)
    size = g.size if num_samples is None else num_samples
    for e in range(epochs):
        yield sample_indices(dynamic_probabilities(g, e, floor=floor), size, replacement=replacement,
                             seed=np.random.default_rng([seed, e]))


_TORCH_SAMPLER: Optional[type] = None


def _torch_sampler_class() -> type:
    global _TORCH_SAMPLER
    if _TORCH_SAMPLER is None:
        try:
            from torch.utils.data import Sampler
        except ImportError as exc:
            raise ImportError("GainSampler needs torch: pip install 'socbi[torch]' (or use "
                              "static_indices / dynamic_indices, which need only numpy)") from exc

        class GainSampler(Sampler):  # type: ignore[type-arg]
            """torch ``Sampler`` over kept items drawing by InfoGrowth gains.

            ``mode="static"``: P ~ G every epoch; ``"dynamic"``: alternate P ~ G (even
            epochs) and P ~ max(floor, 1 - G) (odd). Call :meth:`set_epoch` before each
            epoch (as with ``DistributedSampler``); epoch e draws with seed (seed, e), so
            runs are reproducible. ``num_samples`` per epoch defaults to len(gains).
            Iteration O(n + num_samples log n) per epoch. Not thread-safe across
            concurrent ``set_epoch``/``iter`` (DataLoader workers each get a copy).
            """

            def __init__(self, gains: Any, mode: str = "static", num_samples: Optional[int] = None,
                         replacement: bool = True, seed: int = 0, floor: float = 0.1) -> None:
                if mode not in ("static", "dynamic"):
                    raise ValueError(f"mode must be 'static' or 'dynamic', got {mode!r}")
                self.gains = _check_gains(gains)
                self.mode = mode
                self.num_samples = self.gains.size if num_samples is None else \
                    _int_param("num_samples", num_samples, 0)
                self.replacement = bool(replacement)
                self.seed = _int_param("seed", seed, 0)
                self.floor = _float_param("floor", floor, 0.0, 1.0, lo_open=True)
                self.epoch = 0
                self.probabilities(0)  # validate now (all-zero gains, sizes)
                if not self.replacement:
                    sample_indices(self.probabilities(0), self.num_samples, replacement=False)

            def set_epoch(self, epoch: int) -> None:
                self.epoch = _int_param("epoch", epoch, 0)

            def probabilities(self, epoch: int) -> np.ndarray:
                if self.mode == "static":
                    return static_probabilities(self.gains)
                return dynamic_probabilities(self.gains, epoch, floor=self.floor)

            def __iter__(self) -> Iterator[int]:
                idx = sample_indices(self.probabilities(self.epoch), self.num_samples,
                                     replacement=self.replacement,
                                     seed=np.random.default_rng([self.seed, self.epoch]))
                return iter(idx.tolist())

            def __len__(self) -> int:
                return self.num_samples

        GainSampler.__module__ = __name__
        _TORCH_SAMPLER = GainSampler
    return _TORCH_SAMPLER


def __getattr__(name: str) -> Any:
    if name == "GainSampler":
        return _torch_sampler_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# =============================================================================== CLI
def _err(msg: str) -> int:
    return fail("curate", msg)


def register(subparsers: Any) -> None:
    """Add ``socbi curate`` to the ``socbi`` command."""
    p = subparsers.add_parser(
        "curate", help="InfoGrowth: clean and weight a stream of embeddings (resumable)",
        description="Stream embeddings through the InfoGrowth curator (cleaner, gain, keep). "
                    "Checkpoints into --out and resumes from it when it already holds one; writes "
                    "--out/kept.csv (position, gain, raw_gain, similarity, recaptioned, label) and "
                    "--out/dropped.csv (position, reason, similarity).")
    p.add_argument("first", metavar="FIRST.npy", help="(n, d) first-modality embeddings (.npy or .csv)")
    p.add_argument("--second", metavar="SECOND.npy", default=None,
                   help="(n, d) second-modality embeddings in the same space (enables the cleaner)")
    p.add_argument("--labels", metavar="LABELS.npy", default=None, help="(n,) integer labels")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint and output directory")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--delta", type=float, default=0.4)
    p.add_argument("--gain", choices=GAINS, default="info")
    p.add_argument("--duplicate-below", type=float, default=None,
                   help="drop items whose nearest kept item is within this cosine distance")
    p.add_argument("--drop-below", type=float, default=None,
                   help="drop items whose raw gain (cosine distance) is below this")
    p.add_argument("--backend", choices=["hnsw", "exact"], default="hnsw")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--checkpoint-every", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=None, help="hnswlib threads (default all CPUs)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_curate_main)


def _curate_main(args: argparse.Namespace) -> int:
    from .session import _read_matrix

    try:
        output_dir(args.out, "--out")
        first = _read_matrix(args.first, "first")
        second = None if args.second is None else _read_matrix(args.second, "second")
        labels = None
        if args.labels is not None:
            labels = _read_matrix(args.labels, "labels").reshape(-1)
        if first.ndim != 2:
            raise ValueError(f"FIRST must be a 2-D (n, d) array, got shape {first.shape}")
        if second is not None and second.ndim != 2:
            raise ValueError(f"--second must be a 2-D (n, d) array, got shape {second.shape}")
        cur = open_curator(args.out, first.shape[1], None if second is None else second.shape[1],
                           k=args.k, delta=args.delta, gain=args.gain,
                           duplicate_below=args.duplicate_below, drop_below=args.drop_below,
                           backend=args.backend, num_threads=args.threads)
        curate(cur, first, second, labels, batch_size=args.batch_size, checkpoint=args.out,
               checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        return _err(str(exc))
    out = Path(args.out)
    g = cur.gains()
    with open(out / "kept.csv", "w") as fh:
        fh.write("position,gain,raw_gain,similarity,recaptioned,label\n")
        for row in zip(cur.kept_positions.tolist(), g.tolist(), cur.raw_gains.tolist(),
                       cur.similarities.tolist(), cur.recaptioned.tolist(), cur.labels.tolist()):
            fh.write(f"{row[0]},{row[1]:.6g},{row[2]:.6g},{row[3]:.6g},{int(row[4])},{row[5]}\n")
    with open(out / "dropped.csv", "w") as fh:
        fh.write("position,reason,similarity\n")
        for pos, r, s in zip(cur.dropped_positions.tolist(), cur.dropped_reasons.tolist(),
                             cur._drop_sim.view().tolist()):
            fh.write(f"{pos},{REASONS[r]},{s:.6g}\n")
    print(f"socbi curate: {cur.n_seen} items seen, {cur.n_kept} kept, "
          f"{int((cur.dropped_reasons == CLEANER).sum())} dropped by the cleaner, "
          f"{int((cur.dropped_reasons == DUPLICATE).sum())} as duplicates, "
          f"{int((cur.dropped_reasons == REDUNDANT).sum())} as redundant, {cur.n_recaptioned} "
          f"re-captioned; checkpoint and kept.csv in {args.out}")
    return 0
