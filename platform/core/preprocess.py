"""Real tables to numbers: column types learnt at fit time, kept as plain data (no pickled code).

A column is *numeric* (every non-blank value parses as a number), *boolean* (true/false, yes/no,
t/f), *datetime* (every non-blank value parses as a date), or *categorical* (anything else, or
named in ``categorical``). Encoding uses scikit-learn: ``SimpleImputer`` (median, most frequent),
``MissingIndicator``, ``OneHotEncoder`` up to ``max_onehot`` categories and ``OrdinalEncoder``
(mapped to the category's training frequency) above it. A category unseen at fit time falls in
an "other" bucket (all one-hot columns 0, frequency 0) and is counted. Dates become cyclical
hour, day-of-week and month features (``dates="cyclical"``), or are dropped (the default: on
timestamps that carry no signal the six cyclical features cost more AUC-ROC than anything else,
see ``benchmarks/results/mixed_tables_first.csv``).

The fitted state is plain data (names, medians, category lists, frequencies): the sklearn
transformers are rebuilt from it with fixed categories, so a checkpoint never holds code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rlad.core.data import DatasetError
from rlad.core.table_options import TableOptions, TableOptionsError

BLANKS = frozenset({"", "nan", "none", "null", "na", "n/a"})
TRUE = frozenset({"true", "t", "yes", "y"})
FALSE = frozenset({"false", "f", "no", "n"})
TYPES = ("numeric", "boolean", "categorical", "datetime")
STATE_VERSION = 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


class TableError(DatasetError):
    """A user's table does not fit the learnt schema (named column or row)."""


__all__ = ["TableError", "TableOptions", "TableOptionsError", "TablePreprocessor", "Encoded", "as_frame"]


@dataclass
class Encoded:
    """Numbers for the detector; ``bad`` maps row position -> reason; ``unseen`` counts per column."""

    X: np.ndarray
    bad: dict[int, str] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)


def _text(col: pd.Series) -> pd.Series:
    """Values as stripped strings ('' for missing)."""
    out = col.astype("object").where(col.notna(), "")
    return out.map(lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)).str.strip()


def _blank(text: pd.Series) -> np.ndarray:
    return text.str.lower().isin(BLANKS).to_numpy()


def _numbers(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col):
        return col.astype(float).to_numpy()
    if pd.api.types.is_numeric_dtype(col):
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
    return pd.to_numeric(_text(col), errors="coerce").to_numpy(dtype=np.float64)


def _dates(col: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        return pd.to_datetime(col, utc=True)
    return pd.to_datetime(_text(col).replace("", None), errors="coerce", utc=True, format="mixed")


def _booleans(text: pd.Series) -> np.ndarray:
    low = text.str.lower()
    return np.where(low.isin(TRUE), 1.0, np.where(low.isin(FALSE), 0.0, np.nan))


def infer_type(col: pd.Series) -> str:
    """numeric, boolean, datetime or categorical, from the non-blank values of a column."""
    if pd.api.types.is_bool_dtype(col):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(col):
        return "datetime"
    if pd.api.types.is_numeric_dtype(col):
        return "numeric"
    text = _text(col)
    present = text[~_blank(text)]
    if present.empty:
        return "numeric"
    if np.isfinite(pd.to_numeric(present, errors="coerce").to_numpy(dtype=np.float64)).all():
        return "numeric"
    if present.str.lower().isin(TRUE | FALSE).all():
        return "boolean"
    if present.str.contains(r"\d").all() and _dates(present).notna().all():
        return "datetime"
    return "categorical"


def _cyclical(ts: pd.Series) -> np.ndarray:
    parts = [(ts.dt.hour + ts.dt.minute / 60.0, 24.0), (ts.dt.dayofweek, 7.0), (ts.dt.month - 1, 12.0)]
    cols = []
    for value, period in parts:
        angle = 2 * np.pi * value.to_numpy(dtype=np.float64) / period
        cols += [np.sin(angle), np.cos(angle)]
    return np.column_stack(cols)


class TablePreprocessor:
    """``fit(frame)`` learns one spec per column; ``transform(frame)`` gives :class:`Encoded`."""

    def __init__(self, options: TableOptions | dict[str, Any] | None = None) -> None:
        if isinstance(options, dict):
            from rlad.core.config import from_dict

            options = from_dict(TableOptions, options)
        self.options = options or TableOptions()
        self.specs: list[dict[str, Any]] = []
        self.dropped_dates: list[str] = []  # date columns left out (``dates="drop"``)

    # -- schema -----------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """Input columns a table must provide, in order."""
        return [s["name"] for s in self.specs]

    @property
    def schema(self) -> list[dict[str, str]]:
        return [{"name": s["name"], "type": s["type"]} for s in self.specs]

    @property
    def output_names(self) -> list[str]:
        return [n for s in self.specs for n in s["outputs"]]

    @property
    def onehot_blocks(self) -> list[list[int]]:
        """Output positions of each one-hot encoded column (its missing indicator left out)."""
        blocks, start = [], 0
        for s in self.specs:
            if s["type"] == "categorical" and s.get("encoding") == "onehot":
                blocks.append(list(range(start, start + len(s["categories"]))))
            start += len(s["outputs"])
        return blocks

    def choose_columns(self, available: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
        """The feature columns from ``features``/``drop``; unknown names are an error."""
        o = self.options
        unknown = [c for c in (*o.features, *o.drop, *o.categorical) if c not in available]
        if unknown:
            raise TableError(f"no column(s) {unknown}; columns are {available}")
        chosen = list(o.features) or [c for c in available if c not in exclude]
        chosen = [c for c in chosen if c not in o.drop]
        if not chosen:
            raise TableError("no feature columns left (check --features / --drop)")
        return chosen

    # -- fit --------------------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> "TablePreprocessor":
        from sklearn.impute import SimpleImputer

        if len(frame) == 0:
            raise TableError("no rows to fit on")
        o = self.options
        self.specs, self.dropped_dates = [], []
        for name in frame.columns:
            col = frame[name]
            kind = "categorical" if name in o.categorical else infer_type(col)
            text = _text(col)
            blank = _blank(text)
            spec: dict[str, Any] = {"name": str(name), "type": kind, "indicator": bool(blank.any() and o.missing_indicators
                                                                                        and o.missing == "impute")}
            if kind in ("numeric", "boolean"):
                values = _numbers(col) if kind == "numeric" else _booleans(text)
                present = values[~np.isnan(values)]
                fill = SimpleImputer(strategy="median").fit(present.reshape(-1, 1)).statistics_[0] if present.size else 0.0
                spec.update(fill=float(fill), outputs=[str(name)])
            elif kind == "datetime":
                ts = _dates(col)
                secs = (ts.dropna().astype("int64") // 10**9).to_numpy(dtype=np.float64)
                spec.update(fill=float(np.median(secs)) if secs.size else 0.0,
                            outputs=[] if o.dates == "drop" else
                            [f"{name}_{p}_{f}" for p in ("hour", "dow", "month") for f in ("sin", "cos")])
            else:
                present = text[~blank].to_numpy(dtype=object).reshape(-1, 1)
                mode = (SimpleImputer(strategy="most_frequent").fit(present).statistics_[0] if present.size else "")
                cats, counts = np.unique(np.where(blank, mode, text.to_numpy(dtype=object)).astype(str), return_counts=True)
                onehot = len(cats) <= o.max_onehot
                spec.update(fill=str(mode), categories=cats.tolist(), encoding="onehot" if onehot else "frequency",
                            frequency=(counts / counts.sum()).tolist(),
                            outputs=[f"{name}={c}" for c in cats] if onehot else [f"{name}_frequency"])
            if not spec["outputs"]:
                self.dropped_dates.append(str(name))  # not read at score time
                continue
            if spec["indicator"]:
                spec["outputs"] = spec["outputs"] + [f"{name}_missing"]
            self.specs.append(spec)
        if not self.output_names:
            raise TableError("no features left after encoding (every column a dropped date?)")
        return self

    # -- transform --------------------------------------------------------------------------------
    def select(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """Columns by name in the fitted order; a missing one is an error, extras are returned."""
        have = [str(c) for c in frame.columns]
        missing = [c for c in self.columns if c not in have]
        if missing:
            raise TableError(f"missing column(s) {missing}; the model was fitted on {self.columns}")
        frame = frame.set_axis(have, axis=1)
        return frame[self.columns], [c for c in have if c not in self.columns]

    def transform(self, frame: pd.DataFrame, rows: np.ndarray | None = None) -> Encoded:
        """Rows of ``frame`` (by name) as numbers. A row with an unreadable value (or a blank,
        under ``missing="reject"``) is reported in ``bad`` by its position, its output row zeros."""
        from sklearn.impute import MissingIndicator, SimpleImputer
        from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

        frame, _ = self.select(frame)
        n = len(frame)
        bad: dict[int, str] = {}
        unseen: dict[str, int] = {}
        reject = self.options.missing == "reject"
        blocks = []

        def flag(mask: np.ndarray, text: pd.Series, spec: dict[str, Any], what: str) -> None:
            for i in np.flatnonzero(mask):
                bad.setdefault(int(i), f"column {spec['name']!r}: {text.iat[i][:40]!r} is not {what}")

        for spec in self.specs:
            col = frame[spec["name"]]
            text = _text(col)
            blank = _blank(text)
            if reject:
                for i in np.flatnonzero(blank):
                    bad.setdefault(int(i), f"column {spec['name']!r}: missing value")
            kind = spec["type"]
            if kind in ("numeric", "boolean"):
                values = _numbers(col) if kind == "numeric" else _booleans(text)
                flag(~blank & ~np.isfinite(values), text, spec, "a number" if kind == "numeric" else "true/false")
                for i in np.flatnonzero(np.isfinite(values) & (np.abs(values) > FLOAT32_MAX)):
                    bad.setdefault(int(i), f"column {spec['name']!r}: {values[i]:g} is beyond the float32 range the models compute in")
                values = np.where(np.isfinite(values), values, np.nan).reshape(-1, 1)
                imp = SimpleImputer(strategy="constant", fill_value=spec["fill"], keep_empty_features=True)
                block = imp.fit(np.zeros((1, 1))).transform(values)
            elif kind == "datetime":
                ts = _dates(col)
                flag(~blank & ts.isna().to_numpy(), text, spec, "a date")
                ts = ts.fillna(pd.Timestamp(spec["fill"], unit="s", tz="UTC"))
                block = _cyclical(ts)
            else:
                cats = np.asarray(spec["categories"], dtype=object)
                values = np.where(blank, spec["fill"], text.to_numpy(dtype=object)).astype(str).astype(object).reshape(-1, 1)
                known = np.isin(values.ravel(), cats)
                if (~known).any():
                    unseen[spec["name"]] = int((~known).sum())
                if spec["encoding"] == "onehot":
                    enc = OneHotEncoder(categories=[cats], handle_unknown="ignore", sparse_output=False)
                    block = enc.fit(cats.reshape(-1, 1)).transform(values)
                else:
                    enc = OrdinalEncoder(categories=[cats], handle_unknown="use_encoded_value", unknown_value=-1)
                    code = enc.fit(cats.reshape(-1, 1)).transform(values).ravel().astype(int)
                    block = np.where(code >= 0, np.asarray(spec["frequency"])[code], 0.0).reshape(-1, 1)
            if spec["indicator"]:
                ind = MissingIndicator(features="all").fit(np.zeros((1, 1)))
                block = np.column_stack([block, ind.transform(np.where(blank, np.nan, 0.0).reshape(-1, 1))])
            blocks.append(np.asarray(block, dtype=np.float64))
        X = np.column_stack(blocks) if blocks else np.empty((n, 0))
        if bad:
            X[list(bad)] = 0.0
        return Encoded(X=X, bad=bad, unseen=unseen)

    def fit_transform(self, frame: pd.DataFrame) -> Encoded:
        return self.fit(frame).transform(frame)

    # -- plain-data state ----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "specs": self.specs, "dropped_dates": self.dropped_dates}

    def set_state(self, state: dict[str, Any]) -> "TablePreprocessor":
        if state.get("version") != STATE_VERSION:
            raise TableError(f"table preprocessing state version {state.get('version')} is not {STATE_VERSION}")
        self.specs = [dict(s) for s in state["specs"]]
        self.dropped_dates = list(state.get("dropped_dates", []))
        return self


def as_frame(X: Any, columns: list[str]) -> pd.DataFrame:
    """A DataFrame as is; a 2-D array or list of rows as columns ``columns`` in order."""
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, list) and X and isinstance(X[0], dict):
        return pd.DataFrame.from_records(X)
    arr = np.asarray(X, dtype=object)
    if arr.ndim != 2:
        raise TableError(f"rows must form a 2-D table, got shape {arr.shape}")
    if arr.shape[1] != len(columns):
        raise TableError(f"rows have {arr.shape[1]} values, the model reads {len(columns)} columns {columns}")
    return pd.DataFrame(arr, columns=columns)
