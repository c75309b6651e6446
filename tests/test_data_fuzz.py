"""Property-based fuzzing of ``load_dataset``: random CSV text, Parquet tables and ``.npz`` arrays
(dtypes, shapes, extremes, unicode, duplicate and missing columns) either load as a valid dataset
or raise ``DatasetError`` with a message, never another exception type. Fixed seed; the budget
is ``RLAD_FUZZ_EXAMPLES`` (default 150)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rlad.core.data import DatasetError, load_dataset

FUZZ = settings(max_examples=int(os.environ.get("RLAD_FUZZ_EXAMPLES", "150")), derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

names = st.one_of(st.sampled_from(["y", "label", "x", "a", "", " y", "Y"]), st.text(max_size=6))
cells = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "0", "1", "nan", "inf", "-inf", "1e39", "3.4e38", "1e400", "true", "null", '"', "\"a,b\"", "0x1F"]),
    st.text(max_size=5),
)


@st.composite
def csv_texts(draw) -> str:
    header = draw(st.lists(names, min_size=0, max_size=5))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=len(header) + 1), max_size=8))
    lines = [",".join(header)] + [",".join(r) for r in rows]
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))


numeric_dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes())
arrays = st.one_of(
    hnp.arrays(numeric_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)),
    hnp.arrays(st.one_of(hnp.complex_number_dtypes(), hnp.datetime64_dtypes(), hnp.unicode_string_dtypes(), hnp.byte_string_dtypes()),
               hnp.array_shapes(max_dims=2, max_side=4)),
    st.lists(st.integers(0, 1), max_size=12).map(np.array),
)


def columns(n: int) -> st.SearchStrategy[pa.Array]:
    values = st.one_of(
        st.lists(st.one_of(st.none(), st.integers(0, 1)), min_size=n, max_size=n).map(lambda v: pa.array(v, pa.int64())),
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=n, max_size=n).map(pa.array),
        st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n).map(lambda v: pa.array(v, pa.uint64())),
        st.lists(st.floats(width=16), min_size=n, max_size=n).map(lambda v: pa.array(np.array(v, np.float16))),
        st.lists(st.booleans(), min_size=n, max_size=n).map(pa.array),
        st.lists(st.text(max_size=3), min_size=n, max_size=n).map(pa.array),
        st.lists(st.lists(st.integers(0, 1), max_size=2), min_size=n, max_size=n).map(pa.array),
        st.just(pa.nulls(n)),
        st.just(pa.array(np.arange(n), pa.timestamp("s"))),
        st.lists(st.sampled_from(["0", "1"]), min_size=n, max_size=n).map(lambda v: pa.array(v).dictionary_encode()),
    )
    return values


@st.composite
def parquet_tables(draw) -> pa.Table:
    n = draw(st.integers(0, 8))
    header = draw(st.lists(names, min_size=1, max_size=4))
    return pa.table([draw(columns(n)) for _ in header], names=header)


def write(kind: str, content, folder: Path) -> Path:
    if isinstance(content, bytes):
        path = folder / f"data.{kind}"
        path.write_bytes(content)
    elif kind == "csv":
        path = folder / "data.csv"
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    elif kind == "parquet":
        path = folder / "data.parquet"
        pq.write_table(content, path)
    elif kind == "npz":
        path = folder / "data.npz"
        np.savez(path, **content)
    return path


def load_or_refuse(kind: str, content) -> None:
    """The property: a valid dataset or a DatasetError with a message."""
    with tempfile.TemporaryDirectory() as folder:
        path = write(kind, content, Path(folder))
        try:
            ds = load_dataset(path)
        except DatasetError as exc:
            assert str(exc).strip(), "DatasetError without a message"
            return
    assert ds.X.dtype == np.float32 and ds.X.ndim == 2 and ds.X.shape[0] == ds.y.shape[0] > 0 and ds.X.shape[1] > 0
    assert np.isfinite(ds.X).all() and set(np.unique(ds.y)) == {0, 1}


@FUZZ
@given(st.one_of(csv_texts(), st.text(max_size=60)))
def test_random_csv_loads_or_raises_dataset_error(text):
    load_or_refuse("csv", text)


@FUZZ
@given(parquet_tables())
def test_random_parquet_loads_or_raises_dataset_error(table):
    load_or_refuse("parquet", table)


@FUZZ
@given(st.dictionaries(st.sampled_from(["X", "y", "z"]), arrays, max_size=3))
def test_random_npz_loads_or_raises_dataset_error(contents):
    load_or_refuse("npz", contents)


@FUZZ
@given(st.sampled_from(["csv", "parquet", "npz"]), st.binary(max_size=200))
def test_random_bytes_load_or_raise_dataset_error(suffix, data):
    load_or_refuse(suffix, data)


def test_defects_found_by_fuzzing_are_refused(tmp_path):
    """pyarrow raised KeyError on a repeated column name and UnicodeDecodeError on a header that is
    not UTF-8, numpy EOFError on an empty .npz."""
    for header in ("y,label,label", "a,a,y"):
        (tmp_path / "d.csv").write_text(header + "\n1,0,1\n0,1,0\n")
        with pytest.raises(DatasetError, match="appear more than once"):
            load_dataset(tmp_path / "d.csv")
    (tmp_path / "d.csv").write_bytes(b"\x80\r")
    with pytest.raises(DatasetError, match="not a readable .csv"):
        load_dataset(tmp_path / "d.csv")
    (tmp_path / "d.npz").write_bytes(b"")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_dataset(tmp_path / "d.npz")
