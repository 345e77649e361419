"""Hash-code retrieval: an OrthoHash-style hashing head, packed-bit Hamming ranking, mAP.

Three layers, usable on their own:

* **Codes** (numpy only). :func:`class_codes` gives every class a fixed ``n_bits`` +/-1
  target: rows of a Sylvester Hadamard matrix (mutually orthogonal, so any two classes
  are ``n_bits / 2`` bits apart), then rows of its negation, then seeded random
  balanced codes when there are more than ``2 * n_bits`` classes. :func:`pack_codes`
  turns +/-1, {0, 1}, bool or real-valued codes into packed bits (``np.packbits``;
  bit = 1 where the value is > 0), :func:`hamming_distances` XORs packed words and
  counts bits (``np.bitwise_count`` on numpy >= 2, a byte table otherwise) and
  :func:`hamming_rank` returns the nearest database items, ties by ascending index.
* **Metrics** (numpy only). :func:`average_precisions` / :func:`mean_average_precision`
  compute AP over the **whole database** (``k=None``) or the top ``k`` (mAP@k), for
  packed hash codes (``metric="hamming"``) and for float embeddings (``"cosine"``,
  ``"l2"``, ``"ip"``). Definitions are spelled out below; :func:`retrieval_report`
  bundles mAP, mAP@k and how many synthetic database items were left out.
* **Hashing head** (torch, imported on first use). :func:`train_hash_head` trains a small
  MLP on top of embeddings with the OrthoHash loss (Hoe et al., NeurIPS 2021): the
  head's continuous code ``v`` is compared with every class code ``c_j`` by cosine,
  logits ``s * (cos(v, c_j) - m * [j == y])``, cross-entropy; optionally a quantisation
  term ``1 - cos(v, sign(v))``. The result, a :class:`HashModel`, encodes new samples to
  packed codes (:meth:`HashModel.encode`) or continuous codes
  (:meth:`HashModel.continuous`), and records how many of its training samples were
  synthetic.

Average precision, as computed here. Rank the database by distance to the query
(smaller first). With relevance ``rel_i`` at rank ``i``, ``R`` relevant items in the
database and ``P@i`` the precision of the first ``i`` items:

* ``convention="standard"`` (default): ``AP@k = sum_{i<=k} rel_i * P@i / min(R, k)``;
  ``k=None`` means ``k = n`` (whole database): ``AP = sum_i rel_i * P@i / R``. Queries
  with ``R = 0`` have no AP: they are left out of the mean (counted in
  :func:`retrieval_report`), and a ValueError is raised if no query has any relevant
  item.
* ``convention="deephash"``: the DeepHash-pytorch / OrthoHash ``CalcTopMap`` rule,
  ``sum_{i<=k} rel_i * P@i / sum_{i<=k} rel_i``, a query with no relevant item in its
  top ``k`` counting as 0. Equal to the standard AP when ``k=None``; larger for small
  ``k``. Needs ``ties="index"`` (its denominator is not linear in the ranking).

Ties in distance (common with Hamming distances: 65 possible values at 64 bits):

* ``ties="mean"`` (default): the **expected** AP over a uniformly random order inside
  every group of equal distance (McSherry & Najork, ECIR 2008), computed exactly in
  closed form: a group of ``g`` items holding ``r`` relevant ones, after ``s`` items of
  which ``B`` are relevant, adds
  ``(r/g) * sum_{j=1}^{t} (B + 1 + (j-1)(r-1)/(g-1)) / (s + j)`` (``t = g`` or the part of
  the group inside the top ``k``), which uses harmonic numbers only. Independent of
  database order.
* ``ties="index"``: equal distances ranked by ascending database index (deterministic).
  The usual research code sorts with an unstable ``np.argsort`` and so reports an
  arbitrary tie order; neither rule here depends on luck.

Complexity: Hamming distances O(m n w) word operations for ``w = ceil(bits / 64)``;
AP with ``metric="hamming", ties="mean"`` O(m (n + bits)) (per-distance counting, no
sort); every other case O(m n log n) (a stable sort per query). Work is done in query
chunks of about 4M (query, item) pairs, so memory stays O(chunk) whatever m and n.

Thread safety: the numpy functions are pure and may run from several threads.
:func:`train_hash_head` uses torch's intra-op thread pool and a private seeded RNG
(the global torch RNG is untouched); do not train two heads concurrently in one
process. A trained :class:`HashModel`'s encode / continuous / predict only read the
model and may be called from several threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._checks import positive_int as _pos_int

__all__ = [
    "hadamard", "class_codes", "pack_codes", "unpack_codes", "hamming_distances", "hamming_rank",
    "embedding_distances", "relevance", "average_precisions", "mean_average_precision",
    "retrieval_report", "HashModel", "train_hash_head", "METRICS",
]

METRICS = ("hamming", "cosine", "l2", "ip")
_CHUNK_PAIRS = 1 << 22          # (query, item) pairs per chunk
_HASH_FORMAT = "socbi.hash/1"
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


# =============================================================================== helpers
def _check_number(name: str, value: Any, strict: bool) -> float:
    """A finite real number, > 0 when ``strict`` else >= 0."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) \
        and math.isfinite(float(value)) and (float(value) > 0 if strict else float(value) >= 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'> 0' if strict else '>= 0'}, got {value!r}")
    return float(value)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from ._progress import progress  # socbi's one progress policy

    return progress(total=total, desc=desc)


# =============================================================================== codes
def hadamard(n: int) -> np.ndarray:
    """The Sylvester Hadamard matrix of order ``n`` (a power of two), int8 +/-1.

    Rows are mutually orthogonal: any two differ in exactly ``n / 2`` places.
    O(n^2) time and memory. Pure function.
    """
    n = _pos_int("n", n)
    if n & (n - 1):
        raise ValueError(f"n must be a power of two for a Sylvester Hadamard matrix, got {n}; "
                         f"use 8, 16, 32, 64, 128, ...")
    from scipy.linalg import hadamard as _scipy_hadamard  # Sylvester's construction

    return _scipy_hadamard(n, dtype=np.int8)


def class_codes(n_classes: int, n_bits: int, *, seed: int = 0) -> np.ndarray:
    """Fixed target codes, one per class: (n_classes, n_bits) float32 with values +/-1.

    ``n_bits`` a power of two: classes 0..n_bits-1 get the rows of the Hadamard matrix
    (pairwise Hamming distance exactly n_bits/2), classes n_bits..2*n_bits-1 the rows of
    its negation (distance n_bits/2 to every other code, n_bits to its own complement),
    further classes seeded random codes with n_bits/2 ones each (the OrthoHash rule).
    Other ``n_bits``: seeded random balanced codes for every class, the best of 20 draws
    by minimum pairwise distance. O(n_classes * n_bits) (random case: 20 x O(C^2 b)).
    Pure function; the same arguments always give the same codes.
    """
    c = _pos_int("n_classes", n_classes)
    b = _pos_int("n_bits", n_bits, lo=2)
    rng = np.random.default_rng([seed, 7])
    if b & (b - 1) == 0:
        h = hadamard(b)
        base = np.concatenate([h, -h], axis=0)[:c]
        extra = c - base.shape[0]
        if extra <= 0:
            return base.astype(np.float32)
        rand = _random_balanced(rng, extra, b)
        return np.concatenate([base, rand], axis=0).astype(np.float32)
    best, best_d = None, -1
    for _ in range(20):
        cand = _random_balanced(rng, c, b)
        if c == 1:
            return cand.astype(np.float32)
        d = (b - cand.astype(np.int32) @ cand.T.astype(np.int32)) // 2
        np.fill_diagonal(d, b)
        if d.min() > best_d:
            best, best_d = cand, int(d.min())
    assert best is not None
    return best.astype(np.float32)


def _random_balanced(rng: np.random.Generator, rows: int, b: int) -> np.ndarray:
    out = np.ones((rows, b), dtype=np.int8)
    for r in range(rows):
        out[r, rng.choice(b, size=b // 2, replace=False)] = -1
    return out


def pack_codes(codes: Any) -> np.ndarray:
    """Pack codes into bits: (n, n_bits) -> (n, ceil(n_bits / 8)) uint8, row-major bits.

    Accepts +/-1, {0, 1}, bool or real values (a torch tensor too): bit = 1 where the
    value is > 0. A 1-D input is one code. Already-packed codes are not detected: pass
    the unpacked (n, n_bits) array. O(n * n_bits). Pure function.
    """
    if hasattr(codes, "detach"):
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"codes must be a 2-D array (n, n_bits), got shape {arr.shape}; pass one "
                         f"code per row")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"codes must be numeric or bool, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("codes contain NaN or infinite values; check the model that produced them")
    return np.packbits(arr > 0, axis=1)


def unpack_codes(packed: Any, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: (n, ceil(n_bits/8)) uint8 -> (n, n_bits) uint8 bits."""
    p = _check_packed(packed, "packed")
    b = _pos_int("n_bits", n_bits)
    if p.shape[1] != (b + 7) // 8:
        raise ValueError(f"packed has {p.shape[1]} bytes per code but n_bits={b} needs {(b + 7) // 8}")
    return np.unpackbits(p, axis=1, count=b)


def _check_packed(x: Any, name: str, width: Optional[int] = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"{name} must be packed codes, a 2-D uint8 array from pack_codes, got "
                         f"dtype {arr.dtype} shape {arr.shape}; call pack_codes(codes) first")
    if width is not None and arr.shape[1] != width:
        raise ValueError(f"{name} has {arr.shape[1]} bytes per code, the other side {width}; both "
                         f"sides need codes of the same length")
    return np.ascontiguousarray(arr)


def _as_words(p: np.ndarray) -> np.ndarray:
    """Packed uint8 (n, B) -> (n, ceil(B/8)) uint64 words, zero padded."""
    n, width = p.shape
    w = (width + 7) // 8
    if width != 8 * w:
        p = np.concatenate([p, np.zeros((n, 8 * w - width), np.uint8)], axis=1)
    return np.ascontiguousarray(p).view(np.uint64)


def _popcount_sum(x: np.ndarray) -> np.ndarray:
    """Sum of set bits over the last axis of a uint64 array, as int32."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).sum(axis=-1, dtype=np.int32)
    b = x.view(np.uint8)  # pragma: no cover - numpy < 2
    return _POPCOUNT8[b].sum(axis=-1, dtype=np.int32)  # pragma: no cover


def _hamming_block(qw: np.ndarray, dw: np.ndarray) -> np.ndarray:
    return _popcount_sum(qw[:, None, :] ^ dw[None, :, :])


def hamming_distances(query: Any, database: Any) -> np.ndarray:
    """All Hamming distances between packed codes: (m, n) int32.

    O(m * n * ceil(bytes / 8)) 64-bit XOR + popcount, in chunks of ~4M pairs.
    Pure function, thread-safe.
    """
    q = _check_packed(query, "query")
    d = _check_packed(database, "database", q.shape[1])
    qw, dw = _as_words(q), _as_words(d)
    out = np.empty((q.shape[0], d.shape[0]), np.int32)
    step = max(1, _CHUNK_PAIRS // max(1, d.shape[0] * dw.shape[1]))
    for s in range(0, q.shape[0], step):
        out[s:s + step] = _hamming_block(qw[s:s + step], dw)
    return out


def hamming_rank(query: Any, database: Any, k: Optional[int] = None, *,
                 progress: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest database codes per query: (ids (m, k) int64, distances (m, k) int32).

    Ordered by (distance, database index): ties go to the smaller index. ``k=None``
    ranks the whole database. O(m n w) for distances plus O(m (n + k log k)) selection.
    Pure function, thread-safe.
    """
    q = _check_packed(query, "query")
    d = _check_packed(database, "database", q.shape[1])
    n = d.shape[0]
    k = n if k is None else _pos_int("k", k)
    if k > n:
        raise ValueError(f"k={k} exceeds the {n} database codes; ask for at most {n}")
    qw, dw = _as_words(q), _as_words(d)
    ids = np.empty((q.shape[0], k), np.int64)
    dist = np.empty((q.shape[0], k), np.int32)
    step = max(1, _CHUNK_PAIRS // max(1, n * dw.shape[1]))
    bar = _progress(q.shape[0], "hamming rank", q.shape[0] * n >= 50_000_000 if progress is None else progress)
    idx = np.arange(n, dtype=np.int64)
    try:
        for s in range(0, q.shape[0], step):
            h = _hamming_block(qw[s:s + step], dw)
            key = h.astype(np.int64) * n + idx[None, :]          # unique keys: (distance, index)
            if k < n:
                part = np.argpartition(key, k - 1, axis=1)[:, :k]
                sel = np.take_along_axis(key, part, axis=1)
                order = np.take_along_axis(part, np.argsort(sel, axis=1), axis=1)
            else:
                order = np.argsort(key, axis=1)
            ids[s:s + step] = order
            dist[s:s + step] = np.take_along_axis(h, order, axis=1)
            if bar is not None:
                bar.update(h.shape[0])
    finally:
        if bar is not None:
            bar.close()
    return ids, dist


def embedding_distances(query: Any, database: Any, metric: str = "cosine") -> np.ndarray:
    """(m, n) float64 distances between float embeddings (smaller = closer).

    ``cosine``: 1 - cos (zero vectors rejected); ``l2``: squared Euclidean; ``ip``:
    minus the inner product. O(m n d). Pure function.
    """
    q = _check_float(query, "query")
    d = _check_float(database, "database", q.shape[1])
    return _float_block(q, d, metric)


def _check_float(x: Any, name: str, dim: Optional[int] = None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a 2-D numeric array (samples x dimension), got dtype "
                         f"{arr.dtype} shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, the queries {dim}; embed both with "
                         f"the same encoder")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise ValueError(f"{name} has NaN or infinite values in rows {rows[:5].tolist()}")
    return arr


def _float_block(q: np.ndarray, d: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        for arr, name in ((q, "query"), (d, "database")):
            norms = np.linalg.norm(arr, axis=1)
            if (norms == 0).any():
                raise ValueError(f"{name} rows {np.flatnonzero(norms == 0)[:5].tolist()} have zero norm; "
                                 f"cosine distance is undefined for them (use metric='l2')")
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        dn = d / np.linalg.norm(d, axis=1, keepdims=True)
        return 1.0 - qn @ dn.T
    if metric == "l2":
        out = (q * q).sum(1)[:, None] + (d * d).sum(1)[None, :] - 2.0 * (q @ d.T)
        return np.maximum(out, 0.0)
    if metric == "ip":
        return -(q @ d.T)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


# =============================================================================== relevance
def _check_labels(labels: Any, n: int, name: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim not in (1, 2) or lab.shape[0] != n:
        raise ValueError(f"{name} must have one entry (class) or row (multi-hot) per sample: "
                         f"expected {n} rows, got shape {lab.shape}")
    return lab


def relevance(query_labels: Any, database_labels: Any) -> np.ndarray:
    """(m, n) bool: same class (1-D labels), or at least one shared label (2-D multi-hot)."""
    ql = np.asarray(query_labels)
    dl = np.asarray(database_labels)
    if ql.ndim != dl.ndim or ql.ndim not in (1, 2):
        raise ValueError(f"query and database labels must both be 1-D classes or both 2-D multi-hot, "
                         f"got shapes {ql.shape} and {dl.shape}")
    if ql.ndim == 1:
        return ql[:, None] == dl[None, :]
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"multi-hot labels have {ql.shape[1]} and {dl.shape[1]} columns; use the same classes")
    return (ql.astype(np.float64) @ dl.T.astype(np.float64)) > 0


# =============================================================================== AP core
def _harmonic(n: int) -> np.ndarray:
    h = np.zeros(n + 1, np.float64)
    h[1:] = np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64))
    return h


def _group_contrib(s: np.ndarray, g: np.ndarray, r: np.ndarray, before: np.ndarray,
                   k: int, H: np.ndarray) -> np.ndarray:
    """Expected sum of rel_i * P@i over the part of each tie group inside the top k.

    s: items ranked before the group; g: group size (> 0); r: relevant in the group;
    before: relevant items before the group.
    """
    t = np.clip(k - s, 0, g)
    hs = H[s + t] - H[s]
    c = np.where(g > 1, (r - 1.0) / np.maximum(g - 1.0, 1.0), 0.0)
    return (r / g) * ((before + 1.0) * hs + c * (t - (s + 1.0) * hs))


def _ap_sorted(ds: np.ndarray, rs: np.ndarray, k: int, ties: str, H: np.ndarray) -> np.ndarray:
    """Per-row expected AP numerator for rows already sorted by distance (stable)."""
    m, n = rs.shape
    if ties == "index":
        new = np.ones((m, n), bool)
    else:
        new = np.empty((m, n), bool)
        new[:, 0] = True
        new[:, 1:] = ds[:, 1:] != ds[:, :-1]
    flat_new = new.ravel()
    starts = np.flatnonzero(flat_new)
    rflat = rs.ravel().astype(np.float64)
    r = np.add.reduceat(rflat, starts)
    sizes = np.diff(np.append(starts, rflat.size)).astype(np.float64)
    row = starts // n
    s = (starts - row * n).astype(np.int64)
    cum = np.cumsum(rs, axis=1, dtype=np.float64)
    excl = (cum - rs).ravel()                     # relevant strictly before each position
    before = excl[starts]
    contrib = _group_contrib(s, sizes.astype(np.int64), r, before, k, H)
    return np.bincount(row, weights=contrib, minlength=m)


def _ap_hamming_mean(h: np.ndarray, rel: np.ndarray, n_bits: int, k: int, H: np.ndarray) -> np.ndarray:
    """Tie-averaged AP numerators from integer distances by counting (no sort)."""
    m = h.shape[0]
    nb = n_bits + 1
    off = (np.arange(m, dtype=np.int64) * nb)[:, None]
    key = (h + off).ravel()
    g = np.bincount(key, minlength=m * nb).reshape(m, nb)
    r = np.bincount(key, weights=rel.ravel().astype(np.float64), minlength=m * nb).reshape(m, nb)
    s = np.cumsum(g, axis=1) - g
    before = np.cumsum(r, axis=1) - r
    mask = g > 0
    contrib = np.zeros((m, nb), np.float64)
    contrib[mask] = _group_contrib(s[mask], g[mask], r[mask], before[mask], k, H)
    return contrib.sum(axis=1)


def average_precisions(query: Any, database: Any, query_labels: Any, database_labels: Any, *,
                       metric: str = "hamming", k: Optional[int] = None, ties: str = "mean",
                       convention: str = "standard", n_bits: Optional[int] = None,
                       progress: Optional[bool] = None) -> np.ndarray:
    """AP (or AP@k) of every query, float64 (m,); NaN for a query with no relevant item
    under ``convention="standard"``.

    ``metric="hamming"``: ``query``/``database`` are packed codes (:func:`pack_codes`);
    ``n_bits`` (default 8 x bytes) only bounds the distance range. Otherwise float
    embeddings compared by ``cosine`` / ``l2`` / ``ip``. Labels: 1-D classes or 2-D
    multi-hot rows (relevant = shares a label). See the module docstring for the AP,
    ``ties`` and ``convention`` definitions and for the cost. Pure function.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if ties not in ("mean", "index"):
        raise ValueError(f"ties must be 'mean' (expected AP over random tie order) or 'index' "
                         f"(ties by database index), got {ties!r}")
    if convention not in ("standard", "deephash"):
        raise ValueError(f"convention must be 'standard' or 'deephash', got {convention!r}")
    if convention == "deephash" and ties != "index":
        raise ValueError("convention='deephash' divides by the relevant items retrieved, which has no "
                         "closed-form tie average; pass ties='index' with it")
    if metric == "hamming":
        q = _check_packed(query, "query")
        d = _check_packed(database, "database", q.shape[1])
        bits = 8 * q.shape[1] if n_bits is None else _pos_int("n_bits", n_bits)
        if bits > 8 * q.shape[1]:
            raise ValueError(f"n_bits={bits} exceeds the {8 * q.shape[1]} bits the packed codes hold")
        qw, dw = _as_words(q), _as_words(d)
        width = dw.shape[1]
    else:
        q = _check_float(query, "query")
        d = _check_float(database, "database", q.shape[1])
        width = q.shape[1]
    m, n = q.shape[0], d.shape[0]
    if n == 0:
        raise ValueError("database is empty; pass at least one database item")
    ql = _check_labels(query_labels, m, "query_labels")
    dl = _check_labels(database_labels, n, "database_labels")
    kk = n if k is None else _pos_int("k", k)
    kk = min(kk, n)
    H = _harmonic(n)
    out = np.empty(m, np.float64)
    step = max(1, _CHUNK_PAIRS // max(1, n * max(1, width // 8)))
    step = min(step, max(1, _CHUNK_PAIRS // n))
    show = (m * n >= 50_000_000) if progress is None else bool(progress)
    bar = _progress(m, f"mAP ({metric})", show)
    try:
        for s in range(0, m, step):
            rel = relevance(ql[s:s + step], dl)
            if metric == "hamming":
                dist = _hamming_block(qw[s:s + step], dw)
            else:
                dist = _float_block(q[s:s + step], d, metric)
            R = rel.sum(axis=1).astype(np.float64)
            if metric == "hamming" and ties == "mean":
                num = _ap_hamming_mean(dist, rel, bits, kk, H)
                rk = None
            else:
                order = np.argsort(dist, axis=1, kind="stable")
                ds = np.take_along_axis(dist, order, axis=1)
                rs = np.take_along_axis(rel, order, axis=1)
                num = _ap_sorted(ds, rs, kk, ties, H)
                rk = rs[:, :kk].sum(axis=1).astype(np.float64)
            if convention == "standard":
                den = np.minimum(R, float(kk))
                with np.errstate(invalid="ignore", divide="ignore"):
                    ap = np.where(R > 0, num / np.where(den > 0, den, 1.0), np.nan)
            else:
                assert rk is not None
                ap = np.where(rk > 0, num / np.where(rk > 0, rk, 1.0), 0.0)
            out[s:s + step] = ap
            if bar is not None:
                bar.update(rel.shape[0])
    finally:
        if bar is not None:
            bar.close()
    return out


def _drop_synthetic(database: Any, database_labels: Any, synthetic: Any, include: bool
                    ) -> Tuple[Any, Any, int]:
    if synthetic is None:
        return database, database_labels, 0
    mask = np.asarray(synthetic)
    n = len(database)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"database_synthetic must be a bool mask with one entry per database item "
                         f"({n}), got dtype {mask.dtype} shape {mask.shape}")
    n_syn = int(mask.sum())
    if include or n_syn == 0:
        return database, database_labels, 0
    keep = ~mask
    return np.asarray(database)[keep], np.asarray(database_labels)[keep], n_syn


def mean_average_precision(query: Any, database: Any, query_labels: Any, database_labels: Any, *,
                           metric: str = "hamming", k: Optional[int] = None, ties: str = "mean",
                           convention: str = "standard", n_bits: Optional[int] = None,
                           database_synthetic: Any = None, include_synthetic: bool = False,
                           progress: Optional[bool] = None) -> float:
    """mAP over the whole database (``k=None``) or mAP@k; see :func:`average_precisions`.

    ``database_synthetic``: bool mask marking synthetic database items; they are left out
    of the ranking unless ``include_synthetic`` (a generated sample is not a real hit).
    Under ``convention="standard"`` queries without any relevant item are left out of
    the mean; ValueError if that leaves none.
    """
    db, dl, _ = _drop_synthetic(database, database_labels, database_synthetic, include_synthetic)
    ap = average_precisions(query, db, query_labels, dl, metric=metric, k=k, ties=ties,
                            convention=convention, n_bits=n_bits, progress=progress)
    ok = ~np.isnan(ap)
    if not ok.any():
        raise ValueError("no query has a relevant database item, so mAP is undefined; check that "
                         "query and database labels use the same classes")
    return float(ap[ok].mean())


def retrieval_report(query: Any, database: Any, query_labels: Any, database_labels: Any, *,
                     metric: str = "hamming", ks: Sequence[int] = (100,), ties: str = "mean",
                     n_bits: Optional[int] = None, database_synthetic: Any = None,
                     include_synthetic: bool = False, progress: Optional[bool] = None) -> Dict[str, Any]:
    """mAP over the whole database and mAP@k for each ``k`` in ``ks``, as a JSON-able dict.

    Keys: ``map``, ``map@<k>`` (standard convention), ``map@<k>_deephash`` (the
    CalcTopMap convention, ties by index), ``metric``, ``ties``, ``n_queries``,
    ``n_database`` (after leaving synthetic items out), ``n_synthetic_excluded``,
    ``n_queries_without_relevant``. Cost: (1 + 2 len(ks)) AP passes.
    """
    db, dl, n_syn = _drop_synthetic(database, database_labels, database_synthetic, include_synthetic)
    ap = average_precisions(query, db, query_labels, dl, metric=metric, ties=ties, n_bits=n_bits,
                            progress=progress)
    ok = ~np.isnan(ap)
    if not ok.any():
        raise ValueError("no query has a relevant database item, so mAP is undefined; check the labels")
    out: Dict[str, Any] = dict(metric=metric, ties=ties, n_queries=int(ap.size), n_database=int(len(dl)),
                               n_synthetic_excluded=n_syn,
                               n_queries_without_relevant=int((~ok).sum()), map=float(ap[ok].mean()))
    for k in ks:
        apk = average_precisions(query, db, query_labels, dl, metric=metric, k=k, ties=ties,
                                 n_bits=n_bits, progress=progress)
        out[f"map@{int(k)}"] = float(np.nanmean(apk))
        apd = average_precisions(query, db, query_labels, dl, metric=metric, k=k, ties="index",
                                 convention="deephash", n_bits=n_bits, progress=progress)
        out[f"map@{int(k)}_deephash"] = float(apd.mean())
    return out


# =============================================================================== torch head
@dataclass
class HashModel:
    """A trained hashing head: embeddings -> continuous codes -> packed bits.

    Attributes: ``n_bits``, ``codes`` (class codes, (C, n_bits) +/-1), ``mean``/``std``
    (input standardisation from the training set), ``config`` (training options),
    ``trained_on`` (``n_real``, ``n_synthetic``, per-class ``real``/``synthetic``
    counts: the synthetic share of the training set is part of every result),
    ``losses`` (mean loss per epoch). ``module`` is the torch network (eval mode).

    encode / continuous / predict are O(n * model cost) in batches of 4096, run under
    ``torch.inference_mode`` and only read the model: safe from several threads.
    """

    module: Any
    n_bits: int
    codes: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    config: Dict[str, Any]
    trained_on: Dict[str, Any]
    losses: List[float] = field(default_factory=list)

    def continuous(self, embeddings: Any) -> np.ndarray:
        """Continuous codes (n, n_bits) float32 (the head's output before sign)."""
        import torch

        x = _check_float(embeddings, "embeddings", self.mean.shape[0])
        x = ((x - self.mean) / self.std).astype(np.float32)
        out = []
        with torch.inference_mode():
            for s in range(0, x.shape[0], 4096):
                out.append(self.module(torch.from_numpy(x[s:s + 4096])).numpy())
        return np.concatenate(out, axis=0) if out else np.empty((0, self.n_bits), np.float32)

    def encode(self, embeddings: Any, packed: bool = True) -> np.ndarray:
        """Hash codes: packed uint8 (n, n_bits/8) or, with ``packed=False``, int8 +/-1."""
        v = self.continuous(embeddings)
        if packed:
            return pack_codes(v)
        return np.where(v > 0, 1, -1).astype(np.int8)

    def predict(self, embeddings: Any) -> np.ndarray:
        """Class whose code has the largest cosine with the continuous code, (n,) int64."""
        v = self.continuous(embeddings).astype(np.float64)
        return np.argmax(v @ self.codes.T.astype(np.float64), axis=1).astype(np.int64)

    def save(self, path: Union[str, Path]) -> Path:
        """Write weights and metadata (torch.save, loadable with weights_only=True), atomically."""
        import io
        import torch
        from ._files import atomic_write

        doc = dict(format=_HASH_FORMAT, state=self.module.state_dict(), n_bits=self.n_bits,
                   codes=torch.from_numpy(self.codes), mean=torch.from_numpy(self.mean),
                   std=torch.from_numpy(self.std), config=dict(self.config),
                   trained_on=_plain(self.trained_on), losses=[float(v) for v in self.losses])
        buf = io.BytesIO()
        torch.save(doc, buf)
        data = buf.getvalue()
        return atomic_write(path, lambda fh: fh.write(data))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "HashModel":
        """Read a model written by :meth:`save` (no unpickling of arbitrary objects)."""
        import torch

        doc = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(doc, dict) or doc.get("format") != _HASH_FORMAT:
            raise ValueError(f"{str(path)!r} is not a socbi hash model (format {_HASH_FORMAT!r})")
        cfg = doc["config"]
        module = _build_head(int(doc["mean"].shape[0]), int(doc["n_bits"]), int(cfg["hidden"]),
                             float(cfg["dropout"]))
        module.load_state_dict(doc["state"])
        module.eval()
        return cls(module, int(doc["n_bits"]), doc["codes"].numpy(), doc["mean"].numpy(),
                   doc["std"].numpy(), cfg, doc["trained_on"], list(doc["losses"]))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _build_head(in_dim: int, n_bits: int, hidden: int, dropout: float) -> Any:
    """Linear -> BN -> ReLU (-> dropout) -> Linear -> BN (OrthoHash's code layer)."""
    from .features._deps import require_torch

    torch = require_torch()
    nn = torch.nn
    layers: List[Any] = []
    if hidden > 0:
        layers += [nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(hidden, n_bits, bias=False)]
    else:
        layers += [nn.Linear(in_dim, n_bits, bias=False)]
    layers.append(nn.BatchNorm1d(n_bits))
    return nn.Sequential(*layers)


def train_hash_head(embeddings: Any, labels: Any, n_bits: int = 64, *, synthetic: Any = None,
                    synthetic_weight: float = 1.0, n_classes: Optional[int] = None, hidden: int = 256,
                    dropout: float = 0.0, epochs: int = 60, batch_size: int = 128, lr: float = 1e-3,
                    weight_decay: float = 5e-4, scale: float = 8.0, margin: float = 0.2,
                    quant_weight: float = 0.0, standardize: bool = True, seed: int = 0,
                    threads: Optional[int] = None, progress: bool = True) -> HashModel:
    """Train an OrthoHash-style hashing head on (embeddings, labels); returns a :class:`HashModel`.

    Loss per sample: ``CE(s * (cos(v, C) - m * onehot(y)), y) + quant_weight * (1 - cos(v,
    sign v))`` with fixed class codes ``C = class_codes(n_classes, n_bits, seed)``, scale
    ``s = scale``, margin ``m = margin``. Adam, cosine learning-rate decay to 0, shuffled
    mini-batches (a final batch of one sample is dropped: batch norm needs two).
    ``synthetic`` (bool mask) marks generated training samples: their loss is weighted
    by ``synthetic_weight`` and their count is stored in ``trained_on``. Inputs are
    standardised with the training mean/std when ``standardize``.

    Deterministic for a given ``seed`` and torch thread count; the global torch RNG is
    left as it was. ``threads``: torch intra-op threads while training (restored
    afterwards); on a small shared machine 1 is often fastest for a head this size. Cost O(epochs * n * (d * hidden + hidden * n_bits + n_bits * C)).
    Not thread-safe (see the module docstring). Progress: a tqdm bar over epochs.
    """
    from .features._deps import require_torch

    torch = require_torch()
    F = torch.nn.functional
    x = _check_float(embeddings, "embeddings")
    n, dim = x.shape
    if n < 2:
        raise ValueError(f"embeddings has {n} rows; training needs at least 2 samples")
    y = np.asarray(labels)
    integral = y.dtype.kind in "iu" or (y.dtype.kind == "f" and bool(np.all(y == np.round(y))))
    if y.shape != (n,) or not integral:
        raise ValueError(f"labels must be (n,) integer classes matching embeddings ({n} rows), got "
                         f"dtype {y.dtype} shape {y.shape}")
    y = y.astype(np.int64)
    if (y < 0).any():
        raise ValueError(f"labels must be classes >= 0; got {int(y.min())} (drop unlabelled samples first)")
    c = int(y.max()) + 1 if n_classes is None else _pos_int("n_classes", n_classes)
    if y.max() >= c:
        raise ValueError(f"labels hold class {int(y.max())} but n_classes={c}; pass n_classes > every label")
    b = _pos_int("n_bits", n_bits, lo=2)
    syn = np.zeros(n, bool) if synthetic is None else np.asarray(synthetic)
    if syn.dtype != bool or syn.shape != (n,):
        raise ValueError(f"synthetic must be a bool mask with one entry per sample ({n}), got dtype "
                         f"{syn.dtype} shape {syn.shape}")
    for name, v, strict in (("lr", lr, True), ("scale", scale, True), ("synthetic_weight", synthetic_weight, False),
                            ("weight_decay", weight_decay, False), ("margin", margin, False),
                            ("quant_weight", quant_weight, False), ("dropout", dropout, False)):
        _check_number(name, v, strict)
    if not dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    epochs = _pos_int("epochs", epochs)
    batch_size = _pos_int("batch_size", batch_size, lo=2)
    hidden = _pos_int("hidden", hidden, lo=0)
    if threads is not None:
        threads = _pos_int("threads", threads)

    mean = x.mean(axis=0) if standardize else np.zeros(dim)
    std = x.std(axis=0) if standardize else np.ones(dim)
    std = np.where(std > 1e-8, std, 1.0)
    xs = torch.from_numpy(((x - mean) / std).astype(np.float32))
    yt = torch.from_numpy(y)
    wt = torch.from_numpy(np.where(syn, float(synthetic_weight), 1.0).astype(np.float32))
    codes = class_codes(c, b, seed=seed)
    ct = F.normalize(torch.from_numpy(codes), dim=1)
    rng = np.random.default_rng([seed, 11])
    losses: List[float] = []
    bar = _progress(epochs, f"hash head {b} bits", bool(progress))
    # Everything random (init, dropout) draws from a seeded fork of the global torch RNG,
    # which is restored when training ends or fails.
    old_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            module = _train_module(torch, dim, b, hidden, float(dropout), float(lr), float(weight_decay),
                                   n, xs, yt, wt, ct, c, rng, epochs, batch_size, float(scale),
                                   float(margin), float(quant_weight), losses, bar)
        finally:
            torch.set_num_threads(old_threads)
    module.eval()
    real_counts = np.bincount(y[~syn], minlength=c)
    syn_counts = np.bincount(y[syn], minlength=c)
    trained_on = dict(n_real=int((~syn).sum()), n_synthetic=int(syn.sum()),
                      real=real_counts.tolist(), synthetic=syn_counts.tolist())
    config = dict(n_bits=b, n_classes=c, hidden=hidden, dropout=float(dropout), epochs=epochs,
                  batch_size=batch_size, lr=float(lr), weight_decay=float(weight_decay), scale=float(scale),
                  margin=float(margin), quant_weight=float(quant_weight), standardize=bool(standardize),
                  synthetic_weight=float(synthetic_weight), seed=int(seed))
    return HashModel(module, b, codes, mean.astype(np.float64), std.astype(np.float64), config,
                     trained_on, losses)


def _train_module(torch: Any, dim: int, b: int, hidden: int, dropout: float, lr: float,
                  weight_decay: float, n: int, xs: Any, yt: Any, wt: Any, ct: Any, c: int,
                  rng: np.random.Generator, epochs: int, batch_size: int, scale: float, margin: float,
                  quant_weight: float, losses: List[float], bar: Any) -> Any:
    module = _build_head(dim, b, hidden, dropout)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, (n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    module.train()
    _train_loop(torch, module, opt, sched, xs, yt, wt, ct, c, rng, epochs, batch_size, scale,
                margin, quant_weight, lr, losses, bar)
    return module


def _train_loop(torch: Any, module: Any, opt: Any, sched: Any, xs: Any, yt: Any, wt: Any, ct: Any,
                c: int, rng: np.random.Generator, epochs: int, batch_size: int, scale: float,
                margin: float, quant_weight: float, lr: float, losses: List[float], bar: Any) -> None:
    F = torch.nn.functional
    n = xs.shape[0]
    try:
        for _ in range(epochs):
            perm = torch.from_numpy(rng.permutation(n))
            total, count = 0.0, 0
            for s in range(0, n, batch_size):
                idx = perm[s:s + batch_size]
                if idx.numel() < 2:
                    continue          # batch norm needs two samples
                v = module(xs[idx])
                cos = F.normalize(v, dim=1) @ ct.T
                onehot = F.one_hot(yt[idx], c).to(cos.dtype)
                loss_i = F.cross_entropy(scale * (cos - margin * onehot), yt[idx], reduction="none")
                if quant_weight > 0:
                    loss_i = loss_i + quant_weight * (1.0 - F.cosine_similarity(v, v.detach().sign(), dim=1))
                w = wt[idx]
                loss = (loss_i * w).sum() / w.sum().clamp_min(1e-12)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            losses.append(total / max(count, 1))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"training loss became {losses[-1]} at epoch {len(losses)}; lower "
                                         f"lr (now {lr}) or check the embeddings' scale")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        if bar is not None:
            bar.close()
