"""Human labelling: export a batch to CSV/JSON, read the labels back with strict checks.

Exported rows (CSV columns, or JSON ``items``)::

    id, rank, score, score_name, count, source, label

``id`` is the sample id (row of the embeddings), ``rank`` 1 = most valuable, ``score``
the strategy's criterion for that sample (``score_name`` says which: an uncertainty,
the distance to the labelled set for K-Center, the boundary count for So-CBI, empty
for random), ``count`` its So-CBI boundary count, ``source`` a reference to the raw
sample (file, URL, key) and ``label`` an empty cell for the labeller. A JSON file also
carries ``format``, ``round`` and ``strategy``.

:func:`read_labels` accepts the same files with the label column filled in (extra
columns are ignored, so spreadsheets may add notes). Labels are class numbers >= 0, or
class names when the session has ``class_names``. Every problem in the file (unknown
ids, duplicates, empty labels, ids already labelled, ids of the batch left out) is
reported at once, by line, in one ValueError; nothing is imported from a bad file.

Complexity: O(rows). Thread safety: pure functions; files are written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["COLUMNS", "format_batch", "export_batch", "read_labels"]

COLUMNS = ("id", "rank", "score", "score_name", "count", "source", "label")
BATCH_FORMAT = "socbi-batch"
_MAX_REPORTED = 5


def _fmt_score(v: Any) -> Optional[float]:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _format_of(path: Union[str, Path], fmt: Optional[str]) -> str:
    if fmt is not None:
        if fmt not in ("csv", "json"):
            raise ValueError(f"fmt must be 'csv' or 'json', got {fmt!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    raise ValueError(f"{str(path)!r}: cannot tell the format from suffix {suffix or '(none)'}; use a "
                     f".csv or .json name, or pass fmt='csv' / 'json'")


def format_batch(*, ids: Sequence[int], scores: Sequence[Any], counts: Sequence[int],
                 sources: Sequence[str], score_name: str, fmt: str = "csv", round: int = 0,
                 strategy: str = "") -> str:
    """The text of an exported batch (rows in the given order, rank = position + 1)."""
    ids = [int(i) for i in ids]
    if not (len(scores) == len(counts) == len(sources) == len(ids)):
        raise ValueError(f"ids, scores, counts and sources must have the same length, got "
                         f"{len(ids)}, {len(scores)}, {len(counts)}, {len(sources)}")
    rows = [dict(id=i, rank=r + 1, score=_fmt_score(s), score_name=score_name, count=int(c),
                 source=str(src), label=None)
            for r, (i, s, c, src) in enumerate(zip(ids, scores, counts, sources))]
    if fmt == "json":
        doc = dict(format=BATCH_FORMAT, round=int(round), strategy=strategy, score_name=score_name,
                   items=rows)
        return json.dumps(doc, indent=1) + "\n"
    if fmt != "csv":
        raise ValueError(f"fmt must be 'csv' or 'json', got {fmt!r}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in rows:
        score = "" if row["score"] is None else f"{row['score']:.6g}"
        w.writerow([row["id"], row["rank"], score, score_name, row["count"], row["source"], ""])
    return buf.getvalue()


def export_batch(path: Union[str, Path], *, ids: Sequence[int], scores: Sequence[Any],
                 counts: Sequence[int], sources: Sequence[str], score_name: str, round: int = 0,
                 strategy: str = "", fmt: Optional[str] = None) -> Path:
    """Write a batch for labelling (CSV or JSON by suffix or ``fmt``), atomically."""
    from ._files import atomic_write

    kind = _format_of(path, fmt)
    text = format_batch(ids=ids, scores=scores, counts=counts, sources=sources,
                        score_name=score_name, fmt=kind, round=round, strategy=strategy)
    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))


# ------------------------------------------------------------------------------ reading
def _rows_csv(path: Path, text: str) -> List[Tuple[str, Any, Any]]:
    """(where, id cell, label cell) per data row of a CSV file."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{path.name}: the file is empty; expected a header with id and label columns")
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("id", "label") if c not in names]
    if missing:
        raise ValueError(f"{path.name}: no {' or '.join(repr(m) for m in missing)} column in the header "
                         f"{header}; the header must name the id and label columns")
    i_id, i_label = names.index("id"), names.index("label")
    out = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank line
        where = f"line {reader.line_num}"
        id_cell = row[i_id] if i_id < len(row) else ""
        label_cell = row[i_label] if i_label < len(row) else ""
        out.append((where, id_cell.strip(), label_cell.strip()))
    return out


def _rows_json(path: Path, text: str) -> List[Tuple[str, Any, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name}: not valid JSON ({exc}); export the batch again or fix the syntax") from exc
    items = doc.get("items") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ValueError(f"{path.name}: expected a list of items or an object with 'items', each with "
                         f"'id' and 'label'")
    out = []
    for j, item in enumerate(items):
        where = f"item {j}"
        if not isinstance(item, dict):
            raise ValueError(f"{path.name} {where}: expected an object with 'id' and 'label', got "
                             f"{type(item).__name__}")
        out.append((where, item.get("id"), item.get("label")))
    return out


def _parse_id(cell: Any) -> Optional[int]:
    if isinstance(cell, bool):
        return None
    if isinstance(cell, int):
        return cell
    if isinstance(cell, float):
        return int(cell) if cell.is_integer() else None
    if isinstance(cell, str):
        try:
            return int(cell.strip())
        except ValueError:
            return None
    return None


def _parse_label(cell: Any, class_names: Optional[Sequence[str]]) -> Tuple[Optional[int], Optional[str]]:
    """(label, None) or (None, why)."""
    if cell is None or (isinstance(cell, str) and cell.strip() == ""):
        return None, "missing"
    if isinstance(cell, bool):
        return None, f"label {cell!r} is not a class"
    if class_names is not None and isinstance(cell, str) and cell.strip() in class_names:
        return list(class_names).index(cell.strip()), None
    value: Optional[int] = None
    if isinstance(cell, int):
        value = cell
    elif isinstance(cell, float) and cell.is_integer():
        value = int(cell)
    elif isinstance(cell, str):
        try:
            value = int(cell.strip())
        except ValueError:
            try:
                f = float(cell.strip())
                value = int(f) if f.is_integer() else None
            except ValueError:
                value = None
    if value is None or value < 0:
        names = f" or one of {list(class_names)}" if class_names is not None else ""
        return None, f"label {cell!r} is not a class number >= 0{names}"
    if class_names is not None and value >= len(class_names):
        return None, f"label {value} is not a class index (class_names has {len(class_names)} classes)"
    return value, None


def read_labels(path: Union[str, Path], *, n_samples: int, expected_ids: Optional[Sequence[int]] = None,
                allow_partial: bool = False, class_names: Optional[Sequence[str]] = None,
                labelled: Optional[np.ndarray] = None, fmt: Optional[str] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Read (ids, labels) from a labelled batch file; ValueError listing every problem.

    Checks: ids are integers in [0, n_samples), in ``expected_ids`` when given (the
    exported batch), not ``labelled`` already, each once; every row has a label (a class
    number >= 0, or a name in ``class_names``); and every id of ``expected_ids`` has a
    row. With ``allow_partial`` rows with an empty label and left-out ids are skipped
    (not labelled yet). Returns int64 arrays in file order. O(rows).
    """
    path = Path(path)
    kind = _format_of(path, fmt)
    if not path.is_file():
        raise FileNotFoundError(f"no labels file at {str(path)!r}")
    text = path.read_text(encoding="utf-8-sig")
    rows = _rows_csv(path, text) if kind == "csv" else _rows_json(path, text)
    expected = None if expected_ids is None else {int(i) for i in expected_ids}
    problems: List[str] = []
    seen: Dict[int, str] = {}
    ids: List[int] = []
    labels: List[int] = []
    for where, id_cell, label_cell in rows:
        i = _parse_id(id_cell)
        if i is None:
            problems.append(f"{where}: id {id_cell!r} is not an integer")
            continue
        if not 0 <= i < n_samples:
            problems.append(f"{where}: unknown id {i} (sample ids are 0..{n_samples - 1})")
            continue
        if expected is not None and i not in expected:
            problems.append(f"{where}: unknown id {i}: it was not in the exported batch")
            continue
        if i in seen:
            problems.append(f"{where}: duplicate id {i} (also on {seen[i]})")
            continue
        seen[i] = where
        if labelled is not None and bool(labelled[i]):
            problems.append(f"{where}: id {i} is labelled already")
            continue
        lab, why = _parse_label(label_cell, class_names)
        if why == "missing":
            if not allow_partial:
                problems.append(f"{where}: id {i} has no label")
            continue  # allow_partial: an empty label cell means "not labelled yet"
        if why is not None:
            problems.append(f"{where}: id {i}: {why}")
            continue
        ids.append(i)
        labels.append(int(lab))  # type: ignore[arg-type]
    if expected is not None and not allow_partial:
        left_out = sorted(expected - set(seen))
        if left_out:
            problems.append(f"{len(left_out)} id(s) of the exported batch have no row, e.g. {left_out[:5]} "
                            f"(label them, or pass allow_partial to import a partial batch)")
    if not rows and not problems:
        problems.append("the file has no rows")
    if problems:
        more = f" (and {len(problems) - _MAX_REPORTED} more)" if len(problems) > _MAX_REPORTED else ""
        raise ValueError(f"{path.name}: {len(problems)} problem(s): " + "; ".join(problems[:_MAX_REPORTED])
                         + more)
    return np.asarray(ids, np.int64), np.asarray(labels, np.int64)
