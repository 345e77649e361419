"""Hash codes, packed Hamming ranking, mAP against brute force, the OrthoHash-style head."""
import itertools
import math

import numpy as np
import pytest

from socbi import hashing as H
from socbi.hashing import (average_precisions, class_codes, hadamard, hamming_distances, hamming_rank,
                           mean_average_precision, pack_codes, retrieval_report, unpack_codes)


# ------------------------------------------------------------------ brute-force references
def ap_of_ranking(rel_sorted, k=None, convention="standard", R=None):
    """AP of one fixed ranking (list of 0/1), straight from the definition."""
    n = len(rel_sorted)
    k = n if k is None else min(k, n)
    R = sum(rel_sorted) if R is None else R
    hits, total = 0, 0.0
    for i in range(k):
        if rel_sorted[i]:
            hits += 1
            total += hits / (i + 1)
    if convention == "deephash":
        return total / hits if hits else 0.0
    if R == 0:
        return float("nan")
    return total / min(R, k)


def brute_ap(dist_row, rel_row, k=None, ties="index", convention="standard"):
    n = len(dist_row)
    if ties == "index":
        order = sorted(range(n), key=lambda j: (dist_row[j], j))
        return ap_of_ranking([rel_row[j] for j in order], k, convention)
    # mean over every order of the items inside each tie group
    groups = {}
    for j in range(n):
        groups.setdefault(dist_row[j], []).append(j)
    keys = sorted(groups)
    perms = [list(itertools.permutations(groups[g])) for g in keys]
    vals = []
    for combo in itertools.product(*perms):
        order = [j for grp in combo for j in grp]
        vals.append(ap_of_ranking([rel_row[j] for j in order], k, convention))
    return float(np.mean(vals))


def unpacked_hamming(a_bits, b_bits):
    return (a_bits[:, None, :] != b_bits[None, :, :]).sum(-1)


# ------------------------------------------------------------------ codes
def test_hadamard_rows_are_orthogonal_and_codes_are_far_apart():
    for n in (1, 2, 8, 32, 64):
        h = hadamard(n).astype(int)
        assert (h @ h.T == n * np.eye(n)).all()
    for C, b in ((10, 32), (10, 64), (40, 32), (70, 32), (5, 12), (1, 16)):
        codes = class_codes(C, b)
        assert codes.shape == (C, b) and set(np.unique(codes)) <= {-1.0, 1.0}
        d = (b - codes @ codes.T) / 2
        np.fill_diagonal(d, b)
        if C <= b and b & (b - 1) == 0:
            assert (d[~np.eye(C, dtype=bool)] == b // 2).all()
        if C <= 2 * b and b & (b - 1) == 0:
            assert d.min() >= b // 2
        assert d.min() > 0                      # no two classes share a code
        np.testing.assert_array_equal(codes, class_codes(C, b))     # deterministic
    with pytest.raises(ValueError, match="power of two"):
        hadamard(12)
    with pytest.raises(ValueError, match="n_classes"):
        class_codes(0, 32)


def test_pack_accepts_pm1_bits_bool_and_reals_and_round_trips():
    rng = np.random.default_rng(0)
    for b in (1, 7, 8, 13, 32, 64, 100):
        bits = rng.integers(0, 2, size=(9, b)).astype(np.uint8)
        p = pack_codes(bits)
        assert p.dtype == np.uint8 and p.shape == (9, (b + 7) // 8)
        np.testing.assert_array_equal(pack_codes(2 * bits.astype(int) - 1), p)
        np.testing.assert_array_equal(pack_codes(bits.astype(bool)), p)
        np.testing.assert_array_equal(pack_codes(np.where(bits, 0.3, -2.0)), p)
        np.testing.assert_array_equal(unpack_codes(p, b), bits)
    with pytest.raises(ValueError, match="NaN"):
        pack_codes(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="n_bits=9"):
        unpack_codes(np.zeros((2, 1), np.uint8), 9)


@pytest.mark.parametrize("b", [3, 13, 32, 64, 100, 130])
def test_packed_hamming_equals_unpacked(b):
    rng = np.random.default_rng(b)
    qa = rng.integers(0, 2, (17, b)).astype(np.uint8)
    da = rng.integers(0, 2, (41, b)).astype(np.uint8)
    got = hamming_distances(pack_codes(qa), pack_codes(da))
    np.testing.assert_array_equal(got, unpacked_hamming(qa, da))


def test_hamming_byte_table_fallback(monkeypatch):
    rng = np.random.default_rng(5)
    qa = rng.integers(0, 2, (6, 64)).astype(np.uint8)
    da = rng.integers(0, 2, (11, 64)).astype(np.uint8)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    np.testing.assert_array_equal(hamming_distances(pack_codes(qa), pack_codes(da)), unpacked_hamming(qa, da))


def test_hamming_rank_orders_by_distance_then_index():
    rng = np.random.default_rng(1)
    qa = rng.integers(0, 2, (8, 6)).astype(np.uint8)       # 6 bits: many ties
    da = rng.integers(0, 2, (50, 6)).astype(np.uint8)
    dist = unpacked_hamming(qa, da)
    for k in (None, 1, 7, 50):
        ids, dd = hamming_rank(pack_codes(qa), pack_codes(da), k)
        kk = 50 if k is None else k
        for i in range(8):
            ref = sorted(range(50), key=lambda j: (dist[i, j], j))[:kk]
            assert ids[i].tolist() == ref
            assert dd[i].tolist() == [dist[i, j] for j in ref]
    with pytest.raises(ValueError, match="k=51"):
        hamming_rank(pack_codes(qa), pack_codes(da), 51)
    with pytest.raises(ValueError, match="same length"):
        hamming_distances(pack_codes(qa), np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="pack_codes"):
        hamming_distances(qa.astype(np.int64), da)


# ------------------------------------------------------------------ mAP vs brute force
@pytest.mark.parametrize("seed", range(6))
def test_map_equals_brute_force_with_hamming_ties(seed):
    rng = np.random.default_rng(seed)
    b, m, n, C = 3, 5, 7, 3                          # 3 bits: distances 0..3, heavy ties
    qa = rng.integers(0, 2, (m, b)).astype(np.uint8)
    da = rng.integers(0, 2, (n, b)).astype(np.uint8)
    ql = rng.integers(0, C, m)
    dl = rng.integers(0, C, n)
    dist = unpacked_hamming(qa, da)
    rel = (ql[:, None] == dl[None, :]).astype(int)
    qp, dp = pack_codes(qa), pack_codes(da)
    for k in (None, 1, 3, 5, 7):
        for ties in ("mean", "index"):
            got = average_precisions(qp, dp, ql, dl, k=k, ties=ties, n_bits=b)
            ref = [brute_ap(dist[i].tolist(), rel[i].tolist(), k, ties) for i in range(m)]
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, equal_nan=True)
        got = average_precisions(qp, dp, ql, dl, k=k, ties="index", convention="deephash", n_bits=b)
        ref = [brute_ap(dist[i].tolist(), rel[i].tolist(), k, "index", "deephash") for i in range(m)]
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_tie_average_differs_from_index_order_when_it_should():
    # one query; database: two items at distance 0, the relevant one has the larger index
    q = pack_codes(np.array([[0, 0]]))
    d = pack_codes(np.array([[0, 0], [0, 0]]))
    ap_index = average_precisions(q, d, [1], [0, 1], ties="index")[0]
    ap_mean = average_precisions(q, d, [1], [0, 1], ties="mean")[0]
    assert ap_index == pytest.approx(0.5)
    assert ap_mean == pytest.approx(0.75)           # (1 + 1/2) / 2


def test_float_metrics_match_brute_force_including_ties():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(4, 5))
    db = base[rng.integers(0, 4, 8)]                 # duplicates: exact ties in any metric
    q = rng.normal(size=(4, 5))
    ql = rng.integers(0, 2, 4)
    dl = rng.integers(0, 2, 8)
    rel = (ql[:, None] == dl[None, :]).astype(int)
    for metric in ("cosine", "l2", "ip"):
        dist = H.embedding_distances(q, db, metric)
        # exact duplicates give bit-identical distances, which the brute force groups
        for k in (None, 3):
            for ties in ("mean", "index"):
                got = average_precisions(q, db, ql, dl, metric=metric, k=k, ties=ties)
                ref = [brute_ap(dist[i].tolist(), rel[i].tolist(), k, ties) for i in range(4)]
                np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_counting_path_equals_sorting_path():
    # squared L2 between 0/1 vectors is the Hamming distance: the float path (sort and
    # group) and the Hamming path (count per distance) must agree on larger random data.
    rng = np.random.default_rng(7)
    qa = rng.integers(0, 2, (30, 16)).astype(np.uint8)
    da = rng.integers(0, 2, (400, 16)).astype(np.uint8)
    ql, dl = rng.integers(0, 4, 30), rng.integers(0, 4, 400)
    for k in (None, 10, 100):
        a = average_precisions(pack_codes(qa), pack_codes(da), ql, dl, k=k, n_bits=16)
        b = average_precisions(qa.astype(float), da.astype(float), ql, dl, metric="l2", k=k)
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_multilabel_relevance_and_queries_without_relevant_items():
    qa = pack_codes(np.array([[1, 0], [0, 1], [1, 1]]))
    da = pack_codes(np.array([[1, 0], [0, 1], [1, 1], [0, 0]]))
    ql = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    dl = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    ap = average_precisions(qa, da, ql, dl)
    assert np.isnan(ap[2]) and not np.isnan(ap[:2]).any()          # class 2 has no database item
    assert mean_average_precision(qa, da, ql, dl) == pytest.approx(np.nanmean(ap))
    rep = retrieval_report(qa, da, ql, dl, ks=(2,))
    assert rep["n_queries_without_relevant"] == 1
    with pytest.raises(ValueError, match="no query has a relevant"):
        mean_average_precision(qa, da, [5, 5, 5], [0, 1, 2, 3])


def test_synthetic_database_items_are_left_out_and_counted():
    rng = np.random.default_rng(2)
    qa = rng.integers(0, 2, (6, 32)).astype(np.uint8)
    da = rng.integers(0, 2, (20, 32)).astype(np.uint8)
    ql, dl = rng.integers(0, 2, 6), rng.integers(0, 2, 20)
    syn = np.zeros(20, bool)
    syn[[1, 4, 9]] = True
    qp, dp = pack_codes(qa), pack_codes(da)
    got = mean_average_precision(qp, dp, ql, dl, database_synthetic=syn)
    assert got == pytest.approx(mean_average_precision(qp, dp[~syn], ql, dl[~syn]))
    assert mean_average_precision(qp, dp, ql, dl, database_synthetic=syn, include_synthetic=True) == \
        pytest.approx(mean_average_precision(qp, dp, ql, dl))
    rep = retrieval_report(qp, dp, ql, dl, database_synthetic=syn, ks=(5,))
    assert rep["n_synthetic_excluded"] == 3 and rep["n_database"] == 17
    assert set(rep) >= {"map", "map@5", "map@5_deephash"}
    with pytest.raises(ValueError, match="database_synthetic"):
        mean_average_precision(qp, dp, ql, dl, database_synthetic=np.ones(3, bool))


def test_map_argument_errors_name_the_argument():
    p = pack_codes(np.eye(4))
    with pytest.raises(ValueError, match="metric"):
        average_precisions(p, p, [0, 1, 2, 3], [0, 1, 2, 3], metric="jaccard")
    with pytest.raises(ValueError, match="ties"):
        average_precisions(p, p, [0, 1, 2, 3], [0, 1, 2, 3], ties="random")
    with pytest.raises(ValueError, match="ties='index'"):
        average_precisions(p, p, [0, 1, 2, 3], [0, 1, 2, 3], convention="deephash")
    with pytest.raises(ValueError, match="query_labels"):
        average_precisions(p, p, [0, 1], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="zero norm"):
        average_precisions(np.zeros((1, 3)), np.ones((2, 3)), [0], [0, 0], metric="cosine")
    with pytest.raises(ValueError, match="k must"):
        average_precisions(p, p, [0, 1, 2, 3], [0, 1, 2, 3], k=0)


# ------------------------------------------------------------------ the torch head
@pytest.fixture(scope="module")
def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)


def test_head_learns_digits_codes_deterministically(digits_split, tmp_path):
    torch = pytest.importorskip("torch")
    x_db, x_q, y_db, y_q = digits_split
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    kw = dict(epochs=12, seed=3, threads=1, progress=False)
    m1 = H.train_hash_head(x_db, y_db, 32, **kw)
    m2 = H.train_hash_head(x_db, y_db, 32, **kw)
    assert torch.equal(torch.get_rng_state(), rng_before)              # global RNG untouched
    assert torch.get_num_threads() == threads_before
    q, d = m1.encode(x_q), m1.encode(x_db)
    assert q.dtype == np.uint8 and q.shape == (len(y_q), 4)
    np.testing.assert_array_equal(d, m2.encode(x_db))
    np.testing.assert_array_equal(unpack_codes(q, 32), (m1.encode(x_q, packed=False) > 0).astype(np.uint8))
    trained = mean_average_precision(q, d, y_q, y_db, n_bits=32)
    raw = mean_average_precision(x_q, x_db, y_q, y_db, metric="cosine")
    assert trained > 0.85 and trained > raw + 0.1                       # raw pixels: ~0.66
    assert (m1.predict(x_q) == y_q).mean() > 0.85
    assert m1.trained_on["n_synthetic"] == 0 and m1.trained_on["n_real"] == len(y_db)
    path = m1.save(tmp_path / "head.pt")
    m3 = H.HashModel.load(path)
    np.testing.assert_array_equal(m3.encode(x_q), q)
    assert m3.trained_on == m1.trained_on


def test_head_records_and_weights_synthetic_samples(digits_split):
    pytest.importorskip("torch")
    x_db, _, y_db, _ = digits_split
    x, y = x_db[:200], y_db[:200]
    syn = np.zeros(200, bool)
    syn[150:] = True
    m = H.train_hash_head(x, y, 64, synthetic=syn, synthetic_weight=0.5, epochs=1, threads=1, progress=False)
    assert m.trained_on["n_synthetic"] == 50 and m.trained_on["n_real"] == 150
    assert sum(m.trained_on["synthetic"]) == 50
    assert m.config["synthetic_weight"] == 0.5 and m.codes.shape == (10, 64)
    with pytest.raises(ValueError, match="synthetic must be a bool mask"):
        H.train_hash_head(x, y, 32, synthetic=syn[:10], epochs=1, progress=False)
    with pytest.raises(ValueError, match="labels must be classes >= 0"):
        H.train_hash_head(x, np.where(y == 0, -1, y), 32, epochs=1, progress=False)
    with pytest.raises(ValueError, match="lr must be"):
        H.train_hash_head(x, y, 32, lr=0.0, epochs=1, progress=False)
    with pytest.raises(ValueError, match="n_classes=5"):
        H.train_hash_head(x, y, 32, n_classes=5, epochs=1, progress=False)
