"""Training profile: per-feature mean, std, quantiles and PSI bin edges of a detector's training
rows, as plain data saved in every checkpoint, so a served model can say why a row is unusual
(z-score and quantile per feature) and how far recent rows drift from training (PSI)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

QUANTILES = tuple(np.round(np.linspace(0.0, 1.0, 101), 2).tolist())  # percentiles 0..100
PSI_BINS = 10
EPS = 1e-4  # floor of a bin's share in PSI (an empty bin would make it infinite)


@dataclass(frozen=True)
class TrainingProfile:
    """Per-feature summary of the training rows; lists of floats only (JSON-safe)."""

    mean: list[float]
    std: list[float]
    quantiles: list[list[float]]  # [feature][q] at QUANTILES
    psi_edges: list[list[float]]  # [feature] inner edges of PSI_BINS equal-share bins
    psi_shares: list[list[float]]  # [feature] training share per bin
    n_rows: int
    score_quantiles: list[float] | None = None  # training decision scores at QUANTILES

    @classmethod
    def fit(cls, X: np.ndarray, scores: np.ndarray | None = None, bins: int = PSI_BINS) -> "TrainingProfile":
        X = np.asarray(X, dtype=np.float64)
        qs = np.quantile(X, QUANTILES, axis=0).T  # (d, 101)
        edges, shares = [], []
        for j in range(X.shape[1]):
            e = np.unique(np.quantile(X[:, j], np.linspace(0, 1, bins + 1)[1:-1]))
            edges.append(e.tolist())
            shares.append(_shares(X[:, j], e).tolist())
        return cls(mean=X.mean(axis=0).tolist(), std=X.std(axis=0).tolist(), quantiles=qs.tolist(),
                   psi_edges=edges, psi_shares=shares, n_rows=int(X.shape[0]),
                   score_quantiles=None if scores is None else np.quantile(scores, QUANTILES).tolist())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainingProfile":
        return cls(**d)

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def zscores(self, X: np.ndarray) -> np.ndarray:
        """(n, d) deviation from the training mean in training standard deviations."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        std = np.asarray(self.std)
        return (X - np.asarray(self.mean)) / np.where(std > 0, std, 1.0)

    def quantile_of(self, X: np.ndarray) -> np.ndarray:
        """(n, d) share of training rows at or below each value (0..1), interpolated on the percentiles."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        qs = np.asarray(self.quantiles)
        out = np.empty_like(X)
        for j in range(X.shape[1]):
            grid, idx = np.unique(qs[j], return_index=True)
            levels = np.asarray(QUANTILES)[idx] if len(grid) > 1 else np.asarray([0.5])
            out[:, j] = np.interp(X[:, j], grid, levels, left=0.0, right=1.0)
        return out

    def psi(self, X: np.ndarray) -> list[float]:
        """Population stability index per feature of rows ``X`` against training (0: same)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return [psi(np.asarray(self.psi_shares[j]), _shares(X[:, j], np.asarray(self.psi_edges[j])))
                for j in range(X.shape[1])]

    def top_features(self, row: np.ndarray, k: int = 5, names: list[str] | None = None) -> list[dict[str, Any]]:
        """The ``k`` features of one row farthest from training by |z|, with z-score and quantile."""
        z, q = self.zscores(row)[0], self.quantile_of(row)[0]
        order = np.argsort(-np.abs(z), kind="stable")[:k]
        return [{"feature": names[j] if names else f"x{j}", "index": int(j), "value": float(np.asarray(row).ravel()[j]),
                 "z": float(z[j]), "quantile": float(q[j])} for j in order]


def _shares(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    return counts / max(len(x), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI = sum (a - e) ln(a / e) over bins, shares floored at ``EPS``."""
    e, a = np.maximum(expected, EPS), np.maximum(actual, EPS)
    return float(np.sum((a - e) * np.log(a / e)))
