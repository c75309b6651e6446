"""One registry of every detector, by name. Entries are import strings so that listing the
registry imports nothing heavy; a detector's ``kind`` equals its registry name."""
from __future__ import annotations

import importlib
import os
from typing import Any

from rlad.algorithms.base import BaseDetector
from rlad.platform.core.checkpoint import load_checkpoint

DETECTORS: dict[str, str] = {
    "mamba_moe": "rlad.algorithms.mamba_moe:MambaMoEDetector",
    "swift_hydra": "rlad.algorithms.swift_hydra:SwiftHydraDetector",
    "dplan": "rlad.algorithms.dplan:DPLANDetector",
    "meta_rae": "rlad.algorithms.meta_robust_ae:MetaRobustAEDetector",
    "ganomaly": "rlad.algorithms.ganomaly:GANomalyDetector",
    "dec": "rlad.algorithms.deep_clustering:DECDetector",
    "residual_rl": "rlad.algorithms.residual_rl:ResidualRLDetector",
    "iforest": "rlad.algorithms.baselines:IForestDetector",
    "ecod": "rlad.algorithms.baselines:ECODDetector",
    "knn": "rlad.algorithms.baselines:KNNDetector",
    "devnet": "rlad.algorithms.baselines:DevNetDetector",
}


def list_detectors() -> list[str]:
    return sorted(DETECTORS)


def get_detector_class(name: str) -> type[BaseDetector]:
    try:
        target = DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; registered: {', '.join(list_detectors())}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def make_detector(name: str, contamination: float = 0.1, **config: Any) -> BaseDetector:
    """Build a registered detector with config overrides, e.g. ``make_detector("iforest", n_estimators=50)``."""
    return get_detector_class(name)(contamination=contamination, **config)


def load_detector(path: str | os.PathLike) -> BaseDetector:
    """Load any saved detector: the checkpoint names its kind."""
    kind, _, _ = load_checkpoint(path)
    return get_detector_class(kind).load(path)
