"""Experiment runner: protocol set-up, metrics by hand, reproducibility, config files."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("sklearn")

from socbi.config import ConfigError, config_from_dict, load_config  # noqa: E402
from socbi.experiment import (ExperimentConfig, aubc, class_imbalance, compare_to_base,  # noqa: E402
                              load_dataset, prepare_split, run_experiment, summarise)


pytestmark = pytest.mark.usefixtures("one_blas_thread")  # tests/conftest.py


def small(**kw):
    base = dict(strategies=("random", "lc_socbi"), seeds=(0, 1), batch=20, budget=0.1, jobs=1)
    base.update(kw)
    return ExperimentConfig(**base).validate()


# ----------------------------------------------------------------------------- metrics
def test_class_imbalance_by_hand():
    assert class_imbalance([0, 1, 2, 3], 4) == 0.0
    assert class_imbalance([2, 2, 2], 4) == 1.0
    # p = (1/2, 1/2, 0, 0): L1 to uniform = 4 * 1/4 = 1; max = 2 * (1 - 1/4) = 1.5
    assert math.isclose(class_imbalance([0, 1], 4), 1 / 1.5)
    # one class is exactly 1 for every C (floats gave 1.0000000000000002 for C = 6, 9, 10)
    assert all(class_imbalance([0], c) == 1.0 and class_imbalance([c - 1] * 3, c) == 1.0 for c in range(2, 40))
    assert all(class_imbalance(list(range(c)), c) == 0.0 for c in range(2, 40))
    assert math.isnan(class_imbalance([], 4))


def test_aubc_by_hand():
    assert aubc([0.1, 0.2, 0.5], [0.8, 0.8, 0.8]) == pytest.approx(0.8)
    # linear from 0.6 to 1.0: mean 0.8
    assert aubc([0.0, 0.5, 1.0], [0.6, 0.8, 1.0]) == pytest.approx(0.8)
    # trapezoid with unequal steps: ((0.5+0.7)/2*0.1 + (0.7+0.9)/2*0.3) / 0.4
    assert aubc([0.1, 0.2, 0.5], [0.5, 0.7, 0.9]) == pytest.approx((0.06 + 0.24) / 0.4)


def test_summary_interpolates_checkpoints():
    cfg = ExperimentConfig(strategies=("random",), seeds=(0,), checkpoints=(0.1, 0.25, 0.6)).validate()
    run = dict(imbalance=1.0, seed=0, strategy="random", pool=100, labelled=[10, 20, 30],
               accuracy=[0.5, 0.7, 0.8], batch_imbalance=[0.2, 0.4], selected_imbalance=0.3,
               times={k: [0.001, 0.003] for k in ("t_update", "t_sort", "t_search", "t_select", "t_model")})
    s = summarise(cfg, [run])[(1.0, "random")]
    assert s["acc@0.1"][0] == pytest.approx(0.5)
    assert s["acc@0.25"][0] == pytest.approx(0.75)
    assert math.isnan(s["acc@0.6"][0])  # beyond the budget: not extrapolated
    assert s["batch_imbalance"][0] == pytest.approx(0.3)
    assert s["t_total_ms"][0] == pytest.approx(6.0)


# ----------------------------------------------------------------------------- protocol
def test_split_is_uniform_and_imbalance_hits_half_the_classes():
    x, y, desc = load_dataset("digits")
    assert desc == "sklearn digits" and x.shape == (1797, 64) and x.max() <= 1.0
    cfg = small(init_per_class=3)
    bal = prepare_split(x, y, cfg, 1.0, seed=4)
    assert bal.y_pool.size == 1257 and bal.y_test.size == 540 and bal.minority == []
    np.testing.assert_array_equal(np.bincount(bal.y_pool[bal.initial]), np.full(10, 3))
    assert bal.budget_n == math.ceil(0.1 * 1257)

    imb = prepare_split(x, y, cfg, 0.1, seed=4)
    assert len(imb.minority) == 5
    full = np.bincount(bal.y_pool, minlength=10)
    got = np.bincount(imb.y_pool, minlength=10)
    for c in range(10):
        if c in imb.minority:
            assert got[c] == max(4, math.ceil(0.1 * full[c]))
        else:
            assert got[c] == full[c]
    np.testing.assert_array_equal(imb.y_test, bal.y_test)  # the test set is untouched
    np.testing.assert_array_equal(np.bincount(imb.y_pool[imb.initial]), np.full(10, 3))
    again = prepare_split(x, y, cfg, 0.1, seed=4)
    np.testing.assert_array_equal(again.initial, imb.initial)


def test_small_experiment_runs_and_is_reproducible(tmp_path):
    cfg = small(imbalance=(1.0, 0.3))
    res = run_experiment(cfg, out=str(tmp_path), progress=False)
    assert len(res.runs) == 2 * 2 * 2
    for r in res.runs:
        assert r["labelled"][0] == 20 and r["labelled"][-1] == r["budget"]
        assert np.all(np.diff(r["labelled"]) > 0) and len(r["accuracy"]) == len(r["labelled"])
        assert all(0 <= v <= 1 for v in r["batch_imbalance"])
        assert sum(r["selected_per_class"]) == r["budget"] - r["initial"]
        for k in ("t_update", "t_sort", "t_search"):
            assert len(r["times"][k]) == len(r["labelled"]) - 1
    # every strategy of one (IF, seed) starts from the same initial accuracy (same pool)
    for imb in (1.0, 0.3):
        for seed in (0, 1):
            starts = {r["accuracy"][0] for r in res.runs if (r["imbalance"], r["seed"]) == (imb, seed)}
            assert len(starts) == 1
    again = run_experiment(cfg, progress=False)
    assert [r["accuracy"] for r in again.runs] == [r["accuracy"] for r in res.runs]
    table = res.table()
    assert "LC-So-CBI" in table and "IF = 0.3" in table and "acc@10%" in table
    for name in ("results.json", "table.md", "table.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert res.files["plot"].endswith((".png", ".svg"))


def test_workers_give_the_same_numbers_as_one_process():
    cfg = small(strategies=("kcenter_socbi",), seeds=(3,), imbalance=(1.0, 0.1))
    one = run_experiment(cfg, progress=False)
    cfg2 = small(strategies=("kcenter_socbi",), seeds=(3,), imbalance=(1.0, 0.1), jobs=2)
    two = run_experiment(cfg2, progress=False)
    assert [r["accuracy"] for r in one.runs] == [r["accuracy"] for r in two.runs]
    assert [r["labelled"] for r in one.runs] == [r["labelled"] for r in two.runs]


def test_compare_to_base_is_paired_by_seed():
    cfg = small(strategies=("least_confidence", "lc_socbi"), seeds=(0, 1))
    res = run_experiment(cfg, progress=False)
    lines = compare_to_base(res)
    assert len(lines) == 1 and "LC-So-CBI" in lines[0] and "/2 seeds" in lines[0]


# ----------------------------------------------------------------------------- config
def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="batch must be an integer >= 1, got 0"):
        ExperimentConfig(batch=0).validate()
    with pytest.raises(ValueError, match="imbalance must list distinct factors"):
        ExperimentConfig(imbalance=(1.0, 2.0)).validate()
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        ExperimentConfig(strategies=("best",)).validate()
    with pytest.raises(ValueError, match="twice"):
        ExperimentConfig(strategies=("lc", "least_confidence")).validate()
    assert ExperimentConfig(seeds=3).validate().seeds == (0, 1, 2)
    x, y, _ = load_dataset("digits")
    with pytest.raises(ValueError, match="raise budget"):
        prepare_split(x, y, ExperimentConfig(budget=0.01).validate(), 1.0, 0)


def test_toml_config(tmp_path):
    np.savez(tmp_path / "tiny.npz", X=np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32),
             y=np.repeat([0, 1, 2], 20))  # generated data
    cfg_path = tmp_path / "exp.toml"
    cfg_path.write_text('out = "res"\n[experiment]\ndataset = "tiny.npz"\nstrategies = ["random", "LC-So-CBI"]\n'
                        'seeds = [3, 4]\nimbalance = [1.0, 0.3]\nbatch = 5\n')
    cfg, out = load_config(cfg_path)
    assert out == "res" and cfg.strategies == ("random", "lc_socbi") and cfg.seeds == (3, 4)
    x, y, desc = load_dataset(cfg.dataset, cfg.base_dir)
    assert x.shape == (60, 3) and desc == "tiny.npz"

    cases = [
        ('[experiment]\nbatchsize = 5\n', "unknown key"),
        ('[experiment]\nbatch = "5"\n', "batch must be an integer"),
        ('batch = 5\n[experiment]\nseeds = 2\n', "outside \\[experiment\\]"),
        ('batch = [5\n', "not valid TOML"),
        ('dataset = "missing.npz"\n', None),  # validated when loaded, see below
    ]
    for text, msg in cases:
        cfg_path.write_text(text)
        if msg is None:
            cfg, _ = load_config(cfg_path)
            with pytest.raises(ValueError, match="does not exist"):
                load_dataset(cfg.dataset, cfg.base_dir)
            continue
        with pytest.raises(ConfigError, match=msg):
            load_config(cfg_path)
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="'out' must be"):
        config_from_dict({"out": 3})


def test_curves_fall_back_to_svg_without_matplotlib(tmp_path, monkeypatch):
    import sys

    cfg = small(strategies=("random",), seeds=(0,))
    res = run_experiment(cfg, progress=False)
    from socbi.experiment import plot_curves

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    path = plot_curves(res, tmp_path / "curves.png")
    assert path.name == "curves.svg"
    text = path.read_text()
    assert text.startswith("<svg") and "<polyline" in text and "random" in text
