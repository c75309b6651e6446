"""Unsupervised floor for a label-driven detector (issue 37).

Labelled anomalies teach a network their own type; anomalies of a type nobody has labelled yet
can score as normal. The floor fuses the network's score with an IForest fitted on all training
rows (labels unused), so a detector ranks isolated rows high even when the labels do not show them.

Fusion: each score is mapped to its quantile among the unlabelled training rows (rank
calibration: the two scales become comparable; beyond the training range the map continues
linearly, so extreme rows keep their order), then ``(1 - w) * q_net + w * q_iforest``.

Weight ``w`` (when not given), by leave-one-type-out among the labelled anomalies: they fall into
two k-means clusters ("types"); for each, a one-network copy of the detector is trained without
that cluster, without a share of the other cluster and without a share of the unlabelled rows.
For each candidate ``w``: the held-out type's AUC against the held-out unlabelled rows, and the
ordinary validation AUC (the other cluster's held-out anomalies against the same rows). Among the
weights whose ordinary AUC is within ``TOLERANCE`` of the best, the one with the best held-out-type
AUC wins: the weight moves towards the IForest when held-out types are missed, as long as the
seen type does not pay for it. With fewer than ``MIN_ANOMALIES`` labelled anomalies (too few to
cluster and validate), ``DEFAULT_WEIGHT``.
"""
from __future__ import annotations

import pickle
from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

KNOTS = 256
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
DEFAULT_WEIGHT = 0.3
TOLERANCE = 0.02
MIN_ANOMALIES = 8
HELD_UNLABELLED = 0.2  # share of unlabelled rows each fold holds out
HELD_SEEN = 0.25  # share of the other cluster's anomalies each fold holds out (ordinary validation)


def quantile_knots(scores: np.ndarray) -> np.ndarray:
    return np.quantile(np.asarray(scores, np.float64), np.linspace(0.0, 1.0, KNOTS))


def calibrate(scores: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Quantile of each score among the knots' rows, in [0, 1] inside their range, continued
    linearly (by the range's width) outside it so that order is kept."""
    s = np.asarray(scores, np.float64)
    lo, hi = float(knots[0]), float(knots[-1])
    width = max(hi - lo, 1e-12)
    q = np.interp(s, knots, np.linspace(0.0, 1.0, len(knots)))
    return q + np.clip(s - hi, 0.0, None) / width - np.clip(lo - s, 0.0, None) / width


def fuse(q_net: np.ndarray, q_free: np.ndarray, weight: float) -> np.ndarray:
    return (1.0 - weight) * q_net + weight * q_free


class Floor:
    """A fitted IForest, the knots of both scores on the unlabelled rows, and the weight."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.model = None
        self.net_knots = self.free_knots = None
        self.weight = DEFAULT_WEIGHT
        self.choice: dict[str, object] = {}

    def free_score(self, X: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(X)

    def fit(self, X: np.ndarray, y: np.ndarray, net_scores: np.ndarray, weight: float | None,
            fold_scorer: Callable[[np.ndarray, np.ndarray, int], Callable[[np.ndarray], np.ndarray]] | None) -> "Floor":
        """``X``, ``y`` the real training rows and labels; ``net_scores`` the network's scores of
        ``X``; ``fold_scorer(X_fold, y_fold, seed)`` trains a one-network copy and returns its
        scoring function (for the weight's choice)."""
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(n_estimators=100, random_state=self.seed).fit(X)
        unl = y == 0
        free = self.free_score(X)
        self.net_knots, self.free_knots = quantile_knots(net_scores[unl]), quantile_knots(free[unl])
        if weight is not None:
            self.weight, self.choice = float(weight), {"rule": "given"}
        else:
            self.weight, self.choice = self.choose_weight(X, y, free, fold_scorer)
        return self

    def choose_weight(self, X, y, free, fold_scorer) -> tuple[float, dict[str, object]]:
        anomalies = np.flatnonzero(y == 1)
        if fold_scorer is None or anomalies.size < MIN_ANOMALIES:
            return DEFAULT_WEIGHT, {"rule": "default", "anomalies": int(anomalies.size)}
        from sklearn.cluster import KMeans

        rng = np.random.default_rng(self.seed)
        types = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(X[anomalies])
        unlabelled = rng.permutation(np.flatnonzero(y == 0))
        held_u = unlabelled[: max(2, int(HELD_UNLABELLED * unlabelled.size))]
        held_aucs, seen_aucs = [], []
        for t in (0, 1):
            held_type, other = anomalies[types == t], rng.permutation(anomalies[types != t])
            n_seen = int(round(HELD_SEEN * other.size))
            if held_type.size < 2 or n_seen < 2 or other.size - n_seen < 2:
                continue
            held_seen = other[:n_seen]
            train = np.setdiff1d(np.arange(len(y)), np.concatenate([held_type, held_seen, held_u]))
            score = fold_scorer(X[train], y[train], self.seed + 1 + t)
            knots = quantile_knots(score(X[train][y[train] == 0]))
            free_knots = quantile_knots(free[train][y[train] == 0])
            rows = {"type": np.concatenate([held_type, held_u]), "seen": np.concatenate([held_seen, held_u])}
            aucs = {}
            for key, r in rows.items():
                qn, qf = calibrate(score(X[r]), knots), calibrate(free[r], free_knots)
                aucs[key] = [roc_auc_score(y[r], fuse(qn, qf, w)) for w in WEIGHTS]
            held_aucs.append(aucs["type"])
            seen_aucs.append(aucs["seen"])
        if not held_aucs:
            return DEFAULT_WEIGHT, {"rule": "default", "anomalies": int(anomalies.size)}
        held, seen = np.mean(held_aucs, 0), np.mean(seen_aucs, 0)
        ok = np.flatnonzero(seen >= seen.max() - TOLERANCE)
        best = int(ok[np.argmax(held[ok])])
        return float(WEIGHTS[best]), {"rule": "leave-one-type-out", "held_type_auc": held.round(4).tolist(),
                                      "seen_auc": seen.round(4).tolist(), "weights": list(WEIGHTS)}

    def score(self, X: np.ndarray, net_scores: np.ndarray) -> np.ndarray:
        return fuse(calibrate(net_scores, self.net_knots), calibrate(self.free_score(X), self.free_knots), self.weight)

    def state(self) -> dict[str, object]:
        return {"floor_model": pickle.dumps(self.model), "floor_net_knots": self.net_knots.tolist(),
                "floor_free_knots": self.free_knots.tolist(), "floor_weight": float(self.weight)}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> "Floor | None":
        if "floor_model" not in state:
            return None
        floor = cls()
        floor.model = pickle.loads(state["floor_model"])
        floor.net_knots = np.asarray(state["floor_net_knots"], np.float64)
        floor.free_knots = np.asarray(state["floor_free_knots"], np.float64)
        floor.weight = float(state["floor_weight"])
        return floor
