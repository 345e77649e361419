"""Selection strategies: contract (n distinct unlabelled ids, seeded), hand-built cases, inputs, errors."""
from __future__ import annotations

import numpy as np
import pytest

from socbi._reference import ReferenceIndex
from socbi.knn import ExactPool
from socbi.scoring import BoundaryScorer
from socbi.strategies import (SEALS, KCenterGreedy, LeastConfidence, MarginSampling, PoolState,
                              SoCBIPrefilter, EntropySampling, make_strategy, select)


def _index():
    try:
        from socbi import SemiOrderedIndex
        return SemiOrderedIndex
    except ImportError:
        return ReferenceIndex


INDEX = _index()
NAMES = ["random", "least_confidence", "margin", "entropy", "kcenter", "socbi", "lc_socbi",
         "kcenter_socbi", "seals"]


def generated_clusters(n, d=8, clusters=6, spread=0.6, seed=0):
    """A *generated* clustered pool (Gaussian blobs), not real data."""
    rng = np.random.default_rng(seed)
    centres = 3 * rng.normal(size=(clusters, d))
    return (centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def world():
    x = generated_clusters(600, seed=1)
    w = np.random.default_rng(2).normal(size=(8, 4))
    probs = softmax(x.astype(np.float64) @ w)
    lab = np.random.default_rng(3).choice(600, 12, replace=False)
    scorer = BoundaryScorer(x, 10, labelled=lab, backend="exact", index_factory=INDEX, progress=False)
    return x, probs, scorer


def state_of(world, **kw):
    x, probs, scorer = world
    kw.setdefault("probabilities", probs)
    return PoolState.from_scorer(scorer, **kw)


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_returns_n_distinct_unlabelled_ids_deterministically(world, name):
    st = state_of(world)
    strat = make_strategy(name)
    a = strat.select(st, 25, seed=4)
    b = make_strategy(name).select(st, 25, seed=4)
    assert a.dtype == np.int64 and a.shape == (25,)
    assert np.unique(a).size == 25
    assert not st.labelled[a].any()
    np.testing.assert_array_equal(a, b)
    assert make_strategy(name).select(st, 0).size == 0
    everything = strat.select(st, int((~st.labelled).sum()), seed=4)   # the whole pool
    np.testing.assert_array_equal(np.sort(everything), st.unlabelled_ids())


def test_random_depends_on_the_seed_and_names_resolve(world):
    st = state_of(world)
    assert not np.array_equal(select("random", st, 25, seed=1), select("random", st, 25, seed=2))
    for alias, cls in [("LC", LeastConfidence), ("LC-So-CBI", SoCBIPrefilter),
                       ("KCenter-So-CBI", SoCBIPrefilter), ("k-center", KCenterGreedy),
                       ("Entropy", EntropySampling), ("SEALS", SEALS)]:
        assert isinstance(make_strategy(alias), cls)
    assert isinstance(make_strategy("KCenter-So-CBI").base, KCenterGreedy)
    with pytest.raises(ValueError, match="unknown strategy 'badge'"):
        make_strategy("badge")


# ----------------------------------------------------------------------------- hand-built cases
def test_uncertainty_strategies_pick_the_obvious_sample():
    probs = np.array([
        [0.90, 0.05, 0.05],    # 0 confident
        [0.34, 0.33, 0.33],    # 1 least confident, highest entropy
        [0.45, 0.445, 0.105],  # 2 smallest margin
        [0.60, 0.20, 0.20],    # 3
        [0.99, 0.01, 0.00],    # 4 labelled: must never come back
    ])
    st = PoolState(labelled=np.array([0, 0, 0, 0, 1], bool), probabilities=probs)
    np.testing.assert_array_equal(LeastConfidence().select(st, 4), [1, 2, 3, 0])
    np.testing.assert_array_equal(MarginSampling().select(st, 4), [2, 1, 3, 0])
    np.testing.assert_array_equal(EntropySampling().select(st, 2), [1, 2])


def test_uncertainty_ties_follow_the_seed():
    st = PoolState(labelled=np.zeros(200, bool), probabilities=np.full((200, 2), 0.5))
    a = LeastConfidence().select(st, 10, seed=1)
    assert np.array_equal(a, LeastConfidence().select(st, 10, seed=1))
    assert not np.array_equal(a, LeastConfidence().select(st, 10, seed=2))
    assert not np.array_equal(np.sort(a), np.arange(10))          # not silently by id


def test_kcenter_picks_the_farthest_point_first():
    pts = np.array([[0, 0], [1, 0], [2, 0], [10, 0], [0, 9], [9.5, 0.5]], np.float32)
    # labelled: the origin. Farthest is (10,0); then (0,9) (9 from the origin, 13.5 from (10,0));
    # then (2,0) (2 from the origin); (9.5,0.5) is close to (10,0) and comes last.
    st = PoolState(labelled=np.array([1, 0, 0, 0, 0, 0], bool), embeddings=pts)
    np.testing.assert_array_equal(KCenterGreedy().select(st, 4), [3, 4, 2, 1])


def test_kcenter_without_labels_starts_at_a_seeded_random_point_then_goes_far():
    pts = np.array([[0, 0], [1, 0], [100, 0], [0.5, 0.5]], np.float32)
    st = PoolState(labelled=np.zeros(4, bool), embeddings=pts)
    firsts = {int(KCenterGreedy().select(st, 1, seed=s)[0]) for s in range(20)}
    assert len(firsts) > 1
    two = KCenterGreedy().select(st, 2, seed=0)
    assert 2 in two.tolist()                                       # the outlier is always taken


def test_kcenter_cache_follows_rounds_and_matches_a_fresh_computation():
    x = generated_clusters(800, seed=5)
    lab = np.zeros(800, bool)
    lab[:5] = True
    cached = KCenterGreedy()
    for _ in range(4):
        st = PoolState(labelled=lab, embeddings=x)
        ids = cached.select(st, 30)
        np.testing.assert_array_equal(ids, KCenterGreedy().select(st, 30))
        lab = lab.copy()
        lab[ids] = True
    # a labelled set that shrank must not reuse the cache
    lab2 = lab.copy()
    lab2[:5] = False
    st = PoolState(labelled=lab2, embeddings=x)
    np.testing.assert_array_equal(cached.select(st, 10), KCenterGreedy().select(st, 10))
    np.testing.assert_array_equal(KCenterGreedy("cosine").select(st, 5, seed=1),
                                  KCenterGreedy("cosine").select(st, 5, seed=1))


def test_lc_socbi_is_lc_inside_the_smallest_count_candidates(world):
    x, probs, scorer = world
    st = state_of(world)
    n = 20
    strat = make_strategy("lc_socbi")                 # default: 3n candidates
    cand = strat.candidates(st, n)
    assert cand.size == 60
    counts = scorer.counts(cand)
    outside = np.setdiff1d(st.unlabelled_ids(), cand)
    assert counts.max() <= scorer.counts(outside).min()           # C is the low-count end
    picked = strat.select(st, n, seed=0)
    assert set(picked.tolist()) <= set(cand.tolist())
    lc = 1 - probs[cand].max(axis=1)
    np.testing.assert_array_equal(picked, cand[np.argsort(-lc, kind="stable")[:n]])
    # candidate_size = n: the n smallest counts, the tie at the cut broken by LC (issue 15:
    # was the scorer's fixed permutation, so most of each round's candidates were last
    # round's rejects)
    same = SoCBIPrefilter(LeastConfidence(), candidate_size=n).select(st, n)
    unl = st.unlabelled_ids()
    cu = scorer.counts(unl)
    cut = np.sort(cu)[n - 1]
    below = unl[cu < cut]
    tied = unl[cu == cut]
    assert tied.size > n - below.size                              # the case this covers
    lc_tied = 1 - probs[tied].max(axis=1)
    want = np.concatenate([below, tied[np.argsort(-lc_tied, kind="stable")[:n - below.size]]])
    np.testing.assert_array_equal(np.sort(same), np.sort(want))
    # the opposite end is a flag away
    hi = SoCBIPrefilter(LeastConfidence(), largest=True).candidates(st, n)
    assert scorer.counts(hi).min() >= scorer.counts(cand).max()


def test_kcenter_socbi_runs_farthest_first_inside_the_candidates(world):
    x, probs, scorer = world
    st = state_of(world)
    strat = make_strategy("kcenter_socbi", candidate_factor=4)
    cand = strat.candidates(st, 10)
    assert cand.size == 40
    picked = strat.select(st, 10)
    assert set(picked.tolist()) <= set(cand.tolist())
    lab = st.labelled_ids()
    d2 = ((x[cand][:, None, :].astype(np.float64) - x[lab][None, :, :]) ** 2).sum(-1).min(axis=1)
    assert picked[0] == cand[np.argmax(d2)]


def test_seals_restricts_to_the_labelled_neighbourhoods(world):
    x, probs, scorer = world
    st = state_of(world)
    seals = SEALS()
    cand = seals.candidates(st)
    lists = scorer.neighbours(st.labelled_ids())
    np.testing.assert_array_equal(cand, np.unique(lists))
    np.testing.assert_array_equal(cand, st.unlabelled_ids()[scorer.counts() > 0])
    picked = seals.select(st, 20)
    assert set(picked.tolist()) <= set(cand.tolist())
    # the pool path (no scorer) finds the same candidate set
    pool = ExactPool(8, 600, progress=False)
    unl = st.unlabelled_ids()
    pool.add(unl, x[unl])
    pool.mark_labelled([])
    st_pool = PoolState(labelled=st.labelled, embeddings=x, probabilities=probs, pool=pool)
    np.testing.assert_array_equal(SEALS(k=10).candidates(st_pool), cand)
    # fewer candidates than n: all candidates first, then the base strategy on the rest
    big = seals.select(st, cand.size + 15)
    assert set(big[:cand.size].tolist()) == set(cand.tolist())


# ----------------------------------------------------------------------------- model inputs
def test_probabilities_from_sklearn_and_torch_models_match_arrays(world):
    x, probs, scorer = world
    from sklearn.linear_model import LogisticRegression
    lab = scorer.labelled_ids()
    y = np.arange(lab.size) % 3
    clf = LogisticRegression(max_iter=500).fit(x[lab], y)
    by_model = select("lc", state_of(world, probabilities=None, model=clf), 15, seed=3)
    by_array = select("lc", state_of(world, probabilities=clf.predict_proba(x)), 15, seed=3)
    np.testing.assert_array_equal(by_model, by_array)

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)).eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).double().numpy()
    for name in ("margin", "entropy", "lc_socbi", "margin_div", "margin_div_cover"):
        a = select(name, state_of(world, probabilities=None, model=net), 15, seed=3)
        b = select(name, state_of(world, probabilities=softmax(logits)), 15, seed=3)
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- errors
def test_bad_input_gives_clear_errors(world):
    x, probs, scorer = world
    st = state_of(world)
    n_unl = int((~st.labelled).sum())
    with pytest.raises(ValueError, match=f"n={n_unl + 1} exceeds the {n_unl} unlabelled"):
        select("random", st, n_unl + 1)
    with pytest.raises(ValueError, match="non-negative integer"):
        select("random", st, -1)
    full = PoolState(labelled=np.ones(10, bool), probabilities=np.full((10, 2), 0.5))
    with pytest.raises(ValueError, match="pool is empty"):
        select("lc", full, 1)
    # probabilities are checked in the pass that reads them (issue 15), so select raises,
    # for the fused pass and for the numpy path alike
    for name in ("lc", "margin", "entropy"):
        with pytest.raises(ValueError, match="look like logits"):
            select(name, PoolState(labelled=np.zeros(3, bool),
                                   probabilities=np.array([[2.0, -1], [0, 1], [1, 0]])), 1)
        with pytest.raises(ValueError, match=r"rows \[1\] sum to"):
            select(name, PoolState(labelled=np.zeros(2, bool),
                                   probabilities=np.array([[0.5, 0.5], [0.5, 0.4]])), 1)
        with pytest.raises(ValueError, match=r"NaN or infinite values in rows \[2\]"):
            select(name, PoolState(labelled=np.zeros(3, bool),
                                   probabilities=np.array([[0.5, 0.5], [0.5, 0.5], [np.inf, 0]])), 1)
    with pytest.raises(ValueError, match=r"rows \[7\] sum to"):   # numpy path names the sample id
        PoolState(labelled=np.zeros(9, bool), probabilities=np.r_[np.full((7, 2), 0.5), [[0.5, 0.4]],
                                                                  [[0.5, 0.5]]]).predict_proba(np.array([3, 7]))
    with pytest.raises(ValueError, match="probabilities has 5 rows but the state has 600"):
        state_of(world, probabilities=probs[:5])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*rows \[3\]"):
        PoolState(labelled=np.zeros(600, bool), embeddings=bad)
    with pytest.raises(ValueError, match="scorer and labelled disagree"):
        state_of(world, labelled=np.zeros(600, bool))
    with pytest.raises(ValueError, match="needs PoolState.scorer"):
        select("lc_socbi", PoolState(labelled=np.zeros(600, bool), probabilities=probs), 5)
    with pytest.raises(ValueError, match="needs class probabilities"):
        select("margin", state_of(world, probabilities=None), 5)
    with pytest.raises(ValueError, match="needs PoolState.embeddings"):
        select("kcenter", PoolState(labelled=np.zeros(600, bool), probabilities=probs), 5)
    with pytest.raises(ValueError, match="candidate_factor"):
        SoCBIPrefilter(LeastConfidence(), candidate_factor=0.5)
    # nothing was changed by any of this
    assert scorer.labelled_mask.sum() == 12
    scorer.check()


# ----------------------------------------------------------------------------- fused selection (issue 15)
def _reference_top(p, lab, n, measure):
    """Plain numpy: the unlabelled ids by uncertainty, most uncertain first, as scores."""
    s = MarginSampling().uncertainty(p) if measure == "margin" else \
        LeastConfidence().uncertainty(p) if measure == "least_confidence" else EntropySampling().uncertainty(p)
    s = np.where(lab, -np.inf, s)
    return np.sort(s)[::-1][:n]


@pytest.mark.parametrize("measure", ["least_confidence", "margin", "entropy"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_selection_matches_numpy(measure, dtype):
    rng = np.random.default_rng(5)
    z = rng.normal(scale=3.0, size=(3000, 7))
    p = softmax(z).astype(dtype)
    lab = rng.random(3000) < 0.1
    st = PoolState(labelled=lab, probabilities=p)
    got = make_strategy(measure).select(st, 100, seed=2)
    assert not lab[got].any() and np.unique(got).size == 100
    p64 = p.astype(np.float64)
    want = _reference_top(p64, lab, 100, measure)
    mine = make_strategy(measure).uncertainty(p64[got])
    np.testing.assert_allclose(mine, want, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(mine) <= 1e-12)                          # best first
    # over a candidate subset (the composite strategies' path) and from a model: same rule
    cand = np.flatnonzero(~lab)[::3]
    sub = make_strategy(measure)._select_among(st, cand, 20, np.random.default_rng(0))
    np.testing.assert_allclose(make_strategy(measure).uncertainty(p64[sub]),
                               np.sort(make_strategy(measure).uncertainty(p64[cand]))[::-1][:20], rtol=1e-9)


def test_fused_selection_breaks_ties_only_at_the_cut_and_by_seed():
    # 50 rows strictly more uncertain than the rest, 500 tied at the cut, the rest below
    p = np.tile([0.9, 0.1], (2000, 1))
    p[:50] = [0.5, 0.5]
    p[50:550] = [0.7, 0.3]
    rng = np.random.default_rng(1)
    perm = rng.permutation(2000)                                   # ids not in score order
    p = p[perm]
    top = np.flatnonzero(np.isin(perm, np.arange(50)))
    tied = np.flatnonzero(np.isin(perm, np.arange(50, 550)))
    st = PoolState(labelled=np.zeros(2000, bool), probabilities=p)
    for name in ("least_confidence", "margin", "entropy"):
        a = make_strategy(name).select(st, 80, seed=3)
        assert set(a[:50].tolist()) == set(top.tolist())            # all strictly better ones first
        assert set(a[50:].tolist()) <= set(tied.tolist())           # the rest from the tie only
        assert np.array_equal(a, make_strategy(name).select(st, 80, seed=3))
        assert not np.array_equal(a[50:], make_strategy(name).select(st, 80, seed=4)[50:])


def test_fused_selection_threads_give_the_same_answer():
    rng = np.random.default_rng(7)
    p = softmax(rng.normal(size=(70000, 5)))
    p[::7] = p[3]                                                 # plenty of exact ties
    lab = rng.random(70000) < 0.05
    st = PoolState(labelled=lab, probabilities=p)
    for name in ("least_confidence", "margin", "entropy"):
        one = make_strategy(name).select(st, 500, seed=1)
        two = make_strategy(name, threads=2).select(st, 500, seed=1)
        np.testing.assert_array_equal(one, two)


def test_fused_selection_of_zero_rows_is_empty():
    # n = 0 read the front of an empty heap (a crash); it must return no ids
    from socbi import _core
    p = softmax(np.random.default_rng(0).normal(size=(100, 3)))
    for measure in (0, 1, 2):
        ids, scores, kind, _, _ = _core.select_uncertain(p, measure, 0)
        assert kind == 0 and ids.size == 0 and scores.size == 0


def test_margin_div_takes_no_two_picks_from_one_neighbourhood(world):
    x, probs, scorer = world
    st = state_of(world)
    picks = make_strategy("margin_div").select(st, 15, seed=0)
    assert not st.labelled[picks].any() and np.unique(picks).size == 15
    nbr, _ = scorer.pool.query(x[picks], scorer.k + 1)
    for i, row in enumerate(nbr):
        others = set(picks.tolist()) - {int(picks[i])}
        assert others.isdisjoint(row.tolist())
    # the most uncertain sample always leads
    assert picks[0] == MarginSampling().select(st, 1, seed=0)[0]
    # asking for more than the neighbourhoods allow still fills the batch
    big = make_strategy("margin_div").select(st, 400, seed=0)
    assert np.unique(big).size == 400 and not st.labelled[big].any()


def test_margin_div_cover_is_the_default_of_the_session_and_the_cli():
    import inspect

    from socbi.session import ActiveLearner
    from socbi.strategies import DEFAULT_STRATEGY
    assert DEFAULT_STRATEGY == "margin_div_cover"
    assert inspect.signature(ActiveLearner).parameters["strategy"].default == "margin_div_cover"
    from socbi.cli import build_parser
    args = build_parser().parse_args(["select", "--embeddings", "x.npy", "--labels", "y.npy", "--n", "3"])
    assert args.strategy == "margin_div_cover"
    from socbi.experiment import DEFAULT_STRATEGIES
    assert "margin_div_cover" in DEFAULT_STRATEGIES


def test_margin_div_cover_spends_the_uncovered_share_on_uncovered_samples(world):
    x, probs, scorer = world
    st = state_of(world)
    unl = st.unlabelled_ids()
    share = np.mean(scorer.counts(unl) == 0)
    assert 0.2 < share < 1.0                                       # the case this covers
    n = 20
    picks = make_strategy("margin_div_cover").select(st, n, seed=0)
    quota = int(round(n * share))
    counts = scorer.counts(picks)
    assert (counts[:quota] == 0).all()                             # exploration slots first
    # they are the uncovered samples in margin order, no two from one neighbourhood
    div = make_strategy("margin_div")
    first = div._select_among(st, unl[scorer.counts(unl) == 0], quota, np.random.default_rng(0))
    assert np.unique(picks).size == n and not st.labelled[picks].any()
    np.testing.assert_array_equal(picks[:quota], first)
    nbr, _ = scorer.pool.query(x[picks], scorer.k + 1)
    for i, row in enumerate(nbr):
        assert (set(picks.tolist()) - {int(picks[i])}).isdisjoint(row.tolist())


# ----------------------------------------------------------------------------- bench scripts stay runnable
def _bench_module(name):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_selection_bench_scripts_run_tiny(tmp_path, capsys):
    sel = _bench_module("bench_selection")
    out = tmp_path / "sel.json"
    assert sel.main(["--sizes", "3000", "--n", "20", "--reps", "1", "--json", str(out)]) == 0
    import json
    rows = json.loads(out.read_text())
    assert {r["measure"] for r in rows} == {"margin", "least_confidence", "entropy"}
    assert all(r["numpy_ms"] > 0 and r["socbi_ms"] > 0 for r in rows)
    q = _bench_module("quality_selection")
    jl = tmp_path / "q.jsonl"
    assert q.main(["--seeds", "1", "--pools", "wine", "--strategies", "margin,margin_div_cover",
                   "--out", str(jl)]) == 0
    assert len(jl.read_text().splitlines()) == 2
    assert q.main(["--seeds", "1", "--pools", "wine", "--strategies", "margin", "--out", str(jl)]) == 0
    assert len(jl.read_text().splitlines()) == 2                  # resumable: nothing re-run
    capsys.readouterr()
    assert q.main(["--report", "--out", str(jl)]) == 0
    assert "margin_div_cover" in capsys.readouterr().out
    assert q.sign_test(10, 0) < 0.01 and q.sign_test(3, 3) == 1.0
