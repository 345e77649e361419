"""``socbi demo``: the So-CBI evaluation protocol on real bundled data (sklearn digits).

What it runs (see :mod:`socbi.experiment` for the protocol and the metrics): 1,797
8x8 digit images (pixel values / 16 as embeddings, L2 space), a 30 % stratified test
split, 2 labels per class to start, batches of 20 until half of the pool is labelled,
logistic regression retrained every round, So-CBI counts with K = 10 in the C++ score
index over an exact neighbour pool. Nine strategies -- random, LC, margin, entropy,
KCenter, SEALS, LC-So-CBI, KCenter-So-CBI and the recommended default margin-div-cover
(margin, no two picks of a batch from one neighbourhood, a cold-start share for samples
far from every label) -- on the same initial pools,
5 seeds, on the balanced pool and on the paper's imbalanced variants (IF = 0.1 and 0.3
applied to half of the classes). Worker processes: all CPUs (``--jobs``).

It prints the table (accuracy at 10 / 25 / 50 % of the pool labelled, AUBC, selection
imbalance, retrieval time per round; mean ± std over seeds), the paired comparison of
each So-CBI variant with its base strategy (and of margin-div-cover with margin), and where it wrote the learning curves,
``results.json`` and the tables (``--out``, default ``socbi-out/demo``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, List, Optional

from .experiment import DATASETS, DEFAULT_STRATEGIES, ExperimentConfig, compare_to_base, run_experiment

__all__ = ["register", "main", "demo_config"]


def _floats(text: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def demo_config(args: argparse.Namespace) -> ExperimentConfig:
    """The demo's ExperimentConfig from its command-line arguments (validated)."""
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    return ExperimentConfig(dataset=args.dataset, strategies=strategies, seeds=args.seeds,
                            imbalance=tuple(args.imbalance), batch=args.batch, budget=args.budget,
                            k=args.k, backend=args.backend, jobs=args.jobs).validate()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="active learning on sklearn's bundled digits: 9 strategies, 5 seeds; minutes "
                     "on 2 cores depending on load",
        description="Runs the So-CBI evaluation protocol on sklearn's bundled digits (real data, no "
                    "download): 30%% test split, 2 labels per class, batches of 20 up to half the pool, "
                    "logistic regression retrained each round; balanced and IF = 0.1 / 0.3 pools. "
                    "Prints the table and writes the learning curves.")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help="comma-separated strategies (default: the eight of the paper's comparison and "
                        "the recommended margin_div_cover)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p.add_argument("--imbalance", type=_floats, default=[1.0, 0.1, 0.3],
                   help="comma-separated imbalance factors IF, 1 = balanced (default 1,0.1,0.3)")
    p.add_argument("--batch", type=int, default=20, help="samples labelled per round (default 20)")
    p.add_argument("--budget", type=float, default=0.5, help="stop at this share of the pool labelled (0.5)")
    p.add_argument("--k", type=int, default=10, help="So-CBI neighbours per labelled sample (default 10)")
    p.add_argument("--backend", choices=["exact", "hnsw"], default="exact", help="neighbour pool (exact)")
    p.add_argument("--dataset", choices=list(DATASETS), default="digits", help="bundled data set (digits)")
    p.add_argument("--jobs", type=int, default=0, help="worker processes, 0 = all CPUs (default)")
    p.add_argument("--out", default=str(Path("socbi-out") / "demo"),
                   help="output directory (default socbi-out/demo)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from ._cliutil import output_dir

    try:
        cfg = demo_config(args)
        output_dir(args.out, "--out")
    except ValueError as exc:
        print(f"socbi demo: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    n_runs = len(cfg.imbalance) * len(cfg.seeds) * len(cfg.strategies)
    print(f"socbi demo: {n_runs} active-learning runs on sklearn {cfg.dataset} "
          f"({len(cfg.strategies)} strategies x {len(cfg.seeds)} seeds x {len(cfg.imbalance)} pool(s))",
          file=sys.stderr, flush=True)  # stderr: a failing run (exit 2) leaves stdout empty
    try:
        result = run_experiment(cfg, out=args.out, progress=not args.no_progress)
    except (ValueError, ImportError) as exc:
        print(f"socbi demo: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print()
    print(result.table())
    lines = compare_to_base(result)
    if lines:
        print("\nSo-CBI variants (and margin-div-cover) against their base strategy (paired by seed):")
        for line in lines:
            print("  " + line)
    plot = Path(result.files["plot"]).resolve()
    print(f"\n{len(result.runs)} runs in {result.wall_s:.0f} s.")
    print(f"learning curves: {plot}")
    print(f"tables and every run's curves: {Path(result.files['table_md']).resolve()}, "
          f"{Path(result.files['results']).resolve()}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from socbi.cli import main as cli_main

    return cli_main(["demo", *(argv or [])])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
