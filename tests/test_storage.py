"""socbi.storage: row sources read in validated chunks and by id; checkpoint stores."""
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from socbi.storage import (CheckpointStore, NpyRows, ParquetRows, open_rows,  # noqa: E402
                           write_npy, write_parquet)


def rows(n=1000, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_chunks_and_take_return_the_rows(fmt, tmp_path):
    x = rows()
    if fmt == "npy":
        src = open_rows(write_npy(tmp_path / "x.npy", [x[:300], x[300:]], 1000, 6).as_posix())
        assert isinstance(src, NpyRows)
    else:
        write_parquet(tmp_path / "x.parquet", [x[:500], x[500:]], row_group_rows=128)
        src = open_rows(str(tmp_path / "x.parquet"))
        assert isinstance(src, ParquetRows)
    assert (src.n, src.dim) == (1000, 6)
    got = [(i, r) for i, r in src.chunks(130, 777, chunk=100)]
    ids = np.concatenate([g[0] for g in got])
    assert np.array_equal(ids, np.arange(130, 777))
    assert np.array_equal(np.concatenate([g[1] for g in got]), x[130:777])
    pick = np.array([999, 0, 500, 127, 128])
    assert np.array_equal(src.take(pick), x[pick])
    import pickle
    assert np.array_equal(pickle.loads(pickle.dumps(src)).take(pick), x[pick])


def test_streamed_validation_names_the_bad_row(tmp_path):
    x = rows()
    x[901, 2] = np.inf
    write_parquet(tmp_path / "x.parquet", [x], row_group_rows=256)
    src = open_rows(str(tmp_path / "x.parquet"))
    with pytest.raises(ValueError, match=r"rows \[901\]"):
        for _ in src.chunks():
            pass
    with pytest.raises(ValueError, match="ids must lie in"):
        src.take([1000])


def test_bad_specs_say_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .npy file"):
        open_rows(str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="cannot tell the format"):
        open_rows(str(tmp_path / "x.csv"))
    x = rows(10)
    t = pa.table({"vec": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 6)})
    import pyarrow.parquet as pq
    pq.write_table(t, tmp_path / "v.parquet")
    with pytest.raises(ValueError, match="no column 'embedding'"):
        open_rows(str(tmp_path / "v.parquet"))
    assert open_rows(str(tmp_path / "v.parquet"), column="vec").dim == 6


@pytest.mark.parametrize("uri", [False, True])
def test_checkpoint_store_roundtrip(uri, tmp_path):
    loc = f"file://{tmp_path}/ck" if uri else str(tmp_path / "ck")
    st = CheckpointStore(loc)
    st.put("a/b/x.bin", b"hello")
    st.put("a/b/x.bin", b"hello2")  # replaced atomically
    st.put_npz("a/c.npz", dict(v=np.arange(3)))
    assert st.get("a/b/x.bin") == b"hello2"
    assert st.get_npz("a/c.npz")["v"].tolist() == [0, 1, 2]
    assert st.listdir("a") == ["b", "c.npz"] and st.listdir("nothing") == []
    assert st.listdir("a/b") == ["x.bin"]  # no temporary files left behind
    st.delete("a/b")
    assert not st.exists("a/b/x.bin") and st.exists("a/c.npz")


def test_rows_view_reads_by_id_and_refuses_the_whole_matrix():
    from socbi.storage import RowsView, take_rows

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    asked = []

    def fetch(ids):
        asked.append(ids.tolist())
        return x[ids]

    v = RowsView(10, 4, fetch, where="the shards")
    assert len(v) == 10 and v.shape == (10, 4) and v.dtype == np.float32
    assert np.array_equal(v[[7, 2]], x[[7, 2]]) and np.array_equal(v[3], x[3])
    assert np.array_equal(take_rows(v, np.array([1, 9])), x[[1, 9]])
    assert asked == [[7, 2], [3], [1, 9]]  # only the rows asked for
    with pytest.raises(ValueError, match="whole 10 x 4 embedding matrix.*the shards"):
        np.asarray(v)
    mem = RowsView(10, 4, None, array=x)  # in memory: the matrix itself
    assert np.asarray(mem) is x and np.array_equal(mem[np.array([5])], x[[5]])
    assert take_rows(["a", "b", "c"], np.array([2, 0])) == ["c", "a"]
