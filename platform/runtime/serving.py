"""Detectors served by Ray Serve, and the scorers that environments call.

:class:`DetectorServer` loads a detector checkpoint and answers batched requests: concurrent
calls are merged by ``@serve.batch`` into one forward pass. Its ``user_config``
(``{"checkpoint": path, "version": n}``) swaps in new weights in place: a new model object is
built first and then replaces the old reference, so requests already running finish on the old
model and none fails. Checkpoint paths must be readable from every node (shared storage).

No request can fail another: each is screened on its own before it joins a batch
(:func:`screen_rows`: width, float32 range, the :class:`InputPolicy` for rows far outside the
training range), a merged batch that still raises is rescored request by request, and a request
whose output is not finite is rejected rather than reported as a number (fail closed).

Environments score rows through a *scorer*: a picklable callable ``X (n, d) -> P(anomaly) (n,)``.
:class:`ServeScorer` calls the Serve app; :class:`ServeScoring` is the Swift Hydra scoring strategy
that publishes each round's detector to it (in-process scoring is the library's default).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from rlad.algorithms.registry import load_detector

logger = logging.getLogger("ray.serve")


FLOAT32_MAX = float(np.finfo(np.float32).max)
POLICIES = ("reject", "flag")


@dataclass(frozen=True)
class InputPolicy:
    """What to do with rows far outside the training range, where a model's output means nothing
    (a Mamba-MoE turns 3.4e38 into NaN). A feature's accepted interval is its training
    ``[min - margin * span, max + margin * span]``; ``span`` is ``max - min``, or ``max(|min|, 1)``
    for a feature constant in training. ``margin=1`` accepts ADBench's test rows, which are
    MinMax-scaled by the training part to [0, 1] and clipped to [-1, 2].

    ``reject`` (default): 422 naming the first row and column outside. ``flag``: score such rows,
    mark them ``out_of_range`` and predict them anomalous."""

    out_of_range: str = "reject"
    margin: float = 1.0

    def __post_init__(self) -> None:
        if self.out_of_range not in POLICIES:
            raise ValueError(f"out_of_range must be one of {POLICIES}, got {self.out_of_range!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin}")

    def bounds(self, feature_range: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = feature_range
        span = np.where(hi > lo, hi - lo, np.maximum(np.maximum(np.abs(lo), np.abs(hi)), 1.0))
        return lo - self.margin * span, hi + self.margin * span


class Rejected(NamedTuple):
    """A request the replica refuses to score: an HTTP status and a message for the client."""

    status: int
    message: str


def screen_rows(X: np.ndarray, detector: Any, policy: InputPolicy | None) -> Rejected | np.ndarray:
    """Check one request on its own, before it joins a batch. Returns its ``out_of_range`` mask
    per row, or why it is rejected. ``policy=None`` skips the training-range check."""
    if X.ndim != 2 or X.shape[0] == 0:
        return Rejected(422, f"rows must form a non-empty 2-D array, got shape {X.shape}")
    if X.shape[1] != detector.n_features_in_:
        return Rejected(422, f"rows have {X.shape[1]} features, the model expects {detector.n_features_in_}")
    if X.dtype.kind not in "iuf":
        return Rejected(422, f"rows must be numbers, got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    bad = ~(np.abs(X) <= FLOAT32_MAX)  # NaN compares False: caught too
    if bad.any():
        i, j = np.argwhere(bad)[0]
        return Rejected(422, f"row {i}, column {j}: {float(X[i, j])!r} is not a finite float32 (|x| <= {FLOAT32_MAX:.4g}), "
                             "the precision the model computes in")
    outside = np.zeros(X.shape, dtype=bool)
    if policy is not None and detector.feature_range_ is not None:
        lo, hi = policy.bounds(detector.feature_range_)
        outside = (X < lo) | (X > hi)
        if outside.any() and policy.out_of_range == "reject":
            i, j = np.argwhere(outside)[0]
            return Rejected(422, f"row {i}, column {j}: {X[i, j]:.6g} is outside the accepted range [{lo[j]:.6g}, {hi[j]:.6g}] "
                                 f"(training range widened by margin {policy.margin:g} x its span); "
                                 "scale rows as at training time")
    return outside.any(axis=1)


def _score_requests(detector: Any, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(scores, proba)`` per request from one forward pass over the merged batch."""
    scores = detector.decision_function(np.concatenate(batches))
    proba = detector.proba_from_scores(scores)
    bounds = np.cumsum([len(b) for b in batches])[:-1]
    return list(zip(np.split(scores, bounds), np.split(proba, bounds)))


def score_isolated(detector: Any, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray] | Rejected]:
    """Score a merged batch so that no request can fail another: if the merged pass raises, each
    request is scored on its own and only those that raise fail. A request whose scores or
    probabilities are not finite is rejected (fail closed: never reported as a number or normal)."""
    try:
        results: list[Any] = _score_requests(detector, batches)
    except Exception:
        results = []
        for X in batches:
            try:
                results += _score_requests(detector, [X])
            except ValueError as exc:
                results.append(Rejected(422, f"rows could not be scored: {exc}"))
            except Exception as exc:  # a model bug that this input triggers: fail this request only
                logger.exception("scoring a request of shape %s failed", X.shape)
                results.append(Rejected(500, f"scoring failed: {type(exc).__name__}"))
    return [_fail_closed(r) for r in results]


def _fail_closed(result: tuple[np.ndarray, np.ndarray] | Rejected) -> tuple[np.ndarray, np.ndarray] | Rejected:
    if isinstance(result, Rejected):
        return result
    scores, proba = result
    broken = ~(np.isfinite(scores) & np.isfinite(proba))
    if broken.any():
        rows = np.flatnonzero(broken)
        return Rejected(422, f"row(s) {rows[:10].tolist()} could not be scored: the model's output is not finite "
                             "(values outside what it can represent); nothing in this request was scored")
    return result


@serve.deployment(max_ongoing_requests=256, logging_config={"enable_access_log": False})
class DetectorServer:
    """Serve replica around one detector checkpoint, hot-swappable through ``user_config``."""

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Called by Serve at start and on every ``user_config`` change (no replica restart)."""
        detector = load_detector(config["checkpoint"])  # build first: a failure keeps the old model
        self.detector, self.version = detector, int(config["version"])

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def _score_batch(self, batches: list[np.ndarray]) -> list[dict[str, Any]]:
        detector, version = self.detector, self.version  # one model for the whole batch, even mid-swap
        return [
            {"error": r.message, "status": r.status, "version": version} if isinstance(r, Rejected) else
            {"scores": r[0], "proba": r[1], "threshold": detector.threshold_, "version": version, "batched_requests": len(batches)}
            for r in score_isolated(detector, batches)
        ]

    async def __call__(self, X: np.ndarray, policy: InputPolicy | None = None) -> dict[str, Any]:
        """``X`` (n, d) -> ``{"scores", "proba", "threshold", "version", "batched_requests", "out_of_range"}``,
        or ``{"error", "status", "version"}`` when the request is rejected (and no other is)."""
        screened = screen_rows(np.asarray(X), self.detector, policy)
        if isinstance(screened, Rejected):
            return {"error": screened.message, "status": screened.status, "version": self.version}
        out = await self._score_batch(np.asarray(X, dtype=np.float32))
        return out if "error" in out else {**out, "out_of_range": screened}

    def info(self) -> dict[str, Any]:
        feature_range = self.detector.feature_range_
        return {"kind": self.detector.kind, "n_features": self.detector.n_features_in_, "version": self.version,
                "feature_range": None if feature_range is None else [r.tolist() for r in feature_range],
                "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


@dataclass(frozen=True)
class ServeOptions:
    app_name: str = "detector"
    num_replicas: int = 1  # fixed count, or the minimum when max_replicas is set
    max_replicas: int | None = None  # autoscale between num_replicas and this on load
    target_ongoing_requests: float = 8.0  # per replica, what the autoscaler aims for
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # custom resources, to pin replicas to nodes
    route_prefix: str | None = None  # e.g. "/detector": also serve the HTTP scoring API there
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    input_policy: InputPolicy = InputPolicy()  # for HTTP requests
    api_key_sha256: str | None = None  # HTTP requests must carry the key whose SHA-256 hex digest this is

    def __post_init__(self) -> None:
        if self.num_replicas < 1 or (self.max_replicas is not None and self.max_replicas < self.num_replicas):
            raise ValueError(f"need 1 <= replicas <= max replicas, got {self.num_replicas} and {self.max_replicas}")

    def replicas(self) -> dict[str, Any]:
        """``num_replicas`` or ``autoscaling_config`` options of the deployment."""
        if self.max_replicas is None:
            return {"num_replicas": self.num_replicas}
        return {"autoscaling_config": {"min_replicas": self.num_replicas, "max_replicas": self.max_replicas,
                                       "target_ongoing_requests": self.target_ongoing_requests}}


def deploy_detector(checkpoint: str, options: ServeOptions = ServeOptions(), version: int = 0) -> DeploymentHandle:
    """Start (or update in place) the Serve app ``options.app_name`` serving ``checkpoint``.
    Returns the handle of the :class:`DetectorServer` deployment."""
    # A fixed code version makes Serve treat a changed ``user_config`` as an in-place
    # ``reconfigure`` of the running replicas; the imperative API would otherwise draw a random
    # version per ``serve.run`` and replace every replica. (``_internal`` is the only way to pass
    # it there; ray is pinned to 2.60.0.)
    detector = DetectorServer.options(
        version="rlad-detector-server-1",
        _internal=True,
        **options.replicas(),
        ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus, "resources": options.resources},
        user_config={"checkpoint": str(checkpoint), "version": version},
    ).bind()
    if options.route_prefix is None:  # handles only: no HTTP proxy actor to start (slow on a loaded machine)
        serve.start(http_options={"location": "NoServer"})
        return serve.run(detector, name=options.app_name, route_prefix=None)
    serve.start(http_options={"host": options.http_host, "port": options.http_port})
    if not serve.status().proxies:  # Serve was already running here, started for handles only
        raise RuntimeError("Ray Serve already runs in this cluster without an HTTP proxy (a deployment for handles "
                           "only, such as Swift Hydra's ServeScoring, started it): call serve.shutdown() first or "
                           "serve from another cluster")
    from rlad.platform.runtime.http_api import ScoringAPI

    ingress = ScoringAPI.options(version="rlad-scoring-api-1", _internal=True, ray_actor_options={"num_cpus": 0}).bind(
        detector, policy=options.input_policy, api_key_sha256=options.api_key_sha256)
    serve.run(ingress, name=options.app_name, route_prefix=options.route_prefix)
    return serve.get_deployment_handle("DetectorServer", app_name=options.app_name)


class ServeScorer:
    """Scoring through the Serve app ``app_name``; one request per call (callers batch rows).

    ``by_reference=False`` (default) sends requests and results over the replica's gRPC channel
    instead of Ray object references (``handle.options(_by_reference=False)``; ray is pinned): the
    Serve-backed synthesis env ran ~28% more walker steps/s at 1, 8 and 32 walkers per call
    (``benchmarks/bench_swift_hydra.py --skip-auc --env-steps 600`` prints both ways)."""

    def __init__(self, app_name: str = "detector", by_reference: bool = False) -> None:
        self.app_name, self.by_reference = app_name, by_reference
        self._handle = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if self._handle is None:
            self._handle = serve.get_app_handle(self.app_name).options(_by_reference=self.by_reference)
        out = self._handle.remote(X).result()
        if "error" in out:
            raise ValueError(f"the detector refused to score these rows: {out['error']}")
        return out["proba"]


@dataclass
class ServeScoring:
    """Swift Hydra scoring strategy: the detector is served by Ray Serve (``@serve.batch``), env
    runners on any node share it, and each round's detector is hot-swapped in place."""

    app_name: str = "swift-hydra-detector"
    num_cpus: float = 0.5
    resources: dict[str, float] = field(default_factory=dict)  # e.g. {"detector_node": 1}

    def publish(self, detector: Any, checkpoint: Path, version: int) -> ServeScorer:
        deploy_detector(str(checkpoint), ServeOptions(app_name=self.app_name, num_cpus=self.num_cpus, resources=self.resources),
                        version=version)
        return ServeScorer(self.app_name)
