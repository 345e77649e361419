"""Probes behind the notes on the core in docs/benchmarks.md (socbi alone, no baselines).

    python bench/probe_core.py            # n = 1,000,000, about a minute
    python bench/probe_core.py --n 200000

1. Are two cores free right now? Two CPU-bound processes at once against one alone
   (a thread-scaling number means nothing on a machine whose second core is busy).
2. update() of n uniform +1s with 1 and 2 threads, bulk path and item-by-item path,
   interleaved; the first query after it, and the node statistics it leaves.
3. The same bulk update after a So-CBI round's shape (half the pool at count 0): the
   first bottom(128) after the rebuild, then the second.
4. The cost of the bindings' checks alone: score(ids) on the same ids (one id-range pass,
   one presence pass and one score read per id, as update() does before updating).
5. Small batches with threads > 1 (1,800 updates, the digits round): thread start-up.
Every data set is seeded and generated before timing; times are medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import socbi

_SPIN = "import time;t=time.perf_counter();sum(range(30_000_000));print(time.perf_counter()-t)"


def free_cores_check() -> str:
    one = float(subprocess.run([sys.executable, "-c", _SPIN], capture_output=True, text=True).stdout)
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    two = max(float(p.communicate()[0]) for p in procs)
    return (f"one CPU-bound process {one:.3f} s, two at once {two:.3f} s each "
            f"({'two cores free' if two < 1.25 * one else 'the second core is busy: thread scaling not measurable'})")


def med(xs):
    return statistics.median(xs) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    n, R = a.n, a.repeats
    rng = np.random.default_rng(0)
    ids = rng.integers(0, n, n)
    ones = np.ones(n)
    print(f"load average {os.getloadavg()}; {free_cores_check()}")

    t_up, t_q = {}, {}
    stats = {}
    for _ in range(R):
        for bulk in (True, False):
            for th in (1, 2):
                idx = socbi.SemiOrderedIndex(n)
                idx.insert(np.arange(n), 0.0)
                idx.top(1000)
                t = time.perf_counter()
                idx.update(ids, ones, threads=th, bulk=bulk)
                t_up.setdefault((bulk, th), []).append(time.perf_counter() - t)
                t = time.perf_counter()
                idx.top(1000)
                t_q.setdefault((bulk, th), []).append(time.perf_counter() - t)
                stats[bulk] = idx.stats()
    for bulk in (True, False):
        s = stats[bulk]
        print(f"update of {n:,} uniform +1 ({'bulk path' if bulk else 'item by item'}): "
              f"1 thread {med(t_up[(bulk, 1)]):.1f} ms, 2 threads {med(t_up[(bulk, 2)]):.1f} ms "
              f"(speed-up {med(t_up[(bulk, 1)]) / med(t_up[(bulk, 2)]):.2f}x); first top(1000) after it "
              f"{med(t_q[(bulk, 1)]):.2f} ms; nodes {s['nodes']}, oversized {s['oversized_nodes']}, "
              f"moves {s['moves']:,}, in-place {s['in_place_updates']:,}")

    # a round's shape: every labelled sample adds +1 to 10 neighbours; half the pool stays at 0
    hot = rng.choice(n, n // 2, replace=False)
    round_ids = hot[rng.integers(0, hot.size, n)]
    first, second, upd = [], [], []
    for _ in range(R):
        idx = socbi.SemiOrderedIndex(n)
        idx.insert(np.arange(n), 0.0)
        idx.bottom(128)
        t = time.perf_counter()
        idx.update(round_ids, ones)
        upd.append(time.perf_counter() - t)
        t = time.perf_counter()
        idx.bottom(128)
        first.append(time.perf_counter() - t)
        t = time.perf_counter()
        idx.bottom(128)
        second.append(time.perf_counter() - t)
    s = idx.stats()
    print(f"round shape (half the pool at 0): update {med(upd):.1f} ms, first bottom(128) {med(first):.2f} ms, "
          f"second {med(second) * 1e3:.0f} us; after both: nodes {s['nodes']}, splits {s['splits']}")

    chk = []
    for _ in range(R):
        t = time.perf_counter()
        idx.score(ids)
        chk.append(time.perf_counter() - t)
    x = np.zeros(n)
    addat = []
    for _ in range(R):
        t = time.perf_counter()
        np.add.at(x, ids, ones)
        addat.append(time.perf_counter() - t)
    print(f"score(ids) on the same {n:,} ids (the bindings' id and presence checks + one read): {med(chk):.1f} ms; "
          f"np.add.at of the same ids: {med(addat):.1f} ms")

    small = rng.integers(0, 1617, 1800)
    res = {}
    for _ in range(9):
        for th in (1, 2, 4, 16):
            idx = socbi.SemiOrderedIndex(1617)
            idx.insert(np.arange(1617), 0.0)
            t = time.perf_counter()
            idx.update(small, 1.0, threads=th)
            res.setdefault(th, []).append(time.perf_counter() - t)
    print("1,800 updates on 1,617 ids: " + ", ".join(f"{th} thread(s) {med(v) * 1e3:.0f} us" for th, v in res.items()))
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
