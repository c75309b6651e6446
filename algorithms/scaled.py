"""A registered detector behind the MinMax scaling fitted on its training rows, so that a model
fitted on a raw table (``rlad fit``) scores raw rows everywhere: ``rlad score``, Serve, the API.

The deep detectors expect features in [0, 1] (ADBench's protocol; the beta-VAE decodes through a
sigmoid); rows seen later are scaled with the training minimum and range and clipped to
``clip``, as ADBench clips its test rows. The checkpoint holds the inner detector's kind, config
and state, the scaling, and the feature column names a table must provide.

Given a DataFrame, ``fit`` first learns each column's type (:mod:`rlad.core.preprocess`:
categories, booleans, dates, gaps) and keeps that as plain data in the checkpoint; ``decision_function``
then takes DataFrames by column name (or rows of raw values in the fitted column order), while a
numeric array is taken as already-encoded numbers, as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.registry import get_detector_class, preset_options
from rlad.core.config import from_dict
from rlad.core.preprocess import TableOptions, TablePreprocessor, as_frame  # noqa: F401


@dataclass
class ScaledConfig:
    detector: str = "iforest"  # registered kind of the inner detector
    options: dict[str, Any] = field(default_factory=dict)  # its config overrides (nested dicts for nested configs)
    columns: tuple[str, ...] = ()  # feature column names, in order (set by ``rlad fit``)
    clip: tuple[float, float] = (-1.0, 2.0)  # scaled values are clipped to this range
    table: dict[str, Any] = field(default_factory=dict)  # TableOptions for DataFrames (types, gaps, dates)


def category_weights(Z: np.ndarray, blocks: list[list[int]]) -> np.ndarray:
    """Per-feature weights that shrink each one-hot block of scaled rows ``Z`` so that its summed
    variance (half the mean squared distance it puts between two rows) equals the median variance
    of the other features; never above 1. Without other varying features, all ones."""
    w = np.ones(Z.shape[1])
    var = Z.astype(np.float64).var(axis=0)
    inside = np.zeros(Z.shape[1], bool)
    for b in blocks:
        inside[b] = True
    others = var[~inside & (var > 0)]
    if not others.size:
        return w
    target = float(np.median(others))
    for b in blocks:
        total = float(var[b].sum())
        if total > 0:
            w[b] = min(1.0, np.sqrt(target / total))
    return w


class ScaledDetector(BaseDetector):
    """``fit`` learns per-feature min and range, then fits the inner detector on scaled rows."""

    Config = ScaledConfig
    kind = "scaled"

    def _inner(self) -> BaseDetector:
        cls = get_detector_class(self.config.detector)
        if cls is ScaledDetector:
            raise ValueError("a scaled detector cannot wrap another scaled detector")
        return cls(from_dict(cls.Config, preset_options(self.config.detector, self.config.options)), contamination=self.contamination)

    preprocessor: TablePreprocessor | None = None
    last_unseen_: dict[str, int] = {}

    @property
    def fit_params(self) -> tuple[str, ...]:
        """The inner detector's (passed through to its ``fit``)."""
        return get_detector_class(self.config.detector).fit_params

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> "ScaledDetector":
        """A DataFrame is encoded by a :class:`TablePreprocessor` learnt here; an array as before."""
        import pandas as pd

        if not isinstance(X, pd.DataFrame):
            self.preprocessor = None
            return super().fit(X, y, **fit_params)
        self.preprocessor = TablePreprocessor(TableOptions(**self.config.table)).fit(X)
        enc = self.preprocessor.transform(X)
        if enc.bad:
            i = min(enc.bad)
            raise ValueError(f"row {i}: {enc.bad[i]} ({len(enc.bad)} bad row(s))")
        self.config.columns = tuple(self.preprocessor.output_names)
        return super().fit(enc.X, y, **fit_params)

    def encode(self, X: Any) -> np.ndarray:
        """Raw rows (DataFrame by name, dicts, or values in the fitted column order) as numbers;
        counts of categories unseen at fit time go to ``last_unseen_``."""
        enc = self.preprocessor.transform(as_frame(X, self.preprocessor.columns))
        if enc.bad:
            i = min(enc.bad)
            raise ValueError(f"row {i}: {enc.bad[i]}")
        self.last_unseen_ = enc.unseen
        return enc.X

    def decision_function(self, X: Any) -> np.ndarray:
        import pandas as pd

        if self.preprocessor is not None and (isinstance(X, (pd.DataFrame, list)) or np.asarray(X).dtype == object):
            X = self.encode(X)
        return super().decision_function(X)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Rows in the inner detector's [0, 1] space (clipped)."""
        return np.clip((X - self.low_) / self.span_, *self.config.clip).astype(np.float32)

    def _fit(self, X: np.ndarray, y: np.ndarray | None, **fit_params: np.ndarray) -> None:
        if self.config.columns and len(self.config.columns) != X.shape[1]:
            raise ValueError(f"{len(self.config.columns)} column names for {X.shape[1]} features")
        self.low_ = X.min(axis=0).astype(np.float64)
        span = X.max(axis=0).astype(np.float64) - self.low_
        self.span_ = np.where(span > 0, span, 1.0)
        if self.preprocessor is not None and self.preprocessor.options.balance_categories:
            self.span_ = self.span_ / category_weights(self.transform(X), self.preprocessor.onehot_blocks)
        self.inner = self._inner().fit(self.transform(X), y, **fit_params)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self.inner.decision_function(self.transform(X))

    def proba_from_scores(self, scores: np.ndarray) -> np.ndarray:
        return self.inner.proba_from_scores(scores)

    def _get_state(self) -> dict[str, Any]:
        inner = self.inner
        table = {} if self.preprocessor is None else {"table": self.preprocessor.get_state()}
        return {**table, "low": torch.from_numpy(self.low_), "span": torch.from_numpy(self.span_), "inner": inner._get_state(),
                "inner_meta": {"threshold": inner.threshold_, "train_score_range": list(inner._train_score_range)}}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.low_, self.span_ = state["low"].numpy(), state["span"].numpy()
        self.preprocessor = None
        if "table" in state:
            self.preprocessor = TablePreprocessor(TableOptions(**self.config.table)).set_state(state["table"])
        self.inner = self._inner()
        self.inner.n_features_in_ = self.n_features_in_
        self.inner.threshold_ = state["inner_meta"]["threshold"]
        self.inner._train_score_range = tuple(state["inner_meta"]["train_score_range"])
        self.inner._set_state(state["inner"])
