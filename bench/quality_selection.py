"""Selection quality, paired by seed: every strategy against margin on the project's protocol.

Protocol (socbi.experiment): 30 % stratified test split, 2 labels per class to start,
logistic regression retrained each round, batches until half the pool is labelled; the
same split, pool and initial labels for every strategy of one (pool, seed). Pools:
sklearn digits balanced and with IF 0.1 / 0.3 (batch 20, the protocol), breast_cancer
(batch 10) and wine (batch 5; both are small, so a batch of 20 would leave 2-10 rounds).

Runs are appended to a JSON-lines file (``--out``) as they finish, and runs already there
are skipped, so the script can be stopped and resumed and strategies added later.
``--report`` prints, per pool, each strategy's mean AUBC and acc@10 % and the paired
difference to margin (mean, wins/losses/ties, two-sided sign test).

    OMP_NUM_THREADS=1 python bench/quality_selection.py --seeds 10 --out quality.jsonl
    python bench/quality_selection.py --report --out quality.jsonl[,more.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

POOLS = {  # name: (dataset, IF, batch)
    "digits": ("digits", 1.0, 20),
    "digits IF0.1": ("digits", 0.1, 20),
    "digits IF0.3": ("digits", 0.3, 20),
    "breast_cancer": ("breast_cancer", 1.0, 10),
    "wine": ("wine", 1.0, 5),
}
STRATEGIES = ("margin", "least_confidence", "entropy", "kcenter", "seals", "lc_socbi", "kcenter_socbi",
              "random")


def _done(path: Path) -> set:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        r = json.loads(line)
        out.add((r["pool"], r["seed"], r["strategy"]))
    return out


def run(args: argparse.Namespace) -> None:
    from threadpoolctl import threadpool_limits

    from socbi.experiment import ExperimentConfig, aubc, load_dataset, run_one

    threadpool_limits(1)
    path = Path(args.out)
    done = _done(path)
    pools = [p for p in POOLS if not args.pools or p in args.pools.split(",")]
    strategies = args.strategies.split(",") if args.strategies else list(STRATEGIES)
    data = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):  # seeds outermost
        for pool in pools:
            ds, imb, batch = POOLS[pool]
            if ds not in data:
                x, y, _ = load_dataset(ds)
                data[ds] = (x, y)
            cfg = ExperimentConfig(dataset=ds, strategies=("margin",), seeds=(seed,), imbalance=(imb,),
                                   batch=batch, checkpoints=(0.10, 0.25, 0.50), jobs=1).validate()
            for strat in strategies:
                if (pool, seed, strat) in done:
                    continue
                t0 = time.process_time()
                r = run_one(cfg, imb, seed, strat, data[ds])
                frac = np.asarray(r["labelled"], float) / r["pool"]
                acc = np.asarray(r["accuracy"], float)
                rec = dict(pool=pool, seed=seed, strategy=strat,
                           aubc=aubc(frac, acc),
                           acc10=float(np.interp(0.10, frac, acc)),
                           acc25=float(np.interp(0.25, frac, acc)),
                           acc50=float(np.interp(0.50, frac, acc)),
                           cpu_s=time.process_time() - t0)
                with path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{pool:14s} seed {seed} {strat:16s} AUBC {rec['aubc']:.4f} acc@10% {rec['acc10']:.4f} "
                      f"({rec['cpu_s']:.1f} s)", flush=True)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value (ties dropped)."""
    from math import comb

    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    p = sum(comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * p)


def report(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for out in args.out.split(",") for line in Path(out).read_text().splitlines()]
    ref = args.reference
    for pool in POOLS:
        rs = [r for r in rows if r["pool"] == pool]
        if not rs:
            continue
        strategies = sorted({r["strategy"] for r in rs})
        base = {r["seed"]: r for r in rs if r["strategy"] == ref}
        print(f"\n### {pool} (paired against {ref}, {len(base)} seeds)\n")
        print("| strategy | seeds | AUBC | acc@10% | acc@25% | ΔAUBC vs " + ref + " (W/L, p) | Δacc@10% (W/L, p) |")
        print("|---|---|---|---|---|---|---|")
        order = sorted(strategies, key=lambda s: -np.mean([r["aubc"] for r in rs if r["strategy"] == s]))
        for s in order:
            mine = {r["seed"]: r for r in rs if r["strategy"] == s}
            seeds = sorted(set(mine) & set(base))
            cells = []
            for key in ("aubc", "acc10"):
                d = np.array([mine[k][key] - base[k][key] for k in seeds])
                w, lo = int((d > 1e-12).sum()), int((d < -1e-12).sum())
                cells.append(f"{d.mean():+.4f} ({w}/{lo}, p={sign_test(w, lo):.3f})" if d.size else "-")
            m = lambda key: np.mean([r[key] for r in mine.values()])  # noqa: E731
            print(f"| {s} | {len(mine)} | {m('aubc'):.4f} | {m('acc10'):.4f} | {m('acc25'):.4f} | "
                  f"{cells[0]} | {cells[1]} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--pools", default="", help=f"comma-separated subset of {', '.join(POOLS)}")
    ap.add_argument("--strategies", default="", help="comma-separated (default: the peers and So-CBI variants)")
    ap.add_argument("--out", default="quality.jsonl")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--reference", default="margin")
    args = ap.parse_args(argv)
    if args.report:
        report(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
