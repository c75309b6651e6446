"""One registry of every detector, by name. Entries are import strings so that listing the
registry imports nothing heavy; a detector's ``kind`` equals its registry name."""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any

from rlad.algorithms.base import BaseDetector
from rlad.core.checkpoint import load_checkpoint
from rlad.core.config import from_dict

SEED_FIELDS = ("seed", "random_state", "random_seed")

DETECTORS: dict[str, str] = {
    "mamba_moe": "rlad.algorithms.mamba_moe:MambaMoEDetector",
    "mamba_moe_fast": "rlad.algorithms.mamba_moe:MambaMoEDetector",
    "swift_hydra": "rlad.algorithms.swift_hydra:SwiftHydraDetector",
    "dplan": "rlad.algorithms.dplan:DPLANDetector",
    "meta_rae": "rlad.algorithms.meta_robust_ae:MetaRobustAEDetector",
    "ganomaly": "rlad.algorithms.ganomaly:GANomalyDetector",
    "dec": "rlad.algorithms.deep_clustering:DECDetector",
    "rae": "rlad.algorithms.robust_ae:RobustAEDetector",
    "residual_rl": "rlad.algorithms.residual_rl:ResidualRLDetector",
    "iforest": "rlad.algorithms.baselines:IForestDetector",
    "ecod": "rlad.algorithms.baselines:ECODDetector",
    "knn": "rlad.algorithms.baselines:KNNDetector",
    "devnet": "rlad.algorithms.baselines:DevNetDetector",
    "scaled": "rlad.algorithms.scaled:ScaledDetector",
    # peers a user would pick instead (optional: pip install -e ".[peers]" and --no-deps deepod==0.4.1)
    "deepsad": "rlad.algorithms.peers:DeepSADDetector",
    "prenet": "rlad.algorithms.peers:PReNetDetector",
    "rosas": "rlad.algorithms.peers:RoSASDetector",
    "catboost": "rlad.algorithms.peers:CatBoostDetector",
}

#: What ``rlad fit`` trains when no detector is named (issue 34).
DEFAULT_DETECTOR = "mamba_moe"

#: Registry names that are a config preset of their class (user options override them):
#: ``mamba_moe`` is Swift Hydra's large detector (3 networks of one 64-wide expert) with the
#: unsupervised floor (``algorithms/floor.py``), the one place its values live (Swift Hydra's
#: ``large_detector_config`` and ``loop_detector_config`` read them); ``mamba_moe_fast`` the light network of
#: ``MambaMoEConfig``'s own defaults (one member, auto experts, top-2, width 32), faster to fit.
#: Figures: ``docs/methods/default-detector.md``.
PRESETS: dict[str, dict[str, Any]] = {
    "mamba_moe": {"n_experts": 1, "top_k": 1, "d_model": 64, "members": 3, "floor": True},
    "mamba_moe_fast": {},
}

#: Detectors whose ``fit`` starts Ray actors (RLlib env runners, Serve replicas); they start a
#: local Ray themselves when none runs.
RAY_DETECTORS = frozenset({"swift_hydra", "dplan", "residual_rl"})


def list_detectors() -> list[str]:
    return sorted(DETECTORS)


def get_detector_class(name: str) -> type[BaseDetector]:
    try:
        target = DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; registered: {', '.join(list_detectors())}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def preset_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` over the registry preset of ``name`` (see :data:`PRESETS`)."""
    from rlad.core.config import deep_merge

    return deep_merge(dict(PRESETS.get(name, {})), dict(options or {}))


def build_detector(name: str, options: dict[str, Any] | None = None, seed: int | None = None,
                   contamination: float = 0.1) -> BaseDetector:
    """A registered detector from config overrides (nested dicts for nested configs); ``seed``
    fills its config's ``seed``/``random_state``/``random_seed`` field (for ``scaled``: the inner
    detector's) unless the overrides set it."""
    cls = get_detector_class(name)
    options = preset_options(name, options)
    if seed is not None:
        if name == "scaled":
            inner = get_detector_class(options.get("detector", cls.Config.detector)).Config
            options["options"] = _with_seed(inner, dict(options.get("options") or {}), seed)
        else:
            options = _with_seed(cls.Config, options, seed)
    return cls(from_dict(cls.Config, options), contamination=contamination)


def _with_seed(config_cls: type, options: dict[str, Any], seed: int) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(config_cls)}
    for name in SEED_FIELDS:
        if name in names and name not in options:
            options[name] = int(seed)
    return options


def make_detector(name: str, contamination: float = 0.1, **config: Any) -> BaseDetector:
    """Build a registered detector with config overrides, e.g. ``make_detector("iforest", n_estimators=50)``."""
    return get_detector_class(name)(contamination=contamination, **preset_options(name, config))


def load_detector(path: str | os.PathLike) -> BaseDetector:
    """Load any saved detector: the checkpoint names its kind."""
    kind, _, _ = load_checkpoint(path)
    return get_detector_class(kind).load(path)
