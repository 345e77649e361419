"""Selection speed: socbi's uncertainty strategies against plain numpy, K-Center against peers.

For each pool size N (default 1e5, 1e6, 1e7) a seeded (N, C) matrix of class
probabilities (softmax of Gaussian logits, C = 10, float64) and a labelled mask (1 % of
the pool) are made once. Each measure is then timed side by side, interleaved, in CPU
time of the calling thread (``time.thread_time``):

* numpy: the plain version a user would write, on the whole matrix (labelled rows are
  not even excluded, which favours numpy):
  margin ``np.partition(P, C - 2, axis=1)`` for the top two, their difference, then
  ``np.argpartition`` for the n smallest and a sort of those n; least confidence
  ``P.max(1)`` then ``argpartition``; entropy ``scipy.special.entr(P).sum(1)`` then
  ``argpartition``;
* socbi: ``PoolState(labelled=mask, probabilities=P)`` plus ``make_strategy(m).select(state, n)``
  -- everything a caller pays, including the probability check that numpy skips.

Repeats alternate numpy / socbi; the table gives medians and the ratio socbi / numpy
(< 1: socbi cheaper). ``--threads 2`` adds socbi with two threads, in process CPU time
and wall time (on a shared 2-vCPU machine wall time is noisy; see docs/benchmarks.md).

``--kcenter`` times K-Center greedy (n = 100 picks from N = 20,000 x 64 float32, 200
labelled) in socbi and, when installed, scikit-activeml's ``CoreSet`` (install it in a
separate environment, never into socbi's: ``python -m venv peers && peers/bin/pip install
scikit-activeml`` and run this script with that interpreter and ``PYTHONPATH`` pointing
at an installed socbi).

    python bench/bench_selection.py                       # 1e5, 1e6, 1e7
    python bench/bench_selection.py --sizes 100000 --reps 5 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def make_probabilities(n: int, c: int, seed: int = 0) -> np.ndarray:
    """Softmax of seeded Gaussian logits, built in blocks to bound the temporary memory."""
    rng = np.random.default_rng(seed)
    p = np.empty((n, c), np.float64)
    for s in range(0, n, 1 << 20):
        z = rng.normal(scale=2.0, size=(min(n, s + (1 << 20)) - s, c))
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        p[s:s + z.shape[0]] = z
    return p


def numpy_select(measure: str, p: np.ndarray, n: int) -> np.ndarray:
    c = p.shape[1]
    if measure == "margin":
        part = np.partition(p, c - 2, axis=1)
        score = part[:, -1] - part[:, -2]                     # smaller = more uncertain
    elif measure == "least_confidence":
        score = p.max(axis=1)
    else:
        from scipy.special import entr
        score = -entr(p).sum(axis=1)
    idx = np.argpartition(score, n)[:n]
    return idx[np.argsort(score[idx], kind="stable")]


def socbi_select(measure: str, p: np.ndarray, mask: np.ndarray, n: int, threads: int = 1) -> np.ndarray:
    from socbi.strategies import PoolState, make_strategy

    state = PoolState(labelled=mask, probabilities=p)
    return make_strategy(measure, threads=threads).select(state, n, seed=0)


def _time(fn, clock) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def bench_uncertainty(sizes, n: int, c: int, reps: int, threads: int) -> list:
    rows = []
    for size in sizes:
        p = make_probabilities(size, c, seed=size)
        mask = np.zeros(size, bool)
        mask[np.random.default_rng(1).choice(size, size // 100, replace=False)] = True
        r = max(3, reps if size < 10**7 else max(3, reps // 2))
        for measure in ("margin", "least_confidence", "entropy"):
            # The two answers agree on the unlabelled picks (a sanity check, not timed).
            a = socbi_select(measure, p, mask, n)
            assert not mask[a].any() and np.unique(a).size == n
            t_np, t_so, t_so2, w_so2 = [], [], [], []
            for _ in range(r):                                  # interleaved repeats
                t_np.append(_time(lambda: numpy_select(measure, p, n), time.thread_time))
                t_so.append(_time(lambda: socbi_select(measure, p, mask, n), time.thread_time))
                if threads > 1:
                    t_so2.append(_time(lambda: socbi_select(measure, p, mask, n, threads), time.process_time))
                    w_so2.append(_time(lambda: socbi_select(measure, p, mask, n, threads), time.perf_counter))
            row = dict(n_samples=size, classes=c, n=n, measure=measure, reps=r,
                       numpy_ms=1e3 * statistics.median(t_np), socbi_ms=1e3 * statistics.median(t_so))
            row["ratio"] = row["socbi_ms"] / row["numpy_ms"]
            if threads > 1:
                row[f"socbi_t{threads}_cpu_ms"] = 1e3 * statistics.median(t_so2)
                row[f"socbi_t{threads}_wall_ms"] = 1e3 * statistics.median(w_so2)
            rows.append(row)
            extra = (f"  threads={threads}: cpu {row[f'socbi_t{threads}_cpu_ms']:.1f} ms, wall "
                     f"{row[f'socbi_t{threads}_wall_ms']:.1f} ms" if threads > 1 else "")
            print(f"N={size:>9,d} {measure:17s} numpy {row['numpy_ms']:9.2f} ms  socbi {row['socbi_ms']:9.2f} ms"
                  f"  ratio {row['ratio']:.2f}{extra}", flush=True)
        del p
    return rows


def bench_kcenter(reps: int) -> list:
    rng = np.random.default_rng(0)
    N, d, n_lab, n = 20_000, 64, 200, 100
    x = rng.normal(size=(N, d)).astype(np.float32)
    lab = rng.choice(N, n_lab, replace=False)
    mask = np.zeros(N, bool)
    mask[lab] = True
    from socbi.strategies import KCenterGreedy, PoolState

    def ours():
        KCenterGreedy(progress=False).select(PoolState(labelled=mask, embeddings=x), n, seed=0)

    fns = {"socbi KCenterGreedy": ours}
    try:
        from skactiveml.pool import CoreSet
        y = np.full(N, np.nan)
        y[lab] = 0

        def peer():
            CoreSet(random_state=0).query(X=x, y=y, batch_size=n)

        fns["scikit-activeml CoreSet"] = peer
    except ImportError:
        print("scikit-activeml not installed here: timing socbi only", flush=True)
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            times[k].append(_time(f, time.thread_time))
    rows = []
    for k, t in times.items():
        rows.append(dict(what=k, n_samples=N, dim=d, labelled=n_lab, n=n, cpu_ms=1e3 * statistics.median(t)))
        print(f"K-Center N={N:,d} d={d} n={n}: {k:26s} {rows[-1]['cpu_ms']:9.1f} ms (median of {reps})", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--n", type=int, default=1000, help="samples to select (default 1000)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="also time socbi with this many threads")
    ap.add_argument("--kcenter", action="store_true", help="time K-Center against scikit-activeml instead")
    ap.add_argument("--json", default="", help="write the rows here")
    args = ap.parse_args(argv)
    if args.kcenter:
        rows = bench_kcenter(args.reps)
    else:
        sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
        rows = bench_uncertainty(sizes, args.n, args.classes, args.reps, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
