"""Where embeddings and checkpoints live when a pool is larger than one process.

Row sources (:func:`open_rows`) describe an (n, d) embedding matrix that every node of a
cluster can read, without holding it: a source object is a few hundred bytes, is
pickled to each Ray shard actor, and the actor streams the rows it owns.

* :class:`NpyRows` -- a ``.npy`` file (``np.load(mmap_mode="r")``): O(1) random access
  by row, the fastest scan; no compression, one file.
* :class:`ParquetRows` -- one Parquet file or a folder of them (pyarrow), the embedding
  in a ``FixedSizeList<float32>`` (or list) column; row ids are positions in file order
  (files sorted by name). Any pyarrow filesystem URI works (``s3://``, ``gs://``,
  ``hdfs://``, ``file://``). Random access reads whole row groups.
* :class:`RayDatasetRows` -- a ``ray.data.Dataset`` with an id column and an embedding
  column; each reader streams the whole dataset (no random access).
* :class:`ArrayRows` -- an in-memory array (tests, small pools); the array is put into
  Ray's object store once and shared by the actors of a node.

Every source yields ``(ids int64, rows float32 (m, d))`` chunks through
:meth:`RowSource.chunks` (optionally only ``[lo, hi)`` for contiguous ownership) and
reads rows by id with :meth:`RowSource.take` (where the format allows). Chunks are
validated (finite, right dimension) as they stream: validation is per chunk, never an
n x d temporary.

:class:`RowsView` is how a distributed session's driver sees the matrix: ``view[ids]``
reads those rows (from a ``.npy`` map or from the shards), ``len(view)`` is n, and
nothing of size n x d is ever built unless the rows are in memory anyway.

Checkpoints (:class:`CheckpointStore`) go to a local/shared folder or any pyarrow
filesystem URI; small files are written to a temporary name and renamed where the
filesystem can rename atomically (local, NFS, HDFS), and written in one PUT on object
stores (S3, GCS), which is atomic per object.

Thread safety: sources and stores are read-only descriptions plus lazily opened
handles; use one instance per thread (each Ray actor gets its own copy).
"""
from __future__ import annotations

import io
import os
import posixpath
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ._checks import positive_int

__all__ = ["RowSource", "NpyRows", "ParquetRows", "RayDatasetRows", "ArrayRows", "open_rows",
           "RowsView", "take_rows", "write_npy", "write_parquet", "CheckpointStore"]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_CHUNK = 65_536


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.fs  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("this needs pyarrow: pip install pyarrow (or the socbi 'distributed' "
                          "extra)") from exc
    return pyarrow


def _check_chunk(rows: Any, dim: int, first_id: int, what: str) -> np.ndarray:
    """One streamed chunk as C-contiguous float32 (m, dim); ValueError naming the rows
    (by global id) that are non-finite. O(m d), one m x d bool temporary."""
    arr = np.ascontiguousarray(rows, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what}: a chunk has shape {arr.shape}, expected (m, {dim}); every row "
                         f"must have the same dimension")
    ok = np.isfinite(arr).all(axis=1)
    if not ok.all():
        bad = np.flatnonzero(~ok)[:5] + first_id
        raise ValueError(f"{what} contains NaN or infinite values in rows {bad.tolist()} (ids); "
                         f"drop or repair those samples")
    return arr


class RowSource:
    """An (n, d) float embedding matrix on storage, read in chunks or by id.

    ``n`` and ``dim`` are known after construction (metadata only, no rows read).
    Sources are picklable: file handles are opened lazily in whichever process reads.
    """

    n: int
    dim: int
    random_access = True

    def chunks(self, lo: int = 0, hi: Optional[int] = None, *, chunk: int = DEFAULT_CHUNK
               ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Yield ``(ids, rows)`` for every row with id in ``[lo, hi)``, validated, in
        chunks of about ``chunk`` rows. O((hi - lo) d) reads; memory O(chunk d)."""
        raise NotImplementedError

    def take(self, ids: Any) -> np.ndarray:
        """Rows of ``ids`` (any order, int64), float32 (len(ids), d), validated."""
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        """A JSON-able description (saved with checkpoints; :func:`open_rows` reopens it)."""
        raise NotImplementedError

    def release(self) -> None:
        """Drop open handles and mappings (reopened on next use). A shard calls it once
        its pool is built, so the file pages it read stop counting in its RSS."""

    def _check_ids(self, ids: Any) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):
            raise ValueError(f"ids must lie in [0, {self.n}), got values from {int(ids.min())} to "
                             f"{int(ids.max())}")
        return ids

    def _range(self, lo: int, hi: Optional[int]) -> Tuple[int, int]:
        hi = self.n if hi is None else int(hi)
        if not 0 <= lo <= hi <= self.n:
            raise ValueError(f"row range [{lo}, {hi}) is outside [0, {self.n})")
        return int(lo), hi

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, dim={self.dim})"


class _MatrixRows(RowSource):
    """A source whose rows are one array (a memory map or in memory): chunks are slices of
    ``self.array``; errors name ``self._where``."""

    _where = "embeddings"

    @property
    def array(self) -> np.ndarray:
        raise NotImplementedError

    def chunks(self, lo: int = 0, hi: Optional[int] = None, *, chunk: int = DEFAULT_CHUNK
               ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        lo, hi = self._range(lo, hi)
        chunk = positive_int("chunk", chunk)
        for s in range(lo, hi, chunk):
            e = min(hi, s + chunk)
            yield np.arange(s, e, dtype=np.int64), _check_chunk(self.array[s:e], self.dim, s, self._where)


class NpyRows(_MatrixRows):
    """A 2-D ``.npy`` file read through a memory map (``path`` on a shared filesystem)."""

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no .npy file at {self.path!r}; pass the path of an (n, d) array "
                                    f"saved with np.save (every node must see it)")
        m = self._map()
        if m.ndim != 2 or m.dtype.kind not in "fiu":
            raise ValueError(f"{self.path!r} holds a {m.ndim}-D {m.dtype} array; expected a 2-D "
                             f"numeric (n, d) matrix")
        self.n, self.dim = (int(s) for s in m.shape)
        self._mm: Optional[np.ndarray] = None

    def _map(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    @property
    def _where(self) -> str:  # type: ignore[override]
        return self.path

    def __getstate__(self) -> Dict[str, Any]:
        return {"path": self.path, "n": self.n, "dim": self.dim, "_mm": None}

    def release(self) -> None:
        self._mm = None

    @property
    def array(self) -> np.ndarray:
        """The read-only memory map (opened on first use in this process)."""
        if self._mm is None:
            self._mm = self._map()
        return self._mm

    def take(self, ids: Any) -> np.ndarray:
        ids = self._check_ids(ids)
        out = np.ascontiguousarray(self.array[ids], dtype=np.float32)
        return _check_chunk(out, self.dim, 0, self.path) if ids.size else out.reshape(0, self.dim)

    def describe(self) -> Dict[str, Any]:
        return {"format": "npy", "path": self.path}


class ArrayRows(_MatrixRows):
    """An in-memory (n, d) array. With Ray running it is put in the object store once
    (``share()``), so actors on one node map the same copy instead of each pickling it."""

    def __init__(self, x: Any) -> None:
        arr = np.asarray(x)
        if arr.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array (samples x dimension), got shape "
                             f"{arr.shape}")
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"embeddings must be numeric, got dtype {arr.dtype}; pass a float array")
        self._x: Optional[np.ndarray] = arr
        self._ref: Any = None
        self.n, self.dim = (int(s) for s in arr.shape)

    def share(self) -> "ArrayRows":
        """Put the array in Ray's object store; pickled copies then carry only the ref."""
        import ray
        if self._ref is None:
            self._ref = ray.put(np.ascontiguousarray(self._x, dtype=np.float32))
        return self

    def __getstate__(self) -> Dict[str, Any]:
        st = dict(self.__dict__)
        if self._ref is not None:
            st["_x"] = None
        return st

    def release(self) -> None:
        if self._ref is not None:  # the object store keeps the rows; map them again on use
            self._x = None

    @property
    def array(self) -> np.ndarray:
        if self._x is None:
            import ray
            self._x = ray.get(self._ref)
        return self._x

    def take(self, ids: Any) -> np.ndarray:
        ids = self._check_ids(ids)
        return _check_chunk(self.array[ids], self.dim, 0, "embeddings")

    def describe(self) -> Dict[str, Any]:
        return {"format": "array"}


class RowsView:
    """An (n, d) matrix read by id on demand: ``view[ids]`` calls ``fetch(ids)`` and returns
    float32 (len(ids), d); ``len(view)`` is n. What a distributed session hands its model
    and strategies instead of the matrix: reading a batch's rows costs O(len(ids) d),
    never O(n d). The rows were validated where they were loaded (by the shards), so
    nothing is re-checked here.

    ``array``: the whole matrix when it is in driver memory anyway (an in-memory source),
    else None. ``np.asarray(view)`` returns it, or raises ValueError naming the fix (a
    strategy that needs every row on the driver, e.g. K-Center, cannot run without it).
    Thread safety: as ``fetch``.
    """

    def __init__(self, n: int, dim: int, fetch: Any, *, array: Optional[np.ndarray] = None,
                 where: str = "the row source") -> None:
        self.n, self.dim = int(n), int(dim)
        self._fetch = fetch
        self.array = array
        self.where = where

    @property
    def shape(self) -> Tuple[int, int]:
        return self.n, self.dim

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.array is None else self.array.dtype

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, ids: Any) -> np.ndarray:
        if isinstance(ids, (int, np.integer)):
            return self[np.array([ids])][0]
        ids = np.asarray(ids)
        if ids.dtype == bool:
            ids = np.flatnonzero(ids)
        if self.array is not None:
            return self.array[ids]
        return self._fetch(ids.astype(np.int64, copy=False))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self.array is None:
            raise ValueError(f"this needs the whole {self.n} x {self.dim} embedding matrix in driver "
                             f"memory, but the rows live in {self.where} and are read by id; use a "
                             f"strategy that reads only the rows it scores, or pass an in-memory array")
        return self.array if dtype is None else self.array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"RowsView(n={self.n}, dim={self.dim}, {'in memory' if self.array is not None else self.where})"


def take_rows(x: Any, ids: np.ndarray) -> Any:
    """Rows ``ids`` of model inputs ``x``: one fancy index for arrays and :class:`RowsView`
    (a batch read by id), a list of items for anything else (lists of texts, images)."""
    if isinstance(x, (np.ndarray, RowsView)):
        return x[ids]
    return [x[int(i)] for i in ids]


def _fs_and_path(location: str) -> Tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path or a filesystem URI."""
    pa = _pyarrow()
    if "://" in location:
        return pa.fs.FileSystem.from_uri(location)
    return pa.fs.LocalFileSystem(), os.path.abspath(location)


class ParquetRows(RowSource):
    """Parquet file(s) with one embedding column (``FixedSizeList<float>`` or list).

    ``location``: a file, or a folder whose ``*.parquet`` files (sorted by name) form the
    matrix in order; a local path or any pyarrow filesystem URI. Row ``i`` of the matrix
    is the ``i``-th row across the files. Only metadata is read at construction.
    """

    def __init__(self, location: PathLike, column: str = "embedding") -> None:
        pa = _pyarrow()
        self.location = os.fspath(location)
        self.column = str(column)
        fs, path = _fs_and_path(self.location)
        info = fs.get_file_info(path)
        if info.type == pa.fs.FileType.NotFound:
            raise FileNotFoundError(f"no Parquet file or folder at {self.location!r}")
        if info.type == pa.fs.FileType.Directory:
            sel = pa.fs.FileSelector(path, recursive=False)
            files = sorted(f.path for f in fs.get_file_info(sel)
                           if f.type == pa.fs.FileType.File and f.path.endswith(".parquet"))
            if not files:
                raise FileNotFoundError(f"{self.location!r} holds no *.parquet files")
        else:
            files = [path]
        self.files: List[str] = files
        groups: List[Tuple[int, int, int]] = []  # (file index, row group, rows)
        dim: Optional[int] = None
        for fi, f in enumerate(files):
            with fs.open_input_file(f) as fh:
                pf = pa.parquet.ParquetFile(fh)
                schema = pf.schema_arrow
                if self.column not in schema.names:
                    raise ValueError(f"{f!r} has no column {self.column!r} (columns: {schema.names}); "
                                     f"pass column= the embedding column")
                t = schema.field(self.column).type
                if not (pa.types.is_fixed_size_list(t) or pa.types.is_list(t)
                        or pa.types.is_large_list(t)):
                    raise ValueError(f"column {self.column!r} of {f!r} has type {t}; expected a list "
                                     f"of floats per row (FixedSizeList<float32> is best)")
                if pa.types.is_fixed_size_list(t):
                    if dim is not None and t.list_size != dim:
                        raise ValueError(f"{f!r} holds {t.list_size}-d rows, earlier files {dim}-d")
                    dim = t.list_size
                for g in range(pf.metadata.num_row_groups):
                    groups.append((fi, g, pf.metadata.row_group(g).num_rows))
        self._groups = groups
        starts = np.zeros(len(groups) + 1, np.int64)
        starts[1:] = np.cumsum([g[2] for g in groups])
        self._starts = starts
        self.n = int(starts[-1])
        if self.n == 0:
            raise ValueError(f"{self.location!r} holds no rows")
        if dim is None:  # variable-size list column: the first row gives d
            dim = int(self._read_group(0).shape[1])
        self.dim = int(dim)
        self._fs: Any = None

    def __getstate__(self) -> Dict[str, Any]:
        st = dict(self.__dict__)
        st["_fs"] = None
        return st

    def _filesystem(self) -> Any:
        if self._fs is None:
            self._fs = _fs_and_path(self.location)[0]
        return self._fs

    def _read_group(self, i: int) -> np.ndarray:
        pa = _pyarrow()
        fi, g, rows = self._groups[i]
        with self._filesystem().open_input_file(self.files[fi]) as fh:
            col = pa.parquet.ParquetFile(fh).read_row_group(g, columns=[self.column]).column(0)
        col = col.combine_chunks()
        if col.null_count:
            raise ValueError(f"column {self.column!r} of {self.files[fi]!r} has null rows")
        flat = col.flatten().to_numpy(zero_copy_only=False)
        if rows and flat.size % rows:
            raise ValueError(f"column {self.column!r} of {self.files[fi]!r} has rows of different "
                             f"lengths; every embedding must have the same dimension")
        return flat.reshape(rows, -1 if rows else 0)

    def chunks(self, lo: int = 0, hi: Optional[int] = None, *, chunk: int = DEFAULT_CHUNK
               ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Streams whole row groups overlapping ``[lo, hi)`` (the row group is Parquet's
        unit of reading); ``chunk`` is not used beyond that."""
        lo, hi = self._range(lo, hi)
        first = int(np.searchsorted(self._starts, lo, side="right")) - 1
        for i in range(max(first, 0), len(self._groups)):
            s, e = int(self._starts[i]), int(self._starts[i + 1])
            if s >= hi:
                break
            if e <= lo or e == s:
                continue
            rows = self._read_group(i)
            a, b = max(lo, s), min(hi, e)
            yield (np.arange(a, b, dtype=np.int64),
                   _check_chunk(rows[a - s:b - s], self.dim, a, self.location))

    def take(self, ids: Any) -> np.ndarray:
        """Reads each row group that holds a wanted id once. O(groups touched x group size)."""
        ids = self._check_ids(ids)
        out = np.empty((ids.size, self.dim), np.float32)
        grp = np.searchsorted(self._starts, ids, side="right") - 1
        for g in np.unique(grp).tolist():
            sel = np.flatnonzero(grp == g)
            rows = self._read_group(g)
            out[sel] = rows[ids[sel] - self._starts[g]]
        return _check_chunk(out, self.dim, 0, self.location)

    def describe(self) -> Dict[str, Any]:
        return {"format": "parquet", "path": self.location, "column": self.column}


class RayDatasetRows(RowSource):
    """A ``ray.data.Dataset`` with an int id column (ids 0..n-1, each once) and an
    embedding column. Reading streams the whole dataset (``iter_batches``) in the
    reading actor and keeps the wanted rows; there is no random access (``take`` is not
    supported: shards answer row requests from their own pools). ``n`` and ``dim`` come
    from ``ds.count()`` and the schema / first row, computed once on the driver."""

    random_access = False

    def __init__(self, dataset: Any, column: str = "embedding", id_column: str = "id",
                 batch_size: int = DEFAULT_CHUNK) -> None:
        self.dataset = dataset
        self.column, self.id_column = str(column), str(id_column)
        self.batch_size = positive_int("batch_size", batch_size)
        names = list(dataset.schema().names)
        for c, what in ((self.column, "column"), (self.id_column, "id_column")):
            if c not in names:
                raise ValueError(f"the dataset has no column {c!r} (columns: {names}); pass {what}=")
        self.n = int(dataset.count())
        if self.n == 0:
            raise ValueError("the dataset has no rows")
        first = next(iter(dataset.limit(1).iter_batches(batch_size=1, batch_format="numpy")))
        self.dim = int(np.asarray(first[self.column][0]).reshape(-1).size)

    def chunks(self, lo: int = 0, hi: Optional[int] = None, *, chunk: int = DEFAULT_CHUNK
               ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        lo, hi = self._range(lo, hi)
        for b in self.dataset.iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            ids = np.asarray(b[self.id_column], dtype=np.int64)
            col = b[self.column]
            rows = np.stack(col) if col.dtype == object else np.asarray(col)
            rows = rows.reshape(ids.size, -1)
            keep = (ids >= lo) & (ids < hi)
            if not keep.all():
                ids, rows = ids[keep], rows[keep]
            if ids.size:
                if ids.min() < 0 or ids.max() >= self.n:
                    raise ValueError(f"id column {self.id_column!r} holds ids outside [0, {self.n})")
                yield ids, _check_chunk(rows, self.dim, 0, "the dataset")

    def take(self, ids: Any) -> np.ndarray:
        raise NotImplementedError("a Ray Dataset has no random access; fetch rows from the "
                                  "shards (ShardedScorer.rows) instead")

    def describe(self) -> Dict[str, Any]:
        return {"format": "ray_dataset"}


def open_rows(spec: Any, **kwargs: Any) -> RowSource:
    """A :class:`RowSource` for ``spec``: a source (returned as is), a numpy array, a
    ``ray.data.Dataset``, a ``.npy`` path, or a Parquet file/folder path or URI
    (``.parquet`` suffix or a folder). ``kwargs`` go to the source class (``column=``)."""
    if isinstance(spec, RowSource):
        return spec
    if isinstance(spec, np.ndarray):
        return ArrayRows(spec)
    if type(spec).__name__ in ("Dataset", "MaterializedDataset") and hasattr(spec, "iter_batches"):
        return RayDatasetRows(spec, **kwargs)
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        if s.endswith(".npy"):
            return NpyRows(s)
        if s.endswith(".parquet") or "://" in s or os.path.isdir(s):
            return ParquetRows(s, **kwargs)
        raise ValueError(f"cannot tell the format of {s!r}: pass a .npy file, a .parquet file, "
                         f"or a folder / URI of Parquet files")
    if isinstance(spec, dict) and spec.get("format") in ("npy", "parquet"):
        return NpyRows(spec["path"]) if spec["format"] == "npy" else \
            ParquetRows(spec["path"], column=spec.get("column", "embedding"))
    raise ValueError(f"embeddings must be an array, a RowSource, a ray.data.Dataset or a path "
                     f"(.npy / Parquet), got {type(spec).__name__}")


def write_npy(path: PathLike, blocks: Any, n: int, dim: int) -> Path:
    """Write an (n, dim) float32 ``.npy`` from an iterable of row blocks without holding
    the matrix (``np.lib.format.open_memmap``). Returns the path."""
    p = Path(path)
    mm = np.lib.format.open_memmap(str(p), mode="w+", dtype=np.float32, shape=(int(n), int(dim)))
    pos = 0
    for b in blocks:
        b = np.asarray(b, np.float32)
        mm[pos:pos + b.shape[0]] = b
        pos += b.shape[0]
    if pos != n:
        raise ValueError(f"the blocks held {pos} rows, expected n={n}")
    mm.flush()
    del mm
    return p


def write_parquet(path: PathLike, blocks: Any, *, column: str = "embedding",
                  row_group_rows: int = 65_536) -> Path:
    """Write row blocks (each (m, d) float32) to one Parquet file with a
    ``FixedSizeList<float32, d>`` column, one row group per ``row_group_rows`` rows."""
    pa = _pyarrow()
    p = Path(path)
    writer = None
    try:
        for b in blocks:
            b = np.ascontiguousarray(b, np.float32)
            arr = pa.FixedSizeListArray.from_arrays(pa.array(b.ravel()), b.shape[1])
            table = pa.table({column: arr})
            if writer is None:
                writer = pa.parquet.ParquetWriter(str(p), table.schema, compression="none")
            writer.write_table(table, row_group_size=int(row_group_rows))
    finally:
        if writer is not None:
            writer.close()
    return p


# ------------------------------------------------------------------------ checkpoints
class CheckpointStore:
    """Files under a root on a local/shared folder or any pyarrow filesystem URI.

    Paths are relative, '/'-separated. :meth:`put` writes small files atomically where
    the filesystem renames atomically (write to a temporary name, then move) and with
    one PUT elsewhere. Every node that may run a shard must reach ``location``: a shared
    mount (NFS, Lustre) or an object store URI (``s3://bucket/run``). A local path is
    only correct when every shard runs on the machine that owns it.
    """

    def __init__(self, location: PathLike) -> None:
        self.location = os.fspath(location)
        self.fs, self.root = _fs_and_path(self.location)
        self._local = type(self.fs).__name__ == "LocalFileSystem"
        self.fs.create_dir(self.root, recursive=True)

    def __getstate__(self) -> Dict[str, Any]:
        return {"location": self.location}

    def __setstate__(self, st: Dict[str, Any]) -> None:
        self.__init__(st["location"])  # type: ignore[misc]

    def _p(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def put(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` (parents created), replacing it atomically."""
        path = self._p(rel)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        if self._local:  # socbi's one atomic write: temporary file, fsync, rename, fsync the folder
            from ._files import atomic_write

            atomic_write(path, lambda fh: fh.write(data))
            return
        with self.fs.open_output_stream(path) as fh:  # object stores: one PUT, atomic by itself
            fh.write(data)

    def get(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._p(rel)) as fh:
            return fh.read()

    def put_npz(self, rel: str, arrays: Dict[str, Any]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self.put(rel, buf.getvalue())

    def get_npz(self, rel: str) -> Dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.get(rel)), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def exists(self, rel: str) -> bool:
        pa = _pyarrow()
        return self.fs.get_file_info(self._p(rel)).type != pa.fs.FileType.NotFound

    def listdir(self, rel: str) -> List[str]:
        """Names (not paths) directly under ``rel``; empty when it does not exist."""
        pa = _pyarrow()
        sel = pa.fs.FileSelector(self._p(rel), recursive=False, allow_not_found=True)
        return sorted(posixpath.basename(f.path) for f in self.fs.get_file_info(sel))

    def upload(self, local_dir: PathLike, rel: str) -> None:
        """Copy every file of ``local_dir`` (flat) under ``rel``."""
        for f in sorted(Path(local_dir).iterdir()):
            self.put(posixpath.join(rel, f.name), f.read_bytes())

    def download(self, rel: str, local_dir: PathLike) -> Path:
        d = Path(local_dir)
        d.mkdir(parents=True, exist_ok=True)
        for name in self.listdir(rel):
            (d / name).write_bytes(self.get(posixpath.join(rel, name)))
        return d

    def delete(self, rel: str) -> None:
        """Remove a file or a folder tree; missing paths are ignored."""
        pa = _pyarrow()
        path = self._p(rel)
        t = self.fs.get_file_info(path).type
        if t == pa.fs.FileType.Directory:
            self.fs.delete_dir(path)
        elif t == pa.fs.FileType.File:
            self.fs.delete_file(path)

    def __repr__(self) -> str:
        return f"CheckpointStore({self.location!r})"


