"""Property-based fuzzing of the HTTP scoring API (Hypothesis): random JSON shapes, types,
extremes (beyond float32, at its edge, huge integers, subnormals), sizes, unicode, duplicate keys,
deep nesting, raw bytes and content types, against both input policies. Every response is a 2xx
with finite numbers or a 4xx with a message, never a 5xx, and the replicas keep serving.

Fixed seed; the budget is ``RLAD_FUZZ_EXAMPLES`` (default 150; ``benchmarks/bench_serve_load.py
--fuzz-examples N`` runs a longer one)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray import serve

from conftest import small_split
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.platform.runtime.screening import FLOAT32_MAX, InputPolicy
from rlad.platform.runtime.serving import ServeOptions, deploy_detector

PORT = 8128
APPS = {"reject": f"http://127.0.0.1:{PORT}/detector", "flag": f"http://127.0.0.1:{PORT}/flagged"}
FUZZ = settings(max_examples=int(os.environ.get("RLAD_FUZZ_EXAMPLES", "150")), derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
WIDTH = 6


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    split = small_split("thyroid", max_rows=800, la=0.3)
    det = MambaMoEDetector(epochs=2).fit(split.X_train, split.y_train_semi)
    path = str(det.save(tmp_path_factory.mktemp("ckpt") / "det.pt"))
    handles = {
        "reject": deploy_detector(path, ServeOptions(num_cpus=0.5, route_prefix="/detector", http_port=PORT)),
        # the flag policy lets extremes reach the model; autoscaling checks Serve takes our config
        "flag": deploy_detector(path, ServeOptions(app_name="flagged", num_cpus=0.5, max_replicas=2, route_prefix="/flagged",
                                                   http_port=PORT, input_policy=InputPolicy("flag"))),
    }
    pids = {policy: {h.info.remote().result()["pid"] for _ in range(6)} for policy, h in handles.items()}
    with requests.Session() as session:
        yield split, handles, session, pids
    serve.shutdown()


extremes = st.sampled_from([1e39, -1e39, 3.4e38, -3.4e38, FLOAT32_MAX, 3.4028236e38, 1e308, 5e-324, 1e-45, -0.0, 2.0, -1.0, 1e6])
numbers = st.one_of(st.floats(-1.5, 2.5), st.floats(allow_nan=True, allow_infinity=True), extremes,
                    st.integers(-(2**80), 2**80), st.integers(-3, 3))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=24,
)
cell = st.one_of(numbers, numbers, numbers, json_values)
rows = st.one_of(
    st.lists(st.lists(st.floats(-1, 2), min_size=WIDTH, max_size=WIDTH), min_size=1, max_size=40),  # good
    st.lists(st.lists(cell, min_size=WIDTH, max_size=WIDTH), min_size=1, max_size=20),  # right width, any values
    st.lists(st.lists(cell, max_size=WIDTH + 2), max_size=6),  # any width
    json_values,
)


@st.composite
def bodies(draw) -> tuple[bytes, str | None]:
    """A request body and its content type."""
    doc = {"rows": draw(rows)}
    if draw(st.booleans()):
        doc.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    text = json.dumps(doc, allow_nan=True, ensure_ascii=draw(st.booleans()))
    kind = draw(st.sampled_from(["json"] * 6 + ["duplicate", "nested", "truncated", "unicode", "bytes"]))
    if kind == "duplicate":  # the last "rows" wins in Python's parser: it must be the one checked
        text = '{"rows": ' + json.dumps(draw(rows), allow_nan=True) + ", " + text[1:]
    elif kind == "nested":
        depth = draw(st.integers(1, 100_000))
        text = '{"rows": ' + "[" * depth + "]" * draw(st.sampled_from([0, depth])) + "}"
    elif kind == "truncated":
        text = text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    elif kind == "unicode":
        text = draw(st.text(max_size=40))
    body = draw(st.binary(max_size=60)) if kind == "bytes" else text.encode("utf-8", "surrogatepass")
    return body, draw(st.sampled_from(["application/json"] * 5 + ["text/plain", "application/x-www-form-urlencoded", None]))


def check_response(r: requests.Response) -> None:
    """2xx with finite numbers, or 4xx with a message."""
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code == 200:
        out = r.json()
        n = len(out["scores"])
        assert n > 0 and len(out["proba"]) == len(out["predictions"]) == len(out["out_of_range"]) == n
        assert all(math.isfinite(v) for v in out["scores"] + out["proba"]) and set(out["predictions"]) <= {0, 1}
        assert all(p == 1 for p, flagged in zip(out["predictions"], out["out_of_range"]) if flagged)
    else:
        assert 400 <= r.status_code < 500 and r.text.strip(), (r.status_code, r.text)
        if r.headers.get("content-type", "").startswith("application/json"):
            assert r.json()["detail"]


@FUZZ
@given(body=bodies())
def test_fuzzed_requests_get_finite_2xx_or_4xx_with_a_message(served, body):
    session = served[2]
    data, content_type = body
    headers = {} if content_type is None else {"content-type": content_type}
    for base in APPS.values():
        check_response(session.post(f"{base}/score", data=data, headers=headers, timeout=60))


def test_replicas_keep_serving_after_the_fuzzing(served):
    """Runs after the fuzzing (tests run in file order)."""
    split, handles, session, pids = served
    for policy, base in APPS.items():
        r = session.post(f"{base}/score", json={"rows": split.X_test[:10].tolist()}, timeout=30)
        assert r.status_code == 200 and len(r.json()["scores"]) == 10
        assert {handles[policy].info.remote().result()["pid"] for _ in range(6)} <= pids[policy]  # none died


def test_flag_policy_scores_and_flags_far_rows_and_fails_closed_on_nan(served):
    split, _, session, _ = served
    far = split.X_test[:3].astype(np.float64).copy()
    far[1, 2] = 50.0
    out = session.post(f"{APPS['flag']}/score", json={"rows": far.tolist()}, timeout=30).json()
    assert out["out_of_range"] == [False, True, False] and out["predictions"][1] == 1
    assert all(math.isfinite(v) for v in out["scores"])
    rejected = session.post(f"{APPS['reject']}/score", json={"rows": far.tolist()}, timeout=30)
    assert rejected.status_code == 422 and "row 1, column 2: 50 is outside the accepted range" in rejected.text
    edge = far.copy()
    edge[2, 0] = 3.4e38  # a finite float32: the model returns NaN for it
    nan = session.post(f"{APPS['flag']}/score", json={"rows": edge.tolist()}, timeout=30)
    assert nan.status_code == 422 and "row(s) [2] could not be scored" in nan.text
    info = session.get(f"{APPS['flag']}/info", timeout=10).json()
    assert info["out_of_range"] == "flag" and len(info["accepted_low"]) == WIDTH
