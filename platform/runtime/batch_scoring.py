"""Batch scoring of tables with a saved detector (``rlad score``): stream each file in record
batches, write score, P(anomaly) and the thresholded label per row to Parquet, keep an id column.

Two passes keep the promise "nothing written unless every row is good": the first only validates
(wrong width, missing/NaN/inf, non-numeric, beyond float32), the second scores and writes to a
temporary file that is renamed into place at the end. A model fitted on a table with types reads its
columns by name (reordered; a missing one named; extra ones ignored and listed once) and encodes
them as at fit time; a value that cannot be read as its column's type names the row and column. With ``skip_bad_rows`` the bad rows are left
out and listed, with their reasons, in ``<out>.bad_rows.csv``. A folder of files is scored by Ray
tasks, one per file, into an output folder of the same file names.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.registry import load_detector
from rlad.core.data import LABEL_COLUMNS, DatasetError, check_unique_columns
from rlad.core.tables import (TABLE_SUFFIXES, BadRow, Batch, TableSchema, describe_bad_rows, infer_schema, read_batches,
                              read_raw_batches, table_columns)


class BadRowsError(DatasetError):
    """Some rows cannot be scored; nothing was written."""


@dataclass(frozen=True)
class ScoreOptions:
    id_column: str | None = None
    skip_bad_rows: bool = False
    batch_rows: int = 65_536
    max_listed: int = 20  # bad rows named in an error message


@dataclass(frozen=True)
class FileReport:
    source: str
    out: str | None
    n_scored: int
    bad: tuple[BadRow, ...]
    ignored: tuple[str, ...] = ()  # columns of the file the model does not read
    unseen: tuple[tuple[str, int], ...] = ()  # (column, rows) whose category was unseen at fit time


def schema_for(detector: BaseDetector, path: Path, id_column: str | None) -> TableSchema:
    """The model's feature columns (``rlad fit`` records them); a model without names takes the
    file's columns other than the id and label ones, and their count must match."""
    names = tuple(getattr(detector.config, "columns", ()) or ())
    schema = infer_schema(path, features=names or None, id_column=id_column)
    if len(schema.features) != detector.n_features_in_:
        raise DatasetError(f"{path}: {len(schema.features)} feature columns {list(schema.features)}, "
                           f"the model expects {detector.n_features_in_}")
    return schema


def table_schema(detector: BaseDetector, path: Path, id_column: str | None) -> tuple[list[str], list[str]]:
    """For a model fitted on a table with types: the columns it reads (by name; a missing one is
    an error naming it) and the file's other columns, which are ignored."""
    columns = detector.preprocessor.columns
    have = table_columns(path)
    check_unique_columns(path, have)
    missing = [c for c in columns if c not in have]
    if missing:
        raise DatasetError(f"{path}: missing feature column(s) {missing}; the model reads {columns}")
    if id_column is not None and id_column not in have:
        raise DatasetError(f"{path}: no id column {id_column!r}; columns are {have}")
    return columns, [c for c in have if c not in columns and c != id_column and c not in LABEL_COLUMNS]


def numeric_batches(detector: BaseDetector, path: Path, options: ScoreOptions, unseen: Counter | None = None) -> Iterator[Batch]:
    """Record batches of ``path`` as the numbers the model takes: raw typed columns encoded by
    the model's table preprocessing (unseen categories counted in ``unseen``), or plain numbers."""
    if getattr(detector, "preprocessor", None) is None:
        yield from read_batches(path, schema_for(detector, path, options.id_column), options.batch_rows)
        return
    columns, _ = table_schema(detector, path, options.id_column)
    for frame, rows, ids, bad in read_raw_batches(path, columns, options.id_column, options.batch_rows):
        if not len(rows):
            yield Batch(X=np.empty((0, detector.n_features_in_)), rows=rows, bad=bad)
            continue
        enc = detector.preprocessor.transform(frame)
        if unseen is not None:
            unseen.update(enc.unseen)
        good = np.ones(len(rows), dtype=bool)
        good[list(enc.bad)] = False
        bad = bad + [BadRow(int(rows[i]), why) for i, why in enc.bad.items()]
        yield Batch(X=enc.X[good], rows=rows[good], ids=None if ids is None else ids[good], bad=bad)


def validate_file(detector: BaseDetector, path: Path, options: ScoreOptions) -> list[BadRow]:
    """First pass: every bad row of ``path`` (nothing is scored or written)."""
    return sorted((b for batch in numeric_batches(detector, path, options) for b in batch.bad), key=lambda b: b.row)


def score_file(detector: BaseDetector, path: Path, out: Path, options: ScoreOptions) -> FileReport:
    """Second pass: score the good rows of ``path`` into ``out`` (Parquet, written atomically)."""
    ignored = table_schema(detector, path, options.id_column)[1] if getattr(detector, "preprocessor", None) else []
    unseen: Counter = Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    bad: list[BadRow] = []
    n = 0
    writer: pq.ParquetWriter | None = None
    try:
        for batch in numeric_batches(detector, path, options, unseen):
            bad += batch.bad
            if not len(batch.rows):
                continue
            scores = detector.decision_function(batch.X)
            proba = detector.proba_from_scores(scores)
            broken = ~(np.isfinite(scores) & np.isfinite(proba))
            bad += [BadRow(int(r), "the model gave a non-finite score") for r in batch.rows[broken]]
            keep = ~broken
            columns = {"row": batch.rows[keep]}
            if batch.ids is not None:
                columns[options.id_column] = batch.ids[keep]
            columns.update(score=scores[keep], proba=proba[keep], label=(scores[keep] > detector.threshold_).astype(np.int8))
            table = pa.table(columns)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            n += int(keep.sum())
        if bad and not options.skip_bad_rows:
            raise BadRowsError(describe_bad_rows(path, sorted(bad, key=lambda b: b.row), options.max_listed))
        if writer is None:  # no good row at all: an empty table with the right columns
            empty = {"row": pa.array([], pa.int64()), "score": pa.array([], pa.float64()),
                     "proba": pa.array([], pa.float64()), "label": pa.array([], pa.int8())}
            pq.write_table(pa.table(empty), tmp)
        else:
            writer.close()
            writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    if bad:
        bad.sort(key=lambda b: b.row)
        side = out.with_name(out.name + ".bad_rows.csv")
        side.write_text("row,reason\n" + "".join(f'{b.row},"{b.reason.replace(chr(34), chr(39))}"\n' for b in bad))
    return FileReport(str(path), str(out), n, tuple(bad), tuple(ignored), tuple(sorted(unseen.items())))


def table_files(data: Path) -> list[Path]:
    """``data`` itself, or the CSV/Parquet files of a folder (not recursive)."""
    if data.is_dir():
        files = sorted(p for p in data.iterdir() if p.is_file() and p.suffix in TABLE_SUFFIXES)
        if not files:
            raise DatasetError(f"{data}: no {'/'.join(TABLE_SUFFIXES)} files")
        return files
    if not data.is_file():
        raise DatasetError(f"{data}: no such file or folder")
    return [data]


def _validate_task(model: str, path: Path, options: ScoreOptions) -> list[BadRow]:
    import torch

    torch.set_num_threads(1)
    return validate_file(load_detector(model), path, options)


def _score_task(model: str, path: Path, out: Path, options: ScoreOptions) -> FileReport:
    import torch

    torch.set_num_threads(1)
    return score_file(load_detector(model), path, out, options)


def score_tables(model: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike,
                 options: ScoreOptions = ScoreOptions()) -> list[FileReport]:
    """Score a file into the Parquet file ``out``, or a folder of files into the folder ``out``
    (Ray tasks, one per file; Ray must be running). Raises :class:`BadRowsError` before writing
    anything when a row is bad and ``skip_bad_rows`` is off."""
    model, data, out = str(model), Path(data), Path(out)
    files = table_files(data)
    if not data.is_dir():
        detector = load_detector(model)
        if not options.skip_bad_rows:
            bad = validate_file(detector, data, options)
            if bad:
                raise BadRowsError(describe_bad_rows(data, bad, options.max_listed))
        return [score_file(detector, data, out, options)]
    import ray

    targets = [out / f"{f.stem}.parquet" for f in files]
    if not options.skip_bad_rows:
        validate = ray.remote(_validate_task)
        found = ray.get([validate.remote(model, f, options) for f in files])
        errors = [describe_bad_rows(f, bad, options.max_listed) for f, bad in zip(files, found) if bad]
        if errors:
            raise BadRowsError("\n".join(errors))
    score = ray.remote(_score_task)
    return ray.get([score.remote(model, f, t, options) for f, t in zip(files, targets)])
