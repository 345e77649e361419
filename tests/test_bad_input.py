"""Every cell of the bad-input table in docs/reliability.md.

Each case builds a fresh object, snapshots its observable state, makes one bad call and
checks: the documented exception type, a message that names the argument and the bad
value and says what to do, and the same state afterwards. The ``CASES`` list *is* the
table: ``test_table_in_docs_lists_every_case`` checks that every (api, kind) pair here
has a row in the doc.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

import numpy as np
import pytest

import socbi
from socbi import SemiOrderedIndex
from socbi.knn import ExactPool
from socbi.scoring import BoundaryScorer
from socbi.strategies import PoolState, make_strategy

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"

# words that introduce the fix (what to pass instead) in an error message
FIX = re.compile(r"\b(pass|use|ask|insert|create|convert|keep|choose|drop|label|set|call|add|"
                 r"must|expected|leave|fill|restore|reshape|map|at most|at least|lie in|"
                 r"should|one of|start)\b", re.I)


class Case(NamedTuple):
    api: str            # table row group, e.g. "SemiOrderedIndex.update"
    kind: str           # one of KINDS
    make: Callable[[], Any]
    call: Callable[[Any], Any]
    exc: type
    words: Sequence[str]  # substrings the message must hold (argument name, bad value)
    snap: Optional[Callable[[Any], Any]] = None  # state snapshot; None: nothing to compare


KINDS = ("wrong type", "wrong dtype", "wrong shape", "NaN/inf", "out of range", "duplicate",
         "absent", "empty", "too large")


# ------------------------------------------------------------------ objects and snapshots
def _index() -> SemiOrderedIndex:
    idx = SemiOrderedIndex(100)
    idx.insert(np.arange(0, 50), np.arange(50, dtype=float))
    return idx


def _big_index() -> SemiOrderedIndex:
    idx = _index()
    idx.insert(60, 1.5e308)
    return idx


def _snap_index(idx: SemiOrderedIndex) -> Any:
    idx.check()
    ids, sc = idx.items()
    return (len(idx), ids.tolist(), sc.tolist())


_DIGITS: List[np.ndarray] = []


def _digits() -> tuple:
    if not _DIGITS:
        from sklearn.datasets import load_digits
        d = load_digits()
        _DIGITS.extend([d.data[:120].astype(np.float32), d.target[:120].astype(np.int64)])
    return _DIGITS[0], _DIGITS[1]


def _pool() -> ExactPool:
    x, _ = _digits()
    p = ExactPool(x.shape[1], 120)
    p.add(np.arange(100), x[:100])
    p.mark_labelled([0, 1, 2])
    return p


def _snap_pool(p: ExactPool) -> Any:
    return (len(p), p.state.tolist())


def _labelled_ids() -> np.ndarray:
    _, y = _digits()
    return np.array([int(np.flatnonzero(y == c)[0]) for c in range(10)])


def _scorer() -> BoundaryScorer:
    x, _ = _digits()
    return BoundaryScorer(x, 5, labelled=_labelled_ids(), backend="exact", progress=False)


def _snap_scorer(s: BoundaryScorer) -> Any:
    s.check()
    return (s.labelled_ids().tolist(), s.counts().tolist())


def _learner() -> Any:
    x, y = _digits()
    lab = np.full(x.shape[0], -1)
    li = _labelled_ids()
    lab[li] = y[li]
    return socbi.ActiveLearner(x, lab, strategy="lc_socbi", k=5, backend="exact", progress=False,
                               class_names=[str(c) for c in range(10)])


def _snap_learner(al: Any) -> Any:
    al.check()
    return (al.labels.tolist(), al.round, al.pending, len(al.log))


def _state() -> PoolState:
    x, y = _digits()
    lab = np.zeros(x.shape[0], bool)
    lab[_labelled_ids()] = True
    p = np.full((x.shape[0], 3), 1 / 3)
    return PoolState(labelled=lab, embeddings=x, probabilities=p)


def _snap_state(st: PoolState) -> Any:
    return st.labelled.tolist()


def _nothing() -> None:
    return None


x_digits = lambda: _digits()[0]  # noqa: E731


def _ctor(f: Callable[[], Any]) -> Callable[[Any], Any]:
    return lambda _: f()


# ------------------------------------------------------------------ the table
I, S, P, L, T = _index, _snap_index, _pool, _learner, _state
CASES: List[Case] = [
    # ---- SemiOrderedIndex constructor
    Case("SemiOrderedIndex()", "wrong type", _nothing, _ctor(lambda: SemiOrderedIndex("10")), TypeError, ["capacity", "'10'"]),
    Case("SemiOrderedIndex()", "wrong dtype", _nothing, _ctor(lambda: SemiOrderedIndex(10.0)), TypeError, ["capacity", "10.0"]),
    Case("SemiOrderedIndex()", "NaN/inf", _nothing, _ctor(lambda: SemiOrderedIndex(10, bulk_fraction=float("nan"))), ValueError, ["bulk_fraction", "nan"]),
    Case("SemiOrderedIndex()", "out of range", _nothing, _ctor(lambda: SemiOrderedIndex(0)), ValueError, ["capacity", "0"]),
    Case("SemiOrderedIndex()", "out of range", _nothing, _ctor(lambda: SemiOrderedIndex(10, node_size=3)), ValueError, ["node_size", "3"]),
    Case("SemiOrderedIndex()", "too large", _nothing, _ctor(lambda: SemiOrderedIndex(socbi.MAX_CAPACITY + 1)), ValueError, ["capacity", str(socbi.MAX_CAPACITY + 1)]),
    # ---- insert
    Case("SemiOrderedIndex.insert", "wrong type", I, lambda o: o.insert("a", 1.0), TypeError, ["ids", "'a'"], S),
    Case("SemiOrderedIndex.insert", "wrong type", I, lambda o: o.insert(60, "x"), TypeError, ["scores"], S),
    Case("SemiOrderedIndex.insert", "wrong dtype", I, lambda o: o.insert(np.array([60.5]), 1.0), TypeError, ["ids", "float64"], S),
    Case("SemiOrderedIndex.insert", "wrong shape", I, lambda o: o.insert(np.array([[60, 61]]), 1.0), ValueError, ["ids", "(1, 2)"], S),
    Case("SemiOrderedIndex.insert", "wrong shape", I, lambda o: o.insert([60, 61], [1.0, 2.0, 3.0]), ValueError, ["scores", "length 3"], S),
    Case("SemiOrderedIndex.insert", "NaN/inf", I, lambda o: o.insert([60, 61], [1.0, np.nan]), ValueError, ["scores[1]", "nan"], S),
    Case("SemiOrderedIndex.insert", "out of range", I, lambda o: o.insert([60, 100], 1.0), ValueError, ["ids[1]", "100"], S),
    Case("SemiOrderedIndex.insert", "out of range", I, lambda o: o.insert([-1], 1.0), ValueError, ["ids[0]", "-1"], S),
    Case("SemiOrderedIndex.insert", "duplicate", I, lambda o: o.insert([60, 60], 1.0), ValueError, ["ids", "60"], S),
    Case("SemiOrderedIndex.insert", "duplicate", I, lambda o: o.insert([60, 3], 1.0), ValueError, ["ids[1]", "3"], S),
    Case("SemiOrderedIndex.insert", "too large", I, lambda o: o.insert(2**70, 1.0), ValueError, ["ids", str(2**70)], S),
    # ---- update / assign
    Case("SemiOrderedIndex.update", "wrong type", I, lambda o: o.update(None, 1.0), TypeError, ["ids", "None"], S),
    Case("SemiOrderedIndex.update", "wrong type", I, lambda o: o.update([1], 1.0, bulk="yes"), TypeError, ["bulk", "'yes'"], S),
    Case("SemiOrderedIndex.update", "wrong dtype", I, lambda o: o.update([1], np.array(["a"])), TypeError, ["deltas", "<U1"], S),
    Case("SemiOrderedIndex.update", "wrong shape", I, lambda o: o.update([1, 2], np.ones((2, 1))), ValueError, ["deltas", "2-D"], S),
    Case("SemiOrderedIndex.update", "NaN/inf", I, lambda o: o.update([1, 2], [1.0, np.inf]), ValueError, ["deltas[1]", "inf"], S),
    Case("SemiOrderedIndex.update", "out of range", I, lambda o: o.update([1], 1.0, threads=-5), ValueError, ["threads", "-5"], S),
    Case("SemiOrderedIndex.update", "absent", I, lambda o: o.update([1, 70], 1.0), KeyError, ["ids[1]", "70"], S),
    Case("SemiOrderedIndex.update", "too large", _big_index, lambda o: o.update([1, 60], [1.0, 1e308]), ValueError, ["deltas[1]", "1e+308", "60"], S),
    Case("SemiOrderedIndex.assign", "duplicate", I, lambda o: o.assign([1, 1], 2.0), ValueError, ["ids", "1"], S),
    Case("SemiOrderedIndex.assign", "absent", I, lambda o: o.assign([99], 2.0), KeyError, ["ids[0]", "99"], S),
    Case("SemiOrderedIndex.assign", "NaN/inf", I, lambda o: o.assign([1], float("-inf")), ValueError, ["scores", "-inf"], S),
    # ---- erase / score / top / bottom
    Case("SemiOrderedIndex.erase", "absent", I, lambda o: o.erase([0, 80]), KeyError, ["ids[1]", "80"], S),
    Case("SemiOrderedIndex.erase", "duplicate", I, lambda o: o.erase([4, 4]), ValueError, ["ids", "4"], S),
    Case("SemiOrderedIndex.erase", "wrong dtype", I, lambda o: o.erase([True]), TypeError, ["ids", "bool"], S),
    Case("SemiOrderedIndex.score", "absent", I, lambda o: o.score(77), KeyError, ["ids[0]", "77"], S),
    Case("SemiOrderedIndex.top", "wrong type", I, lambda o: o.top("3"), TypeError, ["n", "'3'"], S),
    Case("SemiOrderedIndex.top", "wrong dtype", I, lambda o: o.top(2.0), TypeError, ["n", "2.0"], S),
    Case("SemiOrderedIndex.bottom", "out of range", I, lambda o: o.bottom(-1), ValueError, ["n", "-1"], S),
    # ---- knn pools
    Case("ExactPool()", "out of range", _nothing, _ctor(lambda: ExactPool(0, 10)), ValueError, ["dim", "0"]),
    Case("ExactPool()", "wrong type", _nothing, _ctor(lambda: ExactPool(8, 10, space=3)), ValueError, ["space", "3"]),
    Case("ExactPool.add", "wrong dtype", P, lambda o: o.add(["a"], x_digits()[:1]), ValueError, ["ids", "<U1"], _snap_pool),
    Case("ExactPool.add", "wrong shape", P, lambda o: o.add([110], np.zeros((1, 5))), ValueError, ["embeddings", "dimension 5"], _snap_pool),
    Case("ExactPool.add", "wrong shape", P, lambda o: o.add([110, 111], x_digits()[:3]), ValueError, ["embeddings", "3 rows"], _snap_pool),
    Case("ExactPool.add", "NaN/inf", P, lambda o: o.add([110], np.full((1, 64), np.nan)), ValueError, ["embeddings", "NaN"], _snap_pool),
    Case("ExactPool.add", "out of range", P, lambda o: o.add([120], x_digits()[:1]), ValueError, ["ids", "120"], _snap_pool),
    Case("ExactPool.add", "duplicate", P, lambda o: o.add([110, 110], x_digits()[:2]), ValueError, ["ids", "110"], _snap_pool),
    Case("ExactPool.add", "duplicate", P, lambda o: o.add([5], x_digits()[:1]), ValueError, ["ids", "5"], _snap_pool),
    Case("ExactPool.mark_labelled", "absent", P, lambda o: o.mark_labelled([5, 115]), ValueError, ["ids", "115"], _snap_pool),
    Case("ExactPool.unmark_labelled", "absent", P, lambda o: o.unmark_labelled([5]), ValueError, ["ids", "5"], _snap_pool),
    Case("ExactPool.query", "wrong type", P, lambda o: o.query(x_digits()[:1], "3"), ValueError, ["k", "'3'"], _snap_pool),
    Case("ExactPool.query", "too large", P, lambda o: o.query(x_digits()[:1], 98), ValueError, ["k=98", "97"], _snap_pool),
    Case("ExactPool.query", "empty", P, lambda o: o.query(x_digits()[:1], 0), ValueError, ["k", "0"], _snap_pool),
    Case("load_pool", "absent", _nothing, _ctor(lambda: __import__("socbi.knn").knn.load_pool("no/such/pool")), FileNotFoundError, ["no/such/pool"]),
    # ---- BoundaryScorer
    Case("BoundaryScorer()", "empty", _nothing, _ctor(lambda: BoundaryScorer(np.zeros((0, 4)))), ValueError, ["embeddings", "no rows"]),
    Case("BoundaryScorer()", "NaN/inf", _nothing, _ctor(lambda: BoundaryScorer(np.array([[1.0, np.inf]]), 1)), ValueError, ["embeddings", "NaN or inf", "[0]"]),
    Case("BoundaryScorer()", "wrong shape", _nothing, _ctor(lambda: BoundaryScorer(np.zeros(5))), ValueError, ["embeddings", "(5,)"]),
    Case("BoundaryScorer()", "wrong type", _nothing, _ctor(lambda: BoundaryScorer(x_digits(), k="5")), ValueError, ["k", "'5'"]),
    Case("BoundaryScorer()", "out of range", _nothing, _ctor(lambda: BoundaryScorer(x_digits(), k=0)), ValueError, ["k", "0"]),
    Case("BoundaryScorer()", "wrong shape", _nothing, _ctor(lambda: BoundaryScorer(x_digits(), labelled=np.zeros(5, bool))), ValueError, ["labelled", "(5,)"]),
    Case("BoundaryScorer.label", "duplicate", _scorer, lambda o: o.label([50, 50]), ValueError, ["ids", "50"], _snap_scorer),
    Case("BoundaryScorer.label", "out of range", _scorer, lambda o: o.label([500]), ValueError, ["ids", "500"], _snap_scorer),
    Case("BoundaryScorer.label", "duplicate", _scorer, lambda o: o.label([int(_labelled_ids()[0])]), ValueError, ["ids", str(int(_labelled_ids()[0])), "labelled already"], _snap_scorer),
    Case("BoundaryScorer.label", "wrong dtype", _scorer, lambda o: o.label([1.5]), ValueError, ["ids", "1.5"], _snap_scorer),
    Case("BoundaryScorer.select", "too large", _scorer, lambda o: o.select(111), ValueError, ["n=111", "110"], _snap_scorer),
    Case("BoundaryScorer.select", "out of range", _scorer, lambda o: o.select(-2), ValueError, ["n", "-2"], _snap_scorer),
    Case("BoundaryScorer.counts", "absent", _scorer, lambda o: o.counts([int(_labelled_ids()[1])]), ValueError, ["ids", str(int(_labelled_ids()[1]))], _snap_scorer),
    # ---- strategies
    Case("PoolState()", "wrong shape", _nothing, _ctor(lambda: PoolState(labelled=np.zeros(5, bool), embeddings=x_digits())), ValueError, ["labelled", "5 rows", "120"]),
    # probabilities are checked in the pass that reads them (issue 15), so select raises
    Case("Strategy.select", "NaN/inf", _nothing, _ctor(lambda: make_strategy("margin").select(PoolState(labelled=np.zeros(2, bool), probabilities=[[np.nan, 1.0], [0.5, 0.5]]), 1)), ValueError, ["probabilities", "NaN", "[0]"]),
    Case("Strategy.select", "out of range", _nothing, _ctor(lambda: make_strategy("margin").select(PoolState(labelled=np.zeros(1, bool), probabilities=[[1.5, -0.5]]), 1)), ValueError, ["probabilities", "outside [0, 1]"]),
    Case("make_strategy", "absent", _nothing, _ctor(lambda: make_strategy("nope")), ValueError, ["strategy", "'nope'"]),
    Case("Strategy.select", "wrong type", T, lambda o: make_strategy("random").select(o, "3"), ValueError, ["n", "'3'"], _snap_state),
    Case("Strategy.select", "too large", T, lambda o: make_strategy("random").select(o, 200), ValueError, ["n=200", "110"], _snap_state),
    Case("Strategy.select", "out of range", T, lambda o: make_strategy("random").select(o, 3, seed=-1), ValueError, ["seed", "-1"], _snap_state),
    Case("Strategy.select", "absent", T, lambda o: make_strategy("socbi").select(o, 3), ValueError, ["scorer"], _snap_state),
    # ---- ActiveLearner
    Case("ActiveLearner()", "wrong shape", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), np.zeros(5), progress=False)), ValueError, ["labels", "(5,)"]),
    Case("ActiveLearner()", "wrong dtype", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), np.full(120, "a"), progress=False)), ValueError, ["labels", "<U1"]),
    Case("ActiveLearner()", "out of range", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), np.full(120, -3), progress=False)), ValueError, ["labels[0]", "-3"]),
    Case("ActiveLearner()", "NaN/inf", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), np.full(120, np.nan), progress=False)), ValueError, ["labels[0]", "nan"]),
    Case("ActiveLearner()", "absent", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), strategy="best", progress=False)), ValueError, ["strategy", "'best'"]),
    Case("ActiveLearner()", "out of range", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), budget=1.5, progress=False)), ValueError, ["budget", "1.5"]),
    Case("ActiveLearner()", "wrong type", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), features=5, progress=False)), ValueError, ["features", "int"]),
    Case("ActiveLearner()", "wrong type", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), sources=5, progress=False)), ValueError, ["sources", "int"]),
    Case("ActiveLearner()", "wrong type", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), class_names=5, progress=False)), ValueError, ["class_names", "int"]),
    Case("ActiveLearner()", "wrong type", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), eval_set=(5, [1]), progress=False)), ValueError, ["eval_set[0]", "int"]),
    Case("ActiveLearner()", "too large", _nothing, _ctor(lambda: socbi.ActiveLearner(x_digits(), k=10**9, progress=False)), ValueError, ["k=1000000000", "120"]),
    Case("BoundaryScorer()", "too large", _nothing, _ctor(lambda: BoundaryScorer(x_digits(), k=121)), ValueError, ["k=121", "120"]),
    Case("ActiveLearner.source", "out of range", L, lambda o: o.source(120), ValueError, ["i", "120"], _snap_learner),
    Case("PoolState()", "wrong type", _nothing, _ctor(lambda: PoolState(labelled=np.zeros(120, bool), features=5)), ValueError, ["features", "int"]),
    Case("make_strategy", "wrong type", _nothing, _ctor(lambda: make_strategy("random", foo=1)), TypeError, ["options", "'foo'", "'random'"]),
    Case("ActiveLearner.query", "wrong type", L, lambda o: o.query("5"), ValueError, ["n", "'5'"], _snap_learner),
    Case("ActiveLearner.query", "empty", L, lambda o: o.query(0), ValueError, ["n", "0"], _snap_learner),
    Case("ActiveLearner.query", "too large", L, lambda o: o.query(111), ValueError, ["n=111", "110"], _snap_learner),
    Case("ActiveLearner.teach", "empty", L, lambda o: o.teach([], []), ValueError, ["ids", "empty"], _snap_learner),
    Case("ActiveLearner.teach", "wrong shape", L, lambda o: o.teach([50, 51], [1]), ValueError, ["labels", "(1,)", "2 ids"], _snap_learner),
    Case("ActiveLearner.teach", "out of range", L, lambda o: o.teach([50], [-1]), ValueError, ["label", "50", "-1"], _snap_learner),
    Case("ActiveLearner.teach", "out of range", L, lambda o: o.teach([50], [12]), ValueError, ["label", "12", "class_names"], _snap_learner),
    Case("ActiveLearner.teach", "out of range", L, lambda o: o.teach([500], [1]), ValueError, ["ids", "500"], _snap_learner),
    Case("ActiveLearner.teach", "duplicate", L, lambda o: o.teach([50, 50], [1, 1]), ValueError, ["ids", "50"], _snap_learner),
    Case("ActiveLearner.teach", "duplicate", L, lambda o: o.teach([int(_labelled_ids()[2])], [2]), ValueError, ["ids", str(int(_labelled_ids()[2])), "labelled already"], _snap_learner),
    Case("ActiveLearner.teach", "wrong dtype", L, lambda o: o.teach([50], ["eleven"]), ValueError, ["label", "'eleven'", "class_names"], _snap_learner),
    Case("ActiveLearner.teach", "NaN/inf", L, lambda o: o.teach([50], [np.nan]), ValueError, ["labels[0]", "nan"], _snap_learner),
    Case("ActiveLearner.load", "absent", _nothing, _ctor(lambda: socbi.ActiveLearner.load("no/such.socbi")), ValueError, ["no/such.socbi", "save()"]),
]


def _case_id(c: Case) -> str:
    return f"{c.api}-{c.kind}-{'/'.join(c.words)[:30]}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input(case: Case) -> None:
    obj = case.make()
    before = case.snap(obj) if case.snap else None
    with pytest.raises(case.exc) as ei:
        case.call(obj)
    msg = str(ei.value.args[0]) if ei.value.args else str(ei.value)
    for w in case.words:
        assert w in msg, f"message {msg!r} does not mention {w!r}"
    assert FIX.search(msg), f"message {msg!r} does not say what to do"
    if case.snap:
        assert case.snap(obj) == before, "the object changed although the call was refused"


def test_update_sum_overflow_saturates() -> None:
    """Each delta is checked alone; a sum of repeats (or of concurrent calls) that overflows
    saturates at +/-DBL_MAX as the header documents -- never inf, and check() holds."""
    idx = _index()
    idx.update([1, 1], [1.7e308, 1.7e308])
    assert idx.score(1) == np.finfo(np.float64).max
    idx.update([2, 2], [-1.7e308, -1.7e308])
    assert idx.score(2) == -np.finfo(np.float64).max
    idx.check()


# ------------------------------------------------------------------ labelling import
def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


IMPORT_CASES = [
    ("wrong type", "b.csv", "id,label\nabc,1\n", ["line 2", "'abc'", "not an integer"]),
    ("wrong dtype", "b.csv", "id,label\n{id},x\n", ["{id}", "'x'"]),
    ("wrong shape", "b.csv", "idx,lab\n1,2\n", ["'id'", "column"]),
    ("wrong shape", "b.json", "{{\"items\": 3}}", ["expected a list"]),
    ("NaN/inf", "b.csv", "id,label\n{id},nan\n", ["{id}", "nan"]),
    ("out of range", "b.csv", "id,label\n{id},-2\n", ["{id}", "-2"]),
    ("out of range", "b.csv", "id,label\n999,1\n", ["unknown id 999", "0..119"]),
    ("duplicate", "b.csv", "id,label\n{id},1\n{id},1\n", ["duplicate id {id}", "line 2"]),
    ("absent", "b.csv", "id,label\n", ["no rows"]),
    ("absent", "b.csv", "id,label\n{id},\n", ["{id}", "no label"]),
    ("empty", "b.csv", "", ["empty"]),
    ("too large", "b.csv", "id,label\n{id},10\n", ["{id}", "10"]),
]


@pytest.mark.parametrize("kind,name,text,words", IMPORT_CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(IMPORT_CASES)])
def test_import_labels_bad_file(tmp_path: Path, kind: str, name: str, text: str, words: List[str]) -> None:
    al = _learner()
    free = int(al.unlabelled_ids[0])
    before = _snap_learner(al)
    path = _write(tmp_path, name, text.format(id=free))
    with pytest.raises(ValueError) as ei:
        al.import_labels(path)
    msg = str(ei.value)
    assert name in msg
    for w in words:
        assert w.format(id=free) in msg, f"{msg!r} lacks {w!r}"
    assert _snap_learner(al) == before


def test_import_labels_not_in_pending_batch(tmp_path: Path) -> None:
    al = _learner()
    ids = al.query(3)
    other = int(np.setdiff1d(al.unlabelled_ids, ids)[0])
    before = _snap_learner(al)
    path = _write(tmp_path, "b.csv", "id,label\n" + "".join(f"{i},1\n" for i in ids) + f"{other},1\n")
    with pytest.raises(ValueError, match=f"unknown id {other}: it was not in the exported batch"):
        al.import_labels(path)
    path = _write(tmp_path, "c.csv", f"id,label\n{int(ids[0])},1\n")
    with pytest.raises(ValueError, match="have no row.*allow_partial"):
        al.import_labels(path)
    assert _snap_learner(al) == before


def test_import_labels_absent_file(tmp_path: Path) -> None:
    al = _learner()
    with pytest.raises(FileNotFoundError, match="no labels file at .*missing.csv"):
        al.import_labels(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="suffix .xls.*fmt="):
        al.import_labels(tmp_path / "b.xls")


# ------------------------------------------------------------------ CLI exit-2 paths
def _select_args(tmp_path: Path, x: Any = None, y: Any = None, extra: Sequence[str] = ()) -> List[str]:
    xd, yd = _digits()
    lab = np.full(120, -1)
    lab[_labelled_ids()] = yd[_labelled_ids()]
    xp, yp = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(xp, xd if x is None else x)
    np.save(yp, lab if y is None else y)
    return ["select", "--embeddings", str(xp), "--labels", str(yp), "--n", "5", "--backend", "exact",
            "--no-progress", *extra]


CLI_CASES = [
    ("select", "wrong shape", lambda t: _select_args(t, x=np.zeros(120)), ["--embeddings", "(120,)"]),
    ("select", "wrong shape", lambda t: _select_args(t, y=np.zeros(7)), ["--labels", "7"]),
    ("select", "wrong dtype", lambda t: _select_args(t, y=np.full(120, 0.5)), ["--labels[0]", "0.5"]),
    ("select", "NaN/inf", lambda t: _select_args(t, x=np.full((120, 3), np.inf)), ["--embeddings", "NaN/inf"]),
    ("select", "out of range", lambda t: _select_args(t, extra=["--n", "0"]), ["--n 0", "[1, 110]"]),
    ("select", "too large", lambda t: _select_args(t, extra=["--n", "1000"]), ["--n 1000", "[1, 110]"]),
    ("select", "out of range", lambda t: _select_args(t, extra=["--k", "0"]), ["--k 0"]),
    ("select", "absent", lambda t: ["select", "--embeddings", str(t / "none.npy"), "--labels", "y.npy", "--n", "1"], ["--embeddings", "none.npy"]),
    ("select", "absent", lambda t: _select_args(t, extra=["--strategy", "best"]), ["'best'"]),
    ("select", "empty", lambda t: _select_args(t, y=np.zeros(120, int)), ["--labels", "no -1"]),
    ("select", "wrong type", lambda t: _select_args(t, extra=["--out", str(t / "o.txt")]), ["--out", "o.txt", ".csv"]),
    ("select", "absent", lambda t: _select_args(t, extra=["--out", str(t / "nodir" / "o.csv")]), ["--out", "does not exist; create it first"]),
    ("select", "wrong type", lambda t: _select_args(t, extra=["--candidate-factor", "2", "--strategy", "random"]), ["--candidate-factor", "random"]),
    ("select", "absent", lambda t: _select_args(t, extra=["--save-session", str(t / "nodir" / "s.socbi")]), ["--save-session", "nodir", "does not exist"]),
    ("embed", "absent", lambda t: ["embed", str(t / "none.npy"), "-o", str(t / "e.npy")], ["none.npy", "no such file"]),
    ("embed", "wrong type", lambda t: ["embed", str(t / "x.npy"), "-o", str(t / "e.txt")], ["--output", "e.txt", ".npy"]),
    ("run", "absent", lambda t: ["run", str(t / "none.toml")], ["none.toml"]),
    ("demo", "out of range", lambda t: ["demo", "--seeds", "0"], ["seeds"]),
    ("curate", "absent", lambda t: ["curate", str(t / "none.npy"), "--out", str(t / "o")], ["none.npy"]),
]


@pytest.mark.parametrize("cmd,kind,argv,words", CLI_CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CLI_CASES)])
def test_cli_exit_2(tmp_path: Path, capsys: Any, cmd: str, kind: str, argv: Any, words: List[str]) -> None:
    from socbi.cli import main

    (tmp_path / "x.npy").write_bytes(b"")
    args = argv(tmp_path)
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert out == "", "a failing command must not print a partial result"
    assert err.startswith(f"socbi {cmd}: error:"), err
    for w in words:
        assert w in err, f"{err!r} lacks {w!r}"


def test_cli_argparse_type_errors_exit_2(capsys: Any) -> None:
    from socbi.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["select", "--embeddings", "x.npy", "--labels", "y.npy", "--n", "five"])
    assert ei.value.code == 2
    assert "--n: invalid int value: 'five'" in capsys.readouterr().err


# ------------------------------------------------------------------ the doc lists every cell
def test_table_in_docs_lists_every_case() -> None:
    text = DOC.read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1] in KINDS:
            rows.setdefault(cells[0], set()).add(cells[1])
    missing = sorted({(c.api, c.kind) for c in CASES} - {(a, k) for a, ks in rows.items() for k in ks})
    assert not missing, f"docs/reliability.md has no row for {missing}"
    for cmd, kind, _, _ in CLI_CASES:
        assert kind in rows.get(f"socbi {cmd}", set()), f"no row for socbi {cmd} / {kind}"
    for kind, *_ in IMPORT_CASES:
        assert kind in rows.get("ActiveLearner.import_labels", set()), f"no import_labels row for {kind}"


def test_threads_zero_is_refused_by_every_writer() -> None:
    """One threads rule (socbi._threads): a positive count or -1; 0 was accepted by update."""
    idx = _index()
    before = (len(idx), idx.top(len(idx))) if len(idx) else (0, None)
    for call in (lambda: idx.update([1], [1.0], threads=0), lambda: idx.insert([99], [1.0], threads=0),
                 lambda: idx.assign([1], [1.0], threads=0)):
        with pytest.raises(ValueError, match=r"threads = 0 is invalid; pass a positive count, or -1"):
            call()
    after = (len(idx), idx.top(len(idx))) if len(idx) else (0, None)
    assert repr(before) == repr(after)
    idx.update([1], [1.0], threads=-1)
    idx.check()
