"""What a user would pick instead, behind the same API so they sit in the same benchmark tables:
DeepOD's semi-supervised DeepSAD, PReNet and RoSAS, and supervised CatBoost on the labelled rows
(labelled anomalies against every other row). CatBoost comes with the optional ``[peers]`` extra
(``pip install -e ".[peers]"``); DeepOD 0.4.1 pins torch < 1.13.1 but runs on ours, so it is
installed without its pins (``pip install --no-deps deepod==0.4.1``: its other requirements are
ours already). The core install never imports them.

The fitted model is pickled into the checkpoint like the PyOD baselines (load only checkpoints you
trust); DeepOD models keep their training rows (PReNet scores against them), so theirs hold them too.
"""
from __future__ import annotations

import contextlib
import importlib
import io
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from rlad.algorithms.baselines import PickledModel
from rlad.algorithms.torch_utils import seeded


PEERS_EXTRA = 'pip install -e ".[peers]"'
DEEPOD_INSTALL = "pip install --no-deps deepod==0.4.1"  # its torch pin would refuse ours


def _import(module: str, install: str = PEERS_EXTRA) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is not installed: {install} ({exc})") from exc


def _semi_labels(y: np.ndarray | None, kind: str, at_least: int = 1) -> np.ndarray:
    if y is None or (y == 1).sum() < at_least:
        raise ValueError(f"{kind} is (semi-)supervised: fit(X, y) needs y with at least {at_least} labelled anomaly(ies) (1)")
    return y


@dataclass
class DeepODConfig:
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    random_state: int = 0


class DeepODDetector(PickledModel):
    """A DeepOD tabular model trained with ``y`` marking labelled anomalies (1) among unlabelled rows."""

    Config = DeepODConfig
    deepod_model: ClassVar[str]
    min_labelled: ClassVar[int] = 1

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        y = _semi_labels(y, self.kind, self.min_labelled)
        cls = getattr(_import("deepod.models.tabular", DEEPOD_INSTALL), self.deepod_model)
        self.model_ = cls(device="cpu", verbose=0, **asdict(self.config))
        with contextlib.redirect_stdout(io.StringIO()), seeded(self.config.random_state):
            self.model_.fit(X, y)

    def _score(self, X: np.ndarray) -> np.ndarray:
        """Seeded: PReNet scores against randomly drawn training rows (numpy's global RNG)."""
        outer = np.random.get_state()
        np.random.seed(self.config.random_state)
        try:
            with contextlib.redirect_stdout(io.StringIO()), seeded(self.config.random_state):
                return np.asarray(self.model_.decision_function(X), dtype=np.float64)
        finally:
            np.random.set_state(outer)


class DeepSADDetector(DeepODDetector):
    """Deep SAD (Ruff et al., ICLR 2020)."""

    kind = "deepsad"
    deepod_model = "DeepSAD"


class PReNetDetector(DeepODDetector):
    """PReNet (Pang et al., KDD 2023)."""

    kind = "prenet"
    deepod_model = "PReNet"
    min_labelled = 2  # it trains on pairs of labelled anomalies


class RoSASDetector(DeepODDetector):
    """RoSAS (Xu et al., IP&M 2023)."""

    kind = "rosas"
    deepod_model = "RoSAS"


@dataclass
class CatBoostConfig:
    iterations: int = 500
    depth: int = 6
    learning_rate: float | None = None  # None: CatBoost's automatic choice
    random_seed: int = 0
    thread_count: int = 1


class CatBoostDetector(PickledModel):
    """Gradient boosting on the labelled rows: labelled anomalies (1) against every other row (0);
    score = P(anomaly)."""

    Config = CatBoostConfig
    kind = "catboost"

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        y = _semi_labels(y, self.kind)
        self.model_ = _import("catboost").CatBoostClassifier(verbose=0, allow_writing_files=False, **asdict(self.config))
        self.model_.fit(X, y)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)[:, 1].astype(np.float64)
