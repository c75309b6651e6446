"""The benchmark's result store: what one run records (metrics, times, ROC/PR points, error), the
``runs.jsonl`` journal appended as runs finish (a crash loses nothing; ``resume`` reads it back),
and the tables written at the end: ``results.csv``, ``results.parquet`` (one row per run,
:data:`RESULT_COLUMNS`), ``curves.parquet`` (long format: detector, dataset, la, seed, curve
``"roc"``/``"pr"``, point, x, y) and ``errors.log`` (full tracebacks)."""
from __future__ import annotations

import json
import math
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

#: Columns of ``results.csv`` / ``results.parquet``, one row per run.
RESULT_COLUMNS = [
    "detector", "kind", "dataset", "la", "seed", "split", "auc_roc", "auc_pr", "fit_s", "score_s",
    "n_train", "n_test", "n_features", "n_labeled", "ran_in", "error",
]
CURVE_COLUMNS = ["detector", "dataset", "la", "seed", "curve", "point", "x", "y"]


def empty_record(detector: str, kind: str, dataset: str, la: float, seed: int, ran_in: str,
                 split: str = "usual") -> dict[str, Any]:
    """A run record with NaN metrics, to be filled in (or failed)."""
    row: dict[str, Any] = {c: None for c in RESULT_COLUMNS}
    row.update(detector=detector, kind=kind, dataset=dataset, la=float(la), seed=int(seed), split=split, ran_in=ran_in,
               auc_roc=math.nan, auc_pr=math.nan, fit_s=math.nan, score_s=math.nan)
    return {"row": row, "curves": None, "traceback": None}


def fail(record: dict[str, Any], exc: BaseException, tb: str | None = None) -> dict[str, Any]:
    """Mark ``record`` failed with ``exc`` (its text in ``error``, the traceback kept for errors.log)."""
    text = f"{type(exc).__name__}: {exc}".strip()
    record["row"]["error"] = text if len(text) <= 2000 else text[:2000] + " ..."
    record["traceback"] = tb or "".join(traceback.format_exception(exc))
    return record


def _thin(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points, evenly spaced along the curve, keeping both ends."""
    if len(x) <= n:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))
    return x[idx], y[idx]


def curve_points(y_true: np.ndarray, scores: np.ndarray, max_points: int = 200) -> dict[str, tuple[list[float], list[float]]]:
    """ROC (x = FPR, y = TPR) and PR (x = recall, y = precision) points, thinned to ``max_points``."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y_true, scores)
    precision, recall, _ = precision_recall_curve(y_true, scores)
    rx, ry = _thin(fpr, tpr, max_points)
    px, py = _thin(recall[::-1], precision[::-1], max_points)  # recall ascending
    return {"roc": (rx.tolist(), ry.tolist()), "pr": (px.tolist(), py.tolist())}


def run_key(row: dict[str, Any]) -> tuple[str, str, float, int]:
    return (row["detector"], row["dataset"], float(row["la"]), int(row["seed"]))


def results_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame([r["row"] for r in records], columns=RESULT_COLUMNS)
    df["split"] = df["split"].fillna("usual")  # runs recorded before the split was a setting
    for c in ("la", "auc_roc", "auc_pr", "fit_s", "score_s"):
        df[c] = df[c].astype("float64")
    for c in ("seed", "n_train", "n_test", "n_features", "n_labeled"):
        df[c] = df[c].astype("Int64")
    df["error"] = df["error"].astype("string")
    return df.sort_values(["dataset", "la", "seed", "detector"], kind="stable").reset_index(drop=True)


def curves_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    parts = []
    for r in records:
        if not r.get("curves"):
            continue
        row = r["row"]
        for curve, (x, y) in r["curves"].items():
            n = len(x)
            parts.append(pd.DataFrame({
                "detector": [row["detector"]] * n, "dataset": [row["dataset"]] * n, "la": [float(row["la"])] * n,
                "seed": [int(row["seed"])] * n, "curve": [curve] * n, "point": np.arange(n), "x": x, "y": y,
            }))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(CURVE_COLUMNS, ["object", "object", "float64", "int64", "object", "int64", "float64", "float64"])})
    return pd.concat(parts, ignore_index=True)


@dataclass
class BenchResult:
    results: pd.DataFrame
    curves: pd.DataFrame
    out_dir: Path
    files: dict[str, Path]
    report_error: str | None = None

    @property
    def n_failed(self) -> int:
        return int(self.results["error"].notna().sum())


def read_runs(path: Path) -> list[dict[str, Any]]:
    """Records of a ``runs.jsonl`` (a truncated last line, from a crash mid-write, is skipped)."""
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


class RunStore:
    """``runs.jsonl`` and ``errors.log`` of an output folder: every finished run is appended at once."""

    def __init__(self, out_dir: Path, resume: bool) -> None:
        self.runs_path, self.errors_path = out_dir / "runs.jsonl", out_dir / "errors.log"
        #: successful runs already recorded (resume), by :func:`run_key`
        self.done = {run_key(r["row"]): r for r in read_runs(self.runs_path) if r["row"].get("error") is None} if resume else {}
        if not resume:
            self.runs_path.write_text("")
        self._errors = open(self.errors_path, "a" if resume else "w")
        self.new: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> None:
        self.new.append(record)
        with open(self.runs_path, "a") as f:
            f.write(json.dumps(record, default=json_default) + "\n")
        row = record["row"]
        if row["error"] is not None:
            self._errors.write(f"== {row['detector']} on {row['dataset']} la={row['la']} seed={row['seed']}\n"
                               f"{record.get('traceback') or row['error']}\n")
            self._errors.flush()

    def records(self) -> list[dict[str, Any]]:
        """Resumed and new runs, the newest record of each run winning."""
        merged = dict(self.done)
        for r in self.new:
            merged[run_key(r["row"])] = r
        return list(merged.values())

    def close(self) -> None:
        self._errors.close()


def write_results(results: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """``results.csv``, ``results.parquet`` and ``curves.parquet``, each written atomically."""
    files = {"csv": out_dir / "results.csv", "parquet": out_dir / "results.parquet", "curves": out_dir / "curves.parquet"}
    for key, path in files.items():
        tmp = path.with_name(path.name + ".tmp")
        if key == "csv":
            results.to_csv(tmp, index=False)
        else:
            (results if key == "parquet" else curves).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return files
