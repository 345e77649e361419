"""The socbi command: demo end to end (reduced), select and run, every bad input -> exit 2."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402

from socbi.cli import main  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_blas_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    lab = np.full(y.size, -1, np.int64)
    rng = np.random.default_rng(0)
    for c in range(10):
        ids = rng.choice(np.flatnonzero(y == c), 2, replace=False)
        lab[ids] = y[ids]
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", lab)
    np.savetxt(d / "x.csv", x, delimiter=",", header=",".join(f"f{i}" for i in range(64)), comments="")
    np.savetxt(d / "y.csv", lab, fmt="%d", header="label", comments="")
    return d, x, y, lab


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def assert_exit_2(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (argv, out, err)
    assert len(lines) == 1 and lines[0].startswith(f"socbi {argv[0]}: error: "), err
    assert needle in lines[0], (needle, lines[0])


# ----------------------------------------------------------------------------- demo
def test_demo_runs_end_to_end_at_a_reduced_size(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "socbi", "demo", "--seeds", "2", "--strategies",
                          "random,least_confidence,lc_socbi", "--imbalance", "1,0.3", "--budget", "0.1",
                          "--out", str(out), "--no-progress"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "sklearn digits, balanced" in text and "sklearn digits, IF = 0.3" in text
    for name in ("random", "LC", "LC-So-CBI", "acc@10%", "AUBC"):
        assert name in text
    assert "LC-So-CBI" in text.split("paired by seed")[1]
    plot_line = next(ln for ln in text.splitlines() if ln.startswith("learning curves: "))
    plot = Path(plot_line.split(": ", 1)[1])
    assert plot.exists() and plot.stat().st_size > 1000 and plot.parent == out.resolve()
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["runs"]) == 2 * 3 * 2


def test_demo_bad_arguments(capsys):
    assert_exit_2(capsys, ["demo", "--seeds", "0"], "seeds must be a positive count")
    assert_exit_2(capsys, ["demo", "--imbalance", "2"], "imbalance must list distinct factors")
    assert_exit_2(capsys, ["demo", "--strategies", "random,best"], "unknown strategy 'best'")
    assert_exit_2(capsys, ["demo", "--batch", "-1"], "batch must be an integer >= 1")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--imbalance", "x"])
    assert exc.value.code == 2


# ----------------------------------------------------------------------------- select
def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_select_npy_to_stdout(capsys, files):
    d, x, y, lab = files
    code, out, err = run_cli(capsys, "select", "--embeddings", d / "x.npy", "--labels", d / "y.npy",
                             "--n", 16, "--strategy", "LC-So-CBI", "--no-progress")
    assert code == 0, err
    rows = _rows(out)
    ids = [int(r["id"]) for r in rows]
    assert len(ids) == 16 and len(set(ids)) == 16 and all(lab[i] == -1 for i in ids)
    assert [int(r["rank"]) for r in rows] == list(range(1, 17))
    assert rows[0]["score_name"] == "least_confidence" and rows[0]["source"] == f"x.npy#{ids[0]}"
    assert all(r["label"] == "" for r in rows)


def test_select_csv_inputs_match_npy_and_write_json(capsys, files, tmp_path):
    d, x, y, lab = files
    _, out_npy, _ = run_cli(capsys, "select", "--embeddings", d / "x.npy", "--labels", d / "y.npy",
                            "--n", 10, "--strategy", "kcenter_socbi", "--no-progress")
    dst = tmp_path / "batch.json"
    code, out, err = run_cli(capsys, "select", "--embeddings", d / "x.csv", "--labels", d / "y.csv",
                             "--n", 10, "--strategy", "kcenter_socbi", "--out", dst,
                             "--save-session", tmp_path / "s.socbi", "--no-progress")
    assert code == 0, err
    doc = json.loads(dst.read_text())
    assert [it["id"] for it in doc["items"]] == [int(r["id"]) for r in _rows(out_npy)]
    # the saved session imports the filled-in batch
    from socbi.session import ActiveLearner
    lrn = ActiveLearner.load(tmp_path / "s.socbi", progress=False)
    for it in doc["items"]:
        it["label"] = int(y[it["id"]])
    dst.write_text(json.dumps(doc))
    lrn.import_labels(dst)
    assert lrn.n_labelled == 30


def test_select_bad_inputs_exit_2(capsys, files, tmp_path):
    d, x, y, lab = files
    X, Y = d / "x.npy", d / "y.npy"
    np.save(tmp_path / "short.npy", lab[:-1])
    np.save(tmp_path / "float.npy", lab + 0.5)
    np.save(tmp_path / "all.npy", y)
    np.save(tmp_path / "x1d.npy", x[:, 0])
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    xn = x.copy()
    xn[5, 3] = np.nan
    np.save(tmp_path / "nan.npy", xn)
    np.save(tmp_path / "neg.npy", np.where(lab == -1, -2, lab))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3\n")
    (tmp_path / "x.txt2").write_text("1")
    (tmp_path / "src.txt").write_text("a\nb\n")
    one_class = np.full(y.size, -1)
    one_class[:3] = 1
    np.save(tmp_path / "oneclass.npy", one_class)
    sel = ["select", "--no-progress"]
    cases = [
        (["--embeddings", tmp_path / "nope.npy", "--labels", Y, "--n", 5], "--embeddings: no such file"),
        (["--embeddings", X, "--labels", tmp_path / "short.npy", "--n", 5], "--labels has 1796 entries"),
        (["--embeddings", X, "--labels", tmp_path / "float.npy", "--n", 5], "is not an integer"),
        (["--embeddings", X, "--labels", tmp_path / "neg.npy", "--n", 5], "is negative"),
        (["--embeddings", X, "--labels", tmp_path / "all.npy", "--n", 5], "every sample is labelled"),
        (["--embeddings", tmp_path / "x1d.npy", "--labels", Y, "--n", 5], "expected a 2-D"),
        (["--embeddings", tmp_path / "obj.npy", "--labels", Y, "--n", 5], "not a readable .npy"),
        (["--embeddings", tmp_path / "nan.npy", "--labels", Y, "--n", 5], "NaN/inf"),
        (["--embeddings", tmp_path / "bad.csv", "--labels", Y, "--n", 5], "ragged"),
        (["--embeddings", tmp_path / "x.txt2", "--labels", Y, "--n", 5], "use .npy or .csv"),
        (["--embeddings", X, "--labels", Y, "--n", 0], "--n 0 must lie in [1, 1777]"),
        (["--embeddings", X, "--labels", Y, "--n", 5000], "--n 5000 must lie in [1, 1777]"),
        (["--embeddings", X, "--labels", Y, "--n", 5, "--strategy", "best"], "unknown strategy 'best'"),
        (["--embeddings", X, "--labels", Y, "--n", 5, "--k", 0], "--k 0"),
        (["--embeddings", X, "--labels", Y, "--n", 5, "--strategy", "margin", "--candidate-factor", 2],
         "--candidate-factor applies to"),
        (["--embeddings", X, "--labels", Y, "--n", 5, "--strategy", "lc_socbi", "--candidate-factor", 0.5],
         "candidate_factor must be a finite number >= 1"),
        (["--embeddings", X, "--labels", Y, "--n", 5, "--sources", tmp_path / "src.txt"],
         "--sources has 2 lines"),
        (["--embeddings", X, "--labels", Y, "--n", 5, "--out", tmp_path / "b.xlsx"], "use a .csv or .json"),
        (["--embeddings", X, "--labels", Y, "--n", 5, "--out", tmp_path / "no" / "b.csv"],
         "does not exist; create it first"),
        (["--embeddings", X, "--labels", tmp_path / "oneclass.npy", "--n", 5], "at least 2 classes"),
    ]
    for extra, needle in cases:
        assert_exit_2(capsys, sel + extra, needle)
    for argv in (["select", "--labels", Y, "--n", 5], ["select", "--embeddings", X, "--labels", Y, "--n", "x"]):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code == 2


# ----------------------------------------------------------------------------- run
def test_run_config(capsys, tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[experiment]\nstrategies = ["random", "kcenter_socbi"]\nseeds = 1\nbudget = 0.06\n'
                   'batch = 30\njobs = 1\n')
    code, out, err = run_cli(capsys, "run", cfg, "--out", tmp_path / "res", "--no-progress")
    assert code == 0, err
    assert "KCenter-So-CBI" in out and "runs in" in out
    assert (tmp_path / "res" / "results.json").exists() and (tmp_path / "res" / "table.md").exists()


def test_run_bad_configs_exit_2(capsys, tmp_path):
    cfg = tmp_path / "bad.toml"
    cases = [
        ("[experiment]\nbatchsize = 3\n", "unknown key(s) ['batchsize']"),
        ("[experiment]\nseeds = -1\n", "seeds must be a positive count"),
        ("[experiment\n", "not valid TOML"),
        ('dataset = "nothere.npz"\n', "does not exist"),
        ('dataset = "digits"\nbudget = 0.005\n', "raise budget"),
    ]
    for text, needle in cases:
        cfg.write_text(text)
        assert_exit_2(capsys, ["run", cfg, "--no-progress"], needle)
    assert_exit_2(capsys, ["run", tmp_path / "missing.toml"], "no config file")
    cfg.write_text("seeds = 1\n")
    assert_exit_2(capsys, ["run", cfg, "--jobs", "-3"], "--jobs -3 must be >= 0")


# ----------------------------------------------------------------------------- one error layer
def _path_cases(d, tmp):
    adir = tmp / "adir"
    adir.mkdir(exist_ok=True)
    (tmp / "adir.csv").mkdir(exist_ok=True)
    (tmp / "dir.npy").mkdir(exist_ok=True)
    existing = tmp / "existing_file"
    existing.write_text("x")
    cfg = tmp / "c.toml"
    cfg.write_text('dataset = "iris"\nstrategies = ["random"]\nseeds = 1\n')
    sel = ["select", "--embeddings", str(d / "x.npy"), "--labels", str(d / "y.npy"), "--n", "5"]
    return [
        (sel + ["--save-session", str(adir)], ["--save-session", "adir", "is a directory", "session.socbi"]),
        (["select", "--embeddings", str(adir), "--labels", str(d / "y.npy"), "--n", "5"],
         ["--embeddings", "adir", "is a directory"]),
        (sel + ["--out", str(tmp / "adir.csv")], ["--out", "adir.csv", "is a directory"]),
        (sel + ["--sources", str(adir)], ["--sources", "is a directory"]),
        (["curate", str(d / "x.npy"), "--out", str(existing)], ["--out", "existing_file", "existing file"]),
        (["bench", "--from-json", str(adir)], ["--from-json", "adir", "is a directory"]),
        (["bench", "--from-json", str(existing)], ["--from-json", "not JSON"]),
        (["bench", "--preset", "tiny", "--json", str(adir)], ["--json", "adir", "is a directory"]),
        (["embed", str(d / "x.npy"), "-o", str(tmp / "dir.npy")], ["--output", "dir.npy", "is a directory"]),
        (["embed", str(adir), "-o", str(tmp / "e.npy")], ["INPUT", "adir", "is a directory"]),
        (["run", str(adir)], ["adir", "is a directory", ".toml"]),
        (["run", str(cfg), "--out", str(existing)], ["--out", "existing_file", "existing file"]),
        (["demo", "--seeds", "1", "--out", str(existing)], ["--out", "existing_file", "existing file"]),
    ]


def test_every_path_mistake_exits_2_with_empty_stdout(capsys, files, tmp_path):
    """A directory or an existing file where the other is expected: exit 2, the argument,
    the value and the fix on stderr, and nothing at all on stdout (no batch, no traceback)."""
    d = files[0]
    for argv, needles in _path_cases(d, tmp_path):
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 2, (argv, rc, err)
        assert out == "", (argv, out[:200])
        assert err.startswith(f"socbi {argv[0]}: error: ") and err.count("\n") == 1, (argv, err)
        for needle in needles:
            assert needle in err, (argv, needle, err)


def test_save_into_a_directory_names_the_path(files, tmp_path):
    from socbi.session import ActiveLearner

    d, x, y, lab = files
    lrn = ActiveLearner(x, lab, strategy="random", backend="exact", progress=False)
    with pytest.raises(IsADirectoryError, match=r"path '.*adir' is a directory; pass a file name, e\.g\. "
                                                r"'.*adir/session\.socbi'"):
        (tmp_path / "adir").mkdir()
        lrn.save(tmp_path / "adir")
    assert list((tmp_path / "adir").iterdir()) == []   # nothing written, no temp file left
