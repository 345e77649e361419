"""So-CBI boundary scorer: counts, incremental == recount, ends, ties, errors, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from socbi._reference import ReferenceIndex
from socbi.scoring import BoundaryScorer, default_index_factory


def _core_index():
    try:
        from socbi import SemiOrderedIndex
    except ImportError:
        return None
    return SemiOrderedIndex


CORE = _core_index()
# The real C++ index when it is built; the pure-Python model always (it is the oracle).
INDEXES = [pytest.param(ReferenceIndex, id="reference"),
           pytest.param(CORE, id="core", marks=pytest.mark.skipif(
               CORE is None, reason="socbi.SemiOrderedIndex (C++ extension) is not built"))]
BEST_INDEX = CORE if CORE is not None else ReferenceIndex


def generated_clusters(n, d=16, clusters=12, spread=0.5, seed=0):
    """A *generated* clustered pool (Gaussian blobs), not real data."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return (centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def scorer(x, k=10, index=None, backend="exact", **kw):
    kw.setdefault("progress", False)
    if backend == "hnsw":
        kw.setdefault("pool_options", {"num_threads": 1})
    return BoundaryScorer(x, k, backend=backend, index_factory=index or BEST_INDEX, **kw)


def line_points():
    # ids:            0    1    2    3    4     5     6     7
    return np.array([[0], [1], [2], [3.5], [10], [11], [12.5], [20]], dtype=np.float32)


# ----------------------------------------------------------------------------- definition
@pytest.mark.parametrize("index", INDEXES)
def test_counts_on_a_hand_built_line(index):
    s = scorer(line_points(), k=2, index=index, labelled=[0], tie_break="id")
    # 0's two nearest unlabelled points are 1 and 2.
    np.testing.assert_array_equal(s.counts([1, 2, 3, 4, 5, 6, 7]), [1, 1, 0, 0, 0, 0, 0])
    stats = s.label([1])
    # 1 is gone: 0's list is repaired to {2, 3}; 1's own list is {2, 3}.
    assert stats.labelled == 1 and stats.repairs == 1 and stats.queries == 2
    np.testing.assert_array_equal(s.neighbours([0, 1]), [[2, 3], [2, 3]])
    np.testing.assert_array_equal(s.counts([2, 3, 4, 5, 6, 7]), [2, 2, 0, 0, 0, 0])
    # smallest end (the paper's choice) vs largest end, ties by id here.
    ids, counts = s.select(3)
    np.testing.assert_array_equal(ids, [4, 5, 6])
    np.testing.assert_array_equal(counts, [0, 0, 0])
    ids, counts = s.select(2, largest=True)
    np.testing.assert_array_equal(np.sort(ids), [2, 3])
    np.testing.assert_array_equal(counts, [2, 2])
    s.check()


@pytest.mark.parametrize("index", INDEXES)
def test_incremental_counts_equal_recount_over_many_rounds(index):
    x = generated_clusters(1200, seed=1)
    rng = np.random.default_rng(2)
    s = scorer(x, k=10, index=index, labelled=rng.choice(1200, 15, replace=False))
    s.check()
    total_repairs = 0
    for r in range(8):
        if r % 3 == 0:
            ids, _ = s.select(40)                      # smallest counts: few repairs
        elif r % 3 == 1:
            ids, _ = s.select(40, largest=True)        # largest counts: many lists repaired
        else:
            ids = rng.choice(s.unlabelled_ids(), 40, replace=False)
        stats = s.label(ids)
        total_repairs += stats.repairs
        s.check()                                       # includes counts == recount()
        np.testing.assert_array_equal(s.counts(), s.recount())
        assert s.counts().sum() == 10 * s.labelled_mask.sum()
    assert total_repairs > 50                            # the repair path was exercised


def test_incremental_equals_recount_on_digits_with_exact_ties():
    from sklearn.datasets import load_digits
    x = load_digits().data.astype(np.float32)           # real data; integer pixels, many tied distances
    rng = np.random.default_rng(0)
    s = scorer(x, k=10, labelled=rng.choice(len(x), 20, replace=False))
    for r in range(5):
        ids, _ = s.select(60, largest=bool(r % 2))
        s.label(ids)
    s.check()


def test_pool_smaller_than_k_and_exhausted():
    x = generated_clusters(30, d=4, seed=3)
    s = scorer(x, k=10, labelled=np.arange(15))
    s.label(np.arange(15, 25))                          # 5 left: lists shrink to 5
    s.check()
    assert s.counts().sum() == 5 * 25
    s.label(np.arange(25, 30))
    assert len(s) == 0 and s.counts().size == 0
    s.check()
    with pytest.raises(ValueError, match="pool is empty"):
        s.select(1)
    ids, counts = s.select(0)
    assert ids.size == 0


def test_hnsw_backend_keeps_list_invariants_and_tracks_recount():
    x = generated_clusters(4000, d=16, seed=4)
    rng = np.random.default_rng(5)
    s = scorer(x, k=10, backend="hnsw", labelled=rng.choice(4000, 50, replace=False))
    for r in range(4):
        ids, _ = s.select(100, largest=bool(r % 2))
        s.label(ids)
        s.check(recount=False)                          # pool/index/lists agree exactly
        assert s.counts().sum() == 10 * s.labelled_mask.sum()
    agree = (s.counts() == s.recount()).mean()
    assert agree >= 0.98, agree
    assert s.recount_agreement() == agree


def test_check_as_documented_passes_on_a_healthy_hnsw_pool():
    """check() with its defaults holds on a healthy HNSW pool (the recount is exact, the
    pool approximate, so the recount is opt-in there); recount=True still compares."""
    x = generated_clusters(4000, d=16, seed=4)
    rng = np.random.default_rng(5)
    s = scorer(x, k=10, backend="hnsw", labelled=rng.choice(4000, 50, replace=False))
    for r in range(4):
        ids, _ = s.select(100, largest=bool(r % 2))
        s.label(ids)
        s.check()
    agree = s.recount_agreement()
    if agree < 1.0:  # this pool drifted: the strict recount reports it
        with pytest.raises(AssertionError, match="differ from a recount"):
            s.check(recount=True)
    e = scorer(x, k=10, labelled=rng.choice(4000, 50, replace=False))
    e.label(e.select(100)[0])
    e.check()
    assert e.recount_agreement() == 1.0


# ----------------------------------------------------------------------------- ties and seeds
def test_ties_broken_by_a_seeded_permutation_not_by_id():
    x = generated_clusters(500, seed=6)
    a = scorer(x, labelled=[0], seed=1)
    b = scorer(x, labelled=[0], seed=1)
    c = scorer(x, labelled=[0], seed=2)
    d = scorer(x, labelled=[0], tie_break="id")
    np.testing.assert_array_equal(a.select(50)[0], b.select(50)[0])
    assert not np.array_equal(a.select(50)[0], c.select(50)[0])
    unl = d.unlabelled_ids()
    zero_by_id = unl[d.counts() == 0][:50]            # 0's ten neighbours have count 1
    np.testing.assert_array_equal(d.select(50)[0], zero_by_id)
    assert set(a.select(50)[1].tolist()) == {0}
    assert not np.array_equal(np.sort(a.select(50)[0]), zero_by_id)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("index", INDEXES)
def test_bad_labels_raise_and_change_nothing(index):
    x = generated_clusters(300, seed=7)
    s = scorer(x, k=5, index=index, labelled=[1, 2, 3])
    before = (s.counts().copy(), len(s), len(s.index), s.labelled_mask.copy(), s.pool.state.copy())

    with pytest.raises(ValueError, match=r"ids \[2\] are labelled already"):
        s.label([10, 2])
    with pytest.raises(ValueError, match=r"must lie in \[0, 300\)"):
        s.label([10, 300])
    with pytest.raises(ValueError, match="distinct"):
        s.label([10, 10])
    with pytest.raises(ValueError, match="integers"):
        s.label([1.5])
    with pytest.raises(ValueError, match="n=298 exceeds the 297"):
        s.select(298)
    with pytest.raises(ValueError, match="labelled and have no count"):
        s.counts([1])

    after = (s.counts(), len(s), len(s.index), s.labelled_mask, s.pool.state)
    for u, v in zip(before, after):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    s.check()


def test_failed_query_restores_the_pool(monkeypatch):
    x = generated_clusters(200, seed=8)
    s = scorer(x, k=5, labelled=[0])
    counts0, state0 = s.counts().copy(), s.pool.state.copy()

    def broken(*a, **k):
        raise RuntimeError("simulated search failure")

    monkeypatch.setattr(s.pool, "query", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        s.label([5, 6])
    monkeypatch.undo()
    np.testing.assert_array_equal(s.pool.state, state0)
    np.testing.assert_array_equal(s.counts(), counts0)
    s.label([5, 6])
    s.check()


def test_constructor_rejects_bad_arguments():
    x = generated_clusters(100, seed=9)
    bad = x.copy()
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"rows \[7\]"):
        scorer(bad)
    with pytest.raises(ValueError, match="k must be"):
        scorer(x, k=0)
    with pytest.raises(ValueError, match="tie_break"):
        scorer(x, tie_break="first")
    with pytest.raises(ValueError, match="labelled mask has shape"):
        scorer(x, labelled=np.zeros(99, bool))
    with pytest.raises(ValueError, match="threads=2 needs an index"):
        BoundaryScorer(x, 5, backend="exact", index_factory=ReferenceIndex, threads=2, progress=False)
    other = scorer(x, labelled=[4]).pool
    with pytest.raises(ValueError, match="pool disagrees with labelled"):
        scorer(x, labelled=[5], pool=other)


def test_default_index_factory_is_the_core_or_explains_how_to_get_it():
    if CORE is None:
        with pytest.raises(ImportError, match="ReferenceIndex"):
            default_index_factory()
    else:
        assert default_index_factory() is CORE


@pytest.mark.skipif(CORE is None, reason="socbi.SemiOrderedIndex (C++ extension) is not built")
def test_threaded_updates_in_the_core_index_give_the_same_counts():
    x = generated_clusters(3000, seed=10)
    rng = np.random.default_rng(11)
    init = rng.choice(3000, 200, replace=False)
    one = scorer(x, k=10, index=CORE, labelled=init)
    four = scorer(x, k=10, index=CORE, labelled=init, threads=4)
    for _ in range(3):
        ids = rng.choice(one.unlabelled_ids(), 150, replace=False)
        one.label(ids)
        four.label(ids)
        four.check()
    np.testing.assert_array_equal(one.counts(), four.counts())
    np.testing.assert_array_equal(one.select(100)[0], four.select(100)[0])


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_save_and_load_rebuild_counts_without_queries(tmp_path, backend, monkeypatch):
    x = generated_clusters(1500, seed=12)
    s = scorer(x, k=8, backend=backend, labelled=np.arange(0, 1500, 50))
    s.label(s.select(60, largest=True)[0])
    s.save(tmp_path / "run" / "scorer")

    from socbi import knn
    real_load = knn.load_pool

    def load_and_forbid_queries(*a, **kw):
        pool = real_load(*a, **kw)
        pool.query = lambda *a, **k: (_ for _ in ()).throw(AssertionError("queried on load"))
        return pool

    monkeypatch.setattr(knn, "load_pool", load_and_forbid_queries)
    t = BoundaryScorer.load(tmp_path / "run" / "scorer", x, index_factory=BEST_INDEX, progress=False)
    monkeypatch.undo()
    np.testing.assert_array_equal(t.counts(), s.counts())
    np.testing.assert_array_equal(t.labelled_mask, s.labelled_mask)
    np.testing.assert_array_equal(t.select(40)[0], s.select(40)[0])
    del t.pool.query                                      # queries allowed again
    ids = t.select(30)[0]
    t.label(ids)
    s.label(ids)
    np.testing.assert_array_equal(t.counts(), s.counts())
