"""Classical baselines: thin wrappers over PyOD models behind the rlad detector API.

One wrapper class serves all of them: a subclass names its PyOD model and a ``Config`` dataclass
whose fields are that model's constructor keywords. The fitted PyOD model is pickled into the
checkpoint as ``bytes`` (which ``torch.load(weights_only=True)`` restores as is); as with any
pickle, load only checkpoints you trust.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import pickle
from dataclasses import dataclass
from typing import Any, ClassVar
from unittest import mock

import numpy as np

from rlad.algorithms.base import BaseDetector
from rlad.algorithms.torch_utils import seeded


class PickledModel(BaseDetector):
    """Persistence of a fitted third-party model (``model_``) as pickle bytes."""

    state_key: ClassVar[str] = "pickle"

    def _get_state(self) -> dict[str, Any]:
        return {self.state_key: pickle.dumps(self.model_)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.model_ = pickle.loads(state[self.state_key])


class PyODDetector(PickledModel):
    """A PyOD model built as ``pyod_model(contamination=..., **asdict(config))``."""

    pyod_model: ClassVar[str]  # "module:Class"
    state_key = "pyod_pickle"

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        module, name = self.pyod_model.split(":")
        self.model_ = getattr(importlib.import_module(module), name)(contamination=self.contamination, **dataclasses.asdict(self.config))
        self._fit_model(X, y)

    def _fit_model(self, X: np.ndarray, y: np.ndarray | None) -> None:
        """Unsupervised PyOD models ignore ``y``."""
        self.model_.fit(X)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.decision_function(X), dtype=np.float64)


@dataclass
class IForestConfig:
    n_estimators: int = 100
    max_samples: int | str = "auto"
    max_features: float = 1.0
    random_state: int = 0


class IForestDetector(PyODDetector):
    """Isolation Forest (Liu et al., 2008)."""

    Config = IForestConfig
    kind = "iforest"
    pyod_model = "pyod.models.iforest:IForest"


@dataclass
class ECODConfig:
    n_jobs: int = 1


class ECODDetector(PyODDetector):
    """ECOD: empirical-CDF-based outlier detection (Li et al., 2022)."""

    Config = ECODConfig
    kind = "ecod"
    pyod_model = "pyod.models.ecod:ECOD"


@dataclass
class KNNConfig:
    n_neighbors: int = 5
    method: str = "largest"
    n_jobs: int = 1


class KNNDetector(PyODDetector):
    """Distance to the k-th nearest training neighbour (Ramaswamy et al., 2000)."""

    Config = KNNConfig
    kind = "knn"
    pyod_model = "pyod.models.knn:KNN"


@dataclass
class DevNetConfig:
    network_depth: int = 2
    batch_size: int = 512
    epochs: int = 20
    random_seed: int = 0


class DevNetDetector(PyODDetector):
    """Deviation network (Pang et al., 2019), semi-supervised: ``fit(X, y)`` with ``y`` marking
    labelled anomalies (1) among unlabelled rows (0).

    PyOD 3.6.7's DevNet training loop calls ``deviation_loss(y_true, y_pred)`` as
    ``deviation_loss(outputs, labels)``: the arguments are swapped and their shapes, (B, 1) and
    (B,), broadcast to (B, B), so no label reaches the gradient (test AUC near 0.5, or inverted).
    ``fit`` patches in a loss that calls PyOD's with the right arguments."""

    Config = DevNetConfig
    kind = "devnet"
    pyod_model = "pyod.models.devnet:DevNet"

    def _fit_model(self, X: np.ndarray, y: np.ndarray | None) -> None:
        if y is None or not y.any():
            raise ValueError("devnet is semi-supervised: fit(X, y) needs y with at least one labelled anomaly (1)")
        from pyod.models import devnet  # imported here: importing it reseeds numpy's and torch's global RNGs

        pyod_loss = devnet.deviation_loss

        def loss(outputs, labels):
            return pyod_loss(labels.float().view(-1), outputs.view(-1))

        # PyOD's DevNet also prints every epoch and draws its batches from torch's global RNG.
        with mock.patch.object(devnet, "deviation_loss", loss), contextlib.redirect_stdout(io.StringIO()), seeded(self.config.random_seed):
            self.model_.fit(X, y)

    def _score(self, X: np.ndarray) -> np.ndarray:
        """PyOD's DevNet fails on a last batch of one row (its (1, 1) output squeezes to a scalar):
        score such an input with the last row repeated, and drop that extra score."""
        if len(X) % self.config.batch_size != 1:
            return super()._score(X)
        return super()._score(np.concatenate([X, X[-1:]]))[:-1]
