"""Benchmark: sharded So-CBI scoring rounds on a local Ray cluster (1, 2, 4 shards).

Workload: ``--n`` generated clustered embeddings of dimension ``--dim`` (Gaussian blobs,
seeded; never real data), K = ``--k``. For each shard count the same sequence of
``--rounds`` rounds is run, each labelling ``--batch`` samples (alternately the lowest
counts and random unlabelled samples, so that older lists get repaired). Reported per
shard count: build time, median round time, labels per second, and the parts of the
round measured on the driver (shard queries incl. transfer, candidate merge, delta
commit); a ``select(--select)`` (exact global bottom via per-shard bottom + merge).
The single-machine ``BoundaryScorer`` on the same data is the baseline.

The merge cost is also measured alone, without Ray: :func:`merge_candidates` for
``--merge-queries`` queries x S shards x K and :func:`merge_ranked` for S x n.

Usage::

    python bench/bench_distributed.py                       # 200k x 64, exact backend
    python bench/bench_distributed.py --backend hnsw --n 100000
    python bench/bench_distributed.py --json out.json

Honest context: on a 2-core machine all shards share the same two cores, so more
shards cannot make a round faster; the numbers show the overhead of sharding (object
store, merge, per-shard calls), not the speed-up a multi-machine cluster would get.
Times are wall-clock seconds; the report prints the CPU count.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:  # an installed socbi first; else the source tree next to this script
    import socbi.knn  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from socbi.distributed import ShardedScorer, merge_candidates, merge_ranked  # noqa: E402
from socbi.scoring import BoundaryScorer  # noqa: E402


def blobs(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, d)) * 4
    return (centres[rng.integers(0, 64, n)] + rng.normal(size=(n, d))).astype(np.float32)


def picks(n: int, rounds: int, batch: int, seed: int):
    """Rounds alternate: None = take the lowest counts, array = these random ids."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    out: list = []
    pos = 0
    for r in range(rounds):
        if r % 2:
            out.append(perm[pos:pos + batch])
            pos += batch
        else:
            out.append(None)
    return out


def run_rounds(scorer, plan, batch):
    times, merge, query, commit, repairs = [], [], [], [], []
    for ids in plan:
        if ids is None:
            ids = scorer.select(batch)[0]
        else:
            ids = ids[~scorer.labelled_mask[ids]]
        t0 = time.perf_counter()
        st = scorer.label(ids)
        times.append(time.perf_counter() - t0)
        merge.append(getattr(scorer, "merge_s", 0.0))
        query.append(st.query_s + st.delete_s)
        commit.append(st.index_s)
        repairs.append(st.repairs)
    return dict(round_s=float(np.median(times)), round_s_all=[round(t, 4) for t in times],
                query_s=float(np.median(query)), merge_s=float(np.median(merge)),
                commit_s=float(np.median(commit)), repairs=int(np.sum(repairs)),
                labels_per_s=float(batch / np.median(times)))


def merge_bench(m: int, k: int, shards: int, n_sel: int, reps: int = 5) -> dict:
    rng = np.random.default_rng(0)
    ids = [np.sort(rng.integers(0, 2**31 - 1, (m, k)), axis=1) for _ in range(shards)]
    dist = [np.sort(rng.random((m, k), dtype=np.float32), axis=1) for _ in range(shards)]
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        merge_candidates(ids, dist, k)
        t.append(time.perf_counter() - t0)
    parts = []
    for s in range(shards):
        c = np.sort(rng.integers(0, 50, n_sel))
        sl = rng.permutation(2**20)[:n_sel]
        o = np.lexsort((sl, c))
        parts.append((rng.integers(0, 2**31 - 1, n_sel)[o], c[o], sl[o]))
    t2 = []
    for _ in range(reps):
        t0 = time.perf_counter()
        merge_ranked(parts, n_sel)
        t2.append(time.perf_counter() - t0)
    return dict(queries=m, k=k, shards=shards, merge_candidates_s=float(np.median(t)),
                merge_candidates_us_per_query=float(np.median(t)) / m * 1e6,
                select_n=n_sel, merge_ranked_s=float(np.median(t2)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--select", type=int, default=1000)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--backend", choices=["exact", "hnsw"], default="exact")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--merge-queries", type=int, default=10_000)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--baseline-blas-threads", type=int, default=1,
                    help="BLAS threads for the single-machine baseline (threadpoolctl); 1 matches "
                         "the Ray actors, which get OMP_NUM_THREADS=1 with num_cpus=0; 0 = no limit")
    args = ap.parse_args(argv)
    import ray

    x = blobs(args.n, args.dim, 0)
    plan = picks(args.n, args.rounds, args.batch, 1)
    pool_opts = {"num_threads": 1} if args.backend == "hnsw" else {}
    res = dict(n=args.n, dim=args.dim, k=args.k, batch=args.batch, rounds=args.rounds,
               backend=args.backend, cpus=os.cpu_count(), machine=platform.machine(),
               ray=ray.__version__, runs=[])
    limit = contextlib.nullcontext()
    if args.baseline_blas_threads > 0:
        try:
            from threadpoolctl import threadpool_limits
            limit = threadpool_limits(limits=args.baseline_blas_threads, user_api="blas")
        except ImportError:
            print("threadpoolctl is not installed: the baseline runs with numpy's default BLAS threads")
    res["loadavg_before"] = os.getloadavg()
    t0 = time.perf_counter()
    with limit:
        ref = BoundaryScorer(x, args.k, backend=args.backend, pool_options=pool_opts, seed=0,
                             progress=False)
        base = dict(shards=0, label="single machine (BoundaryScorer)", build_s=time.perf_counter() - t0,
                    blas_threads=args.baseline_blas_threads or "default")
        base.update(run_rounds(ref, plan, args.batch))
    t0 = time.perf_counter()
    ref.select(args.select)
    base["select_s"] = time.perf_counter() - t0
    res["runs"].append(base)
    print(json.dumps(base))
    ref_counts = ref.counts()
    del ref

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        for s in args.shards:
            t0 = time.perf_counter()
            sh = ShardedScorer(x, args.k, n_shards=s, backend=args.backend,
                               pool_options=pool_opts, seed=0)
            row = dict(shards=s, label=f"{s} shard(s)", build_s=time.perf_counter() - t0)
            try:
                row.update(run_rounds(sh, plan, args.batch))
                t0 = time.perf_counter()
                sh.select(args.select)
                row["select_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                sh.checkpoint()
                row["checkpoint_s"] = time.perf_counter() - t0
                if args.backend == "exact":
                    row["counts_equal_single_machine"] = bool(np.array_equal(sh.counts(), ref_counts))
            finally:
                sh.close()
            res["runs"].append(row)
            print(json.dumps(row))
    finally:
        ray.shutdown()
    res["merge"] = [merge_bench(args.merge_queries, args.k, s, args.select) for s in (2, 4, 16, 64)]
    for m in res["merge"]:
        print(json.dumps(m))
    res["loadavg_after"] = os.getloadavg()
    print(json.dumps({"loadavg_before": res["loadavg_before"], "loadavg_after": res["loadavg_after"]}))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
