"""The live service's durable state: scored rows and analysts' feedback in one SQLite database.

A service's working folder (``rlad serve --workdir DIR``) holds ``rlad.db`` in WAL mode, shared by
the HTTP ingress (writes), the triage page's data calls, ``rlad retrain`` and ``rlad models``
(other processes, same file):

- ``scored``: every row the service scored, as it was sent (an array, or an object by column
  name), with its id, score, P(anomaly) and the model version that scored it; only the newest
  ``window`` rows are kept (the rows analysts can still label by id).
- ``feedback``: one analyst label per line (``anomaly`` or ``normal``), with the row's values
  copied, so feedback outlives the window.

Feedback is written with ``synchronous=FULL`` and committed before the HTTP 2xx leaves: what an
analyst was told is stored survives ``kill -9`` of every process (and a power cut). Scored rows use
``synchronous=NORMAL``: in WAL mode that survives a killed process too, not a power cut.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DB_NAME = "rlad.db"
LABELS = ("anomaly", "normal")
DEFAULT_WINDOW = 100_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS scored (id TEXT PRIMARY KEY, ts REAL NOT NULL, score REAL NOT NULL, proba REAL NOT NULL,
                                   row TEXT NOT NULL, version INTEGER);
CREATE INDEX IF NOT EXISTS scored_by_score ON scored (score DESC);
CREATE INDEX IF NOT EXISTS scored_by_ts ON scored (ts);
CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, row_id TEXT,
                                     label TEXT NOT NULL CHECK (label IN ('anomaly', 'normal')),
                                     analyst TEXT NOT NULL, ts REAL NOT NULL, row TEXT NOT NULL,
                                     weight REAL NOT NULL DEFAULT 1.0);
CREATE INDEX IF NOT EXISTS feedback_by_row ON feedback (row_id);
"""


def open_db(workdir: str | Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection to ``workdir/rlad.db`` (created with the service's tables), WAL mode,
    autocommit (each statement outside ``with conn:`` commits on its own)."""
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path / DB_NAME, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(SCHEMA)
    if "weight" not in {r["name"] for r in conn.execute("PRAGMA table_info(feedback)")}:  # a folder from before weights
        conn.execute("ALTER TABLE feedback ADD COLUMN weight REAL NOT NULL DEFAULT 1.0")
    return conn


class UnknownRow(KeyError):
    """Feedback names a row id the service has not scored (or no longer keeps)."""


def _as_sent(row: Any) -> Any:
    """A row as JSON keeps it: an object by column name stays one, anything else becomes a list."""
    return row if isinstance(row, dict) else np.asarray(row).tolist()


class FeedbackStore:
    """Scored rows and feedback of one service. Thread-safe: one lock per store."""

    def __init__(self, workdir: str | Path, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"the scored-row window must hold at least 1 row, got {window}")
        self.workdir, self.window = Path(workdir), int(window)
        self._scored = open_db(workdir, synchronous="NORMAL")
        self._feedback = open_db(workdir, synchronous="FULL")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._scored.close()
        self._feedback.close()

    # -- writes ---------------------------------------------------------------------------------
    def add_scored(self, ids: Sequence[str] | None, X: Sequence[Any], scores: np.ndarray, proba: np.ndarray,
                   version: int) -> list[str]:
        """Keep scored rows by id (generated when ``ids`` is None; a repeated id is replaced), then
        drop all but the newest ``window``. Returns the ids."""
        ids = list(ids) if ids is not None else [uuid.uuid4().hex for _ in range(len(X))]
        now = time.time()
        rows = [(i, now, float(s), float(p), json.dumps(_as_sent(x)), int(version))
                for i, s, p, x in zip(ids, scores, proba, X)]
        with self._lock, self._scored:
            self._scored.execute("BEGIN")
            self._scored.executemany("INSERT OR REPLACE INTO scored (id, ts, score, proba, row, version) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", rows)
            newest = self._scored.execute("SELECT max(rowid) FROM scored").fetchone()[0] or 0
            self._scored.execute("DELETE FROM scored WHERE rowid <= ?", (newest - self.window,))
        return ids

    def add_feedback(self, label: str, analyst: str = "", row_id: str | None = None,
                     row: Sequence[float] | None = None, n_features: int | None = None, weight: float = 1.0) -> int:
        """Record one label for a scored row (by ``row_id``) or for a row given by its values;
        returns the feedback id once committed. ``weight``: how many rows this label stands for in
        validation (1 for a row labelled because it was flagged; N/m for one of m rows drawn at random
        from N unflagged ones, an audit). Raises :class:`UnknownRow` or ``ValueError``."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        if not (np.isfinite(weight) and weight >= 1.0):
            raise ValueError(f"weight must be a finite number >= 1 (rows this label stands for), got {weight}")
        if (row_id is None) == (row is None):
            raise ValueError("give either the scored row's id or the row's values, not both")
        if row is not None:
            values = [float(v) for v in row]
            if not values or not all(np.isfinite(values)):
                raise ValueError("the row must be a non-empty list of finite numbers")
            if n_features is not None and len(values) != n_features:
                raise ValueError(f"the row has {len(values)} values, the model expects {n_features}")
            row_json = json.dumps(values)
        with self._lock:
            if row_id is not None:
                found = self._feedback.execute("SELECT row FROM scored WHERE id = ?", (row_id,)).fetchone()
                if found is None:
                    raise UnknownRow(f"no scored row with id {row_id!r} (unknown, or older than the window of "
                                     f"the newest {self.window} scored rows)")
                row_json = found["row"]
            cur = self._feedback.execute("INSERT INTO feedback (row_id, label, analyst, ts, row, weight) VALUES (?, ?, ?, ?, ?, ?)",
                                         (row_id, label, analyst, time.time(), row_json, float(weight)))
            return int(cur.lastrowid)

    # -- reads ----------------------------------------------------------------------------------
    def get(self, row_id: str) -> dict[str, Any] | None:
        """One scored row still in the window, or None."""
        with self._lock:
            r = self._scored.execute("SELECT * FROM scored WHERE id = ?", (row_id,)).fetchone()
        return None if r is None else {"id": r["id"], "ts": r["ts"], "score": r["score"], "proba": r["proba"],
                                       "version": r["version"], "row": json.loads(r["row"])}

    def recent(self, limit: int = 50, offset: int = 0, min_score: float | None = None, since: float | None = None,
               labelled: str = "any") -> dict[str, Any]:
        """One page of scored rows in the window, highest score first, each with its latest label
        (or None); indexed, so a page costs the same with 10 or 100,000 rows held."""
        if labelled not in ("yes", "no", "any"):
            raise ValueError(f"labelled must be yes, no or any, got {labelled!r}")
        where, params = ["1"], []
        if min_score is not None:
            where.append("score >= ?")
            params.append(float(min_score))
        if since is not None:
            where.append("ts >= ?")
            params.append(float(since))
        if labelled != "any":
            where.append(("" if labelled == "yes" else "NOT ") + "EXISTS (SELECT 1 FROM feedback f WHERE f.row_id = s.id)")
        clause = " AND ".join(where)
        with self._lock:
            total = self._scored.execute(f"SELECT count(*) FROM scored s WHERE {clause}", params).fetchone()[0]
            rows = self._scored.execute(
                f"SELECT s.*, (SELECT label FROM feedback f WHERE f.row_id = s.id ORDER BY f.id DESC LIMIT 1) AS label "
                f"FROM scored s WHERE {clause} ORDER BY score DESC LIMIT ? OFFSET ?",
                [*params, int(limit), int(offset)]).fetchall()
        return {"total": int(total), "rows": [{"id": r["id"], "ts": r["ts"], "score": r["score"], "proba": r["proba"],
                                               "version": r["version"], "label": r["label"], "row": json.loads(r["row"])}
                                              for r in rows]}

    def audit(self, n: int, below: float | None = None) -> dict[str, Any]:
        """``n`` rows drawn at random from the N unlabelled scored rows in the window (those scoring
        under ``below``: the ones nobody reviews), each with ``weight`` N/n for its feedback: labels
        on them let the retraining gate see anomalies the live model missed."""
        if n < 1:
            raise ValueError(f"an audit needs at least 1 row, got {n}")
        where, params = "NOT EXISTS (SELECT 1 FROM feedback f WHERE f.row_id = s.id)", []
        if below is not None:
            where += " AND score < ?"
            params.append(float(below))
        with self._lock:
            total = self._scored.execute(f"SELECT count(*) FROM scored s WHERE {where}", params).fetchone()[0]
            rows = self._scored.execute(f"SELECT * FROM scored s WHERE {where} ORDER BY random() LIMIT ?",
                                        [*params, int(n)]).fetchall()
        weight = total / len(rows) if rows else 1.0
        return {"population": int(total), "weight": max(1.0, weight),
                "rows": [{"id": r["id"], "ts": r["ts"], "score": r["score"], "proba": r["proba"], "version": r["version"],
                          "label": None, "row": json.loads(r["row"])} for r in rows]}

    def feedback(self, limit: int = 100, after: int = 0) -> list[dict[str, Any]]:
        """Feedback lines, newest first (``after``: only ids above it)."""
        with self._lock:
            rows = self._feedback.execute("SELECT * FROM feedback WHERE id > ? ORDER BY id DESC LIMIT ?",
                                          (int(after), int(limit))).fetchall()
        return [feedback_dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Feedback lines per label, and the scored rows in the window."""
        with self._lock:
            out = {label: 0 for label in LABELS}
            out.update({r[0]: r[1] for r in self._feedback.execute("SELECT label, count(*) FROM feedback GROUP BY label")})
            out["scored_in_window"] = self._scored.execute("SELECT count(*) FROM scored").fetchone()[0]
        return out

    def recent_rows(self, n: int = 2000) -> tuple[list[Any], np.ndarray]:
        """The newest ``n`` scored rows as sent (arrays or objects) and their scores (for drift)."""
        with self._lock:
            rows = self._scored.execute("SELECT row, score FROM scored ORDER BY rowid DESC LIMIT ?", (int(n),)).fetchall()
        return [json.loads(r["row"]) for r in rows], np.asarray([r["score"] for r in rows], dtype=np.float64)


def feedback_dict(r: sqlite3.Row) -> dict[str, Any]:
    return {"feedback_id": r["id"], "row_id": r["row_id"], "label": r["label"], "analyst": r["analyst"],
            "ts": r["ts"], "row": json.loads(r["row"]), "weight": r["weight"]}


def all_feedback(workdir: str | Path) -> list[dict[str, Any]]:
    """Every feedback line of a service, oldest first (what retraining reads)."""
    conn = open_db(workdir)
    try:
        return [feedback_dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY id")]
    finally:
        conn.close()
