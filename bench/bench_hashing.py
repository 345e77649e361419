"""Benchmark: retrieval mAP of hash codes on balanced, long-tailed and rebalanced digits.

Real data: sklearn's bundled digits (1,797 8x8 images; the 64 pixel values are the
embeddings). Per seed, a stratified 25 % query split; the other 75 % is the retrieval
database (real samples only, balanced, the same for every setting). Training sets
(see ``socbi.longtail.longtail_retrieval_experiment``):

* balanced: the whole database;
* long-tailed: imbalance ratio ``--ratio`` (48 as in the paper), exponential decay,
  seeded class order;
* long-tailed + synthetic: every class filled to the head count by a STAND-IN generator
  (``--generator gaussian``: a class-conditional Gaussian fitted on the long-tailed
  embeddings, shrunk towards the pooled covariance; ``mixup``: mixup + noise of class
  members). The paper's generator is a fine-tuned diffusion model (AttnDreamBooth),
  which this machine cannot download or run; the stand-in is much weaker;
* LT pool with a labelling budget (``--budget`` of the long-tailed pool, batches of 20,
  logistic regression retrained each round): random, margin, class-balanced margin,
  class-balanced margin + synthetic fill.

Each training set trains an OrthoHash-style head (``socbi.hashing.train_hash_head``)
at 32 and 64 bits; mAP over the whole database (Hamming ranking, ties averaged), mAP@100
and the continuous codes' cosine mAP are reported as mean ± std over seeds.

A second, smaller part times ranking: packed 64-bit Hamming distances vs float cosine
on generated 64-d vectors (``--speed``).

Usage::

    python bench/bench_hashing.py                      # 5 seeds, table + plot + json to --out
    python bench/bench_hashing.py --seeds 1 --epochs 20   # quick look
    python bench/bench_hashing.py --speed              # ranking throughput only

Writes ``longtail_table.md``, ``longtail_results.json`` and ``longtail_map.png`` to
``--out`` (default ``docs/``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:  # an installed socbi first; else the source tree next to this script
    import socbi.longtail  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from socbi.hashing import embedding_distances, hamming_distances, pack_codes  # noqa: E402
from socbi.longtail import SETTINGS, longtail_retrieval_experiment  # noqa: E402


def speed(n_db: int, n_q: int, bits: int, repeats: int) -> dict:
    """Median seconds for all query-database distances: packed Hamming vs float cosine."""
    rng = np.random.default_rng(0)
    xq = rng.normal(size=(n_q, bits)).astype(np.float32)          # generated vectors
    xd = rng.normal(size=(n_db, bits)).astype(np.float32)
    pq, pd = pack_codes(xq), pack_codes(xd)
    out = {}
    for name, fn in (("hamming_packed", lambda: hamming_distances(pq, pd)),
                     ("cosine_float", lambda: embedding_distances(xq, xd, "cosine"))):
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = float(np.median(ts))
    out.update(n_db=n_db, n_q=n_q, bits=bits, bytes_per_code_packed=bits // 8, bytes_per_vector_float32=4 * bits)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (0..n-1)")
    ap.add_argument("--bits", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--ratio", type=float, default=48.0, help="imbalance ratio head/tail")
    ap.add_argument("--budget", type=float, default=0.5, help="fraction of the LT pool labelled")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--generator", choices=["gaussian", "mixup", "none"], default="gaussian")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    ap.add_argument("--speed", action="store_true", help="only time packed Hamming vs float cosine")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)

    machine = dict(cpus=os.cpu_count(), machine=platform.machine(), python=platform.python_version(),
                   numpy=np.__version__)
    if args.speed:
        for n_db in (10_000, 100_000):
            r = speed(n_db, 1000, 64, 3)
            print(f"{r['n_q']} queries x {n_db} database, 64 bits: packed Hamming {r['hamming_packed']*1e3:.1f} ms, "
                  f"float cosine {r['cosine_float']*1e3:.1f} ms; memory per item 8 B vs 256 B")
        return 0

    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    t0 = time.perf_counter()
    res = longtail_retrieval_experiment(
        x, y, bits=args.bits, imbalance_ratio=args.ratio, seeds=tuple(range(args.seeds)), budget=args.budget,
        generator=None if args.generator == "none" else args.generator,
        train_options=dict(epochs=args.epochs, threads=args.threads), ks=(100,), dataset="digits",
        progress=True)
    wall = time.perf_counter() - t0
    table = res.table(markdown=True)
    table += "\n\nPaired mAP differences (same seed, same split):\n\n" + "\n".join(f"- {ln}" for ln in res.paired_lines())
    print(table)
    print(f"\n{len(res.rows)} trainings in {wall:.0f} s on {machine['cpus']} CPUs")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python bench/bench_hashing.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "longtail_table.md").write_text(f"<!-- {cmd.strip()} -->\n{table}\n")
    doc = res.as_dict()
    doc["machine"] = machine
    doc["wall_s"] = wall
    (out / "longtail_results.json").write_text(json.dumps(doc, indent=1) + "\n")
    if not args.no_plot:
        res.plot(out / "longtail_map.png")
    print(f"wrote {out / 'longtail_table.md'}, {out / 'longtail_results.json'}"
          + ("" if args.no_plot else f", {out / 'longtail_map.png'}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
