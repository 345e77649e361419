"""The active-learning session: embeddings + labels + neighbour pool + score index + model.

:class:`ActiveLearner` ties the layers together::

    learner = ActiveLearner(embeddings, labels, k=10)   # strategy: DEFAULT_STRATEGY (margin_div_cover)
    ids = learner.query(128)            # the next batch, best first (does not change state)
    learner.teach(ids, labels_of(ids))  # record labels; pool, counts and model follow
    learner.save("run.socbi")           # atomic; ActiveLearner.load("run.socbi") resumes

``labels`` has one entry per sample: a class number >= 0, or -1 for "unlabelled".
Each :meth:`~ActiveLearner.teach` moves the new ids out of the unlabelled neighbour pool
and the score index (:class:`socbi.scoring.BoundaryScorer` updates the So-CBI counts),
refits the classifier on all labels, evaluates it on the optional held-out set and
appends one entry to :attr:`~ActiveLearner.log` (what was picked, why, and what it cost).

Determinism: the strategy's random choices for round r come from a seed drawn from the
session's generator (``seed``) when round r begins, so :meth:`~ActiveLearner.query` is a
pure function of the session state: calling it twice, or after save/load, gives the same
ids. Resume is exact for every strategy whose inputs are restored exactly: labels,
counts (rebuilt from the saved neighbour lists and checked against the saved index
contents), the pool (the HNSW graph itself is saved) and the classifier (the default
``"logreg"`` is refit on the saved labels -- deterministic -- a scikit-learn estimator
is stored fitted in skops' secure format, and the torch MLP's weights are saved). K-Center's min-distance cache is
rebuilt from scratch after a load; in float32 a different summation order could in
principle flip an exact tie, which the tests have not observed.

Persistence (:meth:`~ActiveLearner.save`): one ``.npz``-format file holding JSON
metadata (round, strategy, seeds, generator state, log, stopping rules), the labels,
the embeddings (optional), the saved neighbour pool and scorer files as byte arrays,
the index contents and model weights, each with a SHA-256 checksum. It is written to a
temporary file in the target directory, fsync'ed, renamed over the target with
:func:`os.replace` and the directory is fsync'ed, so a crash at any point leaves either
the old or the new session loadable. Loading never unpickles (``allow_pickle=False``,
metadata is JSON).

Thread safety: an :class:`ActiveLearner` is not synchronised; use it from one thread at
a time. The score index inside updates with ``threads`` threads.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._checks import readonly_view
from .storage import take_rows
from ._cliutil import fail, input_file, output_file
from ._files import atomic_write, check_file_target  # atomic_write re-exported from here
from .knn import _check_embeddings, _check_ids
from . import ascmr as _ascmr  # noqa: F401  (registers the "ascmr" strategy)
from .longtail import ClassBalancedSelection  # registers the "class_balanced" strategy
from .labelling import export_batch as _export_batch
from .labelling import format_batch, read_labels
from .scoring import BoundaryScorer, _positive_int
from .strategies import (DEFAULT_STRATEGY, SEALS, KCenterGreedy, NeighbourhoodDiverse, PoolState,
                         RandomSampling, SoCBI, SoCBIPrefilter, Strategy, UncertaintySampling,
                         make_strategy)

__all__ = [
    "ActiveLearner", "TorchMLPClassifier", "SessionFileError", "atomic_write",
    "canonical_strategy", "STRATEGY_NAMES", "DISPLAY_NAMES", "make_classifier",
]

FORMAT = "socbi-session"
FORMAT_VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]

# Canonical strategy keys (make_strategy accepts them) and their table names.
STRATEGY_NAMES = ("random", "least_confidence", "margin", "entropy", "kcenter", "seals",
                  "lc_socbi", "kcenter_socbi", "socbi", "ascmr", "margin_div", "margin_div_cover", "margin_div_kc",
                  "class_balanced")
DISPLAY_NAMES = {
    "random": "random", "least_confidence": "LC", "margin": "margin", "entropy": "entropy",
    "kcenter": "KCenter", "seals": "SEALS", "lc_socbi": "LC-So-CBI",
    "kcenter_socbi": "KCenter-So-CBI", "socbi": "So-CBI", "ascmr": "ASCMR",
    "margin_div": "margin-div", "margin_div_cover": "margin-div-cover", "margin_div_kc": "margin-div-kc",
    "class_balanced": "class-balanced",
}
_ALIASES = {"lc": "least_confidence", "k_center": "kcenter", "kcentre": "kcenter",
            "k_center_socbi": "kcenter_socbi", "least_confidence_socbi": "lc_socbi",
            "lcsocbi": "lc_socbi", "kcentersocbi": "kcenter_socbi", "classbalanced": "class_balanced",
            "class_balanced_selection": "class_balanced"}


# Fields ActiveLearner.load reads; a file lacking one is refused by read_file.
_META_KEYS = ("n_samples", "dim", "round", "strategy", "strategy_options", "k", "backend", "space",
              "pool_options", "threads", "model", "seed", "rng_state", "round_seed", "budget",
              "target_accuracy", "max_rounds", "class_names", "fingerprint", "features_is_embeddings",
              "log", "pending", "checksums")
_META_TYPES = {"n_samples": int, "dim": int, "round": int, "round_seed": int, "strategy": str,
               "strategy_options": dict, "pool_options": dict, "model": dict, "rng_state": dict,
               "fingerprint": str, "log": list, "checksums": dict}


class SessionFileError(ValueError):
    """A session file is missing, truncated, corrupt, or from another format version."""


def canonical_strategy(name: Any) -> str:
    """The canonical key of a strategy name ("LC-So-CBI" -> "lc_socbi"); ValueError if unknown."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"strategy must be a non-empty name, got {name!r}; choose one of "
                         f"{', '.join(STRATEGY_NAMES)}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_").replace("so_cbi", "socbi")
    key = _ALIASES.get(key, key)
    if key not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    return key


# =============================================================================== files
def _sha256(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(np.ascontiguousarray(arr).view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def _fingerprint(x: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes. O(size)."""
    return _sha256(np.ascontiguousarray(x))


# =============================================================================== models
class TorchMLPClassifier:
    """A small torch classifier with the sklearn ``fit`` / ``predict_proba`` / ``score`` face.

    One hidden ReLU layer (``hidden`` units; 0 = a linear softmax model), trained with
    Adam (``lr``, ``weight_decay``) on cross-entropy for ``epochs`` passes in minibatches
    of ``batch_size`` -- the So-CBI paper's protocol uses Adam, lr 1e-3, batch 256 and 40
    epochs. Training is seeded (``seed``): parameters and minibatch order come from a
    private torch generator, so two fits on the same data give the same weights (on CPU).

    Complexity: fit O(epochs * n * (d * hidden + hidden * C)); predict the same per row
    without the epochs. Thread safety: fit mutates the object; predictions only read it.
    """

    def __init__(self, hidden: int = 128, epochs: int = 40, lr: float = 1e-3,
                 batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0) -> None:
        for name, val, lo in (("hidden", hidden, 0), ("epochs", epochs, 1), ("batch_size", batch_size, 1),
                              ("seed", seed, 0)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {val!r}")
        for name, val in (("lr", lr), ("weight_decay", weight_decay)):
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not math.isfinite(val) \
                    or val < 0 or (name == "lr" and val == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, "
                                 f"got {val!r}")
        self.hidden = int(hidden)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        self.classes_: Optional[np.ndarray] = None
        self._net: Any = None

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        return dict(hidden=self.hidden, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                    weight_decay=self.weight_decay, seed=self.seed)

    @staticmethod
    def _torch() -> Any:
        try:
            import torch
        except ImportError as exc:
            raise ImportError("model='mlp' needs torch: pip install torch==2.13.0 (the CPU build), "
                              "or use model='logreg'") from exc
        return torch

    def _build(self, d: int, c: int) -> Any:
        torch = self._torch()
        nn = torch.nn
        if self.hidden > 0:
            return nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, c))
        return nn.Sequential(nn.Linear(d, c))

    def fit(self, X: Any, y: Any) -> "TorchMLPClassifier":
        torch = self._torch()
        x = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        yy = np.asarray(y)
        classes, codes = np.unique(yy, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"TorchMLPClassifier needs at least 2 classes, got {classes.tolist()}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = self._build(x.shape[1], classes.size)
            gen = torch.Generator().manual_seed(self.seed + 1)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            xt = torch.from_numpy(x)
            yt = torch.from_numpy(codes.astype(np.int64))
            loss_fn = torch.nn.CrossEntropyLoss()
            net.train()
            for _ in range(self.epochs):
                order = torch.randperm(x.shape[0], generator=gen)
                for s in range(0, x.shape[0], self.batch_size):
                    b = order[s:s + self.batch_size]
                    opt.zero_grad()
                    loss = loss_fn(net(xt[b]), yt[b])
                    loss.backward()
                    opt.step()
            net.eval()
        self._net = net
        self.classes_ = classes
        return self

    def _check_fitted(self) -> None:
        if self._net is None:
            raise ValueError("TorchMLPClassifier is not fitted; call fit(X, y) first")

    def predict_proba(self, X: Any) -> np.ndarray:
        self._check_fitted()
        torch = self._torch()
        x = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        with torch.inference_mode():
            p = torch.softmax(self._net(torch.from_numpy(x)).double(), dim=1)
        return p.numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X: Any, y: Any) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def get_state(self) -> Dict[str, np.ndarray]:
        """Weights and classes as plain numpy arrays (what a session file stores)."""
        self._check_fitted()
        out = {f"w/{k}": v.detach().cpu().numpy().copy() for k, v in self._net.state_dict().items()}
        out["classes"] = np.asarray(self.classes_)
        return out

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        """Restore :meth:`get_state` output; ValueError if shapes do not fit."""
        torch = self._torch()
        if "classes" not in state:
            raise SessionFileError("saved torch classifier has no 'classes' array")
        classes = np.asarray(state["classes"])
        weights = {k[2:]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("w/")}
        first = weights.get("0.weight")
        if first is None:
            raise SessionFileError("saved torch classifier has no first-layer weights")
        net = self._build(int(first.shape[1]), int(classes.size))
        try:
            net.load_state_dict(weights)
        except RuntimeError as exc:
            raise SessionFileError(f"saved torch classifier does not fit hidden={self.hidden}: {exc}") from exc
        net.eval()
        self._net = net
        self.classes_ = classes

    def __repr__(self) -> str:
        return (f"TorchMLPClassifier(hidden={self.hidden}, epochs={self.epochs}, lr={self.lr:g}, "
                f"batch_size={self.batch_size})")


def make_classifier(spec: Any = "logreg", **params: Any) -> Any:
    """A fresh unfitted classifier: ``"logreg"`` (sklearn LogisticRegression, max_iter 2000),
    ``"mlp"`` (:class:`TorchMLPClassifier`), or a clone of an sklearn-style estimator."""
    if isinstance(spec, str):
        if spec == "logreg":
            try:
                from sklearn.linear_model import LogisticRegression
            except ImportError as exc:
                raise ImportError("model='logreg' needs scikit-learn: pip install 'socbi[knn]'") from exc
            kw = dict(max_iter=2000)
            kw.update(params)
            return LogisticRegression(**kw)
        if spec == "mlp":
            return TorchMLPClassifier(**params)
        raise ValueError(f"model must be 'logreg', 'mlp' or an estimator with fit/predict_proba, "
                         f"got {spec!r}")
    if not (hasattr(spec, "fit") and hasattr(spec, "predict_proba")):
        raise ValueError(f"model must have fit() and predict_proba() (sklearn style), got "
                         f"{type(spec).__name__}; or pass model='logreg' / 'mlp'")
    try:
        from sklearn.base import clone
        return clone(spec)
    except Exception:  # not an sklearn estimator: refit the object itself
        return spec


def _model_spec(model: Any) -> Tuple[Any, Dict[str, Any]]:
    """(spec for make_classifier, JSON description) of a ``model`` argument."""
    if model is None or model == "logreg":
        return "logreg", {"kind": "logreg"}
    if model == "mlp":
        return "mlp", {"kind": "mlp", "params": TorchMLPClassifier().get_params()}
    if isinstance(model, TorchMLPClassifier):
        return model, {"kind": "mlp", "params": model.get_params()}
    if isinstance(model, str):
        raise ValueError(f"model must be 'logreg', 'mlp' or an estimator with fit/predict_proba, got {model!r}")
    make_classifier(model)  # validates
    return model, {"kind": "custom", "class": f"{type(model).__module__}.{type(model).__qualname__}"}


def _skops_dump(model: Any) -> Optional[np.ndarray]:
    """``model`` in skops' secure format as a byte array, or None when skops is missing or
    cannot represent it (then load needs ``model=``). Never pickles."""
    try:
        import skops.io as sio
    except ImportError:
        return None
    try:
        return np.frombuffer(sio.dumps(model), dtype=np.uint8)
    except Exception:  # skops refuses types it cannot serialise safely
        return None


def _skops_load(blob: np.ndarray, path: PathLike, trusted: Optional[Sequence[str]]) -> Any:
    """Restore a :func:`_skops_dump` array with skops' secure loader: only skops' default
    trusted types (scikit-learn, numpy, scipy) and the ``trusted`` type names load; any
    other type raises SessionFileError naming it. Never unpickles."""
    try:
        import skops.io as sio
    except ImportError as exc:
        raise ImportError("this session stores its scikit-learn model in skops format; install it: "
                          "pip install 'socbi[knn]' (or pip install skops), or pass model=") from exc
    data = blob.tobytes()
    extra = list(trusted or [])
    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in extra]
    if untrusted:
        raise SessionFileError(f"{str(path)!r}: the saved model uses types skops does not trust by default: "
                               f"{untrusted}; review them and pass trusted={untrusted!r} to load(), or pass "
                               f"model= (an unfitted estimator) to refit instead")
    try:
        return sio.loads(data, trusted=extra or None)
    except Exception as exc:
        raise SessionFileError(f"{str(path)!r}: the saved model does not load ({type(exc).__name__}: {exc}); "
                               f"pass model= (an unfitted estimator) to refit instead") from exc


# =============================================================================== helpers
class _TimedScorer:
    """Forwards to a BoundaryScorer; accumulates the time spent ranking by count (T_sort)."""

    def __init__(self, scorer: BoundaryScorer) -> None:
        self._scorer = scorer
        self.sort_s = 0.0

    def select(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._scorer.select(*args, **kwargs)
        finally:
            self.sort_s += time.perf_counter() - t0

    def counts(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._scorer.counts(*args, **kwargs)
        finally:
            self.sort_s += time.perf_counter() - t0

    def __len__(self) -> int:
        return len(self._scorer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)


def _base_of(strategy: Strategy) -> Strategy:
    base = strategy
    while isinstance(base, (SoCBIPrefilter, SEALS, NeighbourhoodDiverse)) or _is_class_balanced(base):
        base = base.base
    return base


def _needs_model(strategy: Strategy) -> bool:
    if _is_class_balanced(strategy):  # predicts the classes of unlabelled samples
        return strategy.predicted is None or isinstance(_base_of(strategy.base), UncertaintySampling)
    return isinstance(_base_of(strategy), UncertaintySampling)


def _is_class_balanced(strategy: Strategy) -> bool:
    return isinstance(strategy, ClassBalancedSelection)


def _check_synthetic(synthetic: Any, labels: np.ndarray) -> np.ndarray:
    """The (n,) bool mask of generated rows; each must carry its class (never queried)."""
    n = labels.shape[0]
    if synthetic is None:
        return np.zeros(n, bool)
    mask = np.asarray(synthetic)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"synthetic must be a bool mask with one entry per sample ({n},), got dtype "
                         f"{mask.dtype} shape {mask.shape}; pass e.g. AugmentedSet.synthetic")
    bad = np.flatnonzero(mask & (labels < 0))
    if bad.size:
        raise ValueError(f"synthetic rows {bad[:5].tolist()} have no class (label -1); generated rows must "
                         f"carry the class they were generated for, they are never queried for labels")
    return mask.copy()


def _as_labels(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    """int64 (n,) array of labels, -1 = unlabelled; ValueError naming the problem."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one entry per sample ({n}), got shape "
                         f"{arr.shape}; use -1 for unlabelled samples")
    if arr.dtype.kind not in "iuf" and arr.size:
        raise ValueError(f"{name} must hold integers (class >= 0, or -1 = unlabelled), got dtype "
                         f"{arr.dtype}; map class names to numbers first")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}[{i}] = {arr[i].item()!r} is not an integer; pass a class >= 0, "
                             f"or -1 for an unlabelled sample")
    out = arr.astype(np.int64)
    bad = out < -1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {out[i]} is negative; pass a class >= 0, or -1 for an "
                         f"unlabelled sample")
    return out


class _DenseLabels:
    """Label state with one entry per sample: ``arr`` (n,) int64 (-1 = unlabelled) and the
    (n,) bool ``synthetic`` mask. :class:`ActiveLearner`'s state (its save format stores
    these two arrays). O(n) memory; counts are kept, so :attr:`count` is O(1).

    Stores are values: :meth:`with_added` returns a new store, so a failed
    :meth:`ActiveLearner.teach` leaves the old one untouched.
    """

    def __init__(self, arr: np.ndarray, synthetic: np.ndarray) -> None:
        self.arr, self.syn = arr, synthetic
        self.n = int(arr.shape[0])
        self.count = int(np.count_nonzero(arr >= 0))
        self.n_synthetic = int(np.count_nonzero(synthetic))

    def ids(self) -> np.ndarray:
        """Ascending labelled ids. O(n)."""
        return np.flatnonzero(self.arr >= 0).astype(np.int64)

    def values(self) -> np.ndarray:
        """Labels of :meth:`ids`, in that order."""
        return self.arr[self.arr >= 0]

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Label of each id (-1 = unlabelled)."""
        return self.arr[ids]

    def is_synthetic(self, ids: np.ndarray) -> np.ndarray:
        return self.syn[ids]

    def dense(self) -> np.ndarray:
        """(n,) int64 labels: the store's own array (do not modify)."""
        return self.arr

    def mask(self) -> np.ndarray:
        """(n,) bool, True where labelled (a new array). O(n)."""
        return self.arr >= 0

    def synthetic_mask(self) -> np.ndarray:
        return self.syn

    def with_added(self, ids: np.ndarray, lab: np.ndarray) -> "_DenseLabels":
        """A new store with ``lab`` for the (unlabelled, distinct) ``ids``. O(n) copy."""
        new = self.arr.copy()
        new[ids] = lab
        return _DenseLabels(new, self.syn)


class _SparseLabels:
    """Label state of the labelled ids only: ascending ``ids``, their ``vals`` and
    synthetic flags. What :class:`socbi.distributed.DistributedLearner` keeps, so its
    driver holds O(|L|) label state whatever n is. Per-sample arrays (:meth:`dense`,
    :meth:`mask`, :meth:`synthetic_mask`) are built on demand, O(n) each call.
    Lookups are O(len(ids) log |L|); :meth:`with_added` is O(|L| + b log b)."""

    def __init__(self, n: int, ids: np.ndarray, vals: np.ndarray, syn: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self.n = int(n)
        self._ids = np.asarray(ids, np.int64)[order]
        self._vals = np.asarray(vals, np.int64)[order]
        self._syn = np.asarray(syn, bool)[order]
        self.count = int(self._ids.size)
        self.n_synthetic = int(np.count_nonzero(self._syn))

    @classmethod
    def from_dense(cls, arr: np.ndarray, synthetic: np.ndarray) -> "_SparseLabels":
        ids = np.flatnonzero(arr >= 0)
        return cls(arr.shape[0], ids, arr[ids], synthetic[ids])

    def _pos(self, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, np.int64)
        if self._ids.size == 0:
            return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
        pos = np.minimum(np.searchsorted(self._ids, ids), self._ids.size - 1)
        return pos, self._ids[pos] == ids

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def values(self) -> np.ndarray:
        return self._vals.copy()

    def get(self, ids: np.ndarray) -> np.ndarray:
        pos, hit = self._pos(ids)
        return np.where(hit, self._vals[pos] if self._ids.size else -1, -1).astype(np.int64)

    def is_synthetic(self, ids: np.ndarray) -> np.ndarray:
        pos, hit = self._pos(ids)
        return hit & (self._syn[pos] if self._ids.size else False)

    def __getitem__(self, i: Any) -> Any:
        """Membership, shaped like a bool mask (``labelled[i]``) for readers such as
        :func:`socbi.labelling.read_labels`."""
        return self._pos(np.asarray(i))[1]

    def dense(self) -> np.ndarray:
        out = np.full(self.n, -1, np.int64)
        out[self._ids] = self._vals
        return out

    def mask(self) -> np.ndarray:
        out = np.zeros(self.n, bool)
        out[self._ids] = True
        return out

    def synthetic_mask(self) -> np.ndarray:
        out = np.zeros(self.n, bool)
        out[self._ids[self._syn]] = True
        return out

    def with_added(self, ids: np.ndarray, lab: np.ndarray) -> "_SparseLabels":
        return _SparseLabels(self.n, np.concatenate([self._ids, ids]), np.concatenate([self._vals, lab]),
                             np.concatenate([self._syn, np.zeros(len(ids), bool)]))


def _sparse_label_arg(labels: Any, n: int, synthetic: Any = None) -> _SparseLabels:
    """Labels for a distributed session as an O(|L|) store: None (all unlabelled), an (n,)
    array (-1 = unlabelled, as for ActiveLearner), a dict ``{id: class}``, or a pair
    ``(ids, classes)``. ``synthetic``: an (n,) bool mask or the ids of generated rows
    (each must be labelled). ValueError naming the problem."""
    if labels is None:
        ids, vals = np.empty(0, np.int64), np.empty(0, np.int64)
    elif isinstance(labels, dict) or (isinstance(labels, tuple) and len(labels) == 2
                                      and np.ndim(labels[0]) == 1):
        pairs = (list(labels.keys()), list(labels.values())) if isinstance(labels, dict) else labels
        ids = _check_ids(np.asarray(pairs[0]), n, name="labels ids")
        vals = _as_labels(pairs[1], ids.size, name="labels classes")
        if np.unique(ids).size != ids.size:
            raise ValueError("labels ids must be distinct; pass one class per labelled id")
        if (vals < 0).any():
            i = int(np.flatnonzero(vals < 0)[0])
            raise ValueError(f"labels give id {int(ids[i])} the class {int(vals[i])}; pass classes >= 0 "
                             f"for labelled ids and leave unlabelled ids out")
    else:
        arr = _as_labels(labels, n)
        ids = np.flatnonzero(arr >= 0)
        vals = arr[ids]
    syn = np.zeros(ids.size, bool)
    if synthetic is not None:
        s = np.asarray(synthetic)
        sid = np.flatnonzero(s) if s.dtype == bool and s.shape == (n,) else _check_ids(s, n, name="synthetic")
        order = np.argsort(ids, kind="stable")
        ids, vals = ids[order], vals[order]
        pos = np.minimum(np.searchsorted(ids, sid), max(ids.size - 1, 0))
        ok = ids[pos] == sid if ids.size else np.zeros(sid.size, bool)
        if not ok.all():
            raise ValueError(f"synthetic rows {sid[~ok][:5].tolist()} have no class (label -1); generated "
                             f"rows must carry the class they were generated for")
        syn = np.zeros(ids.size, bool)
        syn[pos] = True
    return _SparseLabels(n, ids, vals, syn)


class _DeprecatedCall:
    """Mixin for the values of properties that used to be methods: calling the value
    (the old ``learner.pending()`` spelling) still works, with a DeprecationWarning."""

    _name = ""

    def __call__(self) -> Any:
        import warnings

        warnings.warn(f"ActiveLearner.{self._name} is a property now; drop the parentheses "
                      f"(learner.{self._name})", DeprecationWarning, stacklevel=2)
        return self

    @staticmethod
    def wrap(value: Any, name: str) -> Any:
        if isinstance(value, np.ndarray):
            out = value.view(_CallableIds)
        else:
            out = _CallableDict(value)
        out._name = name
        return out


class _CallableIds(_DeprecatedCall, np.ndarray):
    pass


class _CallableDict(_DeprecatedCall, dict):
    pass


def _implausible_classes(classes: np.ndarray) -> str:
    """Why a set of class indices (ascending, distinct) looks like a typo rather than a
    class range whose other classes are not sampled yet, or "". Without a declared class
    count a class may not jump past twice the range below it: {0, 1, 3} and {3, 7} are
    plausible, {0..9, 1000} and {0..9, 99} are not. Fewer than two classes (a cold
    start) always are. O(len(classes))."""
    if classes.size < 2:
        return ""
    jump = np.flatnonzero(classes[1:] >= 2 * (classes[:-1] + 1))
    if jump.size == 0:
        return ""
    i = int(jump[0]) + 1
    return (f"class {int(classes[i])} is far above the classes below it ({classes[:i][-5:].tolist()}), "
            f"which leaves classes {int(classes[i - 1]) + 1}..{int(classes[i]) - 1} without an example")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# =============================================================================== session
class ActiveLearner:
    """An active-learning session over a fixed set of samples.

    Parameters
    ----------
    embeddings : (n, d) float array
        One finite embedding per sample; sample ids are the row numbers. Neighbour
        counts (So-CBI), K-Center and SEALS use them. Not copied when already
        C-contiguous float32: do not modify it afterwards.
    labels : (n,) int array, optional
        Class >= 0 for samples labelled at the start, -1 for unlabelled ones (default:
        all unlabelled).
    strategy : str
        Default ``margin_div_cover`` (recommended: margin, no two picks of a batch from
        one neighbourhood, a cold-start share for samples no labelled neighbourhood
        covers). Or one of ``random, least_confidence (lc), margin, entropy, kcenter,
        seals, lc_socbi, kcenter_socbi, socbi, ascmr, margin_div, class_balanced`` (case
        and '-' insensitive: "LC-So-CBI"). ``class_balanced`` follows the session's labels
        and predicts the classes of unlabelled samples with its classifier.
    strategy_options : dict, optional
        Keyword arguments for :func:`socbi.strategies.make_strategy`, e.g.
        ``{"candidate_factor": 3.0}`` for the So-CBI prefilters.
    k, backend, space, pool_options, threads :
        The So-CBI scorer: K neighbours per labelled sample, ``"hnsw"`` or ``"exact"``
        pool, ``"l2"`` or ``"cosine"``, pool keyword arguments, index update threads.
    model : ``"logreg"`` (default), ``"mlp"`` (torch), or an sklearn-style estimator
        It is cloned and refit on all labels after every :meth:`teach`. Needed by
        the uncertainty strategies (LC, margin, entropy, LC-So-CBI, SEALS) once two
        classes are labelled.
    features : array, optional
        Model inputs, one row per sample (default: ``embeddings`` as given -- the model
        sees the caller's dtype, e.g. float64; only the neighbour pool uses float32).
    eval_set : (X, y), optional
        Held-out model inputs and labels; accuracy is logged after each round.
    budget : int or float, optional
        Stop when this many samples are labelled (a float in (0, 1] is a fraction of n).
    target_accuracy : float, optional
        Stop when the held-out accuracy reaches it (needs ``eval_set``).
    max_rounds : int, optional
        Stop after this many :meth:`teach` rounds.
    sources : sequence of str, optional
        A reference per sample (file name, URL, database key) for exported batches;
        default ``"row:<id>"``.
    class_names : sequence of str, optional
        Names of classes 0..C-1, accepted by :meth:`teach` and :meth:`import_labels`.
    n_classes : int, optional
        The number of classes C (default: ``len(class_names)``). Every label must lie in
        0..C-1; the constructor and :meth:`teach` reject others with ValueError. Without
        ``class_names`` or ``n_classes`` the class count is unknown, so labels (initial,
        ``eval_set`` and taught) are checked for plausibility once two classes are known:
        a class may not jump past twice the range below it -- a label 1000 beside classes
        0..9, or ``teach(ids, [99] * 5)`` there, is refused, while classes not sampled yet
        ({0, 1, 3}, {3, 7}) are fine. Pass ``n_classes`` for an exact check (and for many
        classes with a sparse start, e.g. {3, 17, 42}).
    seed : int
        Seeds the strategy choices, the So-CBI tie-break and the torch model.
    synthetic : (n,) bool array, optional
        Marks generated rows (e.g. ``AugmentedSet.synthetic`` of rows appended with
        :func:`socbi.longtail.fill_with_synthetic`). Each must carry its class in
        ``labels``: they train the classifier and count as labelled neighbours, are never
        queried or taught, do not count towards ``budget``, and are marked in
        :meth:`export_batch` / :meth:`export_labels` files, the log
        (``labelled_real`` / ``labelled_synthetic``), :meth:`balance` and saved files.

    Complexity: construction builds the pool and counts (exact: O(n |L| d); HNSW:
    O(n log n)); :meth:`query` costs the strategy (LC-So-CBI: O(m + B) for m
    candidates from the index plus m model evaluations); :meth:`teach` of b labels costs
    b + r pool queries, one index update and a model refit.

    Thread safety: not synchronised; call methods from one thread at a time.
    """

    def __init__(self, embeddings: Any, labels: Any = None, *, strategy: str = DEFAULT_STRATEGY,
                 strategy_options: Optional[Dict[str, Any]] = None, k: int = 10,
                 backend: str = "hnsw", space: str = "l2",
                 pool_options: Optional[Dict[str, Any]] = None, threads: int = 1,
                 model: Any = "logreg", features: Any = None,
                 eval_set: Optional[Tuple[Any, Any]] = None, budget: Union[int, float, None] = None,
                 target_accuracy: Optional[float] = None, max_rounds: Optional[int] = None,
                 sources: Optional[Sequence[str]] = None,
                 class_names: Optional[Sequence[str]] = None, n_classes: Optional[int] = None,
                 seed: int = 0, progress: bool = True, synthetic: Any = None,
                 _restore: Optional[Dict[str, Any]] = None) -> None:
        x, given = self._rows_arg(embeddings)
        n = x.shape[0]
        if n == 0:
            raise ValueError("embeddings has no rows; pass at least one sample")
        self._store = self._labels_arg(labels, synthetic, n)
        self._seed = _positive_int("seed", seed, lo=0)
        self.strategy_name = canonical_strategy(strategy)
        self.strategy_options = dict(strategy_options or {})
        if space == "cosine" and self.strategy_name in ("kcenter", "kcenter_socbi"):
            self.strategy_options.setdefault("metric", "cosine")  # K-Center follows the space
        try:
            self._strategy = make_strategy(self.strategy_name, **self.strategy_options)
        except TypeError as exc:
            raise ValueError(f"strategy_options {self.strategy_options!r} do not fit strategy "
                             f"{self.strategy_name!r}: {exc}") from exc
        if _is_class_balanced(self._strategy) and self._strategy.labels is None:
            self._strategy.labels = lambda: self._store.dense()  # follows the session's labels
        if backend not in ("hnsw", "exact"):
            raise ValueError(f"backend must be 'hnsw' or 'exact', got {backend!r}")
        if space not in ("l2", "cosine"):
            raise ValueError(f"space must be 'l2' or 'cosine', got {space!r}")
        self.k = _positive_int("k", k)
        self.backend = backend
        self.space = space
        self.pool_options = dict(pool_options or {})
        self.threads = threads
        self._model_arg, self._model_desc = _model_spec(model)
        if features is not None:
            if not hasattr(features, "__len__") or isinstance(features, (str, bytes)):
                raise ValueError(f"features must be an array with one model input per sample, got "
                                 f"{type(features).__name__}; pass an (n, ...) array or leave it None")
            if len(features) != n:
                raise ValueError(f"features has {len(features)} rows but embeddings has {n}; pass one "
                                 f"model input per sample")
        self._features = features
        # The model trains on the caller's array (float64 stays float64); the float32 copy
        # ``x`` is for the neighbour pool and the index only.
        self._features_are_embeddings = False
        if features is None and given is not None and given.dtype != x.dtype:
            self._features = given
            self._features_are_embeddings = True
        self.eval_set = self._check_eval_set(eval_set)
        # a budget counts labels paid for: synthetic rows are neither paid for nor counted
        self.budget = self._check_budget(budget, n - self._store.n_synthetic)
        if target_accuracy is not None:
            if not isinstance(target_accuracy, (int, float)) or isinstance(target_accuracy, bool) \
                    or not 0 < target_accuracy <= 1:
                raise ValueError(f"target_accuracy must be a number in (0, 1], got {target_accuracy!r}")
            if self.eval_set is None:
                raise ValueError("target_accuracy needs eval_set=(X_test, y_test) to measure accuracy")
        self.target_accuracy = None if target_accuracy is None else float(target_accuracy)
        self.max_rounds = None if max_rounds is None else _positive_int("max_rounds", max_rounds)
        for arg, val in (("sources", sources), ("class_names", class_names)):
            if val is not None and (isinstance(val, (str, bytes)) or not hasattr(val, "__iter__")):
                raise ValueError(f"{arg} must be a sequence of strings, got {type(val).__name__} "
                                 f"{val!r:.40}; pass a list")
        if sources is not None:
            sources = [str(s) for s in sources]
            if len(sources) != n:
                raise ValueError(f"sources has {len(sources)} entries but there are {n} samples; "
                                 f"pass one reference per sample")
        self.sources = sources
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names must be distinct")
        self._n_classes_declared = n_classes is not None
        self._classes_seen = np.empty(0, np.int64)
        if _restore is not None and "n_classes" in _restore:
            self.n_classes = _restore["n_classes"]  # as saved (labels taught since were checked)
        else:
            self.n_classes = self._check_n_classes(n_classes, self._store)
        self.progress = bool(progress)
        self.n_samples = n
        self._x = x
        self._fingerprint = (_restore or {}).get("fingerprint") or _fingerprint(x)

        if _restore is not None:
            self.scorer = _restore["scorer"]
        else:
            opts = dict(self.pool_options)
            if backend == "hnsw":
                opts.setdefault("seed", self._seed)
            self.scorer = BoundaryScorer(x, self.k, labelled=self._store.mask(), backend=backend, space=space,
                                         pool_options=opts, threads=threads, seed=self._seed,
                                         progress=self.progress)
        self._rng = np.random.default_rng(self._seed)
        self.round = 0
        self.log: List[Dict[str, Any]] = []
        self._pending: Optional[Dict[str, Any]] = None
        self.model: Any = None
        self.accuracy: Optional[float] = None
        if _restore is not None:
            self._rng.bit_generator.state = _restore["rng_state"]
            self._round_seed = int(_restore["round_seed"])
            self.round = int(_restore["round"])
            self.log = list(_restore["log"])
            self._pending = _restore.get("pending")
            if _restore.get("model") is not None:
                self.model = _restore["model"]
            else:
                self.model = self._fit(self._store, self._round_seed)
            self.accuracy = self._evaluate(self.model)
        else:
            self._round_seed = self._next_seed()
            self.model = self._fit(self._store, self._round_seed)
            self.accuracy = self._evaluate(self.model)

    # ------------------------------------------------------------------ validation
    def _rows_arg(self, embeddings: Any) -> Tuple[Any, Optional[np.ndarray]]:
        """``(rows the session indexes by id, the caller's array)``: here the (n, d)
        float32 matrix, checked once (O(n d)); :class:`socbi.distributed.DistributedLearner`
        returns a :class:`socbi.storage.RowsView` instead and checks nothing on the driver."""
        x = _check_embeddings(embeddings, None, name="embeddings")
        return x, (embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings))

    def _labels_arg(self, labels: Any, synthetic: Any, n: int) -> Any:
        """The label store: one int64 label and one synthetic flag per sample here
        (:class:`_DenseLabels`); O(|L|) in DistributedLearner."""
        lab = np.full(n, -1, np.int64) if labels is None else _as_labels(labels, n)
        return _DenseLabels(lab, _check_synthetic(synthetic, lab))

    def _check_eval_set(self, eval_set: Any) -> Optional[Tuple[Any, np.ndarray]]:
        if eval_set is None:
            return None
        if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 2:
            raise ValueError("eval_set must be a pair (X_test, y_test)")
        xe, ye = eval_set
        if not hasattr(xe, "__len__"):
            raise ValueError(f"eval_set[0] must be an array of held-out inputs, got {type(xe).__name__}; "
                             f"pass (X_test, y_test)")
        ye = np.asarray(ye)
        if ye.ndim != 1 or len(xe) != ye.shape[0] or ye.shape[0] == 0:
            raise ValueError(f"eval_set has {len(xe)} inputs and labels of shape {ye.shape}; pass "
                             f"one label per held-out input (and at least one)")
        return xe, ye

    def _check_n_classes(self, n_classes: Any, store: Any) -> Optional[int]:
        """The class count C (declared, or inferred from the labels and eval set); every
        known label must lie in 0..C-1. None when nothing declares or shows a class."""
        names = self.class_names
        if n_classes is not None:
            c = _positive_int("n_classes", n_classes, hint="; pass the number of classes (>= 1)")
            if names is not None and len(names) != c:
                raise ValueError(f"n_classes={c} but class_names has {len(names)} names; pass one name "
                                 f"per class, or leave n_classes out")
        elif names is not None:
            c = len(names)
        else:
            c = None
        seen = store.values()
        if self.eval_set is not None and self.eval_set[1].dtype.kind in "iu":
            seen_eval = self.eval_set[1][self.eval_set[1] >= 0].astype(np.int64)
        else:
            seen_eval = np.empty(0, np.int64)
        if c is not None:
            if seen.size and seen.max() >= c:
                j = int(np.flatnonzero(seen >= c)[0])
                i = int(store.ids()[j])
                raise ValueError(f"labels[{i}] = {int(seen[j])} is not a class index: there are {c} classes "
                                 f"(0..{c - 1}, from {'class_names' if n_classes is None else 'n_classes'}); "
                                 f"fix the label or declare more classes")
            return c
        classes = np.unique(np.concatenate([seen, seen_eval]))
        self._classes_seen = classes
        why = _implausible_classes(classes)
        if why:
            c = int(classes[-1]) + 1
            where = "labels" if seen.size and seen.max() == c - 1 else "eval_set labels"
            raise ValueError(f"{where} hold class {c - 1} but {why}; pass n_classes= (or class_names=) if "
                             f"there really are {c} classes, else fix the label")
        return None  # not declared: labels are checked for plausibility only

    @staticmethod
    def _check_budget(budget: Any, n: int) -> Optional[int]:
        if budget is None:
            return None
        if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
            raise ValueError(f"budget must be a label count (int) or a fraction in (0, 1], got {budget!r}")
        if isinstance(budget, (float, np.floating)):
            if not 0 < budget <= 1:
                raise ValueError(f"budget as a fraction must lie in (0, 1], got {budget!r}; pass an "
                                 f"int for a label count")
            return max(1, int(round(float(budget) * n)))
        if budget < 1:
            raise ValueError(f"budget must be at least 1 label, got {budget!r}")
        return int(budget)

    def _next_seed(self) -> int:
        return int(self._rng.integers(0, 2**31 - 1))

    # ------------------------------------------------------------------ state
    @property
    def labels(self) -> np.ndarray:
        """Read-only (n,) int64 view: class of each labelled sample, -1 for unlabelled
        (built on demand, O(n), in DistributedLearner)."""
        return readonly_view(self._store.dense())

    @property
    def embeddings(self) -> np.ndarray:
        return self._x

    @property
    def features(self) -> Any:
        return self._x if self._features is None else self._features

    @property
    def labelled_ids(self) -> np.ndarray:
        """Ascending labelled ids (a new array). O(n) (O(|L|) in DistributedLearner)."""
        return _DeprecatedCall.wrap(self._store.ids(), "labelled_ids")

    @property
    def unlabelled_ids(self) -> np.ndarray:
        """Ascending unlabelled ids (a new array). O(n)."""
        return _DeprecatedCall.wrap(np.flatnonzero(~self._store.mask()).astype(np.int64), "unlabelled_ids")

    @property
    def n_labelled(self) -> int:
        """Labelled samples (real and synthetic). O(1)."""
        return self._store.count

    @property
    def synthetic(self) -> np.ndarray:
        """Read-only (n,) bool view: True for generated rows (labelled from the start, never queried)."""
        return readonly_view(self._store.synthetic_mask())

    @property
    def n_synthetic(self) -> int:
        return self._store.n_synthetic

    @property
    def n_real_labelled(self) -> int:
        """Labelled real samples: the labels paid for, which the budget counts."""
        return self.n_labelled - self.n_synthetic

    def _labelled_lookup(self) -> Any:
        """``lookup[i]`` -> True when sample ``i`` is labelled: the (n,) mask here, a
        membership test over the labelled ids in DistributedLearner."""
        return self._store.mask()

    def balance(self) -> Dict[str, Any]:
        """Class counts of the labelled set, real and synthetic apart
        (:func:`socbi.longtail.balance_report`). O(n)."""
        from .longtail import balance_report

        c = len(self.class_names) if self.class_names is not None else None
        return balance_report(self._store.dense(), self._store.synthetic_mask(), c)

    def source(self, i: int) -> str:
        """The reference of sample ``i`` (``sources[i]`` or ``"row:<i>"``)."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.n_samples:
            raise ValueError(f"i must be a sample id in [0, {self.n_samples}), got {i!r}")
        return self.sources[i] if self.sources is not None else f"row:{i}"

    @property
    def stop_reason(self) -> Optional[str]:
        """Why the session should stop now, or None (then :attr:`done` is False). O(1)."""
        if self.n_labelled >= self.n_samples:
            return "every sample is labelled"
        if self.budget is not None and self.n_real_labelled >= self.budget:
            return f"label budget reached ({self.n_real_labelled} >= {self.budget})"
        if self.max_rounds is not None and self.round >= self.max_rounds:
            return f"round limit reached ({self.round} rounds)"
        if self.target_accuracy is not None and self.accuracy is not None \
                and self.accuracy >= self.target_accuracy:
            return f"target accuracy reached ({self.accuracy:.4f} >= {self.target_accuracy:.4f})"
        return None

    @property
    def done(self) -> bool:
        """True when a stopping rule holds (:attr:`stop_reason` says which)."""
        return self.stop_reason is not None

    # ------------------------------------------------------------------ model
    def _fit(self, labels: Any, seed: int) -> Any:
        """A classifier fitted on all labelled samples of the label store ``labels``
        (ascending id), or None (< 2 classes). ``seed`` seeds the torch MLP's
        initialisation and minibatch order.
        """
        ids, y = labels.ids(), labels.values()
        if ids.size == 0 or np.unique(y).size < 2:
            return None
        model = make_classifier(self._model_arg)
        if isinstance(model, TorchMLPClassifier):
            model.seed = int(seed)
        model.fit(take_rows(self.features, ids), y)
        return model

    def _evaluate(self, model: Any) -> Optional[float]:
        if model is None or self.eval_set is None:
            return None
        xe, ye = self.eval_set
        if hasattr(model, "score"):
            return float(model.score(xe, ye))
        return float(np.mean(np.asarray(model.predict(xe)) == ye))

    # ------------------------------------------------------------------ rounds
    def _state(self, timed: _TimedScorer) -> PoolState:
        feats = None if self._features is None else self._features
        return PoolState(labelled=self._store.mask(), embeddings=self._x, features=feats,
                         model=self.model, scorer=timed)

    def query(self, n: int) -> np.ndarray:
        """The next ``n`` ids to label, best first. Does not change the labelled set.

        Repeated calls without :meth:`teach` return the same ids (the round's seed is
        fixed when the round begins). Raises ValueError when ``n`` exceeds the unlabelled
        pool, or when the strategy needs a classifier and fewer than two classes are
        labelled. The ids, their boundary counts and the strategy's score for each are
        kept for :meth:`teach`'s log and :meth:`export_batch`. Cost: the strategy's.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        n = int(n)
        avail = self.n_samples - self.n_labelled
        if avail == 0:
            raise ValueError("every sample is labelled; there is nothing left to query")
        if n > avail:
            raise ValueError(f"n={n} exceeds the {avail} unlabelled samples; ask for at most {avail}")
        if _needs_model(self._strategy) and self.model is None:
            raise ValueError(f"strategy {self.strategy_name!r} needs a trained classifier, which needs "
                             f"labelled samples of at least 2 classes (have "
                             f"{np.unique(self._store.values()).size}); label a few first, "
                             f"e.g. with strategy 'kcenter' or 'random'")
        timed = _TimedScorer(self.scorer)
        t0 = time.perf_counter()
        state = self._state(timed)
        ids = self._strategy.select(state, n, seed=self._round_seed)
        t_select = time.perf_counter() - t0
        t_sort = timed.sort_s
        scores, score_name = self._criterion(state, ids)
        counts = self.scorer.counts(ids)
        cand = None
        if isinstance(self._strategy, SoCBIPrefilter):
            cand = self._strategy.candidate_count(n, avail)
        self._pending = dict(round=self.round, n=n, ids=ids.tolist(), counts=counts.tolist(),
                             scores=_jsonable(scores), score_name=score_name, candidates=cand,
                             t_select=t_select, t_sort=t_sort)
        return ids

    def _criterion(self, state: PoolState, ids: np.ndarray) -> Tuple[np.ndarray, str]:
        """The base strategy's value for each picked id (why it was picked)."""
        base = _base_of(self._strategy)
        if isinstance(base, UncertaintySampling):
            p = state.predict_proba(ids)
            if base.measure == "margin":
                # Export the margin itself, p1 - p2 in [0, 1] (smaller = more uncertain, picked
                # first), not the strategy's internal sort key -(p1 - p2).
                top2 = -np.partition(-p, 1, axis=1)[:, :2]
                return top2[:, 0] - top2[:, 1], "margin"
            return base.uncertainty(p), base.measure
        if isinstance(base, KCenterGreedy):
            d2 = base.min_distances(state)[ids]
            return np.sqrt(d2.astype(np.float64)), "distance_to_labelled"
        if isinstance(base, SoCBI):
            return self.scorer.counts(ids).astype(np.float64), "boundary_count"
        informativeness = getattr(base, "informativeness", None)
        if type(base).__name__ == "ASCMR" and callable(informativeness):
            try:
                return np.asarray(informativeness(state, ids).total, dtype=np.float64), "informativeness"
            except (TypeError, ValueError):
                pass
        return np.full(ids.size, np.nan), "none"

    @property
    def pending(self) -> Optional[Dict[str, Any]]:
        """The last :meth:`query`'s batch (ids, counts, scores, times) until :meth:`teach`,
        else None. A copy."""
        return None if self._pending is None else _DeprecatedCall.wrap(dict(self._pending), "pending")

    def _check_teach(self, ids: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray]:
        ids = _check_ids(ids, self.n_samples, name="ids")
        lab = np.asarray(labels)
        if lab.ndim == 0:
            lab = lab.reshape(1)
        if lab.ndim != 1 or lab.shape[0] != ids.size:
            raise ValueError(f"labels has shape {lab.shape} for {ids.size} ids; pass one label per id")
        if lab.size and lab.dtype.kind in "US":
            lab = self._map_names(lab)
        lab = _as_labels(lab, ids.size)
        if (lab < 0).any():
            i = int(np.flatnonzero(lab < 0)[0])
            raise ValueError(f"label of id {int(ids[i])} is {int(lab[i])}; teach() takes classes >= 0 "
                             f"(leave unlabelled samples out instead of passing -1)")
        gen = self._store.is_synthetic(ids)
        if gen.any():
            raise ValueError(f"ids {ids[gen][:5].tolist()} are synthetic rows (generated with their class); "
                             f"they are never labelled -- pass only unlabelled real ids")
        already = self._store.get(ids) >= 0
        if already.any():
            raise ValueError(f"ids {ids[already][:5].tolist()} are labelled already; pass only "
                             f"unlabelled ids")
        if self.n_classes is not None and (lab >= self.n_classes).any():
            j = int(np.flatnonzero(lab >= self.n_classes)[0])
            source = "class_names" if self.class_names is not None else "n_classes"
            raise ValueError(f"label {int(lab[j])} of id {int(ids[j])} is not a class index: the session "
                             f"has {self.n_classes} classes (0..{self.n_classes - 1}, from {source}); fix "
                             f"the label, or declare the classes with n_classes= / class_names= when "
                             f"creating the session")
        if self.n_classes is None:
            seen = np.union1d(self._classes_seen, self._store.values())
            why = _implausible_classes(np.union1d(seen, lab)) if seen.size >= 2 else ""
            if why:
                j = int(np.argmax(lab))
                raise ValueError(f"label {int(lab[j])} of id {int(ids[j])} is not a class index the session "
                                 f"can accept: {why}; fix the label, or declare the classes with "
                                 f"n_classes= / class_names= when creating the session")
        return ids, lab

    def _map_names(self, names: np.ndarray) -> np.ndarray:
        if self.class_names is None:
            raise ValueError(f"labels are strings ({names[0]!r}, ...) but the session has no "
                             f"class_names; pass integer classes or set class_names")
        lookup = {c: i for i, c in enumerate(self.class_names)}
        out = np.empty(names.size, np.int64)
        for j, s in enumerate(names.tolist()):
            if s not in lookup:
                raise ValueError(f"label {s!r} is not one of class_names {self.class_names}")
            out[j] = lookup[s]
        return out

    def teach(self, ids: Any, labels: Any) -> Dict[str, Any]:
        """Record ``labels`` for ``ids`` (unlabelled, distinct); returns this round's log entry.

        Order: validate everything, fit the new classifier, then move the ids out of the
        pool and index (counts updated), then commit labels and model. If validation,
        the fit or the count update raises, the session is unchanged. The round counter
        advances and a new round seed is drawn. Cost: the scorer's round plus a refit.
        """
        ids, lab = self._check_teach(ids, labels)
        if ids.size == 0:
            raise ValueError("ids is empty; teach() needs at least one labelled sample")
        new_labels = self._store.with_added(ids, lab)
        # The next round's seed comes from a copy of the generator, committed at the end.
        rng = np.random.Generator(type(self._rng.bit_generator)())
        rng.bit_generator.state = self._rng.bit_generator.state
        next_seed = int(rng.integers(0, 2**31 - 1))
        t0 = time.perf_counter()
        model = self._fit(new_labels, next_seed)
        t_model = time.perf_counter() - t0
        stats = self.scorer.label(ids)  # validated above; restores the pool if a query fails
        # ---- commit
        self._store = new_labels
        self.model = model
        self._rng = rng
        self._round_seed = next_seed
        accuracy = self._evaluate(model)
        self.accuracy = accuracy
        pend = self._pending
        entry: Dict[str, Any] = dict(round=self.round, strategy=self.strategy_name,
                                     ids=ids.tolist(), labels=lab.tolist(),
                                     labelled=self.n_labelled, accuracy=accuracy)
        if pend is not None and set(pend["ids"]) >= set(entry["ids"]):
            pos = {i: j for j, i in enumerate(pend["ids"])}
            sel = [pos[i] for i in entry["ids"]]
            entry.update(source="query", rank=[j + 1 for j in sel],
                         counts=[pend["counts"][j] for j in sel],
                         scores=[pend["scores"][j] for j in sel], score_name=pend["score_name"],
                         candidates=pend["candidates"], t_select=pend["t_select"],
                         t_sort=pend["t_sort"])
        else:
            entry.update(source="manual", t_select=0.0, t_sort=0.0)
        if self.n_synthetic:
            entry.update(labelled_real=self.n_real_labelled, labelled_synthetic=self.n_synthetic)
        entry.update(t_search=stats.delete_s + stats.query_s, t_update=stats.index_s + stats.other_s,
                     t_model=t_model, repairs=stats.repairs, updates=stats.updates)
        self.log.append(entry)
        self.round += 1
        self._pending = None
        return entry

    def run(self, oracle: Any, batch: int, *, save_path: Optional[PathLike] = None,
            save_every: int = 1, progress: Optional[bool] = None,
            on_round: Optional[Callable[["ActiveLearner", Dict[str, Any]], None]] = None
            ) -> List[Dict[str, Any]]:
        """Query and teach until a stopping rule holds; returns the new log entries.

        ``oracle`` is a callable ``ids -> labels`` or an (n,) array of true labels. The
        last batch is shortened to the label budget. With ``save_path`` the session is
        saved atomically every ``save_every`` rounds and at the end. Without any
        stopping rule (budget, target_accuracy, max_rounds) it runs until every sample is
        labelled. Progress (socbi's policy: a bar on a terminal, else a log line every 10
        s) counts labels up to where the active stopping rule ends the run: the budget,
        ``max_rounds`` rounds of ``batch``, or every sample (a target accuracy may stop
        it earlier).
        """
        batch = _positive_int("batch", batch)
        save_every = _positive_int("save_every", save_every)
        if callable(oracle):
            ask = oracle
        else:
            truth = np.asarray(oracle)
            if truth.shape != (self.n_samples,):
                raise ValueError(f"oracle must be a callable or an array of {self.n_samples} true "
                                 f"labels, got shape {truth.shape}")
            ask = lambda ids: truth[ids]  # noqa: E731
        show = self.progress if progress is None else bool(progress)
        total = self._labels_at_stop(batch)
        bar = None
        if show:
            from ._progress import progress as _progress_policy

            bar = _progress_policy(total=total, initial=min(self.n_real_labelled, total),
                                   desc=f"run {self.strategy_name}", unit="label")
        out: List[Dict[str, Any]] = []
        try:
            while not self.done:
                n = batch
                if self.budget is not None:
                    n = min(n, self.budget - self.n_real_labelled)
                n = min(n, self.n_samples - self.n_labelled)
                ids = self.query(n)
                entry = self.teach(ids, ask(ids))
                out.append(entry)
                if bar is not None:
                    bar.update(len(ids))
                if save_path is not None and (self.round % save_every == 0 or self.done):
                    self.save(save_path)
                if on_round is not None:
                    on_round(self, entry)
        finally:
            if bar is not None:
                bar.close()
        return out

    def _labels_at_stop(self, batch: int) -> int:
        """How many samples will be labelled when :meth:`run` stops by budget, round limit
        or exhaustion (the earliest); the progress total. O(1)."""
        total = self.n_samples - self.n_synthetic  # generated rows are never asked for
        if self.budget is not None:
            total = min(total, self.budget)
        if self.max_rounds is not None:
            total = min(total, self.n_real_labelled + max(0, self.max_rounds - self.round) * batch)
        return max(total, self.n_real_labelled)

    def learning_curve(self) -> Tuple[np.ndarray, np.ndarray]:
        """(labels after each round, held-out accuracy after it) from :attr:`log`, both
        of length ``round``; accuracy is NaN where no ``eval_set`` was measured. O(rounds)."""
        n = np.array([e["labelled"] for e in self.log], dtype=np.int64)
        acc = np.array([np.nan if e.get("accuracy") is None else e["accuracy"] for e in self.log],
                       dtype=np.float64)
        return n, acc

    def plot_learning_curve(self, path: Optional[PathLike] = None, *, ax: Any = None) -> Any:
        """Held-out accuracy against labels, one point per round (from :attr:`log`).

        Draws on ``ax`` when given, else on a new :class:`matplotlib.figure.Figure`
        (the object-oriented API: the caller's backend and pyplot state are untouched);
        with ``path`` the figure is also written there (PNG/SVG/PDF by suffix,
        atomically). Returns the Figure. ValueError without rounds or an ``eval_set``.
        """
        n, acc = self.learning_curve()
        if n.size == 0 or np.isnan(acc).all():
            raise ValueError("no learning curve yet: it needs at least one teach() round with "
                             "eval_set=(X_test, y_test) given to the session")
        if path is not None:
            path = check_file_target(path, example="curve.png")
        from matplotlib.figure import Figure

        fig = ax.figure if ax is not None else Figure(figsize=(5.5, 4))
        ax = ax if ax is not None else fig.subplots()
        ax.plot(n, acc, marker="o", ms=3, label=DISPLAY_NAMES.get(self.strategy_name, self.strategy_name))
        ax.set_xlabel("labelled samples")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"{DISPLAY_NAMES.get(self.strategy_name, self.strategy_name)}: {self.round} rounds")
        ax.grid(alpha=0.3)
        if path is not None:
            fmt = path.suffix.lstrip(".").lower() or "png"
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=110)
            data = buf.getvalue()
            atomic_write(path, lambda fh: fh.write(data))
        return fig

    # ------------------------------------------------------------------ labelling files
    def export_batch(self, path: PathLike, n: Optional[int] = None, *, fmt: Optional[str] = None) -> Path:
        """Write the next batch for human labellers (CSV or JSON by suffix or ``fmt``).

        Uses the pending :meth:`query` when ``n`` is None or equals its size, else
        queries ``n``. Rows: id, rank, score, score_name, count, source, and an empty
        label to fill in. Written atomically. Returns the path.
        """
        pend = self._pending
        if pend is None or (n is not None and n != pend["n"]):
            if n is None:
                raise ValueError("no pending batch: pass n (how many samples to export) or call query(n)")
            self.query(n)
            pend = self._pending
        assert pend is not None
        ids = np.asarray(pend["ids"], np.int64)
        out = _export_batch(path, ids=ids, scores=pend["scores"], counts=pend["counts"],
                            sources=[self.source(int(i)) for i in ids], score_name=pend["score_name"],
                            round=self.round, strategy=self.strategy_name, fmt=fmt)
        if self.n_synthetic:  # the session holds generated rows: say which exported ones are (none)
            from .longtail import annotate_batch_file

            annotate_batch_file(out, self._store.synthetic_mask(), fmt=fmt)
        return out

    def export_labels(self, path: PathLike, *, fmt: Optional[str] = None) -> Path:
        """Write the labelled set -- id, label, synthetic (true/false), source -- as CSV or JSON.

        JSON also holds ``summary`` (:meth:`balance`). Real and generated rows are told
        apart in every row; written atomically. O(n).
        """
        import csv

        from .longtail import _fmt

        kind = _fmt(path, fmt)
        ids = self._store.ids()
        names = self.class_names
        rows = [dict(id=int(i), label=int(c), synthetic=bool(g), source=self.source(int(i)))
                for i, c, g in zip(ids, self._store.values(), self._store.is_synthetic(ids))]
        if names is not None:
            for r in rows:
                r["class_name"] = names[r["label"]]
        if kind == "json":
            text = json.dumps(dict(format="socbi-labels", round=self.round, strategy=self.strategy_name,
                                   summary=self.balance(), items=rows), indent=1) + "\n"
        else:
            buf = io.StringIO()
            cols = ["id", "label", "synthetic", "source"] + (["class_name"] if names is not None else [])
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(cols)
            for r in rows:
                w.writerow([("true" if r[c] else "false") if c == "synthetic" else r[c] for c in cols])
            text = buf.getvalue()
        data = text.encode("utf-8")
        return atomic_write(path, lambda fh: fh.write(data))

    def import_labels(self, path: PathLike, *, allow_partial: bool = False,
                      fmt: Optional[str] = None) -> Dict[str, Any]:
        """Read labels from a CSV/JSON batch file and :meth:`teach` them.

        Errors (ValueError naming the line/id): unknown ids (out of range, or not in the
        pending batch when there is one), duplicates, missing labels, labels already
        known, and -- unless ``allow_partial`` -- ids of the pending batch left out.
        Nothing is taught unless the whole file is valid.
        """
        expected = None if self._pending is None else self._pending["ids"]
        ids, labels = read_labels(path, n_samples=self.n_samples, expected_ids=expected,
                                  allow_partial=allow_partial, class_names=self.class_names,
                                  labelled=self._labelled_lookup(), fmt=fmt)
        return self.teach(ids, labels)

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike, *, store_embeddings: bool = True) -> Path:
        """Save the whole session to one file, atomically (see the module docstring).

        Stores labels, round, generator state and round seed, log, pending batch,
        stopping rules, the neighbour pool (HNSW graph or exact vectors) and scorer
        lists, the index contents (checked on load), the model (torch MLP weights; a
        scikit-learn estimator, unfitted and fitted, in skops format; ``"logreg"`` is
        refit on load), embeddings / features / eval set when
        ``store_embeddings`` and they are numeric arrays, each with a SHA-256. A crash
        at any point leaves the previous file loadable. O(n (d + K)) plus the pool.
        """
        path = check_file_target(path, example="session.socbi")  # before any work: a directory or missing parent is refused
        arrays: Dict[str, np.ndarray] = {"labels": self._store.dense()}
        with tempfile.TemporaryDirectory(prefix="socbi-save-") as tmp:
            prefix = Path(tmp) / "pool"
            self.scorer.save(prefix)
            for name in sorted(os.listdir(tmp)):
                data = (Path(tmp) / name).read_bytes()
                arrays[f"pool/{name[len('pool'):]}"] = np.frombuffer(data, dtype=np.uint8)
        unl = self.unlabelled_ids
        arrays["index/ids"] = unl
        arrays["index/counts"] = self.scorer.counts(unl) if unl.size else np.empty(0, np.int64)
        stored = {"embeddings": False, "features": False, "eval_set": False}
        if store_embeddings:
            arrays["embeddings"] = self._x
            stored["embeddings"] = True
            if isinstance(self._features, np.ndarray) and self._features.dtype.kind in "biuf":
                arrays["features"] = self._features
                stored["features"] = True
            if self.eval_set is not None:
                xe, ye = self.eval_set
                xe_a = np.asarray(xe) if isinstance(xe, np.ndarray) else None
                if xe_a is not None and xe_a.dtype.kind in "biuf" and ye.dtype.kind in "biuf":
                    arrays["eval/x"] = xe_a
                    arrays["eval/y"] = ye
                    stored["eval_set"] = True
        if isinstance(self.model, TorchMLPClassifier):
            for k, v in self.model.get_state().items():
                arrays[f"model/{k}"] = v
        if self._model_desc["kind"] == "custom":
            # The estimator (unfitted) and its fitted state, in skops' secure format, so
            # load() resumes without model= and without unpickling.
            spec = _skops_dump(make_classifier(self._model_arg))
            if spec is not None:
                arrays["model/spec.skops"] = spec
                fitted = None if self.model is None else _skops_dump(self.model)
                if fitted is not None:
                    arrays["model/fitted.skops"] = fitted
        if self.sources is not None:
            arrays["sources"] = np.asarray(self.sources, dtype=str)
        if self.n_synthetic:
            arrays["synthetic"] = self._store.synthetic_mask()
        meta = dict(
            format=FORMAT, version=FORMAT_VERSION, n_samples=self.n_samples, dim=int(self._x.shape[1]),
            round=self.round, strategy=self.strategy_name, strategy_options=self.strategy_options,
            k=self.k, backend=self.backend, space=self.space, pool_options=self.pool_options,
            threads=self.threads, model=self._model_desc, seed=self._seed,
            rng_state=self._rng.bit_generator.state, round_seed=self._round_seed,
            budget=self.budget, target_accuracy=self.target_accuracy, max_rounds=self.max_rounds,
            class_names=self.class_names, n_classes=self.n_classes,
            n_classes_declared=self._n_classes_declared, fingerprint=self._fingerprint,
            features_is_embeddings=self._features is None,
            features_are_embeddings=self._features_are_embeddings, stored=stored,
            log=self.log, pending=self._pending,
            checksums={k: _sha256(np.asarray(v)) for k, v in arrays.items()},
        )
        meta_bytes = json.dumps(_jsonable(meta), sort_keys=True).encode()
        arrays["__meta__"] = np.frombuffer(meta_bytes, dtype=np.uint8)
        arrays["__meta_sha256__"] = np.frombuffer(hashlib.sha256(meta_bytes).hexdigest().encode(),
                                                  dtype=np.uint8)

        def write(fh: Any) -> None:
            np.savez(fh, **arrays)

        return atomic_write(path, write)

    @staticmethod
    def read_file(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        """(metadata, arrays) of a session file, checksums verified; never unpickles.

        Raises :class:`SessionFileError` for a missing, truncated, corrupt or foreign
        file. O(file size).
        """
        path = Path(path)
        if not path.is_file():
            raise SessionFileError(f"no session file at {str(path)!r}; pass the path given to save()")
        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise SessionFileError(f"{str(path)!r} is a single .npy array, not a socbi session file; "
                                       f"pass the path given to save()")
            with z:
                arrays = {k: z[k] for k in z.files}
        except SessionFileError:
            raise
        except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled arrays), EOFError, CRC
            raise SessionFileError(f"{str(path)!r} is not a readable socbi session file ({type(exc).__name__}: "
                                   f"{exc}); it may be truncated or corrupt -- restore a backup or "
                                   f"start a new session") from exc
        if "__meta__" not in arrays or "__meta_sha256__" not in arrays:
            raise SessionFileError(f"{str(path)!r} has no session metadata: it is not a socbi session file, "
                                   f"or it is truncated or corrupt")
        meta_bytes = arrays.pop("__meta__").tobytes()
        digest = arrays.pop("__meta_sha256__").tobytes().decode(errors="replace")
        if hashlib.sha256(meta_bytes).hexdigest() != digest:
            raise SessionFileError(f"{str(path)!r}: metadata checksum mismatch; the file is corrupt")
        try:
            meta = json.loads(meta_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SessionFileError(f"{str(path)!r}: the metadata is not JSON ({type(exc).__name__}); it is "
                                   f"not a socbi session file, or it is corrupt") from exc
        if not isinstance(meta, dict):
            raise SessionFileError(f"{str(path)!r}: the metadata is a JSON {type(meta).__name__}, not an "
                                   f"object; it is not a socbi session file")
        if meta.get("format") != FORMAT:
            raise SessionFileError(f"{str(path)!r} is a {meta.get('format')!r} file, not a socbi session")
        if meta.get("version") != FORMAT_VERSION:
            raise SessionFileError(f"{str(path)!r} has session format version {meta.get('version')}, this "
                                   f"socbi reads version {FORMAT_VERSION}; use a matching socbi version")
        missing_keys = [k for k in _META_KEYS if k not in meta]
        if missing_keys:
            raise SessionFileError(f"{str(path)!r}: the metadata lacks {missing_keys[:5]}; the file is corrupt "
                                   f"or was not written by ActiveLearner.save()")
        for k, kind in _META_TYPES.items():
            if not isinstance(meta[k], kind):
                raise SessionFileError(f"{str(path)!r}: metadata field {k!r} has type "
                                       f"{type(meta[k]).__name__}; the file is corrupt")
        sums = meta["checksums"]
        if set(sums) != set(arrays):
            missing = sorted(set(sums) ^ set(arrays))
            raise SessionFileError(f"{str(path)!r}: arrays {missing[:5]} missing or unexpected; the file "
                                   f"is corrupt")
        for k, v in arrays.items():
            if _sha256(v) != sums[k]:
                raise SessionFileError(f"{str(path)!r}: checksum mismatch in array {k!r}; the file is corrupt")
        lacking = [k for k in ("labels", "index/ids", "index/counts") if k not in arrays]
        if lacking or "kind" not in meta["model"]:
            raise SessionFileError(f"{str(path)!r}: no {lacking or ['model kind']} in the file; it is corrupt "
                                   f"or was not written by ActiveLearner.save()")
        return meta, arrays

    @classmethod
    def load(cls, path: PathLike, embeddings: Any = None, *, features: Any = None, model: Any = None,
             eval_set: Optional[Tuple[Any, Any]] = None, sources: Optional[Sequence[str]] = None,
             progress: bool = True, trusted: Optional[Sequence[str]] = None) -> "ActiveLearner":
        """Resume a session saved by :meth:`save`; the next :meth:`query` equals the
        uninterrupted run's.

        ``embeddings`` (and ``features`` / ``eval_set``) are needed only if they were
        not stored; given ones must match the saved fingerprint. ``model`` is needed
        only for an estimator skops cannot store: a scikit-learn estimator comes back
        from the file (skops' secure format, never unpickled; the fitted one as saved,
        so predictions match), ``"logreg"`` is refit on the saved labels, the torch MLP
        reloads its weights. ``trusted`` lists extra type names the skops loader may
        build (skops' defaults cover scikit-learn, numpy and scipy); a file naming any
        other type is refused with the names to review. A ``model=`` given refits it.
        Raises :class:`SessionFileError` for bad files, ValueError for mismatched
        arguments. O(file size + n K).
        """
        meta, arrays = cls.read_file(path)
        n, dim = int(meta["n_samples"]), int(meta["dim"])
        if embeddings is None:
            if "embeddings" not in arrays:
                raise ValueError(f"{str(path)!r} was saved without embeddings; pass embeddings= "
                                 f"(the same {n} x {dim} array)")
            x = arrays["embeddings"]
        else:
            x = _check_embeddings(embeddings, None, name="embeddings")
            if x.shape != (n, dim) or _fingerprint(x) != meta["fingerprint"]:
                raise ValueError(f"embeddings ({x.shape[0]} x {x.shape[1]}) differ from the {n} x {dim} "
                                 f"array the session was saved with; pass the same embeddings")
        if features is None and not meta["features_is_embeddings"]:
            if "features" not in arrays and meta.get("features_are_embeddings") and embeddings is not None:
                features = embeddings  # the model's inputs were the caller's embeddings
            elif "features" not in arrays:
                raise ValueError(f"{str(path)!r} was saved with separate model features that were not "
                                 f"stored; pass features=")
            features = arrays["features"]
        if eval_set is None and "eval/x" in arrays:
            eval_set = (arrays["eval/x"], arrays["eval/y"])
        if sources is None and "sources" in arrays:
            sources = arrays["sources"].tolist()
        desc = meta["model"]
        restored_model = None
        if desc["kind"] == "custom":
            if model is None:
                if "model/spec.skops" not in arrays:
                    raise ValueError(f"{str(path)!r} was saved with a model skops cannot store "
                                     f"({desc['class']}); pass model= (an unfitted estimator of that "
                                     f"kind) to load it")
                model = _skops_load(arrays["model/spec.skops"], path, trusted)
                if "model/fitted.skops" in arrays:
                    restored_model = _skops_load(arrays["model/fitted.skops"], path, trusted)
        elif model is None:
            model = "logreg" if desc["kind"] == "logreg" else TorchMLPClassifier(**desc["params"])
        if desc["kind"] == "mlp" and isinstance(model, TorchMLPClassifier):
            state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
            if state:
                restored_model = TorchMLPClassifier(**model.get_params())
                restored_model.set_state(state)
        labels = arrays["labels"]
        if labels.shape != (n,):
            raise SessionFileError(f"{str(path)!r}: labels has shape {labels.shape}, expected ({n},)")
        with tempfile.TemporaryDirectory(prefix="socbi-load-") as tmp:
            for key, blob in arrays.items():
                if key.startswith("pool/"):
                    suffix = key[len("pool/"):]
                    if "/" in suffix or "\\" in suffix or not suffix.startswith("."):
                        raise SessionFileError(f"{str(path)!r}: bad pool entry name {key!r}")
                    (Path(tmp) / f"pool{suffix}").write_bytes(blob.tobytes())
            try:
                scorer = BoundaryScorer.load(Path(tmp) / "pool", x, threads=meta["threads"],
                                             progress=progress)
            except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
                raise SessionFileError(f"{str(path)!r}: the saved neighbour pool does not load ({exc})") from exc
        if not np.array_equal(np.asarray(scorer.labelled_mask), labels >= 0):
            raise SessionFileError(f"{str(path)!r}: the saved pool and labels disagree; the file is corrupt")
        unl = scorer.unlabelled_ids()
        held = scorer.counts(unl) if unl.size else np.empty(0, np.int64)
        if not (np.array_equal(arrays["index/ids"], unl) and np.array_equal(arrays["index/counts"], held)):
            raise SessionFileError(f"{str(path)!r}: the counts rebuilt from the saved neighbour lists differ "
                                   f"from the saved index contents; the file is corrupt")
        restore = dict(scorer=scorer, fingerprint=meta["fingerprint"], rng_state=meta["rng_state"],
                       round_seed=meta["round_seed"], round=meta["round"], log=meta["log"],
                       pending=meta["pending"], model=restored_model)
        if "n_classes" in meta:  # files from before n_classes infer it from the labels
            restore["n_classes"] = meta["n_classes"]
        return cls(x, labels, strategy=meta["strategy"], strategy_options=meta["strategy_options"],
                   k=meta["k"], backend=meta["backend"], space=meta["space"],
                   pool_options=meta["pool_options"], threads=meta["threads"], model=model,
                   features=features, eval_set=eval_set, budget=meta["budget"],
                   target_accuracy=meta["target_accuracy"], max_rounds=meta["max_rounds"],
                   sources=sources, class_names=meta["class_names"],
                   n_classes=meta["n_classes"] if meta.get("n_classes_declared") else None,
                   seed=meta["seed"], progress=progress, synthetic=arrays.get("synthetic"),
                   _restore=restore)

    def check(self, recount: Optional[bool] = None) -> None:
        """Verify scorer invariants and that labels agree with the pool; AssertionError if not.

        ``recount`` (default: only for the exact backend, where it must hold exactly;
        HNSW answers depend on which graph nodes are deleted) also compares the counts
        with a from-scratch recount. O(n + |L| K) plus |L| pool queries for a recount.
        """
        if not np.array_equal(np.asarray(self.scorer.labelled_ids()), self._store.ids()):
            raise AssertionError("labels and the scorer's labelled set disagree")
        self.scorer.check(recount=recount)

    def __repr__(self) -> str:
        syn = f", synthetic={self.n_synthetic}" if self.n_synthetic else ""
        return (f"ActiveLearner(n={self.n_samples}, labelled={self.n_labelled}{syn}, round={self.round}, "
                f"strategy={self.strategy_name!r}, backend={self.backend!r}, k={self.k})")


# =============================================================================== CLI: socbi select
def _err(cmd: str, msg: str) -> int:
    return fail(cmd, msg)


def _read_matrix(path: str, what: str) -> np.ndarray:
    """A .npy (no pickle) or .csv (numbers, optional header row) file as an array."""
    p = input_file(path, f"--{what}", "a .npy or .csv file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(p, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"--{what}: {path!r} is not a readable .npy array ({exc}); save it with "
                             f"numpy.save") from exc
    if suffix in (".csv", ".txt"):
        text = p.read_text().splitlines()
        rows = [r for r in text if r.strip()]
        if not rows:
            raise ValueError(f"--{what}: {path!r} is empty")
        skip = 0
        try:
            [float(v) for v in rows[0].split(",")]
        except ValueError:
            skip = 1  # a header row
        try:
            arr = np.loadtxt(io.StringIO("\n".join(rows[skip:])), delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"--{what}: {path!r} has a non-numeric or ragged row ({exc}); every row must "
                             f"hold the same number of comma-separated numbers") from exc
        return arr
    raise ValueError(f"--{what}: {path!r} has suffix {suffix or '(none)'}; use .npy or .csv")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "select", help="pick the next samples to label from embeddings and partial labels",
        description="Pick the next --n samples to label. Unlabelled samples carry the label -1. "
                    "Writes id, rank, score, score_name, count, source and an empty label column "
                    "(CSV, or JSON for a .json --out) to --out or stdout.")
    p.add_argument("--embeddings", required=True, metavar="X.npy",
                   help="(n, d) embeddings: .npy, or .csv with one sample per row (optional header)")
    p.add_argument("--labels", required=True, metavar="y.npy",
                   help="(n,) labels, -1 for unlabelled: .npy, or .csv with one label per row")
    p.add_argument("--n", type=int, required=True, help="how many samples to pick")
    p.add_argument("--strategy", default=DEFAULT_STRATEGY,
                   help=f"one of {', '.join(STRATEGY_NAMES)} (default {DEFAULT_STRATEGY})")
    p.add_argument("--k", type=int, default=10, help="So-CBI neighbours per labelled sample (default 10)")
    p.add_argument("--backend", choices=["auto", "hnsw", "exact"], default="auto",
                   help="neighbour pool: exact up to 20,000 samples, else HNSW (default auto)")
    p.add_argument("--space", choices=["l2", "cosine"], default="l2")
    p.add_argument("--candidate-factor", type=float, default=None,
                   help="So-CBI prefilter size as a multiple of --n (default 3)")
    p.add_argument("--n-classes", type=int, default=None, metavar="C",
                   help="number of classes; labels must lie in 0..C-1 (default: inferred from --labels, "
                        "which must then hold an example of every class 0..max)")
    p.add_argument("--model", choices=["logreg", "mlp"], default="logreg",
                   help="classifier for the uncertainty strategies (mlp needs torch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", metavar="FILE", default=None,
                   help="text file with one reference (path, URL, key) per sample, for the output")
    p.add_argument("--out", default=None, metavar="PATH", help="output .csv or .json (default: CSV on stdout)")
    p.add_argument("--save-session", default=None, metavar="PATH",
                   help="also save the session (for ActiveLearner.load / import_labels)")
    p.add_argument("--synthetic", default=None, metavar="MASK.npy",
                   help="(n,) bool mask of generated rows (labelled with their class; never selected)")
    p.add_argument("--base", default=None, metavar="STRATEGY",
                   help="with --strategy class_balanced: the strategy inside each class (default random)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_select_main)


def _select_main(args: argparse.Namespace) -> int:
    try:
        x = _read_matrix(args.embeddings, "embeddings")
        y = _read_matrix(args.labels, "labels")
        if x.ndim != 2:
            return _err("select", f"--embeddings: expected a 2-D (samples x dimension) array, got shape {x.shape}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            return _err("select", f"--labels: expected one label per sample (a 1-D array or a one-column "
                                  f"CSV), got shape {y.shape}")
        if y.shape[0] != x.shape[0]:
            return _err("select", f"--labels has {y.shape[0]} entries but --embeddings has {x.shape[0]} rows; "
                                  f"pass one label per sample (-1 = unlabelled)")
        try:
            labels = _as_labels(y, x.shape[0], name="--labels")
        except ValueError as exc:
            return _err("select", str(exc))
        if x.dtype.kind not in "biuf" or not np.isfinite(x.astype(np.float64)).all():
            return _err("select", f"--embeddings must be finite numbers; {args.embeddings!r} has "
                                  f"NaN/inf or non-numeric values")
        n_unl = int((labels < 0).sum())
        if n_unl == 0:
            return _err("select", "--labels has no -1 entries: every sample is labelled, nothing to select")
        if args.n < 1 or args.n > n_unl:
            return _err("select", f"--n {args.n} must lie in [1, {n_unl}] (the unlabelled samples)")
        if args.k < 1:
            return _err("select", f"--k {args.k} must be a positive integer")
        strategy = canonical_strategy(args.strategy)
        options: Dict[str, Any] = {}
        if args.candidate_factor is not None:
            if strategy not in ("lc_socbi", "kcenter_socbi"):
                return _err("select", f"--candidate-factor applies to lc_socbi and kcenter_socbi, not {strategy}")
            options["candidate_factor"] = args.candidate_factor
        if args.base is not None:
            if strategy != "class_balanced":
                return _err("select", f"--base applies to --strategy class_balanced, not {strategy}")
            options["base"] = canonical_strategy(args.base)
        synthetic = None
        if args.synthetic is not None:
            synthetic = _read_matrix(args.synthetic, "synthetic")
            synthetic = synthetic.reshape(-1) if synthetic.ndim == 2 and synthetic.shape[1] == 1 else synthetic
            if synthetic.dtype != bool:
                if not np.isin(synthetic, (0, 1)).all():
                    return _err("select", f"--synthetic {args.synthetic!r} must hold booleans or 0/1 per sample")
                synthetic = synthetic.astype(bool)
            if synthetic.shape != (x.shape[0],):
                return _err("select", f"--synthetic has shape {synthetic.shape}; pass one flag per sample "
                                      f"({x.shape[0]})")
        sources = None
        if args.sources is not None:
            sp = input_file(args.sources, "--sources", "a text file with one reference per line")
            sources = sp.read_text().splitlines()
            if len(sources) != x.shape[0]:
                return _err("select", f"--sources has {len(sources)} lines but there are {x.shape[0]} samples")
        else:
            sources = [f"{Path(args.embeddings).name}#{i}" for i in range(x.shape[0])]
        out_fmt = None
        if args.out is not None:
            output_file(args.out, "--out", "batch.csv")
            suffix = Path(args.out).suffix.lower()
            if suffix not in (".csv", ".json"):
                return _err("select", f"--out {args.out!r}: use a .csv or .json file name")
        if args.save_session is not None:
            output_file(args.save_session, "--save-session", "session.socbi")
        backend = args.backend
        if backend == "auto":
            backend = "exact" if x.shape[0] <= 20000 else "hnsw"
        learner = ActiveLearner(x, labels, strategy=strategy, strategy_options=options,
                                k=min(args.k, max(1, n_unl)), backend=backend, space=args.space,
                                model=args.model, seed=args.seed, sources=sources,
                                n_classes=args.n_classes, progress=not args.no_progress,
                                synthetic=synthetic)
        ids = learner.query(args.n)
        pend = learner.pending
        assert pend is not None
        # Files first, stdout last: a failure exits 2 with nothing printed.
        if args.save_session is not None:
            learner.save(args.save_session)
            print(f"session saved to {args.save_session}", file=sys.stderr)
        if args.out is not None:
            learner.export_batch(args.out, fmt=out_fmt)
            print(f"wrote {ids.size} samples to {args.out} ({pend['score_name']} scores); fill the label "
                  f"column", file=sys.stderr)
        else:
            sys.stdout.write(format_batch(ids=ids, scores=pend["scores"], counts=pend["counts"],
                                          sources=[learner.source(int(i)) for i in ids],
                                          score_name=pend["score_name"], fmt="csv",
                                          round=learner.round, strategy=strategy))
        return 0
    except (ValueError, FileNotFoundError, SessionFileError, ImportError) as exc:
        return _err("select", str(exc))
    except OSError as exc:
        return _err("select", f"{exc.strerror or exc}: {exc.filename or ''}")
