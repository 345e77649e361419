"""Sharded So-CBI on a two-"node" Ray cluster on this machine.

``ray start --head`` and a second ``ray start --address`` (its own temp dir and a custom
resource each, all on 127.0.0.1) make two raylets, so shard actors run in separate
process trees with separate object stores, placed on both nodes through per-shard
``resources``. Shards read their rows from a ``.npy`` file and checkpoint to a
``file://`` URI, as they would from shared storage on a real cluster. Checked here:
the exact-backend equality with the single-machine scorer and session, and recovery
after a shard process on the second node is SIGKILLed.

The cluster is started once for the module and stopped by killing exactly the
processes whose command line names this module's temp dir (never ``ray stop``, which
would end every Ray process on the machine).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from socbi.distributed import DistributedLearner, ShardedScorer  # noqa: E402
from socbi.scoring import BoundaryScorer  # noqa: E402
from socbi.session import ActiveLearner  # noqa: E402

N, D, K = 1000, 12, 8
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_under(tag: str):
    """PIDs of processes whose command line contains ``tag`` (our temp dir)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fh:
                if tag.encode() in fh.read():
                    out.append(int(p))
        except OSError:
            pass
    return out


def _stop(tag: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in _pids_under(tag):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 2
        while _pids_under(tag) and time.time() < deadline:
            time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster():
    if not os.path.exists(RAY):
        pytest.skip("the ray command-line tool is not installed next to this python")
    if ray.is_initialized():
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix="socbi-ray2n-")
    # One authentication mode for the driver and both nodes. A local ray.init() earlier
    # in this process switched it to "token" (Ray's default once a token exists) and
    # cached that in-process, so keep it then; a fresh process runs with it disabled.
    old_auth = os.environ.get("RAY_AUTH_MODE")
    mode = old_auth or "disabled"
    env = dict(os.environ, RAY_AUTH_MODE=mode)
    os.environ["RAY_AUTH_MODE"] = mode
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats",
              "--object-store-memory=100000000"]
    try:
        # both at once: the second node waits for the head's GCS (saves ~10 s here)
        procs = [subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                   '--resources={"node_a": 100}', f"--temp-dir={tmp}/head", *common],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
                 subprocess.Popen([RAY, "start", f"--address=127.0.0.1:{port}",
                                   '--resources={"node_b": 100}', f"--temp-dir={tmp}/worker", *common],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
        for p in procs:
            out, _ = p.communicate(timeout=180)
            if p.returncode != 0:
                raise RuntimeError(f"ray start failed: {out.decode()[-2000:]}")
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        yield tmp
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if old_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old_auth


def data(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, D)) * 3
    y = rng.integers(0, 4, N)
    return (centres[y] + rng.normal(size=(N, D))).astype(np.float32), y


def placement(n_shards):
    """Even shards on the head node, odd ones on the second node."""
    return [{"num_cpus": 0, "resources": {"node_a" if s % 2 == 0 else "node_b": 1}}
            for s in range(n_shards)]


def test_two_nodes_exact_equality_and_kill_recover(cluster, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    x, y = data(1)
    path = tmp_path / "emb.npy"
    np.save(path, x)
    lab0 = np.zeros(N, bool)
    lab0[np.random.default_rng(3).choice(N, 10, replace=False)] = True
    ref = BoundaryScorer(x, K, labelled=lab0, backend="exact", seed=5, progress=False)
    sh = ShardedScorer(str(path), K, labelled=lab0, n_shards=4, seed=5,
                       actor_options=placement(4), checkpoint_every=3,
                       checkpoint_dir=f"file://{tmp_path}/ckpt")
    try:
        info = sh.shard_info()
        nodes = {i["node_id"] for i in info}
        assert len(nodes) == 2, info  # shards really sit on both raylets
        assert {i["node_id"] for i in info[0::2]} != {i["node_id"] for i in info[1::2]}
        rng = np.random.default_rng(4)
        for r in range(5):
            pick = ref.select(25)[0] if r % 2 == 0 else rng.choice(ref.unlabelled_ids(), 25, replace=False)
            ref.label(pick)
            sh.label(pick)
            assert np.array_equal(ref.counts(), sh.counts())
            if r == 3:  # SIGKILL the process of shard 1 (second node) between rounds
                victim = info[1]["pid"]
                os.kill(victim, signal.SIGKILL)
                deadline = time.time() + 30
                while os.path.exists(f"/proc/{victim}") and time.time() < deadline:
                    time.sleep(0.05)
        for largest in (False, True):
            a, b = ref.select(40, largest=largest), sh.select(40, largest=largest)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert [r["shard"] for r in sh.recoveries] == [1]
        rec = sh.recoveries[0]
        # snapshots at rounds 0 (construction) and 3; rounds 4 and 5 come from its delta files
        assert rec["checkpoint_round"] == 3 and rec["replayed_rounds"] == [4, 5]
        new = sh.shard_info()[1]
        assert new["pid"] != info[1]["pid"] and new["node_id"] == info[1]["node_id"]
        sh.check()
    finally:
        sh.close()


def test_two_nodes_session_equals_single_machine(cluster, tmp_path):
    x, y = data(2)
    path = tmp_path / "emb.npy"
    np.save(path, x)
    labels = np.full(N, -1)
    start = np.random.default_rng(0).choice(N, 12, replace=False)
    labels[start] = y[start]
    common = dict(strategy="lc_socbi", k=K, backend="exact", seed=11, progress=False)
    single = ActiveLearner(x, labels, **common)
    dist = DistributedLearner(str(path), labels, n_shards=2, actor_options=placement(2),
                              checkpoint_dir=f"file://{tmp_path}/ckpt", **common)
    try:
        for _ in range(3):
            a, b = single.query(20), dist.query(20)
            assert a.tolist() == b.tolist()
            single.teach(a, y[a])
            dist.teach(b, y[b])
        assert np.array_equal(single.scorer.counts(), dist.scorer.counts())
        assert [e["counts"] for e in single.log] == [e["counts"] for e in dist.log]
    finally:
        dist.close()
