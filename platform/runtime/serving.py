"""Detectors served by Ray Serve, and the scorers that environments call.

:class:`DetectorServer` loads a detector checkpoint and answers batched requests: concurrent
calls are merged by ``@serve.batch`` into one forward pass. Its ``user_config``
(``{"checkpoint": path, "version": n}``) swaps in new weights in place: a new model object is
built first and then replaces the old reference, so requests already running finish on the old
model and none fails. Checkpoint paths must be readable from every node (shared storage).

No request can fail another: each is screened on its own before it joins a batch
(:mod:`~rlad.platform.runtime.screening`: width, float32 range, the ``InputPolicy`` for rows far
outside the training range), a merged batch that still raises is rescored request by request, and a request
whose output is not finite is rejected rather than reported as a number (fail closed).

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
from rlad.platform.runtime.feedback import DEFAULT_WINDOW
from rlad.platform.runtime.live_service import LiveVersionPoller
from rlad.platform.runtime.screening import InputPolicy, Rejected, encode_rows, expected_columns, score_isolated, screen_rows

#: Requests one replica holds at once (running or queued for a batch), Serve's per-replica cap;
#: more wait in the caller. Well above the 64 concurrent clients of ``bench_serve_load.py``.
MAX_ONGOING_REQUESTS = 256
#: Requests ``@serve.batch`` merges into one forward pass (cost per row:
#: ``benchmarks/results/serve_load.csv``).
MAX_BATCH_SIZE = 64
#: How long a batch waits for more requests: not at all; a call takes what queued meanwhile.
BATCH_WAIT_S = 0.0


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, logging_config={"enable_access_log": False})
class DetectorServer:
    """Serve replica around one detector checkpoint, hot-swappable through ``user_config``, and,
    with a ``workdir`` in it, following the live version of that service's model registry."""

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Called by Serve at start and on every ``user_config`` change (no replica restart)."""
        detector = load_detector(config["checkpoint"])  # build first: a failure keeps the old model
        self._swap(detector, int(config["version"]))
        if config.get("workdir") and getattr(self, "_poller", None) is None:
            self._poller = LiveVersionPoller(config["workdir"], load_detector, self._swap, current=self.version)
        elif getattr(self, "_poller", None) is not None:
            self._poller.current = self.version

    def _swap(self, detector: Any, version: int) -> None:
        self._model = (detector, version)  # one reference: a reader never pairs a model with another's version

    @property
    def detector(self) -> Any:
        return self._model[0]

    @property
    def version(self) -> int:
        return self._model[1]

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def _score_batch(self, batches: list[np.ndarray]) -> list[dict[str, Any]]:
        detector, version = self._model  # one model for the whole batch, even mid-swap
        return [
            {"error": r.message, "status": r.status, "version": version} if isinstance(r, Rejected) else
            {"scores": r[0], "proba": r[1], "threshold": detector.threshold_, "version": version, "batched_requests": len(batches)}
            for r in score_isolated(detector, batches)
        ]

    async def __call__(self, X: np.ndarray, policy: InputPolicy | None = None) -> dict[str, Any]:
        """``X`` (n, d) -> ``{"scores", "proba", "threshold", "version", "batched_requests", "out_of_range"}``,
        or ``{"error", "status", "version"}`` when the request is rejected (and no other is)."""
        for _ in range(3):  # a swap between encoding and the batch: encode again for the new model
            detector, version = self._model
            encoded = encode_rows(detector, X)
            if isinstance(encoded, Rejected):
                return {"error": encoded.message, "status": encoded.status, "version": version}
            screened = screen_rows(np.asarray(encoded), detector, policy)
            if isinstance(screened, Rejected):
                return {"error": screened.message, "status": screened.status, "version": version}
            out = await self._score_batch(np.asarray(encoded, dtype=np.float32))
            if out["version"] == version:
                break
        return out if "error" in out else {**out, "out_of_range": screened}

    def _encoded(self, rows: list[Any]) -> np.ndarray | Rejected:
        """Stored rows as sent (arrays, or objects by column name) as the numbers the model profiles."""
        if not rows:
            return np.empty((0, self.detector.n_features_in_))
        if all(isinstance(r, list) for r in rows) and getattr(self.detector, "preprocessor", None) is None:
            return np.asarray(rows, dtype=np.float64)
        parts = []
        for group in ([r for r in rows if isinstance(r, dict)], [r for r in rows if not isinstance(r, dict)]):
            if group:
                enc = encode_rows(self.detector, group if isinstance(group[0], dict) else np.asarray(group, dtype=object))
                if isinstance(enc, Rejected):
                    return enc
                parts.append(np.asarray(enc, dtype=np.float64))
        return np.vstack(parts)

    def explain(self, row: list[Any] | dict[str, Any]) -> dict[str, Any]:
        """Why ``row`` scores as it does (training-profile deviations, ``explain()`` attributes)."""
        from rlad.platform.runtime.triage import explain_row

        X = self._encoded([row])
        if isinstance(X, Rejected):
            return {"features": None, "attributes": None, "error": X.message, "version": self.version}
        return {**explain_row(self.detector, X[0].tolist()), "version": self.version}

    def drift(self, rows: list[Any], scores: np.ndarray) -> dict[str, Any]:
        """PSI per feature of recent rows and the histogram of their ``scores``, against training."""
        from rlad.platform.runtime.triage import drift

        X = self._encoded(rows)
        return drift(self.detector, np.empty((0, 0)) if isinstance(X, Rejected) else X, scores)

    def info(self) -> dict[str, Any]:
        feature_range = self.detector.feature_range_
        return {"kind": self.detector.kind, "n_features": self.detector.n_features_in_, "version": self.version,
                "feature_range": None if feature_range is None else [r.tolist() for r in feature_range],
                "columns": expected_columns(self.detector),
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
    workdir: str | None = None  # the service's folder (rlad.db: scored rows, feedback, model registry); None: none kept
    window: int = DEFAULT_WINDOW  # scored rows kept for feedback by id (the newest this many)

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
        user_config={"checkpoint": str(checkpoint), "version": version, "workdir": options.workdir},
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
        detector, policy=options.input_policy, api_key_sha256=options.api_key_sha256, workdir=options.workdir,
        window=options.window)
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
