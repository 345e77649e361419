"""Benchmark: sharded So-CBI past one driver -- memory and round time versus pool size.

Workload: ``--n`` generated clustered embeddings of dimension ``--dim`` (64 Gaussian
blobs, seeded; synthetic, never real data), written to local disk as ``.npy`` first
(block by block: the generator never holds the matrix), K = ``--k``. The shards load
their own rows from that file (``scheme=--scheme``); the driver process (this one)
never reads it. ``--rounds`` rounds of ``--batch`` labels each (alternately the lowest
counts and random unlabelled ids, so older lists get repaired).

Reported per configuration (one JSON line; ``--out`` appends it to a JSONL file):

* ``driver_rss_mb`` (after the rounds) and ``driver_peak_rss_mb`` (``ru_maxrss``) of
  this process, and ``driver_rss_before_mb`` (after ``ray.init``, before the scorer);
* per shard: RSS and peak RSS after the rounds, rows held, CPU seconds to load;
* build (load) wall time, median round wall time, median driver CPU per round
  (``time.thread_time`` around ``label``: merge, deltas, bookkeeping -- everything the
  driver does itself), ``select(--select)`` time, one full snapshot;
* recovery: one shard is killed, the next call restores it (snapshot + delta files);
  its wall time next to the build time, and ``begin_calls`` to show that no surviving
  shard was queried again.

``--session STRATEGY`` runs the whole session instead of the bare scorer: a
``DistributedLearner`` over the same ``.npy`` path (``--initial`` random ids labelled at
the start, default none; ``--rounds``
rounds of ``query(--batch)`` + ``teach``, the oracle labelling each picked row by its
nearest generating centre, mod 10), and reports the driver's RSS and peak RSS, its CPU
per ``query`` and per ``teach`` (``time.thread_time``; ``teach`` includes the model
refit on the labelled rows, read by id), and the bytes of its label state (label store
+ the scorer's labelled ids and neighbour lists).

``--formats`` instead compares reading the same rows from ``.npy`` (memory map) and
Parquet (pyarrow, FixedSizeList<float32>, 64k-row groups, no compression): full scan
and ``take`` of 1,000 random ids, CPU seconds (medians of ``--reps`` interleaved runs).

Usage::

    python bench/bench_distributed.py --n 1000000 --shards 2 --backend exact --out runs.jsonl
    python bench/bench_distributed.py --n 4000000 --formats
    python bench/bench_distributed.py --n 16000000 --session socbi --batch 100 --rounds 3

Honest context: all shards share this machine's cores (2 vCPUs, shared with other
jobs); round times are wall-clock and show the cost per configuration here, not a
cluster's speed-up. Memory numbers do not depend on the load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

try:  # an installed socbi first; else the source tree next to this script
    import socbi.storage  # noqa: F401 (probe: is socbi importable?)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from socbi.distributed import ShardedScorer, _rss_bytes, merge_candidates, merge_ranked  # noqa: E402
from socbi.storage import NpyRows, ParquetRows, write_npy, write_parquet  # noqa: E402

MB = 1 << 20


def blocks(n: int, d: int, seed: int, step: int = 1 << 20):
    """Clustered rows, generated block by block (O(step d) memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, d)) * 4
    for s in range(0, n, step):
        m = min(step, n - s)
        yield (centres[rng.integers(0, 64, m)] + rng.normal(size=(m, d))).astype(np.float32)


def ensure_data(path: Path, n: int, d: int, seed: int = 0) -> Path:
    if path.exists() and NpyRows(path).n == n and NpyRows(path).dim == d:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    write_npy(tmp, blocks(n, d, seed), n, d)
    os.replace(tmp, path)
    return path


def _start(args: argparse.Namespace) -> tuple:
    """Data on disk, Ray up: ``(path, pool options, the row's common fields, checkpoint dir)``."""
    import ray

    path = _generate(args)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=args.object_store_mb * MB)
    pool_opts = {"num_threads": 1}
    if args.backend == "hnsw":
        pool_opts.update(M=args.M, ef_construction=args.ef_construction, ef=args.ef)
    row = dict(n=args.n, dim=args.dim, k=args.k, shards=args.shards, backend=args.backend,
               scheme=args.scheme, batch=args.batch, rounds=args.rounds, ray=ray.__version__,
               cpus=os.cpu_count(), machine=platform.machine(), pool_options=pool_opts,
               loadavg_before=os.getloadavg(), driver_rss_before_mb=_rss_bytes() / MB)
    return path, pool_opts, row, Path(args.data_dir) / f"ckpt-{os.getpid()}"


def _stop(closable: object, ckpt: Path, row: dict) -> None:
    import shutil

    import ray

    closable.close()
    ray.shutdown()
    shutil.rmtree(ckpt, ignore_errors=True)
    row["loadavg_after"] = os.getloadavg()


def run_config(args: argparse.Namespace) -> dict:
    import ray

    path, pool_opts, row, ckpt = _start(args)
    t0 = time.perf_counter()
    sh = ShardedScorer(str(path), args.k, n_shards=args.shards, backend=args.backend,
                       scheme=args.scheme, pool_options=pool_opts, seed=0,
                       checkpoint_dir=str(ckpt), checkpoint_every=1000)
    try:
        row["build_s"] = time.perf_counter() - t0
        rng = np.random.default_rng(1)
        times, cpu, repairs = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                ids = sh.select(args.batch)[0]
            else:
                ids = rng.choice(args.n, args.batch * 2, replace=False)
                ids = ids[~sh.is_labelled(ids)][:args.batch]
            c0, w0 = time.thread_time(), time.perf_counter()
            st = sh.label(ids)
            times.append(time.perf_counter() - w0)
            cpu.append(time.thread_time() - c0)
            repairs.append(st.repairs)
            print(f"  round {r}: {times[-1]:.2f} s wall, driver cpu {cpu[-1] * 1e3:.1f} ms, "
                  f"{st.repairs} repairs", flush=True)
        row.update(round_s=float(np.median(times)), round_s_all=[round(t, 3) for t in times],
                   driver_cpu_ms_per_round=float(np.median(cpu)) * 1e3,
                   driver_cpu_ms_all=[round(c * 1e3, 2) for c in cpu], repairs=int(sum(repairs)))
        t0 = time.perf_counter()
        sh.select(args.select)
        row["select_s"] = time.perf_counter() - t0
        info = sh.shard_info()
        row["shards_info"] = [dict(shard=i["shard"], rows=i["rows"], rss_mb=i["rss"] / MB,
                                   rss_anon_mb=i["rss_anon"] / MB, rss_file_mb=i["rss_file"] / MB,
                                   peak_rss_mb=i["peak_rss"] / MB, load_cpu_s=i["load_cpu_s"])
                              for i in info]
        row["shard_rss_mb_max"] = max(i["rss"] for i in info) / MB
        row["shard_peak_rss_mb_max"] = max(i["peak_rss"] for i in info) / MB
        row["driver_rss_mb"] = _rss_bytes() / MB
        row["driver_rss_anon_mb"] = _rss_bytes("RssAnon") / MB
        row["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        sh.checkpoint()
        row["snapshot_s"] = time.perf_counter() - t0
        # one more round journaled as a delta file, then kill shard 0 and time the restore
        ids = sh.select(args.batch)[0]
        sh.label(ids)
        calls = list(sh.begin_calls)
        ray.kill(sh.actors[0], no_restart=True)
        time.sleep(1.0)
        t0 = time.perf_counter()
        sh.select(10)  # the first call after the kill restores shard 0
        row["recovery_wall_s"] = time.perf_counter() - t0
        rec = sh.recoveries[-1] if sh.recoveries else {}
        row["recovery"] = dict(shard=rec.get("shard"), seconds=rec.get("seconds"),
                               replayed_rounds=rec.get("replayed_rounds"))
        row["requeried_after_kill"] = [b - a for a, b in zip(calls, sh.begin_calls)]
        new = sh.shard_info()[0]
        row["recovered_shard_load_cpu_s"] = new["load_cpu_s"]
        row["driver_rss_end_mb"] = _rss_bytes() / MB
        row["driver_peak_rss_end_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        _stop(sh, ckpt, row)
    return row


def _generate(args: argparse.Namespace) -> Path:
    path = Path(args.data_dir) / f"emb_{args.n}x{args.dim}.npy"
    if not path.exists():  # in a child process, so that this (driver) process's peak RSS
        import subprocess  # measures the driver, not the generator
        subprocess.run([sys.executable, __file__, "--generate-only", "--n", str(args.n),
                        "--dim", str(args.dim), "--data-dir", args.data_dir], check=True)
    return path


def run_session(args: argparse.Namespace) -> dict:
    """A DistributedLearner run over the .npy path: driver memory and CPU per round."""
    from socbi.distributed import DistributedLearner

    path, pool_opts, row, ckpt = _start(args)
    row["strategy"] = args.session
    centres = np.random.default_rng(0).normal(size=(64, args.dim)) * 4  # blocks()'s first draw

    def oracle(rows: np.ndarray) -> np.ndarray:  # the nearest generating centre, mod 10
        return np.argmin(((rows[:, None, :] - centres[None]) ** 2).sum(-1), axis=1) % 10

    first = np.sort(np.random.default_rng(2).choice(args.n, args.initial, replace=False))
    labels = (first, oracle(NpyRows(path).take(first))) if args.initial else None
    row["initial_labels"] = args.initial
    t0 = time.perf_counter()
    learner = DistributedLearner(str(path), labels, n_shards=args.shards, scheme=args.scheme,
                                 backend=args.backend, k=args.k, pool_options=pool_opts, seed=0,
                                 strategy=args.session, progress=False, checkpoint_dir=str(ckpt),
                                 checkpoint_every=1000)
    try:
        row["build_s"] = time.perf_counter() - t0
        row["label_state"] = type(getattr(learner, "_store", None)).__name__  # NoneType: before the store
        row["driver_rss_built_mb"] = _rss_bytes() / MB
        q_cpu, t_cpu, q_wall, t_wall = [], [], [], []
        for r in range(args.rounds):
            c0, w0 = time.thread_time(), time.perf_counter()
            ids = learner.query(args.batch)
            q_cpu.append(time.thread_time() - c0)
            q_wall.append(time.perf_counter() - w0)
            y = oracle(learner.embeddings[ids])
            c0, w0 = time.thread_time(), time.perf_counter()
            learner.teach(ids, y)
            t_cpu.append(time.thread_time() - c0)
            t_wall.append(time.perf_counter() - w0)
            print(f"  round {r}: query {q_wall[-1]:.2f} s / teach {t_wall[-1]:.2f} s wall, driver cpu "
                  f"{q_cpu[-1] * 1e3:.1f} + {t_cpu[-1] * 1e3:.1f} ms", flush=True)
        # the label store (a session from before it existed kept _labels and _synthetic)
        st, sc = getattr(learner, "_store", learner), learner.scorer
        row.update(query_s=float(np.median(q_wall)), teach_s=float(np.median(t_wall)),
                   driver_cpu_ms_query=float(np.median(q_cpu)) * 1e3,
                   driver_cpu_ms_teach=float(np.median(t_cpu)) * 1e3,
                   driver_cpu_ms_all=[[round(a * 1e3, 2), round(b * 1e3, 2)] for a, b in zip(q_cpu, t_cpu)],
                   labelled=learner.n_labelled,
                   label_state_bytes=int(sum(v.nbytes for k, v in vars(st).items() if isinstance(v, np.ndarray)
                                             and k in ("_ids", "_vals", "_syn", "arr", "syn", "_labels", "_synthetic"))
                                         + sc._lab.nbytes + sc._lab_nbr.nbytes))
        info = sc.shard_info()
        row["shard_rss_mb_max"] = max(i["rss"] for i in info) / MB
        row["shard_peak_rss_mb_max"] = max(i["peak_rss"] for i in info) / MB
        row["driver_rss_mb"] = _rss_bytes() / MB
        row["driver_rss_anon_mb"] = _rss_bytes("RssAnon") / MB
        row["driver_rss_file_mb"] = _rss_bytes("RssFile") / MB
        row["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        _stop(learner, ckpt, row)
    return row


def formats(args: argparse.Namespace) -> dict:
    """Read the same rows from .npy and Parquet: full scan and take(1000), CPU seconds."""
    d = Path(args.data_dir)
    npy = ensure_data(d / f"emb_{args.n}x{args.dim}.npy", args.n, args.dim)
    pq = d / f"emb_{args.n}x{args.dim}.parquet"
    if not pq.exists():
        src = NpyRows(npy)
        write_parquet(pq, (r for _, r in src.chunks(chunk=1 << 20)), row_group_rows=65_536)
    srcs = {"npy": NpyRows(npy), "parquet": ParquetRows(pq)}
    rng = np.random.default_rng(0)
    res: dict = {k: dict(scan_cpu_s=[], take1000_cpu_s=[]) for k in srcs}
    for _ in range(args.reps):
        for name, src in srcs.items():  # interleaved
            c0 = time.process_time()
            for _ids, _rows in src.chunks():
                pass
            res[name]["scan_cpu_s"].append(time.process_time() - c0)
            ids = np.sort(rng.choice(args.n, 1000, replace=False))
            c0 = time.process_time()
            src.take(ids)
            res[name]["take1000_cpu_s"].append(time.process_time() - c0)
    out = dict(n=args.n, dim=args.dim, bytes_npy=npy.stat().st_size, bytes_parquet=pq.stat().st_size)
    for name, v in res.items():
        out[name] = {k: float(np.median(x)) for k, x in v.items()}
        out[name]["scan_rows_per_cpu_s"] = args.n / out[name]["scan_cpu_s"]
    return out


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
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--select", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--backend", choices=["exact", "hnsw"], default="exact")
    ap.add_argument("--scheme", choices=["hash", "range"], default="range")
    ap.add_argument("--M", type=int, default=8)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef", type=int, default=32)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--object-store-mb", type=int, default=512)
    ap.add_argument("--data-dir", default="bench-data")
    ap.add_argument("--out", default=None, help="append the result as one JSON line")
    ap.add_argument("--formats", action="store_true", help="compare .npy and Parquet reads")
    ap.add_argument("--merge", action="store_true", help="time the driver merges alone (no Ray)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--initial", type=int, default=0,
                    help="--session: this many random ids labelled at the start (lc_socbi needs some)")
    ap.add_argument("--session", default=None, metavar="STRATEGY",
                    help="run a DistributedLearner with this strategy instead of the bare scorer")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generate_only:
        ensure_data(Path(args.data_dir) / f"emb_{args.n}x{args.dim}.npy", args.n, args.dim)
        return 0
    if args.formats:
        row = dict(kind="formats", **formats(args))
    elif args.session:
        row = dict(kind="session", **run_session(args))
    elif args.merge:
        row = dict(kind="merge", runs=[merge_bench(10_000, args.k, s, args.select)
                                       for s in (2, 4, 16, 64)])
    else:
        row = dict(kind="scaling", **run_config(args))
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
