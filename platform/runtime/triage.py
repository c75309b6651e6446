"""Back end of the analysts' triage page (``<prefix>/ui/``): why a row was flagged, drift of
recent rows against training, and the page's static files. The rows and labels it shows live in
the service's store (:mod:`~rlad.platform.runtime.feedback`), its versions in the registry
(:mod:`~rlad.platform.runtime.model_registry`).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rlad.core.profile import QUANTILES


def ui_dir() -> Path:
    """Folder of the page's HTML, CSS and JS (package data; no build step)."""
    return Path(str(resources.files("rlad.platform.runtime") / "ui"))


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
