"""Tests of socbi.SemiOrderedIndex: a reference model, edge cases, bad input, threads."""
from __future__ import annotations

import doctest
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import socbi
from socbi._reference import ReferenceIndex


def assert_same(idx: socbi.SemiOrderedIndex, ref: ReferenceIndex, n: int) -> None:
    for name in ("top", "bottom"):
        got_ids, got_scores = getattr(idx, name)(n)
        want_ids, want_scores = getattr(ref, name)(n)
        assert got_ids.dtype == np.int64 and got_scores.dtype == np.float64
        np.testing.assert_array_equal(got_ids, want_ids, err_msg=name)
        np.testing.assert_array_equal(got_scores, want_scores, err_msg=name)


# --------------------------------------------------------------------------- model


CAP = 64


class IndexMachine(RuleBasedStateMachine):
    """Random operation sequences against a dict model; check() after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.idx = socbi.SemiOrderedIndex(CAP, node_size=8)
        self.ref = ReferenceIndex(CAP)

    small = st.integers(-5, 5).map(float)

    @rule(data=st.data())
    def insert(self, data):
        absent = [i for i in range(CAP) if i not in self.ref]
        if not absent:
            return
        ids = data.draw(st.lists(st.sampled_from(absent), min_size=1, max_size=10, unique=True))
        scores = data.draw(st.lists(self.small, min_size=len(ids), max_size=len(ids)))
        self.idx.insert(np.array(ids), np.array(scores))
        self.ref.insert(ids, scores)

    @precondition(lambda self: len(self.ref) > 0)
    @rule(data=st.data(), threads=st.sampled_from([1, 2]), bulk=st.sampled_from([None, False, True]))
    def update(self, data, threads, bulk):
        present = sorted(self.ref.scores)
        ids = data.draw(st.lists(st.sampled_from(present), min_size=1, max_size=20))  # repeats allowed
        deltas = data.draw(st.lists(self.small, min_size=len(ids), max_size=len(ids)))
        self.idx.update(ids, deltas, threads=threads, bulk=bulk)
        self.ref.update(ids, deltas)

    @precondition(lambda self: len(self.ref) > 0)
    @rule(data=st.data(), delta=small)
    def update_scalar(self, data, delta):
        present = sorted(self.ref.scores)
        ids = data.draw(st.lists(st.sampled_from(present), min_size=1, max_size=20, unique=True))
        self.idx.update(ids, delta)
        self.ref.update(ids, [delta] * len(ids))

    @precondition(lambda self: len(self.ref) > 0)
    @rule(data=st.data())
    def assign(self, data):
        present = sorted(self.ref.scores)
        ids = data.draw(st.lists(st.sampled_from(present), min_size=1, max_size=10, unique=True))
        scores = data.draw(st.lists(self.small, min_size=len(ids), max_size=len(ids)))
        self.idx.assign(ids, scores)
        self.ref.assign(ids, scores)

    @precondition(lambda self: len(self.ref) > 0)
    @rule(data=st.data())
    def erase(self, data):
        present = sorted(self.ref.scores)
        ids = data.draw(st.lists(st.sampled_from(present), min_size=1, max_size=10, unique=True))
        self.idx.erase(ids)
        self.ref.erase(ids)

    @rule(n=st.integers(0, CAP + 3))
    def query(self, n):
        assert_same(self.idx, self.ref, n)

    @invariant()
    def invariants_hold(self):
        self.idx.check()
        assert len(self.idx) == len(self.ref)


TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("node_size", [8, 256])
def test_seeded_random_sequences(seed, node_size):
    rng = np.random.default_rng(seed)
    cap = 500
    idx = socbi.SemiOrderedIndex(cap, node_size=node_size)
    ref = ReferenceIndex(cap)
    for step in range(400):
        op = rng.integers(6)
        present = np.array(sorted(ref.scores), dtype=np.int64)
        if op == 0 or len(present) == 0:
            absent = np.setdiff1d(np.arange(cap), present)
            if len(absent):
                ids = rng.choice(absent, size=min(len(absent), int(rng.integers(1, 40))), replace=False)
                sc = rng.integers(-3, 4, size=len(ids)).astype(float)
                idx.insert(ids, sc)
                ref.insert(ids, sc)
        elif op == 1:
            ids = rng.choice(present, size=int(rng.integers(1, 200)))
            d = rng.integers(-2, 3, size=len(ids)).astype(float)
            idx.update(ids, d, threads=int(rng.integers(1, 3)))
            ref.update(ids, d)
        elif op == 2:
            ids = rng.choice(present, size=min(len(present), 5), replace=False)
            sc = rng.integers(-50, 50, size=len(ids)) / 4.0  # dyadic: sums are exact in any order
            idx.assign(ids, sc)
            ref.assign(ids, sc)
        elif op == 3:
            ids = rng.choice(present, size=min(len(present), int(rng.integers(1, 20))), replace=False)
            idx.erase(ids)
            ref.erase(ids)
        else:
            assert_same(idx, ref, int(rng.integers(0, cap + 2)))
        idx.check()
        assert len(idx) == len(ref), step
    assert_same(idx, ref, cap)


# --------------------------------------------------------------------------- edges


def test_empty_index_and_zero_n():
    idx = socbi.SemiOrderedIndex(5)
    ids, scores = idx.top(3)
    assert ids.shape == (0,) and scores.shape == (0,)
    assert len(idx) == 0 and 0 not in idx
    idx.insert(2, 1.5)
    assert idx.top(0)[0].shape == (0,)
    idx.check()


def test_capacity_one():
    idx = socbi.SemiOrderedIndex(1)
    idx.insert([0], [4.0])
    idx.update(0, -1.0)
    assert idx.score(0) == 3.0
    ids, scores = idx.bottom(10)  # n > len returns everything
    assert ids.tolist() == [0] and scores.tolist() == [3.0]
    idx.erase(0)
    assert len(idx) == 0
    idx.check()


def test_ties_break_by_id_and_stay_cheap():
    n = 50_000
    idx = socbi.SemiOrderedIndex(n, node_size=64)
    idx.insert(np.arange(n), 0.0, bulk=False)  # every count starts at 0
    st_ = idx.stats()
    assert st_["nodes"] > n // 64  # ties spread over many nodes, not one O(n) node
    assert idx.bottom(3)[0].tolist() == [0, 1, 2]
    assert idx.top(3)[0].tolist() == [n - 1, n - 2, n - 3]
    idx.update([10, 20], 1.0)
    assert idx.top(2)[0].tolist() == [20, 10]
    idx.check()


def test_bulk_insert_cuts_tie_runs_into_node_sized_pieces():
    n = 200_000
    idx = socbi.SemiOrderedIndex(n, node_size=64)
    scores = (np.arange(n) % 5).astype(float)
    idx.insert(np.arange(n), scores)  # bulk path: 5 runs of equal scores
    st_ = idx.stats()
    assert st_["oversized_nodes"] == 0 and st_["nodes"] >= n // 64
    ids, sc = idx.top(10)
    assert (sc == 4.0).all() and ids.tolist() == sorted(np.flatnonzero(scores == 4.0))[-10:][::-1]
    idx.check()


def test_bulk_insert_of_crowded_scores_then_lazy_refinement():
    n = 200_000
    idx = socbi.SemiOrderedIndex(n, node_size=64)
    # half zeros, half within a few thousand ulps of 1.0: no bucketing separates the
    # second half, so it becomes one oversized node that queries split
    scores = np.where(np.arange(n) % 2 == 1, 1.0 + np.arange(n) * np.finfo(float).eps, 0.0)
    idx.insert(np.arange(n), scores)
    assert idx.stats()["oversized_nodes"] > 0
    ids, sc = idx.top(10)
    assert ids.tolist() == list(range(n - 1, n - 21, -2))
    assert idx.stats()["splits"] > 0  # the query split the boundary node
    idx.check()


@pytest.mark.parametrize("threads", [1, 2])
def test_heavy_tailed_bulk_update_is_bucketed_by_quantiles(threads):
    # Zipf ids: most scores stay 0, a few get thousands of +1s. Linear bucketing put almost
    # every id in one node, and the first top() paid to split it (33 of 44 ms at n = 1M);
    # the rebuild now buckets by sampled quantiles, so the query splits nothing.
    from socbi.bench import draw_ids

    n = 100_000
    rng = np.random.default_rng(1)
    ids = draw_ids(n, n, "zipf", rng)
    idx = socbi.SemiOrderedIndex(n, node_size=64)
    ref = ReferenceIndex(n)
    idx.insert(np.arange(n), 0.0)
    ref.insert(range(n), np.zeros(n))
    idx.update(ids, 1.0, threads=threads, bulk=True)
    ref.update(ids, np.ones(n))
    idx.check()
    splits = idx.stats()["splits"]
    assert_same(idx, ref, 1000)
    assert idx.stats()["splits"] == splits
    idx.check()


def test_bulk_update_matches_item_by_item():
    rng = np.random.default_rng(3)
    n = 20_000
    a = socbi.SemiOrderedIndex(n, node_size=32)
    b = socbi.SemiOrderedIndex(n, node_size=32)
    init = rng.normal(size=n)
    a.insert(np.arange(n), init)
    b.insert(np.arange(n), init)
    ids = rng.integers(0, n, size=3 * n)
    d = rng.normal(size=3 * n)
    a.update(ids, d, bulk=True, threads=2)
    b.update(ids, d, bulk=False)
    a.check()
    b.check()
    np.testing.assert_allclose(a.items()[1], b.items()[1], rtol=0, atol=1e-9)
    assert a.stats()["rebuilds"] >= 1


def _pool(n=40_000, seed=11):
    rng = np.random.default_rng(seed)
    idx = socbi.SemiOrderedIndex(n + 100)
    idx.insert(np.arange(n), rng.normal(size=n) * 1e3)  # distinct floats: rounding shows
    return idx, rng


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "bad, exc, words",
    [
        (("absent", 30_000), KeyError, ["ids[30000] = 40050", "not in the index"]),
        (("range", 30_000), ValueError, ["ids[30000] = 40100", "out of range"]),
        (("negative", 30_000), ValueError, ["ids[30000] = -3", "negative"]),
        (("overflow", 30_000), ValueError, ["deltas[30000]", "overflow"]),
    ],
)
def test_refused_bulk_update_is_rolled_back_bit_for_bit(threads, bad, exc, words):
    # The bulk path checks while it applies and undoes from a log: ids repeat, so only a
    # newest-first undo by the thread that owns each id restores the exact old scores.
    idx, rng = _pool()
    ids = rng.integers(0, 40_000, size=60_000)
    ids[:1000] = 7  # one id updated 1000 times
    deltas = rng.normal(size=60_000)
    kind, at = bad
    if kind == "absent":
        ids[at] = 40_050
    elif kind == "range":
        ids[at] = 40_100
    elif kind == "negative":
        ids[at] = -3
    else:
        ids[at] = 7
        deltas[at] = 1.7e308
        idx.assign(7, 1.0e308)
    ids[at + 5000] = 40_099  # a later bad id must not be the one reported
    before = idx.items()
    rebuilds = idx.stats()["rebuilds"]
    with pytest.raises(exc) as info:
        idx.update(ids, deltas, threads=threads, bulk=True)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    after = idx.items()
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])  # bit for bit
    assert idx.stats()["rebuilds"] == rebuilds  # refused before the rebuild
    idx.check()


@pytest.mark.parametrize("bulk", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_delta_deep_in_a_batch_is_refused_by_position(bulk, bad):
    # update() leaves the finiteness scan of deltas to the C++ pass over the batch.
    idx, rng = _pool(n=10_000)
    before = idx.items()
    d = rng.normal(size=8000)
    d[5000] = bad
    with pytest.raises(ValueError, match=r"deltas\[5000\] = (nan|inf|-inf) is not finite"):
        idx.update(rng.integers(0, 10_000, size=8000), d, bulk=bulk, threads=2)
    np.testing.assert_array_equal(idx.items()[1], before[1])
    idx.check()


def test_bulk_update_sums_are_the_same_for_any_thread_count():
    results = []
    for threads in (1, 2, 3, 4):
        idx, rng = _pool(seed=5)
        ids = rng.integers(0, 2_000, size=100_000)  # about 50 repeats per id
        idx.update(ids, rng.normal(size=100_000) * 1e-3, threads=threads, bulk=True)
        idx.check()
        results.append(idx.items())
    for ids, scores in results[1:]:
        np.testing.assert_array_equal(ids, results[0][0])
        np.testing.assert_array_equal(scores, results[0][1])  # bit for bit


def test_bulk_scratch_is_reused_across_calls_and_thread_counts():
    # The bulk path keeps its buffers between calls (laid out per thread count); results
    # must not depend on what an earlier call left in them, and stats() counts them.
    n = 50_000
    rng = np.random.default_rng(4)
    idx = socbi.SemiOrderedIndex(n)
    idx.insert(np.arange(n), 0.0)
    want = np.zeros(n)
    base = idx.stats()["memory_bytes"]
    for threads in (2, 3, 1, 2, 3, 2):
        ids = rng.integers(0, n, size=int(rng.integers(20_000, 80_000)))
        d = rng.integers(-3, 4, size=len(ids)).astype(float)  # exact sums in any order
        idx.update(ids, d, threads=threads, bulk=True)
        np.add.at(want, ids, d)
        np.testing.assert_array_equal(idx.score(np.arange(n)), want)
        idx.check()
    st = idx.stats()
    assert 0 < st["scratch_bytes"] <= 16 * n, st  # kept only up to 16 bytes per id of capacity
    assert st["memory_bytes"] - base >= st["scratch_bytes"], st  # and counted in memory_bytes


def test_bulk_scratch_keeps_only_what_the_last_call_used():
    # Buffers of a wider earlier call (threads=4 lays out more of them) are dropped by
    # the next call, so switching thread counts does not pile scratch up.
    n = 200_000
    ids = np.random.default_rng(5).integers(0, n, size=n)
    alone = socbi.SemiOrderedIndex(n)
    alone.insert(np.arange(n), 0.0)
    alone.update(ids, 1.0, threads=2)
    two = alone.stats()["scratch_bytes"]
    assert 12 * n <= two <= 16 * n, two  # a word and an id per batch item, plus slack
    idx = socbi.SemiOrderedIndex(n)
    idx.insert(np.arange(n), 0.0)
    idx.update(ids, 1.0, threads=4)
    assert idx.stats()["scratch_bytes"] <= 16 * n
    idx.update(ids, 1.0, threads=2)
    st = idx.stats()
    assert st["scratch_bytes"] == two
    assert st["scratch_bytes"] < st["memory_bytes"]
    idx.update(ids, 1.0, threads=1)
    # one thread, one integer delta over the table: the counted apply, whose undo log has
    # room for a word and an id per item, plus its repeat counts (a byte per id)
    assert idx.stats()["counted_updates"] == 1
    assert idx.stats()["scratch_bytes"] == 12 * n + n
    idx.update(ids, np.ones(n), threads=1)  # per-item deltas: the serial apply
    assert idx.stats()["counted_updates"] == 1
    assert idx.stats()["scratch_bytes"] == 12 * n + n  # the counts stay allocated


@pytest.mark.parametrize("bulk", [True, False])
def test_update_reads_any_integer_buffer_in_place(bulk):
    n = 20_000
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 120, size=n)  # fits int8
    want = None
    for form in (np.int8, np.uint8, np.int16, np.uint32, np.uint64, ">i8", "strided", "list"):
        idx = socbi.SemiOrderedIndex(300)
        idx.insert(np.arange(300), 0.0)
        if form == "strided":
            ids = np.repeat(raw, 2)[::2]
            assert not ids.flags.c_contiguous
        elif form == "list":
            ids = raw.tolist()
        else:
            ids = raw.astype(form)
        idx.update(ids, 1.0, bulk=bulk)
        got = idx.score(np.arange(300))
        if want is None:
            want = np.bincount(raw, minlength=300).astype(float)
        np.testing.assert_array_equal(got, want, err_msg=str(form))
        idx.check()


def test_input_forms_and_dtypes():
    idx = socbi.SemiOrderedIndex(300)
    for k, dt in enumerate([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]):
        idx.insert(np.array([k * 2, k * 2 + 1], dtype=dt), np.array([1, 2], dtype=np.float32))
    idx.insert(np.int64(100), 5)  # numpy scalar id, int score
    idx.insert([101, 102], [0.5, 0.25])
    idx.insert(np.array(103), 1.0)  # 0-d array
    assert idx.score(100) == 5.0 and isinstance(idx.score(100), float)
    np.testing.assert_array_equal(idx.score([101, 102]), [0.5, 0.25])
    idx.update([], [])  # empty batch is a no-op
    idx.update(np.array([], dtype=np.int64), 1.0)
    assert len(idx) == 20
    idx.check()


def test_doctest_in_class_docstring():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for t in finder.find(socbi.SemiOrderedIndex, "SemiOrderedIndex", globs={"socbi": socbi}):
        runner.run(t)
    assert runner.failures == 0 and runner.tries > 0


# --------------------------------------------------------------------------- bad input


def _prepared():
    idx = socbi.SemiOrderedIndex(10)
    idx.insert([0, 1, 2], [1.0, 2.0, 3.0])
    return idx


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda i: i.insert([10], [1.0]), ValueError, ["ids[0] = 10", "capacity=10"]),
        (lambda i: i.insert([-1], [1.0]), ValueError, ["ids[0] = -1", "negative"]),
        (lambda i: i.insert([1.5], [1.0]), TypeError, ["ids", "float64"]),
        (lambda i: i.insert(["a"], [1.0]), TypeError, ["ids"]),
        (lambda i: i.insert([True], [1.0]), TypeError, ["ids", "bool"]),
        (lambda i: i.insert([5, 5], [1.0, 2.0]), ValueError, ["id 5", "more than once"]),
        (lambda i: i.insert([1], [1.0]), ValueError, ["ids[0] = 1", "already in the index"]),
        (lambda i: i.insert([5], [np.nan]), ValueError, ["scores[0]", "not finite"]),
        (lambda i: i.insert([5], np.inf), ValueError, ["scores", "not finite"]),
        (lambda i: i.insert([5, 6], [1.0]), ValueError, ["length 1", "length 2"]),
        (lambda i: i.insert(np.zeros((2, 2), dtype=np.int64), 1.0), ValueError, ["1-D", "(2, 2)"]),
        (lambda i: i.update([7], [1.0]), KeyError, ["ids[0] = 7", "not in the index"]),
        (lambda i: i.update([0], [np.inf]), ValueError, ["deltas", "not finite"]),
        (lambda i: i.update([0], [1e308]) or i.update([0], [1e308]), ValueError, ["overflow"]),
        (lambda i: i.update([0], [[1.0]]), ValueError, ["deltas", "1-D"]),
        (lambda i: i.update([0], [1.0], threads=-5), ValueError, ["threads = -5"]),
        (lambda i: i.update([0], [1.0], bulk=1), TypeError, ["bulk"]),
        (lambda i: i.erase([8]), KeyError, ["ids[0] = 8", "erased"]),
        (lambda i: i.erase([0, 0]), ValueError, ["more than once"]),
        (lambda i: i.assign([9], 1.0), KeyError, ["assigned"]),
        (lambda i: i.score([9]), KeyError, ["scored"]),
        (lambda i: i.top(-1), ValueError, ["n = -1", "negative"]),
        (lambda i: i.bottom(2.5), TypeError, ["n must be an integer"]),
    ],
)
def test_bad_input_names_argument_and_changes_nothing(call, exc, words):
    idx = _prepared()
    before = idx.items()
    with pytest.raises(exc) as info:
        call(idx)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)
    after = idx.items()
    if "overflow" not in words:
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
    idx.check()


def test_batch_with_one_bad_id_applies_nothing():
    idx = _prepared()
    with pytest.raises(KeyError):
        idx.update([0, 1, 9], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(idx.score([0, 1, 2]), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        idx.insert([3, 4, 4], 0.0)
    assert 3 not in idx and len(idx) == 3


def test_constructor_errors():
    with pytest.raises(ValueError, match="capacity = 0"):
        socbi.SemiOrderedIndex(0)
    with pytest.raises(TypeError, match="capacity must be an integer"):
        socbi.SemiOrderedIndex(2.0)
    with pytest.raises(ValueError, match="node_size = 4"):
        socbi.SemiOrderedIndex(10, node_size=4)
    with pytest.raises(ValueError, match="capacity"):
        socbi.SemiOrderedIndex(2**40)
    with pytest.raises(MemoryError, match="capacity 4294967294"):
        socbi.SemiOrderedIndex(4294967294) if _too_big_to_allocate() else (_ for _ in ()).throw(
            MemoryError("capacity 4294967294 skipped: machine can allocate it"))


def _too_big_to_allocate() -> bool:
    # 4294967294 ids need ~69 GB; on machines with that much memory the check is moot.
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") < 64 * 2**30
    except (ValueError, OSError, AttributeError):
        return True


def test_contains_is_total():
    idx = _prepared()
    assert 0 in idx and 9 not in idx and -1 not in idx and 10**30 not in idx and "x" not in idx


# --------------------------------------------------------------------------- threads


def test_python_threads_never_lose_an_increment():
    n_ids, per_thread, batch = 1000, 1_000_000, 20_000
    idx = socbi.SemiOrderedIndex(n_ids, node_size=16)
    idx.insert(np.arange(n_ids), 0.0)
    rngs = [np.random.default_rng(100 + t) for t in range(4)]
    plans = [r.integers(0, n_ids, size=per_thread) for r in rngs]  # overlapping ids
    errors = []

    def work(plan):
        try:
            for s in range(0, per_thread, batch):
                idx.update(plan[s : s + batch], 1.0, bulk=False)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    want = sum(np.bincount(p, minlength=n_ids) for p in plans).astype(float)
    np.testing.assert_array_equal(idx.score(np.arange(n_ids)), want)
    idx.check()
    ids, scores = idx.top(n_ids)
    np.testing.assert_array_equal(scores, np.sort(want)[::-1])


def test_threads_inside_one_call():
    n_ids = 1000
    idx = socbi.SemiOrderedIndex(n_ids, node_size=16)
    idx.insert(np.arange(n_ids), 0.0)
    plan = np.random.default_rng(7).integers(0, n_ids, size=4_000_000)
    idx.update(plan, 1.0, threads=4, bulk=False)
    np.testing.assert_array_equal(idx.score(np.arange(n_ids)), np.bincount(plan, minlength=n_ids).astype(float))
    idx.check()


@pytest.mark.parametrize("query, delta, n_ids, n_updates, batch, k, seed", [
    ("top", 1.0, 5000, 2_000_000, 10_000, 200, 1),     # monotone increments, top()
    ("bottom", -1.0, 4000, 600_000, 5000, 150, 2),     # monotone decrements, bottom()
])
def test_queries_during_updates_are_sorted_distinct_and_bounded(query, delta, n_ids, n_updates, batch, k, seed):
    idx = socbi.SemiOrderedIndex(n_ids, node_size=16)
    idx.insert(np.arange(n_ids), 0.0)
    stop = threading.Event()
    plan = np.random.default_rng(seed).integers(0, n_ids, size=n_updates)

    def writer():
        for s in range(0, len(plan), batch):
            idx.update(plan[s : s + batch], delta, bulk=False)
        stop.set()

    w = threading.Thread(target=writer)
    w.start()
    checked = 0
    while not stop.is_set() or checked == 0:
        before = idx.score(np.arange(n_ids))
        ids, scores = getattr(idx, query)(k)
        after = idx.score(np.arange(n_ids))
        assert len(np.unique(ids)) == len(ids)
        # monotone updates: each returned score lies between the id's score before and
        # after the call
        if query == "top":
            assert (np.diff(scores) <= 0).all()
            assert (scores >= before[ids]).all() and (scores <= after[ids]).all()
        else:
            assert (np.diff(scores) >= 0).all()
            assert (scores <= before[ids]).all() and (scores >= after[ids]).all()
        checked += 1
    w.join()
    idx.check()


def test_sorted_node_fast_path_notices_in_place_reordering():
    # A node that two queries met unchanged is sorted in place; later in-place updates
    # (which do not touch the node) can reorder it, and the next query must notice.
    idx = socbi.SemiOrderedIndex(100, node_size=128)  # one node: every update stays in place
    ref = ReferenceIndex(100)
    scores = np.linspace(0.0, 0.99, 100)
    idx.insert(np.arange(100), scores, bulk=False)
    ref.insert(range(100), scores)
    for _ in range(3):
        assert_same(idx, ref, 10)
    # small deltas keep every id inside its node's range but swap neighbours' order
    idx.update([50, 51], [0.011, -0.011])
    ref.update([50, 51], [0.011, -0.011])
    assert idx.stats()["moves"] == 100  # the inserts only: both updates stayed in place
    for n in (1, 10, 60, 100):
        assert_same(idx, ref, n)
    idx.check()


def test_queries_over_a_sparse_top_of_single_id_nodes():
    # A bulk build over skewed scores cuts the sparse top into many 0- and 1-id nodes,
    # which queries read in order (the sorted fast path); updates that stay in place and
    # updates that move ids between them must both show up in the next answer.
    rng = np.random.default_rng(8)
    n = 20_000
    scores = rng.random(n) + np.bincount(rng.integers(0, n, size=10 * n), minlength=n)
    idx = socbi.SemiOrderedIndex(n, node_size=64)
    ref = ReferenceIndex(n)
    idx.insert(np.arange(n), scores)
    ref.insert(range(n), scores)
    for step in range(30):
        for k in (1, 7, 100, 500):
            assert_same(idx, ref, k)
        top_ids = idx.top(50)[0]
        ids = rng.choice(top_ids, size=5, replace=False)
        d = rng.normal(scale=0.5 if step % 2 else 0.01, size=5)
        idx.update(ids, d)
        ref.update(ids, d)
    idx.check()


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda i: i.update([0], 1.0, threads="a"), TypeError, ["threads must be an integer", "'a'"]),
        (lambda i: i.update([0], 1.0, threads=2.5), TypeError, ["threads must be an integer", "2.5"]),
        (lambda i: i.insert([5], 1.0, threads=None), TypeError, ["threads must be an integer", "None"]),
        (lambda i: i.assign([0], 1.0, threads=-7), ValueError, ["threads = -7", "-1 for all cores"]),
    ],
)
def test_threads_argument_is_checked_with_a_named_message(call, exc, words):
    # Regression: a wrong type for threads used to get pybind11's generic message.
    idx = _prepared()
    before = idx.items()
    with pytest.raises(exc) as info:
        call(idx)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    np.testing.assert_array_equal(idx.items()[1], before[1])


def test_bulk_fraction_type_is_checked():
    with pytest.raises(TypeError, match=r"bulk_fraction must be None \(choose by cost\) or a number"):
        socbi.SemiOrderedIndex(10, bulk_fraction="x")
    with pytest.raises(ValueError, match=r"bulk_fraction must be None \(choose by cost\) or a finite number >= 0"):
        socbi.SemiOrderedIndex(10, bulk_fraction=-1.0)
    socbi.SemiOrderedIndex(10, bulk_fraction=None).check()  # the default: each batch's path by cost


# ---------------------------------------------------------------- issue 17: path by cost
def _bottom_ref(model: dict, n: int, top: bool = False):
    items = sorted(model.items(), key=lambda kv: (kv[1], kv[0]), reverse=top)[:n]
    return [i for i, _ in items], [s for _, s in items]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lazy_round_stress_matches_model(seed):
    """The So-CBI round on tied counts: batch erase, lazy +1s, bottom() on a stale chain,
    sometimes top() (rebuild) and small mixed item updates; check() after every step."""
    rng = np.random.default_rng(seed)
    cap = 5000
    idx = socbi.SemiOrderedIndex(cap, node_size=[16, 64, 2048][seed])
    start = rng.integers(0, 3, cap).astype(float)
    idx.insert(np.arange(cap), start)
    model = {i: float(s) for i, s in enumerate(start)}
    stale_bottoms = 0
    for step in range(60):
        present = np.fromiter(model, dtype=np.int64)
        op = rng.integers(0, 6)
        if op <= 2:  # one round: erase b, +1 to 10 b neighbours (repeats), bottom(128)
            b = int(rng.integers(100, 200))
            lab = rng.choice(present, size=b, replace=False)
            idx.erase(lab)
            for i in lab:
                del model[int(i)]
            left = np.fromiter(model, dtype=np.int64)
            nbr = left[rng.integers(0, left.size, 10 * b)]
            idx.update(nbr, 1.0)
            for i in nbr:
                model[int(i)] += 1.0
            stale_bottoms += idx.stats()["stale"]
            ids, sc = idx.bottom(128)
            want_ids, want_sc = _bottom_ref(model, 128)
            assert ids.tolist() == want_ids and sc.tolist() == want_sc, step
        elif op == 3:  # a top() query: rebuilds a stale chain first
            ids, sc = idx.top(50)
            want_ids, want_sc = _bottom_ref(model, 50, top=True)
            assert ids.tolist() == want_ids and sc.tolist() == want_sc, step
            assert idx.stats()["stale"] == 0
        elif op == 4:  # a few item updates of either sign on the (maybe stale) chain
            some = rng.choice(present, size=20, replace=False)
            d = rng.integers(-2, 3, 20).astype(float)
            idx.update(some, d)
            for i, v in zip(some, d):
                model[int(i)] += float(v)
        else:  # re-insert some absent ids
            absent = np.setdiff1d(np.arange(cap), present)[:50]
            if absent.size:
                idx.insert(absent, 0.0)
                for i in absent:
                    model[int(i)] = 0.0
        idx.check()
        assert len(idx) == len(model)
    assert idx.stats()["lazy_updates"] > 5 and stale_bottoms > 5


def test_update_path_by_cost():
    n = 200_000
    idx = socbi.SemiOrderedIndex(n)
    idx.insert(np.arange(n), 0.0)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, n, 5000)
    idx.update(ids, 1.0)  # no query yet: a small batch moves items
    st = idx.stats()
    assert st["lazy_updates"] == 0 and st["moves"] > 0 and st["stale"] == 0
    idx.bottom(128)
    idx.update(ids, 1.0)  # after bottom(): increments go lazily
    assert idx.stats()["lazy_updates"] == 1 and idx.stats()["stale"] == 1
    rebuilds = idx.stats()["rebuilds"]
    got = idx.bottom(128)
    assert idx.stats()["rebuilds"] == rebuilds  # walked the stale chain
    counts = np.zeros(n)
    np.add.at(counts, ids, 2.0)
    order = np.lexsort((np.arange(n), counts))[:128]
    assert got[0].tolist() == order.tolist() and got[1].tolist() == counts[order].tolist()
    idx.update(ids, -1.0)  # a decrement never joins an increment-stale chain lazily
    assert idx.stats()["lazy_updates"] == 1
    idx.check()
    top = idx.top(10)  # the other end: rebuilt first
    assert idx.stats()["stale"] == 0 and idx.stats()["rebuilds"] == rebuilds + 1
    np.add.at(counts, ids, -1.0)
    assert top[1].tolist() == sorted(counts, reverse=True)[:10]
    # bulk=True rebuilds now, bulk=False moves, a fixed bulk_fraction keeps the old rule
    idx.bottom(1)
    idx.update(ids, 1.0, bulk=True)
    assert idx.stats()["stale"] == 0 and idx.stats()["rebuilds"] == rebuilds + 2
    idx.update(ids, 1.0, bulk=False)
    assert idx.stats()["stale"] == 0 and idx.stats()["lazy_updates"] == 1
    fixed = socbi.SemiOrderedIndex(n, bulk_fraction=0.25)
    fixed.insert(np.arange(n), 0.0)
    fixed.bottom(1)
    fixed.update(rng.integers(0, n, n), 1.0)
    assert fixed.stats()["lazy_updates"] == 0 and fixed.stats()["rebuilds"] == 2
    fixed.check()


def test_batch_erase_refuses_and_applies_whole():
    n = 10_000
    idx = socbi.SemiOrderedIndex(n)
    idx.insert(np.arange(n), np.arange(n) % 7.0)
    ids = np.arange(0, n, 3)  # 3334 ids: the exclusive batch erase
    with pytest.raises(ValueError, match="more than once"):
        idx.erase(np.append(ids, ids[5]))
    assert len(idx) == n
    idx.erase(ids[:2000])
    with pytest.raises(KeyError, match=r"ids\[7\] = 3 is not in the index"):  # checked in the exclusive section
        idx.erase(np.concatenate([ids[2000:2007], [3], ids[2007:]]))
    assert len(idx) == n - 2000 and int(ids[2000]) in idx
    idx.erase(ids[2000:])
    idx.check()
    assert len(idx) == n - ids.size and not any(int(i) in idx for i in ids[:50])
    left = np.setdiff1d(np.arange(n), ids)
    want = left[np.lexsort((left, left % 7.0))][:100]
    assert idx.bottom(100)[0].tolist() == want.tolist()


@pytest.mark.parametrize("batch", [10, 64, 100, 1000])
def test_small_batch_erase_is_whole_or_nothing(batch):
    # Erase batches of 64+ ids run exclusively since the third pass of issue 17 (before:
    # 1024+); an absent id anywhere in one refuses it with nothing erased.
    n = 5000
    idx = socbi.SemiOrderedIndex(n, node_size=64)
    idx.insert(np.arange(n), np.arange(n) % 5.0)
    ids = np.random.default_rng(batch).permutation(n)[:batch]
    idx.erase(ids[:1])
    with pytest.raises(KeyError, match=rf"ids\[{batch - 1}\] = {int(ids[0])} is not in the index"):
        idx.erase(np.append(ids[1:], ids[0]))
    assert len(idx) == n - 1 and all(int(i) in idx for i in ids[1:])
    # A repeat is found in the erase's own check pass (no sort of the batch): refused whole.
    with pytest.raises(ValueError, match=rf"ids contains id {int(ids[2])} more than once"):
        idx.erase(np.concatenate([ids[1:], ids[2:3]]))
    assert len(idx) == n - 1 and all(int(i) in idx for i in ids[1:])
    idx.check()
    idx.erase(ids[1:])
    idx.check()
    left = np.setdiff1d(np.arange(n), ids)
    assert len(idx) == left.size and not any(int(i) in idx for i in ids)
    assert idx.bottom(50)[0].tolist() == left[np.lexsort((left, left % 5.0))][:50].tolist()


@pytest.mark.parametrize("top", [False, True])
@pytest.mark.parametrize("form", ["array", "scalar"])
def test_stale_scan_answers_exactly(top, form):
    # Issue 17: rounds of So-CBI (erase the labelled, +1 to ten neighbours each, bottom())
    # on counts from zeros; as the ties at the bottom thin out, the walk on the stale chain
    # would read most of it, so queries scan the status table instead. Mirrored with -1s
    # and top(). Every answer against numpy; check() after every round.
    # form="scalar": one delta for all, so the counted apply collects the stale end's best
    # keys in its pass and the queries (k <= 1024) copy them instead.
    n, b = 40_000, 2_000
    rng = np.random.default_rng(5)
    idx = socbi.SemiOrderedIndex(n)
    idx.insert(np.arange(n), 0.0)
    counts = np.zeros(n)
    present = np.ones(n, dtype=bool)
    sign = -1.0 if top else 1.0
    query = idx.top if top else idx.bottom
    query(1)
    for _ in range(12):
        pool = np.flatnonzero(present)
        lab = rng.choice(pool, b, replace=False)
        idx.erase(lab)
        present[lab] = False
        pool = np.flatnonzero(present)
        nbr = pool[rng.integers(0, pool.size, 10 * b)]
        idx.update(nbr, sign if form == "scalar" else np.full(nbr.size, sign))
        np.add.at(counts, nbr, sign)
        for k in (1, 128, 1000):
            ids, sc = query(k)
            live = np.flatnonzero(present)
            order = np.lexsort((live, counts[live]))
            want = live[order[::-1][:k]] if top else live[order[:k]]
            assert ids.tolist() == want.tolist() and sc.tolist() == counts[want].tolist()
        idx.check()
    st = idx.stats()
    assert st["lazy_updates"] == 12 and st["rebuilds"] == 1
    if form == "scalar":
        assert st["counted_updates"] == 12 and st["candidate_queries"] == 36 and st["stale_scans"] == 0
    else:
        assert st["counted_updates"] == 0 and st["candidate_queries"] == 0 and st["stale_scans"] >= 3


@pytest.mark.parametrize("deltas", ["scalar", "array"])
def test_item_moves_on_tied_counts_keep_id_order(deltas):
    # Issue 17: a sorted batch of item moves (radix-ordered by target key, moves without
    # ownership under a kept target lock) on tie-heavy counts leaves the exact (score, id)
    # order at both ends.
    n = 20_000
    rng = np.random.default_rng(17)
    counts = rng.integers(0, 4, n).astype(float)
    idx = socbi.SemiOrderedIndex(n, node_size=64)
    idx.insert(np.arange(n), counts)
    idx.bottom(128)
    moves = idx.stats()["moves"]
    for m in (300, 5000, 30_000):  # repeats in the last
        ids = rng.integers(0, n, m)
        d = 1.0 if deltas == "scalar" else rng.integers(1, 3, m).astype(float)
        idx.update(ids, d, bulk=False)
        np.add.at(counts, ids, d)
        idx.check()
        order = np.lexsort((np.arange(n), counts))
        got = idx.bottom(n)
        assert got[0].tolist() == order.tolist() and got[1].tolist() == counts[order].tolist()
        assert idx.top(50)[0].tolist() == order[::-1][:50].tolist()
    assert idx.stats()["moves"] - moves > 20_000


def test_refused_item_move_batch_names_first_bad_position():
    n = 5_000
    idx = socbi.SemiOrderedIndex(n)
    idx.insert(np.arange(n), np.arange(n) % 3.0)
    idx.erase([4321])
    before = idx.items()
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 4000, 2000)  # repeats; item moves (bulk=False), one delta for all
    ids[700] = ids[1500] = 4321
    with pytest.raises(KeyError, match=r"ids\[700\] = 4321 is not in the index"):
        idx.update(ids, 1.0, bulk=False)
    after = idx.items()
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    idx.check()


def test_counted_update_matches_item_adds_and_refuses_whole_batch():
    """A large batch of one integer delta is applied by counting repeats (stats:
    counted_updates); its sums are exactly the item-by-item ones, and a batch with an
    absent id raises KeyError naming the first bad position with every score unchanged."""
    n = 50_000
    rng = np.random.default_rng(11)
    start = rng.integers(-5, 6, n).astype(float)
    start[::7] += 0.25  # fractions take the one-by-one adds
    idx = socbi.SemiOrderedIndex(n)
    idx.insert(np.arange(n), start)
    idx.erase(np.arange(0, n, 13))
    present = np.setdiff1d(np.arange(n), np.arange(0, n, 13))
    idx.bottom(128)
    ids = rng.choice(present, size=n)
    before = idx.stats()["counted_updates"]
    idx.update(ids, 3.0)
    assert idx.stats()["counted_updates"] == before + 1
    want = start.copy()
    for i in ids:  # item by item, in batch order
        want[i] += 3.0
    got = np.array([idx.score(int(i)) for i in present])
    assert got.tobytes() == want[present].tobytes()
    bad = ids.copy()
    bad[777] = 13  # erased
    with pytest.raises(KeyError, match=r"ids\[777\] = 13 is not in the index"):
        idx.update(bad, 3.0)
    assert np.array([idx.score(int(i)) for i in present]).tobytes() == got.tobytes()
    assert idx.stats()["counted_updates"] == before + 1
    idx.check()
    assert idx.bottom(5)[0].tolist() == present[np.lexsort((present, want[present]))][:5].tolist()
