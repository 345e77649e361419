"""Differential fuzzing of SemiOrderedIndex operation sequences (pure-Python, atheris-style).

Each execution decodes a byte string into an index configuration and a sequence of up to
64 operations (insert, update, assign, erase, score, top, bottom, contains, items, with
valid and invalid arguments: absent/present/repeated/out-of-range ids, NaN/inf/overflowing
values, threads 1-4, forced bulk paths). Every operation is mirrored on a dict model:

* a call the model says is valid must succeed and leave the index equal to the model;
* a call the model says is invalid must raise ValueError/KeyError/TypeError and leave
  the index unchanged;
* ``check()`` runs after every operation; top/bottom must equal the model's order.

Bytes come from a seeded generator (or a file/corpus, see ``python tests/test_fuzz.py -h``),
so a failure prints the seed that reproduces it. In the test suite the run is bounded by
``SOCBI_FUZZ_SECONDS`` (default 15 s); longer runs: ``python tests/test_fuzz.py --seconds 600``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from socbi import SemiOrderedIndex

DBL_MAX = float(np.finfo(np.float64).max)
STATS = {"refused": 0}


class Bytes:
    """Consumes a byte string like atheris' FuzzedDataProvider (zeros when exhausted)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, lo: int, hi: int) -> int:  # inclusive
        span = hi - lo + 1
        v = self.byte() | (self.byte() << 8)
        return lo + v % span

    def left(self) -> bool:
        return self.pos < len(self.data)


def _ids(b: Bytes, cap: int, present: List[int], n: int) -> List[int]:
    out = []
    junk = b.byte() % 8 == 0  # one call in eight may carry bad ids
    for _ in range(n):
        r = b.byte() % (16 if junk else 14)
        if r < 12 and present:
            out.append(present[b.int(0, len(present) - 1)])
        elif r < 14:
            out.append(b.int(0, cap - 1))
        elif r == 14:
            out.append(cap + b.byte())  # out of range
        else:
            out.append(-1 - b.byte() % 3)  # negative
    return out


def _value(b: Bytes, huge_ok: bool, junk: bool = True) -> float:
    r = b.byte() % 32 if junk else 3
    if r == 0:
        return float("nan")
    if r == 1:
        return float("inf") if b.byte() & 1 else float("-inf")
    if r == 3:
        return float(b.int(-20, 20))
    if r == 2 and huge_ok:
        return 1e308 if b.byte() & 1 else -1e308
    return float(b.int(-20, 20))


def _expect_top(model: Dict[int, float], n: int, top: bool) -> List[Tuple[int, float]]:
    items = sorted(model.items(), key=lambda kv: (kv[1], kv[0]), reverse=top)
    return items[:n]


def run_one(data: bytes) -> int:
    """One execution; returns the number of operations run. Raises AssertionError on a bug."""
    b = Bytes(data)
    cap = b.int(1, 300)
    node = [8, 8, 16, 64][b.byte() % 4]
    frac = [0.0, 0.25, 1.0, 0.05][b.byte() % 4]
    idx = SemiOrderedIndex(cap, node_size=node, bulk_fraction=frac)
    model: Dict[int, float] = {}
    ops = 0
    while b.left() and ops < 64:
        ops += 1
        op = b.byte() % 10
        present = sorted(model)
        n = b.int(0, 40) if b.byte() % 8 else b.int(0, 400)
        threads = 1 + b.byte() % 4
        bulk: Optional[bool] = [None, None, True, False][b.byte() % 4]
        before = dict(model)
        valid = True
        try:
            if op in (0, 1):  # insert
                ids = _ids(b, cap, present, n)
                if b.byte() % 4:  # mostly clean: new, distinct ids
                    ids = list(dict.fromkeys(i for i in ids if 0 <= i < cap and i not in model))
                junk = b.byte() % 8 == 0
                vals = [_value(b, False, junk) for _ in ids]
                valid = (all(0 <= i < cap for i in ids) and len(set(ids)) == len(ids)
                         and not any(i in model for i in ids) and all(np.isfinite(vals)))
                idx.insert(np.asarray(ids, np.int64), np.asarray(vals), threads=threads, bulk=bulk)
                for i, v in zip(ids, vals):
                    model[i] = v
            elif op in (2, 3):  # update, repeats allowed
                ids = _ids(b, cap, present, n)
                single = len(ids) == 1
                junk = b.byte() % 8 == 0
                vals = [_value(b, single, junk) for _ in ids]
                valid = all(0 <= i < cap for i in ids) and all(np.isfinite(vals)) and all(i in model for i in ids)
                if valid and single:
                    valid = bool(np.isfinite(model[ids[0]] + vals[0]))
                idx.update(np.asarray(ids, np.int64), np.asarray(vals), threads=threads, bulk=bulk)
                for i, v in zip(ids, vals):
                    model[i] = float(np.clip(model[i] + v, -DBL_MAX, DBL_MAX))
            elif op == 4:  # assign
                ids = _ids(b, cap, present, n)
                if b.byte() % 4:
                    ids = list(dict.fromkeys(ids))
                junk = b.byte() % 8 == 0
                vals = [_value(b, False, junk) for _ in ids]
                valid = (all(0 <= i < cap for i in ids) and len(set(ids)) == len(ids)
                         and all(i in model for i in ids) and all(np.isfinite(vals)))
                idx.assign(np.asarray(ids, np.int64), np.asarray(vals), threads=threads, bulk=bulk)
                for i, v in zip(ids, vals):
                    model[i] = v
            elif op == 5:  # erase
                ids = _ids(b, cap, present, min(n, 60))
                if b.byte() % 4:
                    ids = list(dict.fromkeys(i for i in ids if i in model))
                valid = (all(0 <= i < cap for i in ids) and len(set(ids)) == len(ids)
                         and all(i in model for i in ids))
                idx.erase(np.asarray(ids, np.int64))
                for i in ids:
                    del model[i]
            elif op in (6, 7):  # top / bottom
                k = n if b.byte() % 8 else -1
                valid = k >= 0
                got = idx.top(k) if op == 6 else idx.bottom(k)
                exp = _expect_top(model, k, op == 6)
                assert list(zip(got[0].tolist(), got[1].tolist())) == exp, (op, k, got, exp)
            elif op == 8:  # score / contains
                ids = _ids(b, cap, present, max(1, n % 8))
                valid = all(0 <= i < cap for i in ids) and all(i in model for i in ids)
                s = idx.score(np.asarray(ids, np.int64))
                assert s.tolist() == [model[i] for i in ids]
                for i in ids:
                    assert (i in idx) == (i in model)
            else:  # whole content
                ids, sc = idx.items()
                assert dict(zip(ids.tolist(), sc.tolist())) == model
                assert len(idx) == len(model)
        except (ValueError, KeyError, TypeError) as exc:
            assert not valid, f"op {op} raised {exc!r} but the model says it is valid"
            model = before
            STATS["refused"] += 1
        else:
            assert valid, f"op {op} succeeded but the model says it is invalid"
        idx.check()
        ids, sc = idx.items()
        assert len(idx) == len(model)
        assert dict(zip(ids.tolist(), sc.tolist())) == model, f"index and model differ after op {op}"
    return ops


def fuzz(seconds: float, seed: int = 0, max_len: int = 2048) -> Tuple[int, int]:
    """Run executions for ``seconds``; returns (executions, operations)."""
    rng = np.random.default_rng(seed)
    end = time.monotonic() + seconds
    execs = ops = 0
    while time.monotonic() < end:
        s = int(rng.integers(0, 2**63 - 1))
        data = np.random.default_rng(s).integers(0, 256, int(rng.integers(8, max_len))).astype(np.uint8).tobytes()
        try:
            ops += run_one(data)
        except AssertionError as exc:
            raise AssertionError(f"fuzz failure, reproduce with run_one(<bytes of seed {s}>): {exc}") from exc
        execs += 1
    return execs, ops


def _data_of_seed(s: int, n: int) -> bytes:
    return np.random.default_rng(s).integers(0, 256, n).astype(np.uint8).tobytes()


def test_fuzz_index_bounded() -> None:
    seconds = float(os.environ.get("SOCBI_FUZZ_SECONDS", "15"))
    execs, ops = fuzz(seconds, seed=int(os.environ.get("SOCBI_FUZZ_SEED", "0")))
    print(f"\nfuzz: {execs} executions, {ops} operations ({STATS['refused']} refused) in {seconds:.0f} s")
    assert execs > 0


def test_fuzz_regressions() -> None:
    """Hand-picked byte strings: forced bulk on a tiny index, huge deltas, out-of-range ids."""
    for data in (b"", b"\x01\x00\x00\x00" + b"\x02" * 200, bytes(range(256)) * 4, b"\xff" * 512):
        run_one(data)


# ------------------------------------------------------------------ concurrent mixes
import threading  # noqa: E402

import pytest  # noqa: E402


@pytest.mark.parametrize("threads", [2, 4, 8, 16])
def test_python_threads_mixing_every_mutation(threads: int) -> None:
    """Python threads (GIL released inside each call) mix update, assign, insert, erase,
    top and bottom for a fixed number of operations. Shared ids only get integer
    increments from every thread; each thread assigns, inserts and erases in its own id
    range. After joining: each shared score equals the exact sum applied, each owned id
    holds what its thread last wrote, no id is lost or duplicated, check() passes; every
    concurrent query was sorted and free of duplicate ids."""
    shared, per = 1000, 200
    cap = shared + threads * per
    idx = SemiOrderedIndex(cap, node_size=16)
    idx.insert(np.arange(shared), 0.0)
    applied = np.zeros((threads, shared), np.int64)
    owned: List[Dict[int, float]] = [dict() for _ in range(threads)]
    errors: List[str] = []
    ops_per_thread = 24000 // threads

    def work(t: int) -> None:
        rng = np.random.default_rng(100 + t)
        mine = owned[t]
        base = shared + t * per
        try:
            for _ in range(ops_per_thread):
                k = int(rng.integers(0, 10))
                if k < 4:
                    ids = rng.integers(0, shared, 16)
                    d = rng.integers(-2, 5, 16).astype(np.float64)
                    idx.update(ids, d, threads=1 + (k == 0), bulk=False)
                    np.add.at(applied[t], ids, d.astype(np.int64))
                elif k == 4 and mine:
                    ids = np.array(sorted(mine)[: int(rng.integers(1, 8))])
                    s = rng.integers(-50, 50, ids.size).astype(np.float64)
                    idx.assign(ids, s)
                    mine.update(zip(ids.tolist(), s.tolist()))
                elif k in (4, 5):
                    new = [i for i in base + rng.choice(per, 8, replace=False) if int(i) not in mine]
                    s = rng.integers(-50, 50, len(new)).astype(np.float64)
                    idx.insert(np.asarray(new, np.int64), s)
                    mine.update(zip((int(i) for i in new), s.tolist()))
                elif k == 6 and mine:
                    gone = sorted(mine)[:: 3][:8]
                    idx.erase(np.asarray(gone, np.int64))
                    for i in gone:
                        del mine[i]
                else:
                    ids, sc = idx.top(50) if k % 2 else idx.bottom(50)
                    if np.unique(ids).size != ids.size:
                        errors.append("duplicate ids in a concurrent query")
                    if not (np.all(np.diff(sc) <= 0) if k % 2 else np.all(np.diff(sc) >= 0)):
                        errors.append("unsorted concurrent query")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors, errors[:5]
    idx.check()
    assert np.array_equal(idx.score(np.arange(shared)), applied.sum(axis=0).astype(np.float64))
    want = {i: s for m in owned for i, s in m.items()}
    ids, sc = idx.items()
    got = dict(zip(ids.tolist(), sc.tolist()))
    assert len(idx) == shared + len(want) == ids.size
    assert {i: got[i] for i in want} == want


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser(description="fuzz SemiOrderedIndex operation sequences")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input", help="run one execution on the bytes of this file")
    a = ap.parse_args()
    if a.input:
        with open(a.input, "rb") as fh:
            print(run_one(fh.read()), "operations")
        sys.exit(0)
    t0 = time.monotonic()
    e, o = fuzz(a.seconds, a.seed)
    dt = time.monotonic() - t0
    print(f"fuzz: {e} executions, {o} operations ({STATS['refused']} refused as invalid) with check() after each, {dt:.0f} s, seed {a.seed}: no failure")
