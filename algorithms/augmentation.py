"""Non-RL synthetic anomalies: the arms Swift Hydra's choice is measured against (issue 28).

- :func:`nng_mix` (NNG-Mix, Dong et al. 2023): a labelled anomaly mixed with one of its ``k``
  nearest unlabelled rows, ``lam * a + (1 - lam) * u`` with ``lam ~ Beta(alpha, alpha)`` (0.2:
  most mixes stay near one end), plus Gaussian noise of scale ``noise``.
- :func:`smote`: SMOTE-style interpolation between a labelled anomaly and one of its ``k``
  nearest labelled anomalies, ``a + u * (b - a)``, ``u ~ U(0, 1)``.

Both take the training rows and ``y`` (1: labelled anomaly, 0: unlabelled) and return ``n`` rows.
"""
from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def nng_mix(X: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator, k: int = 5,
            alpha: float = 0.2, noise: float = 0.01) -> np.ndarray:
    """``n`` NNG-Mix rows (module docstring)."""
    anomalies, unlabelled = X[y == 1], X[y == 0]
    if len(anomalies) == 0 or len(unlabelled) == 0:
        raise ValueError("nng_mix needs at least one labelled anomaly and one unlabelled row")
    k = min(k, len(unlabelled))
    near = NearestNeighbors(n_neighbors=k).fit(unlabelled).kneighbors(anomalies, return_distance=False)
    a = rng.integers(len(anomalies), size=n)
    u = near[a, rng.integers(k, size=n)]
    lam = rng.beta(alpha, alpha, size=(n, 1))
    mixed = lam * anomalies[a] + (1.0 - lam) * unlabelled[u]
    return (mixed + noise * rng.standard_normal(mixed.shape)).astype(np.float32)


def smote(X: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator, k: int = 5) -> np.ndarray:
    """``n`` SMOTE rows among the labelled anomalies (a single one is copied)."""
    anomalies = X[y == 1]
    if len(anomalies) == 0:
        raise ValueError("smote needs at least one labelled anomaly")
    a = rng.integers(len(anomalies), size=n)
    if len(anomalies) == 1:
        return anomalies[a].astype(np.float32)
    k = min(k, len(anomalies) - 1)
    near = NearestNeighbors(n_neighbors=k + 1).fit(anomalies).kneighbors(anomalies, return_distance=False)[:, 1:]
    b = near[a, rng.integers(k, size=n)]
    u = rng.random((n, 1))
    return (anomalies[a] + u * (anomalies[b] - anomalies[a])).astype(np.float32)
