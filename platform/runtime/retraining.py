"""Retraining a live service from its analysts' feedback, behind a validation gate.

One retrain (:func:`retrain_once`), top to bottom:

1. the live version's detector and its training rows (kept by ``rlad serve --training-data``);
2. the feedback, one label per row (the newest), split once and for all by a hash of each row's
   key (its id, or its values): a ``holdout`` share is never trained on by any candidate;
3. the candidate: a plain refit of the live version's own detector (same kind and config, so every
   registered detector works) on the training rows plus the non-held-out feedback, or Swift Hydra
   rounds on them (``swift_hydra``);
4. the gate: candidate and live model score the held-out feedback, which neither trained on (the
   live model is either the first version, which saw no feedback, or an earlier candidate, which
   held out the same rows). With at least ``min_positives`` held-out anomalies and
   ``min_negatives`` normals, a paired, stratified bootstrap of the held-out rows gives a lower
   confidence bound of AUC-PR(candidate) - AUC-PR(live); the candidate is promoted only when that
   bound is at least ``-margin``, i.e. when it is not worse by more than the margin at the chosen
   confidence. A point comparison promoted a worse model when a handful of held-out positives
   happened to favour it (``docs/platform/live-loop.md``). Each held-out row counts with its
   feedback ``weight``: flagged rows are the top of the live model's own ranking, so on them alone
   the live model wins by construction (anomalies it missed are never labelled); a few rows drawn at
   random from the unflagged ones and labelled with weight N/m (an audit) make the AUC-PR estimate
   cover the whole stream (inverse-probability weighting).
5. the candidate is registered either way (checkpoint, metrics, data hash, parent); promotion is a
   write of the registry's live pointer, which the replicas poll and hot-swap to; a refusal is
   logged with its reasons.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from rlad.platform.runtime.feedback import all_feedback
from rlad.platform.runtime.model_registry import ModelRegistry, data_hash, load_training_rows

if TYPE_CHECKING:  # the CLI reads RetrainConfig's defaults: importing this module stays light
    from rlad.algorithms.base import BaseDetector


@dataclass
class RetrainConfig:
    """What one retrain does; ``rlad retrain``'s flags read their defaults here."""

    # promote when AUC-PR(candidate) is not below the live model's by more than this (at the lower bound). Chosen on
    # development seeds 0-2 (benchmarks/results/live_loop_dev.csv): held-out feedback is mostly rows the live model
    # flagged, which favour it, so a stricter margin refused candidates that were better on the rows to come.
    margin: float = 0.2
    holdout: float = 0.3  # share of feedback rows held out for the gate, by a hash of each row's key
    min_positives: int = 5  # held-out anomalies needed before the gate can promote anything
    min_negatives: int = 5  # held-out normal labels needed likewise
    confidence: float = 0.8  # one-sided confidence of the bootstrap lower bound on the difference
    bootstrap: int = 400  # paired bootstrap resamples of the held-out rows
    gate: bool = True  # False: train on all feedback and promote without validation (benchmark arm only)
    refit_all: bool = False  # a promoted candidate is refit on all feedback, the held-out share too, before it goes live
    swift_hydra: bool = False  # candidate by Swift Hydra rounds instead of a plain refit
    swift_hydra_options: dict[str, Any] = field(default_factory=dict)  # SwiftHydraConfig overrides
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.margin < 0 or self.min_positives < 1 or self.min_negatives < 1 or self.bootstrap < 1:
            raise ValueError("margin must be >= 0, min_positives, min_negatives and bootstrap >= 1")


class RetrainError(ValueError):
    """A service that cannot be retrained (no live version, no training rows)."""


def held_out(key: str, share: float) -> bool:
    """Whether a feedback row is held out: decided once per row by a hash of its key."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < share


@dataclass
class LabelledRows:
    """Feedback, one row per key (the newest label wins), rows as they were sent."""

    keys: list[str]
    rows: list[Any]  # arrays, or objects by column name
    y: np.ndarray  # 1 = anomaly, 0 = normal
    w: np.ndarray  # rows each label stands for in validation (1 flagged, N/m audit)
    last_id: int  # newest feedback id read

    @classmethod
    def from_feedback(cls, lines: list[dict[str, Any]]) -> "LabelledRows":
        latest: dict[str, dict[str, Any]] = {}
        for line in lines:  # oldest first
            key = line["row_id"] or "row:" + hashlib.sha256(json.dumps(line["row"], sort_keys=True).encode()).hexdigest()
            latest[key] = line
        keys = list(latest)
        y = np.asarray([latest[k]["label"] == "anomaly" for k in keys], dtype=np.int64)
        w = np.asarray([latest[k].get("weight", 1.0) for k in keys], dtype=np.float64)
        return cls(keys, [latest[k]["row"] for k in keys], y, w, max((line["feedback_id"] for line in lines), default=0))

    def split(self, share: float) -> tuple[np.ndarray, np.ndarray]:
        """Masks (train, held out)."""
        out = np.asarray([held_out(k, share) for k in self.keys], dtype=bool)
        return ~out, out

    def take(self, mask: np.ndarray) -> list[Any]:
        return [r for r, keep in zip(self.rows, mask) if keep]


def as_model_input(detector: BaseDetector, rows: list[Any], like: Any) -> Any:
    """Stored rows (arrays in the model's column order, or objects by column name) in the form the
    training rows ``like`` have: a raw table (DataFrame) for a model fitted on one, else numbers."""
    pre = getattr(detector, "preprocessor", None)
    if hasattr(like, "columns"):
        import pandas as pd

        names = list(pre.columns) if pre is not None else [str(c) for c in like.columns]
        records = [r if isinstance(r, dict) else dict(zip(names, r)) for r in rows]
        return pd.DataFrame.from_records(records, columns=list(like.columns)) if records else like.iloc[:0]
    names = list(getattr(detector.config, "columns", ()) or ())
    out = [[r[c] for c in names] if isinstance(r, dict) else r for r in rows]
    return np.asarray(out, dtype=np.float64).reshape(len(out), -1 if out else np.shape(like)[1])


def concat_rows(a: Any, b: Any) -> Any:
    if hasattr(a, "columns"):
        import pandas as pd

        return pd.concat([a, b], ignore_index=True) if len(b) else a
    return np.concatenate([a, b]) if len(b) else a


def auc_pr(y: np.ndarray, scores: np.ndarray, w: np.ndarray | None = None) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, scores, sample_weight=w))


def bootstrap_differences(y: np.ndarray, a: np.ndarray, b: np.ndarray, n: int, seed: int = 0,
                          w: np.ndarray | None = None) -> np.ndarray:
    """``n`` paired-bootstrap draws of AUC-PR(a) - AUC-PR(b) on the same rows, resampling positives
    and negatives separately (each resample keeps the class counts)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    diffs = np.empty(n)
    for i in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        wb = None if w is None else w[idx]
        diffs[i] = auc_pr(y[idx], a[idx], wb) - auc_pr(y[idx], b[idx], wb)
    return diffs


def bootstrap_lower_bound(y: np.ndarray, live: np.ndarray, candidate: np.ndarray, confidence: float, n: int,
                          seed: int = 0, w: np.ndarray | None = None) -> float:
    """Lower ``confidence`` bound of AUC-PR(candidate) - AUC-PR(live) (:func:`bootstrap_differences`)."""
    return float(np.quantile(bootstrap_differences(y, candidate, live, n, seed, w), 1.0 - confidence))


def gate(y: np.ndarray, live: np.ndarray, candidate: np.ndarray, config: RetrainConfig,
         w: np.ndarray | None = None) -> tuple[bool, str, dict[str, Any]]:
    """``(promote, reason, metrics)`` from the held-out labels, their weights and both models' scores."""
    n_pos, n_neg = int(y.sum()), int((y == 0).sum())
    metrics: dict[str, Any] = {"holdout_anomalies": n_pos, "holdout_normals": n_neg}
    if n_pos < config.min_positives or n_neg < config.min_negatives:
        return False, (f"too few held-out labels to validate: {n_pos} anomalies and {n_neg} normal "
                       f"(need {config.min_positives} and {config.min_negatives})"), metrics
    metrics.update(live_auc_pr=auc_pr(y, live, w), candidate_auc_pr=auc_pr(y, candidate, w))
    if w is not None and np.any(w > 1):
        metrics["audit_rows"] = int((w > 1).sum())
    metrics["lower_bound"] = bootstrap_lower_bound(y, live, candidate, config.confidence, config.bootstrap, config.seed, w)
    diff = metrics["candidate_auc_pr"] - metrics["live_auc_pr"]
    what = (f"held-out AUC-PR {metrics['candidate_auc_pr']:.4f} vs live {metrics['live_auc_pr']:.4f} "
            f"(difference {diff:+.4f}, {config.confidence:.0%} lower bound {metrics['lower_bound']:+.4f}, "
            f"margin {config.margin}; {n_pos} anomalies, {n_neg} normal)")
    if metrics["lower_bound"] >= -config.margin:
        return True, "not worse: " + what, metrics
    return False, "worse: " + what, metrics


def build_candidate(live: BaseDetector, config: RetrainConfig) -> BaseDetector:
    """An unfitted detector like ``live`` (same kind and config, so every registered detector
    refits), or Swift Hydra behind the same scaling and table options."""
    import copy

    from rlad.algorithms.registry import build_detector

    if not config.swift_hydra:
        return type(live)(copy.deepcopy(live.config), contamination=live.contamination)
    options = dict(config.swift_hydra_options)
    if live.kind == "scaled":
        return build_detector("scaled", {"detector": "swift_hydra", "options": options, "columns": list(live.config.columns),
                                         "table": dict(live.config.table)},
                              seed=config.seed, contamination=live.contamination)
    return build_detector("swift_hydra", options, seed=config.seed, contamination=live.contamination)


def needs_ray(workdir: str | Path, config: RetrainConfig) -> bool:
    """Whether the candidate's fit runs on Ray (Swift Hydra, DPLAN, residual RL)."""
    from rlad.algorithms.registry import RAY_DETECTORS, load_detector

    if config.swift_hydra:
        return True
    with ModelRegistry(workdir) as registry:
        live = registry.live()
        if live is None:
            return False
        detector = load_detector(registry.get(live)["checkpoint"])
    return getattr(detector.config, "detector", detector.kind) in RAY_DETECTORS


@dataclass
class Decision:
    action: str  # "promote", "refuse" or "skip" (nothing trained)
    reason: str
    version: int | None = None  # the candidate's version
    live: int | None = None  # the live version after the decision
    metrics: dict[str, Any] = field(default_factory=dict)


def new_labels(workdir: str | Path) -> int:
    """Feedback lines newer than the last retrain's (what ``--every N`` counts)."""
    with ModelRegistry(workdir) as registry:
        seen = max((v["metrics"].get("feedback_upto", 0) for v in registry.versions()), default=0)
    return sum(1 for line in all_feedback(workdir) if line["feedback_id"] > seen)


def retrain_once(workdir: str | Path, config: RetrainConfig = RetrainConfig(),
                 log: Callable[[str], None] = lambda _: None) -> Decision:
    """Build a candidate from the live version and the feedback, gate it, record the decision."""
    workdir = Path(workdir)
    with ModelRegistry(workdir) as registry:
        live_version = registry.live()
        if live_version is None:
            raise RetrainError(f"{workdir} has no live model version: start `rlad serve CHECKPOINT --workdir {workdir}` first")
        record = registry.get(live_version)
        if not record["training_data"] or not Path(record["training_data"]).is_file():
            raise RetrainError(f"live version {live_version} has no training rows on record: serve it with "
                               "--training-data (the table it was trained on)")
        X0, y0 = load_training_rows(record["training_data"])
        rows = LabelledRows.from_feedback(all_feedback(workdir))
        train, out = rows.split(config.holdout if config.gate else 0.0)
        y_out = rows.y[out]
        if config.gate and (y_out.sum() < config.min_positives or (y_out == 0).sum() < config.min_negatives):
            _, reason, metrics = gate(y_out, np.zeros(0), np.zeros(0), config)
            return Decision("skip", reason, live=live_version, metrics=metrics)
        from rlad.algorithms.registry import load_detector

        live = load_detector(record["checkpoint"])
        try:
            X_fb, X_out = as_model_input(live, rows.take(train), X0), as_model_input(live, rows.take(out), X0)
        except (KeyError, ValueError) as exc:
            raise RetrainError(f"feedback rows do not fit the training rows' columns: {exc}") from exc
        X, y = concat_rows(X0, X_fb), np.concatenate([y0, rows.y[train]])
        log(f"candidate: {'swift_hydra' if config.swift_hydra else live.kind} on {len(X0)} training rows + "
            f"{int(train.sum())} feedback rows ({int(rows.y[train].sum())} anomalies); {int(out.sum())} held out")
        started = time.time()
        candidate = build_candidate(live, config).fit(X, y)
        staged = candidate.save(workdir / "models" / f".candidate-{os.getpid()}-{time.time_ns()}.pt")
        metrics: dict[str, Any] = {"feedback_upto": rows.last_id, "train_rows": len(X), "fit_seconds": time.time() - started}
        if config.gate:
            promote, reason, gated = gate(y_out, live.decision_function(X_out), candidate.decision_function(X_out), config,
                                          rows.w[out])
            metrics.update(gated)
        else:
            promote, reason = True, "no validation gate"
        if promote and config.gate and config.refit_all and out.any():  # the recipe passed: fit it on every label
            X_all = concat_rows(X0, as_model_input(live, rows.rows, X0))
            y_all = np.concatenate([y0, rows.y])
            staged.unlink()
            candidate = build_candidate(live, config).fit(X_all, y_all)
            staged = candidate.save(workdir / "models" / f".candidate-{os.getpid()}-{time.time_ns()}.pt")
            X, y = X_all, y_all
            metrics.update(refit_all=True, train_rows=len(X))
        version = registry.register(staged, candidate.kind, parent=live_version, metrics=metrics, data_hash=data_hash(X, y),
                                    training_data=record["training_data"],
                                    note="swift_hydra rounds" if config.swift_hydra else "refit")
        staged.unlink()
        if promote and registry.live() != live_version:
            promote, reason = False, f"the live version changed during retraining (was {live_version}, now {registry.live()})"
        if promote:
            registry.promote(version, reason, metrics)
        else:
            registry.refuse(version, reason, metrics)
        return Decision("promote" if promote else "refuse", reason, version, registry.live(), metrics)
