"""Detectors served by Ray Serve, and the scorers that environments call.

:class:`DetectorServer` loads a detector checkpoint and answers batched requests: concurrent
calls are merged by ``@serve.batch`` into one forward pass. Its ``user_config``
(``{"checkpoint": path, "version": n}``) swaps in new weights in place: a new model object is
built first and then replaces the old reference, so requests already running finish on the old
model and none fails. Checkpoint paths must be readable from every node (shared storage).

Environments score rows through a *scorer*: a picklable callable ``X (n, d) -> P(anomaly) (n,)``.
:class:`ServeScorer` calls the Serve app; :class:`ServeScoring` is the Swift Hydra scoring strategy
that publishes each round's detector to it (in-process scoring is the library's default).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from rlad.algorithms.registry import load_detector


@serve.deployment(max_ongoing_requests=256, logging_config={"enable_access_log": False})
class DetectorServer:
    """Serve replica around one detector checkpoint, hot-swappable through ``user_config``."""

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Called by Serve at start and on every ``user_config`` change (no replica restart)."""
        detector = load_detector(config["checkpoint"])  # build first: a failure keeps the old model
        self.detector, self.version = detector, int(config["version"])

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _score_batch(self, batches: list[np.ndarray]) -> list[dict[str, Any]]:
        detector, version = self.detector, self.version  # one model for the whole batch, even mid-swap
        X = np.concatenate(batches)
        scores = detector.decision_function(X)
        proba = detector.proba_from_scores(scores)  # one forward pass for both
        bounds = np.cumsum([len(b) for b in batches])[:-1]
        return [
            {"scores": s, "proba": p, "threshold": detector.threshold_, "version": version, "batched_requests": len(batches)}
            for s, p in zip(np.split(scores, bounds), np.split(proba, bounds))
        ]

    async def __call__(self, X: np.ndarray) -> dict[str, Any]:
        """``X`` (n, d) -> ``{"scores", "proba", "threshold", "version", "batched_requests"}``."""
        return await self._score_batch(np.asarray(X, dtype=np.float32))

    def info(self) -> dict[str, Any]:
        return {"kind": self.detector.kind, "n_features": self.detector.n_features_in_, "version": self.version,
                "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


@dataclass(frozen=True)
class ServeOptions:
    app_name: str = "detector"
    num_replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # custom resources, to pin replicas to nodes
    route_prefix: str | None = None  # e.g. "/detector": also serve the HTTP scoring API there
    http_host: str = "127.0.0.1"
    http_port: int = 8000


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
        num_replicas=options.num_replicas,
        ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus, "resources": options.resources},
        user_config={"checkpoint": str(checkpoint), "version": version},
    ).bind()
    serve.start(http_options={"host": options.http_host, "port": options.http_port})
    if options.route_prefix is None:
        return serve.run(detector, name=options.app_name, route_prefix=None)
    from rlad.platform.runtime.http_api import ScoringAPI

    ingress = ScoringAPI.options(version="rlad-scoring-api-1", _internal=True, ray_actor_options={"num_cpus": 0}).bind(detector)
    serve.run(ingress, name=options.app_name, route_prefix=options.route_prefix)
    return serve.get_deployment_handle("DetectorServer", app_name=options.app_name)


class ServeScorer:
    """Scoring through the Serve app ``app_name``; one request per call (callers batch rows)."""

    def __init__(self, app_name: str = "detector") -> None:
        self.app_name = app_name
        self._handle = None

    def __getstate__(self) -> dict[str, Any]:
        return {"app_name": self.app_name, "_handle": None}

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if self._handle is None:
            self._handle = serve.get_app_handle(self.app_name)
        return self._handle.remote(X).result()["proba"]




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
