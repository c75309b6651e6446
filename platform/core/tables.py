"""User tables (CSV, Parquet) read in record batches with pyarrow, so a file larger than memory
streams through, and every defective row is named instead of failing the whole read.

Row numbers are what a person sees in the file: the line number for CSV (the header is line 1)
and the 1-based row position for Parquet. A row is bad when it has the wrong number of fields
(CSV), a missing, NaN or infinite value, or a value that is not a number; good rows come back
as float64 features in file order.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from rlad.core.data import LABEL_COLUMNS, DatasetError, check_unique_columns

if TYPE_CHECKING:
    from rlad.core.data import TabularDataset

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
FLOAT32_MAX = float(np.finfo(np.float32).max)
NON_FINITE = frozenset({"", "nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


@dataclass(frozen=True)
class BadRow:
    row: int
    reason: str


@dataclass
class Batch:
    """The good rows of one record batch (features, row numbers, ids, labels) and the bad ones."""

    X: np.ndarray
    rows: np.ndarray
    ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    bad: list[BadRow] = field(default_factory=list)


@dataclass(frozen=True)
class TableSchema:
    """Which columns of a table are features, which one holds ids and which one labels."""

    features: tuple[str, ...]
    id_column: str | None = None
    label_column: str | None = None


def table_columns(path: str | os.PathLike) -> list[str]:
    """Column names of a CSV (its header) or Parquet file, without reading the rows."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if not header:
                raise DatasetError(f"{path}: empty CSV file (no header line)")
            return header
        return list(pq.ParquetFile(path).schema_arrow.names)
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable {path.suffix} table ({exc})") from exc


def infer_schema(path: str | os.PathLike, features: Sequence[str] | None = None, id_column: str | None = None,
                 label_column: str | None = None) -> TableSchema:
    """Check that the named columns exist; ``features=None`` takes every other column (a column
    named ``y`` or ``label`` is taken as the label column unless ``label_column`` says otherwise)."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise DatasetError(f"{path}: unsupported file type {path.suffix!r}; use one of {TABLE_SUFFIXES}")
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    columns = table_columns(path)
    check_unique_columns(path, columns)
    if label_column is None and features is None:
        label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
    for what, name in (("id", id_column), ("label", label_column)):
        if name is not None and name not in columns:
            raise DatasetError(f"{path}: no {what} column {name!r}; columns are {columns}")
    if features is None:
        features = [c for c in columns if c not in (id_column, label_column)]
    missing = [c for c in features if c not in columns]
    if missing:
        raise DatasetError(f"{path}: missing feature column(s) {missing}; the model was fitted on {list(features)}")
    if not features:
        raise DatasetError(f"{path}: no feature columns")
    return TableSchema(tuple(features), id_column, label_column)


def _csv_batches(path: Path, batch_rows: int, skipped: list[int]) -> Iterator[pa.RecordBatch]:
    """Every column as text (types are checked per row later); rows with the wrong number of
    fields are skipped by pyarrow and their line numbers appended to ``skipped``."""
    names = table_columns(path)

    def invalid(row) -> str:
        skipped.append(int(row.number))
        return "skip"

    reader = pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(use_threads=False, block_size=max(1 << 16, batch_rows * 16 * len(names))),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=invalid),
        convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in names}, strings_can_be_null=False),
    )
    with reader:
        yield from reader


def _line_numbers(first: int, n: int, skipped: Sequence[int]) -> np.ndarray:
    """Line numbers of ``n`` consecutive parsed CSV rows, the first being the ``first``-th parsed
    row (0-based): data start at line 2 and skipped (malformed) lines take no parsed row."""
    k = np.arange(first, first + n, dtype=np.int64)
    s = np.sort(np.asarray(skipped, dtype=np.int64))
    line = k + 2
    while True:  # a fixed point: line = k + 2 + #(skipped lines at or before it)
        shifted = k + 2 + np.searchsorted(s, line, side="right")
        if np.array_equal(shifted, line):
            return line
        line = shifted


def _numeric(column: pa.Array, name: str, rows: np.ndarray, bad: dict[int, str]) -> np.ndarray:
    """A column as float64; rows whose value is missing, non-finite or not a number go to ``bad``."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        text = None
    else:
        text = pd.Series(column.to_pandas(), dtype="object").astype(str).str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    for i in np.flatnonzero(~np.isfinite(values)):
        raw = "nan" if text is None else text.iat[i]
        if raw.lower() in NON_FINITE or raw == "None":
            bad.setdefault(int(rows[i]), f"column {name!r}: missing, NaN or infinite value")
        else:
            bad.setdefault(int(rows[i]), f"column {name!r}: {raw[:40]!r} is not a number")
    for i in np.flatnonzero(np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)):
        bad.setdefault(int(rows[i]), f"column {name!r}: {values[i]:g} is beyond the float32 range the models compute in")
    return values


def read_batches(path: str | os.PathLike, schema: TableSchema, batch_rows: int = 65_536) -> Iterator[Batch]:
    """Stream ``path`` in record batches of about ``batch_rows`` rows."""
    path = Path(path)
    skipped: list[int] = []
    if path.suffix == ".csv":
        source = _csv_batches(path, batch_rows, skipped)
    else:
        wanted = list(dict.fromkeys([*schema.features, *(c for c in (schema.id_column, schema.label_column) if c)]))
        source = pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=wanted)
    parsed = 0
    reported = 0
    try:
        for record in source:
            n = record.num_rows
            rows = _line_numbers(parsed, n, skipped) if path.suffix == ".csv" else np.arange(parsed + 1, parsed + n + 1)
            parsed += n
            bad: dict[int, str] = {line: "wrong number of fields" for line in skipped[reported:]}
            reported = len(skipped)
            X = np.column_stack([_numeric(record.column(c), c, rows, bad) for c in schema.features])
            labels = None
            if schema.label_column is not None:
                labels = _numeric(record.column(schema.label_column), schema.label_column, rows, bad)
                for i in np.flatnonzero(np.isfinite(labels) & ~np.isin(labels, (0.0, 1.0))):
                    bad.setdefault(int(rows[i]), f"label column {schema.label_column!r}: {labels[i]:g} is not 0 or 1")
            ids = record.column(schema.id_column).to_numpy(zero_copy_only=False) if schema.id_column else None
            good = ~np.isin(rows, np.fromiter(bad, dtype=np.int64, count=len(bad)))
            yield Batch(X=X[good], rows=rows[good], ids=None if ids is None else ids[good],
                        labels=None if labels is None else labels[good].astype(np.int64),
                        bad=[BadRow(r, bad[r]) for r in sorted(bad)])
    except pa.ArrowException as exc:
        raise DatasetError(f"{path}: cannot read the table ({exc})") from exc
    if len(skipped) > reported:  # malformed lines after the last parsed row
        yield Batch(X=np.empty((0, len(schema.features))), rows=np.empty(0, np.int64),
                    bad=[BadRow(line, "wrong number of fields") for line in skipped[reported:]])


def describe_bad_rows(path: str | os.PathLike, bad: Sequence[BadRow], limit: int = 20) -> str:
    """One message naming the first ``limit`` bad rows and their reasons."""
    listed = "; ".join(f"row {b.row}: {b.reason}" for b in bad[:limit])
    more = f" (and {len(bad) - limit} more)" if len(bad) > limit else ""
    return f"{path}: {len(bad)} bad row(s): {listed}{more}"


def read_table(path: str | os.PathLike, schema: TableSchema, max_bad: int = 20) -> Batch:
    """The whole table in memory (for training); any bad row is an error naming the first ``max_bad``."""
    batches = list(read_batches(path, schema))
    bad = [b for batch in batches for b in batch.bad]
    if bad:
        raise DatasetError(describe_bad_rows(path, bad, max_bad))
    if not batches or sum(len(b.rows) for b in batches) == 0:
        raise DatasetError(f"{path}: no rows")
    cat = lambda xs: None if xs[0] is None else np.concatenate(xs)  # noqa: E731
    return Batch(X=np.concatenate([b.X for b in batches]), rows=np.concatenate([b.rows for b in batches]),
                 ids=cat([b.ids for b in batches]), labels=cat([b.labels for b in batches]))


@dataclass
class TrainingTable:
    """A whole table for training: raw feature columns (CSV: text; Parquet: typed), labels, ids,
    row numbers, and the rows that could not be read (wrong width, a label not 0/1)."""

    frame: pd.DataFrame
    rows: np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray | None
    label_column: str | None
    bad: list[BadRow] = field(default_factory=list)

    def without(self, rows: Sequence[int]) -> "TrainingTable":
        keep = ~np.isin(self.rows, np.asarray(list(rows), dtype=np.int64))
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return TrainingTable(self.frame[keep].reset_index(drop=True), self.rows[keep], pick(self.labels), pick(self.ids),
                             self.label_column, self.bad)


def read_training_table(path: str | os.PathLike, label_column: str | None = None, id_column: str | None = None,
                        exclude: Sequence[str] = ()) -> TrainingTable:
    """The one table reader of ``rlad fit`` and ``rlad bench``: every column but id, label and
    ``exclude`` as raw values (types are learnt later, :mod:`rlad.core.preprocess`)."""
    path = Path(path)
    schema = infer_schema(path, id_column=id_column, label_column=label_column)
    keep = [c for c in schema.features if c not in exclude]
    wanted = list(dict.fromkeys([*keep, *(c for c in (schema.id_column, schema.label_column) if c)]))
    skipped: list[int] = []
    try:
        if path.suffix == ".csv":
            batches = list(_csv_batches(path, 65_536, skipped))
            table = pa.Table.from_batches(batches) if batches else pa.table({c: pa.array([], pa.string()) for c in table_columns(path)})
            rows = _line_numbers(0, table.num_rows, skipped)
        else:
            table = pq.read_table(path, columns=wanted)
            rows = np.arange(1, table.num_rows + 1)
    except pa.ArrowException as exc:
        raise DatasetError(f"{path}: cannot read the table ({exc})") from exc
    bad: dict[int, str] = {line: "wrong number of fields" for line in skipped}
    labels = None
    if schema.label_column is not None:
        labels = _numeric(table.column(schema.label_column), schema.label_column, rows, bad)
        for i in np.flatnonzero(np.isfinite(labels) & ~np.isin(labels, (0.0, 1.0))):
            bad.setdefault(int(rows[i]), f"label column {schema.label_column!r}: {labels[i]:g} is not 0 or 1")
        labels = np.where(np.isfinite(labels) & np.isin(labels, (0.0, 1.0)), labels, 0.0).astype(np.int64)
    ids = table.column(schema.id_column).to_numpy(zero_copy_only=False) if schema.id_column else None
    frame = table.select(keep).to_pandas()
    if frame.shape[0] == 0:
        raise DatasetError(f"{path}: no rows")
    out = TrainingTable(frame, rows, labels, ids, schema.label_column, [BadRow(r, bad[r]) for r in sorted(bad)])
    return out.without([b.row for b in out.bad if b.row in set(rows.tolist())])


def read_raw_batches(path: str | os.PathLike, columns: Sequence[str], id_column: str | None = None,
                     batch_rows: int = 65_536) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray | None, list[BadRow]]]:
    """Stream ``columns`` (and the id column) of ``path`` as raw values: per record batch the
    frame, row numbers, ids and the rows with the wrong number of fields (CSV)."""
    path = Path(path)
    skipped: list[int] = []
    if path.suffix == ".csv":
        source = _csv_batches(path, batch_rows, skipped)
    else:
        wanted = list(dict.fromkeys([*columns, *([id_column] if id_column else [])]))
        source = pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=wanted)
    parsed = reported = 0
    try:
        for record in source:
            n = record.num_rows
            rows = _line_numbers(parsed, n, skipped) if path.suffix == ".csv" else np.arange(parsed + 1, parsed + n + 1)
            parsed += n
            bad = [BadRow(line, "wrong number of fields") for line in skipped[reported:]]
            reported = len(skipped)
            ids = record.column(id_column).to_numpy(zero_copy_only=False) if id_column else None
            yield pa.Table.from_batches([record]).select(list(columns)).to_pandas(), rows, ids, bad
    except pa.ArrowException as exc:
        raise DatasetError(f"{path}: cannot read the table ({exc})") from exc
    if len(skipped) > reported:
        yield (pd.DataFrame({c: pd.Series([], dtype=object) for c in columns}), np.empty(0, np.int64), None,
               [BadRow(line, "wrong number of fields") for line in skipped[reported:]])


def load_table_dataset(path: str | os.PathLike, label_column: str | None = None, id_column: str | None = None,
                       options: Any = None) -> "TabularDataset":
    """A labelled CSV/Parquet table as a :class:`TabularDataset` for the commands that split one
    (bench, tune, swift-hydra, dplan, meta-rae): read by :func:`read_training_table`, its columns
    encoded by :class:`~rlad.core.preprocess.TablePreprocessor` (labels are not used for that);
    any bad row is an error naming it."""
    from rlad.core.data import validate
    from rlad.core.preprocess import TablePreprocessor

    table = read_training_table(path, label_column=label_column, id_column=id_column)
    if table.labels is None:
        raise DatasetError(f"{path}: no label column; expected one of {LABEL_COLUMNS} (or name it), found {list(table.frame.columns)}")
    pre = TablePreprocessor(options)
    table.frame = table.frame[pre.choose_columns(list(table.frame.columns))]
    enc = pre.fit_transform(table.frame)
    bad = sorted([*table.bad, *(BadRow(int(table.rows[i]), why) for i, why in enc.bad.items())], key=lambda b: b.row)
    if bad:
        raise DatasetError(describe_bad_rows(path, bad))
    return validate(enc.X, table.labels, str(path))
