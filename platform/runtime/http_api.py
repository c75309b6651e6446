"""HTTP scoring API on Ray Serve: JSON rows in, anomaly scores out, OpenAPI at ``/openapi.json``.

Every request is checked on its own before it can join a batch, so bad input gets a 4xx with a
clear message and cannot disturb the model or other clients' requests:

- 401 without the API key, when one is set (``X-API-Key`` header, compared in constant time
  against the key's SHA-256; the key itself never reaches Serve);
- 413 for bodies over ``MAX_BODY_BYTES`` (FastAPI's ``max_body_size``: declared by content-length or
  streamed, refused before anything else, unread) or more than ``max_rows`` rows;
- 422 for malformed JSON, non-numbers, NaN/inf, values beyond float32, empty or ragged input, the
  wrong row width, values far outside the training range (the ``InputPolicy``, see
  :mod:`~rlad.platform.runtime.screening`), and rows whose scores come out non-finite (fail closed).

Requests are forwarded to :class:`~rlad.platform.runtime.serving.DetectorServer` (batched,
hot-swappable). Serve's HTTP proxy binds to 127.0.0.1 unless told otherwise.
"""

import asyncio
import hashlib
import hmac
import math
import time
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from rlad.platform.runtime.screening import InputPolicy
from rlad.platform.runtime.service_metrics import CONTENT_TYPE, DRIFT_MAX_AGE_S, ServiceMetrics, reject_reason
from rlad.platform.runtime.feedback import DEFAULT_WINDOW, FeedbackStore, UnknownRow
from rlad.platform.runtime.lifecycle import Drain
from rlad.platform.runtime.model_registry import ModelRegistry
from rlad.platform.runtime.triage import ui_dir

UI_FILES = {"": ("index.html", "text/html"), "index.html": ("index.html", "text/html"),
            "triage.css": ("triage.css", "text/css"), "triage.js": ("triage.js", "text/javascript")}

MAX_ROWS = 10_000
RETRIES = 5
MAX_BODY_BYTES = 8 * 1024 * 1024
API_KEY_HEADER = "X-API-Key"

api = FastAPI(title="rlad scoring API", version="1.1", max_body_size=MAX_BODY_BYTES,
              description="Score tabular rows with the served anomaly detector (higher score = more anomalous). "
                          f"When the server has an API key, send it in the {API_KEY_HEADER} header.")


def hash_api_key(key: str) -> str:
    """What the server keeps of an API key: its SHA-256 hex digest."""
    return hashlib.sha256(key.encode()).hexdigest()


class ScoreRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # numbers only: no "1.5" strings, no booleans

    rows: list[list[float]] | list[dict[str, float | str | bool | None]] = Field(
        ..., description="Rows as arrays of numbers in the model's column order (GET /info), or as objects keyed by "
                         "column name (any order; extra keys ignored; strings for categories and dates, null for a gap).",
        examples=[[[0.1, 0.5, 0.3]], [{"amount": 12.5, "merchant": "fuel", "ts": "2026-01-02 10:00:00"}]])
    ids: list[str] | None = Field(None, description="Optional id per row (kept with the row for feedback); "
                                                    "generated when absent")

    @field_validator("rows")
    @classmethod
    def _finite_and_rectangular(cls, rows: list[list[float]] | list[dict[str, Any]]) -> list[list[float]] | list[dict[str, Any]]:
        if not rows:
            raise ValueError("rows is empty: send at least one row")
        if isinstance(rows[0], dict):
            for i, row in enumerate(rows):
                if any(isinstance(v, float) and not math.isfinite(v) for v in row.values()):
                    raise ValueError(f"row {i} contains NaN or infinite values")
            return rows
        width = len(rows[0])
        for i, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(f"row {i} has {len(row)} values, row 0 has {width}")
            if not all(math.isfinite(v) for v in row):
                raise ValueError(f"row {i} contains NaN or infinite values")
        return rows


class ScoreResponse(BaseModel):
    scores: list[float] = Field(..., description="Anomaly score per row (higher = more anomalous); always finite")
    proba: list[float] = Field(..., description="P(anomaly) per row; always finite")
    predictions: list[int] = Field(..., description="1 where score > threshold or the row is out of range")
    out_of_range: list[bool] = Field(..., description="Rows far outside the training range (only with the 'flag' policy)")
    threshold: float
    version: int = Field(..., description="Version of the model that answered")
    ids: list[str] = Field(..., description="Id per row (given or generated): send it back with feedback")


class FeedbackRequest(BaseModel):
    id: str | None = Field(None, description="Id of a scored row")
    row: list[float] | None = Field(None, description="The row's values, instead of an id")
    label: str = Field(..., description="anomaly or normal")
    analyst: str = Field("", max_length=200, description="Who labelled it")
    weight: float = Field(1.0, ge=1.0, allow_inf_nan=False,
                          description="Rows this label stands for in the retraining gate: 1 for a flagged row the analyst "
                                      "reviewed; N/m for one of m rows drawn at random from N unflagged ones (an audit)")


class ModelInfo(BaseModel):
    kind: str
    n_features: int
    version: int
    out_of_range: str = Field(..., description="Policy for rows far outside the training range: reject or flag")
    accepted_low: list[float] | None = Field(..., description="Per-feature lower bound of that range (None: unknown, no check)")
    accepted_high: list[float] | None = Field(..., description="Per-feature upper bound of that range")
    columns: list[dict[str, str]] | None = Field(None, description="Expected schema: column names (keys of object rows, "
                                                                   "order of array rows) and types learnt at fit time")


class ErrorResponse(BaseModel):
    detail: Any


@api.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with where and what, without echoing the input (it may hold NaN, which JSON cannot carry)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


@api.middleware("http")
async def require_api_key(request: Request, call_next):
    """Without the key nothing is read or parsed. Comparing digests of equal
    length in constant time leaks neither the key nor its length."""
    expected = getattr(request.app.state, "api_key_sha256", None)
    if expected is not None and not _is_page(request):
        given = request.headers.get(API_KEY_HEADER, "").encode("latin-1")
        if not hmac.compare_digest(hashlib.sha256(given).hexdigest(), expected):
            return JSONResponse({"detail": f"missing or wrong API key: send it in the {API_KEY_HEADER} header"},
                                status_code=401, headers={"WWW-Authenticate": API_KEY_HEADER})
    return await call_next(request)


ROUTES = ("/score", "/feedback", "/recent", "/audit", "/explain", "/models", "/metrics", "/drift", "/info", "/openapi.json", "/docs")


@api.middleware("http")
async def observe_and_drain(request: Request, call_next):
    """Outermost: counts and times every request (401s too) and, once the service drains on
    SIGTERM/SIGINT, answers new ones 503 while those already accepted finish."""
    drain, metrics = getattr(request.app.state, "drain", None), getattr(request.app.state, "metrics", None)
    path, root = request.url.path, request.scope.get("root_path", "")
    route = path[len(root):] if root and path.startswith(root) else path
    route = route if route in ROUTES else "ui" if route.startswith("/ui") else "other"
    started = time.perf_counter()
    if drain is not None and drain.draining:
        response = JSONResponse({"detail": "the service is shutting down: retry on another replica"}, status_code=503,
                                headers={"Retry-After": "5", "Connection": "close"})
    else:
        if drain is not None:
            drain.in_flight += 1
        try:
            response = await call_next(request)
        finally:
            if drain is not None:
                drain.in_flight -= 1
    if metrics is not None:
        metrics.observe(route, response.status_code, time.perf_counter() - started, getattr(request.state, "reason", None))
    return response


def _is_page(request: Request) -> bool:
    """The triage page's static files load without the key (they hold no data; the page asks for
    the key and sends it with every data call)."""
    parts = request.url.path.rstrip("/").split("/")
    return request.method == "GET" and (parts[-1] == "ui" or (len(parts) > 1 and parts[-2] == "ui"))


@serve.deployment(max_ongoing_requests=256, logging_config={"enable_access_log": False})
@serve.ingress(api)
class ScoringAPI:
    def __init__(self, detector: DeploymentHandle, max_rows: int = MAX_ROWS, policy: InputPolicy = InputPolicy(),
                 api_key_sha256: str | None = None, workdir: str | None = None, window: int = DEFAULT_WINDOW) -> None:
        self.detector, self.max_rows, self.policy = detector, max_rows, policy
        self.store = None if workdir is None else FeedbackStore(workdir, window)
        self.registry = None if workdir is None else ModelRegistry(workdir)
        self._n_features: int | None = None
        api.state.drain = self.drain_state = Drain()
        api.state.metrics = self.metrics = ServiceMetrics(self.store, self.registry)
        api.state.api_key_sha256 = api_key_sha256  # one ingress per replica process

    @api.post("/score", response_model=ScoreResponse,
              responses={401: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    async def score(self, request: ScoreRequest, http: Request) -> ScoreResponse | JSONResponse:
        if request.ids is not None and len(request.ids) != len(request.rows):
            http.state.reason = "ids"
            return JSONResponse({"detail": f"{len(request.ids)} ids for {len(request.rows)} rows"}, status_code=422)
        if len(request.rows) > self.max_rows:
            http.state.reason = "too_many_rows"
            return JSONResponse({"detail": f"{len(request.rows)} rows exceed the limit of {self.max_rows} per request"}, status_code=413)
        rows = request.rows
        out = await self._score_with_retry(np.asarray(rows, dtype=np.float64) if isinstance(rows[0], list) else rows)
        if "error" in out:
            http.state.reason = reject_reason(out["status"], out["error"])
            return JSONResponse({"detail": out["error"]}, status_code=out["status"])
        self.metrics.served_version.set(out["version"])
        flagged = out["out_of_range"]
        ids = request.ids or [uuid.uuid4().hex for _ in request.rows]
        if self.store is not None:
            await asyncio.to_thread(self.store.add_scored, ids, request.rows, out["scores"], out["proba"], out["version"])
        return ScoreResponse(ids=ids, scores=out["scores"].tolist(), proba=out["proba"].tolist(),
                             predictions=((out["scores"] > out["threshold"]) | flagged).astype(int).tolist(),
                             out_of_range=flagged.tolist(), threshold=out["threshold"], version=out["version"])

    async def _score_with_retry(self, X: np.ndarray | list[dict[str, Any]]) -> dict[str, Any]:
        """Scoring is idempotent: a request caught on a replica that dies is sent again, and
        Serve routes it to a live replica (its controller replaces the dead one)."""
        for attempt in range(RETRIES - 1):
            try:
                return await self.detector.remote(X, self.policy)
            except (RayActorError, ActorDiedError, ActorUnavailableError):
                await asyncio.sleep(0.2 * (attempt + 1))
        return await self.detector.remote(X, self.policy)

    @api.get("/info", response_model=ModelInfo, responses={401: {"model": ErrorResponse}})
    async def info(self) -> ModelInfo:
        info = await self.detector.info.remote()
        low = high = None
        if info["feature_range"] is not None:
            low, high = (b.tolist() for b in self.policy.bounds(tuple(np.asarray(r) for r in info["feature_range"])))
        return ModelInfo(kind=info["kind"], n_features=info["n_features"], version=info["version"],
                         out_of_range=self.policy.out_of_range, accepted_low=low, accepted_high=high,
                         columns=info.get("columns"))

    # -- the triage page, feedback and the model registry -------------------------------------------
    def _need_store(self) -> JSONResponse | None:
        if self.store is None:
            return JSONResponse({"detail": "this server keeps no scored rows (start it with a workdir)"}, status_code=404)
        return None

    @api.get("/ui", include_in_schema=False, response_model=None)
    async def ui_root(self, request: Request) -> RedirectResponse:
        return RedirectResponse(str(request.url.path).rstrip("/") + "/")

    @api.get("/ui/{name:path}", include_in_schema=False, response_model=None)
    async def ui_file(self, name: str) -> FileResponse | JSONResponse:
        if name not in UI_FILES:
            return JSONResponse({"detail": f"no such file: {name}"}, status_code=404)
        file, media = UI_FILES[name]
        return FileResponse(ui_dir() / file, media_type=media, headers={"Cache-Control": "no-cache"})

    @api.get("/recent", response_model=None, responses={401: {"model": ErrorResponse}})
    async def recent(self, limit: int = 50, offset: int = 0, min_score: float | None = None,
                     since: float | None = None, labelled: str = "any") -> dict[str, Any] | JSONResponse:
        """Scored rows, highest score first, one page at a time (``limit`` <= 500, ``offset``)."""
        if (missing := self._need_store()) is not None:
            return missing
        if not 1 <= limit <= 500 or offset < 0 or labelled not in ("yes", "no", "any"):
            return JSONResponse({"detail": "need 1 <= limit <= 500, offset >= 0, labelled in yes|no|any"}, status_code=422)
        return await asyncio.to_thread(self.store.recent, limit, offset, min_score, since, labelled)

    @api.get("/audit", response_model=None, responses={401: {"model": ErrorResponse}})
    async def audit(self, n: int = 10, below: float | None = None) -> dict[str, Any] | JSONResponse:
        """``n`` unlabelled rows drawn at random (scoring under ``below``), each to be labelled with
        the returned ``weight`` (rows it stands for): the retraining gate's view of what was missed."""
        if (missing := self._need_store()) is not None:
            return missing
        if not 1 <= n <= 500:
            return JSONResponse({"detail": "need 1 <= n <= 500"}, status_code=422)
        return await asyncio.to_thread(self.store.audit, n, below)

    @api.post("/feedback", response_model=None, status_code=201,
              responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    async def post_feedback(self, request: FeedbackRequest, http: Request) -> dict[str, int] | JSONResponse:
        """An analyst's label for a scored row (by id, or by its values); committed before the 201."""
        if (missing := self._need_store()) is not None:
            return missing
        if (request.id is None) == (request.row is None):
            http.state.reason = "id_or_row"
            return JSONResponse({"detail": "send either the row's id or its values in row"}, status_code=422)
        if request.row is not None and self._n_features is None:
            self._n_features = (await self.detector.info.remote())["n_features"]
        try:
            fid = await asyncio.to_thread(self.store.add_feedback, request.label, request.analyst, request.id,
                                          request.row, self._n_features, request.weight)
        except UnknownRow as exc:
            http.state.reason = "unknown_id"
            return JSONResponse({"detail": exc.args[0]}, status_code=404)
        except ValueError as exc:
            http.state.reason = "label" if "label" in str(exc) else "row"
            return JSONResponse({"detail": str(exc)}, status_code=422)
        return {"feedback_id": fid}

    @api.get("/feedback", response_model=None, responses={401: {"model": ErrorResponse}})
    async def get_feedback(self, limit: int = 100) -> dict[str, Any] | JSONResponse:
        if (missing := self._need_store()) is not None:
            return missing
        return {"rows": await asyncio.to_thread(self.store.feedback, max(1, min(limit, 1000)))}

    @api.get("/explain", response_model=None, responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})
    async def explain(self, id: str) -> dict[str, Any] | JSONResponse:
        """Why the scored row ``id`` was flagged: top features by z-score against training, with their
        training quantile, and the detector's anomalous attributes where it has ``explain()``."""
        if (missing := self._need_store()) is not None:
            return missing
        found = await asyncio.to_thread(self.store.get, id)
        if found is None:
            return JSONResponse({"detail": f"no scored row with id {id!r}"}, status_code=404)
        return {"id": id, "score": found["score"], **await self.detector.explain.remote(found["row"])}

    @api.get("/drift", response_model=None, responses={401: {"model": ErrorResponse}})
    async def drift(self) -> dict[str, Any] | JSONResponse:
        """PSI per feature of the newest scored rows, and their score histogram, against training."""
        if (missing := self._need_store()) is not None:
            return missing
        return await self._drift()

    async def _drift(self) -> dict[str, Any]:
        rows, scores = await asyncio.to_thread(self.store.recent_rows)
        self.metrics.drift = report = await self.detector.drift.remote(rows, scores)
        self._drift_ts = time.monotonic()
        return report

    @api.get("/metrics", response_class=Response, responses={401: {"model": ErrorResponse}})
    async def prometheus(self) -> Response:
        """Prometheus text format: requests and rejections by reason, latency, the live version,
        feedback counts, PSI drift per feature (recomputed when older than ``DRIFT_MAX_AGE_S``)."""
        if self.store is not None and time.monotonic() - getattr(self, "_drift_ts", -1e9) > DRIFT_MAX_AGE_S:
            await self._drift()
        return Response(self.metrics.text(), media_type=CONTENT_TYPE)

    async def drain(self, timeout: float) -> int:
        """Called by ``rlad serve`` on SIGTERM/SIGINT (through a handle, not over HTTP): new
        requests get 503, accepted ones finish; returns how many are still running at ``timeout``."""
        return await self.drain_state.wait(timeout)

    @api.get("/models", response_model=None, responses={401: {"model": ErrorResponse}})
    async def models(self) -> dict[str, Any] | JSONResponse:
        """The live version, every registered version and the promotions, rollbacks and refusals."""
        if (missing := self._need_store()) is not None:
            return missing
        return self.registry.summary()  # a few indexed reads
