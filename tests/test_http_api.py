"""HTTP scoring API: schema, validation (4xx, replica keeps serving), isolation of hostile
requests from everyone else's, fail-closed scoring, the API key, loopback binding, ``rlad serve``'s
refusal of an open non-loopback bind, and a killed replica replaced with no lost requests under a
bounded load on loopback."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from ray import serve

from conftest import small_split
from rlad.algorithms.mamba_moe import MambaMoEDetector
from rlad.platform.cli import serve as serve_cli
from rlad.platform.cli.main import main
from rlad.platform.runtime.http_api import hash_api_key
from rlad.platform.runtime.screening import InputPolicy, Rejected, score_isolated, screen_rows
from rlad.platform.runtime.serving import ServeOptions, deploy_detector

PORT = 8127
BASE = f"http://127.0.0.1:{PORT}/detector"
KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    split = small_split("thyroid", max_rows=800, la=0.3)
    det = MambaMoEDetector(epochs=2).fit(split.X_train, split.y_train_semi)
    path = det.save(tmp_path_factory.mktemp("ckpt") / "det.pt")
    options = ServeOptions(num_replicas=2, num_cpus=0.5, route_prefix="/detector", http_port=PORT, api_key_sha256=hash_api_key(KEY))
    handle = deploy_detector(str(path), options, version=3)
    yield split, det, handle
    serve.shutdown()


def post(body, key=KEY, **kw):
    kw.setdefault("timeout", 30)
    headers = {"X-API-Key": key} if key is not None else {}
    if isinstance(body, (str, bytes)):
        return requests.post(f"{BASE}/score", data=body, headers={"content-type": "application/json", **headers}, **kw)
    return requests.post(f"{BASE}/score", json=body, headers=headers, **kw)


def test_scores_match_the_detector(served):
    split, det, _ = served
    r = post({"rows": split.X_test[:20].tolist()})
    assert r.status_code == 200, r.text
    out = r.json()
    np.testing.assert_allclose(out["scores"], det.decision_function(split.X_test[:20]), rtol=1e-5)
    np.testing.assert_array_equal(out["predictions"], det.predict(split.X_test[:20]))
    assert out["out_of_range"] == [False] * 20
    assert out["version"] == 3 and out["threshold"] == pytest.approx(det.threshold_)
    info = requests.get(f"{BASE}/info", headers={"X-API-Key": KEY}, timeout=10).json()
    lo, hi = det.feature_range_
    assert {k: info[k] for k in ("kind", "n_features", "version", "out_of_range")} == \
        {"kind": "mamba_moe", "n_features": 6, "version": 3, "out_of_range": "reject"}
    np.testing.assert_allclose(info["accepted_low"], 2 * lo - hi)  # margin 1: one span below the training min
    np.testing.assert_allclose(info["accepted_high"], 2 * hi - lo)


def test_openapi_schema_describes_the_api(served):
    schema = requests.get(f"{BASE}/openapi.json", headers={"X-API-Key": KEY}, timeout=10).json()
    score = schema["paths"]["/score"]["post"]
    assert "ScoreRequest" in str(score["requestBody"]) and {"200", "401", "413", "422"} <= set(score["responses"])
    assert schema["components"]["schemas"]["ScoreResponse"]["required"] == \
        ["scores", "proba", "predictions", "out_of_range", "threshold", "version", "ids"]


def test_http_proxy_listens_on_loopback_only(served):
    listening = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port = local.split(":")
            if int(port, 16) == PORT and state == "0A":
                listening.append(addr)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex


def test_every_route_needs_the_api_key(served):
    split, _, _ = served
    rows = {"rows": split.X_test[:2].tolist()}
    for key in (None, "", "wrong", KEY[:-1], KEY + "x"):
        r = post(rows, key=key)
        assert r.status_code == 401 and "X-API-Key" in r.text and r.headers["www-authenticate"] == "X-API-Key", (key, r.text)
        for route in ("info", "openapi.json", "docs"):
            headers = {} if key is None else {"X-API-Key": key}
            assert requests.get(f"{BASE}/{route}", headers=headers, timeout=10).status_code == 401
    assert post(b" " * (9 * 1024 * 1024), key=None).status_code == 413  # the size check comes first, nothing read
    assert post(rows).status_code == 200


ROW = "0.5, 0.5, 0.5, 0.5, 0.5"
BAD = [
    ('{"rows": [[1, 2]]}', 422, "expects 6"),
    ('{"rows": []}', 422, "empty"),
    ('{"rows": [["1", 1, 1, 1, 1, 1]]}', 422, "valid number"),
    ('{"rows": [[true, 1, 1, 1, 1, 1]]}', 422, "valid number"),
    ('{"rows": [[NaN, 1, 1, 1, 1, 1]]}', 422, "NaN"),
    ('{"rows": [[Infinity, 1, 1, 1, 1, 1]]}', 422, "NaN or infinite"),
    ('{"rows": [[1e400, 1, 1, 1, 1, 1]]}', 422, "NaN or infinite"),
    ('{"rows": [[1, 1, 1, 1, 1, 1], [1]]}', 422, "row 1 has 1 values"),
    ('{"rows": 5}', 422, "valid list"),
    ('{"cols": []}', 422, "Field required"),
    ("not json", 422, "JSON decode error"),
    ('{"rows": [[1' + "0" * 400 + ', 1, 1, 1, 1, 1]]}', 422, "valid number"),
    (b" " * (9 * 1024 * 1024), 413, "Content Too Large"),
    # beyond float32 (the 500), at its edge (the NaN scored as normal), far outside training
    (f'{{"rows": [[{ROW}, 0.5], [{ROW}, 1e39]]}}', 422, "row 1, column 5: 1e+39 is not a finite float32"),
    (f'{{"rows": [[{ROW}, -1e39]]}}', 422, "row 0, column 5: -1e+39 is not a finite float32"),
    (f'{{"rows": [[3.4e38, {ROW}]]}}', 422, "row 0, column 0: 3.4e+38 is outside the accepted range"),
    (f'{{"rows": [[{ROW}, 0.5], [{ROW}, 0.5], [{ROW}, 5.0]]}}', 422, "row 2, column 5: 5 is outside the accepted range"),
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


def test_hostile_requests_fail_no_other_request(served):
    """The issue's trial: hostile rows arriving among 40 concurrent good requests."""
    split, det, _ = served
    good = {"rows": split.X_test[:16].tolist()}
    hostile = [{"rows": [[0.5] * 5 + [1e39]]}, {"rows": [[3.4e38] + [0.5] * 5]}, {"rows": [[-1e39] * 6]}]
    bodies = [good] * 40 + hostile
    for trial in range(5):
        order = np.random.default_rng(trial).permutation(len(bodies))
        with ThreadPoolExecutor(len(bodies)) as pool:
            responses = list(pool.map(lambda i: (i, post(bodies[i])), order))
        statuses = {i: r.status_code for i, r in responses}
        assert [statuses[i] for i in range(40)] == [200] * 40, trial
        assert [statuses[i] for i in range(40, len(bodies))] == [422] * len(hostile), trial
        assert all(np.isfinite(r.json()["scores"]).all() for i, r in responses if i < 40)


class Raising:
    """Stands in for a model that raises on some rows although they passed the checks."""

    def __init__(self, detector, error: type[Exception]) -> None:
        self.detector, self.error = detector, error

    def decision_function(self, X):
        if (X == 0.25).any():
            raise self.error("this row breaks the model")
        return self.detector.decision_function(X)

    def proba_from_scores(self, scores):
        return self.detector.proba_from_scores(scores)


def test_a_failing_merged_batch_is_rescored_request_by_request(served):
    split, det, _ = served
    good = [split.X_test[:3], split.X_test[3:4], split.X_test[4:9]]
    poisoned = np.full((2, 6), 0.25, np.float32)
    for error, status in ((ValueError, 422), (RuntimeError, 500)):
        out = score_isolated(Raising(det, error), [good[0], poisoned, good[1], good[2]])
        assert isinstance(out[1], Rejected) and out[1].status == status
        for X, r in zip(good, out[:1] + out[2:]):
            np.testing.assert_allclose(r[0], det.decision_function(X), rtol=1e-5)
            np.testing.assert_allclose(r[1], det.anomaly_probability(X), rtol=1e-5)


def test_non_finite_model_output_is_never_returned(served):
    """Fail closed: 3.4e38 passes the float32 check, the Mamba-MoE turns it into NaN."""
    split, det, _ = served
    edge = np.full((1, 6), 0.5, np.float32)
    edge[0, 2] = 3.4e38
    assert not np.isfinite(det.decision_function(edge)).all()  # the model really breaks
    ok, broken = score_isolated(det, [split.X_test[:4], np.concatenate([split.X_test[:2], edge])])
    assert np.isfinite(ok[0]).all()
    assert isinstance(broken, Rejected) and broken.status == 422 and "row(s) [2] could not be scored" in broken.message


def test_input_policy_flags_or_rejects_rows_outside_the_training_range(served):
    split, det, _ = served
    lo, hi = det.feature_range_
    X = np.tile((lo + hi) / 2, (3, 1))
    X[1, 4] = hi[4] + 0.99 * (hi[4] - lo[4])  # inside with margin 1
    X[2, 0] = lo[0] - 1.01 * (hi[0] - lo[0])  # outside
    np.testing.assert_array_equal(screen_rows(X, det, InputPolicy("flag")), [False, False, True])
    np.testing.assert_array_equal(screen_rows(X, det, InputPolicy("flag", margin=2.0)), [False, False, False])
    np.testing.assert_array_equal(screen_rows(X, det, None), [False, False, False])
    rejected = screen_rows(X, det, InputPolicy())
    assert isinstance(rejected, Rejected) and rejected.message.startswith("row 2, column 0:")
    with pytest.raises(ValueError, match="out_of_range"):
        InputPolicy("ignore")


def test_a_table_model_takes_rows_keyed_by_column_name(served, tmp_path):
    """The transactions example (issue 31) served in place of the module's model: rows as objects
    by column name (any order, extras ignored, a gap as null) or as arrays in /info's column order."""
    import sys
    from pathlib import Path

    import pandas as pd

    from rlad.algorithms.registry import load_detector

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from make_transactions import make

    frame, _ = make(400, seed=2)
    frame.to_csv(tmp_path / "tx.csv", index=False)
    assert main(["fit", "iforest", "--data", str(tmp_path / "tx.csv"), "--id-column", "id", "--save", str(tmp_path / "tx.pt")]) == 0
    model = load_detector(tmp_path / "tx.pt")
    options = ServeOptions(num_replicas=2, num_cpus=0.5, route_prefix="/detector", http_port=PORT, api_key_sha256=hash_api_key(KEY))
    deploy_detector(str(tmp_path / "tx.pt"), options, version=4)
    try:
        info = requests.get(f"{BASE}/info", headers={"X-API-Key": KEY}, timeout=10).json()
        assert [c["name"] for c in info["columns"]] == ["amount", "merchant", "hour", "country_risk"]
        assert info["columns"][1]["type"] == "categorical" and info["version"] == 4
        rows = frame.drop(columns=["id", "label"]).head(5)
        objects = [{**{k: row[k] for k in reversed(rows.columns)}, "note": "ignored"} for row in rows.to_dict("records")]
        objects[1]["country_risk"] = None
        r = post({"rows": objects})
        assert r.status_code == 200, r.text
        expected = model.decision_function(pd.DataFrame(objects))
        np.testing.assert_allclose(r.json()["scores"], expected, rtol=1e-5)
        r = post({"rows": [[12.5, 3.0]]})  # arrays: the columns in /info's order
        assert r.status_code == 422 and "rows have 2 values, the model reads 4 columns" in r.json()["detail"]
        r = post({"rows": [{k: v for k, v in objects[0].items() if k != "hour"}]})
        assert r.status_code == 422 and "['hour']" in r.json()["detail"]
        r = post({"rows": [{**objects[0], "amount": "lots"}]})
        assert r.status_code == 422 and "row 0: column 'amount': 'lots' is not a number" in r.json()["detail"]
    finally:
        deploy_detector(str(served[1].save(tmp_path / "back.pt")), options, version=3)  # the module's model again


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


# -- rlad serve: access and options (no Ray) ---------------------------------------------------------
@pytest.fixture
def started(monkeypatch):
    """Records what ``rlad serve`` would deploy instead of starting Ray."""
    calls = []
    monkeypatch.setattr(serve_cli, "serve_forever", lambda args, options, authenticated: calls.append(options) or 0)
    monkeypatch.delenv(serve_cli.API_KEY_ENV, raising=False)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.7", "::", "myhost.example"])
def test_serve_refuses_an_open_non_loopback_bind(started, capsys, host):
    assert main(["serve", "det.pt", "--host", host]) == 2
    assert "without an API key" in capsys.readouterr().out and started == []
    assert main(["serve", "det.pt", "--host", host, "--insecure"]) == 0
    assert started[-1].api_key_sha256 is None and started[-1].http_host == host


def test_serve_takes_the_key_from_the_environment_or_a_file(started, monkeypatch, tmp_path, capsys):
    assert main(["serve", "det.pt"]) == 0 and started[-1].api_key_sha256 is None  # loopback: no key needed
    monkeypatch.setenv(serve_cli.API_KEY_ENV, KEY)
    assert main(["serve", "det.pt", "--host", "0.0.0.0"]) == 0
    assert started[-1].api_key_sha256 == hash_api_key(KEY)
    (tmp_path / "key").write_text("file-key-0123456789abcdef\n")
    assert main(["serve", "det.pt", "--host", "0.0.0.0", "--api-key-file", str(tmp_path / "key")]) == 0
    assert started[-1].api_key_sha256 == hash_api_key("file-key-0123456789abcdef")  # the file wins, newline stripped
    for bad in ("short", "has a space in it 0123456789", "ключ-0123456789abcdef"):
        (tmp_path / "key").write_text(bad)
        assert main(["serve", "det.pt", "--api-key-file", str(tmp_path / "key")]) == 2
        assert "at least 16 printable ASCII" in capsys.readouterr().out
    assert main(["serve", "det.pt", "--api-key-file", str(tmp_path / "missing")]) == 2
    assert len(started) == 3


def test_serve_options_for_policy_and_autoscaling(started, capsys):
    assert main(["serve", "det.pt", "--out-of-range", "flag", "--range-margin", "0.5", "--replicas", "1",
                 "--max-replicas", "3", "--target-ongoing-requests", "4"]) == 0
    options = started[-1]
    assert options.input_policy == InputPolicy("flag", 0.5)
    assert options.replicas() == {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4.0}}
    assert ServeOptions(num_replicas=2).replicas() == {"num_replicas": 2}
    for argv in (["--replicas", "3", "--max-replicas", "2"], ["--replicas", "0"], ["--range-margin", "-1"]):
        assert main(["serve", "det.pt", *argv]) == 2, argv
        assert "error" in capsys.readouterr().out


def test_training_range_round_trips_and_old_checkpoints_still_load(tmp_path):
    import dataclasses

    from rlad.algorithms.registry import load_detector, make_detector
    from rlad.core.checkpoint import save_checkpoint

    X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    det = make_detector("iforest").fit(X)
    np.testing.assert_array_equal(det.feature_range_[0], X.min(axis=0))
    np.testing.assert_array_equal(det.feature_range_[1], X.max(axis=0))
    loaded = load_detector(det.save(tmp_path / "new.pt"))
    for a, b in zip(loaded.feature_range_, det.feature_range_):
        np.testing.assert_array_equal(a, b)
    meta = {"contamination": det.contamination, "n_features_in": 3, "threshold": det.threshold_,
            "train_score_range": list(det._train_score_range)}  # as written before the training range existed
    save_checkpoint(tmp_path / "old.pt", det.kind, {"model": dataclasses.asdict(det.config), "meta": meta}, det._get_state())
    old = load_detector(tmp_path / "old.pt")
    assert old.feature_range_ is None
    np.testing.assert_array_equal(screen_rows(np.full((1, 3), 1e6), old, InputPolicy()), [False])  # nothing to check against
