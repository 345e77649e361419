"""Session files under faults: SIGKILL mid-save, truncation, corruption, crafted payloads.

* A forked child saves the *new* session over the *old* one and is SIGKILLed after a
  random delay drawn over the measured save time; after every kill the file must read
  back as exactly the old or exactly the new session (>= 50 runs).
* Truncating the file at any length, or flipping bytes anywhere, gives SessionFileError
  (or, for a byte the format does not use, the identical session) -- never a different
  session.
* A file carrying a pickle payload (object array, pickled metadata) is refused without
  running it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest

import socbi
from socbi.session import ActiveLearner, SessionFileError

KILL_RUNS = int(os.environ.get("SOCBI_KILL_RUNS", "60"))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _learner() -> ActiveLearner:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.repeat(d.data.astype(np.float32), 2, axis=1)  # 1797 x 128: a save takes a while
    y = d.target.astype(np.int64)
    lab = np.full(x.shape[0], -1)
    first = [int(np.flatnonzero(y == c)[0]) for c in range(10)]
    lab[first] = y[first]
    al = ActiveLearner(x, lab, strategy="lc_socbi", k=5, backend="exact", progress=False, seed=3)
    al._digits_y = y  # type: ignore[attr-defined]
    return al


def _summary(meta: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> Tuple[Any, ...]:
    return (meta["round"], hashlib.sha256(arrays["labels"].tobytes()).hexdigest(),
            hashlib.sha256(arrays["index/counts"].tobytes()).hexdigest())


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: Any) -> Dict[str, Any]:
    d = tmp_path_factory.mktemp("faults")
    al = _learner()
    old = d / "old.socbi"
    al.save(old)
    ids = al.query(20)
    al.teach(ids, al._digits_y[ids])  # type: ignore[attr-defined]
    new = d / "new.socbi"
    t0 = time.perf_counter()
    al.save(new)
    save_s = time.perf_counter() - t0
    return dict(dir=d, learner=al, old=old, new=new, save_s=save_s,
                old_sum=_summary(*ActiveLearner.read_file(old)),
                new_sum=_summary(*ActiveLearner.read_file(new)))


def test_sigkill_during_save_leaves_old_or_new(sessions: Dict[str, Any]) -> None:
    al, d = sessions["learner"], sessions["dir"] / "kill"
    d.mkdir()
    target = d / "run.socbi"
    rng = np.random.default_rng(12345)
    # kill points spread over [0, 1.3 x the save time]: before, inside and after the save
    window = 1.3 * max(sessions["save_s"], 0.02)
    seen = {"old": 0, "new": 0}
    inside = 0
    for run in range(KILL_RUNS):
        target.write_bytes(sessions["old"].read_bytes())
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: say "go", save, exit without cleanup
            try:
                os.close(r)
                os.write(w, b"g")
                al.save(target)
            finally:
                os._exit(0)
        os.close(w)
        os.read(r, 1)  # the child is about to save
        os.close(r)
        time.sleep(float(rng.uniform(0, window)))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        leftovers = [p for p in d.iterdir() if p.name != target.name]
        inside += bool(leftovers)
        for p in leftovers:  # a killed save leaves its temporary file; the target is intact
            assert p.name.startswith(f".{target.name}.") and p.name.endswith(".tmp"), p
            p.unlink()
        s = _summary(*ActiveLearner.read_file(target))
        if s == sessions["old_sum"]:
            seen["old"] += 1
        else:
            assert s == sessions["new_sum"], f"run {run}: the file is neither the old nor the new session"
            seen["new"] += 1
    print(f"\nSIGKILL runs: {KILL_RUNS}, old {seen['old']}, new {seen['new']}, "
          f"killed while the temporary file existed {inside}")
    assert sum(seen.values()) == KILL_RUNS >= 50
    # the newest file also fully loads
    back = ActiveLearner.load(target, progress=False)
    back.check()


@pytest.mark.parametrize("frac", [0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.9999])
def test_truncated_file_is_refused(sessions: Dict[str, Any], tmp_path: Path, frac: float) -> None:
    data = sessions["new"].read_bytes()
    p = tmp_path / "t.socbi"
    p.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(SessionFileError, match="t.socbi"):
        ActiveLearner.load(p, progress=False)


def test_corrupted_bytes_never_give_a_different_session(sessions: Dict[str, Any], tmp_path: Path) -> None:
    data = sessions["new"].read_bytes()
    rng = np.random.default_rng(7)
    p = tmp_path / "c.socbi"
    refused = same = 0
    positions = rng.choice(len(data), size=40, replace=False).tolist() + [0, len(data) - 1, len(data) // 2]
    for pos in positions:
        b = bytearray(data)
        b[pos] ^= 0xFF
        p.write_bytes(bytes(b))
        try:
            meta, arrays = ActiveLearner.read_file(p)
        except SessionFileError as exc:
            assert "c.socbi" in str(exc)
            refused += 1
            continue
        assert _summary(meta, arrays) == sessions["new_sum"], f"flip at {pos} gave a different session"
        same += 1
    assert refused > 0


def _rewrite(src: Path, dst: Path, change: Any) -> None:
    """Copy a session's zip members, letting ``change(name, bytes)`` replace members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            out = change(info.filename, zin.read(info.filename))
            if out is not None:
                zout.writestr(info.filename, out)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def test_pickle_payload_in_an_array_is_refused(sessions: Dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = np.empty(1, dtype=object)
    bad[0] = _Payload(str(marker))
    p = tmp_path / "p.socbi"
    _rewrite(sessions["new"], p, lambda name, b: _npy(bad) if name == "labels.npy" else b)
    with pytest.raises(SessionFileError, match="p.socbi"):
        ActiveLearner.load(p, progress=False)
    assert not marker.exists(), "loading ran code from the file"


def test_pickle_payload_as_metadata_is_refused(sessions: Dict[str, Any], tmp_path: Path) -> None:
    """The metadata slot holds a pickle (with a matching checksum): refused, never run."""
    import pickle

    marker = tmp_path / "pwned2"
    blob = pickle.dumps(_Payload(str(marker)))
    digest = hashlib.sha256(blob).hexdigest().encode()

    def change(name: str, b: bytes) -> Any:
        if name == "__meta__.npy":
            return _npy(np.frombuffer(blob, np.uint8))
        if name == "__meta_sha256__.npy":
            return _npy(np.frombuffer(digest, np.uint8))
        return b

    p = tmp_path / "m.socbi"
    _rewrite(sessions["new"], p, change)
    with pytest.raises(SessionFileError, match="m.socbi"):
        ActiveLearner.load(p, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("meta", [[1, 2], {"format": "socbi-session", "version": 1},
                                  {"format": "socbi-session", "version": 1, "checksums": "x"}])
def test_crafted_metadata_with_valid_checksum_gives_clear_error(sessions: Dict[str, Any], tmp_path: Path,
                                                                 meta: Any) -> None:
    blob = json.dumps(meta).encode()
    digest = hashlib.sha256(blob).hexdigest().encode()
    keep = {"__meta__.npy", "__meta_sha256__.npy"}

    def change(name: str, b: bytes) -> Any:
        if name == "__meta__.npy":
            return _npy(np.frombuffer(blob, np.uint8))
        if name == "__meta_sha256__.npy":
            return _npy(np.frombuffer(digest, np.uint8))
        return b if name in keep else None

    p = tmp_path / "j.socbi"
    _rewrite(sessions["new"], p, change)
    with pytest.raises(SessionFileError, match="j.socbi"):
        ActiveLearner.load(p, progress=False)


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(SessionFileError, match="no session file"):
        ActiveLearner.load(tmp_path / "none.socbi")
    with pytest.raises(SessionFileError, match="no session file"):
        ActiveLearner.load(tmp_path)
    np.save(tmp_path / "one.npy", np.arange(3))
    with pytest.raises(SessionFileError, match="single .npy array"):
        ActiveLearner.read_file(tmp_path / "one.npy")


def test_huge_capacity_raises_memory_error_with_size() -> None:
    with pytest.raises(MemoryError, match=rf"capacity {socbi.MAX_CAPACITY}: .* needs \d+ bytes"):
        # 4 Gi entries x 16 bytes = 64 GiB: refused by the allocator on a test box
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = 8 << 30 if hard == resource.RLIM_INFINITY else min(8 << 30, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        try:
            socbi.SemiOrderedIndex(socbi.MAX_CAPACITY)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-s"]))
