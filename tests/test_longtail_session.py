"""Synthetic rows inside an ActiveLearner session, class-balanced selection by name, socbi rebalance."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402

from socbi.cli import main  # noqa: E402
from socbi.config import config_from_dict  # noqa: E402
from socbi.longtail import ClassBalancedSelection, GaussianClassGenerator, fill_with_synthetic  # noqa: E402
from socbi.session import ActiveLearner, canonical_strategy  # noqa: E402
from socbi.strategies import make_strategy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_blas_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def pool():
    """300 digits, 3 labelled per class, plus 60 Gaussian rows of classes 7..9 appended."""
    x, y = load_digits(return_X_y=True)
    x, y = (x[:300] / 16.0).astype(np.float32), y[:300]
    lab = np.full(y.size, -1, np.int64)
    rng = np.random.default_rng(0)
    for c in range(10):
        ids = rng.choice(np.flatnonzero(y == c), 3, replace=False)
        lab[ids] = y[ids]
    known = lab >= 0
    aug = fill_with_synthetic(x[known], y[known], GaussianClassGenerator(x[known], y[known]),
                              target={7: 23, 8: 23, 9: 23}, progress=False)
    gx, gy = aug.embeddings[aug.synthetic], aug.labels[aug.synthetic]
    xs = np.concatenate([x, gx])
    labels = np.concatenate([lab, gy])
    truth = np.concatenate([y, gy])
    syn = np.concatenate([np.zeros(y.size, bool), np.ones(gy.size, bool)])
    return xs, labels, truth, syn


def test_synthetic_rows_are_never_queried_and_do_not_use_the_budget(pool, tmp_path):
    x, labels, truth, syn = pool
    ln = ActiveLearner(x, labels, strategy="margin", synthetic=syn, backend="exact", budget=60,
                       progress=False, seed=0)
    assert ln.n_synthetic == 60 and ln.n_real_labelled == 30 and ln.n_labelled == 90
    assert ln.budget == 60 and not ln.synthetic.flags.writeable
    asked = []
    log = ln.run(lambda ids: asked.extend(ids.tolist()) or truth[ids], batch=10)
    assert not syn[asked].any() and len(asked) == 30                 # 30 paid labels up to the budget
    assert ln.n_real_labelled == 60 and ln.stop_reason.startswith("label budget reached (60")
    assert all(e["labelled_synthetic"] == 60 and e["labelled"] == e["labelled_real"] + 60 for e in log)
    bal = ln.balance()
    assert bal["n_synthetic"] == 60 and bal["synthetic"][7:] == [20, 20, 20] and bal["n_real"] == 60
    # the model is trained on the generated rows too (they are labelled samples)
    assert ln.model is not None and set(ln.model.classes_) == set(range(10))
    # exports mark them
    ln.export_labels(tmp_path / "labels.csv")
    rows = list(csv.DictReader(open(tmp_path / "labels.csv")))
    assert len(rows) == 120 and sum(r["synthetic"] == "true" for r in rows) == 60
    assert all((r["synthetic"] == "true") == bool(syn[int(r["id"])]) for r in rows)
    ln.export_labels(tmp_path / "labels.json")
    doc = json.load(open(tmp_path / "labels.json"))
    assert doc["summary"]["n_synthetic"] == 60 and sum(it["synthetic"] for it in doc["items"]) == 60
    # a saved session keeps the mask
    ln.save(tmp_path / "s.npz")
    back = ActiveLearner.load(tmp_path / "s.npz", progress=False)
    np.testing.assert_array_equal(back.synthetic, syn)
    assert back.n_real_labelled == 60 and back.done


def test_exported_batches_carry_the_synthetic_column(pool, tmp_path):
    x, labels, truth, syn = pool
    ln = ActiveLearner(x, labels, strategy="random", synthetic=syn, backend="exact", progress=False)
    path = ln.export_batch(tmp_path / "b.csv", 8)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 8 and all(r["synthetic"] == "false" for r in rows)
    ln.import_labels(_fill(path, truth))           # the annotated file imports as before
    assert ln.n_real_labelled == 38


def _fill(path, truth):
    rows = list(csv.reader(open(path)))
    i_id, i_lab = rows[0].index("id"), rows[0].index("label")
    for r in rows[1:]:
        r[i_lab] = str(int(truth[int(r[i_id])]))
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_synthetic_mask_errors(pool):
    x, labels, truth, syn = pool
    with pytest.raises(ValueError, match="bool mask with one entry per sample"):
        ActiveLearner(x, labels, synthetic=syn[:-1], strategy="random", backend="exact", progress=False)
    bad = syn.copy()
    bad[0] = True                                        # an unlabelled row marked synthetic
    with pytest.raises(ValueError, match=r"synthetic rows \[0\] have no class"):
        ActiveLearner(x, labels, synthetic=bad, strategy="random", backend="exact", progress=False)
    ln = ActiveLearner(x, labels, synthetic=syn, strategy="random", backend="exact", progress=False)
    with pytest.raises(ValueError, match="are synthetic rows"):
        ln.teach([300], [7])
    assert ln.round == 0 and ln.n_labelled == 90


def test_class_balanced_by_name_in_a_session_fills_the_rare_classes_first(pool):
    x, labels, truth, syn = pool
    assert canonical_strategy("Class-Balanced") == "class_balanced"
    assert isinstance(make_strategy("class_balanced", base="margin"), ClassBalancedSelection)
    real = ~syn
    lab = labels[real].copy()
    lab[np.flatnonzero((truth[real] == 3) & (lab >= 0))[1:]] = -1      # class 3: one label, others three
    ln = ActiveLearner(x[real], lab, strategy="class_balanced", strategy_options={"base": "margin"},
                       backend="exact", progress=False, seed=1)
    ids = ln.query(10)
    quotas = ln._strategy.last_quotas
    assert quotas.sum() == 10 and quotas[3] >= 2 and quotas[3] == quotas.max()   # the rare class first
    assert ids.size == 10 and (lab[ids] < 0).all()
    assert np.isfinite(ln.pending["scores"]).all() and ln.pending["score_name"] == "margin"
    ln.teach(ids, truth[real][ids])
    cfg, _ = config_from_dict({"strategies": ["random", "class_balanced"], "seeds": 1})
    assert cfg.strategies == ("random", "class_balanced")


def test_select_cli_with_class_balanced_and_a_synthetic_mask(pool, tmp_path, capsys):
    x, labels, truth, syn = pool
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    np.save(tmp_path / "syn.npy", syn)
    code = main(["select", "--embeddings", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--n", "12", "--strategy", "class_balanced", "--base", "margin", "--synthetic",
                 str(tmp_path / "syn.npy"), "--out", str(tmp_path / "b.csv"), "--no-progress",
                 "--save-session", str(tmp_path / "s.npz")])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "b.csv")))
    assert len(rows) == 12 and all(r["synthetic"] == "false" for r in rows)
    assert not syn[[int(r["id"]) for r in rows]].any()
    assert ActiveLearner.load(tmp_path / "s.npz", progress=False).n_synthetic == 60
    capsys.readouterr()
    code = main(["select", "--embeddings", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--n", "3", "--strategy", "margin", "--base", "random", "--no-progress"])
    assert code == 2 and "--base applies to --strategy class_balanced" in capsys.readouterr().err


# ------------------------------------------------------------------ socbi rebalance
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("rebalance")
    x, y = load_digits(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == 0)[:10], np.flatnonzero(y == 1)[:4], np.flatnonzero(y == 2)[:2]])
    np.save(d / "img.npy", x[idx].reshape(-1, 8, 8))
    np.save(d / "flat.npy", x[idx])
    np.save(d / "y.npy", y[idx])
    return d


@pytest.mark.parametrize("generator", ["gaussian", "mixup"])
def test_rebalance_cli_with_stand_ins(images, tmp_path, capsys, generator):
    d = images
    code = main(["rebalance", "--images", str(d / "img.npy"), "--labels", str(d / "y.npy"), "--out",
                 str(tmp_path / "out.npz"), "--generator", generator, "--manifest", str(tmp_path / "m.csv"),
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    z = np.load(tmp_path / "out.npz")
    assert z["images"].shape == (30, 8, 8) and z["synthetic"].sum() == 14
    assert np.bincount(z["labels"]).tolist() == [10, 10, 10]
    assert (z["origin"][z["synthetic"]] == -1).all() and (z["origin"][~z["synthetic"]] == np.arange(16)).all()
    assert z["images"].min() >= 0 and z["images"].max() <= 16                # clipped to the data range
    np.testing.assert_array_equal(z["images"][:16], np.load(d / "img.npy"))
    assert json.loads(out)["n_synthetic"] == 14
    assert sum(r["synthetic"] == "true" for r in csv.DictReader(open(tmp_path / "m.csv"))) == 14


def test_rebalance_cli_with_diffusion(images, tmp_path, capsys):
    pytest.importorskip("diffusers")
    d = images
    code = main(["rebalance", "--images", str(d / "flat.npy"), "--labels", str(d / "y.npy"), "--out",
                 str(tmp_path / "out.npz"), "--image-shape", "8x8", "--steps", "2", "--target", "6",
                 "--image-size", "8", "--sample-steps", "2",
                 "--checkpoint-dir", str(tmp_path / "ck"), "--save-generator", str(tmp_path / "gen"),
                 "--threads", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    z = np.load(tmp_path / "out.npz")
    assert z["images"].shape == (22, 64) and np.bincount(z["labels"]).tolist() == [10, 6, 6]
    assert z["synthetic"].sum() == 6 and "diffusion" in str(z["generator"])
    assert (tmp_path / "ck" / "checkpoint.pt").is_file() and (tmp_path / "gen" / "model_index.json").is_file()


def test_rebalance_cli_bad_inputs(images, tmp_path, capsys):
    d = images
    cases = [
        (["--out", str(tmp_path / "o.txt")], "use a .npz file name"),
        (["--out", str(tmp_path / "no" / "o.npz")], "does not exist"),
        (["--out", str(tmp_path / "o.npz"), "--target", "many"], "--target 'many'"),
        (["--out", str(tmp_path / "o.npz"), "--generator", "gaussian", "--steps", "3"], "apply to --generator diffusion"),
        (["--out", str(tmp_path / "o.npz"), "--image-shape", "3x3"], "does not fit"),
    ]
    for extra, needle in cases:
        code = main(["rebalance", "--images", str(d / "img.npy"), "--labels", str(d / "y.npy"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and needle in err, (extra, err)
        assert not (tmp_path / "o.npz").exists()
