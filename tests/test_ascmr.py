"""ASCMR: informativeness terms, density-aware allocation (lam = 0 is top-n, lam > 0 spreads,
greedy objective is exact), the Strategy contract and bad input. Data here is *generated*."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from socbi._reference import ReferenceIndex
from socbi.ascmr import (ASCMR, cosine_disagreement, density_aware_select, informativeness,
                         knn_graph, mean_pairwise_distance, predictive_entropy,
                         prediction_disagreement, variance_uncertainty)
from socbi.knn import ExactPool
from socbi.strategies import PoolState


def generated_clusters(n, d=8, clusters=6, spread=0.3, seed=0):
    """*Generated* Gaussian blobs (not real data) and their cluster ids."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.normal(size=(clusters, d))
    lab = rng.integers(0, clusters, n)
    return (centres[lab] + spread * rng.normal(size=(n, d))).astype(np.float32), lab


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- terms
def test_informativeness_terms_on_hand_built_cases():
    uniform = np.full((1, 4), 0.25)
    onehot = np.eye(4)[[0]]
    assert predictive_entropy(uniform)[0] == pytest.approx(1.0)
    assert predictive_entropy(onehot)[0] == pytest.approx(0.0)
    assert prediction_disagreement([onehot, onehot])[0] == pytest.approx(0.0)
    assert prediction_disagreement([np.eye(4)[[0]], np.eye(4)[[1]]])[0] == pytest.approx(1.0)
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine_disagreement(a, b), [0.0, 0.5, 1.0], atol=1e-7)
    v = variance_uncertainty(np.array([0.0, 1.0, 2.0, 100.0]), quantile=0.5)
    np.testing.assert_allclose(v, [0.0, 2 / 3, 1.0, 1.0])

    inf = informativeness([uniform, onehot], w_intra=2.0, w_inter=3.0)
    assert inf.inter_kind == "prediction"
    np.testing.assert_allclose(inf.intra_by_modality, [[1.0, 0.0]], atol=1e-12)
    assert inf.intra[0] == pytest.approx(0.5)
    js = prediction_disagreement([uniform, onehot])[0]
    assert inf.total[0] == pytest.approx(2.0 * 0.5 + 3.0 * js)
    # cosine inter term for embeddings in one space; variance as a second intra source
    emb = informativeness([uniform, None], embeddings=(a[:1], b[1:2]), variances=[None, [1.0]])
    assert emb.inter_kind == "cosine" and emb.inter[0] == pytest.approx(0.5)
    np.testing.assert_allclose(emb.intra_by_modality, [[1.0, 1.0]])


def test_informativeness_errors_name_the_problem():
    p = softmax(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ValueError, match="w_inter > 0 but there is nothing to compare"):
        informativeness([p])
    assert informativeness([p], w_inter=0).inter.tolist() == [0.0] * 5
    with pytest.raises(ValueError, match=r"disagree on the number of items: \[4, 5\]"):
        informativeness([p, p[:4]])
    with pytest.raises(ValueError, match="look like logits"):
        informativeness([p * 5, p])
    with pytest.raises(ValueError, match="w_intra must be a finite number >= 0"):
        informativeness([p, p], w_intra=-1)
    with pytest.raises(ValueError, match="inter='cosine' needs embeddings"):
        informativeness([p, p], inter="cosine")
    with pytest.raises(ValueError, match="needs at least one input"):
        informativeness([])


# ----------------------------------------------------------------------------- allocation
def test_lam_zero_is_exactly_top_n_informativeness():
    x, _ = generated_clusters(400, seed=1)
    u = np.random.default_rng(2).random(400)
    for n in (1, 37, 400):
        sel = density_aware_select(u, x, n, lam=0.0, seed=5)
        assert sel.picks.tolist() == np.argsort(-u, kind="stable")[:n].tolist()
        assert sel.objective == pytest.approx(u[sel.picks].sum()) and sel.density == 0.0


def test_ties_are_broken_by_the_seed_not_by_position():
    x, _ = generated_clusters(50, seed=3)
    u = np.zeros(50)
    a = density_aware_select(u, x, 10, lam=0.0, seed=1).picks
    b = density_aware_select(u, x, 10, lam=0.0, seed=1).picks
    c = density_aware_select(u, x, 10, lam=0.0, seed=2).picks
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert a.tolist() != list(range(10)) and a.tolist() != list(range(49, 39, -1))


def test_lam_positive_spreads_the_selection_on_clustered_data():
    x, lab = generated_clusters(600, clusters=6, seed=4)
    u = 0.5 * np.random.default_rng(5).random(600)
    u[lab == 0] += 0.5                                   # one dense cluster is most informative
    dists = []
    for lam in (0.0, 0.2, 1.0):
        sel = density_aware_select(u, x, 30, lam=lam, k=10, seed=0)
        dists.append(mean_pairwise_distance(x[sel.picks], "l2"))
        if lam == 0.0:
            assert set(lab[sel.picks]) == {0}
        else:
            assert len(set(lab[sel.picks])) >= 3
    assert dists[0] < dists[1] <= dists[2] + 1e-9
    assert dists[1] > 2 * dists[0]


def test_greedy_marginals_and_objective_match_brute_force():
    x, _ = generated_clusters(60, seed=6, spread=1.0)
    u = np.random.default_rng(7).random(60)
    nbr, sim = knn_graph(x, 5, backend="exact")
    lam = 0.7
    sel = density_aware_select(u, x, 12, lam=lam, neighbours=(nbr, sim), seed=3)
    W = np.zeros((60, 60))
    for i, j in itertools.product(range(60), range(5)):
        if nbr[i, j] >= 0:
            W[i, nbr[i, j]] += sim[i, j]

    def F(S):
        S = list(S)
        return u[S].sum() - lam * W[np.ix_(S, S)].sum()

    chosen = []
    for t, p in enumerate(sel.picks):
        gains = np.array([F(chosen + [j]) - F(chosen) if j not in chosen else -np.inf for j in range(60)])
        assert sel.marginal[t] == pytest.approx(gains[p], abs=1e-9)
        assert gains[p] == pytest.approx(gains.max(), abs=1e-9)   # greedy takes the best
        chosen.append(int(p))
    assert sel.objective == pytest.approx(F(chosen), abs=1e-9)
    assert sel.density == pytest.approx(W[np.ix_(chosen, chosen)].sum(), abs=1e-9)


def test_knn_graph_exact_and_hnsw_agree_and_skip_self():
    x, _ = generated_clusters(300, seed=8)
    ne, se = knn_graph(x, 6, backend="exact")
    nh, sh = knn_graph(x, 6, backend="hnsw")
    assert (ne != np.arange(300)[:, None]).all() and (ne >= 0).all()
    assert np.mean([len(set(a) & set(b)) / 6 for a, b in zip(ne, nh)]) > 0.95
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(se[:, 0], np.maximum(0, (xn * xn[ne[:, 0]]).sum(1)), atol=1e-6)
    n2, _ = knn_graph(x[:3], 6, backend="exact")
    assert (n2[:, 2:] == -1).all() and (n2[:, :2] >= 0).all()


def test_reference_index_gives_the_same_picks():
    x, _ = generated_clusters(200, seed=9)
    u = np.random.default_rng(1).random(200)
    a = density_aware_select(u, x, 40, lam=0.5, seed=2)
    b = density_aware_select(u, x, 40, lam=0.5, seed=2, index_factory=ReferenceIndex)
    assert a.picks.tolist() == b.picks.tolist()


# ----------------------------------------------------------------------------- strategy
@pytest.fixture(scope="module")
def pool_world():
    x, lab = generated_clusters(500, seed=10)
    rng = np.random.default_rng(11)
    p_img = softmax(x @ rng.normal(size=(8, 4)))
    p_txt = softmax(x @ rng.normal(size=(8, 4)))
    labelled = np.zeros(500, bool)
    labelled[rng.choice(500, 25, replace=False)] = True
    return x, p_img, p_txt, labelled


def test_strategy_contract_and_determinism(pool_world):
    x, p_img, p_txt, labelled = pool_world
    st = PoolState(labelled=labelled, embeddings=x, probabilities=p_img)
    strat = ASCMR(lam=0.5, extra_probabilities=[p_txt])
    a = strat.select(st, 30, seed=4)
    assert a.size == 30 and np.unique(a).size == 30 and not labelled[a].any()
    assert a.tolist() == strat.select(st, 30, seed=4).tolist()
    # lam = 0: the strategy is top-n of its informativeness
    zero = ASCMR(lam=0.0, extra_probabilities=[p_txt])
    unl = np.flatnonzero(~labelled)
    u = zero.informativeness(st, unl).total
    assert zero.select(st, 30, seed=1).tolist() == unl[np.argsort(-u, kind="stable")[:30]].tolist()
    # a callable extra modality gives the same answer as the array
    calls = []

    def text_side(ids):
        calls.append(ids.size)
        return p_txt[ids]

    assert ASCMR(lam=0.5, extra_probabilities=[text_side]).select(st, 30, seed=4).tolist() == a.tolist()
    assert calls == [unl.size]


def test_strategy_uses_a_matching_cosine_pool(pool_world):
    x, p_img, p_txt, labelled = pool_world
    pool = ExactPool(8, 500, "cosine", progress=False)
    pool.add(np.arange(500), x)
    pool.mark_labelled(np.flatnonzero(labelled))
    with_pool = PoolState(labelled=labelled, embeddings=x, probabilities=p_img, pool=pool)
    without = PoolState(labelled=labelled, embeddings=x, probabilities=p_img)
    s = ASCMR(lam=0.8, extra_probabilities=[p_txt], backend="exact")
    assert s.select(with_pool, 25, seed=0).tolist() == s.select(without, 25, seed=0).tolist()


def test_strategy_with_second_embeddings_and_model(pool_world):
    x, p_img, _, labelled = pool_world
    rng = np.random.default_rng(12)
    text = x + 0.5 * rng.normal(size=x.shape).astype(np.float32)   # the pair's other side

    class Model:
        def predict_proba(self, xb):
            return softmax(np.asarray(xb) @ np.ones((8, 3)) * 0.1)

    st = PoolState(labelled=labelled, embeddings=x, model=Model())
    ids = ASCMR(lam=0.3, second_embeddings=text).select(st, 10, seed=0)
    assert ids.size == 10 and not labelled[ids].any()
    # single-view data with the defaults: falls back to the intra term and says so (was a
    # ValueError "nothing to compare across modalities", issue 15)
    single = ASCMR(lam=0.3)
    with pytest.warns(UserWarning, match="single-view data"):
        got = single.select(st, 10, seed=0)
    assert single.single_view
    np.testing.assert_array_equal(got, ASCMR(lam=0.3, w_inter=0.0).select(st, 10, seed=0))
    only_density = PoolState(labelled=labelled, embeddings=x)
    with pytest.raises(ValueError, match="ASCMR has nothing to measure informativeness with"):
        ASCMR(w_inter=0.0).select(only_density, 5)
    with pytest.raises(ValueError, match="no modality has probabilities or variances"):
        informativeness([None, None], embeddings=(x, text))


@pytest.mark.parametrize("kwargs, match", [
    (dict(lam=-1), "lam must be a finite number >= 0"),
    (dict(lam=float("inf")), "lam must be a finite number >= 0"),
    (dict(k=0), "k must be a positive integer"),
    (dict(w_inter=-0.5), "w_inter must be a finite number >= 0"),
    (dict(inter="kl"), "inter must be"),
    (dict(backend="faiss"), "backend must be"),
    (dict(extra_probabilities=[np.ones(3)]), r"extra_probabilities\[0\] must be an \(n_samples, C\) array"),
])
def test_strategy_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ASCMR(**kwargs)


def test_select_bad_input():
    x, _ = generated_clusters(20, seed=13)
    u = np.ones(20)
    with pytest.raises(ValueError, match=r"n must be an integer in \[0, 20\]"):
        density_aware_select(u, x, 21)
    with pytest.raises(ValueError, match="values must be a finite 1-D array"):
        density_aware_select(np.array([np.nan] * 20), x, 2)
    with pytest.raises(ValueError, match="embeddings has 19 rows but 20 ids"):
        density_aware_select(u, x[:19], 2, lam=0.5)
    with pytest.raises(ValueError, match="neighbours hold row numbers outside"):
        density_aware_select(u, None, 2, lam=0.5, neighbours=(np.full((20, 2), 25), np.ones((20, 2))))
    x0 = x.copy()
    x0[3] = 0
    with pytest.raises(ValueError, match=r"rows \[3\] have zero norm"):
        knn_graph(x0, 3)
    with pytest.raises(ValueError, match="mean_pairwise_distance|metric must be"):
        mean_pairwise_distance(x, "hamming")
    assert density_aware_select(u, x, 0, lam=1.0).picks.size == 0
