"""Model registry of a live service, in the service's SQLite database (``rlad.db``, beside the feedback).

``models``: one line per version: checkpoint path, detector kind, metrics (JSON), the hash of the
rows it was trained on, where those rows came from, its parent version and when it was made.
``live``: the version being served; the Serve replicas poll it (:mod:`.live_service`) and hot-swap
in place, so a promotion or a rollback is one committed write here. ``events``: every promotion,
rollback and refusal, with its reason and the metrics behind the decision.

Checkpoints of registered versions live in ``DIR/models/vN.pt``; they are written atomically and
never overwritten, so any version can be served again.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlad.platform.runtime.feedback import open_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (version INTEGER PRIMARY KEY, checkpoint TEXT NOT NULL, kind TEXT NOT NULL,
                                   parent INTEGER, created REAL NOT NULL, data_hash TEXT, training_data TEXT,
                                   metrics TEXT NOT NULL DEFAULT '{}', note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS live (one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
                                   action TEXT NOT NULL CHECK (action IN ('promote', 'rollback', 'refuse')),
                                   version INTEGER NOT NULL, previous INTEGER, reason TEXT NOT NULL,
                                   metrics TEXT NOT NULL DEFAULT '{}');
"""


class RegistryError(ValueError):
    """A version that does not exist, or a registry with nothing to roll back to."""


def data_hash(X: Any, y: np.ndarray | None = None) -> str:
    """SHA-256 of training rows (an array as float64, or a table cell by cell) and labels: same
    rows, same hash."""
    h = hashlib.sha256()
    if hasattr(X, "columns"):  # a raw table
        import pandas as pd

        h.update(json.dumps([str(c) for c in X.columns]).encode())
        h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    else:
        h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update(str(np.shape(X)).encode())
    if y is not None:
        h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def save_training_rows(workdir: str | Path, X: Any, y: np.ndarray | None) -> tuple[str, str]:
    """Keep a copy of a version's training rows in ``DIR/training/`` (retraining reads it even
    when the original table has moved): ``(path, data hash)``. Arrays go to ``.npz``, raw tables
    (a DataFrame, as ``rlad fit`` reads them) to Parquet with the labels in column ``__label__``."""
    y = np.zeros(len(X), dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
    digest = data_hash(X, y)
    table = hasattr(X, "columns")
    path = Path(workdir) / "training" / f"{digest[:16]}.{'parquet' if table else 'npz'}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        if table:
            X.reset_index(drop=True).assign(__label__=y).to_parquet(tmp, index=False)
        else:
            with open(tmp, "wb") as f:
                np.savez(f, X=np.asarray(X, dtype=np.float64), y=y)
        tmp.replace(path)
    return str(path.resolve()), digest


def load_training_rows(path: str | Path) -> tuple[Any, np.ndarray]:
    """``(rows, labels)`` as :func:`save_training_rows` kept them (an array, or a DataFrame)."""
    if str(path).endswith(".parquet"):
        import pandas as pd

        frame = pd.read_parquet(path)
        return frame.drop(columns="__label__"), frame["__label__"].to_numpy(dtype=np.int64)
    with np.load(path) as f:
        return f["X"], f["y"]


class ModelRegistry:
    """Versions, the live pointer and the decision log of one service folder."""

    def __init__(self, workdir: str | Path) -> None:
        self.workdir = Path(workdir)
        self.conn = open_db(self.workdir)
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ModelRegistry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- versions -------------------------------------------------------------------------------
    def register(self, checkpoint: str | Path, kind: str, parent: int | None = None, metrics: dict | None = None,
                 data_hash: str | None = None, training_data: str | None = None, note: str = "", copy: bool = True) -> int:
        """Add a version; its checkpoint is copied to ``models/vN.pt`` (``copy=False``: already there)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            version = (self.conn.execute("SELECT max(version) FROM models").fetchone()[0] or 0) + 1
            path = Path(checkpoint).resolve()
            if copy:
                target = self.checkpoint_path(version)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                shutil.copyfile(path, tmp)
                tmp.replace(target)
                path = target
            self.conn.execute("INSERT INTO models (version, checkpoint, kind, parent, created, data_hash, training_data, "
                              "metrics, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (version, str(path), kind, parent, time.time(), data_hash, training_data,
                               json.dumps(metrics or {}), note))
        return version

    def checkpoint_path(self, version: int) -> Path:
        return self.workdir / "models" / f"v{version}.pt"

    def next_version(self) -> int:
        return (self.conn.execute("SELECT max(version) FROM models").fetchone()[0] or 0) + 1

    def get(self, version: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM models WHERE version = ?", (int(version),)).fetchone()
        if row is None:
            raise RegistryError(f"no model version {version} in {self.workdir}")
        return _model_dict(row)

    def versions(self) -> list[dict[str, Any]]:
        return [_model_dict(r) for r in self.conn.execute("SELECT * FROM models ORDER BY version")]

    def update_metrics(self, version: int, metrics: dict[str, Any]) -> None:
        merged = {**self.get(version)["metrics"], **metrics}
        self.conn.execute("UPDATE models SET metrics = ? WHERE version = ?", (json.dumps(merged), int(version)))

    # -- live pointer and decisions -------------------------------------------------------------
    def live(self) -> int | None:
        row = self.conn.execute("SELECT version FROM live WHERE one = 1").fetchone()
        return None if row is None else int(row[0])

    def promote(self, version: int, reason: str, metrics: dict | None = None, action: str = "promote") -> None:
        """Make ``version`` live (the replicas swap to it within a poll) and log why."""
        self.get(version)
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            previous = self.live()
            self.conn.execute("INSERT INTO live (one, version) VALUES (1, ?) ON CONFLICT (one) DO UPDATE SET version = ?",
                              (int(version), int(version)))
            self._event(action, version, previous, reason, metrics)

    def refuse(self, version: int, reason: str, metrics: dict | None = None) -> None:
        """Log that candidate ``version`` stays out of service, and why."""
        with self.conn:
            self._event("refuse", version, self.live(), reason, metrics)

    def rollback(self, version: int | None = None, reason: str = "") -> int:
        """Serve an earlier version again: ``version``, or the one live before the current one."""
        current = self.live()
        if version is None:
            row = self.conn.execute("SELECT previous FROM events WHERE action IN ('promote', 'rollback') AND version = ? "
                                    "AND previous IS NOT NULL ORDER BY id DESC LIMIT 1", (current,)).fetchone()
            if row is None:
                raise RegistryError(f"version {current} has no earlier live version to roll back to")
            version = int(row[0])
        if version == current:
            raise RegistryError(f"version {version} is already live")
        self.promote(version, reason or f"rollback from version {current}", action="rollback")
        return version

    def serve(self, checkpoint: str | Path, training_data: str | None = None, data_hash: str | None = None) -> tuple[int, str, str]:
        """What ``rlad serve CKPT`` serves: ``(version, checkpoint, what happened)``. A checkpoint
        already registered (same bytes) keeps the registry's live version, so a restart serves what
        was promoted since; a new one is registered and made live."""
        digest = _file_sha256(checkpoint)
        known = [v for v in self.versions() if Path(v["checkpoint"]).is_file() and _file_sha256(v["checkpoint"]) == digest]
        if known:
            version, how = known[0]["version"], "registered"
            if training_data and not known[0]["training_data"]:
                self.conn.execute("UPDATE models SET training_data = ?, data_hash = ? WHERE version = ?",
                                  (training_data, data_hash, version))
        else:
            from rlad.algorithms.registry import load_detector

            kind = load_detector(checkpoint).kind
            version = self.register(checkpoint, kind, parent=self.live(), data_hash=data_hash, training_data=training_data,
                                    note=f"rlad serve {Path(checkpoint).resolve()}")
            self.promote(version, f"rlad serve {checkpoint}")
            how = "new"
        if self.live() is None:
            self.promote(version, f"rlad serve {checkpoint}")
        live = self.get(self.live())
        what = (f"version {live['version']} live" + ("" if live["version"] == version else f" ({checkpoint} is version {version})")
                + (", registered now" if how == "new" else ""))
        return live["version"], live["checkpoint"], what

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
        return [{"id": r["id"], "ts": r["ts"], "action": r["action"], "version": r["version"], "previous": r["previous"],
                 "reason": r["reason"], "metrics": json.loads(r["metrics"])} for r in rows]

    def summary(self, events: int = 100) -> dict[str, Any]:
        """What ``GET /models`` answers."""
        return {"live": self.live(), "versions": self.versions(), "events": self.events(events)}

    def _event(self, action: str, version: int, previous: int | None, reason: str, metrics: dict | None) -> None:
        self.conn.execute("INSERT INTO events (ts, action, version, previous, reason, metrics) VALUES (?, ?, ?, ?, ?, ?)",
                          (time.time(), action, int(version), previous, reason, json.dumps(metrics or {})))


def _model_dict(r: Any) -> dict[str, Any]:
    return {"version": r["version"], "checkpoint": r["checkpoint"], "kind": r["kind"], "parent": r["parent"],
            "created": r["created"], "data_hash": r["data_hash"], "training_data": r["training_data"],
            "metrics": json.loads(r["metrics"]), "note": r["note"]}


def _file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def live_checkpoint(conn: Any) -> tuple[int, str] | None:
    """``(version, checkpoint)`` of the live version, or None (what the replicas poll)."""
    row = conn.execute("SELECT m.version, m.checkpoint FROM live l JOIN models m ON m.version = l.version").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))
