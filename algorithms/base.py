"""PyOD-style estimator API shared by every rlad detector.

Subclasses implement ``_fit``, ``_score`` (higher = more anomalous), ``_get_state`` and
``_set_state``, and keep their hyper-parameters in a dataclass ``config``. The base class adds
``threshold_`` (the ``1 - contamination`` quantile of training scores), ``feature_range_`` (per-feature
min and max of the training rows, so a server can tell rows far outside what the model has seen),
``profile_`` (a :class:`~rlad.core.profile.TrainingProfile` of the training rows, for explanations and drift),
``predict``, ``predict_proba`` and atomic ``save``/``load``.
"""
from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rlad.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rlad.core.config import from_dict, learned_options
from rlad.core.profile import TrainingProfile


def check_array(X: Any, n_features: int | None = None) -> np.ndarray:
    """Validate a 2-D finite numeric matrix and return it as float32."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X must be numeric: {exc}") from exc
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows x features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, the detector was fitted on {n_features}")
    return X


class BaseDetector(ABC):
    """Base class: ``fit(X, y=None)``, ``decision_function``, ``predict``, ``threshold_``."""

    Config: ClassVar[type]
    kind: ClassVar[str]
    #: Per-row arrays ``fit`` takes by name besides ``X`` and ``y`` (e.g. ``sample_weight``): checked
    #: here (one value per row) and handed to ``_fit``, never kept on the detector.
    fit_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None, contamination: float = 0.1, **overrides: Any) -> None:
        if config is None:  # overrides may give nested configs as dicts
            config = from_dict(self.Config, overrides)
        elif overrides:
            config = from_dict(self.Config, {**dataclasses.asdict(config), **overrides})
        if not 0.0 < contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {contamination}")
        self.config = config
        self.contamination = contamination
        self.n_features_in_: int | None = None
        self.threshold_: float | None = None
        self.decision_scores_: np.ndarray | None = None
        self._train_score_range: tuple[float, float] | None = None
        self.feature_range_: tuple[np.ndarray, np.ndarray] | None = None  # None in checkpoints older than it
        self.profile_: TrainingProfile | None = None  # training distribution per feature; None in older checkpoints

    # -- to implement ---------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray | None, **fit_params: np.ndarray) -> None:
        """Train on ``X``; ``y`` (optional) marks known anomalies with 1, unlabelled rows with 0;
        ``fit_params``: the given ones of :attr:`fit_params`, one float32 value per row."""

    @abstractmethod
    def _score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly scores of validated rows, higher = more anomalous."""

    @abstractmethod
    def _get_state(self) -> dict[str, Any]:
        """Learned state: tensors, arrays and numbers (anything ``torch.save`` stores safely)."""

    @abstractmethod
    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``_get_state`` returned (called on a freshly constructed detector)."""

    # -- public API -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> "BaseDetector":
        """Train on ``X`` (``y``: 1 = known anomaly, 0 = unlabelled) and calibrate ``threshold_``;
        ``fit_params`` are per-row arrays named in :attr:`fit_params` (None: not given)."""
        X = check_array(X)
        if y is not None:
            y = np.asarray(y).astype(np.int64).ravel()
            if y.shape[0] != X.shape[0]:
                raise ValueError(f"y has {y.shape[0]} labels for {X.shape[0]} rows")
        self.n_features_in_ = X.shape[1]
        self._fit(X, y, **self.check_fit_params(fit_params, len(X)))
        self._calibrate(X)
        return self

    def check_fit_params(self, fit_params: dict[str, Any], n_rows: int) -> dict[str, np.ndarray]:
        """The given ``fit_params`` as float32 vectors of one value per row; unknown names raise."""
        unknown = sorted(set(fit_params) - set(self.fit_params))
        if unknown:
            raise TypeError(f"{type(self).__name__}.fit takes no {unknown}; its fit parameters: {list(self.fit_params)}")
        rows = {}
        for name, value in fit_params.items():
            if value is None:
                continue
            rows[name] = np.asarray(value, np.float32).ravel()
            if len(rows[name]) != n_rows:
                raise ValueError(f"{name} has {len(rows[name])} values for {n_rows} rows")
        return rows

    def adopt(self, X: Any, state: dict[str, Any], y: Any = None, **fit_params: Any) -> "BaseDetector":
        """Take learned ``state`` trained elsewhere (e.g. by Ray Train workers) and calibrate
        ``threshold_`` on the training rows ``X``, as ``fit`` would; ``y`` and ``fit_params`` reach
        what ``fit`` does after training and before calibrating (:meth:`_after_adopt`)."""
        X = check_array(X)
        self.n_features_in_ = X.shape[1]
        self._set_state(state)
        self._after_adopt(X, y, self.check_fit_params(fit_params, len(X)))
        self._calibrate(X)
        return self

    def _after_adopt(self, X: np.ndarray, y: Any, fit_params: dict[str, np.ndarray]) -> None:
        """What ``fit`` fits on top of the learned state (nothing here; a detector's floor)."""

    def _calibrate(self, X: np.ndarray) -> None:
        scores = self._score(X)
        self.decision_scores_ = scores
        self.threshold_ = float(np.quantile(scores, 1.0 - self.contamination))
        self._train_score_range = (float(scores.min()), float(scores.max()))
        self.feature_range_ = (X.min(axis=0).astype(np.float64), X.max(axis=0).astype(np.float64))
        self.profile_ = TrainingProfile.fit(X, scores)

    def _check_fitted(self) -> None:
        if self.threshold_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() first")

    def decision_function(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return self._score(check_array(X, self.n_features_in_))

    def predict(self, X: Any) -> np.ndarray:
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def _linear_proba(self, scores: np.ndarray) -> np.ndarray:
        """PyOD's linear method: scores min-max scaled by the training range, clipped to [0, 1]."""
        lo, hi = self._train_score_range
        return np.clip((scores - lo) / max(hi - lo, 1e-12), 0.0, 1.0)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Columns P(normal), P(anomaly) by PyOD's linear method."""
        p = self._linear_proba(self.decision_function(X))
        return np.stack([1.0 - p, p], axis=1)

    def proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """P(anomaly) from decision scores: the linear method here; detectors with a calibrated
        output (a sigmoid head) override this."""
        return self._linear_proba(scores)

    def anomaly_probability(self, X: Any) -> np.ndarray:
        """P(anomaly) per row."""
        return self.proba_from_scores(self.decision_function(X))

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        self._check_fitted()
        meta = {
            "contamination": self.contamination,
            "n_features_in": self.n_features_in_,
            "threshold": self.threshold_,
            "train_score_range": list(self._train_score_range),
            "feature_range": None if self.feature_range_ is None else [r.tolist() for r in self.feature_range_],
            "profile": None if self.profile_ is None else self.profile_.to_dict(),
        }
        return save_checkpoint(path, self.kind, {"model": learned_options(self.config), "meta": meta}, self._get_state())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BaseDetector":
        kind, config, state = load_checkpoint(path, expected_kind=cls.kind)
        try:
            det = cls(from_dict(cls.Config, config["model"]), contamination=config["meta"]["contamination"])
            meta = config["meta"]
            det.n_features_in_ = meta["n_features_in"]
            det.threshold_ = meta["threshold"]
            det._train_score_range = tuple(meta["train_score_range"])
            if meta.get("feature_range") is not None:
                det.feature_range_ = tuple(np.asarray(r, dtype=np.float64) for r in meta["feature_range"])
            if meta.get("profile") is not None:
                det.profile_ = TrainingProfile.from_dict(meta["profile"])
            det._set_state(state)
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} does not match {cls.__name__}: {exc}") from exc
        return det
