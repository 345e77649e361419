"""Selection strategies: which unlabelled samples to label next.

One interface: a :class:`PoolState` (labelled mask, embeddings, model outputs, the
So-CBI scorer, a neighbour pool) and a budget ``n`` go in; ``n`` distinct unlabelled ids
come out, best first, the same ids for the same ``seed``::

    state = PoolState.from_scorer(scorer, probabilities=model.predict_proba(X))
    ids = make_strategy("lc_socbi").select(state, 20, seed=0)

Strategies (``make_strategy`` names in brackets):

* random [``random``];
* least confidence [``least_confidence``, ``lc``]: largest ``1 - max_c p_c``;
* margin [``margin``]: smallest ``p_(1) - p_(2)``;
* entropy [``entropy``]: largest ``-sum_c p_c log p_c``;
* K-Center greedy [``kcenter``] (Sener & Savarese 2018): repeatedly take the unlabelled
  sample farthest (L2, or cosine) from the labelled set and the samples taken so far;
* So-CBI [``socbi``]: the ``n`` smallest boundary counts (``largest=True`` for the other end);
* LC-So-CBI [``lc_socbi``] and KCenter-So-CBI [``kcenter_socbi``]: So-CBI as a
  *prefilter* -- see :class:`SoCBIPrefilter`;
* SEALS [``seals``] (Coleman et al. 2022, as in small-text): the base strategy (margin)
  restricted to the union of the labelled samples' K nearest unlabelled neighbours.

Uncertainty strategies take class probabilities as an (n_samples, C) array, or any
sklearn-style model with ``predict_proba``, or a torch model (any callable) returning
logits; they only evaluate the model on the candidates they need.

Ties are broken by a seeded random permutation (never silently by id). Thread safety:
strategies keep no shared state except :class:`KCenterGreedy`'s min-distance cache,
so use one KCenterGreedy object per thread; states are read, never modified.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .knn import NeighbourPool, _check_embeddings, _check_ids
from .storage import RowsView, take_rows

__all__ = [
    "PoolState", "Strategy", "RandomSampling", "UncertaintySampling", "LeastConfidence",
    "MarginSampling", "EntropySampling", "KCenterGreedy", "SoCBI", "SoCBIPrefilter", "SEALS",
    "NeighbourhoodDiverse", "DEFAULT_STRATEGY",
    "STRATEGIES", "make_strategy", "select",
]

_PROBA_CHUNK = 65536

#: The recommended strategy: the default of ActiveLearner, ``socbi select`` and ``socbi demo``
#: (issue 15: margin, no two picks of a batch from one neighbourhood, and a share of the
#: batch equal to the uncovered share of the pool spent on uncovered samples; docs/scoring.md).
DEFAULT_STRATEGY = "margin_div_cover"


# =============================================================================== state
@dataclass
class PoolState:
    """What a strategy may look at. Only the fields a strategy needs must be set.

    labelled : (n,) bool mask; taken from ``scorer`` when omitted -- then lazily: the
        state keeps the scorer's labelled ids (O(|L|)) and builds the n-long mask only
        when a strategy reads ``labelled`` or ``unlabelled_ids()`` (So-CBI alone never does).
    embeddings : (n, d) finite array (K-Center, SEALS without a scorer), or a
        :class:`socbi.storage.RowsView` (rows read by id, validated where they were
        loaded: not checked again here).
    features : model input rows (n, ...); defaults to ``embeddings``.
    probabilities : (n, C) class probabilities, rows on the simplex. float32 and float64
        C-contiguous arrays are used in place (anything else is converted to float64).
        Rows are checked (finite, in [0, 1], summing to 1) where they are read -- by the
        selection pass or :meth:`predict_proba` -- not at construction, so a bad row raises
        ValueError from ``select``.
    model : sklearn-style (``predict_proba``) or a torch model / callable returning logits
        (put torch models in eval mode yourself; the strategy only runs them under
        ``torch.inference_mode``).
    scorer : a :class:`socbi.scoring.BoundaryScorer` (So-CBI strategies, SEALS).
    pool : a :class:`socbi.knn.NeighbourPool` over the unlabelled samples (SEALS without
        a scorer).

    Validation is O(n * d) at construction (an embeddings array; a RowsView is not
    re-checked); nothing is copied except the mask.
    """

    labelled: Any = None
    embeddings: Any = None
    features: Any = None
    probabilities: Any = None
    model: Any = None
    scorer: Any = None
    pool: Optional[NeighbourPool] = None
    n_samples: int = field(init=False, default=0)
    _n_unlabelled: Optional[int] = field(init=False, default=None, repr=False)
    _lab_ids: Optional[np.ndarray] = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        n: Optional[int] = None
        if self.scorer is not None:
            n = int(self.scorer.n_samples)
        if isinstance(self.embeddings, RowsView):
            n = self._same_n(n, len(self.embeddings), "embeddings")
        elif self.embeddings is not None:
            self.embeddings = _check_embeddings(self.embeddings, None, name="embeddings")
            n = self._same_n(n, self.embeddings.shape[0], "embeddings")
        if self.probabilities is not None:
            p = self.probabilities
            if not (isinstance(p, np.ndarray) and p.dtype in (np.float32, np.float64)):
                p = np.asarray(p, dtype=np.float64)
            if p.ndim != 2:
                raise ValueError(f"probabilities must be (n_samples, n_classes), got shape {p.shape}")
            if p.shape[1] < 2:
                raise ValueError(f"probabilities must have at least 2 class columns, got shape {p.shape}")
            n = self._same_n(n, p.shape[0], "probabilities")
            # Kept as given (float32 or float64, read in place); the rows are checked where
            # they are read: in the fused selection pass, or in predict_proba for a subset.
            self.probabilities = np.ascontiguousarray(p)
        if self.features is not None:
            if not hasattr(self.features, "__len__"):
                raise ValueError(f"features must be an array of model inputs, one row per sample, got "
                                 f"{type(self.features).__name__}; pass an (n, ...) array")
            n = self._same_n(n, len(self.features), "features")
        if self.labelled is None:
            if self.scorer is not None and self.pool is None:
                # lazy: the scorer's labelled ids now, the n-long mask only when read
                self._lab_ids = np.asarray(self.scorer.labelled_ids(), dtype=np.int64)
                self.n_samples = int(n)  # type: ignore[arg-type]
                return
            if self.scorer is not None:
                self.labelled = np.array(self.scorer.labelled_mask, dtype=bool)
            elif self.pool is not None:
                self.labelled = np.asarray(self.pool.state) != 1
            elif n is not None:
                raise ValueError("labelled is required (a bool mask of length n_samples, or ids) "
                                 "when no scorer is given")
        if self.labelled is None:
            raise ValueError("PoolState needs at least labelled plus the data a strategy uses")
        lab = np.asarray(self.labelled)
        if lab.dtype == bool:
            if lab.ndim != 1:
                raise ValueError(f"labelled mask must be 1-D, got shape {lab.shape}")
            n = self._same_n(n, lab.shape[0], "labelled")
            lab = lab.copy()
        else:
            if n is None:
                raise ValueError("labelled was given as ids, so n_samples is unknown; pass a bool "
                                 "mask or the embeddings/probabilities too")
            ids = _check_ids(lab, n, name="labelled")
            lab = np.zeros(n, dtype=bool)
            lab[ids] = True
        self.labelled = lab
        self.n_samples = int(n)
        if self.scorer is not None and not np.array_equal(self.scorer.labelled_mask, lab):
            diff = np.flatnonzero(np.asarray(self.scorer.labelled_mask) != lab)
            raise ValueError(f"scorer and labelled disagree on ids {diff[:5].tolist()}; call "
                             f"scorer.label(new_ids) after each round so both hold the same set")
        if self.pool is not None:
            if self.pool.capacity != n:
                raise ValueError(f"pool has capacity {self.pool.capacity}, expected n_samples={n}")
            unl_pool = np.asarray(self.pool.state) == 1
            if not np.array_equal(unl_pool, ~lab):
                diff = np.flatnonzero(unl_pool != ~lab)
                raise ValueError(f"pool and labelled disagree on ids {diff[:5].tolist()}; mark "
                                 f"labelled samples with pool.mark_labelled")

    @staticmethod
    def _same_n(n: Optional[int], m: int, name: str) -> int:
        if n is not None and m != n:
            raise ValueError(f"{name} has {m} rows but the state has {n} samples; pass one row "
                             f"per sample id")
        return m

    @classmethod
    def from_scorer(cls, scorer: Any, **kwargs: Any) -> "PoolState":
        """A state whose labelled set, embeddings and pool come from ``scorer``."""
        kwargs.setdefault("embeddings", scorer.embeddings)
        return cls(scorer=scorer, **kwargs)

    def n_unlabelled(self) -> int:
        """Number of unlabelled samples. O(n) once, then cached (the mask is the state's own
        copy); O(1) for a lazy state."""
        if self._n_unlabelled is None:
            if self._lab_ids is not None:
                self._n_unlabelled = self.n_samples - int(self._lab_ids.size)
            else:
                self._n_unlabelled = int(self.labelled.size - np.count_nonzero(self.labelled))
        return self._n_unlabelled

    def unlabelled_ids(self) -> np.ndarray:
        """Ascending unlabelled ids. O(n)."""
        return np.flatnonzero(~self.labelled).astype(np.int64)

    def labelled_ids(self) -> np.ndarray:
        """Ascending labelled ids. O(|L|) for a lazy state, else O(n)."""
        if self._lab_ids is not None:
            return self._lab_ids.copy()
        return np.flatnonzero(self.labelled).astype(np.int64)

    def is_labelled(self, ids: np.ndarray) -> np.ndarray:
        """Bool per id. O(len(ids) log |L|) for a lazy state (no mask built), else O(len(ids))."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._lab_ids is not None and self.__dict__.get("_mask") is None:
            lab = self._lab_ids
            if lab.size == 0:
                return np.zeros(ids.shape, bool)
            return lab[np.minimum(np.searchsorted(lab, ids), lab.size - 1)] == ids
        return self.labelled[ids]

    def predict_proba(self, ids: np.ndarray) -> np.ndarray:
        """Class probabilities (len(ids), C) float64 for ``ids``, from whichever source is set.

        O(len(ids) * model cost); the model runs in chunks of 65,536 rows.
        """
        if self.probabilities is not None:
            return _check_proba(self.probabilities[ids].astype(np.float64, copy=False), "probabilities", ids)
        if self.model is None:
            raise ValueError("this strategy needs class probabilities: set PoolState.probabilities "
                             "(n_samples x n_classes) or PoolState.model (predict_proba or logits)")
        x = self.features if self.features is not None else self.embeddings
        if x is None:
            raise ValueError("PoolState.model is set but there are no inputs for it: set "
                             "features (or embeddings)")
        out = []
        for s in range(0, ids.size, _PROBA_CHUNK):
            chunk = ids[s:s + _PROBA_CHUNK]
            xb = take_rows(x, chunk)
            if hasattr(self.model, "predict_proba"):
                p = np.asarray(self.model.predict_proba(xb), dtype=np.float64)
                name = f"{type(self.model).__name__}.predict_proba"
            else:
                p = _softmax(_call_logits(self.model, xb))
                name = f"softmax of {type(self.model).__name__} logits"
            if p.ndim != 2 or p.shape[0] != chunk.size:
                raise ValueError(f"{name} returned shape {p.shape}, expected ({chunk.size}, n_classes)")
            out.append(_check_proba(p, name))
        return np.concatenate(out, axis=0) if out else np.empty((0, 0))


def _lazy_labelled(self: PoolState) -> Any:
    """The (n,) bool mask; for a lazy state (labelled taken from the scorer) built from the
    labelled ids on first read. O(n) then."""
    mask = self.__dict__.get("_mask")
    if mask is None and self.__dict__.get("_lab_ids") is not None:
        mask = np.zeros(self.n_samples, dtype=bool)
        mask[self._lab_ids] = True
        self.__dict__["_mask"] = mask
    return mask


def _set_labelled(self: PoolState, value: Any) -> None:
    self.__dict__["_mask"] = value


# ``labelled`` is a dataclass field (the constructor argument) read through this property,
# so a state built from a scorer allocates its n-long mask only if a strategy reads it.
PoolState.labelled = property(_lazy_labelled, _set_labelled)  # type: ignore[assignment]


def _call_logits(model: Any, xb: Any) -> np.ndarray:
    if not callable(model):
        raise ValueError(f"model must have predict_proba or be callable returning logits, got "
                         f"{type(model).__name__}")
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and isinstance(model, torch.nn.Module):
        params = list(model.parameters())
        device = params[0].device if params else torch.device("cpu")
        dtype = params[0].dtype if params else torch.float32
        inp = torch.as_tensor(np.asarray(xb)).to(device=device, dtype=dtype)
        with torch.inference_mode():
            out = model(inp)
    else:
        out = model(xb)
    if torch is not None and isinstance(out, torch.Tensor):
        out = out.detach().to("cpu", torch.float64).numpy()
    logits = np.asarray(out, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"model returned logits of shape {logits.shape}; expected (batch, n_classes)")
    if not np.isfinite(logits).all():
        raise ValueError("model returned NaN or infinite logits; check the model and its inputs")
    return logits


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _proba_error(name: str, kind: int, rows: Any, value: Any) -> ValueError:
    """The ValueError for bad probability rows (``rows``: sample ids), one wording for the
    numpy check and the fused C++ pass. kind: 1 NaN/inf, 2 outside [0, 1], 3 sum != 1."""
    rows = [int(r) for r in np.atleast_1d(rows)[:5]]
    if kind == 1:
        return ValueError(f"{name} has NaN or infinite values in rows {rows}; pass finite class "
                          f"probabilities (repair or drop those rows)")
    if kind == 2:
        return ValueError(f"{name} has values outside [0, 1] (row {rows[0]}: {float(value):.3g}); these "
                          f"look like logits: apply softmax, or pass the model instead")
    sums = [round(float(v), 4) for v in np.atleast_1d(value)[:3]]
    return ValueError(f"{name} rows {rows} sum to {sums}, not 1; normalise each row")


def _check_proba(p: np.ndarray, name: str, ids: Optional[np.ndarray] = None) -> np.ndarray:
    """``p`` if every row is finite, in [0, 1] and sums to 1 (errors name ``ids[row]``)."""
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 class columns, got shape {p.shape}")
    at = (lambda r: r) if ids is None else (lambda r: ids[r])
    if not np.isfinite(p).all():
        raise _proba_error(name, 1, at(np.flatnonzero(~np.isfinite(p).all(axis=1))), None)
    lo, hi = p.min(axis=1), p.max(axis=1)
    bad = (lo < -1e-6) | (hi > 1 + 1e-6)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise _proba_error(name, 2, at(np.array([r])), lo[r] if lo[r] < -1e-6 else hi[r])
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > 1e-3
    if bad.any():
        raise _proba_error(name, 3, at(np.flatnonzero(bad)), sums[bad])
    return p


# =============================================================================== helpers
def _check_budget(n: Any, available: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    n = int(n)
    if available == 0 and n > 0:
        raise ValueError("the unlabelled pool is empty: every sample is labelled; nothing to select")
    if n > available:
        raise ValueError(f"n={n} exceeds the {available} unlabelled samples; ask for at most {available}")
    return n


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _tie_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """Seeded tie-break key of each id: splitmix64(seed * golden + id), the same function as
    ``socbi::select::tie_key`` in C++, so numpy and the fused pass break ties alike. O(len)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) * _GOLDEN + ids.astype(np.uint64) + np.uint64(0x632BE59BD9B4E5AD)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63 - 1))


def _top_n(scores: np.ndarray, ids: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The ``n`` ids with the largest scores, best first.

    Ties are broken only where they matter: among the candidates tied at the cut, by a
    seeded hash of the id (and the output order of equal scores by the same hash).
    O(m) for the partition plus O(t + n log n) for t candidates tied at the cut; no copy
    of ``scores``.
    """
    m = scores.size
    if n == 0 or m == 0:
        return np.empty(0, np.int64)
    seed = _draw_seed(rng)
    if n < m:
        part = np.argpartition(scores, m - n)        # ascending: the best n at the tail
        top = part[m - n:]
        cut = scores[part[m - n]]
        above = top[scores[top] > cut]
        tied = np.flatnonzero(scores == cut)
        need = n - above.size
        if tied.size > need:
            tied = tied[np.argsort(_tie_keys(ids[tied], seed), kind="stable")[:need]]
        pos = np.concatenate([above, tied])
    else:
        pos = np.arange(m)
    order = np.lexsort((_tie_keys(ids[pos], seed), -scores[pos]))
    return ids[pos[order]].astype(np.int64)


def _progress(iterable, total: int, desc: str, enabled: bool):
    from ._progress import progress  # socbi's one progress policy

    return progress(iterable, total=total, desc=desc, enabled=enabled)


def _seed_rng(seed: Optional[int]) -> np.random.Generator:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return np.random.default_rng(seed)


# =============================================================================== base
class Strategy:
    """Base class: ``select(state, n, seed)`` validates, then ``_select_among`` picks.

    Subclasses implement ``_select_among(state, candidates, n, rng)``: choose ``n`` ids
    among ``candidates`` (ascending unlabelled ids, ``n <= len(candidates)``), best first.
    Composite strategies (So-CBI prefilter, SEALS) call it with a restricted candidate set.
    """

    name = "strategy"

    def select(self, state: PoolState, n: int, *, seed: Optional[int] = 0) -> np.ndarray:
        """``n`` distinct unlabelled ids, best first; same ids for the same ``seed``."""
        if not isinstance(state, PoolState):
            raise ValueError(f"state must be a socbi.strategies.PoolState, got {type(state).__name__}")
        rng = _seed_rng(seed)
        n = _check_budget(n, state.n_unlabelled())
        if n == 0:
            return np.empty(0, np.int64)
        out = np.asarray(self._select_pool(state, n, rng), dtype=np.int64)
        if out.size != n or np.unique(out).size != n or state.is_labelled(out).any():
            raise RuntimeError(f"{self!r} returned {out.size} ids for n={n} (duplicates or labelled "
                               f"ids): this is a bug in the strategy")
        return out

    def _select_pool(self, state: PoolState, n: int, rng: np.random.Generator) -> np.ndarray:
        """Pick among all unlabelled samples; strategies with a pass over the whole pool
        override this to skip building the id list."""
        return self._select(state, state.unlabelled_ids(), n, rng)

    def _select(self, state: PoolState, unlabelled: np.ndarray, n: int,
                rng: np.random.Generator) -> np.ndarray:
        return self._select_among(state, unlabelled, n, rng)

    def _select_among(self, state: PoolState, candidates: np.ndarray, n: int,
                      rng: np.random.Generator) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomSampling(Strategy):
    """Uniform sample without replacement. O(m) for m candidates."""

    name = "random"

    def _select_among(self, state, candidates, n, rng):
        return rng.choice(candidates, size=n, replace=False)


class UncertaintySampling(Strategy):
    """Largest ``uncertainty(p)`` first; evaluates probabilities on the candidates only.

    ``measure``: ``"least_confidence"`` (1 - max p), ``"margin"`` (-(p1 - p2)) or
    ``"entropy"`` (-sum p log p).

    With precomputed ``PoolState.probabilities`` the selection is one fused C++ pass
    (``socbi._core.select_uncertain``): each row is read once, checked (finite, in
    [0, 1], sums to 1), scored and offered to a bounded heap of the n best; labelled rows
    are skipped via the mask, nothing of size n_samples is allocated, and ties at the cut
    are broken by a seeded hash of the id. O(m C) for m candidates, O(n) memory;
    ``threads`` > 1 splits the rows (worth it from ~10^6 rows). With a model, the model
    runs on the candidates in chunks and the same pass picks from its output.
    """

    MEASURES = ("least_confidence", "margin", "entropy")

    def __init__(self, measure: str = "least_confidence", threads: int = 1) -> None:
        if measure not in self.MEASURES:
            raise ValueError(f"measure must be one of {self.MEASURES}, got {measure!r}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.measure = measure
        self.name = measure
        self.threads = int(threads)

    def uncertainty(self, p: np.ndarray) -> np.ndarray:
        """Uncertainty of each row of ``p`` (larger = more uncertain)."""
        if self.measure == "least_confidence":
            return 1.0 - p.max(axis=1)
        if self.measure == "margin":
            top2 = -np.partition(-p, 1, axis=1)[:, :2]
            return -(top2[:, 0] - top2[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
        return -(p * logp).sum(axis=1)

    def _fused(self, p: np.ndarray, n: int, rng: np.random.Generator, *, skip: Any = None,
               rows: Any = None, labels: Any = None, name: str = "probabilities") -> np.ndarray:
        from . import _core

        ids, _, kind, row, value = _core.select_uncertain(
            p, self.MEASURES.index(self.measure), int(n), skip=skip, rows=rows, labels=labels,
            seed=_draw_seed(rng), threads=self.threads)
        if kind:
            if kind == 4:  # pragma: no cover - candidates come from the state, always in range
                raise ValueError(f"candidate id {value:g} is out of range")
            raise _proba_error(name, kind, labels[row] if labels is not None else row, value)
        return ids

    def _select_pool(self, state, n, rng):
        if state.probabilities is None:
            return super()._select_pool(state, n, rng)
        return self._fused(state.probabilities, n, rng, skip=state.labelled)

    def _select_among(self, state, candidates, n, rng):
        if state.probabilities is not None:
            return self._fused(state.probabilities, n, rng, rows=candidates)
        p = np.ascontiguousarray(state.predict_proba(candidates))
        return self._fused(p, n, rng, labels=candidates)

    def scores(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        """Uncertainty of ``ids`` (larger = picked first). O(len(ids) C)."""
        return self.uncertainty(state.predict_proba(ids))

    def __repr__(self) -> str:
        return f"UncertaintySampling({self.measure!r})"


class LeastConfidence(UncertaintySampling):
    def __init__(self, threads: int = 1) -> None:
        super().__init__("least_confidence", threads)


class MarginSampling(UncertaintySampling):
    def __init__(self, threads: int = 1) -> None:
        super().__init__("margin", threads)


class EntropySampling(UncertaintySampling):
    def __init__(self, threads: int = 1) -> None:
        super().__init__("entropy", threads)


class KCenterGreedy(Strategy):
    """K-Center greedy: repeatedly take the candidate farthest from all centres.

    Centres start as the labelled samples; each pick becomes a centre. ``metric`` is
    ``"l2"`` (Euclidean) or ``"cosine"`` (on normalised embeddings). With no labelled
    samples the first pick is a seeded random candidate.

    Min-distance bookkeeping is incremental: the distance of every sample to its nearest
    labelled sample is cached between calls (keyed on the embeddings array and the
    labelled set) and only the newly labelled samples are folded in, so a round costs
    O(|pool| * (new labels + n) * d) instead of O(|pool| * |labelled| * d). Distances to
    many centres are computed in chunks of ``chunk`` centres (memory O(|pool| * chunk)).
    Picks update the candidates' min distance with one matrix-vector product each. The
    cache is keyed on the embeddings *object* (``is``), so it hits across rounds when the
    same float32 array is passed each time (``PoolState.from_scorer`` does); do not
    modify that array in place between calls.

    Thread safety: the cache is per object; do not share one object between threads.
    """

    name = "kcenter"

    def __init__(self, metric: str = "l2", chunk: int = 256, progress: bool = True) -> None:
        if metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
        self.metric = metric
        self.chunk = int(chunk)
        self.progress = bool(progress)
        # (embeddings object, labelled mask it was computed for, min squared distances)
        self._cache: Optional[Tuple[Any, np.ndarray, np.ndarray]] = None
        # (embeddings object, float32 (normalised) vectors, squared norms); holding the
        # object keeps its id from being reused by another array.
        self._x_cache: Optional[Tuple[Any, np.ndarray, np.ndarray]] = None

    def _vectors(self, state: PoolState) -> Tuple[np.ndarray, np.ndarray]:
        x = state.embeddings
        if x is None:
            raise ValueError("K-Center needs PoolState.embeddings (n_samples x d)")
        if self._x_cache is None or self._x_cache[0] is not x:
            xv = np.asarray(x, dtype=np.float32)
            if self.metric == "cosine":
                norms = np.linalg.norm(xv, axis=1)
                if (norms == 0).any():
                    raise ValueError(f"embeddings rows {np.flatnonzero(norms == 0)[:5].tolist()} have "
                                     f"zero norm; cosine K-Center is undefined for them (use metric='l2')")
                xv = xv / norms[:, None]
            sq = np.einsum("ij,ij->i", xv, xv, dtype=np.float64).astype(np.float32)
            self._x_cache = (x, xv, sq)
            self._cache = None
        return self._x_cache[1], self._x_cache[2]

    def _min_d2(self, xv: np.ndarray, sq: np.ndarray, rows: np.ndarray, centres: np.ndarray,
                init: Optional[np.ndarray] = None) -> np.ndarray:
        """min over ``centres`` of squared distance, for each of ``rows`` (chunked)."""
        out = np.full(rows.size, np.inf, np.float32) if init is None else init
        if centres.size == 0 or rows.size == 0:
            return out
        xr = xv[rows]
        sr = sq[rows]
        starts = range(0, centres.size, self.chunk)
        long = self.progress and rows.size * centres.size >= 200_000_000
        for s in _progress(starts, len(starts), "k-center distances", long):
            c = centres[s:s + self.chunk]
            d2 = xr @ xv[c].T
            d2 *= -2.0
            d2 += sr[:, None]
            d2 += sq[c][None, :]
            np.minimum(out, d2.min(axis=1), out=out)
        np.maximum(out, 0.0, out=out)
        return out

    def min_distances(self, state: PoolState) -> np.ndarray:
        """Squared distance of every sample to its nearest labelled sample (inf if none).

        Uses and refreshes the cache. O(n * new labels * d).
        """
        xv, sq = self._vectors(state)
        lab = state.labelled
        everything = np.arange(state.n_samples)
        if self._cache is not None and self._cache[0] is state.embeddings \
                and self._cache[1].shape == lab.shape:
            _, cached_lab, cached = self._cache
            if not (cached_lab & ~lab).any():  # labelled set only grew
                new = np.flatnonzero(lab & ~cached_lab)
                d = self._min_d2(xv, sq, everything, new, init=cached.copy())
                self._cache = (state.embeddings, lab.copy(), d)
                return d
        d = self._min_d2(xv, sq, everything, np.flatnonzero(lab))
        self._cache = (state.embeddings, lab.copy(), d)
        return d

    def scores(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        """Squared distance of ``ids`` to the nearest labelled sample (K-Center's criterion)."""
        return self.min_distances(state)[ids]

    def _select(self, state, unlabelled, n, rng):
        d = self.min_distances(state)[unlabelled].copy()
        return self._greedy(state, unlabelled, d, n, rng)

    def _select_among(self, state, candidates, n, rng):
        xv, sq = self._vectors(state)
        d = self._min_d2(xv, sq, candidates, state.labelled_ids())
        return self._greedy(state, candidates, d, n, rng)

    def _greedy(self, state, cand, d, n, rng):
        xv, sq = self._vectors(state)
        xc = xv[cand]
        sc = sq[cand]
        picks = np.empty(n, np.int64)
        long = self.progress and cand.size * n >= 200_000_000
        for t in _progress(range(n), n, "k-center picks", long):
            if np.isinf(d).all():
                j = int(rng.integers(cand.size))  # no centre yet
            else:
                j = int(np.argmax(d))
            picks[t] = cand[j]
            dj = sc + sq[cand[j]] - 2.0 * (xc @ xv[cand[j]])
            np.minimum(d, np.maximum(dj, 0.0), out=d)
            d[j] = -1.0  # never again (the pick's own distance is ~0 anyway)
        return picks

    def __repr__(self) -> str:
        return f"KCenterGreedy(metric={self.metric!r})"


def _need_scorer(state: PoolState, who: str) -> Any:
    if state.scorer is None:
        raise ValueError(f"strategy {who!r} needs PoolState.scorer, a socbi.scoring.BoundaryScorer "
                         f"over these samples: pass scorer=BoundaryScorer(embeddings, k=10, labelled=...)")
    return state.scorer


class SoCBI(Strategy):
    """So-CBI alone: the ``n`` unlabelled samples with the smallest boundary counts.

    ``largest=True`` takes the opposite end. Ties follow the scorer's tie-break (a fixed
    seeded permutation by default). O(n + node size) via the score index.
    """

    name = "socbi"

    def __init__(self, largest: bool = False) -> None:
        self.largest = bool(largest)

    def _select_pool(self, state, n, rng):  # the index answers: no list of unlabelled ids
        ids, _ = _need_scorer(state, self.name).select(n, largest=self.largest)
        return ids

    def _select(self, state, unlabelled, n, rng):
        return self._select_pool(state, n, rng)

    def _select_among(self, state, candidates, n, rng):
        counts = _need_scorer(state, self.name).counts(candidates).astype(np.float64)
        return _top_n(counts if self.largest else -counts, candidates, n, rng)

    def __repr__(self) -> str:
        return f"SoCBI(largest={self.largest})"


class SoCBIPrefilter(Strategy):
    """So-CBI as a prefilter for a base strategy (LC-So-CBI, KCenter-So-CBI), as in the paper.

    Definition: let m = ``candidate_size`` if given, else ceil(``candidate_factor`` * n);
    m is clamped to [n, |unlabelled|]. The candidate set C is the m unlabelled samples
    with the **smallest** boundary counts (``largest=True``: the largest). Counts are
    small integers with massive ties (early on, half the pool has count 0), so the cut
    usually falls inside a tie; the tied samples at the cut are ranked by the *base
    strategy* (LC: its uncertainty; K-Center: greedy farthest-first) and its best fill C.
    The base strategy then picks its n best inside C.

    Where it helps and where it hurts (digits, 10 seeds, docs/scoring.md): with K-Center
    it helps (K-Center alone chases outliers; the low-count set keeps it in the
    unexplored bulk). With LC/margin it helps only in the cold start: C is then mostly
    far from every labelled sample, which adds diversity early but excludes the uncertain
    samples next to the labelled data later, so over the whole budget it is below plain
    margin. The recommended default is :class:`CoverMargin`.

    Cost: O(m + node size) for the cut, O(|unlabelled|) to find the tied samples, plus
    the base strategy on the ties and on m candidates.
    """

    def __init__(self, base: Strategy, candidate_factor: float = 3.0,
                 candidate_size: Optional[int] = None, largest: bool = False) -> None:
        if not isinstance(base, Strategy) or isinstance(base, (SoCBIPrefilter, SoCBI)):
            raise ValueError(f"base must be a non-So-CBI Strategy, got {base!r}")
        if not isinstance(candidate_factor, (int, float, np.integer, np.floating)) \
                or isinstance(candidate_factor, bool) or not candidate_factor >= 1.0 \
                or not math.isfinite(candidate_factor):
            raise ValueError(f"candidate_factor must be a finite number >= 1, got {candidate_factor!r}")
        if candidate_size is not None and (isinstance(candidate_size, bool) or
                                           not isinstance(candidate_size, (int, np.integer))
                                           or candidate_size < 1):
            raise ValueError(f"candidate_size must be a positive integer or None, got {candidate_size!r}")
        self.base = base
        self.candidate_factor = float(candidate_factor)
        self.candidate_size = None if candidate_size is None else int(candidate_size)
        self.largest = bool(largest)
        self.name = f"{base.name}_socbi"

    def candidate_count(self, n: int, available: int) -> int:
        """m for a budget ``n`` and ``available`` unlabelled samples."""
        m = self.candidate_size if self.candidate_size is not None else \
            int(math.ceil(self.candidate_factor * n))
        return int(min(max(m, n), available))

    def _cut(self, state: PoolState, pool_ids: np.ndarray, counts: np.ndarray, m: int,
             rng: np.random.Generator) -> np.ndarray:
        """The m of ``pool_ids`` with the best counts; ties at the cut by the base strategy."""
        key = counts if self.largest else -counts
        if m >= pool_ids.size:
            return np.sort(pool_ids)
        cut = np.partition(key, key.size - m)[key.size - m]
        strict = pool_ids[key > cut]
        tied = pool_ids[key == cut]
        need = m - strict.size
        if tied.size > need:
            tied = self.base._select_among(state, tied, need, rng)
        return np.sort(np.concatenate([strict, tied]).astype(np.int64))

    def candidates(self, state: PoolState, n: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """The candidate set C (ascending ids) for budget ``n``. O(|unlabelled|) + the base on the ties."""
        scorer = _need_scorer(state, self.name)
        unl = state.unlabelled_ids()
        m = self.candidate_count(n, unl.size)
        return self._cut(state, unl, scorer.counts(unl), m, _seed_rng(0) if rng is None else rng)

    def _select(self, state, unlabelled, n, rng):
        return self.base._select_among(state, self.candidates(state, n, rng), n, rng)

    def _select_among(self, state, candidates, n, rng):
        counts = _need_scorer(state, self.name).counts(candidates)
        m = min(self.candidate_count(n, candidates.size), candidates.size)
        return self.base._select_among(state, self._cut(state, candidates, counts, m, rng), n, rng)

    def __repr__(self) -> str:
        size = self.candidate_size if self.candidate_size is not None else f"{self.candidate_factor:g}n"
        return f"SoCBIPrefilter({self.base!r}, candidates={size}, largest={self.largest})"


class NeighbourhoodDiverse(Strategy):
    """Uncertainty with batch diversity from the neighbour lists (cluster-margin style),
    optionally with a coverage share for the cold start.

    Walk the unlabelled samples from the most uncertain down (``base``, default margin);
    take a sample unless it lies in the K-NN list of a sample already taken in this batch,
    or one of those lies in its list -- no two picks of a batch from one neighbourhood.
    The lists are the pool's K nearest *unlabelled* neighbours (the HNSW pool that the
    So-CBI scorer keeps, K = the scorer's K), so the rule has no constant of its own. If the
    walk runs out, the skipped samples fill the batch in uncertainty order.

    ``coverage=True`` (``margin_div_cover``, the recommended default): first
    round(n * u) picks, u = the share of the unlabelled samples whose boundary count is 0
    (in no labelled sample's K-NN list: regions no label covers, ProbCover's notion), are
    taken by the same walk among those uncovered samples; the rest by the walk over all.
    Early, when labels cover little, much of the batch explores; the share fades by itself
    as coverage grows, with no schedule to tune. ``coverage="kcenter"`` takes the
    uncovered share by K-Center greedy instead (evaluated; not recommended).

    Cost: the base strategy's top-m (m = 2n, doubled while picks are missing) plus one
    K-NN query per sample walked; O(n K) set operations; with coverage, the counts of
    the candidates (O(|unlabelled|) index reads).
    """

    name = "margin_div"

    def __init__(self, base: Optional[Strategy] = None, k: Optional[int] = None,
                 coverage: Any = False) -> None:
        base = MarginSampling() if base is None else base
        if not isinstance(base, UncertaintySampling):
            raise ValueError(f"base must be an uncertainty strategy (lc, margin, entropy), got {base!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"k must be a positive integer or None (the scorer's K), got {k!r}")
        self.base = base
        self.k = None if k is None else int(k)
        if coverage not in (False, True, "kcenter"):
            raise ValueError(f"coverage must be False, True (uncovered share in uncertainty order) or "
                             f"'kcenter' (uncovered share by K-Center greedy), got {coverage!r}")
        self.coverage = coverage
        self._kcenter = KCenterGreedy(progress=False) if coverage == "kcenter" else None
        self.name = f"{base.name}_div" + {False: "", True: "_cover", "kcenter": "_kc"}[coverage]

    def _pool_and_k(self, state: PoolState) -> Tuple[NeighbourPool, int]:
        pool = state.pool if state.pool is not None else \
            (state.scorer.pool if state.scorer is not None else None)
        if pool is None or state.embeddings is None:
            raise ValueError(f"strategy {self.name!r} needs the neighbour pool: pass PoolState.scorer "
                             f"(a BoundaryScorer), or PoolState.pool plus embeddings")
        k = self.k if self.k is not None else (state.scorer.k if state.scorer is not None else 10)
        return pool, k

    def _select_among(self, state, candidates, n, rng):
        pool, k = self._pool_and_k(state)
        kq = min(k + 1, len(pool))                 # +1: a candidate is its own nearest neighbour
        seed = _draw_seed(rng)
        picks: list = []
        taken: set = set()
        blocked: set = set()
        if self.coverage and state.scorer is not None:
            # Exploration share = the uncovered share of the candidates (count 0: in no
            # labelled sample's K-NN list); those slots go to uncovered samples, in
            # uncertainty order, with the same neighbourhood rule. Fades as coverage grows.
            uncovered = candidates[state.scorer.counts(candidates) == 0]
            quota = int(round(n * uncovered.size / max(candidates.size, 1)))
            if quota and self._kcenter is not None:
                first = self._kcenter._select_among(state, uncovered, quota, np.random.default_rng(seed))
                nbr, _ = pool.query(state.embeddings[first], kq)
                picks.extend(first.tolist())
                taken.update(first.tolist())
                blocked.update(nbr.ravel().tolist())
            elif quota:
                self._walk(state, pool, kq, uncovered, quota, seed, picks, taken, blocked)
        rest = n - len(picks)
        if rest:
            left = candidates if not picks else np.setdiff1d(candidates, np.asarray(picks, np.int64),
                                                              assume_unique=True)
            self._walk(state, pool, kq, left, rest, seed, picks, taken, blocked, fill=True)
        return np.asarray(picks, np.int64)

    def _walk(self, state, pool, kq, candidates, quota, seed, picks, taken, blocked, fill=False):
        """Append up to ``quota`` picks from ``candidates`` in base order, no two from one
        neighbourhood; with ``fill``, top up from the skipped ones if the walk runs out."""
        target = len(picks) + quota
        skipped: list = []
        walked = 0
        m = min(candidates.size, 2 * quota)
        while True:
            ranked = self.base._select_among(state, candidates, m, np.random.default_rng(seed))
            fresh = ranked[walked:]
            for s0 in range(0, fresh.size, max(quota, 64)):
                chunk = fresh[s0:s0 + max(quota, 64)]
                nbr, _ = pool.query(state.embeddings[chunk], kq)
                for c, row in zip(chunk.tolist(), nbr.tolist()):
                    walked += 1
                    if c in blocked or not taken.isdisjoint(row):
                        skipped.append(c)
                        continue
                    picks.append(c)
                    taken.add(c)
                    blocked.update(row)
                    if len(picks) == target:
                        return
            if m == candidates.size:
                break
            m = min(candidates.size, 2 * m)
        if fill:
            picks.extend(skipped[:target - len(picks)])

    def __repr__(self) -> str:
        return f"NeighbourhoodDiverse({self.base!r}, k={self.k})"


class SEALS(Strategy):
    """SEALS candidate restriction (Coleman et al., AAAI 2022; small-text's ``SEALS``).

    Candidates: the union of the k nearest unlabelled neighbours of every labelled
    sample. With a scorer and ``k`` None or equal to the scorer's K this is exactly the
    set of samples with a boundary count > 0 (the stored lists); otherwise the pool (or
    the scorer's pool) is queried. The base strategy (default margin) picks among them;
    if there are fewer than n candidates, the rest are picked by the base strategy from
    the remaining unlabelled samples. small-text defaults to k=100; here k defaults to
    the scorer's K (10) when a scorer is present, else 10.

    Cost: O(|labelled| * K) to form the union (+ |labelled| queries without a scorer)
    plus the base strategy on the candidates.
    """

    name = "seals"

    def __init__(self, base: Optional[Strategy] = None, k: Optional[int] = None) -> None:
        base = MarginSampling() if base is None else base
        if not isinstance(base, Strategy) or isinstance(base, SEALS):
            raise ValueError(f"base must be a non-SEALS Strategy, got {base!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
            raise ValueError(f"k must be a positive integer or None, got {k!r}")
        self.base = base
        self.k = None if k is None else int(k)

    def candidates(self, state: PoolState) -> np.ndarray:
        """Ascending ids of the unlabelled samples in some labelled sample's k-NN list."""
        lab = state.labelled_ids()
        if lab.size == 0:
            return np.empty(0, np.int64)
        scorer = state.scorer
        if scorer is not None and (self.k is None or self.k == scorer.k):
            lists = scorer.neighbours(lab).ravel()
            return np.unique(lists[lists >= 0])
        pool = state.pool if state.pool is not None else (scorer.pool if scorer is not None else None)
        if pool is None or state.embeddings is None:
            raise ValueError("SEALS needs PoolState.scorer, or PoolState.pool plus embeddings, to "
                             "find the labelled samples' nearest unlabelled neighbours")
        k = min(self.k if self.k is not None else 10, len(pool))
        if k == 0:
            return np.empty(0, np.int64)
        nbr, _ = pool.query(state.embeddings[lab], k)
        return np.unique(nbr.ravel())

    def _select_pool(self, state, n, rng):
        # enough candidates (the usual case): no list of every unlabelled id is needed
        cand = self.candidates(state)
        if cand.size >= n:
            return self.base._select_among(state, cand, n, rng)
        return self._select(state, state.unlabelled_ids(), n, rng)

    def _select(self, state, unlabelled, n, rng):
        cand = self.candidates(state)
        if cand.size >= n:
            return self.base._select_among(state, cand, n, rng)
        rest = np.setdiff1d(unlabelled, cand, assume_unique=True)
        first = self.base._select_among(state, cand, cand.size, rng) if cand.size else np.empty(0, np.int64)
        more = self.base._select_among(state, rest, n - cand.size, rng)
        return np.concatenate([first, more])

    def _select_among(self, state, candidates, n, rng):
        cand = np.intersect1d(self.candidates(state), candidates, assume_unique=True)
        if cand.size >= n:
            return self.base._select_among(state, cand, n, rng)
        rest = np.setdiff1d(candidates, cand, assume_unique=True)
        first = self.base._select_among(state, cand, cand.size, rng) if cand.size else np.empty(0, np.int64)
        return np.concatenate([first, self.base._select_among(state, rest, n - cand.size, rng)])

    def __repr__(self) -> str:
        return f"SEALS({self.base!r}, k={self.k})"


# =============================================================================== registry
STRATEGIES: Dict[str, Callable[..., Strategy]] = {
    "random": RandomSampling,
    "least_confidence": LeastConfidence,
    "lc": LeastConfidence,
    "margin": MarginSampling,
    "entropy": EntropySampling,
    "kcenter": KCenterGreedy,
    "socbi": SoCBI,
    "lc_socbi": lambda **kw: SoCBIPrefilter(LeastConfidence(), **kw),
    "kcenter_socbi": lambda **kw: SoCBIPrefilter(
        KCenterGreedy(**{k: kw.pop(k) for k in ("metric", "chunk", "progress") if k in kw}), **kw),
    "seals": SEALS,
    "margin_div": NeighbourhoodDiverse,
    "margin_div_cover": lambda **kw: NeighbourhoodDiverse(coverage=True, **kw),
    "margin_div_kc": lambda **kw: NeighbourhoodDiverse(coverage="kcenter", **kw),
}
# Strategies defined in modules above this one (data flows strategies -> ascmr/longtail,
# never back) add themselves with register_strategy when imported; socbi.session imports them.
_REGISTERED_BY = {"ascmr": "socbi.ascmr", "class_balanced": "socbi.longtail"}


def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
    """Make ``make_strategy(name)`` build ``factory(**kwargs)``. O(1); call at import time."""
    STRATEGIES[name] = factory


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """Strategy by name (case and '-' insensitive: "LC-So-CBI" == "lc_socbi")."""
    key = str(name).lower().replace("-", "_").replace(" ", "_").replace("so_cbi", "socbi")
    key = {"k_center": "kcenter", "kcentre": "kcenter", "k_center_socbi": "kcenter_socbi"}.get(key, key)
    if key not in STRATEGIES:
        if key in _REGISTERED_BY:
            raise ValueError(f"strategy {name!r} lives in {_REGISTERED_BY[key]}; import it first "
                             f"(import {_REGISTERED_BY[key]}), or use socbi.session.ActiveLearner")
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    try:
        return STRATEGIES[key](**kwargs)
    except TypeError as exc:
        raise TypeError(f"options {sorted(kwargs)} do not fit strategy {key!r} ({exc}); pass only "
                        f"that strategy's keyword arguments") from exc


def select(strategy: Any, state: PoolState, n: int, *, seed: Optional[int] = 0,
           **kwargs: Any) -> np.ndarray:
    """Convenience: ``make_strategy(strategy, **kwargs).select(state, n, seed=seed)``."""
    strat = strategy if isinstance(strategy, Strategy) else make_strategy(strategy, **kwargs)
    return strat.select(state, n, seed=seed)
