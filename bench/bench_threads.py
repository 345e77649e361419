"""Thread scaling of SemiOrderedIndex: one bulk update call, and many Python threads.

Run from the repository root (thread counts above the machine's cores are skipped):

    .venv/bin/python bench/bench_threads.py                    # n = 1M, threads 1 2 4 8 16
    .venv/bin/python bench/bench_threads.py --threads 1 2 --repeats 15 --json out.json

Two workloads, both on n = 1,000,000 ids:

* ``bulk``: one ``update(ids, 1.0, threads=T)`` of n random increments, then one
  ``top(1000)`` (the exclusive bulk path), for each T in ``--threads``. Start scores are
  zeros (counts) or uniform floats. Thread counts are interleaved within each repeat (in a
  rotating order, so drift in machine load hits every count alike); medians are reported
  with the speed-up over T = 1.
* ``stream``: P Python threads each apply their share of 10,000,000 unit increments to
  random ids in batches of 1,000 (``bulk=False``: item-by-item moves, the GIL released
  inside each call), every thread also asking ``top(1000)`` after each batch. Reports
  increments per second and checks that the final scores equal the exact counts.

Numbers depend on the machine: on a shared VM the second core is not always free, and
the memory system it shares with neighbours lends a second core more or less help from
minute to minute. ``--rounds R`` repeats the bulk workload R times, each round after a run
of ``build/bench/bench_machine_probe`` (built with ``-DSOCBI_BUILD_BENCH=ON``), which
measures how much a second core helps plain compute and plain random updates right then;
each round's speed-ups are printed next to that ceiling:

    .venv/bin/python bench/bench_threads.py --threads 1 2 --workloads bulk --rounds 10
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

try:
    from socbi import SemiOrderedIndex
except ImportError:  # not installed: use the source tree's build
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from socbi import SemiOrderedIndex
from socbi.bench import _init_scores  # the same start scores as socbi.bench.bench_bulk


def bench_bulk(n: int, thread_counts: List[int], init: str, repeats: int, seed: int = 0) -> List[Dict[str, float]]:
    rng = np.random.default_rng(seed)
    start = _init_scores(n, init, rng)
    ids = rng.integers(0, n, size=n)
    times: Dict[int, List[float]] = {t: [] for t in thread_counts}
    for r in range(repeats):
        order = thread_counts[r % len(thread_counts):] + thread_counts[:r % len(thread_counts)]
        for t in order:
            idx = SemiOrderedIndex(n)
            idx.insert(np.arange(n), start)
            idx.top(1000)
            t0 = time.perf_counter()
            idx.update(ids, 1.0, threads=t)
            idx.top(1000)
            times[t].append(time.perf_counter() - t0)
    base = statistics.median(times[thread_counts[0]])
    return [{"workload": "bulk", "init": init, "threads": t, "median_ms": statistics.median(v) * 1e3,
             "speedup": base / statistics.median(v)} for t, v in times.items()]


def bench_stream(n: int, total: int, thread_counts: List[int], batch: int = 1000, k: int = 1000,
                 seed: int = 0) -> List[Dict[str, float]]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n, size=total)
    want = np.bincount(ids, minlength=n).astype(float)
    out = []
    for p in thread_counts:
        idx = SemiOrderedIndex(n)
        idx.insert(np.arange(n), 0.0)
        idx.top(k)
        shares = np.array_split(ids, p)
        barrier = threading.Barrier(p + 1)

        def worker(share: np.ndarray) -> None:
            barrier.wait()
            for b in range(0, len(share), batch):
                idx.update(share[b:b + batch], 1.0, bulk=False)
                idx.top(k)

        threads = [threading.Thread(target=worker, args=(s,)) for s in shares]
        for th in threads:
            th.start()
        barrier.wait()
        t0 = time.perf_counter()
        for th in threads:
            th.join()
        secs = time.perf_counter() - t0
        if not np.array_equal(idx.score(np.arange(n)), want):
            raise AssertionError(f"stream with {p} threads lost or duplicated increments")
        idx.check()
        out.append({"workload": "stream", "threads": p, "seconds": secs, "increments_per_s": total / secs})
    base = out[0]["seconds"]
    for row in out:
        row["speedup"] = base / row["seconds"]
    return out


def run_probe(path: str) -> Dict[str, float] | None:
    """The machine probe's 2-thread speed-ups right now, or None when it is not built."""
    exe = Path(path)
    if not exe.is_file():
        return None
    out = subprocess.run([str(exe), "--json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--repeats", type=int, default=9, help="bulk repeats per thread count (median)")
    ap.add_argument("--stream-total", type=int, default=10_000_000)
    ap.add_argument("--workloads", default="bulk,stream")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--rounds", type=int, default=1, help="bulk rounds, each after a machine probe")
    ap.add_argument("--probe", default=str(Path(__file__).resolve().parents[1] / "build" / "bench" / "bench_machine_probe"),
                    help="the machine probe program (skipped when absent)")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.repeats < 1:
        ap.error(f"--rounds and --repeats must be >= 1, got {a.rounds} and {a.repeats}")
    cores = os.cpu_count() or 1
    counts = [t for t in a.threads if t <= cores]
    skipped = [t for t in a.threads if t > cores]
    if skipped:
        print(f"skipping thread counts {skipped}: this machine has {cores} cores")
    rows: List[Dict[str, float]] = []
    if "bulk" in a.workloads:
        if not Path(a.probe).is_file():
            print(f"(no machine probe at {a.probe}: build it with -DSOCBI_BUILD_BENCH=ON to see each round's ceiling)")
        for rnd in range(a.rounds):
            probe = run_probe(a.probe)
            if probe:
                print(f"\n[round {rnd + 1}/{a.rounds}] a second core helps right now: compute "
                      f"{probe['compute_2t_speedup']:.2f}x, random updates {probe['random_update_2t_speedup']:.2f}x")
            for init in ("zeros", "uniform"):
                res = bench_bulk(a.n, counts, init, a.repeats)
                for r in res:
                    r.update({"round": rnd, "probe": probe})
                rows += res
                print(f"\n[bulk] n={a.n:,} update of n random +1s then top(1000), start={init}, median of {a.repeats}")
                for r in res:
                    print(f"  threads={r['threads']:3d}: {r['median_ms']:8.2f} ms   speed-up {r['speedup']:5.2f}x")
        if a.rounds > 1:
            print("\n[bulk] speed-up per round (each init), median over rounds:")
            for t in counts[1:]:
                ups = [r["speedup"] for r in rows if r["workload"] == "bulk" and r["threads"] == t]
                print(f"  threads={t:3d}: median {statistics.median(ups):.2f}x, "
                      f"range {min(ups):.2f}-{max(ups):.2f}x over {len(ups)} measurements")
    if "stream" in a.workloads:
        res = bench_stream(a.n, a.stream_total, counts)
        rows += res
        print(f"\n[stream] n={a.n:,}, {a.stream_total:,} unit increments in batches of 1000 from P Python threads,"
              " top(1000) after each batch")
        for r in res:
            print(f"  P={r['threads']:3d}: {r['seconds']:7.2f} s  {r['increments_per_s'] / 1e6:6.2f} M increments/s"
                  f"   speed-up {r['speedup']:5.2f}x")
    if a.json:
        import platform
        machine = {"cores": cores, "platform": platform.platform(), "python": platform.python_version()}
        Path(a.json).write_text(json.dumps({"machine": machine, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
