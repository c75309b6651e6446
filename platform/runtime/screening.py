"""Request screening: what a scoring request must satisfy before it joins a batch, and scoring a
merged batch so that no request can fail another. Shared by the Serve replica (:mod:`.serving`)
and the HTTP ingress (:mod:`.http_api`), which import it and not each other."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

logger = logging.getLogger("ray.serve")


FLOAT32_MAX = float(np.finfo(np.float32).max)
POLICIES = ("reject", "flag")


@dataclass(frozen=True)
class InputPolicy:
    """What to do with rows far outside the training range, where a model's output means nothing
    (a Mamba-MoE turns 3.4e38 into NaN). A feature's accepted interval is its training
    ``[min - margin * span, max + margin * span]``; ``span`` is ``max - min``, or ``max(|min|, 1)``
    for a feature constant in training. ``margin=1`` accepts ADBench's test rows, which are
    MinMax-scaled by the training part to [0, 1] and clipped to [-1, 2].

    ``reject`` (default): 422 naming the first row and column outside. ``flag``: score such rows,
    mark them ``out_of_range`` and predict them anomalous."""

    out_of_range: str = "reject"
    margin: float = 1.0

    def __post_init__(self) -> None:
        if self.out_of_range not in POLICIES:
            raise ValueError(f"out_of_range must be one of {POLICIES}, got {self.out_of_range!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin}")

    def bounds(self, feature_range: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = feature_range
        span = np.where(hi > lo, hi - lo, np.maximum(np.maximum(np.abs(lo), np.abs(hi)), 1.0))
        return lo - self.margin * span, hi + self.margin * span


class Rejected(NamedTuple):
    """A request the replica refuses to score: an HTTP status and a message for the client."""

    status: int
    message: str


def expected_columns(detector: Any) -> list[dict[str, str]] | None:
    """The columns a request's rows give, with their types (``None``: a model without names)."""
    pre = getattr(detector, "preprocessor", None)
    if pre is not None:
        return pre.schema
    names = tuple(getattr(detector.config, "columns", ()) or ())
    return [{"name": c, "type": "numeric"} for c in names] or None


def encode_rows(detector: Any, rows: np.ndarray | list[dict[str, Any]]) -> np.ndarray | Rejected:
    """Rows as the numbers the model takes. A model fitted on a typed table encodes its rows
    (objects by column name, or arrays in its column order) as at fit time; other models take
    arrays, or objects mapped onto their column names."""
    from rlad.core.data import DatasetError

    if getattr(detector, "preprocessor", None) is not None:
        try:
            return detector.encode(rows if isinstance(rows, list) else np.asarray(rows, dtype=object))
        except (DatasetError, ValueError) as exc:
            return Rejected(422, str(exc))
    if not isinstance(rows, list):
        return rows
    names = [c["name"] for c in expected_columns(detector) or []]
    if not names:
        return Rejected(422, "this model has no column names: send rows as arrays")
    missing = sorted({c for row in rows for c in names if c not in row})
    if missing:
        return Rejected(422, f"missing column(s) {missing}; the model reads {names}")
    for i, row in enumerate(rows):
        for c in names:
            if not isinstance(row[c], (int, float)) or isinstance(row[c], bool):
                return Rejected(422, f"row {i}, column {c!r}: {row[c]!r} is not a number")
    return np.asarray([[row[c] for c in names] for row in rows], dtype=np.float64)


def screen_rows(X: np.ndarray, detector: Any, policy: InputPolicy | None) -> Rejected | np.ndarray:
    """Check one request on its own, before it joins a batch. Returns its ``out_of_range`` mask
    per row, or why it is rejected. ``policy=None`` skips the training-range check."""
    if X.ndim != 2 or X.shape[0] == 0:
        return Rejected(422, f"rows must form a non-empty 2-D array, got shape {X.shape}")
    if X.shape[1] != detector.n_features_in_:
        return Rejected(422, f"rows have {X.shape[1]} features, the model expects {detector.n_features_in_}")
    if X.dtype.kind not in "iuf":
        return Rejected(422, f"rows must be numbers, got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    bad = ~(np.abs(X) <= FLOAT32_MAX)  # NaN compares False: caught too
    if bad.any():
        i, j = np.argwhere(bad)[0]
        return Rejected(422, f"row {i}, column {j}: {float(X[i, j])!r} is not a finite float32 (|x| <= {FLOAT32_MAX:.4g}), "
                             "the precision the model computes in")
    outside = np.zeros(X.shape, dtype=bool)
    if policy is not None and detector.feature_range_ is not None:
        lo, hi = policy.bounds(detector.feature_range_)
        outside = (X < lo) | (X > hi)
        if outside.any() and policy.out_of_range == "reject":
            i, j = np.argwhere(outside)[0]
            return Rejected(422, f"row {i}, column {j}: {X[i, j]:.6g} is outside the accepted range [{lo[j]:.6g}, {hi[j]:.6g}] "
                                 f"(training range widened by margin {policy.margin:g} x its span); "
                                 "scale rows as at training time")
    return outside.any(axis=1)


def _score_requests(detector: Any, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(scores, proba)`` per request from one forward pass over the merged batch."""
    scores = detector.decision_function(np.concatenate(batches))
    proba = detector.proba_from_scores(scores)
    bounds = np.cumsum([len(b) for b in batches])[:-1]
    return list(zip(np.split(scores, bounds), np.split(proba, bounds)))


def score_isolated(detector: Any, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray] | Rejected]:
    """Score a merged batch so that no request can fail another: if the merged pass raises, each
    request is scored on its own and only those that raise fail. A request whose scores or
    probabilities are not finite is rejected (fail closed: never reported as a number or normal)."""
    try:
        results: list[Any] = _score_requests(detector, batches)
    except Exception:
        results = []
        for X in batches:
            try:
                results += _score_requests(detector, [X])
            except ValueError as exc:
                results.append(Rejected(422, f"rows could not be scored: {exc}"))
            except Exception as exc:  # a model bug that this input triggers: fail this request only
                logger.exception("scoring a request of shape %s failed", X.shape)
                results.append(Rejected(500, f"scoring failed: {type(exc).__name__}"))
    return [_fail_closed(r) for r in results]


def _fail_closed(result: tuple[np.ndarray, np.ndarray] | Rejected) -> tuple[np.ndarray, np.ndarray] | Rejected:
    if isinstance(result, Rejected):
        return result
    scores, proba = result
    broken = ~(np.isfinite(scores) & np.isfinite(proba))
    if broken.any():
        rows = np.flatnonzero(broken)
        return Rejected(422, f"row(s) {rows[:10].tolist()} could not be scored: the model's output is not finite "
                             "(values outside what it can represent); nothing in this request was scored")
    return result
