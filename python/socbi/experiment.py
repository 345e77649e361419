"""Experiment runner: the So-CBI evaluation protocol (§4) on real data, strategies side by side.

Protocol, per imbalance setting and seed (everything below is seeded, so every strategy
of one (setting, seed) sees the same split, pool and initial labels):

1. Split the data set into a labelled-on-demand pool and a held-out test set
   (``test_fraction``, stratified).
2. Imbalanced variants (the paper's IF): a seeded half of the classes keeps only
   ``ceil(IF * count)`` of its pool samples (at least ``init_per_class + 1``); the test
   set stays as split (balanced for a balanced data set). IF = 1 is the balanced pool.
3. Initial labelled set: ``init_per_class`` samples of every class (uniform over
   classes), drawn from the pool.
4. Rounds: the strategy picks ``batch`` samples, the oracle labels them, the classifier
   is retrained from scratch on all labels and evaluated on the test set; until
   ``budget`` (a fraction of the pool) is labelled. The last batch is shortened to land
   on the budget exactly.

Metrics per run:

* accuracy after every round, against the number of labels;
* accuracy at ``checkpoints`` (fractions of the pool labelled), linearly interpolated
  between rounds;
* AUBC, the area under the budget curve: the trapezoidal area under accuracy versus
  fraction of the pool labelled, divided by the fraction range (the mean accuracy over
  the budget);
* class imbalance of each selected batch: the L1 distance between the batch's class
  distribution and the uniform one over all C classes, divided by its maximum
  2 (1 - 1/C), so 0 = perfectly balanced and 1 = one class only (the paper's balance
  measure, reported as imbalance so that lower is better); also for all samples
  selected in the run;
* retrieval time per round split as in the paper, T = T_update + T_sort + T_search:
  T_update = score-index erase/update plus count bookkeeping, T_sort = reading the
  ranked counts from the index (``bottom``/``counts``), T_search = neighbour-pool
  deletes and K-NN queries. Strategy time (model inference, K-Center) and model
  training are recorded separately.

Output: a table (mean ± std over seeds), ``results.json`` (every run's curves),
``table.md`` / ``table.csv`` and learning curves (``curves.png`` with matplotlib, else
``curves.svg``).

Runs execute in ``jobs`` worker processes (spawned; BLAS limited to ``blas_threads``
threads each, which on a small shared machine is much faster than oversubscribing).
Results do not depend on ``jobs``. Thread safety: :func:`run_experiment` is safe to call
from one thread at a time.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._checks import positive_int

from ._files import atomic_write
from .session import DISPLAY_NAMES, ActiveLearner, canonical_strategy

__all__ = ["ExperimentConfig", "ExperimentResult", "run_experiment", "load_dataset", "prepare_split",
           "run_one", "summarise", "class_imbalance", "aubc", "DEFAULT_STRATEGIES", "DATASETS"]

DEFAULT_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "kcenter", "seals",
                      "lc_socbi", "kcenter_socbi", "margin_div_cover")
DATASETS = ("digits", "iris", "wine", "breast_cancer")


# =============================================================================== config
@dataclass
class ExperimentConfig:
    """Everything that defines an experiment. :meth:`validate` checks it (ValueError)."""

    dataset: str = "digits"                 # a bundled sklearn set, or a .npz with X and y
    strategies: Tuple[str, ...] = DEFAULT_STRATEGIES
    seeds: Tuple[int, ...] = (0, 1, 2, 3, 4)
    imbalance: Tuple[float, ...] = (1.0,)   # IF values; 1.0 = balanced pool
    test_fraction: float = 0.3
    init_per_class: int = 2
    batch: int = 20
    budget: float = 0.5                     # fraction of the pool labelled at the end
    k: int = 10
    backend: str = "exact"
    space: str = "l2"
    model: str = "logreg"
    candidate_factor: float = 3.0
    checkpoints: Tuple[float, ...] = (0.10, 0.25, 0.50)
    jobs: int = 0                           # worker processes; 0 = all CPUs
    blas_threads: int = 1
    base_dir: str = field(default=".", repr=False)  # where a relative dataset path starts

    def validate(self) -> "ExperimentConfig":
        """Normalise and check every field; ValueError naming the field, value and fix."""
        def pos_int(name: str, lo: int = 1) -> None:
            setattr(self, name, positive_int(name, getattr(self, name), lo))

        def frac(name: str, lo_open: bool = True, hi: float = 1.0) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not (0 < v <= hi if lo_open else 0 <= v <= hi):
                raise ValueError(f"{name} must be a number in (0, {hi:g}], got {v!r}")
            setattr(self, name, float(v))

        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)} or a path to a .npz "
                             f"file with arrays X and y, got {self.dataset!r}")
        if isinstance(self.strategies, str):
            self.strategies = tuple(s for s in self.strategies.split(",") if s.strip())
        if not self.strategies:
            raise ValueError("strategies is empty; name at least one strategy")
        names = tuple(canonical_strategy(s) for s in self.strategies)
        if len(set(names)) != len(names):
            raise ValueError(f"strategies lists a strategy twice: {list(self.strategies)}")
        self.strategies = names
        if isinstance(self.seeds, (int, np.integer)) and not isinstance(self.seeds, bool):
            if self.seeds < 1:
                raise ValueError(f"seeds must be a positive count or a list of seeds, got {self.seeds!r}")
            self.seeds = tuple(range(int(self.seeds)))
        seeds = tuple(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0
                            for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a count or a list of distinct non-negative integers, "
                             f"got {self.seeds!r}")
        self.seeds = tuple(int(s) for s in seeds)
        if isinstance(self.imbalance, (int, float)) and not isinstance(self.imbalance, bool):
            self.imbalance = (self.imbalance,)
        imb = tuple(self.imbalance)
        if not imb or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1
                          for v in imb) or len(set(imb)) != len(imb):
            raise ValueError(f"imbalance must list distinct factors IF in (0, 1] (1 = balanced), "
                             f"got {self.imbalance!r}")
        self.imbalance = tuple(float(v) for v in imb)
        frac("test_fraction", hi=0.9)
        frac("budget")
        pos_int("init_per_class")
        pos_int("batch")
        pos_int("k")
        pos_int("jobs", lo=0)
        pos_int("blas_threads")
        if self.backend not in ("exact", "hnsw"):
            raise ValueError(f"backend must be 'exact' or 'hnsw', got {self.backend!r}")
        if self.space not in ("l2", "cosine"):
            raise ValueError(f"space must be 'l2' or 'cosine', got {self.space!r}")
        if self.model not in ("logreg", "mlp"):
            raise ValueError(f"model must be 'logreg' or 'mlp' (torch), got {self.model!r}")
        cf = self.candidate_factor
        if isinstance(cf, bool) or not isinstance(cf, (int, float)) or not math.isfinite(cf) or cf < 1:
            raise ValueError(f"candidate_factor must be a number >= 1, got {cf!r}")
        self.candidate_factor = float(cf)
        cps = tuple(self.checkpoints)
        if not cps or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 1
                          for c in cps):
            raise ValueError(f"checkpoints must list fractions in (0, 1], got {self.checkpoints!r}")
        self.checkpoints = tuple(float(c) for c in cps)
        return self

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("base_dir")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in fields(cls) if f.name != "base_dir"]


# =============================================================================== data
def load_dataset(name: str, base_dir: str = ".") -> Tuple[np.ndarray, np.ndarray, str]:
    """(X float32, y int64, description) of a bundled sklearn set or an .npz file.

    Bundled: ``digits`` (1797 8x8 images, pixel values / 16), ``iris``, ``wine``,
    ``breast_cancer`` (features standardised). An ``.npz`` must hold ``X`` (or ``x`` /
    ``embeddings``) and ``y`` (or ``labels``); it is read without unpickling.
    """
    if name in DATASETS:
        try:
            from sklearn import datasets
        except ImportError as exc:
            raise ImportError("the bundled data sets need scikit-learn: pip install 'socbi[knn]'") from exc
        ds = getattr(datasets, f"load_{name}")()
        x = np.asarray(ds.data, dtype=np.float64)
        if name == "digits":
            x = x / 16.0
        else:
            x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        return x.astype(np.float32), np.asarray(ds.target, np.int64), f"sklearn {name}"
    path = Path(name)
    if not path.is_absolute():
        path = Path(base_dir) / path
    if path.suffix.lower() != ".npz":
        raise ValueError(f"dataset {name!r} is neither a bundled set ({', '.join(DATASETS)}) nor a .npz file")
    if not path.is_file():
        raise ValueError(f"dataset file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            xk = next((k for k in ("X", "x", "embeddings") if k in files), None)
            yk = next((k for k in ("y", "labels") if k in files), None)
            if xk is None or yk is None:
                raise ValueError(f"dataset file {path.name} must hold arrays X and y, has {sorted(files)}")
            x, y = z[xk], z[yk]
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"dataset file {path.name} is not a readable .npz ({exc})") from exc
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"dataset file {path.name}: X must be (n, d) and y (n,), got {x.shape} and {y.shape}")
    if y.dtype.kind not in "iu" or (y < 0).any():
        raise ValueError(f"dataset file {path.name}: y must hold integer classes >= 0")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64), f"{path.name}"


@dataclass
class Split:
    """One (imbalance, seed) set-up shared by every strategy."""

    x_pool: np.ndarray
    y_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    initial: np.ndarray          # pool ids labelled at the start
    budget_n: int                # labels at the end
    n_classes: int
    minority: List[int]          # classes reduced by IF (empty when balanced)


def prepare_split(x: np.ndarray, y: np.ndarray, cfg: ExperimentConfig, imbalance: float, seed: int) -> Split:
    """The pool / test split, IF reduction and initial labels for one (IF, seed). O(n)."""
    from sklearn.model_selection import train_test_split

    classes = np.unique(y)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=cfg.test_fraction, stratify=y,
                                                      random_state=seed)
    minority: List[int] = []
    if imbalance < 1.0:
        rng = np.random.default_rng([seed, 1])
        minority = sorted(int(c) for c in rng.choice(classes, size=classes.size // 2, replace=False))
        keep = np.ones(y_pool.size, dtype=bool)
        for c in minority:
            members = np.flatnonzero(y_pool == c)
            n_keep = max(cfg.init_per_class + 1, int(math.ceil(imbalance * members.size)))
            if n_keep < members.size:
                drop = rng.choice(members, size=members.size - n_keep, replace=False)
                keep[drop] = False
        x_pool, y_pool = x_pool[keep], y_pool[keep]
    rng = np.random.default_rng([seed, 2])
    initial = []
    for c in classes:
        members = np.flatnonzero(y_pool == c)
        if members.size <= cfg.init_per_class:
            raise ValueError(f"class {int(c)} has {members.size} pool samples, too few for "
                             f"init_per_class={cfg.init_per_class}; lower init_per_class or test_fraction")
        initial.append(rng.choice(members, size=cfg.init_per_class, replace=False))
    initial_ids = np.sort(np.concatenate(initial)).astype(np.int64)
    budget_n = min(int(y_pool.size), int(math.ceil(cfg.budget * y_pool.size - 1e-9)))
    if budget_n <= initial_ids.size:
        raise ValueError(f"budget {cfg.budget:g} of a {y_pool.size}-sample pool is {budget_n} labels, not "
                         f"more than the {initial_ids.size} initial ones; raise budget")
    return Split(np.ascontiguousarray(x_pool), y_pool, x_test, y_test, initial_ids, budget_n,
                 int(classes.size), minority)


# =============================================================================== metrics
def class_imbalance(labels: Any, n_classes: int) -> float:
    """Normalised L1 distance of the class distribution of ``labels`` from uniform, in [0, 1].

    0 when every class is equally represented, 1 when all labels are one class.
    NaN for an empty selection or a single class set-up.
    """
    labels = np.asarray(labels, np.int64)
    if labels.size == 0 or n_classes < 2:
        return float("nan")
    counts = np.bincount(labels, minlength=n_classes)[:n_classes]
    # In integers: L1 * n * C = sum |C c_i - n|, max 2 n (C - 1); exact, so one class gives
    # exactly 1 (floats gave 1.0000000000000002 for C = 6, 9, 10, ...).
    l1 = int(np.abs(n_classes * counts - labels.size).sum())
    return l1 / (2.0 * labels.size * (n_classes - 1))


def aubc(fractions: Sequence[float], accuracy: Sequence[float]) -> float:
    """Area under the budget curve divided by the fraction range (trapezoid rule)."""
    f = np.asarray(fractions, np.float64)
    a = np.asarray(accuracy, np.float64)
    if f.size < 2 or f[-1] <= f[0]:
        return float(a[-1]) if a.size else float("nan")
    return float(np.sum((a[1:] + a[:-1]) * np.diff(f)) / 2.0 / (f[-1] - f[0]))


# =============================================================================== runs
def run_one(cfg: ExperimentConfig, imbalance: float, seed: int, strategy: str,
            data: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Dict[str, Any]:
    """One strategy on one (IF, seed) set-up; returns its curves as JSON-able lists."""
    if data is None:
        x, y, _ = load_dataset(cfg.dataset, cfg.base_dir)
    else:
        x, y = data
    sp = prepare_split(x, y, cfg, imbalance, seed)
    labels = np.full(sp.y_pool.size, -1, np.int64)
    labels[sp.initial] = sp.y_pool[sp.initial]
    options: Dict[str, Any] = {}
    if strategy in ("lc_socbi", "kcenter_socbi"):
        options["candidate_factor"] = cfg.candidate_factor
    pool_options = {"num_threads": 1} if cfg.backend == "hnsw" else {}
    t0 = time.perf_counter()
    learner = ActiveLearner(sp.x_pool, labels, strategy=strategy, strategy_options=options, k=cfg.k,
                            backend=cfg.backend, space=cfg.space, pool_options=pool_options,
                            model=cfg.model, eval_set=(sp.x_test, sp.y_test), budget=sp.budget_n,
                            n_classes=int(max(sp.y_pool.max(), sp.y_test.max())) + 1,
                            seed=seed, progress=False)
    labelled = [learner.n_labelled]
    accuracy = [learner.accuracy]
    batch_imb: List[float] = []
    times: Dict[str, List[float]] = {k: [] for k in ("t_update", "t_sort", "t_search", "t_select", "t_model")}
    selected: List[int] = []
    for entry in learner.run(sp.y_pool, cfg.batch, progress=False):
        labelled.append(entry["labelled"])
        accuracy.append(entry["accuracy"])
        batch_imb.append(class_imbalance(entry["labels"], sp.n_classes))
        selected.extend(entry["labels"])
        for k in times:
            times[k].append(float(entry[k]))
    n_pool = int(sp.y_pool.size)
    return dict(imbalance=imbalance, seed=seed, strategy=strategy, pool=n_pool, test=int(sp.y_test.size),
                initial=int(sp.initial.size), budget=sp.budget_n, minority=sp.minority,
                labelled=labelled, accuracy=accuracy, batch_imbalance=batch_imb,
                selected_imbalance=class_imbalance(selected, sp.n_classes),
                selected_per_class=np.bincount(np.asarray(selected, np.int64),
                                               minlength=sp.n_classes).tolist(),
                times=times, wall_s=time.perf_counter() - t0)


_WORKER_DATA: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}


def _worker_init(blas_threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(blas_threads))
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=blas_threads)  # for the life of this worker
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def _worker_run(cfg_dict: Dict[str, Any], base_dir: str, imbalance: float, seed: int,
                strategy: str) -> Dict[str, Any]:
    cfg = ExperimentConfig(**cfg_dict, base_dir=base_dir).validate()
    key = f"{cfg.dataset}|{base_dir}"
    if key not in _WORKER_DATA:
        x, y, _ = load_dataset(cfg.dataset, base_dir)
        _WORKER_DATA[key] = (x, y)
    return run_one(cfg, imbalance, seed, strategy, _WORKER_DATA[key])


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ExperimentResult:
    """Runs and their summary. ``summary[(IF, strategy)]`` holds mean/std per metric."""

    config: ExperimentConfig
    description: str
    runs: List[Dict[str, Any]]
    summary: Dict[Tuple[float, str], Dict[str, Tuple[float, float]]]
    wall_s: float
    files: Dict[str, str] = field(default_factory=dict)

    def table(self, markdown: bool = False) -> str:
        return format_table(self, markdown=markdown)


def run_experiment(cfg: ExperimentConfig, *, out: Optional[str] = None,
                   progress: bool = True) -> ExperimentResult:
    """Run every (IF, seed, strategy) of ``cfg``; write results to ``out`` when given.

    Cost: settings x seeds x strategies runs, each (budget - initial) / batch rounds.
    """
    cfg.validate()
    x, y, desc = load_dataset(cfg.dataset, cfg.base_dir)
    for imb in cfg.imbalance:  # fail fast on impossible set-ups, before spawning workers
        prepare_split(x, y, cfg, imb, cfg.seeds[0])
    tasks = [(imb, seed, strat) for imb in cfg.imbalance for seed in cfg.seeds for strat in cfg.strategies]
    jobs = cfg.jobs or _available_cpus()
    jobs = max(1, min(jobs, len(tasks)))
    bar = None
    if progress:
        from ._progress import progress as _progress_policy

        bar = _progress_policy(total=len(tasks), desc="runs", unit="run")
    t0 = time.perf_counter()
    runs: List[Dict[str, Any]] = []
    try:
        if jobs == 1:
            try:
                from threadpoolctl import threadpool_limits
                limiter: Any = threadpool_limits(limits=cfg.blas_threads)
            except ImportError:  # pragma: no cover
                limiter = None
            try:
                for imb, seed, strat in tasks:
                    runs.append(run_one(cfg, imb, seed, strat, (x, y)))
                    if bar is not None:
                        bar.update(1)
            finally:
                if limiter is not None:
                    limiter.restore_original_limits()
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                     initargs=(cfg.blas_threads,)) as ex:
                futs = [ex.submit(_worker_run, cfg.as_dict(), cfg.base_dir, imb, seed, strat)
                        for imb, seed, strat in tasks]
                for fut in as_completed(futs):
                    runs.append(fut.result())
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    order = {t: i for i, t in enumerate(tasks)}
    runs.sort(key=lambda r: order[(r["imbalance"], r["seed"], r["strategy"])])
    result = ExperimentResult(cfg, desc, runs, summarise(cfg, runs), time.perf_counter() - t0)
    if out is not None:
        result.files = write_outputs(result, out)
    return result


# =============================================================================== summary
SOCBI_BASES = {"lc_socbi": "least_confidence", "kcenter_socbi": "kcenter", "margin_div": "margin",
               "margin_div_cover": "margin"}


def compare_to_base(result: "ExperimentResult") -> List[str]:
    """Paired (same seed, same initial pool) differences of each So-CBI variant and its base
    (LC-So-CBI vs LC, KCenter-So-CBI vs KCenter, margin-div and the recommended
    margin-div-cover vs margin).

    One line per (IF, pair) present: mean ± std over seeds of the AUBC and acc@first
    checkpoint differences, and in how many seeds the So-CBI variant's AUBC was higher.
    """
    cfg = result.config
    lines = []
    first = cfg.checkpoints[0]
    for imb in cfg.imbalance:
        for var, base in SOCBI_BASES.items():
            if var not in cfg.strategies or base not in cfg.strategies:
                continue
            d_aubc, d_first = [], []
            for seed in cfg.seeds:
                rv = next(r for r in result.runs if (r["imbalance"], r["seed"], r["strategy"]) == (imb, seed, var))
                rb = next(r for r in result.runs if (r["imbalance"], r["seed"], r["strategy"]) == (imb, seed, base))
                fv = np.asarray(rv["labelled"]) / rv["pool"]
                fb = np.asarray(rb["labelled"]) / rb["pool"]
                d_aubc.append(aubc(fv, rv["accuracy"]) - aubc(fb, rb["accuracy"]))
                d_first.append(float(np.interp(first, fv, rv["accuracy"]) - np.interp(first, fb, rb["accuracy"])))
            wins = sum(d > 0 for d in d_aubc)
            verdict = "beats" if np.mean(d_aubc) > 0 else "does not beat"
            lines.append(f"{_setting_name(imb)}: {DISPLAY_NAMES[var]} {verdict} {DISPLAY_NAMES[base]} on AUBC: "
                         f"{np.mean(d_aubc):+.4f} ± {np.std(d_aubc):.4f} (higher in {wins}/{len(d_aubc)} seeds); "
                         f"acc@{first:.0%} {np.mean(d_first):+.4f} ± {np.std(d_first):.4f}")
    return lines


_METRICS = ("aubc", "batch_imbalance", "selected_imbalance", "t_update_ms", "t_sort_ms", "t_search_ms",
            "t_total_ms", "t_select_ms", "t_model_ms")


def summarise(cfg: ExperimentConfig, runs: List[Dict[str, Any]]) -> Dict[Tuple[float, str], Dict[str, Tuple[float, float]]]:
    """Mean and std over seeds of every metric, per (IF, strategy)."""
    out: Dict[Tuple[float, str], Dict[str, Tuple[float, float]]] = {}
    for imb in cfg.imbalance:
        for strat in cfg.strategies:
            rs = [r for r in runs if r["imbalance"] == imb and r["strategy"] == strat]
            if not rs:
                continue
            per: Dict[str, List[float]] = {}
            for r in rs:
                frac = np.asarray(r["labelled"], np.float64) / r["pool"]
                acc = np.asarray(r["accuracy"], np.float64)
                for cp in cfg.checkpoints:
                    v = float(np.interp(cp, frac, acc)) if frac[0] <= cp <= frac[-1] + 1e-9 else float("nan")
                    per.setdefault(f"acc@{cp:g}", []).append(v)
                per.setdefault("aubc", []).append(aubc(frac, acc))
                per.setdefault("final_accuracy", []).append(float(acc[-1]))
                per.setdefault("batch_imbalance", []).append(float(np.nanmean(r["batch_imbalance"])))
                per.setdefault("selected_imbalance", []).append(float(r["selected_imbalance"]))
                t = {k: np.asarray(v, np.float64) for k, v in r["times"].items()}
                for k in ("t_update", "t_sort", "t_search", "t_select", "t_model"):
                    per.setdefault(f"{k}_ms", []).append(float(t[k].mean() * 1e3))
                per.setdefault("t_total_ms", []).append(float((t["t_update"] + t["t_sort"] + t["t_search"]).mean() * 1e3))
            out[(imb, strat)] = {k: (float(np.mean(v)), float(np.std(v)) if len(v) > 1 else 0.0)
                                 for k, v in per.items()}
    return out


def _pm(m: Tuple[float, float], digits: int = 3) -> str:
    mean, std = m
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _setting_name(imb: float) -> str:
    return "balanced" if imb >= 1.0 else f"IF = {imb:g}"


def format_table(result: ExperimentResult, markdown: bool = False) -> str:
    """The quality table and the retrieval-time table, one block per IF setting."""
    cfg = result.config
    lines: List[str] = []
    for imb in cfg.imbalance:
        rs = [r for r in result.runs if r["imbalance"] == imb]
        if not rs:
            continue
        r0 = rs[0]
        head = (f"{result.description}, {_setting_name(imb)}: pool {r0['pool']}, test {r0['test']}, "
                f"{r0['initial']} initial labels, batches of {cfg.batch} up to {cfg.budget:.0%} of the pool "
                f"({r0['budget']} labels), {len(cfg.seeds)} seed(s); mean ± std over seeds")
        cols = ["strategy"] + [f"acc@{cp:.0%}" for cp in cfg.checkpoints] + ["AUBC", "imbalance",
                                                                              "T ms/round", "(upd+sort+search)"]
        rows = []
        for strat in cfg.strategies:
            s = result.summary.get((imb, strat))
            if s is None:
                continue
            tparts = f"{s['t_update_ms'][0]:.2f}+{s['t_sort_ms'][0]:.3f}+{s['t_search_ms'][0]:.2f}"
            rows.append([DISPLAY_NAMES.get(strat, strat)]
                        + [_pm(s[f"acc@{cp:g}"]) for cp in cfg.checkpoints]
                        + [_pm(s["aubc"]), _pm(s["batch_imbalance"], 2), f"{s['t_total_ms'][0]:.2f}", tparts])
        lines.append(head)
        if markdown:
            lines.append("")
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + "|".join("---" for _ in cols) + "|")
            for row in rows:
                lines.append("| " + " | ".join(row) + " |")
        else:
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
            for row in rows:
                lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)))
        lines.append("")
    lines.append("imbalance: normalised L1 distance of each selected batch's class mix from uniform "
                 "(0 = balanced, 1 = one class), averaged over rounds. T = T_update + T_sort + T_search "
                 "per round (score index updates, reading ranked counts, neighbour search).")
    return "\n".join(lines)


def _curves(result: ExperimentResult, imb: float, strat: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std accuracy on a common grid of label fractions."""
    rs = [r for r in result.runs if r["imbalance"] == imb and r["strategy"] == strat]
    lo = max(r["labelled"][0] / r["pool"] for r in rs)
    hi = min(r["labelled"][-1] / r["pool"] for r in rs)
    grid = np.linspace(lo, hi, 60)
    accs = np.array([np.interp(grid, np.asarray(r["labelled"]) / r["pool"], r["accuracy"]) for r in rs])
    return grid, accs.mean(axis=0), accs.std(axis=0)


def plot_curves(result: ExperimentResult, path: Path) -> Path:
    """Learning curves (mean ± std band per strategy, one panel per IF): PNG with
    matplotlib, else an SVG next to ``path``. Returns the file written."""
    cfg = result.config
    try:
        import matplotlib  # noqa: F401  (absent -> the SVG fallback)
        from matplotlib.figure import Figure  # the OO API: the caller's backend is left alone
    except ImportError:
        return _plot_svg(result, path.with_suffix(".svg"))
    n = len(cfg.imbalance)
    fig = Figure(figsize=(5.2 * n, 4.2))
    axes = fig.subplots(1, n, squeeze=False)
    for ax, imb in zip(axes[0], cfg.imbalance):
        for strat in cfg.strategies:
            grid, mean, std = _curves(result, imb, strat)
            style = "-" if "socbi" in strat else "--" if strat == "random" else "-"
            lw = 2.2 if "socbi" in strat else 1.2
            line, = ax.plot(grid * 100, mean, style, lw=lw, label=DISPLAY_NAMES.get(strat, strat))
            ax.fill_between(grid * 100, mean - std, mean + std, color=line.get_color(), alpha=0.12, lw=0)
        ax.set_title(f"{result.description}, {_setting_name(imb)}")
        ax.set_xlabel("labelled share of the pool (%)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"active learning, {len(cfg.seeds)} seeds, batch {cfg.batch} (mean ± std)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = buf.getvalue()
    return atomic_write(path, lambda fh: fh.write(data))


_SVG_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf")


def _plot_svg(result: ExperimentResult, path: Path) -> Path:
    """A dependency-free SVG version of :func:`plot_curves` (mean lines only)."""
    cfg = result.config
    pw, ph, m = 420, 320, 50
    width = pw * len(cfg.imbalance)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{ph}" '
             f'font-family="sans-serif" font-size="11">', f'<rect width="{width}" height="{ph}" fill="white"/>']
    for p, imb in enumerate(cfg.imbalance):
        ox = p * pw
        curves = {s: _curves(result, imb, s) for s in cfg.strategies}
        xs = np.concatenate([c[0] for c in curves.values()]) * 100
        ys = np.concatenate([c[1] for c in curves.values()])
        x0, x1 = float(xs.min()), float(xs.max())
        y0, y1 = float(np.floor(ys.min() * 20) / 20), float(np.ceil(ys.max() * 20) / 20)
        y1 = max(y1, y0 + 0.05)

        def sx(v: float) -> float:
            return ox + m + (v - x0) / max(x1 - x0, 1e-9) * (pw - 1.6 * m)

        def sy(v: float) -> float:
            return ph - m - (v - y0) / (y1 - y0) * (ph - 1.8 * m)

        parts.append(f'<text x="{ox + pw / 2}" y="18" text-anchor="middle">{result.description}, '
                     f'{_setting_name(imb)}</text>')
        parts.append(f'<rect x="{sx(x0)}" y="{sy(y1)}" width="{sx(x1) - sx(x0)}" height="{sy(y0) - sy(y1)}" '
                     f'fill="none" stroke="#444"/>')
        for t in np.linspace(y0, y1, 5):
            parts.append(f'<text x="{sx(x0) - 4}" y="{sy(t) + 4}" text-anchor="end">{t:.2f}</text>')
        for t in np.linspace(x0, x1, 5):
            parts.append(f'<text x="{sx(t)}" y="{sy(y0) + 14}" text-anchor="middle">{t:.0f}%</text>')
        for j, (s, (g, mean, _)) in enumerate(curves.items()):
            colour = _SVG_COLOURS[j % len(_SVG_COLOURS)]
            pts = " ".join(f"{sx(a * 100):.1f},{sy(b):.1f}" for a, b in zip(g, mean))
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                         f'stroke-width="{2.2 if "socbi" in s else 1.2}"/>')
            if p == 0:
                ly = sy(y0) - 12 - 13 * (len(curves) - 1 - j)
                parts.append(f'<text x="{sx(x1) - 4}" y="{ly}" text-anchor="end" fill="{colour}">'
                             f'{DISPLAY_NAMES.get(s, s)}</text>')
    parts.append("</svg>\n")
    data = "\n".join(parts).encode()
    return atomic_write(path, lambda fh: fh.write(data))


def write_outputs(result: ExperimentResult, out: str) -> Dict[str, str]:
    """results.json, table.md, table.csv and the learning curves under ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    doc = dict(config=cfg.as_dict(), description=result.description, wall_s=result.wall_s,
               summary=[dict(imbalance=imb, strategy=s, **{k: {"mean": v[0], "std": v[1]} for k, v in m.items()})
                        for (imb, s), m in result.summary.items()],
               runs=result.runs)
    text = json.dumps(doc, indent=1, default=float, allow_nan=True)
    files: Dict[str, str] = {}
    files["results"] = str(atomic_write(d / "results.json", lambda fh: fh.write(text.encode())))
    md = result.table(markdown=True) + "\n"
    files["table_md"] = str(atomic_write(d / "table.md", lambda fh: fh.write(md.encode())))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = sorted({k for m in result.summary.values() for k in m})
    w.writerow(["imbalance", "strategy"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")])
    for (imb, s), m in result.summary.items():
        w.writerow([imb, s] + [f"{m[k][i]:.6g}" if k in m else "" for k in keys for i in (0, 1)])
    data = buf.getvalue().encode()
    files["table_csv"] = str(atomic_write(d / "table.csv", lambda fh: fh.write(data)))
    files["plot"] = str(plot_curves(result, d / "curves.png"))
    return files
