"""The So-CBI round: socbi against numpy and BTrees, in CPU time.

Run from the repository root:

    .venv/bin/python bench/bench_round.py                         # n = 1e6 and 1e7, ~10 min here
    .venv/bin/python bench/bench_round.py --n 1000000 --rounds 5 --json out.json
    .venv/bin/python bench/bench_round.py --quick                 # n = 1e5, seconds (a smoke run)

One **round** (what a So-CBI session does each time it labels a batch): erase the b ids
just labelled, add +1 to the counts of their 10 nearest unlabelled neighbours each, then
ask ``bottom(128)``. The neighbours are drawn uniformly from the ids still present
(a stand-in for a kNN graph, which would only change which ids get the +1s), with
repeats allowed; the b labelled ids are a uniform sample of the present ids. Everything
is drawn from the seed before any timing, and every structure replays the same rounds.

Starts: ``zeros`` (every count 0) and ``rounds20`` (the counts after 20 earlier rounds
of b_warm = min(b, n // 200) labelled ids each, so that the warm-up erases at most 10 %
of the pool).

Structures (each round timed with ``time.thread_time``, the calling thread's CPU time,
which the other load on a shared machine does not inflate):

* ``socbi``: ``SemiOrderedIndex`` with its automatic update path (``threads=1``);
* ``socbi_moves``: the same with ``bulk=False`` (item-by-item node moves), for the
  per-increment cost;
* ``numpy_addat``: a float64 count array, erase = set to +inf, ``np.add.at``,
  ``np.argpartition`` + sort of the 128 winners;
* ``numpy_bincount``: the same with ``counts += np.bincount(ids, minlength=n)``;
* ``btrees``: ZODB's ``LLTreeSet`` of packed keys ``count * 2**32 + id`` (skipped above
  n = 1e6: one Python object per id).

Rounds are interleaved (round r of every structure, in rotating order, before round
r + 1), gc is off inside timed sections, and every round checks that all structures
return the same 128 scores. Reported: the median CPU time per round of each structure
and the ratio median(numpy) / median(socbi) (> 1: socbi is faster); the JSON also has
the mean ratio (a session pays every round, the rare rebuild included).

numpy's speed here depends on the CPU: its AVX-512 ``argpartition`` (numpy >= 2.0) was
4x slower than its AVX2 one on the AMD EPYC VM these numbers come from (8-12 ms against
2.2-2.7 ms for 10^6 float64). ``--numpy-simd avx2`` sets ``NPY_DISABLE_CPU_FEATURES`` so
that numpy dispatches its AVX2 kernels: compare against the faster of the two. The JSON
records which kernels numpy found and which were disabled.

``--paper`` adds the paper round: one update of 1e6 uniform +1s on a fresh index of n
zeros, then ``bottom(128)`` (fresh structures per repeat, builds untimed).
``--increments`` adds the per-increment cost: one update of 100,000 +1s to uniform ids of
the ``rounds20`` start, with ``bulk=False`` (node moves) and with the automatic path.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

# numpy reads NPY_DISABLE_CPU_FEATURES once, at import: --numpy-simd must act before it.
_NUMPY_AVX2_ONLY = "X86_V4 AVX512_ICL AVX512_SPR"
if __name__ == "__main__" and "--numpy-simd" in sys.argv[1:-1]:
    if sys.argv[sys.argv.index("--numpy-simd") + 1] == "avx2":
        os.environ["NPY_DISABLE_CPU_FEATURES"] = _NUMPY_AVX2_ONLY

import numpy as np

import socbi
from socbi.baselines import BTreesIndex
from socbi.bench import _NoGC  # gc off around timed sections, as for every socbi bench

K_NEIGHBOURS = 10
SELECT = 128
STRUCTURES = ("socbi", "socbi_moves", "numpy_addat", "numpy_bincount", "btrees")
BTREES_MAX_N = 1_000_000


CLOCKS = {"thread": time.thread_time, "process": time.process_time, "wall": time.perf_counter}
_clock = CLOCKS["thread"]


def _cpu(fn: Callable[[], object]) -> float:
    """Time of fn() on the chosen clock (--clock; default the calling thread's CPU time)."""
    with _NoGC():
        t = _clock()
        fn()
        return _clock() - t


def make_rounds(n: int, b: int, rounds: int, rng: np.random.Generator, present: np.ndarray) -> List[Dict[str, np.ndarray]]:
    """`rounds` rounds of (labelled ids, neighbour ids) drawn from the ids in `present` (a
    bool mask, updated in place as rounds erase ids)."""
    out = []
    for _ in range(rounds):
        pool = np.flatnonzero(present)
        lab = rng.choice(pool, size=min(b, pool.size - 1), replace=False)
        present[lab] = False
        pool = np.flatnonzero(present)
        nbr = pool[rng.integers(0, pool.size, size=K_NEIGHBOURS * lab.size)]
        out.append({"labelled": lab.astype(np.int64), "neighbours": nbr.astype(np.int64)})
    return out


def start_state(n: int, b: int, start: str, rng: np.random.Generator):
    """(counts, present mask) of the start."""
    counts = np.zeros(n)
    present = np.ones(n, dtype=bool)
    if start == "rounds20":
        for r in make_rounds(n, max(1, min(b, n // 200)), 20, rng, present):
            counts += np.bincount(r["neighbours"], minlength=n)
    elif start != "zeros":
        raise ValueError(f"start = {start!r}; use 'zeros' or 'rounds20'")
    return counts, present


# ---------------------------------------------------------------- structures
class _Numpy:
    def __init__(self, counts: np.ndarray, present: np.ndarray, bincount: bool):
        self.c = np.where(present, counts, np.inf)
        self.n = counts.size
        self.bincount = bincount

    def round(self, lab: np.ndarray, nbr: np.ndarray):
        self.c[lab] = np.inf
        if self.bincount:
            self.c += np.bincount(nbr, minlength=self.n)
        else:
            np.add.at(self.c, nbr, 1.0)
        return self.bottom()

    def bottom(self):
        p = np.argpartition(self.c, SELECT)[:SELECT]
        p = p[np.lexsort((p, self.c[p]))]
        return p, self.c[p]


class _Socbi:
    def __init__(self, counts: np.ndarray, present: np.ndarray, bulk: Optional[bool], threads: int = 1):
        self.idx = socbi.SemiOrderedIndex(counts.size)
        ids = np.flatnonzero(present)
        self.idx.insert(ids, counts[ids])
        self.idx.bottom(SELECT)  # settle as a session would have after its last round
        self.bulk = bulk
        self.threads = threads

    def round(self, lab: np.ndarray, nbr: np.ndarray):
        self.idx.erase(lab)
        self.idx.update(nbr, 1.0, threads=self.threads, bulk=self.bulk)
        return self.idx.bottom(SELECT)


class _BTrees:
    def __init__(self, counts: np.ndarray, present: np.ndarray):
        self.t = BTreesIndex(counts.size, validate=False, key="packed")
        ids = np.flatnonzero(present)
        self.t.insert(ids, counts[ids])

    def round(self, lab: np.ndarray, nbr: np.ndarray):
        self.t.erase(lab)
        self.t.update(nbr, np.ones(nbr.size))
        return self.t.bottom(SELECT)


def build(name: str, counts: np.ndarray, present: np.ndarray, threads: int = 1):
    if name == "socbi":
        return _Socbi(counts, present, None, threads)
    if name == "socbi_moves":
        return _Socbi(counts, present, False, threads)
    if name == "numpy_addat":
        return _Numpy(counts, present, bincount=False)
    if name == "numpy_bincount":
        return _Numpy(counts, present, bincount=True)
    if name == "btrees":
        return _BTrees(counts, present)
    raise ValueError(f"unknown structure {name!r}; choose from {', '.join(STRUCTURES)}")


def run_round_config(n: int, b: int, start: str, structures: Sequence[str], rounds: int, seed: int,
                     threads: int = 1, log: Callable[[str], None] = print) -> Dict[str, object]:
    rng = np.random.default_rng(seed)
    counts, present = start_state(n, b, start, rng)
    plan = make_rounds(n, b, rounds, rng, present.copy())
    names = [s for s in structures if not (s == "btrees" and n > BTREES_MAX_N)]
    if b * rounds >= n:
        raise ValueError(f"b * rounds = {b * rounds} would erase the whole pool of n = {n}")
    built = {s: build(s, counts, present, threads) for s in names}
    times: Dict[str, List[float]] = {s: [] for s in names}
    for r, rd in enumerate(plan):
        got = {}
        order = names[r % len(names):] + names[:r % len(names)]
        for s in order:
            res = []
            times[s].append(_cpu(lambda: res.append(built[s].round(rd["labelled"], rd["neighbours"]))))
            got[s] = np.asarray(res[0][1], dtype=float)
        ref = got[names[0]]
        for s, v in got.items():
            if not np.array_equal(v, ref):
                raise RuntimeError(f"round {r}: {s} bottom({SELECT}) scores differ from {names[0]}'s")
    med = {s: statistics.median(t) for s, t in times.items()}
    mean = {s: statistics.fmean(t) for s, t in times.items()}
    row: Dict[str, object] = {"n": n, "b": b, "start": start, "rounds": rounds, "threads": threads,
                              "median_ms": {s: v * 1e3 for s, v in med.items()},
                              "mean_ms": {s: v * 1e3 for s, v in mean.items()},
                              "times_ms": {s: [x * 1e3 for x in t] for s, t in times.items()}}
    if "socbi" in med:
        row["numpy_over_socbi"] = {s: med[s] / med["socbi"] for s in med if s.startswith("numpy") or s == "btrees"}
        row["numpy_over_socbi_mean"] = {s: mean[s] / mean["socbi"] for s in mean
                                        if s.startswith("numpy") or s == "btrees"}
        st = built["socbi"].idx.stats()
        row["socbi_stats"] = {k: st.get(k) for k in ("moves", "in_place_updates", "rebuilds", "nodes", "lazy_updates",
                                                     "stale_scans", "counted_updates")}  # get: older builds lack some counters
    skipped = [s for s in structures if s not in names]
    if skipped:
        row["skipped"] = {s: f"n > {BTREES_MAX_N}: one Python object per id" for s in skipped}
    log(format_row(row))
    return row


def run_paper(n: int, increments: int, structures: Sequence[str], repeats: int, seed: int,
              log: Callable[[str], None] = print) -> Dict[str, object]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n, size=increments)
    names = [s for s in structures if s != "btrees" or n <= BTREES_MAX_N]
    times: Dict[str, List[float]] = {s: [] for s in names}
    zeros, present = np.zeros(n), np.ones(n, dtype=bool)
    for rep in range(repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        got = {}
        for s in order:
            obj = build(s, zeros, present)
            res = []
            if isinstance(obj, _Socbi):
                fn = lambda: res.append((obj.idx.update(ids, 1.0, bulk=obj.bulk), obj.idx.bottom(SELECT))[1])
            elif isinstance(obj, _Numpy):
                def fn(obj=obj):
                    if obj.bincount:
                        obj.c += np.bincount(ids, minlength=n)
                    else:
                        np.add.at(obj.c, ids, 1.0)
                    res.append(obj.bottom())
            else:
                fn = lambda: res.append((obj.t.update(ids, np.ones(ids.size)), obj.t.bottom(SELECT))[1])
            times[s].append(_cpu(fn))
            got[s] = np.asarray(res[0][1], dtype=float)
            del obj
        ref = got[names[0]]
        for s, v in got.items():
            if not np.array_equal(v, ref):
                raise RuntimeError(f"paper round: {s} bottom({SELECT}) scores differ from {names[0]}'s")
    med = {s: statistics.median(t) for s, t in times.items()}
    row = {"workload": "paper", "n": n, "increments": increments, "repeats": repeats,
           "median_ms": {s: v * 1e3 for s, v in med.items()}}
    if "socbi" in med:
        row["numpy_over_socbi"] = {s: med[s] / med["socbi"] for s in med if s != "socbi"}
    log("paper " + format_row(row))
    return row


def run_increments(n: int, m: int, repeats: int, seed: int, log: Callable[[str], None] = print) -> Dict[str, object]:
    """ns per increment of one update of m +1s on the rounds20 start (ties everywhere)."""
    rng = np.random.default_rng(seed)
    counts, present = start_state(n, 1000, "rounds20", rng)
    pool = np.flatnonzero(present)
    out: Dict[str, object] = {"workload": "increments", "n": n, "m": m, "repeats": repeats}
    for label, bulk in (("moves", False), ("auto", None)):
        ns, moves = [], []
        for rep in range(repeats):
            ids = pool[rng.integers(0, pool.size, size=m)]
            s = _Socbi(counts, present, bulk)
            before = s.idx.stats()["moves"]
            ns.append(_cpu(lambda: s.idx.update(ids, 1.0, bulk=bulk)) * 1e9 / m)
            moves.append(s.idx.stats()["moves"] - before)
            s.idx.bottom(SELECT)
            s.idx.check() if n <= 1_000_000 else None
            del s
        out[f"{label}_ns_per_increment"] = statistics.median(ns)
        out[f"{label}_node_moves"] = int(statistics.median(moves))
    log(f"increments n={n} m={m}: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in out.items() if k.endswith(("increment", "moves"))))
    return out


def _numpy_simd() -> Dict[str, object]:
    """The SIMD kernels numpy dispatches to here, and those the environment disabled."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return {"dispatch_targets": list(__cpu_dispatch__),
            "found": sorted(k for k, v in __cpu_features__.items() if v and k.startswith(("AVX512", "X86_V"))),
            "disabled": os.environ.get("NPY_DISABLE_CPU_FEATURES", "")}


def format_row(row: Dict[str, object]) -> str:
    med = row["median_ms"]
    head = f"n={row['n']:>9} " + (f"b={row['b']:>6} {row['start']:>8} " if "b" in row else "")
    cells = " ".join(f"{s} {v:9.3f}ms" for s, v in med.items())
    ratios = row.get("numpy_over_socbi", {})
    rs = " ".join(f"{s}/socbi {v:7.2f}x" for s, v in ratios.items())
    return f"{head}{cells} | {rs}"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--b", type=int, nargs="+", default=[128, 1000, 10_000, 100_000])
    ap.add_argument("--starts", nargs="+", default=["rounds20", "zeros"], choices=["rounds20", "zeros"])
    ap.add_argument("--structures", default=",".join(STRUCTURES))
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per configuration (median)")
    ap.add_argument("--threads", type=int, default=1, help="socbi's threads= (CPU time is the caller's thread only)")
    ap.add_argument("--paper", action="store_true", help="also the paper round (1e6 +1s from zeros, bottom(128))")
    ap.add_argument("--paper-repeats", type=int, default=7)
    ap.add_argument("--increments", action="store_true", help="also ns per increment (100k +1s on rounds20 counts)")
    ap.add_argument("--quick", action="store_true", help="n = 1e5, b up to 1e4, 3 rounds: a smoke run")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="thread",
                    help="thread: time.thread_time (default; counts socbi's calling thread only, so use "
                         "'wall' or 'process' with --threads > 1 on an idle machine)")
    ap.add_argument("--numpy-simd", choices=["default", "avx2"], default="default",
                    help="avx2: numpy's AVX2 kernels instead of its AVX-512 ones (set before numpy loads; "
                         "see the module docstring)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    global _clock
    _clock = CLOCKS[args.clock]
    if args.quick:
        args.n, args.b, args.rounds, args.paper_repeats = [100_000], [128, 1000, 10_000], 3, 3
    structures = [s.strip() for s in args.structures.split(",") if s.strip()]
    for s in structures:
        if s not in STRUCTURES:
            ap.error(f"unknown structure {s!r}; choose from {', '.join(STRUCTURES)}")
    if args.numpy_simd == "avx2" and os.environ.get("NPY_DISABLE_CPU_FEATURES") != _NUMPY_AVX2_ONLY:
        ap.error("--numpy-simd avx2 acts only when this file runs as a script (numpy is already loaded)")
    report: Dict[str, object] = {"socbi_version": socbi.__version__, "numpy": np.__version__,
                                 "numpy_simd": _numpy_simd(), "argv": sys.argv[1:], "clock": args.clock,
                                 "rounds": [], "paper": [], "increments": []}
    t0 = time.perf_counter()
    for n in args.n:
        for start in args.starts:
            for b in args.b:
                if b * args.rounds >= n:
                    print(f"n={n} b={b}: skipped (b * rounds >= n)")
                    continue
                report["rounds"].append(run_round_config(n, b, start, structures, args.rounds, args.seed, args.threads))
        if args.paper:
            report["paper"].append(run_paper(n, min(1_000_000, 10 * n), [s for s in structures if s != "socbi_moves"],
                                             args.paper_repeats, args.seed))
        if args.increments:
            report["increments"].append(run_increments(n, min(100_000, n // 10), 3, args.seed))
    report["wall_s"] = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
