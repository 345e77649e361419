"""Smoke tests of the benchmark suite: every baseline is correct, every benchmark runs.

Tiny sizes only and no timed assertions: the suite (socbi.bench, bench/) must not rot,
and a baseline that answers wrongly would make every ratio meaningless.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from socbi import baselines as BL
from socbi import bench as B
from socbi._reference import ReferenceIndex

ROOT = Path(__file__).resolve().parent.parent

# every registry entry, the trees with both key kinds
SPECS = [(name, key) for name in BL.STRUCTURES for key in (("packed", "tuple") if name in ("btrees", "sortedlist")
                                                            else ("packed",))]
# structures whose ids among ties at the cut may differ from socbi's (argpartition)
TIE_FREE_IDS = {"numpy_partition"}


def _assert_agrees(s, ref: ReferenceIndex, n: int, name: str) -> None:
    for q in ("top", "bottom"):
        got_ids, got_scores = getattr(s, q)(n)
        want_ids, want_scores = getattr(ref, q)(n)
        assert got_ids.dtype == np.int64 and got_scores.dtype == np.float64, (name, q)
        np.testing.assert_array_equal(got_scores, want_scores, err_msg=f"{name} {q}({n})")
        if name.split("+")[0] in TIE_FREE_IDS:
            assert len(set(got_ids.tolist())) == got_ids.size
            np.testing.assert_array_equal(s.score(got_ids) if got_ids.size else got_scores, got_scores)
        else:
            np.testing.assert_array_equal(got_ids, want_ids, err_msg=f"{name} {q}({n})")
    # prepare/take is the same query split in two
    s.prepare(False)
    np.testing.assert_array_equal(s.take(n, False)[1], ref.bottom(n)[1])
    assert len(s) == len(ref)


@pytest.mark.parametrize("locked", [False, True], ids=["plain", "locked"])
@pytest.mark.parametrize("name,key", SPECS, ids=[f"{n}:{k}" for n, k in SPECS])
def test_baseline_matches_reference(name, key, locked):
    rng = np.random.default_rng(zlib.crc32(f"{name}:{key}:{locked}".encode()))
    cap = 48
    s = BL.make(name, cap, key=key, locked=locked, lock_chunk=3)
    ref = ReferenceIndex(cap)
    ids = rng.permutation(cap)[:30]
    sc = rng.integers(-3, 4, ids.size).astype(float)
    s.insert(ids, sc)
    ref.insert(ids, sc)
    threads = 2 if s.native_threads else 1
    for _ in range(120):
        present = np.array(sorted(ref.scores), dtype=np.int64)
        absent = np.setdiff1d(np.arange(cap), present)
        op = rng.integers(0, 5)
        if op <= 1 and present.size:  # update, repeats allowed, scalar or array deltas
            u = rng.choice(present, size=int(rng.integers(1, 20)))
            d = rng.integers(-2, 3, u.size).astype(float)
            if op == 1:
                s.update(u, 1.0, threads=threads)
                ref.update(u, np.ones(u.size))
            else:
                s.update(u, d, threads=threads)
                ref.update(u, d)
        elif op == 2 and absent.size:
            u = rng.choice(absent, size=min(absent.size, int(rng.integers(1, 5))), replace=False)
            v = rng.integers(-3, 4, u.size).astype(float)
            s.insert(u, v)
            ref.insert(u, v)
        elif op == 3 and present.size > 3:
            u = rng.choice(present, size=int(rng.integers(1, 4)), replace=False)
            s.erase(u)
            ref.erase(u)
        elif op == 4 and present.size:
            u = rng.choice(present, size=min(present.size, int(rng.integers(1, 4))), replace=False)
            v = rng.integers(-3, 4, u.size).astype(float)
            s.assign(u, v)
            ref.assign(u, v)
        _assert_agrees(s, ref, int(rng.integers(0, cap + 5)), s.name)
    present = np.array(sorted(ref.scores), dtype=np.int64)
    np.testing.assert_array_equal(s.score(present), ref.score(present))
    assert int(present[0]) in s and -1 not in s and cap not in s and "x" not in s


@pytest.mark.parametrize("name", ["socbi", "numpy_partition", "heapq", "btrees", "sortedlist", "cpp_select",
                                  "cpp_set"])
def test_bad_arguments_raise_and_change_nothing(name):
    s = BL.make(name, 10)
    s.insert([1, 2, 3], [0.0, 1.0, 2.0])
    before = s.top(10)
    cases = [
        (ValueError, lambda: s.insert([10], 0.0)),          # out of range
        (ValueError, lambda: s.insert([-1], 0.0)),          # negative
        (TypeError, lambda: s.insert([1.5], 0.0)),          # non-integer ids
        (ValueError, lambda: s.insert([4, 4], 0.0)),        # repeated in one insert
        (ValueError, lambda: s.insert([1], 0.0)),           # already present
        (KeyError, lambda: s.update([5], 1.0)),             # absent
        (KeyError, lambda: s.erase([1, 7])),                # one absent: nothing erased
        (ValueError, lambda: s.update([1], float("nan"))),  # not finite
        (ValueError, lambda: s.update([1, 2], [1.0])),      # length mismatch
        (ValueError, lambda: s.update(np.array([[1, 2]]), 1.0)),  # 2-D
        (ValueError, lambda: s.top(-1)),
        (TypeError, lambda: s.top(1.5)),
    ]
    for exc, call in cases:
        with pytest.raises(exc):
            call()
    np.testing.assert_array_equal(s.top(10)[0], before[0])
    np.testing.assert_array_equal(s.top(10)[1], before[1])
    assert len(s) == 3 and s.top(100)[0].size == 3 and s.top(0)[0].size == 0


def test_bad_construction_and_options():
    with pytest.raises(ValueError, match="not known"):
        BL.make("nope", 10)
    with pytest.raises(ValueError, match="capacity"):
        BL.make("numpy_partition", 0)
    with pytest.raises(TypeError, match="capacity"):
        BL.make("heapq", 2.5)
    with pytest.raises(ValueError, match="key"):
        BL.make("btrees", 10, key="float")
    with pytest.raises(ValueError, match="method"):
        BL.CppArray(10, method="bubble")
    with pytest.raises(ValueError, match="sync"):
        BL.CppArray(10, sync="spin")
    with pytest.raises(ValueError, match="atomic"):
        BL.CppSet(10, sync="atomic")
    # a packed tree holds whole-number scores only, and says how to fix it
    t = BL.make("btrees", 10, key="packed")
    with pytest.raises(ValueError, match="key='tuple'"):
        t.insert([1], 0.5)
    t.insert([1], 2.0)
    with pytest.raises(ValueError, match="key='tuple'"):
        t.update([1], 0.25)
    with pytest.raises(ValueError, match="key='tuple'"):
        t.update([1], 2.0**31)
    assert t.score(1) == 2.0
    # not thread-safe on their own: a clear error that names the wrapper
    for name in ("heapq", "numpy_partition", "sortedlist"):
        with pytest.raises(ValueError, match="Locked"):
            BL.make(name, 10).update([], [], threads=2)
    with pytest.raises(ValueError, match="sync"):
        BL.CppArray(10, sync="none").update([], [], threads=2)
    with pytest.raises(TypeError):
        BL.Locked(object())
    with pytest.raises(ValueError, match="lock_chunk"):
        BL.Locked(BL.make("heapq", 4), lock_chunk=0)


@pytest.mark.parametrize("name,locked", [("cpp_sort", False), ("cpp_heap_mutex", False), ("cpp_set_mutex", False),
                                         ("btrees", True), ("numpy_partition", True), ("socbi", False)])
def test_concurrent_updates_lose_nothing(name, locked):
    n, per_thread, threads = 100, 20_000, 4
    s = BL.make(name, n, locked=locked, lock_chunk=64)
    s.insert(np.arange(n), 0.0)
    rng = np.random.default_rng(5)
    batches = [rng.integers(0, n, per_thread) for _ in range(threads)]
    # many Python threads at once, each also spreading its batch over 2 update threads
    errors = []

    def work(b):
        try:
            s.update(b, 1.0, threads=2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(b,)) for b in batches]
    [t.start() for t in pool]
    [t.join() for t in pool]
    assert not errors
    want = np.bincount(np.concatenate(batches), minlength=n).astype(float)
    np.testing.assert_array_equal(s.score(np.arange(n)), want)
    np.testing.assert_array_equal(s.top(n)[1], np.sort(want)[::-1])


def test_generated_knn_is_exact_and_ids_are_in_range():
    X, cl, centres = B.generated_embeddings(3000, seed=1)
    lab = np.sort(np.random.default_rng(2).choice(3000, 300, replace=False))
    np.testing.assert_array_equal(B.knn_unlabelled(X, lab, 10, cl, centres), B.knn_unlabelled(X, lab, 10))
    # overlapping clusters: the certificate fails for many rows, which fall back to brute force
    X, cl, centres = B.generated_embeddings(2000, separation=0.5, seed=3)
    lab = np.arange(0, 2000, 10)
    np.testing.assert_array_equal(B.knn_unlabelled(X, lab, 10, cl, centres), B.knn_unlabelled(X, lab, 10))
    pool = B.paper_pool("digits")
    assert pool.real and pool.neighbours.size == pool.n_labelled * 10
    assert 0 <= pool.neighbours.min() and pool.neighbours.max() < pool.n_unlabelled
    for dist in ("uniform", "zipf"):
        ids = B.draw_ids(1000, 5000, dist, np.random.default_rng(0))
        assert ids.min() >= 0 and ids.max() < 1000
    zipf = np.bincount(B.draw_ids(1000, 20000, "zipf", np.random.default_rng(0)), minlength=1000)
    assert zipf.max() > 20 * np.median(zipf)  # skewed
    with pytest.raises(ValueError, match="dist"):
        B.draw_ids(10, 10, "normal", np.random.default_rng(0))
    with pytest.raises(ValueError, match="dataset"):
        B.paper_pool("imagenet")


def test_socbi_bench_cli_tiny(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    assert B.main(["--preset", "tiny", "--json", str(out_json), "--plot", str(out_png)]) == 0
    printed = capsys.readouterr().out
    assert "targets:" in printed and "machine:" in printed
    report = json.loads(out_json.read_text())
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = report["machine"]
    for key in ("cpu_model", "usable_cores", "numpy", "extension_build", "load_average"):
        assert key in m
    assert m["extension_build"]["compiler"]
    rows = report["results"]
    labels = {B._label(s) for s in B.DEFAULT_STRUCTURES}
    for workload in ("paper", "stream", "bulk"):
        got = {r["structure"].split("+")[0].replace("_mutex", "") for r in rows if r["workload"] == workload}
        assert labels <= got, (workload, labels - got)
        for r in rows:
            if r["workload"] == workload:
                assert r["skipped"] or (r["median_s"] and r["median_s"] > 0 and r["samples"] >= 1)
                if r["structure"] != "socbi":
                    assert r["ratio_to_socbi"] > 0
    paper = [r for r in rows if r["workload"] == "paper"]
    assert {r["params"]["threads"] for r in paper} == {1, 2}
    assert {r["params"]["real"] for r in paper} == {True, False}
    assert all(set(r["parts"]) == {"t_update", "t_sort", "t_search"} for r in paper)
    assert {c["workload"] for c in report["core"]} == {"stream", "settled", "bulk", "memory"}
    assert report["targets"] and all(t["status"] in ("MET", "MISSED", "not measured") for t in report["targets"])


def test_bench_cli_rejects_bad_arguments(capsys):
    for argv, needle in ((["--preset", "tiny", "--structures", "socbi,quicksort"], "not known"),
                         (["--preset", "tiny", "--workloads", "stream,fly"], "not known"),
                         (["--preset", "tiny", "--plot", "out.jpg"], "png"),
                         (["--quick", "--preset", "full"], "contradicts")):
        assert B.main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("socbi bench: error: ") and needle in err, (argv, out, err)


def test_memory_workload_runs_for_every_structure():
    rows = B.run_memory(["socbi", "numpy_partition", "btrees", "cpp_set"], 5000)
    assert all(r.median_s and r.median_s > 0 for r in rows), [(r.structure, r.skipped) for r in rows]


def test_pytest_benchmark_suite_runs_tiny():
    env = dict(os.environ, SOCBI_BENCH_N="1500", SOCBI_BENCH_ROUNDS="2")
    res = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "bench" / "test_benchmarks.py"), "-q",
                          "--benchmark-disable", "-p", "no:cacheprovider", "-x"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert " passed" in res.stdout and "failed" not in res.stdout
