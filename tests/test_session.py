"""ActiveLearner: rounds on real digits, atomicity, save/load/resume (also after a kill),
interrupted saves, corrupt files, stopping rules, labelling export/import."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402

from socbi.session import ActiveLearner, SessionFileError, atomic_write, canonical_strategy  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_blas_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return x, y


def initial_labels(y, per_class=2, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.full(y.size, -1, np.int64)
    for c in np.unique(y):
        ids = rng.choice(np.flatnonzero(y == c), per_class, replace=False)
        lab[ids] = y[ids]
    return lab


def learner(digits, strategy="lc_socbi", **kw):
    x, y = digits
    kw.setdefault("backend", "exact")
    kw.setdefault("progress", False)
    return ActiveLearner(x, initial_labels(y), strategy=strategy, **kw)


def counts_snapshot(lrn):
    unl = lrn.unlabelled_ids
    return unl, lrn.scorer.counts(unl)


# ----------------------------------------------------------------------------- rounds
@pytest.mark.parametrize("strategy", ["lc_socbi", "kcenter_socbi", "seals", "random", "margin_div_cover",
                                      "margin_div"])
def test_rounds_never_repeat_and_counts_match_a_recount(digits, strategy):
    x, y = digits
    lrn = learner(digits, strategy)
    start = set(lrn.labelled_ids.tolist())
    seen = set()
    for r in range(5):
        ids = lrn.query(20)
        assert ids.size == 20 and np.unique(ids).size == 20
        assert not (set(ids.tolist()) & start), "a labelled id came back"
        assert not (set(ids.tolist()) & seen), "an id was picked twice"
        assert (lrn.labels[ids] == -1).all()
        entry = lrn.teach(ids, y[ids])
        seen |= set(ids.tolist())
        assert entry["round"] == r and entry["source"] == "query"
        assert entry["rank"] == list(range(1, 21))
        lrn.check()  # incremental counts == a recount over the current pool
    assert lrn.round == 5 and lrn.n_labelled == 20 + 100
    np.testing.assert_array_equal(lrn.labels[list(seen)], y[list(seen)])


def test_query_is_pure_until_teach(digits):
    lrn = learner(digits, "kcenter_socbi")
    a = lrn.query(15)
    b = lrn.query(15)
    np.testing.assert_array_equal(a, b)
    assert lrn.n_labelled == 20 and lrn.round == 0


def test_log_says_why_each_sample_was_picked(digits):
    x, y = digits
    lrn = learner(digits, "lc_socbi", strategy_options={"candidate_factor": 3.0}, eval_set=(x, y))
    ids = lrn.query(10)
    pend = lrn.pending
    counts_now = lrn.scorer.counts(ids).tolist()
    entry = lrn.teach(ids, y[ids])
    assert entry["score_name"] == "least_confidence" and entry["candidates"] == 30
    assert entry["counts"] == counts_now == pend["counts"]
    # LC inside the candidate set: the uncertainties come out best first
    assert all(a >= b for a, b in zip(entry["scores"], entry["scores"][1:]))
    for key in ("t_update", "t_sort", "t_search", "t_select", "t_model"):
        assert entry[key] >= 0
    assert 0 < entry["accuracy"] <= 1 and lrn.log == [entry]


def test_manual_teach_is_logged_as_manual(digits):
    x, y = digits
    lrn = learner(digits, "random")
    ids = lrn.unlabelled_ids[:3]
    entry = lrn.teach(ids, y[ids])
    assert entry["source"] == "manual" and entry["ids"] == ids.tolist()


def test_bad_teach_changes_nothing(digits):
    x, y = digits
    lrn = learner(digits, "lc_socbi")
    before_labels = lrn.labels.copy()
    before_counts = counts_snapshot(lrn)
    lab_id = int(lrn.labelled_ids[0])
    unl = lrn.unlabelled_ids
    cases = [
        ([unl[0], unl[0]], [1, 1], "distinct"),
        ([unl[0], lab_id], [1, 1], "labelled already"),
        ([unl[0], unl[1]], [1], "one label per id"),
        ([unl[0]], [-1], "classes >= 0"),
        ([unl[0]], [1.5], "not an integer"),
        ([10**6], [1], r"\[0, 1797\)"),
        ([], [], "empty"),
        ([unl[0]], ["seven"], "class_names"),
    ]
    for ids, labels, msg in cases:
        with pytest.raises(ValueError, match=msg):
            lrn.teach(ids, labels)
    np.testing.assert_array_equal(lrn.labels, before_labels)
    after = counts_snapshot(lrn)
    np.testing.assert_array_equal(after[0], before_counts[0])
    np.testing.assert_array_equal(after[1], before_counts[1])
    assert lrn.round == 0 and lrn.log == []
    lrn.check()


class _FlakyModel:
    """An sklearn-style model whose fit fails once it sees more than ``limit`` samples."""

    def __init__(self, limit=30):
        self.limit = limit

    def get_params(self, deep=True):
        return {"limit": self.limit}

    def set_params(self, **p):
        self.limit = p.get("limit", self.limit)
        return self

    def fit(self, x, y):
        if len(y) > self.limit:
            raise RuntimeError("simulated training failure")
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x):
        return np.full((len(x), self.classes_.size), 1.0 / self.classes_.size)


def test_failing_model_fit_leaves_session_unchanged(digits):
    x, y = digits
    lrn = learner(digits, "kcenter_socbi", model=_FlakyModel(limit=30))
    ids = lrn.query(20)
    before = counts_snapshot(lrn)
    pool_before = np.asarray(lrn.scorer.pool.state).copy()
    with pytest.raises(RuntimeError, match="simulated"):
        lrn.teach(ids, y[ids])
    assert lrn.n_labelled == 20 and lrn.round == 0
    np.testing.assert_array_equal(np.asarray(lrn.scorer.pool.state), pool_before)
    np.testing.assert_array_equal(counts_snapshot(lrn)[1], before[1])
    np.testing.assert_array_equal(lrn.query(20), ids)  # the same round, same answer
    lrn.check()


def test_uncertainty_strategy_without_two_classes_says_how_to_start(digits):
    x, y = digits
    lab = np.full(y.size, -1)
    lab[np.flatnonzero(y == 3)[:4]] = 3
    lrn = ActiveLearner(x, lab, strategy="least_confidence", backend="exact", progress=False)
    with pytest.raises(ValueError, match="at least 2 classes"):
        lrn.query(5)
    lrn2 = ActiveLearner(x, lab, strategy="kcenter", backend="exact", progress=False)
    assert lrn2.query(5).size == 5


def test_constructor_errors_name_the_argument(digits):
    x, y = digits
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        ActiveLearner(x, strategy="nope", backend="exact", progress=False)
    with pytest.raises(ValueError, match="labels must be a 1-D array"):
        ActiveLearner(x, y[:10], backend="exact", progress=False)
    with pytest.raises(ValueError, match="budget"):
        ActiveLearner(x, budget=1.5, backend="exact", progress=False)
    with pytest.raises(ValueError, match="target_accuracy needs eval_set"):
        ActiveLearner(x, target_accuracy=0.9, backend="exact", progress=False)
    with pytest.raises(ValueError, match="backend"):
        ActiveLearner(x, backend="faiss", progress=False)
    assert canonical_strategy("LC-So-CBI") == "lc_socbi" and canonical_strategy("LC") == "least_confidence"


# ----------------------------------------------------------------------------- stopping rules
def test_stopping_rules(digits):
    x, y = digits
    lrn = learner(digits, "margin", budget=75)
    entries = lrn.run(y, 20, progress=False)
    assert [e["labelled"] for e in entries] == [40, 60, 75]  # last batch shortened to the budget
    assert lrn.done and "budget" in lrn.stop_reason

    lrn = learner(digits, "random", max_rounds=2)
    lrn.run(y, 10, progress=False)
    assert lrn.round == 2 and "round limit" in lrn.stop_reason

    lrn = learner(digits, "margin", eval_set=(x, y), target_accuracy=0.85)
    lrn.run(y, 20, progress=False)
    assert lrn.accuracy >= 0.85 and "target accuracy" in lrn.stop_reason
    assert all(e["accuracy"] < 0.85 for e in lrn.log[:-1])


# ----------------------------------------------------------------------------- persistence
RESUME_CASES = [
    dict(strategy="lc_socbi"),
    dict(strategy="kcenter_socbi"),
    dict(strategy="kcenter"),
    dict(strategy="seals"),
    dict(strategy="random"),
    dict(strategy="lc_socbi", backend="hnsw", pool_options={"num_threads": 1}),
]


@pytest.mark.parametrize("case", RESUME_CASES, ids=lambda c: f"{c['strategy']}-{c.get('backend', 'exact')}")
def test_save_load_resumes_exactly(digits, tmp_path, case):
    x, y = digits
    a = learner(digits, **case)
    for _ in range(3):
        ids = a.query(20)
        a.teach(ids, y[ids])
    path = tmp_path / "s.socbi"
    a.save(path)
    b = ActiveLearner.load(path, progress=False)
    assert b.round == a.round == 3 and b.log == json.loads(json.dumps(a.log))
    np.testing.assert_array_equal(b.labels, a.labels)
    np.testing.assert_array_equal(counts_snapshot(b)[1], counts_snapshot(a)[1])
    for _ in range(3):  # the next queries are the uninterrupted run's
        qa, qb = a.query(20), b.query(20)
        np.testing.assert_array_equal(qa, qb)
        a.teach(qa, y[qa])
        b.teach(qb, y[qb])
    b.check()


def test_torch_mlp_model_resumes_exactly(digits, tmp_path):
    torch = pytest.importorskip("torch")
    from socbi.session import TorchMLPClassifier

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _mlp_resume(digits, tmp_path, TorchMLPClassifier(hidden=32, epochs=10))
    finally:
        torch.set_num_threads(threads)


def _mlp_resume(digits, tmp_path, model):
    x, y = digits
    a = learner(digits, "lc_socbi", model=model, eval_set=(x[:300], y[:300]))
    for _ in range(2):
        ids = a.query(20)
        a.teach(ids, y[ids])
    a.save(tmp_path / "m.socbi")
    b = ActiveLearner.load(tmp_path / "m.socbi", progress=False)
    np.testing.assert_allclose(b.model.predict_proba(x[:50]), a.model.predict_proba(x[:50]))
    np.testing.assert_array_equal(a.query(20), b.query(20))
    assert b.accuracy == a.accuracy


def test_load_checks_embeddings_and_custom_models(digits, tmp_path):
    x, y = digits
    a = learner(digits, "random")
    a.save(tmp_path / "noemb.socbi", store_embeddings=False)
    with pytest.raises(ValueError, match="saved without embeddings"):
        ActiveLearner.load(tmp_path / "noemb.socbi", progress=False)
    other = x.copy()
    other[0, 0] += 1
    with pytest.raises(ValueError, match="differ from"):
        ActiveLearner.load(tmp_path / "noemb.socbi", other, progress=False)
    b = ActiveLearner.load(tmp_path / "noemb.socbi", x, progress=False)
    np.testing.assert_array_equal(b.query(7), a.query(7))

    c = learner(digits, "random", model=_FlakyModel(limit=10**6))
    c.save(tmp_path / "custom.socbi")
    # a type outside skops' trusted set is refused by name, with both fixes
    with pytest.raises(ValueError, match=r"_FlakyModel.*trusted=.*model="):
        ActiveLearner.load(tmp_path / "custom.socbi", progress=False)
    assert ActiveLearner.load(tmp_path / "custom.socbi", model=_FlakyModel(), progress=False).round == 0


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_truncated_and_foreign_files_are_refused(digits, tmp_path):
    a = learner(digits, "random")
    good = tmp_path / "good.socbi"
    a.save(good)
    size = good.stat().st_size

    trunc = tmp_path / "trunc.socbi"
    trunc.write_bytes(good.read_bytes()[: size // 2])
    with pytest.raises(SessionFileError, match="truncated or corrupt"):
        ActiveLearner.load(trunc, progress=False)
    trunc.write_bytes(good.read_bytes()[: size - 10])
    with pytest.raises(SessionFileError, match="truncated or corrupt"):
        ActiveLearner.load(trunc, progress=False)

    # A flipped byte inside the labels array: zip CRC or our checksum must catch it.
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("labels.npy")
    flipped = tmp_path / "flipped.socbi"
    flipped.write_bytes(good.read_bytes())
    _flip_byte(flipped, info.header_offset + 30 + len(info.filename) + info.compress_size - 3)
    with pytest.raises(SessionFileError):
        ActiveLearner.load(flipped, progress=False)

    with pytest.raises(SessionFileError, match="no session file"):
        ActiveLearner.load(tmp_path / "missing.socbi", progress=False)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.arange(3))
    with pytest.raises(SessionFileError, match="not a socbi session file"):
        ActiveLearner.load(foreign, progress=False)


def test_pickled_payloads_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.socbi"
    np.savez(evil, __meta__=np.array([Evil()], dtype=object), labels=np.arange(3))
    with pytest.raises(SessionFileError):
        ActiveLearner.load(evil, progress=False)
    assert not marker.exists()


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write(target, lambda fh: fh.write(b"old"))
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600
    target.chmod(0o640)
    atomic_write(target, lambda fh: fh.write(b"old"))
    assert target.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its permissions

    def boom(*a, **k):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(target, lambda fh: fh.write(b"new"))
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # temp file removed
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "nodir" / "f.bin", lambda fh: fh.write(b"x"))


CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    from sklearn.datasets import load_digits
    from socbi.session import ActiveLearner
    sys.path.insert(0, {tests!r})
    from test_session import initial_labels
    d = load_digits(); x = (d.data / 16.0).astype(np.float32); y = d.target.astype(np.int64)
    path, mode = sys.argv[1], sys.argv[2]
    lrn = ActiveLearner(x, initial_labels(y), strategy={strategy!r}, backend="exact", progress=False)
    if mode == "run":
        # save after every round; the parent kills us at some point
        while True:
            ids = lrn.query(20)
            lrn.teach(ids, y[ids])
            lrn.save(path)
            print("saved", lrn.round, flush=True)
    else:  # "crash-in-save": a good save, one more round, then die between write and rename
        ids = lrn.query(20); lrn.teach(ids, y[ids]); lrn.save(path)
        ids = lrn.query(20); lrn.teach(ids, y[ids])
        real_replace = os.replace
        def replace(src, dst):  # die exactly between the final write and its rename
            if os.fspath(dst) == path:
                os._exit(9)
            return real_replace(src, dst)
        os.replace = replace
        lrn.save(path)
""")


def _child(tmp_path, strategy):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent), strategy=strategy))
    return script


@pytest.mark.parametrize("strategy", ["lc_socbi", "kcenter_socbi"])
def test_kill_mid_run_then_resume_gives_the_uninterrupted_query(digits, tmp_path, strategy):
    x, y = digits
    path = tmp_path / "run.socbi"
    proc = subprocess.Popen([sys.executable, str(_child(tmp_path, strategy)), str(path), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.split() == ["saved", "3"]:
                break
        else:
            pytest.fail(f"child ended early: {proc.stderr.read()}")
        proc.send_signal(signal.SIGKILL)  # most likely in the middle of round 4 or its save
    finally:
        proc.kill()
        proc.wait()
    resumed = ActiveLearner.load(path, progress=False)
    assert resumed.round >= 3
    ref = learner(digits, strategy)  # the uninterrupted run, to the same round
    for _ in range(resumed.round):
        ids = ref.query(20)
        ref.teach(ids, y[ids])
    np.testing.assert_array_equal(resumed.labels, ref.labels)
    np.testing.assert_array_equal(resumed.query(20), ref.query(20))
    resumed.check()


def test_crash_between_write_and_rename_leaves_the_old_session(digits, tmp_path):
    x, y = digits
    path = tmp_path / "c.socbi"
    res = subprocess.run([sys.executable, str(_child(tmp_path, "lc_socbi")), str(path), "crash-in-save"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 9, res.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the interrupted save should have left its temporary file"
    old = ActiveLearner.load(path, progress=False)
    assert old.round == 1 and old.n_labelled == 40
    ref = learner(digits, "lc_socbi")
    ids = ref.query(20)
    ref.teach(ids, y[ids])
    np.testing.assert_array_equal(old.query(20), ref.query(20))


# ----------------------------------------------------------------------------- labelling files
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_import_round_trip(digits, tmp_path, suffix):
    x, y = digits
    lrn = learner(digits, "lc_socbi", sources=[f"digits/{i}.png" for i in range(y.size)])
    path = tmp_path / f"batch{suffix}"
    lrn.export_batch(path, 12)
    ids = np.asarray(lrn.pending["ids"])
    if suffix == ".csv":
        text = path.read_text().splitlines()
        assert text[0] == "id,rank,score,score_name,count,source,label"
        rows = [r.split(",") for r in text[1:]]
        assert [int(r[0]) for r in rows] == ids.tolist() and [int(r[1]) for r in rows] == list(range(1, 13))
        assert rows[0][5] == f"digits/{ids[0]}.png" and rows[0][3] == "least_confidence"
        filled = [text[0]] + [",".join(r[:-1] + [str(y[int(r[0])])]) for r in reversed(rows)]
        path.write_text("\n".join(filled) + "\n")
    else:
        doc = json.loads(path.read_text())
        assert doc["format"] == "socbi-batch" and [it["id"] for it in doc["items"]] == ids.tolist()
        for it in doc["items"]:
            it["label"] = int(y[it["id"]])
        path.write_text(json.dumps(doc))
    entry = lrn.import_labels(path)
    assert sorted(entry["ids"]) == sorted(ids.tolist()) and entry["source"] == "query"
    np.testing.assert_array_equal(lrn.labels[ids], y[ids])
    lrn.check()


def test_import_reports_every_problem_and_imports_nothing(digits, tmp_path):
    x, y = digits
    lrn = learner(digits, "kcenter_socbi")
    path = tmp_path / "b.csv"
    lrn.export_batch(path, 5)
    ids = lrn.pending["ids"]
    lab_id = int(lrn.labelled_ids[0])

    def write(rows):
        path.write_text("id,label,note\n" + "".join(f"{a},{b},x\n" for a, b in rows))

    cases = [
        ([(i, 1) for i in ids[:4]] + [(99999, 1)], "unknown id 99999"),
        ([(i, 1) for i in ids[:4]] + [(lab_id, 1)], f"unknown id {lab_id}"),
        ([(i, 1) for i in ids] + [(ids[0], 2)], f"duplicate id {ids[0]}"),
        ([(i, 1) for i in ids[:4]] + [(ids[4], "")], f"id {ids[4]} has no label"),
        ([(i, 1) for i in ids[:4]], "have no row"),
        ([(i, 1) for i in ids[:4]] + [(ids[4], "cat")], "'cat' is not a class number"),
        ([(i, 1) for i in ids[:4]] + [("x7", 1)], "'x7' is not an integer"),
    ]
    for rows, msg in cases:
        write(rows)
        with pytest.raises(ValueError, match=msg):
            lrn.import_labels(path)
        assert lrn.n_labelled == 20 and lrn.round == 0
    path.write_text("id,rank\n1,1\n")
    with pytest.raises(ValueError, match="no 'label' column"):
        lrn.import_labels(path)
    # a partial batch is fine when asked for: empty cells stay unlabelled
    write([(ids[0], 3), (ids[1], ""), (ids[2], 4)])
    entry = lrn.import_labels(path, allow_partial=True)
    assert entry["ids"] == [ids[0], ids[2]] and entry["labels"] == [3, 4]


def test_import_class_names_and_already_labelled(digits, tmp_path):
    x, y = digits
    names = [f"digit-{c}" for c in range(10)]
    lrn = learner(digits, "random", class_names=names)
    ids = lrn.unlabelled_ids[:3]
    path = tmp_path / "names.json"
    path.write_text(json.dumps([{"id": int(i), "label": names[int(y[i])]} for i in ids]))
    lrn.import_labels(path)  # no pending batch: any unlabelled ids are accepted
    np.testing.assert_array_equal(lrn.labels[ids], y[ids])
    with pytest.raises(ValueError, match="labelled already"):
        lrn.import_labels(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        lrn.import_labels(path)


def test_ascmr_is_selectable_by_name_in_a_session():
    # Issue 7: ASCMR must be usable as a strategy in the active-learning session.
    from sklearn.datasets import load_digits

    from socbi.session import ActiveLearner

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)[:400]
    y = d.target[:400]
    labels = np.full(400, -1)
    start = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(10)])
    labels[start] = y[start]
    learner = ActiveLearner(x, labels, strategy="ascmr", k=5, backend="exact", seed=0,
                            strategy_options={"lam": 0.3, "w_inter": 0.0})  # one modality
    ids = learner.query(10)
    assert len(set(ids.tolist())) == 10 and (labels[ids] == -1).all()
    learner.teach(ids, y[ids])
    assert learner.query(10).size == 10


# ----------------------------------------------------------------------------- class range
def test_out_of_range_labels_are_refused_everywhere(digits):
    """Constructor and teach apply one class rule, with and without class_names."""
    x, y = digits
    lab = initial_labels(y)
    kw = dict(strategy="random", backend="exact", progress=False)
    bad = lab.copy()
    bad[np.flatnonzero(bad < 0)[0]] = 1000          # a typo beside classes 0..9
    with pytest.raises(ValueError, match=r"labels hold class 1000 but class 1000 is far above .*n_classes="):
        ActiveLearner(x, bad, **kw)
    names = [str(c) for c in range(10)]
    bad12 = lab.copy()
    bad12[np.flatnonzero(bad12 < 0)[0]] = 12
    with pytest.raises(ValueError, match=r"labels\[\d+\] = 12 is not a class index: there are 10 classes"):
        ActiveLearner(x, bad12, class_names=names, **kw)
    with pytest.raises(ValueError, match="n_classes=11 but class_names has 10"):
        ActiveLearner(x, lab, class_names=names, n_classes=11, **kw)
    # declared classes allow a class with no example yet; so does an unsampled class
    assert ActiveLearner(x, bad12, n_classes=13, **kw).n_classes == 13
    gap = lab.copy()
    gap[gap == 2] = -1                              # classes 0, 1, 3..9: 2 not sampled yet
    ActiveLearner(x, gap, **kw).teach(np.flatnonzero(y == 2)[:2], [2, 2])
    for lrn in (ActiveLearner(x, lab, **kw), ActiveLearner(x, lab, class_names=names, **kw),
                ActiveLearner(x, lab, n_classes=10, **kw)):
        ids = lrn.unlabelled_ids[:5]
        with pytest.raises(ValueError, match=r"label 99 of id \d+ is not a class index"):
            lrn.teach(ids, [99] * 5)
        assert lrn.n_labelled == 20 and lrn.round == 0
        lrn.teach(ids, y[ids])  # in range: accepted


def test_class_count_survives_save_and_load(digits, tmp_path):
    x, y = digits
    lrn = ActiveLearner(x, initial_labels(y), strategy="random", backend="exact", progress=False,
                        n_classes=12)
    lrn.save(tmp_path / "s.socbi")
    back = ActiveLearner.load(tmp_path / "s.socbi", progress=False)
    assert back.n_classes == 12
    ids = back.unlabelled_ids[:1]
    back.teach(ids, [11])
    with pytest.raises(ValueError, match="label 12"):
        back.teach(back.unlabelled_ids[:1], [12])


# ----------------------------------------------------------------------------- model persistence
def test_load_resumes_a_plain_sklearn_estimator_without_model(digits, tmp_path):
    """A scikit-learn estimator is stored in skops' secure format: load() needs no model=,
    the classifier comes back fitted as saved, and the next query equals the unbroken run's."""
    pytest.importorskip("skops")
    from sklearn.linear_model import LogisticRegression

    lrn = learner(digits, "margin", model=LogisticRegression(C=0.5, max_iter=500))
    x, y = digits
    ids = lrn.query(10)
    lrn.teach(ids, y[ids])
    lrn.save(tmp_path / "s.socbi")
    back = ActiveLearner.load(tmp_path / "s.socbi", progress=False)
    assert isinstance(back.model, LogisticRegression) and back.model.C == 0.5
    np.testing.assert_array_equal(back.model.coef_, lrn.model.coef_)
    np.testing.assert_array_equal(back.query(10), lrn.query(10))
    ids = back.query(10)
    back.teach(ids, y[ids])  # refits a clone of the restored estimator
    assert back.model.C == 0.5 and back.model is not lrn.model


def test_load_refuses_untrusted_model_types(digits, tmp_path, monkeypatch):
    skops_io = pytest.importorskip("skops.io")
    from sklearn.linear_model import LogisticRegression

    lrn = learner(digits, "random", model=LogisticRegression(max_iter=500))
    lrn.save(tmp_path / "s.socbi")
    monkeypatch.setattr(skops_io, "get_untrusted_types", lambda data: ["evil.Thing"])
    with pytest.raises(SessionFileError, match=r"evil\.Thing.*trusted="):
        ActiveLearner.load(tmp_path / "s.socbi", progress=False)


def test_margin_loop_matches_a_plain_sklearn_loop_on_float64_features():
    """The model trains on the caller's float64 rows (the pool alone uses float32), so a
    margin loop equals the same loop written with scikit-learn and numpy, pick for pick."""
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x = d.data / 16.0                       # float64, as a user has it
    y = d.target.astype(np.int64)
    lab = initial_labels(y)
    lrn = ActiveLearner(x, lab, strategy="margin", backend="exact", progress=False)
    known = lab >= 0
    for _ in range(4):
        clf = LogisticRegression(max_iter=2000).fit(x[known], y[known])
        np.testing.assert_array_equal(lrn.model.coef_, clf.coef_)
        unl = np.flatnonzero(~known)
        p = np.sort(clf.predict_proba(x[unl]), axis=1)
        margin = p[:, -1] - p[:, -2]
        want = unl[np.argsort(margin, kind="stable")[:10]]
        got = lrn.query(10)
        np.testing.assert_array_equal(np.sort(got), np.sort(want))
        pend = lrn.pending
        assert pend["score_name"] == "margin"
        # the exported score is the margin p1 - p2 itself: >= 0, smaller = more uncertain
        np.testing.assert_allclose(pend["scores"], margin[np.searchsorted(unl, got)])
        assert min(pend["scores"]) >= 0
        lrn.teach(got, y[got])
        known[got] = True


def test_state_reads_are_properties_with_a_deprecated_call(digits):
    lrn = learner(digits, "random")
    assert lrn.pending is None and lrn.stop_reason is None and not lrn.done
    np.testing.assert_array_equal(lrn.labelled_ids, np.flatnonzero(lrn.labels >= 0))
    np.testing.assert_array_equal(lrn.unlabelled_ids, np.flatnonzero(lrn.labels < 0))
    ids = lrn.query(5)
    assert lrn.pending["ids"] == ids.tolist()
    with pytest.warns(DeprecationWarning, match="property now"):
        assert lrn.pending()["ids"] == ids.tolist()
    with pytest.warns(DeprecationWarning, match="labelled_ids"):
        np.testing.assert_array_equal(lrn.labelled_ids(), lrn.labelled_ids)
    lrn.max_rounds = 1
    lrn.teach(ids, digits[1][ids])
    assert lrn.done and "round limit" in lrn.stop_reason


# ----------------------------------------------------------------------------- progress policy
def test_run_progress_in_a_log_follows_the_round_limit(digits, capsys, monkeypatch):
    """Not on a terminal: plain progress lines (no bar frames), and the total follows the
    active stopping rule -- under max_rounds the last line reads 100 %, not 8 %."""
    monkeypatch.setenv("SOCBI_PROGRESS_INTERVAL", "0")
    x, y = digits
    lrn = ActiveLearner(x, initial_labels(y), strategy="random", backend="exact", max_rounds=3)
    capsys.readouterr()
    lrn.run(y, batch=5, progress=True)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("socbi run random:")]
    assert "\r" not in err and len(lines) >= 3, err
    assert lines[-1].startswith("socbi run random: 35/35 (100%)"), lines


def test_progress_lines_every_interval_and_a_bar_only_on_a_terminal(capsys):
    import io

    from socbi._progress import LineProgress, progress

    p = progress(total=4, desc="step", interval=0.0)
    assert isinstance(p, LineProgress)           # capsys' stderr is not a terminal
    for _ in range(4):
        p.update(1)
    p.close()
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("socbi step: 1/4 (25%)") and err[-1].startswith("socbi step: 4/4 (100%)")
    quiet = progress(total=4, desc="short", interval=3600.0)
    quiet.update(4)
    quiet.close()
    assert capsys.readouterr().err == ""          # a short step prints nothing to a log
    assert progress(total=1, enabled=False).update(1) is None

    class Tty(io.StringIO):
        def isatty(self):
            return True

    bar = progress(total=2, desc="tty", file=Tty())
    assert type(bar).__module__.startswith("tqdm")
    bar.close()


# ----------------------------------------------------------------------------- plots
def test_plots_leave_the_callers_matplotlib_backend_alone(digits, tmp_path):
    """plot_curves, bench.plot, LongTail plots and the session's learning curve draw on
    Figure objects: the backend the user chose stays, and no pyplot figure is opened."""
    mpl = pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    old_backend = mpl.get_backend()
    mpl.use("svg")
    plt.close("all")
    try:
        _draw_everything(digits, tmp_path)
        assert mpl.get_backend().lower() == "svg"
        assert plt.get_fignums() == []
    finally:
        mpl.use(old_backend)


def _draw_everything(digits, tmp_path):
    from socbi import bench
    from socbi.experiment import ExperimentConfig, run_experiment

    x, y = digits
    cut = np.arange(1000, x.shape[0])
    lrn = learner(digits, "margin", eval_set=(x[cut], y[cut]), max_rounds=3)
    lrn.run(y, batch=10, progress=False)
    fig = lrn.plot_learning_curve(tmp_path / "curve.png")
    n, acc = lrn.learning_curve()
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), n)
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), acc)
    assert n.tolist() == [30, 40, 50] and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="eval_set"):
        learner(digits, "random").plot_learning_curve()
    cfg = ExperimentConfig(dataset="iris", strategies=("random",), seeds=(0,), batch=10, budget=0.3,
                           jobs=1).validate()
    res = run_experiment(cfg, out=str(tmp_path / "exp"), progress=False)
    assert Path(res.files["plot"]).suffix == ".png"
    report = {"results": [], "machine": {}, "preset": "tiny", "targets": []}
    try:
        bench.plot(report, str(tmp_path / "b.png"))
    except (KeyError, TypeError, ValueError):
        pass  # an empty report may not draw; the backend must stay either way


# ---------------------------------------------------------------- label state
def test_sparse_label_store_answers_like_the_dense_one():
    """The O(|L|) store DistributedLearner keeps gives every answer the dense per-sample
    store of ActiveLearner gives, through additions; it never holds an n-long array."""
    from socbi.session import _DenseLabels, _SparseLabels

    rng = np.random.default_rng(3)
    n = 500
    arr = np.full(n, -1, np.int64)
    first = rng.choice(n, 40, replace=False)
    arr[first] = rng.integers(0, 5, first.size)
    syn = np.zeros(n, bool)
    syn[first[:7]] = True
    dense, sparse = _DenseLabels(arr, syn), _SparseLabels.from_dense(arr, syn)
    for _ in range(4):
        probe = rng.integers(0, n, 60)
        assert np.array_equal(dense.get(probe), sparse.get(probe))
        assert np.array_equal(dense.is_synthetic(probe), sparse.is_synthetic(probe))
        assert np.array_equal(dense.mask()[probe], sparse[probe])
        assert np.array_equal(dense.ids(), sparse.ids()) and np.array_equal(dense.values(), sparse.values())
        for a, b in ((dense.dense(), sparse.dense()), (dense.mask(), sparse.mask()),
                     (dense.synthetic_mask(), sparse.synthetic_mask())):
            assert np.array_equal(a, b)
        assert (dense.count, dense.n_synthetic) == (sparse.count, sparse.n_synthetic)
        assert all(v.size < n for v in vars(sparse).values() if isinstance(v, np.ndarray))
        new = rng.choice(np.flatnonzero(~dense.mask()), 25, replace=False)
        lab = rng.integers(0, 5, new.size)
        d2, s2 = dense.with_added(new, lab), sparse.with_added(new, lab)
        assert sparse.count == d2.count - 25  # stores are values: the old one is unchanged
        dense, sparse = d2, s2


def test_sparse_labels_accept_pairs_and_dicts_and_name_bad_input():
    from socbi.session import _sparse_label_arg

    dense = np.full(10, -1)
    dense[[7, 2]] = [1, 0]
    for given in (dense, {7: 1, 2: 0}, ([7, 2], [1, 0])):
        st = _sparse_label_arg(given, 10)
        assert st.ids().tolist() == [2, 7] and st.values().tolist() == [0, 1]
    st = _sparse_label_arg(([7, 2], [1, 0]), 10, synthetic=[7])
    assert st.is_synthetic(np.array([2, 7])).tolist() == [False, True]
    with pytest.raises(ValueError, match="distinct"):
        _sparse_label_arg(([3, 3], [0, 1]), 10)
    with pytest.raises(ValueError, match="class -1"):
        _sparse_label_arg({3: -1}, 10)
    with pytest.raises(ValueError, match="synthetic rows \\[5\\] have no class"):
        _sparse_label_arg({3: 0}, 10, synthetic=[5])
    with pytest.raises(ValueError, match="labels ids"):
        _sparse_label_arg(([10], [0]), 10)


def test_pool_state_from_a_scorer_builds_the_mask_only_when_read(digits):
    """A PoolState built from a scorer keeps its labelled ids; So-CBI alone selects
    without an n-long mask, and a strategy that reads the mask gets the scorer's."""
    from socbi.scoring import BoundaryScorer
    from socbi.strategies import PoolState, make_strategy

    x, y = digits
    lab = initial_labels(y) >= 0
    scorer = BoundaryScorer(x, 5, labelled=lab, backend="exact", progress=False)
    state = PoolState(scorer=scorer)
    ids = make_strategy("socbi").select(state, 10, seed=0)
    assert state.__dict__["_mask"] is None and state.n_unlabelled() == int((~lab).sum())
    assert np.array_equal(ids, scorer.select(10)[0])
    assert np.array_equal(state.labelled_ids(), np.flatnonzero(lab))
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=len(x))
    lazy = PoolState(scorer=scorer, probabilities=p)  # SEALS: margin over the lists' members
    picked = make_strategy("seals").select(lazy, 10, seed=0)
    assert lazy.__dict__["_mask"] is None
    assert np.array_equal(picked, make_strategy("seals").select(PoolState(scorer=scorer, labelled=lab,
                                                                          probabilities=p), 10, seed=0))
    make_strategy("random").select(state, 5, seed=0)  # reads unlabelled_ids(): mask now built
    assert np.array_equal(state.__dict__["_mask"], lab)
    scorer.label(ids)  # the state is a snapshot of the round it was built for
    assert np.array_equal(state.labelled, lab)
