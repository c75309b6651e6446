"""What a live service tells its operators: Prometheus ``/metrics`` and ``/drift``.

``/metrics`` (prometheus-client text format, its own registry in the ingress process):

- ``rlad_requests_total{route, status}`` and ``rlad_rejected_requests_total{route, reason}`` (every
  4xx/503 by why: api_key, too_large, validation, width, out_of_range, not_float32, non_finite_output,
  unknown_id, draining, ...);
- ``rlad_request_latency_seconds{route}`` (histogram, as the ingress sees it);
- ``rlad_live_version`` (the registry's) and ``rlad_served_version`` (the last that answered);
- ``rlad_feedback_total{label}`` and ``rlad_scored_rows_in_window`` (from the database, so they
  survive restarts);
- ``rlad_feature_psi{feature}`` and ``rlad_score_psi``: drift of the recent scored rows and scores
  against the live version's training profile (what ``/drift`` answers, :mod:`.triage`), at most
  ``DRIFT_MAX_AGE_S`` old.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from rlad.core.profile import psi

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_REASONS = {401: "api_key", 404: "not_found", 405: "method", 413: "too_large", 422: "validation", 503: "draining"}
DRIFT_MAX_AGE_S = 10.0  # a scrape recomputes drift when the last one is older


def reject_reason(status: int, message: str) -> str:
    """A short reason for a 4xx from the detector's message (label of ``rlad_rejected_requests_total``)."""
    for needle, reason in (("the model expects", "width"), ("outside the accepted range", "out_of_range"),
                           ("float32", "not_float32"), ("could not be scored", "non_finite_output"),
                           ("exceed the limit", "too_many_rows"), ("no scored row", "unknown_id")):
        if needle in message:
            return reason
    return STATUS_REASONS.get(status, str(status))


class ServiceMetrics:
    """Counters the ingress middleware updates, and the gauges read from the database at scrape."""

    def __init__(self, store: Any = None, registry_db: Any = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rlad_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry)
        self.rejected = Counter("rlad_rejected_requests", "Requests answered 4xx or 503, by reason", ["route", "reason"],
                                registry=self.registry)
        self.latency = Histogram("rlad_request_latency_seconds", "Time to answer, in the ingress", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.served_version = Gauge("rlad_served_version", "Model version of the last scoring answer", registry=self.registry)
        self.store, self.registry_db = store, registry_db
        self.drift: dict[str, Any] | None = None
        if store is not None:
            self.registry.register(_DatabaseCollector(self))

    def observe(self, route: str, status: int, seconds: float, reason: str | None = None) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400 and status != 500:
            self.rejected.labels(route, reason or STATUS_REASONS.get(status, str(status))).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _DatabaseCollector:
    """Feedback counts, window size, live version and the last drift, read when scraped."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def collect(self):
        counts = self.metrics.store.counts()
        feedback = CounterMetricFamily("rlad_feedback", "Analyst labels stored", labels=["label"])
        for label in ("anomaly", "normal"):
            feedback.add_metric([label], counts[label])
        yield feedback
        yield GaugeMetricFamily("rlad_scored_rows_in_window", "Scored rows kept for feedback by id",
                                value=counts["scored_in_window"])
        live = self.metrics.registry_db.live() if self.metrics.registry_db is not None else None
        yield GaugeMetricFamily("rlad_live_version", "Live version in the model registry", value=-1 if live is None else live)
        drift = self.metrics.drift
        if drift is not None:
            features = GaugeMetricFamily("rlad_feature_psi", "PSI of recent scored rows against training, per feature",
                                         labels=["feature"])
            for name, value in drift["psi"].items():
                features.add_metric([name], value)
            yield features
            hist = drift["score_hist"]
            if sum(hist["recent"]) > 0 and sum(hist["training"]) > 0:
                yield GaugeMetricFamily("rlad_score_psi", "PSI of recent scores against training scores",
                                        value=psi(np.asarray(hist["training"]), np.asarray(hist["recent"])))
