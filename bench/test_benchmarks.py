"""pytest-benchmark suite: socbi against every baseline of socbi.baselines.

Not part of the normal test run (pytest's testpaths is ``tests``). Run it with::

    python -m pytest bench/test_benchmarks.py --benchmark-enable              # n = 100,000
    SOCBI_BENCH_N=1000000 python -m pytest bench/test_benchmarks.py --benchmark-enable -k "stream and 1000"
    python -m pytest bench/test_benchmarks.py --benchmark-enable --benchmark-json out.json

Environment: ``SOCBI_BENCH_N`` (ids; default 100000), ``SOCBI_BENCH_ROUNDS`` (timed
rounds per benchmark; default 20), ``SOCBI_BENCH_STRUCTURES`` (comma-separated specs,
default socbi.bench.DEFAULT_STRUCTURES; ``btrees:tuple`` for tuple keys).

pytest-benchmark times one structure at a time, so on a shared machine its numbers
drift between structures; ``socbi bench`` interleaves them in one process and is the
one the docs quote. This file exists so that each workload can be profiled or
compared over time on its own (``--benchmark-compare``). The workloads are the same
functions (socbi.bench): counts from 0, +1 deltas, seeded ids generated before timing.
tests/test_bench_smoke.py runs this file at a tiny size with --benchmark-disable.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from socbi import bench as B

N = int(os.environ.get("SOCBI_BENCH_N", "100000"))
ROUNDS = int(os.environ.get("SOCBI_BENCH_ROUNDS", "20"))
STRUCTURES = [s for s in os.environ.get("SOCBI_BENCH_STRUCTURES", ",".join(B.DEFAULT_STRUCTURES)).split(",") if s]
K = 1000


def _skip_if_too_big(spec: str, n: int) -> None:
    reason = B._skip_reason(spec, n)
    if reason:
        pytest.skip(reason)


def _fresh(spec: str, n: int, threads: int = 1):
    s = B.build_structure(spec, n, threads)
    s.insert(np.arange(n), 0.0)
    s.top(min(K, n))  # warm (socbi: the first query refines the boundary node)
    return s


@pytest.fixture(scope="module", params=["digits", "generated"])
def pool(request):
    if request.param == "digits":
        return B.paper_pool("digits")
    return B.paper_pool("generated", n=N)


@pytest.mark.parametrize("dist", ["uniform", "zipf"])
@pytest.mark.parametrize("b", [100, 1000, 10_000])
@pytest.mark.parametrize("spec", STRUCTURES)
def test_stream(benchmark, spec, b, dist):
    """One round: update of b unit increments, then top-1000."""
    _skip_if_too_big(spec, N)
    benchmark.group = f"stream n={N} b={b} {dist}"
    rng = np.random.default_rng(0)
    batches = [B.draw_ids(N, b, dist, rng) for _ in range(ROUNDS + 2)]
    ones = np.ones(b)
    s = _fresh(spec, N)
    it = iter(batches)

    def one_round():
        s.update(next(it), ones)
        return s.top(K)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("dist", ["uniform", "zipf"])
@pytest.mark.parametrize("spec", STRUCTURES)
def test_bulk(benchmark, spec, dist):
    """One update of N unit increments then one top-1000, on a fresh structure."""
    _skip_if_too_big(spec, N)
    benchmark.group = f"bulk n={N} {dist}"
    ids = B.draw_ids(N, N, dist, np.random.default_rng(0))
    ones = np.ones(N)

    def setup():
        return (_fresh(spec, N),), {}

    def run(s):
        s.update(ids, ones)
        return s.top(K)

    benchmark.pedantic(run, setup=setup, rounds=max(1, ROUNDS // 4), iterations=1)


@pytest.mark.parametrize("threads", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("spec", STRUCTURES)
def test_paper_round(benchmark, spec, threads, pool):
    """+1 to each labelled sample's K = 10 unlabelled neighbours, then bottom(128)."""
    _skip_if_too_big(spec, pool.n_unlabelled)
    benchmark.group = f"paper {pool.name} threads={threads}"
    ones = np.ones(pool.neighbours.size)

    def setup():
        return (_fresh(spec, pool.n_unlabelled, threads),), {}

    def run(s):
        s.update(pool.neighbours, ones, threads=threads)
        s.prepare(False)
        return s.take(128, False)

    benchmark.pedantic(run, setup=setup, rounds=max(1, ROUNDS // 4), iterations=1)


@pytest.mark.parametrize("spec", STRUCTURES)
def test_settled_top(benchmark, spec):
    """top-1000 on a structure holding the counts of N random increments (no update in between)."""
    _skip_if_too_big(spec, N)
    benchmark.group = f"settled top-{K} n={N}"
    s = _fresh(spec, N)
    s.update(B.draw_ids(N, N, "uniform", np.random.default_rng(1)), 1.0)
    s.top(K)
    benchmark.pedantic(s.top, args=(K,), rounds=ROUNDS, iterations=1, warmup_rounds=1)
