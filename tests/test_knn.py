"""Neighbour pools: exactness, HNSW recall, labelled exclusion, bad input, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from socbi.knn import (ExactPool, HNSWPool, exact_knn, load_pool, make_pool, recall_at_k)
import socbi.knn as knn_module

hnswlib = pytest.importorskip("hnswlib")


def generated_clusters(n: int, d: int = 64, clusters: int = 50, spread: float = 0.35,
                       seed: int = 0) -> np.ndarray:
    """A *generated* clustered pool (Gaussian blobs), not real data."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    labels = rng.integers(0, clusters, n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32)


def digits_embeddings() -> np.ndarray:
    from sklearn.datasets import load_digits
    return load_digits().data.astype(np.float32)  # real data: 1797 8x8 images, pixel values 0..16


def brute(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, space: str):
    """Independent oracle: float64 pairwise distances, stable sort over ascending ids."""
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if space == "cosine":
        x64 /= np.linalg.norm(x64, axis=1, keepdims=True)
        q64 /= np.linalg.norm(q64, axis=1, keepdims=True)
        dist = 1.0 - q64 @ x64[ids].T
    else:
        dist = ((q64[:, None, :] - x64[ids][None, :, :]) ** 2).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return ids[order], np.take_along_axis(dist, order, axis=1)


def build(pool_cls, x, space="l2", **kw):
    pool = pool_cls(x.shape[1], x.shape[0], space, progress=False, **kw)
    pool.add(np.arange(x.shape[0]), x)
    return pool


# ----------------------------------------------------------------------------- exact
@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_exact_pool_matches_bruteforce(space):
    x = generated_clusters(1500, d=16, clusters=10, seed=1)
    pool = build(ExactPool, x, space)
    labelled = np.arange(0, 1500, 7)
    pool.mark_labelled(labelled)
    q = x[labelled]
    ids, dist = pool.query(q, 12)
    ref_ids, ref_dist = brute(x, pool.unlabelled_ids(), q, 12, space)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)
    assert ids.dtype == np.int64 and dist.dtype == np.float32


def test_exact_ties_broken_by_ascending_id_whatever_the_chunking():
    # Many exact duplicates: every tie must be resolved by the smaller id.
    rng = np.random.default_rng(3)
    base = rng.integers(0, 4, size=(40, 6)).astype(np.float32)
    x = np.concatenate([base] * 50)[rng.permutation(2000)]
    big = build(ExactPool, x)
    small = build(ExactPool, x, max_chunk_bytes=1 << 16)  # forces many pool chunks
    q = x[:300]
    a_ids, a_d = big.query(q, 30)
    b_ids, b_d = small.query(q, 30)
    np.testing.assert_array_equal(a_ids, b_ids)
    ref_ids, _ = brute(x, np.arange(2000), q, 30, "l2")
    np.testing.assert_array_equal(a_ids, ref_ids)


def test_digits_exact_pool_is_exact():
    x = digits_embeddings()
    pool = build(ExactPool, x)
    q = x[::9]
    ids, dist = pool.query(q, 10)
    ref_ids, ref_dist = brute(x, np.arange(len(x)), q, 10, "l2")
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-6)


# ----------------------------------------------------------------------------- recall
def _recall(x, labelled, space="l2", k=10):
    hnsw = build(HNSWPool, x, space, num_threads=1)        # default M, ef_construction, ef
    exact = build(ExactPool, x, space)
    for pool in (hnsw, exact):
        pool.mark_labelled(labelled)
    q = x[labelled]
    h_ids, h_d = hnsw.query(q, k)
    e_ids, e_d = exact.query(q, k)
    assert not np.isin(h_ids, labelled).any()
    return recall_at_k(h_ids, e_d, h_d)


@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_hnsw_recall_on_digits(space):
    x = digits_embeddings()
    labelled = np.random.default_rng(0).choice(len(x), 300, replace=False)
    assert _recall(x, labelled, space) >= 0.95


def test_hnsw_recall_on_generated_clustered_pool_of_20000():
    x = generated_clusters(20000, d=64, clusters=50, seed=7)
    labelled = np.random.default_rng(1).choice(len(x), 2000, replace=False)
    r = _recall(x, labelled, "l2")
    assert r >= 0.95, r


def test_recall_at_k_counts_ties_as_hits_and_misses_as_misses():
    exact_d = np.array([[1.0, 2.0, 2.0]])
    # id 9 is another sample at the tied distance 2.0: a hit; distance 3.0 is a miss.
    assert recall_at_k(np.array([[1, 2, 9]]), exact_d, np.array([[1.0, 2.0, 2.0]])) == 1.0
    assert recall_at_k(np.array([[1, 2, 9]]), exact_d, np.array([[1.0, 2.0, 3.0]])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        recall_at_k(np.zeros((1, 2)), exact_d, np.zeros((1, 2)))


# ----------------------------------------------------------------------------- labelled exclusion
@pytest.mark.parametrize("pool_cls", [ExactPool, HNSWPool])
def test_labelled_samples_never_come_back(pool_cls):
    x = generated_clusters(3000, d=16, clusters=20, seed=2)
    kw = {"num_threads": 1} if pool_cls is HNSWPool else {}
    pool = build(pool_cls, x, **kw)
    rng = np.random.default_rng(5)
    labelled = rng.choice(3000, 600, replace=False)
    pool.mark_labelled(labelled[:300])
    pool.mark_labelled(labelled[300:])
    assert len(pool) == 2400 and labelled[0] not in pool
    ids, _ = pool.query(x[labelled], 25)         # each labelled sample is its own nearest point
    assert not np.isin(ids, labelled).any()
    assert (ids >= 0).all() and (ids < 3000).all()
    assert all(len(set(row)) == 25 for row in ids.tolist())
    pool.unmark_labelled(labelled[:10])          # back in the pool: found at distance 0
    ids, dist = pool.query(x[labelled[:10]], 1)
    np.testing.assert_array_equal(ids[:, 0], labelled[:10])


def test_hnsw_returns_k_unlabelled_after_deleting_most_of_the_pool():
    x = generated_clusters(4000, d=16, clusters=20, seed=4)
    pool = build(HNSWPool, x, num_threads=1, ef=10)
    keep = np.random.default_rng(0).choice(4000, 40, replace=False)
    pool.mark_labelled(np.setdiff1d(np.arange(4000), keep))
    ids, _ = pool.query(x[:50], 30)
    assert np.isin(ids, keep).all()
    assert all(len(set(r)) == 30 for r in ids.tolist())
    exact = build(ExactPool, x)
    exact.mark_labelled(np.setdiff1d(np.arange(4000), keep))
    e_ids, _ = exact.query(x[:50], 30)
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(e_ids, axis=1))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("pool_cls", [ExactPool, HNSWPool])
def test_bad_input_raises_and_changes_nothing(pool_cls):
    x = generated_clusters(500, d=8, clusters=5, seed=9)
    kw = {"num_threads": 1} if pool_cls is HNSWPool else {}
    pool = pool_cls(8, 600, "l2", progress=False, **kw)
    pool.add(np.arange(500), x)
    pool.mark_labelled([3, 4])
    state0 = pool.state.copy()
    answer0 = pool.query(x[:20], 5)

    bad_x = x[500 - 2:].copy()
    bad_x[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*rows \[1\]"):
        pool.add([550, 551], bad_x)
    with pytest.raises(ValueError, match="dimension 7.*8-d"):
        pool.add([550], np.zeros((1, 7)))
    with pytest.raises(ValueError, match="already in the pool"):
        pool.add([10, 560], x[:2])
    with pytest.raises(ValueError, match=r"must lie in \[0, 600\)"):
        pool.add([600], x[:1])
    with pytest.raises(ValueError, match="distinct"):
        pool.add([560, 560], x[:2])
    with pytest.raises(ValueError, match="2 ids were given"):
        pool.add([560, 561], x[:3])
    with pytest.raises(ValueError, match=r"\[3\].*not unlabelled"):
        pool.mark_labelled([7, 3])                      # 3 is labelled already
    with pytest.raises(ValueError, match=r"\[550\].*not unlabelled"):
        pool.mark_labelled([550])                       # never added
    with pytest.raises(ValueError, match="not labelled"):
        pool.unmark_labelled([5])
    with pytest.raises(ValueError, match="k=499 exceeds the 498"):
        pool.query(x[:2], 499)
    with pytest.raises(ValueError, match="k must be at least 1"):
        pool.query(x[:2], 0)
    with pytest.raises(ValueError, match="NaN"):
        pool.query(np.full((1, 8), np.nan), 3)
    with pytest.raises(ValueError, match="dimension 9"):
        pool.query(np.zeros((2, 9)), 3)

    np.testing.assert_array_equal(pool.state, state0)
    assert len(pool) == 498
    answer1 = pool.query(x[:20], 5)
    np.testing.assert_array_equal(answer0[0], answer1[0])


def test_cosine_rejects_zero_vectors_and_constructor_checks():
    pool = ExactPool(4, 10, "cosine", progress=False)
    with pytest.raises(ValueError, match="zero norm"):
        pool.add([0, 1], np.array([[1, 0, 0, 0], [0, 0, 0, 0]], np.float32))
    assert len(pool) == 0
    with pytest.raises(ValueError, match="space must be one of"):
        ExactPool(4, 10, "ip")
    with pytest.raises(ValueError, match="capacity"):
        ExactPool(4, 0)
    with pytest.raises(ValueError, match="backend must be"):
        make_pool("faiss", 4, 10)
    with pytest.raises(ValueError, match="exceeds the 0 unlabelled"):
        pool.query(np.ones((1, 4)), 1)                  # empty pool


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_save_load_roundtrip(tmp_path, backend):
    x = generated_clusters(2000, d=12, clusters=8, seed=11)
    kw = {"num_threads": 1} if backend == "hnsw" else {}
    pool = make_pool(backend, 12, 2100, "cosine", progress=False, **kw)
    pool.add(np.arange(2000), x)
    labelled = np.arange(0, 2000, 5)
    pool.mark_labelled(labelled)
    before = pool.query(x[labelled], 8)
    pool.save(tmp_path / "session" / "pool")
    loaded = load_pool(tmp_path / "session" / "pool", progress=False)
    assert type(loaded) is type(pool) and loaded.space == "cosine" and len(loaded) == 1600
    np.testing.assert_array_equal(loaded.state, pool.state)
    after = loaded.query(x[labelled], 8)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1], rtol=1e-6)
    loaded.add([2050], x[:1])                           # spare capacity survives the save
    assert 2050 in loaded
    with pytest.raises(FileNotFoundError, match="missing"):
        load_pool(tmp_path / "nothing")


def test_exact_knn_function_rejects_k_above_candidates():
    with pytest.raises(ValueError, match="exceeds"):
        exact_knn(np.zeros((3, 2), np.float32), np.arange(3), np.zeros((1, 2), np.float32), 4)


def test_crash_between_graph_and_metadata_leaves_the_previous_save(tmp_path, monkeypatch):
    # Regression: the graph used to be renamed into place before the metadata, so a crash
    # in between loaded the old labelled set with the new graph, silently inconsistent.
    x = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)  # generated
    pool = make_pool("hnsw", 8, 500, num_threads=1, progress=False)
    pool.add(np.arange(500), x)
    prefix = tmp_path / "pool"
    pool.save(prefix)
    pool.mark_labelled(np.arange(100))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash before the metadata rename")

    monkeypatch.setattr(knn_module, "_atomic_savez", crash)
    with pytest.raises(KeyboardInterrupt):
        pool.save(prefix)
    monkeypatch.undo()
    loaded = load_pool(prefix, progress=False)
    assert (loaded.state[:100] == pool.state[100:200]).all()  # all still unlabelled
    ids, _ = loaded.query(x[:100], 1)
    assert (ids[:, 0] == np.arange(100)).all()  # and the graph agrees: they are findable
    assert len(list(tmp_path.glob("*.hnsw"))) == 1  # the aborted save left no graph behind


def test_hnsw_build_logs_progress_lines_when_not_on_a_terminal(capsys, monkeypatch):
    """A build too big for one block prints plain progress lines to a log (no bar frames),
    ending at 100 %; the graph equals a build without progress (one thread)."""
    pytest.importorskip("hnswlib")
    from socbi.knn import HNSWPool

    monkeypatch.setenv("SOCBI_PROGRESS_INTERVAL", "0")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 8)).astype(np.float32)
    ids = np.arange(5000)
    a = HNSWPool(8, 5000, num_threads=1, progress=True)
    a.add(ids, x)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("socbi hnsw build:")]
    assert len(lines) >= 4 and "\r" not in err, err
    assert lines[-1].startswith("socbi hnsw build: 5000/5000 (100%)"), lines
    b = HNSWPool(8, 5000, num_threads=1, progress=False)
    b.add(ids, x)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(a.query(x[:50], 5)[0], b.query(x[:50], 5)[0])
