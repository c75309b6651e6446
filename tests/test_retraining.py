"""The retraining gate and the feedback it reads, in-process (no Ray, no Serve): audit weights
stored and migrated, weighted AUC-PR in the gate, the margin, and a whole ``retrain_once`` that
promotes a candidate that learnt the analysts' anomalies."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from rlad.platform.runtime.feedback import DB_NAME, FeedbackStore, all_feedback
from rlad.platform.runtime.model_registry import ModelRegistry, save_training_rows
from rlad.platform.runtime.retraining import LabelledRows, RetrainConfig, gate, retrain_once


def test_feedback_weight_is_stored_checked_and_added_to_old_folders(tmp_path):
    old = sqlite3.connect(tmp_path / DB_NAME)  # a service folder from before audit weights
    old.executescript("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, row_id TEXT, label TEXT NOT NULL, "
                      "analyst TEXT NOT NULL, ts REAL NOT NULL, row TEXT NOT NULL);"
                      "INSERT INTO feedback (row_id, label, analyst, ts, row) VALUES (NULL, 'normal', 'a', 0, '[1.0]');")
    old.close()
    store = FeedbackStore(tmp_path)
    try:
        store.add_feedback("anomaly", "b", row=[2.0], weight=12.5)
        for bad in (0.5, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="weight"):
                store.add_feedback("anomaly", "b", row=[2.0], weight=bad)
    finally:
        store.close()
    lines = all_feedback(tmp_path)
    assert [(f["label"], f["weight"]) for f in lines] == [("normal", 1.0), ("anomaly", 12.5)]
    rows = LabelledRows.from_feedback(lines)
    assert rows.w.tolist() == [1.0, 12.5] and rows.y.tolist() == [0, 1]


def test_gate_weighs_audit_rows_and_applies_the_margin():
    """Flagged rows alone favour the live model; one audit anomaly standing for 30 rows that only
    the candidate ranks high turns the weighted comparison."""
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1])
    live = np.array([9, 8, 7, 6, 5, 4.5, 4, 3, 2, 1, 0, -1.0])  # misses the last anomaly
    cand = np.array([8, 7, 6, 5, 4.6, 4.8, 4, 3, 2, 1, 0, 9.5])  # finds it, one normal a bit higher
    config = RetrainConfig(min_positives=5, min_negatives=5, bootstrap=200)
    unweighted = gate(y, live, cand, config)
    weighted = gate(y, live, cand, config, np.r_[np.ones(11), 30.0])
    assert weighted[2]["candidate_auc_pr"] - weighted[2]["live_auc_pr"] > unweighted[2]["candidate_auc_pr"] - unweighted[2]["live_auc_pr"]
    assert weighted[2]["audit_rows"] == 1 and "audit_rows" not in unweighted[2]
    worse = cand.copy()
    worse[:5] = [1, 0.5, 0.2, 0.1, 0.0]  # the candidate ranks the known anomalies at the bottom
    refused, reason, _ = gate(y, live, worse, config)
    assert not refused and reason.startswith("worse")
    assert gate(y, live, worse, RetrainConfig(margin=1.0, min_positives=5, min_negatives=5, bootstrap=200))[0]
    few = gate(y[:6], live[:6], cand[:6], config)
    assert not few[0] and few[1].startswith("too few")


def labelled_service(folder, n_stream: int = 180):
    """A service folder whose first model (CatBoost, else DevNet) knows one kind of anomaly, with
    ``n_stream`` scored and labelled rows of another kind (a third anomalies): ``(X0, stream)``."""
    from rlad.algorithms.registry import build_detector

    rng = np.random.default_rng(0)
    X0 = np.vstack([rng.normal(size=(400, 4)), rng.normal(size=(8, 4)) * 0.3 - 3.0])
    y0 = np.r_[np.zeros(400, dtype=np.int64), np.ones(8, dtype=np.int64)]
    first = build_detector("catboost", {}, seed=0) if _has_catboost() else build_detector("devnet", {}, seed=0)
    checkpoint = first.fit(X0, y0).save(folder / "first.pt")
    training, digest = save_training_rows(folder / "svc", X0, y0)
    with ModelRegistry(folder / "svc") as registry:
        registry.serve(checkpoint, training, digest)
    n_anom = n_stream // 3
    stream = np.vstack([rng.normal(size=(n_anom, 4)) * 0.3 + [3.0, 3.0, 0, 0], rng.normal(size=(n_stream - n_anom, 4))])
    label(folder / "svc", stream, np.r_[np.ones(n_anom), np.zeros(n_stream - n_anom)])
    return X0, stream


def label(workdir, rows: np.ndarray, truth: np.ndarray) -> None:
    store = FeedbackStore(workdir)
    try:
        ids = store.add_scored(None, rows.tolist(), np.zeros(len(rows)), np.zeros(len(rows)), version=1)
        for row_id, y in zip(ids, truth):
            store.add_feedback("anomaly" if y else "normal", "sim", row_id=row_id)
    finally:
        store.close()


@pytest.mark.parametrize("refit_all", [False, True])
def test_retrain_once_promotes_a_candidate_that_learnt_the_feedback(tmp_path, refit_all):
    """The analysts confirm a kind of anomaly the first model never saw labelled; a refit learns
    it: promoted, live pointer moved, decision logged."""
    X0, stream = labelled_service(tmp_path)
    decision = retrain_once(tmp_path / "svc", RetrainConfig(seed=0, refit_all=refit_all))
    assert decision.action == "promote", decision.reason
    held_out = decision.metrics["holdout_anomalies"] + decision.metrics["holdout_normals"]
    assert decision.metrics["train_rows"] == len(X0) + len(stream) - (0 if refit_all else held_out)  # the live model's rows
    assert decision.metrics["candidate_auc_pr"] > decision.metrics["live_auc_pr"]
    with ModelRegistry(tmp_path / "svc") as registry:
        assert registry.live() == decision.version == 2
        assert registry.events(1)[0]["action"] == "promote" and registry.get(2)["parent"] == 1


def _has_catboost() -> bool:
    try:
        import catboost  # noqa: F401
    except ImportError:
        return False
    return True


def test_audit_draws_unlabelled_rows_with_their_weight(tmp_path):
    store = FeedbackStore(tmp_path)
    try:
        ids = store.add_scored(None, [[float(i)] for i in range(100)], np.arange(100.0), np.zeros(100), version=1)
        for row_id in ids[90:]:  # the top ten, reviewed
            store.add_feedback("normal", "ann", row_id=row_id)
        drawn = store.audit(8, below=90.0)
        assert drawn["population"] == 90 and drawn["weight"] == pytest.approx(90 / 8)
        assert len({r["id"] for r in drawn["rows"]}) == 8 and all(r["score"] < 90 for r in drawn["rows"])
        assert store.audit(8)["population"] == 90  # labelled rows are never drawn
        assert store.audit(500)["weight"] == 1.0 and len(store.audit(500)["rows"]) == 90
        with pytest.raises(ValueError):
            store.audit(0)
    finally:
        store.close()


def test_registry_commands_give_one_message_and_exit_2(tmp_path):
    import subprocess
    import sys

    from rlad.algorithms.registry import build_detector

    X = np.random.default_rng(0).normal(size=(50, 3))
    checkpoint = build_detector("iforest", {}, seed=0).fit(X).save(tmp_path / "m.pt")
    with ModelRegistry(tmp_path / "svc") as registry:
        registry.serve(checkpoint)
    for args, message in ((["models", "show", "9"], "no model version 9"), (["models", "promote", "1"], "already live"),
                          (["models", "rollback"], "no earlier live version"),
                          (["retrain", "--service", str(tmp_path / "nowhere")], "not a service folder")):
        if args[0] == "models":
            args = [*args, "--service", str(tmp_path / "svc")]
        out = subprocess.run([sys.executable, "-m", "rlad.platform.cli", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stdout and "Traceback" not in out.stdout + out.stderr, (args, out)


def test_every_n_labels_retrains_in_a_loop_and_sigterm_stops_it(tmp_path):
    """``rlad retrain --every 200`` with 180 labels waits; 30 more start a retrain (a promotion);
    SIGTERM ends the loop with exit 0."""
    import signal
    import subprocess
    import sys
    import time

    _, stream = labelled_service(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "rlad.platform.cli", "retrain", "--service", str(tmp_path / "svc"),
                             "--every", "200", "--poll", "0.3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4)
        with ModelRegistry(tmp_path / "svc") as registry:
            assert [v["version"] for v in registry.versions()] == [1]  # 180 < 200: nothing yet
        label(tmp_path / "svc", stream[:30] + 0.01, np.r_[np.ones(10), np.zeros(20)])
        deadline = time.time() + 60
        while True:
            with ModelRegistry(tmp_path / "svc") as registry:
                if len(registry.versions()) == 2:
                    break
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0] if proc.poll() is not None else "no retrain"
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "promote: version 2" in out and "Traceback" not in out, out
