"""A registered detector behind the MinMax scaling fitted on its training rows, so that a model
fitted on a raw table (``rlad fit``) scores raw rows everywhere: ``rlad score``, Serve, the API.

The deep detectors expect features in [0, 1] (ADBench's protocol; the beta-VAE decodes through a
sigmoid); rows seen later are scaled with the training minimum and range and clipped to
``clip``, as ADBench clips its test rows. The checkpoint holds the inner detector's kind, config
and state, the scaling, and the feature column names a table must provide.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.registry import get_detector_class, preset_options
from rlad.core.config import from_dict


@dataclass
class ScaledConfig:
    detector: str = "iforest"  # registered kind of the inner detector
    options: dict[str, Any] = field(default_factory=dict)  # its config overrides (nested dicts for nested configs)
    columns: tuple[str, ...] = ()  # feature column names, in order (set by ``rlad fit``)
    clip: tuple[float, float] = (-1.0, 2.0)  # scaled values are clipped to this range


class ScaledDetector(BaseDetector):
    """``fit`` learns per-feature min and range, then fits the inner detector on scaled rows."""

    Config = ScaledConfig
    kind = "scaled"

    def _inner(self) -> BaseDetector:
        cls = get_detector_class(self.config.detector)
        if cls is ScaledDetector:
            raise ValueError("a scaled detector cannot wrap another scaled detector")
        return cls(from_dict(cls.Config, preset_options(self.config.detector, self.config.options)), contamination=self.contamination)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Rows in the inner detector's [0, 1] space (clipped)."""
        return np.clip((X - self.low_) / self.span_, *self.config.clip).astype(np.float32)

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        if self.config.columns and len(self.config.columns) != X.shape[1]:
            raise ValueError(f"{len(self.config.columns)} column names for {X.shape[1]} features")
        self.low_ = X.min(axis=0).astype(np.float64)
        span = X.max(axis=0).astype(np.float64) - self.low_
        self.span_ = np.where(span > 0, span, 1.0)
        self.inner = self._inner().fit(self.transform(X), y)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self.inner.decision_function(self.transform(X))

    def proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        return self.inner.proba_from_scores(scores)

    def _get_state(self) -> dict[str, Any]:
        inner = self.inner
        return {"low": torch.from_numpy(self.low_), "span": torch.from_numpy(self.span_), "inner": inner._get_state(),
                "inner_meta": {"threshold": inner.threshold_, "train_score_range": list(inner._train_score_range)}}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.low_, self.span_ = state["low"].numpy(), state["span"].numpy()
        self.inner = self._inner()
        self.inner.n_features_in_ = self.n_features_in_
        self.inner.threshold_ = state["inner_meta"]["threshold"]
        self.inner._train_score_range = tuple(state["inner_meta"]["train_score_range"])
        self.inner._set_state(state["inner"])
