"""A caller's id and score arrays changed by another thread during a batch call (issue 16).

The bindings read numpy buffers in place with the GIL released, so another Python thread
can rewrite them while C++ works. Whatever it writes (ids out of range, NaN, inf), the
process must survive, every call must return within seconds, check() must pass and no
score may become non-finite. Each case runs in a child process, so a crash or a hang
fails the test instead of taking pytest down.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    r"""
    import sys, threading, time
    import numpy as np
    import socbi

    op, bulk, threads = sys.argv[1], {"1": True, "0": False}[sys.argv[2]], int(sys.argv[3])
    # Batches of 35,000: two threads split the bulk apply (16,384 ids a thread at least).
    CAP, N, CALLS = 120_000, 70_000, 20
    rng = np.random.default_rng(7)
    idx = socbi.SemiOrderedIndex(CAP, node_size=64)
    idx.insert(np.arange(N), rng.random(N))
    good_ids = rng.permutation(N)[: N // 2].astype(np.int64)  # distinct, present
    fresh_ids = np.arange(N, N + N // 2, dtype=np.int64)        # absent
    bad_ids = np.full(N // 2, 2**40, dtype=np.int64)
    good_vals = rng.random(N // 2)
    bad_vals = [np.full(N // 2, v) for v in (np.nan, np.inf, -np.inf, 1e308)]
    ids = (fresh_ids if op == "insert" else good_ids).copy()
    vals = good_vals.copy()
    # The mutator flips the arrays only while `go` is set (from just before a call until it
    # returns), one flip under `lock` at a time, and leaves them valid when it lets go: so the
    # call's argument checks (GIL held) see valid arrays and the flips land while C++ works
    # with the GIL released. A test that waited for a lucky interleaving was flaky.
    go, quit_, lock = threading.Event(), threading.Event(), threading.Lock()
    flips = [0]

    def mutate():
        k = 0
        while not quit_.is_set():
            if not go.wait(0.01):
                continue
            while True:
                with lock:
                    if not go.is_set():
                        break
                    vals[:] = bad_vals[k % 4]
                    ids[:] = bad_ids
                    vals[:] = good_vals
                    ids[:] = fresh_ids if op == "insert" else good_ids
                    k += 1
                    flips[0] += 1

    th = threading.Thread(target=mutate, daemon=True)
    th.start()
    slowest, refused, exercised, call = 0.0, 0, 0, 0
    # CALLS calls, and more (up to 10x) while fewer than 5 overlapped a flip.
    while call < CALLS or (exercised < 5 and call < 10 * CALLS):
        call += 1
        before = flips[0]
        t = time.perf_counter()
        go.set()
        try:
            if op == "update":
                idx.update(ids, vals, threads=threads, bulk=bulk)
            elif op == "assign":
                idx.assign(ids, vals, threads=threads, bulk=bulk)
            elif op == "insert":
                idx.insert(ids, vals, threads=threads, bulk=bulk)
            else:
                idx.erase(ids)
        except (ValueError, KeyError):
            refused += 1  # a flip the argument checks saw: refused, which is fine
        finally:
            go.clear()
            with lock:  # the mutator has finished its flip: the arrays are valid again
                pass
        slowest = max(slowest, time.perf_counter() - t)
        exercised += flips[0] > before
        idx.check()
        _, scores = idx.items()
        assert np.isfinite(scores).all(), "a non-finite score was stored"
        # Put the pool back for the next call (the mutator waits for `go`).
        present = np.zeros(CAP, dtype=bool)
        present[idx.items()[0]] = True
        if op == "insert":
            idx.erase(np.flatnonzero(present[N:]) + N)
        elif op == "erase":
            back = good_ids[~present[good_ids]]
            idx.insert(back, rng.random(len(back)))
    quit_.set(); th.join()
    idx.check()
    print(f"ok slowest={slowest:.3f}s refused={refused}/{call} overlapped a flip={exercised}/{call}")
    assert slowest < 10.0, slowest
    assert exercised > 0, "no call overlapped a flip: the test exercised nothing"
    """
)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bulk", [True, False])
@pytest.mark.parametrize("op", ["update", "assign", "insert", "erase"])
def test_batch_call_survives_buffers_rewritten_during_the_call(op, bulk, threads):
    try:
        r = subprocess.run([sys.executable, "-c", _SCRIPT, op, "1" if bulk else "0", str(threads)],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{op}(bulk={bulk}, threads={threads}) hung with its buffers rewritten during the call")
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert r.stdout.startswith("ok"), r.stdout
