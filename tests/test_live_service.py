"""The live service, as real processes: ``rlad serve`` with a working folder (feedback, scored rows,
model registry), ``rlad retrain``'s gate, ``rlad models`` promotions and rollbacks under load,
Prometheus ``/metrics``, ``kill -9`` and restart, graceful SIGTERM. One service per module (a start
costs ~15-25 s); only the kill restarts it. The data are synthetic: 6 features, normal rows around
0 and one tight cluster of anomalies, so each outcome is known in advance."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from rlad.algorithms.registry import build_detector

KEY = "live-test-key-0123456789"
HEADERS = {"X-API-Key": KEY}
COLUMNS = [f"f{i}" for i in range(6)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rlad(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlad.platform.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "RAY_ADDRESS": ""})


class Service:
    """``rlad serve`` in its own session (process group: Ray's processes too), on a free port."""

    def __init__(self, checkpoint: Path, workdir: Path, training: Path) -> None:
        self.checkpoint, self.workdir, self.training = checkpoint, workdir, training
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Service":
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/detector"
        cmd = [sys.executable, "-m", "rlad.platform.cli", "serve", str(self.checkpoint), "--port", str(self.port),
               "--num-cpus", "2", "--workdir", str(self.workdir), "--training-data", str(self.training), "--window", "500"]
        self.logfile = self.workdir.parent / f"serve-{self.port}.log"
        self.log = open(self.logfile, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     env={**os.environ, "RLAD_API_KEY": KEY, "RAY_ADDRESS": ""})
        deadline = time.time() + 180
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                if requests.get(f"{self.base}/info", headers=HEADERS, timeout=5).status_code == 200:
                    return self
            except requests.RequestException:  # not up yet: refused, or accepted and held
                pass
            assert time.time() < deadline, "rlad serve did not come up\n" + self.output()
            time.sleep(0.5)

    def output(self) -> str:
        self.log.flush()
        return self.logfile.read_text()[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """``sig`` to the whole process group (the service and its Ray processes)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.log.close()

    def cleanup(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # Ray's processes outlive a driver that exited
            except ProcessLookupError:
                pass
            if self.proc.poll() is None:
                self.proc.wait(timeout=30)

    def get(self, route: str, **params) -> dict:
        r = requests.get(f"{self.base}/{route}", params=params, headers=HEADERS, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, route: str, body: dict, timeout: float = 30) -> requests.Response:
        return requests.post(f"{self.base}/{route}", json=body, headers=HEADERS, timeout=timeout)


def anomalies(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=(n, 6)) * 0.3 + [3.0, 3.0, 0.0, 0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A scaled kNN fitted on 600 normal rows and 10 labelled anomalies of another kind (saved as
    the service's training table)."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("live")
    X = np.vstack([rng.normal(size=(600, 6)), rng.normal(size=(10, 6)) * 0.3 - 3.0])
    y = np.r_[np.zeros(600, dtype=np.int64), np.ones(10, dtype=np.int64)]
    training = folder / "train.npz"
    np.savez(training, X=X, y=y)
    det = build_detector("scaled", {"detector": "knn", "columns": COLUMNS}, seed=0)
    checkpoint = det.fit(X, y).save(folder / "model.pt")
    stream = np.vstack([anomalies(rng, 80), rng.normal(size=(80, 6))])
    return stream, folder, checkpoint, training


@pytest.fixture(scope="module")
def service(data):
    _, folder, checkpoint, training = data
    svc = Service(checkpoint, folder / "svc", training)
    try:
        yield svc.start()
    finally:
        svc.cleanup()


def test_score_ids_feedback_recent_and_models(service, data):
    X = data[0][80:86]
    given = [f"row-{i}" for i in range(6)]
    r = service.post("score", {"rows": X.tolist(), "ids": given})
    assert r.status_code == 200 and r.json()["ids"] == given, r.text
    generated = service.post("score", {"rows": X[:2].tolist()}).json()["ids"]
    assert len(generated) == 2 and all(len(i) == 32 for i in generated)
    assert service.post("score", {"rows": X[:2].tolist(), "ids": ["only-one"]}).status_code == 422

    ok = service.post("feedback", {"id": "row-3", "label": "anomaly", "analyst": "ann"})
    assert ok.status_code == 201 and isinstance(ok.json()["feedback_id"], int), ok.text
    by_row = service.post("feedback", {"row": X[0].tolist(), "label": "normal", "analyst": "bob"})
    assert by_row.status_code == 201, by_row.text
    for body, status in (({"id": "nope", "label": "anomaly"}, 404), ({"id": "row-1", "label": "maybe"}, 422),
                         ({"row": [1.0, 2.0], "label": "normal"}, 422), ({"label": "normal"}, 422),
                         ({"id": "row-1", "row": X[1].tolist(), "label": "normal"}, 422)):
        r = service.post("feedback", body)
        assert r.status_code == status, (body, r.status_code, r.text)
    assert requests.post(f"{service.base}/feedback", json={"id": "row-1", "label": "anomaly"}, timeout=10).status_code == 401

    recent = service.get("recent", limit=100)
    assert recent["total"] == 8 and len(recent["rows"]) == 8
    scores = [row["score"] for row in recent["rows"]]
    assert scores == sorted(scores, reverse=True)
    row3 = next(row for row in recent["rows"] if row["id"] == "row-3")
    assert row3["label"] == "anomaly" and row3["version"] == 1 and np.allclose(row3["row"], X[3])
    assert [row["id"] for row in service.get("recent", labelled="yes")["rows"]] == ["row-3"]
    assert service.get("recent", labelled="no")["total"] == 7
    assert service.get("recent", limit=2, offset=1)["rows"] == recent["rows"][1:3]

    lines = service.get("feedback")["rows"]
    assert [(f["row_id"], f["label"], f["analyst"]) for f in lines] == [(None, "normal", "bob"), ("row-3", "anomaly", "ann")]
    models = service.get("models")
    assert models["live"] == 1 and [v["version"] for v in models["versions"]] == [1]
    v1 = models["versions"][0]
    assert v1["data_hash"] and Path(v1["training_data"]).is_file() and Path(v1["checkpoint"]).is_file()
    assert [e["action"] for e in models["events"]] == ["promote"]


def test_worse_candidate_is_refused_and_recorded(service, data):
    """Analysts confirm a cluster of anomalies; a plain refit of the unsupervised kNN takes those
    rows in as training rows, so the held-out anomalies get close neighbours: worse, refused."""
    stream = data[0]
    ids = [f"s-{i}" for i in range(len(stream))]
    assert service.post("score", {"rows": stream.tolist(), "ids": ids}).status_code == 200
    for i, row_id in enumerate(ids):
        r = service.post("feedback", {"id": row_id, "label": "anomaly" if i < 80 else "normal", "analyst": "sim"})
        assert r.status_code == 201, r.text
    out = rlad("retrain", "--service", str(service.workdir), "--num-cpus", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "refuse: version 2" in out.stdout and "worse" in out.stdout, out.stdout
    models = service.get("models")
    assert models["live"] == 1 and [v["version"] for v in models["versions"]] == [1, 2]
    refusal = models["events"][0]
    assert refusal["action"] == "refuse" and refusal["version"] == 2 and refusal["reason"].startswith("worse")
    assert refusal["metrics"]["candidate_auc_pr"] < refusal["metrics"]["live_auc_pr"]
    listing = rlad("models", "list", "--service", str(service.workdir))
    assert listing.returncode == 0 and "refit" in listing.stdout, listing.stdout + listing.stderr


def test_promotion_and_rollback_under_load_fail_no_request(service, data):
    """Four clients score without pause while ``rlad models promote`` and ``rollback`` hot-swap."""
    rows = {"rows": data[0][:8].tolist()}
    stop, failures, versions = threading.Event(), [], []

    def client() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.post(f"{service.base}/score", json=rows, headers=HEADERS, timeout=30)
                    (versions.append(r.json()["version"]) if r.status_code == 200 else failures.append(r.text))
                except requests.RequestException as exc:
                    failures.append(repr(exc))

    def wait_for(version: int) -> None:
        deadline = time.time() + 20
        while not versions or versions[-1] != version:
            assert time.time() < deadline, f"version {version} never answered"
            time.sleep(0.05)
        time.sleep(0.3)  # keep loading the new version a moment

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client) for _ in range(4)]
        try:
            time.sleep(0.5)
            assert rlad("models", "promote", "2", "--service", str(service.workdir)).returncode == 0
            wait_for(2)
            rolled = rlad("models", "rollback", "--service", str(service.workdir))
            assert rolled.returncode == 0 and "version 1 is live" in rolled.stdout, rolled.stdout + rolled.stderr
            wait_for(1)
        finally:
            stop.set()
            for f in running:
                f.result()
    assert not failures, failures[:3]
    assert {1, 2} <= set(versions) and len(versions) > 20
    assert [e["action"] for e in service.get("models")["events"][:2]] == ["rollback", "promote"]

    metrics = requests.get(f"{service.base}/metrics", headers=HEADERS, timeout=30).text
    assert "rlad_live_version 1.0" in metrics
    assert 'rlad_feedback_total{label="anomaly"} 81.0' in metrics and 'rlad_feedback_total{label="normal"} 81.0' in metrics
    rejected = [line for line in metrics.splitlines() if line.startswith("rlad_rejected_requests_total")]
    assert 'rlad_rejected_requests_total{reason="unknown_id",route="/feedback"} 1.0' in rejected, rejected
    assert 'rlad_rejected_requests_total{reason="api_key",route="/feedback"} 1.0' in rejected, rejected
    assert 'rlad_request_latency_seconds_count{route="/score"}' in metrics
    psi = {line.split('"')[1]: float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("rlad_feature_psi{")}
    assert set(psi) == set(COLUMNS) and psi["f0"] > 1.0  # most recent rows sit at f0 = 3, beyond training


def test_acknowledged_feedback_survives_kill_9(service, data):
    """Clients label rows by value until the whole process group gets SIGKILL; after a restart
    every feedback id that was answered 201 is there."""
    stream, acked, stop = data[0], [], threading.Event()

    def analyst(k: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                r = service.post("feedback", {"row": stream[(k * 37 + i) % len(stream)].tolist(), "label": "normal",
                                              "analyst": f"kill-{k}"}, timeout=10)
            except requests.RequestException:
                return
            if r.status_code == 201:
                acked.append(r.json()["feedback_id"])
            i += 1

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(analyst, k) for k in range(4)]
        time.sleep(1.5)
        service.kill(signal.SIGKILL)
        stop.set()
        for f in running:
            f.result()
    assert len(acked) > 20
    service.start()
    stored = {f["feedback_id"] for f in service.get("feedback", limit=10_000)["rows"]}
    assert set(acked) <= stored, sorted(set(acked) - stored)[:5]
    assert service.get("models")["live"] == 1  # the registry's live version, not just the checkpoint given


def test_sigterm_under_load_answers_accepted_requests_and_exits_0(service, data):
    """Every request in flight when SIGTERM arrives is answered 200; later ones get 503 or no
    connection (the listener is closing); the exit is 0 within 10 s with no stack dump."""
    rows = {"rows": data[0][:8].tolist()}
    outcomes, stop = [], threading.Event()

    def client() -> None:
        while not stop.is_set():  # a new connection per request, as many clients behind a balancer
            started = time.time()
            try:
                r = requests.post(f"{service.base}/score", json=rows, headers=HEADERS, timeout=30)
                outcomes.append((started, r.status_code))
            except requests.ConnectionError as exc:  # refused, reset, or closed unanswered by the closing listener
                gone = any(word in str(exc).lower() for word in ("refused", "reset", "without response", "aborted"))
                outcomes.append((started, "no connection" if gone else repr(exc)))
                time.sleep(0.05)

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client) for _ in range(4)]
        time.sleep(1.0)
        sent = time.time()
        os.kill(service.proc.pid, signal.SIGTERM)  # as Docker and Kubernetes do: to the main process
        code = service.proc.wait(timeout=30)
        took = time.time() - sent
        time.sleep(0.3)
        stop.set()
        for f in running:
            f.result()
    log = service.output()
    assert code == 0 and took < 10, (code, took, log)
    assert "Traceback" not in log and "SIGTERM received" not in log, log
    before = [o for t, o in outcomes if t < sent]
    after = [o for t, o in outcomes if t >= sent]
    assert len(before) > 10 and set(before) == {200}, [o for o in before if o != 200][:3]
    assert 503 in after and set(after) <= {200, 503, "no connection"}, [o for o in after if o not in (200, 503)][:3]
    if "no connection" in after:  # the port closes only after the service said 503 for a while
        assert after.index(503) < after.index("no connection"), after


def test_ctrl_c_drains_and_exits_130(service):
    """Ctrl-C sends SIGINT to the whole foreground process group: the service drains and exits 130
    within 10 s, with no traceback (the README's promise)."""
    if service.proc.poll() is not None:  # stopped by the SIGTERM test before
        service.start()
    assert service.post("score", {"rows": [[0.0] * 6]}).status_code == 200
    sent = time.time()
    os.killpg(service.proc.pid, signal.SIGINT)
    code = service.proc.wait(timeout=30)
    took = time.time() - sent
    log = service.output()
    assert code == 130 and took < 10, (code, took, log)
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "stopped after" in log, log


def test_better_candidate_is_promoted_by_rlad_retrain_and_served(tmp_path):
    """A label-driven detector (CatBoost, else DevNet) served with its training table; analysts
    confirm a kind of anomaly it never saw labelled; ``rlad retrain --service`` (a real process)
    refits, the gate promotes, and the running replicas answer with the new version."""
    from test_retraining import _has_catboost

    rng = np.random.default_rng(0)
    X0 = np.vstack([rng.normal(size=(400, 4)), rng.normal(size=(8, 4)) * 0.3 - 3.0])
    y0 = np.r_[np.zeros(400, dtype=np.int64), np.ones(8, dtype=np.int64)]
    np.savez(tmp_path / "train.npz", X=X0, y=y0)
    kind = "catboost" if _has_catboost() else "devnet"
    checkpoint = build_detector(kind, {}, seed=0).fit(X0, y0).save(tmp_path / "first.pt")
    stream = np.vstack([rng.normal(size=(60, 4)) * 0.3 + [3.0, 3.0, 0, 0], rng.normal(size=(120, 4))])
    svc = Service(checkpoint, tmp_path / "svc", tmp_path / "train.npz")
    try:
        svc.start()
        ids = [f"b-{i}" for i in range(len(stream))]
        assert svc.post("score", {"rows": stream.tolist(), "ids": ids}).json()["version"] == 1
        for i, row_id in enumerate(ids):
            assert svc.post("feedback", {"id": row_id, "label": "anomaly" if i < 60 else "normal"}).status_code == 201
        out = rlad("retrain", "--service", str(svc.workdir), "--num-cpus", "1")
        assert out.returncode == 0 and "promote: version 2" in out.stdout, out.stdout + out.stderr
        models = svc.get("models")
        event = models["events"][0]
        assert models["live"] == 2 and event["action"] == "promote" and event["version"] == 2, models["events"][:2]
        assert event["metrics"]["candidate_auc_pr"] > event["metrics"]["live_auc_pr"], event
        assert event["reason"].startswith("not worse")
        deadline = time.time() + 20
        while svc.post("score", {"rows": stream[:4].tolist()}).json()["version"] != 2:  # the replicas' poll swaps
            assert time.time() < deadline, "version 2 never answered"
            time.sleep(0.2)
    finally:
        svc.cleanup()
