"""ASCMR: multimodal informativeness and density-aware budget allocation (TPAMI 2025).

Active Supervised Cross-Modal Retrieval selects image-text pairs to label by two ideas;
this module implements both on socbi's neighbour pools and score index.

**Informativeness** of a pair (:func:`informativeness`), every term scaled to [0, 1]:

* intra-modality uncertainty, per modality m: the normalised predictive entropy
  H(p_m) / log C of that modality's class probabilities, and/or, where a probabilistic
  encoder gives one, its embedding variance divided by the pool's 99th percentile and
  clipped (both given: their mean); averaged over the modalities that have one;
* inter-modality uncertainty, how much the two sides of the pair disagree: the
  Jensen-Shannon divergence of the per-modality predictions divided by log 2 (mean over
  modality pairs; ``inter="prediction"``), or (1 - cos(e_1, e_2)) / 2 for embeddings in
  one shared space (``inter="cosine"``);
* ``u = w_intra * intra + w_inter * inter``.

**Density-aware budget allocation** (:func:`density_aware_select`): choose S, |S| = n,
greedily maximising

    F(S) = sum_{i in S} u_i  -  lam * sum_{i in S} sum_{j in S, j in N_k(i)} s_ij

where N_k(i) are i's k nearest candidates (cosine; socbi.knn exact or HNSW pool) and
s_ij = max(0, cos(x_i, x_j)). The second term is the *semantic density* of the
selection: how much of each selected item's neighbourhood the selection already covers.
Greedy marginal gains are exact: picking i lowers the value of every candidate j with
j in N_k(i) or i in N_k(j) by lam * s_ij (mutual neighbours twice). Values live in a
:class:`socbi.SemiOrderedIndex`: each pick is ``top(1)``, ``erase`` and one batched
``update`` of the pick's neighbours, so the dense region around a pick drops down the
ranking and the next picks spread out. ``lam = 0`` never updates anything and returns
exactly the top-n by informativeness. Ties are broken by a seeded random permutation.

:class:`ASCMR` wraps both as a :class:`socbi.strategies.Strategy`; see its docstring
for the inputs it takes and docs/curation.md for how to run it in an active-learning
loop.

The paper's probabilistic embeddings and its exact regulariser are not public (its
released code has the uncertainty part only); the formulas above are this module's
reading of the abstract, stated so that they can be checked and changed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .knn import ExactPool, HNSWPool, NeighbourPool, _check_embeddings
from .strategies import PoolState, Strategy, _check_proba, register_strategy

__all__ = [
    "Informativeness", "informativeness", "predictive_entropy", "prediction_disagreement",
    "cosine_disagreement", "variance_uncertainty", "knn_graph", "density_aware_select",
    "Selection", "ASCMR", "mean_pairwise_distance",
]

_EXACT_MAX = 20_000  # candidates up to this many use the exact neighbour pool


# =============================================================================== terms
def _proba(p: Any, name: str, n: Optional[int] = None) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (n_items, n_classes) class probabilities, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but there are {n} items; pass one row per item")
    return _check_proba(arr, name)


def predictive_entropy(p: Any) -> np.ndarray:
    """Normalised predictive entropy H(p) / log C of each row, in [0, 1]. O(n C); pure function."""
    p = _proba(p, "probabilities")
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.clip(-(p * logp).sum(axis=1) / math.log(p.shape[1]), 0.0, 1.0)


def prediction_disagreement(probabilities: Sequence[Any]) -> np.ndarray:
    """Mean pairwise Jensen-Shannon divergence / log 2 of per-modality predictions, in [0, 1].

    ``probabilities``: two or more (n, C) arrays over the same classes. O(M^2 n C);
    pure function.
    """
    ps = [_proba(p, f"probabilities[{i}]") for i, p in enumerate(probabilities)]
    if len(ps) < 2:
        raise ValueError(f"prediction disagreement needs at least 2 modalities' probabilities, got {len(ps)}")
    for i, p in enumerate(ps[1:], 1):
        if p.shape != ps[0].shape:
            raise ValueError(f"probabilities[{i}] has shape {p.shape}, probabilities[0] {ps[0].shape}; "
                             f"every modality must predict the same classes for the same items")

    from scipy.spatial.distance import jensenshannon  # the JS *distance*: its square is the divergence

    out = np.zeros(ps[0].shape[0])
    pairs = 0
    for i in range(len(ps)):
        for j in range(i + 1, len(ps)):
            out += jensenshannon(ps[i], ps[j], base=2.0, axis=1) ** 2  # base 2: divergence / log 2
            pairs += 1
    return np.clip(out / pairs, 0.0, 1.0)


def cosine_disagreement(a: Any, b: Any) -> np.ndarray:
    """(1 - cos(a_i, b_i)) / 2 per row, in [0, 1]; a and b must share one embedding space.

    O(n d); pure function.
    """
    x = _check_embeddings(a, None, name="embeddings[0]")
    y = _check_embeddings(b, x.shape[1], name="embeddings[1]", rows=x.shape[0])
    nx = np.linalg.norm(x.astype(np.float64), axis=1)
    ny = np.linalg.norm(y.astype(np.float64), axis=1)
    if (nx == 0).any() or (ny == 0).any():
        raise ValueError("embeddings with zero norm have no cosine; drop those pairs")
    cos = np.einsum("ij,ij->i", x.astype(np.float64), y.astype(np.float64)) / (nx * ny)
    return np.clip((1.0 - cos) / 2.0, 0.0, 1.0)


def variance_uncertainty(variance: Any, quantile: float = 0.99) -> np.ndarray:
    """Embedding variance (n,) or (n, d) (mean over d) scaled by its ``quantile`` and clipped to [0, 1].

    O(n d) (a partition for the quantile); pure function.
    """
    v = np.asarray(variance, dtype=np.float64)
    if v.ndim == 2:
        v = v.mean(axis=1)
    if v.ndim != 1 or not np.isfinite(v).all() or (v < 0).any():
        raise ValueError("variance must be a finite, non-negative (n,) or (n, d) array (the "
                         "encoder's predicted variance per item)")
    if v.size == 0:
        return v
    q = float(np.quantile(v, quantile))
    return np.clip(v / q, 0.0, 1.0) if q > 0 else np.where(v > 0, 1.0, 0.0)


@dataclass
class Informativeness:
    """Per-item informativeness and its parts (all in [0, 1] before weighting).

    total = w_intra * intra + w_inter * inter; intra_by_modality is (n, M) with NaN for
    modalities that had no uncertainty source; inter is 0 when w_inter = 0.
    """

    total: np.ndarray
    intra: np.ndarray
    inter: np.ndarray
    intra_by_modality: np.ndarray
    inter_kind: str


def _check_weights(w_intra: Any, w_inter: Any, inter: str) -> None:
    """ValueError unless both weights are finite numbers >= 0 and ``inter`` is known."""
    for name, w in (("w_intra", w_intra), ("w_inter", w_inter)):
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(w)) or w < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
    if inter not in ("auto", "prediction", "cosine", "none"):
        raise ValueError(f"inter must be 'auto', 'prediction', 'cosine' or 'none', got {inter!r}")


def informativeness(probabilities: Sequence[Any] = (), *,
                    embeddings: Optional[Sequence[Any]] = None,
                    variances: Sequence[Any] = (),
                    w_intra: float = 1.0, w_inter: float = 1.0,
                    inter: str = "auto") -> Informativeness:
    """ASCMR informativeness of n pairs (see the module docstring).

    probabilities : per modality, an (n, C) array or None (a modality with no classifier).
    embeddings : optional pair (e_1, e_2) of (n, d) arrays in one shared space, for
        ``inter="cosine"``.
    variances : per modality, an (n,) / (n, d) variance array or None.
    inter : ``"prediction"`` (JS of the predictions; needs two of them), ``"cosine"``
        (needs ``embeddings``), ``"none"``, or ``"auto"`` (prediction when two
        probability arrays are given, else cosine when embeddings are, else an error
        if ``w_inter > 0``).

    Complexity O(n (M^2 C + d)). Thread safety: pure function.
    """
    _check_weights(w_intra, w_inter, inter)
    probs = [None if p is None else _proba(p, f"probabilities[{i}]") for i, p in enumerate(probabilities)]
    n_mod = max(len(probs), len(variances), 2 if embeddings is not None else 0)
    sizes = {p.shape[0] for p in probs if p is not None}
    sizes |= {np.asarray(v).shape[0] for v in variances if v is not None}
    if embeddings is not None:
        if len(embeddings) != 2:
            raise ValueError(f"embeddings must be a pair (e_1, e_2), got {len(embeddings)} arrays")
        sizes |= {np.asarray(e).shape[0] for e in embeddings}
    if len(sizes) > 1:
        raise ValueError(f"inputs disagree on the number of items: {sorted(sizes)}; pass one row per "
                         f"pair in every array")
    if not sizes:
        raise ValueError("informativeness needs at least one input: probabilities, variances or "
                         "embeddings")
    n = sizes.pop()
    by_mod = np.full((n, max(n_mod, 1)), np.nan)
    for m in range(n_mod):
        parts = []
        if m < len(probs) and probs[m] is not None:
            parts.append(predictive_entropy(probs[m]))
        if m < len(variances) and variances[m] is not None:
            parts.append(variance_uncertainty(variances[m]))
        if parts:
            by_mod[:, m] = np.mean(parts, axis=0)
    has_intra = ~np.isnan(by_mod).all(axis=0)
    if w_intra > 0 and not has_intra.any():
        raise ValueError("w_intra > 0 but no modality has probabilities or variances; pass "
                         "probabilities=[p_image, p_text] (or variances), or set w_intra=0")
    intra = by_mod[:, has_intra].mean(axis=1) if has_intra.any() else np.zeros(n)
    given = [p for p in probs if p is not None]
    kind = inter
    if kind == "auto":
        kind = "prediction" if len(given) >= 2 else ("cosine" if embeddings is not None else "none")
    if kind == "none" and w_inter > 0 and inter == "auto":
        raise ValueError("w_inter > 0 but there is nothing to compare across modalities: pass two "
                         "modalities' probabilities, or embeddings=(e_1, e_2) in one space, or set "
                         "w_inter=0")
    if kind == "prediction":
        inter_v = prediction_disagreement(given)
    elif kind == "cosine":
        if embeddings is None:
            raise ValueError("inter='cosine' needs embeddings=(e_1, e_2) in one shared space")
        inter_v = cosine_disagreement(embeddings[0], embeddings[1])
    else:
        inter_v = np.zeros(n)
    total = float(w_intra) * intra + float(w_inter) * inter_v
    return Informativeness(total=total, intra=intra, inter=inter_v, intra_by_modality=by_mod,
                           inter_kind=kind)


# =============================================================================== density
def knn_graph(embeddings: Any, k: int, *, backend: str = "auto", pool: Optional[NeighbourPool] = None,
              ids: Optional[np.ndarray] = None, num_threads: Optional[int] = None, seed: int = 0
              ) -> Tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows (cosine) and their similarities max(0, cos).

    Returns ``(nbr (m, k) int64 row numbers, -1 where there are fewer than k others;
    sim (m, k) float64)``. Neighbours come from a socbi.knn pool: ``pool`` (whose sample
    ids ``ids[r]`` are these rows; results outside ``ids`` are ignored) or a fresh one
    over the rows (exact up to 20,000 rows with ``backend="auto"``, else HNSW).
    Similarities are recomputed exactly from the embeddings.

    Complexity: exact O(m^2 d); HNSW O(m log m (M ef d)). Thread safety: builds its own
    pool (a given ``pool`` is only queried).
    """
    x = _check_embeddings(embeddings, None, name="embeddings")
    m = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    if (norms == 0).any():
        raise ValueError(f"embeddings rows {np.flatnonzero(norms == 0)[:5].tolist()} have zero norm; "
                         f"the density term uses cosine similarity, so drop them")
    xn = (x / norms[:, None]).astype(np.float32)
    k = int(k)
    nbr = np.full((m, k), -1, np.int64)
    keff = min(k, m - 1)
    if keff <= 0:
        return nbr, np.zeros((m, k))
    if pool is not None:
        if ids is None or np.asarray(ids).shape != (m,):
            raise ValueError("pool was given without ids (one sample id per embeddings row)")
        ids = np.asarray(ids, np.int64)
        if pool.space != "cosine" or not np.array_equal(pool.unlabelled_ids(), np.sort(ids)):
            raise ValueError("pool must be a cosine pool whose unlabelled samples are exactly ids; "
                             "otherwise omit pool and a fresh one is built over the rows")
        local = np.full(pool.capacity, -1, np.int64)
        local[ids] = np.arange(m)
        got, _ = pool.query(xn, keff + 1)
        cand = np.where(got >= 0, local[np.clip(got, 0, pool.capacity - 1)], -1)
    else:
        if backend not in ("auto", "exact", "hnsw"):
            raise ValueError(f"backend must be 'auto', 'exact' or 'hnsw', got {backend!r}")
        use_exact = backend == "exact" or (backend == "auto" and m <= _EXACT_MAX)
        tmp: NeighbourPool
        if use_exact:
            tmp = ExactPool(x.shape[1], m, "cosine", num_threads=num_threads, progress=False)
        else:
            tmp = HNSWPool(x.shape[1], m, "cosine", M=16, ef_construction=100, ef=max(64, 2 * k),
                           seed=seed, num_threads=num_threads, progress=False)
        tmp.add(np.arange(m), xn)
        cand, _ = tmp.query(xn, keff + 1)
    self_col = cand == np.arange(m)[:, None]
    cand = np.where(self_col, -1, cand)
    # keep the first keff valid entries of each row (nearest first)
    valid = cand >= 0
    order = np.argsort(~valid, axis=1, kind="stable")
    cand = np.take_along_axis(cand, order, axis=1)[:, :keff]
    nbr[:, :cand.shape[1]] = cand
    ok = nbr >= 0
    sim = np.zeros((m, k))
    rows = np.repeat(np.arange(m), k)[ok.ravel()]
    cols = nbr[ok]
    sim[ok] = np.maximum(0.0, np.einsum("ij,ij->i", xn[rows].astype(np.float64),
                                        xn[cols].astype(np.float64)))
    return nbr, sim


@dataclass
class Selection:
    """Result of :func:`density_aware_select`: picks (row numbers, best first) and diagnostics.

    marginal : each pick's value when picked (informativeness minus accumulated penalty).
    objective : F(S) = sum of the picks' informativeness - lam * semantic density of S.
    density : the semantic-density term of S (sum over picks of the similarities to
        selected neighbours).
    """

    picks: np.ndarray
    marginal: np.ndarray
    objective: float
    density: float


def _index_factory(index_factory: Optional[Callable[..., Any]]) -> Callable[..., Any]:
    if index_factory is not None:
        return index_factory
    from .scoring import default_index_factory
    return default_index_factory()


def density_aware_select(values: Any, embeddings: Any, n: int, *, lam: float = 0.5, k: int = 10,
                         seed: Optional[int] = 0, neighbours: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                         backend: str = "auto", index_factory: Optional[Callable[..., Any]] = None,
                         num_threads: Optional[int] = None) -> Selection:
    """Greedy density-aware budget allocation over m candidates (module docstring).

    values : (m,) informativeness u; embeddings : (m, d) candidate embeddings (only used
    for the k-NN graph unless ``neighbours=(nbr, sim)`` from :func:`knn_graph` is given).
    ``lam = 0`` returns the top-n of ``values`` (ties in seeded random order).

    Complexity: the k-NN graph (see :func:`knn_graph`) plus n x (``top(1)`` +
    ``erase`` + an update of up to 2k + reverse-degree neighbours) on the score index,
    O(n (B + k_rev log #nodes)) for node size B. Thread safety: pure function (its own
    index).
    """
    u = np.asarray(values, dtype=np.float64)
    if u.ndim != 1 or not np.isfinite(u).all():
        raise ValueError(f"values must be a finite 1-D array (one informativeness per candidate), "
                         f"got shape {u.shape}")
    m = u.size
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= m:
        raise ValueError(f"n must be an integer in [0, {m}] (the number of candidates), got {n!r}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(lam)) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0 (0 = plain top-n), got {lam!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    lam = float(lam)
    n = int(n)
    if neighbours is None:
        x = _check_embeddings(embeddings, None, name="embeddings", rows=m)
        nbr, sim = knn_graph(x, k, backend=backend, num_threads=num_threads, seed=seed or 0) \
            if lam > 0 and m > 1 else (np.full((m, 1), -1, np.int64), np.zeros((m, 1)))
    else:
        nbr, sim = (np.asarray(a) for a in neighbours)
        if nbr.shape != sim.shape or nbr.ndim != 2 or nbr.shape[0] != m:
            raise ValueError(f"neighbours must be (nbr, sim) arrays of shape (m={m}, k), got "
                             f"{nbr.shape} and {sim.shape}")
        if ((nbr < -1) | (nbr >= m)).any():
            raise ValueError(f"neighbours hold row numbers outside [-1, {m}); pass knn_graph's output "
                             f"for these candidates")
        nbr = nbr.astype(np.int64)
        sim = sim.astype(np.float64)
    if n == 0:
        return Selection(np.empty(0, np.int64), np.empty(0), 0.0, 0.0)
    # Edges in both directions: picking i lowers j by lam * s_ij for j in N(i) and for
    # every j with i in N(j). CSR by source row.
    ok = nbr >= 0
    src = np.repeat(np.arange(m), nbr.shape[1])[ok.ravel()]
    dst = nbr[ok]
    w = sim[ok]
    s_all = np.concatenate([src, dst])
    d_all = np.concatenate([dst, src])
    w_all = np.concatenate([w, w])
    order = np.argsort(s_all, kind="stable")
    d_all, w_all = d_all[order], w_all[order]
    start = np.searchsorted(s_all[order], np.arange(m + 1))

    rng = np.random.default_rng(seed)
    perm = rng.permutation(m).astype(np.int64)   # index id of each row (seeded tie-break)
    inv = np.empty(m, np.int64)
    inv[perm] = np.arange(m)
    index = _index_factory(index_factory)(m)
    index.insert(perm, u)
    picked = np.zeros(m, bool)
    picks = np.empty(n, np.int64)
    marginal = np.empty(n)
    density = 0.0
    for t in range(n):
        ids, scores = index.top(1)
        r = int(inv[int(ids[0])])
        picks[t] = r
        marginal[t] = float(scores[0])
        picked[r] = True
        index.erase(np.array([perm[r]]))
        if lam > 0.0:
            a, b = start[r], start[r + 1]
            d, ww = d_all[a:b], w_all[a:b]
            density += float(ww[picked[d]].sum())  # pairs closed by this pick
            live = ~picked[d]
            if live.any():
                index.update(perm[d[live]], -lam * ww[live])
    objective = float(u[picks].sum() - lam * density)
    return Selection(picks=picks, marginal=marginal, objective=objective, density=density)


def mean_pairwise_distance(embeddings: Any, metric: str = "cosine") -> float:
    """Mean distance over all pairs of rows (cosine 1 - cos, or Euclidean). O(m^2 d).

    A diversity measure for a selection; NaN for fewer than 2 rows. Pure function.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {x.shape}")
    m = x.shape[0]
    if m < 2:
        return float("nan")
    if metric == "cosine":
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        g = xn @ xn.T
        return float((m * m - g.sum()) / (m * (m - 1)))  # diagonal contributes 1 - 1 = 0
    if metric == "l2":
        sq = (x * x).sum(axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
        return float(np.sqrt(d2).sum() / (m * (m - 1)))
    raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")


# =============================================================================== strategy
ProbaSource = Union[np.ndarray, Callable[[np.ndarray], Any]]


class ASCMR(Strategy):
    """ASCMR as a socbi selection strategy: informativeness + density-aware allocation.

    Modality 0 is what the :class:`~socbi.strategies.PoolState` holds: its class
    probabilities (``probabilities`` or ``model``) and its ``embeddings`` (which also
    define the density graph). Further modalities come from the constructor:

    extra_probabilities : per extra modality, an (n_samples, C) array or a callable
        ``ids -> (len(ids), C)`` (e.g. a text-side classifier you refit each round).
    second_embeddings : (n_samples, d) embeddings of the other side of each pair in the
        *same space* as ``state.embeddings`` (e.g. CLIP image/text), for the cosine
        inter-modality term.
    variances : per modality (0 first), an (n_samples,) variance array or None.
    lam, k : density weight and neighbours of the density term (lam = 0: plain top-n).
    w_intra, w_inter, inter : see :func:`informativeness`.

    Single-view data (only the state's own probabilities, no second modality): with the
    defaults (``inter="auto"``) the inter-modality term has nothing to compare, so it is
    switched off with a one-time ``UserWarning`` and ``single_view`` is set; the
    strategy is then normalised entropy with the density-aware allocation. Pass
    ``w_inter=0`` to ask for that without the warning.

    ``select(state, n, seed)`` computes u on the unlabelled candidates, builds their
    k-NN graph (the state's pool when it covers exactly the candidates, else a fresh
    exact / HNSW pool) and runs :func:`density_aware_select`.

    Complexity per call with m candidates: model/probability lookups O(m C) + k-NN graph
    (exact O(m^2 d) up to 20,000 candidates, else HNSW) + n greedy steps on the score
    index. Thread safety: keeps no state between calls; the inputs are only read.
    """

    name = "ascmr"

    def __init__(self, lam: float = 0.5, k: int = 10, *, w_intra: float = 1.0, w_inter: float = 1.0,
                 inter: str = "auto", extra_probabilities: Sequence[ProbaSource] = (),
                 second_embeddings: Any = None, variances: Sequence[Any] = (),
                 backend: str = "auto", index_factory: Optional[Callable[..., Any]] = None) -> None:
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(lam)) or lam < 0:
            raise ValueError(f"lam must be a finite number >= 0 (0 = plain top-n), got {lam!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if backend not in ("auto", "exact", "hnsw"):
            raise ValueError(f"backend must be 'auto', 'exact' or 'hnsw', got {backend!r}")
        for i, src in enumerate(extra_probabilities):
            if not callable(src) and np.asarray(src).ndim != 2:
                raise ValueError(f"extra_probabilities[{i}] must be an (n_samples, C) array or a "
                                 f"callable ids -> probabilities")
        self.lam = float(lam)
        self.k = int(k)
        self.w_intra = w_intra
        self.w_inter = w_inter
        self.inter = inter
        self.extra_probabilities = list(extra_probabilities)
        self.second_embeddings = None if second_embeddings is None else \
            _check_embeddings(second_embeddings, None, name="second_embeddings")
        self.variances = list(variances)
        self.backend = backend
        self.index_factory = index_factory
        self.single_view = False  # set when a call fell back to the intra term (one modality)
        _check_weights(w_intra, w_inter, inter)

    def _extra(self, i: int, src: ProbaSource, ids: np.ndarray, n_samples: int) -> np.ndarray:
        if callable(src):
            p = src(ids.copy())
            return _proba(p, f"extra_probabilities[{i}](ids)", ids.size)
        arr = np.asarray(src)
        if arr.shape[0] != n_samples:
            raise ValueError(f"extra_probabilities[{i}] has {arr.shape[0]} rows but the pool has "
                             f"{n_samples} samples; pass one row per sample")
        return _proba(arr[ids], f"extra_probabilities[{i}]")

    def informativeness(self, state: PoolState, ids: np.ndarray) -> Informativeness:
        """u (and its parts) for sample ids ``ids`` of ``state``. O(len(ids) (C + d))."""
        probs: List[Optional[np.ndarray]] = []
        if state.probabilities is not None or state.model is not None:
            probs.append(state.predict_proba(ids))
        else:
            probs.append(None)
        probs += [self._extra(i, s, ids, state.n_samples) for i, s in enumerate(self.extra_probabilities)]
        emb = None
        if self.second_embeddings is not None:
            if state.embeddings is None:
                raise ValueError("second_embeddings needs PoolState.embeddings (the first side of each pair)")
            if self.second_embeddings.shape[0] != state.n_samples:
                raise ValueError(f"second_embeddings has {self.second_embeddings.shape[0]} rows but the "
                                 f"pool has {state.n_samples} samples")
            emb = (state.embeddings[ids], self.second_embeddings[ids])
        var: List[Optional[np.ndarray]] = []
        for i, v in enumerate(self.variances):
            if v is None:
                var.append(None)
                continue
            v = np.asarray(v)
            if v.shape[0] != state.n_samples:
                raise ValueError(f"variances[{i}] has {v.shape[0]} rows but the pool has "
                                 f"{state.n_samples} samples")
            var.append(v[ids])
        if all(p is None for p in probs) and emb is None and all(v is None for v in var):
            raise ValueError("ASCMR has nothing to measure informativeness with: set "
                             "PoolState.probabilities or PoolState.model (modality 0), or pass "
                             "extra_probabilities / second_embeddings / variances")
        w_inter = self.w_inter
        if self.inter == "auto" and w_inter > 0 and emb is None \
                and sum(p is not None for p in probs) < 2:
            # Single-view data: there is no second modality to disagree with. Fall back to
            # the intra-modality term (normalised entropy) with the density-aware allocation,
            # and say so once per strategy object.
            w_inter = 0.0
            if not self.single_view:
                self.single_view = True
                warnings.warn("ASCMR on single-view data (one modality, no extra_probabilities or "
                              "second_embeddings): the inter-modality term is off, so this is "
                              "entropy with density-aware allocation", UserWarning, stacklevel=4)
        return informativeness(probs, embeddings=emb, variances=var, w_intra=self.w_intra,
                               w_inter=w_inter, inter=self.inter)

    def _select_among(self, state: PoolState, candidates: np.ndarray, n: int,
                      rng: np.random.Generator) -> np.ndarray:
        info = self.informativeness(state, candidates)
        if self.lam > 0 and state.embeddings is None:
            raise ValueError("ASCMR with lam > 0 needs PoolState.embeddings for the density term "
                             "(or pass lam=0 for plain top-n informativeness)")
        seed = int(rng.integers(0, 2**31 - 1))
        neighbours = None
        if self.lam > 0 and candidates.size > 1:
            x = state.embeddings[candidates]
            pool = state.pool if state.pool is not None else \
                (getattr(state.scorer, "pool", None) if state.scorer is not None else None)
            if pool is not None and pool.space == "cosine" and len(pool) == candidates.size \
                    and np.array_equal(pool.unlabelled_ids(), candidates):
                neighbours = knn_graph(x, self.k, pool=pool, ids=candidates)
            else:
                neighbours = knn_graph(x, self.k, backend=self.backend, seed=seed)
        sel = density_aware_select(info.total, None, n, lam=self.lam, k=self.k, seed=seed,
                                   neighbours=neighbours if neighbours is not None else
                                   (np.full((candidates.size, 1), -1, np.int64),
                                    np.zeros((candidates.size, 1))),
                                   index_factory=self.index_factory)
        return candidates[sel.picks]

    def __repr__(self) -> str:
        return (f"ASCMR(lam={self.lam:g}, k={self.k}, w_intra={self.w_intra:g}, w_inter={self.w_inter:g}, "
                f"extra_modalities={len(self.extra_probabilities)}, "
                f"second_embeddings={self.second_embeddings is not None})")


register_strategy("ascmr", ASCMR)
