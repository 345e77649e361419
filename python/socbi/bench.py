"""socbi against what users write today: the benchmark suite behind ``socbi bench``.

Run ``socbi bench`` (full suite, ~15-30 minutes on 2 cores), ``socbi bench --quick``
(about a minute: 59 s measured on 2 cores at load average 23), add ``--json out.json --plot out.png``. Every structure of
:mod:`socbi.baselines` runs in the same process on the same seeded data, generated
before any timing; the timed sections are interleaved between structures (blocks of
rounds, or one repeat each in rotating order), so load drift on a shared machine hits
all of them; each reported time is a median, each ratio is to socbi's median in the
same run.

Workloads (issue 3), all on counts (scores start at 0, deltas +1, as So-CBI's counts):

* ``paper``: one So-CBI scoring round in the shape of the paper's Tables 7/8. A pool
  of embeddings (sklearn's ``load_digits``, real; and generated clustered embeddings,
  said so, at several n); ``labelled`` = 10 % of the pool, each labelled sample adds +1
  to each of its K = 10 nearest *unlabelled* neighbours (exact kNN), then one
  ``bottom(select)`` (select = 128, the paper's query batch). Reported separately:
  T_update (the update call, with 1, 2, 4, 8, 16 update threads), T_sort (the
  structure's n-independent query work: ``prepare()``) and T_search (``take()``), and
  their sum. Structures that are not thread-safe run under one lock at threads > 1
  (:class:`socbi.baselines.Locked`, or the C++ ``_mutex`` variants).
* ``stream``: batches of b increments (b in 100, 1000, 10000), each followed by a
  top-1000; median time per round (update + query).
* ``bulk``: one batch of n increments then one top-1000 (fresh structure each repeat).
* ``memory``: peak RSS growth of a fresh process that builds each structure at n.
* ids uniform or Zipf (s = 1, hot ids scattered by a random permutation).

The core's own targets (issue 2) are kept as they were: :func:`bench_stream` (10M unit
increments, top-1000 every 1000), :func:`bench_settled`, :func:`bench_bulk` (1 and 2
threads) and :func:`bench_memory` (bytes per sample at n = 10^7).

Skips are reported, never silent: the Python-object structures (heapq, BTrees,
SortedList) are not built above n = 10^6 (builds take tens of seconds and gigabytes),
and a structure stops being timed in a configuration once it has spent its time budget
(it still gets at least ``min_samples`` samples unless one sample exceeds the budget).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from socbi import SemiOrderedIndex

# =========================================================================== issue 2
# The core's own four workloads, unchanged in what they measure.


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _init_scores(n: int, init: str, rng: np.random.Generator) -> np.ndarray:
    if init == "zeros":
        return np.zeros(n)
    if init == "uniform":
        return rng.random(n)
    raise ValueError(f"init = {init!r} is not a known start; use 'zeros' or 'uniform'")


def _numpy_top(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(scores, -k)[-k:]
    return part[np.argsort(-scores[part], kind="stable")]


def bench_stream(n: int = 1_000_000, total: int = 10_000_000, every: int = 1000, k: int = 1000,
                 init: str = "zeros", numpy_rounds: int = 300, seed: int = 0,
                 node_size: Optional[int] = None) -> Dict[str, float]:
    """Stream of unit increments with a top-k after every `every` increments.

    socbi runs every round; numpy's cost per round does not depend on the round (one
    full partition each), so it is timed for ``numpy_rounds`` rounds and its total is
    the median round times the number of rounds (the report says so)."""
    rng = np.random.default_rng(seed)
    start = _init_scores(n, init, rng)
    ids = rng.integers(0, n, size=total)
    rounds = total // every
    idx = SemiOrderedIndex(n, node_size=node_size)
    idx.insert(np.arange(n), start)
    idx.top(k)
    ones = np.ones(every)
    t0 = time.perf_counter()
    for r in range(rounds):
        idx.update(ids[r * every:(r + 1) * every], ones, bulk=False)
        idx.top(k)
    socbi_s = time.perf_counter() - t0

    scores = start.copy()
    nr = min(rounds, numpy_rounds)
    per_round = []
    for r in range(nr):
        t = time.perf_counter()
        np.add.at(scores, ids[r * every:(r + 1) * every], ones)
        _numpy_top(scores, k)
        per_round.append(time.perf_counter() - t)
    numpy_s = statistics.median(per_round) * rounds
    return {"n": n, "total": total, "every": every, "k": k, "init": init,
            "socbi_s": socbi_s, "numpy_s": numpy_s, "numpy_rounds_timed": nr, "rounds": rounds,
            "speedup": numpy_s / socbi_s, "stats": idx.stats()}


def bench_settled(n: int = 1_000_000, k: int = 1000, init: str = "zeros", repeats: int = 50,
                  seed: int = 0, warm_increments: int = 10_000_000) -> Dict[str, float]:
    """top(k) on a settled index versus argpartition on the same scores."""
    rng = np.random.default_rng(seed)
    scores = _init_scores(n, init, rng)
    ids = rng.integers(0, n, size=warm_increments)
    scores += np.bincount(ids, minlength=n)
    idx = SemiOrderedIndex(n)
    idx.insert(np.arange(n), scores)
    idx.top(k)  # first query refines the boundary node once (lazy refinement)
    socbi_s = _median_time(lambda: idx.top(k), repeats)
    numpy_s = _median_time(lambda: _numpy_top(scores, k), max(5, repeats // 5))
    got = idx.top(k)[1]
    want = np.sort(scores)[::-1][:k]
    if not np.array_equal(got, want):
        raise RuntimeError("socbi top(k) disagrees with numpy on the settled workload")
    return {"n": n, "k": k, "init": init, "socbi_us": socbi_s * 1e6, "numpy_us": numpy_s * 1e6,
            "speedup": numpy_s / socbi_s}


def bench_bulk(n: int = 1_000_000, k: int = 1000, init: str = "zeros", repeats: int = 5,
               seed: int = 0) -> Dict[str, float]:
    """One update of n random increments then one top(k); socbi with threads 1 and 2."""
    rng = np.random.default_rng(seed)
    start = _init_scores(n, init, rng)
    ids = rng.integers(0, n, size=n)
    deltas = np.ones(n)
    out: Dict[str, float] = {"n": n, "k": k, "init": init}

    def run_numpy():
        s = start.copy()
        t = time.perf_counter()
        np.add.at(s, ids, deltas)
        _numpy_top(s, k)
        return time.perf_counter() - t

    def run_socbi(threads: int):
        idx = SemiOrderedIndex(n)
        idx.insert(np.arange(n), start)
        idx.top(k)
        t = time.perf_counter()
        idx.update(ids, deltas, threads=threads)
        idx.top(k)
        return time.perf_counter() - t

    numpy_t, s1, s2 = [], [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits all three
        numpy_t.append(run_numpy())
        s1.append(run_socbi(1))
        s2.append(run_socbi(2))
    out["numpy_ms"] = statistics.median(numpy_t) * 1e3
    out["socbi_1t_ms"] = statistics.median(s1) * 1e3
    out["socbi_2t_ms"] = statistics.median(s2) * 1e3
    out["socbi_over_numpy"] = out["socbi_1t_ms"] / out["numpy_ms"]
    out["thread_scaling"] = out["socbi_1t_ms"] / out["socbi_2t_ms"]
    return out


_PEAK_RSS = r"""
def peak_rss():
    # VmHWM belongs to this process image: ru_maxrss survives exec() on Linux and would
    # report the parent's peak when the parent (a benchmark run) is the bigger process.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

_MEMORY_CHILD = _PEAK_RSS + r"""
import json, sys
import numpy as np
from socbi import SemiOrderedIndex
n = int(sys.argv[1])
scores = np.random.default_rng(0).random(n)
ids = np.arange(n)
base = peak_rss()
idx = SemiOrderedIndex(n)
idx.insert(ids, scores)
idx.update(ids[: n // 10], 1.0, bulk=False)
idx.top(1000)
peak = peak_rss()
print(json.dumps({"stats": idx.stats(), "rss_growth_bytes": peak - base}))
"""


def bench_memory(n: int = 10_000_000) -> Dict[str, float]:
    """Bytes per sample from stats() and from the peak RSS growth of a fresh process."""
    res = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(n)], capture_output=True, text=True, check=True)
    data = json.loads(res.stdout)
    st = data["stats"]
    return {"n": n, "stats_bytes_per_sample": st["memory_bytes"] / n,
            "rss_bytes_per_sample": data["rss_growth_bytes"] / n, "nodes": st["nodes"]}


# ==================================================================== machine record

def machine_info() -> Dict[str, object]:
    """CPU model, cores, load, memory and library/compiler versions of this run."""
    info: Dict[str, object] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        info["usable_cores"] = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cpu_model"] = cpu
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        keep = ("Model name", "CPU family", "Model:", "Thread(s) per core", "Core(s) per socket", "Socket(s)",
                "Hypervisor vendor", "L1d cache", "L2 cache", "L3 cache", "CPU max MHz")
        info["lscpu"] = {k.rstrip(":"): v.strip() for line in out.splitlines() if ":" in line
                         for k, v in [line.split(":", 1)] if any(line.startswith(p) for p in keep)}
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    from socbi import __version__, _core

    info["socbi"] = __version__
    info["extension_build"] = dict(_core.build_info())
    for mod in ("BTrees", "sortedcontainers", "sklearn", "hnswlib", "matplotlib"):
        try:
            from importlib.metadata import version

            info[mod] = version({"sklearn": "scikit-learn"}.get(mod, mod))
        except Exception:  # not installed: recorded as such
            info[mod] = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode == 0:
            info["git_commit"] = rev.stdout.strip()
            dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "../../cpp", "."],
                                   capture_output=True, text=True, timeout=10)
            # uncommitted changes to the core or the package: the commit alone does not
            # say what was measured
            info["git_dirty"] = bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ====================================================================== workload data

def draw_ids(n: int, size: int, dist: str, rng: np.random.Generator, zipf_s: float = 1.0) -> np.ndarray:
    """`size` ids in [0, n): uniform, or Zipf(s) over ranks with ranks scattered by a permutation."""
    if dist == "uniform":
        return rng.integers(0, n, size=size)
    if dist == "zipf":
        w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** zipf_s
        cdf = np.cumsum(w)
        cdf /= cdf[-1]
        ranks = np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n - 1)
        return rng.permutation(n)[ranks]
    raise ValueError(f"dist = {dist!r} is not known; use 'uniform' or 'zipf'")


def generated_embeddings(n: int, d: int = 16, cluster_size: int = 500, spread: float = 1.0,
                         separation: float = 20.0, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GENERATED clustered embeddings (Gaussian blobs), float64: (X, cluster of each row, centres)."""
    rng = np.random.default_rng(seed)
    clusters = max(1, n // cluster_size)
    centres = rng.normal(scale=separation, size=(clusters, d))
    lab = rng.integers(0, clusters, size=n)
    X = centres[lab] + spread * rng.normal(size=(n, d))
    return X, lab, centres


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


def knn_unlabelled(X: np.ndarray, labelled: np.ndarray, k: int, clusters: Optional[np.ndarray] = None,
                   centres: Optional[np.ndarray] = None, chunk: int = 2048) -> np.ndarray:
    """Exact K nearest *unlabelled* neighbours of every labelled row.

    Returns an array (len(labelled), k) of positions into the unlabelled rows (the
    score index's ids, 0..#unlabelled-1), nearest first. Without `clusters`: brute force
    in chunks. With the generated clusters: search inside the row's cluster, then certify
    the answer exact (the k-th distance is below the distance to every other cluster's
    ball by the triangle inequality) and redo any uncertified row by brute force.
    """
    n = X.shape[0]
    is_lab = np.zeros(n, bool)
    is_lab[labelled] = True
    unl = np.flatnonzero(~is_lab)
    if unl.size < k:
        raise ValueError(f"k = {k} but only {unl.size} unlabelled rows; label fewer or lower k")
    pos = np.full(n, -1, np.int64)
    pos[unl] = np.arange(unl.size)
    XU = X[unl]
    out = np.empty((labelled.size, k), np.int64)

    def brute(rows: np.ndarray) -> np.ndarray:
        res = np.empty((rows.size, k), np.int64)
        for s in range(0, rows.size, chunk):
            q = X[labelled[rows[s:s + chunk]]]
            d2 = _sqdist(q, XU)
            part = np.argpartition(d2, k - 1, axis=1)[:, :k]
            o = np.take_along_axis(d2, part, 1).argsort(1, kind="stable")
            res[s:s + chunk] = np.take_along_axis(part, o, 1)
        return res

    if clusters is None or centres is None:
        out[:] = brute(np.arange(labelled.size))
        return out
    lab_cl = clusters[labelled]
    radius = np.zeros(centres.shape[0])
    for c in np.unique(clusters[unl]):
        m = unl[clusters[unl] == c]
        radius[c] = np.sqrt(_sqdist(X[m], centres[c:c + 1]).max())
    order = np.argsort(lab_cl, kind="stable")
    bounds = np.searchsorted(lab_cl[order], np.arange(centres.shape[0] + 1))
    uorder = unl[np.argsort(clusters[unl], kind="stable")]
    ubounds = np.searchsorted(clusters[uorder], np.arange(centres.shape[0] + 1))
    kth = np.full(labelled.size, np.inf)
    ok = np.zeros(labelled.size, bool)
    for c in range(centres.shape[0]):
        rows = order[bounds[c]:bounds[c + 1]]
        cand = uorder[ubounds[c]:ubounds[c + 1]]
        if rows.size == 0 or cand.size < k:
            continue
        d2 = _sqdist(X[labelled[rows]], X[cand])
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        pd = np.take_along_axis(d2, part, 1)
        o = pd.argsort(1, kind="stable")
        out[rows] = pos[cand[np.take_along_axis(part, o, 1)]]
        kth[rows] = np.sqrt(np.take_along_axis(pd, o, 1)[:, -1])
        ok[rows] = True
    # certificate: for every other cluster c', |q - centre_c'| - radius_c' > k-th distance
    for s in range(0, labelled.size, chunk):
        q = X[labelled[s:s + chunk]]
        gap = np.sqrt(_sqdist(q, centres)) - radius[None, :]
        gap[np.arange(q.shape[0]), lab_cl[s:s + chunk]] = np.inf
        ok[s:s + chunk] &= gap.min(1) > kth[s:s + chunk]
    bad = np.flatnonzero(~ok)
    if bad.size:
        out[bad] = brute(bad)
    return out


@dataclass
class Pool:
    """A scoring-round workload: neighbour ids (the +1 updates) over an unlabelled pool."""

    name: str
    real: bool
    n_unlabelled: int
    n_labelled: int
    k: int
    neighbours: np.ndarray  # flat int64, len = n_labelled * k, ids in [0, n_unlabelled)
    note: str = ""


def paper_pool(dataset: str, n: int = 0, k: int = 10, labelled_fraction: float = 0.1, seed: int = 0) -> Pool:
    """dataset 'digits' (sklearn's bundled 8x8 digits, real, 1797 rows) or 'generated'
    (n unlabelled rows of generated clustered 16-d embeddings, plus labelled_fraction*n)."""
    rng = np.random.default_rng(seed)
    if not 0 < labelled_fraction < 1:
        raise ValueError(f"labelled_fraction = {labelled_fraction} must lie in (0, 1)")
    if dataset == "digits":
        from sklearn.datasets import load_digits

        X = load_digits().data.astype(np.float64)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        n_lab = max(1, int(round(labelled_fraction * X.shape[0])))
        labelled = np.sort(rng.choice(X.shape[0], n_lab, replace=False))
        nb = knn_unlabelled(X, labelled, k)
        return Pool("digits", True, X.shape[0] - n_lab, n_lab, k, nb.ravel(),
                    "sklearn load_digits (real), L2-normalised pixels, exact kNN")
    if dataset == "generated":
        if n < k + 1:
            raise ValueError(f"n = {n} is too small for k = {k}")
        n_lab = max(1, int(round(labelled_fraction * n)))
        X, cl, centres = generated_embeddings(n + n_lab, seed=seed)
        labelled = np.sort(rng.choice(n + n_lab, n_lab, replace=False))
        nb = knn_unlabelled(X, labelled, k, cl, centres)
        return Pool(f"generated-{n}", False, n, n_lab, k, nb.ravel(),
                    "generated clustered 16-d Gaussian blobs (~500 per cluster), exact kNN (certified)")
    raise ValueError(f"dataset = {dataset!r} is not known; use 'digits' or 'generated'")


# ======================================================================== harness

#: structures too slow or too big (Python objects) to build above this n
PYTHON_OBJECT_LIMIT = 1_000_000
_PYTHON_OBJECT = ("heapq", "btrees", "sortedlist")

DEFAULT_STRUCTURES = ["socbi", "numpy_partition", "numpy_argsort", "heapq", "btrees", "sortedlist",
                      "cpp_sort", "cpp_heap", "cpp_partial_sort", "cpp_select", "cpp_set"]


def _base_name(spec: str) -> str:
    return spec.split(":", 1)[0]


def _label(spec: str) -> str:
    name, _, key = spec.partition(":")
    return f"{name}({key or 'packed'})" if name in ("btrees", "sortedlist") else name


def build_structure(spec: str, capacity: int, threads: int = 1):
    """A structure from a spec 'name' or 'name:key' (key packed|tuple for the trees),
    ready to be shared by `threads` update threads (Locked / _mutex when needed)."""
    from socbi import baselines as B

    name, _, key = spec.partition(":")
    key = key or "packed"
    if threads > 1 and name == "cpp_set":
        name = "cpp_set_mutex"
    s = B.make(name, capacity, validate=False, key=key)
    if threads > 1 and not s.native_threads:
        s = B.Locked(s)
    return s


def _skip_reason(spec: str, n: int) -> Optional[str]:
    if _base_name(spec) in _PYTHON_OBJECT and n > PYTHON_OBJECT_LIMIT:
        return (f"not built above n = {PYTHON_OBJECT_LIMIT:,}: one Python object per id "
                "(builds of tens of seconds, > 1 GB)")
    return None


@dataclass
class Row:
    workload: str
    params: Dict[str, object]
    structure: str
    description: str = ""
    median_s: Optional[float] = None
    samples: int = 0
    parts: Dict[str, float] = field(default_factory=dict)  # e.g. t_update, t_sort, t_search medians
    skipped: Optional[str] = None
    ratio_to_socbi: Optional[float] = None

    def as_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


class Budget:
    """Per-structure time budget in one configuration."""

    def __init__(self, budget_s: float, min_samples: int, max_samples: int) -> None:
        self.budget_s, self.min_samples, self.max_samples = budget_s, min_samples, max_samples

    def more(self, times: List[float]) -> bool:
        if len(times) >= self.max_samples:
            return False
        if len(times) < self.min_samples:
            return not (times and times[0] > self.budget_s)
        return sum(times) < self.budget_s


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class _NoGC:
    """gc off around timed sections (as timeit does), for every structure alike."""

    def __enter__(self):
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def _finish(rows: List[Row]) -> List[Row]:
    socbi = next((r for r in rows if _base_name(r.structure) == "socbi" and r.median_s), None)
    for r in rows:
        if socbi and r.median_s:
            r.ratio_to_socbi = r.median_s / socbi.median_s
    return rows


def _check_same(results: Dict[str, Tuple[np.ndarray, np.ndarray]], what: str) -> None:
    """Every structure's query scores must equal socbi's (ids may differ among ties)."""
    ref = results.get("socbi")
    if ref is None:
        return
    for name, (ids, scores) in results.items():
        if not np.array_equal(scores, ref[1]):
            raise RuntimeError(f"{what}: {name} returned different scores from socbi; the benchmark is invalid")


# ====================================================================== workloads

def run_stream(structures: Sequence[str], n: int, b: int, dist: str = "uniform", k: int = 1000,
               rounds: int = 200, budget: Optional[Budget] = None, seed: int = 0, block: int = 10,
               log: Callable[[str], None] = lambda s: None) -> List[Row]:
    """Batches of b unit increments, each followed by top(k); median per round."""
    budget = budget or Budget(2.0, 3, rounds)
    rng = np.random.default_rng(seed)
    batches = [draw_ids(n, b, dist, rng) for _ in range(rounds)]
    ones = np.ones(b)
    params = {"n": n, "b": b, "dist": dist, "k": k}
    rows: Dict[str, Row] = {}
    live: Dict[str, object] = {}
    for spec in structures:
        label = _label(spec)
        rows[label] = Row("stream", params, label)
        reason = _skip_reason(spec, n)
        if reason:
            rows[label].skipped = reason
            continue
        s = build_structure(spec, n)
        s.insert(np.arange(n), 0.0)
        s.top(k)  # warm: the first query of socbi refines the boundary node
        rows[label].description = s.description
        live[label] = s
    times: Dict[str, List[float]] = {lb: [] for lb in live}
    cursor = {lb: 0 for lb in live}
    active = list(live)
    turn = 0
    with _NoGC():
        while active:
            order = active[turn % len(active):] + active[:turn % len(active)]
            turn += 1
            for lb in order:
                s = live[lb]
                for _ in range(block):
                    r = cursor[lb]
                    if r >= rounds or not budget.more(times[lb]):
                        break
                    batch = batches[r]
                    times[lb].append(_timed(lambda: (s.update(batch, ones), s.top(k))))
                    cursor[lb] += 1
            active = [lb for lb in active if cursor[lb] < rounds and budget.more(times[lb])]
    # correctness: bring every structure to the same state, compare top-k scores
    done = max(cursor.values()) if cursor else 0
    answers = {}
    for lb, s in live.items():
        for r in range(cursor[lb], done):
            s.update(batches[r], ones)
        answers["socbi" if lb == "socbi" else lb] = s.top(k)
        rows[lb].median_s = statistics.median(times[lb]) if times[lb] else None
        rows[lb].samples = len(times[lb])
        if cursor[lb] < rounds and rows[lb].samples:
            rows[lb].parts["rounds_timed"] = rows[lb].samples
    _check_same(answers, f"stream n={n} b={b} {dist}")
    out = _finish(list(rows.values()))
    log(format_rows(out))
    return out


def run_bulk(structures: Sequence[str], n: int, dist: str = "uniform", k: int = 1000, repeats: int = 3,
             budget: Optional[Budget] = None, seed: int = 0, log: Callable[[str], None] = lambda s: None) -> List[Row]:
    """One update of n unit increments then one top(k), on a fresh structure per repeat."""
    budget = budget or Budget(5.0, 1, repeats)
    rng = np.random.default_rng(seed)
    ids = draw_ids(n, n, dist, rng)
    ones = np.ones(n)
    params = {"n": n, "dist": dist, "k": k}
    rows = {_label(s): Row("bulk", params, _label(s)) for s in structures}
    specs = []
    for spec in structures:
        reason = _skip_reason(spec, n)
        if reason:
            rows[_label(spec)].skipped = reason
        else:
            specs.append(spec)
    t_up: Dict[str, List[float]] = {_label(s): [] for s in specs}
    t_q: Dict[str, List[float]] = {_label(s): [] for s in specs}
    answers = {}
    for rep in range(repeats):
        order = specs[rep % len(specs):] + specs[:rep % len(specs)] if specs else []
        for spec in order:
            lb = _label(spec)
            tot = [a + b for a, b in zip(t_up[lb], t_q[lb])]
            if not budget.more(tot):
                continue
            s = build_structure(spec, n)
            s.insert(np.arange(n), 0.0)
            s.top(k)
            rows[lb].description = s.description
            with _NoGC():
                t_up[lb].append(_timed(lambda: s.update(ids, ones)))
                res = []
                t_q[lb].append(_timed(lambda: res.append(s.top(k))))
            answers["socbi" if lb == "socbi" else lb] = res[0]
            del s
    for spec in specs:
        lb = _label(spec)
        tot = [a + b for a, b in zip(t_up[lb], t_q[lb])]
        if tot:
            rows[lb].median_s = statistics.median(tot)
            rows[lb].samples = len(tot)
            rows[lb].parts = {"t_update": statistics.median(t_up[lb]), "t_query": statistics.median(t_q[lb])}
    _check_same(answers, f"bulk n={n} {dist}")
    out = _finish(list(rows.values()))
    log(format_rows(out))
    return out


def run_paper_round(structures: Sequence[str], pool: Pool, threads: int = 1, select: int = 128, repeats: int = 3,
                    budget: Optional[Budget] = None, log: Callable[[str], None] = lambda s: None) -> List[Row]:
    """One So-CBI scoring round: +1 to each labelled sample's K unlabelled neighbours
    (update with `threads` threads), then bottom(select) split into prepare (T_sort)
    and take (T_search)."""
    budget = budget or Budget(5.0, 1, repeats)
    n = pool.n_unlabelled
    ids = pool.neighbours
    ones = np.ones(ids.size)
    params = {"pool": pool.name, "real": pool.real, "n": n, "labelled": pool.n_labelled, "k": pool.k,
              "updates": int(ids.size), "threads": threads, "select": select}
    rows: Dict[str, Row] = {}
    specs = []
    for spec in structures:
        lb = _label(spec)
        rows[lb] = Row("paper", params, lb)
        reason = _skip_reason(spec, n)
        if reason:
            rows[lb].skipped = reason
        else:
            specs.append(spec)
    parts: Dict[str, Dict[str, List[float]]] = {_label(s): {"t_update": [], "t_sort": [], "t_search": []}
                                                for s in specs}
    answers = {}
    for rep in range(repeats):
        order = specs[rep % len(specs):] + specs[:rep % len(specs)] if specs else []
        for spec in order:
            lb = _label(spec)
            p = parts[lb]
            tot = [a + b + c for a, b, c in zip(p["t_update"], p["t_sort"], p["t_search"])]
            if not budget.more(tot):
                continue
            s = build_structure(spec, n, threads)
            s.insert(np.arange(n), 0.0)
            s.bottom(select)
            rows[lb].structure = s.name if threads > 1 and s.name != _base_name(spec) else lb
            rows[lb].description = s.description
            res = []
            with _NoGC():
                p["t_update"].append(_timed(lambda: s.update(ids, ones, threads=threads)))
                p["t_sort"].append(_timed(lambda: s.prepare(False)))
                p["t_search"].append(_timed(lambda: res.append(s.take(select, False))))
            answers["socbi" if lb == "socbi" else lb] = res[0]
            del s
    for spec in specs:
        lb = _label(spec)
        p = parts[lb]
        tot = [a + b + c for a, b, c in zip(p["t_update"], p["t_sort"], p["t_search"])]
        if tot:
            rows[lb].median_s = statistics.median(tot)
            rows[lb].samples = len(tot)
            rows[lb].parts = {key: statistics.median(v) for key, v in p.items()}
    _check_same(answers, f"paper round {pool.name} threads={threads}")
    out = _finish(list(rows.values()))
    log(format_rows(out))
    return out


_STRUCT_MEMORY_CHILD = _PEAK_RSS + r"""
import json, sys
import numpy as np
from socbi.bench import build_structure
spec, n = sys.argv[1], int(sys.argv[2])
ids = np.arange(n)
start = np.zeros(n)
upd = np.random.default_rng(0).integers(0, n, size=n // 10)
base = peak_rss()
s = build_structure(spec, n)
s.insert(ids, start)
s.update(upd, 1.0)
s.top(1000)
peak = peak_rss()
print(json.dumps({"rss_growth_bytes": peak - base, "memory_bytes": s.memory_bytes(),
                  "description": s.description}))
"""


def run_memory(structures: Sequence[str], n: int, log: Callable[[str], None] = lambda s: None) -> List[Row]:
    """Peak RSS growth (bytes per id) of a fresh process that builds each structure at n
    and applies n/10 increments and one top-1000; median_s holds bytes per id here."""
    rows = []
    for spec in structures:
        lb = _label(spec)
        row = Row("memory", {"n": n}, lb)
        reason = _skip_reason(spec, n)
        if reason:
            row.skipped = reason
        else:
            res = subprocess.run([sys.executable, "-c", _STRUCT_MEMORY_CHILD, spec, str(n)], capture_output=True,
                                 text=True)
            if res.returncode != 0:
                row.skipped = "child process failed: " + res.stderr.strip().splitlines()[-1][:200]
            else:
                data = json.loads(res.stdout)
                row.description = data["description"]
                row.median_s = data["rss_growth_bytes"] / n  # bytes per id (not seconds)
                row.samples = 1
                if data["memory_bytes"] is not None:
                    row.parts = {"reported_bytes_per_id": data["memory_bytes"] / n}
        rows.append(row)
    out = _finish(rows)
    log(format_rows(out))
    return out


# ========================================================================= presets

PRESETS: Dict[str, Dict[str, object]] = {
    # a smoke run: seconds; every workload and structure once, tiny sizes
    "tiny": {"stream": [(2000, 100, "uniform"), (2000, 100, "zipf")], "stream_rounds": 6,
             "bulk": [(2000, "uniform"), (2000, "zipf")], "paper_sizes": [2000], "digits": True,
             "threads": [1, 2], "memory": 0, "repeats": 2, "budget": 0.5, "min_samples": 2, "core": "tiny"},
    "quick": {"stream": [(10_000, 1000, "uniform"), (100_000, 1000, "uniform"), (100_000, 1000, "zipf"),
                         (100_000, 100, "uniform"), (100_000, 10_000, "uniform")],
              "stream_rounds": 60, "bulk": [(10_000, "uniform"), (100_000, "uniform"), (100_000, "zipf")],
              "paper_sizes": [10_000], "digits": True, "threads": [1, 2], "memory": 0, "repeats": 3,
              "budget": 0.25, "min_samples": 3, "core": "quick"},
    "full": {"stream": ([(n, 1000, d) for d in ("uniform", "zipf") for n in (10**4, 10**5, 10**6, 10**7)]
                        + [(10**6, b, d) for d in ("uniform", "zipf") for b in (100, 10_000)]),
             "stream_rounds": 300,
             "bulk": [(n, d) for d in ("uniform", "zipf") for n in (10**4, 10**5, 10**6, 10**7)],
             "paper_sizes": [10**4, 10**5, 10**6], "digits": True, "threads": [1, 2, 4, 8, 16],
             "memory": 10**6, "repeats": 5, "budget": 3.0, "min_samples": 3, "core": "full"},
}


def run_suite(preset: str = "quick", structures: Optional[Sequence[str]] = None, seed: int = 0,
              workloads: Optional[Sequence[str]] = None, log: Callable[[str], None] = print) -> Dict[str, object]:
    """Run every workload of a preset ('tiny', 'quick', 'full'); returns the report dict."""
    if preset not in PRESETS:
        raise ValueError(f"preset = {preset!r} is not known; use one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    structures = list(structures or DEFAULT_STRUCTURES)
    if "socbi" not in [_base_name(s) for s in structures]:
        structures.insert(0, "socbi")  # ratios are to socbi
    from socbi import baselines as B

    for spec in structures:
        name, _, key = spec.partition(":")
        if name not in B.STRUCTURES:
            raise ValueError(f"structure {spec!r} is not known; choose from {', '.join(B.STRUCTURES)}")
        if key and key not in ("packed", "tuple"):
            raise ValueError(f"structure {spec!r}: key {key!r} is not known; use ':packed' or ':tuple'")
    all_workloads = ("paper", "stream", "bulk", "memory", "core")
    workloads = list(workloads or all_workloads)
    for w in workloads:
        if w not in all_workloads:
            raise ValueError(f"workload {w!r} is not known; choose from {', '.join(all_workloads)}")
    budget = Budget(float(cfg["budget"]), int(cfg["min_samples"]), 10**9)
    rep_budget = Budget(float(cfg["budget"]), 1, int(cfg["repeats"]))
    t0 = time.perf_counter()
    report: Dict[str, object] = {"preset": preset, "seed": seed, "structures": structures,
                                 "machine": machine_info(), "results": [], "core": []}
    results: List[Row] = []
    if "paper" in workloads:
        pools = []
        if cfg["digits"]:
            pools.append(paper_pool("digits", seed=seed))
        for n in cfg["paper_sizes"]:
            t = time.perf_counter()
            pools.append(paper_pool("generated", n=n, seed=seed))
            log(f"# generated pool n={n:,}: kNN graph in {time.perf_counter() - t:.1f} s (not timed)")
        for pool in pools:
            for th in cfg["threads"]:
                results += run_paper_round(structures, pool, threads=th, repeats=int(cfg["repeats"]),
                                           budget=rep_budget, log=log)
    if "stream" in workloads:
        for n, b, dist in cfg["stream"]:
            results += run_stream(structures, n, b, dist, rounds=int(cfg["stream_rounds"]), budget=budget,
                                  seed=seed, log=log)
    if "bulk" in workloads:
        for n, dist in cfg["bulk"]:
            results += run_bulk(structures, n, dist, repeats=int(cfg["repeats"]), budget=rep_budget, seed=seed,
                                log=log)
    if "memory" in workloads and cfg["memory"]:
        results += run_memory(structures, int(cfg["memory"]), log=log)
    if "core" in workloads:
        report["core"] = run_core(str(cfg["core"]), log=log)
    report["results"] = [r.as_dict() for r in results]
    report["targets"] = evaluate_targets(report)
    m = report["machine"]
    try:
        m["load_average_end"] = list(os.getloadavg())
    except OSError:
        pass
    report["elapsed_s"] = time.perf_counter() - t0
    return report


def run_core(preset: str, log: Callable[[str], None] = print) -> List[Dict[str, object]]:
    """Issue 2's four workloads (socbi vs numpy): full sizes, or small ones."""
    out: List[Dict[str, object]] = []

    def add(rec: Dict[str, object]) -> None:
        out.append(rec)
        log(_fmt_core(rec))

    if preset == "full":
        add({"workload": "stream", **bench_stream()})
        add({"workload": "settled", **bench_settled()})
        add({"workload": "bulk", **bench_bulk()})
        add({"workload": "memory", **bench_memory()})
    elif preset == "quick":
        add({"workload": "stream", **bench_stream(n=100_000, total=1_000_000, numpy_rounds=100)})
        add({"workload": "settled", **bench_settled(n=100_000, warm_increments=1_000_000)})
        add({"workload": "bulk", **bench_bulk(n=100_000, repeats=3)})
        add({"workload": "memory", **bench_memory(n=1_000_000)})
    else:
        add({"workload": "stream", **bench_stream(n=5000, total=50_000, numpy_rounds=10)})
        add({"workload": "settled", **bench_settled(n=5000, repeats=5, warm_increments=20_000)})
        add({"workload": "bulk", **bench_bulk(n=5000, repeats=1)})
        add({"workload": "memory", **bench_memory(n=20_000)})
    for rec in out:
        rec.pop("stats", None)
    return out


# ========================================================================= targets

def _family(label: str) -> str:
    """'btrees(packed)+lock' -> 'btrees', 'cpp_set_mutex' -> 'cpp_set'."""
    return label.split("+")[0].split("(")[0].replace("_mutex", "")


def _find(report: Dict[str, object], workload: str, structure: str, **params) -> Optional[Dict[str, object]]:
    for r in report["results"]:
        if r["workload"] != workload or _family(r["structure"]) != structure:
            continue
        if all(r["params"].get(k) == v for k, v in params.items()):
            return r
    return None


def evaluate_targets(report: Dict[str, object]) -> List[Dict[str, object]]:
    """Issue 3's targets (and issue 2's, from the core workloads), met or missed, with ratios."""
    out: List[Dict[str, object]] = []

    def target(name: str, ratio: Optional[float], goal: str, ok: Optional[bool], note: str = "") -> None:
        out.append({"target": name, "measured": ratio, "goal": goal,
                    "status": "not measured" if ok is None else ("MET" if ok else "MISSED"), "note": note})

    n = 10**6
    s = _find(report, "stream", "socbi", n=n, b=1000, dist="uniform")
    for base, goal in (("numpy_partition", 50.0), ("btrees", 200.0), ("sortedlist", 200.0)):
        r = _find(report, "stream", base, n=n, b=1000, dist="uniform")
        ok = ratio = None
        if s and r and s["median_s"] and r["median_s"]:
            ratio = r["median_s"] / s["median_s"]
            ok = ratio >= goal
        target(f"stream n=10^6 b=1000 uniform: socbi vs {base}", ratio, f">= {goal:.0f}x faster", ok)
    s = _find(report, "bulk", "socbi", n=n, dist="uniform")
    r = _find(report, "bulk", "numpy_partition", n=n, dist="uniform")
    ok = ratio = None
    if s and r and s["median_s"] and r["median_s"]:
        ratio = s["median_s"] / r["median_s"]
        ok = ratio <= 1.5
    target("bulk n=10^6 uniform: socbi time / numpy time", ratio, "<= 1.5", ok)
    # paper round: socbi fastest at every thread count, on every pool measured
    paper = [r for r in report["results"] if r["workload"] == "paper" and r["median_s"]]
    if paper:
        worst = None
        losses = []
        for key in sorted({(r["params"]["pool"], r["params"]["threads"]) for r in paper}, key=str):
            grp = [r for r in paper if (r["params"]["pool"], r["params"]["threads"]) == key]
            soc = next((r for r in grp if r["structure"] == "socbi"), None)
            if not soc:
                continue
            for r in grp:
                if r is soc:
                    continue
                ratio = r["median_s"] / soc["median_s"]
                if worst is None or ratio < worst:
                    worst = ratio
                if ratio <= 1.0:
                    losses.append(f"{r['structure']} at {key[0]}, {key[1]} threads ({ratio:.2f}x)")
        target("paper round: socbi faster than every baseline at every thread count (min baseline/socbi)", worst,
               "> 1 everywhere", not losses if worst is not None else None,
               ("faster than socbi: " + "; ".join(losses[:12]) + (" ..." if len(losses) > 12 else "")) if losses else "")
        cores = report["machine"].get("usable_cores") or 1
        for pool in sorted({r["params"]["pool"] for r in paper}):
            soc = {r["params"]["threads"]: r["parts"]["t_update"] for r in paper
                   if r["params"]["pool"] == pool and r["structure"] == "socbi"}
            ths = sorted(t for t in soc if t <= cores)
            if len(ths) >= 2:
                # "falls" = by at least 5 % per step, so that noise does not count as scaling
                falling = all(soc[b] * 1.05 <= soc[a] for a, b in zip(ths, ths[1:]))
                target(f"paper round {pool}: socbi T_update falls with threads up to {cores} cores",
                       soc[ths[0]] / soc[ths[-1]], f"T_update falls >= 5% per added thread up to {cores}", falling,
                       "; ".join(f"{t} threads {soc[t] * 1e3:.2f} ms" for t in sorted(soc)))
    else:
        target("paper round: socbi faster than every baseline at every thread count", None, "> 1 everywhere", None)
    for rec in report.get("core", []):
        w = rec["workload"]
        full = rec.get("n") == (10**7 if w == "memory" else 10**6)
        note = "" if full else f"at n={rec.get('n'):,}, not the target's size"
        if w == "stream":
            target("core stream (10M increments, top-1000 every 1000) vs numpy", rec["speedup"], ">= 50x",
                   rec["speedup"] >= 50 if full else None, note)
        elif w == "settled":
            target("core settled top-1000 vs argpartition", rec["speedup"], ">= 100x",
                   rec["speedup"] >= 100 if full else None, note)
        elif w == "bulk":
            target("core bulk 1 thread: socbi / numpy time", rec["socbi_over_numpy"], "<= 2",
                   rec["socbi_over_numpy"] <= 2 if full else None, note)
            target("core bulk: 2-thread over 1-thread throughput", rec["thread_scaling"], ">= 1.6",
                   rec["thread_scaling"] >= 1.6 if full else None, note)
        elif w == "memory":
            target("core memory bytes per sample (stats)", rec["stats_bytes_per_sample"], "<= 48",
                   rec["stats_bytes_per_sample"] <= 48 if full else None,
                   "; ".join(x for x in (note, f"peak RSS growth {rec['rss_bytes_per_sample']:.1f} B/sample") if x))
    return out


# ======================================================================== reporting

def _t(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _ratio(r: Row) -> str:
    if r.ratio_to_socbi is None:
        return "-"
    if _base_name(r.structure) == "socbi":
        return "1"
    x = r.ratio_to_socbi
    better = "smaller" if r.workload == "memory" else "faster"
    return f"{x:.3g}x" if x >= 1 else f"{x:.3g}x (baseline {better})"


def _title(r: Row) -> str:
    p = r.params
    if r.workload == "stream":
        return (f"stream n={p['n']:,} b={p['b']:,} ids={p['dist']}: median per round "
                f"(update of b unit increments + top-{p['k']})")
    if r.workload == "bulk":
        return f"bulk n={p['n']:,} ids={p['dist']}: one update of n increments + top-{p['k']}"
    if r.workload == "paper":
        kind = "real" if p["real"] else "generated"
        return (f"paper round {p['pool']} ({kind}), {p['n']:,} unlabelled, {p['labelled']:,} labelled x K={p['k']}"
                f" = {p['updates']:,} updates, {p['threads']} update thread(s), then bottom({p['select']})")
    return f"memory n={p['n']:,}: peak RSS growth per id of a fresh process"


def format_rows(rows: Sequence[Row]) -> str:
    if not rows:
        return ""
    lines = [_title(rows[0])]
    paper = rows[0].workload == "paper"
    bulk = rows[0].workload == "bulk"
    mem = rows[0].workload == "memory"
    if paper:
        lines.append(f"  {'structure':<28} {'T_update':>10} {'T_sort':>10} {'T_search':>10} {'total':>10}  "
                     f"{'x socbi':>10}  n")
    elif bulk:
        lines.append(f"  {'structure':<28} {'update':>10} {'query':>10} {'total':>10}  {'x socbi':>10}  n")
    elif mem:
        lines.append(f"  {'structure':<28} {'B/id (RSS)':>11} {'B/id (self)':>11}  {'x socbi':>10}")
    else:
        lines.append(f"  {'structure':<28} {'median':>10}  {'x socbi':>10}  n")
    for r in rows:
        if r.skipped:
            lines.append(f"  {r.structure:<28} skipped: {r.skipped}")
        elif r.median_s is None:
            lines.append(f"  {r.structure:<28} no sample")
        elif paper:
            p = r.parts
            lines.append(f"  {r.structure:<28} {_t(p['t_update']):>10} {_t(p['t_sort']):>10} "
                         f"{_t(p['t_search']):>10} {_t(r.median_s):>10}  {_ratio(r):>10}  {r.samples}")
        elif bulk:
            p = r.parts
            lines.append(f"  {r.structure:<28} {_t(p['t_update']):>10} {_t(p['t_query']):>10} "
                         f"{_t(r.median_s):>10}  {_ratio(r):>10}  {r.samples}")
        elif mem:
            own = r.parts.get("reported_bytes_per_id")
            lines.append(f"  {r.structure:<28} {r.median_s:>11.1f} {('-' if own is None else f'{own:.1f}'):>11}  "
                         f"{_ratio(r):>10}")
        else:
            lines.append(f"  {r.structure:<28} {_t(r.median_s):>10}  {_ratio(r):>10}  {r.samples}")
    return "\n".join(lines)


def _fmt_core(r: Dict[str, object]) -> str:
    w = r["workload"]
    if w == "stream":
        return (f"core stream  n={r['n']:,} init={r['init']} {r['total']:,} increments, top-{r['k']} every "
                f"{r['every']}: socbi {r['socbi_s']:.2f} s, numpy {r['numpy_s']:.1f} s "
                f"(median of {r['numpy_rounds_timed']} rounds x {r['rounds']}) -> {r['speedup']:.0f}x")
    if w == "settled":
        return (f"core settled n={r['n']:,} init={r['init']} top-{r['k']}: socbi {r['socbi_us']:.1f} us, "
                f"argpartition {r['numpy_us']:.0f} us -> {r['speedup']:.0f}x")
    if w == "bulk":
        return (f"core bulk    n={r['n']:,} init={r['init']} update+top: numpy {r['numpy_ms']:.1f} ms, socbi 1 thread "
                f"{r['socbi_1t_ms']:.1f} ms ({r['socbi_over_numpy']:.2f}x numpy's time), 2 threads "
                f"{r['socbi_2t_ms']:.1f} ms (scaling {r['thread_scaling']:.2f}x)")
    return (f"core memory  n={r['n']:,}: {r['stats_bytes_per_sample']:.1f} bytes/sample by stats(), "
            f"{r['rss_bytes_per_sample']:.1f} by peak RSS growth")


def format_machine(m: Dict[str, object]) -> str:
    b = m.get("extension_build", {})
    load = m.get("load_average")
    load_s = "/".join(f"{x:.1f}" for x in load) if load else "?"
    end = m.get("load_average_end")
    if end:
        load_s += " -> " + "/".join(f"{x:.1f}" for x in end)
    return (f"machine: {m.get('cpu_model')} ({m.get('usable_cores')} usable cores of {m.get('cpu_count')}), "
            f"{m.get('memory_gib')} GiB, {m.get('platform')}; load average (1/5/15 min) {load_s}\n"
            f"software: Python {m.get('python')}, numpy {m.get('numpy')}, BTrees {m.get('BTrees')}, "
            f"sortedcontainers {m.get('sortedcontainers')}, extension built by {b.get('compiler')} "
            f"(C++ {b.get('cplusplus')}, optimized={b.get('optimized')}), socbi {m.get('socbi')}"
            + (f" at {m['git_commit']}" if m.get("git_commit") else "")
            + (" with uncommitted changes" if m.get("git_dirty") else ""))


def format_targets(targets: Sequence[Dict[str, object]]) -> str:
    lines = ["targets:"]
    for t in targets:
        meas = "-" if t["measured"] is None else f"{t['measured']:.3g}"
        lines.append(f"  [{t['status']}] {t['target']}: measured {meas} (goal {t['goal']})"
                     + (f" - {t['note']}" if t["note"] else ""))
    return "\n".join(lines)


def _cell(r: Optional[Dict[str, object]]) -> str:
    if r is None:
        return ""
    if r.get("skipped"):
        return "skipped"
    if not r.get("median_s"):
        return "-"
    t = _t(r["median_s"]).replace(" us", " µs")
    x = r.get("ratio_to_socbi")
    if x is None or r["structure"] == "socbi":
        return f"**{t}**"
    return f"{t} ({x:.3g}×)"


def format_markdown(report: Dict[str, object]) -> str:
    """The report as Markdown tables (the benchmarks page pastes this)."""
    res = report["results"]
    out: List[str] = []

    def fam_order(rows):
        names = []
        for r in rows:
            f = r["structure"].replace("+lock", "").replace("_mutex", "")
            if f not in names:
                names.append(f)
        return names

    def pick(rows, fam, **params):
        for r in rows:
            if r["structure"].replace("+lock", "").replace("_mutex", "") == fam and all(
                    r["params"].get(k) == v for k, v in params.items()):
                return r
        return None

    out.append("### Targets\n")
    out.append("| target | measured | goal | status |\n|---|---|---|---|")
    for t in report.get("targets", []):
        meas = "-" if t["measured"] is None else f"{t['measured']:.3g}"
        note = f" ({t['note']})" if t["note"] else ""
        out.append(f"| {t['target']}{note} | {meas} | {t['goal']} | {t['status']} |")
    paper = [r for r in res if r["workload"] == "paper"]
    if paper:
        out.append("\n### Paper round (So-CBI Tables 7/8 shape)\n")
        out.append("Time per round; in brackets: the structure's time over socbi's (above 1: socbi is faster).\n")
        for pool in sorted({r["params"]["pool"] for r in paper}, key=lambda p: (p != "digits", len(p), p)):
            rows = [r for r in paper if r["params"]["pool"] == pool]
            p0 = rows[0]["params"]
            kind = "real: sklearn digits" if p0["real"] else "generated clustered embeddings"
            out.append(f"**{pool}** ({kind}): {p0['n']:,} unlabelled, {p0['labelled']:,} labelled × K={p0['k']} = "
                       f"{p0['updates']:,} updates, then bottom({p0['select']}). One update thread:\n")
            out.append("| structure | T_update | T_sort | T_search | total | × socbi |\n|---|---|---|---|---|---|")
            for r in rows:
                if r["params"]["threads"] != 1:
                    continue
                if r.get("skipped") or not r.get("median_s"):
                    out.append(f"| {r['structure']} | skipped: {r.get('skipped') or 'no sample'} | | | | |")
                    continue
                pr = r["parts"]
                x = "1" if r["structure"] == "socbi" else f"{r['ratio_to_socbi']:.3g}"
                out.append(f"| {r['structure']} | {_t(pr['t_update'])} | {_t(pr['t_sort'])} | {_t(pr['t_search'])} | "
                           f"{_t(r['median_s'])} | {x} |")
            ths = sorted({r["params"]["threads"] for r in rows})
            if len(ths) > 1:
                out.append(f"\nTotal against update threads ({pool}; > 1 thread: Python structures under one "
                           "`threading.Lock`, std::set under one `std::mutex`, C++ arrays with CAS adds):\n")
                out.append("| structure | " + " | ".join(f"{t} thr" for t in ths) + " |")
                out.append("|---|" + "---|" * len(ths))
                for fam in fam_order(rows):
                    out.append(f"| {fam} | " + " | ".join(_cell(pick(rows, fam, threads=t)) for t in ths) + " |")
                soc = [pick(rows, "socbi", threads=t) for t in ths]
                out.append("| socbi T_update | " + " | ".join(_t(r["parts"]["t_update"]) if r and r.get("parts")
                                                              else "" for r in soc) + " |")
            out.append("")
    for wl, title, cols in (("stream", "Stream (median per round: b unit increments + top-1000)",
                             lambda p: (p["dist"] != "uniform", p["b"], p["n"])),
                            ("bulk", "Bulk (one update of n increments + top-1000)",
                             lambda p: (p["dist"] != "uniform", p["n"]))):
        rows = [r for r in res if r["workload"] == wl]
        if not rows:
            continue
        keys = sorted({tuple(sorted(r["params"].items())) for r in rows}, key=lambda kv: cols(dict(kv)))
        out.append(f"\n### {title}\n")
        if wl == "stream":
            heads = [f"n={dict(k)['n']:.0e} b={dict(k)['b']} {dict(k)['dist']}".replace("e+0", "e") for k in keys]
        else:
            heads = [f"n={dict(k)['n']:.0e} {dict(k)['dist']}".replace("e+0", "e") for k in keys]
        out.append("| structure | " + " | ".join(heads) + " |")
        out.append("|---|" + "---|" * len(keys))
        for fam in fam_order(rows):
            out.append(f"| {fam} | " + " | ".join(_cell(pick(rows, fam, **dict(k))) for k in keys) + " |")
    mem = [r for r in res if r["workload"] == "memory"]
    if mem:
        out.append(f"\n### Memory (n = {mem[0]['params']['n']:,}; peak RSS growth of a fresh process, bytes per id)\n")
        out.append("| structure | B/id (RSS) | B/id (structure's own count) |\n|---|---|---|")
        for r in mem:
            if r.get("skipped") or not r.get("median_s"):
                out.append(f"| {r['structure']} | skipped: {r.get('skipped')} | |")
                continue
            own = r["parts"].get("reported_bytes_per_id")
            out.append(f"| {r['structure']} | {r['median_s']:.1f} | {'-' if own is None else f'{own:.1f}'} |")
    if report.get("core"):
        out.append("\n### The core's own workloads (issue 2; socbi against numpy)\n")
        for rec in report["core"]:
            out.append(f"- {_fmt_core(rec)}")
    out.append("\n### Machine\n")
    out.append("```\n" + format_machine(report["machine"]) + "\n```")
    return "\n".join(out).replace(" us ", " µs ").replace(" us |", " µs |").replace(" us,", " µs,") + "\n"


def plot(report: Dict[str, object], path: str) -> None:
    """Log-log time against n (one line per structure, lower is better), plus thread scaling."""
    from matplotlib.figure import Figure  # the OO API: the caller's backend is left alone

    res = [r for r in report["results"] if r["median_s"]]
    fig = Figure(figsize=(13, 10))
    axes = fig.subplots(2, 2)

    def lines(ax, rows, x_key, title, xlabel, ylabel, logx=True):
        by: Dict[str, List[Tuple[float, float]]] = {}
        for r in rows:
            by.setdefault(r["structure"].replace("+lock", "").replace("_mutex", ""), []).append(
                (r["params"][x_key], r["median_s"]))
        for name, pts in sorted(by.items(), key=lambda kv: (kv[0] != "socbi", kv[0])):
            pts.sort()
            style = dict(lw=3, color="black", zorder=5) if name == "socbi" else dict(lw=1.3)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=name, **style)
        ax.set_yscale("log")
        ax.set_xscale("log" if logx else "log", base=10 if logx else 2)
        ax.set_title(title + " (lower is better)", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if by:
            ax.legend(fontsize=7, ncol=2)

    st = [r for r in res if r["workload"] == "stream" and r["params"]["b"] == 1000 and r["params"]["dist"] == "uniform"]
    lines(axes[0, 0], st, "n", "stream: b=1000 uniform increments + top-1000, per round", "n (ids)", "seconds")
    bk = [r for r in res if r["workload"] == "bulk" and r["params"]["dist"] == "uniform"]
    lines(axes[0, 1], bk, "n", "bulk: n uniform increments + top-1000", "n (ids)", "seconds")
    pp = [r for r in res if r["workload"] == "paper" and r["params"]["threads"] == 1 and not r["params"]["real"]]
    lines(axes[1, 0], pp, "n", "paper round, 1 thread: T_update+T_sort+T_search", "n (unlabelled ids)", "seconds")
    # the real pool (digits) as hollow markers in the colours of the lines
    colours = {ln.get_label(): ln.get_color() for ln in axes[1, 0].get_lines()}
    real = [r for r in res if r["workload"] == "paper" and r["params"]["threads"] == 1 and r["params"]["real"]]
    for r in real:
        name = r["structure"].replace("+lock", "").replace("_mutex", "")
        axes[1, 0].plot([r["params"]["n"]], [r["median_s"]], marker="D", ms=6, mfc="none",
                        color=colours.get(name, "grey"))
    if real:
        axes[1, 0].text(0.02, 0.02, "lines: generated pools; hollow diamonds: sklearn digits (real)",
                        transform=axes[1, 0].transAxes, fontsize=7)
    paper_all = [r for r in res if r["workload"] == "paper" and not r["params"]["real"]]
    if paper_all:
        big = max(r["params"]["n"] for r in paper_all)
        pt = [r for r in paper_all if r["params"]["n"] == big]
        lines(axes[1, 1], pt, "threads", f"paper round n={big:,}: total against update threads", "update threads",
              "seconds", logx=False)
        ths = sorted({r["params"]["threads"] for r in pt})
        axes[1, 1].set_xticks(ths)
        axes[1, 1].set_xticklabels([str(t) for t in ths])
        axes[1, 1].axvline(report["machine"].get("usable_cores") or 1, color="grey", ls="--", lw=1)
        axes[1, 1].text(0.02, 0.02, "dashed: cores on this machine; > 1 thread: Python structures and std::set "
                        "under one lock", transform=axes[1, 1].transAxes, fontsize=7)
    m = report["machine"]
    load = m.get("load_average") or ["?"]
    load_s = f"{load[0]:.1f}" if isinstance(load[0], (int, float)) else "?"
    fig.suptitle(f"socbi bench ({report['preset']}): {m.get('cpu_model')}, {m.get('usable_cores')} cores, "
                 f"numpy {m.get('numpy')}, load average {load_s} at start (shared machine)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)


# ============================================================================== CLI

def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes, about a minute on 2 cores (same as --preset quick)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="sizes to run: tiny (seconds), quick (about a minute), full (15-30 minutes; the default)")
    p.add_argument("--structures", metavar="LIST",
                   help="comma-separated structures (default: %s; btrees:tuple / sortedlist:tuple for float keys)"
                   % ",".join(DEFAULT_STRUCTURES))
    p.add_argument("--workloads", metavar="LIST", help="comma-separated subset of paper,stream,bulk,memory,core")
    p.add_argument("--seed", type=int, default=0, help="seed of every generated workload (default 0)")
    p.add_argument("--json", metavar="PATH", help="write the report (machine, results, targets) as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG plot (log-log time against n, thread scaling)")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown (for the benchmarks page)")
    p.add_argument("--from-json", metavar="PATH",
                   help="run nothing: re-render --plot/--markdown/the table from a report written by --json")


def _run(args: argparse.Namespace) -> int:
    """``socbi bench``; bad arguments raise UsageError (exit 2 via the CLI layer) before
    anything runs or prints."""
    from ._cliutil import UsageError, input_file, output_file

    preset = args.preset or ("quick" if args.quick else "full")
    if args.quick and args.preset and args.preset != "quick":
        raise UsageError(f"--quick contradicts --preset {args.preset}; pass one of them")
    structures = [s.strip() for s in args.structures.split(",") if s.strip()] if args.structures else None
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()] if args.workloads else None
    if args.from_json and (args.quick or args.preset or args.structures or args.workloads):
        raise UsageError("--from-json runs nothing; drop --quick/--preset/--structures/--workloads")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UsageError(f"--plot {args.plot!r} must name a .png file")
    for arg, value in (("--json", args.json), ("--plot", args.plot), ("--markdown", args.markdown)):
        if value:
            output_file(value, arg)
    if args.from_json:
        src = input_file(args.from_json, "--from-json", "a report written by socbi bench --json")
        try:
            report = json.loads(src.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"--from-json {args.from_json!r} is not JSON ({exc}); pass a report written "
                             f"by socbi bench --json") from None
        missing = [k for k in ("machine", "targets", "elapsed_s")
                   if not isinstance(report, dict) or k not in report]
        if missing:
            raise UsageError(f"--from-json {args.from_json!r} lacks {missing}; pass a report written by "
                             f"socbi bench --json")
    else:
        try:
            report = run_suite(preset, structures=structures, seed=args.seed, workloads=workloads,
                               log=lambda s: print(s + "\n", flush=True))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    print(format_machine(report["machine"]))
    print(format_targets(report["targets"]))
    print(f"elapsed {report['elapsed_s']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
        print(f"wrote {args.json}")
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(format_markdown(report))
        print(f"wrote {args.markdown}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="socbi bench", description=__doc__.split("\n\n")[0])
    _add_args(parser)
    from ._cliutil import run_command

    args = parser.parse_args(argv)
    args.command = "bench"
    return run_command(_run, args)


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark socbi against numpy, heaps, B-trees and C++ baselines",
                              description=__doc__.split("\n\n")[0])
    _add_args(p)
    p.set_defaults(func=_run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
