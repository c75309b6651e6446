"""The live service, as real processes: ``rlad serve`` with a working folder (feedback, scored rows,
model registry), promotions and rollbacks under load, ``rlad retrain``'s gate, ``kill -9`` and
restart, graceful SIGTERM. One service per module (a start costs ~15 s); only the kill restarts it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import small_split
from rlad.algorithms.registry import build_detector

KEY = "live-test-key-0123456789"
HEADERS = {"X-API-Key": KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self.log = open(self.workdir.parent / f"serve-{self.port}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     env={**os.environ, "RLAD_API_KEY": KEY})
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
        return (self.workdir.parent / f"serve-{self.port}.log").read_text()[-3000:]

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


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    split = small_split("thyroid", max_rows=1200, la=0.3)
    folder = tmp_path_factory.mktemp("live")
    training = folder / "train.npz"
    np.savez(training, X=split.X_train, y=split.y_train_semi)
    det = build_detector("scaled", {"detector": "iforest", "options": {"n_estimators": 25}}, seed=0)
    checkpoint = det.fit(split.X_train, split.y_train_semi).save(folder / "model.pt")
    return split, folder, checkpoint, training


@pytest.fixture(scope="module")
def service(data):
    split, folder, checkpoint, training = data
    svc = Service(checkpoint, folder / "svc", training)
    try:
        yield svc.start()
    finally:
        svc.cleanup()


def test_score_ids_feedback_recent_and_models(service, data):
    split = data[0]
    X = split.X_test[:6]
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
