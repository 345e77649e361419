"""Sharded So-CBI on a local Ray cluster: exact equality with the single-machine scorer
and session, exact merges, and recovery from a killed shard actor.

Skipped cleanly when Ray is not installed. One Ray cluster (2 CPUs) serves the module.
"""
import json
import os
import time
import warnings

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from socbi.distributed import (DistributedLearner, ShardedScorer, embed,  # noqa: E402
                               make_learner, merge_candidates, merge_ranked, shard_of)
from socbi.knn import exact_knn  # noqa: E402
from socbi.scoring import BoundaryScorer  # noqa: E402
from socbi.session import ActiveLearner  # noqa: E402

N, D, K = 1200, 12, 8


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)
    yield
    ray.shutdown()


def kill_and_wait(actor):
    """ray.kill is asynchronous: return only once calls to the actor fail."""
    ray.kill(actor, no_restart=True)
    with pytest.raises(ray.exceptions.RayActorError):
        for _ in range(600):
            ray.get(actor.size.remote())
            time.sleep(0.05)


def data(seed=0, n=N, d=D):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d)) * 3
    y = rng.integers(0, 4, n)
    x = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    return x, y


# ---------------------------------------------------------------- pure functions
def test_shard_of_is_stable_and_balanced():
    ids = np.arange(100_000)
    a = shard_of(ids, 4)
    assert np.array_equal(a, shard_of(ids, 4))
    assert np.bincount(a).min() > 24_000
    # fixed values: the hash must not change between releases (saved shards depend on it)
    assert shard_of(np.arange(12), 4).tolist() == [3, 1, 2, 1, 2, 2, 0, 3, 2, 0, 2, 1]
    assert shard_of(np.array([10**9, 2**31 - 1]), 7).tolist() == [1, 1]
    r = shard_of(ids, 4, scheme="range", n_samples=100_000)
    assert r[0] == 0 and r[-1] == 3 and np.all(np.diff(r) >= 0)
    with pytest.raises(ValueError, match="scheme"):
        shard_of(ids, 4, scheme="mod")
    with pytest.raises(ValueError, match="n_shards"):
        shard_of(ids, 0)


def test_merge_candidates_equals_exact_query_over_union():
    x, _ = data(1)
    q = x[:50] + 0.01
    ids = np.arange(N, dtype=np.int64)
    want_i, want_d = exact_knn(x, ids, q, K)
    own = shard_of(ids, 3)
    parts_i, parts_d = [], []
    for s in range(3):
        sel = ids[own == s]
        i, d = exact_knn(x[sel], sel, q, K)
        parts_i.append(i)
        parts_d.append(d)
    got_i, got_d = merge_candidates(parts_i, parts_d, K)
    assert np.array_equal(got_i, want_i)
    assert np.array_equal(got_d, want_d)


def test_merge_candidates_breaks_distance_ties_by_id_and_skips_padding():
    i0 = np.array([[5, -1]]); d0 = np.array([[1.0, np.inf]], np.float32)
    i1 = np.array([[2, 9]]); d1 = np.array([[1.0, 0.5]], np.float32)
    ids, dist = merge_candidates([i0, i1], [d0, d1], 3)
    assert ids.tolist() == [[9, 2, 5]] and dist.tolist() == [[0.5, 1.0, 1.0]]
    with pytest.raises(ValueError, match="fewer than k"):
        merge_candidates([i0, i1], [d0, d1], 4)


def test_merge_ranked_orders_by_count_then_slot():
    a = (np.array([10, 11]), np.array([0, 1]), np.array([7, 3]))
    b = (np.array([20, 21]), np.array([0, 0]), np.array([2, 9]))
    ids, c = merge_ranked([a, b], 3)
    assert ids.tolist() == [20, 10, 21] and c.tolist() == [0, 0, 0]
    ids, c = merge_ranked([(a[0][::-1], a[1][::-1], a[2][::-1]), b], 2, largest=True)
    assert ids.tolist() == [11, 21]
    with pytest.raises(ValueError, match="exceeds"):
        merge_ranked([a], 3)


# ---------------------------------------------------------------- scorer equality
@pytest.mark.parametrize("n_shards,scheme", [(2, "hash"), (4, "range")])
def test_sharded_scorer_matches_boundary_scorer(n_shards, scheme):
    x, _ = data(2)
    rng = np.random.default_rng(5)
    lab0 = np.zeros(N, bool)
    lab0[rng.choice(N, 15, replace=False)] = True
    ref = BoundaryScorer(x, K, labelled=lab0, backend="exact", seed=7, progress=False)
    sh = ShardedScorer(x, K, labelled=lab0, n_shards=n_shards, scheme=scheme, seed=7)
    try:
        assert np.array_equal(ref.counts(), sh.counts())
        total_repairs = 0
        for r in range(6):
            for largest in (False, True):
                a, b = ref.select(40, largest=largest), sh.select(40, largest=largest)
                assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            # alternate: low-count picks (paper), high-count picks and random picks, so
            # that the repair path (lists losing members) is exercised too
            if r % 3 == 0:
                pick = ref.select(30)[0]
            elif r % 3 == 1:
                pick = ref.select(30, largest=True)[0]
            else:
                pick = rng.choice(ref.unlabelled_ids(), 30, replace=False)
            s_ref, s_sh = ref.label(pick), sh.label(pick)
            assert (s_ref.repairs, s_ref.updates) == (s_sh.repairs, s_sh.updates)
            total_repairs += s_sh.repairs
            assert np.array_equal(ref.counts(), sh.counts())
            assert np.array_equal(ref.neighbours(ref.labelled_ids()), sh.neighbours(sh.labelled_ids()))
        assert total_repairs > 0
        sh.check()
        assert np.array_equal(sh.recount(), ref.recount())
    finally:
        sh.close()


def test_sharded_scorer_errors_name_the_argument():
    x, _ = data(3, n=50)
    with pytest.raises(ValueError, match="n_shards"):
        ShardedScorer(x, 4, n_shards=0)
    with pytest.raises(ValueError, match="backend"):
        ShardedScorer(x, 4, backend="faiss")
    sh = ShardedScorer(x, 4, n_shards=2)
    try:
        sh.label([1, 2])
        with pytest.raises(ValueError, match="labelled already"):
            sh.label([2])
        with pytest.raises(ValueError, match="exceeds the 48"):
            sh.select(49)
        with pytest.raises(ValueError, match="are labelled"):
            sh.counts([1])
    finally:
        sh.close()


def test_hnsw_shards_run_and_stay_consistent():
    # HNSW is approximate: no equality with the single machine is claimed, only that the
    # incremental counts agree with the stored lists and the shards' invariants hold.
    x, _ = data(8)
    sh = ShardedScorer(x, K, n_shards=2, backend="hnsw", seed=0,
                       pool_options={"num_threads": 1, "M": 8, "ef_construction": 40})
    try:
        for _ in range(3):
            sh.label(sh.select(20, largest=True)[0])
        sh.check(recount=False)
        assert len(sh) == N - 60
        before = sh.counts()
        kill_and_wait(sh.actors[1])  # restart from the saved HNSW graph
        assert np.array_equal(sh.counts(), before)
        # restored from the round-0 snapshot (graph file) plus its own delta files
        assert sh.recoveries[0]["replayed_rounds"] == [1, 2, 3]
        assert sh.recoveries[0]["checkpoint_round"] == 0
        sh.label(sh.select(20)[0])
        sh.check(recount=False)
    finally:
        sh.close()


# ---------------------------------------------------------------- faults
@pytest.mark.parametrize("phase,every", [("after_query", 1), ("after_query", 2),
                                         ("during_commit", 2), ("before_query", 2)])
def test_killed_shard_recovers_to_the_same_state(phase, every):
    x, _ = data(4)
    ref = BoundaryScorer(x, K, backend="exact", seed=1, progress=False)
    sh = ShardedScorer(x, K, n_shards=3, seed=1, checkpoint_every=every)
    kill_round = 4

    def hook(p, r):
        if p == phase and r == kill_round and not sh.recoveries:
            if p == "during_commit":
                # actor calls from one caller run in order: shard 0 has committed round 4
                ray.get(sh.actors[0].size.remote())
            kill_and_wait(sh.actors[1])  # before_query: it dies as the queries go out

    sh._fault_hook = hook
    rng = np.random.default_rng(2)
    try:
        for r in range(6):
            pick = rng.choice(ref.unlabelled_ids(), 25, replace=False) if r % 2 else ref.select(25)[0]
            ref.label(pick)
            sh.label(pick)
        assert len(sh.recoveries) == 1
        rec = sh.recoveries[0]
        assert rec["shard"] == 1
        if phase in ("after_query", "before_query"):
            # the victim died before committing round 4: it is restored from its last
            # snapshot (round 3 or 2), replays its own delta files, and round 4 is retried
            assert rec["retried_round"] == kill_round
            assert rec["replayed_rounds"] == ([] if every == 1 else [3])
        else:
            # killed while the commits are in flight: either its commit result was lost
            # (round 4 retried; survivors' commits are idempotent; its delta file may or
            # may not have been written) or it arrived and the death shows at the next
            # call (rounds 3 and 4 replayed from its delta files)
            assert (rec["retried_round"], rec["replayed_rounds"]) in ((4, [3]), (4, [3, 4]),
                                                                      (None, [3, 4]))
        # only the dead shard is asked again: one neighbour query per shard and round,
        # plus one for the victim when it died before answering round 4's query
        extra = 1 if phase == "before_query" else 0
        assert sh.begin_calls == [6, 6 + extra, 6]
        assert np.array_equal(ref.counts(), sh.counts())
        assert np.array_equal(ref.select(60)[0], sh.select(60)[0])
        sh.check()
    finally:
        sh.close()


def test_shard_killed_between_rounds_is_restarted_on_the_next_call():
    x, _ = data(9)
    ref = BoundaryScorer(x, K, backend="exact", seed=4, progress=False)
    sh = ShardedScorer(x, K, n_shards=2, seed=4, checkpoint_every=3)
    try:
        for _ in range(4):  # checkpoints at rounds 0 and 3; round 4 is only journaled
            ids = ref.select(30, largest=True)[0]
            ref.label(ids)
            sh.label(ids)
        kill_and_wait(sh.actors[0])
        assert np.array_equal(ref.select(50)[0], sh.select(50)[0])
        assert sh.recoveries[0]["shard"] == 0
        assert sh.recoveries[0]["checkpoint_round"] == 3
        assert sh.recoveries[0]["replayed_rounds"] == [4]
        assert sh.recoveries[0]["retried_round"] is None
        assert np.array_equal(ref.counts(), sh.counts())
    finally:
        sh.close()


# ---------------------------------------------------------------- sessions
def run_session(learner, rounds, y, batch=20):
    picks = []
    for _ in range(rounds):
        ids = learner.query(batch)
        picks.append(ids.tolist())
        learner.teach(ids, y[ids])
    return picks


@pytest.mark.parametrize("strategy", ["socbi", "lc_socbi"])
def test_distributed_learner_matches_active_learner(strategy, tmp_path):
    x, y = data(6)
    labels = np.full(N, -1)
    start = np.random.default_rng(0).choice(N, 12, replace=False)
    labels[start] = y[start]
    n_classes = int(y.max()) + 1
    common = dict(strategy=strategy, k=K, backend="exact", seed=11, progress=False, n_classes=n_classes)
    single = make_learner(x, labels, **common)
    dist = make_learner(x, labels, distributed={"n_shards": 3}, **common)
    assert isinstance(single, ActiveLearner) and isinstance(dist, DistributedLearner)
    try:
        assert run_session(single, 3, y) == run_session(dist, 3, y)
        assert np.array_equal(single.scorer.counts(), dist.scorer.counts())
        # save, resume in fresh actors, continue: still identical
        dist.save(tmp_path / "run")
        dist.close()
        dist = DistributedLearner.load(tmp_path / "run", x)
        assert dist.round == single.round
        assert run_session(single, 2, y) == run_session(dist, 2, y)
        assert np.array_equal(single.scorer.counts(), dist.scorer.counts())
        assert [e["counts"] for e in single.log] == [e["counts"] for e in dist.log]
        dist.check()
        assert dist.recoveries == []
        # the declared class count survives the save: class n_classes is still refused
        assert dist.n_classes == n_classes
        with pytest.raises(ValueError, match="classes"):
            dist.teach([int(np.flatnonzero(dist.labels < 0)[0])], [n_classes])
        # the folder keeps labelled ids and classes only; a folder written before (one
        # label per sample in session.json) still loads to the same session
        dist.save(tmp_path / "run2")
        meta = json.loads((tmp_path / "run2" / "session.json").read_text())
        assert len(meta["labelled_ids"]) == dist.n_labelled and "labels" not in meta
        old = dict(meta, labels=dist.labels.tolist())
        for key in ("labelled_ids", "label_values", "synthetic_ids"):
            del old[key]
        (tmp_path / "run2" / "session.json").write_text(json.dumps(old))
        dist.close()
        dist = DistributedLearner.load(tmp_path / "run2", x)
        assert np.array_equal(dist.labels, single.labels)
        assert run_session(single, 1, y) == run_session(dist, 1, y)
    finally:
        dist.close()


def test_make_learner_rejects_unknown_distributed_keys():
    x, _ = data(7, n=30)
    with pytest.raises(ValueError, match="unknown keys"):
        make_learner(x, distributed={"shards": 2})
    with pytest.raises(ValueError, match="distributed must be"):
        make_learner(x, distributed=2)


# ---------------------------------------------------------------- embedding on actors
def test_embed_on_actors_keeps_order():
    # encoders defined inside the test are pickled by value (workers cannot import tests/)
    class Doubler:
        def __call__(self, batch):
            return np.stack([np.array([float(v), 2.0 * v, 1.0]) for v in batch])

    def bad_shape():
        return lambda batch: np.zeros((len(batch) + 1, 3))

    items = list(range(103))
    x = embed(items, Doubler, batch_size=10, n_actors=2, actor_options={"num_cpus": 0})
    assert x.dtype == np.float32 and x.shape == (103, 3)
    assert np.array_equal(x[:, 0], np.arange(103)) and np.array_equal(x[:, 1], 2 * np.arange(103))
    with pytest.raises(ValueError, match="one row per item"):
        embed(items, bad_shape, batch_size=50, n_actors=1, actor_options={"num_cpus": 0})
    with pytest.raises(ValueError, match="batch_size"):
        embed(items, Doubler, batch_size=0)


# ---------------------------------------------------------------- row sources
def _sources(kind, x, tmp_path):
    """The same rows as each storage kind a shard can load from."""
    if kind == "array":
        return x
    if kind == "npy":
        np.save(tmp_path / "emb.npy", x)
        return str(tmp_path / "emb.npy")
    if kind == "parquet":  # a folder of two files, several row groups each
        from socbi.storage import write_parquet
        (tmp_path / "pq").mkdir()
        half = x.shape[0] // 2
        write_parquet(tmp_path / "pq" / "part-0.parquet", [x[:half]], row_group_rows=150)
        write_parquet(tmp_path / "pq" / "part-1.parquet", [x[half:]], row_group_rows=150)
        return str(tmp_path / "pq")
    import pyarrow as pa
    ids = np.arange(x.shape[0])[::-1].copy()  # any order: the id column says which row
    col = pa.FixedSizeListArray.from_arrays(pa.array(x[ids].ravel()), x.shape[1])
    return ray.data.from_arrow(pa.table({"id": ids, "embedding": col}))


@pytest.mark.parametrize("kind,scheme", [("npy", "range"), ("parquet", "hash"),
                                         ("parquet", "range"), ("ray_dataset", "hash")])
def test_shards_load_their_rows_from_storage(kind, scheme, tmp_path):
    pytest.importorskip("pyarrow")
    if kind == "ray_dataset":
        pytest.importorskip("pandas")  # Ray Data needs it
    x, _ = data(10)
    ref = BoundaryScorer(x, K, backend="exact", seed=3, progress=False)
    sh = ShardedScorer(_sources(kind, x, tmp_path), K, n_shards=2, scheme=scheme, seed=3)
    try:
        for r in range(3):
            ids = ref.select(30, largest=r == 1)[0]
            ref.label(ids)
            sh.label(ids)
        assert np.array_equal(ref.counts(), sh.counts())
        some = np.array([5, 0, 999, 17])
        assert np.array_equal(sh.rows(some), x[some])  # rows by id, from their owners
        info = sh.shard_info()
        assert sum(i["rows"] for i in info) == N
    finally:
        sh.close()


def test_driver_never_reads_the_matrix(tmp_path):
    """Rounds, selections and row fetches never read the source on the driver: only the
    shard actors stream it (once, at load)."""
    from socbi.storage import NpyRows
    x, _ = data(11)
    np.save(tmp_path / "emb.npy", x)
    driver = os.getpid()

    class DriverGuard(NpyRows):  # defined here: pickled by value to the actors
        def chunks(self, *a, **kw):
            assert os.getpid() != driver, "the driver streamed the embedding matrix"
            return super().chunks(*a, **kw)

        def take(self, ids):
            raise AssertionError("rows must come from the shards, not from storage")

    ref = BoundaryScorer(x, K, backend="exact", seed=2, progress=False)
    sh = ShardedScorer(DriverGuard(tmp_path / "emb.npy"), K, n_shards=2, seed=2)
    try:
        assert not any(isinstance(v, np.ndarray) and v.size >= x.size for v in vars(sh).values())
        for r in range(3):
            ids = ref.select(40, largest=r % 2 == 1)[0]
            ref.label(ids)
            sh.label(ids)
        assert np.array_equal(ref.select(50)[0], sh.select(50)[0])
        assert np.array_equal(sh.rows([3, 4]), x[[3, 4]])
    finally:
        sh.close()


def test_bad_rows_are_found_once_at_load_naming_the_id(tmp_path):
    x, _ = data(12)
    x[777, 3] = np.nan
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(ValueError, match=r"NaN or infinite values in rows \[777\]"):
        ShardedScorer(str(tmp_path / "bad.npy"), K, n_shards=2)


def test_session_query_checks_only_the_rows_involved(tmp_path, monkeypatch):
    """DistributedLearner.query must not validate the whole matrix (ActiveLearner's
    PoolState does, O(n d) per query): only the scored rows are touched."""
    import socbi.strategies as strategies
    x, y = data(13)
    np.save(tmp_path / "emb.npy", x)
    labels = np.full(N, -1)
    start = np.random.default_rng(1).choice(N, 12, replace=False)
    labels[start] = y[start]
    dist = DistributedLearner(str(tmp_path / "emb.npy"), labels, n_shards=2, k=K, seed=4,
                              strategy="lc_socbi", progress=False)
    seen = []
    real = strategies._check_embeddings

    def spy(arr, *a, **kw):
        seen.append(np.asarray(arr).shape[0])
        return real(arr, *a, **kw)

    monkeypatch.setattr(strategies, "_check_embeddings", spy)
    try:
        ids = dist.query(20)
        dist.teach(ids, y[ids])
        dist.query(20)
        assert all(m < N for m in seen), seen
    finally:
        dist.close()


def test_checkpoints_go_to_a_filesystem_uri(tmp_path):
    x, _ = data(14)
    uri = f"file://{tmp_path}/ckpt"
    ref = BoundaryScorer(x, K, backend="exact", seed=6, progress=False)
    sh = ShardedScorer(x, K, n_shards=2, seed=6, checkpoint_dir=uri, checkpoint_every=2)
    try:
        for _ in range(3):  # snapshots at rounds 0 and 2, delta file for round 3
            ids = ref.select(30)[0]
            ref.label(ids)
            sh.label(ids)
        files = sorted(p.relative_to(tmp_path / "ckpt").as_posix()
                       for p in (tmp_path / "ckpt").rglob("*") if p.is_file())
        assert "shard-0001/deltas/r0000000003.npz" in files
        assert not any("deltas/r0000000002" in f for f in files)  # covered by the snapshot
        kill_and_wait(sh.actors[1])
        assert np.array_equal(ref.counts(), sh.counts())
        assert sh.recoveries[0]["replayed_rounds"] == [3]
        assert sh.begin_calls == [3, 3]  # recovery between rounds re-queries nothing
    finally:
        sh.close()


# ---------------------------------------------------------------- O(|L|) driver session
def _counting_source(kind, x, tmp_path):
    """A row source that records every row the driver process reads (shards read freely)
    and refuses any whole-matrix access on the driver; defined here, so it is pickled by
    value to the shard actors."""
    from socbi.storage import NpyRows, ParquetRows
    driver = os.getpid()
    reads = []
    if kind == "npy":
        np.save(tmp_path / "emb.npy", x)

        class Counting(NpyRows):
            def take(self, ids):
                if os.getpid() == driver:
                    reads.append(len(np.asarray(ids)))
                self._taking = True
                try:
                    return super().take(ids)
                finally:
                    self._taking = False

            @property
            def array(self):  # the memory map: the driver may touch it only inside take()
                assert os.getpid() != driver or getattr(self, "_taking", False), \
                    "the driver mapped the whole embedding matrix"
                return NpyRows.array.fget(self)

            def chunks(self, *a, **kw):
                assert os.getpid() != driver, "the driver streamed the embedding matrix"
                return super().chunks(*a, **kw)

        return Counting(tmp_path / "emb.npy"), reads
    from socbi.storage import write_parquet
    write_parquet(tmp_path / "emb.parquet", [x], row_group_rows=200)

    class CountingPq(ParquetRows):
        def _read_group(self, i):
            if os.getpid() == driver:
                reads.append(self._groups[i][2])
            return super()._read_group(i)

    return CountingPq(tmp_path / "emb.parquet"), reads


def _big_arrays(obj, n):
    """Names of the attributes of ``obj`` holding a per-sample (n-long) array."""
    return [k for k, v in vars(obj).items() if isinstance(v, np.ndarray) and v.ndim and v.shape[0] >= n]


@pytest.mark.parametrize("kind,strategy", [("npy", "socbi"), ("parquet", "lc_socbi"),
                                           ("npy", "margin_div_cover"), ("npy", "seals")])
def test_distributed_learner_from_a_row_source_keeps_o_labelled_state(kind, strategy, tmp_path):
    """Built from an .npy / Parquet source, the session never reads the matrix on the
    driver (only rows by id: the labelled rows for the model, the rows a strategy scores),
    keeps labels for the labelled ids only, and still gives ActiveLearner's queries,
    counts and log."""
    pytest.importorskip("pyarrow")
    x, y = data(15)
    start = np.random.default_rng(2).choice(N, 12, replace=False)
    labels = np.full(N, -1)
    labels[start] = y[start]
    common = dict(strategy=strategy, k=K, backend="exact", seed=5, progress=False, n_classes=4)
    single = ActiveLearner(x, labels, **common)
    src, reads = _counting_source(kind, x, tmp_path)
    dist = DistributedLearner(src, (start, y[start]), n_shards=2, scheme="range", **common)
    try:
        assert run_session(single, 3, y) == run_session(dist, 3, y)
        assert [e["counts"] for e in single.log] == [e["counts"] for e in dist.log]
        assert [e["scores"] for e in single.log] == [e["scores"] for e in dist.log]
        assert np.array_equal(single.labels, dist.labels)  # the dense view, built on demand
        assert np.array_equal(single.scorer.counts(), dist.scorer.counts())
        # O(|L|) label state: no per-sample array in the session, its label store or scorer
        assert _big_arrays(dist, N) == [] and _big_arrays(dist._store, N) == []
        assert _big_arrays(dist.scorer, N) == []
        assert dist._store.count == dist.n_labelled == 72
        if strategy == "socbi":  # reads only the labelled rows (model fits) and the batch
            assert sum(reads) <= 4 * 72 + 3 * 20, reads
        if strategy == "seals":  # ... and the candidates: the labelled samples' lists
            assert sum(reads) <= 4 * 72 + 3 * 72 * K, reads
        assert all(r < N for r in reads), reads  # never the whole matrix in one read
    finally:
        dist.close()


def test_whole_matrix_strategies_need_an_in_memory_array(tmp_path, monkeypatch):
    x, y = data(16)
    np.save(tmp_path / "emb.npy", x)
    for strategy, opts in (("kcenter", {}), ("ascmr", {}), ("class_balanced", {"base": "kcenter"})):
        with pytest.raises(ValueError, match=f"strategy {strategy!r} needs the whole embedding matrix"):
            DistributedLearner(str(tmp_path / "emb.npy"), strategy=strategy, strategy_options=opts,
                               n_shards=2, k=K, progress=False)
    # over an in-memory array K-Center and ASCMR run, and equal the single machine's
    labels = np.full(N, -1)
    labels[:10] = y[:10]
    for strategy, space in (("kcenter", "l2"), ("ascmr", "cosine")):
        common = dict(strategy=strategy, k=K, backend="exact", space=space, seed=1, progress=False,
                      n_classes=4)
        single = ActiveLearner(x, labels, **common)
        dist = DistributedLearner(x, {i: int(y[i]) for i in range(10)}, n_shards=2, **common)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # ASCMR on single-view data
                assert run_session(single, 2, y) == run_session(dist, 2, y)
        finally:
            dist.close()
    # a session argument refused after the shards started: their actors are ended again
    closed = []
    real = ShardedScorer.close
    monkeypatch.setattr(ShardedScorer, "close", lambda self: (closed.append(self), real(self)))
    with pytest.raises(ValueError, match="budget"):
        DistributedLearner(x, n_shards=2, k=K, progress=False, strategy="socbi", budget=-1)
    assert len(closed) == 1 and closed[0].actors == []
