"""Back end of the analysts' triage page (``<prefix>/ui/``): scored rows and feedback in SQLite,
why a row was flagged, and the page's static files.

Minimal stand-in for the live-detector store (issue 32, branch h-live) in the shapes agreed in
the shared interface: ``DIR/rlad.db`` (WAL) with tables ``scored`` and ``feedback``; the lead
reconciles it with h-live's store. Every write commits before the caller answers 2xx.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rlad.core.profile import QUANTILES

LABELS = ("anomaly", "normal")
WINDOW = 100_000  # scored rows kept for feedback (oldest dropped first)

SCHEMA = """
CREATE TABLE IF NOT EXISTS scored (id TEXT PRIMARY KEY, ts REAL, score REAL, proba REAL, row TEXT, version INTEGER);
CREATE INDEX IF NOT EXISTS scored_score ON scored (score DESC);
CREATE INDEX IF NOT EXISTS scored_ts ON scored (ts);
CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY, row_id TEXT, label TEXT, analyst TEXT, ts REAL, row TEXT);
CREATE INDEX IF NOT EXISTS feedback_row ON feedback (row_id);
"""


def ui_dir() -> Path:
    """Folder of the page's HTML, CSS and JS (package data; no build step)."""
    return Path(str(resources.files("rlad.platform.runtime") / "ui"))


class Store:
    """Scored rows (bounded window) and analysts' feedback in one SQLite file."""

    def __init__(self, workdir: str | Path, window: int = WINDOW) -> None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self.path, self.window = Path(workdir) / "rlad.db", window
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def add_scored(self, ids: list[str] | None, X: np.ndarray, scores: np.ndarray, proba: np.ndarray,
                   version: int) -> list[str]:
        ids = ids or [uuid.uuid4().hex for _ in range(len(X))]
        now = time.time()
        rows = [(i, now, float(s), float(p), json.dumps(x if isinstance(x, dict) else np.asarray(x).tolist()), int(version))
                for i, x, s, p in zip(ids, X, scores, proba)]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO scored VALUES (?, ?, ?, ?, ?, ?)", rows)
            n = self._db.execute("SELECT COUNT(*) FROM scored").fetchone()[0]
            if n > self.window:
                self._db.execute("DELETE FROM scored WHERE id IN (SELECT id FROM scored ORDER BY ts LIMIT ?)",
                                 (n - self.window,))
            self._db.execute("COMMIT")
        return ids

    def get(self, row_id: str) -> dict[str, Any] | None:
        r = self._db.execute("SELECT id, ts, score, proba, version, row FROM scored WHERE id = ?", (row_id,)).fetchone()
        return None if r is None else {"id": r[0], "ts": r[1], "score": r[2], "proba": r[3], "version": r[4],
                                       "row": json.loads(r[5])}

    def add_feedback(self, row_id: str | None, label: str, analyst: str, row: list[float] | None) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO feedback (row_id, label, analyst, ts, row) VALUES (?, ?, ?, ?, ?)",
                                   (row_id, label, analyst, time.time(), json.dumps(row)))
        return int(cur.lastrowid)

    def feedback(self, limit: int = 100) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT id, row_id, label, analyst, ts, row FROM feedback ORDER BY id DESC LIMIT ?",
                               (limit,))
        return [{"feedback_id": r[0], "row_id": r[1], "label": r[2], "analyst": r[3], "ts": r[4],
                 "row": json.loads(r[5])} for r in cur]

    def recent(self, limit: int = 50, offset: int = 0, min_score: float | None = None, since: float | None = None,
               labelled: str = "any") -> dict[str, Any]:
        """One page of scored rows, highest score first, with each row's latest label (indexed: a
        page costs the same with 10 or 100,000 rows held)."""
        where, args = [], []
        if min_score is not None:
            where.append("s.score >= ?"), args.append(min_score)
        if since is not None:
            where.append("s.ts >= ?"), args.append(since)
        if labelled == "yes":
            where.append("EXISTS (SELECT 1 FROM feedback f WHERE f.row_id = s.id)")
        elif labelled == "no":
            where.append("NOT EXISTS (SELECT 1 FROM feedback f WHERE f.row_id = s.id)")
        cond = ("WHERE " + " AND ".join(where)) if where else ""
        total = self._db.execute(f"SELECT COUNT(*) FROM scored s {cond}", args).fetchone()[0]
        cur = self._db.execute(
            f"SELECT s.id, s.ts, s.score, s.proba, s.version, s.row, (SELECT f.label FROM feedback f "
            f"WHERE f.row_id = s.id ORDER BY f.id DESC LIMIT 1) FROM scored s {cond} "
            f"ORDER BY s.score DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        return {"total": total, "rows": [{"id": r[0], "ts": r[1], "score": r[2], "proba": r[3], "version": r[4],
                                          "row": json.loads(r[5]), "label": r[6]} for r in cur]}

    def recent_rows(self, limit: int = 2000) -> tuple[list[Any], np.ndarray]:
        """The newest rows as sent (arrays or objects by column name) and their scores, for drift."""
        cur = self._db.execute("SELECT row, score FROM scored ORDER BY ts DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in cur], np.asarray([r[1] for r in cur], dtype=np.float64)


def explain_row(detector: Any, row: list[float], k: int = 5) -> dict[str, Any]:
    """Why a row was flagged: its ``k`` features farthest from training (z-score and quantile against
    the checkpoint's :class:`~rlad.core.profile.TrainingProfile`), and the detector's own anomalous
    attributes from ``explain()`` where it has one (else ``None``)."""
    x = np.asarray(row, dtype=np.float64)
    names = list(getattr(getattr(detector, "config", None), "columns", ()) or ()) or None
    profile = getattr(detector, "profile_", None)
    out: dict[str, Any] = {"features": None if profile is None else profile.top_features(x, k, names),
                           "attributes": None}
    inner = getattr(detector, "inner", detector)  # a scaled detector's fitted inner model explains scaled rows
    explainer = getattr(inner, "explain", None)
    if callable(explainer):
        inner_x = detector.transform(x[None].astype(np.float32)) if inner is not detector else x[None]
        attr = np.asarray(explainer(inner_x))[0]
        order = np.argsort(-np.abs(attr), kind="stable")[:k]
        out["attributes"] = [{"feature": names[j] if names else f"x{j}", "index": int(j), "value": float(attr[j])}
                             for j in order if attr[j] != 0]
    return out


def score_histogram(detector: Any, recent_scores: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    """Shares of recent and training scores over common edges (training from the profile's score
    percentiles, the checkpoint keeps no training rows)."""
    profile = getattr(detector, "profile_", None)
    tq = np.asarray(profile.score_quantiles if profile is not None and profile.score_quantiles else [], dtype=np.float64)
    lo = min([*tq[:1], *recent_scores.min(keepdims=True)] if len(recent_scores) else [*tq[:1], 0.0])
    hi = max([*tq[-1:], *recent_scores.max(keepdims=True)] if len(recent_scores) else [*tq[-1:], 1.0])
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    recent = (np.histogram(recent_scores, edges)[0] / max(len(recent_scores), 1)).tolist()
    if len(tq):
        cdf = np.interp(edges, tq, np.asarray(QUANTILES), left=0.0, right=1.0)
        training = np.diff(cdf).tolist()
    else:
        training = [0.0] * bins
    return {"edges": edges.tolist(), "recent": recent, "training": training}


def drift(detector: Any, X: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """``{"psi": {feature: value}, "score_hist": {...}}`` of recent rows against training."""
    profile = getattr(detector, "profile_", None)
    names = list(getattr(getattr(detector, "config", None), "columns", ()) or ()) or None
    psi = {} if profile is None or len(X) == 0 else {
        (names[j] if names else f"x{j}"): v for j, v in enumerate(profile.psi(X))}
    return {"psi": psi, "score_hist": score_histogram(detector, np.asarray(scores, dtype=np.float64))}
