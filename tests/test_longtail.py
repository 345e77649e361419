"""Long-tail construction, class-balanced quotas/selection, synthetic marking, exports, experiment."""
import csv
import json
import math

import numpy as np
import pytest

from socbi import longtail as LT
from socbi.longtail import (AugmentedSet, ClassBalancedSelection, GaussianClassGenerator, MixupClassGenerator,
                            annotate_batch_file, balance_report, balanced_quotas, class_counts,
                            export_training_set, fill_with_synthetic, make_longtail)
from socbi.strategies import PoolState, make_strategy


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


# ------------------------------------------------------------------ long-tail construction
@pytest.mark.parametrize("ratio", [1.0, 2.5, 10.0, 48.0, 100.0])
def test_longtail_gives_the_stated_ratio_with_exponential_decay(digits, ratio):
    _, y = digits
    lt = make_longtail(y, imbalance_ratio=ratio, seed=4)
    head = int(np.bincount(y).min())                       # default head_count
    kept = np.bincount(y[lt.indices], minlength=10)
    np.testing.assert_array_equal(kept, lt.counts)
    by_rank = [int(kept[c]) for c in lt.order]
    assert by_rank[0] == head and by_rank[-1] == round(head / ratio)
    assert lt.achieved_ratio == pytest.approx(head / round(head / ratio))
    assert abs(head / lt.achieved_ratio - head / ratio) <= 0.5       # only rounding between them
    for r, n in enumerate(by_rank):
        assert n == round(head * ratio ** (-r / 9))
    assert by_rank == sorted(by_rank, reverse=True)
    assert np.unique(lt.indices).size == lt.indices.size and (np.diff(lt.indices) > 0).all()
    assert "head/tail" in lt.report() and lt.as_dict()["n"] == lt.indices.size


def test_longtail_is_seeded_and_orders_work(digits):
    _, y = digits
    a = make_longtail(y, imbalance_ratio=10, seed=1)
    np.testing.assert_array_equal(a.indices, make_longtail(y, imbalance_ratio=10, seed=1).indices)
    assert not np.array_equal(a.indices, make_longtail(y, imbalance_ratio=10, seed=2).indices)
    assert make_longtail(y, imbalance_ratio=10, order="index").order.tolist() == list(range(10))
    explicit = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    lt = make_longtail(y, imbalance_ratio=10, order=explicit, head_count=100)
    assert lt.counts[9] == 100 and lt.counts[0] == 10
    size = make_longtail(y, imbalance_ratio=5, order="size", head_count=180)
    assert size.order[0] == int(np.argmax(np.bincount(y)))


def test_longtail_errors_name_the_problem(digits):
    _, y = digits
    with pytest.raises(ValueError, match="exactly one"):
        make_longtail(y)
    with pytest.raises(ValueError, match="exactly one"):
        make_longtail(y, imbalance_ratio=2, factor=0.5)
    with pytest.raises(ValueError, match="below min_count"):
        make_longtail(y, imbalance_ratio=500)
    with pytest.raises(ValueError, match="has only"):
        make_longtail(y, imbalance_ratio=2, head_count=300)
    with pytest.raises(ValueError, match="imbalance_ratio must"):
        make_longtail(y, imbalance_ratio=0.5)
    with pytest.raises(ValueError, match="factor must"):
        make_longtail(y, factor=1.5)
    with pytest.raises(ValueError, match="every class exactly once"):
        make_longtail(y, imbalance_ratio=2, order=[0, 1, 2])
    with pytest.raises(ValueError, match="unlabelled"):
        make_longtail(np.array([0, 1, -1]), factor=0.5)


def test_factor_mode_is_the_socbi_if_reduction_of_the_experiment_runner(digits):
    from sklearn.model_selection import train_test_split
    from socbi.experiment import ExperimentConfig, prepare_split

    x, y = digits
    cfg = ExperimentConfig(dataset="digits")
    for imb, seed in ((0.1, 0), (0.3, 3)):
        sp = prepare_split(x, y, cfg, imb, seed)
        _, _, _, y_pool = None, None, None, train_test_split(x, y, test_size=cfg.test_fraction, stratify=y,
                                                              random_state=seed)[2]
        lt = make_longtail(y_pool, factor=imb, seed=seed, min_count=cfg.init_per_class + 1)
        np.testing.assert_array_equal(y_pool[lt.indices], sp.y_pool)
        assert lt.minority == sp.minority
        full = np.bincount(y_pool, minlength=10)
        for c in range(10):
            want = max(cfg.init_per_class + 1, math.ceil(imb * full[c])) if c in lt.minority else full[c]
            assert lt.counts[c] == want


# ------------------------------------------------------------------ quotas and selection
def test_quotas_reach_equal_counts_when_the_budget_allows():
    rng = np.random.default_rng(0)
    for _ in range(200):
        C = int(rng.integers(1, 12))
        cur = rng.integers(0, 30, C)
        level = int(cur.max() + rng.integers(0, 10))
        n = int((level - cur).sum())
        avail = (level - cur) + rng.integers(0, 5, C)        # enough candidates everywhere
        q = balanced_quotas(cur, avail, n, seed=int(rng.integers(100)))
        assert (cur + q == level).all()
        # a smaller budget: never two classes further apart than 1 unless one was above already
        n2 = int(rng.integers(0, n + 1))
        q2 = balanced_quotas(cur, avail, n2, seed=1)
        assert q2.sum() == n2 and (q2 <= avail).all()
        got = cur + q2
        filled = q2 > 0
        if filled.any():
            assert got[filled].max() - got.min() <= 1


def test_quotas_respect_caps_and_reject_impossible_budgets():
    q = balanced_quotas([0, 0, 0], [1, 10, 10], 9, seed=0)
    assert q.tolist()[0] == 1 and sorted(q.tolist()[1:]) == [4, 4]
    assert balanced_quotas([5, 0], [10, 10], 3).tolist() == [0, 3]
    with pytest.raises(ValueError, match="n=22 exceeds"):
        balanced_quotas([0, 0], [10, 11], 22)
    with pytest.raises(ValueError, match="one length"):
        balanced_quotas([0, 0], [1], 1)


def _skewed_pool(seed=0, counts=(200, 80, 30, 12)):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    x = rng.normal(size=(y.size, 4)) + y[:, None] * 3.0
    return x.astype(np.float32), y


def test_class_balanced_selection_with_known_classes_equalises_the_labelled_set():
    x, y = _skewed_pool()
    labels = np.full(y.size, -1)
    init = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(4)])
    labels[init] = y[init]
    oracle = y.copy()
    strat = ClassBalancedSelection(make_strategy("random"), labels=lambda: labels, predicted=oracle)
    state = PoolState(labelled=labels >= 0, embeddings=x)
    ids = strat.select(state, 40, seed=0)
    assert ids.size == 40 and (labels[ids] < 0).all()
    assert np.bincount(y[ids], minlength=4).tolist() == [10, 10, 10, 10]
    # every prefix of the batch is balanced too (classes interleaved)
    assert np.bincount(y[ids[:8]], minlength=4).tolist() == [2, 2, 2, 2]
    assert strat.last_quotas.tolist() == [10, 10, 10, 10]
    # a budget larger than the tail can supply: classes 3 (12) and 2 (30) exhausted,
    # the other 86 labels evened out over classes 0 and 1
    ids = strat.select(state, 120, seed=1)
    got = np.bincount(y[ids], minlength=4) + 2
    assert got.tolist() == [43, 43, 30, 12]
    # plain random on the same pool is far from balanced
    rnd = make_strategy("random").select(state, 40, seed=0)
    assert np.bincount(y[rnd], minlength=4)[0] > 15


def test_class_balanced_selection_predicts_classes_and_validates():
    from sklearn.linear_model import LogisticRegression

    x, y = _skewed_pool(1)
    labels = np.full(y.size, -1)
    init = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(4)])
    labels[init] = y[init]
    clf = LogisticRegression(max_iter=500).fit(x[init], y[init])
    strat = ClassBalancedSelection(make_strategy("margin"), labels=labels)
    ids = strat.select(PoolState(labelled=labels >= 0, embeddings=x, model=clf, features=x), 24, seed=0)
    assert strat.last_quotas.tolist() == [6, 6, 6, 6]
    assert np.bincount(clf.predict(x[ids]), minlength=4).tolist() == [6, 6, 6, 6]   # by predicted class
    # margin picks boundary cases; with random inside classes the true classes even out too
    rnd = ClassBalancedSelection(labels=labels).select(
        PoolState(labelled=labels >= 0, embeddings=x, model=clf, features=x), 24, seed=0)
    assert np.bincount(y[rnd], minlength=4).min() >= 4
    # deterministic for a seed
    np.testing.assert_array_equal(
        ids, strat.select(PoolState(labelled=labels >= 0, embeddings=x, model=clf, features=x), 24, seed=0))
    with pytest.raises(ValueError, match="needs the classes"):
        strat.select(PoolState(labelled=labels >= 0, embeddings=x), 5)
    bad = labels.copy()
    bad[init[0]] = -1
    with pytest.raises(ValueError, match="have no class"):
        ClassBalancedSelection(labels=bad, predicted=y).select(PoolState(labelled=labels >= 0, embeddings=x), 5)
    with pytest.raises(ValueError, match="needs labels"):
        ClassBalancedSelection(predicted=y).select(PoolState(labelled=labels >= 0, embeddings=x), 5)
    with pytest.raises(ValueError, match="base must be"):
        ClassBalancedSelection(base=ClassBalancedSelection())


# ------------------------------------------------------------------ synthetic samples
def _const_generator(c, k, rng):
    return np.full((k, 4), 100.0 + c) + rng.normal(size=(k, 4)) * 0.01


def test_fill_marks_every_synthetic_sample_and_reaches_the_target():
    x, y = _skewed_pool(2)
    aug = fill_with_synthetic(x, y, _const_generator, seed=0, progress=False)
    total = np.bincount(aug.labels, minlength=4)
    assert total.tolist() == [200] * 4
    assert aug.n_real == y.size and aug.n_synthetic == 4 * 200 - y.size
    assert (aug.embeddings[aug.synthetic] >= 99).all()                # generated rows, all marked
    assert (aug.embeddings[~aug.synthetic] < 99).all()                # real rows, none marked
    np.testing.assert_array_equal(aug.origin[~aug.synthetic], np.arange(y.size))
    assert (aug.origin[aug.synthetic] == -1).all()
    np.testing.assert_array_equal(aug.embeddings[:y.size], x)
    rep = aug.report()
    assert rep["synthetic"] == [0, 120, 170, 188] and rep["imbalance_ratio_total"] == 1.0
    assert rep["imbalance_ratio_real"] == pytest.approx(200 / 12)
    # same seed, same samples; independent of the class order
    again = fill_with_synthetic(x, y, _const_generator, seed=0, progress=False)
    np.testing.assert_array_equal(again.embeddings, aug.embeddings)
    # chaining keeps earlier marks; int and dict targets
    more = fill_with_synthetic(aug.embeddings, aug.labels, _const_generator, target=210,
                               synthetic=aug.synthetic, seed=1, progress=False)
    assert more.n_synthetic == aug.n_synthetic + 40 and (more.synthetic[:aug.labels.size] == aug.synthetic).all()
    part = fill_with_synthetic(x, y, _const_generator, target={3: 20}, progress=False)
    assert part.n_synthetic == 8 and (part.labels[part.synthetic] == 3).all()


def test_fill_with_embed_hook_and_failures_are_all_or_nothing():
    x, y = _skewed_pool(3, counts=(5, 3))
    raw = lambda c, k, rng: [f"img-{c}-{i}" for i in range(k)]       # noqa: E731 - "images"
    emb = lambda items: np.array([[float(len(s)), 0, 0, 1] for s in items])  # noqa: E731
    aug = fill_with_synthetic(x, y, raw, embed=emb, progress=False)
    assert aug.n_synthetic == 2 and (aug.embeddings[aug.synthetic][:, 0] == 7).all()
    with pytest.raises(ValueError, match=r"expected \(2, 4\)"):
        fill_with_synthetic(x, y, lambda c, k, rng: np.zeros((k + 1, 4)), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        fill_with_synthetic(x, y, lambda c, k, rng: np.full((k, 4), np.nan), progress=False)

    def broken(c, k, rng):
        raise OSError("model file missing")
    with pytest.raises(RuntimeError, match="class 1.*model file missing"):
        fill_with_synthetic(x, y, broken, progress=False)
    with pytest.raises(ValueError, match="target must be"):
        fill_with_synthetic(x, y, _const_generator, target="min", progress=False)
    with pytest.raises(ValueError, match="generator must be a callable"):
        fill_with_synthetic(x, y, "diffusion", progress=False)


def test_stand_in_generators_follow_the_class_statistics():
    rng = np.random.default_rng(0)
    x, y = _skewed_pool(4, counts=(300, 3, 1))
    g = GaussianClassGenerator(x, y)
    for c in range(3):
        s = g(c, 2000, rng)
        assert s.shape == (2000, 4) and s.dtype == np.float32
        np.testing.assert_allclose(s.mean(axis=0), x[y == c].mean(axis=0), atol=0.15)
    # class 0 has many samples: its spread is its own (~1 per dimension)
    assert np.allclose(g(0, 4000, rng).std(axis=0), x[y == 0].std(axis=0), rtol=0.15)
    assert "stand-in" in g.describe()
    clipped = GaussianClassGenerator(x, y, clip=(-1.0, 1.0))(0, 100, rng)
    assert clipped.min() >= -1 and clipped.max() <= 1
    m = MixupClassGenerator(x, y, noise=0.0)
    s = m(1, 500, rng)
    lo, hi = x[y == 1].min(axis=0), x[y == 1].max(axis=0)
    assert (s >= lo - 1e-5).all() and (s <= hi + 1e-5).all()          # convex combinations
    assert m(2, 3, rng).shape == (3, 4)
    with pytest.raises(ValueError, match="class 7"):
        g(7, 2, rng)


# ------------------------------------------------------------------ exports
def test_training_set_export_marks_synthetic_rows(tmp_path):
    x, y = _skewed_pool(5, counts=(4, 2))
    aug = fill_with_synthetic(x, y, _const_generator, progress=False)
    p = export_training_set(tmp_path / "train.csv", aug, sources=[f"file{i}.png" for i in range(6)])
    rows = list(csv.DictReader(open(p)))
    assert [r["synthetic"] for r in rows] == ["false"] * 6 + ["true"] * 2
    assert rows[0]["source"] == "file0.png" and rows[-1]["source"].startswith("synthetic:")
    assert [int(r["origin"]) for r in rows] == [0, 1, 2, 3, 4, 5, -1, -1]
    doc = json.loads(export_training_set(tmp_path / "train.json", aug).read_text())
    assert doc["summary"]["n_synthetic"] == 2 and sum(it["synthetic"] for it in doc["items"]) == 2
    with pytest.raises(ValueError, match="sources has 2"):
        export_training_set(tmp_path / "bad.csv", aug, sources=["a", "b"])
    assert not (tmp_path / "bad.csv").exists()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_annotated_labelling_batch_still_imports(tmp_path, fmt):
    from socbi.labelling import export_batch, read_labels

    path = tmp_path / f"batch.{fmt}"
    ids = [3, 7, 1]
    export_batch(path, ids=ids, scores=[0.9, 0.5, 0.1], counts=[0, 1, 2], sources=["a", "b", "c"],
                 score_name="margin")
    syn = np.zeros(10, bool)
    syn[7] = True
    annotate_batch_file(path, syn)
    annotate_batch_file(path, syn)                       # idempotent: replaces the column
    if fmt == "csv":
        rows = list(csv.DictReader(open(path)))
        assert [r["synthetic"] for r in rows] == ["false", "true", "false"]
        assert list(rows[0]).count("synthetic") == 1
        text = path.read_text().replace(",,false", ",2,false").replace(",,true", ",5,true")
        path.write_text(text)
    else:
        doc = json.loads(path.read_text())
        assert [it["synthetic"] for it in doc["items"]] == [False, True, False] and doc["n_synthetic"] == 1
        for it, lab in zip(doc["items"], (2, 5, 2)):
            it["label"] = lab
        path.write_text(json.dumps(doc))
    got_ids, labels = read_labels(path, n_samples=10, expected_ids=ids)
    assert sorted(got_ids.tolist()) == sorted(ids)
    before = path.read_text()
    with pytest.raises(ValueError, match="outside the synthetic mask"):
        annotate_batch_file(path, np.zeros(5, bool))
    assert path.read_text() == before


def test_balance_report_counts_real_and_synthetic_apart():
    rep = balance_report([0, 0, 0, 1, 1, 2, -1], [False, False, True, False, True, True, False], n_classes=3)
    assert rep["real"] == [2, 1, 0] and rep["synthetic"] == [1, 1, 1] and rep["total"] == [3, 2, 1]
    assert rep["imbalance_ratio_real"] == math.inf and rep["imbalance_ratio_total"] == 3.0
    assert rep["synthetic_fraction"] == pytest.approx(0.5)
    assert rep["class_imbalance_total"] == pytest.approx((1 / 6 + 0 + 1 / 6) / (4 / 3))
    assert class_counts([2, 2, -1, 0]).tolist() == [1, 0, 2]


# ------------------------------------------------------------------ the experiment, tiny
def test_retrieval_experiment_runs_and_marks_synthetic_settings(digits, tmp_path):
    pytest.importorskip("torch")
    x, y = digits
    keep = np.concatenate([np.flatnonzero(y == c)[:60] for c in range(10)])
    res = LT.longtail_retrieval_experiment(
        x[keep], y[keep], bits=(32,), imbalance_ratio=10, seeds=(0,), budget=0.6, batch=15,
        train_options=dict(epochs=3, threads=1), ks=(20,), progress=False, dataset="digits subset")
    settings = {r["setting"] for r in res.rows}
    assert settings == set(LT.SETTINGS)
    for r in res.rows:
        assert (r["n_synthetic"] > 0) == ("synthetic" in r["setting"])
        assert 0 < r["map"] <= 1 and 0 < r["map@20"] <= 1 and 0 < r["map_float"] <= 1
    by = {r["setting"]: r for r in res.rows}
    assert by["long-tailed"]["imbalance_ratio_real"] == pytest.approx(45 / round(45 / 10))
    assert by["balanced"]["n_real"] == 450
    sel = [by[s]["n_real"] for s in LT.SETTINGS if s.startswith("LT pool")]
    assert len(set(sel)) == 1                                             # same budget everywhere
    assert by["LT pool, budget: class-balanced"]["imbalance_ratio_real"] < \
        by["LT pool, budget: random"]["imbalance_ratio_real"]
    table = res.table()
    p = res.paired("long-tailed + synthetic", "long-tailed")
    assert p[32]["mean"] == pytest.approx(by["long-tailed + synthetic"]["map"] - by["long-tailed"]["map"])
    assert len(res.paired_lines()) == 5
    assert "long-tailed + synthetic" in table and "Gaussian stand-in" in table
    pytest.importorskip("matplotlib")
    assert res.plot(tmp_path / "m.png").stat().st_size > 1000
    res2 = LT.longtail_retrieval_experiment(
        x[keep], y[keep], bits=(32,), imbalance_ratio=10, generator=None, budget=0.6,
        settings=("long-tailed", "long-tailed + synthetic"), train_options=dict(epochs=1, threads=1),
        progress=False)
    assert {r["setting"] for r in res2.rows} == {"long-tailed"}
