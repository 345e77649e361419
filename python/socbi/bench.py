"""Benchmarks of the score index against what users write today (numpy).

Run ``socbi bench`` (or ``python bench/bench_index.py``). Every workload draws its ids
and deltas from a seeded generator *before* timing; each timed quantity is the median
of ``repeats`` runs, and socbi and numpy run side by side in one process on the same
data, so their ratio is meaningful even on a noisy shared machine.

Workloads (issue 2's performance section):

* ``stream``: ``total`` unit increments to uniformly random ids, a top-``k`` query after
  every ``every`` increments. numpy: ``np.add.at`` + ``np.argpartition`` + a sort of the
  k winners per round. numpy's cost per round does not depend on the round (a full
  partition each time), so with ``numpy_rounds`` < rounds its total is the median
  round time times the number of rounds, and the report says so.
* ``settled``: top-``k`` on a settled index versus ``argpartition`` on the same scores.
* ``bulk``: one update of ``n`` random increments then one top-``k``, with 1 and 2 threads.
* ``memory``: bytes per sample at ``n`` ids from ``stats()``, checked against the peak
  RSS growth of a fresh process.

``init`` picks the starting scores: ``zeros`` (counts, the So-CBI case: integer scores
with many ties) or ``uniform`` (distinct floats in [0, 1)).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import numpy as np

from socbi import SemiOrderedIndex


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
                 node_size: int = 256) -> Dict[str, float]:
    """Stream of unit increments with a top-k after every `every` increments."""
    rng = np.random.default_rng(seed)
    start = _init_scores(n, init, rng)
    ids = rng.integers(0, n, size=total)
    rounds = total // every
    idx = SemiOrderedIndex(n, node_size=node_size)
    idx.insert(np.arange(n), start)
    ones = np.ones(every)
    t0 = time.perf_counter()
    for r in range(rounds):
        idx.update(ids[r * every:(r + 1) * every], 1.0, bulk=False)
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
    assert np.array_equal(got, want), "socbi top(k) disagrees with numpy"
    return {"n": n, "k": k, "init": init, "socbi_us": socbi_s * 1e6, "numpy_us": numpy_s * 1e6,
            "speedup": numpy_s / socbi_s}


def bench_bulk(n: int = 1_000_000, k: int = 1000, init: str = "zeros", repeats: int = 5,
               seed: int = 0) -> Dict[str, float]:
    """One update of n random increments then one top(k); threads 1 and 2."""
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


_MEMORY_CHILD = r"""
import json, resource, sys
import numpy as np
from socbi import SemiOrderedIndex
n = int(sys.argv[1])
scores = np.random.default_rng(0).random(n)
ids = np.arange(n)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
idx = SemiOrderedIndex(n)
idx.insert(ids, scores)
idx.update(ids[: n // 10], 1.0, bulk=False)
idx.top(1000)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"stats": idx.stats(), "rss_growth_bytes": (peak - base) * 1024}))
"""


def bench_memory(n: int = 10_000_000) -> Dict[str, float]:
    """Bytes per sample from stats() and from the peak RSS growth of a fresh process."""
    res = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(n)], capture_output=True, text=True, check=True)
    data = json.loads(res.stdout)
    st = data["stats"]
    return {"n": n, "stats_bytes_per_sample": st["memory_bytes"] / n,
            "rss_bytes_per_sample": data["rss_growth_bytes"] / n, "nodes": st["nodes"]}


def run_all(quick: bool = False) -> List[Dict[str, object]]:
    results: List[Dict[str, object]] = []
    if quick:
        results.append({"workload": "stream", **bench_stream(n=100_000, total=1_000_000, numpy_rounds=100)})
        results.append({"workload": "settled", **bench_settled(n=100_000, warm_increments=1_000_000)})
        results.append({"workload": "bulk", **bench_bulk(n=100_000, repeats=3)})
        results.append({"workload": "memory", **bench_memory(n=1_000_000)})
        return results
    for init in ("zeros", "uniform"):
        results.append({"workload": "stream", **bench_stream(init=init)})
        results.append({"workload": "settled", **bench_settled(init=init)})
        results.append({"workload": "bulk", **bench_bulk(init=init)})
    results.append({"workload": "memory", **bench_memory()})
    return results


def _fmt(r: Dict[str, object]) -> str:
    w = r["workload"]
    if w == "stream":
        return (f"stream  n={r['n']:,} init={r['init']:<7} {r['total']:,} increments, top-{r['k']} every {r['every']}: "
                f"socbi {r['socbi_s']:.2f} s, numpy {r['numpy_s']:.1f} s "
                f"(median of {r['numpy_rounds_timed']} rounds x {r['rounds']}) -> {r['speedup']:.0f}x")
    if w == "settled":
        return (f"settled n={r['n']:,} init={r['init']:<7} top-{r['k']}: socbi {r['socbi_us']:.1f} us, "
                f"argpartition {r['numpy_us']:.0f} us -> {r['speedup']:.0f}x")
    if w == "bulk":
        return (f"bulk    n={r['n']:,} init={r['init']:<7} update+top: numpy {r['numpy_ms']:.1f} ms, socbi 1 thread "
                f"{r['socbi_1t_ms']:.1f} ms ({r['socbi_over_numpy']:.2f}x numpy's time), 2 threads "
                f"{r['socbi_2t_ms']:.1f} ms (scaling {r['thread_scaling']:.2f}x)")
    return (f"memory  n={r['n']:,}: {r['stats_bytes_per_sample']:.1f} bytes/sample by stats(), "
            f"{r['rss_bytes_per_sample']:.1f} by peak RSS growth")


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="socbi bench", description=__doc__.split("\n\n")[0])
    _add_args(parser)
    return _run(parser.parse_args(argv))


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for a smoke run)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def _run(args: argparse.Namespace) -> int:
    results = run_all(quick=args.quick)
    for r in results:
        print(_fmt(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark the score index against numpy")
    _add_args(p)
    p.set_defaults(func=_run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
