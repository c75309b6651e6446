"""Triage page back end: the training profile saved in checkpoints, explanations, the page's data calls."""
import numpy as np
import pytest

from rlad.algorithms.registry import build_detector, load_detector
from rlad.core.profile import TrainingProfile, psi


def test_profile_z_quantile_psi():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3)) * [1.0, 2.0, 0.5] + [0.0, 10.0, -1.0]
    prof = TrainingProfile.fit(X)
    z = prof.zscores([[0.0, 14.0, -1.0]])[0]
    assert abs(z[1] - 2.0) < 0.15 and abs(z[0]) < 0.1
    q = prof.quantile_of([[0.0, 10.0, 100.0]])[0]
    assert abs(q[0] - 0.5) < 0.05 and q[2] == 1.0
    top = prof.top_features(np.array([0.0, 10.0, 2.0]), k=2, names=["a", "b", "c"])
    assert top[0]["feature"] == "c" and top[0]["z"] > 5
    assert max(prof.psi(X[:500])) < 0.1
    assert prof.psi(X[:500] + [0.0, 0.0, 1.0])[2] > 1.0
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0


def test_profile_saved_in_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    det = build_detector("iforest", {}, seed=0).fit(X)
    assert det.profile_ is not None and det.profile_.n_rows == 300
    det.save(tmp_path / "m.pt")
    back = load_detector(tmp_path / "m.pt")
    assert back.profile_ == det.profile_
    np.testing.assert_allclose(back.profile_.mean, X.mean(axis=0), atol=1e-5)


def test_recent_pages_fast_with_10000_rows(tmp_path):
    """The page's data call answers one page in well under 1 s with 10,000 rows held, sorted by
    score, with filters and labels (fails without the score index only when much slower)."""
    import time

    from rlad.platform.runtime.feedback import FeedbackStore
    from rlad.platform.runtime.triage import explain_row

    store = FeedbackStore(tmp_path)
    rng = np.random.default_rng(2)
    X, scores = rng.normal(size=(10_000, 6)), rng.random(10_000)
    ids = store.add_scored(None, X, scores, scores, version=1)
    top = ids[int(np.argmax(scores))]
    store.add_feedback("anomaly", "a", row_id=top)
    t0 = time.perf_counter()
    first = store.recent(limit=50, offset=0)
    page = store.recent(limit=50, offset=9_950)
    unlabelled = store.recent(limit=50, labelled="no", min_score=0.5)
    assert time.perf_counter() - t0 < 1.0
    assert first["total"] == 10_000 and first["rows"][0]["id"] == top and first["rows"][0]["label"] == "anomaly"
    got = [r["score"] for r in first["rows"]] + [r["score"] for r in page["rows"]]
    assert got == sorted(scores, reverse=True)[:50] + sorted(scores, reverse=True)[-50:]
    assert unlabelled["total"] == int((scores >= 0.5).sum()) - 1 and top not in {r["id"] for r in unlabelled["rows"]}
    assert store.recent(labelled="yes")["total"] == 1

    det = build_detector("scaled", {"detector": "iforest", "columns": list("abcdef")}, seed=0).fit(X.astype(np.float32))
    row = X[1].copy()
    row[3] = 9.0
    why = explain_row(det, row.tolist(), k=2)
    assert why["features"][0]["feature"] == "d" and why["features"][0]["quantile"] == 1.0
    assert why["attributes"] is None  # iforest has no explain()
