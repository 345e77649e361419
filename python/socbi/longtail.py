"""Long-tailed pools: build them, see the skew, select and fill towards balance.

The long-tailed deep hashing study (``shared/papers``) shows that a long-tailed training
set cuts retrieval mAP by about 40 points and that topping every class up to an equal
count of real plus synthetic samples recovers most of it. This module gives the pieces:

* **Long-tail construction** (:func:`make_longtail`): from any labelled set, a seeded
  imbalanced subset, either by an *imbalance ratio* rho = head count / tail count with
  exponential decay over classes (``n_r = round(n_head * rho^(-r / (C - 1)))`` for class
  rank r = 0 .. C-1, the usual CIFAR-LT / ImageNet-LT profile; the paper uses rho = 48),
  or by the So-CBI *factor* IF (a seeded half of the classes keeps ``ceil(IF * count)``,
  exactly as :func:`socbi.experiment.prepare_split` does). The class counts come back in
  a :class:`LongTail` with a printable report.
* **Class-balanced selection** (:class:`ClassBalancedSelection`, a
  :class:`socbi.strategies.Strategy`): per-class quotas by water filling
  (:func:`balanced_quotas`: each label goes to the class with the fewest labels that
  still has candidates), then the base strategy picks inside each class. Classes of
  unlabelled samples are the known ones where given, else predicted.
* **Synthetic-sample hook** (:func:`fill_with_synthetic`): a user callable
  ``generator(class, k, rng) -> (k, d) array`` makes new samples (or embeddings, with
  ``embed``) for a class; every class is filled up to the target. The result, an
  :class:`AugmentedSet`, carries a boolean ``synthetic`` mask and an ``origin`` (source
  row, -1 for generated) through every output: :func:`balance_report`,
  :func:`export_training_set`, :func:`annotate_batch_file` (adds a ``synthetic`` column
  to a labelling batch), and the hashing metrics (:mod:`socbi.hashing`).
* **Stand-in generators** (:class:`GaussianClassGenerator`,
  :class:`MixupClassGenerator`): simple, honest generators fitted on real embeddings.
  They are **not** the paper's generator (a fine-tuned diffusion model, AttnDreamBooth,
  which cannot be downloaded or run here); they exist so that the hook can be tested
  and demonstrated.
* **The experiment** (:func:`longtail_retrieval_experiment`): balanced vs long-tailed vs
  long-tailed + synthetic fill, and, on a long-tailed pool with a labelling budget,
  random vs margin vs class-balanced selection (+ synthetic fill); mAP of 32/64-bit
  codes from :func:`socbi.hashing.train_hash_head`. ``bench/bench_hashing.py`` runs it.

Thread safety: the functions are pure (seeded; no shared state) and may run from
several threads, except the experiment, which trains torch models (see
:mod:`socbi.hashing`). Generators are read-only after construction.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .strategies import PoolState, Strategy, RandomSampling, make_strategy, register_strategy

__all__ = [
    "LongTail", "make_longtail", "class_counts", "imbalance_ratio", "balanced_quotas",
    "ClassBalancedSelection", "AugmentedSet", "fill_with_synthetic", "balance_report",
    "export_training_set", "annotate_batch_file", "GaussianClassGenerator", "MixupClassGenerator",
    "longtail_retrieval_experiment", "RetrievalExperiment", "SETTINGS", "diffusion_generator",
]

Generator = Callable[[int, int, np.random.Generator], Any]
PathLike = Union[str, Path]


# =============================================================================== helpers
def _as_classes(labels: Any, name: str = "labels") -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class numbers, got shape {lab.shape}")
    if lab.size and lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.isfinite(lab).all() and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer classes, got dtype {lab.dtype}; map class "
                             f"names to 0..C-1 first")
    return lab.astype(np.int64, copy=False)


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from ._progress import progress  # socbi's one progress policy

    return progress(total=total, desc=desc)


def class_counts(labels: Any, n_classes: Optional[int] = None) -> np.ndarray:
    """Samples per class 0..C-1 (int64); entries < 0 (unlabelled) are ignored. O(n)."""
    lab = _as_classes(labels)
    lab = lab[lab >= 0]
    c = (int(lab.max()) + 1 if lab.size else 0) if n_classes is None else int(n_classes)
    if lab.size and lab.max() >= c:
        raise ValueError(f"labels hold class {int(lab.max())} but n_classes={c}; pass n_classes > every label")
    return np.bincount(lab, minlength=c).astype(np.int64)


def imbalance_ratio(counts: Any) -> float:
    """Largest / smallest class count (inf if some class is empty; NaN if no class)."""
    c = np.asarray(counts, np.float64)
    if c.size == 0:
        return float("nan")
    return float("inf") if c.min() == 0 else float(c.max() / c.min())


# =============================================================================== long tail
@dataclass
class LongTail:
    """A long-tailed subset of a labelled set.

    indices : ascending rows of the input kept; classes : the class values (ascending);
    counts : kept per class (aligned with ``classes``); available : input per class;
    order : classes from head to tail (ratio mode) or reduced classes first (factor mode);
    mode : ``"ratio"`` or ``"factor"``; requested : the ratio or IF asked for;
    achieved_ratio : max(counts) / min(counts); minority : classes reduced (factor mode).
    """

    indices: np.ndarray
    classes: np.ndarray
    counts: np.ndarray
    available: np.ndarray
    order: np.ndarray
    mode: str
    requested: float
    seed: int
    minority: List[int] = field(default_factory=list)

    @property
    def achieved_ratio(self) -> float:
        return imbalance_ratio(self.counts)

    def as_dict(self) -> Dict[str, Any]:
        return dict(mode=self.mode, requested=self.requested, achieved_ratio=self.achieved_ratio,
                    seed=self.seed, n=int(self.indices.size), order=self.order.tolist(),
                    counts={int(c): int(n) for c, n in zip(self.classes, self.counts)},
                    available={int(c): int(n) for c, n in zip(self.classes, self.available)},
                    minority=list(self.minority))

    def report(self) -> str:
        """A small table: class, kept, available, from head to tail."""
        pos = {int(c): i for i, c in enumerate(self.classes)}
        what = f"imbalance ratio {self.requested:g}" if self.mode == "ratio" else f"IF {self.requested:g}"
        lines = [f"long tail by {what} (seed {self.seed}): {self.indices.size} of "
                 f"{int(self.available.sum())} samples, head/tail = {self.achieved_ratio:.2f}",
                 "class  kept  available"]
        for c in self.order:
            i = pos[int(c)]
            lines.append(f"{int(c):>5}  {int(self.counts[i]):>4}  {int(self.available[i]):>9}")
        return "\n".join(lines)


def make_longtail(labels: Any, *, imbalance_ratio: Optional[float] = None, factor: Optional[float] = None,
                  head_count: Optional[int] = None, order: Union[str, Sequence[int]] = "random",
                  min_count: int = 1, seed: int = 0) -> LongTail:
    """A seeded long-tailed subset of a labelled set (pass exactly one of the two modes).

    ``imbalance_ratio=rho`` (>= 1): class at rank r (0 = head) keeps
    ``round(head_count * rho^(-r / (C-1)))`` samples, so head / tail = rho up to rounding
    (tail = round(head_count / rho)). ``head_count`` defaults to the smallest class size,
    which every class can supply whatever the order. ``order``: ``"random"`` (seeded
    permutation of the classes), ``"index"`` (ascending class value = head first),
    ``"size"`` (largest class first), or an explicit sequence of every class value.
    Raises if a class cannot supply its quota or the tail would fall below ``min_count``.

    ``factor=IF`` in (0, 1]: the So-CBI variant -- a seeded half of the classes keeps
    ``max(min_count, ceil(IF * size))`` samples, the rest keep all. With the same seed
    and ``min_count = init_per_class + 1`` this is the reduction of
    :func:`socbi.experiment.prepare_split` applied to ``labels``.

    Samples kept inside a class are a seeded uniform draw. O(n log n). Pure function.
    """
    lab = _as_classes(labels)
    seed = _seed(seed)
    if (imbalance_ratio is None) == (factor is None):
        raise ValueError("pass exactly one of imbalance_ratio (head/tail count, e.g. 48) and factor "
                         "(So-CBI IF in (0, 1], e.g. 0.1)")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    if lab.size == 0:
        raise ValueError("labels is empty; pass the labels of the set to subsample")
    if (lab < 0).any():
        raise ValueError(f"labels holds {int((lab < 0).sum())} unlabelled entries (< 0); pass labelled "
                         f"samples only")
    classes, available = np.unique(lab, return_counts=True)
    C = classes.size
    if factor is not None:
        f = float(factor)
        if isinstance(factor, bool) or not math.isfinite(f) or not 0 < f <= 1:
            raise ValueError(f"factor must be the So-CBI IF in (0, 1] (1 = balanced), got {factor!r}")
        rng = np.random.default_rng([seed, 1])   # the stream prepare_split uses
        minority = sorted(int(c) for c in rng.choice(classes, size=C // 2, replace=False))
        keep = np.ones(lab.size, dtype=bool)
        for c in minority:
            members = np.flatnonzero(lab == c)
            n_keep = max(int(min_count), int(math.ceil(f * members.size)))
            if n_keep < members.size:
                keep[rng.choice(members, size=members.size - n_keep, replace=False)] = False
        idx = np.flatnonzero(keep).astype(np.int64)
        counts = np.array([int((lab[idx] == c).sum()) for c in classes], np.int64)
        rest = [int(c) for c in classes if int(c) not in minority]
        return LongTail(idx, classes, counts, available, np.array(minority + rest, np.int64), "factor",
                        f, seed, minority)

    rho = float(imbalance_ratio)  # type: ignore[arg-type]
    if isinstance(imbalance_ratio, bool) or not math.isfinite(rho) or rho < 1:
        raise ValueError(f"imbalance_ratio must be a finite number >= 1 (head count / tail count), "
                         f"got {imbalance_ratio!r}")
    rng = np.random.default_rng([seed, 0])
    if isinstance(order, str):
        if order == "random":
            ranked = classes[rng.permutation(C)]
        elif order == "index":
            ranked = classes.copy()
        elif order == "size":
            ranked = classes[np.lexsort((classes, -available))]
        else:
            raise ValueError(f"order must be 'random', 'index', 'size' or a sequence of classes, got {order!r}")
    else:
        ranked = np.asarray(list(order), np.int64)
        if ranked.shape != classes.shape or not np.array_equal(np.sort(ranked), classes):
            raise ValueError(f"order must list every class exactly once ({classes.tolist()}), got "
                             f"{ranked.tolist()}")
    size_of = {int(c): int(n) for c, n in zip(classes, available)}
    head = int(available.min()) if head_count is None else head_count
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or head < 1:
        raise ValueError(f"head_count must be a positive integer, got {head_count!r}")
    head = int(head)
    if C == 1:
        quotas = np.array([head], np.int64)
    else:
        quotas = np.array([int(round(head * rho ** (-r / (C - 1)))) for r in range(C)], np.int64)
    if quotas[-1] < min_count:
        raise ValueError(f"imbalance_ratio={rho:g} with head_count={head} leaves the tail class "
                         f"{head / rho:.2f} samples, below min_count={min_count}; lower the ratio to at "
                         f"most {head / min_count:g} or raise head_count")
    short = [(int(c), int(q), size_of[int(c)]) for c, q in zip(ranked, quotas) if q > size_of[int(c)]]
    if short:
        c, q, have = short[0]
        raise ValueError(f"class {c} must keep {q} samples at its rank but has only {have}; lower "
                         f"head_count (now {head}; the smallest class has {int(available.min())}) or "
                         f"pass order='size'")
    kept = []
    for c, q in zip(ranked, quotas):
        members = np.flatnonzero(lab == c)
        kept.append(rng.choice(members, size=int(q), replace=False))
    idx = np.sort(np.concatenate(kept)).astype(np.int64)
    pos = {int(c): i for i, c in enumerate(classes)}
    counts = np.zeros(C, np.int64)
    for c, q in zip(ranked, quotas):
        counts[pos[int(c)]] = q
    return LongTail(idx, classes, counts, available, ranked.astype(np.int64), "ratio", rho, seed)


# =============================================================================== quotas
def balanced_quotas(current: Any, available: Any, n: int, *, seed: Optional[int] = 0) -> np.ndarray:
    """Spread ``n`` new labels over classes so that the counts move towards equal.

    Water filling: each of the ``n`` labels goes to the class with the smallest
    ``current + quota`` among those with ``quota < available``; ties by a seeded random
    class priority. The result is the most even reachable split: if
    ``sum(max(0, T - current)) == n`` for a level ``T`` that every class can reach,
    every class ends at exactly ``T``. Returns (C,) int64 quotas, ``quota <= available``,
    summing to ``n``. O(n log C + C). Pure function.
    """
    cur = np.asarray(current, np.int64)
    avail = np.asarray(available, np.int64)
    if cur.ndim != 1 or avail.shape != cur.shape:
        raise ValueError(f"current and available must be 1-D per-class counts of one length, got "
                         f"shapes {cur.shape} and {avail.shape}")
    if (cur < 0).any() or (avail < 0).any():
        raise ValueError("current and available counts must be >= 0")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    n = int(n)
    if n > int(avail.sum()):
        raise ValueError(f"n={n} exceeds the {int(avail.sum())} candidates of all classes together; ask "
                         f"for at most {int(avail.sum())}")
    import heapq

    prio = np.random.default_rng(seed).permutation(cur.size)
    quota = np.zeros(cur.size, np.int64)
    heap = [(int(cur[c]), int(prio[c]), c) for c in range(cur.size) if avail[c] > 0]
    heapq.heapify(heap)
    for _ in range(n):
        level, p, c = heapq.heappop(heap)
        quota[c] += 1
        if quota[c] < avail[c]:
            heapq.heappush(heap, (level + 1, p, c))
    return quota


class ClassBalancedSelection(Strategy):
    """Class-balanced batches: per-class quotas, then ``base`` inside each class.

    labels : (n,) classes known so far, -1 = unknown, or a callable returning that array
        (e.g. ``lambda: learner.labels``) so that it follows the session. Every labelled
        sample must have a class here. Unlabelled samples with a known class use it
        (an oracle, or classes known from metadata).
    predicted : (n,) predicted classes, a callable returning them, or None: argmax of
        ``PoolState.probabilities`` / ``PoolState.model`` (mapped through the model's
        ``classes_`` when it has one; otherwise column j = class j).
    base : the strategy used inside each class (default random); any Strategy whose
        ``_select_among`` works on a restricted candidate set (all built-in ones do).
    n_classes : number of classes (default: 1 + the largest class seen).

    The quotas come from :func:`balanced_quotas` on the labelled counts and the
    candidates per class, so a batch first lifts the rarest classes; within a class the
    base strategy ranks. The returned ids interleave the classes (rank 1 of every class,
    then rank 2, ...; neediest class first), so every prefix of the batch is balanced too.
    :attr:`last_quotas` keeps the last call's quotas.

    Cost: O(n) bookkeeping + model evaluation on the unlabelled samples (when predicting)
    + the base strategy per class. Thread safety: keeps ``last_quotas``; use one object
    per thread.
    """

    name = "class_balanced"

    def __init__(self, base: Optional[Strategy] = None, *, labels: Any = None, predicted: Any = None,
                 n_classes: Optional[int] = None) -> None:
        base = RandomSampling() if base is None else base
        if isinstance(base, str):
            base = make_strategy(base)
        if not isinstance(base, Strategy) or isinstance(base, ClassBalancedSelection):
            raise ValueError(f"base must be a Strategy (not another ClassBalancedSelection), got {base!r}")
        if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer))
                                      or n_classes < 1):
            raise ValueError(f"n_classes must be a positive integer or None, got {n_classes!r}")
        self.base = base
        self.labels = labels
        self.predicted = predicted
        self.n_classes = None if n_classes is None else int(n_classes)
        self.last_quotas: Optional[np.ndarray] = None

    def _labels(self, n: int) -> np.ndarray:
        src = self.labels() if callable(self.labels) else self.labels
        if src is None:
            raise ValueError("ClassBalancedSelection needs labels: an (n,) array of classes with -1 for "
                             "unknown, or a callable returning it (e.g. lambda: learner.labels)")
        lab = _as_classes(src, "labels")
        if lab.shape != (n,):
            raise ValueError(f"labels has {lab.shape[0]} entries but the pool has {n} samples")
        return lab

    def _predicted(self, state: PoolState, ids: np.ndarray) -> np.ndarray:
        if self.predicted is not None:
            src = self.predicted() if callable(self.predicted) else self.predicted
            pred = _as_classes(src, "predicted")
            if pred.shape != (state.n_samples,):
                raise ValueError(f"predicted has {pred.shape[0]} entries but the pool has "
                                 f"{state.n_samples} samples")
            return pred[ids]
        if state.probabilities is None and state.model is None:
            raise ValueError("ClassBalancedSelection needs the classes of unlabelled samples: pass "
                             "predicted=..., or set PoolState.probabilities or PoolState.model, or give "
                             "their known classes in labels")
        p = state.predict_proba(ids)
        col = np.argmax(p, axis=1)
        classes = getattr(state.model, "classes_", None) if state.probabilities is None else None
        return np.asarray(classes)[col].astype(np.int64) if classes is not None else col.astype(np.int64)

    def _select_among(self, state, candidates, n, rng):
        lab = self._labels(state.n_samples)
        lab_ids = state.labelled_ids()
        missing = lab_ids[lab[lab_ids] < 0]
        if missing.size:
            raise ValueError(f"labelled samples {missing[:5].tolist()} have no class in labels; keep "
                             f"labels in step with the labelled set")
        cls = lab[candidates].copy()
        unknown = cls < 0
        if unknown.any():
            cls[unknown] = self._predicted(state, candidates[unknown])
        if (cls < 0).any():
            raise ValueError("predicted classes must be >= 0")
        seen = int(max(cls.max(initial=-1), lab.max(initial=-1))) + 1
        C = self.n_classes if self.n_classes is not None else seen
        if seen > C:
            raise ValueError(f"a class {seen - 1} appears but n_classes={C}; raise n_classes")
        current = np.bincount(lab[lab_ids], minlength=C)
        avail = np.bincount(cls, minlength=C)
        quotas = balanced_quotas(current, avail, n, seed=int(rng.integers(2**31 - 1)))
        self.last_quotas = quotas
        picks: List[np.ndarray] = []
        need = np.lexsort((np.arange(C), current))           # neediest class first
        for c in need:
            if quotas[c] == 0:
                continue
            members = np.sort(candidates[cls == c])
            picks.append(np.asarray(self.base._select_among(state, members, int(quotas[c]), rng), np.int64))
        out: List[int] = []
        depth = max((p.size for p in picks), default=0)
        for r in range(depth):
            out.extend(int(p[r]) for p in picks if r < p.size)
        return np.asarray(out, np.int64)

    def __repr__(self) -> str:
        return f"ClassBalancedSelection({self.base!r})"


# =============================================================================== synthetic
@dataclass
class AugmentedSet:
    """Real plus synthetic samples, with the marking carried along.

    embeddings (N, d) float32, labels (N,) int64, synthetic (N,) bool, origin (N,) int64
    (row of the input for a real sample, -1 for a generated one), ``generator`` (its
    description), ``target`` (per-class count aimed at). Real rows come first, in input
    order; synthetic rows follow, grouped by class.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    synthetic: np.ndarray
    origin: np.ndarray
    generator: str
    target: Dict[int, int]
    n_classes: int

    @property
    def n_real(self) -> int:
        return int((~self.synthetic).sum())

    @property
    def n_synthetic(self) -> int:
        return int(self.synthetic.sum())

    def real(self) -> Tuple[np.ndarray, np.ndarray]:
        """(embeddings, labels) of the real rows only."""
        return self.embeddings[~self.synthetic], self.labels[~self.synthetic]

    def report(self) -> Dict[str, Any]:
        """:func:`balance_report` of this set, plus the generator's description."""
        out = balance_report(self.labels, self.synthetic, self.n_classes)
        out["generator"] = self.generator
        return out


register_strategy("class_balanced", ClassBalancedSelection)


def _describe(generator: Any) -> str:
    d = getattr(generator, "describe", None)
    if callable(d):
        return str(d())
    return getattr(generator, "__qualname__", None) or type(generator).__name__


def fill_with_synthetic(embeddings: Any, labels: Any, generator: Generator, *,
                        target: Union[str, int, Dict[int, int]] = "max", synthetic: Any = None,
                        embed: Optional[Callable[[Any], Any]] = None, n_classes: Optional[int] = None,
                        seed: int = 0, progress: bool = True) -> AugmentedSet:
    """Top every class up to ``target`` samples with generated ones, marked synthetic.

    ``generator(c, k, rng)`` returns ``k`` new samples of class ``c`` as a (k, d) array of
    embeddings, or raw samples that ``embed`` maps to (k, d) embeddings; ``rng`` is a
    seeded ``numpy.random.Generator`` (per class, so results do not depend on the
    order of classes). ``target``: ``"max"`` (the largest class count, the paper's
    "real + synthetic equal for every class"), an int for every class, or a dict
    {class: count}. Classes already at or above the target get nothing; a class with no
    real sample is still filled (the generator must cope). ``synthetic`` marks input rows
    that are already synthetic (they count towards the target and stay marked).

    All-or-nothing: every class is generated and checked (shape, finiteness) before
    anything is returned; an error names the class and what was wrong. O(N d) plus
    the generator's cost. Pure apart from calling ``generator``. Progress: tqdm over
    classes.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise ValueError(f"embeddings must be a 2-D numeric array (samples x dimension), got dtype "
                         f"{x.dtype} shape {x.shape}")
    x = np.ascontiguousarray(x, np.float32)
    lab = _as_classes(labels)
    if lab.shape != (x.shape[0],):
        raise ValueError(f"labels has {lab.size} entries for {x.shape[0]} embeddings; pass one class per row")
    if (lab < 0).any():
        raise ValueError("labels must be classes >= 0 (fill only labelled samples)")
    if not callable(generator):
        raise ValueError(f"generator must be a callable (class, k, rng) -> (k, d) array, got "
                         f"{type(generator).__name__}")
    syn_in = np.zeros(x.shape[0], bool) if synthetic is None else np.asarray(synthetic)
    if syn_in.dtype != bool or syn_in.shape != (x.shape[0],):
        raise ValueError(f"synthetic must be a bool mask with one entry per row ({x.shape[0]}), got "
                         f"dtype {syn_in.dtype} shape {syn_in.shape}")
    seed = _seed(seed)
    C = (int(lab.max()) + 1 if lab.size else 0) if n_classes is None else int(n_classes)
    if lab.size and lab.max() >= C:
        raise ValueError(f"labels hold class {int(lab.max())} but n_classes={C}")
    counts = np.bincount(lab, minlength=C)
    if isinstance(target, str):
        if target != "max":
            raise ValueError(f"target must be 'max', an int or a {{class: count}} dict, got {target!r}")
        goal = {c: int(counts.max()) for c in range(C)}
    elif isinstance(target, dict):
        goal = {}
        for c, v in target.items():
            if not isinstance(c, (int, np.integer)) or not 0 <= int(c) < C:
                raise ValueError(f"target has class {c!r}, not in 0..{C - 1}")
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"target[{c}] must be a non-negative integer, got {v!r}")
            goal[int(c)] = int(v)
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool) and target >= 0:
        goal = {c: int(target) for c in range(C)}
    else:
        raise ValueError(f"target must be 'max', a non-negative int or a {{class: count}} dict, got {target!r}")
    need = {c: max(0, g - int(counts[c])) for c, g in goal.items()}
    todo = [c for c in sorted(need) if need[c] > 0]
    made: List[np.ndarray] = []
    made_lab: List[np.ndarray] = []
    bar = _bar(len(todo), "synthetic fill", bool(progress) and len(todo) > 0)
    try:
        for c in todo:
            k = need[c]
            rng = np.random.default_rng([seed, 5, c])
            try:
                out = generator(int(c), int(k), rng)
                if embed is not None:
                    out = embed(out)
            except Exception as exc:
                raise RuntimeError(f"generator {_describe(generator)!r} failed for class {c} (k={k}): "
                                   f"{type(exc).__name__}: {exc}") from exc
            if hasattr(out, "detach"):
                out = out.detach().cpu().numpy()
            arr = np.asarray(out)
            if arr.shape != (k, x.shape[1]) or arr.dtype.kind not in "biuf":
                raise ValueError(f"generator {_describe(generator)!r} returned dtype {arr.dtype} shape "
                                 f"{arr.shape} for class {c}; expected ({k}, {x.shape[1]}) numeric "
                                 f"embeddings{' after embed' if embed is not None else ''}")
            arr = arr.astype(np.float32)
            if not np.isfinite(arr).all():
                raise ValueError(f"generator {_describe(generator)!r} returned NaN or infinite values for "
                                 f"class {c}")
            made.append(arr)
            made_lab.append(np.full(k, c, np.int64))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    n_new = int(sum(a.shape[0] for a in made))
    emb = np.concatenate([x] + made, axis=0) if made else x.copy()
    lab_all = np.concatenate([lab] + made_lab) if made else lab.copy()
    syn = np.concatenate([syn_in, np.ones(n_new, bool)])
    origin = np.concatenate([np.where(syn_in, -1, np.arange(x.shape[0])), np.full(n_new, -1)]).astype(np.int64)
    return AugmentedSet(emb, lab_all.astype(np.int64), syn, origin, _describe(generator), goal, C)


def balance_report(labels: Any, synthetic: Any = None, n_classes: Optional[int] = None) -> Dict[str, Any]:
    """Class balance of a labelled set, real and synthetic counted apart.

    Keys: ``real`` / ``synthetic`` / ``total`` per-class counts (lists), ``n_real``,
    ``n_synthetic``, ``synthetic_fraction``, ``imbalance_ratio_real`` /
    ``imbalance_ratio_total`` (max/min count), ``class_imbalance_real`` /
    ``class_imbalance_total`` (normalised L1 distance from uniform, 0 = balanced, the
    measure of :func:`socbi.experiment.class_imbalance`). Unlabelled entries (< 0) are
    ignored. O(n).
    """
    lab = _as_classes(labels)
    syn = np.zeros(lab.size, bool) if synthetic is None else np.asarray(synthetic)
    if syn.dtype != bool or syn.shape != lab.shape:
        raise ValueError(f"synthetic must be a bool mask like labels ({lab.size},), got dtype "
                         f"{syn.dtype} shape {syn.shape}")
    ok = lab >= 0
    C = (int(lab[ok].max()) + 1 if ok.any() else 0) if n_classes is None else int(n_classes)
    real = class_counts(lab[ok & ~syn], C)
    synth = class_counts(lab[ok & syn], C)
    total = real + synth
    n_all = int(total.sum())

    def l1(c: np.ndarray) -> float:
        if c.sum() == 0 or C < 2:
            return float("nan")
        p = c / c.sum()
        return float(np.abs(p - 1.0 / C).sum() / (2.0 * (1.0 - 1.0 / C)))

    return dict(n_classes=C, real=real.tolist(), synthetic=synth.tolist(), total=total.tolist(),
                n_real=int(real.sum()), n_synthetic=int(synth.sum()),
                synthetic_fraction=float(synth.sum() / n_all) if n_all else 0.0,
                imbalance_ratio_real=imbalance_ratio(real), imbalance_ratio_total=imbalance_ratio(total),
                class_imbalance_real=l1(real), class_imbalance_total=l1(total))


# =============================================================================== exports
TRAINING_SET_FORMAT = "socbi-training-set"
TRAINING_COLUMNS = ("row", "label", "synthetic", "origin", "source")


def _fmt(path: PathLike, fmt: Optional[str]) -> str:
    if fmt is not None:
        if fmt not in ("csv", "json"):
            raise ValueError(f"fmt must be 'csv' or 'json', got {fmt!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".json"):
        return suffix[1:]
    raise ValueError(f"{str(path)!r}: cannot tell the format from suffix {suffix or '(none)'}; use .csv "
                     f"or .json, or pass fmt")


def export_training_set(path: PathLike, data: AugmentedSet, *, sources: Optional[Sequence[str]] = None,
                        fmt: Optional[str] = None) -> Path:
    """Write the rows of an :class:`AugmentedSet` with their synthetic marking, atomically.

    CSV columns ``row, label, synthetic, origin, source`` (synthetic ``true``/``false``;
    origin = input row or -1; source = ``sources[origin]`` for real rows, else
    ``synthetic:<generator>``). JSON: ``format``, ``generator``, ``summary`` (the
    :func:`balance_report`) and ``items``. ``sources``: one reference per *input* row
    (default ``row:<origin>``). O(N).
    """
    from ._files import atomic_write

    kind = _fmt(path, fmt)
    n_in = int(data.origin.max()) + 1 if (data.origin >= 0).any() else 0
    if sources is not None and len(sources) < n_in:
        raise ValueError(f"sources has {len(sources)} entries but real rows refer to input rows up to "
                         f"{n_in - 1}; pass one reference per input row")
    rows = []
    for r in range(data.labels.size):
        o = int(data.origin[r])
        if data.synthetic[r]:
            src = f"synthetic:{data.generator}"
        else:
            src = str(sources[o]) if sources is not None else f"row:{o}"
        rows.append(dict(row=r, label=int(data.labels[r]), synthetic=bool(data.synthetic[r]), origin=o, source=src))
    if kind == "json":
        doc = dict(format=TRAINING_SET_FORMAT, generator=data.generator, summary=data.report(), items=rows)
        text = json.dumps(doc, indent=1) + "\n"
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(TRAINING_COLUMNS)
        for row in rows:
            w.writerow([row["row"], row["label"], "true" if row["synthetic"] else "false", row["origin"],
                        row["source"]])
        text = buf.getvalue()
    data_bytes = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data_bytes))


def annotate_batch_file(path: PathLike, synthetic: Any, *, fmt: Optional[str] = None) -> Path:
    """Add a ``synthetic`` column (``true``/``false``) to a labelling batch file, atomically.

    ``path``: a CSV/JSON batch written by :func:`socbi.labelling.export_batch` (or
    ``ActiveLearner.export_batch``); ``synthetic``: bool mask over all sample ids of the
    session. The file keeps every other column; :func:`socbi.labelling.read_labels`
    ignores the extra column, so the annotated file imports as before. Re-annotating
    replaces the column. Nothing is written if any id is out of range. O(rows).
    """
    from ._files import atomic_write

    p = Path(path)
    kind = _fmt(p, fmt)
    mask = np.asarray(synthetic)
    if mask.dtype != bool or mask.ndim != 1:
        raise ValueError(f"synthetic must be a 1-D bool mask over sample ids, got dtype {mask.dtype} "
                         f"shape {mask.shape}")
    text = p.read_text(encoding="utf-8")

    def flag(cell: Any, where: str) -> str:
        try:
            i = int(str(cell).strip())
        except ValueError:
            raise ValueError(f"{p.name} {where}: id {cell!r} is not an integer") from None
        if not 0 <= i < mask.size:
            raise ValueError(f"{p.name} {where}: id {i} is outside the synthetic mask (0..{mask.size - 1}); "
                             f"pass the mask of the session that exported this batch")
        return "true" if mask[i] else "false"

    if kind == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p.name}: not valid JSON ({exc})") from exc
        items = doc.get("items") if isinstance(doc, dict) else doc
        if not isinstance(items, list) or not all(isinstance(it, dict) and "id" in it for it in items):
            raise ValueError(f"{p.name}: expected a batch with items carrying an 'id'")
        flags = [flag(it["id"], f"item {j}") == "true" for j, it in enumerate(items)]
        for it, is_syn in zip(items, flags):
            it["synthetic"] = is_syn
        if isinstance(doc, dict):
            doc["n_synthetic"] = int(sum(flags))
        out = json.dumps(doc, indent=1) + "\n"
    else:
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            raise ValueError(f"{p.name}: the file is empty; expected a batch with an id column")
        header = [h.strip().lower() for h in rows[0]]
        if "id" not in header:
            raise ValueError(f"{p.name}: no 'id' column in the header {rows[0]}")
        i_id = header.index("id")
        i_syn = header.index("synthetic") if "synthetic" in header else None
        new_rows = [list(rows[0]) + ([] if i_syn is not None else ["synthetic"])]
        for j, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            mark = flag(row[i_id] if i_id < len(row) else "", f"line {j}")
            row = list(row)
            if i_syn is not None:
                row += [""] * (i_syn + 1 - len(row))
                row[i_syn] = mark
            else:
                row += [""] * (len(header) - len(row))
                row.append(mark)
            new_rows.append(row)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(new_rows)
        out = buf.getvalue()
    data = out.encode("utf-8")
    return atomic_write(p, lambda fh: fh.write(data))


# =============================================================================== generators
class GaussianClassGenerator:
    """Stand-in generator: a class-conditional Gaussian fitted on real embeddings.

    Class c: mean = the class mean; covariance = ``(n_c * S_c + kappa * S_pooled) /
    (n_c + kappa)`` (the class's own covariance shrunk towards the pooled within-class
    covariance, so that a tail class with 3 samples still gets a sensible spread), plus
    ``jitter`` on the diagonal. ``kappa`` defaults to the dimension. Optional ``clip``
    (lo, hi) bounds the samples (e.g. pixel ranges). This is NOT the diffusion model of
    the paper: it only reshuffles second-order statistics of the real data.

    Fitting O(n d^2 + C d^3); a call O(k d^2). Read-only after construction: calls are
    thread-safe (each gets its own rng).
    """

    def __init__(self, embeddings: Any, labels: Any, *, kappa: Optional[float] = None,
                 jitter: float = 1e-4, clip: Optional[Tuple[float, float]] = None) -> None:
        x = np.asarray(embeddings, np.float64)
        lab = _as_classes(labels)
        if x.ndim != 2 or lab.shape != (x.shape[0],) or x.shape[0] < 2:
            raise ValueError(f"embeddings (n, d) and labels (n,) with n >= 2 are needed, got shapes "
                             f"{x.shape} and {lab.shape}")
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN or infinite values")
        d = x.shape[1]
        kap = float(d) if kappa is None else float(kappa)
        if not math.isfinite(kap) or kap < 0:
            raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
        if not (isinstance(jitter, (int, float)) and math.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")
        self.classes = np.unique(lab)
        centred = np.empty_like(x)
        self.means: Dict[int, np.ndarray] = {}
        for c in self.classes:
            m = lab == c
            self.means[int(c)] = x[m].mean(axis=0)
            centred[m] = x[m] - self.means[int(c)]
        dof = max(1, x.shape[0] - self.classes.size)
        pooled = centred.T @ centred / dof
        self.chol: Dict[int, np.ndarray] = {}
        for c in self.classes:
            m = lab == c
            n_c = int(m.sum())
            own = centred[m].T @ centred[m] / max(1, n_c - 1) if n_c > 1 else np.zeros((d, d))
            w = n_c if n_c > 1 else 0
            cov = (w * own + kap * pooled) / max(w + kap, 1e-12) + jitter * np.eye(d)
            self.chol[int(c)] = _psd_sqrt(cov)
        self.dim = d
        self.clip = clip
        self.kappa = kap

    def __call__(self, c: int, k: int, rng: np.random.Generator) -> np.ndarray:
        if int(c) not in self.means:
            raise ValueError(f"class {c} has no real sample to fit a Gaussian on; known classes "
                             f"{self.classes.tolist()}")
        z = rng.standard_normal((int(k), self.dim))
        out = self.means[int(c)] + z @ self.chol[int(c)].T
        if self.clip is not None:
            out = np.clip(out, self.clip[0], self.clip[1])
        return out.astype(np.float32)

    def describe(self) -> str:
        return f"class-conditional Gaussian stand-in (kappa={self.kappa:g})"


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """A factor L with L L^T = cov for a symmetric PSD matrix (eigen, negatives clipped)."""
    w, v = np.linalg.eigh((cov + cov.T) / 2.0)
    return v * np.sqrt(np.clip(w, 0.0, None))[None, :]


class MixupClassGenerator:
    """Stand-in generator: mixup of two real members of the class plus Gaussian noise.

    Each new sample is ``lam * a + (1 - lam) * b + noise * sigma_c * z`` for random class
    members a, b, ``lam ~ Beta(alpha, alpha)``, ``sigma_c`` the per-dimension std of the
    class (the pooled within-class std when the class has one member). Not the paper's
    generator. O(k d) per call; read-only after construction (thread-safe).
    """

    def __init__(self, embeddings: Any, labels: Any, *, alpha: float = 0.4, noise: float = 0.1) -> None:
        x = np.asarray(embeddings, np.float64)
        lab = _as_classes(labels)
        if x.ndim != 2 or lab.shape != (x.shape[0],) or x.shape[0] < 1:
            raise ValueError(f"embeddings (n, d) and labels (n,) are needed, got shapes {x.shape} and {lab.shape}")
        for name, v in (("alpha", alpha), ("noise", noise)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name == "alpha" and v == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if name == 'alpha' else '>= 0'}, got {v!r}")
        self.members = {int(c): x[lab == c] for c in np.unique(lab)}
        resid = np.concatenate([m - m.mean(axis=0) for m in self.members.values()], axis=0)
        pooled = resid.std(axis=0) if resid.shape[0] > 1 else np.zeros(x.shape[1])
        self.sigma = {c: (m.std(axis=0) if m.shape[0] > 1 else pooled) for c, m in self.members.items()}
        self.alpha, self.noise = float(alpha), float(noise)

    def __call__(self, c: int, k: int, rng: np.random.Generator) -> np.ndarray:
        if int(c) not in self.members:
            raise ValueError(f"class {c} has no real member to mix; known classes {sorted(self.members)}")
        m = self.members[int(c)]
        a = m[rng.integers(m.shape[0], size=int(k))]
        b = m[rng.integers(m.shape[0], size=int(k))]
        lam = rng.beta(self.alpha, self.alpha, size=(int(k), 1))
        z = rng.standard_normal((int(k), m.shape[1]))
        return (lam * a + (1 - lam) * b + self.noise * self.sigma[int(c)] * z).astype(np.float32)

    def describe(self) -> str:
        return f"mixup stand-in (alpha={self.alpha:g}, noise={self.noise:g})"


def diffusion_generator(embeddings: Any, labels: Any, **options: Any) -> Any:
    """A trained :class:`socbi.diffusion.DiffusionClassGenerator` on image rows (the paper's remedy).

    ``embeddings`` must be images (flat square rows, or pass ``image_shape``): the model
    generates pixels, so it fits raw-pixel data such as digits, not feature vectors.
    ``options`` go to the generator (``steps``, ``pretrained``, ``checkpoint_dir`` ...).
    Needs ``pip install 'socbi[longtail]'``.
    """
    from .diffusion import DiffusionClassGenerator

    return DiffusionClassGenerator(embeddings, labels, **options).fit()


GENERATORS: Dict[str, Callable[..., Any]] = {"gaussian": GaussianClassGenerator, "mixup": MixupClassGenerator,
                                             "diffusion": diffusion_generator}


# =============================================================================== experiment
SETTINGS = (
    "balanced",
    "long-tailed",
    "long-tailed + synthetic",
    "LT pool, budget: random",
    "LT pool, budget: margin",
    "LT pool, budget: class-balanced",
    "LT pool, budget: class-balanced + synthetic",
)
_SYNTHETIC_SETTINGS = {"long-tailed + synthetic", "LT pool, budget: class-balanced + synthetic"}


def _make_generator(spec: Any, x: np.ndarray, y: np.ndarray, options: Dict[str, Any]) -> Any:
    if isinstance(spec, str):
        if spec not in GENERATORS:
            raise ValueError(f"generator must be one of {sorted(GENERATORS)}, a factory "
                             f"(embeddings, labels) -> generator, or None; got {spec!r}")
        return GENERATORS[spec](x, y, **options)
    return spec(x, y, **options)


def _select_labels(x_pool: np.ndarray, y_pool: np.ndarray, how: str, *, budget_n: int, batch: int,
                   init_per_class: int, seed: int) -> np.ndarray:
    """Active-learning rounds on a pool (oracle = y_pool); returns the labelled ids."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xs = StandardScaler().fit_transform(x_pool)
    rng = np.random.default_rng([seed, 21])
    lab = np.full(y_pool.size, -1, np.int64)
    for c in np.unique(y_pool):
        members = np.flatnonzero(y_pool == c)
        if members.size <= init_per_class:
            raise ValueError(f"class {int(c)} has {members.size} pool samples, too few for "
                             f"init_per_class={init_per_class}; lower init_per_class or the imbalance ratio")
        ids = rng.choice(members, size=init_per_class, replace=False)
        lab[ids] = y_pool[ids]
    if budget_n <= int((lab >= 0).sum()):
        raise ValueError(f"budget of {budget_n} labels is not above the {int((lab >= 0).sum())} initial "
                         f"ones; raise budget")
    if how == "random":
        strat: Strategy = RandomSampling()
    elif how == "margin":
        strat = make_strategy("margin")
    elif how == "class-balanced":
        strat = ClassBalancedSelection(make_strategy("margin"), labels=lambda: lab,
                                       n_classes=int(y_pool.max()) + 1)
    else:  # pragma: no cover - internal
        raise ValueError(how)
    try:  # tiny fits: one BLAS thread is ~20x faster than two on a busy 2-core machine
        from threadpoolctl import threadpool_limits
        limit: Any = threadpool_limits(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib
        limit = contextlib.nullcontext()
    with limit:
        while int((lab >= 0).sum()) < budget_n:
            mask = lab >= 0
            n = min(batch, budget_n - int(mask.sum()))
            clf = LogisticRegression(max_iter=1000).fit(xs[mask], lab[mask])
            proba = np.zeros((y_pool.size, int(y_pool.max()) + 1))
            proba[:, clf.classes_] = clf.predict_proba(xs)
            state = PoolState(labelled=mask, embeddings=x_pool, probabilities=proba)
            ids = strat.select(state, n, seed=int(rng.integers(2**31 - 1)))
            lab[ids] = y_pool[ids]
    return np.flatnonzero(lab >= 0)


@dataclass
class RetrievalExperiment:
    """Rows (one per seed, setting, bits) and their mean/std summary.

    ``rows`` entries: seed, setting, bits, n_real, n_synthetic, imbalance_ratio_real,
    imbalance_ratio_total, map, map@k, map@k_deephash, map_float (cosine on the head's
    continuous codes), train_s. ``reference``: per seed, mAP of the raw embeddings
    (cosine) with no training. ``config``: the arguments.
    """

    rows: List[Dict[str, Any]]
    reference: List[Dict[str, Any]]
    config: Dict[str, Any]

    def summary(self) -> Dict[Tuple[str, int], Dict[str, Tuple[float, float]]]:
        out: Dict[Tuple[str, int], Dict[str, Tuple[float, float]]] = {}
        for r in self.rows:
            key = (r["setting"], r["bits"])
            out.setdefault(key, {})
        for key in out:
            rs = [r for r in self.rows if (r["setting"], r["bits"]) == key]
            for m in rs[0]:
                if m in ("seed", "setting", "bits") or not isinstance(rs[0][m], (int, float)):
                    continue
                v = np.array([float(r[m]) for r in rs])
                out[key][m] = (float(v.mean()), float(v.std()))
        return out

    def table(self, markdown: bool = True) -> str:
        """One line per setting: training set, then mAP and mAP@k at each code length."""
        s = self.summary()
        bits = sorted({b for _, b in s})
        settings = [st for st in SETTINGS if any((st, b) in s for b in bits)]
        k = self.config["ks"][0] if self.config["ks"] else None
        cols = ["setting", "real", "synthetic", "head/tail (real)"]
        cols += [f"mAP {b} bits" for b in bits]
        if k is not None:
            cols += [f"mAP@{k} {b} bits" for b in bits]
        cols += [f"float mAP {b}" for b in bits]
        lines = []

        def pm(v: Tuple[float, float]) -> str:
            return f"{v[0]:.3f} ± {v[1]:.3f}"

        for st in settings:
            first = s[(st, bits[0])]
            cells = [st, f"{first['n_real'][0]:.0f}", f"{first['n_synthetic'][0]:.0f}",
                     f"{first['imbalance_ratio_real'][0]:.1f}"]
            cells += [pm(s[(st, b)]["map"]) for b in bits]
            if k is not None:
                cells += [pm(s[(st, b)][f"map@{k}"]) for b in bits]
            cells += [pm(s[(st, b)]["map_float"]) for b in bits]
            lines.append(cells)
        ref = np.array([r["map"] for r in self.reference])
        if markdown:
            out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(c) + " |" for c in lines]
        else:
            widths = [max(len(cols[i]), *(len(c[i]) for c in lines)) for i in range(len(cols))]
            out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
            out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
        out.append("")
        out.append(f"no training, raw embeddings (cosine): mAP {ref.mean():.3f} ± {ref.std():.3f}; "
                   f"{len(self.reference)} seed(s); synthetic = {self.config['generator_desc']}")
        return "\n".join(out)

    def plot(self, path: PathLike) -> Path:
        """Grouped bars of mAP per setting and code length (PNG via matplotlib)."""
        from matplotlib.figure import Figure  # the OO API: the caller's backend is left alone

        s = self.summary()
        bits = sorted({b for _, b in s})
        settings = [st for st in SETTINGS if any((st, b) in s for b in bits)]
        fig = Figure(figsize=(9, 4.2))
        ax = fig.subplots()
        width = 0.8 / len(bits)
        xs = np.arange(len(settings))
        for j, b in enumerate(bits):
            mu = [s[(st, b)]["map"][0] for st in settings]
            sd = [s[(st, b)]["map"][1] for st in settings]
            ax.bar(xs + (j - (len(bits) - 1) / 2) * width, mu, width, yerr=sd, capsize=3, label=f"{b} bits")
        ref = float(np.mean([r["map"] for r in self.reference]))
        ax.axhline(ref, color="grey", ls="--", lw=1, label="raw embeddings, cosine")
        ax.set_xticks(xs)
        ax.set_xticklabels([st.replace("LT pool, budget: ", "LT pool:\n").replace(" + ", "\n+ ") for st in settings],
                           fontsize=8)
        ax.set_ylabel("mAP (whole database)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{self.config['dataset']}: imbalance ratio {self.config['imbalance_ratio']:g}, "
                     f"{len(self.config['seeds'])} seed(s); synthetic = stand-in generator")
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        return path

    def paired(self, a: str, b: str, metric: str = "map") -> Dict[int, Dict[str, Any]]:
        """Per code length: mean and per-seed differences ``a - b`` of ``metric`` (same seeds)."""
        out: Dict[int, Dict[str, Any]] = {}
        for bits in sorted({r["bits"] for r in self.rows}):
            va = {r["seed"]: r[metric] for r in self.rows if r["setting"] == a and r["bits"] == bits}
            vb = {r["seed"]: r[metric] for r in self.rows if r["setting"] == b and r["bits"] == bits}
            seeds = sorted(set(va) & set(vb))
            if not seeds:
                raise ValueError(f"no seed has both settings {a!r} and {b!r}")
            d = np.array([va[s] - vb[s] for s in seeds])
            out[bits] = dict(mean=float(d.mean()), diffs=d.tolist(), wins=int((d > 0).sum()), seeds=len(seeds))
        return out

    def paired_lines(self) -> List[str]:
        """The comparisons that matter, one line each: mean difference and wins over seeds."""
        pairs = [("long-tailed", "balanced"), ("long-tailed + synthetic", "long-tailed"),
                 ("LT pool, budget: class-balanced", "LT pool, budget: random"),
                 ("LT pool, budget: class-balanced", "LT pool, budget: margin"),
                 ("LT pool, budget: class-balanced + synthetic", "LT pool, budget: class-balanced")]
        have = {r["setting"] for r in self.rows}
        lines = []
        for a, b in pairs:
            if a in have and b in have:
                p = self.paired(a, b)
                parts = [f"{bits} bits {v['mean']:+.3f} ({v['wins']}/{v['seeds']} seeds up)" for bits, v in p.items()]
                lines.append(f"{a} vs {b}: " + ", ".join(parts))
        return lines

    def as_dict(self) -> Dict[str, Any]:
        return dict(config=self.config, rows=self.rows, reference=self.reference)


def longtail_retrieval_experiment(x: Any, y: Any, *, bits: Sequence[int] = (32, 64),
                                  imbalance_ratio: float = 48.0, seeds: Sequence[int] = (0,),
                                  test_fraction: float = 0.25, budget: float = 0.5, batch: int = 20,
                                  init_per_class: int = 2, generator: Any = "gaussian",
                                  generator_options: Optional[Dict[str, Any]] = None,
                                  settings: Sequence[str] = SETTINGS, ks: Sequence[int] = (100,),
                                  train_options: Optional[Dict[str, Any]] = None, dataset: str = "data",
                                  progress: bool = True) -> RetrievalExperiment:
    """Balanced vs long-tailed vs rebalanced training sets, judged by hash-code mAP.

    Per seed: a stratified split into a query set (``test_fraction``) and a database
    (the rest, real samples only, the same for every setting). Training sets:

    * ``balanced``: the whole database;
    * ``long-tailed``: :func:`make_longtail` of it at ``imbalance_ratio`` (seeded class order);
    * ``long-tailed + synthetic``: that, filled to the head count by the stand-in
      ``generator`` fitted on the long-tailed set (:func:`fill_with_synthetic`);
    * ``LT pool, budget: <how>``: the long-tailed set as an *unlabelled pool*;
      ``init_per_class`` labels per class, then rounds of ``batch`` picked by random /
      margin / :class:`ClassBalancedSelection` (margin inside class quotas, classes
      predicted by a logistic regression retrained every round) until ``budget`` (a
      fraction of the pool) is labelled; the labelled set trains the head;
    * ``... + synthetic``: the class-balanced labelled set, filled to its largest class.

    Every training set trains one head per code length (:func:`socbi.hashing.train_hash_head`
    with ``train_options``); queries and database are encoded and ranked by Hamming
    distance. mAP over the whole database (ties averaged), mAP@k, and mAP of the
    continuous codes (cosine) are recorded, with the training set's real / synthetic
    counts. ``generator``: ``"gaussian"``, ``"mixup"``, a factory
    ``(embeddings, labels, **generator_options) -> generator``, or None (the synthetic
    settings are skipped). Cost: len(seeds) x len(settings) x len(bits) trainings.
    Progress: tqdm over trainings.
    """
    from .hashing import mean_average_precision, retrieval_report, train_hash_head
    from sklearn.model_selection import train_test_split

    xa = np.asarray(x, np.float64)
    ya = _as_classes(y)
    if xa.ndim != 2 or ya.shape != (xa.shape[0],):
        raise ValueError(f"x must be (n, d) and y (n,), got shapes {xa.shape} and {ya.shape}")
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        raise ValueError(f"unknown settings {bad}; choose from {list(SETTINGS)}")
    settings = [s for s in SETTINGS if s in settings]
    if generator is None:
        settings = [s for s in settings if s not in _SYNTHETIC_SETTINGS]
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be a fraction of the long-tailed pool in (0, 1], got {budget!r}")
    gopts = dict(generator_options or {})
    topts = dict(train_options or {})
    topts.setdefault("progress", False)
    C = int(ya.max()) + 1
    rows: List[Dict[str, Any]] = []
    reference: List[Dict[str, Any]] = []
    gen_desc = "none"
    total = len(seeds) * len(settings) * len(bits)
    bar = _bar(total, "long-tail retrieval", bool(progress))
    try:
        for seed in seeds:
            seed = _seed(seed)
            x_db, x_q, y_db, y_q = train_test_split(xa, ya, test_size=test_fraction, stratify=ya,
                                                    random_state=seed)
            reference.append(dict(seed=seed, map=mean_average_precision(x_q, x_db, y_q, y_db, metric="cosine")))
            lt = make_longtail(y_db, imbalance_ratio=imbalance_ratio, seed=seed)
            x_lt, y_lt = x_db[lt.indices], y_db[lt.indices]
            budget_n = int(math.ceil(budget * y_lt.size))
            sets: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            for st in settings:
                if st == "balanced":
                    sets[st] = (x_db, y_db, np.zeros(y_db.size, bool))
                elif st == "long-tailed":
                    sets[st] = (x_lt, y_lt, np.zeros(y_lt.size, bool))
                elif st == "long-tailed + synthetic":
                    gen = _make_generator(generator, x_lt, y_lt, gopts)
                    aug = fill_with_synthetic(x_lt, y_lt, gen, n_classes=C, seed=seed, progress=False)
                    gen_desc = aug.generator
                    sets[st] = (aug.embeddings, aug.labels, aug.synthetic)
                else:
                    how = "class-balanced" if "class-balanced" in st else st.split(": ")[1]
                    ids = _select_labels(x_lt, y_lt, how, budget_n=budget_n, batch=batch,
                                         init_per_class=init_per_class, seed=seed)
                    xs_, ys_ = x_lt[ids], y_lt[ids]
                    if st.endswith("+ synthetic"):
                        gen = _make_generator(generator, xs_, ys_, gopts)
                        aug = fill_with_synthetic(xs_, ys_, gen, n_classes=C, seed=seed, progress=False)
                        gen_desc = aug.generator
                        sets[st] = (aug.embeddings, aug.labels, aug.synthetic)
                    else:
                        sets[st] = (xs_, ys_, np.zeros(ys_.size, bool))
            for st, (xt, yt, syn) in sets.items():
                bal = balance_report(yt, syn, C)
                for b in bits:
                    t0 = time.perf_counter()
                    model = train_hash_head(xt, yt, b, synthetic=syn, n_classes=C, seed=seed, **topts)
                    train_s = time.perf_counter() - t0
                    q, d = model.encode(x_q), model.encode(x_db)
                    rep = retrieval_report(q, d, y_q, y_db, ks=ks, n_bits=b)
                    row: Dict[str, Any] = dict(seed=seed, setting=st, bits=int(b), n_real=bal["n_real"],
                                               n_synthetic=bal["n_synthetic"],
                                               imbalance_ratio_real=bal["imbalance_ratio_real"],
                                               imbalance_ratio_total=bal["imbalance_ratio_total"],
                                               class_imbalance_real=bal["class_imbalance_real"],
                                               map=rep["map"], train_s=train_s)
                    for k in ks:
                        row[f"map@{k}"] = rep[f"map@{k}"]
                        row[f"map@{k}_deephash"] = rep[f"map@{k}_deephash"]
                    row["map_float"] = mean_average_precision(model.continuous(x_q), model.continuous(x_db),
                                                              y_q, y_db, metric="cosine")
                    rows.append(row)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    config = dict(dataset=dataset, bits=[int(b) for b in bits], imbalance_ratio=float(imbalance_ratio),
                  seeds=[int(s) for s in seeds], test_fraction=test_fraction, budget=budget, batch=batch,
                  init_per_class=init_per_class, ks=[int(k) for k in ks], settings=list(settings),
                  generator=generator if isinstance(generator, str) or generator is None else _describe(generator),
                  generator_desc=gen_desc, generator_options=gopts,
                  train_options={k: v for k, v in topts.items() if k != "progress"})
    return RetrievalExperiment(rows, reference, config)
