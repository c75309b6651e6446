"""HTTP scoring API: schema, validation (4xx, replica keeps serving), loopback binding,
and a killed replica replaced with no lost requests under a bounded load on loopback."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import requests
from ray import serve

from conftest import small_split
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.platform.runtime.serving import ServeOptions, deploy_detector

PORT = 8127
BASE = f"http://127.0.0.1:{PORT}/detector"


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    split = small_split("thyroid", max_rows=800, la=0.3)
    det = MambaMoEDetector(epochs=2).fit(split.X_train, split.y_train_semi)
    path = det.save(tmp_path_factory.mktemp("ckpt") / "det.pt")
    handle = deploy_detector(str(path), ServeOptions(num_replicas=2, num_cpus=0.5, route_prefix="/detector", http_port=PORT), version=3)
    yield split, det, handle
    serve.shutdown()


def post(body, **kw):
    kw.setdefault("timeout", 30)
    if isinstance(body, (str, bytes)):
        return requests.post(f"{BASE}/score", data=body, headers={"content-type": "application/json"}, **kw)
    return requests.post(f"{BASE}/score", json=body, **kw)


def test_scores_match_the_detector(served):
    split, det, _ = served
    r = post({"rows": split.X_test[:20].tolist()})
    assert r.status_code == 200, r.text
    out = r.json()
    np.testing.assert_allclose(out["scores"], det.decision_function(split.X_test[:20]), rtol=1e-5)
    np.testing.assert_array_equal(out["predictions"], det.predict(split.X_test[:20]))
    assert out["version"] == 3 and out["threshold"] == pytest.approx(det.threshold_)
    assert requests.get(f"{BASE}/info", timeout=10).json() == {"kind": "mamba_moe", "n_features": 6, "version": 3}


def test_openapi_schema_describes_the_api(served):
    schema = requests.get(f"{BASE}/openapi.json", timeout=10).json()
    score = schema["paths"]["/score"]["post"]
    assert "ScoreRequest" in str(score["requestBody"]) and {"200", "413", "422"} <= set(score["responses"])
    assert schema["components"]["schemas"]["ScoreResponse"]["required"] == ["scores", "proba", "predictions", "threshold", "version"]


def test_http_proxy_listens_on_loopback_only(served):
    listening = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port = local.split(":")
            if int(port, 16) == PORT and state == "0A":
                listening.append(addr)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex


BAD = [
    ('{"rows": [[1, 2]]}', 422, "expects 6"),
    ('{"rows": []}', 422, "empty"),
    ('{"rows": [["1", 1, 1, 1, 1, 1]]}', 422, "valid number"),
    ('{"rows": [[true, 1, 1, 1, 1, 1]]}', 422, "valid number"),
    ('{"rows": [[NaN, 1, 1, 1, 1, 1]]}', 422, "NaN"),
    ('{"rows": [[Infinity, 1, 1, 1, 1, 1]]}', 422, "NaN or infinite"),
    ('{"rows": [[1, 1, 1, 1, 1, 1], [1]]}', 422, "row 1 has 1 values"),
    ('{"rows": 5}', 422, "valid list"),
    ('{"cols": []}', 422, "Field required"),
    ("not json", 422, "JSON decode error"),
    (b" " * (9 * 1024 * 1024), 413, "exceeds"),
]


def test_bad_requests_get_4xx_and_replicas_keep_serving(served):
    split, det, handle = served
    pids = {handle.info.remote().result()["pid"] for _ in range(10)}
    for _ in range(3):
        for body, status, message in BAD:
            r = post(body)
            assert r.status_code == status and message in r.text, (body[:40], r.status_code, r.text[:200])
    too_many = post({"rows": np.zeros((10_001, 6)).tolist()})
    assert too_many.status_code == 413 and "10001 rows" in too_many.text
    for _ in range(20):
        assert post({"rows": split.X_test[:5].tolist()}).status_code == 200
    assert {handle.info.remote().result()["pid"] for _ in range(10)} <= pids  # no replica died


def test_killed_replica_is_replaced_without_lost_requests(served):
    split, det, handle = served
    rows = {"rows": split.X_test[:8].tolist()}
    victim = handle.info.remote().result()["pid"]
    statuses, deadline = [], time.time() + 120
    for i in range(150):  # bounded load on loopback
        if i == 30:
            os.kill(victim, signal.SIGKILL)
        statuses.append(post(rows).status_code)
        assert time.time() < deadline
    assert statuses == [200] * 150
    for _ in range(120):  # the controller brings the deployment back to 2 live replicas
        status = serve.status().applications["detector"].deployments["DetectorServer"]
        if status.status == "HEALTHY" and status.replica_states.get("RUNNING", 0) == 2:
            break
        time.sleep(1)
    assert status.replica_states.get("RUNNING", 0) == 2
    assert victim not in {handle.info.remote().result()["pid"] for _ in range(20)}
