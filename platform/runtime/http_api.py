"""HTTP scoring API on Ray Serve: JSON rows in, anomaly scores out, OpenAPI at ``/openapi.json``.

The ingress validates every request before it reaches the detector replica, so bad input gets a
4xx with a clear message and never disturbs the model: 413 for bodies over ``MAX_BODY_BYTES`` or
more than ``max_rows`` rows, 422 for malformed JSON, non-numeric values, NaN/inf, empty input or
the wrong row width. Requests are forwarded to :class:`~rlad.platform.runtime.serving.DetectorServer`
(batched, hot-swappable). Serve's HTTP proxy binds to 127.0.0.1 unless told otherwise.
"""

import asyncio
import math
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

MAX_ROWS = 10_000
RETRIES = 5
MAX_BODY_BYTES = 8 * 1024 * 1024

api = FastAPI(title="rlad scoring API", version="1.0",
              description="Score tabular rows with the served anomaly detector (higher score = more anomalous).")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # numbers only: no "1.5" strings, no booleans

    rows: list[list[float]] = Field(..., description="Rows of features, MinMax-scaled as at training time.",
                                    examples=[[[0.1, 0.5, 0.3]]])

    @field_validator("rows")
    @classmethod
    def _finite_and_rectangular(cls, rows: list[list[float]]) -> list[list[float]]:
        if not rows:
            raise ValueError("rows is empty: send at least one row")
        width = len(rows[0])
        for i, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(f"row {i} has {len(row)} values, row 0 has {width}")
            if not all(math.isfinite(v) for v in row):
                raise ValueError(f"row {i} contains NaN or infinite values")
        return rows


class ScoreResponse(BaseModel):
    scores: list[float] = Field(..., description="Anomaly score per row (higher = more anomalous)")
    proba: list[float] = Field(..., description="P(anomaly) per row")
    predictions: list[int] = Field(..., description="1 where score > threshold")
    threshold: float
    version: int = Field(..., description="Version of the model that answered")


class ModelInfo(BaseModel):
    kind: str
    n_features: int
    version: int


class ErrorResponse(BaseModel):
    detail: Any


@api.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with where and what, without echoing the input (it may hold NaN, which JSON cannot carry)."""
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


@api.middleware("http")
async def limit_body_size(request: Request, call_next):
    """Refuse oversized bodies before they are read or parsed."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return JSONResponse({"detail": f"request body of {length} bytes exceeds {MAX_BODY_BYTES}"}, status_code=413)
    return await call_next(request)


@serve.deployment(max_ongoing_requests=256, logging_config={"enable_access_log": False})
@serve.ingress(api)
class ScoringAPI:
    def __init__(self, detector: DeploymentHandle, max_rows: int = MAX_ROWS) -> None:
        self.detector, self.max_rows = detector, max_rows

    @api.post("/score", response_model=ScoreResponse, responses={413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    async def score(self, request: ScoreRequest) -> ScoreResponse | JSONResponse:
        info = await self.detector.info.remote()
        if len(request.rows) > self.max_rows:
            return JSONResponse({"detail": f"{len(request.rows)} rows exceed the limit of {self.max_rows} per request"}, status_code=413)
        if len(request.rows[0]) != info["n_features"]:
            return JSONResponse({"detail": f"rows have {len(request.rows[0])} features, the model expects {info['n_features']}"},
                                status_code=422)
        out = await self._score_with_retry(np.asarray(request.rows, dtype=np.float32))
        return ScoreResponse(scores=out["scores"].tolist(), proba=out["proba"].tolist(),
                             predictions=(out["scores"] > out["threshold"]).astype(int).tolist(),
                             threshold=out["threshold"], version=out["version"])

    async def _score_with_retry(self, X: np.ndarray) -> dict[str, Any]:
        """Scoring is idempotent: a request caught on a replica that dies is sent again, and
        Serve routes it to a live replica (its controller replaces the dead one)."""
        for attempt in range(RETRIES - 1):
            try:
                return await self.detector.remote(X)
            except (RayActorError, ActorDiedError, ActorUnavailableError):
                await asyncio.sleep(0.2 * (attempt + 1))
        return await self.detector.remote(X)

    @api.get("/info", response_model=ModelInfo)
    async def info(self) -> ModelInfo:
        info = await self.detector.info.remote()
        return ModelInfo(kind=info["kind"], n_features=info["n_features"], version=info["version"])
