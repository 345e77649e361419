"""Soak test of SemiOrderedIndex: mixed operations at n = 10^6, RSS sampled (not run in CI).

    python bench/soak_index.py --n 1000000 --ops 100000000 --seconds 0      # the full soak
    python bench/soak_index.py --seconds 300                                 # 5 minutes

Operations (each id of a batch counts as one operation; a query counts as one):
update (integer deltas, repeats allowed, batches of 1 / 64 / 4096 / 65536, 1 or
``--threads`` threads), assign, erase + re-insert (churn), top / bottom (n = 100) and
score. A numpy shadow of the scores receives the same integer changes; at the end (and
every ``--check-every`` seconds) ``check()`` runs and every score must equal the shadow
exactly, with no id lost or duplicated.

RSS is read from /proc/self/statm every second. "Peak RSS stops growing after warm-up"
is judged on the peak of each tenth of the run after the first: the report prints
them, the growth of the last tenth over the second, and the index's own
``memory_bytes``. Output: a table on stdout and, with ``--json``, the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any, Dict, List

import numpy as np

from socbi import SemiOrderedIndex


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak so far (KiB on Linux, bytes on macOS)
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if sys.platform == "darwin" else r * 1024


def soak(n: int, max_ops: int, seconds: float, threads: int, seed: int, check_every: float,
         batch_sizes: Any = (1, 64, 4096, 65536)) -> Dict[str, Any]:
    rng = np.random.default_rng(seed)
    idx = SemiOrderedIndex(n)
    shadow = rng.integers(-1000, 1000, n).astype(np.float64)
    present = np.ones(n, bool)
    t_start = time.perf_counter()
    idx.insert(np.arange(n), shadow)
    counts = {"update": 0, "assign": 0, "erase": 0, "insert": n, "top": 0, "bottom": 0, "score": 0}
    samples: List[tuple] = []  # (seconds, ops, rss)
    ops = n
    last_sample = last_check = time.perf_counter()
    checks = 0
    deadline = t_start + seconds if seconds > 0 else float("inf")
    sizes = np.asarray(batch_sizes, dtype=np.int64)
    calls = 0
    while ops < max_ops and time.perf_counter() < deadline:
        calls += 1
        r = rng.random()
        size = int(sizes[rng.integers(0, sizes.size)])
        if r < 0.70:  # update, repeats allowed, integer deltas
            ids = rng.integers(0, n, size)
            ids = ids[present[ids]]
            d = rng.integers(-3, 4, ids.size).astype(np.float64)
            idx.update(ids, d, threads=threads if size >= 4096 else 1)
            np.add.at(shadow, ids, d)
            counts["update"] += ids.size
            ops += ids.size
        elif r < 0.80:  # assign
            ids = np.unique(rng.integers(0, n, size))
            ids = ids[present[ids]]
            s = rng.integers(-1000, 1000, ids.size).astype(np.float64)
            idx.assign(ids, s, threads=threads if size >= 4096 else 1)
            shadow[ids] = s
            counts["assign"] += ids.size
            ops += ids.size
        elif r < 0.88:  # churn: erase then re-insert
            ids = np.unique(rng.integers(0, n, min(size, 4096)))
            ids = ids[present[ids]]
            idx.erase(ids)
            present[ids] = False
            s = rng.integers(-1000, 1000, ids.size).astype(np.float64)
            idx.insert(ids, s)
            present[ids] = True
            shadow[ids] = s
            counts["erase"] += ids.size
            counts["insert"] += ids.size
            ops += 2 * ids.size
        elif r < 0.94:
            which = "top" if r < 0.91 else "bottom"
            got_ids, got = idx.top(100) if which == "top" else idx.bottom(100)
            assert got_ids.size == 100 and np.all(np.diff(got) <= 0 if which == "top" else np.diff(got) >= 0)
            counts[which] += 1
            ops += 1
        else:
            ids = rng.integers(0, n, min(size, 4096))
            ids = ids[present[ids]]
            assert np.array_equal(idx.score(ids), shadow[ids])
            counts["score"] += ids.size
            ops += ids.size
        now = time.perf_counter()
        if now - last_sample >= 1.0:
            samples.append((now - t_start, ops, rss_bytes()))
            last_sample = now
        if check_every > 0 and now - last_check >= check_every:
            idx.check()
            checks += 1
            last_check = time.perf_counter()
    wall = time.perf_counter() - t_start
    samples.append((wall, ops, rss_bytes()))  # before the final verification's big arrays
    idx.check()
    ids, sc = idx.items()
    assert ids.size == n == len(idx), "ids lost or duplicated"
    assert np.array_equal(sc, shadow), "a score differs from the exact sum of what was applied"
    st = idx.stats()
    tenths = []
    for k in range(10):
        lo, hi = wall * k / 10, wall * (k + 1) / 10
        vals = [s[2] for s in samples if lo <= s[0] <= hi]
        tenths.append(max(vals) if vals else None)
    valid = [t for t in tenths[1:] if t is not None]
    growth = (valid[-1] - valid[0]) / valid[0] if len(valid) >= 2 else float("nan")
    return dict(n=n, ops=ops, calls=calls, batch_sizes=[int(s) for s in sizes], seconds=wall, ops_per_s=ops / wall, threads=threads, seed=seed, counts=counts,
                checks=checks + 1, peak_rss_by_tenth_mib=[None if t is None else round(t / 2**20, 1) for t in tenths],
                rss_growth_after_warmup=growth, index_memory_mib=round(st["memory_bytes"] / 2**20, 1),
                nodes=st["nodes"], splits=st["splits"], node_removals=st["node_removals"], rebuilds=st["rebuilds"],
                max_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--ops", type=int, default=100_000_000, help="stop after this many operations (default 1e8)")
    ap.add_argument("--seconds", type=float, default=300, help="and after this long (0 = no limit; default 300)")
    ap.add_argument("--threads", type=int, default=2, help="update threads for batches >= 4096 (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-every", type=float, default=60, help="seconds between check() calls (default 60)")
    ap.add_argument("--batch-sizes", default="1,64,4096,65536",
                    help="batch sizes drawn uniformly per call (default 1,64,4096,65536)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args(argv)
    r = soak(a.n, a.ops, a.seconds, a.threads, a.seed, a.check_every,
             [int(s) for s in a.batch_sizes.split(",")])
    print(f"soak: n = {r['n']:,}, {r['ops']:,} operations ({r['calls']:,} calls) in {r['seconds']:.0f} s "
          f"({r['ops_per_s']:,.0f} ops/s), batch sizes {r['batch_sizes']}, threads {r['threads']}, {r['checks']} check() passes, "
          f"all scores exact, no id lost")
    print("operations:", ", ".join(f"{k} {v:,}" for k, v in r["counts"].items()))
    print("peak RSS by tenth of the run (MiB):", r["peak_rss_by_tenth_mib"])
    print(f"growth of the peak RSS from the 2nd to the last tenth: {100 * r['rss_growth_after_warmup']:+.2f} %; "
          f"index memory_bytes {r['index_memory_mib']} MiB; max RSS {r['max_rss_mib']} MiB")
    print(f"nodes {r['nodes']:,}, splits {r['splits']:,}, node removals {r['node_removals']:,}, rebuilds {r['rebuilds']}")
    if r["ops"] < 1e8:  # pragma: no cover - depends on the machine
        print(f"NOTE: {r['ops']:,} operations is fewer than the 10^8 of the full soak; run with --seconds 0")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(r, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
