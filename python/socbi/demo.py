"""``socbi demo``: a short active-learning run on real bundled data (sklearn digits).

Protocol (the DESIGN.md set-up, shortened): a 30 % stratified test split, 2 labels per
class to start, batches of 20, logistic regression retrained each round. Each round the
strategy picks the next batch; the So-CBI boundary counts live in
:class:`socbi.SemiOrderedIndex` and are updated by the newly labelled samples' K nearest
unlabelled neighbours. The run prints per-round accuracy for the chosen strategies and
the index's share of the time.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional

import numpy as np


def run(strategies: List[str], rounds: int = 15, batch: int = 20, k: int = 10, seed: int = 0,
        backend: str = "exact", progress: bool = True) -> Dict[str, List[float]]:
    """Runs the loop for each strategy on the same initial pool; returns accuracies."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("socbi demo needs scikit-learn: pip install 'socbi[knn]'") from exc
    from socbi.scoring import BoundaryScorer
    from socbi.strategies import PoolState, make_strategy

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)
    start = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), 2, replace=False) for c in range(10)])

    curves: Dict[str, List[float]] = {}
    for name in strategies:
        labelled = np.zeros(len(x_pool), dtype=bool)
        labelled[start] = True
        scorer = BoundaryScorer(x_pool, k=k, labelled=labelled, backend=backend, seed=seed, progress=False)
        strategy = make_strategy(name)
        accs: List[float] = []
        t_index = t_total = 0.0
        for r in range(rounds + 1):
            model = LogisticRegression(max_iter=2000)
            model.fit(x_pool[labelled], y_pool[labelled])
            accs.append(float(model.score(x_test, y_test)))
            if r == rounds:
                break
            t0 = time.perf_counter()
            state = PoolState(labelled=labelled, embeddings=x_pool, model=model, scorer=scorer)
            picked = strategy.select(state, batch, seed=seed + r)
            stats = scorer.label(picked)
            t_total += time.perf_counter() - t0
            t_index += stats.index_s
            labelled[picked] = True
        curves[name] = accs
        if progress:
            print(f"{name:>14}: labels {labelled.sum():4d}  accuracy " + " ".join(f"{a:.3f}" for a in accs[::3])
                  + f"  | selection {t_total * 1e3:.0f} ms, of which score index {t_index * 1e3:.1f} ms",
                  flush=True)
    return curves


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="a short active-learning run on sklearn digits")
    p.add_argument("--strategies", default="random,least_confidence,lc_socbi,socbi",
                   help="comma-separated strategy names (see socbi.strategies.STRATEGIES)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["exact", "hnsw"], default="exact")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    print(f"sklearn digits, {args.rounds} rounds of {args.batch}, seed {args.seed}; accuracy every 3 rounds")
    curves = run(names, rounds=args.rounds, batch=args.batch, seed=args.seed, backend=args.backend)
    best = max(curves, key=lambda n: float(np.mean(curves[n])))
    print(f"highest mean accuracy over the run: {best} ({np.mean(curves[best]):.3f})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from socbi.cli import main as cli_main

    return cli_main(["demo", *(argv or [])])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
